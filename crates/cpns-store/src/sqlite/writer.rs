//! The one writer of a SQLite store: a dedicated OS thread that owns the write connection and
//! commits writes in groups.
//!
//! Every write is a job: a closure over the connection, sent with the sender of its answer over
//! a bounded channel (callers wait for room, never a tokio worker thread for long). The thread
//! blocks for the first job, takes every job already queued behind it (at most
//! [`MAX_BATCH`]), and runs the batch as one transaction: `BEGIN IMMEDIATE`, each job inside
//! its own `SAVEPOINT`, `COMMIT`. A job that fails is rolled back to its savepoint, so it
//! changes nothing and only it gets its error; the others go on. Answers go out only after the
//! `COMMIT` succeeded, so an acknowledged write is as durable as the store's
//! [`Durability`](super::Durability) makes a commit, and the cost of a commit (an fsync under
//! `Durability::Full`) is shared by the whole batch. If the batch's transaction fails (`BEGIN`,
//! a savepoint or `COMMIT`), it is rolled back and every job in it gets that error, except a
//! job that had already failed on its own, which keeps its own error.
//!
//! No lock is held across an await: a caller only clones the channel's sender under a mutex.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::lock;
use crate::{DatabaseError, Result, StoreError};

/// How many jobs may wait for the writer before callers wait for room.
const QUEUE: usize = 4096;

/// Most jobs in one transaction: bounds how long the first of them waits for its answer.
pub(super) const MAX_BATCH: usize = 512;

/// One write: the work to run inside the batch's transaction and where its answer goes.
trait Job: Send {
    /// Runs the work (once); true if it succeeded, false if it failed and must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;

    /// Sends the answer once the batch is over: the work's own error if it failed; else its
    /// value if the batch committed, or the batch's error if it did not.
    fn answer(self: Box<Self>, batch: Result<(), &DatabaseError>);
}

/// A [`Job`] returning a `T`.
struct Write<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panicking job must not take the writer, and every write after it, down with it.
        let result = panic::catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
            Err(StoreError::Failed(DatabaseError::message(
                "the write panicked and was rolled back",
            )))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, batch: Result<(), &DatabaseError>) {
        let answer = match (self.result, batch) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(e)) => Err(StoreError::Failed(e.clone())),
            (None, Ok(())) => Err(StoreError::Failed(DatabaseError::message(
                "the write was not run",
            ))),
        };
        // The caller may have stopped waiting; the write stands all the same.
        let _ = self.reply.send(answer);
    }
}

/// Counts of what the writer did, for tests that check the grouping.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Transactions committed.
    pub(super) commits: AtomicU64,
    /// Jobs answered.
    pub(super) jobs: AtomicU64,
    /// Most jobs in one batch so far.
    pub(super) largest: AtomicU64,
}

/// The running writer thread.
struct Running {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Closed by the thread as it ends, after its connection has closed.
    stopped: oneshot::Receiver<()>,
    thread: JoinHandle<()>,
}

/// A handle on the writer thread, shared by every clone of the store.
pub(super) struct Writer {
    running: Mutex<Option<Running>>,
    /// Read by the tests only; the thread keeps its own handle and counts.
    #[cfg_attr(not(test), allow(dead_code))]
    stats: Arc<Stats>,
}

impl Writer {
    /// Starts the writer thread, which opens its connection with `open` (connecting and
    /// migrating); fails with `open`'s error.
    pub(super) async fn start(
        open: impl FnOnce() -> Result<Connection> + Send + 'static,
    ) -> Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (ready_tx, ready) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel::<()>();
        let stats = Arc::new(Stats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("cpns-store-writer".into())
            .spawn(move || {
                // Dropped last, after the connection: `close` returns once it is closed.
                let _stopped = stopped_tx;
                match open() {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        serve(&conn, queue, &thread_stats);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| {
                StoreError::Failed(DatabaseError::message(format!(
                    "cannot start the writer thread: {e}"
                )))
            })?;
        // The thread answers once it has opened (or failed to open) the database; if it
        // panicked instead, the sender is dropped unanswered.
        ready
            .await
            .unwrap_or_else(|_| Err(StoreError::Failed(DatabaseError::closed())))?;
        Ok(Writer {
            running: Mutex::new(Some(Running {
                jobs,
                stopped,
                thread,
            })),
            stats,
        })
    }

    /// Runs `work` in the writer's next batch and returns its answer, after the batch's commit.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let answer = self.submit(work).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Failed(DatabaseError::closed())))
    }

    /// Queues `work` for the writer (waiting for room in the queue) and returns where its
    /// answer will come; a database error if the store is closed.
    pub(super) async fn submit<T, F>(&self, work: F) -> Result<oneshot::Receiver<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let jobs = lock(&self.running)
            .as_ref()
            .map(|r| r.jobs.clone())
            .ok_or_else(|| StoreError::Failed(DatabaseError::closed()))?;
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Write {
            work: Some(work),
            result: None,
            reply,
        });
        jobs.send(job)
            .await
            .map_err(|_| StoreError::Failed(DatabaseError::closed()))?;
        Ok(answer)
    }

    /// Stops the writer: no new job is taken, the queued ones are run and answered, the
    /// connection is closed; returns once the thread has ended. Closing twice does nothing.
    pub(super) async fn close(&self) {
        let Some(Running {
            jobs,
            stopped,
            thread,
        }) = lock(&self.running).take()
        else {
            return;
        };
        drop(jobs);
        // Err once the thread has dropped its end: it ends right after.
        let _ = stopped.await;
        // Cannot block for long: the thread has finished its work. A panic there has already
        // answered every job it held with an error (their reply senders dropped).
        let _ = thread.join();
    }

    /// What the writer has done so far.
    #[cfg(test)]
    pub(super) fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The writer thread's loop: one batch at a time until every sender is gone.
fn serve(conn: &Connection, mut queue: mpsc::Receiver<Box<dyn Job>>, stats: &Stats) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit(conn, &mut batch);
        if outcome.is_ok() {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        let size = batch.len() as u64;
        stats.jobs.fetch_add(size, Ordering::Relaxed);
        stats.largest.fetch_max(size, Ordering::Relaxed);
        for job in batch.drain(..) {
            job.answer(outcome.as_ref().map(|_| ()));
        }
    }
}

/// Runs `batch` as one transaction; on failure, rolls back whatever of it is still open.
fn commit(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), DatabaseError> {
    let outcome = run_batch(conn, batch);
    // Still inside the transaction only if the batch failed (a commit ends it). Should the
    // ROLLBACK fail too, the next batch's BEGIN fails and reports it.
    if !conn.is_autocommit() {
        let _ = step(conn, "ROLLBACK");
    }
    outcome
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), DatabaseError> {
    step(conn, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        step(conn, "SAVEPOINT job")?;
        if job.run(conn) {
            step(conn, "RELEASE job")?;
        } else if conn.is_autocommit() {
            // Some failures (a full disk, an I/O error) make SQLite roll back the whole
            // transaction: the jobs before this one are gone too.
            return Err(DatabaseError::message(
                "SQLite rolled back the batch after a failed write",
            ));
        } else {
            step(conn, "ROLLBACK TO job")?;
            step(conn, "RELEASE job")?;
        }
    }
    step(conn, "COMMIT")
}

/// One transaction-control statement.
fn step(conn: &Connection, sql: &str) -> Result<(), DatabaseError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
