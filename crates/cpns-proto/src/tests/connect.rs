//! PN GW connection set-up towards the CPNS Server (002 §B.1.1.2 steps 8-17) and CPNS entity
//! discovery on the PAN (000 §6.4), in both directions.

use cpns_wire::{Address, Body, ErrorCode, Mode, Status};

use super::harness::{Action, FLOW, Harness, Party, id, pne_id};
use super::store::PneSpec;
use crate::gateway::{GatewayEvent, LinkId};
use crate::pne::{Outcome, PneEvent};
use crate::server::ServerEvent;

#[test]
fn connection_setup_authenticates_reports_and_becomes_ready() {
    let mut h = Harness::new(&[]);
    h.connect_gw();
    let gw = id("gw-1");
    // Steps 8-16, in order, nothing else.
    assert_eq!(
        h.wan_messages(),
        [
            "ConnectionSetupRequest",
            "AuthChallenge",
            "AuthResponse",
            "ConnectionSetupConfirm",
            "DeviceCapabilitiesUpdate",
            "DeviceCapabilitiesConfirm",
            "StatusUpdateRequest",
            "StatusUpdateResponse",
        ]
    );
    assert_eq!(
        h.server_events(),
        [
            &ServerEvent::GatewayAuthenticated(gw.clone()),
            &ServerEvent::GatewayReady(gw.clone()),
        ]
    );
    assert_eq!(h.gw_events(), [&GatewayEvent::WanReady]);
    assert_eq!(h.server.gateway(), Some(&gw));
    // Step 17: the PN GW's entry carries its capabilities and status.
    let (caps, status) = h.store.reports.get(&gw).cloned().unwrap();
    assert_eq!(caps, Some(h.gw_cfg.capabilities.clone()));
    assert_eq!(status, Some(Status::Online));
    assert!(h.errors.is_empty() && h.closes.is_empty());
    // Nothing else is pending: no timer is left running.
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.gw.poll_timeout(), None);
}

#[test]
fn status_response_lists_the_pns_the_gateway_serves() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, cpns_wire::SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    // A new TLS session: the status lookup (step 15) reports the restored PN.
    h.restart_from_stores(&[PneSpec::trusted()]);
    let status = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .rev()
        .find_map(|e| match e.body {
            Body::StatusUpdateResponse(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(status.pns, [pn]);
}

#[test]
fn capabilities_not_stored_means_no_confirmation_and_no_ready() {
    let mut h = Harness::new(&[]);
    h.store.fail_server = true;
    let now = h.now();
    h.gw.wan_connected(now, super::harness::EXPORTER).unwrap();
    h.pump();
    // The PN GW was authenticated, but step 13 is an internal error, not a confirmation.
    assert!(
        h.server_events()
            .contains(&&ServerEvent::GatewayAuthenticated(id("gw-1")))
    );
    assert!(
        !h.server_events()
            .iter()
            .any(|e| matches!(e, ServerEvent::GatewayReady(_)))
    );
    let err = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find_map(|e| e.error().cloned())
        .unwrap();
    assert_eq!(err.code, ErrorCode::Internal);
    assert!(!h.gw.wan_ready());
    assert!(matches!(
        h.gw_events()[..],
        [GatewayEvent::WanRefused(e), GatewayEvent::WanFailed(_)] if e.code == ErrorCode::Internal
    ));
    assert!(h.store.reports.is_empty());
}

#[test]
fn silent_gateway_times_out_connection_setup_and_session_closes() {
    let mut h = Harness::new(&[]);
    // No Connection Setup Request ever comes: the unauthenticated session has a short deadline.
    let setup = h.server_cfg.setup_timeout;
    assert!(setup < FLOW);
    h.advance(setup - std::time::Duration::from_secs(1));
    assert!(h.closes.is_empty());
    h.advance(std::time::Duration::from_secs(1));
    assert!(matches!(
        &h.closes[..],
        [(Party::Server, None, r)] if r.contains("timed out")
    ));
    assert_eq!(h.server.gateway(), None);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn unanswered_challenge_times_out_on_both_ends() {
    let mut h = Harness::new(&[]);
    // The PN GW's Authentication response (step 10) is lost.
    h.set_hook(|f| match f.message {
        "AuthResponse" => Action::Drop,
        _ => Action::Deliver,
    });
    let now = h.now();
    h.gw.wan_connected(now, super::harness::EXPORTER).unwrap();
    h.pump();
    assert_eq!(h.server.gateway(), None);
    h.advance(FLOW);
    assert!(
        h.closes
            .iter()
            .any(|(p, _, r)| *p == Party::Server && r.contains("timed out"))
    );
    assert!(
        h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::WanFailed(r) if r.contains("timed out")))
    );
    assert!(!h.gw.wan_ready());
    assert!(h.store.reports.is_empty());
}

#[test]
fn pne_discovers_the_gateway() {
    let mut h = Harness::new(&[PneSpec::cpns()]);
    h.connect_gw();
    let now = h.now();
    let asked = h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    assert_eq!(
        h.pne_events(0),
        [&PneEvent::Completed(crate::Completed {
            id: asked,
            flow: crate::Flow::EntityDiscovery,
            result: Ok(Outcome::Discovered {
                gateway: id("gw-1"),
                zone_support: false,
                pns: Vec::new(),
            }),
        })]
    );
    assert_eq!(h.pnes[0].gateway(), Some(&id("gw-1")));
    assert!(h.gw_events().contains(&&GatewayEvent::PneDiscovered {
        link: LinkId(0),
        pne: pne_id(0),
    }));
    assert_eq!(h.pnes[0].poll_timeout(), None, "the discovery wait ended");
}

#[test]
fn gateway_discovers_a_pne_on_a_fresh_link() {
    let mut h = Harness::new(&[PneSpec::trusted()]);
    h.gw.discover(LinkId(0));
    h.pump();
    // Step 2: the PNE answers with its mode and id, though it did not know who asked.
    let resp = h
        .delivered(Party::Pne(0), Party::Gw)
        .into_iter()
        .find_map(|e| match e.body {
            Body::EntityDiscoveryResponse(r) => Some(r),
            _ => None,
        })
        .expect("the PNE answered the discovery request");
    assert_eq!((resp.mode, resp.entity_id), (Mode::Pne, pne_id(0)));
    // On a trusted PAN the bearer vouches for the link: named is proven.
    assert_eq!(
        h.gw_events(),
        [
            &GatewayEvent::PneDiscovered {
                link: LinkId(0),
                pne: pne_id(0),
            },
            &GatewayEvent::LinkProven {
                link: LinkId(0),
                pne: pne_id(0),
            }
        ]
    );
    // Discovery is mutual: the PNE learned the PN GW from the request.
    assert_eq!(h.pnes[0].gateway(), Some(&id("gw-1")));
    assert!(h.errors.is_empty());
}

/// Less said to strangers (docs/security.md §4.4): a discovery answer names a PN only to a
/// link that proved its PNE, and then only the PNs that PNE is a member of; a PNE names its PNs
/// only to a PN GW it may believe, and only that PN GW's.
#[test]
fn discovery_names_pns_only_after_a_proof() {
    // On a trusted bearer every link is proven: the member hears its PN, the other PNE none.
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, cpns_wire::SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let discovered = |h: &mut Harness, i: usize| {
        let now = h.now();
        h.pnes[i].start_discovery(now).unwrap();
        h.pump();
        h.pne_events(i).into_iter().rev().find_map(|e| match e {
            PneEvent::Completed(crate::Completed {
                result: Ok(Outcome::Discovered { pns, .. }),
                ..
            }) => Some(pns.clone()),
            _ => None,
        })
    };
    assert_eq!(discovered(&mut h, 0), Some(vec![pn]));
    assert_eq!(discovered(&mut h, 1), Some(vec![]));
    // A PNE asked by its PN GW lists the PNs it belongs to.
    let listed = |h: &mut Harness, link: u64, i: usize| {
        h.gw.discover(LinkId(link));
        h.pump();
        h.delivered(Party::Pne(i), Party::Gw)
            .into_iter()
            .rev()
            .find_map(|e| match e.body {
                Body::EntityDiscoveryResponse(r) => Some(r.pns),
                _ => None,
            })
    };
    assert_eq!(listed(&mut h, 0, 0), Some(vec![pn]));
    // On an insecure PAN, after a restart: before its proof a member hears no PN, and names
    // none to a PN GW that has not proved itself; after it, both do.
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::cpns()]);
    h.setup(0, cpns_wire::SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.restart_from_stores(&[PneSpec::cpns(), PneSpec::cpns()]);
    assert_eq!(discovered(&mut h, 1), Some(vec![]));
    assert_eq!(listed(&mut h, 1, 1), Some(vec![]));
    let now = h.now();
    h.pnes[1].start_pan_auth(now, pn).unwrap();
    h.pump();
    assert!(h.pnes[1].link_sealed());
    assert_eq!(discovered(&mut h, 1), Some(vec![pn]));
}

#[test]
fn an_unanswered_discovery_fails_at_its_deadline() {
    let mut h = Harness::new(&[PneSpec::trusted()]);
    // The PN GW never answers.
    h.set_hook(|f| {
        if f.to == Party::Pne(0) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    assert_eq!(h.pnes[0].poll_timeout(), Some(now + FLOW));
    let failed = |h: &Harness| {
        h.pne_failed_flows(0).iter().any(|e| {
            matches!(
                e,
                crate::pne::PneEvent::FlowFailed {
                    flow: crate::Flow::EntityDiscovery,
                    reason: crate::Failure::NoAnswer
                }
            )
        })
    };
    h.advance(FLOW - std::time::Duration::from_millis(1));
    assert!(!failed(&h));
    h.advance(std::time::Duration::from_millis(1));
    assert!(failed(&h));
    assert_eq!(h.pnes[0].poll_timeout(), None);
}

#[test]
fn a_pne_learns_its_gateway_only_from_a_gateway_and_only_from_answers_it_asked_for() {
    let mut h = Harness::new(&[PneSpec::trusted()]);
    let me = Address::Entity(pne_id(0));
    // A discovery request from another PNE does not make it the PNE's PN GW.
    let from_pne = cpns_wire::Envelope::request(
        1,
        Address::Entity(id("other-pne")),
        me.clone(),
        cpns_wire::EntityDiscoveryRequest {
            entity_id: id("other-pne"),
            mode: Mode::Pne,
        },
    );
    h.deliver_direct(Party::Gw, Party::Pne(0), &super::harness::plain(&from_pne))
        .unwrap();
    assert_eq!(h.pnes[0].gateway(), None);
    // A discovery response nobody asked for is ignored.
    let unasked = cpns_wire::Envelope::response(
        2,
        99,
        Address::Entity(id("rogue-gw")),
        me.clone(),
        cpns_wire::EntityDiscoveryResponse {
            mode: Mode::Gateway,
            entity_id: id("rogue-gw"),
            zone_support: false,
            pns: vec![],
        },
    );
    h.deliver_direct(Party::Gw, Party::Pne(0), &super::harness::plain(&unasked))
        .unwrap();
    assert_eq!(h.pnes[0].gateway(), None);
    assert!(h.pne_events(0).is_empty());
    // The real PN GW's request makes it known; another gateway's later request does not
    // replace it.
    h.gw.discover(LinkId(0));
    h.pump();
    assert_eq!(h.pnes[0].gateway(), Some(&id("gw-1")));
    let other_gw = cpns_wire::Envelope::request(
        3,
        Address::Entity(id("rogue-gw")),
        me,
        cpns_wire::EntityDiscoveryRequest {
            entity_id: id("rogue-gw"),
            mode: Mode::Gateway,
        },
    );
    h.deliver_direct(Party::Gw, Party::Pne(0), &super::harness::plain(&other_gw))
        .unwrap();
    assert_eq!(h.pnes[0].gateway(), Some(&id("gw-1")));
}

/// Before the PN GW is authenticated the server takes the set-up only as a request, the
/// challenge's answer only as the answer to it, and only an entity enrolled as a PN GW.
#[test]
fn the_server_takes_only_a_well_formed_set_up_from_a_real_gateway() {
    use crate::server::ServerEvent;
    let server_sends = |h: &Harness| -> Vec<cpns_wire::Envelope> {
        h.queue
            .iter()
            .filter(|f| f.from == Party::Server)
            .filter_map(|f| f.env())
            .collect()
    };
    let setup = |gw: &str| cpns_wire::ConnectionSetupRequest {
        gw_id: id(gw),
        rand_gw: cpns_wire::RandBytes([1; 16]),
        software: "test".into(),
    };
    // A set-up sent as a notification: no challenge.
    let mut h = Harness::new(&[PneSpec::trusted()]);
    let note = cpns_wire::Envelope::notify(
        1,
        Address::Entity(id("gw-1")),
        Address::Server,
        setup("gw-1"),
    );
    h.deliver_direct(Party::Gw, Party::Server, &super::harness::plain(&note))
        .unwrap();
    assert!(server_sends(&h).is_empty());
    // A PNE's id as the PN GW: refused.
    let mut h = Harness::new(&[PneSpec::trusted()]);
    let req = cpns_wire::Envelope::request(
        1,
        Address::Entity(pne_id(0)),
        Address::Server,
        setup("pne-1"),
    );
    h.deliver_direct(Party::Gw, Party::Server, &super::harness::plain(&req))
        .unwrap();
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(0),
                reason: crate::Failure::NotAGateway,
            })
    );
    // An authentication response that answers something else than the challenge: refused.
    let mut h = Harness::new(&[PneSpec::trusted()]);
    let req = cpns_wire::Envelope::request(
        1,
        Address::Entity(id("gw-1")),
        Address::Server,
        setup("gw-1"),
    );
    h.deliver_direct(Party::Gw, Party::Server, &super::harness::plain(&req))
        .unwrap();
    let challenge = server_sends(&h)
        .into_iter()
        .find(|e| matches!(e.body, Body::AuthChallenge(_)))
        .expect("challenged");
    h.queue.clear();
    let stray = cpns_wire::Envelope::response(
        2,
        challenge.msg_id + 100,
        Address::Entity(id("gw-1")),
        Address::Server,
        cpns_wire::AuthResponse {
            hash: cpns_wire::HashBytes([0; 32]),
        },
    );
    h.deliver_direct(Party::Gw, Party::Server, &super::harness::plain(&stray))
        .unwrap();
    assert!(server_sends(&h).is_empty(), "a response is not answered");
    assert_eq!(h.server.gateway(), None);
    assert!(
        !h.server_events()
            .iter()
            .any(|e| matches!(e, ServerEvent::AuthenticationFailed { .. })),
        "not even checked"
    );
}

/// Only the first status report of a session makes the PN GW ready; later ones (the PN-list
/// notifications after each change) update the inventory without announcing it again.
#[test]
fn later_status_reports_do_not_announce_the_gateway_ready_again() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, cpns_wire::SetupType::All);
    let reports = h
        .delivered(Party::Gw, Party::Server)
        .iter()
        .filter(|e| matches!(e.body, Body::StatusUpdateResponse(_)))
        .count();
    assert!(reports >= 2, "a report follows the new PN ({reports})");
    let ready = h
        .server_events()
        .iter()
        .filter(|e| matches!(e, ServerEvent::GatewayReady(_)))
        .count();
    assert_eq!(ready, 1);
}

/// The PN GW's status reports as the server saw them, in order.
fn reports(h: &Harness) -> Vec<cpns_wire::StatusUpdateResponse> {
    h.delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::StatusUpdateResponse(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// After each establishment the PN GW reports only the PN it just stored (a partial report);
/// the server confirms that one PN without reading the PN GW's others, and writes the status
/// only when it changed.
#[test]
fn a_stored_pn_is_confirmed_by_a_partial_report_of_that_pn_alone() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, cpns_wire::SetupType::OneToOne);
    let first = h.joined(0).unwrap().pn_id;
    h.setup(1, cpns_wire::SetupType::OneToOne);
    let second = h.joined(1).unwrap().pn_id;
    let r = reports(&h);
    assert!(!r[0].partial, "the answer to step 15 is the full list");
    let partial: Vec<_> = r[1..].iter().filter(|s| s.partial).collect();
    assert_eq!(partial.len(), 2, "{r:?}");
    assert_eq!(partial[0].pns, [first]);
    assert_eq!(partial[1].pns, [second]);
    assert!(h.store.pending.is_empty(), "both PNs confirmed");
    assert_eq!(h.store.effects["confirm"], 2);
    assert_eq!(
        h.store.effects["reconcile"], 1,
        "only step 17 reconciled the whole list"
    );
    // Status online every time: written once (step 16), not for each report.
    assert_eq!(
        h.store.effects["report"], 2,
        "capabilities (step 12) and the first status (step 16)"
    );
}

/// A partial report confirms and never removes: listing nothing leaves every PN of the PN GW in
/// place, where a full report removes what it does not list. A status is written when it
/// changed, not otherwise.
#[test]
fn a_partial_report_removes_nothing_a_full_one_does() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, cpns_wire::SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let report = |msg_id: u64, status: Status, partial: bool| {
        let env = cpns_wire::Envelope::notify(
            msg_id,
            Address::Entity(id("gw-1")),
            Address::Server,
            cpns_wire::StatusUpdateResponse {
                status,
                pns: Vec::new(),
                partial,
            },
        );
        super::harness::plain(&env)
    };
    let written = h.store.effects["report"];
    h.inject(Party::Gw, Party::Server, report(900, Status::Online, true));
    h.pump();
    assert!(
        h.store.pns.contains_key(&pn),
        "a partial report removed a PN"
    );
    assert_eq!(
        h.store.effects["report"], written,
        "unchanged status written"
    );
    h.inject(Party::Gw, Party::Server, report(901, Status::Busy, true));
    h.pump();
    assert_eq!(
        h.store.effects["report"],
        written + 1,
        "changed status not written"
    );
    assert_eq!(h.store.reports[&id("gw-1")].1, Some(Status::Busy));
    h.inject(Party::Gw, Party::Server, report(902, Status::Busy, false));
    h.pump();
    assert!(!h.store.pns.contains_key(&pn), "the full list wins");
}

/// A later status report that changes the PN GW's status is recorded (and published), but
/// does not announce the PN GW ready again: only the session's first report does.
#[test]
fn a_changed_status_later_is_recorded_without_a_second_ready() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let from = h.published.len();
    let report = cpns_wire::StatusUpdateResponse {
        status: cpns_wire::Status::Busy,
        pns: Vec::new(),
        partial: true,
    };
    let env = cpns_wire::Envelope::notify(
        9_700,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Server,
        report,
    );
    h.deliver_direct(Party::Gw, Party::Server, &super::harness::plain(&env))
        .unwrap();
    let recorded = h.published[from..].iter().any(|p| {
        matches!(p, crate::server::Publish::Changed(s) if s[0].status == cpns_wire::Status::Busy)
    });
    assert!(recorded, "{:?}", &h.published[from..]);
    assert_eq!(
        h.store.reports[&h.gw_cfg.id].1,
        Some(cpns_wire::Status::Busy)
    );
    let ready = h
        .server_events()
        .iter()
        .filter(|e| matches!(e, ServerEvent::GatewayReady(_)))
        .count();
    assert_eq!(ready, 1);
}
