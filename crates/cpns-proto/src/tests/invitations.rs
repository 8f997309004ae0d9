//! An application decides on invitations ([`InvitationPolicy::Ask`]): the PNE tells it
//! ([`PneEvent::Invited`]) and holds the request, for a PN being set up (PN Setup Request, 000
//! §6.6.1.1 steps 2-3) and for an existing PN (PNE Invite Request, §6.6.2.1.1); its answer
//! (`answer_invitation`) is sent as it decides and completes by its id; left unanswered past
//! its deadline the invitation is declined; an answer to nothing held is refused.

use std::time::Duration;

use cpns_wire::{PnId, SetupType};

use super::harness::{Harness, pne_id};
use super::store::PneSpec;
use crate::pne::{InvitationPolicy, Outcome, PneEvent};
use crate::{CommandError, Flow};

const WITHIN: Duration = Duration::from_secs(5);

/// PNE 0 accepts invitations, PNE 1 asks its application.
fn ask() -> Harness {
    Harness::ready(&[PneSpec::cpns(), PneSpec::cpns().asking(WITHIN)])
}

/// The invitations PNE `i` told its application about, with their inviter.
fn invited(h: &Harness, i: usize) -> Vec<(PnId, String)> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::Invited { pn_id, from, .. } => Some((*pn_id, from.to_string())),
            _ => None,
        })
        .collect()
}

fn declined(h: &Harness, i: usize) -> Vec<PnId> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::InvitationDeclined(pn) => Some(*pn),
            _ => None,
        })
        .collect()
}

/// PNE 0 asks for a PN with PNE 1: held at PNE 1, told to its application with the
/// initiator and the deadline; nothing is answered, so the PN is not set up yet.
fn held_setup() -> (Harness, PnId) {
    let mut h = ask();
    let asked_at = h.now();
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let told = invited(&h, 1);
    assert_eq!(told.len(), 1, "{:?}", h.pne_events(1));
    let (pn, from) = told[0].clone();
    assert_eq!(from, "pne-1", "the PNE that asked for the PN invites");
    assert!(h.pne_events(1).iter().any(|e| matches!(
        e,
        PneEvent::Invited { deadline, .. } if *deadline == asked_at + WITHIN
    )));
    assert_eq!(h.pnes[1].held_invitations(), [(pn, asked_at + WITHIN)]);
    assert!(h.joined(0).is_none(), "the PN GW waits for the answer");
    assert!(h.members_or_none(pn).is_none());
    (h, pn)
}

#[test]
fn the_application_accepts_a_pn_being_set_up_and_the_pne_joins_it() {
    let (mut h, pn) = held_setup();
    let now = h.now();
    let answer = h.pnes[1].answer_invitation(now, pn, true).unwrap();
    h.pump();
    let completion = h.completion(1, answer).unwrap();
    assert_eq!(completion.flow, Flow::PnEstablishment);
    assert_eq!(
        completion.result,
        Ok(Outcome::InvitationAnswered {
            pn_id: pn,
            accepted: true
        })
    );
    assert_eq!(h.members(pn), [pne_id(0), pne_id(1)]);
    assert_eq!(h.joined(1).map(|i| i.pn_id), Some(pn));
    assert_eq!(h.joined(0).map(|i| i.pn_id), Some(pn));
    assert!(h.pnes[1].held_invitations().is_empty());
    // Answered once: a second answer finds nothing held.
    assert_eq!(
        h.pnes[1].answer_invitation(now, pn, true),
        Err(CommandError::NoInvitation(pn))
    );
}

#[test]
fn the_application_declines_and_the_pn_is_set_up_without_the_pne() {
    let (mut h, pn) = held_setup();
    let now = h.now();
    let answer = h.pnes[1].answer_invitation(now, pn, false).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(1, answer),
        &Outcome::InvitationAnswered {
            pn_id: pn,
            accepted: false
        }
    );
    assert_eq!(declined(&h, 1), [pn]);
    assert!(h.joined(1).is_none());
    assert_eq!(h.members(pn), [pne_id(0)]);
}

#[test]
fn an_invitation_left_unanswered_is_declined_at_its_deadline() {
    let (mut h, pn) = held_setup();
    h.advance(WITHIN - Duration::from_millis(1));
    assert!(declined(&h, 1).is_empty(), "not before its deadline");
    assert_eq!(h.pnes[1].held_invitations().len(), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(declined(&h, 1), [pn]);
    assert!(h.pnes[1].held_invitations().is_empty());
    // The PN GW had its answer before its own wait ended: the PN is set up without it.
    assert_eq!(h.members(pn), [pne_id(0)]);
    let now = h.now();
    assert_eq!(
        h.pnes[1].answer_invitation(now, pn, true),
        Err(CommandError::NoInvitation(pn))
    );
}

#[test]
fn an_invitation_into_an_existing_pn_is_held_too_and_an_acceptance_joins() {
    let mut h = ask();
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let now = h.now();
    let invite = h.gw.invite(now, pn, pne_id(1)).unwrap();
    h.pump();
    assert_eq!(invited(&h, 1), [(pn, "gw-1".to_string())]);
    assert!(h.gw_completion(invite).is_none(), "the PN GW waits");
    let now = h.now();
    let answer = h.pnes[1].answer_invitation(now, pn, true).unwrap();
    h.pump();
    let completion = h.completion(1, answer).unwrap();
    assert_eq!(completion.flow, Flow::MembershipChange);
    assert_eq!(h.members(pn), [pne_id(0), pne_id(1)]);
    assert!(matches!(
        h.gw_outcome(invite),
        crate::gateway::Outcome::Invited { joined: true, .. }
    ));
    assert_eq!(h.joined(1).map(|i| i.pn_id), Some(pn));
}

#[test]
fn an_answer_to_no_invitation_is_refused_and_sends_nothing() {
    let mut h = ask();
    let pn = PnId::from_bytes([7; 16]);
    let (sent, told) = (h.log.len(), h.pne_events(1).len());
    let now = h.now();
    assert_eq!(
        h.pnes[1].answer_invitation(now, pn, true),
        Err(CommandError::NoInvitation(pn))
    );
    h.pump();
    assert_eq!(h.log.len(), sent, "nothing sent");
    assert_eq!(
        h.pne_events(1).len(),
        told,
        "no completion of a command refused"
    );
}

#[test]
fn accept_and_decline_answer_at_once_as_before() {
    let mut h = Harness::ready(&[
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns().declining(),
    ]);
    assert_eq!(h.pne_cfgs[1].invitations, InvitationPolicy::Accept);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.members(pn), [pne_id(0), pne_id(1)]);
    assert!(invited(&h, 1).is_empty() && invited(&h, 2).is_empty());
    assert_eq!(declined(&h, 2), [pn]);
}

/// A PNE that accepts invitations but is registering now cannot join (joining registers, 000
/// §6.6.2.2): it declines at once, so the invitation ends with the answer instead of waiting
/// for a join that never comes.
#[test]
fn a_pne_registering_declines_an_invitation_it_cannot_join_now() {
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::cpns()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    // PNE 1 asks to be registered in the PN; the server never hears of it.
    h.drop_message("PnUpdateRequest");
    let now = h.now();
    h.pnes[1].start_registration(now, Some(pn)).unwrap();
    h.pump();
    h.clear_hook();
    let id = h.gw.invite(now, pn, pne_id(1)).unwrap();
    h.pump();
    assert_eq!(declined(&h, 1), [pn]);
    assert_eq!(
        h.gw_outcome(id),
        &crate::gateway::Outcome::Invited {
            pn_id: pn,
            pne: pne_id(1),
            joined: false
        }
    );
}
