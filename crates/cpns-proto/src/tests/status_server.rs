//! The server's side of capabilities and status management (004 §5.5.1, §5.5.3;
//! docs/device-status.md): what a PN GW may report, query and subscribe to, for itself and the
//! PNEs of its PNs; bad and too frequent reports refused alone; usage and charging end to end;
//! a silent PN GW closed after the bound.

use std::time::Duration;

use cpns_crypto::EuKey;
use cpns_wire::{
    Address, Attribute, Audience, Body, CHARGING_SERVICE, ChargingList, ChargingQuery, Crossing,
    DeviceCapabilities, DeviceCapabilitiesUpdate, EntityId, Envelope, ErrorCode, PnId, PolicyKind,
    RequestId, SetupType, Status, StatusEntry, StatusPolicy, StatusQuery, StatusReport,
    StatusSubscribe, StatusUnsubscribe, USAGE_SERVICE, UsageAccepted, UsageRecord, UsageReport,
    UserId,
};

use super::harness::{Harness, Party, WALL_AT_BASE, id, plain, pne_id};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};
use crate::server::{EntityRole, KnownEntity, ServerConfig};

/// A ready harness where PNE 0 established a PN with PNE 1, and bob's watch is enrolled.
fn with_pn() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    for (who, owner) in [("bob-watch", "bob"), ("alice-tv", "alice-not-a-member")] {
        h.store.entities.insert(
            id(who),
            KnownEntity {
                id: id(who),
                role: EntityRole::Pne,
                owner: UserId::new(owner).unwrap(),
                eukey: EuKey::from_bytes([7; 32]),
            },
        );
    }
    (h, pn)
}

fn gw() -> Address {
    Address::Entity(id("gw-1"))
}

/// Sends `body` from the PN GW's session, in the name of `from`; the server's answer.
fn ask(h: &mut Harness, msg: u64, from: Address, body: impl Into<Body>) -> Body {
    let env = Envelope::request(msg, from, Address::Server, body);
    h.deliver_direct(Party::Gw, Party::Server, &plain(&env))
        .unwrap();
    h.server_answer(msg)
}

fn refusal(b: &Body) -> Option<(ErrorCode, String)> {
    match b {
        Body::ErrorBody(e) => Some((e.code, e.reason.clone())),
        _ => None,
    }
}

fn entry(e: EntityId, status: Status) -> StatusEntry {
    StatusEntry::new(e, status)
}

fn report(entries: Vec<StatusEntry>) -> StatusReport {
    StatusReport { entries }
}

#[test]
fn a_pn_gw_reports_itself_and_its_pnes_and_is_answered_once_recorded() {
    let (mut h, _) = with_pn();
    let mut custom = entry(pne_id(1), Status::Custom);
    custom.label = Some("driving".into());
    let b = ask(
        &mut h,
        9001,
        gw(),
        report(vec![
            entry(id("gw-1"), Status::Online),
            entry(pne_id(0), Status::Busy),
            custom,
        ]),
    );
    assert!(matches!(b, Body::StatusAck(_)), "{b:?}");
    let (gw_state, by) = h.store.statuses[&id("gw-1")].clone();
    assert_eq!((gw_state.status, by), (Status::Online, None));
    let (pne, by) = h.store.statuses[&pne_id(0)].clone();
    assert_eq!((pne.status, by), (Status::Busy, Some(id("gw-1"))));
    let (pne1, _) = h.store.statuses[&pne_id(1)].clone();
    assert_eq!(pne1.label.as_deref(), Some("driving"));
}

#[test]
fn a_report_naming_anyone_else_is_forbidden_and_records_nothing() {
    let (mut h, _) = with_pn();
    for (n, stranger) in ["bob-watch", "alice-tv", "nobody"].into_iter().enumerate() {
        let b = ask(
            &mut h,
            9010 + n as u64,
            gw(),
            report(vec![
                entry(pne_id(0), Status::Busy),
                entry(id(stranger), Status::Online),
            ]),
        );
        let (code, reason) = refusal(&b).unwrap();
        assert_eq!(code, ErrorCode::Forbidden, "{reason}");
        assert!(reason.contains(stranger), "{reason}");
    }
    assert!(h.store.statuses.is_empty(), "all or nothing");
    // A PNE of the PN, speaking through the PN GW, is still the PN GW's to report.
    let b = ask(
        &mut h,
        9020,
        gw(),
        report(vec![entry(pne_id(0), Status::Busy)]),
    );
    assert!(matches!(b, Body::StatusAck(_)));
}

#[test]
fn malformed_reports_are_refused_with_the_reason() {
    let (mut h, _) = with_pn();
    let mut no_label = entry(pne_id(0), Status::Custom);
    no_label.label = None;
    let mut stray_label = entry(pne_id(0), Status::Online);
    stray_label.label = Some("x".into());
    let mut long_label = entry(pne_id(0), Status::Custom);
    long_label.label = Some("x".repeat(crate::server::MAX_LABEL + 1));
    let many = vec![entry(pne_id(0), Status::Online); crate::server::MAX_ENTRIES + 1];
    for (n, (r, says)) in [
        (report(vec![]), "1 to"),
        (report(many), "1 to"),
        (report(vec![no_label]), "has a label"),
        (report(vec![stray_label]), "only a custom"),
        (report(vec![long_label]), "label is 1 to"),
    ]
    .into_iter()
    .enumerate()
    {
        let b = ask(&mut h, 9100 + n as u64, gw(), r);
        let (code, reason) = refusal(&b).unwrap();
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(reason.contains(says), "{reason}");
    }
    assert!(h.store.statuses.is_empty());
}

#[test]
fn a_device_over_its_rate_is_refused_alone_until_its_tokens_come_back() {
    let (mut h, _) = with_pn();
    let burst = crate::server::ReportLimits::default().status_burst;
    for n in 0..burst {
        let b = ask(
            &mut h,
            9200 + u64::from(n),
            gw(),
            report(vec![entry(pne_id(0), Status::Busy)]),
        );
        assert!(matches!(b, Body::StatusAck(_)), "{n}: {b:?}");
    }
    let b = ask(
        &mut h,
        9300,
        gw(),
        report(vec![entry(pne_id(0), Status::Online)]),
    );
    let (code, reason) = refusal(&b).unwrap();
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(
        reason.contains("try again in") && reason.contains(pne_id(0).as_str()),
        "{reason}"
    );
    assert_eq!(
        h.store.statuses[&pne_id(0)].0.status,
        Status::Busy,
        "not recorded"
    );
    // The other PNE is not held back.
    let b = ask(
        &mut h,
        9301,
        gw(),
        report(vec![entry(pne_id(1), Status::Online)]),
    );
    assert!(matches!(b, Body::StatusAck(_)));
    // Nor is the first once a token came back.
    h.advance(crate::server::ReportLimits::default().status_every);
    let b = ask(
        &mut h,
        9302,
        gw(),
        report(vec![entry(pne_id(0), Status::Online)]),
    );
    assert!(matches!(b, Body::StatusAck(_)), "{b:?}");
}

fn caps_of(device: &str) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device.into(),
        has_ui: true,
        battery_pct: Some(42),
        ..DeviceCapabilities::default()
    }
}

fn caps_update(entity: Option<EntityId>, caps: DeviceCapabilities) -> DeviceCapabilitiesUpdate {
    DeviceCapabilitiesUpdate {
        capabilities: caps,
        entity,
    }
}

#[test]
fn a_pnes_capabilities_are_checked_rate_limited_and_recorded() {
    let (mut h, _) = with_pn();
    let b = ask(
        &mut h,
        9400,
        gw(),
        caps_update(Some(pne_id(0)), caps_of("tablet")),
    );
    assert!(matches!(b, Body::DeviceCapabilitiesConfirm(_)), "{b:?}");
    let (caps, _) = h.store.reports[&pne_id(0)].clone();
    assert_eq!(caps.unwrap().device_type, "tablet");
    // Too big: refused, nothing recorded.
    let mut big = caps_of("huge");
    big.running = vec!["app".into(); cpns_wire::caps_limits::MAX_LIST + 1];
    let b = ask(&mut h, 9401, gw(), caps_update(Some(pne_id(0)), big));
    assert_eq!(refusal(&b).unwrap().0, ErrorCode::BadRequest);
    // Another user's device: forbidden.
    let b = ask(
        &mut h,
        9402,
        gw(),
        caps_update(Some(id("bob-watch")), caps_of("watch")),
    );
    assert_eq!(refusal(&b).unwrap().0, ErrorCode::Forbidden);
    assert!(!h.store.reports.contains_key(&id("bob-watch")));
    // Over its rate (one burst: the first update took a token; the oversized one, refused
    // before, none).
    let burst = crate::server::ReportLimits::default().caps_burst;
    let mut codes = Vec::new();
    for n in 0..burst {
        let b = ask(
            &mut h,
            9410 + u64::from(n),
            gw(),
            caps_update(Some(pne_id(0)), caps_of("t")),
        );
        codes.push(refusal(&b).map(|r| r.0));
    }
    assert_eq!(
        codes.iter().filter(|c| c.is_none()).count(),
        burst as usize - 1
    );
    assert_eq!(codes.last().unwrap(), &Some(ErrorCode::RateLimited));
    // The PN GW's own capabilities have their own bucket.
    let b = ask(&mut h, 9430, gw(), caps_update(None, caps_of("home-hub")));
    assert!(matches!(b, Body::DeviceCapabilitiesConfirm(_)), "{b:?}");
}

#[test]
fn queries_answer_the_record_of_the_askers_own_devices_only() {
    let (mut h, _) = with_pn();
    ask(
        &mut h,
        9500,
        gw(),
        report(vec![entry(pne_id(0), Status::Busy)]),
    );
    // By name, from the PN GW, and from a PNE through it.
    for (msg, from) in [(9501, gw()), (9502, Address::Entity(pne_id(1)))] {
        let q = StatusQuery {
            entities: vec![pne_id(0)],
        };
        match ask(&mut h, msg, from, q) {
            Body::StatusAnswer(a) => {
                assert_eq!(a.entries.len(), 1);
                assert_eq!(a.entries[0].status, Status::Busy);
                assert!(a.entries[0].since_ms.is_some());
            }
            other => panic!("{other:?}"),
        }
    }
    // All of the asker's user's devices: the PN GW and both PNEs, not bob's watch.
    match ask(&mut h, 9503, gw(), StatusQuery::default()) {
        Body::StatusAnswer(a) => {
            let mut ids: Vec<_> = a.entries.iter().map(|e| e.entity.clone()).collect();
            ids.sort();
            assert!(ids.contains(&pne_id(0)) && ids.contains(&id("gw-1")));
            assert!(!ids.contains(&id("bob-watch")));
        }
        other => panic!("{other:?}"),
    }
    let q = StatusQuery {
        entities: vec![id("bob-watch")],
    };
    assert_eq!(
        refusal(&ask(&mut h, 9504, gw(), q)).unwrap().0,
        ErrorCode::Forbidden
    );
    let q = StatusQuery {
        entities: vec![id("nobody")],
    };
    assert_eq!(
        refusal(&ask(&mut h, 9505, gw(), q)).unwrap().0,
        ErrorCode::NotFound
    );
    // A PNE's refused query is answered to that PNE, as its answer would be (the PN GW relays
    // it by its addressee).
    let q = StatusQuery {
        entities: vec![id("bob-watch")],
    };
    let body = ask(&mut h, 9507, Address::Entity(pne_id(0)), q);
    assert_eq!(refusal(&body).unwrap().0, ErrorCode::Forbidden);
    let to = h
        .queue
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(|f| f.env())
        .find(|e| e.in_reply_to == Some(9507))
        .map(|e| e.to);
    assert_eq!(to, Some(Address::Entity(pne_id(0))));
    // A PNE of no PN of this PN GW may not ask through it.
    let q = StatusQuery::default();
    let from = Address::Entity(id("bob-watch"));
    assert_eq!(
        refusal(&ask(&mut h, 9506, from, q)).unwrap().0,
        ErrorCode::Forbidden
    );
}

fn below_10() -> StatusPolicy {
    StatusPolicy {
        kind: PolicyKind::Threshold,
        attribute: Some(Attribute::BatteryPct),
        crossing: Some(Crossing::Below),
        bound: Some(10),
        period_s: None,
    }
}

fn subscribe(request: u64, entities: Vec<EntityId>, policy: StatusPolicy) -> StatusSubscribe {
    StatusSubscribe {
        request_id: RequestId(request),
        entities,
        policy,
    }
}

#[test]
fn subscriptions_are_checked_kept_once_and_bounded() {
    let (mut h, _) = with_pn();
    ask(
        &mut h,
        9600,
        gw(),
        report(vec![entry(pne_id(0), Status::Busy)]),
    );
    let first = match ask(
        &mut h,
        9601,
        gw(),
        subscribe(1, vec![pne_id(0)], below_10()),
    ) {
        Body::StatusSubscribed(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.entries[0].status, Status::Busy, "the snapshot");
    // A retry gets the same subscription.
    match ask(
        &mut h,
        9602,
        gw(),
        subscribe(1, vec![pne_id(0)], below_10()),
    ) {
        Body::StatusSubscribed(s) => assert_eq!(s.subscription, first.subscription),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.store.subscriptions.len(), 1);
    // Bad policies, too many watched, other users' devices.
    let mut bad = below_10();
    bad.bound = None;
    assert_eq!(
        refusal(&ask(&mut h, 9603, gw(), subscribe(2, vec![], bad)))
            .unwrap()
            .0,
        ErrorCode::BadRequest
    );
    let many = vec![pne_id(0); crate::status::MAX_WATCHED + 1];
    assert_eq!(
        refusal(&ask(&mut h, 9604, gw(), subscribe(3, many, below_10())))
            .unwrap()
            .0,
        ErrorCode::BadRequest
    );
    let theirs = subscribe(4, vec![id("bob-watch")], below_10());
    assert_eq!(
        refusal(&ask(&mut h, 9605, gw(), theirs)).unwrap().0,
        ErrorCode::Forbidden
    );
    // A PNE subscribes through its PN GW, as itself.
    let from = Address::Entity(pne_id(1));
    assert!(matches!(
        ask(&mut h, 9606, from, subscribe(1, vec![], below_10())),
        Body::StatusSubscribed(_)
    ));
    let subscriber = h
        .store
        .subscriptions
        .values()
        .last()
        .unwrap()
        .subscriber
        .clone();
    assert_eq!(subscriber, pne_id(1));
    assert!(
        h.store
            .subscriptions
            .values()
            .last()
            .unwrap()
            .entities
            .is_empty()
    );
    assert_eq!(
        h.store.subscriptions.values().last().unwrap().policy,
        below_10()
    );
    // The bound.
    for n in 2..=crate::server::MAX_SUBSCRIPTIONS as u64 {
        let b = ask(
            &mut h,
            9700 + n,
            gw(),
            subscribe(100 + n, vec![], below_10()),
        );
        assert!(matches!(b, Body::StatusSubscribed(_)), "{n}: {b:?}");
    }
    let b = ask(&mut h, 9800, gw(), subscribe(999, vec![], below_10()));
    let (code, reason) = refusal(&b).unwrap();
    assert_eq!(code, ErrorCode::Busy);
    assert!(reason.contains("32"), "{reason}");
    // Unsubscribing: only one's own.
    let theirs = StatusUnsubscribe {
        subscription: first.subscription,
    };
    let from = Address::Entity(pne_id(1));
    assert_eq!(
        refusal(&ask(&mut h, 9801, from, theirs.clone())).unwrap().0,
        ErrorCode::NotFound
    );
    assert!(matches!(
        ask(&mut h, 9802, gw(), theirs.clone()),
        Body::StatusAck(_)
    ));
    assert_eq!(
        refusal(&ask(&mut h, 9803, gw(), theirs)).unwrap().0,
        ErrorCode::NotFound
    );
}

#[test]
fn a_notification_goes_to_the_subscriber_named() {
    let (mut h, _) = with_pn();
    let n = cpns_wire::StatusNotification {
        subscription: 3,
        reason: cpns_wire::NotifyReason::Change,
        entries: vec![entry(pne_id(0), Status::Offline)],
        lagged: None,
    };
    h.server.notify(pne_id(1), n.clone());
    h.pump();
    let sent = h
        .log
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(|f| f.env())
        .find(|e| matches!(e.body, Body::StatusNotification(_)))
        .unwrap();
    assert_eq!(sent.to, Address::Entity(pne_id(1)));
    assert_eq!(sent.body, Body::StatusNotification(n));
}

fn silent_harness() -> Harness {
    let cfg = ServerConfig {
        offline_after: Some(Duration::from_secs(30)),
        ..ServerConfig::default()
    };
    let specs = [PneSpec::trusted()];
    let mut h = Harness::with_server(&specs, cfg);
    h.gw_cfg.heartbeat = Some(Duration::from_secs(10));
    h.restart_from_stores(&specs);
    h
}

#[test]
fn heartbeats_keep_a_pn_gw_and_silence_closes_it_at_the_bound() {
    let mut h = silent_harness();
    let opened = h.now();
    // Heartbeats every 10 s hold the session for far longer than the bound.
    for _ in 0..12 {
        h.advance(Duration::from_secs(10));
    }
    assert!(
        h.closes.iter().all(|(p, ..)| *p != Party::Server),
        "{:?}",
        h.closes
    );
    assert!(h.wan_messages().contains(&"Heartbeat"));
    assert!(h.now() > opened + Duration::from_secs(100));
    // Then the PN GW falls silent: its frames to the server are lost.
    h.set_hook(|f| {
        if f.from == Party::Gw && f.to == Party::Server {
            super::harness::Action::Drop
        } else {
            super::harness::Action::Deliver
        }
    });
    h.advance(Duration::from_secs(29));
    assert!(h.closes.iter().all(|(p, ..)| *p != Party::Server));
    h.advance(Duration::from_secs(2));
    let closed = h.closes.iter().find(|(p, ..)| *p == Party::Server).cloned();
    let (_, _, reason) = closed.expect("the server closed the silent session");
    assert!(reason.contains("silent for 30 s"), "{reason}");
}

/// PNE 0 established a PN and registered in it (a secure session).
fn registered() -> (Harness, PnId) {
    registered_with(ServerConfig {
        offline_after: None,
        ..ServerConfig::default()
    })
}

fn registered_with(cfg: ServerConfig) -> (Harness, PnId) {
    let specs = [PneSpec::cpns(), PneSpec::trusted()];
    let mut h = Harness::with_server(&specs, cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    (h, pn)
}

fn usage(id: u64, service: &str, bytes: u64) -> UsageRecord {
    let now_s = (WALL_AT_BASE / 1000) as u64;
    UsageRecord {
        id,
        service: service.into(),
        start_s: now_s - 600,
        end_s: now_s - 60,
        bytes,
        audience: Audience::Server,
        status: Some(Status::Online),
        battery_start: Some(90),
        battery_end: Some(80),
        networks: vec!["wlan".into()],
    }
}

fn answer_of(h: &Harness, service: &str) -> Option<Vec<u8>> {
    h.pne_events(0).into_iter().rev().find_map(|e| match e {
        PneEvent::Completed(crate::Completed {
            result:
                Ok(Outcome::SecureAnswer {
                    service: s,
                    payload,
                }),
            ..
        }) if s == service => Some(payload.clone()),
        _ => None,
    })
}

fn call(h: &mut Harness, service: &str, payload: Vec<u8>) {
    let now = h.now();
    h.pnes[0].secure_call(now, service, payload).unwrap();
    h.pump();
}

#[test]
fn usage_is_stored_once_and_charged_by_the_tariff_to_the_pnes_own_user() {
    let mut cfg = ServerConfig {
        offline_after: None,
        ..ServerConfig::default()
    };
    cfg.tariff.insert("video".into(), 2);
    let (mut h, pn) = registered_with(cfg);
    let report = UsageReport {
        records: vec![usage(1, "game", 10), usage(2, "video", 2_500_000)],
    };
    call(&mut h, USAGE_SERVICE, minicbor::to_vec(&report).unwrap());
    let accepted: UsageAccepted = minicbor::decode(&answer_of(&h, USAGE_SERVICE).unwrap()).unwrap();
    assert_eq!(
        accepted,
        UsageAccepted {
            stored: 2,
            duplicates: 0,
            charged: 1
        }
    );
    let kept = &h.store.usage[&(pne_id(0), 2)];
    assert_eq!(kept.units, Some(6), "2 units a started MB, 2.5 MB");
    assert_eq!(
        (kept.pn_id, kept.pn_owner.clone()),
        (pn, None),
        "the PN is the PNE's own user's"
    );
    // Retried: nothing twice.
    call(&mut h, USAGE_SERVICE, minicbor::to_vec(&report).unwrap());
    let again: UsageAccepted = minicbor::decode(&answer_of(&h, USAGE_SERVICE).unwrap()).unwrap();
    assert_eq!((again.stored, again.duplicates, again.charged), (0, 2, 0));
    // The PNE lists its user's charging records.
    call(
        &mut h,
        CHARGING_SERVICE,
        minicbor::to_vec(ChargingQuery::default()).unwrap(),
    );
    let list: ChargingList = minicbor::decode(&answer_of(&h, CHARGING_SERVICE).unwrap()).unwrap();
    assert_eq!(list.records.len(), 1);
    assert_eq!(
        (list.records[0].service.as_str(), list.records[0].units),
        ("video", 6)
    );
    assert_eq!(list.records[0].entity, pne_id(0));
}

#[test]
fn bad_or_too_frequent_usage_reports_are_refused_and_store_nothing() {
    let (mut h, _) = registered();
    let refused = |h: &Harness| -> Vec<ErrorCode> {
        h.pne_failures(0)
            .into_iter()
            .filter_map(|f| match f {
                crate::Failure::Refused(e) => Some(e.code),
                _ => None,
            })
            .collect()
    };
    call(&mut h, USAGE_SERVICE, vec![0xff, 0x00]);
    let mut future = usage(1, "game", 1);
    future.end_s += 3_600;
    let bad = UsageReport {
        records: vec![future],
    };
    call(&mut h, USAGE_SERVICE, minicbor::to_vec(&bad).unwrap());
    assert_eq!(refused(&h), [ErrorCode::BadRequest, ErrorCode::BadRequest]);
    assert!(h.store.usage.is_empty());
    let burst = crate::server::ReportLimits::default().usage_burst;
    // The two refused ones took no token.
    for n in 0..burst {
        let ok = UsageReport {
            records: vec![usage(10 + u64::from(n), "game", 1)],
        };
        call(&mut h, USAGE_SERVICE, minicbor::to_vec(&ok).unwrap());
    }
    assert_eq!(h.store.usage.len(), burst as usize);
    let late = UsageReport {
        records: vec![usage(99, "game", 1)],
    };
    call(&mut h, USAGE_SERVICE, minicbor::to_vec(&late).unwrap());
    assert_eq!(refused(&h).last(), Some(&ErrorCode::RateLimited));
    assert!(!h.store.usage.contains_key(&(pne_id(0), 99)));
}

#[test]
fn another_users_pne_consuming_in_a_pn_is_charged_to_its_own_user() {
    let mut cfg = ServerConfig {
        offline_after: None,
        ..ServerConfig::default()
    };
    cfg.tariff.insert("video".into(), 1);
    let (mut h, pn) = registered_with(cfg);
    // PNE 0 is bob's (enrolled for him), a member of a PN of alice's PN GW.
    let bob = UserId::new("bob").unwrap();
    h.store.entities.get_mut(&pne_id(0)).unwrap().owner = bob.clone();
    let report = UsageReport {
        records: vec![usage(5, "video", 1_000)],
    };
    call(&mut h, USAGE_SERVICE, minicbor::to_vec(&report).unwrap());
    let accepted: UsageAccepted = minicbor::decode(&answer_of(&h, USAGE_SERVICE).unwrap()).unwrap();
    assert_eq!(accepted.charged, 1);
    let kept = &h.store.usage[&(pne_id(0), 5)];
    assert_eq!(kept.owner, bob, "charged to the consuming PNE's own user");
    let alice = h.store.entities[&id("gw-1")].owner.clone();
    assert_eq!(kept.pn_owner, Some(alice), "the PN's owner named beside");
    assert_eq!(kept.pn_id, pn);
    assert_eq!(kept.units, Some(1), "at least one started MB");
    // Bob's PNE lists bob's records.
    call(
        &mut h,
        CHARGING_SERVICE,
        minicbor::to_vec(ChargingQuery::default()).unwrap(),
    );
    let list: ChargingList = minicbor::decode(&answer_of(&h, CHARGING_SERVICE).unwrap()).unwrap();
    assert_eq!(list.records.len(), 1);
    assert_eq!(list.records[0].user, bob);
}

// ---- what the machine tells the status hub (docs/device-status.md, "Fan-out") ----

use crate::server::Publish;

/// What the server published since `from`.
fn published_since(h: &Harness, from: usize) -> Vec<Publish> {
    h.published[from..].to_vec()
}

/// A recorded report goes to the hub as the store holds it now, then the session reaches the
/// PNEs reported online and no longer those reported offline; the PN GW itself is reached
/// anyway and never named. A capabilities update publishes the record with its attributes.
#[test]
fn recorded_reports_are_published_with_whom_the_session_reaches() {
    let (mut h, _) = with_pn();
    let from = h.published.len();
    let b = ask(
        &mut h,
        9801,
        gw(),
        report(vec![
            entry(id("gw-1"), Status::Online),
            entry(pne_id(0), Status::Busy),
            entry(pne_id(1), Status::Offline),
        ]),
    );
    assert!(matches!(b, Body::StatusAck(_)), "{b:?}");
    let records: Vec<_> = [id("gw-1"), pne_id(0), pne_id(1)]
        .iter()
        .map(|e| h.store.statuses[e].0.clone())
        .collect();
    assert_eq!(
        published_since(&h, from),
        [
            Publish::Changed(records),
            Publish::Reach {
                entity: pne_id(0),
                here: true
            },
            Publish::Reach {
                entity: pne_id(1),
                here: false
            },
        ]
    );
    let from = h.published.len();
    let b = ask(
        &mut h,
        9802,
        gw(),
        caps_update(Some(pne_id(0)), caps_of("tablet")),
    );
    assert!(matches!(b, Body::DeviceCapabilitiesConfirm(_)), "{b:?}");
    let got = published_since(&h, from);
    let [Publish::Changed(states)] = got.as_slice() else {
        panic!("{got:?}");
    };
    assert_eq!(states.len(), 1);
    assert_eq!(
        (&states[0].entity, states[0].status, states[0].battery_pct),
        (&pne_id(0), Status::Busy, Some(42))
    );
}

/// The PN GW's own status, recorded at connection set-up (002 §B.1.1.2 step 17), is
/// published; a failed write publishes nothing and is answered as failed.
#[test]
fn only_what_is_stored_is_published() {
    let (mut h, _) = with_pn();
    let own = h.published.iter().any(|p| {
        matches!(p, Publish::Changed(s) if s.len() == 1 && s[0].entity == id("gw-1") && s[0].status == Status::Online)
    });
    assert!(own, "{:?}", h.published);
    let from = h.published.len();
    h.store.fail_server = true;
    let b = ask(
        &mut h,
        9811,
        gw(),
        report(vec![entry(pne_id(0), Status::Busy)]),
    );
    assert_eq!(refusal(&b).map(|r| r.0), Some(ErrorCode::Internal));
    let b = ask(
        &mut h,
        9812,
        gw(),
        subscribe(1, vec![pne_id(0)], below_10()),
    );
    assert_eq!(refusal(&b).map(|r| r.0), Some(ErrorCode::Internal));
    assert!(published_since(&h, from).is_empty(), "{:?}", h.published);
}

/// A kept subscription goes to the hub with the records it was kept with, the session reaches
/// its subscriber, and the snapshot the subscriber gets is made of those records; removing it
/// tells the hub too.
#[test]
fn subscriptions_are_published_as_kept_and_removed() {
    let (mut h, _) = with_pn();
    ask(
        &mut h,
        9820,
        gw(),
        report(vec![entry(pne_id(0), Status::Busy)]),
    );
    let from = h.published.len();
    let watched = vec![pne_id(1), pne_id(0)];
    let b = ask(
        &mut h,
        9821,
        Address::Entity(pne_id(1)),
        subscribe(5, watched.clone(), below_10()),
    );
    let Body::StatusSubscribed(answer) = b else {
        panic!("{b:?}");
    };
    let got = published_since(&h, from);
    let [
        Publish::Subscribed {
            subscription,
            states,
        },
        Publish::Reach { entity, here: true },
    ] = got.as_slice()
    else {
        panic!("{got:?}");
    };
    assert_eq!(entity, &pne_id(1));
    assert_eq!(subscription.id, answer.subscription);
    assert_eq!(subscription.subscriber, pne_id(1));
    assert_eq!(
        subscription.watched,
        crate::status::Watched::Entities(watched)
    );
    assert_eq!(
        subscription.policy,
        crate::status::Policy::check(&below_10()).unwrap()
    );
    let want: Vec<_> = [pne_id(1), pne_id(0)]
        .iter()
        .map(|e| h.store.status_of(e).unwrap())
        .collect();
    assert_eq!(states, &want);
    let entries: Vec<_> = want.iter().map(|s| s.entry()).collect();
    assert_eq!(answer.entries, entries, "the snapshot is the records kept");
    assert_eq!(answer.entries[1].status, Status::Busy);

    // A subscription of every device of the user: watched as the user, every device by id.
    let from = h.published.len();
    let b = ask(&mut h, 9822, gw(), subscribe(6, Vec::new(), below_10()));
    let Body::StatusSubscribed(all) = b else {
        panic!("{b:?}");
    };
    let got = published_since(&h, from);
    let Publish::Subscribed { subscription, .. } = &got[0] else {
        panic!("{got:?}");
    };
    assert_eq!(
        subscription.watched,
        crate::status::Watched::User(UserId::new("alice").unwrap())
    );
    let ids: Vec<&str> = all.entries.iter().map(|e| e.entity.as_str()).collect();
    assert_eq!(ids, ["gw-1", "pne-1", "pne-2"]);

    let from = h.published.len();
    let b = ask(
        &mut h,
        9823,
        Address::Entity(pne_id(1)),
        StatusUnsubscribe {
            subscription: answer.subscription,
        },
    );
    assert!(matches!(b, Body::StatusAck(_)), "{b:?}");
    assert_eq!(
        published_since(&h, from),
        [Publish::Unsubscribed {
            subscriber: pne_id(1),
            id: answer.subscription
        }]
    );
}

/// Which PNEs a session knows to be served is bounded (MAX_TRACKED, 4096): knowledge that
/// would grow past the bound is dropped, then read again when next needed; up to the bound it
/// is kept and not read again.
#[test]
fn what_a_session_knows_of_served_pnes_is_bounded() {
    let (mut h, _) = with_pn();
    let mut msg = 9_900;
    // Reports `pne` from the PN GW; the server's read of who is served, if it asked one.
    let mut report_of = |h: &mut Harness, pne: EntityId| -> Option<crate::server::Load> {
        msg += 1;
        h.store.hold_loads = true;
        let env = Envelope::request(
            msg,
            gw(),
            Address::Server,
            report(vec![entry(pne, Status::Busy)]),
        );
        h.deliver_direct(Party::Gw, Party::Server, &plain(&env))
            .unwrap();
        h.store.hold_loads = false;
        h.store.held.first().map(|(_, l)| l.clone())
    };
    let served = |h: &mut Harness, ids: Vec<EntityId>| {
        h.answer_held(0, Some(Ok(crate::server::Loaded::Served(ids))));
        assert!(h.store.held.is_empty());
    };
    let fakes = |n: usize, tag: &str| -> Vec<EntityId> {
        (0..n).map(|i| id(&format!("{tag}-{i}"))).collect()
    };
    assert!(report_of(&mut h, pne_id(0)).is_some(), "read once");
    served(&mut h, vec![pne_id(0)]);
    assert!(report_of(&mut h, pne_id(0)).is_none(), "then known");
    // Up to the bound: 1 known + 4095 new = 4096, all kept.
    assert!(report_of(&mut h, pne_id(1)).is_some());
    let mut up_to = vec![pne_id(1)];
    up_to.extend(fakes(4094, "a"));
    served(&mut h, up_to);
    assert!(
        report_of(&mut h, pne_id(0)).is_none(),
        "still known at the bound"
    );
    // One more would pass it: what was known is dropped and read again when named.
    assert!(report_of(&mut h, id("pne-x")).is_some());
    served(&mut h, vec![id("pne-x")]);
    assert!(
        report_of(&mut h, pne_id(0)).is_some(),
        "read again past the bound"
    );
}
