//! The SQLite schema: the migrations of `migrations/sqlite`, embedded at build time and applied
//! in order at open, each in its own transaction, with SQLite's `user_version` recording the
//! last one applied.
//!
//! A database made by the earlier sqlx-based backend keeps its history in a `_sqlx_migrations`
//! table and has `user_version` 0; its highest successful version is taken as the starting
//! point, so existing data directories open without losing anything. A database whose version
//! is above the last migration this build knows was made by a newer build and is refused.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::{DatabaseError, Result, StoreError};

/// One schema step: its version (the file's number), its name and its SQL.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every schema step, in order. `include_str!` makes Cargo rebuild the crate when a file
/// changes; a new file must be added here (a test checks that every file is).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "replays",
        sql: include_str!("../../migrations/sqlite/0002_replays.sql"),
    },
    Migration {
        version: 3,
        name: "contents",
        sql: include_str!("../../migrations/sqlite/0003_contents.sql"),
    },
    Migration {
        version: 4,
        name: "local session",
        sql: include_str!("../../migrations/sqlite/0004_local_session.sql"),
    },
    Migration {
        version: 5,
        name: "clustered",
        sql: include_str!("../../migrations/sqlite/0005_clustered.sql"),
    },
    Migration {
        version: 6,
        name: "group epochs",
        sql: include_str!("../../migrations/sqlite/0006_group_epochs.sql"),
    },
    Migration {
        version: 7,
        name: "pns by owner",
        sql: include_str!("../../migrations/sqlite/0007_pns_by_owner.sql"),
    },
    Migration {
        version: 8,
        name: "member owner",
        sql: include_str!("../../migrations/sqlite/0008_member_owner.sql"),
    },
    Migration {
        version: 9,
        name: "pn limits",
        sql: include_str!("../../migrations/sqlite/0009_pn_limits.sql"),
    },
    Migration {
        version: 10,
        name: "departed",
        sql: include_str!("../../migrations/sqlite/0010_departed.sql"),
    },
    Migration {
        version: 11,
        name: "status and usage",
        sql: include_str!("../../migrations/sqlite/0011_status_and_usage.sql"),
    },
    Migration {
        version: 12,
        name: "local departed",
        sql: include_str!("../../migrations/sqlite/0012_local_departed.sql"),
    },
    Migration {
        version: 13,
        name: "secure numbers",
        sql: include_str!("../../migrations/sqlite/0013_secure_numbers.sql"),
    },
    Migration {
        version: 14,
        name: "services",
        sql: include_str!("../../migrations/sqlite/0014_services.sql"),
    },
    Migration {
        version: 15,
        name: "members by pne",
        sql: include_str!("../../migrations/sqlite/0015_members_by_pne.sql"),
    },
    Migration {
        version: 16,
        name: "service watches",
        sql: include_str!("../../migrations/sqlite/0016_service_watches.sql"),
    },
    Migration {
        version: 17,
        name: "visible in index",
        sql: include_str!("../../migrations/sqlite/0017_visible_in_index.sql"),
    },
    Migration {
        version: 18,
        name: "service groups",
        sql: include_str!("../../migrations/sqlite/0018_service_groups.sql"),
    },
    Migration {
        version: 19,
        name: "local service groups",
        sql: include_str!("../../migrations/sqlite/0019_local_service_groups.sql"),
    },
    Migration {
        version: 20,
        name: "delivery records",
        sql: include_str!("../../migrations/sqlite/0020_delivery_records.sql"),
    },
    Migration {
        version: 21,
        name: "local delivery routes",
        sql: include_str!("../../migrations/sqlite/0021_local_delivery_routes.sql"),
    },
    Migration {
        version: 22,
        name: "delivery tariffs",
        sql: include_str!("../../migrations/sqlite/0022_delivery_tariffs.sql"),
    },
    Migration {
        version: 23,
        name: "route to pn",
        sql: include_str!("../../migrations/sqlite/0023_route_to_pn.sql"),
    },
    Migration {
        version: 24,
        name: "exact keywords",
        sql: include_str!("../../migrations/sqlite/0024_exact_keywords.sql"),
    },
    Migration {
        version: 25,
        name: "delivery items",
        sql: include_str!("../../migrations/sqlite/0025_delivery_items.sql"),
    },
    Migration {
        version: 26,
        name: "local deliveries",
        sql: include_str!("../../migrations/sqlite/0026_local_deliveries.sql"),
    },
    Migration {
        version: 27,
        name: "open delivery records",
        sql: include_str!("../../migrations/sqlite/0027_open_delivery_records.sql"),
    },
];

/// The schema version this build brings a database to.
pub(super) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings the schema of `conn`'s database up to [`LATEST`]. Each step reads the version and
/// applies the next migration under the write lock, so two processes opening one file at once
/// apply each migration once.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, LATEST)
}

/// Brings the schema of `conn`'s database up to `target` (at most [`LATEST`]; a test's way to
/// make a database of an earlier schema).
fn migrate_to(conn: &mut Connection, target: i64) -> Result<()> {
    with_functions(conn).map_err(migration_error)?;
    let done = steps(conn, target);
    without_functions(conn).map_err(migration_error)?;
    done
}

/// The store's own SQL functions a migration may call (migration 24 fills the keyword columns
/// of the entries kept with what the store writes for a new one).
fn with_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let words = |ctx: &rusqlite::functions::Context<'_>| -> rusqlite::Result<Vec<String>> {
        let joined: String = ctx.get(0)?;
        Ok(joined
            .split(' ')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect())
    };
    conn.create_scalar_function("cpns_keyword_terms", 1, flags, move |ctx| {
        Ok(super::services::keyword_terms(&words(ctx)?))
    })?;
    conn.create_scalar_function("cpns_keyword_pairs", 1, flags, move |ctx| {
        Ok(super::services::keyword_pairs(&words(ctx)?))
    })
}

fn without_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.remove_function("cpns_keyword_terms", 1)?;
    conn.remove_function("cpns_keyword_pairs", 1)
}

fn steps(conn: &mut Connection, target: i64) -> Result<()> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(migration_error)?;
        let (current, recorded) = schema_version(&tx).map_err(migration_error)?;
        if current > LATEST {
            return Err(StoreError::Migration(DatabaseError::message(format!(
                "the database is at schema version {current}, newer than the {LATEST} this \
                 build knows: open it with a newer cpns"
            ))));
        }
        let next = MIGRATIONS
            .iter()
            .find(|m| m.version > current && m.version <= target);
        if let Some(m) = next {
            tx.execute_batch(m.sql).map_err(|e| {
                StoreError::Migration(DatabaseError::message(format!(
                    "migration {} ({}): {e}",
                    m.version, m.name
                )))
            })?;
        }
        let version = next.map_or(current, |m| m.version);
        if version != recorded {
            tx.pragma_update(None, "user_version", version)
                .map_err(migration_error)?;
        }
        tx.commit().map_err(migration_error)?;
        if next.is_none() {
            return Ok(());
        }
    }
}

/// The schema version of the database, and the one `user_version` records (0 for a database
/// made by the sqlx-based backend, whose version is the last successful row of
/// `_sqlx_migrations`).
fn schema_version(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let recorded: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if recorded != 0 {
        return Ok((recorded, recorded));
    }
    let sqlx_made = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !sqlx_made {
        return Ok((0, 0));
    }
    let sqlx_version: Option<i64> = conn.query_row(
        "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
        [],
        |row| row.get(0),
    )?;
    Ok((sqlx_version.unwrap_or(0), 0))
}

fn migration_error(e: rusqlite::Error) -> StoreError {
    StoreError::Migration(e.into())
}

#[cfg(test)]
mod tests {
    use super::super::services;
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_latest() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=LATEST).collect::<Vec<_>>());
    }

    #[test]
    fn every_migration_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name.replace(' ', "_")))
            .collect();
        assert_eq!(files, listed);
        for m in MIGRATIONS {
            let file = format!("{dir}/{:04}_{}.sql", m.version, m.name.replace(' ', "_"));
            assert_eq!(std::fs::read_to_string(file).unwrap(), m.sql);
        }
    }

    #[test]
    fn a_fresh_database_gets_every_migration_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), (LATEST, LATEST));
        // A second run finds nothing to do (re-running 0001 would fail: its tables exist).
        migrate(&mut conn).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), (LATEST, LATEST));
    }

    /// Entries kept before migration 24 get the columns a new entry gets, and are found
    /// through the new index: by a whole keyword, and by two keywords through their pair.
    #[test]
    fn entries_kept_before_exact_keywords_are_found_by_them_after() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 23).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), (23, 23));
        conn.execute_batch(
            "INSERT INTO users (id) VALUES ('alice');
             INSERT INTO entities (id, kind, owner, sealed_eukey, enrolled_at)
                 VALUES ('tv', 'pne', 'alice', x'00', 0);
             INSERT INTO services (offerer, owner, service_id, service_type, scope_kind,
                 keywords, description, created_at, updated_at, expires_at)
                 VALUES ('tv', 'alice', 'a', 't', 4, 'video-renderer 4k tv', x'7b7d', 0, 0, 1),
                        ('tv', 'alice', 'b', 't', 2, 'video-renderer radio', x'7b7d', 0, 0, 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), (LATEST, LATEST));
        let words = |k: &str| k.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let (terms, pairs): (String, String) = conn
            .query_row(
                "SELECT terms, pairs FROM services WHERE service_id = 'a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            terms,
            services::keyword_terms(&words("video-renderer 4k tv"))
        );
        assert_eq!(
            pairs,
            services::keyword_pairs(&words("video-renderer 4k tv"))
        );
        assert_eq!(pairs.split(' ').count(), 3);
        let hits = |m: String| -> Vec<String> {
            conn.prepare(
                "SELECT s.service_id FROM services_fts AS f JOIN services AS s \
                 ON s.dir_id = f.rowid WHERE services_fts MATCH ? ORDER BY f.rowid",
            )
            .unwrap()
            .query_map([m], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        let term = |k: &str| services::keyword_terms(&words(k));
        let pair = |k: &str| services::keyword_pairs(&words(k));
        assert_eq!(
            hits(format!("terms : {}", term("video-renderer"))),
            ["a", "b"]
        );
        assert_eq!(
            hits(format!("public_terms : {}", term("video-renderer"))),
            ["a"]
        );
        assert_eq!(hits(format!("public_pairs : {}", pair("tv 4k"))), ["a"]);
        assert_eq!(
            hits(format!("public_pairs : {}", pair("radio video-renderer"))),
            Vec::<String>::new()
        );
        assert!(hits(format!("terms : {}", term("video"))).is_empty());
        // The store's functions are the migration's only: a connection after it has none.
        assert!(
            conn.query_row("SELECT cpns_keyword_terms('x')", [], |_| Ok(()))
                .is_err()
        );
    }

    /// Records kept before migration 25 are their sessions' first items, unchanged; a session
    /// then takes a record per item.
    #[test]
    fn delivery_records_kept_before_items_are_their_sessions_first_item() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 24).unwrap();
        let row = "x'01010101010101010101010101010101', 'tv', 'video', 'phone', \
                   x'02020202020202020202020202020202', 'alice', 'film.mp4', 10, 10, 5, 9, 1, 3";
        conn.execute_batch(&format!(
            "INSERT INTO delivery_records (session, target, service_id, source, pn_id, charged, \
             name, size, bytes, started_at, ended_at, result, per_mb) VALUES ({row})"
        ))
        .unwrap();
        migrate(&mut conn).unwrap();
        let kept: (i64, String, i64, i64, Option<i64>) = conn
            .query_row(
                "SELECT item, service_id, bytes, result, per_mb FROM delivery_records",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(kept, (0, "video".into(), 10, 1, Some(3)));
        // A second item of the same session and target is a record of its own.
        conn.execute_batch(
            "INSERT INTO delivery_records (session, target, item, service_id, source, pn_id, \
             charged, name, size, started_at) VALUES (x'01010101010101010101010101010101', \
             'tv', 1, 'subtitles', 'phone', x'02020202020202020202020202020202', 'alice', \
             'film.srt', 4, 5)",
        )
        .unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM delivery_records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn a_failing_migration_names_itself_and_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        // An index in the way of 0002's second statement (0002 runs after 0001 succeeds).
        conn.execute_batch("CREATE TABLE other (x INTEGER); CREATE INDEX replays_age ON other (x)")
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration(ref e)
                if e.to_string().starts_with("migration 2 (replays): ")),
            "{err}"
        );
        // 0001 stays applied and recorded; 0002's first statement (its table) was rolled back.
        assert_eq!(schema_version(&conn).unwrap(), (1, 1));
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(tables.contains(&"pns".to_owned()), "{tables:?}");
        assert!(!tables.contains(&"replays".to_owned()), "{tables:?}");
    }
}
