//! Errors of the store: a small, backend-neutral set of typed reasons (not found, conflict,
//! corrupt column, overloaded) plus the database and migration failures underneath, mapped from
//! SQLite's errors in one place (`From<rusqlite::Error>`).
//!
//! Messages name tables and ids, never a connection string: SQLite is opened from a path, and a
//! PostgreSQL backend must redact its DSN before it reaches an error or a log.

use std::sync::Arc;

use rusqlite::ffi;

/// Why a store operation failed: a small set of typed reasons a caller can act on (the record
/// is missing, the write conflicts, a stored value does not decode, the database is too busy),
/// and the database failures underneath.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record the operation applies to does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What is missing (a table's record and its id).
        what: String,
    },
    /// The write would break a uniqueness rule (an id already taken, a PN owned by another GW)
    /// or holds a value the store cannot keep.
    #[error("conflict: {what}")]
    Conflict {
        /// What it conflicts with.
        what: String,
    },
    /// A stored value could not be decoded into its type (bad id, unknown enum value, CBOR
    /// that does not decode): the row is corrupt, or was written by a newer build.
    #[error("corrupt {column}: {why}")]
    Corrupt {
        /// The column (or columns) holding it.
        column: String,
        /// What is wrong with it.
        why: String,
    },
    /// The database stayed locked by another connection past the busy timeout: try later.
    #[error("the store is overloaded: the database stayed locked")]
    Overloaded,
    /// The database failed (I/O, the store closed, ...).
    #[error("database error: {0}")]
    Failed(#[source] DatabaseError),
    /// Bringing the schema up to date failed, or the database was made by a newer build.
    #[error("migration failed: {0}")]
    Migration(#[source] DatabaseError),
    /// A store's file or directory could not be made its owner's only (docs/security.md §4.9.1).
    #[error(
        "{path} cannot be made readable by its owner only ({why}); as its owner, run `chmod go-rwx {path}`"
    )]
    NotPrivate {
        /// The file or directory.
        path: String,
        /// Why: the error of the attempt.
        why: String,
    },
}

impl StoreError {
    /// [`StoreError::NotFound`] of `what`.
    pub fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }

    /// [`StoreError::Conflict`] with `what`.
    pub fn conflict(what: impl Into<String>) -> Self {
        StoreError::Conflict { what: what.into() }
    }

    /// [`StoreError::Corrupt`] of `column`, for `why`.
    pub fn corrupt(column: impl Into<String>, why: impl Into<String>) -> Self {
        StoreError::Corrupt {
            column: column.into(),
            why: why.into(),
        }
    }
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
    /// [`StoreError::NotFound`], a database still locked after the busy timeout to
    /// [`StoreError::Overloaded`] and undecodable columns to [`StoreError::Corrupt`]; everything
    /// else stays a database failure.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        match e {
            // An extended code names its primary code too: these are all constraint violations.
            E::SqliteFailure(f, ref message) => {
                let text = || message.clone().unwrap_or_else(|| f.to_string());
                match f.extended_code {
                    ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                        StoreError::conflict(text())
                    }
                    ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                        StoreError::not_found(format!("referenced record missing ({})", text()))
                    }
                    _ if matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) =>
                    {
                        StoreError::Overloaded
                    }
                    _ => StoreError::Failed(e.into()),
                }
            }
            E::FromSqlConversionFailure(index, _, source) => {
                StoreError::corrupt(format!("column {index}"), source.to_string())
            }
            E::InvalidColumnType(index, name, ty) => {
                StoreError::corrupt(format!("column {index} ({name})"), format!("holds a {ty}"))
            }
            E::IntegralValueOutOfRange(index, value) => StoreError::corrupt(
                format!("column {index}"),
                format!("holds {value}, out of range"),
            ),
            E::Utf8Error(index, source) => {
                StoreError::corrupt(format!("column {index}"), source.to_string())
            }
            other => StoreError::Failed(other.into()),
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
            matches!(e, StoreError::Failed(ref d) if d.to_string().contains("no rows")),
            "{e:?}"
        );
        // A constraint that is neither uniqueness nor a foreign key is no conflict.
        let check = constraint(
            ffi::SQLITE_CONSTRAINT_CHECK,
            Some("CHECK constraint failed"),
        );
        let e = StoreError::from(check);
        assert!(
            matches!(e, StoreError::Failed(ref d) if d.to_string().contains("CHECK")),
            "{e:?}"
        );
        let io = rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_IOERR), None);
        assert!(matches!(StoreError::from(io), StoreError::Failed(_)));
    }

    #[test]
    fn a_locked_database_is_overloaded() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_BUSY_SNAPSHOT,
        ] {
            let e = StoreError::from(constraint(code, Some("database is locked")));
            assert!(matches!(e, StoreError::Overloaded), "{code}: {e:?}");
        }
        assert_eq!(
            StoreError::Overloaded.to_string(),
            "the store is overloaded: the database stayed locked"
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
                matches!(e, StoreError::Conflict { ref what } if what == "UNIQUE constraint failed: t.c"),
                "{e:?}"
            );
        }
        // Without SQLite's message, the code's own description stands in.
        let e = StoreError::from(constraint(ffi::SQLITE_CONSTRAINT_UNIQUE, None));
        assert!(
            matches!(e, StoreError::Conflict { ref what } if !what.is_empty()),
            "{e:?}"
        );
        let e = StoreError::from(constraint(ffi::SQLITE_CONSTRAINT_FOREIGNKEY, Some("FK")));
        assert!(
            matches!(e, StoreError::NotFound { ref what } if what == "referenced record missing (FK)"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "not found: referenced record missing (FK)");
    }

    #[test]
    fn decode_errors_are_corrupt_columns() {
        use rusqlite::types::Type;
        let cases = [
            (
                rusqlite::Error::FromSqlConversionFailure(2, Type::Text, "bad".into()),
                "column 2",
                "bad",
            ),
            (
                rusqlite::Error::InvalidColumnType(2, "kind".into(), Type::Blob),
                "column 2 (kind)",
                "holds a Blob",
            ),
            (
                rusqlite::Error::IntegralValueOutOfRange(2, -1),
                "column 2",
                "holds -1, out of range",
            ),
            (
                rusqlite::Error::Utf8Error(
                    2,
                    String::from_utf8(vec![0xff]).unwrap_err().utf8_error(),
                ),
                "column 2",
                "invalid utf-8",
            ),
        ];
        for (case, col, reason) in cases {
            let e = StoreError::from(case);
            assert!(
                matches!(e, StoreError::Corrupt { ref column, ref why } if column == col && why.starts_with(reason)),
                "{e:?}"
            );
        }
        assert_eq!(
            StoreError::corrupt("pns.state", "unknown value \"x\"").to_string(),
            "corrupt pns.state: unknown value \"x\""
        );
    }

    #[test]
    fn database_errors_say_what_failed() {
        assert_eq!(DatabaseError::closed().to_string(), "the store is closed");
        let e = StoreError::Failed(DatabaseError::closed());
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
