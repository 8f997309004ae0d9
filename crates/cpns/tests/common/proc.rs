//! One `cpns` process run by a test: spawned from the built binary, its stdout lines read on a
//! thread of their own, waited on line by line or `--json` event by event, each wait under
//! [`WAIT`], and killed when dropped. Nothing here sleeps: a wait ends with the line it waits
//! for, or fails the test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cpns");

/// The longest any single wait of a test may last.
pub const WAIT: Duration = Duration::from_secs(60);

/// The log level of the processes' stderr: `CPNS_TEST_LOG` if set (e.g. `CPNS_TEST_LOG=debug`
/// to see why a link was cut off), else `default`.
pub fn log_level(default: &str) -> String {
    std::env::var("CPNS_TEST_LOG").unwrap_or_else(|_| default.to_string())
}

/// A path as the text a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cpns args...`, run to its end.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `cpns args...`, which must succeed: its stdout.
pub fn cpns(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "cpns {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running process whose stdout lines are readable.
pub struct Proc {
    /// The process itself.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// The `role` its JSON events must carry, if any.
    role: Option<&'static str>,
    /// A name for messages.
    name: String,
    /// Every JSON event read so far, in order (those a wait passed over too).
    pub seen: Vec<Value>,
}

impl Proc {
    /// Starts `cpns args...` as `role` (`server`, `gateway`, `pne`: the `role` of its JSON
    /// events; `elect` speaks first for itself, then as the role it took, so it is not checked),
    /// logging at warn level.
    pub fn spawn(role: &'static str, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::start(role, role, &args, &log_level("warn"))
    }

    /// Starts `cpns args...` as `role`, named `name` in messages, logging (stderr) at `log`.
    pub fn start(role: &'static str, name: &str, args: &[String], log: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("CPNS_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            role: (role != "elect").then_some(role),
            name: name.to_string(),
            seen: Vec::new(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills the process with SIGKILL (no clean-up of any kind) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends the process signal `sig` (`STOP`, `CONT`, `TERM`...).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}: {status}", self.name);
    }

    /// The next line, read by `deadline`.
    fn next_line(&self, deadline: Instant, what: &str) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "{}: no {what} within {WAIT:?} (seen: {:?})",
                    self.name, self.seen
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "{}: exited before {what} (seen: {:?})",
                    self.name, self.seen
                )
            }
        }
    }

    /// The next line.
    pub fn line(&self) -> String {
        self.next_line(Instant::now() + WAIT, "line")
    }

    /// The lines printed and not read yet, without waiting for more.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits for a line holding `text` and returns it (a process printing readable lines).
    pub fn expect_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = self.next_line(deadline, &format!("line holding {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Waits for the JSON event `event` (of a process run with `--json`) for which `f` holds,
    /// and returns it. An empty `event` takes the next event, whatever it is.
    pub fn expect_event_where(&mut self, event: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = self.next_line(deadline, &format!("event {event:?}"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}: not JSON: {line:?}: {e}", self.name));
            assert!(v["ts"].is_string(), "{}: no ts: {line}", self.name);
            if let Some(role) = self.role {
                assert_eq!(v["role"], role, "{}: {line}", self.name);
            }
            self.seen.push(v.clone());
            if event.is_empty() || (v["event"] == event && f(&v)) {
                return v;
            }
        }
    }

    /// Waits for the JSON event `event`.
    pub fn expect_event(&mut self, event: &str) -> Value {
        self.expect_event_where(event, |_| true)
    }

    /// Waits for the first JSON event named one of `events`.
    pub fn expect_any(&mut self, events: &[&str]) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.expect_event_where("", |_| true);
            if events.iter().any(|e| v["event"] == *e) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: none of {events:?} within {WAIT:?}",
                self.name
            );
        }
    }

    /// The address of a `--json` server's `listening` event.
    pub fn listening(&mut self) -> String {
        text(&self.expect_event("listening")["addr"])
    }

    /// The events named `event` read so far.
    pub fn seen(&self, event: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["event"] == event).collect()
    }

    /// Waits for the process to exit successfully.
    pub fn succeeds(mut self) {
        let (tx, rx) = mpsc::channel();
        let name = self.name.clone();
        std::thread::spawn(move || {
            let _ = tx.send(self.child.wait());
        });
        let status = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{name} did not finish"))
            .unwrap();
        assert!(status.success(), "{name} failed: {status}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each line of a `--json` output, parsed.
pub fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A JSON string's text.
pub fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// The strings of a JSON array (the members of a `pn_established` event, say), sorted.
pub fn names(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(text)
        .collect();
    out.sort_unstable();
    out
}
