//! Errors of the store: a small, backend-neutral set (conflict, not found, corrupt row) plus the
//! database and migration failures underneath, mapped from sqlx in one place.
//!
//! Messages name tables and ids, never a connection string: SQLite is opened from a path, and a
//! PostgreSQL backend must redact its DSN before it reaches an error or a log.

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
    /// The database failed (I/O, locking, pool closed, ...).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Bringing the schema up to date failed.
    #[error("migration failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    /// Maps constraint violations to [`StoreError::Conflict`] / [`StoreError::NotFound`] and
    /// undecodable columns to [`StoreError::Corrupt`]; everything else stays a database error.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            sqlx::Error::Database(ref db) if db.is_foreign_key_violation() => {
                StoreError::NotFound(format!("referenced record missing ({})", db.message()))
            }
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt(format!("column {index}: {source}"))
            }
            sqlx::Error::Decode(source) => StoreError::Corrupt(source.to_string()),
            sqlx::Error::Migrate(m) => StoreError::Migration(*m),
            other => StoreError::Database(other),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_errors_stay_database_errors() {
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolClosed),
            StoreError::Database(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::ColumnNotFound("x".into())),
            StoreError::Database(_)
        ));
    }

    #[test]
    fn decode_errors_are_corrupt_rows() {
        let e = StoreError::from(sqlx::Error::Decode("bad".into()));
        assert!(
            matches!(e, StoreError::Corrupt(ref m) if m == "bad"),
            "{e:?}"
        );
    }
}
