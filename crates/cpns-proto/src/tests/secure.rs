//! The secure PNE<->server session registration sets up (003 §1.4.1 step 4; docs/security.md
//! §4.8): the PNE keeps SK_PNE and its CPNS ID, calls a server service end to end through the PN
//! GW, and the PN GW relays what it cannot read, alter or redirect.

use cpns_crypto::{E2eDirection, SecureBinding, open_secure_message};
use cpns_wire::{Body, ECHO_SERVICE, ErrorCode, PnId, SetupType};

use super::harness::{Action, Harness, Party, pne_id, rewrite};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};

const SECRET: &[u8] = b"the PN GW must not read this";

/// PNE 0 established a PN and registered in it; PNE 1 is a member that did not register.
fn registered() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    (h, pn)
}

fn answers(h: &Harness, i: usize) -> Vec<Vec<u8>> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::Completed(crate::Completed {
                result: Ok(Outcome::SecureAnswer { service, payload }),
                ..
            }) if service == ECHO_SERVICE => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn registration_keeps_the_session_and_an_echo_goes_end_to_end() {
    let (mut h, pn) = registered();
    // The PNE keeps its CPNS ID and the SK_PNE the server kept for it.
    let kept = h.store.pne_sessions[&0].clone();
    assert_eq!(kept.pn_id, pn);
    assert_eq!(Some(&kept.cpns_id), h.pnes[0].cpns_id());
    assert_eq!(kept.session_key, h.store.session_keys[&(pn, pne_id(0))]);
    let now = h.now();
    let id = h.pnes[0]
        .secure_call(now, ECHO_SERVICE, SECRET.to_vec())
        .unwrap();
    h.pump();
    assert_eq!(answers(&h, 0), [SECRET.to_vec()]);
    // Relayed both ways by the PN GW, which never saw the payload in the clear.
    let relayed: Vec<_> = h
        .log
        .iter()
        .filter(|f| f.message == "SecureRequest" || f.message == "SecureResponse")
        .collect();
    assert_eq!(relayed.len(), 4, "PNE → GW → server → GW → PNE");
    assert!(
        h.log
            .iter()
            .all(|f| !f.body.windows(SECRET.len()).any(|w| w == SECRET))
    );
    // The request as the PN GW forwarded it opens only under SK_PNE, which the PN GW lacks.
    let up = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .find_map(|e| match e.body {
            Body::SecureRequest(r) => Some(r),
            _ => None,
        })
        .unwrap();
    // The call completed by its id, once.
    assert_eq!(
        h.outcome(0, id),
        &Outcome::SecureAnswer {
            service: ECHO_SERVICE.into(),
            payload: SECRET.to_vec()
        }
    );
    let me = pne_id(0);
    let binding = SecureBinding {
        pn_id: pn.as_bytes(),
        pne_id: me.as_str(),
        request_id: up.request_id.0,
    };
    let gw_key = cpns_crypto::SessionKey::from_bytes(*h.gw_cfg.eukey.expose_secret());
    assert!(open_secure_message(&gw_key, E2eDirection::PneToServer, &binding, &up.sealed).is_err());
    assert!(
        open_secure_message(
            &kept.session_key,
            E2eDirection::PneToServer,
            &binding,
            &up.sealed
        )
        .is_ok()
    );
}

#[test]
fn a_restored_session_works_after_a_restart() {
    let (mut h, _pn) = registered();
    let kept = h.store.pne_sessions[&0].clone();
    h.restart_from_stores(&[PneSpec::cpns(), PneSpec::trusted()]);
    assert!(h.pnes[0].secure_session().is_none());
    h.pnes[0].restore_session(kept.clone());
    assert_eq!(h.pnes[0].cpns_id(), Some(&kept.cpns_id));
    let now = h.now();
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    h.pnes[0]
        .secure_call(now, ECHO_SERVICE, b"again".to_vec())
        .unwrap();
    h.pump();
    assert_eq!(answers(&h, 0), [b"again".to_vec()]);
}

/// A PNE neither registered nor a member of a PN of the PN GW on its link has no SK_PNE to
/// call with; a member without registration calls with the SK_PNE of its establishment, which
/// the server keeps as its member's key.
#[test]
fn without_registration_or_membership_there_is_no_session() {
    let (mut h, _pn) = registered();
    let now = h.now();
    assert!(h.pnes[1].secure_call(now, ECHO_SERVICE, vec![1]).is_ok());
    h.pump();
    assert_eq!(answers(&h, 1), [vec![1]]);
    let mut fresh = Harness::ready(&[PneSpec::cpns()]);
    let now = fresh.now();
    assert!(
        fresh.pnes[0]
            .secure_call(now, ECHO_SERVICE, vec![1])
            .is_err()
    );
}

#[test]
fn a_tampering_gateway_gets_unauthenticated_and_learns_nothing() {
    let (mut h, _pn) = registered();
    h.set_hook(|f| {
        if f.from == Party::Gw && f.to == Party::Server && f.message == "SecureRequest" {
            Action::Replace(rewrite(&f.body, |env| {
                if let Body::SecureRequest(r) = &mut env.body {
                    let last = r.sealed.len() - 1;
                    r.sealed[last] ^= 1;
                }
            }))
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[0]
        .secure_call(now, ECHO_SERVICE, SECRET.to_vec())
        .unwrap();
    h.pump();
    assert!(answers(&h, 0).is_empty());
    // The server's answer (the PAN is sealed; the WAN side shows it) and the PNE's verdict.
    let err = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .rev()
        .find_map(|e| e.error().cloned())
        .unwrap();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(
        !err.reason.contains("tag"),
        "says nothing about why: {}",
        err.reason
    );
    assert!(h.pne_refused(0, ErrorCode::Unauthenticated));
}

#[test]
fn a_request_redirected_to_another_pne_does_not_open() {
    // The PN GW relays PNE 0's sealed request as if PNE 1 (registered too) had sent it.
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    h.register(1, Some(pn));
    h.set_hook(|f| {
        if f.from == Party::Gw && f.to == Party::Server && f.message == "SecureRequest" {
            Action::Replace(rewrite(&f.body, |env| {
                env.from = cpns_wire::Address::Entity(pne_id(1));
            }))
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[0]
        .secure_call(now, ECHO_SERVICE, SECRET.to_vec())
        .unwrap();
    h.pump();
    assert!(answers(&h, 0).is_empty() && answers(&h, 1).is_empty());
    let refused = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .rev()
        .find_map(|e| e.error().cloned())
        .unwrap();
    assert_eq!(refused.code, ErrorCode::Unauthenticated);
}

#[test]
fn a_secure_call_the_server_never_answers_times_out_at_its_deadline() {
    let (mut h, _pn) = registered();
    assert!(h.pnes[0].secure_session().is_some());
    h.set_hook(|f| {
        if f.from == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[0]
        .secure_call(now, ECHO_SERVICE, b"x".to_vec())
        .unwrap();
    h.pump();
    assert_eq!(h.pnes[0].poll_timeout(), Some(now + super::harness::FLOW));
    h.advance(super::harness::FLOW - std::time::Duration::from_millis(1));
    let failed = |h: &Harness| {
        h.pne_failed_flows(0).iter().any(|e| {
            matches!(
                e,
                PneEvent::FlowFailed {
                    flow: crate::Flow::SecureCall,
                    reason: crate::Failure::TimedOut
                }
            )
        })
    };
    assert!(!failed(&h));
    h.advance(std::time::Duration::from_millis(1));
    assert!(failed(&h));
    assert_eq!(h.pnes[0].poll_timeout(), None);
}

/// The Secure Requests of one SK_PNE as the PN GW relayed them to the server, in order.
fn secure_requests_up(h: &Harness) -> Vec<cpns_wire::SecureRequest> {
    h.delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::SecureRequest(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// Each call once (docs/security.md §4.8): a PNE numbers its Secure Requests 1, 2, 3 under
/// its SK_PNE and stores the number before the request goes, so the numbering goes on after a
/// restart; a new SK_PNE (a registration) numbers from 1 again.
#[test]
fn secure_requests_are_numbered_and_the_number_survives_a_restart() {
    let (mut h, pn) = registered();
    let numbers: Vec<_> = (0..3).map(|_| echo_number(&mut h)).collect();
    assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
    assert_eq!(
        h.store.pne_local[0][&pn].own.as_ref().unwrap().secure_seq,
        3
    );
    assert_eq!(answers(&h, 0).len(), 3);
    h.restart_from_stores(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.discover_all();
    let now = h.now();
    h.pnes[0].rejoin(now).unwrap();
    h.pump();
    assert_eq!(echo_number(&mut h), Some(4));
    assert_eq!(answers(&h, 0).len(), 4, "answered after the restart");
    // A registration replaces the SK_PNE: the numbering starts again, and so does the
    // server's window.
    h.register(0, Some(pn));
    assert_eq!(echo_number(&mut h), Some(1));
    assert_eq!(answers(&h, 0).len(), 5);
}

/// PNE 0 calls the echo service; the number its request carried up to the server.
fn echo_number(h: &mut Harness) -> Option<u64> {
    let now = h.now();
    h.pnes[0]
        .secure_call(now, ECHO_SERVICE, SECRET.to_vec())
        .unwrap();
    h.pump();
    secure_requests_up(h).last().map(|r| r.request_id.0)
}

/// A relaying PN GW replays a Secure Request it relayed: in the same server session it gets
/// the answer kept for that number again (a retry after a lost answer is answered, once: the
/// service does not run again); after the server restarted, the number is refused `conflict`.
/// Requests that overtook each other are each taken.
#[test]
fn a_replayed_secure_request_is_refused_and_a_retry_is_answered_once() {
    let (mut h, _pn) = registered();
    let now = h.now();
    h.pnes[0]
        .secure_call(now, ECHO_SERVICE, SECRET.to_vec())
        .unwrap();
    h.pump();
    let recorded = h
        .log
        .iter()
        .rev()
        .find(|f| f.to == Party::Server && f.message == "SecureRequest")
        .map(|f| f.body.clone())
        .unwrap();
    let first_answer = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find_map(|e| match e.body {
            Body::SecureResponse(r) => Some(r.sealed),
            _ => None,
        })
        .unwrap();
    // A second call after it: the first's answer is still kept.
    assert_eq!(echo_number(&mut h), Some(2));
    let taken = h.store.effects.get("secure_window").copied();
    assert_eq!(taken, Some(2));
    let answered_before = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .filter(|e| matches!(e.body, Body::SecureResponse(_)))
        .count();
    // The same request again, in the same session: the kept answer, the number not taken
    // twice.
    h.inject(Party::Gw, Party::Server, recorded.clone());
    h.pump();
    let responses: Vec<_> = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::SecureResponse(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(responses.len(), answered_before + 1);
    assert_eq!(
        responses[responses.len() - 1].sealed,
        first_answer,
        "the same answer, kept"
    );
    assert_eq!(h.store.effects.get("secure_window").copied(), taken);
    // After a restart the kept answer is gone, the window is not: refused.
    h.restart_from_stores(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.inject(Party::Gw, Party::Server, recorded);
    h.pump();
    let refusal = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .rev()
        .find_map(|e| e.error().cloned())
        .expect("refused");
    assert_eq!(refusal.code, ErrorCode::Conflict, "{}", refusal.reason);
    assert_eq!(h.store.effects.get("secure_window").copied(), taken);
}

/// An answer is taken only as the answer to the message that asked: the server's own answer
/// to a call, handed over as the answer to another message, completes nothing.
#[test]
fn a_secure_answer_to_another_message_is_not_taken() {
    // On a trusted bearer, so the answer can be handed over plain.
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    let held = std::rc::Rc::new(std::cell::RefCell::new(None));
    let keep = held.clone();
    h.set_hook(move |f| {
        if f.message == "SecureResponse" && f.to == Party::Pne(0) {
            *keep.borrow_mut() = f.env();
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    let id = h.pnes[0]
        .secure_call(now, ECHO_SERVICE, SECRET.to_vec())
        .unwrap();
    h.pump();
    let answer = held.borrow().clone().expect("the answer, held back");
    let elsewhere = cpns_wire::Envelope {
        in_reply_to: answer.in_reply_to.map(|m| m + 1_000),
        ..answer.clone()
    };
    let _ = h.deliver_direct(Party::Gw, Party::Pne(0), &super::harness::plain(&elsewhere));
    h.pump();
    assert!(h.completion(0, id).is_none());
    // The same answer as the answer it is: taken.
    let _ = h.deliver_direct(Party::Gw, Party::Pne(0), &super::harness::plain(&answer));
    h.pump();
    assert!(h.completion(0, id).is_some_and(|c| c.result.is_ok()));
}

/// A number the server could not store as taken is not run: the call is answered `internal`,
/// its number spent, and the next call runs.
#[test]
fn a_number_not_stored_is_not_run() {
    let (mut h, _pn) = registered();
    h.store.fail_server = true;
    let now = h.now();
    let id = h.pnes[0]
        .secure_call(now, ECHO_SERVICE, SECRET.to_vec())
        .unwrap();
    h.pump();
    h.store.fail_server = false;
    match h.completion(0, id).map(|c| &c.result) {
        Some(Err(crate::Failure::Refused(e))) => {
            assert_eq!(e.code, ErrorCode::Internal, "{}", e.reason);
        }
        other => panic!("{other:?}"),
    }
    assert!(answers(&h, 0).is_empty());
    assert_eq!(echo_number(&mut h), Some(2));
    assert_eq!(answers(&h, 0).len(), 1);
}

/// Numbers run per SK_PNE: a PNE whose PN was released calls under its next PN's key from 1
/// again, in the same server session, and is answered under that key (not given the answer
/// kept for number 1 of the PN before, which would not open).
#[test]
fn the_same_number_under_another_pns_key_is_another_request() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let echo = |h: &mut Harness, text: &[u8]| {
        let now = h.now();
        let id = h.pnes[0]
            .secure_call(now, ECHO_SERVICE, text.to_vec())
            .unwrap();
        h.pump();
        h.completion(0, id).map(|c| c.result.clone())
    };
    h.setup(0, SetupType::OneToOne);
    let first = h.joined(0).unwrap().pn_id;
    assert!(matches!(
        echo(&mut h, b"in the first PN"),
        Some(Ok(Outcome::SecureAnswer { ref payload, .. })) if payload == b"in the first PN"
    ));
    let now = h.now();
    let id = h.pnes[0].release_pn(now, first).unwrap();
    h.pump();
    assert!(h.completion(0, id).is_some_and(|c| c.result.is_ok()));
    h.setup(0, SetupType::OneToOne);
    let held: Vec<PnId> = h.pnes[0].inventory().iter().map(|i| i.pn_id).collect();
    let [second] = held[..] else {
        panic!("{held:?}")
    };
    assert_ne!(first, second);
    let numbers: Vec<(PnId, u64)> = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::SecureRequest(r) => Some((r.pn_id, r.request_id.0)),
            _ => None,
        })
        .collect();
    assert_eq!(numbers, [(first, 1)]);
    assert!(matches!(
        echo(&mut h, b"in the second PN"),
        Some(Ok(Outcome::SecureAnswer { ref payload, .. })) if payload == b"in the second PN"
    ));
    let last = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::SecureRequest(r) => Some((r.pn_id, r.request_id.0)),
            _ => None,
        })
        .next_back();
    assert_eq!(
        last,
        Some((second, 1)),
        "number 1 again, under the new PN's key"
    );
}
