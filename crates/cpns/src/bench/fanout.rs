//! `cpns bench-fanout`: one status change fanned out to many subscribers (docs/device-status.md,
//! "Fan-out"; BENCHMARKS.md). The CPNS Server runs as its own process; N PN GW sessions, held by
//! helper processes (`cpns bench-subscribe`), each subscribe to one entity's status; a
//! publisher PN GW changes its own status, one change at a time, and every subscriber's
//! notification is timed from the publisher's send to its arrival at the subscriber's process,
//! both read on the machine's wall clock (one clock: all processes run on this machine). The
//! figures are p50, p99 and the largest delivery latency over every (change, subscriber) pair.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use cpns_crypto::MachineRng;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::net;
use super::stats::Latencies;

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
}

/// `cpns bench-subscribe` (hidden): households `from..to` subscribe to `watch` and print every
/// notification as `n <label> <unix ns>`.
#[derive(Args, Debug)]
pub(crate) struct SubscribeArgs {
    #[command(flatten)]
    pub households: super::HouseholdsArgs,
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

/// `cpns bench-subscribe`.
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
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(l) => println!("{l}"),
                None => break,
            },
            // The bench closes our stdin when it is done.
            l = stdin.next_line() => if !matches!(l, Ok(Some(_))) { break },
        }
    }
    readers.abort_all();
    Ok(())
}

/// The figures.
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

/// `cpns bench-fanout`.
pub(crate) async fn fanout(a: FanoutArgs) -> anyhow::Result<()> {
    if a.subscribers == 0 || a.helpers == 0 || a.changes == 0 {
        bail!("--subscribers, --helpers and --changes are at least 1");
    }
    if a.subscribers > 19_000 {
        bail!("at most 19,000 subscribers: a process here may hold ~20,000 open files");
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    eprintln!("enrolling {} PN GWs…", a.subscribers + 1);
    net::prepare(&dir, a.subscribers + 1, 0, 1, &|_| {}).await?;
    let exe = std::env::current_exe()?;
    let server = net::ServerProcess::start_with(
        &exe,
        &dir,
        a.subscribers + 16,
        // Held sessions are driven, but the bench is about fan-out, not silence.
        &["--offline-after-s", "3600"],
    )
    .await?;
    // Household 0 publishes; the others subscribe to it.
    let (ca, publisher) = net::read_households(&dir, 0..1)?;
    let watch = publisher[0].gateway.id.clone();
    let per = a.subscribers.div_ceil(a.helpers);
    let mut helpers = Vec::new();
    let (tx, mut lines) = mpsc::channel::<String>(65_536);
    for k in 0..a.helpers {
        let from = 1 + k * per;
        let to = (1 + (k + 1) * per).min(a.subscribers + 1);
        if from >= to {
            break;
        }
        let mut child = Command::new(&exe)
            .arg("bench-subscribe")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--server", &server.addr])
            .args(["--from", &from.to_string(), "--to", &to.to_string()])
            .args(["--watch", watch.as_str()])
            .env("CPNS_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start a bench-subscribe helper")?;
        let out = child.stdout.take().context("helper stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut l = BufReader::new(out).lines();
            while let Ok(Some(line)) = l.next_line().await {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        helpers.push(child);
    }
    drop(tx);
    let mut ready = 0usize;
    let mut helpers_ready = 0usize;
    while helpers_ready < helpers.len() {
        let line = tokio::time::timeout(Duration::from_secs(300), lines.recv())
            .await
            .context("the subscribers did not get ready within 300 s")?
            .context("a helper ended before it was ready")?;
        if let Some(n) = line.strip_prefix("ready ") {
            ready += n.parse::<usize>().unwrap_or(0);
            helpers_ready += 1;
        } else if let Some(n) = line.strip_prefix("subscribed ") {
            eprintln!("  a helper has {n} subscribed");
        }
    }
    if ready != a.subscribers {
        bail!("{ready} of {} subscribers ready", a.subscribers);
    }
    eprintln!(
        "{ready} subscribers ready; publishing {} changes",
        a.changes
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
    let mut delivered = 0usize;
    let mut slowest = Duration::ZERO;
    let mut sent_at: BTreeMap<String, u128> = BTreeMap::new();
    for i in 0..a.changes {
        let label = format!("fanout-{i}");
        let t0 = unix_ns();
        sent_at.insert(label.clone(), t0);
        publisher.set_status(label.clone()).await?;
        let mut got = 0usize;
        let mut last = 0u128;
        while got < a.subscribers {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
                .await
                .with_context(|| {
                    format!(
                        "change {i}: {got} of {} notified within 60 s",
                        a.subscribers
                    )
                })?
                .context("a helper ended")?;
            let mut parts = line.split(' ');
            let (Some("n"), Some(l), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Some(sent), Ok(at)) = (sent_at.get(l), at.parse::<u128>()) else {
                continue;
            };
            let d =
                Duration::from_nanos(u64::try_from(at.saturating_sub(*sent)).unwrap_or(u64::MAX));
            latencies.record(d);
            delivered += 1;
            if l == label {
                got += 1;
                last = last.max(at);
            }
        }
        slowest = slowest.max(Duration::from_nanos(
            u64::try_from(last.saturating_sub(t0)).unwrap_or(u64::MAX),
        ));
        // The server takes two status reports a second from one device (its rate limit).
        let spent = Duration::from_nanos(u64::try_from(unix_ns() - t0).unwrap_or(0));
        if let Some(rest) = Duration::from_millis(600).checked_sub(spent) {
            tokio::time::sleep(rest).await;
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = FanoutReport {
        subscribers: a.subscribers,
        changes: a.changes,
        delivered,
        p50_ms: ms(latencies.quantile(0.50)),
        p99_ms: ms(latencies.quantile(0.99)),
        max_ms: ms(latencies.quantile(1.0)),
        slowest_change_ms: ms(slowest),
    };
    publisher.close().await;
    for mut h in helpers {
        drop(h.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), h.wait()).await;
    }
    server.stop().await?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "one status change to {} subscribers, {} changes ({} notifications): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; slowest change complete in {:.1} ms",
            report.subscribers,
            report.changes,
            report.delivered,
            report.p50_ms,
            report.p99_ms,
            report.max_ms,
            report.slowest_change_ms
        );
    }
    Ok(())
}
