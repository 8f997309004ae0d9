//! Tests of the group-commit writer and the read pool: concurrent writes land in fewer commits
//! than writes; inside one batch a failing write changes nothing while the others commit; a
//! failed commit fails every write of its batch; closing drains the queue, closes the file and
//! fails later calls; read connections are kept by the pool's rules; a read transaction sees
//! one snapshot.
//!
//! Batches are formed deterministically: a blocking job holds the writer while the jobs of the
//! next batch are queued, then lets it go. Nothing sleeps.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cpns_wire::{EntityId, PnId, UserId};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::readers::MAX_IDLE;
use super::tests::fresh;
use super::writer::MAX_BATCH;
use super::{SqliteStore, pn};
use crate::{PnMember, PnRecord, PnState, Result, ServerStore, StoreError};

fn pid(n: u32) -> PnId {
    let mut b = [0x5a; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    PnId::from_bytes(b)
}

fn record(n: u32, gateway: &str, members: &[&str]) -> PnRecord {
    PnRecord {
        pn_id: pid(n),
        gateway: EntityId::new(gateway).unwrap(),
        owner: UserId::new("alice").unwrap(),
        state: PnState::Active,
        created_at: i64::from(n),
        members: members
            .iter()
            .map(|m| PnMember {
                pne_id: EntityId::new(*m).unwrap(),
                initiator: false,
                authenticated: true,
                capabilities: None,
                sealed_session_key: Some(m.as_bytes().to_vec()),
                contents: Vec::new(),
                joined_at: i64::from(n),
                owner: None,
            })
            .collect(),
        group: None,
        expires_at: None,
        max_members: None,
    }
}

fn commits(store: &SqliteStore) -> u64 {
    store.writer().stats().commits.load(Ordering::Relaxed)
}

fn jobs(store: &SqliteStore) -> u64 {
    store.writer().stats().jobs.load(Ordering::Relaxed)
}

/// Holds the writer thread inside a job until the returned sender is used (or dropped).
async fn hold_writer(store: &SqliteStore) -> (std::sync::mpsc::Sender<()>, Answer<()>) {
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let answer = store
        .writer()
        .submit(move |_| {
            started_tx.send(()).unwrap();
            // Err once the test drops the sender: released either way.
            let _ = release_rx.recv();
            Ok(())
        })
        .await
        .unwrap();
    // The writer is inside the job, so its batch is formed: what is queued now goes together.
    started.recv().unwrap();
    (release, answer)
}

type Answer<T> = oneshot::Receiver<Result<T>>;

/// Queues the registration of `p` as `register_pn` does, without waiting for its answer.
async fn queue_registration(store: &SqliteStore, p: PnRecord) -> Answer<()> {
    store
        .writer()
        .submit(move |c| pn::register_pn(c, &p))
        .await
        .unwrap()
}

async fn answer<T>(a: Answer<T>) -> Result<T> {
    a.await.unwrap()
}

/// Counts `sql`'s one integer on a read connection.
fn count(store: &SqliteStore, sql: &str) -> i64 {
    store
        .readers()
        .read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits() {
    let (_dir, store) = fresh().await;
    let (tasks, each) = (64_u32, 50_u32);
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..each {
                    let n = t * each + i;
                    let a = format!("pne-{n}-a");
                    let b = format!("pne-{n}-b");
                    store
                        .register_pn(&record(n, &format!("gw-{t}"), &[a.as_str(), b.as_str()]))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let all = store.all_pns().await.unwrap();
    assert_eq!(all.len(), (tasks * each) as usize);
    assert!(all.iter().all(|p| p.members.len() == 2));
    let (commits, jobs) = (commits(&store), jobs(&store));
    assert_eq!(jobs, u64::from(tasks * each));
    assert!(commits < jobs, "{commits} commits for {jobs} writes");
    store.close().await;
}

#[tokio::test]
async fn a_failing_write_changes_nothing_and_its_batch_commits() {
    let (_dir, store) = fresh().await;
    store
        .register_pn(&record(1, "gw-1", &["pne-1"]))
        .await
        .unwrap();
    let before = commits(&store);
    let (release, held) = hold_writer(&store).await;
    let ok_before = queue_registration(&store, record(2, "gw-1", &["pne-2a", "pne-2b"])).await;
    // Another gateway's PN: refused before anything is written.
    let other_gateway = queue_registration(&store, record(1, "gw-2", &["pne-9"])).await;
    // A member listed twice: the PN row and the first member are written, then it fails.
    let half_done = queue_registration(&store, record(3, "gw-1", &["pne-3", "pne-3"])).await;
    let panics = store
        .writer()
        .submit(|c| -> Result<()> {
            pn::register_pn(c, &record(5, "gw-1", &["pne-5"]))?;
            panic!("a bug in a write");
        })
        .await
        .unwrap();
    let ok_after = queue_registration(&store, record(4, "gw-1", &["pne-4a", "pne-4b"])).await;
    release.send(()).unwrap();

    answer(held).await.unwrap();
    answer(ok_before).await.unwrap();
    let err = answer(other_gateway).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref what } if what.contains("gw-1")),
        "{err:?}"
    );
    let err = answer(half_done).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref what } if what.contains("UNIQUE")),
        "{err:?}"
    );
    let err = answer(panics).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Failed(ref e) if e.to_string().contains("panicked")),
        "{err:?}"
    );
    answer(ok_after).await.unwrap();
    // One commit for the held job, one for the five queued behind it.
    assert_eq!(commits(&store), before + 2);

    let all = store.all_pns().await.unwrap();
    assert_eq!(
        all,
        vec![
            record(1, "gw-1", &["pne-1"]),
            record(2, "gw-1", &["pne-2a", "pne-2b"]),
            record(4, "gw-1", &["pne-4a", "pne-4b"]),
        ]
    );
    // No member is left without its PN, and no PN without its members.
    assert_eq!(count(&store, "SELECT count(*) FROM pn_members"), 5);
    // The writer goes on.
    store.register_pn(&record(6, "gw-1", &[])).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn a_batch_holds_at_most_max_batch_writes() {
    let (_dir, store) = fresh().await;
    let before = commits(&store);
    let (release, held) = hold_writer(&store).await;
    let total = MAX_BATCH + 100;
    let mut answers = Vec::with_capacity(total);
    for n in 0..total {
        answers.push(queue_registration(&store, record(n as u32, "gw-1", &["pne-1"])).await);
    }
    release.send(()).unwrap();
    answer(held).await.unwrap();
    for a in answers {
        answer(a).await.unwrap();
    }
    // The held job's commit, then a full batch, then the rest.
    assert_eq!(commits(&store), before + 3);
    let largest = store.writer().stats().largest.load(Ordering::Relaxed);
    assert_eq!(largest, MAX_BATCH as u64);
    assert_eq!(store.all_pns().await.unwrap().len(), total);
    store.close().await;
}

#[tokio::test]
async fn a_failed_commit_fails_every_write_of_its_batch() {
    let (_dir, store) = fresh().await;
    let before = commits(&store);
    let (release, held) = hold_writer(&store).await;
    let innocent = queue_registration(&store, record(1, "gw-1", &["pne-1"])).await;
    // Foreign keys checked only at COMMIT, and a member whose PN does not exist: the write
    // itself succeeds, the batch's COMMIT fails.
    let orphan = store
        .writer()
        .submit(|c| {
            c.execute_batch(
                "PRAGMA defer_foreign_keys = ON; \
                 INSERT INTO pn_members (pn_seq, pne_id, position, initiator, authenticated, \
                 joined_at) VALUES (999999, 'pne-x', 0, 0, 0, 1)",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    release.send(()).unwrap();
    answer(held).await.unwrap();
    for a in [innocent, orphan] {
        let err = answer(a).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Failed(ref e) if e.to_string().contains("FOREIGN KEY")),
            "{err:?}"
        );
    }
    assert_eq!(commits(&store), before + 1);
    assert_eq!(store.all_pns().await.unwrap(), vec![]);
    assert_eq!(count(&store, "SELECT count(*) FROM pn_members"), 0);
    // The batch was rolled back: the next one starts afresh and commits.
    store
        .register_pn(&record(2, "gw-1", &["pne-2"]))
        .await
        .unwrap();
    assert_eq!(
        store.all_pns().await.unwrap(),
        vec![record(2, "gw-1", &["pne-2"])]
    );
    store.close().await;
}

/// Some failures (a full disk, an I/O error) make SQLite roll the whole transaction back
/// itself; a job ending the transaction stands in for them.
#[tokio::test]
async fn a_write_whose_failure_ends_the_transaction_fails_the_batch() {
    let (_dir, store) = fresh().await;
    let (release, held) = hold_writer(&store).await;
    let first = queue_registration(&store, record(1, "gw-1", &["pne-1"])).await;
    let ends = store
        .writer()
        .submit(|c| -> Result<()> {
            c.execute_batch("ROLLBACK")?;
            Err(StoreError::corrupt("stand-in", "stand-in"))
        })
        .await
        .unwrap();
    let last = queue_registration(&store, record(2, "gw-1", &["pne-2"])).await;
    release.send(()).unwrap();
    answer(held).await.unwrap();
    let err = answer(ends).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    for a in [first, last] {
        let err = answer(a).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Failed(ref e) if e.to_string().contains("rolled back")),
            "{err:?}"
        );
    }
    assert_eq!(store.all_pns().await.unwrap(), vec![]);
    store
        .register_pn(&record(3, "gw-1", &["pne-3"]))
        .await
        .unwrap();
    assert_eq!(store.all_pns().await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn close_drains_the_queue_closes_the_file_and_fails_later_calls() {
    let (dir, store) = fresh().await;
    let clone = store.clone();
    store
        .register_pn(&record(1, "gw-1", &["pne-1"]))
        .await
        .unwrap();
    assert_eq!(store.all_pns().await.unwrap().len(), 1);
    // Queued before close: committed and answered before close returns.
    let queued = queue_registration(&store, record(2, "gw-1", &["pne-2"])).await;
    store.close().await;
    answer(queued).await.unwrap();
    // Every connection is closed: the last one checkpointed the WAL into the file and removed
    // it.
    assert!(!dir.path().join("store.db-wal").exists());
    assert_eq!(store.readers().idle(), 0);

    let calls = async {
        for s in [&store, &clone] {
            let write = s.register_pn(&record(3, "gw-1", &[])).await.unwrap_err();
            let read = s.all_pns().await.unwrap_err();
            let one = s.pn(&pid(1)).await.unwrap_err();
            let user = s
                .ensure_user(&UserId::new("bob").unwrap())
                .await
                .unwrap_err();
            for err in [write, read, one, user] {
                assert!(
                    matches!(err, StoreError::Failed(ref e) if e.to_string().contains("closed")),
                    "{err:?}"
                );
            }
        }
        // Closing again does nothing.
        clone.close().await;
    };
    tokio::time::timeout(Duration::from_secs(10), calls)
        .await
        .expect("calls after close hang");

    let reopened = SqliteStore::open(&dir.path().join("store.db"))
        .await
        .unwrap();
    assert_eq!(reopened.all_pns().await.unwrap().len(), 2);
    reopened.close().await;
}

#[tokio::test]
async fn the_pool_keeps_few_clean_connections() {
    let (_dir, store) = fresh().await;
    let readers = store.readers();
    let taken: Vec<Connection> = (0..MAX_IDLE + 2).map(|_| readers.take().unwrap()).collect();
    assert_eq!(readers.idle(), 0);
    for conn in taken {
        readers.give_back(conn);
    }
    assert_eq!(readers.idle(), MAX_IDLE);
    // A connection left inside a transaction would pin an old snapshot: it is not kept.
    let conn = readers.take().unwrap();
    conn.execute_batch("BEGIN").unwrap();
    readers.give_back(conn);
    assert_eq!(readers.idle(), MAX_IDLE - 1);
    // Read connections cannot write.
    let err = readers
        .read(|c| Ok(c.execute("INSERT INTO users (id) VALUES ('bob')", [])?))
        .unwrap_err();
    assert!(matches!(err, StoreError::Failed(_)), "{err:?}");
    // Once closed, nothing is kept or handed out.
    let conn = readers.take().unwrap();
    store.close().await;
    readers.give_back(conn);
    assert_eq!(readers.idle(), 0);
    assert!(matches!(readers.take(), Err(StoreError::Failed(_))));
}

#[tokio::test]
async fn a_read_transaction_sees_one_snapshot() {
    let (_dir, store) = fresh().await;
    let store = Arc::new(store);
    let writer = Arc::clone(&store);
    let (first, second) = store
        .readers()
        .snapshot(|c| {
            let first: i64 = c.query_row("SELECT count(*) FROM pns", [], |r| r.get(0))?;
            // A write commits meanwhile, on another thread with its own runtime.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
                    .block_on(writer.register_pn(&record(1, "gw-1", &[])))
            })
            .join()
            .unwrap()
            .unwrap();
            let second: i64 = c.query_row("SELECT count(*) FROM pns", [], |r| r.get(0))?;
            Ok((first, second))
        })
        .unwrap();
    assert_eq!((first, second), (0, 0));
    // Outside that transaction the write is there, and the connection went back clean.
    assert_eq!(count(&store, "SELECT count(*) FROM pns"), 1);
    assert_eq!(store.readers().idle(), 1);
    store.close().await;
}
