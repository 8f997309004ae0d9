//! Every member's PAN link is sealed (docs/security.md §4.2, §4.4): a PNE that joins by
//! registration, with or without a UI, gets a LocalEUKey in the server's challenge and proves
//! itself with it before it answers; frames injected in its name are refused; the PN GW
//! relays nothing in a PNE's name, and tells it nothing, from a link that has not proved it;
//! a member that was away when its membership ended keeps a way to prove itself and hear it.

use cpns_wire::{
    Address, AuthPurposeCode, AuthenticationResponse, Body, CapabilitiesQuery, DeviceCapabilities,
    Envelope, ErrorCode, PnId, SetupType, StatusEntry, StatusReport,
};

use super::harness::{Action, Harness, Party, plain, pne_id, rewrite};
use super::store::PneSpec;
use crate::{Failure, ProtoError};

/// Three members over `cpns` links, and PNE 3, without a UI, which declined the PN at first.
fn with_a_declined_pne() -> (Harness, PnId) {
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns().no_ui().declining(),
    ];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.members(pn).len(), 3);
    (h, pn)
}

fn error_to(h: &Harness, i: usize, reply_to: u64) -> Option<ErrorCode> {
    h.delivered(Party::Gw, Party::Pne(i))
        .into_iter()
        .find(|e| e.in_reply_to == Some(reply_to))
        .and_then(|e| e.error().map(|e| e.code))
}

/// A joiner without a UI asks for a LocalEUKey, proves itself with the one the challenge
/// brought and answers sealed; both ends keep the key; a frame injected plain in its name on
/// its link is refused and reaches nothing.
#[test]
fn a_joiner_without_a_ui_is_sealed_and_frames_injected_in_its_name_are_refused() {
    let (mut h, pn) = with_a_declined_pne();
    h.register(3, Some(pn));
    assert_eq!(h.members(pn).len(), 4);
    h.assert_sealed_member(pn, 3);
    assert!(h.pnes[3].holds_local_key(&pn));
    // The registration asked for the key, and its answer to the challenge was sealed.
    let asked = h
        .delivered(Party::Pne(3), Party::Gw)
        .into_iter()
        .find_map(|e| match e.body {
            Body::PneRegistrationRequest(r) => Some(r.local_key),
            _ => None,
        });
    assert_eq!(asked, Some(true));
    let answered_sealed = h
        .pan_traces(3)
        .iter()
        .filter(|r| r.message == "AuthenticationResponse")
        .all(|r| r.sealed);
    assert!(answered_sealed);
    let before = h.snapshot();
    let to_server = h.wan_messages().len();
    let forged = Envelope::request(
        9_700,
        Address::Entity(pne_id(3)),
        Address::Server,
        StatusReport {
            entries: vec![StatusEntry::new(pne_id(3), cpns_wire::Status::Busy)],
        },
    );
    let r = h.deliver_direct(Party::Pne(3), Party::Gw, &plain(&forged));
    assert_eq!(r, Err(ProtoError::PlainOnSealedLink));
    h.pump();
    assert_eq!(h.wan_messages().len(), to_server);
    assert_eq!(h.snapshot(), before);
}

/// A device on the path that takes the LocalEUKey out of the server's challenge makes the
/// registration fail at the PNE (it asked for one), and the PNE joins nothing.
#[test]
fn a_challenge_without_the_key_asked_for_is_refused() {
    let (mut h, pn) = with_a_declined_pne();
    h.set_hook(|f| match f.env() {
        Some(e) if f.to == Party::Pne(3) && matches!(e.body, Body::AuthenticationRequest(_)) => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::AuthenticationRequest(a) = &mut env.body {
                    a.local_keys.clear();
                }
            }))
        }
        _ => Action::Deliver,
    });
    h.register(3, Some(pn));
    assert!(h.pne_failures(3).contains(&Failure::LocalKeyNotAssigned));
    assert_eq!(h.members(pn).len(), 3);
    assert!(!h.store.effects.contains_key("register_pne"));
    assert!(h.pnes[3].inventory().is_empty());
}

/// A copy of the key altered on the way does not unwrap: the PNE refuses the challenge.
#[test]
fn a_challenge_whose_key_was_altered_is_refused() {
    let (mut h, pn) = with_a_declined_pne();
    h.set_hook(|f| match f.env() {
        Some(e) if f.to == Party::Pne(3) && matches!(e.body, Body::AuthenticationRequest(_)) => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::AuthenticationRequest(a) = &mut env.body {
                    a.local_keys[0].for_pne[20] ^= 1;
                }
            }))
        }
        _ => Action::Deliver,
    });
    h.register(3, Some(pn));
    assert!(h.pne_failures(3).contains(&Failure::LocalKeyDidNotUnwrap));
    assert_eq!(h.members(pn).len(), 3);
    assert!(!h.store.effects.contains_key("register_pne"));
}

/// The PN GW's own copy altered on the WAN does not unwrap: the PN GW answers the server's
/// challenge with an error, and nothing reaches the PNE or changes.
#[test]
fn a_gateway_copy_that_does_not_unwrap_ends_the_registration() {
    let (mut h, pn) = with_a_declined_pne();
    h.set_hook(|f| match f.env() {
        Some(e) if f.to == Party::Gw && matches!(e.body, Body::AuthenticationRequest(_)) => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::AuthenticationRequest(a) = &mut env.body {
                    for w in &mut a.local_keys {
                        w.for_gw[30] ^= 1;
                    }
                }
            }))
        }
        _ => Action::Deliver,
    });
    let before = h.pan_traces(3).len();
    h.register(3, Some(pn));
    let after: Vec<_> = h.pan_traces(3)[before..]
        .iter()
        .map(|r| r.message)
        .collect();
    assert!(!after.contains(&"AuthenticationRequest"), "{after:?}");
    assert!(!h.store.effects.contains_key("register_pne"));
    assert_eq!(h.members(pn).len(), 3);
    assert!(!h.pne_failures(3).is_empty());
}

/// An answer to a relayed server request, from a link that proved nothing (a plain link on an
/// insecure PAN), is dropped and never reaches the server; a request of any kind is refused.
#[test]
fn an_unproven_link_answers_and_asks_nothing_in_a_pnes_name() {
    let mut h = Harness::ready(&[PneSpec::cpns(); 2]);
    let to_server = h.wan_messages().len();
    let answer = Envelope::response(
        9_800,
        4,
        Address::Entity(pne_id(0)),
        Address::Server,
        AuthenticationResponse {
            pn_id: PnId::from_bytes([1; 16]),
            hashes: Vec::new(),
            purpose: AuthPurposeCode::Registration,
            request_id: None,
        },
    );
    h.deliver_direct(Party::Pne(0), Party::Gw, &plain(&answer))
        .unwrap();
    for (msg, body) in [
        (
            9_801,
            Body::GroupKeyRequest(cpns_wire::GroupKeyRequest {
                request_id: cpns_wire::RequestId(1),
                pn_id: PnId::from_bytes([1; 16]),
            }),
        ),
        (
            9_802,
            Body::SecureRequest(cpns_wire::SecureRequest {
                request_id: cpns_wire::RequestId(2),
                pn_id: PnId::from_bytes([1; 16]),
                sealed: vec![0; 40],
            }),
        ),
    ] {
        let env = Envelope::request(msg, Address::Entity(pne_id(0)), Address::Server, body);
        h.deliver_direct(Party::Pne(0), Party::Gw, &plain(&env))
            .unwrap();
    }
    h.pump();
    assert_eq!(h.wan_messages().len(), to_server);
    // The answer is dropped (a response is not answered); the requests are refused.
    assert_eq!(error_to(&h, 0, 9_800), None);
    for msg in [9_801, 9_802] {
        assert_eq!(error_to(&h, 0, msg), Some(ErrorCode::Forbidden), "{msg}");
    }
}

/// What the server sends a PNE reaches only a link that proved it: a request for a PNE whose
/// link proved nothing is answered `not_found` to the server and nothing goes on the link.
#[test]
fn a_server_request_for_an_unproven_link_goes_nowhere() {
    let (mut h, _) = with_a_declined_pne();
    // PNE 3 named itself on its link (discovery) but never proved anything.
    let on_link = h.pan_traces(3).len();
    let query = Envelope::request(
        77_000,
        Address::Server,
        Address::Entity(pne_id(3)),
        CapabilitiesQuery { entity: pne_id(3) },
    );
    h.inject(Party::Server, Party::Gw, plain(&query));
    h.pump();
    assert_eq!(h.pan_traces(3).len(), on_link);
    let answer = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .find(|e| e.in_reply_to == Some(77_000))
        .expect("answered");
    assert_eq!(answer.error().map(|e| e.code), Some(ErrorCode::NotFound));
    // A proven member gets it.
    let query = Envelope::request(
        77_001,
        Address::Server,
        Address::Entity(pne_id(1)),
        CapabilitiesQuery { entity: pne_id(1) },
    );
    h.inject(Party::Server, Party::Gw, plain(&query));
    h.pump();
    assert!(
        h.pan_traces(1)
            .iter()
            .any(|r| r.message == "CapabilitiesQuery" && r.sealed)
    );
}

/// Rewrites, on their way to the PN GW, the join information of PNE `i` (in a PN Setup
/// Request or Response) and its PNE Registration Requests.
fn alter_what_pne_says(
    h: &mut Harness,
    i: usize,
    f: impl Fn(&mut DeviceCapabilities, &mut bool) + Clone + 'static,
) {
    h.set_hook(move |fl| match fl.env() {
        Some(_) if fl.from == Party::Pne(i) && fl.to == Party::Gw => {
            let f = f.clone();
            Action::Replace(rewrite(&fl.body, move |env| match &mut env.body {
                Body::PnSetupRequest(r) => {
                    if let Some(j) = r.join.as_mut() {
                        f(&mut j.capabilities, &mut j.local_key);
                    }
                }
                Body::PnSetupResponse(r) => {
                    if let Some(j) = r.join.as_mut() {
                        f(&mut j.capabilities, &mut j.local_key);
                    }
                }
                Body::PneRegistrationRequest(r) => {
                    let mut caps = r.capabilities.clone().unwrap_or_default();
                    f(&mut caps, &mut r.local_key);
                    r.capabilities = Some(caps);
                }
                _ => {}
            }))
        }
        _ => Action::Deliver,
    });
}

/// What a PNE says before its link is sealed is in its proof (docs/security.md §4.1): join
/// information whose capabilities were changed on the way fails at the server, and the PNE is
/// left out; one whose LocalEUKey request was cleared brings no key, and the PNE, which asked,
/// refuses to go on (the downgrade check).
#[test]
fn an_altered_join_information_fails_the_proof() {
    for clear_key in [false, true] {
        let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::cpns()]);
        alter_what_pne_says(&mut h, 1, move |caps, local_key| {
            if clear_key {
                *local_key = false;
            } else {
                caps.device_type = "forged".into();
            }
        });
        h.setup(0, SetupType::All);
        let pn = h.joined(0).unwrap().pn_id;
        assert_eq!(h.members(pn), [pne_id(0)], "clear_key: {clear_key}");
        assert!(h.pnes[1].inventory().is_empty());
        if clear_key {
            assert!(h.pne_failures(1).contains(&Failure::LocalKeyNotAssigned));
            assert!(!h.pnes[1].link_sealed());
        } else {
            // Its proof reached the server sealed, and did not verify there.
            assert!(h.server_events().iter().any(|e| matches!(
                e,
                crate::server::ServerEvent::AuthenticationFailed { entity, .. } if *entity == pne_id(1)
            )));
        }
    }
}

/// The same for a registration: a request whose capabilities changed on the way fails the
/// proof at the server; the PNE joins nothing and the server stores nothing.
#[test]
fn an_altered_registration_request_fails_the_proof() {
    let (mut h, pn) = with_a_declined_pne();
    alter_what_pne_says(&mut h, 3, |caps, _| caps.device_type = "forged".into());
    h.register(3, Some(pn));
    assert_eq!(h.members(pn).len(), 3);
    assert!(!h.store.effects.contains_key("register_pne"));
    assert!(h.pnes[3].inventory().is_empty());
    assert!(!h.pne_failures(3).is_empty());
}

/// A newer peer's capability key (one this version does not know) is kept whole: it travels in
/// the join information, is stored and handed on as it came, and the PN's inventory hash covers
/// it (wire.md, "Canonical PN inventory"), so the PN verifies at every member; the same key
/// altered on the way to a member makes that member refuse the PN.
#[test]
fn a_newer_peers_capability_key_is_kept_whole_and_covered() {
    for tamper in [false, true] {
        let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
        let now = h.now();
        let mut caps = h.pnes[1].capabilities().clone();
        // Key 60, a text string "v3", as a newer PNE would send it.
        caps.unknown.insert(60, vec![0x62, b'v', b'3']);
        h.pnes[1].set_capabilities(now, caps).unwrap();
        h.pump();
        if tamper {
            // On the way to PNE 0 (the initiator), the newer key's value is changed.
            h.set_hook(|f| match f.env() {
                Some(e) if f.to == Party::Pne(0) && matches!(e.body, Body::PnSetupResponse(_)) => {
                    Action::Replace(rewrite(&f.body, |env| {
                        if let Body::PnSetupResponse(r) = &mut env.body
                            && let Some(inv) = r.inventory.as_mut()
                        {
                            for m in &mut inv.members {
                                if let Some(c) = m.capabilities.as_mut() {
                                    c.unknown.insert(60, vec![0x62, b'v', b'4']);
                                }
                            }
                        }
                    }))
                }
                _ => Action::Deliver,
            });
        }
        h.setup(0, SetupType::All);
        if tamper {
            assert!(h.pnes[0].inventory().is_empty());
            assert!(h.pne_failures(0).contains(&Failure::ServerNotAuthenticated));
            continue;
        }
        let inv = h
            .joined(0)
            .expect("the PN verifies with the newer key in it");
        assert_eq!(h.assert_agree(inv.pn_id), inv);
        let held = inv
            .members
            .iter()
            .find(|m| m.pne_id == pne_id(1))
            .and_then(|m| m.capabilities.as_ref())
            .map(|c| c.unknown.get(&60).cloned());
        assert_eq!(held, Some(Some(vec![0x62, b'v', b'3'])));
        assert_eq!(
            h.store.pns[&inv.pn_id].members[1]
                .capabilities
                .as_ref()
                .and_then(|c| c.unknown.get(&60).cloned()),
            Some(vec![0x62, b'v', b'3'])
        );
    }
}

/// A PNE that holds a LocalEUKey and comes back on a trusted bearer (the bearer is the proof)
/// sends in its name at once, without PN GW authentication.
#[test]
fn on_a_trusted_bearer_a_member_with_a_key_sends_without_a_proof() {
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::cpns()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert!(h.pnes[1].holds_local_key(&pn));
    h.pne_cfgs[1].security = crate::PanSecurity::Trusted;
    h.restart_from_stores(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.discover_all();
    let before = h.pan_traces(1).len();
    let now = h.now();
    let pull = h.pnes[1].request_group_key(now, pn).unwrap();
    h.pump();
    let after: Vec<_> = h.pan_traces(1)[before..]
        .iter()
        .map(|r| r.message)
        .collect();
    assert!(!after.contains(&"PanAuthInit"), "{after:?}");
    assert!(matches!(
        h.completion(1, pull).map(|c| &c.result),
        Some(Ok(crate::pne::Outcome::GroupKey { .. }))
    ));
}

/// A member that holds no LocalEUKey for its PN (it joined over a trusted bearer) and comes
/// back on an insecure PAN asks for one when it registers in the PN: it proves itself with it,
/// and both ends keep exactly that one copy.
#[test]
fn a_member_without_a_key_gets_one_when_it_registers_on_an_insecure_pan() {
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert!(!h.pnes[1].holds_local_key(&pn));
    h.pne_cfgs[1].security = crate::PanSecurity::Cpns;
    h.restart_from_stores(&[PneSpec::cpns(), PneSpec::cpns()]);
    h.discover_all();
    h.register(1, Some(pn));
    assert!(h.pnes[1].holds_local_key(&pn));
    assert!(h.pnes[1].link_sealed());
    // A member already: its new key is stored, nobody is told of a join.
    assert!(
        !h.gw_events()
            .iter()
            .any(|e| matches!(e, crate::gateway::GatewayEvent::MemberJoined { .. }))
    );
    assert_eq!(h.members(pn), [pne_id(0), pne_id(1)]);
    let own = &h.store.pne_local[1][&pn].wrapped_keys;
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0].0, pne_id(1));
    let at_gw: Vec<_> = h.store.gw_local[&pn]
        .wrapped_keys
        .iter()
        .filter(|(p, _)| *p == pne_id(1))
        .collect();
    assert_eq!(at_gw.len(), 1);
    // The other member's copy stays.
    assert!(
        h.store.gw_local[&pn]
            .wrapped_keys
            .iter()
            .any(|(p, _)| *p == pne_id(0))
    );
    // The copy it keeps opens on its next link.
    h.restart_from_stores(&[PneSpec::cpns(), PneSpec::cpns()]);
    h.discover_all();
    let now = h.now();
    h.pnes[1].start_pan_auth(now, pn).unwrap();
    h.pump();
    assert!(h.pnes[1].link_sealed());
}

/// What the server tells a PNE (a notification) reaches no link that has not proved it.
#[test]
fn a_notification_for_an_unproven_link_is_not_delivered() {
    let (mut h, pn) = with_a_declined_pne();
    let on_link = h.pan_traces(3).len();
    let note = Envelope::notify(
        77_100,
        Address::Server,
        Address::Entity(pne_id(3)),
        cpns_wire::PnUpdateNotification {
            inventory: cpns_wire::PnInventory {
                pn_id: pn,
                gateway: h.gw_cfg.id.clone(),
                members: Vec::new(),
            },
            epoch: 9,
            sealed_key: None,
        },
    );
    h.inject(Party::Server, Party::Gw, plain(&note));
    h.pump();
    assert_eq!(h.pan_traces(3).len(), on_link);
    // A proven member gets one.
    let to_member = Envelope {
        to: Address::Entity(pne_id(1)),
        msg_id: 77_101,
        ..note
    };
    h.inject(Party::Server, Party::Gw, plain(&to_member));
    h.pump();
    assert!(
        h.pan_traces(1)
            .iter()
            .any(|r| r.message == "PnUpdateNotification" && r.sealed)
    );
}

/// A member whose link is sealed already (with the key of its first PN) and that joins a second
/// PN asks for that PN's key: a challenge without it is refused, though the link needs no new
/// proof, and the PNE joins nothing (the downgrade check, docs/security.md §4.1).
#[test]
fn a_second_pn_without_its_key_is_refused_on_a_sealed_link() {
    let mut h = Harness::ready(&[PneSpec::cpns(); 3]);
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let a = h.joined(0).unwrap().pn_id;
    h.setup(2, SetupType::OneToOne);
    let b = h.joined(2).unwrap().pn_id;
    assert!(h.pnes[1].link_sealed());
    // Sealed frames cannot be rewritten on the way: the key is taken out where the PN GW
    // gets the challenge, on the WAN (the PN GW's own copy with it).
    h.set_hook(|f| match f.env() {
        Some(e) if f.to == Party::Gw && matches!(e.body, Body::AuthenticationRequest(_)) => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::AuthenticationRequest(a) = &mut env.body {
                    a.local_keys.clear();
                }
            }))
        }
        _ => Action::Deliver,
    });
    let now = h.now();
    h.pnes[1].join_pn(now, b).unwrap();
    h.pump();
    assert!(h.pne_failures(1).contains(&Failure::LocalKeyNotAssigned));
    assert_eq!(h.members(b), [pne_id(2)]);
    assert!(h.pnes[1].inventory().iter().all(|i| i.pn_id == a));
}

/// A join's answer that brings no member list (an older or a sparing server): the PN GW adds
/// the joiner to its own list, once.
#[test]
fn a_join_answer_without_the_member_list_adds_the_joiner_once() {
    let (mut h, pn) = with_a_declined_pne();
    h.set_hook(|f| match f.env() {
        Some(e) if f.to == Party::Gw && matches!(e.body, Body::PneRegistrationResponse(_)) => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::PneRegistrationResponse(r) = &mut env.body {
                    r.inventory = None;
                }
            }))
        }
        _ => Action::Deliver,
    });
    h.register(3, Some(pn));
    let local: Vec<_> = h.store.gw_local[&pn]
        .inventory
        .members
        .iter()
        .map(|m| m.pne_id.clone())
        .collect();
    assert_eq!(local, [pne_id(0), pne_id(1), pne_id(2), pne_id(3)]);
}
