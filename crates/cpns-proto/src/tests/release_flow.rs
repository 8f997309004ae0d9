//! PN release end to end in the machines (000 §6.6.5 by the PN GW's owner, §6.6.5.1 by a
//! member PNE): the server, the PN GW's local inventory and every member agree afterwards;
//! every member on a proven link is told, the asker is answered, no one else hears of it. A
//! refusal, a timeout, a lost session or a failing store keeps the PN; a retry finishes it.

use std::time::Duration;

use cpns_wire::{
    Address, Envelope, ErrorCode, PnId, PnReleaseNotification, PnReleaseRequest, RequestId,
    SetupType,
};

use super::harness::{Action, FLOW, Harness, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::GatewayEvent;
use crate::pne::{Gone, Outcome, PneEvent};
use crate::{Failure, Flow};

/// Three PNEs on an insecure PAN in one PN set up by PNE 0 (their links sealed with their
/// LocalEUKeys), and PNE 3, which declined and is no member.
fn with_pn(spec: PneSpec) -> (Harness, PnId) {
    let specs = [spec, spec, spec, spec.declining()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let inv = h.joined(0).expect("the PN was established");
    assert_eq!(inv.members.len(), 3, "{:?}", h.events);
    (h, inv.pn_id)
}

/// The releases the PN GW carried out: who asked (`None`: its owner, whose command completed)
/// and the members told.
fn gw_released(h: &Harness) -> Vec<(Option<cpns_wire::EntityId>, Vec<cpns_wire::EntityId>)> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::PnReleased { by, notified, .. } => Some((by.clone(), notified.clone())),
            GatewayEvent::Completed(crate::Completed {
                result: Ok(crate::gateway::Outcome::Released { notified, .. }),
                ..
            }) => Some((None, notified.clone())),
            _ => None,
        })
        .collect()
}

/// Why a release failed, a member's or the owner's.
fn gw_release_failure(h: &Harness) -> Option<Failure> {
    h.gw_events().into_iter().find_map(|e| match e {
        GatewayEvent::ReleaseFailed { reason, .. }
        | GatewayEvent::Completed(crate::Completed {
            flow: crate::Flow::PnRelease,
            result: Err(reason),
            ..
        }) => Some(reason.clone()),
        _ => None,
    })
}

/// How PNE `i` learnt of a release: `Some(true)` it asked, `Some(false)` it was told.
fn pne_released(h: &Harness, i: usize, pn: PnId) -> Option<bool> {
    h.pne_events(i).into_iter().find_map(|e| match e {
        PneEvent::PnReleased(pn_id) if *pn_id == pn => Some(false),
        PneEvent::Completed(crate::Completed {
            result:
                Ok(Outcome::PnGone {
                    pn_id,
                    why: Gone::Released { by_me },
                }),
            ..
        }) if *pn_id == pn => Some(*by_me),
        _ => None,
    })
}

/// The PN is gone from the server, the PN GW (memory and store) and PNEs 0-2 (memory, store
/// and LocalEUKey).
fn gone_everywhere(h: &Harness, pn: PnId) {
    assert!(!h.store.pns.contains_key(&pn), "still at the server");
    assert!(
        !h.store.gw_local.contains_key(&pn),
        "still in the PN GW's store"
    );
    assert!(h.gw.inventory().iter().all(|i| i.pn_id != pn));
    for i in 0..3 {
        assert!(
            !h.store.pne_local[i].contains_key(&pn),
            "still in PNE {i}'s store"
        );
        assert!(h.pnes[i].inventory().iter().all(|inv| inv.pn_id != pn));
        assert!(
            !h.pnes[i].holds_local_key(&pn),
            "PNE {i} kept its LocalEUKey"
        );
    }
}

/// The PN is where it was before: server, PN GW, members.
fn kept_everywhere(h: &Harness, pn: PnId) {
    assert!(h.store.pns.contains_key(&pn));
    assert!(h.store.gw_local.contains_key(&pn));
    assert!(h.gw.inventory().iter().any(|i| i.pn_id == pn));
    for i in 0..3 {
        assert!(h.pnes[i].holds_local_key(&pn));
        assert_eq!(pne_released(h, i, pn), None);
    }
}

fn release_by_owner(h: &mut Harness, pn: PnId) -> Result<(), cpns_wire::ErrorBody> {
    let now = h.now();
    let r = h.gw.release_pn(now, pn);
    h.pump();
    r.map(drop).map_err(|e| e.to_error())
}

fn release_by_pne(h: &mut Harness, i: usize, pn: PnId) {
    let now = h.now();
    h.pnes[i].release_pn(now, pn).unwrap();
    h.pump();
}

#[test]
fn the_owner_releases_a_pn_and_every_member_is_told_and_no_one_else() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    release_by_owner(&mut h, pn).unwrap();
    gone_everywhere(&h, pn);
    assert_eq!(
        gw_released(&h),
        vec![(None, vec![pne_id(0), pne_id(1), pne_id(2)])]
    );
    for i in 0..3 {
        assert_eq!(pne_released(&h, i, pn), Some(false), "PNE {i}");
    }
    // PNE 3 is no member: it is not told.
    assert!(
        h.delivered(Party::Gw, Party::Pne(3))
            .iter()
            .all(|e| !matches!(e.body, cpns_wire::Body::PnReleaseNotification(_)))
    );
    assert!(
        h.pne_events(3)
            .iter()
            .all(|e| !matches!(e, PneEvent::PnReleased { .. }))
    );
    // The notifications travelled sealed, on the members' own links.
    for i in 0..3 {
        let t = h.pan_traces(i);
        let n = t
            .iter()
            .find(|t| t.message == "PnReleaseNotification")
            .expect("notified");
        assert!(n.sealed, "PNE {i}'s notification was not sealed");
    }
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

#[test]
fn a_member_releases_its_pn_it_is_answered_and_the_others_are_told() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    release_by_pne(&mut h, 1, pn);
    gone_everywhere(&h, pn);
    assert_eq!(pne_released(&h, 1, pn), Some(true));
    assert_eq!(pne_released(&h, 0, pn), Some(false));
    assert_eq!(pne_released(&h, 2, pn), Some(false));
    assert_eq!(
        gw_released(&h),
        vec![(Some(pne_id(1)), vec![pne_id(0), pne_id(2)])]
    );
    // The asker gets the answer, not a notification too.
    let t = h.pan_traces(1);
    assert!(t.iter().any(|t| t.message == "PnReleaseResponse"));
    assert!(t.iter().all(|t| t.message != "PnReleaseNotification"));
}

#[test]
fn a_member_on_a_new_link_proves_itself_before_it_asks() {
    let specs = [PneSpec::cpns(); 4];
    let (mut h, pn) = with_pn(PneSpec::cpns());
    // Every link is new and unsealed; PNE 2 proves itself with the PN's LocalEUKey first.
    h.restart_from_stores(&specs);
    h.discover_all();
    release_by_pne(&mut h, 2, pn);
    assert_eq!(pne_released(&h, 2, pn), Some(true), "{:?}", h.events);
    let msgs: Vec<&str> = h.pan_traces(2).iter().map(|t| t.message).collect();
    let auth = msgs.iter().position(|m| *m == "PanAuthInit").unwrap();
    let ask = msgs.iter().position(|m| *m == "PnReleaseRequest").unwrap();
    assert!(auth < ask, "{msgs:?}");
    assert!(h.pan_traces(2)[ask].sealed);
    // The others have not proved themselves on their new links: they are not told now.
    assert_eq!(gw_released(&h), vec![(Some(pne_id(2)), vec![])]);
    assert!(!h.store.pns.contains_key(&pn));
    assert!(!h.store.gw_local.contains_key(&pn));
}

/// PNE `i` sends a PN Release Request straight to the PN GW; the PN GW's answer.
fn raw_release(h: &mut Harness, i: usize, pn: PnId) -> cpns_wire::Body {
    h.pump(); // earlier answers delivered: the one found below is this request's
    let env = Envelope::request(
        9_001,
        Address::Entity(pne_id(i)),
        Address::Entity(id("gw-1")),
        PnReleaseRequest {
            request_id: RequestId(5),
            pn_id: pn,
            asked_by: None,
        },
    );
    h.deliver_direct(Party::Pne(i), Party::Gw, &plain(&env))
        .unwrap();
    h.queue
        .iter()
        .filter(|f| f.from == Party::Gw && f.to == Party::Pne(i))
        .filter_map(|f| f.env())
        .find(|e| e.in_reply_to == Some(9_001))
        .map(|e| e.body)
        .expect("the PN GW answered")
}

fn code(body: cpns_wire::Body) -> ErrorCode {
    match body {
        cpns_wire::Body::ErrorBody(e) => e.code,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn a_non_member_an_unproven_link_and_an_unknown_pn_are_refused_with_no_change() {
    // On a trusted bearer PNE 3 is proven, but no member.
    let (mut h, pn) = with_pn(PneSpec::trusted());
    let before = h.snapshot();
    assert_eq!(code(raw_release(&mut h, 3, pn)), ErrorCode::Forbidden);
    // A member asking for a PN that does not exist.
    assert_eq!(
        code(raw_release(&mut h, 0, PnId::from_bytes([9; 16]))),
        ErrorCode::NotFound
    );
    h.pump();
    assert_eq!(h.snapshot(), before);
    assert!(gw_released(&h).is_empty());
    assert!(!h.wan_messages().contains(&"PnReleaseRequest"));

    // On an insecure PAN a new link naming a member has proved nothing.
    let (mut h, pn) = with_pn(PneSpec::cpns());
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    let before = h.snapshot();
    assert_eq!(code(raw_release(&mut h, 0, pn)), ErrorCode::Forbidden);
    h.pump();
    assert_eq!(h.snapshot(), before);
}

#[test]
fn the_servers_refusal_keeps_the_pn_and_no_one_is_told() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    // The server's inventory says another PN GW holds it.
    h.store.pn_gateway.insert(pn, id("gw-2"));
    release_by_pne(&mut h, 0, pn);
    kept_everywhere(&h, pn);
    assert!(
        matches!(gw_release_failure(&h), Some(Failure::Refused(e)) if e.code == ErrorCode::Forbidden)
    );
    // The asking PNE reads the server's reason.
    assert!(h.pne_refused(0, ErrorCode::Forbidden));
    assert!(h.pne_failed_flows(0).iter().any(|e| matches!(
        e,
        PneEvent::FlowFailed {
            flow: Flow::PnRelease,
            ..
        }
    )));
    assert!(gw_released(&h).is_empty());
}

#[test]
fn a_pn_the_server_no_longer_has_goes_here_too() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    // Released at the server by an earlier attempt whose answer was lost.
    h.store.pns.remove(&pn);
    release_by_owner(&mut h, pn).unwrap();
    gone_everywhere(&h, pn);
    assert_eq!(gw_released(&h).len(), 1);
}

#[test]
fn a_timeout_keeps_the_pn_and_a_retry_releases_it() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    h.set_hook(|f| {
        if f.message == "PnReleaseRequest" && f.to == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    release_by_owner(&mut h, pn).unwrap();
    // Waiting, with the flow's deadline for the driver to wake at.
    let now = h.now();
    assert_eq!(h.gw.poll_timeout(), Some(now + FLOW));
    // A second release of the same PN is a conflict.
    assert_eq!(
        h.gw.release_pn(now, pn).unwrap_err().code(),
        ErrorCode::Conflict
    );
    assert_eq!(h.gw.flows_in_progress(), 1);
    h.advance(FLOW + Duration::from_millis(1));
    assert_eq!(gw_release_failure(&h), Some(Failure::TimedOut));
    assert_eq!(h.gw.flows_in_progress(), 0);
    kept_everywhere(&h, pn);
    h.clear_hook();
    release_by_owner(&mut h, pn).unwrap();
    gone_everywhere(&h, pn);
}

#[test]
fn a_pne_waiting_on_a_release_is_told_of_a_timeout() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    h.set_hook(|f| {
        if f.message == "PnReleaseRequest" && f.to == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    release_by_pne(&mut h, 2, pn);
    h.advance(FLOW + Duration::from_millis(1));
    assert!(
        h.pne_refused(2, ErrorCode::Timeout),
        "{:?}",
        h.pne_events(2)
    );
    kept_everywhere(&h, pn);
}

#[test]
fn a_lost_server_session_fails_the_release_and_none_starts_without_one() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    h.set_hook(|f| {
        if f.message == "PnReleaseRequest" && f.to == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    release_by_owner(&mut h, pn).unwrap();
    let now = h.now();
    h.gw.wan_closed(now);
    h.pump();
    assert_eq!(gw_release_failure(&h), Some(Failure::WanLost));
    assert_eq!(
        h.gw.release_pn(now, pn).unwrap_err().code(),
        ErrorCode::Busy
    );
    assert_eq!(
        h.gw.release_pn(now, PnId::from_bytes([7; 16]))
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    kept_everywhere(&h, pn);
}

#[test]
fn a_failing_local_store_keeps_the_pn_here_and_a_retry_finishes() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    h.store.fail_gw = true;
    release_by_owner(&mut h, pn).unwrap();
    assert!(matches!(gw_release_failure(&h), Some(Failure::Store(_))));
    // Gone at the server, still here and at the members: no one was told.
    assert!(!h.store.pns.contains_key(&pn));
    assert!(h.store.gw_local.contains_key(&pn));
    assert!(h.gw.inventory().iter().any(|i| i.pn_id == pn));
    assert!(gw_released(&h).is_empty());
    h.store.fail_gw = false;
    release_by_owner(&mut h, pn).unwrap();
    gone_everywhere(&h, pn);
    assert_eq!(gw_released(&h).len(), 1);
}

#[test]
fn a_pne_whose_store_fails_keeps_the_pn_and_says_so() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    h.store.fail_pne = true;
    release_by_owner(&mut h, pn).unwrap();
    for i in 0..3 {
        assert!(h.pnes[i].holds_local_key(&pn));
        assert_eq!(pne_released(&h, i, pn), None);
        assert!(matches!(h.pne_failures(i).as_slice(), [Failure::Store(_)]));
    }
}

/// A PN Release Notification for `pn` to PNE `i`, claimed to come from `from`.
fn notification(i: usize, from: &str, pn: PnId) -> Vec<u8> {
    plain(&Envelope::notify(
        9_100,
        Address::Entity(id(from)),
        Address::Entity(pne_id(i)),
        PnReleaseNotification { pn_id: pn },
    ))
}

#[test]
fn a_notification_is_believed_only_from_the_pns_proven_gateway() {
    // An insecure PAN with new links: the PN GW has not proved itself on them.
    let (mut h, pn) = with_pn(PneSpec::cpns());
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    h.deliver_direct(Party::Gw, Party::Pne(0), &notification(0, "gw-1", pn))
        .unwrap();
    // A trusted bearer: anyone but the PN's own PN GW.
    let (mut t, tpn) = with_pn(PneSpec::trusted());
    t.deliver_direct(Party::Gw, Party::Pne(0), &notification(0, "gw-2", tpn))
        .unwrap();
    for (h, pn) in [(&h, pn), (&t, tpn)] {
        assert!(
            h.pnes[0].inventory().iter().any(|i| i.pn_id == pn),
            "{:?}",
            h.events
        );
        assert!(h.store.pne_local[0].contains_key(&pn));
        assert_eq!(pne_released(h, 0, pn), None);
    }
    // From the PN's own PN GW on a trusted bearer: believed.
    t.deliver_direct(Party::Gw, Party::Pne(0), &notification(0, "gw-1", tpn))
        .unwrap();
    assert_eq!(pne_released(&t, 0, tpn), Some(false));
    assert!(!t.store.pne_local[0].contains_key(&tpn));
}

#[test]
fn a_pne_releases_only_what_it_belongs_to_and_one_at_a_time() {
    let (mut h, pn) = with_pn(PneSpec::trusted());
    let now = h.now();
    assert!(h.pnes[3].release_pn(now, pn).is_err(), "not a member");
    h.set_hook(|f| {
        if f.message == "PnReleaseRequest" && f.to == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.pnes[0].release_pn(now, pn).unwrap();
    assert!(h.pnes[0].release_pn(now, pn).is_err(), "already asked");
    h.pump();
    // The PN GW takes one release per PN: a second member asking is a conflict.
    assert_eq!(code(raw_release(&mut h, 1, pn)), ErrorCode::Conflict);
}

#[test]
fn a_pnes_release_counts_against_its_links_flow_limit() {
    let limits = crate::gateway::GatewayLimits {
        flows: 16,
        flows_per_link: 1,
        ..crate::gateway::GatewayLimits::default()
    };
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::with_limits(&specs, limits);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| {
        if f.message == "PnReleaseRequest" && f.to == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    release_by_pne(&mut h, 0, pn);
    // The same link asks again while its first release waits: over its limit.
    assert_eq!(code(raw_release(&mut h, 0, pn)), ErrorCode::Busy);
}
