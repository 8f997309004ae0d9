//! `cpns-bench delivery`: what content delivery (004 §5.5.8; docs/services.md, "Delivery")
//! moves through a PN GW, against plain TLS on loopback in the same run.
//!
//! The system runs as it does for a user: `cpns server`, `cpns gateway` and two `cpns pne
//! --stay` (the source and the target), separate processes on loopback with SQLite stores, the
//! PNEs on the PN GW's PAN. The source pushes a file of `--mib` MiB to the target with `cpns
//! content push --wait` (sealed chunks, PNE → PN GW → PNE, flow control, the target writing its
//! inbox and checking the hash at the end); the time is from the push to the source's
//! `delivery_sent`, and the target's copy is checked byte for byte.
//!
//! Beside it, alternated round by round on the same machine: the same file sent over one TLS 1.3
//! connection on loopback (the project's TLS configuration), read from disk in 64 KiB pieces and
//! written to a file at the other end and synced (a target syncs what it received before it
//! says it has it), both ends in this process. That is the ceiling a relay of
//! two hops, with end-to-end sealing and an acknowledged window, is measured against.
//!
//! And, as the peer of the same shape: the same file through a plain TLS relay, each byte
//! crossing two TLS 1.3 connections on loopback (source → relay → target, the relay opening
//! each record and sealing it again for the next hop, as a PN GW's two PAN links do), the three
//! ends tasks of this process; no end-to-end sealing, no hash, no window. Its rate is what any
//! relay of two secured hops gets on this machine, so `delivery ÷ relay` is what CPNS's own
//! work (the end-to-end seal, the hashes, the records, the acknowledged window, three processes)
//! costs on top of the hop.
//!
//! It also reports the peak memory (VmHWM) of the PN GW and the target, which must not grow with
//! the file: the content is never held whole.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use cpns_node::pki;
use rustls_pki_types::ServerName;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::net::CpnsBin;

/// How long starting a process, or one step of setting the PN up, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The piece the TLS baseline reads and writes at a time (a delivery chunk's size).
const PIECE: usize = 64 * 1024;

/// `cpns-bench delivery`.
#[derive(Args, Debug)]
pub struct DeliveryArgs {
    /// MiB of content per delivery.
    #[arg(long, default_value_t = 100)]
    pub mib: u64,
    /// Rounds: each one delivery and one plain TLS transfer, alternated.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// After the rounds, one more delivery with the PN GW killed (SIGKILL) a third of the way
    /// and started again on its store: it must resume and end with the same hash, and the
    /// peak memory of each process is reported.
    #[arg(long)]
    pub kill_gateway: bool,
    /// After the rounds, deliver `--outside-mib` MiB from outside the PN (through the server)
    /// to this many PNEs of the PN (more PNE processes join it), once to all of them and then
    /// once to each, and count the bytes the PN GW's WAN session carried each way (0: not).
    #[arg(long, default_value_t = 0)]
    pub outside: usize,
    /// MiB of the delivery from outside.
    #[arg(long, default_value_t = 10)]
    pub outside_mib: u64,
    /// The PAN's security, as the PN GW and the PNEs run it: `cpns` (an insecure bearer:
    /// every frame sealed under the link's keys) or `trusted` (a bearer that protects the link
    /// itself, e.g. paired Bluetooth: frames plain; the content still sealed end to end).
    #[arg(long, default_value = "cpns", value_parser = ["cpns", "trusted"])]
    pub pan_security: String,
    #[command(flatten)]
    pub bin: CpnsBin,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct DeliveryFigures {
    /// Bytes per transfer.
    pub bytes: u64,
    /// The PAN's security (`cpns` or `trusted`).
    pub pan_security: String,
    /// Each round's delivery, MiB/s (push to `delivery_sent`).
    pub delivery_mib_s: Vec<f64>,
    /// Each round's plain TLS transfer, MiB/s.
    pub tls_mib_s: Vec<f64>,
    /// The CPU time each round's plain TLS transfer took (both ends, this process), seconds.
    pub tls_cpu_s: Vec<f64>,
    /// What each round's delivery cost the three processes of the push.
    pub delivery_cpu: Vec<PushCpu>,
    /// Median delivery ÷ median TLS.
    pub delivery_of_tls: f64,
    /// Each round's transfer through a plain TLS relay (two hops), MiB/s.
    pub relay_mib_s: Vec<f64>,
    /// The CPU time each round's relay took (its three ends, this process), seconds.
    pub relay_cpu_s: Vec<f64>,
    /// Median delivery ÷ median TLS relay.
    pub delivery_of_relay: f64,
    /// The PN GW's peak resident memory over the run, MiB.
    pub gateway_peak_mib: f64,
    /// The target PNE's peak resident memory over the run, MiB.
    pub target_peak_mib: f64,
    /// The source PNE's peak resident memory over the run, MiB.
    pub source_peak_mib: f64,
    /// With `--kill-gateway`: the delivery through a PN GW killed midway, resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed: Option<Killed>,
    /// With `--outside`: the WAN bytes of a delivery from outside, aggregated and not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outside: Option<Outside>,
}

/// The CPU time the source, the PN GW and the target used during one push (user and system,
/// from `/proc/PID/stat`), and the share of the machine's CPUs that is: what is left is the
/// time the push waited (on acknowledgements, the disk, or other work of the machine), a
/// figure this machine's noise in rates does not blur.
#[derive(Debug, Serialize)]
pub struct PushCpu {
    /// Seconds of CPU, the source's.
    pub source_s: f64,
    /// Seconds of CPU, the PN GW's.
    pub gateway_s: f64,
    /// Seconds of CPU, the target's.
    pub target_s: f64,
    /// Their sum ÷ (the push's wall time × the machine's CPUs).
    pub busy: f64,
}

/// User and system time together, in seconds.
fn cpu_s(t: crate::stats::CpuTime) -> f64 {
    (t.user + t.system).as_secs_f64()
}

/// The bytes the PN GW's WAN session carried in for content from outside the PN.
#[derive(Debug, Serialize)]
pub struct Outside {
    /// PNEs that received it.
    pub targets: usize,
    /// The content's size, bytes.
    pub bytes: u64,
    /// WAN bytes in for one delivery to every target (its common part once).
    pub aggregated_wan_in: u64,
    /// WAN bytes in for one delivery to each target in turn.
    pub separate_wan_in: u64,
    /// Seconds of the one delivery to every target.
    pub aggregated_secs: f64,
}

/// The delivery through a PN GW killed a third of the way and started again.
#[derive(Debug, Serialize)]
pub struct Killed {
    /// What the target held when the PN GW was killed, bytes.
    pub at: u64,
    /// Seconds from the push to `delivery_sent`, the restart included.
    pub secs: f64,
    /// Peak resident memory of the PN GW killed, MiB.
    pub gateway_before_mib: f64,
    /// Peak resident memory of the PN GW started again, MiB.
    pub gateway_after_mib: f64,
}

/// `cpns-bench delivery`.
pub async fn delivery(a: DeliveryArgs) -> anyhow::Result<()> {
    ensure!(
        a.mib > 0 && a.rounds > 0,
        "--mib and --rounds must be at least 1"
    );
    let exe = a.bin.resolve()?;
    let tmp = tempfile::Builder::new()
        .prefix("cpns-bench-delivery-")
        .tempdir()?;
    let dir = tmp.path();
    let bytes = a.mib * 1024 * 1024;
    let file = dir.join("content.bin");
    write_content(&file, bytes)?;
    let sha = sha256_of(&file).await?;

    let world = World::start(&exe, dir, a.outside.saturating_sub(1), &a.pan_security).await?;
    let pki = pki::generate(&["127.0.0.1".into()])?;
    let mut delivery = Vec::new();
    let mut cpu = Vec::new();
    let mut tls = Vec::new();
    let (mut tls_cpu, mut relay_cpu) = (Vec::new(), Vec::new());
    let mut relay = Vec::new();
    for round in 0..a.rounds {
        if !a.json {
            eprintln!(
                "round {}/{}: a delivery of {} MiB",
                round + 1,
                a.rounds,
                a.mib
            );
        }
        let (took, used) = world.push(&exe, &file, round, &sha).await?;
        delivery.push(mib_s(bytes, took));
        cpu.push(used);
        if !a.json {
            eprintln!("round {}/{}: plain TLS", round + 1, a.rounds);
        }
        let me = std::process::id();
        let before = crate::stats::CpuTime::of(me)?;
        let took = tls_transfer(&pki, &file, &dir.join("tls.out")).await?;
        tls_cpu.push(cpu_s(crate::stats::CpuTime::of(me)?.since(before)));
        ensure!(
            sha256_of(&dir.join("tls.out")).await? == sha,
            "the TLS baseline's copy differs"
        );
        tls.push(mib_s(bytes, took));
        if !a.json {
            eprintln!("round {}/{}: a plain TLS relay", round + 1, a.rounds);
        }
        let before = crate::stats::CpuTime::of(me)?;
        let took = tls_relay_transfer(&pki, &file, &dir.join("relay.out")).await?;
        relay_cpu.push(cpu_s(crate::stats::CpuTime::of(me)?.since(before)));
        ensure!(
            sha256_of(&dir.join("relay.out")).await? == sha,
            "the TLS relay's copy differs"
        );
        relay.push(mib_s(bytes, took));
    }
    let mut world = world;
    let killed = if a.kill_gateway {
        if !a.json {
            eprintln!("one more, the PN GW killed a third of the way");
        }
        Some(
            world
                .push_through_a_kill(&exe, &file, a.rounds, &sha)
                .await?,
        )
    } else {
        None
    };
    let outside = if a.outside > 0 {
        if !a.json {
            eprintln!(
                "{} MiB from outside to {} PNEs, once to all, then once to each",
                a.outside_mib, a.outside
            );
        }
        Some(world.deliver_from_outside(&exe, a.outside_mib).await?)
    } else {
        None
    };
    let figures = DeliveryFigures {
        bytes,
        pan_security: a.pan_security.clone(),
        killed,
        outside,
        delivery_of_tls: median(&delivery) / median(&tls),
        delivery_of_relay: median(&delivery) / median(&relay),
        gateway_peak_mib: mib(crate::stats::peak_rss_bytes(world.gateway.pid)?),
        target_peak_mib: mib(crate::stats::peak_rss_bytes(world.target.pid)?),
        source_peak_mib: mib(crate::stats::peak_rss_bytes(world.source.pid)?),
        delivery_mib_s: delivery,
        delivery_cpu: cpu,
        tls_mib_s: tls,
        tls_cpu_s: tls_cpu,
        relay_mib_s: relay,
        relay_cpu_s: relay_cpu,
    };
    world.stop().await;
    if a.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        print_figures(&figures);
    }
    Ok(())
}

fn print_figures(f: &DeliveryFigures) {
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let list2 = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "delivery through a PN GW (PAN security {}): {} MiB/s (median {:.1})",
        f.pan_security,
        list(&f.delivery_mib_s),
        median(&f.delivery_mib_s)
    );
    for (round, c) in f.delivery_cpu.iter().enumerate() {
        println!(
            "  round {}: CPU {:.2} s source, {:.2} s PN GW, {:.2} s target; {:.0} % of the \
             machine busy with the push",
            round + 1,
            c.source_s,
            c.gateway_s,
            c.target_s,
            100.0 * c.busy
        );
    }
    println!(
        "plain TLS on loopback:    {} MiB/s (median {:.1}); CPU {} s",
        list(&f.tls_mib_s),
        median(&f.tls_mib_s),
        list2(&f.tls_cpu_s)
    );
    println!(
        "a plain TLS relay:        {} MiB/s (median {:.1}); CPU {} s",
        list(&f.relay_mib_s),
        median(&f.relay_mib_s),
        list2(&f.relay_cpu_s)
    );
    if let Some(o) = &f.outside {
        println!(
            "from outside, {} bytes to {} PNEs, and 1 KiB to each of its own: the WAN carried in \
             {} bytes for one delivery to all ({:.2} times the content, {:.1} s), {} for one to \
             each ({:.2} times)",
            o.bytes,
            o.targets,
            o.aggregated_wan_in,
            o.aggregated_wan_in as f64 / o.bytes as f64,
            o.aggregated_secs,
            o.separate_wan_in,
            o.separate_wan_in as f64 / o.bytes as f64
        );
    }
    if let Some(k) = &f.killed {
        println!(
            "the PN GW killed at {} of {} bytes: resumed, the hash checked, in {:.1} s; its peak \
             memory {:.1} MiB before the kill, {:.1} MiB after",
            k.at, f.bytes, k.secs, k.gateway_before_mib, k.gateway_after_mib
        );
    }
    println!(
        "delivery ÷ TLS: {:.2}; delivery ÷ TLS relay: {:.2}; peak memory: PN GW {:.1} MiB, \
         target {:.1} MiB, source {:.1} MiB ({} MiB delivered)",
        f.delivery_of_tls,
        f.delivery_of_relay,
        f.gateway_peak_mib,
        f.target_peak_mib,
        f.source_peak_mib,
        f.bytes / (1024 * 1024)
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn mib_s(bytes: u64, took: Duration) -> f64 {
    mib(bytes) / took.as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `bytes` of content that do not compress or repeat, written to `path`.
fn write_content(path: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut left = bytes;
    let mut piece = vec![0u8; PIECE];
    while left > 0 {
        for b in piece.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        let n = usize::try_from(left.min(PIECE as u64))?;
        out.write_all(&piece[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

async fn sha256_of(path: &Path) -> anyhow::Result<[u8; 32]> {
    use sha2::Digest;
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| path.display().to_string())?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// The file sent over one TLS 1.3 connection on loopback, read and written in [`PIECE`]s: the
/// time from the connection to the last byte written at the other end.
async fn tls_transfer(pki: &pki::Pki, from: &Path, to: &Path) -> anyhow::Result<Duration> {
    let acceptor = TlsAcceptor::from(pki::server_config(
        &pki.server_cert_pem,
        &pki.server_key_pem,
    )?);
    let connector = TlsConnector::from(pki::client_config(&pki.ca_cert_pem)?);
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let addr = listener.local_addr()?;
    let to = to.to_path_buf();
    let receiver = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        receive_to_file(&mut tls, &to).await
    });
    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await?;
    send_file(&mut tls, from).await?;
    receiver.await??;
    Ok(started.elapsed())
}

/// What `tls` carries, to its end, written to a new file at `to` and synced, as a target makes
/// what it received durable before it says so.
async fn receive_to_file(
    tls: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &Path,
) -> anyhow::Result<()> {
    let mut out = tokio::fs::File::create(to).await?;
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await?;
    }
    out.flush().await?;
    out.sync_all().await?;
    Ok(())
}

/// The file at `from` written to `tls` a [`PIECE`] at a time, and `tls` closed.
async fn send_file(
    tls: &mut (impl tokio::io::AsyncWrite + Unpin),
    from: &Path,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(from).await?;
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        tls.write_all(&buf[..n]).await?;
    }
    tls.shutdown().await?;
    Ok(())
}

/// The file sent through a plain TLS relay on loopback: TLS 1.3 from the source to the relay,
/// the relay reading each piece in the clear and writing it on a second TLS 1.3 connection to
/// the target, which writes it to a file and syncs it; the time from the first connection to
/// the last byte written.
async fn tls_relay_transfer(pki: &pki::Pki, from: &Path, to: &Path) -> anyhow::Result<Duration> {
    let acceptor = TlsAcceptor::from(pki::server_config(
        &pki.server_cert_pem,
        &pki.server_key_pem,
    )?);
    let connector = TlsConnector::from(pki::client_config(&pki.ca_cert_pem)?);
    let target_listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let target_addr = target_listener.local_addr()?;
    let relay_listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let relay_addr = relay_listener.local_addr()?;
    let to = to.to_path_buf();
    let target_acceptor = acceptor.clone();
    let target = tokio::spawn(async move {
        let (tcp, _) = target_listener.accept().await?;
        let mut tls = target_acceptor.accept(tcp).await?;
        receive_to_file(&mut tls, &to).await
    });
    let relay_connector = connector.clone();
    let relay = tokio::spawn(async move {
        let (tcp, _) = relay_listener.accept().await?;
        let mut inbound = acceptor.accept(tcp).await?;
        let next = TcpStream::connect(target_addr).await?;
        next.set_nodelay(true)?;
        let mut outbound = relay_connector
            .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), next)
            .await?;
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = inbound.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            outbound.write_all(&buf[..n]).await?;
        }
        outbound.shutdown().await?;
        // Until the target closes: what it sent (its session tickets) read, so that closing
        // here resets nothing it has still to read.
        while matches!(outbound.read(&mut buf).await, Ok(n) if n > 0) {}
        anyhow::Ok(())
    });
    let started = Instant::now();
    let tcp = TcpStream::connect(relay_addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await?;
    send_file(&mut tls, from).await?;
    relay.await??;
    target.await??;
    Ok(started.elapsed())
}

/// A `cpns` process whose `--json` events are read.
struct Proc {
    child: Child,
    pid: u32,
    name: &'static str,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl Proc {
    fn spawn(exe: &Path, name: &'static str, args: &[&str]) -> anyhow::Result<Proc> {
        let mut child = Command::new(exe)
            .args(args)
            .env("CPNS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} {}", exe.display(), args[0]))?;
        let pid = child.id().context("it exited at once")?;
        let out = child.stdout.take().context("its stdout")?;
        Ok(Proc {
            child,
            pid,
            name,
            lines: Some(BufReader::new(out).lines()),
        })
    }

    /// Waits for the event `name` for which `pick` holds.
    async fn expect(
        &mut self,
        event: &str,
        pick: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let name = self.name;
        let lines = self.lines.as_mut().context("its events are drained")?;
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["event"] == event && pick(&v) {
                    return Ok(v);
                }
            }
            bail!("{name} exited before {event} (its errors are above)")
        };
        tokio::time::timeout(STEP_TIMEOUT, wait)
            .await
            .with_context(|| format!("{name} did not tell {event} in time"))?
    }

    /// Reads its events from now on in a task of their own, so its pipe never fills.
    fn drain(&mut self) {
        if let Some(mut lines) = self.lines.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
    }
}

/// The running system: a server, a PN GW, and two PNEs in one PN.
struct World {
    dir: PathBuf,
    /// The PN.
    pn: String,
    /// The PNEs that receive: `target` first.
    targets: Vec<String>,
    /// The extra targets' processes.
    extra: Vec<Proc>,
    /// The PN GW's command line, its PAN address fixed (to start it again).
    gateway_args: Vec<String>,
    server: Proc,
    gateway: Proc,
    target: Proc,
    source: Proc,
}

impl World {
    async fn start(
        exe: &Path,
        dir: &Path,
        extra: usize,
        pan_security: &str,
    ) -> anyhow::Result<World> {
        let data = dir.join("server");
        let s = |p: &Path| p.to_string_lossy().into_owned();
        run(exe, &["init", "--data-dir", &s(&data)]).await?;
        let mut targets = vec!["target".to_string()];
        targets.extend((2..=extra + 1).map(|i| format!("target-{i}")));
        let mut devices = vec![("gateway", "gw".to_string()), ("pne", "source".to_string())];
        devices.extend(targets.iter().map(|t| ("pne", t.clone())));
        for (kind, id) in &devices {
            let (kind, id) = (*kind, id.as_str());
            let cred = s(&dir.join(format!("{id}.cred.json")));
            run(
                exe,
                &[
                    "enroll",
                    "--data-dir",
                    &s(&data),
                    "--user",
                    "bench",
                    "--kind",
                    kind,
                    "--id",
                    id,
                    "--out",
                    &cred,
                ],
            )
            .await?;
        }
        let mut server = Proc::spawn(
            exe,
            "the server",
            &[
                "server",
                "--json",
                "--data-dir",
                &s(&data),
                "--listen",
                "127.0.0.1:0",
            ],
        )?;
        let addr = text(&server.expect("listening", |_| true).await?["addr"]);
        let mut gateway = Proc::spawn(
            exe,
            "the PN GW",
            &[
                "gateway",
                "--json",
                "--credential",
                &s(&dir.join("gw.cred.json")),
                "--server",
                &addr,
                "--pan-listen",
                "127.0.0.1:0",
                "--store",
                &s(&dir.join("gw.db")),
                "--pan-security",
                pan_security,
            ],
        )?;
        let pan = text(&gateway.expect("pan_listening", |_| true).await?["addr"]);
        gateway.expect("wan_ready", |_| true).await?;
        let gateway_args: Vec<String> = [
            "gateway",
            "--json",
            "--credential",
            &s(&dir.join("gw.cred.json")),
            "--server",
            &addr,
            "--pan-listen",
            &pan,
            "--store",
            &s(&dir.join("gw.db")),
            "--pan-security",
            pan_security,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let pne = |id: &str, role: &str| -> Vec<String> {
            [
                "pne",
                "--json",
                "--stay",
                "--credential",
                &s(&dir.join(format!("{id}.cred.json"))),
                "--store",
                &s(&dir.join(format!("{id}.db"))),
                "--gateway",
                &pan,
                "--device-type",
                id,
                "--pan-security",
                pan_security,
            ]
            .iter()
            .map(ToString::to_string)
            .chain(role.split(' ').map(ToString::to_string))
            .collect()
        };
        let args = pne("target", "--await-invitation");
        let mut target = Proc::spawn(exe, "the target PNE", &strs(&args))?;
        gateway
            .expect("pne_discovered", |v| v["pne"] == "target")
            .await?;
        let mut others = Vec::new();
        for t in &targets[1..] {
            let args = pne(t, "--await-invitation");
            others.push(Proc::spawn(exe, "a target PNE", &strs(&args))?);
            gateway
                .expect("pne_discovered", |v| v["pne"] == t.as_str())
                .await?;
        }
        let args = pne("source", "--setup all");
        let mut source = Proc::spawn(exe, "the source PNE", &strs(&args))?;
        let pn = text(&source.expect("pn_joined", |_| true).await?["pn_id"]);
        target
            .expect("pn_joined", |v| v["pn_id"] == pn.as_str())
            .await?;
        for p in &mut others {
            p.expect("pn_joined", |v| v["pn_id"] == pn.as_str()).await?;
            p.drain();
        }
        for p in [&mut server, &mut gateway, &mut target, &mut source] {
            p.drain();
        }
        let world = World {
            dir: dir.to_path_buf(),
            pn,
            targets,
            extra: others,
            gateway_args,
            server,
            gateway,
            target,
            source,
        };
        Ok(world)
    }

    /// Round `round`'s push of `file` to the target: the time to `delivery_sent`, the target's
    /// copy checked against `sha`.
    async fn push(
        &self,
        exe: &Path,
        file: &Path,
        round: u32,
        sha: &[u8; 32],
    ) -> anyhow::Result<(Duration, PushCpu)> {
        let name = format!("round-{round}.bin");
        let pids = [self.source.pid, self.gateway.pid, self.target.pid];
        let cpu_at = || -> anyhow::Result<Vec<crate::stats::CpuTime>> {
            pids.iter()
                .map(|p| crate::stats::CpuTime::of(*p).context("read a process's CPU time"))
                .collect()
        };
        let before = cpu_at()?;
        let started = Instant::now();
        let out = run(
            exe,
            &[
                "content",
                "push",
                &file.to_string_lossy(),
                "--to",
                "target",
                "--name",
                &name,
                "--wait",
                "--json",
                "--store",
                &self.dir.join("source.db").to_string_lossy(),
            ],
        )
        .await?;
        let took = started.elapsed();
        let used: Vec<f64> = cpu_at()?
            .into_iter()
            .zip(before)
            .map(|(after, before)| cpu_s(after.since(before)))
            .collect();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let used = PushCpu {
            source_s: used[0],
            gateway_s: used[1],
            target_s: used[2],
            busy: used.iter().sum::<f64>() / (took.as_secs_f64() * cpus),
        };
        let last: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
            .with_context(|| format!("cpns content push printed {out:?}"))?;
        ensure!(
            last["event"] == "delivery_sent" && last["delivered"][0] == "target",
            "the delivery did not reach the target: {out}"
        );
        let kept = self.dir.join("target.db.inbox").join(&name);
        ensure!(
            sha256_of(&kept).await? == *sha,
            "the target's copy differs from the file"
        );
        tokio::fs::remove_file(&kept).await?;
        Ok((took, used))
    }

    /// A push of `file` with the PN GW killed (SIGKILL) once the target holds a third of it,
    /// and started again on its store and PAN address: the push must end, the target's copy
    /// with the file's hash.
    async fn push_through_a_kill(
        &mut self,
        exe: &Path,
        file: &Path,
        round: u32,
        sha: &[u8; 32],
    ) -> anyhow::Result<Killed> {
        let name = format!("round-{round}.bin");
        let size = tokio::fs::metadata(file).await?.len();
        let started = Instant::now();
        let push = Command::new(exe)
            .args(["content", "push"])
            .arg(file)
            .args([
                "--to", "target", "--name", &name, "--wait", "--json", "--store",
            ])
            .arg(self.dir.join("source.db"))
            .env("CPNS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start cpns content push")?;
        // The target's partial file grows as it writes: watched, not slept on blindly.
        let inbox = self.dir.join("target.db.inbox");
        let at = loop {
            let mut held = 0;
            if let Ok(mut entries) = tokio::fs::read_dir(&inbox).await {
                while let Some(e) = entries.next_entry().await? {
                    if e.file_name().to_string_lossy().ends_with(".part") {
                        held = e.metadata().await?.len();
                    }
                }
            }
            if held >= size / 3 {
                break held;
            }
            ensure!(
                started.elapsed() < STEP_TIMEOUT * 4,
                "the target did not reach a third of the content in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let gateway_before_mib = mib(crate::stats::peak_rss_bytes(self.gateway.pid)?);
        self.gateway.child.kill().await?;
        let args: Vec<&str> = self.gateway_args.iter().map(String::as_str).collect();
        let mut gateway = Proc::spawn(exe, "the PN GW (again)", &args)?;
        gateway.expect("wan_ready", |_| true).await?;
        gateway.drain();
        self.gateway = gateway;
        let out = tokio::time::timeout(STEP_TIMEOUT * 10, push.wait_with_output())
            .await
            .context("the push did not end after the restart")??;
        let secs = started.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .with_context(|| format!("cpns content push printed {stdout:?}"))?;
        ensure!(
            last["event"] == "delivery_sent" && last["delivered"][0] == "target",
            "the delivery did not resume to its end: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kept = inbox.join(&name);
        ensure!(
            sha256_of(&kept).await? == *sha,
            "the target's copy differs from the file"
        );
        tokio::fs::remove_file(&kept).await?;
        Ok(Killed {
            at,
            secs,
            gateway_before_mib,
            gateway_after_mib: mib(crate::stats::peak_rss_bytes(self.gateway.pid)?),
        })
    }

    /// What the PN GW's WAN sessions carried in so far, bytes.
    async fn wan_in(&self, exe: &Path) -> anyhow::Result<u64> {
        let gw = self.dir.join("gw.db");
        let out = run(
            exe,
            &["pn", "traffic", "--json", "--store", &gw.to_string_lossy()],
        )
        .await?;
        let v: Value = serde_json::from_str(out.trim())?;
        v["wan_bytes_in"]
            .as_u64()
            .context("the PN GW's traffic without wan_bytes_in")
    }

    /// `mib` MiB from outside the PN to every target: once to all, then once to each; the
    /// WAN bytes in of each, every copy checked.
    async fn deliver_from_outside(&self, exe: &Path, mib: u64) -> anyhow::Result<Outside> {
        let file = self.dir.join("outside.bin");
        write_content(&file, mib * 1024 * 1024)?;
        let sha = sha256_of(&file).await?;
        // Each target's own part: 1 KiB naming it (a licence, a subtitle track).
        let mut parts = Vec::new();
        for t in &self.targets {
            let part = self.dir.join(format!("{t}.part-of-its-own"));
            let text = format!("for {t} only\n").repeat(1024 / (t.len() + 10) + 1);
            tokio::fs::write(&part, &text.as_bytes()[..1024]).await?;
            parts.push((t.clone(), part));
        }
        let data = self.dir.join("server").to_string_lossy().into_owned();
        let push = |to: Vec<String>, name: String| {
            let file = file.to_string_lossy().into_owned();
            let data = data.clone();
            let pn = self.pn.clone();
            let mut args: Vec<String> = [
                "content",
                "push",
                &file,
                "--data-dir",
                &data,
                "--pn",
                &pn,
                "--to",
                &to.join(","),
                "--source",
                "bench-vod",
                "--name",
                &name,
                "--wait",
                "--json",
            ]
            .iter()
            .map(ToString::to_string)
            .collect();
            for (t, part) in &parts {
                if to.contains(t) {
                    args.push("--specific".into());
                    args.push(format!("{t}={}", part.display()));
                }
            }
            async move {
                let out = run(exe, &strs(&args)).await?;
                let last: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
                    .with_context(|| format!("cpns content push printed {out:?}"))?;
                ensure!(
                    last["event"] == "delivery_sent",
                    "the delivery from outside did not end delivered: {out}"
                );
                anyhow::Ok(())
            }
        };
        let check = |name: &str| {
            let paths: Vec<PathBuf> = self
                .targets
                .iter()
                .map(|t| self.dir.join(format!("{t}.db.inbox")).join(name))
                .collect();
            let parts = parts.clone();
            async move {
                for (p, (_, part)) in paths.into_iter().zip(parts) {
                    ensure!(sha256_of(&p).await? == sha, "{} differs", p.display());
                    let mut own = p.clone().into_os_string();
                    own.push(".specific");
                    ensure!(
                        tokio::fs::read(&own).await? == tokio::fs::read(&part).await?,
                        "{} is not its own part",
                        p.display()
                    );
                    tokio::fs::remove_file(&p).await?;
                    tokio::fs::remove_file(&own).await?;
                }
                anyhow::Ok(())
            }
        };
        let before = self.wan_in(exe).await?;
        let started = Instant::now();
        push(self.targets.clone(), "to-all.bin".into()).await?;
        let aggregated_secs = started.elapsed().as_secs_f64();
        let aggregated_wan_in = self.wan_in(exe).await? - before;
        check("to-all.bin").await?;
        let before = self.wan_in(exe).await?;
        for t in &self.targets {
            push(vec![t.clone()], "to-each.bin".into()).await?;
        }
        let separate_wan_in = self.wan_in(exe).await? - before;
        check("to-each.bin").await?;
        Ok(Outside {
            targets: self.targets.len(),
            bytes: mib * 1024 * 1024,
            aggregated_wan_in,
            separate_wan_in,
            aggregated_secs,
        })
    }

    async fn stop(mut self) {
        for p in &mut self.extra {
            let _ = p.child.kill().await;
        }
        for p in [
            &mut self.source,
            &mut self.target,
            &mut self.gateway,
            &mut self.server,
        ] {
            let _ = p.child.kill().await;
        }
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `cpns args…` run to its end: its stdout, or an error with its stderr.
async fn run(exe: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(exe)
        .args(args)
        .env("CPNS_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("run cpns {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "cpns {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
