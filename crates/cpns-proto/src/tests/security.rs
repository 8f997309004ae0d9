//! Negative security tests of the WAN-side keys and hashes (docs/design.md §4): the PN GW's EUKey and
//! its binding to the TLS session, hash_PNE (tampered, replayed), both wrapped LocalEUKey
//! copies, and PNE registration. Each asserts the rejection and that no inventory changed.

use cpns_crypto::{EuKey, MachineRng};
use cpns_wire::{Body, ErrorCode, SetupType};

use super::harness::{Action, Harness, Party, id, pne_id, rewrite};
use super::store::PneSpec;
use crate::Failure;
use crate::gateway::GatewayEvent;
use crate::server::ServerEvent;

/// The server refused the PN GW: event, error answer, closed session, nothing stored.
fn assert_gateway_refused(h: &Harness) {
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: id("gw-1"),
                reason: Failure::GatewayResponseMismatch,
            })
    );
    let err = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find_map(|e| e.error().cloned());
    assert_eq!(err.unwrap().code, ErrorCode::Unauthenticated);
    assert!(
        h.closes
            .iter()
            .any(|(p, l, _)| *p == Party::Server && l.is_none())
    );
    assert_eq!(h.server.gateway(), None);
    assert!(!h.gw.wan_ready());
    assert!(
        h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::WanFailed(_)))
    );
    assert!(!h.wan_messages().contains(&"DeviceCapabilitiesUpdate"));
    assert!(h.store.reports.is_empty());
}

#[test]
fn wrong_gateway_eukey_is_refused() {
    let mut h = Harness::new(&[PneSpec::trusted()]);
    let gw = id("gw-1");
    h.store.entities.get_mut(&gw).unwrap().eukey =
        EuKey::random(MachineRng::from_seed_u64(99).get());
    let before = h.snapshot();
    let now = h.now();
    h.gw.wan_connected(now, super::harness::EXPORTER).unwrap();
    h.pump();
    assert_gateway_refused(&h);
    // Without a WAN session the PN GW builds no PN.
    h.discover_all();
    h.setup(0, SetupType::OneToOne);
    let err = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .find_map(|e| e.error().cloned());
    assert_eq!(err.unwrap().code, ErrorCode::Busy);
    assert_eq!(h.snapshot(), before);
}

#[test]
fn gateway_auth_response_from_another_tls_session_fails() {
    let mut h = Harness::new(&[]);
    let before = h.snapshot();
    let now = h.now();
    // The PN GW's proof is bound to its own TLS session, not the server's.
    h.gw.wan_connected(now, [0x24; 32]).unwrap();
    h.pump();
    assert_gateway_refused(&h);
    assert_eq!(h.snapshot(), before);
}

#[test]
fn tampered_hash_pne_is_rejected() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let before = h.snapshot();
    h.set_hook(|f| match f.message {
        "AuthenticationResponse" if f.to == Party::Server => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::AuthenticationResponse(r) = &mut env.body {
                    r.hashes.iter_mut().for_each(|h| h.hash.0[7] ^= 0x10);
                }
            }))
        }
        _ => Action::Deliver,
    });
    h.setup(0, SetupType::OneToOne);
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(0),
                reason: Failure::HashPneMismatch,
            })
    );
    assert!(h.pne_refused(0, ErrorCode::Unauthenticated));
    assert_eq!(h.snapshot(), before);
}

#[test]
fn replayed_authentication_response_is_rejected() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let first = h.joined(0).unwrap().pn_id;
    let old = h
        .log
        .iter()
        .find(|f| f.to == Party::Server && f.message == "AuthenticationResponse")
        .unwrap()
        .clone();
    // A second establishment; its real Authentication Response is held back.
    h.set_hook(|f| match f.message {
        "AuthenticationResponse" if f.to == Party::Server => Action::Drop,
        _ => Action::Deliver,
    });
    h.setup(0, SetupType::OneToOne);
    let before = h.snapshot();
    let held = h.dropped.last().unwrap().env().unwrap();
    let Body::AuthenticationResponse(fresh) = &held.body else {
        panic!("held back {held:?}")
    };
    assert_ne!(fresh.pn_id, first);
    // As captured: it answers no pending request and is dropped.
    h.deliver_direct(Party::Gw, Party::Server, &old.body)
        .unwrap();
    h.pump();
    assert_eq!(h.snapshot(), before);
    // Re-addressed to the new request: the old hash_PNE does not cover the new rand_server.
    let replay = rewrite(&old.body, |env| {
        env.in_reply_to = held.in_reply_to;
        if let Body::AuthenticationResponse(r) = &mut env.body {
            r.pn_id = fresh.pn_id;
        }
    });
    h.deliver_direct(Party::Gw, Party::Server, &replay).unwrap();
    h.pump();
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(0),
                reason: Failure::HashPneMismatch,
            })
    );
    let registered = h
        .server_events()
        .iter()
        .filter(|e| matches!(e, ServerEvent::PnRegistered { .. }))
        .count();
    assert_eq!(registered, 1, "only the first PN");
    assert!(h.pne_refused(0, ErrorCode::Unauthenticated));
    assert_eq!(h.snapshot(), before);
}

fn flip_wrapped(for_gw: bool) -> impl FnMut(&super::harness::Flight) -> Action {
    move |f| match f.message {
        "AuthenticationRequest" if f.from == Party::Server => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::AuthenticationRequest(a) = &mut env.body {
                    for w in &mut a.local_keys {
                        let copy = if for_gw {
                            &mut w.for_gw
                        } else {
                            &mut w.for_pne
                        };
                        if let Some(b) = copy.last_mut() {
                            *b ^= 1;
                        }
                    }
                }
            }))
        }
        _ => Action::Deliver,
    }
}

#[test]
fn tampered_local_eukey_copy_for_the_pne_is_abandoned_by_the_pne() {
    let mut h = Harness::ready(&[PneSpec::cpns()]);
    let before = h.snapshot();
    h.set_hook(flip_wrapped(false));
    h.setup(0, SetupType::OneToOne);
    assert!(h.pne_failures(0).contains(&Failure::LocalKeyDidNotUnwrap));
    assert!(!h.pnes[0].link_sealed());
    assert!(!h.pan_traces(0).iter().any(|r| r.message == "PanAuthInit"));
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(0),
                reason: Failure::NoHashPne,
            })
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn tampered_local_eukey_copy_for_the_gateway_fails_the_establishment() {
    let mut h = Harness::ready(&[PneSpec::cpns()]);
    let before = h.snapshot();
    h.set_hook(flip_wrapped(true));
    h.setup(0, SetupType::OneToOne);
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::EstablishmentFailed {
            reason: Failure::LocalKeyDidNotUnwrap,
            ..
        }
    )));
    // The PN GW refused the server's request; the server ends the flow.
    let err = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .find_map(|e| e.error().cloned());
    assert_eq!(err.unwrap().code, ErrorCode::Unauthenticated);
    assert!(
        h.server_events()
            .iter()
            .any(|e| matches!(e, ServerEvent::FlowFailed { .. }))
    );
    assert!(h.pne_refused(0, ErrorCode::Unauthenticated));
    assert!(
        !h.pan_traces(0)
            .iter()
            .any(|r| r.message == "AuthenticationRequest")
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn registration_with_a_wrong_eukey_gets_no_cpns_id() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted().wrong_key()]);
    h.setup(0, SetupType::OneToOne);
    let now = h.now();
    h.pnes[1].start_registration(now, None).unwrap();
    h.pump();
    assert!(
        h.server_events()
            .contains(&&ServerEvent::AuthenticationFailed {
                entity: pne_id(1),
                reason: Failure::HashPneMismatch,
            })
    );
    assert!(h.pne_refused(1, ErrorCode::Unauthenticated));
    assert!(h.store.cpns_ids.is_empty() && h.pnes[1].cpns_id().is_none());
}

#[test]
fn registration_answer_with_a_tampered_hash_server_is_not_believed() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| match f.message {
        "PneRegistrationResponse" if f.from == Party::Server => {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::PneRegistrationResponse(r) = &mut env.body {
                    r.hash_server.0[0] ^= 1;
                }
            }))
        }
        _ => Action::Deliver,
    });
    let now = h.now();
    h.pnes[0].start_registration(now, Some(pn)).unwrap();
    h.pump();
    assert!(h.pne_failures(0).contains(&Failure::ServerNotAuthenticated));
    assert_eq!(h.pnes[0].cpns_id(), None);
}
