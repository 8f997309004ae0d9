//! Kept answers of mutating requests (table `replays`; DESIGN §3 idempotency, §5).

use rusqlite::{Connection, params};

use super::codec;
use crate::{Result, UnixMillis};

/// The request id's 64 bits as SQLite's signed integer.
fn key(request_id: u64) -> i64 {
    i64::from_ne_bytes(request_id.to_ne_bytes())
}

/// Keeps `answer` for (sender, request id), replacing an earlier one, and drops records older
/// than `keep_ms` before `now`, in one write.
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
        "DELETE FROM replays WHERE created_at < ?",
        [now.saturating_sub(keep_ms)],
    )?;
    codec::exec(
        conn,
        "INSERT INTO replays (sender, request_id, answer, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (sender, request_id) DO UPDATE SET answer = excluded.answer, \
         created_at = excluded.created_at",
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
