//! What the server checks in the requests a connected PN GW sends (000 §6.6.1.1 step 4,
//! 003 §1.4.2 step 4): sizes, duplicates, PNs of other PN GWs, requests that race their own
//! retries, responses that answer nothing.

use cpns_wire::{
    Address, AuthPurposeCode, AuthenticationResponse, Body, DeviceCapabilities, EntityId, Envelope,
    ErrorCode, GatewayInfo, JoinInfo, NewMember, PnId, PnRegistrationRequest, PnUpdateRequest,
    RandBytes, RequestId,
};

use super::harness::{Harness, Party, id, plain, pne_id};
use super::store::PneSpec;

fn join(pne: EntityId) -> JoinInfo {
    JoinInfo {
        pne_id: pne,
        capabilities: DeviceCapabilities::default(),
        contents: Vec::new(),
        rand_pne: RandBytes([3; 16]),
        local_key: false,
        home_gateway: None,
    }
}

fn registration(pn: PnId, request: u64, pnes: Vec<EntityId>) -> Envelope {
    Envelope::request(
        9000 + request,
        Address::Entity(id("gw-1")),
        Address::Server,
        PnRegistrationRequest {
            request_id: RequestId(request),
            pn_id: pn,
            gateway: GatewayInfo {
                gw_id: id("gw-1"),
                capabilities: DeviceCapabilities::default(),
                subscription: None,
            },
            pnes: pnes.into_iter().map(join).collect(),
            initiator: None,
            lifetime_s: None,
            max_members: None,
        },
    )
}

/// The server's error answer to `msg`, if it sent one (still in flight).
fn refusal(h: &Harness, msg: u64) -> Option<(ErrorCode, String)> {
    h.queue
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(|f| f.env())
        .filter(|e| e.in_reply_to == Some(msg))
        .find_map(|e| e.error().map(|e| (e.code, e.reason.clone())))
}

fn send(h: &mut Harness, env: &Envelope) {
    h.deliver_direct(Party::Gw, Party::Server, &plain(env))
        .unwrap();
}

#[test]
fn a_pn_registration_names_one_to_256_distinct_pnes() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let pn = PnId::from_bytes([1; 16]);
    let empty = registration(pn, 1, vec![]);
    send(&mut h, &empty);
    assert_eq!(
        refusal(&h, empty.msg_id).map(|r| r.0),
        Some(ErrorCode::BadRequest)
    );
    let twice = registration(pn, 2, vec![pne_id(0), pne_id(0)]);
    send(&mut h, &twice);
    assert_eq!(
        refusal(&h, twice.msg_id),
        Some((ErrorCode::BadRequest, "a PNE is named twice".into()))
    );
    let many: Vec<EntityId> = (0..257).map(|i| id(&format!("p{i}"))).collect();
    let too_many = registration(pn, 3, many.clone());
    send(&mut h, &too_many);
    assert_eq!(
        refusal(&h, too_many.msg_id).map(|r| r.0),
        Some(ErrorCode::BadRequest)
    );
    // 256 is allowed: it goes on to the store (nobody enrolled: refused there, not here).
    let most = registration(pn, 4, many[..256].to_vec());
    send(&mut h, &most);
    assert_eq!(
        refusal(&h, most.msg_id).map(|r| r.0),
        Some(ErrorCode::Unauthenticated)
    );
}

#[test]
fn a_pn_of_another_gateway_and_a_racing_registration_are_refused() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    // A PN of another PN GW.
    let theirs = PnId::from_bytes([2; 16]);
    h.store.pn_gateway.insert(theirs, id("gw-2"));
    h.store.pns.insert(
        theirs,
        cpns_wire::PnInventory {
            pn_id: theirs,
            gateway: id("gw-2"),
            members: vec![],
        },
    );
    let steal = registration(theirs, 1, vec![pne_id(0)]);
    send(&mut h, &steal);
    assert_eq!(
        refusal(&h, steal.msg_id),
        Some((
            ErrorCode::Conflict,
            "the PN belongs to another PN GW".into()
        ))
    );
    // A registration in progress: the same request again is left to it, another is refused.
    let pn = PnId::from_bytes([3; 16]);
    let first = registration(pn, 5, vec![pne_id(0)]);
    send(&mut h, &first);
    h.queue.clear();
    let again = registration(pn, 5, vec![pne_id(0)]);
    send(
        &mut h,
        &Envelope {
            msg_id: 9100,
            ..again
        },
    );
    assert_eq!(refusal(&h, 9100), None);
    let other = registration(pn, 6, vec![pne_id(0)]);
    send(&mut h, &other);
    assert_eq!(
        refusal(&h, other.msg_id).map(|r| r.0),
        Some(ErrorCode::Conflict)
    );
    // An Authentication Response that answers nothing the server asked is refused.
    let stray = Envelope::response(
        9200,
        77_777,
        Address::Entity(id("gw-1")),
        Address::Server,
        AuthenticationResponse {
            pn_id: pn,
            hashes: vec![],
            purpose: AuthPurposeCode::Establishment,
            request_id: None,
        },
    );
    let stray = Envelope {
        kind: cpns_wire::MsgKind::Request,
        ..stray
    };
    send(&mut h, &stray);
    assert_eq!(refusal(&h, 9200).map(|r| r.0), Some(ErrorCode::WrongState));
    assert!(
        h.queue
            .iter()
            .filter_map(|f| f.env())
            .all(|e| !matches!(e.body, Body::PnRegistrationResponse(_)))
    );
}

#[test]
fn a_pn_update_adds_at_most_256_pnes() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let pn = PnId::from_bytes([4; 16]);
    let update = |n: usize, request: u64| {
        Envelope::request(
            9300 + request,
            Address::Entity(id("gw-1")),
            Address::Server,
            PnUpdateRequest {
                request_id: RequestId(request),
                pn_id: pn,
                add: (0..n)
                    .map(|i| NewMember {
                        pne_id: id(&format!("p{i}")),
                        capabilities: None,
                    })
                    .collect(),
                remove: vec![],
                asked_by: None,
            },
        )
    };
    let too_many = update(257, 1);
    send(&mut h, &too_many);
    assert_eq!(
        refusal(&h, too_many.msg_id),
        Some((ErrorCode::BadRequest, "too many PNEs".into()))
    );
    // 256 goes on to the store: the PN does not exist there.
    let most = update(256, 2);
    send(&mut h, &most);
    assert_eq!(
        refusal(&h, most.msg_id).map(|r| r.0),
        Some(ErrorCode::NotFound)
    );
}

fn pn_update(pn: PnId, request: u64, add: Vec<EntityId>, remove: Vec<EntityId>) -> Envelope {
    Envelope::request(
        9400 + request,
        Address::Entity(id("gw-1")),
        Address::Server,
        PnUpdateRequest {
            request_id: RequestId(request),
            pn_id: pn,
            add: add
                .into_iter()
                .map(|pne_id| NewMember {
                    pne_id,
                    capabilities: None,
                })
                .collect(),
            remove,
            asked_by: None,
        },
    )
}

fn pne_registration(pn: PnId, pne: EntityId, request: u64) -> Envelope {
    Envelope::request(
        9500 + request,
        Address::Entity(pne.clone()),
        Address::Server,
        cpns_wire::PneRegistrationRequest {
            request_id: RequestId(request),
            pne_id: pne,
            pn_id: Some(pn),
            rand_pne: RandBytes([5; 16]),
            capabilities: None,
            local_key: false,
        },
    )
}

/// The server's challenge to a registration, if it sent one.
fn challenged(h: &Harness) -> bool {
    h.queue
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(|f| f.env())
        .any(|e| matches!(e.body, Body::AuthenticationRequest(_)))
}

/// A PN of PNE 0 (pne-1); pne-2 is enrolled, not a member.
fn with_pn() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, cpns_wire::SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    h.queue.clear();
    (h, pn)
}

#[test]
fn a_non_member_registers_only_while_a_pn_update_holds_it_pending() {
    // Not proposed by a PN update: refused, not challenged.
    let (mut h, pn) = with_pn();
    let req = pne_registration(pn, pne_id(1), 1);
    send(&mut h, &req);
    assert_eq!(
        refusal(&h, req.msg_id).map(|r| r.0),
        Some(ErrorCode::Forbidden)
    );
    assert!(!challenged(&h));
    // Proposed: pending for the flow timeout, and challenged while pending.
    let (mut h, pn) = with_pn();
    send(&mut h, &pn_update(pn, 2, vec![pne_id(1)], vec![]));
    h.queue.clear();
    h.advance(super::harness::FLOW - std::time::Duration::from_millis(1));
    h.queue.clear();
    send(&mut h, &pne_registration(pn, pne_id(1), 3));
    assert!(challenged(&h), "still pending just before the deadline");
    // Proposed, but the deadline passed: no longer pending.
    let (mut h, pn) = with_pn();
    send(&mut h, &pn_update(pn, 4, vec![pne_id(1)], vec![]));
    h.queue.clear();
    h.advance(super::harness::FLOW);
    h.queue.clear();
    let late = pne_registration(pn, pne_id(1), 5);
    send(&mut h, &late);
    assert_eq!(
        refusal(&h, late.msg_id).map(|r| r.0),
        Some(ErrorCode::Forbidden)
    );
    // Added and removed in one update: not pending either.
    let (mut h, pn) = with_pn();
    send(&mut h, &pn_update(pn, 6, vec![pne_id(1)], vec![pne_id(1)]));
    h.queue.clear();
    let gone = pne_registration(pn, pne_id(1), 7);
    send(&mut h, &gone);
    assert_eq!(
        refusal(&h, gone.msg_id).map(|r| r.0),
        Some(ErrorCode::Forbidden)
    );
}

#[test]
fn a_pn_update_adds_only_the_gateway_users_pnes_and_removes_for_real() {
    let (mut h, pn) = with_pn();
    // A PNE of another user.
    let bobs = id("bob-phone");
    h.store.entities.insert(
        bobs.clone(),
        crate::server::KnownEntity {
            id: bobs.clone(),
            role: crate::server::EntityRole::Pne,
            owner: cpns_wire::UserId::new("bob").unwrap(),
            eukey: cpns_crypto::EuKey::from_bytes([7; 32]),
        },
    );
    let foreign = pn_update(pn, 8, vec![bobs], vec![]);
    send(&mut h, &foreign);
    assert_eq!(
        refusal(&h, foreign.msg_id).map(|r| r.0),
        Some(ErrorCode::Forbidden)
    );
    // Removing pne-1, its only member: the answer's inventory no longer lists it, and the PN,
    // with no member left, is released with it (docs/pn-lifecycle.md, "A PN without members").
    let removal = pn_update(pn, 9, vec![], vec![pne_id(0)]);
    send(&mut h, &removal);
    let answer = h
        .queue
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(|f| f.env())
        .find_map(|e| match e.body {
            Body::PnUpdateResponse(r) if e.in_reply_to == Some(removal.msg_id) => Some(r),
            _ => None,
        })
        .expect("answered");
    assert!(answer.inventory.members.is_empty());
    assert!(!h.store.pns.contains_key(&pn), "released");
    assert!(h.server_events().iter().any(|e| matches!(
        e,
        crate::server::ServerEvent::PnReleased { pn_id, .. } if *pn_id == pn
    )));
}

#[test]
fn a_registration_the_pne_never_answers_ends_at_its_deadline() {
    let (mut h, pn) = with_pn();
    send(&mut h, &pne_registration(pn, pne_id(0), 10));
    assert!(challenged(&h));
    h.queue.clear();
    let ended = |h: &Harness| {
        h.server_events().iter().any(|e| {
            matches!(
                e,
                crate::server::ServerEvent::FlowFailed {
                    flow: crate::Flow::PneRegistration,
                    reason: crate::Failure::TimedOut
                }
            )
        })
    };
    h.advance(super::harness::FLOW - std::time::Duration::from_millis(1));
    assert!(!ended(&h));
    h.advance(std::time::Duration::from_millis(1));
    assert!(ended(&h));
    assert_eq!(h.server.flows_in_progress(), 0);
}
