//! PN release at the server (000 §6.6.5 steps 1-2): the PN GW asks, the server removes the PN
//! with its members, answers and keeps the answer; a retry gets the same answer and removes
//! nothing more; another PN GW's PN, an unknown PN, a request in a PNE's name and a failing
//! store each end with a clear error and no change.

use cpns_wire::{
    Address, Body, Envelope, ErrorCode, PnId, PnReleaseRequest, PnReleaseResponse, RequestId,
    SetupType,
};

use super::harness::{Action, Harness, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::server::ServerEvent;

fn release(msg: u64, from: Address, request: u64, pn: PnId) -> Envelope {
    Envelope::request(
        msg,
        from,
        Address::Server,
        PnReleaseRequest {
            request_id: RequestId(request),
            pn_id: pn,
            asked_by: None,
        },
    )
}

/// Hands `release(...)` from the PN GW's session to the server.
fn ask(h: &mut Harness, msg: u64, from: Address, request: u64, pn: PnId) {
    h.deliver_direct(
        Party::Gw,
        Party::Server,
        &plain(&release(msg, from, request, pn)),
    )
    .unwrap();
}

fn gw() -> Address {
    Address::Entity(id("gw-1"))
}

/// The server's answer to `msg`, still in flight to the PN GW.
fn answer(h: &Harness, msg: u64) -> Body {
    h.server_answer(msg)
}

fn refused(h: &Harness, msg: u64) -> ErrorCode {
    match answer(h, msg) {
        Body::ErrorBody(e) => e.code,
        other => panic!("not an error: {other:?}"),
    }
}

/// A ready harness where PNE 0 established a PN with PNE 1.
fn with_pn() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    assert!(h.store.pns.contains_key(&pn));
    (h, pn)
}

fn released(h: &Harness) -> usize {
    h.server_events()
        .iter()
        .filter(|e| matches!(e, ServerEvent::PnReleased { .. }))
        .count()
}

#[test]
fn the_pn_gw_releases_its_pn_once_and_a_retry_gets_the_same_answer() {
    let (mut h, pn) = with_pn();
    ask(&mut h, 7_001, gw(), 44, pn);
    assert_eq!(
        answer(&h, 7_001),
        Body::PnReleaseResponse(PnReleaseResponse { pn_id: pn })
    );
    assert!(!h.store.pns.contains_key(&pn));
    assert!(!h.store.session_keys.keys().any(|(p, _)| *p == pn));
    assert_eq!(h.store.effects.get("release"), Some(&1));
    assert_eq!(released(&h), 1);
    let event = h
        .server_events()
        .into_iter()
        .find(|e| matches!(e, ServerEvent::PnReleased { .. }))
        .cloned();
    assert_eq!(
        event,
        Some(ServerEvent::PnReleased {
            pn_id: pn,
            gateway: id("gw-1"),
        })
    );
    // The same request again (a retry after a lost answer): the kept answer, nothing removed.
    ask(&mut h, 7_002, gw(), 44, pn);
    assert_eq!(
        answer(&h, 7_002),
        Body::PnReleaseResponse(PnReleaseResponse { pn_id: pn })
    );
    assert_eq!(h.store.effects.get("release"), Some(&1));
    assert_eq!(released(&h), 1);
    // A new request for the PN now gone: not found.
    ask(&mut h, 7_003, gw(), 45, pn);
    assert_eq!(refused(&h, 7_003), ErrorCode::NotFound);
}

#[test]
fn another_pn_gws_pn_is_not_released() {
    let (mut h, pn) = with_pn();
    h.store.pn_gateway.insert(pn, id("gw-2"));
    ask(&mut h, 7_001, gw(), 1, pn);
    assert_eq!(refused(&h, 7_001), ErrorCode::Forbidden);
    assert!(h.store.pns.contains_key(&pn));
    assert_eq!(h.store.effects.get("release"), None);
    assert_eq!(released(&h), 0);
}

#[test]
fn a_release_in_a_pnes_name_is_refused_before_the_store() {
    let (mut h, pn) = with_pn();
    let loads = h.store.loads.get();
    let from = Address::Entity(pne_id(0));
    ask(&mut h, 7_001, from, 1, pn);
    assert_eq!(refused(&h, 7_001), ErrorCode::Forbidden);
    assert_eq!(h.store.loads.get(), loads, "nothing was loaded");
    assert!(h.store.pns.contains_key(&pn));
}

#[test]
fn an_unknown_pn_is_not_found_and_a_failing_store_is_an_internal_error() {
    let (mut h, pn) = with_pn();
    let other = PnId::from_bytes([0xee; 16]);
    ask(&mut h, 7_001, gw(), 1, other);
    assert_eq!(refused(&h, 7_001), ErrorCode::NotFound);
    h.store.fail_server = true;
    ask(&mut h, 7_002, gw(), 2, pn);
    assert_eq!(refused(&h, 7_002), ErrorCode::Internal);
    h.store.fail_server = false;
    assert!(h.store.pns.contains_key(&pn));
    assert_eq!(released(&h), 0);
    // The failure kept no answer: the same request once the store is back releases the PN.
    ask(&mut h, 7_003, gw(), 2, pn);
    assert_eq!(
        answer(&h, 7_003),
        Body::PnReleaseResponse(PnReleaseResponse { pn_id: pn })
    );
    assert!(!h.store.pns.contains_key(&pn));
}

#[test]
fn a_pn_being_established_is_not_released() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    // The PNEs' authentication responses are lost: the establishment stays in progress.
    h.set_hook(|f| match (f.from, f.message) {
        (Party::Gw, "AuthenticationResponse") => Action::Drop,
        _ => Action::Deliver,
    });
    h.setup(0, SetupType::OneToOne);
    let pn = h
        .log
        .iter()
        .filter(|f| f.message == "PnRegistrationRequest")
        .find_map(|f| match f.env()?.body {
            Body::PnRegistrationRequest(r) => Some(r.pn_id),
            _ => None,
        })
        .expect("the PN GW asked to register a PN");
    ask(&mut h, 7_001, gw(), 1, pn);
    assert_eq!(refused(&h, 7_001), ErrorCode::Conflict);
    assert_eq!(h.store.effects.get("release"), None);
}
