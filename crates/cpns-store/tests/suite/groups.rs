//! Service groups (004 §5.5.9; docs/services.md, "Service groups"): made with their creator as
//! first member, read in one snapshot with each member's key and PN GW, changed one epoch at a
//! time and only from the epoch read, invitations that expire and are used up, deletion of
//! everything, and the groups a viewer of the directory is a member of.

use cpns_store::{GroupChange, GroupMemberRecord, GroupRecord};
use cpns_wire::GroupId;

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn gid(b: u8) -> GroupId {
    GroupId::from_bytes([b; 16])
}

fn group(creator: &str) -> GroupRecord {
    GroupRecord {
        group_id: gid(1),
        name: "album".into(),
        owner: uid("alice"),
        creator: eid(creator),
        open_to_user: false,
        epoch: 1,
        sealed_key: b"key-1".to_vec(),
        created_at: NOW,
    }
}

fn member(id: &str, pn: PnId, at: i64) -> GroupMemberRecord {
    GroupMemberRecord {
        entity: eid(id),
        owner: uid("alice"),
        pn_id: pn,
        joined_at: at,
    }
}

pub async fn groups_are_made_changed_one_epoch_at_a_time_and_deleted<S: ServerStore>(s: &S) {
    enroll(s, &["phone", "tv", "watch"]).await;
    s.register_pn(&pn(1, "gw-1", &["phone", "tv"]))
        .await
        .unwrap();
    s.create_group(&group("phone"), &member("phone", pid(1), NOW))
        .await
        .unwrap();
    assert!(matches!(
        s.create_group(&group("phone"), &member("phone", pid(1), NOW))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let v = s.group_view(&gid(1), &eid("tv"), None, NOW).await.unwrap();
    assert_eq!(v.group, Some(group("phone")));
    assert_eq!(v.asker_owner, Some(uid("alice")));
    assert_eq!(v.invitation, None);
    assert_eq!(v.members.len(), 1);
    assert_eq!(v.members[0].member, member("phone", pid(1), NOW));
    assert_eq!(v.members[0].sealed_session_key, Some(b"sk:phone".to_vec()));
    assert_eq!(v.members[0].gateway, Some(eid("gw-1")));
    assert_eq!(v.asker_groups, 0);
    // Where pushing to another entity goes: its PN with a key, or nowhere.
    let v = s
        .group_view(&gid(1), &eid("phone"), Some(&eid("tv")), NOW)
        .await
        .unwrap();
    assert_eq!(v.asker_groups, 1);
    let reach = v.also.unwrap();
    assert_eq!(
        (reach.entity, reach.owner, reach.pn_id, reach.gateway),
        (eid("tv"), uid("alice"), pid(1), eid("gw-1"))
    );
    assert_eq!(reach.sealed_session_key, b"sk:tv".to_vec());
    let v = s
        .group_view(&gid(1), &eid("phone"), Some(&eid("watch")), NOW)
        .await
        .unwrap();
    assert_eq!(v.also, None, "in no PN");

    // An invitation holds until it expires, and joining uses it up.
    s.invite_to_group(&gid(1), &eid("tv"), &eid("phone"), NOW + 60_000)
        .await
        .unwrap();
    let v = s.group_view(&gid(1), &eid("tv"), None, NOW).await.unwrap();
    assert_eq!(v.invitation, Some((eid("phone"), NOW + 60_000)));
    let later = s
        .group_view(&gid(1), &eid("tv"), None, NOW + 60_000)
        .await
        .unwrap();
    assert_eq!(later.invitation, None, "expired");
    let join = GroupChange {
        group_id: gid(1),
        from_epoch: 1,
        sealed_key: b"key-2".to_vec(),
        add: Some(member("tv", pid(1), NOW + 1)),
        remove: Vec::new(),
    };
    s.change_group(&join).await.unwrap();
    // The same change again is from an epoch the group left: refused, nothing changed.
    assert!(matches!(
        s.change_group(&join).await,
        Err(StoreError::Conflict { .. })
    ));
    let v = s.group_view(&gid(1), &eid("tv"), None, NOW).await.unwrap();
    let g = v.group.unwrap();
    assert_eq!((g.epoch, g.sealed_key.as_slice()), (2, &b"key-2"[..]));
    let ids: Vec<_> = v.members.iter().map(|m| m.member.entity.clone()).collect();
    assert_eq!(ids, [eid("phone"), eid("tv")]);
    assert_eq!(v.invitation, None, "used up");

    // A member whose PN membership ended keeps its row, without a key to push to.
    s.update_members(&pid(1), &[], &[eid("tv")], None)
        .await
        .unwrap();
    let v = s
        .group_view(&gid(1), &eid("phone"), None, NOW)
        .await
        .unwrap();
    assert_eq!(v.members[1].sealed_session_key, None);

    // The directory shows the group's entries to its members only.
    s.publish_service(&ServiceEntryBuilder::group_entry(
        "watch",
        &gid(1).to_string(),
    ))
    .await
    .unwrap();
    let groups_of = |v: cpns_store::DirectoryView| v.viewer.unwrap().groups;
    let asks = cpns_store::DirectoryAsk::Watching;
    assert_eq!(
        groups_of(s.directory_view(&eid("phone"), &asks).await.unwrap()),
        [gid(1).to_string()]
    );
    assert!(groups_of(s.directory_view(&eid("watch"), &asks).await.unwrap()).is_empty());

    // Removal, then deletion of everything.
    let expel = GroupChange {
        group_id: gid(1),
        from_epoch: 2,
        sealed_key: b"key-3".to_vec(),
        add: None,
        remove: vec![eid("tv")],
    };
    s.change_group(&expel).await.unwrap();
    let v = s
        .group_view(&gid(1), &eid("phone"), None, NOW)
        .await
        .unwrap();
    assert_eq!(v.members.len(), 1);
    s.invite_to_group(&gid(1), &eid("watch"), &eid("phone"), NOW + 60_000)
        .await
        .unwrap();
    assert!(s.drop_invitation(&gid(1), &eid("watch")).await.unwrap());
    assert!(!s.drop_invitation(&gid(1), &eid("watch")).await.unwrap());
    assert!(s.delete_group(&gid(1)).await.unwrap());
    assert!(!s.delete_group(&gid(1)).await.unwrap());
    let v = s
        .group_view(&gid(1), &eid("phone"), None, NOW)
        .await
        .unwrap();
    assert_eq!((v.group, v.members.len()), (None, 0));
    assert!(groups_of(s.directory_view(&eid("phone"), &asks).await.unwrap()).is_empty());
    assert!(matches!(
        s.invite_to_group(&gid(1), &eid("watch"), &eid("phone"), NOW)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.change_group(&expel).await,
        Err(StoreError::Conflict { .. })
    ));
}

/// A directory entry of a group, for the test above.
struct ServiceEntryBuilder;

impl ServiceEntryBuilder {
    fn group_entry(offerer: &str, group: &str) -> cpns_store::ServiceEntry {
        cpns_store::ServiceEntry {
            dir_id: 0,
            offerer: eid(offerer),
            owner: uid("alice"),
            service_id: "shared".into(),
            service_type: "media.album".into(),
            keywords: vec!["photo".into()],
            scope: cpns_store::ServiceScope::Group(group.into()),
            description: b"{}".to_vec(),
            updated_at: NOW,
            expires_at: NOW + 3_600_000,
        }
    }
}

/// Delivery records: a session's rows opened at once (once: again is a conflict, and nothing
/// more is written), each target's closed once with what it received, read by session or by
/// the user charged, oldest first.
pub async fn delivery_records_open_once_close_once_and_read_by_user<S: ServerStore>(s: &S) {
    use cpns_store::DeliveryRecord;
    use cpns_wire::DeliveryId;
    let session = |b: u8| DeliveryId::from_bytes([b; 16]);
    let row = |sid: u8, target: &str, charged: &str, at: i64| DeliveryRecord {
        session: session(sid),
        target: eid(target),
        item: 0,
        service_id: "video".into(),
        source: eid("phone"),
        pn_id: pid(1),
        charged: uid(charged),
        name: "holiday.mp4".into(),
        size: 10_000_000,
        bytes: 0,
        started_at: at,
        ended_at: None,
        result: None,
        per_mb: None,
    };
    s.open_delivery(&[row(1, "tv", "alice", NOW), row(1, "tablet", "bob", NOW)])
        .await
        .unwrap();
    s.open_delivery(&[row(2, "tv", "alice", NOW + 5)])
        .await
        .unwrap();
    let e = s
        .open_delivery(&[row(3, "tv", "alice", NOW), row(1, "tv", "alice", NOW)])
        .await
        .unwrap_err();
    assert!(matches!(e, cpns_store::StoreError::Conflict { .. }), "{e}");
    assert!(
        s.deliveries(Some(&session(3)), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.close_delivery(&session(1), &eid("tv"), 10_000_000, &[1], NOW + 9)
            .await
            .unwrap()
    );
    // Closed once: again, or for a target it does not have, changes nothing.
    assert!(
        !s.close_delivery(&session(1), &eid("tv"), 5, &[4], NOW + 10)
            .await
            .unwrap()
    );
    assert!(
        !s.close_delivery(&session(1), &eid("watch"), 5, &[4], NOW + 10)
            .await
            .unwrap()
    );
    let alice = s.deliveries(None, Some(&uid("alice"))).await.unwrap();
    let mut closed = row(1, "tv", "alice", NOW);
    closed.bytes = 10_000_000;
    closed.ended_at = Some(NOW + 9);
    closed.result = Some(1);
    assert_eq!(alice, [closed.clone(), row(2, "tv", "alice", NOW + 5)]);
    let one = s.deliveries(Some(&session(1)), None).await.unwrap();
    assert_eq!(one, [row(1, "tablet", "bob", NOW), closed.clone()]);
    assert_eq!(s.deliveries(None, None).await.unwrap().len(), 3);
    // Records still open that started before a time end failed then, their bytes as they
    // were; one started at that time, or ended already, is left as it is.
    assert_eq!(s.expire_deliveries(NOW + 5, NOW + 20).await.unwrap(), 1);
    let mut expired = row(1, "tablet", "bob", NOW);
    expired.ended_at = Some(NOW + 20);
    expired.result = Some(4);
    let one = s.deliveries(Some(&session(1)), None).await.unwrap();
    assert_eq!(one, [expired, closed]);
    assert_eq!(
        s.deliveries(Some(&session(2)), None).await.unwrap(),
        [row(2, "tv", "alice", NOW + 5)]
    );
    // Its target ends it later: it is ended already, nothing changes.
    assert!(
        !s.close_delivery(&session(1), &eid("tablet"), 10_000_000, &[1], NOW + 30)
            .await
            .unwrap()
    );
    assert_eq!(s.expire_deliveries(NOW + 5, NOW + 40).await.unwrap(), 0);
    assert_eq!(s.expire_deliveries(NOW + 6, NOW + 40).await.unwrap(), 1);
}

/// A chargeable delivery (its record carries the tariff): a target's part that ends delivered
/// is charged to the user charged, in the same transaction, with the PN's owner when that is
/// another user (a guest); one that ends otherwise, or of a service without a tariff, is not;
/// a record closed once is charged once.
pub async fn a_delivered_chargeable_part_is_charged_to_its_user<S: ServerStore>(s: &S) {
    use cpns_store::DeliveryRecord;
    use cpns_wire::DeliveryId;
    s.register_pn(&pn(1, "gw-1", &["phone", "tv", "tablet"]))
        .await
        .unwrap();
    let session = |b: u8| DeliveryId::from_bytes([b; 16]);
    let row = |sid: u8, target: &str, charged: &str, per_mb: Option<u64>| DeliveryRecord {
        session: session(sid),
        target: eid(target),
        item: 0,
        service_id: "video".into(),
        source: eid("phone"),
        pn_id: pid(1),
        charged: uid(charged),
        name: "film.mp4".into(),
        size: 2_500_000,
        bytes: 0,
        started_at: NOW,
        ended_at: None,
        result: None,
        per_mb,
    };
    s.open_delivery(&[
        row(1, "tv", "alice", Some(3)),
        row(1, "tablet", "bob", Some(3)),
        row(1, "watch", "alice", Some(3)),
    ])
    .await
    .unwrap();
    s.open_delivery(&[row(2, "tv", "alice", None)])
        .await
        .unwrap();
    // Delivered: charged; failed: not; delivered without a tariff: not.
    assert!(
        s.close_delivery(&session(1), &eid("tv"), 2_500_000, &[1], NOW + 4_000)
            .await
            .unwrap()
    );
    // The tablet says it received 1 byte: a delivered part is all of it, charged so.
    assert!(
        s.close_delivery(&session(1), &eid("tablet"), 1, &[1], NOW + 5_000)
            .await
            .unwrap()
    );
    assert!(
        s.close_delivery(&session(1), &eid("watch"), 1_000, &[4], NOW + 5_000)
            .await
            .unwrap()
    );
    assert!(
        s.close_delivery(&session(2), &eid("tv"), 2_500_000, &[1], NOW + 6_000)
            .await
            .unwrap()
    );
    // Closed again: nothing more.
    assert!(
        !s.close_delivery(&session(1), &eid("tv"), 2_500_000, &[1], NOW + 7_000)
            .await
            .unwrap()
    );
    let alice = s.charging_records(&uid("alice"), 0).await.unwrap();
    assert_eq!(alice.len(), 1, "{alice:?}");
    let r = &alice[0];
    assert_eq!(
        (
            r.entity.as_str(),
            r.service.as_str(),
            r.bytes,
            r.units,
            r.pn_owner.clone()
        ),
        ("tv", "video", 2_500_000, 9, None)
    );
    assert_eq!(
        (r.pn_id, r.start_s, r.end_s),
        (
            Some(pid(1)),
            (NOW / 1000) as u64,
            ((NOW + 4_000) / 1000) as u64
        )
    );
    // The guest's own user pays, and the PN's owner is named.
    let bob = s.charging_records(&uid("bob"), 0).await.unwrap();
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(
        (
            bob[0].entity.as_str(),
            bob[0].units,
            bob[0].pn_owner.clone()
        ),
        ("tablet", 9, Some(uid("alice")))
    );
    // The tariff is on the record, as it was set up.
    let one = s.deliveries(Some(&session(1)), None).await.unwrap();
    assert!(one.iter().all(|r| r.per_mb == Some(3)));
}

/// A session of several items (004 §5.5.8.2, "Supporting single/multiple services"): a record
/// per target and item, closed together with each item's own result and its own bytes of what
/// the target received; each delivered item charged at its own tariff for its own size; results
/// for another number of items refused with nothing changed.
pub async fn a_sessions_items_are_recorded_ended_and_charged_each<S: ServerStore>(s: &S) {
    use cpns_store::DeliveryRecord;
    use cpns_wire::DeliveryId;
    s.register_pn(&pn(1, "gw-1", &["phone", "tv", "tablet"]))
        .await
        .unwrap();
    let session = DeliveryId::from_bytes([7; 16]);
    let row = |target: &str, item: u32, service: &str, size: u64, per_mb| DeliveryRecord {
        session,
        target: eid(target),
        item,
        service_id: service.into(),
        source: eid("phone"),
        pn_id: pid(1),
        charged: uid("alice"),
        name: format!("{service}.bin"),
        size,
        bytes: 0,
        started_at: NOW,
        ended_at: None,
        result: None,
        per_mb,
    };
    let rows = [
        row("tv", 0, "video", 3_000_000, Some(2)),
        row("tv", 1, "subtitles", 1_000, None),
        row("tv", 2, "cover", 2_000_000, Some(5)),
        row("tablet", 0, "video", 3_000_000, Some(2)),
        row("tablet", 1, "subtitles", 1_000, None),
        row("tablet", 2, "cover", 2_000_000, Some(5)),
    ];
    s.open_delivery(&rows).await.unwrap();
    // Results for two items of three, or none, or one "delivered" or "hash mismatch" for all
    // three (each item's own once checked): refused, nothing closed.
    for bad in [&[1, 1][..], &[], &[1], &[3]] {
        let e = s
            .close_delivery(&session, &eid("tv"), 5_001_000, bad, NOW + 1_000)
            .await
            .unwrap_err();
        assert!(matches!(e, cpns_store::StoreError::Conflict { .. }), "{e}");
    }
    let open = s.deliveries(Some(&session), None).await.unwrap();
    assert!(open.iter().all(|r| r.ended_at.is_none()), "{open:?}");
    // The tv has every item, the cover's hash did not match (3): video and subtitles are
    // delivered, the cover is not charged.
    assert!(
        s.close_delivery(&session, &eid("tv"), 5_001_000, &[1, 1, 3], NOW + 2_000)
            .await
            .unwrap()
    );
    // The tablet stopped inside the subtitles (one result for every item).
    assert!(
        s.close_delivery(&session, &eid("tablet"), 3_000_400, &[4], NOW + 3_000)
            .await
            .unwrap()
    );
    let got: Vec<(String, u32, u64, Option<u32>)> = s
        .deliveries(Some(&session), None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.target.to_string(), r.item, r.bytes, r.result))
        .collect();
    let want = [
        ("tablet", 0, 3_000_000, Some(4)),
        ("tablet", 1, 400, Some(4)),
        ("tablet", 2, 0, Some(4)),
        ("tv", 0, 3_000_000, Some(1)),
        ("tv", 1, 1_000, Some(1)),
        ("tv", 2, 2_000_000, Some(3)),
    ]
    .map(|(t, i, b, r)| (t.to_string(), i, b, r));
    assert_eq!(got, want);
    // Charged: the tv's video only (the subtitles have no tariff, the cover was not kept).
    let alice = s.charging_records(&uid("alice"), 0).await.unwrap();
    let charged: Vec<(&str, &str, u64, u64)> = alice
        .iter()
        .map(|r| (r.entity.as_str(), r.service.as_str(), r.bytes, r.units))
        .collect();
    assert_eq!(charged, [("tv", "video", 3_000_000, 6)]);
    // Closed once.
    assert!(
        !s.close_delivery(&session, &eid("tv"), 5_001_000, &[1], NOW + 4_000)
            .await
            .unwrap()
    );
}

/// Where a delivery to a user goes: every PN where a device of that user is an authenticated
/// member with an SK_PNE, by device then PN; a member not yet authenticated, another user's
/// device and a user with none give nothing; the asker's user comes with it.
pub async fn a_users_devices_are_reached_in_every_pn_they_are_proven_in<S: ServerStore>(s: &S) {
    enroll(s, &["phone", "tv", "watch"]).await;
    s.ensure_user(&uid("bob")).await.unwrap();
    s.insert_entity(&entity("bobs-tv", "bob")).await.unwrap();
    s.register_pn(&pn(1, "gw-1", &["phone", "tv", "bobs-tv"]))
        .await
        .unwrap();
    s.register_pn(&pn(2, "gw-2", &["tv"])).await.unwrap();
    let mut unproven = pn(3, "gw-1", &["watch"]);
    unproven.members[0].authenticated = false;
    s.register_pn(&unproven).await.unwrap();
    let (asker, reach) = s.user_reach(&uid("alice"), &eid("bobs-tv")).await.unwrap();
    assert_eq!(asker, Some(uid("bob")));
    let got: Vec<(String, PnId, String, Vec<u8>)> = reach
        .into_iter()
        .map(|r| {
            assert_eq!(r.owner, uid("alice"));
            (
                r.entity.to_string(),
                r.pn_id,
                r.gateway.to_string(),
                r.sealed_session_key,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("phone".into(), pid(1), "gw-1".into(), b"sk:phone".to_vec()),
            ("tv".into(), pid(1), "gw-1".into(), b"sk:tv".to_vec()),
            ("tv".into(), pid(2), "gw-2".into(), b"sk:tv".to_vec()),
        ]
    );
    let (_, bobs) = s.user_reach(&uid("bob"), &eid("phone")).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].entity, eid("bobs-tv"));
    let (nobody, none) = s.user_reach(&uid("carol"), &eid("stranger")).await.unwrap();
    assert_eq!((nobody, none.len()), (None, 0));
}
