//! Delivery by device capability (004 §5.5.8.2, "Invoking Services based on device
//! capability"; docs/services.md, "Delivery by capability"): an offer says what its target must
//! be able to do instead of (or beside) naming it, and the server picks one target from the
//! capabilities and status of record: a member with a secure session, fitting, online.

use sha2::Digest;

use cpns_wire::{
    DELIVERY_OFFER, DeliveryId, DeliveryOffer, ErrorCode, HashBytes, SetupType, Status,
};

use super::delivery::seeded_content;
use super::harness::{Harness, pne_id};
use super::store::PneSpec;
use crate::CommandError;
use crate::pne::Outcome;

/// PNEs 0 to 3 in one PN: PNE 1 has no user interface, the others have one.
fn world() -> Harness {
    let ui = PneSpec::trusted();
    let no_ui = PneSpec {
        has_ui: false,
        ..ui
    };
    Harness::one_pn(&[ui, no_ui, ui, ui])
}

/// The server's record of PNE `i`: `status`.
fn set_status(h: &mut Harness, i: usize, status: Status) {
    let mut s = h.store.status_of(&pne_id(i)).unwrap();
    s.status = status;
    h.store.statuses.insert(pne_id(i), (s, None));
}

fn offer(to: &[usize], bytes: &[u8], requires: &str) -> DeliveryOffer {
    DeliveryOffer {
        service_id: "video".into(),
        targets: to.iter().map(|i| pne_id(*i)).collect(),
        name: "film.mp4".into(),
        media_type: "video/mp4".into(),
        size: bytes.len() as u64,
        sha256: Some(HashBytes(sha2::Sha256::digest(bytes).into())),
        to_pn: None,
        held: false,
        requires: requires.as_bytes().to_vec(),
        suite: None,
        group: None,
        user: None,
        more: Vec::new(),
    }
}

/// PNE 0 offers `o`: the session and the targets granted, or the refusal's code.
fn push(
    h: &mut Harness,
    o: &DeliveryOffer,
    bytes: &[u8],
) -> Result<(DeliveryId, usize), ErrorCode> {
    h.store.pne_outbox.insert(0, bytes.to_vec());
    let now = h.now();
    let id = h.pnes[0].offer_delivery(now, o).unwrap();
    h.pump();
    match h.completion(0, id).map(|c| &c.result) {
        Some(Ok(Outcome::DeliveryGranted { session, .. })) => {
            let to = (0..4)
                .find(|i| h.store.deliveries.contains_key(&(*session, pne_id(*i))))
                .unwrap();
            Ok((*session, to))
        }
        Some(Err(crate::Failure::Refused(e))) => Err(e.code),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_server_picks_the_one_member_whose_capabilities_fit_and_that_is_online() {
    let mut h = world();
    // PNE 1: online, no screen to render on; PNE 2: fits, offline; PNE 3: fits, online.
    set_status(&mut h, 1, Status::Online);
    set_status(&mut h, 2, Status::Offline);
    set_status(&mut h, 3, Status::Online);
    let bytes = seeded_content(150_000, 31);
    let (session, to) = push(&mut h, &offer(&[], &bytes, r#"{"has_ui":true}"#), &bytes).unwrap();
    assert_eq!(to, 3);
    assert_eq!(h.store.pne_received.get(&(3, session)), Some(&bytes));
    // One target only: one record, nothing for the others.
    let records: Vec<_> = h
        .store
        .deliveries
        .keys()
        .filter(|(s, _)| *s == session)
        .collect();
    assert_eq!(records, [&(session, pne_id(3))]);
    for i in [1, 2] {
        assert!(!h.store.pne_received.contains_key(&(i, session)));
    }
    // PNE 2 online (and first in order): it is picked next; busy, it is not.
    set_status(&mut h, 2, Status::Online);
    let (_, to) = push(&mut h, &offer(&[], &bytes, r#"{"has_ui":true}"#), &bytes).unwrap();
    assert_eq!(to, 2);
    set_status(&mut h, 2, Status::Busy);
    let (_, to) = push(&mut h, &offer(&[], &bytes, r#"{"has_ui":true}"#), &bytes).unwrap();
    assert_eq!(to, 3);
}

#[test]
fn an_offer_by_capability_picks_among_the_targets_it_names_in_their_order() {
    let mut h = world();
    for i in 1..4 {
        set_status(&mut h, i, Status::Online);
    }
    let bytes = seeded_content(10_000, 32);
    // Named 1 then 3: 1 does not fit, 3 does (2 fits too, but is not named).
    let (_, to) = push(
        &mut h,
        &offer(&[1, 3], &bytes, r#"{"has_ui":true}"#),
        &bytes,
    )
    .unwrap();
    assert_eq!(to, 3);
    let (_, to) = push(
        &mut h,
        &offer(&[3, 2], &bytes, r#"{"has_ui":true}"#),
        &bytes,
    )
    .unwrap();
    assert_eq!(to, 3);
    // Named only one that does not fit: nobody, and nothing opened.
    let before = h.store.deliveries.len();
    assert_eq!(
        push(&mut h, &offer(&[1], &bytes, r#"{"has_ui":true}"#), &bytes),
        Err(ErrorCode::NotFound)
    );
    // Everything offline: nobody.
    for i in 1..4 {
        set_status(&mut h, i, Status::Offline);
    }
    assert_eq!(
        push(&mut h, &offer(&[], &bytes, "{}"), &bytes),
        Err(ErrorCode::NotFound)
    );
    assert_eq!(h.store.deliveries.len(), before);
}

#[test]
fn requirements_that_are_not_requirements_are_refused_at_the_pne_and_at_the_server() {
    let mut h = world();
    set_status(&mut h, 2, Status::Online);
    let bytes = seeded_content(1_000, 33);
    let bad = [
        "not json".to_string(),
        r#"{"has_screen":true}"#.to_string(),
        format!(r#"{{"software":["{}"]}}"#, "x".repeat(5000)),
    ];
    for requires in &bad {
        let o = offer(&[], &bytes, requires);
        let now = h.now();
        let e = h.pnes[0].offer_delivery(now, &o).unwrap_err();
        assert!(matches!(e, CommandError::InvalidDelivery(_)), "{e}");
        // Sent anyway, as a raw call: the server refuses it the same, opening nothing.
        let payload = minicbor::to_vec(&o).unwrap();
        let id = h.pnes[0].secure_call(now, DELIVERY_OFFER, payload).unwrap();
        h.pump();
        let refused = matches!(
            h.completion(0, id).map(|c| &c.result),
            Some(Err(crate::Failure::Refused(e))) if e.code == ErrorCode::BadRequest
        );
        assert!(refused, "{requires}");
    }
    assert!(h.store.deliveries.is_empty());
}

#[test]
fn an_offer_naming_no_target_goes_to_every_other_member_with_a_secure_session() {
    let mut h = world();
    let bytes = seeded_content(90_000, 34);
    h.store.pne_outbox.insert(0, bytes.clone());
    let now = h.now();
    let id = h.pnes[0]
        .offer_delivery(now, &offer(&[], &bytes, ""))
        .unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session, .. } = *h.outcome(0, id) else {
        panic!()
    };
    for i in 1..4 {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
    }
    assert!(!h.store.deliveries.contains_key(&(session, pne_id(0))));
    // A PN of the source alone: nobody to deliver to, nothing opened.
    let mut h = Harness::new(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::OneToOne);
    assert_eq!(
        push(&mut h, &offer(&[], &bytes, ""), &bytes),
        Err(ErrorCode::NotFound)
    );
    assert!(h.store.deliveries.is_empty());
}

#[test]
fn a_member_without_a_secure_session_is_not_picked_and_requirements_up_to_the_bound_are_taken() {
    let mut h = world();
    for i in 1..4 {
        set_status(&mut h, i, Status::Online);
    }
    // PNE 2 fits and is online, but has no secure session key of record: PNE 3 is picked.
    let pn = h.joined(0).unwrap().pn_id;
    h.store.session_keys.remove(&(pn, pne_id(2)));
    let bytes = seeded_content(5_000, 35);
    let (_, to) = push(&mut h, &offer(&[], &bytes, r#"{"has_ui":true}"#), &bytes).unwrap();
    assert_eq!(to, 3);
    // Requirements of exactly the largest size are taken (and fit nobody here).
    let pad = cpns_wire::MAX_REQUIRES - r#"{"software":[""]}"#.len();
    let exact = format!(r#"{{"software":["{}"]}}"#, "s".repeat(pad));
    assert_eq!(exact.len(), cpns_wire::MAX_REQUIRES);
    assert_eq!(
        push(&mut h, &offer(&[], &bytes, &exact), &bytes),
        Err(ErrorCode::NotFound)
    );
}

#[test]
fn a_whole_pn_is_delivered_to_up_to_sixteen_others_and_named_past_them() {
    for (others, expect) in [(16, true), (17, false)] {
        let mut h = Harness::one_pn(&vec![PneSpec::trusted(); others + 1]);
        let pn = h.joined(0).unwrap().pn_id;
        let members = h
            .store
            .session_keys
            .keys()
            .filter(|(p, _)| *p == pn)
            .count();
        assert_eq!(members, others + 1, "every PNE joined");
        let bytes = seeded_content(1_000, 36);
        let got = push(&mut h, &offer(&[], &bytes, ""), &bytes);
        if expect {
            let (session, _) = got.unwrap();
            let targets = h
                .store
                .deliveries
                .keys()
                .filter(|(s, _)| *s == session)
                .count();
            assert_eq!(targets, others);
        } else {
            assert_eq!(got, Err(ErrorCode::BadRequest));
            assert!(h.store.deliveries.is_empty());
        }
    }
}
