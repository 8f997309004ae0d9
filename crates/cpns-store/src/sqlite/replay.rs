//! Kept answers of mutating requests (table `replays`; docs/design.md §3 idempotency, §5).

use rusqlite::{Connection, params};

use super::codec;
use crate::{Result, UnixMillis};

/// The request id's 64 bits as SQLite's signed integer.
fn key(request_id: u64) -> i64 {
    i64::from_ne_bytes(request_id.to_ne_bytes())
}

/// Most expired records one write removes: more than the one it adds, so the table never grows
/// beyond what the retention keeps.
const PURGE_PER_WRITE: i64 = 64;

/// Keeps `answer` for (sender, request id), replacing an earlier one, and drops records older
/// than `keep_ms` before `now`, in one write.
///
/// Records are appended in the order they are kept (a replaced one is removed and appended
/// again), so the oldest come first in rowid order: the purge looks at the first
/// [`PURGE_PER_WRITE`] rows only and removes those that expired (schema 5).
pub(super) fn remember_answer(
    conn: &Connection,
    sender: &str,
    request_id: u64,
    answer: &[u8],
    now: UnixMillis,
    keep_ms: i64,
) -> Result<()> {
    codec::exec(
        conn,
        "DELETE FROM replays WHERE rowid IN \
         (SELECT rowid FROM replays ORDER BY rowid LIMIT ?) AND created_at < ?",
        params![PURGE_PER_WRITE, now.saturating_sub(keep_ms)],
    )?;
    codec::exec(
        conn,
        "DELETE FROM replays WHERE sender = ? AND request_id = ?",
        params![sender, key(request_id)],
    )?;
    codec::exec(
        conn,
        "INSERT INTO replays (sender, request_id, answer, created_at) VALUES (?, ?, ?, ?)",
        params![sender, key(request_id), answer, now],
    )?;
    Ok(())
}

/// The answer kept for (sender, request id), if any.
pub(super) fn answer_of(
    conn: &Connection,
    sender: &str,
    request_id: u64,
) -> Result<Option<Vec<u8>>> {
    codec::optional(
        conn,
        "SELECT answer FROM replays WHERE sender = ? AND request_id = ?",
        params![sender, key(request_id)],
        |row| Ok(row.get(0)?),
    )
}
