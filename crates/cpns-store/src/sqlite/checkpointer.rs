//! WAL checkpoints off the writer's path. SQLite checkpoints by default inside the commit that
//! takes the WAL past 1,000 pages, on the committing connection: here the writer thread, so
//! every write queued behind that commit waited for the checkpoint's page copies and fsyncs
//! (`cpns-bench establish`: 9 % of the server's CPU, and its p99). Instead a thread of its own
//! runs a `PASSIVE` checkpoint every [`INTERVAL`] on its own connection: it copies what no reader
//! still needs and never blocks the writer or the readers. The writer keeps a far larger automatic
//! threshold ([`WRITER_AUTOCHECKPOINT`]) only as a backstop, so the WAL stays bounded even if
//! this thread cannot keep up. Checkpoints copy committed frames only: what is acknowledged and
//! durable stays so.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::lock;
use crate::Result;
use crate::StoreError;
use crate::error::DatabaseError;

/// How often the checkpointer looks at the WAL. Measured with `cpns-bench establish`
/// (BENCHMARKS.md): a checkpoint's fsyncs stall the writer's appends to the WAL for as long as
/// they take, so small frequent checkpoints keep the latency tail short (establishments' p99 at
/// half / a quarter of the top rate: 66 / 28 ms with a 1 s interval, 14 / 13 ms with 100 ms,
/// 16 / 6 ms with 25 ms), at no measurable CPU cost; a tick with nothing to copy does no I/O.
pub(super) const INTERVAL: Duration = Duration::from_millis(25);

/// The writer's own automatic checkpoint threshold, in pages: a backstop only.
pub(super) const WRITER_AUTOCHECKPOINT: u32 = 20_000;

/// What one checkpoint found: frames in the WAL and frames copied to the database so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Progress {
    /// Whether another connection kept it from finishing (a reader still on old frames).
    pub(super) busy: bool,
    /// Frames in the WAL.
    pub(super) log: i64,
    /// Of those, frames copied into the database.
    pub(super) checkpointed: i64,
}

/// Runs one `PASSIVE` checkpoint on `conn`.
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<Progress> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Progress {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            checkpointed: r.get(2)?,
        })
    })
}

/// The running checkpointer thread; stopped by [`Checkpointer::close`] or when dropped.
pub(super) struct Checkpointer {
    running: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// Checkpoints run so far, signalled as each ends (tests wait on it).
    #[cfg_attr(not(test), allow(dead_code))]
    runs: Arc<(Mutex<u64>, Condvar)>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the database at `path` (which exists: the
    /// writer made it), opened with `open`.
    pub(super) fn start(
        path: &Path,
        open: impl FnOnce(&Path) -> rusqlite::Result<Connection>,
    ) -> Result<Checkpointer> {
        let conn = open(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let runs = Arc::new((Mutex::new(0_u64), Condvar::new()));
        let counted = Arc::clone(&runs);
        let thread = std::thread::Builder::new()
            .name("cpns-store-checkpoint".into())
            .spawn(move || {
                // Until told to stop (a message or the sender gone), one checkpoint per tick. A
                // failed checkpoint (a lock held, a full disk) is retried at the next tick; the
                // writer's backstop keeps the WAL bounded meanwhile.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    let _ = checkpoint(&conn);
                    *lock(&counted.0) += 1;
                    counted.1.notify_all();
                }
            })
            .map_err(|e| {
                StoreError::Failed(DatabaseError::message(format!(
                    "cannot start the checkpoint thread: {e}"
                )))
            })?;
        Ok(Checkpointer {
            running: Mutex::new(Some((stop, thread))),
            runs,
        })
    }

    /// Stops the thread and closes its connection; returns once it has ended (at most one
    /// checkpoint's time). Closing twice does nothing.
    pub(super) fn close(&self) {
        if let Some((stop, thread)) = lock(&self.running).take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    /// Waits until at least `n` checkpoints have run, for at most `limit`; whether they had.
    #[cfg(test)]
    pub(super) fn wait_for_runs(&self, n: u64, limit: Duration) -> bool {
        let (count, ran) = &*self.runs;
        let guard = lock(count);
        let (guard, _) = ran
            .wait_timeout_while(guard, limit, |done| *done < n)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard >= n
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.close();
    }
}
