//! Users, enrolled entities and CPNS id allocation (tables `users`, `entities`, `cpns_id_seq`).

use cpns_wire::{CpnsId, EntityId, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::codec::{self, BEGIN_WRITE};
use crate::{EntityKind, EntityRecord, Result, StoreError};

/// The `SELECT` of a whole entity row, aliased `e`, for [`decode_entity`].
macro_rules! select_entity {
    () => {
        "SELECT e.id, e.kind, e.owner, e.sealed_eukey, e.capabilities, e.status, e.cpns_id, \
         e.enrolled_at FROM entities AS e"
    };
}

fn decode_entity(row: &SqliteRow) -> Result<EntityRecord> {
    Ok(EntityRecord {
        id: codec::id(row, "id")?,
        kind: codec::name(row, "kind", EntityKind::parse)?,
        owner: codec::id(row, "owner")?,
        sealed_eukey: row.try_get("sealed_eukey")?,
        capabilities: row.try_get("capabilities")?,
        status: row.try_get("status")?,
        cpns_id: codec::opt_id(row, "cpns_id")?,
        enrolled_at: row.try_get("enrolled_at")?,
    })
}

/// Adds `user` unless it exists.
pub(super) async fn ensure_user(pool: &SqlitePool, user: &UserId) -> Result<()> {
    sqlx::query("INSERT INTO users (id) VALUES (?) ON CONFLICT (id) DO NOTHING")
        .bind(user.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// Enrolls `e`: [`StoreError::NotFound`] if its owner is not a user, [`StoreError::Conflict`]
/// if its id (or CPNS id) is taken.
pub(super) async fn insert_entity(pool: &SqlitePool, e: &EntityRecord) -> Result<()> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let owner_known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = ?")
        .bind(e.owner.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if owner_known.is_none() {
        return Err(StoreError::NotFound(format!("user {}", e.owner)));
    }
    let taken: Option<i64> = sqlx::query_scalar("SELECT 1 FROM entities WHERE id = ?")
        .bind(e.id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if taken.is_some() {
        return Err(StoreError::Conflict(format!(
            "entity {} is already enrolled",
            e.id
        )));
    }
    sqlx::query(
        "INSERT INTO entities \
         (id, kind, owner, sealed_eukey, capabilities, status, cpns_id, enrolled_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.id.as_str())
    .bind(e.kind.as_str())
    .bind(e.owner.as_str())
    .bind(e.sealed_eukey.as_slice())
    .bind(e.capabilities.as_deref())
    .bind(e.status.as_deref())
    .bind(e.cpns_id.as_ref().map(CpnsId::as_str))
    .bind(e.enrolled_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One entity, if enrolled.
pub(super) async fn entity(pool: &SqlitePool, id: &EntityId) -> Result<Option<EntityRecord>> {
    let row = sqlx::query(concat!(select_entity!(), " WHERE e.id = ?"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode_entity).transpose()
}

/// The enrolled entities among `ids`, in the order of their first mention in `ids`, in one
/// query (the ids travel as one JSON array bound to `json_each`).
pub(super) async fn entities(pool: &SqlitePool, ids: &[EntityId]) -> Result<Vec<EntityRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = codec::json_string_array(ids.iter().map(EntityId::as_str));
    let rows = sqlx::query(concat!(
        select_entity!(),
        " JOIN (SELECT value, MIN(key) AS pos FROM json_each(?) GROUP BY value) AS j \
         ON j.value = e.id ORDER BY j.pos"
    ))
    .bind(list)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_entity).collect()
}

/// Records what an entity reported; `None` leaves a field as it was.
pub(super) async fn update_entity_report(
    pool: &SqlitePool,
    id: &EntityId,
    capabilities: Option<&[u8]>,
    status: Option<&str>,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE entities SET capabilities = COALESCE(?, capabilities), \
         status = COALESCE(?, status) WHERE id = ?",
    )
    .bind(capabilities)
    .bind(status)
    .bind(id.as_str())
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("entity {id}")));
    }
    Ok(())
}

/// The CPNS ID of `pne` (003 §1.4.1 step 3): the one it has, or the next number of
/// `cpns_id_seq`, formatted `cpns-000001`. Numbers are never reused.
pub(super) async fn allocate_cpns_id(pool: &SqlitePool, pne: &EntityId) -> Result<CpnsId> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let id = allocate_cpns_id_in(&mut tx, pne).await?;
    tx.commit().await?;
    Ok(id)
}

/// [`allocate_cpns_id`] inside the caller's write transaction, which commits it (or, dropped,
/// rolls the allocation back). [`StoreError::NotFound`] if `pne` is not enrolled.
pub(super) async fn allocate_cpns_id_in(
    conn: &mut SqliteConnection,
    pne: &EntityId,
) -> Result<CpnsId> {
    let row = sqlx::query("SELECT cpns_id FROM entities WHERE id = ?")
        .bind(pne.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("entity {pne}")))?;
    if let Some(id) = codec::opt_id(&row, "cpns_id")? {
        return Ok(id);
    }
    let n: i64 =
        sqlx::query_scalar("UPDATE cpns_id_seq SET last = last + 1 WHERE id = 1 RETURNING last")
            .fetch_one(&mut *conn)
            .await?;
    let id = CpnsId::new(format!("cpns-{n:06}"))
        .map_err(|e| StoreError::Corrupt(format!("cpns_id_seq.last {n}: {e}")))?;
    sqlx::query("UPDATE entities SET cpns_id = ? WHERE id = ?")
        .bind(id.as_str())
        .bind(pne.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(id)
}
