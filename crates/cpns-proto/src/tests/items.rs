//! Several services in one delivery session (004 §5.5.8.2, "Supporting single/multiple
//! services"; docs/services.md, "Several services in one session"): a session carries items one
//! after another, each delivered as its own service; every target checks each item's hash on
//! its own, keeps those that match, and its end gives each item's result, which the server
//! records (and charges) item by item.

use sha2::Digest;

use cpns_wire::{
    DELIVERY_DONE, DELIVERY_OFFER, DeliveryDone, DeliveryId, DeliveryItem, DeliveryOffer,
    DeliveryResult, ErrorCode, HashBytes, SetupType,
};

use super::delivery::{call, content, offer, seeded_content, world};
use super::harness::{Harness, pne_id};
use super::store::PneSpec;
use crate::CommandError;
use crate::pne::{Outcome, PneEvent};

/// An item of `bytes`, delivered as `service` under `name`.
fn item(service: &str, name: &str, bytes: &[u8]) -> DeliveryItem {
    DeliveryItem {
        service_id: service.into(),
        name: name.into(),
        media_type: "application/octet-stream".into(),
        size: bytes.len() as u64,
        sha256: Some(HashBytes(sha2::Sha256::digest(bytes).into())),
    }
}

/// A film (as `video`), its subtitles and its poster: sizes off the chunk's, so chunks cross
/// from one item into the next.
fn film() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        content(150_000),
        seeded_content(1_000, 3),
        seeded_content(70_001, 4),
    )
}

/// PNE 0 offers `first` and then `more` (each item of `contents`) to `to`: the session.
fn push_items(
    h: &mut Harness,
    to: &[usize],
    first: &[u8],
    more: Vec<DeliveryItem>,
    contents: &[&[u8]],
) -> DeliveryId {
    h.store.pne_outbox.insert(0, contents.concat());
    let mut o = offer(to, first);
    o.more = more;
    let now = h.now();
    let id = h.pnes[0].offer_delivery(now, &o).unwrap();
    h.pump();
    match h.outcome(0, id) {
        Outcome::DeliveryGranted { session, .. } => *session,
        other => panic!("{other:?}"),
    }
}

/// How PNE `i`'s own part of `session` ended, as it told its application, and why.
fn own_end(h: &Harness, i: usize, session: DeliveryId) -> Option<(DeliveryResult, String)> {
    h.pne_events(i).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session: s,
            result,
            reason,
            ..
        } if *s == session => Some((*result, reason.clone().unwrap_or_default())),
        _ => None,
    })
}

#[test]
fn several_services_reach_every_target_in_one_session_each_recorded_and_charged() {
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    cfg.tariff.insert("video".into(), 2);
    cfg.tariff.insert("poster".into(), 1);
    let mut h = Harness::with_server(&[PneSpec::trusted(); 3], cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let (video, subs, poster) = film();
    let more = vec![
        item("subtitles", "holiday.srt", &subs),
        item("poster", "holiday.jpg", &poster),
    ];
    let session = push_items(&mut h, &[1, 2], &video, more, &[&video, &subs, &poster]);
    let whole = [video.as_slice(), &subs, &poster].concat();
    for i in [1, 2] {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&whole),
            "PNE {i}"
        );
        // Told of every item when offered, and of each kept.
        let offered = h.pne_events(i).into_iter().find_map(|e| match e {
            PneEvent::DeliveryOffered {
                session: s,
                size,
                more,
                ..
            } if *s == session => Some((
                *size,
                more.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            )),
            _ => None,
        });
        assert_eq!(
            offered,
            Some((150_000, vec!["holiday.srt".into(), "holiday.jpg".into()]))
        );
        let received = h.pne_events(i).into_iter().find_map(|e| match e {
            PneEvent::DeliveryReceived {
                session: s,
                bytes,
                more,
                ..
            } if *s == session => Some((*bytes, more.clone())),
            _ => None,
        });
        let names = vec!["holiday.srt".to_string(), "holiday.jpg".into()];
        assert_eq!(received, Some((whole.len() as u64, names)));
        // A record per item, each at its own service's tariff, all delivered.
        let r = &h.store.deliveries[&(session, pne_id(i))];
        let items: Vec<(&str, u64, Option<u64>)> = r
            .items
            .iter()
            .map(|it| (it.service_id.as_str(), it.size, it.per_mb))
            .collect();
        assert_eq!(
            items,
            [
                ("video", 150_000, Some(2)),
                ("subtitles", 1_000, None),
                ("poster", 70_001, Some(1))
            ]
        );
        assert_eq!(r.ended, Some((whole.len() as u64, 1)));
        assert_eq!(r.results, [1, 1, 1]);
    }
    // Every target ended delivered: the source is told it is sent, to both.
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(1), pne_id(2)])
    );
    // One route for the session: the PN GW relays the items as one content.
    let routes: Vec<u64> = h
        .log
        .iter()
        .filter_map(|f| match f.env().map(|e| e.body) {
            Some(cpns_wire::Body::DeliveryRoute(r)) if r.session == session => Some(r.size),
            _ => None,
        })
        .collect();
    assert_eq!(routes, [whole.len() as u64]);
}

#[test]
fn an_item_whose_hash_does_not_match_is_not_kept_and_the_others_are() {
    let mut h = world();
    let (video, subs, poster) = film();
    // The poster offered is not the one sent.
    let more = vec![
        item("subtitles", "holiday.srt", &subs),
        item("poster", "holiday.jpg", b"another poster"),
    ];
    let session = push_items(&mut h, &[1], &video, more, &[&video, &subs, &poster]);
    // Kept: the film and its subtitles.
    let kept = [video.as_slice(), &subs].concat();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&kept));
    // Its end: a hash mismatch, naming the item, with each item's result.
    let ended = own_end(&h, 1, session);
    let (result, reason) = ended.expect("PNE 1 told of its end");
    assert_eq!(result, DeliveryResult::HashMismatch);
    assert!(
        reason.contains("\"holiday.jpg\"") && reason.contains("2 of 3"),
        "{reason}"
    );
    let r = &h.store.deliveries[&(session, pne_id(1))];
    assert_eq!(r.results, [1, 1, 3]);
    // The source hears the target's end as a mismatch: it does not have all of it.
    assert_eq!(
        h.delivery_ends(0, session),
        [(pne_id(1), DeliveryResult::HashMismatch)]
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![]));
}

#[test]
fn an_offer_of_several_items_is_checked_at_each_bound() {
    use crate::server::delivery::{MAX_ITEMS, MAX_SIZE, check_offer};
    let source = pne_id(0);
    let with = |f: &dyn Fn(&mut DeliveryOffer)| {
        let mut o = offer(&[1], b"film");
        f(&mut o);
        check_offer(&o, &source)
    };
    let items = |n: usize| {
        (0..n)
            .map(|k| item("extra", &format!("part-{k}"), b"x"))
            .collect::<Vec<_>>()
    };
    assert_eq!(with(&|o| o.more = items(MAX_ITEMS - 1)), Ok(()));
    let why = with(&|o| o.more = items(MAX_ITEMS)).unwrap_err();
    assert!(why.contains("at most 8 items"), "{why}");
    // Each item's texts are checked as the first's.
    assert!(with(&|o| o.more = vec![item("", "a", b"x")]).is_err());
    assert!(with(&|o| o.more = vec![item(&"s".repeat(65), "a", b"x")]).is_err());
    assert!(with(&|o| o.more = vec![item("s", "a\nb", b"x")]).is_err());
    assert!(with(&|o| o.more = vec![item("s", &"n".repeat(256), b"x")]).is_err());
    let mut typed = item("s", "a", b"x");
    typed.media_type = "m".repeat(128);
    assert!(with(&|o| o.more = vec![typed.clone()]).is_err());
    // An empty item, and two of one name.
    let why = with(&|o| o.more = vec![item("s", "a", b"")]).unwrap_err();
    assert!(why.contains("empty"), "{why}");
    let why = with(&|o| o.more = vec![item("s", "holiday.mp4", b"x")]).unwrap_err();
    assert!(why.contains("two items are named"), "{why}");
    let why = with(&|o| o.more = vec![item("s", "a", b"x"), item("t", "a", b"y")]).unwrap_err();
    assert!(why.contains("two items are named"), "{why}");
    // Together at most 64 GiB, each item 64 GiB or less alone too.
    let mut big = item("s", "a", b"x");
    big.size = MAX_SIZE - 4;
    assert_eq!(with(&|o| o.more = vec![big.clone()]), Ok(()));
    big.size = MAX_SIZE - 3;
    let why = with(&|o| o.more = vec![big.clone()]).unwrap_err();
    assert!(why.contains("together"), "{why}");
    // An item's size near u64::MAX does not wrap the total round.
    big.size = u64::MAX;
    assert!(with(&|o| o.more = vec![big.clone()]).is_err());
}

#[test]
fn bad_items_are_refused_by_the_server_and_open_nothing() {
    let mut h = world();
    let raw = |o: &DeliveryOffer| minicbor::to_vec(o).unwrap();
    let mut o = offer(&[1], b"film");
    o.more = (0..8).map(|k| item("x", &format!("p{k}"), b"x")).collect();
    assert_eq!(
        call(&mut h, 0, DELIVERY_OFFER, raw(&o)),
        Err(ErrorCode::BadRequest)
    );
    o.more = vec![item("x", "film-2", b"")];
    assert_eq!(
        call(&mut h, 0, DELIVERY_OFFER, raw(&o)),
        Err(ErrorCode::BadRequest)
    );
    // The PNE refuses to send what the server would refuse.
    let now = h.now();
    match h.pnes[0].offer_delivery(now, &o) {
        Err(CommandError::InvalidDelivery(why)) => assert!(why.contains("empty"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(h.store.deliveries.is_empty(), "nothing opened");
}

#[test]
fn a_targets_end_names_as_many_results_as_items_or_none() {
    let mut h = world();
    let (video, subs, poster) = film();
    // PNE 1 never answers its driver's hash check: its part stays open.
    h.store.held_finishes = Some(vec![]);
    let more = vec![
        item("subtitles", "holiday.srt", &subs),
        item("poster", "holiday.jpg", &poster),
    ];
    let session = push_items(&mut h, &[1], &video, more, &[&video, &subs, &poster]);
    let done = |items: Vec<DeliveryResult>| {
        minicbor::to_vec(DeliveryDone {
            session,
            target: pne_id(1),
            bytes: 10,
            result: DeliveryResult::Delivered,
            items,
        })
        .unwrap()
    };
    use DeliveryResult::{Delivered, HashMismatch};
    // Two results for three items; more results than a session has items: refused.
    assert_eq!(
        call(&mut h, 1, DELIVERY_DONE, done(vec![Delivered, Delivered])),
        Err(ErrorCode::BadRequest)
    );
    // More results than any session has items: refused before the store, saying so.
    let now = h.now();
    let id = h.pnes[1]
        .secure_call(now, DELIVERY_DONE, done(vec![Delivered; 9]))
        .unwrap();
    h.pump();
    match h.completion(1, id).map(|c| c.result.clone()) {
        Some(Err(crate::Failure::Refused(e))) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.reason.contains("at most 8 items"), "{}", e.reason);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.store.deliveries[&(session, pne_id(1))].ended, None);
    // Three: recorded as said.
    let three = done(vec![Delivered, HashMismatch, Delivered]);
    assert!(call(&mut h, 1, DELIVERY_DONE, three).is_ok());
    assert_eq!(h.store.deliveries[&(session, pne_id(1))].results, [1, 3, 1]);
}

#[test]
fn a_session_of_the_most_items_is_delivered_and_recorded_item_by_item() {
    use crate::server::delivery::MAX_ITEMS;
    let mut h = world();
    let first = content(1_000);
    let rest: Vec<Vec<u8>> = (1..MAX_ITEMS)
        .map(|k| seeded_content(500 + k, k as u32))
        .collect();
    let more = rest
        .iter()
        .enumerate()
        .map(|(k, b)| item("extra", &format!("part-{k}"), b))
        .collect();
    let mut all: Vec<&[u8]> = vec![&first];
    all.extend(rest.iter().map(Vec::as_slice));
    let session = push_items(&mut h, &[1], &first, more, &all);
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&all.concat()));
    assert_eq!(
        h.store.deliveries[&(session, pne_id(1))].results,
        vec![1; MAX_ITEMS]
    );
}

#[test]
fn a_driver_that_checks_another_number_of_items_ends_the_part_failed() {
    let mut h = world();
    let (video, subs, poster) = film();
    h.store.held_finishes = Some(vec![]);
    let more = vec![
        item("subtitles", "holiday.srt", &subs),
        item("poster", "holiday.jpg", &poster),
    ];
    let session = push_items(&mut h, &[1], &video, more, &[&video, &subs, &poster]);
    let now = h.now();
    // One answer for three items.
    h.pnes[1].handle_receive_finished(now, session, Ok(vec![true]));
    h.pump();
    let ended = own_end(&h, 1, session);
    let (result, reason) = ended.expect("ended");
    assert_eq!(result, DeliveryResult::Failed);
    assert!(reason.contains("1 hashes checked of 3 items"), "{reason}");
    assert_eq!(h.store.deliveries[&(session, pne_id(1))].results, [4]);
}

#[test]
fn a_target_declines_an_invitation_whose_items_are_out_of_bounds() {
    use crate::pne::delivery::invite_fault;
    use crate::server::delivery::{MAX_ITEMS, MAX_SIZE};
    let invite = |size: u64, more: Vec<DeliveryItem>| cpns_wire::DeliveryInvite {
        session: DeliveryId::from_bytes([1; 16]),
        source: pne_id(0),
        owner: "alice".parse().unwrap(),
        service_id: "video".into(),
        name: "film".into(),
        media_type: "video/mp4".into(),
        size,
        sha256: Some(HashBytes([0; 32])),
        key: cpns_wire::KeyBytes([0; 32]),
        pn_id: cpns_wire::PnId::from_bytes([2; 16]),
        chunk: 65_536,
        specific: Vec::new(),
        held: false,
        suite: None,
        more,
    };
    let sized = |n: u64| {
        let mut i = item("s", "x", b"x");
        i.size = n;
        i
    };
    assert_eq!(invite_fault(&invite(10, vec![sized(5)])), None);
    assert_eq!(
        invite_fault(&invite(MAX_SIZE - 5, vec![sized(5)])),
        None,
        "at the bound"
    );
    // Together past the bound, or wrapping round.
    assert!(invite_fault(&invite(MAX_SIZE - 5, vec![sized(6)])).is_some());
    assert!(invite_fault(&invite(u64::MAX, vec![sized(2)])).is_some());
    assert!(invite_fault(&invite(1 << 63, vec![sized(1 << 63), sized(10)])).is_some());
    // An empty item, or the first empty.
    assert!(invite_fault(&invite(10, vec![sized(0)])).is_some());
    assert!(invite_fault(&invite(0, vec![])).is_some());
    // Too many items.
    assert_eq!(
        invite_fault(&invite(1, vec![sized(1); MAX_ITEMS - 1])),
        None
    );
    let why = invite_fault(&invite(1, vec![sized(1); MAX_ITEMS])).unwrap();
    assert!(why.contains("out of bounds"), "{why}");
}
