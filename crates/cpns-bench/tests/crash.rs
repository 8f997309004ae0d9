//! Durability under write load (issue "Performance", acceptance): the CPNS Server runs as its
//! own process while eight simulated PN GWs (`cpns-bench load`) establish PNs on it as fast as
//! they can; the server is killed with SIGKILL in the middle, started again on the same data
//! directory, and stopped. Every establishment acknowledged before the kill must be in the store
//! with both its members, and no PN in the store may be half written.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use cpns_store::{ServerStore, SqliteStore};

mod common;

use common::{BENCH, Proc, cpns_bin};

/// Acknowledged establishments to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 300;

fn server(dir: &Path) -> Proc {
    Proc::spawn(
        cpns_bin(),
        "server",
        &[
            "server",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_establishment_acknowledged_before_a_kill_9_is_in_the_store_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let out = Command::new(BENCH)
        .args(["prepare", "--data-dir", d, "--gateways", "8"])
        .args(["--with-pnes", "8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut srv = server(&dir);
    let addr = srv.listening();
    let load = Proc::spawn(
        Path::new(BENCH),
        "load",
        &[
            "load",
            "--data-dir",
            d,
            "--server",
            &addr,
            "--from",
            "0",
            "--to",
            "8",
        ],
    );
    let mut acked = BTreeSet::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = load.line();
        let pn = line.strip_prefix("established ").expect("an ack line");
        acked.insert(pn.to_string());
    }
    // SIGKILL with writes in flight: the load is still running flat out.
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    // Acks that were already on their way out of the load generator count too.
    drop(load);

    // The server starts again on the same files, then stops as a supervisor stops it (SIGTERM,
    // sent as soon as it says it listens: its handler is in place by then).
    let mut again = server(&dir);
    again.listening();
    let pid = again.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(again.child.wait().unwrap().success());

    let store = SqliteStore::open(&dir.join("cpns.db")).await.unwrap();
    let pns = store.all_pns().await.unwrap();
    store.close().await;
    let stored: BTreeSet<String> = pns.iter().map(|p| p.pn_id.to_string()).collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    for pn in &pns {
        assert_eq!(
            pn.members.len(),
            2,
            "PN {} half written: {:?}",
            pn.pn_id,
            pn.members
        );
        assert!(pn.members.iter().all(|m| m.sealed_session_key.is_some()));
    }
    // Unacknowledged establishments may have landed too, but never more than were in flight.
    assert!(stored.len() >= acked.len());
}
