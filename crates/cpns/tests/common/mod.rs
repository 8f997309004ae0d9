//! A `cpns` process run by a test: spawned from the built binary, its stdout lines read on a
//! thread of their own, killed when dropped. Shared by the process-level tests.

#![allow(dead_code)] // each test binary uses its own part of it

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_cpns");

/// A path as the text a command line takes.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `cpns args...`, run to its end.
pub fn run(args: &[&str]) -> std::process::Output {
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
pub const WAIT: Duration = Duration::from_secs(60);

/// A running process whose stdout lines are readable.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("CPNS_LOG", "warn")
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
        Self { child, lines, name }
    }

    /// The lines printed and not read yet, without waiting for more.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The next line.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{}: no line: {e}", self.name))
    }

    /// The address of a `--json` server's `listening` event.
    pub fn listening(&mut self) -> String {
        self.expect_event("listening")["addr"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits for a line holding `text` and returns it.
    pub fn expect_line(&mut self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("{}: no line holding {text:?}: {e}", self.name),
            }
        }
    }

    /// Waits for the JSON event `event` (of a process run with `--json`) for which `f` holds.
    pub fn expect_event_where(
        &mut self,
        event: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    let v: serde_json::Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("{}: not JSON: {line:?}: {e}", self.name));
                    assert!(v["ts"].is_string(), "{}: no ts: {line}", self.name);
                    // `cpns elect` speaks first for itself, then as the role it took.
                    if self.name != "elect" {
                        assert_eq!(v["role"], self.name, "{line}");
                    }
                    // An empty name takes the next event, whatever it is.
                    if event.is_empty() || (v["event"] == event && f(&v)) {
                        return v;
                    }
                }
                Err(e) => panic!("{}: no event {event:?}: {e}", self.name),
            }
        }
    }

    /// Waits for the first JSON event named one of `events`.
    pub fn expect_any(&mut self, events: &[&str]) -> serde_json::Value {
        loop {
            let v = self.expect_event_where("", |_| false);
            if events.iter().any(|e| v["event"] == *e) {
                return v;
            }
        }
    }

    /// Waits for the JSON event `event`.
    pub fn expect_event(&mut self, event: &str) -> serde_json::Value {
        self.expect_event_where(event, |_| true)
    }

    /// Waits for the process to exit successfully.
    pub fn succeeds(mut self) {
        let (tx, rx) = mpsc::channel();
        let name = self.name;
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
