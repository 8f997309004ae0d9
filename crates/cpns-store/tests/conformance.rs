//! Runs the conformance suite (`tests/suite`) against [`SqliteStore`]: the cases of
//! [`ServerStore`](cpns_store::ServerStore) and those of
//! [`DeviceStore`](cpns_store::DeviceStore), each on a new database file in its own temporary
//! directory, plus the SQLite durability checks: what was written survives closing, or just
//! dropping, the store.

#![allow(clippy::unwrap_used)]

mod suite;

use std::path::Path;
use std::sync::Arc;

use cpns_store::{Durability, SqliteStore};
use tempfile::TempDir;

async fn fresh() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("cpns.db"))
        .await
        .unwrap();
    (dir, store)
}

/// One test per case of the suite module `$m`, each on a fresh store.
macro_rules! conformance {
    ($m:path => $($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            use $m as cases;
            let (_dir, store) = fresh().await;
            cases::$case(&store).await;
            store.close().await;
        }
    )*};
}

/// The server's store of record.
mod server {
    use super::*;

    conformance!(crate::suite =>
    entity_round_trip,
    duplicate_entity_conflicts,
    entity_needs_owner,
    entities_skip_absent_ids,
    entity_reports,
    pn_round_trip,
    reregister_replaces_members,
    other_gateway_conflicts,
    failed_registration_is_atomic,
    upsert_member_adds_and_updates,
    secure_windows_are_kept_and_start_again_with_a_new_session_key,
    upsert_member_needs_pn,
    members_are_never_downgraded,
    reconcile_follows_the_gateway_list,
    confirm_pns_activates_listed_pending_pns_only,
    remove_pending_pn_only_when_pending,
    release_pn_removes_the_gateways_pn_only,
    answers_are_kept_for_retries,
    update_members_removes_then_upserts,
    update_members_needs_pn,
    group_epochs_move_with_membership,
    register_pne_allocates_and_upserts,
    register_pne_needs_pn_and_entity,
    pns_of_gateway,
    pns_of_owner,
    member_owner_round_trips,
    members_read_with_their_capabilities_of_record,
    departures_are_kept_until_the_pne_is_back,
    all_pns_in_creation_order,
    cpns_ids,
    statuses_are_recorded_with_their_attributes,
    a_status_of_an_unknown_entity_records_nothing,
    a_gateways_end_turns_what_it_reported_offline,
    subscriptions_are_kept_once_per_request,
    usage_is_stored_once_and_charged_to_the_consumer,
    served_by_names_the_members_of_the_gateways_pns,
        pn_view_reads_a_pn_with_its_answer_and_entities,
        member_view_gives_an_ended_membership_to_a_non_member,
        inventory_view_reads_the_askers_pns,
        an_inventory_shows_what_members_offer_as_the_asker_may_see_it,
        usage_owners_name_the_reporters_and_the_pns_users,
        charging_records_of_an_entity_are_its_users,
        status_view_reads_what_a_query_names,
        services_publish_update_and_unpublish,
        services_are_found_by_keywords_type_and_page,
        keywords_match_whole_and_all_of_several_in_any_order,
        the_directory_index_merges_a_step_at_a_time,
        services_are_shown_by_scope_and_lease,
        directory_view_reads_the_asker_and_what_it_may_see,
        watches_are_candidates_of_entries_that_may_match,
        groups_are_made_changed_one_epoch_at_a_time_and_deleted,
        a_users_devices_are_reached_in_every_pn_they_are_proven_in,
        delivery_records_open_once_close_once_and_read_by_user,
        a_delivered_chargeable_part_is_charged_to_its_user,
        a_sessions_items_are_recorded_ended_and_charged_each,
    );
}

/// A device's own store.
mod device {
    use super::*;

    conformance!(crate::suite::device =>
        local_inventory,
        local_pns_keep_their_session_key_and_epoch,
        local_session_is_kept_and_replaced,
        departed_keys_are_kept_replaced_and_removed,
        service_group_keys_are_kept_replaced_and_removed,
        delivery_routes_are_kept_replaced_and_removed,
        delivery_sessions_are_kept_replaced_and_removed,
        a_pne_keeps_its_usage_until_it_is_sent,
        usage_preferences_are_kept_per_service,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes() {
    let (_dir, store) = fresh().await;
    suite::concurrent_writes(Arc::new(store.clone())).await;
    store.close().await;
}

async fn reopen_check(path: &Path) {
    let store = SqliteStore::open(path).await.unwrap();
    suite::durable_check(&store).await;
    suite::device::durable_check(&store).await;
    store.close().await;
}

#[tokio::test]
async fn survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpns.db");
    let store = SqliteStore::open(&path).await.unwrap();
    suite::durable_write(&store).await;
    suite::device::durable_write(&store).await;
    store.close().await;
    reopen_check(&path).await;
}

#[tokio::test]
async fn survives_drop_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpns.db");
    let store = SqliteStore::open_with(&path, Durability::Full)
        .await
        .unwrap();
    suite::durable_write(&store).await;
    suite::device::durable_write(&store).await;
    drop(store);
    reopen_check(&path).await;
}

#[tokio::test]
async fn reopening_is_idempotent_and_bad_paths_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpns.db");
    // Opening twice runs the migrations once; the second open finds them applied.
    SqliteStore::open(&path).await.unwrap().close().await;
    SqliteStore::open(&path).await.unwrap().close().await;
    // A file in a directory that does not exist cannot be created: an error, not a panic.
    let err = SqliteStore::open(&dir.path().join("missing/cpns.db"))
        .await
        .unwrap_err();
    assert!(matches!(err, cpns_store::StoreError::Failed(_)), "{err:?}");
}
