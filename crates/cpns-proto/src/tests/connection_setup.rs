//! A member's connection set-up in its PN (002 §B.1.1.3 steps 22-26): it pulls its copy of the
//! PN's group key through the PN GW, confirms holding that epoch (MembershipConfirm), and the
//! PN GW confirms the set-up (MembershipConfirmed) and records who holds the current key.

use std::time::Duration;

use cpns_wire::{Address, Body, EntityId, Envelope, ErrorCode, MembershipConfirm, PnId, SetupType};

use super::harness::{Action, FLOW, Harness, Party, plain, pne_id, rewrite};
use super::store::PneSpec;
use crate::gateway::{GatewayEvent, LinkId};
use crate::pne::{Gone, Outcome, PneEvent};
use crate::{Failure, Flow};

/// `specs.len()` PNEs, all members of one PN set up by PNE 0.
fn with_pn(specs: &[PneSpec]) -> (Harness, PnId) {
    let mut h = Harness::ready(specs);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).expect("the PN was established").pn_id;
    (h, pn)
}

/// The confirmations PNE `i` got back (step 26).
fn confirmed_at(h: &Harness, i: usize) -> Vec<(PnId, u64)> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::MembershipConfirmed { pn_id, epoch } => Some((*pn_id, *epoch)),
            _ => None,
        })
        .collect()
}

/// The confirmations the PN GW recorded (step 25).
fn gw_confirmed(h: &Harness) -> Vec<(EntityId, u64)> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::MemberConfirmed { pne, epoch, .. } => Some((pne.clone(), *epoch)),
            _ => None,
        })
        .collect()
}

/// How many MembershipConfirm frames went from PNE `i` to the PN GW.
fn confirms_sent(h: &Harness, i: usize) -> usize {
    h.log
        .iter()
        .filter(|f| f.from == Party::Pne(i) && f.to == Party::Gw)
        .filter(|f| f.message == "MembershipConfirm")
        .count()
}

/// The answer the PN GW gave PNE `i` last.
fn last_error_to(h: &Harness, i: usize) -> Option<ErrorCode> {
    h.delivered(Party::Gw, Party::Pne(i))
        .into_iter()
        .rev()
        .find_map(|e| e.error().map(|e| e.code))
}

/// Steps 22-26 for a member that was away during an expulsion: it pulls epoch 2, confirms it,
/// and is confirmed; the PN GW counts only members that confirmed the current epoch, so a
/// later change leaves every earlier confirmation behind.
#[test]
fn a_member_back_after_a_change_confirms_the_epoch_it_pulled() {
    let (mut h, pn) = with_pn(&[PneSpec::cpns(); 4]);
    // The establishment gave epoch 1; the PN GW knows it, no one confirmed it yet.
    assert_eq!(h.gw.epoch(&pn), Some(1));
    assert_eq!(h.gw.confirmed_members(&pn), Some(vec![]));
    let now = h.now();
    h.gw.link_closed(now, LinkId(3));
    h.gw.expel(now, pn, pne_id(2)).unwrap();
    h.pump();
    // The members there took epoch 2 from their PN Update Notification (step 24, pushed) and
    // confirmed it; PNE 3, away, did not.
    assert_eq!(gw_confirmed(&h), [(pne_id(0), 2), (pne_id(1), 2)]);
    assert_eq!(confirmed_at(&h, 0), [(pn, 2)]);
    assert_eq!(
        h.gw.confirmed_members(&pn),
        Some(vec![pne_id(0), pne_id(1)])
    );
    // Everyone restarts from the stores: the PN GW no longer knows the epoch.
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    assert_eq!(h.gw.epoch(&pn), None);
    assert_eq!(h.gw.confirmed_members(&pn), None);
    let mark = h.events.len();
    // PNE 3 proves itself, then pulls.
    let now = h.now();
    h.pnes[3].start_pan_auth(now, pn).unwrap();
    h.pump();
    let pulled = h.pnes[3].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 2);
    assert_eq!(
        h.outcome(3, pulled),
        &crate::pne::Outcome::GroupKey {
            pn_id: pn,
            epoch: 2,
            has_key: true
        }
    );
    assert_eq!(confirms_sent(&h, 3), 1);
    assert_eq!(confirmed_at(&h, 3), [(pn, 2)]);
    assert_eq!(gw_confirmed(&h)[2..], [(pne_id(3), 2)]);
    assert!(h.events.len() > mark);
    assert_eq!(h.gw.epoch(&pn), Some(2));
    assert_eq!(h.gw.confirmed_members(&pn), Some(vec![pne_id(3)]));
    // PNE 0 already held epoch 2: its pull changes nothing but it confirms too; the PN GW
    // lists the members in the inventory's order.
    h.pnes[0].start_pan_auth(now, pn).unwrap();
    h.pump();
    h.pnes[0].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(confirmed_at(&h, 0), [(pn, 2), (pn, 2)]);
    assert_eq!(
        h.gw.confirmed_members(&pn),
        Some(vec![pne_id(0), pne_id(3)])
    );
    // PNE 1, on an unproven link, is expelled: epoch 3 is confirmed by the members told, and only
    // them; what they confirmed of epoch 2 no longer counts.
    h.gw.expel(now, pn, pne_id(1)).unwrap();
    h.pump();
    assert_eq!(h.gw.epoch(&pn), Some(3));
    assert_eq!(
        h.gw.confirmed_members(&pn),
        Some(vec![pne_id(0), pne_id(3)])
    );
    assert_eq!(confirmed_at(&h, 3), [(pn, 2), (pn, 3)]);
    // A PN the PN GW does not serve has no confirmations at all.
    assert_eq!(h.gw.confirmed_members(&PnId::from_bytes([9; 16])), None);
}

/// A link that has not proved its PNE gets no confirmation recorded: one forged on it is
/// refused; the PNE itself, asked to pull, proves itself first, then confirms.
#[test]
fn an_unproven_link_does_not_confirm() {
    let (mut h, pn) = with_pn(&[PneSpec::cpns(); 4]);
    let now = h.now();
    h.gw.link_closed(now, LinkId(3));
    h.gw.expel(now, pn, pne_id(2)).unwrap();
    h.pump();
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    let mark = gw_confirmed(&h).len();
    let forged = Envelope::request(
        9_500,
        Address::Entity(pne_id(3)),
        Address::Entity(h.gw_cfg.id.clone()),
        MembershipConfirm {
            pn_id: pn,
            epoch: 2,
        },
    );
    h.deliver_direct(Party::Pne(3), Party::Gw, &plain(&forged))
        .unwrap();
    h.pump();
    assert_eq!(last_error_to(&h, 3), Some(ErrorCode::Forbidden));
    assert_eq!(gw_confirmed(&h).len(), mark);
    assert!(h.gw.confirmed_members(&pn).unwrap_or_default().is_empty());
    // The PNE's own pull: PN GW authentication first, then the pull and its confirmation,
    // sealed.
    let now = h.now();
    h.pnes[3].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 2);
    assert!(h.pnes[3].link_sealed());
    assert_eq!(confirms_sent(&h, 3), 1);
    assert_eq!(h.gw.confirmed_members(&pn), Some(vec![pne_id(3)]));
}

/// Rewrites PNE `i`'s MembershipConfirm on its (trusted, plain) link with `f`.
fn rewrite_confirm(h: &mut Harness, f: impl Fn(&mut MembershipConfirm) + 'static) {
    h.set_hook(move |fl| match fl.env() {
        Some(e) if matches!(e.body, Body::MembershipConfirm(_)) => {
            Action::Replace(rewrite(&fl.body, |env| {
                if let Body::MembershipConfirm(m) = &mut env.body {
                    f(m);
                }
            }))
        }
        _ => Action::Deliver,
    });
}

/// A confirmation naming another epoch than the PN's current one gets `conflict`, one naming
/// a PN the PN GW does not serve `not_found`; neither is recorded, and the PNE reports the
/// refusal instead of a confirmed set-up.
#[test]
fn a_confirmation_of_another_epoch_or_pn_is_refused() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted(); 2]);
    for (edit, code) in [
        (
            Box::new(|m: &mut MembershipConfirm| m.epoch = 7) as Box<dyn Fn(&mut _)>,
            ErrorCode::Conflict,
        ),
        (
            Box::new(|m: &mut MembershipConfirm| m.pn_id = PnId::from_bytes([9; 16])),
            ErrorCode::NotFound,
        ),
    ] {
        rewrite_confirm(&mut h, edit);
        let now = h.now();
        h.pnes[1].request_group_key(now, pn).unwrap();
        h.pump();
        assert_eq!(last_error_to(&h, 1), Some(code));
        assert!(
            h.pne_failures(1)
                .iter()
                .any(|f| matches!(f, Failure::Refused(e) if e.code == code))
        );
    }
    assert!(confirmed_at(&h, 1).is_empty());
    assert!(gw_confirmed(&h).is_empty());
    // Unchanged, the same confirmation goes through.
    h.clear_hook();
    let now = h.now();
    h.pnes[1].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(confirmed_at(&h, 1), [(pn, 1)]);
    assert_eq!(h.gw.confirmed_members(&pn), Some(vec![pne_id(1)]));
}

/// A PN GW that has not learned the PN's epoch since its restart cannot check a confirmation:
/// `wrong_state`, recorded nowhere.
#[test]
fn a_confirmation_before_the_pn_gw_knows_the_epoch_is_refused() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted(); 2]);
    h.restart_from_stores(&[PneSpec::trusted(); 2]);
    h.discover_all();
    let confirm = Envelope::request(
        9_600,
        Address::Entity(pne_id(1)),
        Address::Entity(h.gw_cfg.id.clone()),
        MembershipConfirm {
            pn_id: pn,
            epoch: 1,
        },
    );
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&confirm))
        .unwrap();
    h.pump();
    assert_eq!(last_error_to(&h, 1), Some(ErrorCode::WrongState));
    assert!(gw_confirmed(&h).is_empty());
    // Another member's confirmation sent in PNE 1's name is refused: a link speaks for its PNE.
    let other = Envelope::request(
        9_601,
        Address::Entity(pne_id(0)),
        Address::Entity(h.gw_cfg.id.clone()),
        MembershipConfirm {
            pn_id: pn,
            epoch: 1,
        },
    );
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&other))
        .unwrap();
    h.pump();
    assert!(gw_confirmed(&h).is_empty());
}

/// A PN GW that never answers the confirmation: the PNE gives up at its deadline and says so;
/// an answer for another PN, or one that comes unasked, confirms nothing.
#[test]
fn an_unanswered_confirmation_times_out() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted(); 2]);
    h.set_hook(|f| match f.env() {
        Some(e) if matches!(e.body, Body::MembershipConfirmed(_)) => Action::Drop,
        _ => Action::Deliver,
    });
    let now = h.now();
    h.pnes[1].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(gw_confirmed(&h), [(pne_id(1), 1)]);
    assert!(confirmed_at(&h, 1).is_empty());
    h.advance(FLOW / 2);
    h.pump();
    assert!(!h.pne_failures(1).contains(&Failure::TimedOut));
    h.advance(FLOW / 2 + Duration::from_secs(1));
    h.pump();
    assert!(h.pne_failures(1).contains(&Failure::TimedOut));
    assert!(h.pne_failed_flows(1).iter().any(|e| matches!(
        e,
        PneEvent::FlowFailed {
            flow: Flow::MembershipChange,
            ..
        }
    )));
    // Answers for another PN, or to nothing asked, confirm nothing.
    h.clear_hook();
    h.set_hook(|f| match f.env() {
        Some(e) if matches!(e.body, Body::MembershipConfirmed(_)) => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::MembershipConfirmed(m) = &mut env.body {
                    m.pn_id = PnId::from_bytes([9; 16]);
                }
            }))
        }
        _ => Action::Deliver,
    });
    let now = h.now();
    h.pnes[1].request_group_key(now, pn).unwrap();
    h.pump();
    let unasked = Envelope::response(
        9_700,
        424_242,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Entity(pne_id(1)),
        cpns_wire::MembershipConfirmed {
            pn_id: pn,
            epoch: 1,
        },
    );
    h.deliver_direct(Party::Gw, Party::Pne(1), &plain(&unasked))
        .unwrap();
    assert!(confirmed_at(&h, 1).is_empty());
}

/// A member away while its PN is released, or while it is expelled, learns it at its next
/// pull: the server's word, sealed under the SK_PNE it held, and it forgets the PN as if it had
/// been told then. A word that does not open, or that it did not ask for, changes nothing.
#[test]
fn a_member_away_when_its_membership_ended_learns_it_at_its_next_pull() {
    for release in [true, false] {
        let (mut h, pn) = with_pn(&[PneSpec::cpns(); 4]);
        let now = h.now();
        h.gw.link_closed(now, LinkId(3));
        let writes = h.store.gw_writes.len();
        if release {
            h.gw.release_pn(now, pn).unwrap();
        } else {
            h.gw.expel(now, pn, pne_id(3)).unwrap();
        }
        h.pump();
        // The away member's key is written before the change, so a change done never lost it.
        let order = &h.store.gw_writes[writes..];
        let change = if release { "forget" } else { "save" };
        let kept_at = order.iter().position(|w| *w == "keep_departed");
        let change_at = order.iter().position(|w| *w == change);
        assert!(kept_at.is_some() && kept_at < change_at, "{order:?}");
        assert!(
            h.store.pne_local[3].contains_key(&pn),
            "still held while away"
        );
        // The PN GW keeps the away member's key (only its: the others were told), across its
        // restart, so the member can prove itself and hear the server's word.
        let kept: Vec<_> = h
            .store
            .gw_departed
            .iter()
            .map(|(p, e, _)| (*p, e.clone()))
            .collect();
        assert_eq!(kept, [(pn, pne_id(3))], "release: {release}");
        h.restart_from_stores(&[PneSpec::cpns(); 4]);
        assert_eq!(h.gw.departed_count(), 1);
        h.discover_all();
        // A key kept for a departed member proves who it is, and makes it a member of nothing.
        let now = h.now();
        let leave = h.pnes[3].leave_pn(now, pn).unwrap();
        h.pump();
        assert!(h.pnes[3].link_sealed(), "release: {release}");
        assert!(
            matches!(
                h.completion(3, leave).map(|c| &c.result),
                Some(Err(Failure::Refused(_)))
            ),
            "release: {release}"
        );
        assert!(h.pnes[3].inventory().iter().any(|i| i.pn_id == pn));
        // A tampered word first: kept.
        h.set_hook(|f| match f.env() {
            Some(e) if matches!(e.body, Body::MembershipEnded(_)) && f.to == Party::Gw => {
                Action::Replace(rewrite(&f.body, |env| {
                    if let Body::MembershipEnded(m) = &mut env.body {
                        m.sealed[5] ^= 1;
                    }
                }))
            }
            _ => Action::Deliver,
        });
        let now = h.now();
        h.pnes[3].request_group_key(now, pn).unwrap();
        h.pump();
        assert!(h.pnes[3].inventory().iter().any(|i| i.pn_id == pn));
        assert!(h.pne_failures(3).contains(&Failure::AnswerDidNotOpen));
        // Then the server's word as it is.
        h.clear_hook();
        h.pnes[3].request_group_key(now, pn).unwrap();
        h.pump();
        assert!(h.pnes[3].inventory().is_empty(), "release: {release}");
        assert!(!h.store.pne_local[3].contains_key(&pn));
        // Heard: the kept key goes.
        assert!(h.store.gw_departed.is_empty(), "release: {release}");
        assert_eq!(h.gw.departed_count(), 0);
        let told = if release {
            PneEvent::PnReleased(pn)
        } else {
            PneEvent::Expelled(pn)
        };
        assert!(h.pne_events(3).contains(&&told), "release: {release}");
    }
}

/// A MembershipEnded nothing asked for is ignored.
#[test]
fn an_unasked_end_of_membership_is_ignored() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted(); 2]);
    let ended = Envelope::response(
        9_990,
        424_242,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Entity(pne_id(1)),
        cpns_wire::MembershipEnded {
            pn_id: pn,
            reason: cpns_wire::EndReason::Released,
            sealed: vec![0; 29],
        },
    );
    h.deliver_direct(Party::Gw, Party::Pne(1), &plain(&ended))
        .unwrap();
    assert!(h.pnes[1].inventory().iter().any(|i| i.pn_id == pn));
    assert!(h.pne_failures(1).is_empty());
}

/// The server's word that the PN was released can overtake the PN GW's answer to this PNE's
/// own release: the PNE reports the release as its own all the same.
#[test]
fn an_end_of_membership_overtaking_its_own_release_is_its_own() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted(); 2]);
    h.set_hook(|f| {
        if f.message == "PnReleaseResponse" && f.to == Party::Pne(1) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[1].release_pn(now, pn).unwrap();
    h.pump();
    assert!(!h.store.pns.contains_key(&pn), "released at the server");
    assert!(h.pnes[1].inventory().iter().any(|i| i.pn_id == pn));
    h.pnes[1].request_group_key(now, pn).unwrap();
    h.pump();
    assert!(h.pnes[1].inventory().is_empty());
    assert!(h.pne_outcomes(1).contains(&&Outcome::PnGone {
        pn_id: pn,
        why: Gone::Released { by_me: true }
    }));
}
