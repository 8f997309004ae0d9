//! Running the store's statements (each prepared once per connection and cached) and turning
//! SQLite columns back into the store's typed values. A value that does not decode is a
//! [`StoreError::Corrupt`], never a panic.

use core::str::FromStr;
use std::collections::HashMap;

use cpns_wire::{ContentItem, DeviceCapabilities, IdError, PnId};
use rusqlite::{Connection, Params, Row};

use crate::{Result, StoreError};

/// Runs one statement that returns no rows; the number of rows it changed.
pub(super) fn exec(conn: &Connection, sql: &str, params: impl Params) -> Result<usize> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}

/// The first row of a query, decoded, if there is one.
pub(super) fn optional<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(decode).transpose()
}

/// Every row of a query, decoded, in row order.
pub(super) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    mut decode: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Member rows grouped by their `pn_id` column, each decoded with `decode`, in row order: how
/// every list of PNs joins its PN rows with its member rows.
pub(super) fn members_by_pn<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    mut decode: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<HashMap<PnId, Vec<T>>> {
    let mut by_pn: HashMap<PnId, Vec<T>> = HashMap::new();
    for (pn, member) in all(conn, sql, params, |row| {
        Ok((pn_id(row, "pn_id")?, decode(row)?))
    })? {
        by_pn.entry(pn).or_default().push(member);
    }
    Ok(by_pn)
}

/// Reads a PN id stored as its 16 raw bytes from `column` of `row`.
pub(super) fn pn_id(row: &Row<'_>, column: &str) -> Result<PnId> {
    let bytes: Vec<u8> = row.get(column)?;
    let arr: [u8; 16] = bytes.as_slice().try_into().map_err(|_| {
        StoreError::corrupt(
            column,
            format!("holds {} bytes, a PN id is 16", bytes.len()),
        )
    })?;
    Ok(PnId::from_bytes(arr))
}

/// Reads a checked identifier (entity, user or CPNS id) from `column` of `row`.
pub(super) fn id<T: FromStr<Err = IdError>>(row: &Row<'_>, column: &str) -> Result<T> {
    let text: String = row.get(column)?;
    parse_id(column, &text)
}

/// Reads an optional checked identifier from `column` of `row`.
pub(super) fn opt_id<T: FromStr<Err = IdError>>(row: &Row<'_>, column: &str) -> Result<Option<T>> {
    let text: Option<String> = row.get(column)?;
    text.map(|t| parse_id(column, &t)).transpose()
}

fn parse_id<T: FromStr<Err = IdError>>(column: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|e| StoreError::corrupt(column, format!("{text:?}: {e}")))
}

/// Reads a stored enumeration name from `column` of `row` with `parse`.
pub(super) fn name<T>(row: &Row<'_>, column: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let text: String = row.get(column)?;
    parse(&text).ok_or_else(|| StoreError::corrupt(column, format!("holds unknown value {text:?}")))
}

/// Device capabilities as a column keeps them: the CBOR of `cpns_wire::DeviceCapabilities`.
pub(super) fn capabilities_blob(c: Option<&DeviceCapabilities>) -> Option<Vec<u8>> {
    c.map(cbor)
}

/// Reads device capabilities (CBOR) from `column` of `row`, if set.
pub(super) fn capabilities(row: &Row<'_>, column: &str) -> Result<Option<DeviceCapabilities>> {
    let bytes: Option<Vec<u8>> = row.get(column)?;
    bytes.map(|b| decode_cbor(column, &b)).transpose()
}

/// Announced contents as a column keeps them: the CBOR array of `cpns_wire::ContentItem`, NULL
/// for none.
pub(super) fn contents_blob(c: &[ContentItem]) -> Option<Vec<u8>> {
    (!c.is_empty()).then(|| cbor(c))
}

/// Reads announced contents (CBOR) from `column` of `row`; none when NULL.
pub(super) fn contents(row: &Row<'_>, column: &str) -> Result<Vec<ContentItem>> {
    let bytes: Option<Vec<u8>> = row.get(column)?;
    Ok(bytes
        .map(|b| decode_cbor(column, &b))
        .transpose()?
        .unwrap_or_default())
}

/// The CBOR of `value` (writing to memory cannot fail).
pub(super) fn cbor<T: minicbor::Encode<()> + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // A `Vec` writer is infallible, and the store's types encode without a context.
    let _ = minicbor::encode(value, &mut out);
    out
}

/// Decodes the CBOR `bytes` of `column`; [`StoreError::Corrupt`] if they do not decode.
pub(super) fn decode_cbor<T>(column: &str, bytes: &[u8]) -> Result<T>
where
    T: for<'b> minicbor::Decode<'b, ()>,
{
    minicbor::decode(bytes).map_err(|e| StoreError::corrupt(column, format!("CBOR: {e}")))
}

/// Reads a group key epoch from the `epoch` and `sealed_group_key` columns: both NULL (no
/// group key yet) or both set.
pub(super) fn group(row: &Row<'_>) -> Result<Option<crate::GroupEpoch>> {
    let epoch: Option<i64> = row.get("epoch")?;
    let sealed: Option<Vec<u8>> = row.get("sealed_group_key")?;
    match (epoch, sealed) {
        (None, None) => Ok(None),
        (Some(e), Some(sealed_key)) => Ok(Some(crate::GroupEpoch {
            epoch: u64::try_from(e)
                .map_err(|_| StoreError::corrupt("epoch", format!("{e} is negative")))?,
            sealed_key,
        })),
        _ => Err(StoreError::corrupt(
            "epoch, sealed_group_key",
            "not set together",
        )),
    }
}

/// The `epoch` column's value of a group key epoch (NULL for none).
pub(super) fn epoch_of(group: Option<&crate::GroupEpoch>) -> Result<Option<i64>> {
    group
        .map(|g| {
            i64::try_from(g.epoch)
                .map_err(|_| StoreError::conflict(format!("epoch {} is too large", g.epoch)))
        })
        .transpose()
}

/// What follows the `SELECT` of entities aliased `e` to keep those among the ids bound as one
/// JSON array, in the order of their first mention ([`by_ids`]).
macro_rules! in_order_of_ids {
    () => {
        " JOIN (SELECT value, MIN(key) AS pos FROM json_each(?) GROUP BY value) AS j \
         ON j.value = e.id ORDER BY j.pos"
    };
}
pub(super) use in_order_of_ids;

/// The rows of `sql` (a `SELECT` of entities `e` ending with [`in_order_of_ids!`]) for the
/// enrolled entities among `ids`, in the order of `ids`, in one query.
pub(super) fn by_ids<T>(
    conn: &Connection,
    sql: &str,
    ids: &[cpns_wire::EntityId],
    decode: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = json_string_array(ids.iter().map(cpns_wire::EntityId::as_str));
    all(conn, sql, [list], decode)
}

/// A JSON array of strings, for binding a list to one `json_each(?)` parameter.
pub(super) fn json_string_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arrays_are_escaped() {
        assert_eq!(json_string_array([]), "[]");
        assert_eq!(json_string_array(["a", "b-c"]), r#"["a","b-c"]"#);
        assert_eq!(json_string_array(["q\"\\\n"]), r#"["q\"\\\u000a"]"#);
        // Only control characters are escaped: a space (0x20) and non-ASCII text go as they are.
        assert_eq!(
            json_string_array(["a b", "\u{1f}é"]),
            "[\"a b\",\"\\u001fé\"]"
        );
    }

    #[test]
    fn typed_columns_keep_the_cbor_of_their_type() {
        let caps = DeviceCapabilities {
            device_type: "phone".into(),
            battery_pct: Some(40),
            ..DeviceCapabilities::default()
        };
        // The bytes earlier builds wrote (`minicbor::to_vec`), so existing databases read.
        assert_eq!(
            capabilities_blob(Some(&caps)),
            Some(minicbor::to_vec(&caps).unwrap())
        );
        assert_eq!(capabilities_blob(None), None);
        let items = vec![ContentItem {
            name: "a.mp3".into(),
            media_type: "audio/mpeg".into(),
        }];
        assert_eq!(
            contents_blob(&items),
            Some(minicbor::to_vec(&items).unwrap())
        );
        assert_eq!(contents_blob(&[]), None);
        let conn = Connection::open_in_memory().unwrap();
        let read = optional(
            &conn,
            "SELECT ? AS caps, ? AS contents, NULL AS none",
            rusqlite::params![capabilities_blob(Some(&caps)), contents_blob(&items)],
            |r| {
                Ok((
                    capabilities(r, "caps")?,
                    contents(r, "contents")?,
                    capabilities(r, "none")?,
                    contents(r, "none")?,
                ))
            },
        )
        .unwrap();
        assert_eq!(read, Some((Some(caps), items, None, Vec::new())));
        // Bytes that are not their type's CBOR are a corrupt column, named.
        let err = optional(&conn, "SELECT x'ff00' AS caps", [], |r| {
            capabilities(r, "caps")
        })
        .unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { ref column, ref why } if column == "caps" && why.starts_with("CBOR")),
            "{err:?}"
        );
        let err = optional(&conn, "SELECT x'ff00' AS c", [], |r| contents(r, "c")).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { ref column, .. } if column == "c"),
            "{err:?}"
        );
    }

    #[test]
    fn short_pn_ids_are_corrupt() {
        let conn = Connection::open_in_memory().unwrap();
        let err =
            optional(&conn, "SELECT x'0102' AS pn_id", [], |r| pn_id(r, "pn_id")).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { ref why, .. } if why.contains("holds 2 bytes")),
            "{err:?}"
        );
    }
}
