//! A device's own local PN inventory (tables `local_pns`, `local_members`; 000 §6.6.1.1
//! steps 13-15): what a PN GW or PNE keeps about the PNs it belongs to.

use cpns_wire::PnId;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::codec::{self, BEGIN_WRITE};
use crate::{LocalMember, LocalPn, LocalSession, Result};

/// Stores `pn`, or replaces it and its whole member list; a replaced PN keeps its place in the
/// order first stored.
pub(super) async fn save_local_pn(pool: &SqlitePool, pn: &LocalPn) -> Result<()> {
    let id = pn.pn_id.as_bytes().as_slice();
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    sqlx::query(
        "INSERT INTO local_pns (pn_id, gateway, stored_at, seq) \
         VALUES (?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM local_pns)) \
         ON CONFLICT (pn_id) DO UPDATE SET gateway = excluded.gateway, \
         stored_at = excluded.stored_at",
    )
    .bind(id)
    .bind(pn.gateway.as_str())
    .bind(pn.stored_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM local_members WHERE pn_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    for (position, m) in (0_i64..).zip(&pn.members) {
        sqlx::query(
            "INSERT INTO local_members \
             (pn_id, pne_id, position, capabilities, sealed_local_key, route, contents) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(m.pne_id.as_str())
        .bind(position)
        .bind(m.capabilities.as_deref())
        .bind(m.sealed_local_key.as_deref())
        .bind(m.route.as_deref())
        .bind(m.contents.as_deref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn decode_member(row: &SqliteRow) -> Result<LocalMember> {
    Ok(LocalMember {
        pne_id: codec::id(row, "pne_id")?,
        capabilities: row.try_get("capabilities")?,
        sealed_local_key: row.try_get("sealed_local_key")?,
        route: row.try_get("route")?,
        contents: row.try_get("contents")?,
    })
}

/// The local PNs in the order first stored, each with its members in the order saved; two
/// queries in one read transaction.
pub(super) async fn local_pns(pool: &SqlitePool) -> Result<Vec<LocalPn>> {
    let mut tx = pool.begin().await?;
    let pns = sqlx::query("SELECT pn_id, gateway, stored_at FROM local_pns ORDER BY seq")
        .fetch_all(&mut *tx)
        .await?;
    let members = sqlx::query(
        "SELECT pn_id, pne_id, capabilities, sealed_local_key, route, contents \
         FROM local_members \
         ORDER BY pn_id, position",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut by_pn = codec::members_by_pn(&members, decode_member)?;
    pns.iter()
        .map(|row| {
            let pn_id = codec::pn_id(row, "pn_id")?;
            Ok(LocalPn {
                pn_id,
                gateway: codec::id(row, "gateway")?,
                members: by_pn.remove(&pn_id).unwrap_or_default(),
                stored_at: row.try_get("stored_at")?,
            })
        })
        .collect()
}

/// Removes a local PN and (by cascade) its members; true if it was there.
pub(super) async fn remove_local_pn(pool: &SqlitePool, pn: &PnId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM local_pns WHERE pn_id = ?")
        .bind(pn.as_bytes().as_slice())
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Keeps the PNE's secure session in the one row of `local_session`.
pub(super) async fn save_local_session(pool: &SqlitePool, s: &LocalSession) -> Result<()> {
    sqlx::query(
        "INSERT INTO local_session \
         (id, cpns_id, pn_id, sealed_session_key, lifetime_s, stored_at) \
         VALUES (1, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET cpns_id = excluded.cpns_id, pn_id = excluded.pn_id, \
         sealed_session_key = excluded.sealed_session_key, \
         lifetime_s = excluded.lifetime_s, stored_at = excluded.stored_at",
    )
    .bind(s.cpns_id.as_str())
    .bind(s.pn_id.as_bytes().as_slice())
    .bind(&s.sealed_session_key)
    .bind(s.lifetime_s)
    .bind(s.stored_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The PNE's secure session, if kept.
pub(super) async fn local_session(pool: &SqlitePool) -> Result<Option<LocalSession>> {
    let Some(row) = sqlx::query(
        "SELECT cpns_id, pn_id, sealed_session_key, lifetime_s, stored_at FROM local_session",
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(LocalSession {
        cpns_id: codec::id(&row, "cpns_id")?,
        pn_id: codec::pn_id(&row, "pn_id")?,
        sealed_session_key: row.try_get("sealed_session_key")?,
        lifetime_s: row.try_get("lifetime_s")?,
        stored_at: row.try_get("stored_at")?,
    }))
}
