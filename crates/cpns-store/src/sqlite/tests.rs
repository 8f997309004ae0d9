//! Unit tests of the SQLite backend that need raw access to the tables: rows written behind
//! the store's back must come out as [`StoreError::Corrupt`], never as a panic; the connection
//! settings must be what `open` promises; old and too-new database files; the read pool.

use cpns_wire::{EntityId, PnId, UserId};
use tempfile::TempDir;

use super::{Durability, SqliteStore};
use crate::{DeviceStore, EntityKind, EntityRecord, PnRecord, PnState, ServerStore, StoreError};

/// Runs raw SQL on the writer connection, behind the store's back (as one write of its own).
async fn raw(store: &SqliteStore, sql: &'static str) -> crate::Result<usize> {
    store.writer().run(move |c| Ok(c.execute(sql, [])?)).await
}

/// A new store in a temporary directory (shared with the writer's tests).
pub(super) async fn fresh() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db"))
        .await
        .unwrap();
    (dir, store)
}

fn eid(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

fn pn(n: u8) -> PnRecord {
    PnRecord {
        pn_id: PnId::from_bytes([n; 16]),
        gateway: eid("gw"),
        owner: UserId::new("alice").unwrap(),
        state: PnState::Active,
        created_at: 1,
        members: Vec::new(),
        group: None,
        expires_at: None,
        max_members: None,
    }
}

async fn enroll(store: &SqliteStore, id: &str) {
    let owner = UserId::new("alice").unwrap();
    store.ensure_user(&owner).await.unwrap();
    store
        .insert_entity(&EntityRecord {
            id: eid(id),
            kind: EntityKind::Pne,
            owner,
            sealed_eukey: vec![1, 2, 3],
            capabilities: None,
            cpns_id: None,
            enrolled_at: 7,
        })
        .await
        .unwrap();
}

/// A kept delivery whose files are not a CBOR list of [path, size] reads as corrupt, not as a
/// panic nor as no files.
#[tokio::test]
async fn a_kept_delivery_with_unreadable_files_is_corrupt() {
    let (_dir, store) = fresh().await;
    raw(
        &store,
        "INSERT INTO local_deliveries (session, as_source, sealed_key, description, files, \
         stored_at) VALUES (x'01010101010101010101010101010101', 1, x'00', x'a0', x'ff', 1)",
    )
    .await
    .unwrap();
    let err = store.local_deliveries().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref column, .. } if column == "files"),
        "{err:?}"
    );
}

#[tokio::test]
async fn unknown_pn_state_is_corrupt() {
    let (_dir, store) = fresh().await;
    store.register_pn(&pn(1)).await.unwrap();
    store.register_pn(&pn(2)).await.unwrap();
    raw(
        &store,
        "UPDATE pns SET state = 'bogus' WHERE pn_id = x'01010101010101010101010101010101'",
    )
    .await
    .unwrap();
    let err = store.pn(&PnId::from_bytes([1; 16])).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref why, .. } if why.contains("bogus")),
        "{err:?}"
    );
    assert!(matches!(
        store.all_pns().await,
        Err(StoreError::Corrupt { .. })
    ));
    // The healthy PN still reads.
    assert!(
        store
            .pn(&PnId::from_bytes([2; 16]))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn bad_stored_ids_are_corrupt() {
    let (_dir, store) = fresh().await;
    enroll(&store, "pne-1").await;
    raw(
        &store,
        "UPDATE entities SET kind = 'toaster', cpns_id = 'has space'",
    )
    .await
    .unwrap();
    let err = store.entity(&eid("pne-1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    raw(&store, "UPDATE entities SET kind = 'pne'")
        .await
        .unwrap();
    let err = store.entities(&[eid("pne-1")]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref column, .. } if column == "cpns_id"),
        "{err:?}"
    );
    let err = store.allocate_cpns_id(&eid("pne-1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

/// A preference this build does not know (a newer build's) reads as none, not as an error;
/// the known ones still read. Typed columns that do not decode are corrupt, named.
#[tokio::test]
async fn unknown_preferences_are_left_out_and_bad_capabilities_are_corrupt() {
    let (_dir, store) = fresh().await;
    store
        .set_usage_pref("game", Some(cpns_wire::Preference::Shared))
        .await
        .unwrap();
    raw(
        &store,
        "INSERT INTO usage_prefs (service, preference) VALUES ('video', 'public')",
    )
    .await
    .unwrap();
    assert_eq!(
        store.usage_prefs().await.unwrap(),
        vec![("game".to_owned(), cpns_wire::Preference::Shared)]
    );
    enroll(&store, "pne-1").await;
    raw(&store, "UPDATE entities SET capabilities = x'ff'")
        .await
        .unwrap();
    let err = store.entity(&eid("pne-1")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref column, .. } if column == "capabilities"),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_member_rows_are_corrupt() {
    let (_dir, store) = fresh().await;
    store
        .save_local_pn(&crate::LocalPn {
            pn_id: PnId::from_bytes([3; 16]),
            gateway: eid("gw"),
            members: vec![crate::LocalMember {
                pne_id: eid("pne-1"),
                capabilities: None,
                sealed_local_key: None,
                route: None,
                contents: Vec::new(),
            }],
            stored_at: 5,
            sealed_session_key: None,
            group: None,
            expires_at: None,
            secure_seq: 0,
        })
        .await
        .unwrap();
    raw(&store, "UPDATE local_members SET pne_id = ''")
        .await
        .unwrap();
    let err = store.local_pns().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

/// journal mode, foreign keys, synchronous, query_only and busy timeout of a connection.
fn settings(c: &rusqlite::Connection) -> crate::Result<(String, i64, i64, i64, i64)> {
    let get = |name: &str| c.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
    Ok((
        c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
        get("foreign_keys")?,
        get("synchronous")?,
        get("query_only")?,
        get("busy_timeout")?,
    ))
}

#[tokio::test]
async fn open_sets_wal_foreign_keys_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    for (durability, expected) in [(Durability::Normal, 1_i64), (Durability::Full, 2)] {
        let store = SqliteStore::open_with(&path, durability).await.unwrap();
        let writer = store.writer().run(settings).await.unwrap();
        assert_eq!(writer, ("wal".to_owned(), 1, expected, 0, 5000));
        let reader = store.readers().read(settings).unwrap();
        assert_eq!(reader, ("wal".to_owned(), 1, expected, 1, 5000));
        store.close().await;
    }
}

#[tokio::test]
async fn debug_shows_only_the_path() {
    let (dir, store) = fresh().await;
    let text = format!("{store:?}");
    assert!(text.starts_with("SqliteStore"), "{text}");
    assert!(text.contains(&*dir.path().to_string_lossy()), "{text}");
    assert_eq!(store.path(), dir.path().join("store.db"));
    assert!(!text.contains("pool"), "{text}");
}

#[tokio::test]
async fn closed_store_fails_cleanly() {
    let (_dir, store) = fresh().await;
    store.close().await;
    let err = store.all_pns().await.unwrap_err();
    assert!(matches!(err, StoreError::Failed(_)), "{err:?}");
}

/// The store checks owners and PNs before it writes, so the API never trips a foreign key; the
/// mapping of the constraint errors SQLite reports is still what `StoreError` promises, for the
/// writes a later method might leave to the schema.
#[tokio::test]
async fn constraint_violations_map_to_not_found_and_conflict() {
    let (_dir, store) = fresh().await;
    let err = raw(
        &store,
        "INSERT INTO pn_members (pn_seq, pne_id, position, initiator, authenticated, joined_at) \
         VALUES (9, 'pne-1', 0, 0, 0, 1)",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref what } if what.contains("FOREIGN KEY")),
        "{err:?}"
    );
    let err = raw(&store, "INSERT INTO users (id) VALUES ('bob'), ('bob')")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref what } if what.contains("UNIQUE")),
        "{err:?}"
    );
    // Neither failed write left anything behind.
    let users = store
        .readers()
        .read(|c| Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))?))
        .unwrap();
    assert_eq!(users, 0);
}

/// The SQL of the first `n` migration files, as the sqlx-based backend applied them.
fn old_migrations(n: usize) -> Vec<(i64, &'static str, &'static str)> {
    let all = [
        (
            1,
            "init",
            include_str!("../../migrations/sqlite/0001_init.sql"),
        ),
        (
            2,
            "replays",
            include_str!("../../migrations/sqlite/0002_replays.sql"),
        ),
        (
            3,
            "contents",
            include_str!("../../migrations/sqlite/0003_contents.sql"),
        ),
        (
            4,
            "local session",
            include_str!("../../migrations/sqlite/0004_local_session.sql"),
        ),
    ];
    all[..n].to_vec()
}

/// Builds a database file the way the sqlx-based backend left it: WAL, the first `applied`
/// migrations run, each recorded in `_sqlx_migrations` (sqlx's own table definition and row
/// shape), `user_version` 0, and a PN with two members.
fn sqlx_made_database(path: &std::path::Path, applied: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);",
    )
    .unwrap();
    for (version, description, sql) in old_migrations(applied) {
        conn.execute_batch(sql).unwrap();
        conn.execute(
            "INSERT INTO _sqlx_migrations ( version, description, success, checksum, \
             execution_time ) VALUES ( ?1, ?2, TRUE, randomblob(48), 2691016 )",
            rusqlite::params![version, description],
        )
        .unwrap();
    }
    conn.execute_batch(
        "INSERT INTO users (id) VALUES ('alice');
         INSERT INTO pns (pn_id, gateway, owner, state, created_at, seq)
             VALUES (x'07070707070707070707070707070707', 'gw', 'alice', 'active', 5, 1);
         INSERT INTO pn_members (pn_id, pne_id, position, initiator, authenticated, joined_at)
             VALUES (x'07070707070707070707070707070707', 'pne-1', 0, 1, 1, 6),
                    (x'07070707070707070707070707070707', 'pne-2', 1, 0, 1, 7);",
    )
    .unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0);
}

fn user_version(store: &SqliteStore) -> i64 {
    store
        .readers()
        .read(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
        .unwrap()
}

#[tokio::test]
async fn an_old_sqlx_database_opens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    for applied in [3, 4] {
        let path = dir.path().join(format!("old-{applied}.db"));
        sqlx_made_database(&path, applied);
        if applied == 3 {
            // A failed attempt at 0004, as a row (sqlx records only successes on SQLite, but
            // a row that says it failed must not count as applied).
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO _sqlx_migrations ( version, description, success, checksum, \
                 execution_time ) VALUES ( 4, 'local session', FALSE, x'00', -1 )",
                [],
            )
            .unwrap();
        }
        // Re-running a migration sqlx had applied would fail (its tables exist): opening
        // succeeds only if exactly the missing ones run.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(user_version(&store), super::migrate::LATEST);
        let pn = store.pn(&PnId::from_bytes([7; 16])).await.unwrap().unwrap();
        let members: Vec<&str> = pn.members.iter().map(|m| m.pne_id.as_str()).collect();
        assert_eq!(members, ["pne-1", "pne-2"]);
        assert!(pn.members[0].contents.is_empty());
        // 0004's table is there.
        let session = crate::LocalSession {
            cpns_id: cpns_wire::CpnsId::new("cpns-000001").unwrap(),
            pn_id: PnId::from_bytes([7; 16]),
            sealed_session_key: vec![1],
            lifetime_s: 60,
            stored_at: 8,
        };
        store.save_local_session(&session).await.unwrap();
        assert_eq!(store.local_session().await.unwrap(), Some(session));
        store.close().await;
        // From now on user_version says where the schema is; sqlx's table stays as it was.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(user_version(&store), super::migrate::LATEST);
        let rows: i64 = store
            .readers()
            .read(|c| Ok(c.query_row("SELECT count(*) FROM _sqlx_migrations", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, 4);
        store.close().await;
    }
}

#[tokio::test]
async fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    let newer = super::migrate::LATEST + 1;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", newer).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    assert!(
        text.contains(&format!("schema version {newer}, newer than"))
            && text.contains("newer cpns"),
        "{text}"
    );
    // Refusing changed nothing.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, newer);
}

/// Checkpoints are the checkpointer's: the writer's own threshold is only the backstop, a
/// `PASSIVE` checkpoint copies every committed frame when no reader holds one back, and the
/// checkpointer thread keeps running until the store closes (then it stops, and the writer,
/// closing last, still removes the WAL).
#[tokio::test]
async fn checkpoints_run_beside_the_writer_not_in_its_commits() {
    let (dir, store) = fresh().await;
    let threshold = store
        .writer()
        .run(|c| Ok(c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get::<_, i64>(0))?))
        .await
        .unwrap();
    assert_eq!(
        threshold,
        i64::from(super::checkpointer::WRITER_AUTOCHECKPOINT)
    );
    for n in 0..20 {
        store.register_pn(&pn(n)).await.unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let done = super::checkpointer::checkpoint(&conn).unwrap();
    assert!(!done.busy);
    assert_eq!(done.log, done.checkpointed, "{done:?}");
    // The thread ticks on its own: it signals each checkpoint it ran.
    assert!(
        store
            .checkpointer()
            .wait_for_runs(2, std::time::Duration::from_secs(10)),
        "the checkpointer never ran"
    );
    drop(conn);
    // Closing joins the thread and closes its connection before the writer's: the writer's,
    // closing last, removes the WAL (it would stay if the checkpointer still held the file).
    store.close().await;
    assert!(!dir.path().join("store.db-wal").exists());
}

/// Schema 5 rebuilds `pns`, `pn_members` and `replays` (decision 24): a database at schema 4
/// keeps every PN with its place in creation order and its members in their order (not the
/// order of their ids), every kept answer, and a PN registered afterwards comes last.
#[tokio::test]
async fn schema_4_data_survives_the_clustered_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    for (_, _, sql) in old_migrations(4) {
        conn.execute_batch(sql).unwrap();
    }
    // Capabilities and contents as earlier builds wrote them: their types' CBOR.
    let caps = cpns_wire::DeviceCapabilities {
        device_type: "phone".into(),
        ..cpns_wire::DeviceCapabilities::default()
    };
    let items = vec![cpns_wire::ContentItem {
        name: "song".into(),
        media_type: "audio/mpeg".into(),
    }];
    let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (caps_hex, items_hex) = (
        hex(minicbor::to_vec(&caps).unwrap()),
        hex(minicbor::to_vec(&items).unwrap()),
    );
    conn.execute_batch(&format!(
        "PRAGMA user_version = 4;
         INSERT INTO users (id) VALUES ('alice');
         INSERT INTO pns (pn_id, gateway, owner, state, created_at, seq) VALUES
             (x'09090909090909090909090909090909', 'gw-b', 'alice', 'active', 5, 1),
             (x'01010101010101010101010101010101', 'gw-a', 'alice', 'pending', 6, 2),
             (x'05050505050505050505050505050505', 'gw-b', 'alice', 'active', 7, 3);
         INSERT INTO pn_members (pn_id, pne_id, position, initiator, authenticated, joined_at,
                                 sealed_session_key, capabilities, contents) VALUES
             (x'09090909090909090909090909090909', 'pne-z', 0, 1, 1, 8, x'aa', x'{caps_hex}',
              x'{items_hex}'),
             (x'09090909090909090909090909090909', 'pne-a', 1, 0, 0, 9, NULL, NULL, NULL),
             (x'05050505050505050505050505050505', 'pne-m', 0, 1, 1, 10, x'bb', NULL, NULL);
         INSERT INTO replays (sender, request_id, answer, created_at) VALUES
             ('gw-b', -3, x'0102', 11);",
    ))
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(user_version(&store), super::migrate::LATEST);
    let order =
        |pns: Vec<PnRecord>| -> Vec<u8> { pns.iter().map(|p| p.pn_id.as_bytes()[0]).collect() };
    assert_eq!(order(store.all_pns().await.unwrap()), [9, 1, 5]);
    let of_b = store.pns_of_gateway(&eid("gw-b")).await.unwrap();
    assert_eq!(order(of_b.clone()), [9, 5]);
    let first = &of_b[0];
    let members: Vec<&str> = first.members.iter().map(|m| m.pne_id.as_str()).collect();
    assert_eq!(members, ["pne-z", "pne-a"]);
    let z = &first.members[0];
    assert!(z.initiator && z.authenticated);
    assert_eq!(
        (
            z.joined_at,
            z.sealed_session_key.as_deref(),
            z.capabilities.as_ref(),
            &z.contents
        ),
        (8, Some(&[0xaa][..]), Some(&caps), &items)
    );
    assert_eq!(first.state, PnState::Active);
    assert_eq!(first.created_at, 5);
    let pending = store.pn(&PnId::from_bytes([1; 16])).await.unwrap().unwrap();
    assert_eq!(
        (pending.state, pending.members.len()),
        (PnState::Pending, 0)
    );
    assert_eq!(
        store.answer_of("gw-b", u64::MAX - 2).await.unwrap(),
        Some(vec![1, 2])
    );
    let kept: Vec<(String, i64)> = store
        .readers()
        .read(|c| {
            let mut stmt =
                c.prepare("SELECT name, \"unique\" FROM pragma_index_list('replays')")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .unwrap();
    assert_eq!(kept, [("replays_key".to_owned(), 1)]);
    // New rows go after the old ones; the foreign key from members to PNs still holds.
    let mut later = pn(4);
    later.gateway = eid("gw-b");
    store.register_pn(&later).await.unwrap();
    assert_eq!(
        order(store.pns_of_gateway(&eid("gw-b")).await.unwrap()),
        [9, 5, 4]
    );
    let err = raw(
        &store,
        "INSERT INTO pn_members (pn_seq, pne_id, position, initiator, authenticated, joined_at) \
         VALUES (99, 'pne-1', 0, 0, 0, 1)",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    // Removing a PN removes its members with it.
    assert!(
        store
            .remove_pending_pn(&PnId::from_bytes([1; 16]))
            .await
            .unwrap()
    );
    raw(
        &store,
        "DELETE FROM pns WHERE pn_id = x'09090909090909090909090909090909'",
    )
    .await
    .unwrap();
    let left = store
        .readers()
        .read(|c| {
            Ok(c.query_row("SELECT count(*) FROM pn_members", [], |r| {
                r.get::<_, i64>(0)
            })?)
        })
        .unwrap();
    assert_eq!(left, 1);
    store.close().await;
}

/// Kept answers are purged from the front of the table, at most 64 per write (a write must not
/// take longer the more there is to purge), and the purge catches up because it removes more
/// than the one record each write adds.
#[tokio::test]
async fn the_answer_purge_is_bounded_per_write_and_catches_up() {
    let (_dir, store) = fresh().await;
    for id in 0..100 {
        store
            .remember_answer("gw-1", id, b"old", 1_000, 10_000)
            .await
            .unwrap();
    }
    let count = |store: &SqliteStore| {
        store
            .readers()
            .read(|c| Ok(c.query_row("SELECT count(*) FROM replays", [], |r| r.get::<_, i64>(0))?))
            .unwrap()
    };
    assert_eq!(count(&store), 100);
    store
        .remember_answer("gw-2", 1, b"new", 20_000, 10_000)
        .await
        .unwrap();
    assert_eq!(count(&store), 100 - 64 + 1);
    store
        .remember_answer("gw-2", 2, b"new", 20_001, 10_000)
        .await
        .unwrap();
    assert_eq!(count(&store), 2);
    assert_eq!(store.answer_of("gw-1", 99).await.unwrap(), None);
    assert_eq!(
        store.answer_of("gw-2", 1).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
}

/// A store is its owner's only (crate::private): the database, and the WAL and shared-memory
/// files SQLite makes beside it while it is open, are mode 0600 whatever the umask; a database
/// left open to others is narrowed when it is opened again.
#[cfg(unix)]
#[tokio::test]
async fn the_store_and_its_wal_are_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (dir, store) = fresh().await;
    enroll(&store, "gw-1").await;
    let db = store.path().to_path_buf();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    store.close().await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = SqliteStore::open(&db).await.unwrap();
    assert_eq!(mode(&db), 0o600);
    assert!(store.entity(&eid("gw-1")).await.unwrap().is_some());
    store.close().await;
    drop(dir);
}

/// The merge ends with the directory's index in one segment (FTS5's `%_idx` table names the
/// segment of each of its b-trees' pages): forty publishes left several, of several levels,
/// which the automatic merges alone would not bring into one.
#[tokio::test]
async fn a_directory_merge_leaves_one_segment() {
    let (_dir, store) = fresh().await;
    enroll(&store, "tv").await;
    for n in 0..40 {
        let e = crate::ServiceEntry {
            dir_id: 0,
            offerer: eid("tv"),
            owner: UserId::new("alice").unwrap(),
            service_id: format!("svc-{n}"),
            service_type: "media.renderer".into(),
            keywords: vec!["video".into(), format!("kw{n}")],
            scope: crate::ServiceScope::Public,
            description: b"{}".to_vec(),
            updated_at: 1,
            expires_at: 1 << 40,
        };
        store.publish_service(&e).await.unwrap();
    }
    let segments = |store: &SqliteStore| {
        store
            .readers()
            .read(|c| {
                Ok(c.query_row(
                    "SELECT count(DISTINCT segid) FROM services_fts_idx",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .unwrap()
    };
    assert!(segments(&store) > 1, "{}", segments(&store));
    let mut start = true;
    while store.merge_directory(4, start).await.unwrap() {
        start = false;
    }
    assert_eq!(segments(&store), 1);
}
