//! The read connections of a SQLite store: a small pool used synchronously, with no thread hop.
//!
//! Under WAL, readers run beside the writer and never wait for it. A read takes an idle
//! connection (or opens one when none is idle), runs its statements on the calling thread and
//! puts the connection back. Running inline inside an async method is deliberate: a read of
//! cached pages is a few microseconds, far less than handing it to another thread and back.
//! Because no read awaits while it holds a connection, the connections in use never outnumber
//! the threads running reads; at most [`MAX_IDLE`] are kept between reads.
//!
//! Read connections are `query_only`: nothing can write through them.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;

use super::{Durability, Role, codec, connect, lock};
use crate::{DatabaseError, Result, StoreError};

/// Most idle read connections kept.
pub(super) const MAX_IDLE: usize = 8;

/// The pool of read connections of one database file.
pub(super) struct Readers {
    path: PathBuf,
    durability: Durability,
    /// Idle connections; `None` once the store is closed.
    idle: Mutex<Option<Vec<Connection>>>,
}

impl Readers {
    /// An empty pool for the database at `path`.
    pub(super) fn new(path: PathBuf, durability: Durability) -> Readers {
        Readers {
            path,
            durability,
            idle: Mutex::new(Some(Vec::new())),
        }
    }

    /// Runs `f` on a read connection: for one statement, which is its own snapshot.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.take()?;
        let out = f(&conn);
        self.give_back(conn);
        out
    }

    /// Runs `f` in one read transaction (`BEGIN DEFERRED` … `COMMIT`), so that all its
    /// queries see one snapshot.
    pub(super) fn snapshot<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.read(|conn| {
            codec::exec(conn, "BEGIN DEFERRED", [])?;
            let out = f(conn);
            // A read transaction ends the same way whether its queries succeeded or not.
            let end = codec::exec(conn, "COMMIT", []);
            let value = out?;
            end?;
            Ok(value)
        })
    }

    /// Drops every idle connection; later reads fail with a database error.
    pub(super) fn close(&self) {
        let idle = lock(&self.idle).take();
        drop(idle);
    }

    /// An idle connection, or a new one (opened outside the lock).
    pub(super) fn take(&self) -> Result<Connection> {
        let pooled = match lock(&self.idle).as_mut() {
            Some(idle) => idle.pop(),
            None => return Err(StoreError::Failed(DatabaseError::closed())),
        };
        match pooled {
            Some(conn) => Ok(conn),
            None => Ok(connect(&self.path, self.durability, Role::Reader)?),
        }
    }

    /// Keeps `conn` for the next read, unless the pool is full or closed, or `conn` is still
    /// inside a transaction (its `COMMIT` failed): kept, it would pin an old snapshot.
    pub(super) fn give_back(&self, conn: Connection) {
        if !conn.is_autocommit() {
            return;
        }
        let mut idle = lock(&self.idle);
        if let Some(idle) = idle.as_mut()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    /// How many connections are idle (0 once closed).
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        lock(&self.idle).as_ref().map_or(0, Vec::len)
    }
}
