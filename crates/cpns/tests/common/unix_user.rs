//! Another Unix user of the same machine, as an attacker on it is: made with `useradd` if
//! missing, and run with `runuser`. Needs root; a test says it skipped otherwise.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

/// The user a test runs another process as.
pub const OTHER_USER: &str = "cpns-other";

/// Whether this process runs as root (a file it makes in `dir` is root's).
pub fn running_as_root(dir: &Path) -> bool {
    let probe = dir.join("whoami");
    std::fs::write(&probe, b"").unwrap();
    let root = std::fs::metadata(&probe).unwrap().uid() == 0;
    std::fs::remove_file(&probe).unwrap();
    root
}

/// Makes [`OTHER_USER`] if it does not exist (a system user with no home and no shell).
pub fn ensure_other_user() {
    let known = Command::new("id").arg(OTHER_USER).output().unwrap();
    if known.status.success() {
        return;
    }
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            OTHER_USER,
        ])
        .status()
        .unwrap();
    assert!(made.success(), "useradd {OTHER_USER}");
}

/// Runs `program args...` as [`OTHER_USER`], to its end.
pub fn as_other_user(program: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", OTHER_USER, "--", program])
        .args(args)
        .output()
        .expect("runuser")
}
