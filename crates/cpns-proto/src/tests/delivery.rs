//! Delivery (004 §5.5.8; docs/services.md, "Delivery"): a source offers content to members of
//! its PN; the server sets the session up and records it; the PN GW relays the chunks, sealed
//! under the session's key, to every target, and the least of their acknowledgements back; each
//! target checks the hash, and its end closes its record. A PN GW that alters a chunk is caught,
//! and every message out of its place is refused.

use sha2::Digest;

use cpns_wire::{
    Address, Body, DELIVERY_DONE, DELIVERY_OFFER, DeliveryAck, DeliveryChunk, DeliveryDone,
    DeliveryId, DeliveryOffer, DeliveryResult, EntityId, Envelope, ErrorCode, HashBytes, SetupType,
};

use super::harness::{Action, Harness, Party, plain, pne_id};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};
use crate::{CommandError, Failure, Flow};

/// PNEs 0, 1 and 2 are members of one PN, each with its SK_PNE there.
pub(super) fn world() -> Harness {
    world_with(PneSpec::trusted())
}

fn world_with(spec: PneSpec) -> Harness {
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    // No heartbeats here: the server does not end a silent PN GW's session (silence has tests
    // of its own).
    cfg.offline_after = None;
    let specs = [spec, spec, spec];
    let mut h = Harness::with_server(&specs, cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    h
}

/// `n` bytes that do not repeat in any short window.
pub(super) fn content(n: usize) -> Vec<u8> {
    seeded_content(n, 0)
}

/// `n` bytes that do not repeat in any short window, different for each `seed`.
pub(super) fn seeded_content(n: usize, seed: u32) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub(super) fn offer(to: &[usize], bytes: &[u8]) -> DeliveryOffer {
    DeliveryOffer {
        service_id: "video".into(),
        targets: to.iter().map(|i| pne_id(*i)).collect(),
        name: "holiday.mp4".into(),
        media_type: "video/mp4".into(),
        size: bytes.len() as u64,
        sha256: Some(HashBytes(sha2::Sha256::digest(bytes).into())),
        to_pn: None,
        held: false,
        requires: Vec::new(),
        suite: None,
        group: None,
        user: None,
        more: Vec::new(),
    }
}

/// PNE 0 offers `bytes` to `to`: the session granted.
fn push(h: &mut Harness, to: &[usize], bytes: &[u8]) -> DeliveryId {
    h.store.pne_outbox.insert(0, bytes.to_vec());
    let now = h.now();
    let id = h.pnes[0].offer_delivery(now, &offer(to, bytes)).unwrap();
    h.pump();
    match h.outcome(0, id) {
        Outcome::DeliveryGranted { session, .. } => *session,
        other => panic!("{other:?}"),
    }
}

/// Each of PNEs `targets` holds `bytes` as received in `session`, its hash checked.
fn assert_received(h: &Harness, targets: &[usize], session: DeliveryId, bytes: &[u8]) {
    for i in targets {
        assert_eq!(
            h.store.pne_received.get(&(*i, session)).map(Vec::as_slice),
            Some(bytes),
            "PNE {i}"
        );
    }
}

#[test]
fn a_push_reaches_every_target_in_chunks_sealed_end_to_end_and_is_recorded() {
    let mut h = world();
    let bytes = content(300_000);
    let session = push(&mut h, &[1, 2], &bytes);
    for i in [1, 2] {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
        let told = h.pne_events(i).into_iter().any(|e| {
            matches!(e, PneEvent::DeliveryReceived { session: s, bytes: 300_000, from, .. }
                if *s == session && *from == pne_id(0))
        });
        assert!(told, "PNE {i} was told");
        let offered = h.pne_events(i).into_iter().any(|e| {
            matches!(e, PneEvent::DeliveryOffered { session: s, size: 300_000, name, .. }
                if *s == session && name == "holiday.mp4")
        });
        assert!(offered);
        let record = &h.store.deliveries[&(session, pne_id(i))];
        assert_eq!(
            record.ended,
            Some((300_000, DeliveryResult::Delivered.code()))
        );
        assert_eq!(record.charged.as_str(), "alice");
        assert_eq!(record.service_id, "video");
    }
    assert!(h.delivery_sent(0, session).is_some());
    assert!(refusals(&h).is_empty(), "{:?}", refusals(&h));
    // The last acknowledgement of each target was of every byte, and reached the source.
    let told: Vec<u64> = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryAck(a) if a.session == session => Some(a.have),
            _ => None,
        })
        .collect();
    assert_eq!(told.last(), Some(&300_000));
    // In chunks of at most 64 KiB, each crossing the PN GW sealed: no frame holds a stretch of
    // the content in the clear.
    let chunks: Vec<DeliveryChunk> = h
        .delivered(Party::Pne(0), Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(chunks.len(), 300_000_usize.div_ceil(65_536));
    assert!(chunks.iter().all(|c| c.sealed.len() <= 65_536 + 28));
    for probe in [0, 100_000, 299_968] {
        let stretch = &bytes[probe..probe + 32];
        assert!(
            h.log
                .iter()
                .all(|f| !f.body.windows(32).any(|w| w == stretch)),
            "content at {probe} crossed in the clear"
        );
    }
    // The PN GW relayed it twice (two targets), and forgot the route with both ends.
    let relayed = h.gw_events().into_iter().any(|e| {
        matches!(e, crate::gateway::GatewayEvent::DeliveryRelayed { session: s, bytes, .. }
            if *s == session && *bytes == 600_000)
    });
    assert!(relayed);
}

#[test]
fn a_push_goes_the_same_on_sealed_pan_links() {
    let mut h = world_with(PneSpec::cpns());
    let bytes = content(200_000);
    let session = push(&mut h, &[1, 2], &bytes);
    assert_received(&h, &[1, 2], session, &bytes);
    assert!(h.delivery_sent(0, session).is_some());
}

#[test]
fn the_source_never_sends_past_a_window_of_what_every_target_has() {
    let mut h = world();
    let bytes = content(3_000_000);
    let session = push(&mut h, &[1, 2], &bytes);
    assert!(h.delivery_sent(0, session).is_some());
    // In the order the frames went: each chunk the source sent lies within the window past the
    // last acknowledgement it had been given.
    let window = u64::from(crate::server::delivery::WINDOW);
    let mut acked: Option<u64> = None;
    let mut most_ahead = 0;
    for f in &h.log {
        let Some(env) = f.env() else { continue };
        match (f.from, f.to, env.body) {
            (Party::Gw, Party::Pne(0), Body::DeliveryAck(a)) if a.session == session => {
                acked = Some(a.have);
            }
            (Party::Pne(0), Party::Gw, Body::DeliveryChunk(c)) if c.session == session => {
                let a = acked.expect("nothing sent before every target accepted");
                assert!(
                    c.offset < a + window,
                    "chunk at {} with {a} acknowledged",
                    c.offset
                );
                most_ahead = most_ahead.max(c.offset + 65_536 - a);
            }
            _ => {}
        }
    }
    assert!(most_ahead > window / 2, "the window was used: {most_ahead}");
}

#[test]
fn a_pn_gw_that_alters_a_chunk_is_caught_and_the_other_target_still_gets_it_all() {
    let mut h = world();
    // The PN GW flips a bit of the third chunk it relays to PNE 1.
    let mut seen = 0;
    h.set_hook(move |f| {
        if f.from == Party::Gw && f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            seen += 1;
            if seen == 3 {
                return Action::Replace(super::harness::rewrite(&f.body, |env| {
                    if let Body::DeliveryChunk(c) = &mut env.body {
                        let n = c.sealed.len();
                        c.sealed[n - 20] ^= 1;
                    }
                }));
            }
        }
        Action::Deliver
    });
    let bytes = content(400_000);
    let session = push(&mut h, &[1, 2], &bytes);
    h.clear_hook();
    let refused = h.pne_events(1).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session: s,
            result: DeliveryResult::Failed,
            reason: Some(r),
            ..
        } if *s == session => Some(r.clone()),
        _ => None,
    });
    let refused = refused.expect("PNE 1 refused the session");
    assert!(refused.contains("altered on the way"), "{refused}");
    assert!(!h.store.pne_received.contains_key(&(1, session)));
    assert!(!h.store.pne_inbox.contains_key(&(1, session)), "discarded");
    assert_eq!(
        h.store.deliveries[&(session, pne_id(1))].ended,
        Some((2 * 65_536, DeliveryResult::Failed.code()))
    );
    assert_eq!(h.store.pne_received.get(&(2, session)), Some(&bytes));
    assert_eq!(
        h.delivery_ends(0, session),
        [(pne_id(1), DeliveryResult::Failed)]
    );
    assert!(
        h.delivery_sent(0, session).is_some(),
        "the source finished with the target left"
    );
}

#[test]
fn a_target_that_declines_gets_nothing_and_the_others_go_on() {
    let declines = PneSpec {
        deliveries: crate::pne::InvitationPolicy::Decline,
        ..PneSpec::trusted()
    };
    let specs = [PneSpec::trusted(), PneSpec::trusted(), declines];
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    let mut h = Harness::with_server(&specs, cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let bytes = content(100_000);
    let session = push(&mut h, &[1, 2], &bytes);
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
    assert!(!h.store.pne_received.contains_key(&(2, session)));
    assert_eq!(
        h.delivery_ends(0, session),
        [(pne_id(2), DeliveryResult::Declined)]
    );
    assert_eq!(
        h.store.deliveries[&(session, pne_id(2))].ended,
        Some((0, DeliveryResult::Declined.code()))
    );
    assert!(h.delivery_sent(0, session).is_some());
}

/// PNE `i` makes a raw secure call: the answer's payload, or the refusal.
pub(super) fn call(
    h: &mut Harness,
    i: usize,
    service: &str,
    payload: Vec<u8>,
) -> Result<Vec<u8>, ErrorCode> {
    let now = h.now();
    let id = h.pnes[i].secure_call(now, service, payload).unwrap();
    h.pump();
    match h.completion(i, id).map(|c| c.result.clone()) {
        Some(Ok(Outcome::SecureAnswer { payload, .. })) => Ok(payload),
        Some(Err(Failure::Refused(e))) => Err(e.code),
        other => panic!("{service}: {other:?}"),
    }
}

#[test]
fn bad_offers_are_refused_with_their_reason_and_open_nothing() {
    let mut h = world();
    let bytes = content(1000);
    let now = h.now();
    for (bad, why) in [
        (offer(&[0], &bytes), "itself"),
        (offer(&[1], &[]), "1 byte"),
        (offer(&[1, 1], &bytes), "twice"),
    ] {
        match h.pnes[0].offer_delivery(now, &bad) {
            Err(CommandError::InvalidDelivery(r)) => assert!(r.contains(why), "{r}"),
            other => panic!("{other:?}"),
        }
    }
    // What the PNE would not send, the server refuses all the same.
    let raw = |o: &DeliveryOffer| minicbor::to_vec(o).unwrap();
    let mut many = offer(&[1], &bytes);
    many.targets = (0..17)
        .map(|n| EntityId::new(format!("t{n}")).unwrap())
        .collect();
    assert_eq!(
        call(&mut h, 0, DELIVERY_OFFER, raw(&many)),
        Err(ErrorCode::BadRequest)
    );
    assert_eq!(
        call(&mut h, 0, DELIVERY_OFFER, raw(&offer(&[0], &bytes))),
        Err(ErrorCode::BadRequest)
    );
    assert_eq!(
        call(&mut h, 0, DELIVERY_OFFER, vec![0xff, 0x00]),
        Err(ErrorCode::BadRequest)
    );
    let mut stranger = offer(&[1], &bytes);
    stranger.targets.push(EntityId::new("stranger").unwrap());
    assert_eq!(
        call(&mut h, 0, DELIVERY_OFFER, raw(&stranger)),
        Err(ErrorCode::NotFound)
    );
    assert!(h.store.deliveries.is_empty(), "nothing opened");
    assert!(
        h.log.iter().all(|f| f.message != "DeliveryRoute"),
        "the PN GW was told of nothing"
    );
}

/// PNE 0 offers `bytes` to PNEs 1 and 2, whose acknowledgements are lost: the session waits
/// with every target taking chunks and nothing sent yet.
fn stalled(h: &mut Harness, bytes: &[u8]) -> DeliveryId {
    h.drop_message("DeliveryAck");
    push(h, &[1, 2], bytes)
}

/// A delivery message from PNE `i` to its PN GW, as its link carries it.
pub(super) fn from_pne(h: &mut Harness, i: usize, body: impl Into<Body>) {
    let env = Envelope::notify(
        9_000 + h.log.len() as u64,
        Address::Entity(pne_id(i)),
        Address::Entity(h.gw_cfg.id.clone()),
        body,
    );
    h.inject(Party::Pne(i), Party::Gw, plain(&env));
    h.pump();
}

fn refusals(h: &Harness) -> Vec<(String, String)> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            crate::gateway::GatewayEvent::DeliveryRefused { from, reason, .. } => {
                Some((from.to_string(), reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The offset of a 100-byte sealed chunk that ends `by` bytes past the first window.
fn past_window_by(by: u64) -> u64 {
    let content = 100 - cpns_crypto::CHUNK_OVERHEAD as u64;
    u64::from(crate::server::delivery::WINDOW) - content + by
}

/// A chunk ending at the window's end passes the PN GW (its check is the window, not less).
#[test]
fn a_chunk_ending_at_the_window_passes_the_pn_gw() {
    let mut h = world();
    let session = stalled(&mut h, &content(200_000));
    let chunk = DeliveryChunk {
        digest: None,
        session,
        offset: past_window_by(0),
        sealed: vec![0x5a; 100],
    };
    from_pne(&mut h, 0, chunk);
    assert!(
        refusals(&h).iter().all(|(_, r)| !r.contains("window")),
        "{:?}",
        refusals(&h)
    );
}

#[test]
fn delivery_messages_out_of_their_place_are_refused_at_the_pn_gw() {
    let mut h = world();
    let bytes = content(600_000);
    let session = stalled(&mut h, &bytes);
    let chunk = |offset: u64, len: usize| DeliveryChunk {
        digest: None,
        session,
        offset,
        sealed: vec![0x5a; len],
    };
    from_pne(&mut h, 2, chunk(0, 1000));
    from_pne(&mut h, 0, chunk(599_990, 100));
    from_pne(&mut h, 0, chunk(0, 65_536 + 29));
    // Nobody acknowledged anything: the source's window ends at WINDOW bytes; a chunk ending
    // one byte past it is refused.
    from_pne(&mut h, 0, chunk(past_window_by(1), 100));
    from_pne(
        &mut h,
        0,
        DeliveryAck {
            session,
            have: 0,
            resume: false,
        },
    );
    from_pne(
        &mut h,
        1,
        DeliveryAck {
            session,
            have: 600_001,
            resume: false,
        },
    );
    let other = DeliveryId::from_bytes([0xee; 16]);
    from_pne(
        &mut h,
        0,
        DeliveryChunk {
            digest: None,
            session: other,
            offset: 0,
            sealed: vec![1; 100],
        },
    );
    from_pne(
        &mut h,
        1,
        DeliveryDone {
            session,
            target: pne_id(2),
            bytes: 0,
            result: DeliveryResult::Declined,
            items: Vec::new(),
        },
    );
    let got = refusals(&h);
    let want = [
        (2, "only the session's source sends its chunks"),
        (0, "past the content's size"),
        (0, "larger than the session's chunk size"),
        (0, "past the window its targets allowed"),
        (0, "only a target acknowledges"),
        (1, "past the content's size"),
        (0, "no such session here"),
        (1, "ends only its own part"),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((from, reason), (i, text)) in got.iter().zip(want) {
        assert_eq!(*from, pne_id(i).to_string());
        assert!(reason.contains(text), "{reason} (wanted {text})");
    }
    // Nothing was relayed to a target, and nobody's part ended.
    for i in [1, 2] {
        assert!(
            h.delivered(Party::Gw, Party::Pne(i))
                .iter()
                .all(|e| !matches!(e.body, Body::DeliveryChunk(_) | Body::DeliveryDone(_))),
            "PNE {i}"
        );
    }
    assert!(
        h.delivered(Party::Gw, Party::Pne(0))
            .iter()
            .all(|e| !matches!(e.body, Body::DeliveryDone(_)))
    );
}

#[test]
fn a_target_takes_a_chunk_only_at_its_place_and_ends_on_one_that_does_not_open() {
    let mut h = world();
    let bytes = content(200_000);
    let session = stalled(&mut h, &bytes);
    h.clear_hook();
    let gw = h.gw_cfg.id.clone();
    let to_pne1 = |h: &mut Harness, c: DeliveryChunk| {
        let env = Envelope::notify(
            9_500 + h.log.len() as u64,
            Address::Entity(gw.clone()),
            Address::Entity(pne_id(1)),
            c,
        );
        h.inject(Party::Gw, Party::Pne(1), plain(&env));
        h.pump();
    };
    // Out of place (a gap): it is told again what it has, and nothing is written.
    to_pne1(
        &mut h,
        DeliveryChunk {
            digest: None,
            session,
            offset: 65_536,
            sealed: vec![1; 200],
        },
    );
    let acks: Vec<DeliveryAck> = h
        .delivered(Party::Pne(1), Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryAck(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks.last(),
        Some(&DeliveryAck {
            session,
            have: 0,
            resume: true
        })
    );
    assert!(h.store.pne_inbox[&(1, session)].is_empty());
    assert!(
        h.delivery_ends(1, session).is_empty(),
        "still taking chunks"
    );
    // At its place, but not opening under the session's key: the session ends, refused.
    to_pne1(
        &mut h,
        DeliveryChunk {
            digest: None,
            session,
            offset: 0,
            sealed: vec![1; 200],
        },
    );
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::Failed)]
    );
    assert_eq!(
        h.store.deliveries[&(session, pne_id(1))].ended,
        Some((0, DeliveryResult::Failed.code()))
    );
}

#[test]
fn a_target_ends_only_its_own_part_and_only_once() {
    let mut h = world();
    let bytes = content(10_000);
    let session = push(&mut h, &[1, 2], &bytes);
    let done = |target: usize| {
        minicbor::to_vec(DeliveryDone {
            session,
            target: pne_id(target),
            bytes: 1,
            result: DeliveryResult::Failed,
            items: Vec::new(),
        })
        .unwrap()
    };
    assert_eq!(
        call(&mut h, 1, DELIVERY_DONE, done(2)),
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(
        call(&mut h, 1, DELIVERY_DONE, done(1)),
        Err(ErrorCode::NotFound)
    );
    assert_eq!(
        call(&mut h, 0, DELIVERY_DONE, done(0)),
        Err(ErrorCode::NotFound)
    );
    // The records kept what the targets said first.
    for i in [1, 2] {
        assert_eq!(
            h.store.deliveries[&(session, pne_id(i))].ended,
            Some((10_000, DeliveryResult::Delivered.code()))
        );
    }
}

/// A Delivery Route as the WAN carries it to the PN GW, from `from`.
fn route_from(h: &mut Harness, from: Address, route: cpns_wire::DeliveryRoute) {
    let env = Envelope::notify(
        9_900 + h.log.len() as u64,
        from,
        Address::Entity(h.gw_cfg.id.clone()),
        route,
    );
    h.inject(Party::Server, Party::Gw, plain(&env));
    h.pump();
}

#[test]
fn a_pn_gw_takes_a_route_only_from_the_server_once_for_a_pn_it_serves() {
    let mut h = world();
    let bytes = content(100_000);
    let session = stalled(&mut h, &bytes);
    h.clear_hook();
    let pn = h.joined(0).unwrap().pn_id;
    let route = |session, pn_id, targets: Vec<EntityId>| cpns_wire::DeliveryRoute {
        session,
        pn_id,
        source: pne_id(0),
        targets,
        size: 100_000,
        chunk: 65_536,
        from_server: false,
        to_pn: None,
        to_server: false,
    };
    // The same session again, naming PNE 2 alone: not taken (the route stays as it was), so
    // an acknowledgement of PNE 2 alone moves nothing for the source.
    route_from(&mut h, Address::Server, route(session, pn, vec![pne_id(2)]));
    // A route that does not come from the server: not taken.
    let forged = DeliveryId::from_bytes([0x77; 16]);
    route_from(
        &mut h,
        Address::Entity(pne_id(1)),
        route(forged, pn, vec![pne_id(2)]),
    );
    from_pne(
        &mut h,
        0,
        DeliveryChunk {
            digest: None,
            session: forged,
            offset: 0,
            sealed: vec![1; 100],
        },
    );
    assert!(
        refusals(&h)
            .iter()
            .any(|(_, r)| r.contains("no such session here")),
        "{:?}",
        refusals(&h)
    );
    // A route for a PN this PN GW does not serve: refused.
    let elsewhere = DeliveryId::from_bytes([0x78; 16]);
    route_from(
        &mut h,
        Address::Server,
        route(
            elsewhere,
            cpns_wire::PnId::from_bytes([0x55; 16]),
            vec![pne_id(1)],
        ),
    );
    assert!(h.gw_events().into_iter().any(|e| matches!(e,
        crate::gateway::GatewayEvent::DeliveryRefused { session: s, reason, .. }
            if *s == elsewhere && reason.contains("does not serve"))));
    // A fresh route from the server for a PN it serves is taken: its source's chunks go.
    let fresh = DeliveryId::from_bytes([0x79; 16]);
    route_from(&mut h, Address::Server, route(fresh, pn, vec![pne_id(2)]));
    from_pne(
        &mut h,
        0,
        DeliveryChunk {
            digest: None,
            session: fresh,
            offset: 0,
            sealed: vec![1; 100],
        },
    );
    assert!(
        h.delivered(Party::Gw, Party::Pne(2))
            .iter()
            .any(|e| matches!(&e.body,
        Body::DeliveryChunk(c) if c.session == fresh))
    );
    // The first session kept both its targets: PNE 2's acknowledgement alone tells the source
    // nothing.
    let told_before = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .filter(|e| matches!(&e.body, Body::DeliveryAck(a) if a.session == session))
        .count();
    from_pne(
        &mut h,
        2,
        DeliveryAck {
            session,
            have: 0,
            resume: true,
        },
    );
    let told_after = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .filter(|e| matches!(&e.body, Body::DeliveryAck(a) if a.session == session))
        .count();
    assert_eq!(told_before, told_after, "PNE 1 has not acknowledged yet");
}

#[test]
fn a_pn_gw_relays_a_bounded_number_of_sessions() {
    let mut h = world();
    let pn = h.joined(0).unwrap().pn_id;
    for n in 0..=crate::gateway::delivery::MAX_ROUTES {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        route_from(
            &mut h,
            Address::Server,
            cpns_wire::DeliveryRoute {
                session: DeliveryId::from_bytes(id),
                pn_id: pn,
                source: pne_id(0),
                targets: vec![pne_id(1)],
                size: 10,
                chunk: 65_536,
                from_server: false,
                to_pn: None,
                to_server: false,
            },
        );
    }
    let refused: Vec<_> = h
        .gw_events()
        .into_iter()
        .filter(|e| {
            matches!(e, crate::gateway::GatewayEvent::DeliveryRefused { reason, .. }
            if reason.contains("no room"))
        })
        .collect();
    assert_eq!(refused.len(), 1, "only the one past the bound");
}

#[test]
fn a_target_whose_link_drops_midway_resumes_from_what_it_wrote() {
    let mut h = world();
    let bytes = content(600_000);
    // The TV's link drops after its fourth chunk: what the PN GW sends it after that is lost.
    let mut seen = 0;
    h.set_hook(move |f| {
        if f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            seen += 1;
            if seen > 4 {
                return Action::Drop;
            }
        }
        Action::Deliver
    });
    let session = push(&mut h, &[1, 2], &bytes);
    let have = h.store.pne_inbox[&(1, session)].len();
    assert_eq!(have, 4 * 65_536, "four chunks written before the drop");
    assert!(
        h.delivery_sent(0, session).is_none(),
        "not done: the TV is behind"
    );
    // A new link: the machine of the next link takes the sessions the old one kept.
    h.clear_hook();
    let kept = h.pnes[1].take_deliveries();
    assert!(!kept.is_empty());
    h.relink(1, 31, move |p| p.restore_deliveries(kept));
    h.restarted_at = h.events.len();
    let mark = h.log.len();
    link_again(&mut h, 1);
    // It said what it has; the source went on from there, and both targets have it whole.
    let resumed = h
        .delivered(Party::Pne(1), Party::Gw)
        .into_iter()
        .any(|e| matches!(e.body, Body::DeliveryAck(a) if a.resume && a.have == have as u64));
    assert!(resumed);
    // The PN GW tells the source where its targets are, and no one else: the target that
    // linked again is told nothing of a session it does not send.
    let told_target = h.log[mark..]
        .iter()
        .any(|f| (f.from, f.to) == (Party::Gw, Party::Pne(1)) && f.message == "DeliveryAck");
    assert!(!told_target, "an acknowledgement to a target");
    assert_received(&h, &[1, 2], session, &bytes);
    assert!(h.delivery_sent(0, session).is_some());
    // Nothing was written twice: the TV's writes ran from its offset on.
    assert_eq!(
        h.store.deliveries[&(session, pne_id(1))].ended,
        Some((600_000, DeliveryResult::Delivered.code()))
    );
}

/// PNE 0 pushes 600 kB to PNEs 1 and 2, and the PN GW dies after relaying its fourth chunk to
/// each; it restarts from its store, and the PNEs, which stayed up, hold their sessions for
/// their next links: the session and its content.
fn restarted_midway(h: &mut Harness) -> (DeliveryId, Vec<u8>) {
    let bytes = content(600_000);
    let mut seen = 0;
    h.set_hook(move |f| {
        if f.from == Party::Gw && f.message == "DeliveryChunk" {
            seen += 1;
            if seen > 8 {
                return Action::Drop;
            }
        }
        Action::Deliver
    });
    let session = push(h, &[1, 2], &bytes);
    h.clear_hook();
    assert!(h.delivery_sent(0, session).is_none());
    assert!(
        h.store.gw_routes.contains_key(&session),
        "the route is kept"
    );
    let kept: Vec<_> = (0..3).map(|i| h.pnes[i].take_deliveries()).collect();
    h.restart_from_stores(&[PneSpec::trusted(); 3]);
    for (i, k) in kept.into_iter().enumerate() {
        h.pnes[i].restore_deliveries(k);
    }
    (session, bytes)
}

/// PNE `i` links again to the PN GW and catches up.
pub(super) fn link_again(h: &mut Harness, i: usize) {
    let now = h.now();
    h.pnes[i].start_discovery(now).unwrap();
    h.pump();
    let now = h.now();
    h.pnes[i].rejoin(now).unwrap();
    h.pump();
}

/// [`restarted_midway`], then the PNEs link again in `order`.
fn pushed_through_a_restart(h: &mut Harness, order: [usize; 3]) -> (DeliveryId, Vec<u8>) {
    let (session, bytes) = restarted_midway(h);
    for i in order {
        link_again(h, i);
    }
    (session, bytes)
}

#[test]
fn a_pn_gw_restarted_midway_relays_the_session_again_as_its_pnes_resume_it() {
    let mut h = world();
    let (session, bytes) = pushed_through_a_restart(&mut h, [0, 1, 2]);
    for i in [1, 2] {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
        assert_eq!(
            h.store.deliveries[&(session, pne_id(i))].ended,
            Some((600_000, DeliveryResult::Delivered.code()))
        );
    }
    assert!(h.delivery_sent(0, session).is_some());
    assert!(
        h.store.gw_routes.is_empty(),
        "forgotten once every target ended"
    );
}

#[test]
fn a_source_that_links_again_after_its_targets_resumed_is_told_where_they_are() {
    let mut h = world();
    // The targets link again first; the source last.
    let (session, bytes) = pushed_through_a_restart(&mut h, [1, 2, 0]);
    assert_received(&h, &[1, 2], session, &bytes);
    assert!(h.delivery_sent(0, session).is_some());
}

#[test]
fn a_delivery_held_for_the_application_moves_only_once_it_is_accepted() {
    let ask = PneSpec {
        deliveries: crate::pne::InvitationPolicy::Ask {
            within: std::time::Duration::from_secs(30),
        },
        ..PneSpec::trusted()
    };
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    let mut h = Harness::with_server(&[PneSpec::trusted(), ask, ask], cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let bytes = content(200_000);
    let session = push(&mut h, &[1, 2], &bytes);
    // Held: told, nothing opened, nothing sent.
    for i in [1, 2] {
        assert_eq!(
            h.pnes[i].delivery_sessions(),
            (vec![], vec![session]),
            "PNE {i}"
        );
    }
    assert_eq!(h.pnes[0].delivery_sessions(), (vec![session], vec![]));
    assert!(h.log.iter().all(|f| f.message != "DeliveryChunk"));
    assert!(h.store.pne_inbox.is_empty());
    // A session it was not offered, or an answer given twice, is refused.
    let now = h.now();
    let other = DeliveryId::from_bytes([0x42; 16]);
    assert!(matches!(
        h.pnes[1].answer_delivery(now, other, true),
        Err(CommandError::NoDelivery(s)) if s == other
    ));
    // PNE 2 kept more than offered under this session's name: its acceptance fails, cleanly.
    h.store.pne_inbox.insert((2, session), vec![0; 200_001]);
    h.pnes[2].answer_delivery(now, session, true).unwrap();
    h.pump();
    assert_eq!(
        h.delivery_ends(2, session),
        [(pne_id(2), DeliveryResult::Failed)]
    );
    assert!(!h.store.pne_inbox.contains_key(&(2, session)), "discarded");
    // PNE 1 accepts: it all moves.
    let now = h.now();
    h.pnes[1].answer_delivery(now, session, true).unwrap();
    assert!(matches!(
        h.pnes[1].answer_delivery(now, session, true),
        Err(CommandError::NoDelivery(_))
    ));
    h.pump();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
    assert!(h.delivery_sent(0, session).is_some());
    for i in 0..3 {
        assert_eq!(h.pnes[i].delivery_sessions(), (vec![], vec![]), "PNE {i}");
    }
}

#[test]
fn a_target_that_cannot_record_its_end_says_so_and_still_keeps_what_it_received() {
    let mut h = world();
    let pn = h.joined(0).unwrap().pn_id;
    let bytes = content(100_000);
    // The hash of what PNE 1 wrote is long in coming; PNE 1 leaves the PN meanwhile, and so
    // holds no key to call the server under when its part ends.
    h.store.held_finishes = Some(vec![]);
    let session = push(&mut h, &[1], &bytes);
    let held = h.store.held_finishes.take().unwrap();
    assert_eq!(held.len(), 1, "PNE 1 wrote it all and asked for its hash");
    let now = h.now();
    h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    let (i, s, sha256) = held[0].clone();
    h.finish_receive(i, s, &sha256);
    h.pump();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
    assert!(h.pne_events(1).iter().any(|e| matches!(
        e,
        PneEvent::FlowFailed {
            flow: Flow::Delivery,
            reason: Failure::NotStarted(CommandError::NoSecureSession),
        }
    )));
    // The server's record stays open: nobody told it the end.
    assert_eq!(h.store.deliveries[&(session, pne_id(1))].ended, None);
}

/// A chunk from the PN GW to PNE `to`, as its link carries it.
fn chunk_to(h: &mut Harness, to: usize, c: DeliveryChunk) {
    let env = Envelope::notify(
        9_700 + h.log.len() as u64,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Entity(pne_id(to)),
        c,
    );
    h.inject(Party::Gw, Party::Pne(to), plain(&env));
    h.pump();
}

/// `plain` sealed by the source PNE 0 as the chunk at `offset` of `session` (breaking what
/// rules it likes), given by the PN GW to PNE `to`.
fn forged(h: &mut Harness, to: usize, session: DeliveryId, offset: u64, plain: &[u8]) {
    let sealed = h.pnes[0].seal_as_source(session, offset, plain).unwrap();
    chunk_to(
        h,
        to,
        DeliveryChunk {
            digest: None,
            session,
            offset,
            sealed,
        },
    );
}

/// The acknowledgements PNE `i` sent its PN GW for `session`.
fn acks_of(h: &Harness, i: usize, session: DeliveryId) -> Vec<DeliveryAck> {
    h.delivered(Party::Pne(i), Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryAck(a) if a.session == session => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn a_target_refuses_a_chunk_larger_than_its_sessions_chunk_even_sealed_by_the_source() {
    let mut h = world();
    let session = stalled(&mut h, &content(300_000));
    let have = h.store.pne_inbox[&(1, session)].len() as u64;
    assert_eq!(
        have, 0,
        "the source waits for the targets' first word, lost"
    );
    // The source itself seals a chunk one byte over the session's chunk, at the target's
    // place and within the content's size: the target ends the session on it.
    forged(&mut h, 1, session, have, &[7; 65_537]);
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::Failed)]
    );
    assert_eq!(h.store.pne_inbox.get(&(1, session)), None, "discarded");
    // One of the chunk's size is taken.
    forged(&mut h, 2, session, have, &[7; 65_536]);
    assert_eq!(h.store.pne_inbox[&(2, session)].len() as u64, have + 65_536);
    assert!(h.delivery_ends(2, session).is_empty());
}

#[test]
fn a_target_refuses_a_chunk_running_past_the_contents_size_even_sealed_by_the_source() {
    let mut h = world();
    let session = stalled(&mut h, &content(200_000));
    let have = h.store.pne_inbox[&(1, session)].len() as u64;
    let left = 200_000 - have as usize;
    // One byte past the end: refused.
    forged(&mut h, 1, session, have, &vec![7; left + 1]);
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::Failed)]
    );
    // Empty: refused too (it would never end).
    forged(&mut h, 2, session, have, &[]);
    assert_eq!(
        h.delivery_ends(2, session),
        [(pne_id(2), DeliveryResult::Failed)]
    );
}

#[test]
fn a_target_checking_its_hash_takes_no_more_chunks() {
    let mut h = world();
    let bytes = content(100_000);
    h.store.held_finishes = Some(vec![]);
    let session = push(&mut h, &[1], &bytes);
    assert_eq!(h.store.held_finishes.as_ref().unwrap().len(), 1);
    let acks = acks_of(&h, 1, session).len();
    // The last chunk again, as the PN GW relayed it: nothing is written, nothing said.
    let last = h
        .delivered(Party::Gw, Party::Pne(1))
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) => Some(c),
            _ => None,
        })
        .next_back()
        .unwrap();
    chunk_to(&mut h, 1, last);
    assert_eq!(acks_of(&h, 1, session).len(), acks, "nothing said");
    assert_eq!(h.store.pne_inbox[&(1, session)], bytes);
    let (i, s, sha256) = h.store.held_finishes.take().unwrap().remove(0);
    h.finish_receive(i, s, &sha256);
    h.pump();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
}

#[test]
fn a_target_acknowledges_each_chunk_once_and_the_source_names_who_has_it() {
    let mut h = world();
    let bytes = content(300_000);
    let session = push(&mut h, &[1, 2], &bytes);
    // The first says where it starts (nothing yet), then one per chunk written.
    let want: Vec<u64> = (0..=4).map(|n| n * 65_536).chain([300_000]).collect();
    for i in [1, 2] {
        let haves: Vec<u64> = acks_of(&h, i, session).iter().map(|a| a.have).collect();
        assert_eq!(haves, want, "PNE {i}");
    }
    let delivered = h.pne_events(0).into_iter().find_map(|e| match e {
        PneEvent::DeliverySent {
            session: s,
            delivered,
        } if *s == session => Some(delivered.clone()),
        _ => None,
    });
    let mut delivered = delivered.unwrap();
    delivered.sort();
    assert_eq!(delivered, [pne_id(1), pne_id(2)]);
    assert!(
        h.pnes[0].take_deliveries().is_empty(),
        "nothing left to keep"
    );
}

/// An acknowledgement relayed to the source PNE 0 by its PN GW.
fn ack_to_source(h: &mut Harness, a: DeliveryAck) {
    let env = Envelope::notify(
        9_800 + h.log.len() as u64,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Entity(pne_id(0)),
        a,
    );
    h.inject(Party::Gw, Party::Pne(0), plain(&env));
    h.pump();
}

fn chunks_from_source(h: &Harness, session: DeliveryId) -> Vec<u64> {
    h.delivered(Party::Pne(0), Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) if c.session == session => Some(c.offset),
            _ => None,
        })
        .collect()
}

#[test]
fn a_source_takes_an_acknowledgement_of_every_byte_and_none_past_the_end() {
    // Of every byte (a target that resumed with all of it): the source sends what it has not
    // sent, which no longer waits on the window.
    let mut h = world();
    let session = stalled(&mut h, &content(200_000));
    assert_eq!(chunks_from_source(&h, session), [0u64; 0]);
    let last = |h: &mut Harness, have| {
        ack_to_source(
            h,
            DeliveryAck {
                session,
                have,
                resume: false,
            },
        );
        chunks_from_source(h, session)
    };
    assert_eq!(last(&mut h, 200_000), [0, 65_536, 131_072, 196_608]);
    // Past the end: ignored, nothing moves.
    let mut h = world();
    let session = stalled(&mut h, &content(200_000));
    ack_to_source(
        &mut h,
        DeliveryAck {
            session,
            have: 200_001,
            resume: false,
        },
    );
    assert_eq!(chunks_from_source(&h, session), [0u64; 0]);
}

#[test]
fn a_source_linking_again_is_told_where_its_targets_are_before_it_sends_again() {
    let mut h = world();
    let (session, bytes) = restarted_midway(&mut h);
    link_again(&mut h, 1);
    link_again(&mut h, 2);
    let have = [1, 2].map(|i| h.store.pne_inbox[&(i, session)].len() as u64);
    let least = have[0].min(have[1]);
    assert!(least > 0);
    let mark = h.log.len();
    link_again(&mut h, 0);
    let after: Vec<Envelope> = h.log[mark..]
        .iter()
        .filter(|f| {
            (f.from, f.to) == (Party::Gw, Party::Pne(0))
                || (f.from, f.to) == (Party::Pne(0), Party::Gw)
        })
        .filter_map(super::harness::Flight::env)
        .collect();
    let told = after.iter().position(|e| {
        matches!(&e.body, Body::DeliveryAck(a) if a.session == session && a.resume && a.have == least)
    });
    let first_chunk = after
        .iter()
        .position(|e| matches!(&e.body, Body::DeliveryChunk(c) if c.session == session));
    assert!(told.is_some(), "told where its targets are");
    assert!(told < first_chunk, "before it sent anything again");
    let resent: Vec<u64> = after
        .iter()
        .filter_map(|e| match &e.body {
            Body::DeliveryChunk(c) if c.session == session => Some(c.offset),
            _ => None,
        })
        .collect();
    assert!(
        resent.iter().all(|o| *o >= least),
        "nothing they have: {resent:?}"
    );
    assert_received(&h, &[1, 2], session, &bytes);
}

#[test]
fn a_restarted_pn_gw_takes_its_kept_routes_within_its_bound_and_only_of_its_pns() {
    let mut h = world();
    let pn = h.joined(0).unwrap().pn_id;
    let route = |n: u64, pn_id| {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        cpns_wire::DeliveryRoute {
            session: DeliveryId::from_bytes(id),
            pn_id,
            source: pne_id(0),
            targets: vec![pne_id(1)],
            size: 10,
            chunk: 65_536,
            from_server: false,
            to_pn: None,
            to_server: false,
        }
    };
    let max = crate::gateway::delivery::MAX_ROUTES as u64;
    // First, one of a PN it does not serve (ids sort it first).
    let stranger = route(0, cpns_wire::PnId::from_bytes([0xee; 16]));
    h.store.gw_routes.insert(stranger.session, stranger.clone());
    for n in 1..=max {
        let r = route(n, pn);
        h.store.gw_routes.insert(r.session, r);
    }
    h.restart_from_stores(&[PneSpec::trusted(); 3]);
    let relayed = h.gw.relayed_deliveries();
    assert_eq!(relayed.len(), crate::gateway::delivery::MAX_ROUTES);
    assert!(!relayed.contains(&stranger.session));
    // One past the bound is left out.
    let mut h = world();
    for n in 1..=max + 1 {
        let r = route(n, pn);
        h.store.gw_routes.insert(r.session, r);
    }
    h.restart_from_stores(&[PneSpec::trusted(); 3]);
    let relayed = h.gw.relayed_deliveries();
    assert_eq!(relayed.len(), crate::gateway::delivery::MAX_ROUTES);
    assert!(!relayed.contains(&route(max + 1, pn).session));
}

/// PNE 0 offers `bytes` to PNE 1 with `outbox` as its file: the session and why its source
/// ended it.
fn source_failure(h: &mut Harness, bytes: &[u8], outbox: Vec<u8>) -> (DeliveryId, String) {
    h.store.pne_outbox.insert(0, outbox);
    let now = h.now();
    let id = h.pnes[0].offer_delivery(now, &offer(&[1], bytes)).unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session, .. } = *h.outcome(0, id) else {
        panic!("granted")
    };
    let why = h.pne_events(0).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session: s,
            result: DeliveryResult::Failed,
            reason: Some(why),
            ..
        } if *s == session => Some(why.clone()),
        _ => None,
    });
    assert_eq!(h.pnes[0].delivery_sessions(), (vec![], vec![]));
    (session, why.unwrap())
}

#[test]
fn a_source_whose_file_is_shorter_than_offered_ends_its_session_saying_so() {
    let mut h = world();
    let bytes = content(200_000);
    // The file shrank after the offer: the second read fails (as a read of an exact length
    // does at the end of a file).
    let (session, why) = source_failure(&mut h, &bytes, bytes[..100_000].to_vec());
    assert_eq!(
        chunks_from_source(&h, session),
        [0],
        "the short one did not go"
    );
    assert_eq!(why, "read past the end");
    // Its target was told it stopped, at once: it keeps nothing and its record says so.
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::Stopped)]
    );
    assert!(!h.store.pne_inbox.contains_key(&(1, session)), "discarded");
    assert_eq!(
        h.store.deliveries[&(session, pne_id(1))].ended,
        Some((65_536, DeliveryResult::Stopped.code()))
    );
    // A driver that answers with another length than asked: the source ends it, saying so.
    let mut h = world();
    h.store.read_fault = Some(1_000);
    let (session, why) = source_failure(&mut h, &bytes, bytes.clone());
    assert_eq!(chunks_from_source(&h, session), [0u64; 0]);
    assert!(
        why.contains("1000 bytes read at 0 where 65536 were asked"),
        "{why}"
    );
}

#[test]
fn an_offer_is_checked_at_each_bound() {
    use crate::server::delivery::{MAX_SIZE, MAX_TARGETS, check_offer};
    let source = pne_id(0);
    let good = || offer(&[1], b"content");
    let with = |f: &dyn Fn(&mut DeliveryOffer)| {
        let mut o = good();
        f(&mut o);
        check_offer(&o, &source)
    };
    assert_eq!(check_offer(&good(), &source), Ok(()));
    // Texts: 1 to their most characters, none a control character.
    assert!(with(&|o| o.service_id = String::new()).is_err());
    assert!(with(&|o| o.service_id = "s".repeat(64)).is_ok());
    assert!(with(&|o| o.service_id = "s".repeat(65)).is_err());
    assert!(with(&|o| o.service_id = "a\u{7}b".into()).is_err());
    assert!(with(&|o| o.name = "n".repeat(255)).is_ok());
    assert!(with(&|o| o.name = "n".repeat(256)).is_err());
    assert!(with(&|o| o.media_type = "m".repeat(127)).is_ok());
    assert!(with(&|o| o.media_type = "m".repeat(128)).is_err());
    // Targets: at most 16 (none: every other member), not the source, none twice.
    let many = |n: usize| (1..=n).map(|i| pne_id(i + 2)).collect::<Vec<_>>();
    assert!(with(&|o| o.targets = many(MAX_TARGETS)).is_ok());
    assert!(with(&|o| o.targets = many(MAX_TARGETS + 1)).is_err());
    assert!(with(&|o| o.targets = vec![]).is_ok());
    assert!(with(&|o| o.targets = vec![pne_id(1), pne_id(1)]).is_err());
    assert!(with(&|o| o.targets = vec![pne_id(0)]).is_err());
    // Size: 1 byte to 64 GiB.
    assert!(with(&|o| o.size = 0).is_err());
    assert!(with(&|o| o.size = 1).is_ok());
    assert!(with(&|o| o.size = MAX_SIZE).is_ok());
    assert!(with(&|o| o.size = MAX_SIZE + 1).is_err());
}

#[test]
fn the_window_is_seven_chunks_past_what_every_target_has() {
    let mut h = world();
    // Each target says where it starts; what it says after is lost.
    h.set_hook(|f| {
        if f.message == "DeliveryAck"
            && let Some(Body::DeliveryAck(a)) = f.env().map(|e| e.body)
            && a.have > 0
        {
            return Action::Drop;
        }
        Action::Deliver
    });
    let session = push(&mut h, &[1, 2], &content(600_000));
    let seven: Vec<u64> = (0..7).map(|i| i * 65_536).collect();
    assert_eq!(
        chunks_from_source(&h, session),
        seven,
        "seven chunks, then it waits"
    );
}

#[test]
fn a_session_is_recorded_at_its_services_tariff_whoever_sends_it() {
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    cfg.tariff.insert("video".into(), 2);
    let specs = [PneSpec::trusted(); 3];
    let mut h = Harness::with_server(&specs, cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let session = push(&mut h, &[1], &content(10_000));
    assert_eq!(h.store.deliveries[&(session, pne_id(1))].per_mb, Some(2));
    // Another service, no tariff: not chargeable.
    h.store.pne_outbox.insert(0, content(10_000));
    let mut free = offer(&[2], &content(10_000));
    free.service_id = "photos".into();
    let now = h.now();
    let id = h.pnes[0].offer_delivery(now, &free).unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session, .. } = *h.outcome(0, id) else {
        panic!("granted")
    };
    assert_eq!(h.store.deliveries[&(session, pne_id(2))].per_mb, None);
}

#[test]
fn a_target_takes_one_session_at_a_time_so_its_link_holds_one_window() {
    let mut h = world();
    let a = content(300_000);
    let b = seeded_content(200_000, 9);
    // Two sessions offered to PNE 1 at once, by PNE 0 and PNE 2.
    h.store.pne_outbox.insert(0, a.clone());
    h.store.pne_outbox.insert(2, b.clone());
    let now = h.now();
    let first = h.pnes[0].offer_delivery(now, &offer(&[1], &a)).unwrap();
    let mut second_offer = offer(&[1], &b);
    second_offer.name = "second.mp4".into();
    let second = h.pnes[2].offer_delivery(now, &second_offer).unwrap();
    h.pump();
    let session = |h: &Harness, i, id| match h.outcome(i, id) {
        Outcome::DeliveryGranted { session, .. } => *session,
        other => panic!("{other:?}"),
    };
    let (sa, sb) = (session(&h, 0, first), session(&h, 2, second));
    // Both arrived whole.
    assert_eq!(h.store.pne_received.get(&(1, sa)), Some(&a));
    assert_eq!(h.store.pne_received.get(&(1, sb)), Some(&b));
    // No chunk of one reached PNE 1 between two chunks of the other: one moved, then the
    // other.
    let order: Vec<DeliveryId> = h
        .delivered(Party::Gw, Party::Pne(1))
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) => Some(c.session),
            _ => None,
        })
        .collect();
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "{order:?}");
}

#[test]
fn a_target_whose_chunks_stop_coming_ends_failed_and_the_next_session_moves() {
    let mut h = world();
    let a = content(300_000);
    let b = seeded_content(100_000, 11);
    // Session A's chunks never reach PNE 1 (its source or PN GW stopped); session B, offered
    // to PNE 1 after it, waits behind A.
    let mut first = None;
    h.set_hook(move |f| {
        if f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            let s = f.env().and_then(|e| match e.body {
                Body::DeliveryChunk(c) => Some(c.session),
                _ => None,
            });
            if first.is_none() {
                first = s;
            }
            if s == first {
                return Action::Drop;
            }
        }
        Action::Deliver
    });
    let sa = push(&mut h, &[1], &a);
    h.store.pne_outbox.insert(2, b.clone());
    let now = h.now();
    let id = h.pnes[2].offer_delivery(now, &offer(&[1], &b)).unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session: sb, .. } = *h.outcome(2, id) else {
        panic!("granted")
    };
    assert!(
        !h.store.pne_received.contains_key(&(1, sb)),
        "B waits behind A"
    );
    // Two flow timeouts without a chunk of A: A ends failed, saying why; B moves.
    h.advance(std::time::Duration::from_secs(61));
    let reason = h.pne_events(1).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session,
            result: DeliveryResult::Failed,
            reason: Some(r),
            ..
        } if *session == sa => Some(r.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("no chunk came for 60 s"));
    assert_eq!(h.store.pne_received.get(&(1, sb)), Some(&b));
    assert_eq!(
        h.store.deliveries[&(sa, pne_id(1))].ended,
        Some((0, DeliveryResult::Failed.code()))
    );
}

#[test]
fn chunks_go_in_the_sources_first_suite_and_a_target_that_does_not_take_it_declines() {
    use cpns_crypto::Suite::{Aes256Gcm as Aes, ChaCha20Poly1305 as ChaCha};
    let specs = [PneSpec::trusted(); 3];
    let mut h = Harness::new(&specs);
    // PNE 0 wants ChaCha20-Poly1305 first; PNE 1 takes both; PNE 2 only AES-256-GCM.
    h.pne_cfgs[0].suites = vec![ChaCha, Aes];
    h.pne_cfgs[2].suites = vec![Aes];
    h.restart_from_stores(&specs);
    h.discover_all();
    h.setup(0, SetupType::All);
    let bytes = content(200_000);
    let session = push(&mut h, &[1, 2], &bytes);
    // The chunks went in the source's first suite: PNE 1 opened them all, PNE 2, which does
    // not take it, declined saying so (had they gone in AES-256-GCM, PNE 2 would have them).
    assert_received(&h, &[1], session, &bytes);
    let declined = h.pne_events(2).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session: s,
            result: DeliveryResult::Declined,
            reason,
            ..
        } if *s == session => Some(reason.clone()),
        _ => None,
    });
    let reason = declined.flatten().unwrap_or_default();
    assert!(reason.contains("AEAD suite"), "{reason}");
    assert!(!h.store.pne_received.contains_key(&(2, session)));
    assert_eq!(
        h.store.deliveries[&(session, pne_id(2))].ended,
        Some((0, DeliveryResult::Declined.code()))
    );
    // PNE 1 wants AES-256-GCM first: its chunks go in it, and PNE 2 takes them.
    let more = seeded_content(100_000, 12);
    h.store.pne_outbox.insert(1, more.clone());
    let now = h.now();
    let id = h.pnes[1].offer_delivery(now, &offer(&[2], &more)).unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session: s2, .. } = *h.outcome(1, id) else {
        panic!("granted")
    };
    assert_received(&h, &[2], s2, &more);
}

/// A target's acceptance lost on the way (its PN GW's WAN session lost and set up again as it
/// accepted): its source waits for it, the target for a chunk. A flow timeout into the wait the
/// target says again what it has, once, and it all moves; a target that hears nothing more
/// still gives up at two flow timeouts.
#[test]
fn a_target_whose_acceptance_was_lost_says_it_again_and_the_content_moves() {
    let mut h = world();
    let mut dropped = false;
    h.set_hook(move |f| {
        if f.from == Party::Pne(1) && f.message == "DeliveryAck" && !dropped {
            dropped = true;
            return Action::Drop;
        }
        Action::Deliver
    });
    let bytes = content(200_000);
    let session = push(&mut h, &[1], &bytes);
    h.clear_hook();
    assert!(
        chunks_from_source(&h, session).is_empty(),
        "the source waits"
    );
    assert_eq!(acks_of(&h, 1, session).len(), 0, "its one word was lost");
    // Its driver is asked to wake it then, a flow timeout into the wait.
    assert_eq!(
        h.pnes[1].poll_timeout(),
        Some(h.now() + std::time::Duration::from_secs(30))
    );
    h.advance(std::time::Duration::from_secs(29));
    assert!(
        acks_of(&h, 1, session).is_empty(),
        "not before a flow timeout"
    );
    h.advance(std::time::Duration::from_secs(2));
    let said = acks_of(&h, 1, session);
    assert!(
        said.first().is_some_and(|a| a.have == 0 && a.resume),
        "{said:?}"
    );
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(1)]));
}

/// A target that says again what it has and still gets nothing says it once a wait, and gives
/// up at two flow timeouts as before.
#[test]
fn a_target_says_again_what_it_has_once_a_wait_then_gives_up() {
    let mut h = world();
    h.set_hook(move |f| {
        if f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            return Action::Drop;
        }
        Action::Deliver
    });
    let bytes = content(200_000);
    let session = push(&mut h, &[1], &bytes);
    let before = acks_of(&h, 1, session).len();
    h.advance(std::time::Duration::from_secs(31));
    let once = acks_of(&h, 1, session);
    assert_eq!(once.len(), before + 1, "{once:?}");
    assert!(once.last().is_some_and(|a| a.resume && a.have == 0));
    h.advance(std::time::Duration::from_secs(20));
    assert_eq!(acks_of(&h, 1, session).len(), before + 1, "once a wait");
    h.advance(std::time::Duration::from_secs(10));
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::Failed)]
    );
}

/// A target gone for good midway (its device died: its link closed, it says nothing more): its
/// source, waiting on it, gives up after two flow timeouts of silence, telling the target's
/// part failed and why, and its PN GW drops the route rather than hold it for a target that
/// never comes back.
#[test]
fn a_source_whose_target_is_gone_gives_up_and_the_route_goes() {
    let mut h = world();
    let mut chunks = 0;
    h.set_hook(move |f| {
        if f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            chunks += 1;
            if chunks > 2 {
                return Action::Drop;
            }
        }
        if f.from == Party::Pne(1) && chunks > 2 {
            return Action::Drop;
        }
        Action::Deliver
    });
    let bytes = content(600_000);
    let session = push(&mut h, &[1], &bytes);
    let now = h.now();
    h.gw.link_closed(now, crate::gateway::LinkId(1));
    h.pump();
    assert!(
        h.delivery_sent(0, session).is_none(),
        "it waits on its target"
    );
    // Its driver is asked to wake it when it gives up.
    assert_eq!(
        h.pnes[0].poll_timeout(),
        Some(now + std::time::Duration::from_secs(60))
    );
    h.advance(std::time::Duration::from_secs(59));
    assert!(
        h.delivery_sent(0, session).is_none(),
        "not before two flow timeouts"
    );
    h.advance(std::time::Duration::from_secs(2));
    let why = h.pne_events(0).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session: s,
            target,
            result: DeliveryResult::Failed,
            reason: Some(r),
        } if *s == session && *target == pne_id(1) => Some(r.clone()),
        _ => None,
    });
    let why = why.expect("the target's part ended failed at the source");
    assert!(why.contains("no word from it for 60 s"), "{why}");
    assert_eq!(h.delivery_sent(0, session), Some(vec![]));
    assert_eq!(h.pnes[0].delivery_sessions().0, Vec::<DeliveryId>::new());
    assert!(h.gw.relayed_deliveries().is_empty(), "the route is gone");
}

/// Once every byte is acknowledged the source waits for its targets' ends without a limit: a
/// target checks a large file's hash for as long as it takes.
#[test]
fn a_source_waits_without_a_limit_once_every_byte_is_acknowledged() {
    let mut h = world();
    h.store.held_finishes = Some(Vec::new());
    let bytes = content(200_000);
    let session = push(&mut h, &[1], &bytes);
    assert!(
        h.delivery_sent(0, session).is_none(),
        "the target is checking"
    );
    h.advance(std::time::Duration::from_secs(120));
    assert!(h.delivery_ends(0, session).is_empty(), "it did not give up");
    let (i, s, sha256) = h.store.held_finishes.take().unwrap().remove(0);
    h.finish_receive(i, s, &sha256);
    h.pump();
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(1)]));
}
