//! A device's own local PN inventory (tables `local_pns`, `local_members`, `local_session`;
//! 000 §6.6.1.1 steps 13-15, 003 §1.4.1 step 4): what a PN GW or PNE keeps about the PNs it
//! belongs to; and a PNE's keys of its service groups (`local_service_groups`).

use cpns_wire::{EntityId, GroupId, PnId};
use rusqlite::{Connection, Row, params};

use super::codec;
use crate::{
    DepartedKey, LocalMember, LocalPn, LocalServiceGroup, LocalSession, Result, StoreError,
};

/// Stores `pn`, or replaces it and its whole member list; a replaced PN keeps its place in the
/// order first stored.
pub(super) fn save_local_pn(conn: &Connection, pn: &LocalPn) -> Result<()> {
    let id = pn.pn_id.as_bytes().as_slice();
    codec::exec(
        conn,
        "INSERT INTO local_pns \
         (pn_id, gateway, stored_at, sealed_session_key, epoch, sealed_group_key, expires_at, \
         secure_seq, seq) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM local_pns)) \
         ON CONFLICT (pn_id) DO UPDATE SET gateway = excluded.gateway, \
         stored_at = excluded.stored_at, sealed_session_key = excluded.sealed_session_key, \
         epoch = excluded.epoch, sealed_group_key = excluded.sealed_group_key, \
         expires_at = excluded.expires_at, secure_seq = excluded.secure_seq",
        params![
            id,
            pn.gateway.as_str(),
            pn.stored_at,
            pn.sealed_session_key,
            codec::epoch_of(pn.group.as_ref())?,
            pn.group.as_ref().map(|g| &g.sealed_key),
            pn.expires_at,
            pn.secure_seq.cast_signed(),
        ],
    )?;
    codec::exec(conn, "DELETE FROM local_members WHERE pn_id = ?", [id])?;
    for (position, m) in (0_i64..).zip(&pn.members) {
        codec::exec(
            conn,
            "INSERT INTO local_members \
             (pn_id, pne_id, position, capabilities, sealed_local_key, route, contents) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            params![
                id,
                m.pne_id.as_str(),
                position,
                codec::capabilities_blob(m.capabilities.as_ref()),
                m.sealed_local_key,
                m.route,
                codec::contents_blob(&m.contents),
            ],
        )?;
    }
    Ok(())
}

fn decode_member(row: &Row<'_>) -> Result<LocalMember> {
    Ok(LocalMember {
        pne_id: codec::id(row, "pne_id")?,
        capabilities: codec::capabilities(row, "capabilities")?,
        sealed_local_key: row.get("sealed_local_key")?,
        route: row.get("route")?,
        contents: codec::contents(row, "contents")?,
    })
}

/// The local PNs in the order first stored, each with its members in the order saved; two
/// queries, run inside a read transaction.
pub(super) fn local_pns(conn: &Connection) -> Result<Vec<LocalPn>> {
    let mut members = codec::members_by_pn(
        conn,
        "SELECT pn_id, pne_id, capabilities, sealed_local_key, route, contents \
         FROM local_members ORDER BY pn_id, position",
        [],
        decode_member,
    )?;
    codec::all(
        conn,
        "SELECT pn_id, gateway, stored_at, sealed_session_key, epoch, sealed_group_key, \
         expires_at, secure_seq FROM local_pns ORDER BY seq",
        [],
        |row| {
            let pn_id = codec::pn_id(row, "pn_id")?;
            Ok(LocalPn {
                pn_id,
                gateway: codec::id(row, "gateway")?,
                members: members.remove(&pn_id).unwrap_or_default(),
                stored_at: row.get("stored_at")?,
                sealed_session_key: row.get("sealed_session_key")?,
                group: codec::group(row)?,
                expires_at: row.get("expires_at")?,
                secure_seq: row.get::<_, i64>("secure_seq")?.cast_unsigned(),
            })
        },
    )
}

/// Removes a local PN and (by cascade) its members; true if it was there.
pub(super) fn remove_local_pn(conn: &Connection, pn: &PnId) -> Result<bool> {
    let removed = codec::exec(
        conn,
        "DELETE FROM local_pns WHERE pn_id = ?",
        [pn.as_bytes().as_slice()],
    )?;
    Ok(removed > 0)
}

/// Keeps the PNE's secure session in the one row of `local_session`.
pub(super) fn save_local_session(conn: &Connection, s: &LocalSession) -> Result<()> {
    codec::exec(
        conn,
        "INSERT INTO local_session \
         (id, cpns_id, pn_id, sealed_session_key, lifetime_s, stored_at) \
         VALUES (1, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET cpns_id = excluded.cpns_id, pn_id = excluded.pn_id, \
         sealed_session_key = excluded.sealed_session_key, \
         lifetime_s = excluded.lifetime_s, stored_at = excluded.stored_at",
        params![
            s.cpns_id.as_str(),
            s.pn_id.as_bytes().as_slice(),
            s.sealed_session_key,
            s.lifetime_s,
            s.stored_at,
        ],
    )?;
    Ok(())
}

/// The PNE's secure session, if kept.
pub(super) fn local_session(conn: &Connection) -> Result<Option<LocalSession>> {
    codec::optional(
        conn,
        "SELECT cpns_id, pn_id, sealed_session_key, lifetime_s, stored_at FROM local_session",
        [],
        |row| {
            Ok(LocalSession {
                cpns_id: codec::id(row, "cpns_id")?,
                pn_id: codec::pn_id(row, "pn_id")?,
                sealed_session_key: row.get("sealed_session_key")?,
                lifetime_s: row.get("lifetime_s")?,
                stored_at: row.get("stored_at")?,
            })
        },
    )
}

/// Keeps a departed member's key, replacing one of the same PN and PNE.
pub(super) fn save_departed(conn: &Connection, k: &DepartedKey) -> Result<()> {
    codec::exec(
        conn,
        "INSERT INTO local_departed (pn_id, pne_id, sealed_local_key, departed_at) \
         VALUES (?, ?, ?, ?) \
         ON CONFLICT (pn_id, pne_id) DO UPDATE SET \
         sealed_local_key = excluded.sealed_local_key, departed_at = excluded.departed_at",
        params![
            k.pn_id.as_bytes().as_slice(),
            k.pne_id.as_str(),
            k.sealed_local_key,
            k.departed_at,
        ],
    )?;
    Ok(())
}

/// Removes the departed key of (`pn`, `pne`); true if it was there.
pub(super) fn remove_departed(conn: &Connection, pn: &PnId, pne: &EntityId) -> Result<bool> {
    let removed = codec::exec(
        conn,
        "DELETE FROM local_departed WHERE pn_id = ? AND pne_id = ?",
        params![pn.as_bytes().as_slice(), pne.as_str()],
    )?;
    Ok(removed > 0)
}

/// Every departed key, oldest first.
pub(super) fn departed(conn: &Connection) -> Result<Vec<DepartedKey>> {
    codec::all(
        conn,
        "SELECT pn_id, pne_id, sealed_local_key, departed_at FROM local_departed \
         ORDER BY departed_at, pn_id, pne_id",
        [],
        |row| {
            Ok(DepartedKey {
                pn_id: codec::pn_id(row, "pn_id")?,
                pne_id: codec::id(row, "pne_id")?,
                sealed_local_key: row.get("sealed_local_key")?,
                departed_at: row.get("departed_at")?,
            })
        },
    )
}

/// Keeps a service group's key, replacing the one kept for the group.
pub(super) fn save_local_group(conn: &Connection, g: &LocalServiceGroup) -> Result<()> {
    let epoch = i64::try_from(g.epoch)
        .map_err(|_| StoreError::conflict(format!("epoch {} is too large", g.epoch)))?;
    codec::exec(
        conn,
        "INSERT INTO local_service_groups (group_id, name, epoch, sealed_key, stored_at) \
         VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, epoch = excluded.epoch, \
         sealed_key = excluded.sealed_key, stored_at = excluded.stored_at",
        params![
            g.group_id.as_bytes().as_slice(),
            g.name,
            epoch,
            g.sealed_key,
            g.stored_at,
        ],
    )?;
    Ok(())
}

/// Removes a service group's key; true if one was kept.
pub(super) fn remove_local_group(conn: &Connection, g: &GroupId) -> Result<bool> {
    let removed = codec::exec(
        conn,
        "DELETE FROM local_service_groups WHERE group_id = ?",
        params![g.as_bytes().as_slice()],
    )?;
    Ok(removed > 0)
}

/// Every service group key kept, by group id.
pub(super) fn local_groups(conn: &Connection) -> Result<Vec<LocalServiceGroup>> {
    codec::all(
        conn,
        "SELECT group_id, name, epoch, sealed_key, stored_at FROM local_service_groups \
         ORDER BY group_id",
        [],
        |row| {
            let id: Vec<u8> = row.get("group_id")?;
            let id: [u8; 16] = id
                .try_into()
                .map_err(|_| StoreError::corrupt("group_id", "not 16 bytes"))?;
            let epoch: i64 = row.get("epoch")?;
            Ok(LocalServiceGroup {
                group_id: GroupId::from_bytes(id),
                name: row.get("name")?,
                epoch: u64::try_from(epoch)
                    .map_err(|_| StoreError::corrupt("epoch", "negative"))?,
                sealed_key: row.get("sealed_key")?,
                stored_at: row.get("stored_at")?,
            })
        },
    )
}

/// Keeps a PNE's delivery session, replacing the one kept of the same session.
pub(super) fn save_local_delivery(conn: &Connection, d: &crate::LocalDelivery) -> Result<()> {
    let files = minicbor::to_vec(&d.files)
        .map_err(|e| StoreError::conflict(format!("the files of a delivery: {e}")))?;
    codec::exec(
        conn,
        "INSERT INTO local_deliveries (session, as_source, sealed_key, description, files, \
         stored_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (session) DO UPDATE SET as_source = excluded.as_source, \
         sealed_key = excluded.sealed_key, description = excluded.description, \
         files = excluded.files, stored_at = excluded.stored_at",
        params![
            d.session.as_bytes().as_slice(),
            i64::from(d.as_source),
            d.sealed_key,
            d.description,
            files,
            d.stored_at,
        ],
    )?;
    Ok(())
}

/// Removes a kept delivery session; true if one was kept.
pub(super) fn remove_local_delivery(
    conn: &Connection,
    session: &cpns_wire::DeliveryId,
) -> Result<bool> {
    let removed = codec::exec(
        conn,
        "DELETE FROM local_deliveries WHERE session = ?",
        params![session.as_bytes().as_slice()],
    )?;
    Ok(removed > 0)
}

/// Every delivery session kept, by session.
pub(super) fn local_deliveries(conn: &Connection) -> Result<Vec<crate::LocalDelivery>> {
    codec::all(
        conn,
        "SELECT session, as_source, sealed_key, description, files, stored_at \
         FROM local_deliveries ORDER BY session",
        [],
        |row| {
            let id: Vec<u8> = row.get("session")?;
            let id: [u8; 16] = id
                .try_into()
                .map_err(|_| StoreError::corrupt("session", "not 16 bytes"))?;
            let as_source: i64 = row.get("as_source")?;
            let files: Vec<u8> = row.get("files")?;
            let files = minicbor::decode(&files)
                .map_err(|_| StoreError::corrupt("files", "not a list of [path, size]"))?;
            Ok(crate::LocalDelivery {
                session: cpns_wire::DeliveryId::from_bytes(id),
                as_source: as_source == 1,
                sealed_key: row.get("sealed_key")?,
                description: row.get("description")?,
                files,
                stored_at: row.get("stored_at")?,
            })
        },
    )
}
