//! Every command of the PN GW's owner completes by its id, exactly once, with the typed
//! outcome of what the PN GW did: two of the same kind in flight at once on one PN each end
//! with their own; one whose flow fails ends with the failure; one refused at once returns a
//! typed [`CommandError`] and sends nothing. What the PN GW does for its PNEs stays events.

use std::time::Duration;

use cpns_wire::{ErrorCode, PnId, Status};

use super::commands::with_pn_and_outsiders;
use super::harness::{FLOW, Harness, pne_id};
use super::store::PneSpec;
use crate::gateway::{EstablishTargets, GatewayEvent, Outcome};
use crate::{CommandError, Failure, Flow};

#[test]
fn two_owner_invitations_into_one_pn_at_once_each_complete_by_their_id() {
    let (mut h, pn) = with_pn_and_outsiders();
    let now = h.now();
    let joins = h.gw.invite(now, pn, pne_id(3)).unwrap();
    let declines = h.gw.invite(now, pn, pne_id(4)).unwrap();
    h.pump();
    assert_eq!(
        h.gw_outcome(joins),
        &Outcome::Invited {
            pn_id: pn,
            pne: pne_id(3),
            joined: true
        }
    );
    assert_eq!(
        h.gw_outcome(declines),
        &Outcome::Invited {
            pn_id: pn,
            pne: pne_id(4),
            joined: false
        }
    );
    // The join itself is an event of the PN GW (its PNE registered); the owner's invitation
    // is not told twice.
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::MemberJoined { pne, .. } if *pne == pne_id(3)
    )));
    assert!(
        !h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::InviteEnded { .. }))
    );
}

#[test]
fn an_owners_expulsion_and_release_complete_with_what_was_done() {
    let (mut h, pn) = with_pn_and_outsiders();
    let now = h.now();
    let expel = h.gw.expel(now, pn, pne_id(2)).unwrap();
    h.pump();
    assert_eq!(
        h.gw_outcome(expel),
        &Outcome::Expelled {
            pn_id: pn,
            pne: pne_id(2),
            epoch: Some(2),
            notified: vec![pne_id(0), pne_id(1)],
        }
    );
    let release = h.gw.release_pn(now, pn).unwrap();
    h.pump();
    assert_eq!(
        h.gw_outcome(release),
        &Outcome::Released {
            pn_id: pn,
            notified: vec![pne_id(0), pne_id(1)],
        }
    );
    // Neither was told again as a member's change.
    assert!(!h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::MemberRemoved { .. } | GatewayEvent::PnReleased { .. }
    )));
}

#[test]
fn an_owners_command_whose_flow_fails_completes_with_the_failure() {
    let (mut h, pn) = with_pn_and_outsiders();
    // The server holds the PN as another PN GW's: it refuses.
    h.store.pn_gateway.insert(pn, super::harness::id("gw-2"));
    let now = h.now();
    let release = h.gw.release_pn(now, pn).unwrap();
    h.pump();
    let c = h.gw_completion(release).unwrap();
    assert_eq!(c.flow, Flow::PnRelease);
    assert!(matches!(&c.result, Err(Failure::Refused(e)) if e.code == ErrorCode::Forbidden));
    // One never answered ends at its deadline, and only then.
    h.store.pn_gateway.insert(pn, super::harness::id("gw-1"));
    h.drop_message("PnUpdateRequest");
    let now = h.now();
    let expel = h.gw.expel(now, pn, pne_id(1)).unwrap();
    h.pump();
    h.advance(FLOW - Duration::from_millis(1));
    assert!(h.gw_completion(expel).is_none());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.gw_failure(expel), &Failure::TimedOut);
    // An establishment nobody accepts fails, by its id.
    h.clear_hook();
    let mut lone = Harness::ready(&[PneSpec::trusted().declining()]);
    let now = lone.now();
    let started = lone
        .gw
        .start_establishment(now, EstablishTargets::All)
        .unwrap();
    lone.pump();
    assert_eq!(lone.gw_failure(started.id), &Failure::NoPneAccepted);
}

#[test]
fn an_owners_command_refused_at_once_sends_nothing_and_says_why() {
    let (mut h, pn) = with_pn_and_outsiders();
    let other = PnId::from_bytes([9; 16]);
    let now = h.now();
    let sent = h.log.len();
    assert_eq!(
        h.gw.release_pn(now, other),
        Err(CommandError::UnknownPn(other))
    );
    assert_eq!(
        h.gw.expel(now, pn, pne_id(3)),
        Err(CommandError::NotAMemberOf {
            pn_id: pn,
            pne: pne_id(3)
        })
    );
    assert_eq!(
        h.gw.invite(now, pn, pne_id(1)),
        Err(CommandError::AlreadyMember {
            pn_id: pn,
            pne: pne_id(1)
        })
    );
    let stranger = super::harness::id("pne-9");
    assert_eq!(
        h.gw.invite(now, pn, stranger.clone()),
        Err(CommandError::NotConnected(stranger))
    );
    let mut big = h.gw.capabilities().clone();
    big.software = vec!["x".repeat(10_000)];
    assert!(matches!(
        h.gw.set_capabilities(now, big),
        Err(CommandError::InvalidCapabilities(_))
    ));
    h.gw.wan_closed(now);
    assert_eq!(
        h.gw.start_establishment(now, EstablishTargets::All),
        Err(CommandError::NoServerSession)
    );
    assert_eq!(
        h.gw.set_status(now, Status::Busy, None),
        Err(CommandError::NoServerSession)
    );
    h.pump();
    assert_eq!(h.log.len(), sent, "nothing was sent");
    assert!(h.gw_completions().is_empty());
}

#[test]
fn the_owners_capabilities_complete_once_the_server_confirmed_them() {
    let (mut h, _) = with_pn_and_outsiders();
    let now = h.now();
    let mut caps = h.gw.capabilities().clone();
    caps.software = vec!["cpns/9.9".into()];
    let id = h.gw.set_capabilities(now, caps.clone()).unwrap();
    assert!(h.gw_completion(id).is_none());
    h.pump();
    assert_eq!(h.gw_outcome(id), &Outcome::Capabilities { reported: true });
    assert_eq!(h.gw.capabilities(), &caps);
    // Without a session they are kept, and go with the next connection set-up.
    h.gw.wan_closed(now);
    caps.software = vec!["cpns/10.0".into()];
    let kept = h.gw.set_capabilities(now, caps).unwrap();
    h.pump();
    assert_eq!(
        h.gw_outcome(kept),
        &Outcome::Capabilities { reported: false }
    );
}

/// The server refuses an owner's request: its command ends with the refusal, at once.
#[test]
fn an_owners_request_the_server_refuses_completes_with_the_refusal() {
    let (mut h, _) = with_pn_and_outsiders();
    let now = h.now();
    let id = h.gw.set_status(now, Status::Custom, None).unwrap();
    h.pump();
    match h.gw_failure(id) {
        Failure::Refused(e) => assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}"),
        other => panic!("{other:?}"),
    }
}
