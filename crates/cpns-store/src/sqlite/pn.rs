//! The server's PN inventory of record (tables `pns`, `pn_members`; 000 §6.6.1.1 step 11,
//! 000 §6.6.2, 003 §1.4.1 step 3, 003 §1.4.2 step 4).
//!
//! The writes run on the writer thread, each inside its own savepoint of the batch's
//! transaction (see `writer`): a write that fails part-way leaves nothing behind. Lists of PNs
//! take two queries whatever their length — the PN rows, then all their members, grouped in
//! memory — inside one read transaction.
//!
//! A PN's row is keyed by `seq`, its place in creation order, and its members by (`pn_seq`,
//! PNE id), so a new PN and its members are appended to their tables; the random PN id is
//! looked up through its own index (schema 5, ARCHITECTURE decision 24).

use std::collections::HashMap;

use cpns_wire::{CpnsId, EntityId, PnId, UserId};
use rusqlite::{Connection, Row, params};

use super::{codec, entity};
use crate::{
    Departed, Departure, GroupEpoch, PnMember, PnRecord, PnState, Reconciled, Result, StoreError,
};

/// The columns of a PN row.
const PN_COLUMNS: &str =
    "pn_id, gateway, owner, state, created_at, epoch, sealed_group_key, expires_at, max_members";

/// A member's capabilities of record (004 §5.5.1, §5.5.10): those its device last reported
/// (the entity's row, as `cpns_store::ServerStore::record_report` keeps them), else those it
/// joined the PN with. Selected from `pn_members AS m LEFT JOIN entities AS e`.
const CAPABILITIES: &str = "COALESCE(e.capabilities, m.capabilities) AS capabilities";

fn decode_pn(row: &Row<'_>) -> Result<PnRecord> {
    Ok(PnRecord {
        pn_id: codec::pn_id(row, "pn_id")?,
        gateway: codec::id(row, "gateway")?,
        owner: codec::id(row, "owner")?,
        state: codec::name(row, "state", PnState::parse)?,
        created_at: row.get("created_at")?,
        members: Vec::new(),
        group: codec::group(row)?,
        expires_at: row.get("expires_at")?,
        max_members: row.get("max_members")?,
    })
}

fn decode_member(row: &Row<'_>) -> Result<PnMember> {
    Ok(PnMember {
        pne_id: codec::id(row, "pne_id")?,
        initiator: row.get("initiator")?,
        authenticated: row.get("authenticated")?,
        capabilities: codec::capabilities(row, "capabilities")?,
        contents: codec::contents(row, "contents")?,
        sealed_session_key: row.get("sealed_session_key")?,
        joined_at: row.get("joined_at")?,
        owner: codec::opt_id(row, "owner")?,
    })
}

/// Registers `pn` with its members (000 §6.6.1.1 step 11). A retry by the same gateway
/// replaces owner, state and members and keeps `created_at` and the place in creation order.
pub(super) fn register_pn(conn: &Connection, pn: &PnRecord) -> Result<()> {
    let id = pn.pn_id.as_bytes().as_slice();
    let known: Option<(i64, String)> = codec::optional(
        conn,
        "SELECT seq, gateway FROM pns WHERE pn_id = ?",
        [id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let seq = match known {
        Some((_, gw)) if gw != pn.gateway.as_str() => {
            return Err(StoreError::conflict(format!(
                "PN {} is registered by gateway {gw}, not {}",
                pn.pn_id, pn.gateway
            )));
        }
        Some((seq, _)) => {
            codec::exec(
                conn,
                "UPDATE pns SET owner = ?, state = ?, epoch = ?, sealed_group_key = ?, \
                 expires_at = ?, max_members = ? WHERE seq = ?",
                params![
                    pn.owner.as_str(),
                    pn.state.as_str(),
                    codec::epoch_of(pn.group.as_ref())?,
                    pn.group.as_ref().map(|g| &g.sealed_key),
                    pn.expires_at,
                    pn.max_members,
                    seq
                ],
            )?;
            codec::exec(conn, "DELETE FROM pn_members WHERE pn_seq = ?", [seq])?;
            seq
        }
        None => {
            // `seq` is the rowid: one past the largest, so after every PN there is.
            codec::exec(
                conn,
                "INSERT INTO pns (pn_id, gateway, owner, state, created_at, epoch, \
                 sealed_group_key, expires_at, max_members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    id,
                    pn.gateway.as_str(),
                    pn.owner.as_str(),
                    pn.state.as_str(),
                    pn.created_at,
                    codec::epoch_of(pn.group.as_ref())?,
                    pn.group.as_ref().map(|g| &g.sealed_key),
                    pn.expires_at,
                    pn.max_members,
                ],
            )?;
            conn.last_insert_rowid()
        }
    };
    for (position, m) in (0_i64..).zip(&pn.members) {
        codec::exec(
            conn,
            "INSERT INTO pn_members (pn_seq, pne_id, position, initiator, authenticated, \
             capabilities, sealed_session_key, joined_at, contents, owner) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                seq,
                m.pne_id.as_str(),
                position,
                m.initiator,
                m.authenticated,
                codec::capabilities_blob(m.capabilities.as_ref()),
                m.sealed_session_key,
                m.joined_at,
                codec::contents_blob(&m.contents),
                m.owner.as_ref().map(|o| o.as_str()),
            ],
        )?;
    }
    Ok(())
}

/// Adds `m` to PN `pn` after its current members, or updates the member in place as
/// [`ServerStore::upsert_member`](crate::ServerStore::upsert_member) says (never a downgrade).
pub(super) fn upsert_member(conn: &Connection, pn: &PnId, m: &PnMember) -> Result<()> {
    let seq = require_pn(conn, pn)?;
    upsert_member_in(conn, seq, m)
}

/// Removes the members `remove` (absent ones ignored), then upserts each of `add` as
/// [`upsert_member`] does (000 §6.6.2, 003 §1.4.2 step 4), and moves the PN to `group`'s epoch
/// if given.
pub(super) fn update_members(
    conn: &Connection,
    pn: &PnId,
    add: &[PnMember],
    remove: &[EntityId],
    group: Option<&GroupEpoch>,
) -> Result<()> {
    let seq = require_pn(conn, pn)?;
    if let Some(g) = group {
        set_group(conn, seq, g)?;
    }
    if !remove.is_empty() {
        let removed = codec::json_string_array(remove.iter().map(EntityId::as_str));
        depart(conn, seq, Some(&removed), Departure::Removed)?;
        codec::exec(
            conn,
            "DELETE FROM pn_members WHERE pn_seq = ? \
             AND pne_id IN (SELECT value FROM json_each(?))",
            params![seq, removed],
        )?;
    }
    for m in add {
        upsert_member_in(conn, seq, m)?;
    }
    Ok(())
}

/// Registers PNE `m.pne_id` in PN `pn` (003 §1.4.1 step 3): allocates its CPNS ID as
/// [`entity::allocate_cpns_id`] does and upserts `m` as [`upsert_member`] does, in one write,
/// so the CPNS ID and the member's session key land together or not at all.
pub(super) fn register_pne(
    conn: &Connection,
    pn: &PnId,
    m: &PnMember,
    group: Option<&GroupEpoch>,
) -> Result<CpnsId> {
    let seq = require_pn(conn, pn)?;
    let cpns_id = entity::allocate_cpns_id(conn, &m.pne_id)?;
    upsert_member_in(conn, seq, m)?;
    if let Some(g) = group {
        set_group(conn, seq, g)?;
    }
    Ok(cpns_id)
}

/// Moves the PN whose `seq` is `pn_seq` to group key epoch `g`.
fn set_group(conn: &Connection, pn_seq: i64, g: &GroupEpoch) -> Result<()> {
    codec::exec(
        conn,
        "UPDATE pns SET epoch = ?, sealed_group_key = ? WHERE seq = ?",
        params![codec::epoch_of(Some(g))?, g.sealed_key, pn_seq],
    )?;
    Ok(())
}

/// The `seq` of PN `pn`; [`StoreError::NotFound`] unless it exists.
fn require_pn(conn: &Connection, pn: &PnId) -> Result<i64> {
    codec::optional(
        conn,
        "SELECT seq FROM pns WHERE pn_id = ?",
        [pn.as_bytes().as_slice()],
        |row| Ok(row.get(0)?),
    )?
    .ok_or_else(|| StoreError::not_found(format!("PN {pn}")))
}

/// The upsert of [`upsert_member`] into the PN whose `seq` is `pn_seq`.
fn upsert_member_in(conn: &Connection, pn_seq: i64, m: &PnMember) -> Result<()> {
    // A PNE back in the PN is no longer one that left it.
    codec::exec(
        conn,
        "DELETE FROM departed WHERE pne_id = ? \
         AND pn_id = (SELECT pn_id FROM pns WHERE seq = ?)",
        params![m.pne_id.as_str(), pn_seq],
    )?;
    codec::exec(
        conn,
        "INSERT INTO pn_members (pn_seq, pne_id, position, initiator, authenticated, \
         capabilities, sealed_session_key, joined_at, contents, owner) \
         VALUES (?1, ?2, (SELECT COALESCE(MAX(position), -1) + 1 FROM pn_members \
         WHERE pn_seq = ?1), ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (pn_seq, pne_id) DO UPDATE SET \
         initiator = MAX(pn_members.initiator, excluded.initiator), \
         authenticated = MAX(pn_members.authenticated, excluded.authenticated), \
         capabilities = COALESCE(excluded.capabilities, pn_members.capabilities), \
         contents = COALESCE(excluded.contents, pn_members.contents), \
         sealed_session_key = COALESCE(excluded.sealed_session_key, pn_members.sealed_session_key), \
         secure_top = CASE WHEN excluded.sealed_session_key IS NULL \
         THEN pn_members.secure_top ELSE 0 END, \
         secure_seen = CASE WHEN excluded.sealed_session_key IS NULL \
         THEN pn_members.secure_seen ELSE 0 END, \
         owner = COALESCE(excluded.owner, pn_members.owner)",
        params![
            pn_seq,
            m.pne_id.as_str(),
            m.initiator,
            m.authenticated,
            codec::capabilities_blob(m.capabilities.as_ref()),
            m.sealed_session_key,
            m.joined_at,
            codec::contents_blob(&m.contents),
            m.owner.as_ref().map(|o| o.as_str()),
        ],
    )?;
    Ok(())
}

/// Keeps, for the members of PN `seq` named in the JSON array `only` (all without it) that hold
/// an SK_PNE, that their membership ended and why (docs/pn-lifecycle.md).
fn depart(conn: &Connection, seq: i64, only: Option<&str>, why: Departure) -> Result<()> {
    codec::exec(
        conn,
        "INSERT OR REPLACE INTO departed \
         (pn_id, pne_id, sealed_session_key, reason, departed_at) \
         SELECT p.pn_id, m.pne_id, m.sealed_session_key, ?, \
         CAST(unixepoch('subsec') * 1000 AS INTEGER) \
         FROM pn_members AS m JOIN pns AS p ON p.seq = m.pn_seq \
         WHERE m.pn_seq = ? AND m.sealed_session_key IS NOT NULL \
         AND (? IS NULL OR m.pne_id IN (SELECT value FROM json_each(?)))",
        params![why.as_str(), seq, only, only],
    )?;
    Ok(())
}

/// The ended membership of `pne` in `pn`, if kept; run inside a read transaction.
pub(super) fn departed(conn: &Connection, pn: &PnId, pne: &EntityId) -> Result<Option<Departed>> {
    codec::optional(
        conn,
        "SELECT sealed_session_key, reason FROM departed WHERE pn_id = ? AND pne_id = ?",
        params![pn.as_bytes().as_slice(), pne.as_str()],
        |row| {
            Ok(Departed {
                sealed_session_key: row.get("sealed_session_key")?,
                why: codec::name(row, "reason", Departure::parse)?,
            })
        },
    )
}

/// Deletes the PN whose `seq` is `seq`, and its members.
fn delete_pn(conn: &Connection, seq: i64) -> Result<()> {
    codec::exec(conn, "DELETE FROM pn_members WHERE pn_seq = ?", [seq])?;
    codec::exec(conn, "DELETE FROM pns WHERE seq = ?", [seq])?;
    Ok(())
}

/// The PN list a PN GW reports decides which of its PNs exist (002 §B.1.1.2 step 17).
pub(super) fn reconcile_gateway_pns(
    conn: &Connection,
    gw: &EntityId,
    listed: &[PnId],
    drop_unlisted_pending: bool,
) -> Result<Reconciled> {
    let rows = codec::all(
        conn,
        "SELECT seq, pn_id, state FROM pns WHERE gateway = ? ORDER BY seq",
        [gw.as_str()],
        |row| {
            Ok((
                row.get::<_, i64>("seq")?,
                codec::pn_id(row, "pn_id")?,
                codec::name(row, "state", PnState::parse)?,
            ))
        },
    )?;
    let mut done = Reconciled::default();
    for &(seq, id, state) in &rows {
        match (listed.contains(&id), state) {
            (true, PnState::Pending) => {
                codec::exec(
                    conn,
                    "UPDATE pns SET state = ? WHERE seq = ?",
                    params![PnState::Active.as_str(), seq],
                )?;
                done.confirmed.push(id);
            }
            (false, PnState::Active) | (false, PnState::Pending) => {
                if state == PnState::Pending && !drop_unlisted_pending {
                    continue;
                }
                delete_pn(conn, seq)?;
                done.removed.push(id);
            }
            _ => {}
        }
    }
    done.unknown = listed
        .iter()
        .filter(|p| !rows.iter().any(|(_, known, _)| known == *p))
        .copied()
        .collect();
    Ok(done)
}

/// Listed pending PNs of `gw` become active, one update through the PN id index each.
pub(super) fn confirm_pns(conn: &Connection, gw: &EntityId, pns: &[PnId]) -> Result<Vec<PnId>> {
    let mut confirmed = Vec::new();
    for pn in pns {
        let changed = codec::exec(
            conn,
            "UPDATE pns SET state = ?1 WHERE pn_id = ?2 AND gateway = ?3 AND state = ?4",
            params![
                PnState::Active.as_str(),
                pn.as_bytes().as_slice(),
                gw.as_str(),
                PnState::Pending.as_str()
            ],
        )?;
        if changed > 0 && !confirmed.contains(pn) {
            confirmed.push(*pn);
        }
    }
    Ok(confirmed)
}

/// Removes a PN still pending confirmation; true if it was there and pending.
pub(super) fn remove_pending_pn(conn: &Connection, pn: &PnId) -> Result<bool> {
    let known: Option<(i64, String)> = codec::optional(
        conn,
        "SELECT seq, state FROM pns WHERE pn_id = ?",
        [pn.as_bytes().as_slice()],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    match known {
        Some((seq, state)) if state == PnState::Pending.as_str() => {
            delete_pn(conn, seq)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Releases PN `pn` of `gw` with its members (000 §6.6.5 step 2); see
/// [`ServerStore::release_pn`](crate::ServerStore::release_pn).
pub(super) fn release_pn(conn: &Connection, gw: &EntityId, pn: &PnId) -> Result<bool> {
    let known: Option<(i64, String)> = codec::optional(
        conn,
        "SELECT seq, gateway FROM pns WHERE pn_id = ?",
        [pn.as_bytes().as_slice()],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    match known {
        None => Ok(false),
        Some((_, owner)) if owner != gw.as_str() => Err(StoreError::conflict(format!(
            "PN {pn} is registered by gateway {owner}, not {gw}"
        ))),
        Some((seq, _)) => {
            depart(conn, seq, None, Departure::Released)?;
            delete_pn(conn, seq)?;
            Ok(true)
        }
    }
}

/// One PN with its members in the order they were added; run inside a read transaction.
pub(super) fn pn(conn: &Connection, id: &PnId) -> Result<Option<PnRecord>> {
    let Some((seq, mut record)) = codec::optional(
        conn,
        &format!("SELECT seq, {PN_COLUMNS} FROM pns WHERE pn_id = ?"),
        [id.as_bytes().as_slice()],
        |row| Ok((row.get::<_, i64>("seq")?, decode_pn(row)?)),
    )?
    else {
        return Ok(None);
    };
    record.members = codec::all(
        conn,
        &format!(
            "SELECT m.pne_id, m.initiator, m.authenticated, {CAPABILITIES}, \
             m.sealed_session_key, m.joined_at, m.contents, m.owner FROM pn_members AS m \
             LEFT JOIN entities AS e ON e.id = m.pne_id WHERE m.pn_seq = ? ORDER BY m.position"
        ),
        [seq],
        decode_member,
    )?;
    Ok(Some(record))
}

/// The PNs served by `gw`, in creation order; run inside a read transaction.
pub(super) fn pns_of_gateway(conn: &Connection, gw: &EntityId) -> Result<Vec<PnRecord>> {
    pns_where(conn, Column::Gateway, gw.as_str())
}

/// The PNs of `owner`, in creation order; run inside a read transaction.
pub(super) fn pns_of_owner(conn: &Connection, owner: &UserId) -> Result<Vec<PnRecord>> {
    pns_where(conn, Column::Owner, owner.as_str())
}

/// A column of `pns` PNs are selected by.
#[derive(Clone, Copy)]
enum Column {
    Gateway,
    Owner,
}

/// The PNs whose `column` is `value`, with their members, in creation order.
fn pns_where(conn: &Connection, column: Column, value: &str) -> Result<Vec<PnRecord>> {
    let column = match column {
        Column::Gateway => "gateway",
        Column::Owner => "owner",
    };
    let pns = codec::all(
        conn,
        &format!("SELECT {PN_COLUMNS} FROM pns WHERE {column} = ? ORDER BY seq"),
        [value],
        decode_pn,
    )?;
    let members = codec::members_by_pn(
        conn,
        &format!(
            "SELECT p.pn_id, m.pne_id, m.initiator, m.authenticated, {CAPABILITIES}, \
             m.sealed_session_key, m.joined_at, m.contents, m.owner FROM pns AS p \
             JOIN pn_members AS m ON m.pn_seq = p.seq \
             LEFT JOIN entities AS e ON e.id = m.pne_id WHERE p.{column} = ? \
             ORDER BY m.pn_seq, m.position"
        ),
        [value],
        decode_member,
    )?;
    Ok(join(pns, members))
}

/// Every PN, in creation order; run inside a read transaction.
pub(super) fn all_pns(conn: &Connection) -> Result<Vec<PnRecord>> {
    let pns = codec::all(
        conn,
        &format!("SELECT {PN_COLUMNS} FROM pns ORDER BY seq"),
        [],
        decode_pn,
    )?;
    let members = codec::members_by_pn(
        conn,
        &format!(
            "SELECT p.pn_id, m.pne_id, m.initiator, m.authenticated, {CAPABILITIES}, \
             m.sealed_session_key, m.joined_at, m.contents, m.owner FROM pn_members AS m \
             JOIN pns AS p ON p.seq = m.pn_seq LEFT JOIN entities AS e ON e.id = m.pne_id \
             ORDER BY m.pn_seq, m.position"
        ),
        [],
        decode_member,
    )?;
    Ok(join(pns, members))
}

/// Gives each PN its members (ordered by position within each PN).
fn join(mut pns: Vec<PnRecord>, mut members: HashMap<PnId, Vec<PnMember>>) -> Vec<PnRecord> {
    for record in &mut pns {
        record.members = members.remove(&record.pn_id).unwrap_or_default();
    }
    pns
}

/// The replay window of a member's secure session, `(0, 0)` if none.
pub(super) fn secure_window(conn: &Connection, pn: &PnId, pne: &EntityId) -> Result<(u64, u64)> {
    let window = codec::optional(
        conn,
        "SELECT m.secure_top, m.secure_seen FROM pn_members AS m \
         JOIN pns AS p ON p.seq = m.pn_seq WHERE p.pn_id = ? AND m.pne_id = ?",
        params![pn.as_bytes().as_slice(), pne.as_str()],
        |row| {
            Ok((
                row.get::<_, i64>("secure_top")?.cast_unsigned(),
                row.get::<_, i64>("secure_seen")?.cast_unsigned(),
            ))
        },
    )?;
    Ok(window.unwrap_or((0, 0)))
}

/// Keeps a member's secure session window; `NotFound` for no such member.
pub(super) fn set_secure_window(
    conn: &Connection,
    pn: &PnId,
    pne: &EntityId,
    (top, seen): (u64, u64),
) -> Result<()> {
    let changed = codec::exec(
        conn,
        "UPDATE pn_members SET secure_top = ?, secure_seen = ? \
         WHERE pne_id = ? AND pn_seq = (SELECT seq FROM pns WHERE pn_id = ?)",
        params![
            top.cast_signed(),
            seen.cast_signed(),
            pne.as_str(),
            pn.as_bytes().as_slice()
        ],
    )?;
    if changed == 0 {
        return Err(crate::StoreError::not_found(format!(
            "{pne} as a member of PN {pn}"
        )));
    }
    Ok(())
}
