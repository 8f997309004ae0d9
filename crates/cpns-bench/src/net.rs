//! The networked half of the benches: a server data directory with households enrolled in bulk,
//! the CPNS Server as a process of its own (`cpns server`, from the `cpns` binary [`CpnsBin`]
//! finds), and simulated PN GWs ([`SimGateway`]) that connect to it over TCP and TLS 1.3 exactly
//! as a PN GW does (002 §B.1.1.2 steps 8-17), then run PN establishments on their in-memory PANs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cpns_crypto::{EuKey, MachineRng, MasterKey, at_rest_eukey_aad, seal_at_rest};
use cpns_node::frames::{FrameError, FramedConn};
use cpns_node::pki;
use cpns_store::{EntityKind, EntityRecord, ServerStore, SqliteStore};
use cpns_wire::{EntityId, PnId, UserId};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use crate::sim::{Device, Household, Outcome, SimGateway};

/// The user every bench device belongs to.
pub const BENCH_USER: &str = "bench";

/// The server's database in its data directory (as `cpns init` names it).
pub const DB_FILE: &str = "cpns.db";

/// How long one set-up or establishment may take before the bench gives up on it.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server data directory made for the bench, and the households enrolled in it.
pub struct Prepared {
    /// The CA the server's certificate chains to.
    pub ca_pem: String,
    /// Enrolled households, PN GW and two PNEs each.
    pub households: Vec<Household>,
}

/// The households as a file (mode 0600: it holds EUKeys), for the bench's other processes.
#[derive(Serialize, Deserialize)]
struct HouseholdFile {
    ca_pem: String,
    households: Vec<FileHousehold>,
}

/// One household in the file: (entity id, EUKey hex) of the PN GW and, if enrolled, its PNEs.
#[derive(Serialize, Deserialize)]
struct FileHousehold {
    gateway: (String, String),
    pnes: Option<[(String, String); 2]>,
}

fn device_entry(d: &Device) -> (String, String) {
    (d.id.to_string(), hex::encode(d.eukey.expose_secret()))
}

fn device_of(entry: &(String, String)) -> anyhow::Result<Device> {
    let bytes = Zeroizing::new(hex::decode(&entry.1).context("EUKey hex")?);
    let key: [u8; 32] = bytes.as_slice().try_into().context("EUKey length")?;
    Ok(Device {
        id: EntityId::new(entry.0.clone())?,
        eukey: EuKey::from_bytes(key),
    })
}

/// Writes a new file with mode 0600 (secrets) or 0644, as `cpns init` writes its own (a copy of
/// the `cpns` binary's: the bench makes its data directories without it).
pub fn write_new(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, if secret { 0o600 } else { 0o644 });
    let mut f = opts
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Makes a server data directory in `dir` (the files `cpns init` makes, less the CA's key) and
/// enrolls `n` PN GWs of user [`BENCH_USER`] in bulk (concurrent enrolments the store commits in
/// groups), the first `with_pnes` of them with their two PNEs.
pub async fn prepare(
    dir: &Path,
    n: usize,
    with_pnes: usize,
    seed: u64,
    progress: &dyn Fn(usize),
) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let data = |name: &str| dir.join(name);
    let pki = pki::generate(&["127.0.0.1".into(), "localhost".into()])?;
    write_new(&data("ca.pem"), &pki.ca_cert_pem, false)?;
    write_new(&data("server.pem"), &pki.server_cert_pem, false)?;
    write_new(&data("server.key"), &pki.server_key_pem, true)?;
    let master = MasterKey::generate()?;
    write_new(&data("master.key"), &master.to_hex(), true)?;
    let store = SqliteStore::open(&data(DB_FILE)).await?;
    let user = UserId::new(BENCH_USER)?;
    store.ensure_user(&user).await?;

    let mut rng = MachineRng::from_seed_u64(seed);
    let households: Vec<Household> = (0..n)
        .map(|i| {
            let mut dev = |id: String| Device {
                id: EntityId::new(id).expect("bench ids are valid"),
                eukey: EuKey::random(rng.get()),
            };
            Household {
                gateway: dev(format!("bench-gw-{i}")),
                pnes: [
                    dev(format!("bench-gw-{i}-a")),
                    dev(format!("bench-gw-{i}-b")),
                ],
            }
        })
        .collect();
    let now = cpns_node::clock::unix_millis();
    let record = |dev: &Device, kind| -> anyhow::Result<EntityRecord> {
        Ok(EntityRecord {
            id: dev.id.clone(),
            kind,
            owner: user.clone(),
            sealed_eukey: seal_at_rest(
                &master,
                &at_rest_eukey_aad(dev.id.as_str()),
                dev.eukey.expose_secret(),
            )?,
            capabilities: None,
            cpns_id: None,
            enrolled_at: now,
        })
    };
    for (chunk_no, chunk) in households.chunks(512).enumerate() {
        let mut writes = tokio::task::JoinSet::new();
        for (i, h) in chunk.iter().enumerate() {
            let mut records = vec![record(&h.gateway, EntityKind::Gateway)?];
            if chunk_no * 512 + i < with_pnes {
                records.push(record(&h.pnes[0], EntityKind::Pne)?);
                records.push(record(&h.pnes[1], EntityKind::Pne)?);
            }
            let store = store.clone();
            writes.spawn(async move {
                for r in &records {
                    store.insert_entity(r).await?;
                }
                Ok::<_, cpns_store::StoreError>(())
            });
        }
        while let Some(done) = writes.join_next().await {
            done??;
        }
        progress((chunk_no * 512 + chunk.len()).min(n));
    }
    store.close().await;
    let file = HouseholdFile {
        ca_pem: pki.ca_cert_pem.clone(),
        households: households
            .iter()
            .enumerate()
            .map(|(i, h)| FileHousehold {
                gateway: device_entry(&h.gateway),
                pnes: (i < with_pnes).then(|| h.pnes.each_ref().map(device_entry)),
            })
            .collect(),
    };
    write_new(
        &data("bench-households.json"),
        &Zeroizing::new(serde_json::to_string(&file)?),
        true,
    )?;
    Ok(Prepared {
        ca_pem: pki.ca_cert_pem,
        households,
    })
}

/// Reads households `range` from the file [`prepare`] wrote. A household enrolled without
/// PNEs gets its PN GW in their place (it can hold a session, not establish a PN).
pub fn read_households(
    dir: &Path,
    range: std::ops::Range<usize>,
) -> anyhow::Result<(String, Vec<Household>)> {
    let path = dir.join("bench-households.json");
    let text = Zeroizing::new(
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    );
    let file: HouseholdFile = serde_json::from_str(&text).context("bench-households.json")?;
    let Some(slice) = file.households.get(range.clone()) else {
        bail!(
            "households {range:?} asked for, {} enrolled",
            file.households.len()
        );
    };
    let mut out = Vec::with_capacity(slice.len());
    for h in slice {
        let gateway = device_of(&h.gateway)?;
        let pnes = match &h.pnes {
            Some([a, b]) => [device_of(a)?, device_of(b)?],
            None => [gateway.clone(), gateway.clone()],
        };
        out.push(Household { gateway, pnes });
    }
    Ok((file.ca_pem, out))
}

/// Which `cpns` binary runs the CPNS Server a bench measures.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CpnsBin {
    /// The `cpns` binary whose `cpns server` is measured (another build's, to compare builds in
    /// one run's conditions; it must take `--offline-after-s`). Default: the `cpns` next to this
    /// `cpns-bench` (`cargo build --release -p cpns -p cpns-bench` puts them side by side).
    #[arg(long, env = "CPNS_BIN", alias = "server-bin")]
    pub cpns_bin: Option<PathBuf>,
}

impl CpnsBin {
    /// The binary named, or the `cpns` beside this executable; an error saying how to get one
    /// if there is none.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.cpns_bin {
            if !p.is_file() {
                bail!("--cpns-bin {}: no such file", p.display());
            }
            return Ok(p.clone());
        }
        let me = std::env::current_exe().context("locate the cpns-bench binary")?;
        let cpns = me.with_file_name(format!("cpns{}", std::env::consts::EXE_SUFFIX));
        if !cpns.is_file() {
            bail!(
                "no cpns binary at {}: build it beside cpns-bench with `cargo build --release -p \
                 cpns` (the same profile as this cpns-bench), or name one with --cpns-bin",
                cpns.display()
            );
        }
        Ok(cpns)
    }
}

/// The CPNS Server, running as a process of its own on a free loopback port.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: String,
    /// Its process id.
    pub pid: u32,
}

impl ServerProcess {
    /// Starts `cpns server` (the binary `exe`) on `dir`, and waits for its `listening` event.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        max_sessions: usize,
    ) -> anyhow::Result<ServerProcess> {
        // Sessions held idle by other processes send no heartbeats: they are what the memory
        // figure measures, so the server keeps them.
        Self::start_with(exe, dir, max_sessions, &["--offline-after-s", "3600"]).await
    }

    /// [`ServerProcess::start`] with `extra` arguments.
    pub async fn start_with(
        exe: &Path,
        dir: &Path,
        max_sessions: usize,
        extra: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(exe)
            .args(["server", "--json", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--max-sessions", &max_sessions.to_string()])
            .args(extra)
            .env("CPNS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} server", exe.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("the server exited before listening (its errors are above)");
            };
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["event"] == "listening" {
                break v["addr"]
                    .as_str()
                    .context("listening event without addr")?
                    .to_string();
            }
        };
        // The server prints one line per event; keep its pipe drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess { child, addr, pid })
    }

    /// Stops the server as an operator would (SIGINT: every session ends, the store closes).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the server did not stop within 20 s of SIGINT");
            }
        }
        Ok(())
    }
}

/// The client side of the bench's TLS: the project's PN GW configuration, without session
/// resumption, so that every set-up is a full handshake (a PN GW connects once and stays).
pub fn client_tls(ca_pem: &str) -> anyhow::Result<TlsConnector> {
    let mut cfg: ClientConfig = (*pki::client_config(ca_pem)?).clone();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// A simulated PN GW connected to the server.
pub struct Connected {
    conn: FramedConn<TlsStream<TcpStream>>,
    sim: SimGateway,
}

/// Connects household `h`'s PN GW to the server at `addr` and runs connection set-up until
/// the PN GW is ready.
pub async fn connect(
    addr: &str,
    tls: &TlsConnector,
    h: Household,
    rng: MachineRng,
) -> anyhow::Result<Connected> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1")?;
    let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
    let exporter = pki::exporter(stream.get_ref().1)?;
    let conn = FramedConn::new(
        stream,
        cpns_wire::DEFAULT_MAX_FRAME,
        cpns_node::frames::DEFAULT_MAX_QUEUED,
    );
    let mut c = Connected {
        conn,
        sim: SimGateway::new(h, rng),
    };
    c.sim.wan_connected(Instant::now(), exporter)?;
    c.run_until(|s| s.ready()).await?;
    Ok(c)
}

impl Connected {
    /// Runs one establishment to its end; the PN it established.
    pub async fn establish(&mut self) -> anyhow::Result<PnId> {
        self.sim.start_establishment(Instant::now())?;
        self.run_until(|s| s.outcome().is_some()).await?;
        match self.sim.outcome() {
            Some(Outcome::Established(pn)) => Ok(*pn),
            Some(other) => bail!("establishment {other}"),
            None => bail!("the establishment did not end"),
        }
    }

    /// Waits until the server has nothing more to say for a moment's worth of frames: sends
    /// what is queued and handles what arrives until `done` holds.
    async fn run_until(&mut self, done: impl Fn(&SimGateway) -> bool) -> anyhow::Result<()> {
        let give_up = tokio::time::Instant::now() + OP_TIMEOUT;
        loop {
            for frame in self.sim.take_wan() {
                self.conn.queue(&frame)?;
            }
            if let Some(why) = self.sim.failure() {
                bail!("the session failed: {why}");
            }
            if done(&self.sim) {
                self.conn.flush().await?;
                return Ok(());
            }
            let deadline = self
                .sim
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(give_up)
                .min(give_up);
            tokio::select! {
                frame = self.conn.next_frame() => match frame {
                    Ok(mut body) => self.sim.handle_wan_frame(Instant::now(), &mut body)?,
                    Err(FrameError::Closed) => bail!("the server closed the session"),
                    Err(e) => return Err(e.into()),
                },
                () = tokio::time::sleep_until(deadline) => {
                    if tokio::time::Instant::now() >= give_up {
                        bail!("no answer within {OP_TIMEOUT:?}");
                    }
                    self.sim.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Subscribes to `entity`'s status changes and waits until the server kept it.
    pub async fn subscribe(&mut self, entity: cpns_wire::EntityId) -> anyhow::Result<()> {
        self.sim.subscribe(Instant::now(), entity);
        self.run_until(|s| s.subscribed().is_some()).await
    }

    /// Reports this PN GW's custom status `label`, and sends it now.
    pub async fn set_status(&mut self, label: String) -> anyhow::Result<()> {
        self.sim.set_status(Instant::now(), label);
        for frame in self.sim.take_wan() {
            self.conn.queue(&frame)?;
        }
        self.conn.flush().await?;
        Ok(())
    }

    /// Reads the session until it yields notifications: those, with when each came (Unix ns).
    /// Timers (heartbeats) run meanwhile.
    pub async fn notifications(
        &mut self,
    ) -> anyhow::Result<Vec<(cpns_wire::StatusNotification, u128)>> {
        loop {
            for frame in self.sim.take_wan() {
                self.conn.queue(&frame)?;
            }
            self.conn.flush().await?;
            let notes = self.sim.take_notes();
            if !notes.is_empty() {
                return Ok(notes);
            }
            let deadline = self.sim.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                frame = self.conn.next_frame() => match frame {
                    Ok(mut body) => self.sim.handle_wan_frame(Instant::now(), &mut body)?,
                    Err(FrameError::Closed) => bail!("the server closed the session"),
                    Err(e) => return Err(e.into()),
                },
                () = sleep_until(deadline) => {
                    self.sim.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Ends the session.
    pub async fn close(mut self) {
        self.conn.close().await;
    }
}

/// Completes at `deadline`; never without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts this binary again as a helper process running `args` (a `hold` or `subscribe` share of
/// the load), quiet but for warnings, killed when dropped; returns it with its stdout as lines.
pub fn spawn_helper<S: AsRef<std::ffi::OsStr>>(
    exe: &Path,
    args: &[S],
) -> anyhow::Result<(
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
)> {
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .env("CPNS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start a bench helper process")?;
    let stdout = child.stdout.take().context("a bench helper's stdout")?;
    Ok((child, BufReader::new(stdout).lines()))
}
