//! A PNE's connection set-up after a reconnection, as the machine's `rejoin` command (002
//! §B.1.1.3 steps 18-26): proof with a LocalEUKey, a key pull per PN with its confirmation, a
//! capabilities report, in that order, completing once by its id. A link lost in the middle of
//! any phase leaves nothing half done: the next connection's set-up catches up in full. Runs
//! replay exactly from their seed.

use std::time::Duration;

use cpns_wire::{PnId, SetupType};

use super::harness::{Action, FLOW, Harness, Party, pne_id};
use super::store::PneSpec;
use crate::gateway::LinkId;
use crate::pne::{Outcome, PneEvent, RejoinPhase};
use crate::{Failure, Flow};

/// Four PNEs on an insecure PAN in one PN; PNE 3 is away while PNE 2 is expelled (epoch 2),
/// then every machine comes back on new links (nothing sealed yet) and discovers its PN GW.
fn away_then_back(seed: u64) -> (Harness, PnId) {
    away_then_back_with(seed, [PneSpec::cpns(); 4])
}

/// [`away_then_back`] with these PNEs.
fn away_then_back_with(seed: u64, specs: [PneSpec; 4]) -> (Harness, PnId) {
    let mut h = Harness::with_seed(&specs, seed);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).expect("the PN was established").pn_id;
    let now = h.now();
    h.gw.link_closed(now, LinkId(3));
    h.gw.expel(now, pn, pne_id(2)).unwrap();
    h.pump();
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 1);
    h.restart_from_stores(&specs);
    h.discover_all();
    (h, pn)
}

/// The events of PNE `i` since the machines' restart.
fn since_restart(h: &Harness, i: usize) -> Vec<&PneEvent> {
    h.events[h.restarted_at..]
        .iter()
        .filter_map(|e| match e {
            super::harness::Ev::Pne(j, e) if *j == i => Some(e),
            _ => None,
        })
        .collect()
}

/// What the set-up did, in order, named by step.
fn steps_of(h: &Harness, i: usize) -> Vec<&'static str> {
    since_restart(h, i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::PanAuthenticated { .. } => Some("proved"),
            PneEvent::PnUpdated { .. } => Some("pulled"),
            PneEvent::MembershipConfirmed { .. } => Some("confirmed"),
            PneEvent::CapabilitiesReported => Some("reported"),
            PneEvent::Completed(c) if c.flow == Flow::PnConnectionSetup => Some("rejoined"),
            _ => None,
        })
        .collect()
}

#[test]
fn the_set_up_proves_pulls_confirms_reports_and_completes_once() {
    let (mut h, pn) = away_then_back(7);
    let now = h.now();
    let id = h.pnes[3].rejoin(now).unwrap();
    assert_eq!(h.pnes[3].rejoin_phase(), Some(RejoinPhase::Proving));
    h.pump();
    assert_eq!(h.pnes[3].rejoin_phase(), None);
    assert_eq!(h.outcome(3, id), &Outcome::Rejoined { pns: vec![pn] });
    assert_eq!(
        steps_of(&h, 3),
        ["proved", "pulled", "confirmed", "reported", "rejoined"]
    );
    // It caught up: the current epoch's key, as the others hold it, and the PN GW knows.
    let (epoch, key) = h.pnes[3].group_key_of(&pn).unwrap();
    assert_eq!(epoch, 2);
    assert!(key == h.store.epochs[&pn].1);
    assert!(h.gw.confirmed_members(&pn).unwrap().contains(&pne_id(3)));
    // A second set-up on the same link runs again (nothing to prove: the link is sealed).
    let again = h.pnes[3].rejoin(now).unwrap();
    assert_eq!(h.pnes[3].rejoin_phase(), Some(RejoinPhase::Pulling));
    h.pump();
    assert_eq!(h.outcome(3, again), &Outcome::Rejoined { pns: vec![pn] });
}

#[test]
fn one_set_up_at_a_time_and_only_after_discovery() {
    let (mut h, _) = away_then_back(8);
    let now = h.now();
    h.pnes[3].rejoin(now).unwrap();
    assert_eq!(
        h.pnes[3].rejoin(now),
        Err(crate::CommandError::ChangeRunning {
            flow: Flow::PnConnectionSetup
        })
    );
    let mut fresh = Harness::new(&[PneSpec::cpns()]);
    let now = fresh.now();
    assert!(matches!(
        fresh.pnes[0].rejoin(now),
        Err(crate::CommandError::NotAllowed(_))
    ));
    fresh.pump();
    assert!(fresh.pne_events(0).is_empty());
}

/// A PNE in no PN of this PN GW has nothing to prove, pull or report: it completes at once.
#[test]
fn a_pne_in_no_pn_here_completes_at_once() {
    let mut h = Harness::ready(&[PneSpec::cpns()]);
    let now = h.now();
    let sent = h.log.len();
    let id = h.pnes[0].rejoin(now).unwrap();
    h.pump();
    assert_eq!(h.outcome(0, id), &Outcome::Rejoined { pns: vec![] });
    assert_eq!(h.log.len(), sent, "nothing was sent");
}

/// The message of each phase is lost with its link; the machine is gone with the link and its
/// command never completes (the driver answers its caller). On the next link, the set-up
/// catches up in full.
#[test]
fn a_link_lost_in_any_phase_is_caught_up_on_the_next() {
    for (phase, message) in [
        ("proving", "PanAuthInit"),
        ("pulling", "GroupKeyRequest"),
        ("confirming", "MembershipConfirm"),
        ("reporting", "DeviceCapabilitiesUpdate"),
    ] {
        let (mut h, pn) = away_then_back(11);
        h.set_hook(move |f| {
            if f.message == message && f.from == super::harness::Party::Pne(3) {
                Action::Drop
            } else {
                Action::Deliver
            }
        });
        let now = h.now();
        let lost = h.pnes[3].rejoin(now).unwrap();
        h.pump();
        assert!(h.completion(3, lost).is_none(), "{phase}: still waiting");
        // The link is lost: every machine comes back on new links.
        h.clear_hook();
        h.restart_from_stores(&[PneSpec::cpns(); 4]);
        h.discover_all();
        let now = h.now();
        let id = h.pnes[3].rejoin(now).unwrap();
        h.pump();
        assert_eq!(
            h.outcome(3, id),
            &Outcome::Rejoined { pns: vec![pn] },
            "{phase}"
        );
        assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 2, "{phase}");
        assert!(
            h.gw.confirmed_members(&pn).unwrap().contains(&pne_id(3)),
            "{phase}"
        );
        assert!(h.errors.is_empty(), "{phase}: {:?}", h.errors);
    }
}

/// A pull the server never gets (the PN GW relays it into a void) ends at a deadline; the
/// set-up moves on and completes, what failed told as an event.
#[test]
fn an_unanswered_pull_times_out_and_the_set_up_still_completes() {
    let (mut h, pn) = away_then_back(12);
    h.set_hook(|f| {
        if f.message == "GroupKeyRequest" && f.to == super::harness::Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    let id = h.pnes[3].rejoin(now).unwrap();
    h.pump();
    assert!(h.completion(3, id).is_none());
    assert_eq!(h.pnes[3].rejoin_phase(), Some(RejoinPhase::Pulling));
    h.advance(FLOW * 2 + Duration::from_secs(1));
    assert_eq!(h.outcome(3, id), &Outcome::Rejoined { pns: vec![pn] });
    assert!(h.closes.is_empty(), "{:?}", h.closes);
    assert!(h.pne_failed_flows(3).iter().any(|e| matches!(
        e,
        PneEvent::FlowFailed {
            flow: Flow::MembershipChange,
            ..
        }
    )));
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 1, "not caught up");
}

/// The same seed gives the same run, frame for frame.
#[test]
fn a_set_up_replays_from_its_seed() {
    let run = |seed| {
        let (mut h, _) = away_then_back(seed);
        let now = h.now();
        h.pnes[3].rejoin(now).unwrap();
        h.pump();
        h.log.iter().map(|f| f.body.clone()).collect::<Vec<_>>()
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22));
}

/// Nothing to prove: on a trusted bearer the link needs no proof. Its set-up starts at the
/// pulls and still catches up. (On an insecure PAN every member holds a LocalEUKey and proves
/// itself first, a PNE without a UI too.)
#[test]
fn with_nothing_to_prove_the_set_up_starts_at_the_pulls() {
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::trusted(),
    ];
    let (mut h, pn) = away_then_back_with(13, specs);
    let now = h.now();
    let id = h.pnes[3].rejoin(now).unwrap();
    assert_eq!(h.pnes[3].rejoin_phase(), Some(RejoinPhase::Pulling));
    h.pump();
    assert_eq!(h.outcome(3, id), &Outcome::Rejoined { pns: vec![pn] });
    assert!(!steps_of(&h, 3).contains(&"proved"));
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 2);
}

/// A PNE without a UI on an insecure PAN holds a LocalEUKey like any member, and its set-up
/// proves it first.
#[test]
fn a_pne_without_a_ui_proves_itself_first() {
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns().no_ui(),
    ];
    let (mut h, pn) = away_then_back_with(13, specs);
    assert!(h.pnes[3].holds_local_key(&pn));
    let now = h.now();
    let id = h.pnes[3].rejoin(now).unwrap();
    assert_eq!(h.pnes[3].rejoin_phase(), Some(RejoinPhase::Proving));
    h.pump();
    assert_eq!(h.outcome(3, id), &Outcome::Rejoined { pns: vec![pn] });
    assert!(steps_of(&h, 3).contains(&"proved"));
    assert!(h.pnes[3].link_sealed());
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 2);
}

/// The set-up waits for its own capabilities report only: a report the application asked for
/// (`set_capabilities`) that is still unanswered does not hold it.
#[test]
fn the_set_up_waits_for_its_own_report_not_an_applications() {
    let (mut h, pn) = away_then_back(13);
    // The PNE's first capabilities report (the application's) is lost on its way to the
    // server (on the sealed PAN link a lost frame would end the link).
    let mut lost = false;
    h.set_hook(move |f| {
        if f.message == "DeviceCapabilitiesUpdate" && f.to == Party::Server && !lost {
            lost = true;
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    let mut caps = h.pne_cfgs[3].capabilities.clone();
    caps.software.push("app/2".into());
    let asked = h.pnes[3].set_capabilities(now, caps).unwrap();
    let id = h.pnes[3].rejoin(now).unwrap();
    h.pump();
    assert!(
        h.completion(3, asked).is_none(),
        "the application's report is lost"
    );
    assert_eq!(h.outcome(3, id), &Outcome::Rejoined { pns: vec![pn] });
}

/// The PN GW lost PNE 1's LocalEUKey (its store came back without it). Its answer to the PNE's
/// proof is a decoy, as for any pair it holds no key for: the PNE's check of gw_proof fails, it
/// closes the link, and marks the PN not provable here. Back on a new link with that mark (the
/// driver carries it), it does not try the key again: no PanAuthInit, and the set-up completes
/// with its pull refused (the link proved nothing) instead of closing the link again.
#[test]
fn a_pn_gw_that_lost_the_key_is_not_tried_again_and_the_set_up_completes() {
    let specs = [PneSpec::cpns(); 4];
    let mut h = Harness::with_seed(&specs, 11);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).expect("the PN was established").pn_id;
    // The PN GW's store loses PNE 1's key copy.
    h.store
        .gw_local
        .get_mut(&pn)
        .unwrap()
        .wrapped_keys
        .retain(|(p, _)| *p != pne_id(1));
    h.restart_from_stores(&specs);
    h.discover_all();
    let now = h.now();
    h.pnes[1].rejoin(now).unwrap();
    h.pump();
    let told = since_restart(&h, 1);
    assert!(
        told.iter().any(|e| matches!(
            e,
            PneEvent::FlowFailed {
                flow: Flow::PanAuthentication,
                reason: Failure::GatewayNotProven(p),
            } if *p == pn
        )),
        "{told:?}"
    );
    assert!(h.closes.iter().any(|(p, _, _)| *p == Party::Pne(1)));
    assert_eq!(h.pnes[1].unprovable().iter().collect::<Vec<_>>(), [&pn]);
    // The next link: a new machine given the mark.
    let marks = h.pnes[1].unprovable().clone();
    h.relink(1, 12, |back| back.skip_proofs(&marks));
    // Its commands count from 1 again: read its events from here.
    h.restarted_at = h.events.len();
    let inits_before = h
        .log
        .iter()
        .filter(|f| f.from == Party::Pne(1) && f.message == "PanAuthInit")
        .count();
    let closes_before = h.closes.len();
    let now = h.now();
    h.pnes[1].start_discovery(now).unwrap();
    h.pump();
    let now = h.now();
    h.pnes[1].rejoin(now).unwrap();
    h.pump();
    let inits_after = h
        .log
        .iter()
        .filter(|f| f.from == Party::Pne(1) && f.message == "PanAuthInit")
        .count();
    assert_eq!(inits_after, inits_before, "the key was not tried again");
    assert_eq!(h.closes.len(), closes_before, "no link closed");
    assert_eq!(steps_of(&h, 1).last(), Some(&"rejoined"));
    assert!(!steps_of(&h, 1).contains(&"proved"));
    // The other members proved themselves as ever.
    for i in [0, 2, 3] {
        let now = h.now();
        h.pnes[i].rejoin(now).unwrap();
    }
    h.pump();
    assert!(
        since_restart(&h, 2)
            .iter()
            .any(|e| matches!(e, PneEvent::PanAuthenticated { pn_id, .. } if *pn_id == pn))
    );
}
