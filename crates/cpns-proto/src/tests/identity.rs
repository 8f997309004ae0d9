//! Identity on the PAN (docs/ARCHITECTURE.md, "Identity on the PAN"): a link's claim to be a PNE
//! never takes the route of another live link, changes no inventory until it is proved, and a
//! proof (PN GW authentication with the LocalEUKey, or the server authenticating the PNE) wins
//! over a claim. Membership is looked up, a member is never downgraded, and a PNE joins a PN
//! only once authenticated.

use cpns_wire::{
    Address, Body, Envelope, ErrorCode, NewMember, PnId, PnSetupRequest, PnUpdateRequest,
    RequestId, SetupType,
};

use super::harness::{Action, FLOW, Harness, Party, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::{GatewayEvent, LinkId};
use crate::pne::PneSession;
use crate::server::ServerEvent;
use crate::{Failure, Flow};

/// The error codes the PN GW sent to PNE `i`.
fn errors_to(h: &Harness, i: usize) -> Vec<ErrorCode> {
    h.delivered(Party::Gw, Party::Pne(i))
        .iter()
        .filter_map(|e| e.error().map(|e| e.code))
        .collect()
}

#[test]
fn a_claim_never_takes_the_route_of_a_live_link() {
    // PNE 2 is an attacker on the PAN claiming to be pne-1, which is connected.
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns().impersonating(0),
    ];
    let mut h = Harness::ready(&specs);
    // Its discovery is answered (pne-1's link has proved nothing either, and a device that can
    // prove pne-1 may come on this link): it may now only try to prove the id.
    assert_eq!(errors_to(&h, 2), []);
    let before = h.snapshot();
    // Its set-up in pne-1's name is refused before anything starts.
    let now = h.now();
    h.pnes[2].start_setup(now, SetupType::All).unwrap();
    h.pump();
    assert_eq!(errors_to(&h, 2), [ErrorCode::Conflict]);
    assert!(!h.wan_messages().contains(&"PnRegistrationRequest"));
    // ...and so is its registration.
    h.register(2, None);
    assert_eq!(errors_to(&h, 2).len(), 2);
    assert_eq!(h.snapshot(), before);
    // The real pne-1 is still reached: its own PN with pne-2 completes, without the attacker.
    h.setup(0, SetupType::All);
    let inv = h.joined(0).expect("pne-1 established its PN");
    assert_eq!(h.members(inv.pn_id), [pne_id(0), pne_id(1)]);
    assert!(
        h.delivered(Party::Gw, Party::Pne(2))
            .iter()
            .all(|e| !matches!(
                e.body,
                Body::PnSetupRequest(_) | Body::AuthenticationRequest(_)
            ))
    );
    h.assert_agree(inv.pn_id);
}

#[test]
fn an_unproven_initiator_gets_no_pn_in_its_name() {
    // pne-3 is away; the attacker claims its free id and asks for a PN with pne-2.
    let specs = [
        PneSpec::trusted().impersonating(2),
        PneSpec::trusted(),
        PneSpec::trusted(),
    ];
    let mut h = Harness::new(&specs);
    h.connect_gw();
    let now = h.now();
    h.gw.link_closed(now, LinkId(2));
    h.pnes[0].start_discovery(now).unwrap();
    h.pnes[1].start_discovery(now).unwrap();
    h.pump();
    let before = h.snapshot();
    h.setup(0, SetupType::All);
    assert!(h.wan_messages().contains(&"PnRegistrationRequest"));
    // pne-2 took part and authenticated, but the initiator could not: no PN anywhere.
    assert!(
        h.delivered(Party::Pne(1), Party::Gw)
            .iter()
            .any(|e| matches!(e.body, Body::AuthenticationResponse(_)))
    );
    assert!(h.server_events().contains(&&ServerEvent::FlowFailed {
        flow: Flow::PnEstablishment,
        reason: Failure::InitiatorNotAuthenticated,
    }));
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(2),
                reason: Failure::HashPneMismatch,
            })
    );
    assert_eq!(h.snapshot(), before);
    assert!(h.store.session_keys.is_empty());
}

/// PNE 0 is pne-1 on an insecure PAN with a 1-1 PN (and so a LocalEUKey and a proven link);
/// PNE 1 is an attacker that will claim pne-1.
fn pne_1_and_its_impersonator() -> (Harness, PnId) {
    let specs = [PneSpec::cpns(), PneSpec::cpns().impersonating(0)];
    let mut h = Harness::new(&specs);
    h.connect_gw();
    let now = h.now();
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).expect("pne-1 has a PN and a LocalEUKey").pn_id;
    (h, pn)
}

#[test]
fn a_proof_takes_the_route_from_a_claim_and_closes_it() {
    let (mut h, pn) = pne_1_and_its_impersonator();
    let now = h.now();
    // pne-1's link drops; the attacker claims the free id.
    h.gw.link_closed(now, LinkId(0));
    h.pnes[1].start_discovery(now).unwrap();
    h.pump();
    assert!(errors_to(&h, 1).is_empty(), "a free id can be claimed");
    // pne-1 comes back on a new link: its discovery is answered (the id is only claimed), and
    // its proof takes the id from the claim.
    h.gw.link_opened(LinkId(0), crate::PanSecurity::Cpns);
    let mut back = PneSession::new(
        h.pne_cfgs[0].clone(),
        cpns_crypto::MachineRng::from_seed_u64(5),
    );
    back.restore(h.store.pne_local[0].values().cloned().collect())
        .unwrap();
    h.pnes[0] = back;
    let before = h.delivered(Party::Gw, Party::Pne(0)).len();
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    let answers = &h.delivered(Party::Gw, Party::Pne(0))[before..];
    assert!(
        matches!(answers[0].body, Body::EntityDiscoveryResponse(_)),
        "{:?}",
        answers[0].body
    );
    h.pnes[0].start_pan_auth(now, pn).unwrap();
    h.pump();
    assert!(h.pnes[0].link_sealed());
    assert!(
        h.closes.iter().any(|(by, link, why)| *by == Party::Gw
            && *link == Some(1)
            && why == "another link proved it is pne-1"),
        "{:?}",
        h.closes
    );
    assert!(h.gw_events().contains(&&GatewayEvent::LinkRejected {
        link: LinkId(1),
        reason: "another link proved it is pne-1".into(),
    }));
    // Server traffic for pne-1 now reaches the proven link: its registration goes through.
    h.register(0, Some(pn));
    assert!(h.pnes[0].cpns_id().is_some());
    h.assert_agree(pn);
}

#[test]
fn a_link_naming_a_held_id_may_only_prove_it() {
    let specs = [PneSpec::cpns(), PneSpec::cpns()];
    let mut h = Harness::ready(&specs);
    // A raw PN Setup Request on link 1, naming pne-1 (held by link 0) in its envelope and body.
    let join = cpns_wire::JoinInfo {
        pne_id: pne_id(0),
        capabilities: h.pne_cfgs[0].capabilities.clone(),
        contents: Vec::new(),
        rand_pne: cpns_wire::RandBytes([1; 16]),
        local_key: false,
        home_gateway: None,
    };
    let req = Envelope::request(
        900,
        Address::Entity(pne_id(0)),
        Address::Entity(crate::tests::harness::id("gw-1")),
        PnSetupRequest {
            request_id: RequestId(1),
            setup: Some(SetupType::OneToOne),
            join: Some(join),
            pn_id: None,
            initiator: None,
        },
    );
    let before = h.snapshot();
    // pne-2's link speaks only as pne-2.
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&req))
        .unwrap();
    h.pump();
    assert_eq!(errors_to(&h, 1), [ErrorCode::Forbidden]);
    assert_eq!(h.snapshot(), before);
}

#[test]
fn a_member_naming_no_pn_registers_as_a_member() {
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    let before = h.snapshot();
    let wan_before = h.wan_messages().len();
    h.register(1, None);
    assert_eq!(
        h.wan_messages()[wan_before..],
        [
            "PneRegistrationRequest",
            "AuthenticationRequest",
            "AuthenticationResponse",
            "PneRegistrationResponse",
        ],
        "a member is not added again"
    );
    assert!(h.pnes[1].cpns_id().is_some());
    assert_eq!(h.snapshot().without_cpns_ids(), before.without_cpns_ids());
    h.assert_agree(pn);
}

#[test]
fn adding_an_existing_member_changes_nothing() {
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    let before = h.snapshot();
    let key = h.store.session_keys[&(pn, pne_id(0))].clone();
    // The PN GW (its authenticated session) proposes pne-1 again, without capabilities.
    let update = Envelope::request(
        900,
        Address::Entity(crate::tests::harness::id("gw-1")),
        Address::Server,
        PnUpdateRequest {
            request_id: RequestId(77),
            pn_id: pn,
            add: vec![NewMember {
                pne_id: pne_id(0),
                capabilities: None,
            }],
            remove: Vec::new(),
            asked_by: None,
        },
    );
    h.deliver_direct(Party::Gw, Party::Server, &plain(&update))
        .unwrap();
    h.pump();
    assert_eq!(h.snapshot(), before);
    assert_eq!(h.store.session_keys[&(pn, pne_id(0))], key);
    // And no registration can ride on it for a PNE that never authenticated.
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// A non-member whose registration fails, or never completes, leaves both inventories exactly
/// as they were.
#[test]
fn a_failed_or_silent_joining_pne_changes_no_inventory() {
    let specs = [PneSpec::trusted(), PneSpec::trusted().wrong_key()];
    let (mut h, pn) = {
        let mut h = Harness::ready(&specs);
        h.setup(0, SetupType::OneToOne);
        let pn = h.joined(0).unwrap().pn_id;
        (h, pn)
    };
    let before = h.snapshot();
    // Wrong EUKey: authentication fails.
    h.register(1, None);
    assert!(h.wan_messages().contains(&"PnUpdateRequest"));
    assert_eq!(h.snapshot(), before);
    assert!(h.pnes[1].cpns_id().is_none());

    // Silent: the PNE never answers the server's challenge; everything times out.
    h.set_hook(|f| {
        if f.from == Party::Pne(1) && f.message == "AuthenticationResponse" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.register(1, Some(pn));
    h.advance(FLOW * 4);
    assert_eq!(h.snapshot(), before);
    assert!(
        h.store.pns[&pn]
            .members
            .iter()
            .all(|m| m.pne_id != pne_id(1))
    );
    assert!(!h.store.session_keys.contains_key(&(pn, pne_id(1))));
}

/// A PanAuthInit naming PNE `pne` for `pn`, message id `n`.
fn pan_auth_init(pne: usize, pn: cpns_wire::PnId, n: u64) -> Vec<u8> {
    plain(&Envelope::request(
        800 + n,
        Address::Entity(pne_id(pne)),
        Address::Entity(crate::tests::harness::id("gw-1")),
        cpns_wire::PanAuthInit {
            pn_id: pn,
            pne_id: pne_id(pne),
            rand_pne: cpns_wire::RandBytes([n as u8; 16]),
            suites: Vec::new(),
        },
    ))
}

/// The error codes the PN GW answered message `msg` on link `i` with.
fn answered(h: &Harness, i: usize, msg: u64) -> Vec<ErrorCode> {
    h.queue
        .iter()
        .filter(|f| f.from == Party::Gw && f.to == Party::Pne(i))
        .filter_map(|f| f.env())
        .filter(|e| e.in_reply_to == Some(msg))
        .filter_map(|e| e.error().map(|e| e.code))
        .collect()
}

/// The frames the PN GW sent on link `i` after the first `from` of them: (sealed, message).
fn sent_on(h: &Harness, i: usize) -> Vec<(bool, &'static str)> {
    h.queue
        .iter()
        .filter(|f| f.from == Party::Gw && f.to == Party::Pne(i))
        .map(|f| (f.sealed, f.message))
        .collect()
}

#[test]
fn a_link_proving_a_held_id_is_answered_as_any_other_and_may_do_nothing_else() {
    // pne-1 holds its route on link 0; link 1 tries to prove it is pne-1.
    let specs = [PneSpec::trusted(), PneSpec::cpns()];
    let mut h = Harness::new(&specs);
    h.connect_gw();
    let now = h.now();
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let wan_before = h.wan_messages().len();
    // Link 1 has named nobody yet. pne-1 holds no LocalEUKey in this PN (its link is trusted),
    // yet the try is answered with a challenge, as a key holder's would be (a decoy, docs/
    // security.md §4.4): the answer does not tell whether pne-1 holds a key here.
    h.deliver_direct(Party::Pne(1), Party::Gw, &pan_auth_init(0, pn, 1))
        .unwrap();
    assert_eq!(answered(&h, 1, 801), []);
    let challenge = h
        .queue
        .iter()
        .filter(|f| f.from == Party::Gw && f.to == Party::Pne(1))
        .find_map(|f| f.env())
        .expect("a plain answer");
    assert!(
        matches!(challenge.body, cpns_wire::Body::PanAuthChallenge(_)),
        "{challenge:?}"
    );
    // Nothing else in pne-1's name while its route is held elsewhere: a set-up is refused (the
    // answer goes sealed under the decoy, so this link cannot read it) and reaches no server.
    let setup = Envelope::request(
        804,
        Address::Entity(pne_id(0)),
        Address::Entity(crate::tests::harness::id("gw-1")),
        PnSetupRequest {
            request_id: RequestId(4),
            setup: Some(SetupType::OneToOne),
            join: None,
            pn_id: None,
            initiator: None,
        },
    );
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&setup))
        .unwrap();
    assert_eq!(
        sent_on(&h, 1),
        [(false, "PanAuthChallenge"), (true, "ErrorBody")]
    );
    h.queue.retain(|f| f.to != Party::Pne(1));
    h.pump();
    assert_eq!(
        h.wan_messages().len(),
        wan_before,
        "nothing reached the server"
    );
    // Its proof (it holds no key to make one) fails: the PN GW closes link 1, and pne-1 keeps
    // its route on link 0.
    let confirm = plain(&Envelope::notify(
        805,
        Address::Entity(pne_id(0)),
        Address::Entity(crate::tests::harness::id("gw-1")),
        cpns_wire::PanAuthConfirm {
            proof: cpns_wire::HashBytes([7; 32]),
        },
    ));
    h.deliver_direct(Party::Pne(1), Party::Gw, &confirm)
        .unwrap();
    assert!(
        h.closes
            .iter()
            .any(|(p, link, _)| *p == Party::Gw && *link == Some(1)),
        "{:?}",
        h.closes
    );
    let ask = Envelope::request(
        66,
        Address::Server,
        Address::Entity(pne_id(0)),
        cpns_wire::StatusUpdateRequest {},
    );
    h.queue.clear();
    h.deliver_direct(Party::Server, Party::Gw, &plain(&ask))
        .unwrap();
    assert!(h.queue.iter().any(|f| f.to == Party::Pne(0)));
}

#[test]
fn a_closed_link_gives_up_its_route() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    let now = h.now();
    h.gw.link_closed(now, LinkId(0));
    // The server's request for pne-1 has nowhere to go now.
    let ask = Envelope::request(
        66,
        Address::Server,
        Address::Entity(pne_id(0)),
        cpns_wire::StatusUpdateRequest {},
    );
    h.deliver_direct(Party::Server, Party::Gw, &plain(&ask))
        .unwrap();
    let answer = h
        .queue
        .iter()
        .filter(|f| f.to == Party::Server)
        .find_map(|f| f.env())
        .unwrap();
    assert_eq!(answer.error().map(|e| e.code), Some(ErrorCode::NotFound));
    // pne-2's route is untouched.
    let ask2 = Envelope::request(
        67,
        Address::Server,
        Address::Entity(pne_id(1)),
        cpns_wire::StatusUpdateRequest {},
    );
    h.queue.clear();
    h.deliver_direct(Party::Server, Party::Gw, &plain(&ask2))
        .unwrap();
    assert!(h.queue.iter().any(|f| f.to == Party::Pne(1)));
}

#[test]
fn a_link_is_reported_proven_once() {
    // pne-1 on an insecure PAN without a UI: the server's verdict proves it (establishment),
    // and its registration proves it again; the event comes once.
    let mut h = Harness::ready(&[PneSpec::cpns().no_ui()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let proven = |h: &Harness| {
        h.gw_events()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    GatewayEvent::LinkProven {
                        link: LinkId(0),
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(proven(&h), 1);
    h.register(0, Some(pn));
    assert!(h.pnes[0].cpns_id().is_some());
    assert_eq!(proven(&h), 1);
}

#[test]
fn after_set_up_an_unexpected_request_from_the_server_is_refused_and_anything_else_ignored() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let gw = crate::tests::harness::id("gw-1");
    let wrong = Envelope::request(
        77,
        Address::Server,
        Address::Entity(gw.clone()),
        cpns_wire::PanAuthConfirm {
            proof: cpns_wire::HashBytes([0; 32]),
        },
    );
    h.deliver_direct(Party::Server, Party::Gw, &plain(&wrong))
        .unwrap();
    let answers: Vec<Envelope> = h
        .queue
        .iter()
        .filter(|f| f.to == Party::Server)
        .filter_map(|f| f.env())
        .collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].in_reply_to, Some(77));
    assert_eq!(
        answers[0].error().map(|e| e.code),
        Some(ErrorCode::WrongState)
    );
    h.queue.clear();
    let note = Envelope::notify(
        78,
        Address::Server,
        Address::Entity(gw),
        cpns_wire::PanAuthConfirm {
            proof: cpns_wire::HashBytes([0; 32]),
        },
    );
    h.deliver_direct(Party::Server, Party::Gw, &plain(&note))
        .unwrap();
    assert!(h.queue.is_empty(), "a notification is not answered");
    assert!(h.gw.wan_ready());
}

/// Nothing goes to the server in a PNE's name from a link that has not proved that PNE: a link
/// claiming the id of a member that is away asks for the user's statuses and subscribes, and is
/// refused `forbidden` with nothing sent on the WAN; the member itself, proven, is answered.
#[test]
fn a_claimed_id_gets_no_status_and_no_subscription() {
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns().impersonating(1),
    ];
    let mut h = Harness::new(&specs);
    h.connect_gw();
    let now = h.now();
    h.pnes[0].start_discovery(now).unwrap();
    h.pnes[1].start_discovery(now).unwrap();
    h.pump();
    h.setup(0, SetupType::All);
    assert!(h.joined(1).is_some());
    // pne-1 goes away; the attacker claims its free id.
    let now = h.now();
    h.gw.link_closed(now, LinkId(1));
    h.pnes[2].start_discovery(now).unwrap();
    h.pump();
    let wan_before = h.wan_messages().len();
    let now = h.now();
    let query = h.pnes[2].query_status(now, Vec::new());
    let on_change = cpns_wire::StatusPolicy {
        kind: cpns_wire::PolicyKind::OnChange,
        attribute: None,
        crossing: None,
        bound: None,
        period_s: None,
    };
    let subscribe = h.pnes[2].subscribe_status(now, Vec::new(), on_change);
    h.pump();
    for id in [query, subscribe] {
        assert!(
            matches!(&h.completion(2, id).unwrap().result,
                Err(Failure::Refused(e)) if e.code == ErrorCode::Forbidden),
            "{id}"
        );
    }
    assert_eq!(
        h.wan_messages().len(),
        wan_before,
        "nothing reached the server"
    );
    // The initiator, proven on its link, is answered.
    let own = h.pnes[0].query_status(now, Vec::new());
    h.pump();
    assert!(h.completion(0, own).unwrap().result.is_ok());
}

/// A PNE held by a link that proved it is not answered to another link naming it: the proven
/// device keeps its id, and the claimant learns nothing (not even the PNs served).
#[test]
fn an_id_held_by_a_proof_is_refused_to_a_claim() {
    let (mut h, _) = pne_1_and_its_impersonator();
    let now = h.now();
    h.pnes[1].start_discovery(now).unwrap();
    h.pump();
    assert_eq!(errors_to(&h, 1), [ErrorCode::Forbidden]);
    assert!(
        h.delivered(Party::Gw, Party::Pne(1))
            .iter()
            .all(|e| !matches!(e.body, Body::EntityDiscoveryResponse(_)))
    );
}

/// A second device with a proven member's id (a copy of its credential) is refused at
/// discovery, and told so at once: the refusal is addressed to the id it named, although its
/// link names nobody, so its discovery ends refused rather than unanswered at its deadline.
#[test]
fn a_refused_discovery_is_told_to_the_pne_that_asked() {
    let (mut h, _) = pne_1_and_its_impersonator();
    let now = h.now();
    // PNE 1 becomes a second pne-1 (the same configuration), on its own link.
    h.pnes[1] = PneSession::new(
        h.pne_cfgs[0].clone(),
        cpns_crypto::MachineRng::from_seed_u64(9),
    );
    let asked = h.pnes[1].start_discovery(now).unwrap();
    h.pump();
    assert!(matches!(
        &h.completion(1, asked).expect("the refusal ends the discovery").result,
        Err(Failure::Refused(e)) if e.code == ErrorCode::Forbidden
    ));
}

/// Less said to strangers (docs/security.md §4.4): a PanAuthInit naming a member that holds a
/// LocalEUKey in the PN, and one naming a PNE that holds none (not even enrolled), are answered
/// alike, with a challenge of the same size; neither link can tell which is which.
#[test]
fn pan_auth_init_is_answered_alike_whether_or_not_the_pn_gw_holds_a_key() {
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
    ];
    let mut h = Harness::new(&specs);
    h.connect_gw();
    for i in [0, 1] {
        let now = h.now();
        h.pnes[i].start_discovery(now).unwrap();
    }
    h.pump();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert!(h.members(pn).contains(&pne_id(1)));
    // Link 2 names pne-2, a member holding a key; link 3 names pne-9, nobody's.
    h.queue.clear();
    h.deliver_direct(Party::Pne(2), Party::Gw, &pan_auth_init(1, pn, 1))
        .unwrap();
    h.deliver_direct(Party::Pne(3), Party::Gw, &pan_auth_init(8, pn, 2))
        .unwrap();
    let answers: Vec<(usize, &'static str, usize)> = [2, 3]
        .into_iter()
        .flat_map(|i| {
            h.queue
                .iter()
                .filter(move |f| f.from == Party::Gw && f.to == Party::Pne(i))
                .map(move |f| (i, f.message, f.body.len()))
        })
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.iter().all(|(_, m, _)| *m == "PanAuthChallenge"));
    assert_eq!(answers[0].2, answers[1].2, "{answers:?}");
}
