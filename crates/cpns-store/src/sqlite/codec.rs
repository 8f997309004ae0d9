//! Turning SQLite columns back into the store's typed values, and the few encodings the queries
//! need. A value that does not decode is a [`StoreError::Corrupt`], never a panic.

use core::str::FromStr;

use cpns_wire::{IdError, PnId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{Result, StoreError};

/// SQL that begins a write transaction holding the write lock from its first statement.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Reads a PN id stored as its 16 raw bytes from `column` of `row`.
pub(super) fn pn_id(row: &SqliteRow, column: &str) -> Result<PnId> {
    let bytes: Vec<u8> = row.try_get(column)?;
    let arr: [u8; 16] = bytes.as_slice().try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "{column} holds {} bytes, a PN id is 16",
            bytes.len()
        ))
    })?;
    Ok(PnId::from_bytes(arr))
}

/// Reads a checked identifier (entity, user or CPNS id) from `column` of `row`.
pub(super) fn id<T: FromStr<Err = IdError>>(row: &SqliteRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    parse_id(column, &text)
}

/// Reads an optional checked identifier from `column` of `row`.
pub(super) fn opt_id<T: FromStr<Err = IdError>>(
    row: &SqliteRow,
    column: &str,
) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| parse_id(column, &t)).transpose()
}

fn parse_id<T: FromStr<Err = IdError>>(column: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
}

/// Reads a stored enumeration name from `column` of `row` with `parse`.
pub(super) fn name<T>(row: &SqliteRow, column: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let text: String = row.try_get(column)?;
    parse(&text)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} holds unknown value {text:?}")))
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

/// Member rows grouped by their `pn_id` column, each decoded with `decode`, in row order: how
/// every list of PNs joins its PN rows with its member rows.
pub(super) fn members_by_pn<T>(
    rows: &[sqlx::sqlite::SqliteRow],
    decode: impl Fn(&sqlx::sqlite::SqliteRow) -> crate::Result<T>,
) -> crate::Result<std::collections::HashMap<cpns_wire::PnId, Vec<T>>> {
    let mut by_pn: std::collections::HashMap<cpns_wire::PnId, Vec<T>> =
        std::collections::HashMap::new();
    for row in rows {
        by_pn
            .entry(pn_id(row, "pn_id")?)
            .or_default()
            .push(decode(row)?);
    }
    Ok(by_pn)
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
}
