//! Errors of the store: a small, backend-neutral set (conflict, not found, corrupt row) plus the
//! database and migration failures underneath, mapped from SQLite's errors in one place.
//!
//! Messages name tables and ids, never a connection string: SQLite is opened from a path, and a
//! PostgreSQL backend must redact its DSN before it reaches an error or a log.

use std::sync::Arc;

use rusqlite::ffi;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write would break a uniqueness rule (an id already taken, a PN owned by another GW).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record the operation applies to does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored row could not be decoded into a record (bad id, unknown enum value, bad type).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed (I/O, locking, the store closed, ...).
    #[error("database error: {0}")]
    Database(#[source] DatabaseError),
    /// Bringing the schema up to date failed, or the database was made by a newer build.
    #[error("migration failed: {0}")]
    Migration(#[source] DatabaseError),
}

/// What failed underneath a [`StoreError::Database`] or [`StoreError::Migration`]: SQLite's own
/// error, or the store's reason (it was closed, the schema is newer than this build). Its
/// message says which; cloning it is cheap, so one failed commit can answer every write it held.
#[derive(Clone, Debug)]
pub struct DatabaseError(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Sqlite(Arc<rusqlite::Error>),
    Message(String),
}

impl DatabaseError {
    /// An error the store itself raises, with its message.
    pub(crate) fn message(text: impl Into<String>) -> Self {
        DatabaseError(Repr::Message(text.into()))
    }

    /// The store was closed (or its writer stopped): nothing more can be done with it.
    pub(crate) fn closed() -> Self {
        Self::message("the store is closed")
    }
}

impl std::fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Sqlite(e) => e.fmt(f),
            Repr::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DatabaseError {
    /// What SQLite's error wraps, if anything (its own message is this error's message).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Repr::Sqlite(e) => e.source(),
            Repr::Message(_) => None,
        }
    }
}

impl From<rusqlite::Error> for DatabaseError {
    fn from(e: rusqlite::Error) -> Self {
        DatabaseError(Repr::Sqlite(Arc::new(e)))
    }
}

impl From<rusqlite::Error> for StoreError {
    /// Maps uniqueness violations to [`StoreError::Conflict`], foreign-key violations to
    /// [`StoreError::NotFound`] and undecodable columns to [`StoreError::Corrupt`]; everything
    /// else stays a database error.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        match e {
            // An extended code names its primary code too: these are all constraint violations.
            E::SqliteFailure(f, ref message) => {
                let text = || message.clone().unwrap_or_else(|| f.to_string());
                match f.extended_code {
                    ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                        StoreError::Conflict(text())
                    }
                    ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                        StoreError::NotFound(format!("referenced record missing ({})", text()))
                    }
                    _ => StoreError::Database(e.into()),
                }
            }
            E::FromSqlConversionFailure(index, _, source) => {
                StoreError::Corrupt(format!("column {index}: {source}"))
            }
            E::InvalidColumnType(index, name, ty) => {
                StoreError::Corrupt(format!("column {index} ({name}) holds a {ty}"))
            }
            E::IntegralValueOutOfRange(index, value) => {
                StoreError::Corrupt(format!("column {index} holds {value}, out of range"))
            }
            E::Utf8Error(index, source) => StoreError::Corrupt(format!("column {index}: {source}")),
            other => StoreError::Database(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraint(extended_code: i32, message: Option<&str>) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended_code), message.map(Into::into))
    }

    #[test]
    fn plain_errors_stay_database_errors() {
        let e = StoreError::from(rusqlite::Error::QueryReturnedNoRows);
        assert!(
            matches!(e, StoreError::Database(ref d) if d.to_string().contains("no rows")),
            "{e:?}"
        );
        let busy = rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_BUSY), None);
        assert!(matches!(StoreError::from(busy), StoreError::Database(_)));
        // A constraint that is neither uniqueness nor a foreign key is no conflict.
        let check = constraint(
            ffi::SQLITE_CONSTRAINT_CHECK,
            Some("CHECK constraint failed"),
        );
        let e = StoreError::from(check);
        assert!(
            matches!(e, StoreError::Database(ref d) if d.to_string().contains("CHECK")),
            "{e:?}"
        );
    }

    #[test]
    fn constraint_errors_map_to_conflict_and_not_found() {
        for code in [
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
        ] {
            let e = StoreError::from(constraint(code, Some("UNIQUE constraint failed: t.c")));
            assert!(
                matches!(e, StoreError::Conflict(ref m) if m == "UNIQUE constraint failed: t.c"),
                "{e:?}"
            );
        }
        // Without SQLite's message, the code's own description stands in.
        let e = StoreError::from(constraint(ffi::SQLITE_CONSTRAINT_UNIQUE, None));
        assert!(
            matches!(e, StoreError::Conflict(ref m) if !m.is_empty()),
            "{e:?}"
        );
        let e = StoreError::from(constraint(ffi::SQLITE_CONSTRAINT_FOREIGNKEY, Some("FK")));
        assert!(
            matches!(e, StoreError::NotFound(ref m) if m == "referenced record missing (FK)"),
            "{e:?}"
        );
    }

    #[test]
    fn decode_errors_are_corrupt_rows() {
        use rusqlite::types::Type;
        let cases = [
            rusqlite::Error::FromSqlConversionFailure(2, Type::Text, "bad".into()),
            rusqlite::Error::InvalidColumnType(2, "kind".into(), Type::Blob),
            rusqlite::Error::IntegralValueOutOfRange(2, -1),
            rusqlite::Error::Utf8Error(2, String::from_utf8(vec![0xff]).unwrap_err().utf8_error()),
        ];
        for case in cases {
            let e = StoreError::from(case);
            assert!(
                matches!(e, StoreError::Corrupt(ref m) if m.starts_with("column 2")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn database_errors_say_what_failed() {
        assert_eq!(DatabaseError::closed().to_string(), "the store is closed");
        let e = StoreError::Database(DatabaseError::closed());
        assert_eq!(e.to_string(), "database error: the store is closed");
        assert!(std::error::Error::source(&DatabaseError::closed()).is_none());
        // SQLite's message comes through; what it wraps is the source.
        let inner = rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            "inner cause".into(),
        );
        let d = DatabaseError::from(inner);
        assert!(d.to_string().contains("inner cause"), "{d}");
        let source = std::error::Error::source(&d).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("inner cause"));
    }
}
