//! What the process tests of `cpns-bench` share: the two binaries they run and a process whose
//! stdout lines they read.
//!
//! Cargo gives a test the path of its own package's binaries (`CARGO_BIN_EXE_cpns-bench`) but
//! not another package's, and the benches need `cpns` too (its `cpns server` is what they
//! measure). [`cpns_bin`] therefore builds it, once per test binary, with the cargo that runs
//! the tests, into the same target directory and profile as `cpns-bench`, so that it lands next
//! to it, where `cpns-bench` looks by default. Under `cargo test --workspace` it is already built
//! and the build is a no-op; under `cargo test -p cpns-bench` it is built (or brought up to
//! date) then. `CPNS_BIN=/path/to/cpns` skips the build and runs that binary instead.

#![allow(dead_code)] // each test binary uses its own part of it
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

/// The `cpns-bench` binary under test.
pub const BENCH: &str = env!("CARGO_BIN_EXE_cpns-bench");

/// How long a process may take to print its next line.
pub const WAIT: Duration = Duration::from_secs(60);

/// The `cpns` binary of this build, next to [`BENCH`] (built on first use), or `CPNS_BIN`.
pub fn cpns_bin() -> &'static Path {
    static CPNS: OnceLock<PathBuf> = OnceLock::new();
    CPNS.get_or_init(|| {
        if let Some(p) = std::env::var_os("CPNS_BIN") {
            return PathBuf::from(p);
        }
        let bench = Path::new(BENCH);
        // BENCH is <target dir>/<profile dir>/cpns-bench; the dev profile's directory is `debug`.
        let profile_dir = bench.parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "cpns", "--bin", "cpns"])
            .args(["--profile", profile])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo build -p cpns: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cpns = bench.with_file_name(format!("cpns{}", std::env::consts::EXE_SUFFIX));
        assert!(cpns.is_file(), "{} was not built", cpns.display());
        cpns
    })
}

/// `cpns-bench args... --json --cpns-bin <this build's cpns>`, run to its end: its JSON
/// figures. Fails the test with the bench's error output if it failed.
pub fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BENCH)
        .args(args)
        .arg("--json")
        .arg("--cpns-bin")
        .arg(cpns_bin())
        .env("CPNS_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cpns-bench {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `cpns-bench args...`, run to its end.
pub fn bench(args: &[&str]) -> std::process::Output {
    Command::new(BENCH)
        .args(args)
        .env_remove("CPNS_BIN")
        .env("CPNS_LOG", "error")
        .output()
        .unwrap()
}

/// A running process whose stdout lines are readable; killed when dropped.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Proc {
    /// Starts `program args...`, named `name` in failures.
    pub fn spawn(program: &Path, name: &'static str, args: &[&str]) -> Self {
        let mut child = Command::new(program)
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

    /// The next line.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{}: no line: {e}", self.name))
    }

    /// The address of a `cpns server --json`'s `listening` event.
    pub fn listening(&self) -> String {
        loop {
            let line = self.line();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["event"] == "listening" {
                return v["addr"].as_str().unwrap().to_string();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
