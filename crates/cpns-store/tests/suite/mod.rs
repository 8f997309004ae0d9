//! The backend-neutral conformance suite, split as the store's contracts are: the cases of
//! [`ServerStore`] (this module and `status_usage`) and those of
//! [`DeviceStore`](cpns_store::DeviceStore) (`device`). Each case takes a fresh, empty store
//! and checks one documented behaviour. A backend's test file runs every case against a new
//! database (see `tests/conformance.rs` for SQLite); a PostgreSQL runner reuses this module.

pub mod device;
mod groups;
mod services;
mod status_usage;
mod views;

use std::sync::Arc;

pub use groups::*;
pub use services::*;
pub use status_usage::*;
pub use views::*;

use cpns_store::{
    Departed, Departure, EntityKind, EntityRecord, GroupEpoch, PnMember, PnRecord, PnState,
    ServerStore, StoreError,
};
use cpns_wire::{ContentItem, CpnsId, DeviceCapabilities, EntityId, PnId, Status, UserId};

fn eid(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn pid(n: u8) -> PnId {
    let mut b = [0xa0; 16];
    b[15] = n;
    PnId::from_bytes(b)
}

/// Capabilities of a device of this type.
fn caps(device_type: &str) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device_type.into(),
        networks: vec!["wlan".into()],
        ..DeviceCapabilities::default()
    }
}

/// One announced content item named `name`.
fn contents(name: &str) -> Vec<ContentItem> {
    vec![ContentItem {
        name: name.into(),
        media_type: "text/plain".into(),
    }]
}

fn entity(id: &str, owner: &str) -> EntityRecord {
    EntityRecord {
        id: eid(id),
        kind: EntityKind::Pne,
        owner: uid(owner),
        sealed_eukey: format!("sealed:{id}").into_bytes(),
        capabilities: None,
        cpns_id: None,
        enrolled_at: 1_700_000_000_000,
    }
}

fn member(id: &str, initiator: bool) -> PnMember {
    PnMember {
        pne_id: eid(id),
        initiator,
        authenticated: true,
        capabilities: Some(caps(&format!("device of {id}"))),
        sealed_session_key: Some(format!("sk:{id}").into_bytes()),
        joined_at: 1_700_000_000_100,
        owner: None,
        contents: contents(&format!("contents:{id}")),
    }
}

fn pn(n: u8, gateway: &str, members: &[&str]) -> PnRecord {
    PnRecord {
        pn_id: pid(n),
        gateway: eid(gateway),
        owner: uid("alice"),
        state: PnState::Active,
        created_at: 1_700_000_000_000 + i64::from(n),
        members: members
            .iter()
            .enumerate()
            .map(|(i, m)| member(m, i == 0))
            .collect(),
        group: None,
        expires_at: None,
        max_members: None,
    }
}

async fn enroll<S: ServerStore>(s: &S, ids: &[&str]) {
    s.ensure_user(&uid("alice")).await.unwrap();
    for id in ids {
        s.insert_entity(&entity(id, "alice")).await.unwrap();
    }
}

fn ids(pns: &[PnRecord]) -> Vec<PnId> {
    pns.iter().map(|p| p.pn_id).collect()
}

/// An enrolled entity reads back exactly; `ensure_user` is idempotent; absent ids read `None`.
pub async fn entity_round_trip<S: ServerStore>(s: &S) {
    s.ensure_user(&uid("alice")).await.unwrap();
    s.ensure_user(&uid("alice")).await.unwrap();
    let mut e = entity("pne-1", "alice");
    e.kind = EntityKind::Gateway;
    e.capabilities = Some(DeviceCapabilities {
        battery_pct: Some(30),
        gateway_capable: true,
        ..caps("hub")
    });
    e.cpns_id = Some(CpnsId::new("cpns-external-7").unwrap());
    s.insert_entity(&e).await.unwrap();
    assert_eq!(s.entity(&e.id).await.unwrap(), Some(e));
    assert_eq!(s.entity(&eid("nobody")).await.unwrap(), None);
}

/// Enrolling a taken id is a conflict and leaves the first record alone.
pub async fn duplicate_entity_conflicts<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1"]).await;
    let mut again = entity("pne-1", "alice");
    again.sealed_eukey = b"other".to_vec();
    let err = s.insert_entity(&again).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(
        s.entity(&eid("pne-1")).await.unwrap(),
        Some(entity("pne-1", "alice"))
    );
}

/// An entity's owner must be a user.
pub async fn entity_needs_owner<S: ServerStore>(s: &S) {
    let err = s
        .insert_entity(&entity("pne-1", "ghost"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(s.entity(&eid("pne-1")).await.unwrap(), None);
}

/// `entities` leaves absent ids out and keeps the order of first mention.
pub async fn entities_skip_absent_ids<S: ServerStore>(s: &S) {
    enroll(s, &["a", "b", "c"]).await;
    let got = s
        .entities(&[eid("c"), eid("x"), eid("a"), eid("c")])
        .await
        .unwrap();
    assert_eq!(got, vec![entity("c", "alice"), entity("a", "alice")]);
    assert_eq!(s.entities(&[]).await.unwrap(), vec![]);
    assert_eq!(s.entities(&[eid("x"), eid("y")]).await.unwrap(), vec![]);
    let many: Vec<EntityId> = (0..2000).map(|i| eid(&format!("absent-{i}"))).collect();
    assert_eq!(s.entities(&many).await.unwrap(), vec![]);
}

/// A report records what it carries in one write and keeps the rest (004 §5.5.1, §5.5.3): its
/// capabilities with their attributes, its own status (no label, no reporting PN GW); the
/// record comes back as now. An unknown entity is not found and nothing is recorded.
pub async fn entity_reports<S: ServerStore>(s: &S) {
    enroll(s, &["gw-1"]).await;
    let id = eid("gw-1");
    let full = DeviceCapabilities {
        battery_pct: Some(80),
        battery_minutes: Some(300),
        free_memory_mb: Some(512),
        ..caps("hub")
    };
    let rec = s.record_report(&id, Some(&full), None).await.unwrap();
    assert_eq!((rec.status, rec.since), (Status::Offline, None));
    assert_eq!(rec.attributes, cpns_store::Attributes::of(&full));
    assert_eq!(
        s.entity(&id).await.unwrap().unwrap().capabilities,
        Some(full.clone())
    );
    // A PN GW reported it with a label before; its own status clears both.
    let mut away = change("gw-1", Status::Custom, 10);
    away.label = Some("away".into());
    away.reported_by = Some(eid("gw-2"));
    s.record_statuses(&[away]).await.unwrap();
    let rec = s
        .record_report(&id, None, Some((Status::Online, 42)))
        .await
        .unwrap();
    assert_eq!(
        (rec.status, rec.since, rec.label, rec.reported_by),
        (Status::Online, Some(42), None, None)
    );
    assert_eq!(rec.attributes.battery_pct, Some(80), "capabilities kept");
    // Both at once, in one write.
    let low = DeviceCapabilities {
        battery_pct: Some(20),
        ..caps("hub")
    };
    let rec = s
        .record_report(&id, Some(&low), Some((Status::Busy, 50)))
        .await
        .unwrap();
    assert_eq!((rec.status, rec.since), (Status::Busy, Some(50)));
    assert_eq!(rec.attributes, cpns_store::Attributes::of(&low));
    // Neither: the record as it is.
    assert_eq!(s.record_report(&id, None, None).await.unwrap(), rec);
    assert_eq!(
        s.statuses(std::slice::from_ref(&id)).await.unwrap(),
        vec![rec]
    );
    let err = s
        .record_report(&eid("ghost"), Some(&low), Some((Status::Online, 5)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref what } if what.contains("ghost")),
        "{err:?}"
    );
    assert!(s.entity(&eid("ghost")).await.unwrap().is_none());
}

fn change(id: &str, status: Status, since: i64) -> cpns_store::StatusChange {
    cpns_store::StatusChange {
        entity: eid(id),
        status,
        label: None,
        since,
        reported_by: None,
    }
}

/// A registered PN reads back with its members in order.
pub async fn pn_round_trip<S: ServerStore>(s: &S) {
    let mut p = pn(1, "gw-1", &["pne-3", "pne-1", "pne-2"]);
    p.members[1].authenticated = false;
    p.members[1].capabilities = None;
    p.members[2].sealed_session_key = None;
    s.register_pn(&p).await.unwrap();
    assert_eq!(s.pn(&p.pn_id).await.unwrap(), Some(p));
    assert_eq!(s.pn(&pid(99)).await.unwrap(), None);
}

/// A retried registration by the same gateway replaces owner, state and members and keeps
/// `created_at`.
pub async fn reregister_replaces_members<S: ServerStore>(s: &S) {
    let first = pn(1, "gw-1", &["pne-1", "pne-2"]);
    s.register_pn(&first).await.unwrap();
    let mut retry = pn(1, "gw-1", &["pne-2", "pne-4"]);
    retry.state = PnState::Released;
    retry.owner = uid("bob");
    retry.created_at = first.created_at + 1000;
    s.register_pn(&retry).await.unwrap();
    let got = s.pn(&pid(1)).await.unwrap().unwrap();
    assert_eq!(
        got,
        PnRecord {
            created_at: first.created_at,
            ..retry
        }
    );
}

/// Registering a PN id another gateway holds is a conflict and changes nothing.
pub async fn other_gateway_conflicts<S: ServerStore>(s: &S) {
    let first = pn(1, "gw-1", &["pne-1"]);
    s.register_pn(&first).await.unwrap();
    let err = s.register_pn(&pn(1, "gw-2", &["pne-9"])).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(first));
}

/// A registration that fails half-way (a member listed twice) leaves no trace.
pub async fn failed_registration_is_atomic<S: ServerStore>(s: &S) {
    let err = s
        .register_pn(&pn(1, "gw-1", &["pne-1", "pne-1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.pn(&pid(1)).await.unwrap(), None);
    assert_eq!(s.all_pns().await.unwrap(), vec![]);

    let good = pn(2, "gw-1", &["pne-1", "pne-2"]);
    s.register_pn(&good).await.unwrap();
    let err = s
        .register_pn(&pn(2, "gw-1", &["pne-3", "pne-3"]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.pn(&pid(2)).await.unwrap(), Some(good));
}

/// `upsert_member` appends a new member and updates an existing one in place.
pub async fn upsert_member_adds_and_updates<S: ServerStore>(s: &S) {
    let mut p = pn(1, "gw-1", &["pne-1", "pne-2"]);
    s.register_pn(&p).await.unwrap();

    let mut new = member("pne-3", false);
    new.authenticated = false;
    new.sealed_session_key = None;
    s.upsert_member(&pid(1), &new).await.unwrap();
    p.members.push(new);
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));

    let mut update = member("pne-1", false);
    update.capabilities = Some(caps("updated"));
    update.sealed_session_key = Some(b"new-sk".to_vec());
    update.joined_at = 5;
    s.upsert_member(&pid(1), &update).await.unwrap();
    // The initiator flag is never cleared.
    p.members[0] = PnMember {
        joined_at: p.members[0].joined_at,
        owner: None,
        initiator: p.members[0].initiator,
        ..update
    };
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));

    // The unauthenticated pne-3 is upgraded with its session key once it authenticates.
    let mut authed = member("pne-3", false);
    authed.capabilities = None;
    s.upsert_member(&pid(1), &authed).await.unwrap();
    p.members[2].authenticated = true;
    p.members[2].sealed_session_key = authed.sealed_session_key.clone();
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p));
}

/// A member's secure session window (docs/security.md §4.8; schema 13): none at first, kept
/// whole (u64), kept by a write that brings no session key, started again by one that brings
/// a new one (a registration); a window for a non-member is not found.
pub async fn secure_windows_are_kept_and_start_again_with_a_new_session_key<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1", "pne-2"]).await;
    s.register_pn(&pn(1, "gw-1", &["pne-1", "pne-2"]))
        .await
        .unwrap();
    assert_eq!(
        s.secure_window(&pid(1), &eid("pne-1")).await.unwrap(),
        (0, 0)
    );
    s.set_secure_window(&pid(1), &eid("pne-1"), (u64::MAX, 0b1011))
        .await
        .unwrap();
    s.set_secure_window(&pid(1), &eid("pne-2"), (3, 1))
        .await
        .unwrap();
    assert_eq!(
        s.secure_window(&pid(1), &eid("pne-1")).await.unwrap(),
        (u64::MAX, 0b1011)
    );
    // Capabilities without a key keep it.
    let mut caps_only = member("pne-1", false);
    caps_only.sealed_session_key = None;
    caps_only.capabilities = Some(caps("newer"));
    s.upsert_member(&pid(1), &caps_only).await.unwrap();
    assert_eq!(
        s.secure_window(&pid(1), &eid("pne-1")).await.unwrap(),
        (u64::MAX, 0b1011)
    );
    // A registration's new SK_PNE starts it again; the other member's is untouched.
    let mut again = member("pne-1", false);
    again.sealed_session_key = Some(b"sk-new".to_vec());
    s.register_pne(&pid(1), &again, None).await.unwrap();
    assert_eq!(
        s.secure_window(&pid(1), &eid("pne-1")).await.unwrap(),
        (0, 0)
    );
    assert_eq!(
        s.secure_window(&pid(1), &eid("pne-2")).await.unwrap(),
        (3, 1)
    );
    // No member, no PN: nothing kept.
    assert!(matches!(
        s.set_secure_window(&pid(1), &eid("pne-9"), (1, 1)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.set_secure_window(&pid(2), &eid("pne-1"), (1, 1)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        s.secure_window(&pid(2), &eid("pne-1")).await.unwrap(),
        (0, 0)
    );
}

/// No write turns an authenticated member with a session key into an unauthenticated one, drops
/// its key or capabilities, or clears its initiator flag.
pub async fn members_are_never_downgraded<S: ServerStore>(s: &S) {
    let p = pn(1, "gw-1", &["pne-1", "pne-2"]);
    s.register_pn(&p).await.unwrap();
    let mut initiator = member("pne-1", true);
    initiator.joined_at = p.members[0].joined_at;
    s.upsert_member(&pid(1), &initiator).await.unwrap();
    let before = s.pn(&pid(1)).await.unwrap().unwrap();
    assert!(before.members[0].initiator && before.members[0].authenticated);

    // As a PN update adds a member: unauthenticated, no key, no capabilities, not initiator.
    let weak = |id: &str| PnMember {
        pne_id: eid(id),
        initiator: false,
        authenticated: false,
        capabilities: None,
        sealed_session_key: None,
        joined_at: 9,
        owner: None,
        contents: Vec::new(),
    };
    s.upsert_member(&pid(1), &weak("pne-1")).await.unwrap();
    s.update_members(&pid(1), &[weak("pne-1"), weak("pne-2")], &[], None)
        .await
        .unwrap();
    assert_eq!(s.pn(&pid(1)).await.unwrap().unwrap(), before);
}

/// `upsert_member` on an unknown PN is not found and creates nothing.
pub async fn upsert_member_needs_pn<S: ServerStore>(s: &S) {
    let err = s
        .upsert_member(&pid(7), &member("pne-1", true))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(s.pn(&pid(7)).await.unwrap(), None);
}

/// `update_members` removes (ignoring absent ids), then upserts: new members go at the end,
/// existing ones keep `joined_at` and position; remove and add work in one call.
pub async fn update_members_removes_then_upserts<S: ServerStore>(s: &S) {
    let mut p = pn(1, "gw-1", &["pne-1", "pne-2", "pne-3"]);
    s.register_pn(&p).await.unwrap();

    // Remove one member (and an absent id), add a new one and update an existing one.
    let mut update = member("pne-3", false);
    update.sealed_session_key = Some(b"sk-3b".to_vec());
    update.joined_at = 9;
    let mut new = member("pne-4", false);
    new.capabilities = None;
    s.update_members(
        &pid(1),
        &[new.clone(), update.clone()],
        &[eid("pne-2"), eid("ghost")],
        None,
    )
    .await
    .unwrap();
    let pne1 = p.members[0].clone();
    let pne3 = PnMember {
        joined_at: p.members[2].joined_at,
        owner: None,
        ..update
    };
    p.members = vec![pne1.clone(), pne3.clone(), new.clone()];
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));

    // A PNE both removed and added in one call is re-added at the end, afresh.
    let mut back = member("pne-1", false);
    back.joined_at = 42;
    s.update_members(&pid(1), std::slice::from_ref(&back), &[eid("pne-1")], None)
        .await
        .unwrap();
    p.members = vec![pne3.clone(), new.clone(), back.clone()];
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));

    // Empty lists change nothing; a retried call gives the same result.
    s.update_members(&pid(1), &[], &[], None).await.unwrap();
    s.update_members(&pid(1), std::slice::from_ref(&back), &[eid("pne-2")], None)
        .await
        .unwrap();
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));

    // Removing every member leaves an empty PN.
    s.update_members(
        &pid(1),
        &[],
        &[eid("pne-3"), eid("pne-4"), eid("pne-1")],
        None,
    )
    .await
    .unwrap();
    p.members.clear();
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p));
}

/// A PN's group key epoch: stored with the PN, moved by `update_members` with the membership
/// change in one write, and left alone without one (schema 6).
pub async fn group_epochs_move_with_membership<S: ServerStore>(s: &S) {
    let epoch = |n: u64| GroupEpoch {
        epoch: n,
        sealed_key: format!("gk-{n}").into_bytes(),
    };
    let mut p = pn(1, "gw-1", &["pne-1", "pne-2"]);
    p.group = Some(epoch(1));
    s.register_pn(&p).await.unwrap();
    assert_eq!(s.pn(&pid(1)).await.unwrap().unwrap().group, Some(epoch(1)));
    // A change without a new epoch keeps the one there is.
    s.update_members(&pid(1), &[member("pne-3", true)], &[], None)
        .await
        .unwrap();
    assert_eq!(s.pn(&pid(1)).await.unwrap().unwrap().group, Some(epoch(1)));
    // A removal with the next epoch: both land.
    s.update_members(&pid(1), &[], &[eid("pne-2")], Some(&epoch(2)))
        .await
        .unwrap();
    let now = s.pn(&pid(1)).await.unwrap().unwrap();
    assert_eq!(now.group, Some(epoch(2)));
    assert!(now.members.iter().all(|m| m.pne_id.as_str() != "pne-2"));
    assert_eq!(s.all_pns().await.unwrap()[0].group, Some(epoch(2)));
    assert_eq!(
        s.pns_of_gateway(&eid("gw-1")).await.unwrap()[0].group,
        Some(epoch(2))
    );
    // A failed change (unknown PN) moves no epoch anywhere.
    assert!(
        s.update_members(&pid(9), &[], &[], Some(&epoch(7)))
            .await
            .is_err()
    );
    assert_eq!(s.pn(&pid(1)).await.unwrap().unwrap().group, Some(epoch(2)));
    // A PN without a group key reads as none.
    s.register_pn(&pn(2, "gw-1", &["pne-1"])).await.unwrap();
    assert_eq!(s.pn(&pid(2)).await.unwrap().unwrap().group, None);
}

/// `update_members` on an unknown PN is not found and creates nothing.
pub async fn update_members_needs_pn<S: ServerStore>(s: &S) {
    let err = s
        .update_members(&pid(7), &[member("pne-1", true)], &[eid("pne-2")], None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(s.pn(&pid(7)).await.unwrap(), None);
    assert_eq!(s.all_pns().await.unwrap(), vec![]);
    // Also when there is nothing to add, so no write of a member could fail on its own.
    for remove in [&[eid("pne-2")][..], &[]] {
        let err = s
            .update_members(&pid(7), &[], remove, None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }
}

/// `register_pne` allocates the PNE's CPNS ID and upserts the member together; a retry
/// returns the same CPNS ID and updates the member in place.
pub async fn register_pne_allocates_and_upserts<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1", "pne-2", "pne-3"]).await;
    let mut p = pn(1, "gw-1", &["pne-1"]);
    s.register_pn(&p).await.unwrap();

    // An existing member gets its CPNS ID and session key, keeping joined_at and position.
    let mut m1 = member("pne-1", false);
    m1.sealed_session_key = Some(b"sk-1b".to_vec());
    m1.joined_at = 3;
    let first = s.register_pne(&pid(1), &m1, None).await.unwrap();
    assert_eq!(first.as_str(), "cpns-000001");
    p.members[0] = PnMember {
        joined_at: p.members[0].joined_at,
        owner: None,
        initiator: p.members[0].initiator,
        ..m1.clone()
    };
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));
    assert_eq!(
        s.entity(&eid("pne-1")).await.unwrap().unwrap().cpns_id,
        Some(first.clone())
    );

    // A new member goes at the end.
    let m2 = member("pne-2", false);
    let second = s.register_pne(&pid(1), &m2, None).await.unwrap();
    assert_eq!(second.as_str(), "cpns-000002");
    p.members.push(m2.clone());
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));

    // Idempotent: a retry returns the same id and uses no number.
    assert_eq!(s.register_pne(&pid(1), &m2, None).await.unwrap(), second);
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p.clone()));
    // A PNE that already has an id (from allocate_cpns_id) keeps it.
    let third = s.allocate_cpns_id(&eid("pne-3")).await.unwrap();
    assert_eq!(third.as_str(), "cpns-000003");
    assert_eq!(
        s.register_pne(&pid(1), &member("pne-3", false), None)
            .await
            .unwrap(),
        third
    );
    // ... and allocate_cpns_id agrees with what register_pne allocated.
    assert_eq!(s.allocate_cpns_id(&eid("pne-2")).await.unwrap(), second);
}

/// `register_pne` with an unknown PN or an unenrolled PNE is not found and changes nothing:
/// no member is added and no CPNS ID number is used up.
pub async fn register_pne_needs_pn_and_entity<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1", "pne-2"]).await;
    let p = pn(1, "gw-1", &[]);
    s.register_pn(&p).await.unwrap();

    // Unknown PN: the PNE is enrolled, yet gets no CPNS ID.
    let err = s
        .register_pne(&pid(7), &member("pne-1", false), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(s.pn(&pid(7)).await.unwrap(), None);
    assert_eq!(
        s.entity(&eid("pne-1")).await.unwrap().unwrap().cpns_id,
        None
    );

    // Unenrolled PNE: the PN gains no member.
    let err = s
        .register_pne(&pid(1), &member("ghost", false), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(p));

    // The failed calls allocated nothing: the next allocation gets the first number.
    assert_eq!(
        s.allocate_cpns_id(&eid("pne-2")).await.unwrap().as_str(),
        "cpns-000001"
    );
    assert_eq!(
        s.register_pne(&pid(1), &member("pne-1", false), None)
            .await
            .unwrap()
            .as_str(),
        "cpns-000002"
    );
}

/// `pns_of_gateway` lists that gateway's PNs, with members, in creation order.
pub async fn pns_of_gateway<S: ServerStore>(s: &S) {
    let a = pn(3, "gw-1", &["pne-1", "pne-2"]);
    let b = pn(2, "gw-2", &["pne-5"]);
    let c = pn(1, "gw-1", &[]);
    for p in [&a, &b, &c] {
        s.register_pn(p).await.unwrap();
    }
    assert_eq!(s.pns_of_gateway(&eid("gw-1")).await.unwrap(), vec![a, c]);
    assert_eq!(s.pns_of_gateway(&eid("gw-2")).await.unwrap(), vec![b]);
    assert_eq!(s.pns_of_gateway(&eid("gw-9")).await.unwrap(), vec![]);
}

/// A member of another user's PN keeps its own user (001 §5.2.1.1 step 10) through
/// registration and reads; an upsert without one keeps it.
pub async fn member_owner_round_trips<S: ServerStore>(s: &S) {
    let mut p = pn(4, "gw-1", &["pne-1", "pne-2"]);
    p.members[1].owner = Some(uid("bob"));
    s.register_pn(&p).await.unwrap();
    assert_eq!(s.pn(&pid(4)).await.unwrap(), Some(p.clone()));
    assert_eq!(s.all_pns().await.unwrap(), vec![p.clone()]);
    let again = PnMember {
        owner: None,
        ..p.members[1].clone()
    };
    s.upsert_member(&pid(4), &again).await.unwrap();
    let read = s.pn(&pid(4)).await.unwrap().unwrap();
    assert_eq!(read.members[1].owner, Some(uid("bob")));
    assert_eq!(read.members[0].owner, None);
}

/// A member removed, or every member of a released PN, is kept as departed with the SK_PNE it
/// held (not one without an SK_PNE); entering the PN again forgets that.
pub async fn departures_are_kept_until_the_pne_is_back<S: ServerStore>(s: &S) {
    let mut p = pn(5, "gw-1", &["pne-1", "pne-2", "pne-3"]);
    p.members[0].sealed_session_key = Some(vec![1; 60]);
    p.members[1].sealed_session_key = Some(vec![2; 60]);
    p.members[2].sealed_session_key = None;
    s.register_pn(&p).await.unwrap();
    assert_eq!(s.departed(&pid(5), &eid("pne-2")).await.unwrap(), None);
    s.update_members(&pid(5), &[], &[eid("pne-2")], None)
        .await
        .unwrap();
    assert_eq!(
        s.departed(&pid(5), &eid("pne-2")).await.unwrap(),
        Some(Departed {
            sealed_session_key: vec![2; 60],
            why: Departure::Removed
        })
    );
    assert_eq!(s.departed(&pid(5), &eid("pne-1")).await.unwrap(), None);
    s.release_pn(&eid("gw-1"), &pid(5)).await.unwrap();
    assert_eq!(
        s.departed(&pid(5), &eid("pne-1")).await.unwrap(),
        Some(Departed {
            sealed_session_key: vec![1; 60],
            why: Departure::Released
        })
    );
    // pne-3 held no SK_PNE: nothing to tell it with.
    assert_eq!(s.departed(&pid(5), &eid("pne-3")).await.unwrap(), None);
    // Back in the PN (registered again), pne-1 is no longer departed.
    s.register_pn(&pn(5, "gw-1", &["pne-9"])).await.unwrap();
    s.upsert_member(&pid(5), &member("pne-1", false))
        .await
        .unwrap();
    assert_eq!(s.departed(&pid(5), &eid("pne-1")).await.unwrap(), None);
    assert!(s.departed(&pid(5), &eid("pne-2")).await.unwrap().is_some());
}

/// `pns_of_owner` lists a user's PNs, with members, in creation order, and no one else's.
pub async fn pns_of_owner<S: ServerStore>(s: &S) {
    let a = pn(3, "gw-1", &["pne-1", "pne-2"]);
    let b = PnRecord {
        owner: uid("bob"),
        ..pn(2, "gw-2", &["pne-5"])
    };
    let c = pn(1, "gw-3", &["pne-1"]);
    for p in [&a, &b, &c] {
        s.register_pn(p).await.unwrap();
    }
    assert_eq!(s.pns_of_owner(&uid("alice")).await.unwrap(), vec![a, c]);
    assert_eq!(s.pns_of_owner(&uid("bob")).await.unwrap(), vec![b]);
    assert_eq!(s.pns_of_owner(&uid("carol")).await.unwrap(), vec![]);
}

/// Every read of a PN gives each member's capabilities of record (004 §5.5.1, §5.5.10): those
/// its device reported last, if it did, else those it joined with.
pub async fn members_read_with_their_capabilities_of_record<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1", "pne-2"]).await;
    let p = pn(4, "gw-1", &["pne-1", "pne-2"]);
    s.register_pn(&p).await.unwrap();
    let reported = caps("reported");
    s.record_report(&eid("pne-2"), Some(&reported), None)
        .await
        .unwrap();
    let mut want = p.clone();
    want.members[1].capabilities = Some(reported);
    assert_ne!(want, p);
    assert_eq!(s.pn(&pid(4)).await.unwrap(), Some(want.clone()));
    assert_eq!(
        s.pns_of_gateway(&eid("gw-1")).await.unwrap(),
        [want.clone()]
    );
    assert_eq!(s.pns_of_owner(&uid("alice")).await.unwrap(), [want.clone()]);
    assert_eq!(s.all_pns().await.unwrap(), [want]);
}

/// `all_pns` lists every PN in creation order; a retried registration keeps its place.
pub async fn all_pns_in_creation_order<S: ServerStore>(s: &S) {
    assert_eq!(s.all_pns().await.unwrap(), vec![]);
    for (n, gw) in [(5, "gw-1"), (1, "gw-2"), (9, "gw-1"), (3, "gw-3")] {
        s.register_pn(&pn(n, gw, &["pne-1", &format!("pne-x{n}")]))
            .await
            .unwrap();
    }
    let retry = pn(5, "gw-1", &["pne-7"]);
    s.register_pn(&retry).await.unwrap();
    let all = s.all_pns().await.unwrap();
    assert_eq!(ids(&all), vec![pid(5), pid(1), pid(9), pid(3)]);
    assert_eq!(all[0], retry);
    assert_eq!(all[2], pn(9, "gw-1", &["pne-1", "pne-x9"]));
}

/// CPNS ids are allocated in sequence, once per PNE, and stored on the entity.
pub async fn cpns_ids<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1", "pne-2"]).await;
    let first = s.allocate_cpns_id(&eid("pne-1")).await.unwrap();
    assert_eq!(first.as_str(), "cpns-000001");
    assert_eq!(s.allocate_cpns_id(&eid("pne-1")).await.unwrap(), first);
    let second = s.allocate_cpns_id(&eid("pne-2")).await.unwrap();
    assert_eq!(second.as_str(), "cpns-000002");
    assert_eq!(
        s.entity(&eid("pne-1")).await.unwrap().unwrap().cpns_id,
        Some(first)
    );
    let err = s.allocate_cpns_id(&eid("ghost")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

/// Writes one of everything, for [`durable_check`] to find after the store is reopened.
pub async fn durable_write<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1"]).await;
    s.allocate_cpns_id(&eid("pne-1")).await.unwrap();
    s.register_pn(&pn(1, "gw-1", &["pne-1"])).await.unwrap();
    s.upsert_member(&pid(1), &member("pne-2", false))
        .await
        .unwrap();
}

/// Checks that everything [`durable_write`] wrote is there.
pub async fn durable_check<S: ServerStore>(s: &S) {
    let e = s.entity(&eid("pne-1")).await.unwrap().unwrap();
    assert_eq!(e.cpns_id.as_ref().map(CpnsId::as_str), Some("cpns-000001"));
    let mut expected = pn(1, "gw-1", &["pne-1"]);
    expected.members.push(member("pne-2", false));
    assert_eq!(s.all_pns().await.unwrap(), vec![expected]);
    // The CPNS id sequence survived too: the next PNE gets the next number.
    s.insert_entity(&entity("pne-2", "alice")).await.unwrap();
    assert_eq!(
        s.allocate_cpns_id(&eid("pne-2")).await.unwrap().as_str(),
        "cpns-000002"
    );
}

/// 50 concurrent registrations and 40 concurrent CPNS id allocations on one store all land,
/// and allocation stays one id per PNE.
pub async fn concurrent_writes<S: ServerStore>(s: Arc<S>) {
    let pnes: Vec<String> = (0..20).map(|i| format!("pne-{i}")).collect();
    enroll(&*s, &pnes.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut tasks = Vec::new();
    for n in 0..50u8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let gw = format!("gw-{}", n % 5);
            s.register_pn(&pn(n, &gw, &["pne-a", "pne-b", "pne-c"]))
                .await
                .unwrap();
        }));
    }
    let mut allocations = Vec::new();
    for i in 0..40 {
        let s = Arc::clone(&s);
        let pne = eid(&pnes[i % 20]);
        allocations.push(tokio::spawn(async move {
            let id = s.allocate_cpns_id(&pne).await.unwrap();
            (pne, id)
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut by_pne = std::collections::HashMap::new();
    for t in allocations {
        let (pne, id) = t.await.unwrap();
        let prev = by_pne.insert(pne, id.clone());
        assert!(prev.is_none() || prev == Some(id), "two ids for one PNE");
    }
    let distinct: std::collections::HashSet<_> = by_pne.values().collect();
    assert_eq!(distinct.len(), 20);

    let all = s.all_pns().await.unwrap();
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(|p| p.members.len() == 3));
    for g in 0..5 {
        assert_eq!(
            s.pns_of_gateway(&eid(&format!("gw-{g}")))
                .await
                .unwrap()
                .len(),
            10
        );
    }
}

/// 002 §B.1.1.2 step 17: a PN GW's PN list confirms its pending PNs and removes the PNs it no
/// longer holds; unlisted pending PNs go only when no registration can be in flight; other
/// gateways' PNs and unknown ids change nothing.
pub async fn reconcile_follows_the_gateway_list<S: ServerStore>(s: &S) {
    let mut pending = pn(1, "gw-1", &["pne-1"]);
    pending.state = PnState::Pending;
    let active = pn(2, "gw-1", &["pne-2"]);
    let gone = pn(3, "gw-1", &["pne-3"]);
    let mut in_flight = pn(4, "gw-1", &["pne-4"]);
    in_flight.state = PnState::Pending;
    let other = pn(5, "gw-2", &["pne-5"]);
    for p in [&pending, &active, &gone, &in_flight, &other] {
        s.register_pn(p).await.unwrap();
    }
    let listed = [pid(1), pid(2), pid(5), pid(9)];
    let done = s
        .reconcile_gateway_pns(&eid("gw-1"), &listed, false)
        .await
        .unwrap();
    assert_eq!(done.confirmed, [pid(1)]);
    assert_eq!(done.removed, [pid(3)]);
    assert_eq!(done.unknown, [pid(5), pid(9)]);
    let mut confirmed = pending.clone();
    confirmed.state = PnState::Active;
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(confirmed.clone()));
    assert_eq!(s.pn(&pid(2)).await.unwrap(), Some(active.clone()));
    assert_eq!(s.pn(&pid(3)).await.unwrap(), None);
    assert_eq!(s.pn(&pid(4)).await.unwrap(), Some(in_flight));
    assert_eq!(s.pn(&pid(5)).await.unwrap(), Some(other.clone()));

    // A new session: nothing of this PN GW is in flight, so the unlisted pending PN goes too.
    let done = s
        .reconcile_gateway_pns(&eid("gw-1"), &[pid(1), pid(2)], true)
        .await
        .unwrap();
    assert_eq!(
        done,
        cpns_store::Reconciled {
            confirmed: vec![],
            removed: vec![pid(4)],
            unknown: vec![],
        }
    );
    assert_eq!(
        s.pns_of_gateway(&eid("gw-1")).await.unwrap(),
        [confirmed, active]
    );
    assert_eq!(s.pn(&pid(5)).await.unwrap(), Some(other));
}

/// A partial report confirms the listed pending PNs of its gateway and nothing else: no PN is
/// removed, other gateways' PNs and unknown ids stay as they were, a PN listed twice counts once.
pub async fn confirm_pns_activates_listed_pending_pns_only<S: ServerStore>(s: &S) {
    let mut pending = pn(1, "gw-1", &["pne-1"]);
    pending.state = PnState::Pending;
    let mut unlisted = pn(2, "gw-1", &["pne-2"]);
    unlisted.state = PnState::Pending;
    let active = pn(3, "gw-1", &["pne-3"]);
    let mut theirs = pn(4, "gw-2", &["pne-4"]);
    theirs.state = PnState::Pending;
    for p in [&pending, &unlisted, &active, &theirs] {
        s.register_pn(p).await.unwrap();
    }
    let done = s
        .confirm_pns(&eid("gw-1"), &[pid(9), pid(1), pid(3), pid(4), pid(1)])
        .await
        .unwrap();
    assert_eq!(done, [pid(1)]);
    let mut confirmed = pending.clone();
    confirmed.state = PnState::Active;
    assert_eq!(s.pn(&pid(1)).await.unwrap(), Some(confirmed));
    assert_eq!(s.pn(&pid(2)).await.unwrap(), Some(unlisted));
    assert_eq!(s.pn(&pid(3)).await.unwrap(), Some(active));
    assert_eq!(s.pn(&pid(4)).await.unwrap(), Some(theirs.clone()));
    assert_eq!(s.pn(&pid(9)).await.unwrap(), None);
    // Again: already active, nothing to confirm.
    assert!(
        s.confirm_pns(&eid("gw-1"), &[pid(1)])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.confirm_pns(&eid("gw-1"), &[]).await.unwrap().is_empty());
    // Its own gateway confirms it.
    assert_eq!(
        s.confirm_pns(&eid("gw-2"), &[pid(4)]).await.unwrap(),
        [pid(4)]
    );
}

/// `release_pn` removes its PN GW's PN in any state, members included, refuses another PN
/// GW's, and says false for a PN that is not there (a retried release).
pub async fn release_pn_removes_the_gateways_pn_only<S: ServerStore>(s: &S) {
    let mut pending = pn(1, "gw-1", &["pne-1"]);
    pending.state = PnState::Pending;
    let active = pn(2, "gw-1", &["pne-2", "pne-3"]);
    let theirs = pn(3, "gw-2", &["pne-4"]);
    for p in [&pending, &active, &theirs] {
        s.register_pn(p).await.unwrap();
    }
    let err = s.release_pn(&eid("gw-1"), &pid(3)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref what } if what.contains("gw-2")),
        "{err:?}"
    );
    assert!(s.release_pn(&eid("gw-1"), &pid(2)).await.unwrap());
    assert!(!s.release_pn(&eid("gw-1"), &pid(2)).await.unwrap());
    assert!(s.release_pn(&eid("gw-1"), &pid(1)).await.unwrap());
    assert!(!s.release_pn(&eid("gw-1"), &pid(9)).await.unwrap());
    assert_eq!(s.all_pns().await.unwrap(), [theirs]);
    // The released PN's members went with it: registering it afresh starts empty.
    s.register_pn(&pn(2, "gw-1", &[])).await.unwrap();
    assert_eq!(s.pn(&pid(2)).await.unwrap().unwrap().members, []);
}

/// `remove_pending_pn` removes only a pending PN, members included.
pub async fn remove_pending_pn_only_when_pending<S: ServerStore>(s: &S) {
    let mut pending = pn(1, "gw-1", &["pne-1", "pne-2"]);
    pending.state = PnState::Pending;
    let active = pn(2, "gw-1", &["pne-3"]);
    s.register_pn(&pending).await.unwrap();
    s.register_pn(&active).await.unwrap();
    assert!(!s.remove_pending_pn(&pid(2)).await.unwrap());
    assert!(!s.remove_pending_pn(&pid(7)).await.unwrap());
    assert!(s.remove_pending_pn(&pid(1)).await.unwrap());
    assert!(!s.remove_pending_pn(&pid(1)).await.unwrap());
    assert_eq!(s.all_pns().await.unwrap(), [active]);
    // The removed PN's members are gone with it: registering it afresh starts empty.
    let again = pn(1, "gw-1", &[]);
    s.register_pn(&again).await.unwrap();
    assert_eq!(s.pn(&pid(1)).await.unwrap().unwrap().members, []);
}

/// Kept answers: found by (sender, request id) only, replaced by a newer answer, dropped once
/// older than the keeping time; the full 64 bits of the request id count.
pub async fn answers_are_kept_for_retries<S: ServerStore>(s: &S) {
    let big = u64::MAX - 1;
    s.remember_answer("gw-1", 7, b"first", 1_000, 10_000)
        .await
        .unwrap();
    s.remember_answer("pne-1", 7, b"other sender", 1_000, 10_000)
        .await
        .unwrap();
    s.remember_answer("gw-1", big, b"high bit", 1_000, 10_000)
        .await
        .unwrap();
    assert_eq!(
        s.answer_of("gw-1", 7).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(
        s.answer_of("pne-1", 7).await.unwrap().as_deref(),
        Some(&b"other sender"[..])
    );
    assert_eq!(
        s.answer_of("gw-1", big).await.unwrap().as_deref(),
        Some(&b"high bit"[..])
    );
    assert_eq!(s.answer_of("gw-1", 8).await.unwrap(), None);
    assert_eq!(s.answer_of("gw-2", 7).await.unwrap(), None);
    s.remember_answer("gw-1", 7, b"second", 2_000, 10_000)
        .await
        .unwrap();
    assert_eq!(
        s.answer_of("gw-1", 7).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    // 11 s later the records of t=1 s are gone; the one of t=2 s is kept.
    s.remember_answer("gw-9", 1, b"late", 12_000, 10_000)
        .await
        .unwrap();
    assert_eq!(s.answer_of("pne-1", 7).await.unwrap(), None);
    assert_eq!(s.answer_of("gw-1", big).await.unwrap(), None);
    assert_eq!(
        s.answer_of("gw-1", 7).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
}
