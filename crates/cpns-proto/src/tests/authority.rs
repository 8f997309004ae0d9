//! Who may change a PN (docs/pn-lifecycle.md, "Who may change a PN"), decided at the server
//! with the member that asked named on every member-initiated change: a member of the PN's
//! owner may release it, invite into it and expel from it; a member of another user (a
//! multi-user PN, 001) may read its inventory and leave, nothing else. Each refused change
//! leaves every store and memory as it was.
//!
//! Also here: an expulsion the server refuses or never answers leaves the PNE a member
//! everywhere (it is told only once the change is stored), and inventory answers give each
//! member's capabilities of record, not those it joined with.

use std::time::Duration;

use cpns_wire::{Body, EntityId, ErrorCode, PnId, SetupType, UserId};

use super::harness::{Action, FLOW, Harness, Party, pne_id};
use super::store::PneSpec;
use crate::Failure;
use crate::gateway::GatewayEvent;
use crate::pne::{Gone, Outcome, PneEvent};

fn mallory() -> UserId {
    UserId::new("mallory").unwrap()
}

/// A PN of PNEs 0-2 (alice's) on an insecure PAN, links sealed; PNE 3 is connected and no
/// member. PNE 1 is then made another user's, as a member of a multi-user PN is.
fn with_foreign_member() -> (Harness, PnId) {
    let specs = [PneSpec::cpns(); 4];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::Invite(vec![pne_id(1), pne_id(2)]));
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.members(pn).len(), 3);
    h.store.entities.get_mut(&pne_id(1)).unwrap().owner = mallory();
    (h, pn)
}

/// The `asked_by` of each request of this kind the PN GW sent the server.
fn asked_by_of(h: &Harness, message: &str) -> Vec<Option<EntityId>> {
    h.delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::PnReleaseRequest(r) if message == "PnReleaseRequest" => Some(r.asked_by),
            Body::PnUpdateRequest(r) if message == "PnUpdateRequest" => Some(r.asked_by),
            _ => None,
        })
        .collect()
}

/// 000 §6.6.5.1 with 001: another user's member asks to release the PN. The PN GW names it to
/// the server, which refuses; nothing changes anywhere and no member is told.
#[test]
fn another_users_member_may_not_release_the_pn() {
    let (mut h, pn) = with_foreign_member();
    let before = h.snapshot();
    let now = h.now();
    h.pnes[1].release_pn(now, pn).unwrap();
    h.pump();
    assert_eq!(asked_by_of(&h, "PnReleaseRequest"), [Some(pne_id(1))]);
    assert!(
        h.pne_refused(1, ErrorCode::Forbidden),
        "{:?}",
        h.pne_events(1)
    );
    let reason = h.pne_failures(1).pop().unwrap().to_string();
    assert!(reason.contains("owner"), "{reason}");
    assert_eq!(h.snapshot(), before);
    for i in 0..3 {
        let released = h.pne_events(i).into_iter();
        assert!(
            !released
                .into_iter()
                .any(|e| matches!(e, PneEvent::PnReleased { .. })),
            "PNE {i}"
        );
    }
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::ReleaseFailed { reason: Failure::Refused(e), .. } if e.code == ErrorCode::Forbidden
    )));
    // A member of the owner may: the same PN goes.
    let now = h.now();
    h.pnes[2].release_pn(now, pn).unwrap();
    h.pump();
    assert_eq!(
        asked_by_of(&h, "PnReleaseRequest"),
        [Some(pne_id(1)), Some(pne_id(2))]
    );
    assert!(!h.store.pns.contains_key(&pn));
    assert!(h.pne_outcomes(2).contains(&&Outcome::PnGone {
        pn_id: pn,
        why: Gone::Released { by_me: true }
    }));
}

/// 000 §6.6.2.1.2 with 001: another user's member asks to invite PNE 3, which accepts; its
/// join names the member that asked, and the server refuses it: PNE 3 stays out everywhere,
/// the member is answered `forbidden` and the invitation ends.
#[test]
fn another_users_member_may_not_invite() {
    let (mut h, pn) = with_foreign_member();
    let before = h.snapshot();
    let now = h.now();
    h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap();
    h.pump();
    assert_eq!(asked_by_of(&h, "PnUpdateRequest"), [Some(pne_id(1))]);
    assert!(
        h.pne_refused(1, ErrorCode::Forbidden),
        "{:?}",
        h.pne_events(1)
    );
    assert!(!h.pne_outcomes(1).contains(&&Outcome::InviteAnswered {
        pn_id: pn,
        accepted: true
    }));
    assert_eq!(h.snapshot(), before);
    assert!(h.pnes[3].inventory().is_empty());
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::InviteEnded { reason: Some(Failure::Refused(e)), .. }
            if e.code == ErrorCode::Forbidden
    )));
    assert_eq!(h.gw.flows_in_progress(), 0);
    // A member of the owner may invite the same PNE: it joins.
    let now = h.now();
    h.pnes[2].invite_pne(now, pn, pne_id(3)).unwrap();
    h.pump();
    assert_eq!(
        asked_by_of(&h, "PnUpdateRequest").last(),
        Some(&Some(pne_id(2)))
    );
    assert!(h.pne_outcomes(2).contains(&&Outcome::InviteAnswered {
        pn_id: pn,
        accepted: true
    }));
    assert_eq!(h.members(pn).len(), 4);
}

/// An invitation by the PN GW's owner names no asker: the owner's PN GW speaks for itself.
#[test]
fn the_owners_invitation_names_no_member() {
    let (mut h, pn) = with_foreign_member();
    let now = h.now();
    h.gw.invite(now, pn, pne_id(3)).unwrap();
    h.pump();
    assert_eq!(asked_by_of(&h, "PnUpdateRequest"), [None]);
    assert_eq!(h.members(pn).len(), 4);
}

/// Another user's member may not expel (the server refuses; the target is told nothing), may
/// read its PN's inventory, and may leave it.
#[test]
fn another_users_member_may_read_and_leave_but_not_expel() {
    let (mut h, pn) = with_foreign_member();
    let before = h.snapshot();
    let now = h.now();
    h.pnes[1].expel_pne(now, pn, pne_id(2)).unwrap();
    h.pump();
    assert!(h.pne_refused(1, ErrorCode::Forbidden));
    assert_eq!(h.snapshot(), before);
    assert!(!h.pne_events(2).contains(&&PneEvent::Expelled(pn)));

    h.pnes[1].query_inventory(now, Some(pn)).unwrap();
    h.pump();
    let read = h.pne_events(1).into_iter().find_map(|e| match e {
        PneEvent::Completed(crate::Completed {
            result: Ok(Outcome::Inventory { pns, .. }),
            ..
        }) => Some(pns.clone()),
        _ => None,
    });
    assert_eq!(read.unwrap()[0].pn_id, pn);

    h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    assert!(h.pne_outcomes(1).contains(&&Outcome::PnGone {
        pn_id: pn,
        why: Gone::Left
    }));
    assert_eq!(h.members(pn), [pne_id(0), pne_id(2)]);
}

/// 000 §6.6.3.2: an expulsion by the owner that the server refuses, or never answers, leaves
/// the PNE a member everywhere: it is told nothing, keeps its keys, and both inventories still
/// list it.
#[test]
fn an_expulsion_the_server_refuses_or_never_answers_leaves_the_pne_a_member() {
    for case in ["refused", "silent"] {
        let (mut h, pn) = with_foreign_member();
        match case {
            // The server holds the PN as another PN GW's: it refuses the update.
            "refused" => {
                h.store.pn_gateway.insert(pn, super::harness::id("gw-2"));
            }
            _ => h.set_hook(|f| {
                if f.message == "PnUpdateRequest" {
                    Action::Drop
                } else {
                    Action::Deliver
                }
            }),
        }
        let before = h.snapshot();
        let now = h.now();
        let id = h.gw.expel(now, pn, pne_id(2)).unwrap();
        h.pump();
        h.advance(FLOW + Duration::from_secs(1));
        let failed = h.gw_completion(id).and_then(|c| c.result.clone().err());
        match (case, failed) {
            ("refused", Some(Failure::Refused(e))) => assert_eq!(e.code, ErrorCode::Forbidden),
            ("silent", Some(Failure::TimedOut)) => {}
            (case, other) => panic!("{case}: {other:?}"),
        }
        let told = h.delivered(Party::Gw, Party::Pne(2));
        assert!(
            !h.pan_traces(2)
                .iter()
                .any(|t| t.message == "PneExpelNotification"),
            "{case}: {told:?}"
        );
        assert!(
            !h.pne_events(2).contains(&&PneEvent::Expelled(pn)),
            "{case}"
        );
        assert!(h.pnes[2].holds_local_key(&pn), "{case}");
        assert_eq!(h.snapshot(), before, "{case}");
        if case == "refused" {
            h.store.pn_gateway.insert(pn, super::harness::id("gw-1"));
        }
    }
}

/// 004 §5.5.10: the PN GW's local inventory answer gives a member's capabilities of record,
/// the latest it reported, not those it joined the PN with.
#[test]
fn the_local_inventory_answer_gives_capabilities_of_record() {
    let (mut h, pn) = with_foreign_member();
    let joined_with = h.pnes[2].capabilities().clone();
    let mut now_caps = joined_with.clone();
    now_caps.software = vec!["music-player/9.9".into()];
    let now = h.now();
    h.pnes[2].set_capabilities(now, now_caps.clone()).unwrap();
    h.pump();
    assert!(
        h.pne_outcomes(2)
            .contains(&&crate::pne::Outcome::Capabilities { reported: true })
    );
    h.pnes[0].query_inventory(now, Some(pn)).unwrap();
    h.pump();
    let read = h.pne_events(0).into_iter().find_map(|e| match e {
        PneEvent::Completed(crate::Completed {
            result: Ok(Outcome::Inventory { pns, .. }),
            ..
        }) => Some(pns.clone()),
        _ => None,
    });
    let inventory = &read.unwrap()[0];
    let member = inventory
        .members
        .iter()
        .find(|m| m.pne_id == pne_id(2))
        .unwrap();
    assert_eq!(member.capabilities.as_ref(), Some(&now_caps));
    assert_ne!(member.capabilities.as_ref(), Some(&joined_with));
}

/// Five PNEs on an insecure PAN, all alice's: 0-2 in one PN, 3 and 4 connected and accepting
/// invitations.
fn with_two_outsiders() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::cpns(); 5]);
    h.setup(0, SetupType::Invite(vec![pne_id(1), pne_id(2)]));
    let pn = h.joined(0).unwrap().pn_id;
    (h, pn)
}

/// The `asked_by` of the PN Update Request that adds `pne`.
fn join_named(h: &Harness, pne: &EntityId) -> Option<EntityId> {
    h.delivered(Party::Gw, Party::Server)
        .into_iter()
        .find_map(|e| match e.body {
            Body::PnUpdateRequest(r) if r.add.iter().any(|m| &m.pne_id == pne) => Some(r.asked_by),
            _ => None,
        })
        .expect("the join was asked of the server")
}

/// Invitations in flight at once into one PN: each invitee's join names whoever invited that
/// invitee, and no one else.
#[test]
fn each_join_names_its_own_inviter() {
    let (mut h, pn) = with_two_outsiders();
    let now = h.now();
    h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap();
    let owner = h.gw.invite(now, pn, pne_id(4)).unwrap();
    h.pump();
    assert_eq!(join_named(&h, &pne_id(3)), Some(pne_id(1)));
    assert_eq!(join_named(&h, &pne_id(4)), None);
    assert!(matches!(
        h.gw_outcome(owner),
        crate::gateway::Outcome::Invited { joined: true, .. }
    ));
    assert_eq!(h.members(pn).len(), 5);
}

/// Another user's member's invitee is refused at its join; an invitation of the owner into the
/// same PN at the same time goes on and its invitee joins.
#[test]
fn a_refused_join_ends_only_its_own_invitation() {
    let (mut h, pn) = with_two_outsiders();
    h.store.entities.get_mut(&pne_id(1)).unwrap().owner = mallory();
    let now = h.now();
    h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap();
    let owner = h.gw.invite(now, pn, pne_id(4)).unwrap();
    h.pump();
    assert!(h.pne_refused(1, ErrorCode::Forbidden));
    assert!(matches!(
        h.gw_outcome(owner),
        crate::gateway::Outcome::Invited { joined: true, .. }
    ));
    assert!(h.members(pn).contains(&pne_id(4)));
    assert!(!h.members(pn).contains(&pne_id(3)));
}
