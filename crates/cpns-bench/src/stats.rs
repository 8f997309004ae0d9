//! What every measurement of `cpns-bench` reports: a rate, latency percentiles and, where a
//! process was watched, its CPU time per operation (from `/proc`).

use std::time::Duration;

use serde::Serialize;

/// Latencies of one measurement, kept whole (a run holds at most a few hundred thousand).
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// Records one operation's latency.
    pub fn record(&mut self, d: Duration) {
        self.samples.push(d);
    }

    /// Takes in another set of samples.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The `q` quantile (0.0..=1.0), nearest rank; zero without samples.
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.sort_unstable();
        let rank = ((q.clamp(0.0, 1.0) * self.samples.len() as f64).ceil() as usize).max(1);
        self.samples[rank - 1]
    }
}

/// One measured rate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rate {
    /// Operations completed.
    pub ops: u64,
    /// Wall time of the measurement, in seconds.
    pub secs: f64,
    /// Operations per second.
    pub per_sec: f64,
    /// Median latency, in microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: u64,
    /// CPU time (user + system) of the watched process per operation, in microseconds.
    pub cpu_us_per_op: Option<f64>,
    /// The system part of that CPU time, in microseconds per operation.
    pub sys_us_per_op: Option<f64>,
    /// CPU time of the load generator (this process) per operation, in microseconds, where it
    /// was measured: with the server's, how busy the machine was.
    pub client_cpu_us_per_op: Option<f64>,
    /// Share of the machine's CPUs in use during the measurement (server and load generator
    /// together), where both were measured.
    pub machine_busy: Option<f64>,
}

impl Rate {
    /// A rate from the operations' latencies, the wall time and the watched process's CPU use.
    pub fn new(mut lat: Latencies, wall: Duration, cpu: Option<CpuTime>) -> Self {
        let ops = lat.len() as u64;
        let secs = wall.as_secs_f64();
        let per_op = |t: Duration| (ops > 0).then(|| t.as_secs_f64() * 1e6 / ops as f64);
        Rate {
            ops,
            secs,
            per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            p50_us: lat.quantile(0.50).as_micros() as u64,
            p99_us: lat.quantile(0.99).as_micros() as u64,
            cpu_us_per_op: cpu.and_then(|c| per_op(c.user + c.system)),
            sys_us_per_op: cpu.and_then(|c| per_op(c.system)),
            client_cpu_us_per_op: None,
            machine_busy: None,
        }
    }

    /// Adds the load generator's CPU time over the same measurement, and from both how busy
    /// the machine's `cpus` were.
    pub fn with_client(mut self, client: CpuTime, cpus: usize) -> Self {
        let total = client.user + client.system;
        if self.ops > 0 {
            self.client_cpu_us_per_op = Some(total.as_secs_f64() * 1e6 / self.ops as f64);
        }
        if let Some(server) = self.cpu_us_per_op
            && self.secs > 0.0
            && cpus > 0
        {
            let server_secs = server * self.ops as f64 / 1e6;
            self.machine_busy =
                Some((server_secs + total.as_secs_f64()) / (self.secs * cpus as f64));
        }
        self
    }
}

/// CPU time a process used, split as the kernel reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In user space.
    pub user: Duration,
    /// In the kernel on its behalf.
    pub system: Duration,
}

impl CpuTime {
    /// The CPU time of process `pid` so far, from `/proc/PID/stat` (fields 14 and 15, in clock
    /// ticks of 1/100 s, the value on every Linux this runs on).
    pub fn of(pid: u32) -> std::io::Result<CpuTime> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        parse_stat(&stat).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "unreadable /proc stat")
        })
    }

    /// The CPU time used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// utime and stime of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<CpuTime> {
    const TICK: Duration = Duration::from_millis(10);
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // fields 3..=13
    let user: u32 = fields.next()?.parse().ok()?;
    let system: u32 = fields.next()?.parse().ok()?;
    Some(CpuTime {
        user: TICK * user,
        system: TICK * system,
    })
}

/// Resident memory of process `pid`, in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// The peak resident memory of process `pid` so far (VmHWM), in bytes.
pub fn peak_rss_bytes(pid: u32) -> std::io::Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// A size field (`VmRSS`, `VmHWM`, …) of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {field}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut l = Latencies::default();
        for ms in (1..=100).rev() {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.quantile(0.5), Duration::from_millis(50));
        assert_eq!(l.quantile(0.99), Duration::from_millis(99));
        assert_eq!(l.quantile(1.0), Duration::from_millis(100));
        assert_eq!(l.quantile(0.0), Duration::from_millis(1));
        assert_eq!(Latencies::default().quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn rate_divides_by_ops_and_wall_time() {
        let mut l = Latencies::default();
        for _ in 0..200 {
            l.record(Duration::from_micros(300));
        }
        let cpu = CpuTime {
            user: Duration::from_millis(30),
            system: Duration::from_millis(10),
        };
        let r = Rate::new(l, Duration::from_secs(2), Some(cpu));
        assert_eq!(r.ops, 200);
        assert_eq!(r.per_sec, 100.0);
        assert_eq!(r.p50_us, 300);
        assert_eq!(r.cpu_us_per_op, Some(200.0));
        assert_eq!(r.sys_us_per_op, Some(50.0));
        // 200 ops over 2 s on 2 CPUs: server 40 ms, client 360 ms = 0.4 s of 4 s.
        let client = CpuTime {
            user: Duration::from_millis(300),
            system: Duration::from_millis(60),
        };
        let r = r.with_client(client, 2);
        assert_eq!(r.client_cpu_us_per_op, Some(1800.0));
        assert!((r.machine_busy.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(
            Rate::new(Latencies::default(), Duration::ZERO, None).per_sec,
            0.0
        );
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (cpns (x) y) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 4 0 100";
        let t = parse_stat(line).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(750));
        assert!(parse_stat("garbage").is_none());
        let own = CpuTime::of(std::process::id()).unwrap();
        assert!(own.since(own) == CpuTime::default());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
