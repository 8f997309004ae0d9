//! Kept answers of mutating requests (table `replays`; DESIGN §3 idempotency, §5).

use sqlx::SqlitePool;

use super::codec::BEGIN_WRITE;
use crate::{Result, UnixMillis};

/// The request id's 64 bits as SQLite's signed integer.
fn key(request_id: u64) -> i64 {
    i64::from_ne_bytes(request_id.to_ne_bytes())
}

/// Keeps `answer` for (sender, request id), replacing an earlier one, and drops records older
/// than `keep_ms` before `now`, in one transaction.
pub(super) async fn remember_answer(
    pool: &SqlitePool,
    sender: &str,
    request_id: u64,
    answer: &[u8],
    now: UnixMillis,
    keep_ms: i64,
) -> Result<()> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    sqlx::query("DELETE FROM replays WHERE created_at < ?")
        .bind(now.saturating_sub(keep_ms))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO replays (sender, request_id, answer, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (sender, request_id) DO UPDATE SET answer = excluded.answer, \
         created_at = excluded.created_at",
    )
    .bind(sender)
    .bind(key(request_id))
    .bind(answer)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The answer kept for (sender, request id), if any.
pub(super) async fn answer_of(
    pool: &SqlitePool,
    sender: &str,
    request_id: u64,
) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT answer FROM replays WHERE sender = ? AND request_id = ?")
            .bind(sender)
            .bind(key(request_id))
            .fetch_optional(pool)
            .await?,
    )
}
