//! The PN GW as its PNEs' proxy for capabilities and status (docs/device-status.md): presence
//! reported from proven links, a silent link closed at the bound, a member's own reports
//! checked, rate-limited and relayed in its name, everything else refused at the PN GW.

use std::time::Duration;

use cpns_wire::{
    Address, Body, DeviceCapabilities, DeviceCapabilitiesUpdate, Envelope, ErrorCode, Heartbeat,
    SetupType, Status, StatusEntry, StatusReport,
};

use super::harness::{Harness, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::LinkId;

/// Two trusted PNEs in one PN and a third that is in none; the PN GW reports presence and
/// closes links silent for 30 s.
fn household() -> Harness {
    let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::new(&specs);
    h.gw_cfg.report_presence = true;
    h.gw_cfg.pan_offline_after = Some(Duration::from_secs(30));
    h.restart_from_stores(&specs);
    h.discover_all();
    h
}

fn with_pn() -> Harness {
    let mut h = household();
    // PNE 0 sets up a PN with PNE 1 only (PNE 2 declines nothing: it is never asked).
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(1, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    h
}

fn status(h: &Harness, i: usize) -> Option<(Status, Option<cpns_wire::EntityId>)> {
    h.store
        .statuses
        .get(&pne_id(i))
        .map(|(s, by)| (s.status, by.clone()))
}

/// Sends `body` from PNE `i` to its PN GW on its (trusted, plain) link; the PN GW's answer.
fn from_pne(h: &mut Harness, i: usize, msg: u64, to: Address, body: impl Into<Body>) -> Body {
    let env = Envelope::request(msg, Address::Entity(pne_id(i)), to, body);
    h.inject(Party::Pne(i), Party::Gw, plain(&env));
    h.pump();
    h.delivered(Party::Gw, Party::Pne(i))
        .into_iter()
        .rev()
        .find(|e| e.in_reply_to == Some(msg))
        .map(|e| e.body)
        .expect("the PN GW answered")
}

fn refusal(b: &Body) -> Option<(ErrorCode, String)> {
    match b {
        Body::ErrorBody(e) => Some((e.code, e.reason.clone())),
        _ => None,
    }
}

#[test]
fn members_on_proven_links_are_online_and_offline_once_their_link_closes() {
    let mut h = with_pn();
    let gw = Some(id("gw-1"));
    assert_eq!(status(&h, 0), Some((Status::Online, gw.clone())));
    assert_eq!(status(&h, 1), Some((Status::Online, gw.clone())));
    assert_eq!(status(&h, 2), None, "not a member: never reported");
    let now = h.now();
    h.gw.link_closed(now, LinkId(1));
    h.pump();
    assert_eq!(status(&h, 1), Some((Status::Offline, gw)));
    assert_eq!(status(&h, 0).unwrap().0, Status::Online);
    // One report each way, each answered.
    let reports = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter(|e| matches!(e.body, Body::StatusReport(_)))
        .count();
    assert!(reports >= 2, "{reports}");
}

#[test]
fn a_new_wan_session_reports_every_member_present_again() {
    let mut h = with_pn();
    h.store.statuses.clear();
    h.gw.wan_closed(h.now());
    let before = h.delivered(Party::Gw, Party::Server).len();
    h.reopen_wan();
    assert_eq!(status(&h, 0).unwrap().0, Status::Online);
    assert_eq!(status(&h, 1).unwrap().0, Status::Online);
    // Upstream aggregation (004 §5.5.8.2; docs/services.md, "Upstream"): the presence of
    // both PNEs went up in one report, not one report each.
    let reports: Vec<Vec<cpns_wire::EntityId>> = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .skip(before)
        .filter_map(|e| match e.body {
            Body::StatusReport(r) => Some(r.entries.into_iter().map(|x| x.entity).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(reports, [vec![pne_id(0), pne_id(1)]]);
}

#[test]
fn a_silent_link_is_closed_at_the_bound_and_heartbeats_keep_a_link() {
    let mut h = with_pn();
    // PNE 0 sends Heartbeats every 20 s; PNE 1 and PNE 2 say nothing.
    for n in 0..2 {
        h.advance(Duration::from_secs(20));
        let beat = Envelope::notify(
            500 + n,
            Address::Entity(pne_id(0)),
            Address::Server,
            Heartbeat {},
        );
        h.inject(Party::Pne(0), Party::Gw, plain(&beat));
        h.pump();
    }
    let closed: Vec<_> = h
        .closes
        .iter()
        .filter(|(p, ..)| *p == Party::Gw)
        .filter_map(|(_, link, why)| link.map(|l| (l, why.clone())))
        .collect();
    // PNE 1 and PNE 2 (in no PN) fell silent; PNE 0 did not.
    let links: Vec<usize> = closed.iter().map(|(l, _)| *l).collect();
    assert_eq!(links, [1, 2], "{closed:?}");
    assert!(
        closed
            .iter()
            .all(|(_, why)| why.contains("silent for 30 s")),
        "{closed:?}"
    );
    assert_eq!(status(&h, 1).unwrap().0, Status::Offline);
    assert_eq!(status(&h, 0).unwrap().0, Status::Online);
}

fn caps(device: &str) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device.into(),
        has_ui: true,
        battery_pct: Some(33),
        ..DeviceCapabilities::default()
    }
}

#[test]
fn a_member_reports_its_own_capabilities_and_status_in_its_name() {
    let mut h = with_pn();
    let update = DeviceCapabilitiesUpdate {
        capabilities: caps("tablet"),
        entity: None,
    };
    let b = from_pne(&mut h, 0, 700, Address::Server, update);
    assert!(matches!(b, Body::DeviceCapabilitiesConfirm(_)), "{b:?}");
    let (recorded, _) = h.store.reports[&pne_id(0)].clone();
    assert_eq!(recorded.unwrap().device_type, "tablet");
    // Relayed in the PNE's name, with the entity named.
    let up = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .rev()
        .find(|e| matches!(e.body, Body::DeviceCapabilitiesUpdate(_)))
        .unwrap();
    assert_eq!(up.from, Address::Entity(pne_id(0)));
    let mut busy = StatusEntry::new(pne_id(0), Status::Custom);
    busy.label = Some("driving".into());
    let b = from_pne(
        &mut h,
        0,
        701,
        Address::Server,
        StatusReport {
            entries: vec![busy],
        },
    );
    assert!(matches!(b, Body::StatusAck(_)), "{b:?}");
    let (s, _) = h.store.statuses[&pne_id(0)].clone();
    assert_eq!(
        (s.status, s.label.as_deref()),
        (Status::Custom, Some("driving"))
    );
}

#[test]
fn what_a_pne_may_not_report_is_refused_at_the_pn_gw_and_goes_nowhere() {
    let mut h = with_pn();
    let wan_before = h.delivered(Party::Gw, Party::Server).len();
    let update = |entity| DeviceCapabilitiesUpdate {
        capabilities: caps("x"),
        entity,
    };
    // Not a member of a PN of this PN GW.
    let b = from_pne(&mut h, 2, 800, Address::Server, update(None));
    assert_eq!(refusal(&b).unwrap().0, ErrorCode::Forbidden);
    // Another PNE's.
    let b = from_pne(&mut h, 0, 801, Address::Server, update(Some(pne_id(1))));
    assert_eq!(refusal(&b).unwrap().0, ErrorCode::Forbidden);
    // Too big.
    let mut big = caps("x");
    big.software = vec!["s".into(); cpns_wire::caps_limits::MAX_LIST + 1];
    let b = from_pne(
        &mut h,
        0,
        802,
        Address::Server,
        DeviceCapabilitiesUpdate {
            capabilities: big,
            entity: None,
        },
    );
    assert_eq!(refusal(&b).unwrap().0, ErrorCode::BadRequest);
    // Another's status, two entries, or offline while speaking.
    for (n, entries) in [
        vec![StatusEntry::new(pne_id(1), Status::Busy)],
        vec![
            StatusEntry::new(pne_id(0), Status::Busy),
            StatusEntry::new(pne_id(0), Status::Online),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let b = from_pne(
            &mut h,
            0,
            810 + n as u64,
            Address::Server,
            StatusReport { entries },
        );
        assert_eq!(refusal(&b).unwrap().0, ErrorCode::Forbidden);
    }
    let off = StatusReport {
        entries: vec![StatusEntry::new(pne_id(0), Status::Offline)],
    };
    let b = from_pne(&mut h, 0, 820, Address::Server, off);
    assert_eq!(refusal(&b).unwrap().0, ErrorCode::BadRequest);
    assert_eq!(
        h.delivered(Party::Gw, Party::Server).len(),
        wan_before,
        "nothing relayed"
    );
}

#[test]
fn a_pne_over_its_rate_is_refused_at_the_pn_gw_and_the_others_go_on() {
    let mut h = with_pn();
    let burst = crate::gateway::PneReportLimits::default().status_burst;
    let busy = |i| StatusReport {
        entries: vec![StatusEntry::new(pne_id(i), Status::Busy)],
    };
    for n in 0..burst {
        let b = from_pne(&mut h, 0, 900 + u64::from(n), Address::Server, busy(0));
        assert!(matches!(b, Body::StatusAck(_)), "{n}: {b:?}");
    }
    let b = from_pne(&mut h, 0, 950, Address::Server, busy(0));
    let (code, reason) = refusal(&b).unwrap();
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(reason.contains("try again in"), "{reason}");
    let b = from_pne(&mut h, 1, 951, Address::Server, busy(1));
    assert!(matches!(b, Body::StatusAck(_)), "{b:?}");
}

#[test]
fn a_pn_gw_subscribes_for_itself_and_sets_its_own_status() {
    let mut h = with_pn();
    let policy = cpns_wire::StatusPolicy {
        kind: cpns_wire::PolicyKind::OnChange,
        attribute: None,
        crossing: None,
        bound: None,
        period_s: None,
    };
    let now = h.now();
    let asked = h.gw.subscribe_status(now, vec![pne_id(0)], policy).unwrap();
    h.pump();
    let (id, entries) = match h.gw_outcome(asked) {
        crate::gateway::Outcome::Subscribed {
            subscription,
            entries,
        } => (*subscription, entries.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(entries[0].status, Status::Online);
    assert_eq!(h.store.subscriptions[&id].subscriber, id_of_gw());
    // Its notifications reach it as events.
    let n = cpns_wire::StatusNotification {
        subscription: id,
        reason: cpns_wire::NotifyReason::Change,
        entries: vec![StatusEntry::new(pne_id(0), Status::Offline)],
        lagged: None,
    };
    h.server.notify(id_of_gw(), n.clone());
    h.pump();
    assert!(
        h.gw_events()
            .contains(&&crate::gateway::GatewayEvent::StatusNotified(n))
    );
    // Its own status.
    let busy = h.gw.set_status(now, Status::Busy, None).unwrap();
    h.pump();
    assert_eq!(h.gw_outcome(busy), &crate::gateway::Outcome::StatusReported);
    assert_eq!(h.store.statuses[&id_of_gw()].0.status, Status::Busy);
    // One the server never answers ends at its deadline; one in flight when the session
    // ends, with it.
    h.set_hook(|f| {
        if f.message == "StatusReport" {
            super::harness::Action::Drop
        } else {
            super::harness::Action::Deliver
        }
    });
    let now = h.now();
    let late = h.gw.set_status(now, Status::Busy, None).unwrap();
    h.pump();
    assert!(h.gw_completion(late).is_none());
    // The driver is told to wake at its deadline, and it ends then, not before.
    assert_eq!(h.gw.poll_timeout(), Some(now + super::harness::FLOW));
    h.advance(super::harness::FLOW - std::time::Duration::from_millis(1));
    assert!(h.gw_completion(late).is_none());
    h.advance(std::time::Duration::from_millis(1));
    assert_eq!(h.gw_failure(late), &crate::Failure::TimedOut);
    let now = h.now();
    let cut = h.gw.set_status(now, Status::Busy, None).unwrap();
    h.pump();
    h.gw.wan_closed(now);
    h.pump();
    assert_eq!(h.gw_failure(cut), &crate::Failure::WanLost);
    // Without a WAN session, neither goes anywhere.
    assert_eq!(
        h.gw.set_status(now, Status::Online, None),
        Err(crate::CommandError::NoServerSession)
    );
}

fn id_of_gw() -> cpns_wire::EntityId {
    id("gw-1")
}
