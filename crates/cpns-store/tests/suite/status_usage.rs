//! Conformance cases of [`ServerStore`]'s status, subscriptions, usage and charging
//! (docs/device-status.md).

use cpns_store::{
    Attributes, ServerStore, StatusChange, StoreError, SubscriptionRecord, UsageRow, UsageStored,
    UsageSummary,
};
use cpns_wire::{
    Attribute, Audience, Crossing, DeviceCapabilities, PolicyKind, Status, StatusPolicy,
    UsageRecord,
};

use super::{eid, entity, pid, uid};

pub(super) async fn household<S: ServerStore>(s: &S) {
    for user in ["alice", "bob"] {
        s.ensure_user(&uid(user)).await.unwrap();
    }
    for (id, user) in [
        ("gw", "alice"),
        ("phone", "alice"),
        ("tv", "alice"),
        ("watch", "bob"),
    ] {
        s.insert_entity(&entity(id, user)).await.unwrap();
    }
}

pub(super) fn change(id: &str, status: Status, since: i64, by: Option<&str>) -> StatusChange {
    StatusChange {
        entity: eid(id),
        status,
        label: None,
        since,
        reported_by: by.map(eid),
    }
}

pub async fn statuses_are_recorded_with_their_attributes<S: ServerStore>(s: &S) {
    household(s).await;
    // Never reported: offline, with no time.
    let never = s.statuses(&[eid("phone")]).await.unwrap();
    assert_eq!(never[0].status, Status::Offline);
    assert_eq!(
        (never[0].since, never[0].owner.clone()),
        (None, Some(uid("alice")))
    );

    let caps = DeviceCapabilities {
        battery_pct: Some(40),
        battery_minutes: Some(90),
        ..super::caps("phone")
    };
    let attrs = Attributes {
        battery_pct: Some(40),
        battery_minutes: Some(90),
        free_memory_mb: None,
    };
    let recorded = s
        .record_report(&eid("phone"), Some(&caps), None)
        .await
        .unwrap();
    assert_eq!(
        (recorded.status, recorded.attributes),
        (Status::Offline, attrs)
    );
    let mut busy = change("phone", Status::Custom, 5, Some("gw"));
    busy.label = Some("driving".into());
    let now = s
        .record_statuses(&[busy, change("gw", Status::Online, 4, None)])
        .await
        .unwrap();
    let ids: Vec<_> = now.iter().map(|r| (r.entity.as_str(), r.status)).collect();
    assert_eq!(ids, [("phone", Status::Custom), ("gw", Status::Online)]);
    assert_eq!(now[0].attributes, attrs, "returned as now, attributes kept");
    let got = s
        .statuses(&[eid("phone"), eid("nobody"), eid("gw")])
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "an unknown id is left out");
    assert_eq!(got[0].entity, eid("phone"));
    assert_eq!(
        (got[0].status, got[0].label.as_deref(), got[0].since),
        (Status::Custom, Some("driving"), Some(5))
    );
    assert_eq!(
        got[0].attributes, attrs,
        "a status change keeps the attributes"
    );
    assert_eq!(got[0].reported_by, Some(eid("gw")));
    assert_eq!(
        s.entity(&eid("phone")).await.unwrap().unwrap().capabilities,
        Some(caps)
    );

    // New capabilities change the attributes and keep the status.
    let fewer = Attributes {
        battery_pct: Some(9),
        ..Attributes::default()
    };
    let low = DeviceCapabilities {
        battery_pct: Some(9),
        ..super::caps("phone")
    };
    s.record_report(&eid("phone"), Some(&low), None)
        .await
        .unwrap();
    let now = &s.statuses(&[eid("phone")]).await.unwrap()[0];
    assert_eq!((now.status, now.attributes), (Status::Custom, fewer));

    // A status code this version does not know is kept.
    s.record_statuses(&[change("tv", Status::Unknown(42), 6, None)])
        .await
        .unwrap();
    assert_eq!(
        s.statuses(&[eid("tv")]).await.unwrap()[0].status,
        Status::Unknown(42)
    );

    let alice = s.statuses_of_owner(&uid("alice")).await.unwrap();
    let ids: Vec<_> = alice.iter().map(|r| r.entity.as_str()).collect();
    assert_eq!(ids, ["gw", "phone", "tv"]);
    assert_eq!(s.all_statuses().await.unwrap().len(), 4);
}

pub async fn a_status_of_an_unknown_entity_records_nothing<S: ServerStore>(s: &S) {
    household(s).await;
    let err = s
        .record_statuses(&[
            change("phone", Status::Busy, 5, None),
            change("ghost", Status::Online, 5, None),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref what } if what.contains("ghost")),
        "{err:?}"
    );
    let phone = &s.statuses(&[eid("phone")]).await.unwrap()[0];
    assert_eq!(
        (phone.status, phone.since),
        (Status::Offline, None),
        "all or nothing"
    );
    let err = s
        .record_report(&eid("ghost"), Some(&super::caps("x")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

pub async fn a_gateways_end_turns_what_it_reported_offline<S: ServerStore>(s: &S) {
    household(s).await;
    s.record_statuses(&[
        change("gw", Status::Online, 1, None),
        change("phone", Status::Online, 1, Some("gw")),
        change("tv", Status::Offline, 1, Some("gw")),
        change("watch", Status::Online, 1, Some("other-gw")),
    ])
    .await
    .unwrap();
    let changed = s.offline_reported_by(&eid("gw"), 9).await.unwrap();
    let mut ids: Vec<_> = changed.iter().map(|r| r.entity.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["gw", "phone"],
        "the tv was offline already; the watch is another's"
    );
    assert!(
        changed
            .iter()
            .all(|r| r.status == Status::Offline && r.since == Some(9))
    );
    let watch = &s.statuses(&[eid("watch")]).await.unwrap()[0];
    assert_eq!(watch.status, Status::Online);
    // A second end changes nothing.
    assert!(
        s.offline_reported_by(&eid("gw"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(super) fn subscription(
    subscriber: &str,
    request_id: u64,
    watched: &[&str],
) -> SubscriptionRecord {
    SubscriptionRecord {
        id: 0,
        subscriber: eid(subscriber),
        owner: uid("alice"),
        request_id,
        entities: watched.iter().map(|w| eid(w)).collect(),
        policy: StatusPolicy {
            kind: PolicyKind::Threshold,
            attribute: Some(Attribute::BatteryPct),
            crossing: Some(Crossing::Below),
            bound: Some(10),
            period_s: None,
        },
        created_at: 3,
    }
}

pub async fn subscriptions_are_kept_once_per_request<S: ServerStore>(s: &S) {
    household(s).await;
    s.record_statuses(&[change("tv", Status::Busy, 4, Some("gw"))])
        .await
        .unwrap();
    // Kept with the states of what it watches, as of the same write, in the order named; an
    // entity named twice or not enrolled is given once or not at all.
    let kept = s
        .add_subscription(&subscription("gw", 1, &["tv", "phone", "tv", "ghost"]))
        .await
        .unwrap();
    let a = kept.subscription;
    assert_ne!(a.id, 0);
    assert_eq!(
        a.entities,
        vec![eid("tv"), eid("phone"), eid("tv"), eid("ghost")]
    );
    assert_eq!(
        kept.states,
        s.statuses(&[eid("tv"), eid("phone")]).await.unwrap()
    );
    assert_eq!(
        (kept.states[0].status, kept.states[1].status),
        (Status::Busy, Status::Offline)
    );
    let mut retry = subscription("gw", 1, &[]);
    retry.created_at = 99;
    let again = s.add_subscription(&retry).await.unwrap();
    assert_eq!(
        again.subscription, a,
        "a retry gets the first one, unchanged"
    );
    assert_eq!(again.states, kept.states, "and what it watches");
    let every = s
        .add_subscription(&subscription("phone", 1, &[]))
        .await
        .unwrap();
    let b = every.subscription;
    assert_ne!(b.id, a.id);
    assert!(b.entities.is_empty(), "empty: every device of the owner");
    assert_eq!(
        every.states,
        s.statuses_of_owner(&uid("alice")).await.unwrap(),
        "every device of its user, by id"
    );
    assert_eq!(every.states.len(), 3);
    assert_eq!(s.subscriptions().await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(s.subscription_count(&eid("gw")).await.unwrap(), 1);
    assert_eq!(s.subscription_count(&eid("tv")).await.unwrap(), 0);

    assert!(
        !s.remove_subscription(&eid("phone"), a.id).await.unwrap(),
        "not its own"
    );
    assert!(s.remove_subscription(&eid("gw"), a.id).await.unwrap());
    assert!(!s.remove_subscription(&eid("gw"), a.id).await.unwrap());
    assert!(!s.remove_subscription(&eid("gw"), u64::MAX).await.unwrap());
    assert_eq!(s.subscriptions().await.unwrap(), vec![b]);
    let err = s
        .add_subscription(&subscription("ghost", 1, &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

pub(super) fn record(
    id: u64,
    service: &str,
    start: u64,
    seconds: u64,
    bytes: u64,
    audience: Audience,
) -> UsageRecord {
    UsageRecord {
        id,
        service: service.into(),
        start_s: start,
        end_s: start + seconds,
        bytes,
        audience,
        status: Some(Status::Online),
        battery_start: Some(80),
        battery_end: Some(70),
        networks: vec!["wlan".into(), "with \"quotes\"".into()],
    }
}

pub(super) fn row(
    entity: &str,
    owner: &str,
    pn_owner: Option<&str>,
    r: UsageRecord,
    units: Option<u64>,
) -> UsageRow {
    UsageRow {
        entity: eid(entity),
        owner: uid(owner),
        pn_id: Some(pid(1)),
        pn_owner: pn_owner.map(uid),
        record: r,
        units,
        received_at: 1_000,
    }
}

pub async fn usage_is_stored_once_and_charged_to_the_consumer<S: ServerStore>(s: &S) {
    household(s).await;
    let batch = [
        row(
            "phone",
            "alice",
            None,
            record(1, "game", 100, 60, 1_000, Audience::Shared),
            None,
        ),
        row(
            "phone",
            "alice",
            None,
            record(2, "video", 200, 30, 5_000, Audience::Server),
            Some(5),
        ),
        // Bob's watch consuming in alice's PN: charged to bob, alice named as the PN's owner.
        row(
            "watch",
            "bob",
            Some("alice"),
            record(1, "video", 300, 10, 2_000, Audience::Server),
            Some(2),
        ),
    ];
    let done = s.store_usage(&batch).await.unwrap();
    assert_eq!(
        done,
        UsageStored {
            stored: 3,
            duplicates: 0,
            charged: 2
        }
    );
    // A retried report stores and charges nothing again.
    let again = s.store_usage(&batch[1..]).await.unwrap();
    assert_eq!(
        again,
        UsageStored {
            stored: 0,
            duplicates: 2,
            charged: 0
        }
    );

    let alice = s.charging_records(&uid("alice"), 0).await.unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!(
        (
            alice[0].service.as_str(),
            alice[0].units,
            alice[0].pn_owner.clone()
        ),
        ("video", 5, None)
    );
    let bob = s.charging_records(&uid("bob"), 0).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].entity, eid("watch"));
    assert_eq!(bob[0].pn_owner, Some(uid("alice")));
    assert_eq!(
        (bob[0].start_s, bob[0].end_s, bob[0].bytes, bob[0].pn_id),
        (300, 310, 2_000, Some(pid(1)))
    );
    assert!(
        s.charging_records(&uid("alice"), 201)
            .await
            .unwrap()
            .is_empty(),
        "since"
    );

    let all = s.usage_summary(None, false).await.unwrap();
    let summary = |user: &str, service: &str, uses, seconds, bytes| UsageSummary {
        user: Some(uid(user)),
        service: service.into(),
        uses,
        seconds,
        bytes,
    };
    assert_eq!(
        all,
        vec![
            summary("alice", "game", 1, 60, 1_000),
            summary("alice", "video", 1, 30, 5_000),
            summary("bob", "video", 1, 10, 2_000),
        ]
    );
    assert_eq!(
        s.usage_summary(Some(&uid("bob")), false).await.unwrap(),
        vec![summary("bob", "video", 1, 10, 2_000)]
    );
    assert_eq!(
        s.usage_summary(None, true).await.unwrap(),
        vec![summary("alice", "game", 1, 60, 1_000)],
        "external applications see only shared records"
    );
}

pub async fn served_by_names_the_members_of_the_gateways_pns<S: ServerStore>(s: &S) {
    household(s).await;
    s.insert_entity(&entity("gw2", "bob")).await.unwrap();
    s.register_pn(&super::pn(1, "gw", &["phone", "watch"]))
        .await
        .unwrap();
    s.register_pn(&super::pn(2, "gw2", &["tv"])).await.unwrap();
    let candidates = [eid("tv"), eid("watch"), eid("phone"), eid("ghost")];
    let served = s.served_by(&eid("gw"), &candidates).await.unwrap();
    assert_eq!(served, vec![eid("phone"), eid("watch")]);
    assert_eq!(
        s.served_by(&eid("gw2"), &candidates).await.unwrap(),
        vec![eid("tv")]
    );
    assert!(s.served_by(&eid("gw"), &[]).await.unwrap().is_empty());
    assert!(
        s.served_by(&eid("nobody"), &candidates)
            .await
            .unwrap()
            .is_empty()
    );
}
