//! The PNE's own waits and refusals: the deadlines of its set-up and registration, an error
//! answering its discovery, and a second PN on an already sealed link.

use std::time::Duration;

use cpns_wire::{Address, Envelope, ErrorBody, ErrorCode, SetupType};

use super::harness::{Action, FLOW, Harness, INVITE, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::pne::PneEvent;
use crate::{Failure, Flow};

fn failed(h: &Harness, i: usize, flow: Flow) -> usize {
    h.pne_failed_flows(i).iter().filter(|e| matches!(e, PneEvent::FlowFailed { flow: f, reason: Failure::TimedOut } if *f == flow))
        .count()
}

/// Drops everything the PN GW sends to the PNEs.
fn silent_gateway(h: &mut Harness) {
    h.set_hook(|f| {
        if f.from == Party::Gw && matches!(f.to, Party::Pne(_)) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
}

#[test]
fn a_set_up_waits_for_every_step_of_the_establishment_then_fails_once() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    silent_gateway(&mut h);
    let now = h.now();
    h.pnes[0].start_setup(now, SetupType::OneToOne).unwrap();
    h.pump();
    let wait = INVITE * 2 + FLOW * 2;
    assert_eq!(h.pnes[0].poll_timeout(), Some(now + wait));
    h.advance(wait - Duration::from_millis(1));
    assert_eq!(failed(&h, 0, Flow::PnEstablishment), 0);
    h.advance(Duration::from_millis(1));
    assert_eq!(failed(&h, 0, Flow::PnEstablishment), 1);
    h.advance(FLOW);
    assert_eq!(failed(&h, 0, Flow::PnEstablishment), 1, "reported once");
}

#[test]
fn a_joining_pne_that_hears_nothing_more_fails_once_at_its_deadline() {
    // pne-2 accepted an invitation; the PN GW then falls silent towards it.
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.set_hook(|f| {
        if f.from == Party::Gw && f.to == Party::Pne(1) && f.message != "PnSetupRequest" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[0].start_setup(now, SetupType::All).unwrap();
    h.pump();
    let wait = INVITE * 2 + FLOW * 2;
    assert_eq!(h.pnes[1].poll_timeout(), Some(now + wait));
    h.advance(wait - Duration::from_millis(1));
    assert_eq!(failed(&h, 1, Flow::PnEstablishment), 0);
    h.advance(Duration::from_millis(1));
    assert_eq!(failed(&h, 1, Flow::PnEstablishment), 1);
    assert_eq!(h.pnes[1].poll_timeout(), None);
}

#[test]
fn a_registration_waits_three_flow_timeouts_then_fails() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    silent_gateway(&mut h);
    let now = h.now();
    h.pnes[0].start_registration(now, Some(pn)).unwrap();
    h.pump();
    let wait = FLOW * 3;
    assert_eq!(h.pnes[0].poll_timeout(), Some(now + wait));
    h.advance(wait - Duration::from_millis(1));
    assert_eq!(failed(&h, 0, Flow::PneRegistration), 0);
    h.advance(Duration::from_millis(1));
    assert_eq!(failed(&h, 0, Flow::PneRegistration), 1);
}

#[test]
fn an_error_answering_discovery_ends_it_and_a_stray_error_nothing() {
    let mut h = Harness::new(&[PneSpec::cpns()]);
    h.connect_gw();
    let now = h.now();
    h.pnes[0].start_discovery(now).unwrap();
    // Answer the discovery request (message 1 of the PNE) with an error, by hand.
    let refusal = Envelope::response(
        900,
        1,
        Address::Entity(id("gw-1")),
        Address::Entity(pne_id(0)),
        ErrorBody::new(ErrorCode::Busy, "later"),
    );
    h.queue.clear();
    h.deliver_direct(Party::Gw, Party::Pne(0), &plain(&refusal))
        .unwrap();
    let refused = |h: &Harness, flow: Flow| {
        h.pne_failed_flows(0).iter().any(|e| {
            matches!(e, PneEvent::FlowFailed { flow: f, reason: Failure::Refused(err) } if *f == flow && err.code == ErrorCode::Busy)
        })
    };
    assert!(refused(&h, Flow::EntityDiscovery));
    assert_eq!(h.pnes[0].poll_timeout(), None, "discovery no longer waits");
    // An error answering nothing of the PNE's ends nothing.
    let events = h.pne_events(0).len();
    let stray = Envelope::response(
        901,
        777,
        Address::Entity(id("gw-1")),
        Address::Entity(pne_id(0)),
        ErrorBody::new(ErrorCode::Busy, "stray"),
    );
    h.deliver_direct(Party::Gw, Party::Pne(0), &plain(&stray))
        .unwrap();
    assert_eq!(h.pne_events(0).len(), events);
}

#[test]
fn a_second_pn_on_an_already_sealed_link_needs_no_new_pan_authentication() {
    let mut h = Harness::ready(&[PneSpec::cpns()]);
    h.setup(0, SetupType::OneToOne);
    let first = h.joined(0).unwrap().pn_id;
    assert!(h.pnes[0].link_sealed());
    let inits = |h: &Harness| {
        h.pan_traces(0)
            .iter()
            .filter(|t| t.message == "PanAuthInit")
            .count()
    };
    assert_eq!(inits(&h), 1);
    h.setup(0, SetupType::OneToOne);
    let second = h
        .pne_events(0)
        .iter()
        .rev()
        .find_map(|e| match e {
            PneEvent::PnJoined { inventory, .. }
            | PneEvent::Completed(crate::Completed {
                result: Ok(crate::pne::Outcome::PnJoined { inventory, .. }),
                ..
            }) => Some(inventory.pn_id),
            _ => None,
        })
        .unwrap();
    assert_ne!(first, second, "a second PN was established");
    assert_eq!(inits(&h), 1, "on the link sealed before");
}

/// A registration that names no PN is made in a PN the PNE is a member of: its PN GW looks the
/// membership up (003 §1.4.1 step 2), so neither the PNE nor its driver has to choose one.
#[test]
fn a_registration_naming_no_pn_is_made_in_the_pnes_first_pn() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let now = h.now();
    let id = h.pnes[0].start_registration(now, None).unwrap();
    h.pump();
    assert!(matches!(
        h.outcome(0, id),
        crate::pne::Outcome::Registered { pn_id, .. } if *pn_id == pn
    ));
}
