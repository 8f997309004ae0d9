//! A PNE's capabilities and status end to end through its PN GW (docs/device-status.md):
//! static changes reported at once, dynamic ones coalesced, a battery alert at once; its own
//! status; the server's capability query answered by the PNE; notifications reaching it;
//! heartbeats keeping its link.

use std::time::Duration;

use cpns_wire::{
    Body, DeviceCapabilities, ErrorCode, NotifyReason, SetupType, Status, StatusEntry,
    StatusNotification,
};

use super::harness::{FLOW, Harness, Party, pne_id};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};

fn household(heartbeats: bool) -> Harness {
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::new(&specs);
    h.gw_cfg.report_presence = true;
    h.gw_cfg.pan_offline_after = Some(Duration::from_secs(30));
    for c in &mut h.pne_cfgs {
        c.dynamic_interval = Duration::from_secs(30);
        c.battery_alert = Some(10);
        c.heartbeat = heartbeats.then_some(Duration::from_secs(10));
    }
    h.restart_from_stores(&specs);
    h.discover_all();
    h.setup(0, SetupType::All);
    assert!(h.joined(0).is_some());
    h
}

fn caps(battery: u8, software: &[&str]) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: "phone".into(),
        has_ui: true,
        battery_pct: Some(battery),
        software: software.iter().map(|s| s.to_string()).collect(),
        ..DeviceCapabilities::default()
    }
}

/// How many capability reports PNE `i` sent.
fn reports(h: &Harness, i: usize) -> usize {
    h.delivered(Party::Pne(i), Party::Gw)
        .into_iter()
        .filter(|e| matches!(e.body, Body::DeviceCapabilitiesUpdate(_)))
        .count()
}

fn recorded_battery(h: &Harness, i: usize) -> Option<u8> {
    h.store
        .reports
        .get(&pne_id(i))
        .and_then(|(c, _)| c.as_ref())
        .and_then(|c| c.battery_pct)
}

fn set(h: &mut Harness, i: usize, c: DeviceCapabilities) {
    let now = h.now();
    h.pnes[i].set_capabilities(now, c).unwrap();
    h.pump();
}

#[test]
fn static_changes_go_at_once_dynamic_ones_at_most_once_an_interval_with_the_latest() {
    // Heartbeats keep the link while the test waits out intervals.
    let mut h = household(true);
    set(&mut h, 0, caps(80, &["maps/1"]));
    assert_eq!(reports(&h, 0), 1, "the first report goes at once");
    assert_eq!(recorded_battery(&h, 0), Some(80));
    assert!(
        h.pne_outcomes(0)
            .contains(&&crate::pne::Outcome::Capabilities { reported: true })
    );
    // Dynamic only: held back, the latest kept.
    h.advance(Duration::from_secs(5));
    set(&mut h, 0, caps(70, &["maps/1"]));
    set(&mut h, 0, caps(60, &["maps/1"]));
    assert_eq!(reports(&h, 0), 1);
    assert_eq!(recorded_battery(&h, 0), Some(80));
    // A static change goes at once, carrying the latest battery too.
    set(&mut h, 0, caps(60, &["maps/1", "game/2"]));
    assert_eq!(reports(&h, 0), 2);
    assert_eq!(recorded_battery(&h, 0), Some(60));
    // Dynamic again, then the interval passes: one report with the latest.
    set(&mut h, 0, caps(50, &["maps/1", "game/2"]));
    set(&mut h, 0, caps(45, &["maps/1", "game/2"]));
    h.advance(Duration::from_secs(29));
    assert_eq!(reports(&h, 0), 2);
    h.advance(Duration::from_secs(1));
    assert_eq!(reports(&h, 0), 3);
    assert_eq!(recorded_battery(&h, 0), Some(45));
    // The same values again: nothing to send.
    h.advance(Duration::from_secs(60));
    set(&mut h, 0, caps(45, &["maps/1", "game/2"]));
    assert_eq!(reports(&h, 0), 3);
}

#[test]
fn a_battery_crossing_its_alert_level_is_reported_at_once_and_once() {
    let mut h = household(false);
    set(&mut h, 0, caps(30, &[]));
    h.advance(Duration::from_secs(1));
    set(&mut h, 0, caps(9, &[]));
    assert_eq!(reports(&h, 0), 2, "crossed below 10: at once");
    assert_eq!(recorded_battery(&h, 0), Some(9));
    h.advance(Duration::from_secs(1));
    set(&mut h, 0, caps(8, &[]));
    assert_eq!(reports(&h, 0), 2, "still below: coalesced");
}

#[test]
fn capabilities_over_their_bounds_are_refused_on_the_device() {
    let mut h = household(false);
    let mut big = caps(50, &[]);
    big.running = vec!["x".into(); cpns_wire::caps_limits::MAX_LIST + 1];
    let now = h.now();
    assert!(
        h.pnes[0]
            .set_capabilities(now, big)
            .unwrap_err()
            .to_string()
            .contains("running")
    );
    assert_eq!(reports(&h, 0), 0);
}

#[test]
fn a_pne_sets_its_own_status_and_bad_ones_never_leave() {
    let mut h = household(false);
    let now = h.now();
    h.pnes[0]
        .set_status(now, Status::Custom, Some("driving".into()))
        .unwrap();
    h.pump();
    assert!(h.pne_outcomes(0).contains(&&Outcome::StatusReported));
    let (s, _) = h.store.statuses[&pne_id(0)].clone();
    assert_eq!(
        (s.status, s.label.as_deref()),
        (Status::Custom, Some("driving"))
    );
    for (status, label) in [
        (Status::Offline, None),
        (Status::Custom, None),
        (Status::Busy, Some("x".to_string())),
        (Status::Custom, Some("x".repeat(65))),
    ] {
        assert!(h.pnes[0].set_status(now, status, label).is_err());
    }
    // The longest label a custom status takes is 64 bytes.
    let id = h.pnes[0]
        .set_status(now, Status::Custom, Some("x".repeat(64)))
        .unwrap();
    h.pump();
    assert!(h.completion(0, id).is_some_and(|c| c.result.is_ok()));
}

/// A status request the server never answers is the PNE's next deadline, one flow timeout
/// away: its driver wakes for it then (not at once, not never), and it ends timed out.
#[test]
fn an_unanswered_status_request_is_the_pnes_next_deadline() {
    let mut h = household(false);
    h.drop_message("StatusReport");
    let now = h.now();
    assert_eq!(h.pnes[0].poll_timeout(), None, "nothing else waits");
    let id = h.pnes[0].set_status(now, Status::Busy, None).unwrap();
    h.pump();
    assert_eq!(h.pnes[0].poll_timeout(), Some(now + FLOW));
    h.advance(FLOW - Duration::from_millis(1));
    assert!(h.completion(0, id).is_none());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.completion(0, id).map(|c| &c.result),
        Some(&Err(crate::Failure::TimedOut))
    );
}

#[test]
fn the_server_asks_a_pne_for_its_capabilities_through_its_pn_gw() {
    let mut h = household(false);
    let now = h.now();
    let c = caps(77, &["video/3"]);
    h.pnes[1].set_capabilities(now, c.clone()).unwrap();
    h.pump();
    h.server.ask_capabilities(now, pne_id(1), 41);
    h.pump();
    assert_eq!(h.capabilities_answers, [(41, Ok(c))]);
    // The PN GW answers for itself.
    h.server
        .ask_capabilities(now, super::harness::id("gw-1"), 42);
    h.pump();
    assert_eq!(h.capabilities_answers[1].0, 42);
    assert_eq!(
        h.capabilities_answers[1].1.as_ref().unwrap(),
        &h.gw_cfg.capabilities
    );
    // A PNE no link reaches: not found, from the PN GW.
    h.server
        .ask_capabilities(now, super::harness::id("nobody"), 43);
    h.pump();
    let (_, r) = &h.capabilities_answers[2];
    assert_eq!(r.as_ref().unwrap_err().code, ErrorCode::NotFound);
    // A PNE that does not answer: a timeout.
    h.set_hook(|f| {
        if f.from == Party::Pne(1) {
            super::harness::Action::Drop
        } else {
            super::harness::Action::Deliver
        }
    });
    h.server.ask_capabilities(now, pne_id(1), 44);
    h.pump();
    h.advance(Duration::from_secs(31));
    let (ask, r) = h.capabilities_answers.last().unwrap();
    assert_eq!(
        (*ask, r.as_ref().unwrap_err().code),
        (44, ErrorCode::Timeout)
    );
}

#[test]
fn a_notification_for_a_pne_reaches_it_through_its_pn_gw() {
    let mut h = household(false);
    let n = StatusNotification {
        subscription: 5,
        reason: NotifyReason::Threshold,
        entries: vec![StatusEntry::new(pne_id(0), Status::Online)],
        lagged: None,
    };
    h.server.notify(pne_id(1), n.clone());
    h.pump();
    assert!(h.pne_events(1).contains(&&PneEvent::StatusNotified(n)));
    assert!(
        h.pne_events(0)
            .iter()
            .all(|e| !matches!(e, PneEvent::StatusNotified(_)))
    );
}

#[test]
fn heartbeats_keep_a_quiet_pnes_link_and_presence() {
    let mut h = household(true);
    for _ in 0..10 {
        h.advance(Duration::from_secs(10));
    }
    assert!(
        h.closes
            .iter()
            .all(|(p, link, _)| !(*p == Party::Gw && link.is_some())),
        "{:?}",
        h.closes
    );
    assert_eq!(h.store.statuses[&pne_id(0)].0.status, Status::Online);
    let beats = h
        .delivered(Party::Pne(0), Party::Gw)
        .into_iter()
        .filter(|e| matches!(e.body, Body::Heartbeat(_)))
        .count();
    assert!((9..=11).contains(&beats), "{beats}");
}

#[test]
fn a_pne_asks_and_subscribes_through_its_pn_gw() {
    let mut h = household(false);
    let now = h.now();
    h.pnes[1].query_status(now, vec![pne_id(0)]);
    h.pump();
    let answered = h.pne_events(1).into_iter().find_map(|e| match e {
        PneEvent::Completed(crate::Completed {
            result: Ok(Outcome::Statuses(entries)),
            ..
        }) => Some(entries.clone()),
        _ => None,
    });
    assert_eq!(answered.unwrap()[0].status, Status::Online);
    let policy = cpns_wire::StatusPolicy {
        kind: cpns_wire::PolicyKind::OnChange,
        attribute: None,
        crossing: None,
        bound: None,
        period_s: None,
    };
    h.pnes[1].subscribe_status(now, vec![], policy.clone());
    h.pump();
    let id = h
        .pne_events(1)
        .into_iter()
        .find_map(|e| match e {
            PneEvent::Completed(crate::Completed {
                result: Ok(Outcome::Subscribed { subscription, .. }),
                ..
            }) => Some(*subscription),
            _ => None,
        })
        .unwrap();
    assert_eq!(h.store.subscriptions[&id].subscriber, pne_id(1));
    h.pnes[1].unsubscribe_status(now, id);
    h.pump();
    assert!(h.pne_outcomes(1).contains(&&Outcome::Unsubscribed(id)));
    // Its own subscription only; another's is not found, reported as a failed flow.
    h.pnes[0].unsubscribe_status(now, 999);
    h.pump();
    assert!(h.pne_refused(0, ErrorCode::NotFound));
}
