//! A PN's member limit and lifetime (beyond the documents; docs/pn-lifecycle.md, "Lifetime and
//! member limit"): the server refuses a PN or a member beyond the limit, and new members of an
//! expired PN, with `conflict` naming why; the PN GW releases a PN whose lifetime ended, as its
//! owner would, telling every member, also after a restart.

use std::time::Duration;

use cpns_wire::{ErrorCode, PnId, SetupType};

use super::harness::{Harness, Party, pne_id};
use super::store::PneSpec;
use crate::Failure;
use crate::gateway::GatewayEvent;
use crate::pne::PneEvent;

fn harness(specs: &[PneSpec], lifetime: Option<u32>, max: Option<u32>) -> Harness {
    let mut h = Harness::new(specs);
    h.gw_cfg.pn_lifetime_s = lifetime;
    h.gw_cfg.pn_max_members = max;
    h.restart_from_stores(specs);
    h.discover_all();
    h
}

fn refusal(h: &Harness, i: usize) -> Option<(ErrorCode, String)> {
    h.pne_failures(i).into_iter().find_map(|f| match f {
        Failure::Refused(e) => Some((e.code, e.reason)),
        _ => None,
    })
}

/// An establishment with more members than the PN may have is refused, and nothing is stored.
#[test]
fn a_pn_over_its_member_limit_is_not_registered() {
    let mut h = harness(&[PneSpec::trusted(); 3], None, Some(2));
    h.setup(0, SetupType::All);
    assert!(h.store.pns.is_empty());
    assert!(h.gw.inventory().is_empty());
    let (code, why) = refusal(&h, 0).expect("the initiator is told");
    assert_eq!(code, ErrorCode::Conflict);
    assert!(why.contains("its maximum is 2"), "{why}");
}

/// A PN at its limit takes no new member: a join is refused naming the limit, and the PN, its
/// epoch and every member stay as they were.
#[test]
fn a_full_pn_takes_no_new_member() {
    let mut h = harness(&[PneSpec::trusted(); 3], None, Some(2));
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.store.max_members[&pn], 2);
    let before = h.snapshot();
    let now = h.now();
    h.pnes[2].join_pn(now, pn).unwrap();
    h.pump();
    let (code, why) = refusal(&h, 2).expect("the joiner is told");
    assert_eq!(code, ErrorCode::Conflict);
    assert!(why.contains("maximum of 2 members"), "{why}");
    assert_eq!(h.snapshot(), before);
    assert_eq!(h.members(pn).len(), 2);
}

/// An expired PN takes no new member either, even below its limit.
#[test]
fn an_expired_pn_takes_no_new_member() {
    let mut h = harness(&[PneSpec::trusted(); 3], None, None);
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let pn = h.joined(0).unwrap().pn_id;
    h.store.expired.insert(pn);
    let now = h.now();
    h.pnes[2].join_pn(now, pn).unwrap();
    h.pump();
    let (code, why) = refusal(&h, 2).expect("the joiner is told");
    assert_eq!(code, ErrorCode::Conflict);
    assert!(why.contains("expired"), "{why}");
    assert_eq!(h.members(pn).len(), 2);
}

fn expired(h: &Harness) -> Vec<PnId> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::PnExpired { pn_id } => Some(*pn_id),
            _ => None,
        })
        .collect()
}

/// At the end of its lifetime, not before, the PN GW releases the PN: the server, the PN GW
/// and every member forget it, and the members are told.
#[test]
fn a_pn_is_released_when_its_lifetime_ends() {
    let mut h = harness(&[PneSpec::trusted(); 2], Some(3_600), None);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.store.lifetimes[&pn], 3_600);
    let at = h.store.gw_local[&pn].expires_at.expect("kept with the PN");
    assert_eq!(at, super::harness::WALL_AT_BASE + 3_600_000);
    // The PN GW's next deadline is the PN's end (nothing else waits).
    let end = h.now() + Duration::from_secs(3_600);
    assert_eq!(h.gw.poll_timeout(), Some(end));
    h.advance(Duration::from_secs(3_599));
    assert!(expired(&h).is_empty());
    assert!(h.store.pns.contains_key(&pn));
    h.advance(Duration::from_secs(2));
    assert_eq!(expired(&h), [pn]);
    assert!(!h.store.pns.contains_key(&pn));
    assert!(h.gw.inventory().is_empty());
    for i in 0..2 {
        assert!(h.pnes[i].inventory().is_empty(), "PNE {i}");
        assert!(h.pne_events(i).contains(&&PneEvent::PnReleased(pn)));
    }
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::PnReleased { pn_id, by: None, notified } if *pn_id == pn && notified.len() == 2
    )));
}

/// The end is kept in the local store: a PN GW restarted before it still releases the PN then;
/// one that cannot reach the server at the end tries again until it can.
#[test]
fn a_pn_expires_across_a_restart_and_a_lost_server() {
    let mut h = harness(&[PneSpec::trusted(); 2], Some(600), None);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.advance(Duration::from_secs(300));
    // The PN GW restarts from its store (as does everyone); the PN's end stands.
    h.restart_from_stores(&[PneSpec::trusted(); 2]);
    h.discover_all();
    h.advance(Duration::from_secs(299));
    assert!(expired(&h).is_empty());
    // The WAN drops just before the end.
    let now = h.now();
    h.gw.wan_closed(now);
    h.advance(Duration::from_secs(2));
    assert_eq!(expired(&h), [pn]);
    assert!(
        h.store.pns.contains_key(&pn),
        "not released without the server"
    );
    // It looks again a tenth of a flow later.
    assert_eq!(
        h.gw.poll_timeout(),
        Some(h.now() + super::harness::FLOW / 10)
    );
    // Reconnected, the PN GW finishes what it started.
    h.reopen_wan();
    h.advance(Duration::from_secs(5));
    assert!(!h.store.pns.contains_key(&pn));
    assert!(h.gw.inventory().is_empty());
    assert_eq!(expired(&h), [pn], "reported once");
}

/// A release the server never answers: the PN GW's release fails at its deadline, and the
/// expiry tries again a tenth of a flow after that, not before.
#[test]
fn an_unanswered_expiry_release_is_tried_again_after_its_flow() {
    use super::harness::{Action, FLOW};
    let mut h = harness(&[PneSpec::trusted(); 2], Some(60), None);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| {
        if f.message == "PnReleaseRequest" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    // Sent, whether the hook let it through or not.
    let asked = |h: &Harness| {
        h.log
            .iter()
            .chain(&h.dropped)
            .filter(|f| f.message == "PnReleaseRequest" && f.to == Party::Server)
            .count()
    };
    h.advance(Duration::from_secs(61));
    assert_eq!(asked(&h), 1);
    h.advance(FLOW);
    assert_eq!(asked(&h), 1, "not again until a tenth of a flow after");
    h.clear_hook();
    h.advance(FLOW / 10);
    assert_eq!(asked(&h), 2);
    assert!(!h.store.pns.contains_key(&pn));
    assert_eq!(expired(&h), [pn]);
}

/// The PN GW's PN Update Request straight to the server; its answer.
fn update(h: &mut Harness, msg: u64, pn: PnId, add: &[usize]) -> cpns_wire::Body {
    use cpns_wire::{Address, Envelope, NewMember, PnUpdateRequest, RequestId};
    h.pump();
    let req = PnUpdateRequest {
        request_id: RequestId(msg),
        pn_id: pn,
        add: add
            .iter()
            .map(|i| NewMember {
                pne_id: pne_id(*i),
                capabilities: None,
            })
            .collect(),
        remove: Vec::new(),
        asked_by: None,
    };
    let env = Envelope::request(
        msg,
        Address::Entity(super::harness::id("gw-1")),
        Address::Server,
        req,
    );
    h.deliver_direct(Party::Gw, Party::Server, &super::harness::plain(&env))
        .unwrap();
    h.server_answer(msg)
}

/// At the server, a PN Update Request adding members: refused once the PN would pass its
/// limit (`conflict`), fine at it, and fine for members it holds already; refused for an
/// expired PN. A member of a full PN registers in it all the same.
#[test]
fn the_server_counts_members_an_update_would_add() {
    let mut h = harness(&[PneSpec::trusted(); 4], None, Some(3));
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let pn = h.joined(0).unwrap().pn_id;
    let code = |b: &cpns_wire::Body| match b {
        cpns_wire::Body::ErrorBody(e) => Some(e.code),
        _ => None,
    };
    // Two members: adding two more would make four.
    assert_eq!(
        code(&update(&mut h, 9_001, pn, &[2, 3])),
        Some(ErrorCode::Conflict)
    );
    // Adding a member again, and one more to reach three: fine.
    assert_eq!(code(&update(&mut h, 9_002, pn, &[0])), None);
    assert_eq!(code(&update(&mut h, 9_003, pn, &[1, 2])), None);
    // Past its lifetime, it takes no one.
    h.store.expired.insert(pn);
    assert_eq!(
        code(&update(&mut h, 9_004, pn, &[3])),
        Some(ErrorCode::Conflict)
    );
    assert_eq!(code(&update(&mut h, 9_005, pn, &[])), None);
}

/// At its limit (two of two), a PN takes not one more by update, while its members still
/// register in it.
#[test]
fn a_full_pn_takes_none_by_update_and_its_members_register() {
    let mut h = harness(&[PneSpec::trusted(); 3], None, Some(2));
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let pn = h.joined(0).unwrap().pn_id;
    assert!(matches!(
        update(&mut h, 9_101, pn, &[2]),
        cpns_wire::Body::ErrorBody(e) if e.code == ErrorCode::Conflict
    ));
    h.register(1, Some(pn));
    assert!(h.pne_failures(1).is_empty(), "{:?}", h.pne_failures(1));
    assert!(
        h.pne_outcomes(1)
            .iter()
            .any(|e| matches!(e, crate::pne::Outcome::Registered { .. }))
    );
}
