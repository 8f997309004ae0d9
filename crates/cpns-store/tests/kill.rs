//! Acknowledged writes survive `kill -9`: a child process (this test binary run again, in child
//! mode) registers PNs from many tasks at once and prints the id of each registration the store
//! acknowledged; once enough are acknowledged the parent kills it with SIGKILL, mid-stream, and
//! opens the file. Every acknowledged PN must be there with both its members, and no PN may be
//! there without them (each write is atomic, whatever batch it shared).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cpns_store::{Durability, PnMember, PnRecord, PnState, ServerStore, SqliteStore};
use cpns_wire::{EntityId, PnId, UserId};

/// Set in the child: the database file it writes to.
const CHILD_DB: &str = "CPNS_STORE_KILL_CHILD_DB";

/// Acknowledgements the parent waits for before it kills the child.
const ACKS: usize = 500;

/// Concurrent writing tasks in the child.
const TASKS: u32 = 32;

/// The child stops by itself after this many registrations per task, should nobody kill it.
const MOST_PER_TASK: u32 = 5_000;

/// The longest the parent waits for the child's next line.
const WAIT: Duration = Duration::from_secs(60);

fn registration(task: u32, i: u32) -> PnRecord {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&task.to_be_bytes());
    id[4..8].copy_from_slice(&i.to_be_bytes());
    let member = |tag: &str| PnMember {
        pne_id: EntityId::new(format!("pne-{task}-{i}-{tag}")).unwrap(),
        initiator: tag == "a",
        authenticated: true,
        capabilities: None,
        sealed_session_key: Some(vec![0x5e; 48]),
        contents: Vec::new(),
        joined_at: i64::from(i),
        owner: None,
    };
    PnRecord {
        pn_id: PnId::from_bytes(id),
        gateway: EntityId::new(format!("gw-{task}")).unwrap(),
        owner: UserId::new("alice").unwrap(),
        state: PnState::Pending,
        created_at: i64::from(i),
        members: vec![member("a"), member("b")],
        group: None,
        expires_at: None,
        max_members: None,
    }
}

/// The child: registers PNs from [`TASKS`] tasks and prints `ack <pn id>` for each one the
/// store acknowledged, flushing each line. Stops when stdout is gone (the parent died).
fn child(db: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open_with(db, Durability::Normal)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..MOST_PER_TASK {
                        let pn = registration(task, i);
                        store.register_pn(&pn).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        if writeln!(out, "ack {}", pn.pn_id)
                            .and_then(|()| out.flush())
                            .is_err()
                        {
                            return;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Some(db) = std::env::var_os(CHILD_DB) {
        child(Path::new(&db));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("killed.db");
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_kill_9",
            "--nocapture",
        ])
        .env(CHILD_DB, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Lines come through a thread so that each wait has a deadline.
    let (lines_tx, lines) = mpsc::channel();
    let stdout = proc.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < ACKS {
        let line = lines
            .recv_timeout(WAIT)
            .expect("the child stopped acknowledging writes");
        if let Some(id) = line.strip_prefix("ack ") {
            acked.push(id.to_owned());
        }
    }
    proc.kill().unwrap(); // SIGKILL: no destructor, no close, no checkpoint.
    proc.wait().unwrap();
    // Acknowledgements printed before the kill landed, still in the pipe, count as well.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        if let Some(id) = line.strip_prefix("ack ") {
            acked.push(id.to_owned());
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let stored = runtime.block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let all = store.all_pns().await.unwrap();
        store.close().await;
        all
    });
    let by_id: std::collections::HashMap<String, &PnRecord> =
        stored.iter().map(|p| (p.pn_id.to_string(), p)).collect();
    for id in &acked {
        let pn = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged PN {id} is missing"));
        assert_eq!(pn.members.len(), 2, "PN {id}");
    }
    for pn in &stored {
        let bytes = pn.pn_id.as_bytes();
        let task = u32::from_be_bytes(bytes[..4].try_into().unwrap());
        let i = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(*pn, registration(task, i), "PN {} is not whole", pn.pn_id);
    }
    assert!(stored.len() >= acked.len());
    eprintln!(
        "{} acknowledged before SIGKILL, {} in the file",
        acked.len(),
        stored.len()
    );
}
