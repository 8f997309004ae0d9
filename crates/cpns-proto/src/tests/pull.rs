//! Pull (004 §5.5.8.2, "Two Service/Content delivery modes: Push/Pull"; docs/services.md,
//! "Pull"): a consumer asks a member for content the member declared it holds; the server tells
//! the member end to end, and the member answers with a delivery to the consumer. Only declared
//! content of a member with a secure session, in the consumer's PN or one forwarding reaches.

use sha2::Digest;

use cpns_wire::{
    ContentItem, DELIVERY_REQUEST, DeliveryOffer, DeliveryRequest, ErrorCode, HashBytes, PnId,
    SetupType,
};

use super::delivery::seeded_content;
use super::harness::{Harness, pne_id};
use super::store::PneSpec;
use crate::CommandError;
use crate::pne::{Outcome, PneEvent};

/// PNEs 0, 1 and 2 in one PN; PNE 1 declared it holds `film.mp4`.
fn world() -> Harness {
    let mut h = Harness::one_pn(&[PneSpec::trusted(); 3]);
    declare(&mut h, 1, "film.mp4");
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    h
}

fn declare(h: &mut Harness, i: usize, name: &str) {
    let now = h.now();
    let item = ContentItem {
        name: name.into(),
        media_type: "video/mp4".into(),
    };
    let id = h.pnes[i].declare_contents(now, vec![item]).unwrap();
    h.pump();
    assert!(matches!(h.outcome(i, id), Outcome::ContentsDeclared { .. }));
}

fn request(source: usize, name: &str, to_pn: Option<PnId>) -> DeliveryRequest {
    DeliveryRequest {
        source: pne_id(source),
        name: name.into(),
        service_id: "album".into(),
        to_pn,
    }
}

/// PNE `i` asks with `req`: `Ok` once the member was asked, or the refusal's code.
fn ask(h: &mut Harness, i: usize, req: &DeliveryRequest) -> Result<(), ErrorCode> {
    let now = h.now();
    let id = h.pnes[i].request_delivery(now, req).unwrap();
    h.pump();
    match h.completion(i, id).map(|c| &c.result) {
        Some(Ok(Outcome::DeliveryRequested { source, name })) => {
            assert_eq!((source, name), (&req.source, &req.name));
            Ok(())
        }
        Some(Err(crate::Failure::Refused(e))) => Err(e.code),
        other => panic!("{other:?}"),
    }
}

/// What PNE `i` was asked for: (requester, name, the requester's PN).
fn asked(h: &Harness, i: usize) -> Vec<(cpns_wire::EntityId, String, PnId)> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::DeliveryRequested {
                requester,
                name,
                pn_id,
                ..
            } => Some((requester.clone(), name.clone(), *pn_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_consumer_pulls_what_a_member_declared_and_the_member_answers_with_a_delivery() {
    let mut h = world();
    ask(&mut h, 2, &request(1, "film.mp4", None)).unwrap();
    let pn = h.joined(2).unwrap().pn_id;
    assert_eq!(asked(&h, 1), [(pne_id(2), "film.mp4".to_string(), pn)]);
    assert!(asked(&h, 0).is_empty(), "only the member asked is told");
    // The member answers as its driver does: a delivery of the file to whoever asked.
    let bytes = seeded_content(120_000, 41);
    h.store.pne_outbox.insert(1, bytes.clone());
    let offer = DeliveryOffer {
        service_id: "album".into(),
        targets: vec![pne_id(2)],
        name: "film.mp4".into(),
        media_type: "video/mp4".into(),
        size: bytes.len() as u64,
        sha256: Some(HashBytes(sha2::Sha256::digest(&bytes).into())),
        to_pn: Some(pn),
        held: false,
        requires: Vec::new(),
        suite: None,
        group: None,
        user: None,
        more: Vec::new(),
    };
    let now = h.now();
    h.pnes[1].offer_delivery(now, &offer).unwrap();
    h.pump();
    let session = h
        .store
        .deliveries
        .keys()
        .find(|(_, t)| *t == pne_id(2))
        .map(|(s, _)| *s)
        .unwrap();
    assert_eq!(h.store.pne_received.get(&(2, session)), Some(&bytes));
    assert_eq!(h.store.deliveries[&(session, pne_id(2))].source, pne_id(1));
}

#[test]
fn a_request_reaches_only_declared_content_of_a_member_with_a_secure_session() {
    let mut h = world();
    // Not declared; not a member (no such PNE); itself.
    assert_eq!(
        ask(&mut h, 2, &request(1, "other.mp4", None)),
        Err(ErrorCode::NotFound)
    );
    assert_eq!(
        ask(&mut h, 2, &request(0, "film.mp4", None)),
        Err(ErrorCode::NotFound),
        "PNE 0 declared nothing"
    );
    let stranger = DeliveryRequest {
        source: super::harness::id("stranger"),
        ..request(1, "film.mp4", None)
    };
    assert_eq!(ask(&mut h, 2, &stranger), Err(ErrorCode::NotFound));
    let now = h.now();
    let e = h.pnes[2]
        .request_delivery(now, &request(2, "film.mp4", None))
        .unwrap_err();
    assert!(matches!(e, CommandError::InvalidDelivery(_)), "{e}");
    let e = h.pnes[2]
        .request_delivery(now, &request(1, "", None))
        .unwrap_err();
    assert!(matches!(e, CommandError::InvalidDelivery(_)), "{e}");
    // Sent anyway, raw: refused at the server the same; so is one that does not decode.
    let raw = |h: &mut Harness, payload: Vec<u8>| {
        let now = h.now();
        let id = h.pnes[2]
            .secure_call(now, DELIVERY_REQUEST, payload)
            .unwrap();
        h.pump();
        match h.completion(2, id).map(|c| &c.result) {
            Some(Err(crate::Failure::Refused(e))) => e.code,
            other => panic!("{other:?}"),
        }
    };
    for bad in [request(2, "film.mp4", None), request(1, "a\nb", None)] {
        let payload = minicbor::to_vec(&bad).unwrap();
        assert_eq!(raw(&mut h, payload), ErrorCode::BadRequest, "{bad:?}");
    }
    assert_eq!(raw(&mut h, vec![0xff, 0x00]), ErrorCode::BadRequest);
    // Nobody was asked anything.
    for i in 0..3 {
        assert!(asked(&h, i).is_empty(), "PNE {i}");
    }
}

#[test]
fn a_request_into_another_users_pn_is_refused_and_into_ones_own_other_pn_goes() {
    let specs = [PneSpec::trusted(); 4];
    for (owner, expect) in [("bob", Err(ErrorCode::Forbidden)), ("alice", Ok(()))] {
        let mut h = Harness::with_far(&specs, 2, owner);
        h.connect_gw();
        h.discover_all();
        h.setup(0, SetupType::Invite(vec![pne_id(1)]));
        h.setup(2, SetupType::Invite(vec![pne_id(3)]));
        declare(&mut h, 3, "film.mp4");
        let b = h.joined(2).unwrap().pn_id;
        assert_eq!(
            ask(&mut h, 0, &request(3, "film.mp4", Some(b))),
            expect,
            "{owner}"
        );
        let a = h.joined(0).unwrap().pn_id;
        let told = asked(&h, 3);
        match expect {
            Ok(()) => assert_eq!(told, [(pne_id(0), "film.mp4".to_string(), a)]),
            Err(_) => assert!(told.is_empty()),
        }
    }
}

fn message(to: usize, payload: &[u8], pn_id: Option<PnId>) -> cpns_wire::DeliveryMessage {
    cpns_wire::DeliveryMessage {
        peer: pne_id(to),
        service_id: "cast".into(),
        media_type: "text/uri-list".into(),
        payload: payload.to_vec(),
        pn_id,
        owner: None,
    }
}

/// What PNE `i` received in band: (from, payload).
fn messages(h: &Harness, i: usize) -> Vec<(cpns_wire::EntityId, Vec<u8>)> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::MessageReceived { from, payload, .. } => {
                Some((from.clone(), payload.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_small_payload_goes_in_band_to_one_pne_sealed_end_to_end() {
    let mut h = world();
    let payload = b"https://example.org/film-42".to_vec();
    let now = h.now();
    let id = h.pnes[0]
        .send_message(now, &message(2, &payload, None))
        .unwrap();
    h.pump();
    assert!(matches!(h.outcome(0, id), Outcome::MessageSent { to } if *to == pne_id(2)));
    assert_eq!(messages(&h, 2), [(pne_id(0), payload.clone())]);
    assert!(messages(&h, 1).is_empty(), "only its target");
    // Never in the clear on any hop: sealed to the server, and to the target.
    assert!(
        h.log.iter().all(|f| !f
            .body
            .windows(payload.len())
            .any(|w| w == payload.as_slice())),
        "the payload crossed in the clear"
    );
}

#[test]
fn a_message_out_of_bounds_or_to_nobody_is_refused_and_goes_nowhere() {
    let mut h = world();
    let now = h.now();
    let big = vec![7u8; cpns_wire::MAX_MESSAGE + 1];
    for bad in [
        message(0, b"me", None),
        message(2, &big, None),
        cpns_wire::DeliveryMessage {
            media_type: String::new(),
            ..message(2, b"x", None)
        },
    ] {
        let e = h.pnes[0].send_message(now, &bad).unwrap_err();
        assert!(matches!(e, CommandError::InvalidDelivery(_)), "{e}");
        let payload = minicbor::to_vec(&bad).unwrap();
        let id = h.pnes[0]
            .secure_call(now, cpns_wire::DELIVERY_MESSAGE, payload)
            .unwrap();
        h.pump();
        let refused = matches!(h.completion(0, id).map(|c| &c.result),
            Some(Err(crate::Failure::Refused(e))) if e.code == ErrorCode::BadRequest);
        assert!(refused);
    }
    // Not a member: not found.
    let stranger = cpns_wire::DeliveryMessage {
        peer: super::harness::id("stranger"),
        ..message(2, b"x", None)
    };
    let id = h.pnes[0].send_message(now, &stranger).unwrap();
    h.pump();
    let refused = matches!(h.completion(0, id).map(|c| &c.result),
        Some(Err(crate::Failure::Refused(e))) if e.code == ErrorCode::NotFound);
    assert!(refused);
    for i in 0..3 {
        assert!(messages(&h, i).is_empty());
    }
}

#[test]
fn a_message_of_exactly_the_largest_size_goes() {
    let mut h = world();
    let payload = vec![0x61; cpns_wire::MAX_MESSAGE];
    let now = h.now();
    let id = h.pnes[0]
        .send_message(now, &message(2, &payload, None))
        .unwrap();
    h.pump();
    assert!(matches!(h.outcome(0, id), Outcome::MessageSent { .. }));
    assert_eq!(messages(&h, 2), [(pne_id(0), payload)]);
}

#[test]
fn a_guest_and_the_owners_devices_reach_each_other_within_their_pn() {
    // PNE 2 is carol's, a guest in alice's PN: it pulls from alice's PNE 1, and alice's PNE 0
    // sends it a message; neither reach needs an owner in common inside one PN.
    let mut h = world();
    h.store.entities.get_mut(&pne_id(2)).unwrap().owner = cpns_wire::UserId::new("carol").unwrap();
    ask(&mut h, 2, &request(1, "film.mp4", None)).unwrap();
    assert_eq!(asked(&h, 1).len(), 1);
    let now = h.now();
    let id = h.pnes[0]
        .send_message(now, &message(2, b"hello", None))
        .unwrap();
    h.pump();
    assert!(matches!(h.outcome(0, id), Outcome::MessageSent { .. }));
    assert_eq!(messages(&h, 2), [(pne_id(0), b"hello".to_vec())]);
}

#[test]
fn ones_own_device_in_another_users_pn_is_reached_and_anothers_device_there_is_not() {
    let specs = [PneSpec::trusted(); 4];
    for (guest, expect) in [(true, Ok(())), (false, Err(ErrorCode::Forbidden))] {
        let mut h = Harness::with_far(&specs, 2, "bob");
        h.connect_gw();
        h.discover_all();
        h.setup(0, SetupType::Invite(vec![pne_id(1)]));
        h.setup(2, SetupType::Invite(vec![pne_id(3)]));
        declare(&mut h, 3, "film.mp4");
        if guest {
            // PNE 3 is alice's own device, a guest in bob's PN.
            h.store.entities.get_mut(&pne_id(3)).unwrap().owner =
                cpns_wire::UserId::new("alice").unwrap();
        }
        let b = h.joined(2).unwrap().pn_id;
        assert_eq!(
            ask(&mut h, 0, &request(3, "film.mp4", Some(b))),
            expect,
            "guest {guest}"
        );
        assert_eq!(asked(&h, 3).len(), usize::from(guest));
    }
}

#[test]
fn the_sender_of_a_message_is_answered_without_its_payload_or_an_owner() {
    let mut h = world();
    let payload = vec![0x62; 4096];
    let now = h.now();
    let raw = minicbor::to_vec(message(2, &payload, None)).unwrap();
    let id = h.pnes[0]
        .secure_call(now, cpns_wire::DELIVERY_MESSAGE, raw)
        .unwrap();
    h.pump();
    let Some(Ok(Outcome::SecureAnswer {
        payload: answer, ..
    })) = h.completion(0, id).map(|c| c.result.clone())
    else {
        panic!("answered")
    };
    let answer: cpns_wire::DeliveryMessage = minicbor::decode(&answer).unwrap();
    assert_eq!(answer.peer, pne_id(2));
    assert!(answer.payload.is_empty(), "the payload came back");
    assert_eq!(answer.owner, None);
    // The target was told who sent it, whose it is, and the payload.
    let told = h.pne_events(2).into_iter().any(|e| {
        matches!(e, PneEvent::MessageReceived { from, payload: p, .. }
            if *from == pne_id(0) && *p == payload)
    });
    assert!(told);
}
