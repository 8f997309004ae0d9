//! `cpns-bench fanout`: one status change fanned out to many subscribers (docs/device-status.md,
//! "Fan-out"; BENCHMARKS.md). The CPNS Server runs as its own process; N PN GW sessions, held by
//! helper processes (`cpns-bench subscribe`), each subscribe to one entity's status; a
//! publisher PN GW changes its own status, one change at a time, and every subscriber's
//! notification is timed from the publisher's send to its arrival at the subscriber's process,
//! both read on the machine's wall clock (one clock: all processes run on this machine). The
//! figures are p50, p99 and the largest delivery latency over every (change, subscriber) pair.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use cpns_crypto::MachineRng;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::households::HouseholdsArgs;
use crate::net::{self, CpnsBin};
use crate::stats::Latencies;

/// The settings of `cpns-bench fanout`.
#[derive(Args, Debug)]
pub(crate) struct FanoutArgs {
    /// Subscribers: PN GW sessions each subscribed to the publisher's status (a process here
    /// may hold ~20,000 open files; the helpers share them).
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Status changes published, one at a time.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Helper processes holding the subscribers.
    #[arg(long, default_value_t = 4)]
    pub helpers: usize,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also measure the machine's floor: the same number of plain loopback TCP connections,
    /// one 64-byte write to each per change from one process, read by the same helpers (no TLS,
    /// no protocol, no store).
    #[arg(long)]
    pub floor: bool,
    #[command(flatten)]
    pub cpns: CpnsBin,
}

/// `cpns-bench subscribe-raw` (hidden): `count` plain TCP connections to `addr`, every 64-byte
/// frame read printed as `n fanout-<index> <unix ns>`.
#[derive(Args, Debug)]
pub(crate) struct RawSubscribeArgs {
    /// Where the bench listens.
    #[arg(long)]
    pub addr: String,
    /// Connections.
    #[arg(long)]
    pub count: usize,
}

/// `cpns-bench subscribe-raw`.
pub(crate) async fn subscribe_raw(a: RawSubscribeArgs) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let (tx, mut lines) = mpsc::channel::<String>(4096);
    let mut conns = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        let c = tokio::net::TcpStream::connect(&a.addr).await?;
        c.set_nodelay(true)?;
        conns.push(c);
    }
    println!("ready {}", conns.len());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut readers = JoinSet::new();
    for mut c in conns {
        let tx = tx.clone();
        readers.spawn(async move {
            let mut frame = [0u8; 64];
            while c.read_exact(&mut frame).await.is_ok() {
                let at = unix_ns();
                let i = u64::from_le_bytes(frame[..8].try_into().unwrap_or_default());
                if tx.send(format!("n fanout-{i} {at}")).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    print_batches(&mut lines).await;
    readers.abort_all();
    Ok(())
}

/// Writes the lines as they come, what is waiting in one write, until the lines end or the
/// bench closes stdin.
async fn print_batches(lines: &mut mpsc::Receiver<String>) {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            // What is waiting goes out in one write: a line each would cost a system call
            // each, on the cores the server shares.
            n = lines.recv_many(&mut batch, 4096) => {
                if n == 0 { break }
                let mut text = batch.join("\n");
                text.push('\n');
                batch.clear();
                if tokio::io::AsyncWriteExt::write_all(&mut out, text.as_bytes()).await.is_err() {
                    break;
                }
                let _ = tokio::io::AsyncWriteExt::flush(&mut out).await;
            },
            // The bench closes our stdin when it is done.
            l = stdin.next_line() => if !matches!(l, Ok(Some(_))) { break },
        }
    }
}

/// `cpns-bench subscribe` (hidden): households `from..to` subscribe to `watch` and print every
/// notification as `n <label> <unix ns>`.
#[derive(Args, Debug)]
pub(crate) struct SubscribeArgs {
    #[command(flatten)]
    pub households: HouseholdsArgs,
    /// The entity watched.
    #[arg(long)]
    pub watch: cpns_wire::EntityId,
}

/// How many sessions a helper connects at once.
const CONNECTING: usize = 32;

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `cpns-bench subscribe`.
pub(crate) async fn subscribe(a: SubscribeArgs) -> anyhow::Result<()> {
    let h = &a.households;
    let (ca, households) = net::read_households(&h.data_dir, h.from..h.to)?;
    let tls = net::client_tls(&ca)?;
    let next = Arc::new(AtomicU64::new(0));
    let households = Arc::new(households);
    let (tx, mut lines) = mpsc::channel::<String>(4096);
    let ready = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for t in 0..CONNECTING {
        let (addr, tls, hs, next, tx, ready, watch) = (
            h.server.clone(),
            tls.clone(),
            households.clone(),
            next.clone(),
            tx.clone(),
            ready.clone(),
            a.watch.clone(),
        );
        tasks.spawn(async move {
            let mut rng = MachineRng::from_seed_u64(7_000 + t as u64);
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(hh) = hs.get(i) else { break };
                let mut c = net::connect(&addr, &tls, hh.clone(), rng.fork()).await?;
                c.subscribe(watch.clone()).await?;
                mine.push(c);
                let n = ready.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 500 == 0 {
                    let _ = tx.send(format!("subscribed {n}")).await;
                }
            }
            Ok::<_, anyhow::Error>(mine)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    println!("ready {}", all.len());
    // println! above and the batched writes below share stdout; flush the line now.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // Every session reads on its own; what arrives is printed by one writer.
    let mut readers = JoinSet::new();
    for mut c in all {
        let tx = tx.clone();
        readers.spawn(async move {
            loop {
                let Ok(notes) = c.notifications().await else {
                    return;
                };
                for (n, at) in notes {
                    let label = n
                        .entries
                        .first()
                        .and_then(|e| e.label.clone())
                        .unwrap_or_default();
                    if tx.send(format!("n {label} {at}")).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    print_batches(&mut lines).await;
    readers.abort_all();
    Ok(())
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct FanoutReport {
    subscribers: usize,
    changes: usize,
    delivered: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The slowest change's time until its last subscriber had it.
    slowest_change_ms: f64,
}

/// The lines of helper processes, merged.
struct Helpers {
    children: Vec<tokio::process::Child>,
    lines: mpsc::Receiver<String>,
}

impl Helpers {
    /// Starts `helpers` processes, `args(k)` each; waits until all print `ready N`.
    async fn start(
        exe: &std::path::Path,
        args: impl Fn(usize) -> Option<Vec<String>>,
        helpers: usize,
        expect: usize,
    ) -> anyhow::Result<Helpers> {
        let (tx, lines) = mpsc::channel::<String>(65_536);
        let mut children = Vec::new();
        for k in 0..helpers {
            let Some(args) = args(k) else { break };
            let (child, mut l) = net::spawn_helper(exe, &args)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = l.next_line().await {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            });
            children.push(child);
        }
        let mut h = Helpers { children, lines };
        let mut ready = 0usize;
        let mut ready_helpers = 0usize;
        while ready_helpers < h.children.len() {
            let line = tokio::time::timeout(Duration::from_secs(300), h.lines.recv())
                .await
                .context("the subscribers did not get ready within 300 s")?
                .context("a helper ended before it was ready")?;
            if let Some(n) = line.strip_prefix("ready ") {
                ready += n.parse::<usize>().unwrap_or(0);
                ready_helpers += 1;
            } else if let Some(n) = line.strip_prefix("subscribed ") {
                eprintln!("  a helper has {n} subscribed");
            }
        }
        if ready != expect {
            bail!("{ready} of {expect} subscribers ready");
        }
        Ok(h)
    }

    /// Waits until `subscribers` helpers' lines report change `label`, recording each one's
    /// latency from `sent` (Unix ns); when the last came.
    async fn collect(
        &mut self,
        label: &str,
        sent: u128,
        subscribers: usize,
        latencies: &mut Latencies,
    ) -> anyhow::Result<u128> {
        let (mut got, mut last) = (0usize, 0u128);
        while got < subscribers {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
                .await
                .with_context(|| format!("{label}: {got} of {subscribers} notified within 60 s"))?
                .context("a helper ended")?;
            let mut parts = line.split(' ');
            let (Some("n"), Some(l), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(at) = at.parse::<u128>() else { continue };
            if l != label {
                continue;
            }
            latencies.record(ns(at.saturating_sub(sent)));
            got += 1;
            last = last.max(at);
        }
        Ok(last)
    }

    async fn stop(mut self) {
        for mut h in self.children.drain(..) {
            drop(h.stdin.take());
            let _ = tokio::time::timeout(Duration::from_secs(30), h.wait()).await;
        }
    }
}

fn ns(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

fn report(subscribers: usize, changes: usize, mut l: Latencies, slowest: Duration) -> FanoutReport {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    FanoutReport {
        subscribers,
        changes,
        delivered: subscribers * changes,
        p50_ms: ms(l.quantile(0.50)),
        p99_ms: ms(l.quantile(0.99)),
        max_ms: ms(l.quantile(1.0)),
        slowest_change_ms: ms(slowest),
    }
}

/// `cpns-bench fanout`.
pub(crate) async fn fanout(a: FanoutArgs) -> anyhow::Result<()> {
    if a.subscribers == 0 || a.helpers == 0 || a.changes == 0 {
        bail!("--subscribers, --helpers and --changes are at least 1");
    }
    if a.subscribers > 19_000 {
        bail!("at most 19,000 subscribers: a process here may hold ~20,000 open files");
    }
    let server_bin = a.cpns.resolve()?;
    let exe = std::env::current_exe().context("locate the cpns-bench binary")?;
    let cpns = cpns_fanout(&a, &server_bin, &exe).await?;
    let floor = if a.floor {
        Some(floor_fanout(&a, &exe).await?)
    } else {
        None
    };
    if a.json {
        println!("{}", serde_json::json!({ "cpns": cpns, "floor": floor }));
        return Ok(());
    }
    let line = |what: &str, r: &FanoutReport| {
        println!(
            "{what}: one change to {} subscribers, {} changes ({} notifications): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; slowest change complete in {:.1} ms",
            r.subscribers,
            r.changes,
            r.delivered,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.slowest_change_ms
        );
    };
    line("CPNS status notification", &cpns);
    if let Some(f) = &floor {
        line("floor: 64 bytes on plain TCP", f);
        println!(
            "ratio to the floor: p50 {:.1}x, p99 {:.1}x",
            cpns.p50_ms / f.p50_ms.max(1e-9),
            cpns.p99_ms / f.p99_ms.max(1e-9)
        );
    }
    Ok(())
}

/// The CPNS run: the server (`server_bin`), the subscribers' PN GW sessions (held by `exe`'s
/// helper processes), the publisher's changes.
async fn cpns_fanout(
    a: &FanoutArgs,
    server_bin: &std::path::Path,
    exe: &std::path::Path,
) -> anyhow::Result<FanoutReport> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    eprintln!("enrolling {} PN GWs…", a.subscribers + 1);
    net::prepare(&dir, a.subscribers + 1, 0, 1, &|_| {}).await?;
    let server = net::ServerProcess::start(server_bin, &dir, a.subscribers + 16).await?;
    // Household 0 publishes; the others subscribe to it.
    let (ca, publisher) = net::read_households(&dir, 0..1)?;
    let watch = publisher[0].gateway.id.clone();
    let per = a.subscribers.div_ceil(a.helpers);
    let (total, addr) = (a.subscribers, server.addr.clone());
    let args = |k: usize| {
        let from = 1 + k * per;
        let to = (1 + (k + 1) * per).min(total + 1);
        (from < to).then(|| {
            vec![
                "subscribe".to_string(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--server".into(),
                addr.clone(),
                "--from".into(),
                from.to_string(),
                "--to".into(),
                to.to_string(),
                "--watch".into(),
                watch.to_string(),
            ]
        })
    };
    let mut helpers = Helpers::start(exe, args, a.helpers, a.subscribers).await?;
    eprintln!(
        "{} subscribers ready; publishing {} changes",
        a.subscribers, a.changes
    );
    let tls = net::client_tls(&ca)?;
    let mut publisher = net::connect(
        &server.addr,
        &tls,
        publisher[0].clone(),
        MachineRng::from_seed_u64(3),
    )
    .await?;
    let mut latencies = Latencies::default();
    let mut slowest = Duration::ZERO;
    for i in 0..a.changes {
        let label = format!("fanout-{i}");
        let t0 = unix_ns();
        publisher.set_status(label.clone()).await?;
        let last = helpers
            .collect(&label, t0, a.subscribers, &mut latencies)
            .await?;
        slowest = slowest.max(ns(last.saturating_sub(t0)));
        // The server takes two status reports a second from one device (its rate limit).
        if let Some(rest) = Duration::from_millis(600).checked_sub(ns(unix_ns() - t0)) {
            tokio::time::sleep(rest).await;
        }
    }
    publisher.close().await;
    helpers.stop().await;
    server.stop().await?;
    Ok(report(a.subscribers, a.changes, latencies, slowest))
}

/// The machine's floor: the same connections as plain loopback TCP, one 64-byte write to each
/// per change from this process, read by the same number of helper processes.
async fn floor_fanout(a: &FanoutArgs, exe: &std::path::Path) -> anyhow::Result<FanoutReport> {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let per = a.subscribers.div_ceil(a.helpers);
    let total = a.subscribers;
    let accepting = tokio::spawn(async move {
        let mut conns = Vec::with_capacity(total);
        while conns.len() < total {
            let (c, _) = listener.accept().await?;
            c.set_nodelay(true)?;
            conns.push(c);
        }
        Ok::<_, std::io::Error>(conns)
    });
    let args = |k: usize| {
        let count = per.min(total.saturating_sub(k * per));
        (count > 0).then(|| {
            vec![
                "subscribe-raw".to_string(),
                "--addr".into(),
                addr.clone(),
                "--count".into(),
                count.to_string(),
            ]
        })
    };
    let mut helpers = Helpers::start(exe, args, a.helpers, a.subscribers).await?;
    let mut conns = accepting.await??;
    let mut latencies = Latencies::default();
    let mut slowest = Duration::ZERO;
    for i in 0..a.changes {
        let mut frame = [0u8; 64];
        frame[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t0 = unix_ns();
        for c in &mut conns {
            c.write_all(&frame).await?;
        }
        let last = helpers
            .collect(&format!("fanout-{i}"), t0, a.subscribers, &mut latencies)
            .await?;
        slowest = slowest.max(ns(last.saturating_sub(t0)));
    }
    drop(conns);
    helpers.stop().await;
    Ok(report(a.subscribers, a.changes, latencies, slowest))
}
