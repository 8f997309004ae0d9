//! Users, enrolled entities and CPNS id allocation (tables `users`, `entities`, `cpns_id_seq`).
//!
//! The writes run on the writer thread inside its transaction (see `writer`); the reads on a
//! read connection.

use cpns_wire::{CpnsId, EntityId, UserId};
use rusqlite::{Connection, Row, params};

use super::codec;
use crate::{EntityKind, EntityRecord, Result, StoreError};

/// The `SELECT` of a whole entity row, aliased `e`, for [`decode_entity`].
macro_rules! select_entity {
    () => {
        "SELECT e.id, e.kind, e.owner, e.sealed_eukey, e.capabilities, e.cpns_id, e.enrolled_at \
         FROM entities AS e"
    };
}

fn decode_entity(row: &Row<'_>) -> Result<EntityRecord> {
    Ok(EntityRecord {
        id: codec::id(row, "id")?,
        kind: codec::name(row, "kind", EntityKind::parse)?,
        owner: codec::id(row, "owner")?,
        sealed_eukey: row.get("sealed_eukey")?,
        capabilities: codec::capabilities(row, "capabilities")?,
        cpns_id: codec::opt_id(row, "cpns_id")?,
        enrolled_at: row.get("enrolled_at")?,
    })
}

/// Adds `user` unless it exists.
pub(super) fn ensure_user(conn: &Connection, user: &UserId) -> Result<()> {
    codec::exec(
        conn,
        "INSERT INTO users (id) VALUES (?) ON CONFLICT (id) DO NOTHING",
        [user.as_str()],
    )?;
    Ok(())
}

/// Enrolls `e`: [`StoreError::NotFound`] if its owner is not a user, [`StoreError::Conflict`]
/// if its id (or CPNS id) is taken.
pub(super) fn insert_entity(conn: &Connection, e: &EntityRecord) -> Result<()> {
    let owner_known = codec::optional(
        conn,
        "SELECT 1 FROM users WHERE id = ?",
        [e.owner.as_str()],
        |_| Ok(()),
    )?;
    if owner_known.is_none() {
        return Err(StoreError::not_found(format!("user {}", e.owner)));
    }
    let taken = codec::optional(
        conn,
        "SELECT 1 FROM entities WHERE id = ?",
        [e.id.as_str()],
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(StoreError::conflict(format!(
            "entity {} is already enrolled",
            e.id
        )));
    }
    codec::exec(
        conn,
        "INSERT INTO entities \
         (id, kind, owner, sealed_eukey, capabilities, cpns_id, enrolled_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        params![
            e.id.as_str(),
            e.kind.as_str(),
            e.owner.as_str(),
            e.sealed_eukey,
            codec::capabilities_blob(e.capabilities.as_ref()),
            e.cpns_id.as_ref().map(CpnsId::as_str),
            e.enrolled_at,
        ],
    )?;
    Ok(())
}

/// One entity, if enrolled.
pub(super) fn entity(conn: &Connection, id: &EntityId) -> Result<Option<EntityRecord>> {
    codec::optional(
        conn,
        concat!(select_entity!(), " WHERE e.id = ?"),
        [id.as_str()],
        decode_entity,
    )
}

/// The enrolled entities among `ids`, in the order of their first mention in `ids`, in one
/// query (the ids travel as one JSON array bound to `json_each`).
pub(super) fn entities(conn: &Connection, ids: &[EntityId]) -> Result<Vec<EntityRecord>> {
    codec::by_ids(
        conn,
        concat!(select_entity!(), codec::in_order_of_ids!()),
        ids,
        decode_entity,
    )
}

/// The user owning entity `id`, if it is enrolled.
pub(super) fn owner_of(conn: &Connection, id: &EntityId) -> Result<Option<UserId>> {
    codec::optional(
        conn,
        "SELECT owner FROM entities WHERE id = ?",
        [id.as_str()],
        |row| codec::id(row, "owner"),
    )
}

/// The CPNS ID of `pne` (003 §1.4.1 step 3): the one it has, or the next number of
/// `cpns_id_seq`, formatted `cpns-000001`. Numbers are never reused: the allocation commits with
/// the caller's write or, if that fails, rolls back with it. [`StoreError::NotFound`] if `pne`
/// is not enrolled.
pub(super) fn allocate_cpns_id(conn: &Connection, pne: &EntityId) -> Result<CpnsId> {
    let stored = codec::optional(
        conn,
        "SELECT cpns_id FROM entities WHERE id = ?",
        [pne.as_str()],
        |row| codec::opt_id(row, "cpns_id"),
    )?
    .ok_or_else(|| StoreError::not_found(format!("entity {pne}")))?;
    if let Some(id) = stored {
        return Ok(id);
    }
    let n: i64 = conn
        .prepare_cached("UPDATE cpns_id_seq SET last = last + 1 WHERE id = 1 RETURNING last")?
        .query_row([], |row| row.get(0))?;
    let id = CpnsId::new(format!("cpns-{n:06}"))
        .map_err(|e| StoreError::corrupt("cpns_id_seq.last", format!("{n}: {e}")))?;
    codec::exec(
        conn,
        "UPDATE entities SET cpns_id = ? WHERE id = ?",
        [id.as_str(), pne.as_str()],
    )?;
    Ok(id)
}
