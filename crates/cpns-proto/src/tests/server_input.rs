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
