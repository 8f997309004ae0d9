//! `cpns-bench establish`: the server's costs measured from outside, side by side with Mosquitto
//! and with the ceilings of the same work done in memory, so that every figure is also a ratio
//! (BENCHMARKS.md).
//!
//! One run, in order: a data directory with PN GWs and PNEs enrolled in bulk; the CPNS Server as
//! a process of its own on loopback; PN GW session set-ups (TLS 1.3 + 002 §B.1.1.2 steps 8-17)
//! in a closed loop; PN establishments (000 §6.6.1.1, two PNEs, LocalEUKey, persisted) on
//! connected PN GWs in a closed loop, then in an open loop at half that rate; the PNs in the
//! store counted against the establishments acknowledged; the same establishment in memory
//! (the ceiling); an in-process rustls handshake ceiling; Mosquitto's TLS CONNECT rate; and,
//! on a fresh server, its memory per idle PN GW session while other processes hold many.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use cpns_crypto::MachineRng;
use cpns_store::{ServerStore, SqliteStore};
use cpns_wire::UserId;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use crate::households::HouseholdsArgs;
use crate::net::{self, Connected, CpnsBin, ServerProcess};
use crate::sim::Household;
use crate::stats::{CpuTime, Latencies, Rate, rss_bytes};
use crate::{baseline, memory};

/// The settings of `cpns-bench establish`.
#[derive(Args, Debug)]
pub(crate) struct EstablishArgs {
    /// Seconds each rate is measured for.
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Set-ups in flight at once, and PN GWs running establishments at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Idle PN GW sessions the server holds for the memory figure (a process here may hold at
    /// most ~20,000 open files, so at most 19,000).
    #[arg(long, default_value_t = 19_000)]
    pub idle_sessions: usize,
    /// Keep the bench's data directory here (default: a temporary one, removed afterwards).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Do not measure Mosquitto (for a machine without it).
    #[arg(long)]
    pub no_mosquitto: bool,
    /// Print the figures as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cpns: CpnsBin,
}

/// Set-ups in flight at once while idle sessions are being opened, per holding process.
const HOLD_CONCURRENCY: usize = 16;
/// Most sessions one holding process opens (each needs a file; a process holds ~20,000).
const HOLD_PER_PROCESS: usize = 7_000;
/// Households enrolled for the set-up measurement: set-ups cycle over them.
const SETUP_POOL: usize = 2_000;

/// Everything one run measured.
#[derive(Serialize, Debug)]
struct Report {
    machine: Machine,
    setups: Rate,
    establishments: Rate,
    establishments_half_rate: Rate,
    /// At a quarter of the rate: how latency falls with the machine's load.
    establishments_quarter_rate: Rate,
    acknowledged: u64,
    stored_pns: usize,
    ceiling: Rate,
    rustls_ceiling: Rate,
    mosquitto: Option<Rate>,
    idle: Idle,
    ratios: Ratios,
}

#[derive(Serialize, Debug)]
struct Machine {
    cpus: usize,
    cpu: String,
    kernel: String,
}

#[derive(Serialize, Debug)]
struct Idle {
    sessions: usize,
    server_rss_before: u64,
    /// Sessions held when the middle sample was taken, and the server's RSS then.
    sessions_at_middle: usize,
    server_rss_middle: u64,
    server_rss_after: u64,
    /// The slope from the middle sample to the end: what each further session adds, without
    /// the fixed costs the first sessions bring in (the store's page caches fill up to their
    /// bound as the sessions' reports are written). From the start if no middle sample was
    /// taken (a small run).
    bytes_per_session: u64,
}

#[derive(Serialize, Debug)]
struct Ratios {
    setups_vs_mosquitto: Option<f64>,
    setups_vs_rustls_ceiling: f64,
    establishments_vs_ceiling: f64,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel,
    }
}

/// A progress bar on stderr for one step (hidden when stderr is not a terminal).
fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>34} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(what.to_string());
    pb
}

/// A bar that fills over `secs`, ticking on its own until finished.
fn timed_bar(secs: f64, what: &str) -> ProgressBar {
    let pb = bar((secs * 10.0) as u64, what);
    let ticker = pb.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !ticker.is_finished() {
            tick.tick().await;
            ticker.inc(1);
        }
    });
    pb
}

/// `cpns-bench establish`.
pub(crate) async fn establish(a: EstablishArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 || a.secs <= 0.0 {
        bail!("--concurrency and --secs must be above zero");
    }
    if a.idle_sessions > 19_000 {
        bail!("--idle-sessions is at most 19000 here: a process may hold ~20,000 open files");
    }
    let temp;
    let dir = match &a.keep {
        Some(d) => {
            if d.join("master.key").exists() {
                bail!(
                    "{} already holds a data directory; name a new one",
                    d.display()
                );
            }
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().context("make a temporary directory")?;
            temp.path().join("data")
        }
    };
    // The server to measure, found before anything is enrolled.
    let server_bin = a.cpns.resolve()?;
    let secs = Duration::from_secs_f64(a.secs);
    // Set-ups cycle over up to SETUP_POOL PN GWs; a small run enrolls fewer.
    let gateways = a
        .idle_sessions
        .max(SETUP_POOL.min(a.concurrency * 64))
        .max(a.concurrency);
    let pb = bar(gateways as u64, "enrolling PN GWs and PNEs");
    let prepared = net::prepare(&dir, gateways, a.concurrency, 1, &|n| {
        pb.set_position(n as u64)
    })
    .await?;
    pb.finish();
    let tls = net::client_tls(&prepared.ca_pem)?;
    let households = Arc::new(prepared.households);

    let server = ServerProcess::start(&server_bin, &dir, a.idle_sessions + 1_000).await?;
    let setups = measure_setups(&server, &tls, &households, a.concurrency, secs).await?;
    let (establishments, half, quarter, acknowledged) =
        measure_establishments(&server, &tls, &households, a.concurrency, secs).await?;
    let stored_pns = {
        let store = SqliteStore::open(&net_db(&dir)).await?;
        let n = store.all_pns().await?.len();
        store.close().await;
        n
    };
    server.stop().await?;

    let pb = timed_bar(a.secs, "establishment ceiling (memory)");
    let ceiling_households: Vec<Household> = households[..a.concurrency].to_vec();
    let (ceiling, _) = tokio::task::spawn_blocking(move || {
        let owner = UserId::new(net::BENCH_USER)?;
        memory::establishment_ceiling(&owner, &ceiling_households, secs, 1)
    })
    .await??;
    pb.finish();

    let pb = timed_bar(a.secs, "rustls handshake ceiling");
    let rustls_ceiling =
        tokio::task::spawn_blocking(move || baseline::rustls_handshake_ceiling(secs)).await??;
    pb.finish();

    let mosquitto = if a.no_mosquitto {
        None
    } else if !baseline::mosquitto_available() {
        eprintln!("mosquitto not found: its figure is left out (apt-get install mosquitto)");
        None
    } else {
        let pb = timed_bar(a.secs, "Mosquitto TLS CONNECT");
        let work = dir.join("mosquitto");
        std::fs::create_dir_all(&work)?;
        let r = baseline::mosquitto_connect_rate(&work, secs, a.concurrency).await?;
        pb.finish();
        Some(r)
    };

    let idle = measure_idle(&server_bin, &dir, a.idle_sessions).await?;

    let ratios = Ratios {
        setups_vs_mosquitto: mosquitto
            .as_ref()
            .filter(|m| m.per_sec > 0.0)
            .map(|m| setups.per_sec / m.per_sec),
        setups_vs_rustls_ceiling: ratio(setups.per_sec, rustls_ceiling.per_sec),
        establishments_vs_ceiling: ratio(establishments.per_sec, ceiling.per_sec),
    };
    let report = Report {
        machine: machine(),
        setups,
        establishments,
        establishments_half_rate: half,
        establishments_quarter_rate: quarter,
        acknowledged,
        stored_pns,
        ceiling,
        rustls_ceiling,
        mosquitto,
        idle,
        ratios,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if report.stored_pns as u64 != report.acknowledged {
        bail!(
            "the store holds {} PNs, but {} establishments were acknowledged",
            report.stored_pns,
            report.acknowledged
        );
    }
    Ok(())
}

fn net_db(dir: &std::path::Path) -> PathBuf {
    dir.join(net::DB_FILE)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Session set-ups in a closed loop: `concurrency` tasks, each connecting the next household's
/// PN GW, running connection set-up to its end and closing, for `secs`.
async fn measure_setups(
    server: &ServerProcess,
    tls: &tokio_rustls::TlsConnector,
    households: &Arc<Vec<Household>>,
    concurrency: usize,
    secs: Duration,
) -> anyhow::Result<Rate> {
    let pool = SETUP_POOL.min(households.len());
    let next = Arc::new(AtomicU64::new(0));
    let pb = timed_bar(secs.as_secs_f64(), "PN GW session set-ups");
    let cpu0 = CpuTime::of(server.pid)?;
    let own0 = CpuTime::of(std::process::id())?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for t in 0..concurrency {
        let (addr, tls, hs, next) = (
            server.addr.clone(),
            tls.clone(),
            households.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Latencies::default();
            let mut rng = MachineRng::from_seed_u64(100 + t as u64);
            while start.elapsed() < secs {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % pool;
                let t0 = Instant::now();
                let c = net::connect(&addr, &tls, hs[i].clone(), rng.fork()).await?;
                lat.record(t0.elapsed());
                c.close().await;
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let lat = join_latencies(&mut tasks).await?;
    let wall = start.elapsed();
    let cpu = CpuTime::of(server.pid)?.since(cpu0);
    let own = CpuTime::of(std::process::id())?.since(own0);
    pb.finish();
    Ok(Rate::new(lat, wall, Some(cpu)).with_client(own, machine().cpus))
}

async fn join_latencies(
    tasks: &mut JoinSet<anyhow::Result<Latencies>>,
) -> anyhow::Result<Latencies> {
    let mut all = Latencies::default();
    while let Some(done) = tasks.join_next().await {
        all.merge(done??);
    }
    Ok(all)
}

/// Establishments on `concurrency` connected PN GWs: a closed loop for `secs`, then open loops
/// at half and at a quarter of the rate it reached (latency counted from each establishment's
/// scheduled start, so a server falling behind shows). Returns the three rates and how many
/// were acknowledged.
async fn measure_establishments(
    server: &ServerProcess,
    tls: &tokio_rustls::TlsConnector,
    households: &Arc<Vec<Household>>,
    concurrency: usize,
    secs: Duration,
) -> anyhow::Result<(Rate, Rate, Rate, u64)> {
    let mut conns = Vec::with_capacity(concurrency);
    let mut rng = MachineRng::from_seed_u64(7);
    for h in &households[..concurrency] {
        conns.push(net::connect(&server.addr, tls, h.clone(), rng.fork()).await?);
    }
    let (full, conns) = establish_loop(server, conns, secs, None, "PN establishments").await?;
    let half_rate = full.per_sec / 2.0;
    let (half, conns) = establish_loop(
        server,
        conns,
        secs,
        Some(half_rate),
        "PN establishments at half rate",
    )
    .await?;
    let (quarter, conns) = establish_loop(
        server,
        conns,
        secs,
        Some(full.per_sec / 4.0),
        "PN establishments at a quarter rate",
    )
    .await?;
    for c in conns {
        c.close().await;
    }
    let acked = full.ops + half.ops + quarter.ops;
    Ok((full, half, quarter, acked))
}

/// One establishment loop over the connected PN GWs; open (paced to `rate` in all) if a rate is
/// given, closed otherwise.
async fn establish_loop(
    server: &ServerProcess,
    conns: Vec<Connected>,
    secs: Duration,
    rate: Option<f64>,
    what: &str,
) -> anyhow::Result<(Rate, Vec<Connected>)> {
    let n = conns.len();
    let pb = timed_bar(secs.as_secs_f64(), what);
    let cpu0 = CpuTime::of(server.pid)?;
    let own0 = CpuTime::of(std::process::id())?;
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for (t, mut c) in conns.into_iter().enumerate() {
        // Each PN GW's share of the rate, its first start staggered within one interval.
        let interval = rate.map(|r| Duration::from_secs_f64(n as f64 / r.max(1.0)));
        tasks.spawn(async move {
            let mut lat = Latencies::default();
            let mut k = 0u32;
            loop {
                let scheduled = match interval {
                    Some(iv) => {
                        let at = start + iv.mul_f64(t as f64 / n as f64) + iv * k;
                        tokio::time::sleep_until(at).await;
                        at
                    }
                    None => tokio::time::Instant::now(),
                };
                if scheduled.duration_since(start) >= secs {
                    break;
                }
                k += 1;
                c.establish().await?;
                lat.record(scheduled.elapsed());
            }
            Ok::<_, anyhow::Error>((lat, c))
        });
    }
    let mut all = Latencies::default();
    let mut back = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        let (lat, c) = done??;
        all.merge(lat);
        back.push(c);
    }
    let wall = start.elapsed();
    let cpu = CpuTime::of(server.pid)?.since(cpu0);
    let own = CpuTime::of(std::process::id())?.since(own0);
    pb.finish();
    let rate = Rate::new(all, wall, Some(cpu)).with_client(own, machine().cpus);
    Ok((rate, back))
}

/// A fresh server's memory per idle PN GW session: RSS before, then with `sessions` sessions
/// held by `cpns-bench hold` processes (several: each process may hold ~20,000 files).
async fn measure_idle(
    server_bin: &std::path::Path,
    dir: &std::path::Path,
    sessions: usize,
) -> anyhow::Result<Idle> {
    let server = ServerProcess::start(server_bin, dir, sessions + 1_000).await?;
    let before = rss_bytes(server.pid)?;
    let exe = std::env::current_exe()?;
    let pb = bar(sessions as u64, "idle PN GW sessions");
    let mut holders = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<usize>>(64);
    let mut from = 0;
    while from < sessions {
        let to = (from + HOLD_PER_PROCESS).min(sessions);
        let (from_arg, to_arg) = (from.to_string(), to.to_string());
        // The data directory stays an OsStr: a path need not be UTF-8.
        let args: [&std::ffi::OsStr; 9] = [
            "hold".as_ref(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
            "--server".as_ref(),
            server.addr.as_ref(),
            "--from".as_ref(),
            from_arg.as_ref(),
            "--to".as_ref(),
            to_arg.as_ref(),
        ];
        let (child, mut lines) = net::spawn_helper(&exe, &args)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut last = 0usize;
            while let Ok(Some(line)) = lines.next_line().await {
                // Counts from several tasks may print out of order: only growth counts.
                if let Some(n) = line.strip_prefix("held ").and_then(|n| n.parse().ok())
                    && n > last
                {
                    let _ = tx.send(Ok(n - last)).await;
                    last = n;
                }
            }
            let _ = tx
                .send(Err(anyhow::anyhow!("a holding process ended")))
                .await;
        });
        holders.push((child, to - from));
        from = to;
    }
    drop(tx);
    let mut held = 0;
    let mut middle = (0, before);
    while held < sessions {
        match rx.recv().await {
            Some(Ok(n)) => {
                held += n;
                pb.set_position(held as u64);
                if middle.0 == 0 && held >= sessions / 2 && held < sessions {
                    middle = (held, rss_bytes(server.pid)?);
                }
            }
            Some(Err(e)) => return Err(e.context(format!("after {held} sessions"))),
            None => bail!("the holding processes ended after {held} sessions"),
        }
    }
    pb.finish();
    let after = rss_bytes(server.pid)?;
    for (mut child, _) in holders {
        drop(child.stdin.take());
        let _ = child.wait().await;
    }
    server.stop().await?;
    let (from_sessions, from_rss) = middle;
    Ok(Idle {
        sessions,
        server_rss_before: before,
        sessions_at_middle: from_sessions,
        server_rss_middle: from_rss,
        server_rss_after: after,
        bytes_per_session: after.saturating_sub(from_rss)
            / (sessions - from_sessions).max(1) as u64,
    })
}

/// `cpns-bench hold`: connects households `from..to` and holds their sessions until stdin
/// closes, printing `held N` as they come up.
pub(crate) async fn hold(a: HouseholdsArgs) -> anyhow::Result<()> {
    let (ca, households) = net::read_households(&a.data_dir, a.from..a.to)?;
    let tls = net::client_tls(&ca)?;
    let next = Arc::new(AtomicU64::new(0));
    let households = Arc::new(households);
    let held = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for t in 0..HOLD_CONCURRENCY {
        let (addr, tls, hs, next, held) = (
            a.server.clone(),
            tls.clone(),
            households.clone(),
            next.clone(),
            held.clone(),
        );
        tasks.spawn(async move {
            let mut rng = MachineRng::from_seed_u64(1_000 + t as u64);
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(h) = hs.get(i) else { break };
                mine.push(net::connect(&addr, &tls, h.clone(), rng.fork()).await?);
                // Progress for the bench's bar, every 100 sessions.
                let n = held.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 100 == 0 {
                    println!("held {n}");
                }
            }
            Ok::<_, anyhow::Error>(mine)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    println!("held {}", all.len());
    // Hold until the bench closes our stdin.
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    drop(all);
    Ok(())
}

/// The human table.
fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let cpu = |rate: &Rate| match (rate.cpu_us_per_op, rate.sys_us_per_op) {
        (Some(c), Some(sys)) => format!("{c:.0} µs ({:.0}% kernel)", 100.0 * sys / c.max(1e-9)),
        _ => "-".into(),
    };
    let row = |s: &mut String, what: &str, rate: &Rate, vs: &str| {
        let busy = rate.machine_busy.map_or(String::new(), |b| {
            format!(" (machine {:.0}% busy)", 100.0 * b)
        });
        let vs = format!("{vs}{busy}");
        let _ = writeln!(
            s,
            "{what:<44} {:>9.0}/s {:>8} {:>8}  {:<20} {vs}",
            rate.per_sec,
            format!("{:.1}ms", rate.p50_us as f64 / 1000.0),
            format!("{:.1}ms", rate.p99_us as f64 / 1000.0),
            cpu(rate),
        );
    };
    let m = &r.machine;
    let _ = writeln!(s, "machine: {} CPUs, {}, Linux {}", m.cpus, m.cpu, m.kernel);
    let _ = writeln!(
        s,
        "{:<44} {:>11} {:>8} {:>8}  {:<20} ratio",
        "what", "rate", "p50", "p99", "server CPU/op"
    );
    let vs_mosq = r
        .ratios
        .setups_vs_mosquitto
        .map_or("".into(), |x| format!("{x:.2}× Mosquitto, "));
    row(
        &mut s,
        "PN GW session set-ups (TLS + steps 8-17)",
        &r.setups,
        &format!(
            "{vs_mosq}{:.0}% of rustls ceiling",
            100.0 * r.ratios.setups_vs_rustls_ceiling
        ),
    );
    row(
        &mut s,
        "PN establishments on connected PN GWs",
        &r.establishments,
        &format!(
            "{:.0}% of in-memory ceiling",
            100.0 * r.ratios.establishments_vs_ceiling
        ),
    );
    row(
        &mut s,
        "  the same at half that rate",
        &r.establishments_half_rate,
        "",
    );
    row(
        &mut s,
        "  the same at a quarter of that rate",
        &r.establishments_quarter_rate,
        "",
    );
    row(
        &mut s,
        "establishment ceiling (memory, 1 thread)",
        &r.ceiling,
        "",
    );
    row(
        &mut s,
        "rustls handshake ceiling (1 thread)",
        &r.rustls_ceiling,
        "",
    );
    match &r.mosquitto {
        Some(m) => row(&mut s, "Mosquitto TLS 1.3 CONNECT", m, ""),
        None => {
            let _ = writeln!(s, "{:<44} not measured", "Mosquitto TLS 1.3 CONNECT");
        }
    }
    let _ = writeln!(
        s,
        "{:<44} {:>9.1} KiB per session from {} to {} sessions (RSS {:.0} → {:.0} → {:.0} MiB)",
        "server memory per idle PN GW session",
        r.idle.bytes_per_session as f64 / 1024.0,
        r.idle.sessions_at_middle,
        r.idle.sessions,
        r.idle.server_rss_before as f64 / 1048576.0,
        r.idle.server_rss_middle as f64 / 1048576.0,
        r.idle.server_rss_after as f64 / 1048576.0,
    );
    let _ = writeln!(
        s,
        "PNs in the store: {} for {} establishments acknowledged",
        r.stored_pns, r.acknowledged
    );
    s
}
