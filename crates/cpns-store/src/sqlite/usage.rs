//! Usage statistics and charging records (tables `usage_records`, `charging_records` on the
//! server; `local_usage`, `usage_prefs` on a PNE; 004 §5.5.4, docs/device-status.md).

use cpns_wire::{Audience, ChargingRecord, Preference, Status, UsageRecord, UserId};
use rusqlite::{Connection, Row, params};

use super::codec;
use crate::{LocalUsage, Result, StoreError, UsageRow, UsageStored, UsageSummary};

/// A stored u64 (SQLite integers are i64): values above `i64::MAX` are refused, not wrapped.
fn int(what: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::conflict(format!("{what} {v} is too large")))
}

fn uint(row: &Row<'_>, column: &str) -> Result<u64> {
    let v: i64 = row.get(column)?;
    u64::try_from(v).map_err(|_| StoreError::corrupt(column, format!("holds {v}")))
}

fn opt_small<T: TryFrom<i64>>(row: &Row<'_>, column: &str) -> Result<Option<T>> {
    let v: Option<i64> = row.get(column)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::corrupt(column, format!("holds {v}"))))
        .transpose()
}

fn networks_text(networks: &[String]) -> String {
    codec::json_string_array(networks.iter().map(String::as_str))
}

fn networks_of(row: &Row<'_>) -> Result<Vec<String>> {
    let text: String = row.get("networks")?;
    parse_string_array(&text).ok_or_else(|| StoreError::corrupt("networks", format!("{text:?}")))
}

/// Reads back what [`codec::json_string_array`] wrote (strings without escapes other than
/// `\"` and `\\`; network names are short plain words).
fn parse_string_array(text: &str) -> Option<Vec<String>> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        if chars.next()? != '"' {
            return None;
        }
        let mut s = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => s.push(chars.next()?),
                c => s.push(c),
            }
        }
        out.push(s);
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(_) => return None,
        }
    }
    Some(out)
}

/// Stores each new record, with its charging record when it has units; a record already
/// stored for its entity and id is counted as a duplicate and charges nothing again.
pub(super) fn store_usage(conn: &Connection, rows: &[UsageRow]) -> Result<UsageStored> {
    let mut done = UsageStored::default();
    for u in rows {
        let r = &u.record;
        let pn = u.pn_id.map(|p| p.as_bytes().to_vec());
        let inserted = codec::exec(
            conn,
            "INSERT INTO usage_records (entity_id, record_id, owner, pn_id, service, start_s, \
             end_s, bytes, audience, status, battery_start, battery_end, networks, received_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (entity_id, record_id) DO NOTHING",
            params![
                u.entity.as_str(),
                int("record id", r.id)?,
                u.owner.as_str(),
                pn,
                r.service,
                int("start", r.start_s)?,
                int("end", r.end_s)?,
                int("bytes", r.bytes)?,
                r.audience.code(),
                r.status.map(Status::code),
                r.battery_start,
                r.battery_end,
                networks_text(&r.networks),
                u.received_at
            ],
        )?;
        if inserted == 0 {
            done.duplicates += 1;
            continue;
        }
        done.stored += 1;
        let Some(units) = u.units else { continue };
        codec::exec(
            conn,
            "INSERT INTO charging_records (user, entity_id, pn_id, pn_owner, service, start_s, \
             end_s, bytes, units, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                u.owner.as_str(),
                u.entity.as_str(),
                pn,
                u.pn_owner.as_ref().map(UserId::as_str),
                r.service,
                int("start", r.start_s)?,
                int("end", r.end_s)?,
                int("bytes", r.bytes)?,
                int("units", units)?,
                u.received_at
            ],
        )?;
        done.charged += 1;
    }
    Ok(done)
}

fn decode_summary(row: &Row<'_>) -> Result<UsageSummary> {
    Ok(UsageSummary {
        user: codec::opt_id(row, "user")?,
        service: row.get("service")?,
        uses: uint(row, "uses")?,
        seconds: uint(row, "seconds")?,
        bytes: uint(row, "bytes")?,
    })
}

/// Usage per user and service, of one user or of all; with `shared_only`, only records whose
/// audience allows external applications.
pub(super) fn usage_summary(
    conn: &Connection,
    user: Option<&UserId>,
    shared_only: bool,
) -> Result<Vec<UsageSummary>> {
    codec::all(
        conn,
        "SELECT owner AS user, service, COUNT(*) AS uses, SUM(end_s - start_s) AS seconds, \
         SUM(bytes) AS bytes FROM usage_records \
         WHERE (?1 IS NULL OR owner = ?1) AND audience >= ?2 \
         GROUP BY owner, service ORDER BY owner, service",
        params![
            user.map(UserId::as_str),
            if shared_only {
                Audience::Shared.code()
            } else {
                0
            }
        ],
        decode_summary,
    )
}

/// The charging records of `user`, of uses that started at or after `since_s`, oldest first.
pub(super) fn charging_records(
    conn: &Connection,
    user: &UserId,
    since_s: u64,
) -> Result<Vec<ChargingRecord>> {
    codec::all(
        conn,
        "SELECT user, entity_id, pn_id, pn_owner, service, start_s, end_s, bytes, units \
         FROM charging_records WHERE user = ? AND start_s >= ? ORDER BY start_s, seq",
        params![user.as_str(), int("since", since_s)?],
        |row| {
            let pn: Option<Vec<u8>> = row.get("pn_id")?;
            Ok(ChargingRecord {
                user: codec::id(row, "user")?,
                entity: codec::id(row, "entity_id")?,
                pn_id: match pn {
                    None => None,
                    Some(_) => Some(codec::pn_id(row, "pn_id")?),
                },
                pn_owner: codec::opt_id(row, "pn_owner")?,
                service: row.get("service")?,
                start_s: uint(row, "start_s")?,
                end_s: uint(row, "end_s")?,
                bytes: uint(row, "bytes")?,
                units: uint(row, "units")?,
            })
        },
    )
}

/// Keeps a record the PNE collected, not yet sent; a record id kept already is a
/// [`StoreError::Conflict`].
pub(super) fn save_local_usage(conn: &Connection, r: &UsageRecord) -> Result<()> {
    let taken = codec::optional(
        conn,
        "SELECT 1 FROM local_usage WHERE record_id = ?",
        [int("record id", r.id)?],
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(StoreError::conflict(format!(
            "usage record {} exists",
            r.id
        )));
    }
    codec::exec(
        conn,
        "INSERT INTO local_usage (record_id, service, start_s, end_s, bytes, status, \
         battery_start, battery_end, networks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            int("record id", r.id)?,
            r.service,
            int("start", r.start_s)?,
            int("end", r.end_s)?,
            int("bytes", r.bytes)?,
            r.status.map(Status::code),
            r.battery_start,
            r.battery_end,
            networks_text(&r.networks)
        ],
    )?;
    Ok(())
}

fn decode_local(row: &Row<'_>) -> Result<LocalUsage> {
    let status: Option<u32> = opt_small(row, "status")?;
    let sent: i64 = row.get("sent")?;
    Ok(LocalUsage {
        record: UsageRecord {
            id: uint(row, "record_id")?,
            service: row.get("service")?,
            start_s: uint(row, "start_s")?,
            end_s: uint(row, "end_s")?,
            bytes: uint(row, "bytes")?,
            // Decided by the preferences when it is sent.
            audience: Audience::Server,
            status: status.map(Status::from_code),
            battery_start: opt_small(row, "battery_start")?,
            battery_end: opt_small(row, "battery_end")?,
            networks: networks_of(row)?,
        },
        sent: sent != 0,
    })
}

/// The PNE's records not yet sent, oldest first, at most `limit`.
pub(super) fn unsent_local_usage(conn: &Connection, limit: u32) -> Result<Vec<LocalUsage>> {
    codec::all(
        conn,
        "SELECT record_id, service, start_s, end_s, bytes, status, battery_start, \
         battery_end, networks, sent FROM local_usage WHERE sent = 0 ORDER BY record_id \
         LIMIT ?",
        [limit],
        decode_local,
    )
}

/// Marks records sent (acknowledged by the server, or never to be sent); unknown ids are
/// ignored.
pub(super) fn mark_local_usage_sent(conn: &Connection, ids: &[u64]) -> Result<()> {
    for id in ids {
        let Ok(id) = i64::try_from(*id) else { continue };
        codec::exec(
            conn,
            "UPDATE local_usage SET sent = 1 WHERE record_id = ?",
            [id],
        )?;
    }
    Ok(())
}

/// The PNE's own usage per service, every record counted (private ones too).
pub(super) fn local_usage_summary(conn: &Connection) -> Result<Vec<UsageSummary>> {
    codec::all(
        conn,
        "SELECT NULL AS user, service, COUNT(*) AS uses, SUM(end_s - start_s) AS seconds, \
         SUM(bytes) AS bytes FROM local_usage GROUP BY service ORDER BY service",
        [],
        decode_summary,
    )
}

/// Sets (or with `None` clears) the reporting preference of `service`, kept by its name.
pub(super) fn set_usage_pref(
    conn: &Connection,
    service: &str,
    pref: Option<Preference>,
) -> Result<()> {
    match pref {
        Some(p) => codec::exec(
            conn,
            "INSERT INTO usage_prefs (service, preference) VALUES (?1, ?2) \
             ON CONFLICT (service) DO UPDATE SET preference = ?2",
            params![service, p.name()],
        )?,
        None => codec::exec(conn, "DELETE FROM usage_prefs WHERE service = ?", [service])?,
    };
    Ok(())
}

/// Every reporting preference, by service; a name this build does not know is left out.
pub(super) fn usage_prefs(conn: &Connection) -> Result<Vec<(String, Preference)>> {
    let rows: Vec<(String, String)> = codec::all(
        conn,
        "SELECT service, preference FROM usage_prefs ORDER BY service",
        [],
        |row| Ok((row.get("service")?, row.get("preference")?)),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(service, name)| Some((service, Preference::parse(&name)?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_lists_read_back() {
        for list in [
            vec![],
            vec!["wlan".to_owned()],
            vec!["a\"b".to_owned(), "c\\d".to_owned(), String::new()],
        ] {
            assert_eq!(parse_string_array(&networks_text(&list)), Some(list));
        }
        assert_eq!(parse_string_array("[\"a\" \"b\"]"), None);
        assert_eq!(parse_string_array("[a]"), None);
        assert_eq!(parse_string_array("\"a\""), None);
    }
}
