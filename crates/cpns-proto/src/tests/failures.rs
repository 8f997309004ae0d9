//! The failure rules of PN establishment (000 §6.6.1): the PN is registered when at least one
//! PNE authenticates; a PNE that declines, stays silent or fails is left out; a PNE that cannot
//! verify hash_server does not store the PN; every wait ends at its deadline; store faults end
//! the flow with an error instead of a half-made PN.

use std::time::Duration;

use cpns_wire::{Body, ContentItem, ErrorCode, InventoryMember, PnInventory, SetupType};

use super::harness::{Action, FLOW, Flight, Harness, INVITE, Party, id, pne_id, rewrite};
use super::store::PneSpec;
use crate::gateway::{EstablishTargets, GatewayEvent};
use crate::pne::PneEvent;
use crate::server::ServerEvent;
use crate::{Failure, Flow};

fn established(h: &Harness) -> bool {
    h.gw_events()
        .iter()
        .any(|e| matches!(e, GatewayEvent::PnEstablished { .. }))
}

#[test]
fn pn_is_registered_with_the_pnes_that_authenticated() {
    let specs = [PneSpec::trusted(), PneSpec::trusted().wrong_key()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let inv = h.joined(0).unwrap();
    assert_eq!(h.members(inv.pn_id), [pne_id(0)]);
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(1),
                reason: Failure::HashPneMismatch,
            })
    );
    // The failed PNE is told, without the inventory, and stores nothing.
    let notify = h
        .delivered(Party::Gw, Party::Pne(1))
        .into_iter()
        .find_map(|e| match e.body {
            Body::PnEstablishmentNotify(n) => Some(n),
            _ => None,
        });
    let notify = notify.unwrap();
    assert_eq!((notify.inventory, notify.hash_server), (None, None));
    assert!(h.pne_failures(1).iter().any(
        |r| matches!(r, Failure::NotEstablished(Some(w)) if w.contains("did not authenticate"))
    ));
    assert!(h.pnes[1].inventory().is_empty() && h.store.pne_local[1].is_empty());
    assert!(!h.store.session_keys.contains_key(&(inv.pn_id, pne_id(1))));
    h.assert_agree(inv.pn_id);
}

#[test]
fn pne_with_wrong_eukey_on_cpns_pan_cannot_unwrap_and_is_left_out() {
    let specs = [PneSpec::cpns(), PneSpec::cpns().wrong_key()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let inv = h.joined(0).unwrap();
    assert_eq!(h.members(inv.pn_id), [pne_id(0)]);
    assert!(h.pne_failures(1).contains(&Failure::LocalKeyDidNotUnwrap));
    assert!(!h.pnes[1].link_sealed() && h.pnes[1].inventory().is_empty());
    let gw_keys: Vec<_> = h.store.gw_local[&inv.pn_id]
        .wrapped_keys
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(
        gw_keys,
        [pne_id(0)],
        "no LocalEUKey kept for the failed PNE"
    );
    h.assert_agree(inv.pn_id);
}

#[test]
fn no_pn_when_no_pne_authenticates() {
    let specs = [
        PneSpec::trusted().wrong_key(),
        PneSpec::trusted().wrong_key(),
    ];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    assert!(h.store.pns.is_empty() && h.store.gw_local.is_empty());
    assert!(h.gw.inventory().is_empty());
    assert!(h.server_events().contains(&&ServerEvent::FlowFailed {
        flow: Flow::PnEstablishment,
        reason: Failure::NoPneAuthenticated,
    }));
    // The initiator gets an error answer to its PN Setup Request.
    let err = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .find_map(|e| e.error().cloned());
    assert_eq!(err.unwrap().code, ErrorCode::Unauthenticated);
    assert!(h.pne_refused(0, ErrorCode::Unauthenticated));
    assert!(h.pne_failures(1).iter().any(
        |r| matches!(r, Failure::NotEstablished(Some(w)) if w.contains("no PNE authenticated"))
    ));
    assert!(
        h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::EstablishmentFailed { .. }))
    );
    assert!(h.joined(0).is_none() && h.joined(1).is_none());
}

#[test]
fn declining_pne_is_left_out() {
    let specs = [
        PneSpec::trusted(),
        PneSpec::cpns().declining(),
        PneSpec::cpns(),
    ];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let inv = h.joined(0).unwrap();
    assert_eq!(h.members(inv.pn_id), [pne_id(0), pne_id(2)]);
    assert_eq!(
        h.pne_events(1).last(),
        Some(&&PneEvent::InvitationDeclined(inv.pn_id))
    );
    let auth_to_decliner = h
        .pan_traces(1)
        .iter()
        .any(|r| r.message == "AuthenticationRequest");
    assert!(!auth_to_decliner);
    h.assert_agree(inv.pn_id);
}

#[test]
fn gateway_initiated_pn_that_everyone_declines_is_not_registered() {
    let mut h = Harness::ready(&[PneSpec::trusted().declining()]);
    let now = h.now();
    let started =
        h.gw.start_establishment(now, EstablishTargets::All)
            .unwrap();
    h.pump();
    assert!(!h.wan_messages().contains(&"PnRegistrationRequest"));
    assert_eq!(h.gw_failure(started.id), &Failure::NoPneAccepted);
    assert!(h.members_or_none(started.pn_id).is_none());
    assert!(h.store.pns.is_empty());
}

fn flip_hash_server(f: &Flight) -> Action {
    if !matches!(f.message, "PnSetupResponse" | "PnEstablishmentNotify") || f.from != Party::Gw {
        return Action::Deliver;
    }
    Action::Replace(rewrite(&f.body, |env| match &mut env.body {
        Body::PnSetupResponse(r) => r.hash_server.iter_mut().for_each(|h| h.0[0] ^= 1),
        Body::PnEstablishmentNotify(n) => n.hash_server.iter_mut().for_each(|h| h.0[0] ^= 1),
        _ => {}
    }))
}

#[test]
fn pne_that_cannot_verify_hash_server_refuses_the_pn_and_stores_nothing() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.set_hook(flip_hash_server);
    h.setup(0, SetupType::All);
    for i in 0..2 {
        assert!(
            matches!(h.refused_pn(i), Some(Failure::ServerNotAuthenticated)),
            "pne {i}: {:?}",
            h.pne_events(i)
        );
        assert!(h.joined(i).is_none());
        assert!(h.pnes[i].inventory().is_empty() && h.store.pne_local[i].is_empty());
    }
}

/// An edit a relaying PN GW makes to an inventory.
type InventoryEdit = fn(&mut PnInventory);

/// A PN GW that rewrites the inventory it relays to the PNEs (PN Setup Response to the
/// initiator, PN Establishment Notify to the others), leaving hash_server_PNE as it is.
fn alter_inventory(edit: InventoryEdit) -> impl FnMut(&Flight) -> Action {
    move |f| {
        if !matches!(f.message, "PnSetupResponse" | "PnEstablishmentNotify") || f.from != Party::Gw
        {
            return Action::Deliver;
        }
        Action::Replace(rewrite(&f.body, |env| match &mut env.body {
            Body::PnSetupResponse(r) => r.inventory.iter_mut().for_each(edit),
            Body::PnEstablishmentNotify(n) => n.inventory.iter_mut().for_each(edit),
            _ => {}
        }))
    }
}

/// hash_server_PNE covers the inventory the PNE will store (docs/security.md §4.1): whatever a
/// relaying PN GW changes in it, the PNE refuses the PN and stores nothing.
#[test]
fn pne_refuses_an_inventory_altered_by_the_relaying_gateway() {
    let edits: [(&str, InventoryEdit); 5] = [
        ("a member left out", |inv| {
            inv.members.pop();
        }),
        ("a stranger added", |inv| {
            inv.members.push(InventoryMember {
                pne_id: id("pne-9"),
                capabilities: None,
                contents: Vec::new(),
            })
        }),
        ("content made up", |inv| {
            inv.members.iter_mut().for_each(|m| {
                m.contents.push(ContentItem {
                    name: "malware.apk".into(),
                    media_type: "application/vnd.android.package-archive".into(),
                })
            })
        }),
        ("capabilities dropped", |inv| {
            inv.members.iter_mut().for_each(|m| m.capabilities = None)
        }),
        ("another PN GW named", |inv| inv.gateway = id("gw-evil")),
    ];
    for (what, edit) in edits {
        let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
        h.set_hook(alter_inventory(edit));
        h.setup(0, SetupType::All);
        // The server registered the PN and the PN GW stored it; the PNEs saw the altered one.
        assert!(established(&h), "{what}");
        for i in 0..2 {
            assert!(
                matches!(h.refused_pn(i), Some(Failure::ServerNotAuthenticated)),
                "{what}, pne {i}: {:?}",
                h.pne_events(i)
            );
            assert!(h.joined(i).is_none(), "{what}");
            assert!(
                h.pnes[i].inventory().is_empty() && h.store.pne_local[i].is_empty(),
                "{what}"
            );
        }
    }
}

/// A PN GW that changes the CPNS ID in the registration answer it relays: hash_server covers
/// the CPNS ID, so the PNE does not take it.
#[test]
fn pne_refuses_a_cpns_id_altered_by_the_relaying_gateway() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| match f.message {
        "PneRegistrationResponse" if f.from == Party::Gw => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::PneRegistrationResponse(r) = &mut env.body {
                    r.cpns_id = cpns_wire::CpnsId::new("cpns-999999").unwrap();
                }
            }))
        }
        _ => Action::Deliver,
    });
    h.register(0, Some(pn));
    assert!(h.pne_failures(0).contains(&Failure::ServerNotAuthenticated));
    assert_eq!(h.pnes[0].cpns_id(), None);
}

#[test]
fn tampered_verdict_is_refused_on_a_sealed_link_too() {
    let mut h = Harness::ready(&[PneSpec::cpns()]);
    h.set_hook(|f| match f.message {
        "PnRegistrationResponse" => Action::Replace(rewrite(&f.body, |env| {
            if let Body::PnRegistrationResponse(r) = &mut env.body {
                r.verdicts
                    .iter_mut()
                    .for_each(|v| v.hash_server.iter_mut().for_each(|h| h.0[31] ^= 0x80));
            }
        })),
        _ => Action::Deliver,
    });
    h.setup(0, SetupType::OneToOne);
    assert!(h.pnes[0].link_sealed());
    assert!(matches!(
        h.refused_pn(0),
        Some(Failure::ServerNotAuthenticated)
    ));
    assert!(h.pnes[0].inventory().is_empty() && h.store.pne_local[0].is_empty());
}

#[test]
fn silent_invitee_is_left_out_after_the_invite_timeout() {
    let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::cpns()];
    let mut h = Harness::ready(&specs);
    h.set_hook(|f| {
        if f.from == Party::Pne(2) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.setup(0, SetupType::All);
    assert!(h.store.pns.is_empty(), "waiting for the silent invitee");
    h.advance(INVITE - Duration::from_secs(1));
    assert!(h.store.pns.is_empty());
    h.advance(Duration::from_secs(1));
    let inv = h.joined(0).expect("formed without the silent PNE");
    assert_eq!(h.members(inv.pn_id), [pne_id(0), pne_id(1)]);
    // Its answer, arriving late, changes nothing.
    let late = h
        .dropped
        .iter()
        .find(|f| f.message == "PnSetupResponse")
        .unwrap()
        .clone();
    h.clear_hook();
    h.inject(late.from, late.to, late.body);
    h.pump();
    assert!(h.errors.is_empty());
    assert_eq!(h.members(inv.pn_id), [pne_id(0), pne_id(1)]);
    assert!(h.pnes[2].inventory().is_empty());
    h.assert_agree(inv.pn_id);
}

#[test]
fn pne_silent_at_authentication_is_left_out_after_the_timeout() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.set_hook(|f| match (f.from, f.message) {
        (Party::Pne(1), "AuthenticationResponse") => Action::Drop,
        _ => Action::Deliver,
    });
    h.setup(0, SetupType::All);
    assert!(!established(&h));
    h.advance(INVITE);
    let inv = h.joined(0).unwrap();
    assert_eq!(h.members(inv.pn_id), [pne_id(0)]);
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(1),
                reason: Failure::NoHashPne,
            })
    );
}

#[test]
fn silent_server_ends_the_establishment_with_a_timeout() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.set_hook(|f| {
        if f.to == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.setup(0, SetupType::OneToOne);
    h.advance(FLOW - Duration::from_secs(1));
    assert!(h.pne_failures(0).is_empty());
    h.advance(Duration::from_secs(1));
    let err = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .find_map(|e| e.error().cloned());
    assert_eq!(err.unwrap().code, ErrorCode::Timeout);
    assert!(h.pne_refused(0, ErrorCode::Timeout));
    assert!(
        h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::EstablishmentFailed { .. }))
    );
    assert!(h.gw.inventory().is_empty() && h.store.pns.is_empty());
    assert_eq!(h.gw.poll_timeout(), None);
}

#[test]
fn gateway_silent_at_authentication_times_out_at_the_server() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.set_hook(|f| match f.message {
        "AuthenticationRequest" if f.from == Party::Server => Action::Drop,
        _ => Action::Deliver,
    });
    h.setup(0, SetupType::OneToOne);
    assert!(h.server.poll_timeout().is_some());
    h.advance(FLOW);
    assert!(h.server_events().iter().any(|e| matches!(
        e,
        ServerEvent::FlowFailed {
            flow: Flow::PnEstablishment,
            reason: Failure::TimedOut
        }
    )));
    let err = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find_map(|e| e.error().cloned());
    assert_eq!(err.unwrap().code, ErrorCode::Timeout);
    assert!(h.store.pns.is_empty());
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn gateway_store_failure_ends_the_establishment() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.store.fail_gw = true;
    h.setup(0, SetupType::OneToOne);
    assert!(h.pne_refused(0, ErrorCode::Internal));
    assert!(h.gw.inventory().is_empty() && h.store.gw_local.is_empty());
    assert!(h.joined(0).is_none());
    // The server registered the PN, pending: the PN GW never confirms it, so at the deadline
    // the server removes it and the two inventories agree again (no PN outlives the flow).
    let pn = *h.store.pending.first().expect("registered, pending");
    assert!(h.store.pns.contains_key(&pn));
    h.advance(FLOW - Duration::from_millis(1));
    assert!(h.store.pns.contains_key(&pn), "not before the deadline");
    h.advance(Duration::from_millis(1));
    assert!(h.store.pns.is_empty() && h.store.pending.is_empty());
    assert!(h.store.session_keys.is_empty());
    assert!(h.server_events().iter().any(|e| matches!(
        e,
        ServerEvent::FlowFailed {
            flow: Flow::PnRegistration,
            reason: Failure::NotConfirmed
        }
    )));
}

#[test]
fn a_confirmed_pn_outlives_the_confirmation_deadline() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    assert!(
        h.server_events()
            .contains(&&ServerEvent::InventoryReconciled {
                confirmed: vec![pn],
                removed: vec![],
            })
    );
    h.advance(FLOW * 2);
    h.assert_agree(pn);
}

#[test]
fn on_reconnect_the_server_follows_the_gateway_pn_list() {
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::OneToOne);
    let kept = h.joined(0).unwrap().pn_id;
    h.setup(1, SetupType::OneToOne);
    let lost = h.joined(1).unwrap().pn_id;
    // The PN GW loses one PN from its store while it is down (a restore from an old backup).
    h.store.gw_local.remove(&lost);
    h.restart_from_stores(&specs);
    // Step 16-17 of the new session: the PN list decides which PNs of this PN GW exist.
    assert!(
        h.server_events()
            .contains(&&ServerEvent::InventoryReconciled {
                confirmed: vec![],
                removed: vec![lost],
            })
    );
    assert!(!h.store.pns.contains_key(&lost));
    h.assert_agree(kept);
}

#[test]
fn pne_store_failure_forgets_the_pn() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.store.fail_pne = true;
    h.setup(0, SetupType::OneToOne);
    assert!(
        h.pne_failures(0)
            .iter()
            .any(|r| matches!(r, Failure::Store(_)))
    );
    assert!(h.pnes[0].inventory().is_empty() && h.joined(0).is_none());
}

/// docs/design.md §3: a retried PN Registration Request (same request id) after the server restarted
/// gets the kept answer from the store, and nothing is registered twice.
#[test]
fn a_retry_after_a_restart_gets_the_kept_answer() {
    let specs = [PneSpec::trusted()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let request = h
        .log
        .iter()
        .find(|f| f.message == "PnRegistrationRequest")
        .unwrap()
        .body
        .clone();
    let answer = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find_map(|e| match e.body {
            Body::PnRegistrationResponse(r) => Some(r),
            _ => None,
        })
        .unwrap();
    h.restart_from_stores(&specs);
    let registered = h.store.effects["register_pn"];
    let before = h.snapshot();
    let logged = h.log.len();
    h.inject(Party::Gw, Party::Server, request);
    h.pump();
    // The answer to the retry, among what the server sent after the restart.
    let again = h.log[logged..]
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(super::harness::Flight::env)
        .find_map(|e| match e.body {
            Body::PnRegistrationResponse(r) => Some(r),
            _ => None,
        })
        .expect("the retry was answered");
    assert_eq!(again, answer, "the same answer, hashes included");
    assert_eq!(
        h.store.effects["register_pn"], registered,
        "not registered twice"
    );
    assert_eq!(h.snapshot(), before);
    h.assert_agree(pn);
}

/// Within a session, a retried request is answered from the session's memory: no store load.
#[test]
fn a_retry_in_the_same_session_is_answered_from_memory() {
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::OneToOne);
    h.setup(1, SetupType::OneToOne);
    let requests: Vec<Vec<u8>> = h
        .log
        .iter()
        .filter(|f| f.message == "PnRegistrationRequest")
        .map(|f| f.body.clone())
        .collect();
    assert_eq!(requests.len(), 2);
    let loads = h.store.loads.get();
    // The older of the two kept answers too, not only the last.
    for request in requests {
        let logged = h.log.len();
        h.inject(Party::Gw, Party::Server, request);
        h.pump();
        assert!(
            h.log[logged..]
                .iter()
                .any(|f| f.from == Party::Server && f.message == "PnRegistrationResponse")
        );
    }
    assert_eq!(h.store.loads.get(), loads, "answered without the store");
}

/// A PNE answering the server's registration challenge with an error ends the registration.
#[test]
fn a_pne_refusing_the_registration_challenge_ends_the_registration() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| {
        if f.from == Party::Pne(0) && f.message == "AuthenticationResponse" {
            Action::Replace(rewrite(&f.body, |env| {
                env.body = cpns_wire::ErrorBody::new(ErrorCode::Declined, "not now").into();
            }))
        } else {
            Action::Deliver
        }
    });
    h.register(0, Some(pn));
    assert!(h.server_events().iter().any(|e| matches!(
        e,
        ServerEvent::FlowFailed {
            flow: Flow::PneRegistration,
            reason: Failure::Refused(err)
        } if err.code == ErrorCode::Declined
    )));
    assert_eq!(h.server.flows_in_progress(), 0);
    assert!(h.pnes[0].cpns_id().is_none());
}

/// An invited PNE that leaves before answering is left out at once: the PN is registered
/// without waiting for the invitation's deadline.
#[test]
fn an_invitee_that_leaves_is_left_out_at_once() {
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::ready(&specs);
    // PNE 1 never answers its invitation, then its link closes.
    h.set_hook(|f| {
        if f.from == Party::Pne(1) && f.message == "PnSetupResponse" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.setup(0, SetupType::All);
    assert!(!h.wan_messages().contains(&"PnRegistrationRequest"));
    let now = h.now();
    h.gw.link_closed(now, crate::gateway::LinkId(1));
    h.pump();
    assert!(h.wan_messages().contains(&"PnRegistrationRequest"));
    let inv = h.joined(0).expect("established without the PNE that left");
    assert_eq!(h.members(inv.pn_id), [pne_id(0)]);
}

/// An invitation answer counts as acceptance only when it accepts and its join information is
/// the answering PNE's own.
#[test]
fn only_a_real_acceptance_joins_the_pn() {
    for tamper in [
        "decline with join information",
        "join information of another PNE",
    ] {
        let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()];
        let mut h = Harness::ready(&specs);
        h.set_hook(move |f| {
            if f.from == Party::Pne(1) && f.message == "PnSetupResponse" {
                Action::Replace(rewrite(&f.body, |env| {
                    if let Body::PnSetupResponse(r) = &mut env.body {
                        if tamper.starts_with("decline") {
                            r.accept = false;
                        } else if let Some(j) = &mut r.join {
                            j.pne_id = pne_id(2);
                        }
                    }
                }))
            } else {
                Action::Deliver
            }
        });
        h.setup(0, SetupType::Invite(vec![pne_id(1)]));
        let inv = h.joined(0).expect("established");
        assert_eq!(h.members(inv.pn_id), [pne_id(0)], "{tamper}");
    }
}

/// The PN GW waits for the PNEs' Authentication Responses for the invite timeout exactly, then
/// relays what it has.
#[test]
fn the_gateway_waits_for_authentication_responses_until_its_deadline() {
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::ready(&specs);
    h.set_hook(|f| {
        if f.from == Party::Pne(1) && f.message == "AuthenticationResponse" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.setup(0, SetupType::All);
    let relayed = |h: &Harness| {
        h.log.iter().any(|f| {
            f.from == Party::Gw && f.to == Party::Server && f.message == "AuthenticationResponse"
        })
    };
    assert!(!relayed(&h));
    h.advance(INVITE - Duration::from_millis(1));
    assert!(!relayed(&h));
    h.advance(Duration::from_millis(1));
    assert!(relayed(&h));
    let inv = h.joined(0).expect("established with the PNE that answered");
    assert_eq!(h.members(inv.pn_id), [pne_id(0)]);
}

/// After relaying the hashes, the PN GW waits for the PN Registration Response for the flow
/// timeout exactly.
#[test]
fn the_gateway_waits_for_the_registration_response_until_its_deadline() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.set_hook(|f| {
        if f.message == "PnRegistrationResponse" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.setup(0, SetupType::OneToOne);
    let failed = |h: &Harness| {
        h.gw_events().iter().any(|e| {
            matches!(
                e,
                GatewayEvent::EstablishmentFailed {
                    reason: Failure::TimedOut,
                    ..
                }
            )
        })
    };
    h.advance(FLOW - Duration::from_millis(1));
    assert!(!failed(&h));
    h.advance(Duration::from_millis(1));
    assert!(failed(&h));
}

/// Only a PNE the server authenticated is proven on its link by the verdict.
#[test]
fn the_verdict_proves_only_the_authenticated_links() {
    let specs = [PneSpec::cpns().no_ui(), PneSpec::cpns().no_ui().wrong_key()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let proven: Vec<crate::gateway::LinkId> = h
        .gw_events()
        .iter()
        .filter_map(|e| match e {
            GatewayEvent::LinkProven { link, .. } => Some(*link),
            _ => None,
        })
        .collect();
    assert_eq!(proven, [crate::gateway::LinkId(0)]);
}

/// An error a PNE sends answering something else does not take it out of the PN being formed,
/// not even one naming the id of another invitee's invitation.
#[test]
fn an_unrelated_error_from_an_invitee_changes_nothing() {
    let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::ready(&specs);
    // Both invitees' answers are held back, so both invitations are awaited.
    h.set_hook(|f| {
        if f.message == "PnSetupResponse" && f.to == Party::Gw {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[0].start_setup(now, SetupType::All).unwrap();
    h.pump();
    let held: Vec<Flight> = h.dropped.drain(..).collect();
    assert_eq!(held.len(), 2, "both invitees answered");
    h.clear_hook();
    let invitation_of_2 = h
        .delivered(Party::Gw, Party::Pne(2))
        .into_iter()
        .find(|e| matches!(e.body, Body::PnSetupRequest(_)))
        .expect("pne-3 invited")
        .msg_id;
    // pne-2 sends errors answering message 12345 (no message of the PN) and pne-3's
    // invitation (a message sent on another link).
    for (n, reply_to) in [(4242, 12345), (4243, invitation_of_2)] {
        let stray = cpns_wire::Envelope::response(
            n,
            reply_to,
            cpns_wire::Address::Entity(pne_id(1)),
            cpns_wire::Address::Entity(super::harness::id("gw-1")),
            cpns_wire::ErrorBody::new(ErrorCode::BadRequest, "unrelated"),
        );
        h.deliver_direct(Party::Pne(1), Party::Gw, &super::harness::plain(&stray))
            .unwrap();
    }
    for f in held {
        h.inject(f.from, f.to, f.body);
    }
    h.pump();
    let inv = h.joined(0).expect("established");
    assert_eq!(h.members(inv.pn_id), [pne_id(0), pne_id(1), pne_id(2)]);
}

/// The server authenticates only enrolled PNEs of the PN GW's own user: another user's PNE, or
/// an enrolled entity that is not a PNE, is left out of the PN (000 §6.6.1.1 step 8).
#[test]
fn only_the_gateway_users_own_pnes_are_taken_into_a_pn() {
    for strange in ["another user's PNE", "a PN GW"] {
        let specs = [PneSpec::trusted(), PneSpec::trusted()];
        let mut h = Harness::ready(&specs);
        let record = h.store.entities.get_mut(&pne_id(1)).unwrap();
        match strange {
            "a PN GW" => record.role = crate::server::EntityRole::Gateway,
            _ => record.owner = cpns_wire::UserId::new("mallory").unwrap(),
        }
        h.setup(0, SetupType::All);
        let inv = h.joined(0).expect("established");
        assert_eq!(h.members(inv.pn_id), [pne_id(0)], "{strange}");
        assert!(h.pnes[1].inventory().is_empty(), "{strange}");
        // The PNE that asked is recorded as the initiator, and only it.
        assert_eq!(h.store.initiators[&inv.pn_id], [pne_id(0)], "{strange}");
    }
}
