//! Conformance cases of [`DeviceStore`]: a PN GW's or a PNE's own local PNs, its secure
//! session, its usage records and reporting preferences.

use cpns_store::{
    DepartedKey, DeviceStore, GroupEpoch, LocalMember, LocalPn, LocalServiceGroup, LocalSession,
    StoreError,
};
use cpns_wire::{Audience, CpnsId, GroupId, Preference};

use super::status_usage::record;
use super::{caps, contents, eid, pid};

fn local(n: u8, members: &[(&str, Option<&str>)]) -> LocalPn {
    LocalPn {
        pn_id: pid(n),
        gateway: eid("gw-1"),
        members: members
            .iter()
            .map(|(id, route)| LocalMember {
                pne_id: eid(id),
                capabilities: route.map(caps),
                sealed_local_key: Some(format!("lk:{id}").into_bytes()),
                route: route.map(str::to_owned),
                contents: route
                    .map(|r| contents(&format!("contents:{r}")))
                    .unwrap_or_default(),
            })
            .collect(),
        stored_at: 1_700_000_000_000 + i64::from(n),
        sealed_session_key: None,
        group: None,
        expires_at: None,
        secure_seq: 0,
    }
}

/// The local inventory stores, replaces (keeping the first-stored order), lists and removes.
pub async fn local_inventory<S: DeviceStore>(s: &S) {
    assert_eq!(s.local_pns().await.unwrap(), vec![]);
    let a = local(4, &[("pne-2", Some("pan:2")), ("pne-1", None)]);
    let b = local(2, &[("pne-9", Some("pan:9"))]);
    s.save_local_pn(&a).await.unwrap();
    s.save_local_pn(&b).await.unwrap();
    assert_eq!(s.local_pns().await.unwrap(), vec![a.clone(), b.clone()]);

    let mut a2 = local(4, &[("pne-1", Some("pan:1b"))]);
    a2.stored_at += 50;
    s.save_local_pn(&a2).await.unwrap();
    assert_eq!(s.local_pns().await.unwrap(), vec![a2.clone(), b.clone()]);

    assert!(s.remove_local_pn(&pid(2)).await.unwrap());
    assert!(!s.remove_local_pn(&pid(2)).await.unwrap());
    assert_eq!(s.local_pns().await.unwrap(), vec![a2.clone()]);

    // Saving a removed PN again starts it afresh, after the others.
    let b2 = local(2, &[]);
    s.save_local_pn(&b2).await.unwrap();
    assert_eq!(s.local_pns().await.unwrap(), vec![a2, b2]);
}

/// A device's own PN keeps its sealed SK_PNE and its group key epoch, replaced as a whole
/// with the PN (schema 6).
pub async fn local_pns_keep_their_session_key_and_epoch<S: DeviceStore>(s: &S) {
    let epoch = |n: u64| GroupEpoch {
        epoch: n,
        sealed_key: format!("gk-{n}").into_bytes(),
    };
    let mut l = local(1, &[("pne-1", Some("pan:1"))]);
    l.sealed_session_key = Some(b"sk".to_vec());
    l.group = Some(epoch(3));
    // The last secure request number, whole u64 (docs/security.md §4.8; schema 13).
    l.secure_seq = u64::MAX - 1;
    s.save_local_pn(&l).await.unwrap();
    assert_eq!(s.local_pns().await.unwrap(), vec![l.clone()]);
    l.secure_seq = 7;
    l.group = Some(epoch(4));
    s.save_local_pn(&l).await.unwrap();
    assert_eq!(s.local_pns().await.unwrap(), vec![l.clone()]);
    l.group = None;
    l.sealed_session_key = None;
    s.save_local_pn(&l).await.unwrap();
    assert_eq!(s.local_pns().await.unwrap(), vec![l]);
}

/// A PNE keeps one secure session: none at first, then the one saved, replaced by a newer one.
pub async fn local_session_is_kept_and_replaced<S: DeviceStore>(s: &S) {
    assert_eq!(s.local_session().await.unwrap(), None);
    let first = LocalSession {
        cpns_id: CpnsId::new("cpns-000001").unwrap(),
        pn_id: pid(1),
        sealed_session_key: b"sealed-1".to_vec(),
        lifetime_s: 86_400,
        stored_at: 10,
    };
    s.save_local_session(&first).await.unwrap();
    assert_eq!(s.local_session().await.unwrap(), Some(first));
    let second = LocalSession {
        cpns_id: CpnsId::new("cpns-000002").unwrap(),
        pn_id: pid(2),
        sealed_session_key: b"sealed-2".to_vec(),
        lifetime_s: 60,
        stored_at: 20,
    };
    s.save_local_session(&second).await.unwrap();
    assert_eq!(s.local_session().await.unwrap(), Some(second));
}

/// What [`durable_check`] finds after the store is reopened.
/// A PN GW's departed keys: kept per (PN, PNE), a second one replacing the first, listed
/// oldest first, removed one at a time, and independent of the PN's own rows (a released PN's
/// keys outlive it).
pub async fn departed_keys_are_kept_replaced_and_removed<S: DeviceStore>(s: &S) {
    let key = |pn: u8, pne: &str, byte: u8, at: i64| DepartedKey {
        pn_id: pid(pn),
        pne_id: eid(pne),
        sealed_local_key: vec![byte; 76],
        departed_at: at,
    };
    assert!(s.departed().await.unwrap().is_empty());
    s.save_local_pn(&local(1, &[("pne-1", None)]))
        .await
        .unwrap();
    s.save_departed(&key(1, "pne-2", 1, 30)).await.unwrap();
    s.save_departed(&key(2, "pne-2", 2, 10)).await.unwrap();
    s.save_departed(&key(1, "pne-3", 3, 20)).await.unwrap();
    // The same (PN, PNE) again replaces its row.
    s.save_departed(&key(1, "pne-2", 4, 40)).await.unwrap();
    assert_eq!(
        s.departed().await.unwrap(),
        [
            key(2, "pne-2", 2, 10),
            key(1, "pne-3", 3, 20),
            key(1, "pne-2", 4, 40)
        ]
    );
    // Removing the PN keeps the keys of its departed members.
    assert!(s.remove_local_pn(&pid(1)).await.unwrap());
    assert_eq!(s.departed().await.unwrap().len(), 3);
    assert!(s.remove_departed(&pid(1), &eid("pne-2")).await.unwrap());
    assert!(!s.remove_departed(&pid(1), &eid("pne-2")).await.unwrap());
    assert!(!s.remove_departed(&pid(3), &eid("pne-3")).await.unwrap());
    assert_eq!(
        s.departed().await.unwrap(),
        [key(2, "pne-2", 2, 10), key(1, "pne-3", 3, 20)]
    );
}

/// A PNE's service group keys: one per group, a newer one replacing it (name and all), listed
/// by group id, removed one at a time, and apart from its PNs' rows.
pub async fn service_group_keys_are_kept_replaced_and_removed<S: DeviceStore>(s: &S) {
    let gid = |n: u8| GroupId::from_bytes([n; 16]);
    let group = |n: u8, name: &str, epoch: u64| LocalServiceGroup {
        group_id: gid(n),
        name: name.into(),
        epoch,
        sealed_key: vec![n.wrapping_add(epoch as u8); 72],
        stored_at: 1_700_000_000_000 + epoch as i64,
    };
    assert!(s.local_groups().await.unwrap().is_empty());
    s.save_local_group(&group(2, "album", 1)).await.unwrap();
    s.save_local_group(&group(1, "family", 3)).await.unwrap();
    s.save_local_group(&group(2, "album 2", 4)).await.unwrap();
    assert_eq!(
        s.local_groups().await.unwrap(),
        [group(1, "family", 3), group(2, "album 2", 4)]
    );
    // A PN's removal leaves the groups alone.
    s.save_local_pn(&local(1, &[("pne-1", None)]))
        .await
        .unwrap();
    assert!(s.remove_local_pn(&pid(1)).await.unwrap());
    assert_eq!(s.local_groups().await.unwrap().len(), 2);
    assert!(s.remove_local_group(&gid(1)).await.unwrap());
    assert!(!s.remove_local_group(&gid(1)).await.unwrap());
    assert!(!s.remove_local_group(&gid(9)).await.unwrap());
    assert_eq!(s.local_groups().await.unwrap(), [group(2, "album 2", 4)]);
    // An epoch past what SQLite holds is refused, and nothing changes.
    let e = s
        .save_local_group(&group(2, "album", u64::MAX))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert_eq!(s.local_groups().await.unwrap(), [group(2, "album 2", 4)]);
}

/// A PN GW's delivery routes: kept per session (again: replaced), with the other PN of a
/// forward between two of its PNs, listed by session, removed one at a time.
pub async fn delivery_routes_are_kept_replaced_and_removed<S: DeviceStore>(s: &S) {
    use cpns_wire::{DeliveryId, DeliveryRoute};
    let route = |b: u8, targets: &[&str]| DeliveryRoute {
        session: DeliveryId::from_bytes([b; 16]),
        pn_id: pid(1),
        source: eid("phone"),
        targets: targets.iter().map(|t| eid(t)).collect(),
        size: 10_000_000 + u64::from(b),
        chunk: 65_536,
        from_server: false,
        // The second session goes to another PN of the same PN GW.
        to_pn: (b == 2).then(|| pid(2)),
        to_server: false,
    };
    assert!(s.local_routes().await.unwrap().is_empty());
    s.save_local_route(&route(2, &["tv", "tablet"]))
        .await
        .unwrap();
    s.save_local_route(&route(1, &["tv"])).await.unwrap();
    s.save_local_route(&route(2, &["tablet"])).await.unwrap();
    assert_eq!(
        s.local_routes().await.unwrap(),
        [route(1, &["tv"]), route(2, &["tablet"])]
    );
    assert!(
        s.remove_local_route(&DeliveryId::from_bytes([1; 16]))
            .await
            .unwrap()
    );
    assert!(
        !s.remove_local_route(&DeliveryId::from_bytes([1; 16]))
            .await
            .unwrap()
    );
    assert_eq!(s.local_routes().await.unwrap(), [route(2, &["tablet"])]);
}

/// A PNE's delivery sessions: kept per session (again: replaced), a source's with its files in
/// order (paths of any characters), a target's with none, listed by session, removed one at a
/// time.
pub async fn delivery_sessions_are_kept_replaced_and_removed<S: DeviceStore>(s: &S) {
    use cpns_store::LocalDelivery;
    use cpns_wire::DeliveryId;
    let kept = |b: u8, as_source: bool, files: &[(&str, u64)]| LocalDelivery {
        session: DeliveryId::from_bytes([b; 16]),
        as_source,
        sealed_key: vec![b; 60],
        description: vec![0xa1, b, b],
        files: files.iter().map(|(p, n)| ((*p).to_string(), *n)).collect(),
        stored_at: 1_000 + i64::from(b),
    };
    assert!(s.local_deliveries().await.unwrap().is_empty());
    let films = [
        ("/home/a/film, \"cut\".mkv", 5_000_000),
        ("/home/a/notes é.txt", 12),
    ];
    s.save_local_delivery(&kept(2, true, &films)).await.unwrap();
    s.save_local_delivery(&kept(1, false, &[])).await.unwrap();
    s.save_local_delivery(&kept(2, true, &films[..1]))
        .await
        .unwrap();
    assert_eq!(
        s.local_deliveries().await.unwrap(),
        [kept(1, false, &[]), kept(2, true, &films[..1])]
    );
    let one = DeliveryId::from_bytes([1; 16]);
    assert!(s.remove_local_delivery(&one).await.unwrap());
    assert!(!s.remove_local_delivery(&one).await.unwrap());
    assert_eq!(
        s.local_deliveries().await.unwrap(),
        [kept(2, true, &films[..1])]
    );
}

pub async fn durable_write<S: DeviceStore>(s: &S) {
    s.save_local_pn(&local(1, &[("pne-1", Some("pan:1"))]))
        .await
        .unwrap();
}

/// Checks that what [`durable_write`] wrote is there.
pub async fn durable_check<S: DeviceStore>(s: &S) {
    assert_eq!(
        s.local_pns().await.unwrap(),
        vec![local(1, &[("pne-1", Some("pan:1"))])]
    );
}

pub async fn a_pne_keeps_its_usage_until_it_is_sent<S: DeviceStore>(s: &S) {
    let a = record(7, "game", 100, 60, 1_000, Audience::Server);
    let b = record(9, "video", 200, 30, 5_000, Audience::Server);
    s.save_local_usage(&a).await.unwrap();
    s.save_local_usage(&b).await.unwrap();
    let err = s.save_local_usage(&a).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let unsent = s.unsent_local_usage(10).await.unwrap();
    assert_eq!(
        unsent.iter().map(|u| u.record.clone()).collect::<Vec<_>>(),
        vec![a.clone(), b.clone()]
    );
    assert!(unsent.iter().all(|u| !u.sent));
    assert_eq!(
        s.unsent_local_usage(1).await.unwrap().len(),
        1,
        "the limit holds"
    );
    s.mark_local_usage_sent(&[7, 12345]).await.unwrap();
    let unsent = s.unsent_local_usage(10).await.unwrap();
    assert_eq!(unsent.len(), 1);
    assert_eq!(unsent[0].record.id, 9);
    // The device's own summary counts every record, sent or not.
    let summary = s.local_usage_summary().await.unwrap();
    assert_eq!(summary.len(), 2);
    assert_eq!(
        (
            summary[0].service.as_str(),
            summary[0].seconds,
            summary[0].user.clone()
        ),
        ("game", 60, None)
    );
}

/// A user's reporting preference per service is set, replaced, listed by service and cleared
/// (004 §5.5.4.2).
pub async fn usage_preferences_are_kept_per_service<S: DeviceStore>(s: &S) {
    assert_eq!(s.usage_prefs().await.unwrap(), vec![]);
    s.set_usage_pref("video", Some(Preference::Private))
        .await
        .unwrap();
    s.set_usage_pref("game", Some(Preference::Server))
        .await
        .unwrap();
    s.set_usage_pref("game", Some(Preference::Shared))
        .await
        .unwrap();
    assert_eq!(
        s.usage_prefs().await.unwrap(),
        vec![
            ("game".into(), Preference::Shared),
            ("video".into(), Preference::Private)
        ]
    );
    s.set_usage_pref("video", None).await.unwrap();
    s.set_usage_pref("never-set", None).await.unwrap();
    assert_eq!(
        s.usage_prefs().await.unwrap(),
        vec![("game".into(), Preference::Shared)]
    );
}
