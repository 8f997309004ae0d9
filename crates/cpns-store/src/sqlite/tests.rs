//! Unit tests of the SQLite backend that need raw access to the tables: rows written behind
//! the store's back must come out as [`StoreError::Corrupt`], never as a panic; and the
//! connection settings must be what `open` promises.

use cpns_wire::{EntityId, PnId, UserId};
use tempfile::TempDir;

use super::{Durability, SqliteStore};
use crate::{EntityKind, EntityRecord, PnRecord, PnState, Store, StoreError};

async fn fresh() -> (TempDir, SqliteStore) {
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
            status: None,
            cpns_id: None,
            enrolled_at: 7,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_pn_state_is_corrupt() {
    let (_dir, store) = fresh().await;
    store.register_pn(&pn(1)).await.unwrap();
    store.register_pn(&pn(2)).await.unwrap();
    sqlx::query("UPDATE pns SET state = 'bogus' WHERE pn_id = ?")
        .bind(&[1u8; 16][..])
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.pn(&PnId::from_bytes([1; 16])).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("bogus")),
        "{err:?}"
    );
    assert!(matches!(store.all_pns().await, Err(StoreError::Corrupt(_))));
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
    sqlx::query("UPDATE entities SET kind = 'toaster', cpns_id = 'has space'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.entity(&eid("pne-1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    sqlx::query("UPDATE entities SET kind = 'pne'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.entities(&[eid("pne-1")]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("cpns_id")),
        "{err:?}"
    );
    let err = store.allocate_cpns_id(&eid("pne-1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
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
                contents: None,
            }],
            stored_at: 5,
        })
        .await
        .unwrap();
    sqlx::query("UPDATE local_members SET pne_id = ''")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.local_pns().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn open_sets_wal_foreign_keys_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    for (durability, expected) in [(Durability::Normal, 1_i64), (Durability::Full, 2)] {
        let store = SqliteStore::open_with(&path, durability).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(sync, expected);
        drop(conn);
        store.close().await;
    }
}

#[tokio::test]
async fn debug_shows_only_the_path() {
    let (dir, store) = fresh().await;
    let text = format!("{store:?}");
    assert!(text.starts_with("SqliteStore"), "{text}");
    assert!(text.contains(&*dir.path().to_string_lossy()), "{text}");
    assert!(!text.contains("pool"), "{text}");
}

#[tokio::test]
async fn closed_store_fails_cleanly() {
    let (_dir, store) = fresh().await;
    store.close().await;
    let err = store.all_pns().await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
}

/// The store checks owners and PNs before it writes, so the API never trips a foreign key; the
/// mapping of the constraint errors SQLite reports is still what `StoreError` promises, for the
/// writes a later method might leave to the schema.
#[tokio::test]
async fn constraint_violations_map_to_not_found_and_conflict() {
    let (_dir, store) = fresh().await;
    let orphan = sqlx::query(
        "INSERT INTO pn_members (pn_id, pne_id, position, initiator, authenticated, joined_at) \
         VALUES (?, 'pne-1', 0, 0, 0, 1)",
    )
    .bind(&[9u8; 16][..])
    .execute(store.pool())
    .await
    .unwrap_err();
    let err = StoreError::from(orphan);
    assert!(
        matches!(err, StoreError::NotFound(ref m) if m.contains("FOREIGN KEY")),
        "{err:?}"
    );
    let twice = sqlx::query("INSERT INTO users (id) VALUES ('bob'), ('bob')")
        .execute(store.pool())
        .await
        .unwrap_err();
    let err = StoreError::from(twice);
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("UNIQUE")),
        "{err:?}"
    );
}
