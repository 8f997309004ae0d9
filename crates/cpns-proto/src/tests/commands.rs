//! Every PNE command completes by its id, exactly once: two commands of the same kind in
//! flight at once on one PN each end with their own outcome; a command whose flow fails ends
//! with the failure; a command refused at once returns a typed [`CommandError`] and sends
//! nothing; a command overtaken by the PN GW's word (the PN released while leaving) ends too.

use std::time::Duration;

use cpns_wire::{EntityId, ErrorCode, PnId, SetupType, Status};

use super::harness::{FLOW, Harness, pne_id};
use super::store::PneSpec;
use crate::pne::{Gone, Outcome};
use crate::{CommandError, Failure, Flow};

/// PNEs 0-2 in one PN on an insecure PAN (links sealed); PNE 3 accepts invitations and PNE 4
/// declines them, both connected and no member.
pub(super) fn with_pn_and_outsiders() -> (Harness, PnId) {
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns().declining(),
    ];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::Invite(vec![pne_id(1), pne_id(2)]));
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.members(pn).len(), 3);
    (h, pn)
}

#[test]
fn two_invitations_into_one_pn_at_once_each_complete_by_their_id() {
    let (mut h, pn) = with_pn_and_outsiders();
    let now = h.now();
    let joins = h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap();
    let declines = h.pnes[1].invite_pne(now, pn, pne_id(4)).unwrap();
    assert_ne!(joins, declines);
    h.pump();
    assert_eq!(
        h.outcome(1, joins),
        &Outcome::InviteAnswered {
            pn_id: pn,
            accepted: true
        }
    );
    assert_eq!(
        h.outcome(1, declines),
        &Outcome::InviteAnswered {
            pn_id: pn,
            accepted: false
        }
    );
    assert_eq!(h.members(pn).len(), 4);
    assert!(h.members(pn).contains(&pne_id(3)));
}

#[test]
fn two_inventory_reads_and_two_status_queries_at_once_complete_with_their_own_answers() {
    let (mut h, pn) = with_pn_and_outsiders();
    let now = h.now();
    let first = h.pnes[2].query_inventory(now, Some(pn)).unwrap();
    let second = h.pnes[2].query_inventory(now, None).unwrap();
    let gw = h.pnes[2].query_status(now, vec![super::harness::id("gw-1")]);
    let own = h.pnes[2].query_status(now, vec![pne_id(0)]);
    h.pump();
    for id in [first, second] {
        match h.outcome(2, id) {
            Outcome::Inventory { pns, .. } => assert_eq!(pns[0].pn_id, pn),
            other => panic!("{other:?}"),
        }
    }
    let asked_for = |id| -> Vec<EntityId> {
        match h.outcome(2, id) {
            Outcome::Statuses(entries) => entries.iter().map(|e| e.entity.clone()).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        asked_for(gw),
        Vec::<EntityId>::from([super::harness::id("gw-1")])
    );
    assert_eq!(asked_for(own), [pne_id(0)]);
}

#[test]
fn a_command_whose_flow_fails_completes_with_the_failure() {
    let (mut h, pn) = with_pn_and_outsiders();
    // The server holds the PN as another PN GW's: it refuses the leave.
    h.store.pn_gateway.insert(pn, super::harness::id("gw-2"));
    let now = h.now();
    let id = h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    let c = h.completion(1, id).expect("it completed");
    assert_eq!(c.flow, Flow::MembershipChange);
    assert!(matches!(&c.result, Err(Failure::Refused(e)) if e.code == ErrorCode::Forbidden));
    assert!(h.pnes[1].holds_local_key(&pn));
    // One that is never answered ends at its deadline, and only then.
    h.store.pn_gateway.insert(pn, super::harness::id("gw-1"));
    h.drop_message("PneLeaveRequest");
    let now = h.now();
    let late = h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    h.advance(FLOW * 2 - Duration::from_millis(1));
    assert!(h.completion(1, late).is_none());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.completion(1, late).map(|c| &c.result),
        Some(&Err(Failure::TimedOut))
    );
}

#[test]
fn a_command_refused_at_once_sends_nothing_and_says_why() {
    let (mut h, pn) = with_pn_and_outsiders();
    let other = PnId::from_bytes([9; 16]);
    let now = h.now();
    let sent = h.log.len();
    assert_eq!(
        h.pnes[3].leave_pn(now, pn),
        Err(CommandError::NotAMember(pn))
    );
    assert_eq!(
        h.pnes[1].release_pn(now, other),
        Err(CommandError::NotAMember(other))
    );
    assert_eq!(
        h.pnes[1].expel_pne(now, pn, pne_id(3)),
        Err(CommandError::NotAMemberOf {
            pn_id: pn,
            pne: pne_id(3)
        })
    );
    assert!(matches!(
        h.pnes[1].expel_pne(now, pn, pne_id(1)),
        Err(CommandError::NotAllowed(_))
    ));
    assert_eq!(
        h.pnes[0].join_pn(now, pn),
        Err(CommandError::AlreadyMember {
            pn_id: pn,
            pne: pne_id(0)
        })
    );
    assert!(matches!(
        h.pnes[3].secure_call(now, "x", Vec::new()),
        Err(CommandError::NoSecureSession)
    ));
    assert!(matches!(
        h.pnes[1].set_status(now, Status::Offline, None),
        Err(CommandError::InvalidStatus(_))
    ));
    let mut big = h.pnes[1].capabilities().clone();
    big.software = vec!["x".repeat(10_000)];
    assert!(matches!(
        h.pnes[1].set_capabilities(now, big),
        Err(CommandError::InvalidCapabilities(_))
    ));
    h.pnes[1].release_pn(now, pn).unwrap();
    assert_eq!(
        h.pnes[1].release_pn(now, pn),
        Err(CommandError::ChangeRunning {
            flow: Flow::PnRelease
        })
    );
    // Only the one release that was taken went out.
    h.pump();
    let releases = h.log[sent..]
        .iter()
        .filter(|f| f.message == "PnReleaseRequest")
        .count();
    assert_eq!(releases, 2, "PNE → PN GW → server, once");
}

/// A leave the PN GW's release overtakes ends too: the PNE is out, as the word says.
#[test]
fn a_leave_overtaken_by_a_release_completes_with_the_release() {
    let (mut h, pn) = with_pn_and_outsiders();
    h.drop_message("PneLeaveRequest");
    let now = h.now();
    let leave = h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    h.clear_hook();
    h.gw.release_pn(now, pn).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(1, leave),
        &Outcome::PnGone {
            pn_id: pn,
            why: Gone::Released { by_me: false }
        }
    );
    // And it is not reported again at its deadline.
    h.advance(FLOW * 3);
    assert!(h.completion(1, leave).is_some());
}

/// Every command of a whole run completed exactly once (the harness refuses a second).
#[test]
fn every_command_of_a_run_completes_exactly_once() {
    let (mut h, pn) = with_pn_and_outsiders();
    let now = h.now();
    let ids = vec![
        (1, h.pnes[1].query_inventory(now, Some(pn)).unwrap()),
        (1, h.pnes[1].request_group_key(now, pn).unwrap()),
        (2, h.pnes[2].set_status(now, Status::Busy, None).unwrap()),
        (
            2,
            h.pnes[2].subscribe_status(now, vec![pne_id(0)], on_change()),
        ),
        (1, h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap()),
        (0, h.pnes[0].expel_pne(now, pn, pne_id(2)).unwrap()),
    ];
    h.pump();
    h.advance(FLOW * 4);
    for (i, id) in ids {
        assert!(h.completion(i, id).is_some(), "PNE {i} command {id}");
    }
}

fn on_change() -> cpns_wire::StatusPolicy {
    cpns_wire::StatusPolicy {
        kind: cpns_wire::PolicyKind::OnChange,
        attribute: None,
        crossing: None,
        bound: None,
        period_s: None,
    }
}

/// An expulsion a member asked for, still waiting when the PN is released: it ends too, the
/// PN being gone, and a PN it did not name is left alone.
#[test]
fn an_expulsion_waiting_when_the_pn_goes_ends_with_it() {
    // A trusted bearer: a request lost on the PAN breaks no sealed link.
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.drop_message("PneLeaveRequest");
    let now = h.now();
    let expel = h.pnes[1].expel_pne(now, pn, pne_id(2)).unwrap();
    h.pump();
    assert!(h.completion(1, expel).is_none());
    h.clear_hook();
    h.gw.release_pn(now, pn).unwrap();
    h.pump();
    let c = h.completion(1, expel).expect("ended with its PN");
    assert!(matches!(&c.result, Err(Failure::Refused(e)) if e.code == ErrorCode::NotFound));
}

/// A join completes as a registration's flow, with the PN, not as this PNE's own set-up.
#[test]
fn a_join_completes_with_the_pn_as_a_registration() {
    let (mut h, pn) = with_pn_and_outsiders();
    let now = h.now();
    let id = h.pnes[3].join_pn(now, pn).unwrap();
    h.pump();
    let c = h.completion(3, id).expect("it completed");
    assert_eq!(c.flow, Flow::PneRegistration);
    assert!(matches!(
        &c.result,
        Ok(Outcome::PnJoined { inventory, initiator: false }) if inventory.pn_id == pn
    ));
}
