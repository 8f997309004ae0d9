//! The server's PN inventory of record (tables `pns`, `pn_members`; 000 §6.6.1.1 step 11,
//! 000 §6.6.2, 003 §1.4.1 step 3, 003 §1.4.2 step 4).
//!
//! Lists of PNs take two queries whatever their length — the PN rows, then all their members,
//! grouped in memory — inside one read transaction.

use cpns_wire::{CpnsId, EntityId, PnId};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::codec::{self, BEGIN_WRITE};
use super::entity;
use crate::{PnMember, PnRecord, PnState, Reconciled, Result, StoreError};

fn decode_pn(row: &SqliteRow) -> Result<PnRecord> {
    Ok(PnRecord {
        pn_id: codec::pn_id(row, "pn_id")?,
        gateway: codec::id(row, "gateway")?,
        owner: codec::id(row, "owner")?,
        state: codec::name(row, "state", PnState::parse)?,
        created_at: row.try_get("created_at")?,
        members: Vec::new(),
    })
}

fn decode_member(row: &SqliteRow) -> Result<PnMember> {
    Ok(PnMember {
        pne_id: codec::id(row, "pne_id")?,
        initiator: row.try_get("initiator")?,
        authenticated: row.try_get("authenticated")?,
        capabilities: row.try_get("capabilities")?,
        contents: row.try_get("contents")?,
        sealed_session_key: row.try_get("sealed_session_key")?,
        joined_at: row.try_get("joined_at")?,
    })
}

/// Registers `pn` with its members (000 §6.6.1.1 step 11). A retry by the same gateway
/// replaces owner, state and members and keeps `created_at` and the place in creation order.
pub(super) async fn register_pn(pool: &SqlitePool, pn: &PnRecord) -> Result<()> {
    let id = pn.pn_id.as_bytes().as_slice();
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let gateway: Option<String> = sqlx::query_scalar("SELECT gateway FROM pns WHERE pn_id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    match gateway {
        Some(gw) if gw != pn.gateway.as_str() => {
            return Err(StoreError::Conflict(format!(
                "PN {} is registered by gateway {gw}, not {}",
                pn.pn_id, pn.gateway
            )));
        }
        Some(_) => {
            sqlx::query("UPDATE pns SET owner = ?, state = ? WHERE pn_id = ?")
                .bind(pn.owner.as_str())
                .bind(pn.state.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM pn_members WHERE pn_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO pns (pn_id, gateway, owner, state, created_at, seq) \
                 VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM pns))",
            )
            .bind(id)
            .bind(pn.gateway.as_str())
            .bind(pn.owner.as_str())
            .bind(pn.state.as_str())
            .bind(pn.created_at)
            .execute(&mut *tx)
            .await?;
        }
    }
    for (position, m) in (0_i64..).zip(&pn.members) {
        sqlx::query(
            "INSERT INTO pn_members (pn_id, pne_id, position, initiator, authenticated, \
             capabilities, sealed_session_key, joined_at, contents) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(m.pne_id.as_str())
        .bind(position)
        .bind(m.initiator)
        .bind(m.authenticated)
        .bind(m.capabilities.as_deref())
        .bind(m.sealed_session_key.as_deref())
        .bind(m.joined_at)
        .bind(m.contents.as_deref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Adds `m` to PN `pn` after its current members, or updates the member in place as
/// [`Store::upsert_member`](crate::Store::upsert_member) says (never a downgrade).
pub(super) async fn upsert_member(pool: &SqlitePool, pn: &PnId, m: &PnMember) -> Result<()> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    require_pn(&mut tx, pn).await?;
    upsert_member_in(&mut tx, pn, m).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes the members `remove` (absent ones ignored), then upserts each of `add` as
/// [`upsert_member`] does, in one transaction (000 §6.6.2, 003 §1.4.2 step 4).
pub(super) async fn update_members(
    pool: &SqlitePool,
    pn: &PnId,
    add: &[PnMember],
    remove: &[EntityId],
) -> Result<()> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    require_pn(&mut tx, pn).await?;
    if !remove.is_empty() {
        sqlx::query(
            "DELETE FROM pn_members WHERE pn_id = ? \
             AND pne_id IN (SELECT value FROM json_each(?))",
        )
        .bind(pn.as_bytes().as_slice())
        .bind(codec::json_string_array(
            remove.iter().map(EntityId::as_str),
        ))
        .execute(&mut *tx)
        .await?;
    }
    for m in add {
        upsert_member_in(&mut tx, pn, m).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Registers PNE `m.pne_id` in PN `pn` (003 §1.4.1 step 3): allocates its CPNS ID as
/// [`entity::allocate_cpns_id`] does and upserts `m` as [`upsert_member`] does, in one
/// transaction, so the CPNS ID and the member's session key land together or not at all.
pub(super) async fn register_pne(pool: &SqlitePool, pn: &PnId, m: &PnMember) -> Result<CpnsId> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    require_pn(&mut tx, pn).await?;
    let cpns_id = entity::allocate_cpns_id_in(&mut tx, &m.pne_id).await?;
    upsert_member_in(&mut tx, pn, m).await?;
    tx.commit().await?;
    Ok(cpns_id)
}

/// [`StoreError::NotFound`] unless PN `pn` exists.
async fn require_pn(conn: &mut SqliteConnection, pn: &PnId) -> Result<()> {
    let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM pns WHERE pn_id = ?")
        .bind(pn.as_bytes().as_slice())
        .fetch_optional(&mut *conn)
        .await?;
    match known {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("PN {pn}"))),
    }
}

/// The upsert of [`upsert_member`], inside the caller's write transaction; the PN must exist.
async fn upsert_member_in(conn: &mut SqliteConnection, pn: &PnId, m: &PnMember) -> Result<()> {
    sqlx::query(
        "INSERT INTO pn_members (pn_id, pne_id, position, initiator, authenticated, \
         capabilities, sealed_session_key, joined_at, contents) \
         VALUES (?1, ?2, (SELECT COALESCE(MAX(position), -1) + 1 FROM pn_members \
         WHERE pn_id = ?1), ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (pn_id, pne_id) DO UPDATE SET \
         initiator = MAX(pn_members.initiator, excluded.initiator), \
         authenticated = MAX(pn_members.authenticated, excluded.authenticated), \
         capabilities = COALESCE(excluded.capabilities, pn_members.capabilities), \
         contents = COALESCE(excluded.contents, pn_members.contents), \
         sealed_session_key = COALESCE(excluded.sealed_session_key, pn_members.sealed_session_key)",
    )
    .bind(pn.as_bytes().as_slice())
    .bind(m.pne_id.as_str())
    .bind(m.initiator)
    .bind(m.authenticated)
    .bind(m.capabilities.as_deref())
    .bind(m.sealed_session_key.as_deref())
    .bind(m.joined_at)
    .bind(m.contents.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes one PN and its members inside the caller's write transaction.
async fn delete_pn_in(conn: &mut SqliteConnection, pn: &[u8]) -> Result<()> {
    sqlx::query("DELETE FROM pn_members WHERE pn_id = ?")
        .bind(pn)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM pns WHERE pn_id = ?")
        .bind(pn)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The PN list a PN GW reports decides which of its PNs exist (002 §B.1.1.2 step 17).
pub(super) async fn reconcile_gateway_pns(
    pool: &SqlitePool,
    gw: &EntityId,
    listed: &[PnId],
    drop_unlisted_pending: bool,
) -> Result<Reconciled> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let rows = sqlx::query("SELECT pn_id, state FROM pns WHERE gateway = ? ORDER BY seq")
        .bind(gw.as_str())
        .fetch_all(&mut *tx)
        .await?;
    let mut done = Reconciled::default();
    let mut known = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = codec::pn_id(row, "pn_id")?;
        let state = codec::name(row, "state", PnState::parse)?;
        known.push(id);
        let key = id.as_bytes().as_slice();
        match (listed.contains(&id), state) {
            (true, PnState::Pending) => {
                sqlx::query("UPDATE pns SET state = ? WHERE pn_id = ?")
                    .bind(PnState::Active.as_str())
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                done.confirmed.push(id);
            }
            (false, PnState::Active) | (false, PnState::Pending) => {
                if state == PnState::Pending && !drop_unlisted_pending {
                    continue;
                }
                delete_pn_in(&mut tx, key).await?;
                done.removed.push(id);
            }
            _ => {}
        }
    }
    done.unknown = listed
        .iter()
        .filter(|p| !known.contains(p))
        .copied()
        .collect();
    tx.commit().await?;
    Ok(done)
}

/// Removes a PN still pending confirmation.
pub(super) async fn remove_pending_pn(pool: &SqlitePool, pn: &PnId) -> Result<bool> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let key = pn.as_bytes().as_slice();
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM pns WHERE pn_id = ?")
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
    let pending = state.as_deref() == Some(PnState::Pending.as_str());
    if pending {
        delete_pn_in(&mut tx, key).await?;
    }
    tx.commit().await?;
    Ok(pending)
}

/// One PN with its members in the order they were added.
pub(super) async fn pn(pool: &SqlitePool, id: &PnId) -> Result<Option<PnRecord>> {
    let key = id.as_bytes().as_slice();
    let mut tx = pool.begin().await?;
    let Some(row) =
        sqlx::query("SELECT pn_id, gateway, owner, state, created_at FROM pns WHERE pn_id = ?")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(None);
    };
    let mut record = decode_pn(&row)?;
    let rows = sqlx::query(
        "SELECT pne_id, initiator, authenticated, capabilities, sealed_session_key, joined_at, \
         contents FROM pn_members WHERE pn_id = ? ORDER BY position",
    )
    .bind(key)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    record.members = rows.iter().map(decode_member).collect::<Result<_>>()?;
    Ok(Some(record))
}

/// The PNs served by `gw`, in creation order.
pub(super) async fn pns_of_gateway(pool: &SqlitePool, gw: &EntityId) -> Result<Vec<PnRecord>> {
    let mut tx = pool.begin().await?;
    let pns = sqlx::query(
        "SELECT pn_id, gateway, owner, state, created_at FROM pns WHERE gateway = ? \
         ORDER BY seq",
    )
    .bind(gw.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let members = sqlx::query(
        "SELECT m.pn_id, m.pne_id, m.initiator, m.authenticated, m.capabilities, \
         m.sealed_session_key, m.joined_at, m.contents FROM pn_members AS m \
         JOIN pns AS p ON p.pn_id = m.pn_id WHERE p.gateway = ? ORDER BY m.pn_id, m.position",
    )
    .bind(gw.as_str())
    .fetch_all(&mut *tx)
    .await?;
    finish(tx, &pns, &members).await
}

/// Every PN, in creation order.
pub(super) async fn all_pns(pool: &SqlitePool) -> Result<Vec<PnRecord>> {
    let mut tx = pool.begin().await?;
    let pns = sqlx::query("SELECT pn_id, gateway, owner, state, created_at FROM pns ORDER BY seq")
        .fetch_all(&mut *tx)
        .await?;
    let members = sqlx::query(
        "SELECT pn_id, pne_id, initiator, authenticated, capabilities, sealed_session_key, \
         joined_at, contents FROM pn_members ORDER BY pn_id, position",
    )
    .fetch_all(&mut *tx)
    .await?;
    finish(tx, &pns, &members).await
}

/// Ends the read transaction and joins PN rows with member rows (ordered by position within
/// each PN).
async fn finish(
    tx: Transaction<'static, Sqlite>,
    pns: &[SqliteRow],
    members: &[SqliteRow],
) -> Result<Vec<PnRecord>> {
    tx.commit().await?;
    let mut by_pn = codec::members_by_pn(members, decode_member)?;
    pns.iter()
        .map(|row| {
            let mut record = decode_pn(row)?;
            record.members = by_pn.remove(&record.pn_id).unwrap_or_default();
            Ok(record)
        })
        .collect()
}
