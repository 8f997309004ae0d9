//! Delivery records (table `delivery_records`; 004 §5.5.8): one row per session, target and
//! item, opened when the server sets the session up and closed when the target ends it. And a PN
//! GW's routes (`local_delivery_routes`): the sessions it relays.

use cpns_wire::{DeliveryId, EntityId, UserId};
use rusqlite::{Connection, Row, params};

use super::codec;
use crate::{DeliveryRecord, Result, StoreError, UnixMillis};

fn to_i64(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::conflict(format!("{what} {n} is too large")))
}

fn to_u64(row: &Row<'_>, column: &str) -> Result<u64> {
    let n: i64 = row.get(column)?;
    u64::try_from(n).map_err(|_| StoreError::corrupt(column, "negative"))
}

fn session_of(row: &Row<'_>) -> Result<DeliveryId> {
    let b: Vec<u8> = row.get("session")?;
    let arr: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::corrupt("session", "not 16 bytes"))?;
    Ok(DeliveryId::from_bytes(arr))
}

/// Opens a session's records, every target's, in the caller's transaction.
pub(super) fn open(conn: &Connection, records: &[DeliveryRecord]) -> Result<()> {
    for r in records {
        codec::exec(
            conn,
            "INSERT INTO delivery_records (session, target, item, service_id, source, pn_id, \
             charged, name, size, started_at, per_mb) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                r.session.as_bytes().as_slice(),
                r.target.as_str(),
                r.item,
                r.service_id,
                r.source.as_str(),
                r.pn_id.as_bytes().as_slice(),
                r.charged.as_str(),
                r.name,
                to_i64(r.size, "size")?,
                r.started_at,
                r.per_mb.map(|p| to_i64(p, "tariff")).transpose()?,
            ],
        )?;
    }
    Ok(())
}

/// Ends every record still open that started before `started_before`: `failed` at
/// `ended_at`, its bytes as they were (its target reported none). How many.
pub(super) fn expire(
    conn: &Connection,
    started_before: UnixMillis,
    ended_at: UnixMillis,
) -> Result<u64> {
    let n = conn.execute(
        "UPDATE delivery_records SET result = ?, ended_at = ? \
         WHERE ended_at IS NULL AND started_at < ?",
        params![i64::from(FAILED), ended_at, started_before],
    )?;
    Ok(n as u64)
}

/// Ends a target's open records of a session, one per item: item `i` ended `results[i]` (one
/// result: every item's), with the bytes of it among the `bytes` the target received from the
/// session's start (items follow one another, in order). Each item that ended delivered and is
/// chargeable is charged; false if the target has no open record.
pub(super) fn close(
    conn: &Connection,
    session: &DeliveryId,
    target: &EntityId,
    bytes: u64,
    results: &[u32],
    ended_at: UnixMillis,
) -> Result<bool> {
    let Some(&last) = results.last() else {
        return Err(StoreError::conflict("a delivery's end names how it ended"));
    };
    let items = codec::all(
        conn,
        "SELECT item, size FROM delivery_records \
         WHERE session = ? AND target = ? AND ended_at IS NULL ORDER BY item",
        params![session.as_bytes().as_slice(), target.as_str()],
        |row| {
            let item: i64 = row.get("item")?;
            let item = u32::try_from(item).map_err(|_| StoreError::corrupt("item", "range"))?;
            Ok((item, to_u64(row, "size")?))
        },
    )?;
    if items.is_empty() {
        return Ok(false);
    }
    // Delivered or not kept for its hash is each item's own, once every byte was checked.
    if items.len() > 1 && results.len() == 1 && matches!(last, DELIVERED | HASH_MISMATCH) {
        let why = format!(
            "a session of {} items that was checked names each item's result",
            items.len()
        );
        return Err(StoreError::conflict(why));
    }
    if results.len() > 1 && results.len() != items.len() {
        let why = format!(
            "{} results for a session of {} items",
            results.len(),
            items.len()
        );
        return Err(StoreError::conflict(why));
    }
    let mut offset = 0u64;
    for (i, (item, size)) in items.into_iter().enumerate() {
        let result = results.get(i).copied().unwrap_or(last);
        let got = bytes.saturating_sub(offset).min(size);
        offset = offset.saturating_add(size);
        codec::exec(
            conn,
            "UPDATE delivery_records SET bytes = ?, result = ?, ended_at = ? \
             WHERE session = ? AND target = ? AND item = ?",
            params![
                to_i64(got, "bytes")?,
                i64::from(result),
                ended_at,
                session.as_bytes().as_slice(),
                target.as_str(),
                item,
            ],
        )?;
        if result == DELIVERED {
            charge(conn, session, target, item, ended_at)?;
        }
    }
    Ok(true)
}

/// `cpns_wire::DeliveryResult::Delivered`'s code.
const DELIVERED: u32 = 1;
/// `cpns_wire::DeliveryResult::HashMismatch`'s code.
const HASH_MISMATCH: u32 = 3;
/// `cpns_wire::DeliveryResult::Failed`'s code.
const FAILED: u32 = 4;

/// The charging record of an item of a target's part that ended delivered, if it is
/// chargeable: to the user charged, naming the PN's owner when that is another user, for the
/// item's whole size.
fn charge(
    conn: &Connection,
    session: &DeliveryId,
    target: &EntityId,
    item: u32,
    ended_at: UnixMillis,
) -> Result<()> {
    let found = codec::optional(
        conn,
        "SELECT d.charged, d.pn_id, d.service_id, d.started_at, d.per_mb, d.size, p.owner \
         FROM delivery_records d LEFT JOIN pns p ON p.pn_id = d.pn_id \
         WHERE d.session = ? AND d.target = ? AND d.item = ?",
        params![session.as_bytes().as_slice(), target.as_str(), item],
        |row| {
            let per_mb: Option<i64> = row.get("per_mb")?;
            let charged: String = row.get("charged")?;
            let owner: Option<String> = row.get("owner")?;
            let pn: Vec<u8> = row.get("pn_id")?;
            let service: String = row.get("service_id")?;
            let started_at: i64 = row.get("started_at")?;
            let size = to_u64(row, "size")?;
            Ok((per_mb, charged, owner, pn, service, started_at, size))
        },
    )?;
    let Some((Some(per_mb), charged, owner, pn, service, started_at, size)) = found else {
        return Ok(());
    };
    // Delivered is every byte, its hash checked: what is charged is the item's size, not what
    // the charged device says it received.
    let bytes = size;
    let per_mb = u64::try_from(per_mb).map_err(|_| StoreError::corrupt("per_mb", "negative"))?;
    let pn_owner = owner.filter(|o| *o != charged);
    codec::exec(
        conn,
        "INSERT INTO charging_records (user, entity_id, pn_id, pn_owner, service, start_s, \
         end_s, bytes, units, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            charged,
            target.as_str(),
            pn,
            pn_owner,
            service,
            started_at.div_euclid(1000),
            ended_at.div_euclid(1000),
            to_i64(bytes, "bytes")?,
            to_i64(cpns_wire::charge_units(per_mb, bytes), "units")?,
            ended_at,
        ],
    )?;
    Ok(())
}

/// Records of a session, of a user charged, or all: oldest first.
pub(super) fn list(
    conn: &Connection,
    session: Option<&DeliveryId>,
    charged: Option<&UserId>,
) -> Result<Vec<DeliveryRecord>> {
    codec::all(
        conn,
        "SELECT session, target, item, service_id, source, pn_id, charged, name, size, bytes, \
         started_at, ended_at, result, per_mb FROM delivery_records \
         WHERE (?1 IS NULL OR session = ?1) AND (?2 IS NULL OR charged = ?2) \
         ORDER BY started_at, session, target, item",
        params![
            session.map(|s| s.as_bytes().to_vec()),
            charged.map(UserId::as_str)
        ],
        |row| {
            let result: Option<i64> = row.get("result")?;
            Ok(DeliveryRecord {
                session: session_of(row)?,
                target: codec::id(row, "target")?,
                item: {
                    let item: i64 = row.get("item")?;
                    u32::try_from(item).map_err(|_| StoreError::corrupt("item", "range"))?
                },
                service_id: row.get("service_id")?,
                source: codec::id(row, "source")?,
                pn_id: codec::pn_id(row, "pn_id")?,
                charged: codec::id(row, "charged")?,
                name: row.get("name")?,
                size: to_u64(row, "size")?,
                bytes: to_u64(row, "bytes")?,
                started_at: row.get("started_at")?,
                ended_at: row.get("ended_at")?,
                result: result
                    .map(|r| u32::try_from(r).map_err(|_| StoreError::corrupt("result", "range")))
                    .transpose()?,
                per_mb: {
                    let p: Option<i64> = row.get("per_mb")?;
                    p.map(|p| {
                        u64::try_from(p).map_err(|_| StoreError::corrupt("per_mb", "negative"))
                    })
                    .transpose()?
                },
            })
        },
    )
}

/// Keeps a PN GW's route, replacing the one of the same session.
pub(super) fn save_route(conn: &Connection, r: &cpns_wire::DeliveryRoute) -> Result<()> {
    let targets: Vec<&str> = r.targets.iter().map(EntityId::as_str).collect();
    codec::exec(
        conn,
        "INSERT INTO local_delivery_routes (session, pn_id, source, targets, size, chunk, to_pn) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (session) DO UPDATE SET pn_id = excluded.pn_id, source = excluded.source, \
         targets = excluded.targets, size = excluded.size, chunk = excluded.chunk, \
         to_pn = excluded.to_pn",
        params![
            r.session.as_bytes().as_slice(),
            r.pn_id.as_bytes().as_slice(),
            r.source.as_str(),
            targets.join(" "),
            to_i64(r.size, "size")?,
            i64::from(r.chunk),
            r.to_pn.as_ref().map(|p| p.as_bytes().to_vec()),
        ],
    )?;
    Ok(())
}

/// Removes a route; true if it was kept.
pub(super) fn remove_route(conn: &Connection, session: &DeliveryId) -> Result<bool> {
    let n = codec::exec(
        conn,
        "DELETE FROM local_delivery_routes WHERE session = ?",
        params![session.as_bytes().as_slice()],
    )?;
    Ok(n > 0)
}

/// Every route kept, by session.
pub(super) fn routes(conn: &Connection) -> Result<Vec<cpns_wire::DeliveryRoute>> {
    codec::all(
        conn,
        "SELECT session, pn_id, source, targets, size, chunk, to_pn FROM local_delivery_routes \
         ORDER BY session",
        [],
        |row| {
            let targets: String = row.get("targets")?;
            let chunk: i64 = row.get("chunk")?;
            Ok(cpns_wire::DeliveryRoute {
                session: session_of(row)?,
                pn_id: codec::pn_id(row, "pn_id")?,
                source: codec::id(row, "source")?,
                targets: targets
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        t.parse()
                            .map_err(|_| StoreError::corrupt("targets", "not an entity id"))
                    })
                    .collect::<Result<_>>()?,
                size: to_u64(row, "size")?,
                chunk: u32::try_from(chunk).map_err(|_| StoreError::corrupt("chunk", "range"))?,
                // A route from or to the server ends with the WAN session: none is kept.
                from_server: false,
                to_server: false,
                to_pn: {
                    let to: Option<Vec<u8>> = row.get("to_pn")?;
                    match to {
                        None => None,
                        Some(_) => Some(codec::pn_id(row, "to_pn")?),
                    }
                },
            })
        },
    )
}
