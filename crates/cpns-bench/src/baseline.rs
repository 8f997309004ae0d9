//! The two baselines `cpns-bench establish` sets the CPNS Server's TLS session set-up rate
//! beside, both measured in the same run: Mosquitto accepting MQTT connections over TLS 1.3 with
//! the same kind of certificate, and the ceiling of the handshake itself, both ends in memory on
//! one thread with the project's crypto provider.
//!
//! Both measure full handshakes (key exchange, certificate, signature): the client
//! configuration is the project's own with session resumption turned off, and every session is
//! checked to have been a full one. A PN GW holds one long-lived session to the server, and its
//! first connection, like every connection of a fresh process, is a full handshake. Its
//! reconnections within one process reuse one `ClientConfig`, whose default ticket store lets
//! them resume against the two stateful tickets the server sends; a full handshake is therefore
//! the server's worst case, and the one worth comparing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cpns_node::pki;
use rustls::client::Resumption;
use rustls::{ClientConfig, ClientConnection, Connection, HandshakeKind, ServerConnection};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::mqtt;
use crate::stats::{CpuTime, Latencies, Rate};

/// How long the clients run before measuring, so that caches and the broker are warm.
const WARM_UP: Duration = Duration::from_millis(500);
/// Handshakes done before measuring the in-memory ceiling.
const WARM_UP_HANDSHAKES: u32 = 100;
/// How often, and how far apart, a first session with Mosquitto is tried before giving up.
const READY_TRIES: u32 = 100;
const READY_PAUSE: Duration = Duration::from_millis(20);
/// Longest one MQTT session may take before the measurement is abandoned as broken.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The keep-alive the CONNECT asks for (MQTT 3.1.1 §3.1.2.10).
const KEEP_ALIVE_SECS: u16 = 60;
/// Where Mosquitto is looked for besides `PATH` (Debian installs it in /usr/sbin).
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// The name the server certificate is made for, and the only address anything listens on.
fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(Ipv4Addr::LOCALHOST.into())
}

/// The project's client configuration ([`pki::client_config`]: TLS 1.3 only, ring, X25519 first)
/// with session resumption off, so that every handshake is a full one.
fn full_handshake_client_config(ca_pem: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let mut cfg = ClientConfig::clone(&*pki::client_config(ca_pem)?);
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// The mosquitto binary: on `PATH`, or in an sbin directory that is often not on it.
fn mosquitto_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"))
        .find(|bin| bin.is_file())
}

/// Whether a mosquitto binary is available, so that `cpns-bench establish` can skip the Mosquitto
/// baseline with a hint instead of failing.
pub fn mosquitto_available() -> bool {
    mosquitto_binary().is_some()
}

/// Mosquitto's rate of TLS 1.3 MQTT connections: `concurrency` closed-loop clients, each
/// repeating TCP connect, full TLS 1.3 handshake, CONNECT, CONNACK, DISCONNECT, close, for
/// `duration` after a warm-up. The latency is from TCP connect to CONNACK; the CPU time is the
/// broker's. Its certificate, key and configuration are written into `work_dir`.
pub async fn mosquitto_connect_rate(
    work_dir: &Path,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<Rate> {
    ensure!(concurrency > 0, "concurrency must be at least 1");
    let pki = pki::generate(&["127.0.0.1".into()])?;
    let mut broker = Mosquitto::start(work_dir, &pki).await?;
    let client = Arc::new(MqttClient {
        connector: TlsConnector::from(full_handshake_client_config(&pki.ca_cert_pem)?),
        addr: broker.addr,
    });
    broker.until_serving(&client).await?;
    let measured = async {
        closed_loop(&client, concurrency, WARM_UP, "warm").await?;
        let cpu_before = CpuTime::of(broker.pid).context("mosquitto's CPU time")?;
        let start = Instant::now();
        let lat = closed_loop(&client, concurrency, duration, "run").await?;
        let wall = start.elapsed();
        let cpu = CpuTime::of(broker.pid)
            .context("mosquitto's CPU time")?
            .since(cpu_before);
        anyhow::Ok(Rate::new(lat, wall, Some(cpu)))
    }
    .await;
    match measured {
        Ok(rate) => {
            broker.stop().await;
            Ok(rate)
        }
        Err(e) => Err(e.context(broker.stop_and_explain().await)),
    }
}

/// A running Mosquitto broker with a TLS 1.3 listener on loopback; killed when dropped.
struct Mosquitto {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl Mosquitto {
    /// Writes the PKI and a configuration into `work_dir` and starts the broker.
    async fn start(work_dir: &Path, pki: &pki::Pki) -> anyhow::Result<Self> {
        let bin = mosquitto_binary().context("mosquitto is not installed")?;
        let dir = std::path::absolute(work_dir)?;
        // mosquitto.conf splits its lines on blanks: a path with one cannot be written there.
        ensure!(
            !dir.to_string_lossy().contains(char::is_whitespace),
            "work directory {} has blanks in its path, which mosquitto.conf cannot hold",
            dir.display()
        );
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let port = free_port()?;
        let file = |name: &str| dir.join(name);
        write_fresh(&file("ca.pem"), &pki.ca_cert_pem, false)?;
        write_fresh(&file("server.pem"), &pki.server_cert_pem, false)?;
        write_fresh(&file("server.key"), &pki.server_key_pem, true)?;
        let log = file("mosquitto.log");
        let conf = file("mosquitto.conf");
        let text = mosquitto_conf(
            port,
            &file("ca.pem"),
            &file("server.pem"),
            &file("server.key"),
            &log,
        );
        write_fresh(&conf, &text, false)?;

        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id().context("mosquitto exited at once")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        Ok(Mosquitto {
            child,
            pid,
            addr,
            log,
        })
    }

    /// Waits until the broker serves `client` a whole session. An open port is not enough:
    /// Mosquitto listens before it loads its certificate and key, and exits if they are bad.
    async fn until_serving(&mut self, client: &MqttClient) -> anyhow::Result<()> {
        let mut last = None;
        for attempt in 0..READY_TRIES {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "mosquitto exited ({status}) before serving: {}",
                    self.stop_and_explain().await
                );
            }
            let id = format!("cpns-bench-ready-{attempt}");
            match tokio::time::timeout(SESSION_TIMEOUT, client.session(&id)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = Some(format!("{e:#}")),
                Err(_) => last = Some(format!("no answer within {SESSION_TIMEOUT:?}")),
            }
            tokio::time::sleep(READY_PAUSE).await;
        }
        let explained = self.stop_and_explain().await;
        bail!(
            "mosquitto did not serve a session on {} within {READY_TRIES} tries (last: {}): \
             {explained}",
            self.addr,
            last.unwrap_or_default(),
        )
    }

    /// Kills the broker and waits for it.
    async fn stop(&mut self) {
        // An error here means it has already exited, which is all that is asked.
        let _ = self.child.kill().await;
    }

    /// Kills the broker and returns what it said on stderr and in its log, for an error message.
    async fn stop_and_explain(&mut self) -> String {
        self.stop().await;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "mosquitto stderr: {:?}; log {}: {:?}",
            stderr.trim(),
            self.log.display(),
            log.trim()
        )
    }
}

/// A Mosquitto configuration (mosquitto.conf(5), version 2.0) with one TLS 1.3 listener made
/// like the CPNS Server's: loopback, a server certificate from the project's CA, no client
/// certificates, no limit on connections, Nagle off, nothing persisted, and only errors and
/// warnings logged (to a file), so that no per-connection log line is part of the cost.
fn mosquitto_conf(port: u16, ca: &Path, cert: &Path, key: &Path, log: &Path) -> String {
    format!(
        "# Written by `cpns-bench establish` for its Mosquitto baseline.\n\
         # Started by root, mosquitto would switch to its own user before reading the key,\n\
         # which is mode 0600; run by anyone else, this line has no effect.\n\
         user root\n\
         persistence false\n\
         allow_anonymous true\n\
         set_tcp_nodelay true\n\
         log_dest file {log}\n\
         log_type error\n\
         log_type warning\n\
         listener {port} 127.0.0.1\n\
         max_connections -1\n\
         tls_version tlsv1.3\n\
         cafile {ca}\n\
         certfile {cert}\n\
         keyfile {key}\n",
        log = log.display(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// A port on 127.0.0.1 free a moment ago: bound, read and released for Mosquitto to take.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Writes `text` to `path`, replacing a file a previous run left there.
fn write_fresh(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", path.display()));
        }
        _ => {}
    }
    crate::net::write_new(path, text, secret)
}

/// What each benchmark client needs to open an MQTT session with the broker.
struct MqttClient {
    connector: TlsConnector,
    addr: SocketAddr,
}

impl MqttClient {
    /// One session: TCP connect, full TLS 1.3 handshake, CONNECT, CONNACK checked, DISCONNECT,
    /// close. Returns the time from TCP connect to CONNACK.
    async fn session(&self, client_id: &str) -> anyhow::Result<Duration> {
        let connect = mqtt::connect(client_id, KEEP_ALIVE_SECS).context("client id too long")?;
        let start = Instant::now();
        let tcp = TcpStream::connect(self.addr).await.context("TCP connect")?;
        tcp.set_nodelay(true)?;
        let mut tls = self
            .connector
            .connect(server_name(), tcp)
            .await
            .context("TLS handshake")?;
        ensure!(
            tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Full),
            "the TLS handshake was not a full one"
        );
        tls.write_all(&connect).await?;
        tls.flush().await?;
        let mut connack = [0u8; mqtt::CONNACK_LEN];
        tls.read_exact(&mut connack).await.context("read CONNACK")?;
        mqtt::check_connack(connack)?;
        let latency = start.elapsed();
        // MQTT 3.1.1 §3.14.4: after DISCONNECT the client closes the network connection.
        tls.write_all(&mqtt::DISCONNECT).await?;
        tls.shutdown().await?;
        Ok(latency)
    }
}

/// Runs `concurrency` clients, each opening one session after another until `run_for` has
/// passed, and gathers their latencies. Client identifiers are unique within `phase`.
async fn closed_loop(
    client: &Arc<MqttClient>,
    concurrency: usize,
    run_for: Duration,
    phase: &'static str,
) -> anyhow::Result<Latencies> {
    let end = Instant::now() + run_for;
    let mut tasks = JoinSet::new();
    for task in 0..concurrency {
        let client = Arc::clone(client);
        tasks.spawn(async move {
            let mut lat = Latencies::default();
            let mut n = 0u64;
            while Instant::now() < end {
                let id = format!("cpns-bench-{phase}-{task}-{n}");
                let latency = tokio::time::timeout(SESSION_TIMEOUT, client.session(&id))
                    .await
                    .with_context(|| format!("session {id} took over {SESSION_TIMEOUT:?}"))?
                    .with_context(|| format!("session {id}"))?;
                lat.record(latency);
                n += 1;
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Latencies::default();
    while let Some(done) = tasks.join_next().await {
        all.merge(done.context("client task")??);
    }
    Ok(all)
}

/// The ceiling of TLS 1.3 session set-up on one thread: the project's server configuration
/// ([`pki::server_config`], as the CPNS Server uses it) and client configuration (resumption
/// off) shake hands in memory, with fresh connections each time, for `duration` after a short
/// warm-up. Each handshake costs both ends, as on loopback where a benchmark's clients share the
/// machine with the server: an X25519 key pair and agreement on each, one ECDSA P-256 signature,
/// two verifications, and the two session tickets the server sends after the handshake. The CPU
/// time is the whole process's, which is this thread's when nothing else runs.
pub fn rustls_handshake_ceiling(duration: Duration) -> anyhow::Result<Rate> {
    let pki = pki::generate(&["127.0.0.1".into()])?;
    let server_cfg = pki::server_config(&pki.server_cert_pem, &pki.server_key_pem)?;
    let client_cfg = full_handshake_client_config(&pki.ca_cert_pem)?;
    let mut wire = Vec::with_capacity(8192);
    let mut handshake = || -> anyhow::Result<()> {
        let mut client = Connection::Client(ClientConnection::new(
            Arc::clone(&client_cfg),
            server_name(),
        )?);
        let mut server = Connection::Server(ServerConnection::new(Arc::clone(&server_cfg))?);
        shake_hands(&mut client, &mut server, &mut wire)
    };
    for _ in 0..WARM_UP_HANDSHAKES {
        handshake()?;
    }
    let pid = std::process::id();
    let cpu_before = CpuTime::of(pid)?;
    let mut lat = Latencies::default();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        handshake()?;
        lat.record(t.elapsed());
    }
    let wall = start.elapsed();
    let cpu = CpuTime::of(pid)?.since(cpu_before);
    Ok(Rate::new(lat, wall, Some(cpu)))
}

/// Moves TLS records between two connections until both have finished the handshake and
/// neither has anything left to send. A TLS 1.3 handshake with tickets takes four flights.
fn shake_hands(
    client: &mut Connection,
    server: &mut Connection,
    wire: &mut Vec<u8>,
) -> anyhow::Result<()> {
    const MAX_ROUNDS: usize = 4;
    for _ in 0..MAX_ROUNDS {
        carry(client, server, wire)?;
        carry(server, client, wire)?;
        let idle = |c: &Connection| !c.is_handshaking() && !c.wants_write();
        if idle(client) && idle(server) {
            ensure!(
                client.handshake_kind() == Some(HandshakeKind::Full),
                "the in-memory handshake was not a full one"
            );
            return Ok(());
        }
    }
    bail!("the in-memory handshake did not finish in {MAX_ROUNDS} rounds")
}

/// Moves everything `from` has to send into `to` and lets `to` process it.
fn carry(from: &mut Connection, to: &mut Connection, wire: &mut Vec<u8>) -> anyhow::Result<()> {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire)?;
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        if to.read_tls(&mut rest)? == 0 {
            bail!("the peer took no TLS bytes");
        }
        to.process_new_packets()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_measures_handshakes() {
        let r = rustls_handshake_ceiling(Duration::from_millis(200)).unwrap();
        assert!(r.ops > 0, "{r:?}");
        assert!(r.p50_us > 0, "{r:?}");
        assert!(r.cpu_us_per_op.is_some(), "{r:?}");
    }

    #[test]
    fn the_client_configuration_resumes_nothing() {
        // With the project's configurations unchanged, a second handshake would resume; the
        // ceiling's client must not, so that it measures what a new PN GW costs.
        let pki = pki::generate(&["127.0.0.1".into()]).unwrap();
        let server_cfg = pki::server_config(&pki.server_cert_pem, &pki.server_key_pem).unwrap();
        let kinds = |client_cfg: Arc<ClientConfig>| {
            let mut wire = Vec::new();
            (0..2)
                .map(|_| {
                    let mut c = Connection::Client(
                        ClientConnection::new(Arc::clone(&client_cfg), server_name()).unwrap(),
                    );
                    let mut s =
                        Connection::Server(ServerConnection::new(Arc::clone(&server_cfg)).unwrap());
                    for _ in 0..4 {
                        carry(&mut c, &mut s, &mut wire).unwrap();
                        carry(&mut s, &mut c, &mut wire).unwrap();
                    }
                    c.handshake_kind()
                })
                .collect::<Vec<_>>()
        };
        let full = Some(HandshakeKind::Full);
        let resumed = Some(HandshakeKind::Resumed);
        let project = pki::client_config(&pki.ca_cert_pem).unwrap();
        assert_eq!(kinds(project), [full, resumed]);
        let ours = full_handshake_client_config(&pki.ca_cert_pem).unwrap();
        assert_eq!(kinds(ours), [full, full]);
    }

    #[test]
    fn mosquitto_conf_holds_the_listener() {
        let p = Path::new;
        let conf = mosquitto_conf(
            18883,
            p("/d/ca.pem"),
            p("/d/s.pem"),
            p("/d/s.key"),
            p("/d/l"),
        );
        for line in [
            "listener 18883 127.0.0.1",
            "tls_version tlsv1.3",
            "certfile /d/s.pem",
            "keyfile /d/s.key",
            "cafile /d/ca.pem",
            "log_dest file /d/l",
            "max_connections -1",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line} missing from {conf}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto_rate_is_measured_against_the_real_broker() {
        if !mosquitto_available() {
            eprintln!("skipped: install mosquitto to run this test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let r = mosquitto_connect_rate(dir.path(), Duration::from_millis(300), 2)
            .await
            .unwrap();
        assert!(r.ops > 0, "{r:?}");
        assert!(r.cpu_us_per_op.is_some(), "{r:?}");
    }

    #[tokio::test]
    async fn a_broker_that_cannot_start_is_explained() {
        if !mosquitto_available() {
            eprintln!("skipped: install mosquitto to run this test");
            return;
        }
        // A key that is not one: mosquitto exits, and its complaint reaches the error.
        let dir = tempfile::tempdir().unwrap();
        let mut pki = pki::generate(&["127.0.0.1".into()]).unwrap();
        pki.server_key_pem = "not a key\n".into();
        let mut broker = Mosquitto::start(dir.path(), &pki).await.unwrap();
        let client = MqttClient {
            connector: TlsConnector::from(full_handshake_client_config(&pki.ca_cert_pem).unwrap()),
            addr: broker.addr,
        };
        let err = match broker.until_serving(&client).await {
            Ok(()) => panic!("mosquitto served with a broken key"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("mosquitto"), "{err}");
        assert!(err.to_lowercase().contains("key"), "{err}");
    }

    /// Measures both baselines at full length and prints their figures:
    /// `cargo test --release -p cpns-bench baseline -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "takes about ten seconds; run by hand to see the figures"]
    async fn print_baseline_figures() {
        let dir = tempfile::tempdir().unwrap();
        if mosquitto_available() {
            let r = mosquitto_connect_rate(dir.path(), Duration::from_secs(5), 8)
                .await
                .unwrap();
            println!("mosquitto TLS 1.3 CONNECT, 8 clients: {r:?}");
        }
        let r = tokio::task::spawn_blocking(|| rustls_handshake_ceiling(Duration::from_secs(3)))
            .await
            .unwrap()
            .unwrap();
        println!("rustls handshake ceiling, 1 thread: {r:?}");
    }
}
