//! The embedded SQLite backend of [`ServerStore`](crate::ServerStore) and
//! [`DeviceStore`](crate::DeviceStore) (docs/design.md §5; their implementations are in `server_store`
//! and `device_store`): one database file in WAL mode, reached
//! through rusqlite (SQLite compiled in), with the migrations of `migrations/sqlite` applied at
//! open (`migrate`).
//!
//! **Writes** go to one writer thread that owns the only write connection (`writer`). It
//! commits them in groups: every write queued while the previous transaction committed runs in
//! the next one, each inside its own savepoint, so a write that fails changes nothing and gets
//! its own error while the others commit. A write is answered only after its transaction
//! committed, so an acknowledged write is durable as [`Durability`] says, and many flows' writes
//! share one commit (and, under [`Durability::Full`], one fsync). Every write is still atomic on
//! its own: one flow's effect, all or nothing.
//!
//! **Reads** run on the calling thread on a small pool of read connections (`readers`): WAL
//! lets them proceed beside the writer, and a read of cached pages takes microseconds, less
//! than any hop to another thread. Multi-query reads (a PN and its members) run in one read
//! transaction and so see one snapshot. Every statement is prepared once per connection and
//! cached.
//!
//! **Checkpoints** run on a thread of their own (`checkpointer`), never inside the writer's
//! commits.
//!
//! A write whose caller stops waiting (its future dropped) still runs and commits.

mod checkpointer;
mod codec;
mod deliveries;
mod device_store;
mod entity;
mod groups;
mod local;
mod migrate;
mod pn;
mod readers;
mod replay;
mod server_store;
mod services;
mod status;
#[cfg(test)]
mod tests;
mod usage;
mod views;
mod writer;
#[cfg(test)]
mod writer_tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use self::readers::Readers;
use self::writer::Writer;
use crate::Result;

/// How long a connection waits for a lock another connection (or process) holds before failing
/// with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: more than the store has distinct statements, so
/// each is prepared once.
const STATEMENT_CACHE: usize = 64;

/// How hard a commit is pushed to stable storage (SQLite's `synchronous` pragma under WAL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=NORMAL`: the WAL is synced at checkpoints, not at every commit. A commit
    /// survives the process crashing or being killed; an operating-system crash or power loss may
    /// roll back the last commits (the database stays consistent). Much faster; the default.
    #[default]
    Normal,
    /// `synchronous=FULL`: the WAL is synced at every commit, so a commit also survives an
    /// operating-system crash or power loss, at the price of one fsync per commit (one per
    /// group of writes, see the module docs).
    Full,
}

impl Durability {
    fn synchronous(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// The SQLite store: a cheap-to-clone handle on the writer thread and the read connections of
/// one database file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    readers: Readers,
    checkpointer: checkpointer::Checkpointer,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path is all that identifies the store; connections say nothing more.
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The writer's connection: creates the file if missing.
    Writer,
    /// A read connection: `query_only`.
    Reader,
    /// The checkpointer's connection: read-write, on a file that exists.
    Checkpoint,
}

/// Opens a connection to `path` with the store's settings: WAL, `synchronous` per
/// `durability`, foreign keys enforced, a 5 s busy timeout, a statement cache.
fn connect(path: &Path, durability: Durability, role: Role) -> rusqlite::Result<Connection> {
    // rusqlite's defaults (read-write, create, no mutex: each connection is used by one thread
    // at a time), except that a path is never read as a URI; only the writer creates the file.
    let mut flags = OpenFlags::default().difference(OpenFlags::SQLITE_OPEN_URI);
    if role != Role::Writer {
        flags.remove(OpenFlags::SQLITE_OPEN_CREATE);
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.synchronous())?;
    conn.pragma_update(None, "foreign_keys", true)?;
    match role {
        Role::Reader => conn.pragma_update(None, "query_only", true)?,
        // Checkpoints are the checkpointer's work; the writer's own threshold is a backstop.
        Role::Writer => conn.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpointer::WRITER_AUTOCHECKPOINT,
        )?,
        Role::Checkpoint => {}
    }
    Ok(conn)
}

/// Locks `m`; a panic elsewhere while it was held leaves nothing half-done in what it guards.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path` with [`Durability::Normal`], and
    /// brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with(path, Durability::default()).await
    }

    /// Opens (creating it if missing) the database at `path` with the given durability, and
    /// brings its schema up to date; fails with [`StoreError::Migration`](crate::StoreError)
    /// if the database was made by a newer build. Connections use WAL, enforce foreign keys
    /// and wait up to 5 s for a lock.
    pub async fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore> {
        // Its owner's only, before SQLite makes a file (crate::private).
        crate::private::private_database(path)?;
        let path = path.to_path_buf();
        let writer_path = path.clone();
        let writer = Writer::start(move || {
            let mut conn = connect(&writer_path, durability, Role::Writer)?;
            migrate::migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        let checkpointer = match checkpointer::Checkpointer::start(&path, |p| {
            connect(p, durability, Role::Checkpoint)
        }) {
            Ok(c) => c,
            Err(e) => {
                writer.close().await;
                return Err(e);
            }
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                readers: Readers::new(path.clone(), durability),
                path,
                writer,
                checkpointer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes every connection: writes already queued are committed and answered first, and
    /// the WAL is checkpointed as the last connection closes. The store, and every clone of
    /// it, fails with a database error afterwards.
    pub async fn close(&self) {
        self.inner.readers.close();
        // Before the writer: the writer's connection must be the last to close, so that it
        // checkpoints the WAL and removes it.
        self.inner.checkpointer.close();
        self.inner.writer.close().await;
    }

    /// The writer, for the unit tests that write raw rows or check the grouping.
    #[cfg(test)]
    fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// The checkpointer, for the unit tests.
    #[cfg(test)]
    fn checkpointer(&self) -> &checkpointer::Checkpointer {
        &self.inner.checkpointer
    }

    /// The read connections, for the unit tests.
    #[cfg(test)]
    fn readers(&self) -> &Readers {
        &self.inner.readers
    }

    /// Runs `work` in the writer's next batch, inside its own savepoint: one transaction of
    /// its own as far as the caller can tell.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.inner.writer.run(work).await
    }
}
