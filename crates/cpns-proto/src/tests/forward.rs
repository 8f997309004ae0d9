//! Forwarding between PNs (004 §5.5.8; docs/services.md, "Forwarding between PNs"): a PNE
//! offers content to members of another PN. Behind another PN GW, the server's two sessions
//! relay it, the source's chunks crossing each WAN session once, still sealed end to end:
//! neither PN GW can read or alter it unseen. Behind the same PN GW, that PN GW relays it
//! between its two PNs. Only the source's user's PNs, or its own devices, are reached; a
//! session ending keeps the forward for its PN GW's next session, which goes on with it (or it
//! ends at both ends past its grace); every message out of its place is refused.

use sha2::Digest;

use cpns_wire::{
    Body, ControlAction, DeliveryAck, DeliveryChunk, DeliveryDone, DeliveryId, DeliveryOffer,
    DeliveryResult, Envelope, ErrorCode, HashBytes, PnId, SetupType,
};

use super::delivery::seeded_content;
use super::harness::{Action, Harness, Party, plain, pne_id, rewrite};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};
use crate::server::ServerEvent;
use crate::server::delivery::WINDOW;

/// PNEs 0 and 1 in PN A behind `gw-1`; PNEs 2 and 3 in PN B behind `gw-2`, of user
/// `far_owner` (with its PNEs); every PNE with its SK_PNE. The PN B's id.
fn two_pns(far_owner: &str) -> (Harness, PnId) {
    let specs = [PneSpec::trusted(); 4];
    let mut h = Harness::with_far(&specs, 2, far_owner);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    h.setup(2, SetupType::Invite(vec![pne_id(3)]));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    let b = h.joined(2).expect("PNE 2 set up PN B").pn_id;
    assert_eq!(h.joined(3).map(|i| i.pn_id), Some(b));
    (h, b)
}

/// PNEs 0 and 1 in PN A, PNEs 2 and 3 in PN B, both behind the one PN GW. PN B's id.
fn two_pns_one_gateway() -> (Harness, PnId) {
    let specs = [PneSpec::trusted(); 4];
    let mut h = Harness::new(&specs);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    h.setup(2, SetupType::Invite(vec![pne_id(3)]));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    let b = h.joined(2).expect("PNE 2 set up PN B").pn_id;
    assert_ne!(h.joined(0).map(|i| i.pn_id), Some(b));
    (h, b)
}

fn offer(to: &[usize], bytes: &[u8], to_pn: PnId) -> DeliveryOffer {
    DeliveryOffer {
        service_id: "video".into(),
        targets: to.iter().map(|i| pne_id(*i)).collect(),
        name: "holiday.mp4".into(),
        media_type: "video/mp4".into(),
        size: bytes.len() as u64,
        sha256: Some(HashBytes(sha2::Sha256::digest(bytes).into())),
        to_pn: Some(to_pn),
        held: false,
        requires: Vec::new(),
        suite: None,
        group: None,
        user: None,
        more: Vec::new(),
    }
}

/// PNE 0 offers `bytes` to `to` in PN `to_pn`: the session granted, or the refusal's code.
fn forward(
    h: &mut Harness,
    to: &[usize],
    bytes: &[u8],
    to_pn: PnId,
) -> Result<DeliveryId, ErrorCode> {
    h.store.pne_outbox.insert(0, bytes.to_vec());
    let now = h.now();
    let id = h.pnes[0]
        .offer_delivery(now, &offer(to, bytes, to_pn))
        .unwrap();
    h.pump();
    match h.completion(0, id).map(|c| &c.result) {
        Some(Ok(Outcome::DeliveryGranted { session, .. })) => Ok(*session),
        Some(Err(crate::Failure::Refused(e))) => Err(e.code),
        other => panic!("{other:?}"),
    }
}

fn chunks(h: &Harness, from: Party, to: Party, session: DeliveryId) -> Vec<u64> {
    h.delivered(from, to)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) if c.session == session => Some(c.offset),
            _ => None,
        })
        .collect()
}

/// No frame anywhere held 32 bytes of `bytes` in the clear.
fn never_in_the_clear(h: &Harness, bytes: &[u8]) {
    for probe in (0..bytes.len() - 32).step_by(40_000) {
        let stretch = &bytes[probe..probe + 32];
        assert!(
            h.log
                .iter()
                .all(|f| !f.body.windows(32).any(|w| w == stretch)),
            "content at {probe} crossed in the clear"
        );
    }
}

#[test]
fn content_is_forwarded_to_another_pn_gw_through_the_server_each_wan_carrying_it_once() {
    let (mut h, b) = two_pns("alice");
    let bytes = seeded_content(300_000, 7);
    let session = forward(&mut h, &[2, 3], &bytes, b).unwrap();
    for i in [2, 3] {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
        let told = h.pne_events(i).into_iter().any(|e| {
            matches!(e, PneEvent::DeliveryReceived { session: s, from, .. }
                if *s == session && *from == pne_id(0))
        });
        assert!(told, "PNE {i} was told who sent it");
        let record = &h.store.deliveries[&(session, pne_id(i))];
        assert_eq!(
            record.ended,
            Some((300_000, DeliveryResult::Delivered.code()))
        );
        assert_eq!(record.charged.as_str(), "alice");
        assert_eq!(record.pn_id, b, "recorded in the targets' PN");
    }
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(2), pne_id(3)])
    );
    assert!(h.delivery_ends(0, session).is_empty());
    // Each chunk went up the source's WAN once, and down the targets' once, for two targets.
    let n = 300_000_usize.div_ceil(65_536);
    let up = chunks(&h, Party::Gw, Party::Server, session);
    let down = chunks(&h, Party::FarServer, Party::FarGw, session);
    assert_eq!(up.len(), n, "{up:?}");
    assert_eq!(down, up);
    assert_eq!(chunks(&h, Party::FarGw, Party::Pne(2), session).len(), n);
    assert!(chunks(&h, Party::Gw, Party::Pne(1), session).is_empty());
    never_in_the_clear(&h, &bytes);
    // Both sessions forgot the forward, and both PN GWs the route.
    let relayed = h
        .gw_events()
        .into_iter()
        .filter(|e| {
            matches!(e, crate::gateway::GatewayEvent::DeliveryRelayed { session: s, .. }
                if *s == session)
        })
        .count();
    assert_eq!(relayed, 2);
    assert!(h.gw.relayed_deliveries().is_empty());
    assert!(h.far.as_ref().unwrap().gw.relayed_deliveries().is_empty());
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// Flips a bit of the `nth` chunk going from `from` to `to`.
fn tamper(h: &mut Harness, from: Party, to: Party, nth: usize) {
    let mut seen = 0;
    h.set_hook(move |f| {
        if f.from == from && f.to == to && f.message == "DeliveryChunk" {
            seen += 1;
            if seen == nth {
                return Action::Replace(rewrite(&f.body, |env| {
                    if let Body::DeliveryChunk(c) = &mut env.body {
                        let n = c.sealed.len();
                        c.sealed[n - 20] ^= 1;
                    }
                }));
            }
        }
        Action::Deliver
    });
}

fn refused_as_altered(h: &Harness, i: usize, session: DeliveryId) -> bool {
    h.pne_events(i).into_iter().any(|e| {
        matches!(e, PneEvent::DeliveryEnded {
            session: s,
            result: DeliveryResult::Failed,
            reason: Some(r),
            ..
        } if *s == session && r.contains("altered on the way"))
    })
}

#[test]
fn a_source_pn_gw_that_alters_a_forwarded_chunk_is_caught_by_every_target_and_learns_nothing() {
    let (mut h, b) = two_pns("alice");
    // The source's PN GW alters the second chunk it sends up its WAN session.
    tamper(&mut h, Party::Gw, Party::Server, 2);
    let bytes = seeded_content(300_000, 8);
    let session = forward(&mut h, &[2, 3], &bytes, b).unwrap();
    h.clear_hook();
    for i in [2, 3] {
        assert!(refused_as_altered(&h, i, session), "PNE {i}");
        assert!(!h.store.pne_received.contains_key(&(i, session)));
        assert!(!h.store.pne_inbox.contains_key(&(i, session)), "discarded");
        assert_eq!(
            h.store.deliveries[&(session, pne_id(i))].ended,
            Some((65_536, DeliveryResult::Failed.code()))
        );
    }
    assert_eq!(
        h.delivery_ends(0, session),
        [
            (pne_id(2), DeliveryResult::Failed),
            (pne_id(3), DeliveryResult::Failed)
        ]
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![]));
    never_in_the_clear(&h, &bytes);
}

#[test]
fn a_targets_pn_gw_that_alters_a_forwarded_chunk_is_caught_and_the_other_target_gets_it_all() {
    let (mut h, b) = two_pns("alice");
    tamper(&mut h, Party::FarGw, Party::Pne(2), 3);
    let bytes = seeded_content(300_000, 9);
    let session = forward(&mut h, &[2, 3], &bytes, b).unwrap();
    h.clear_hook();
    assert!(refused_as_altered(&h, 2, session));
    assert_eq!(h.store.pne_received.get(&(3, session)), Some(&bytes));
    assert_eq!(
        h.delivery_ends(0, session),
        [(pne_id(2), DeliveryResult::Failed)]
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(3)]));
    never_in_the_clear(&h, &bytes);
}

#[test]
fn forwarding_reaches_the_sources_users_pns_and_its_own_devices_only() {
    let (mut h, b) = two_pns("bob");
    let bytes = seeded_content(1_000, 10);
    // Bob's PN, bob's devices: alice's PNE may not push into it.
    assert_eq!(forward(&mut h, &[2], &bytes, b), Err(ErrorCode::Forbidden));
    // Nothing was opened, routed or told.
    assert!(h.store.deliveries.is_empty());
    assert!(h.far.as_ref().unwrap().gw.relayed_deliveries().is_empty());
    assert!(h.gw.relayed_deliveries().is_empty());
    let offered = (2..4).any(|i| {
        h.pne_events(i)
            .into_iter()
            .any(|e| matches!(e, PneEvent::DeliveryOffered { .. }))
    });
    assert!(!offered);
    // A target that is no member of that PN is not found; a PN that does not exist neither.
    let (mut h, b) = two_pns("alice");
    assert_eq!(forward(&mut h, &[1], &bytes, b), Err(ErrorCode::NotFound));
    let nowhere = PnId::from_bytes([0xee; 16]);
    assert_eq!(
        forward(&mut h, &[2], &bytes, nowhere),
        Err(ErrorCode::NotFound)
    );
    assert!(h.store.deliveries.is_empty());
}

#[test]
fn a_guest_device_of_the_sources_user_in_another_users_pn_is_reached() {
    // Bob's PN B holds alice's device PNE 3 as a guest: alice's PNE may forward to it alone.
    let (mut h, b) = two_pns("bob");
    let alice = cpns_wire::UserId::new("alice").unwrap();
    h.store
        .entities
        .get_mut(&pne_id(3))
        .expect("PNE 3 enrolled")
        .owner = alice.clone();
    let bytes = seeded_content(100_000, 11);
    let session = forward(&mut h, &[3], &bytes, b).unwrap();
    assert_eq!(h.store.pne_received.get(&(3, session)), Some(&bytes));
    assert_eq!(h.store.deliveries[&(session, pne_id(3))].charged, alice);
    // With bob's own device beside it, it is refused whole.
    assert_eq!(
        forward(&mut h, &[2, 3], &bytes, b),
        Err(ErrorCode::Forbidden)
    );
}

/// The content a stalled forward offers: more than a window past its first chunks.
const STALLED: usize = 1_000_000;

/// PNE 0 forwards [`STALLED`] bytes to PNEs 2 and 3 while the WAN of `hop` (the PN GW's party
/// sending, or its server's) drops every chunk after the first `pass`: the session stalls
/// midway.
fn stalled_at(h: &mut Harness, b: PnId, hop: Party, pass: usize) -> DeliveryId {
    let mut seen = 0;
    h.set_hook(move |f| {
        if f.from == hop && f.message == "DeliveryChunk" {
            seen += 1;
            if seen > pass {
                return Action::Drop;
            }
        }
        Action::Deliver
    });
    let bytes = seeded_content(STALLED, 12);
    let session = forward(h, &[2, 3], &bytes, b).unwrap();
    h.clear_hook();
    assert!(h.delivery_sent(0, session).is_none(), "stalled");
    session
}

/// [`stalled_at`] on the way down: the targets hold one chunk.
fn stalled(h: &mut Harness, b: PnId) -> DeliveryId {
    stalled_at(h, b, Party::FarServer, 1)
}

/// [`stalled_at`] on the way up: the targets hold two chunks.
fn stalled_up(h: &mut Harness, b: PnId) -> DeliveryId {
    stalled_at(h, b, Party::Gw, 2)
}

/// The server's report that `session` stopped, naming what stopped it, if it did.
fn stopped(h: &Harness, session: DeliveryId) -> Option<String> {
    h.server_events().into_iter().find_map(|e| match e {
        ServerEvent::DeliveryStopped { session: s, reason } if *s == session => {
            Some(reason.clone())
        }
        _ => None,
    })
}

/// Both targets hold the [`STALLED`] bytes [`stalled`] offers, and the source was told so.
fn delivered_whole(h: &Harness, session: DeliveryId) {
    let bytes = seeded_content(STALLED, 12);
    for i in [2, 3] {
        let got = h.store.pne_received.get(&(i, session));
        assert!(got == Some(&bytes), "PNE {i} did not get it whole");
    }
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(2), pne_id(3)])
    );
    assert!(h.delivery_ends(0, session).is_empty());
}

#[test]
fn a_forward_goes_on_when_the_targets_pn_gw_sets_up_its_wan_session_again() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    let down_before = chunks(&h, Party::FarServer, Party::FarGw, session).len();
    h.lose_wan(Party::FarGw);
    // Nothing ends: the source is told nothing, and the forward waits for gw-2.
    assert!(h.delivery_ends(0, session).is_empty());
    assert_eq!(stopped(&h, session), None);
    assert_eq!(h.parked[0].sessions(), [session]);
    assert!(h.far.as_ref().unwrap().gw.relayed_deliveries().is_empty());
    h.regain_wan(Party::FarGw);
    assert!(h.parked.is_empty(), "taken back");
    delivered_whole(&h, session);
    assert_eq!(stopped(&h, session), None);
    // Sent again from what the targets had (the one chunk they got), not from the start.
    let again = chunks(&h, Party::FarServer, Party::FarGw, session);
    assert_eq!(again[down_before], 65_536, "{again:?}");
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

#[test]
fn a_forward_ends_at_the_source_when_the_targets_pn_gw_does_not_come_back() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    h.lose_wan(Party::FarGw);
    assert!(h.delivery_ends(0, session).is_empty());
    assert_eq!(h.expire_parked(Party::FarGw), [session]);
    assert_eq!(
        h.delivery_ends(0, session),
        [
            (pne_id(2), DeliveryResult::Failed),
            (pne_id(3), DeliveryResult::Failed)
        ]
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![]));
    assert!(h.gw.relayed_deliveries().is_empty(), "the route is gone");
    let why = stopped(&h, session).expect("the source side reports the stop");
    assert!(why.contains("did not come back"), "{why}");
}

#[test]
fn a_forward_goes_on_when_the_sources_pn_gw_sets_up_its_wan_session_again() {
    let (mut h, b) = two_pns("alice");
    let session = stalled_up(&mut h, b);
    let up_before = chunks(&h, Party::Gw, Party::Server, session).len();
    h.lose_wan(Party::Gw);
    // The route to the server outlives the WAN session; the targets' side is told nothing.
    assert!(h.gw.relayed_deliveries().contains(&session));
    assert!(h.delivery_ends(0, session).is_empty());
    assert_eq!(stopped(&h, session), None);
    assert_eq!(h.parked[0].sessions(), [session]);
    h.regain_wan(Party::Gw);
    delivered_whole(&h, session);
    // The source went on from what both targets had said (two chunks), told by the server.
    let again = chunks(&h, Party::Gw, Party::Server, session);
    assert_eq!(again[up_before], 131_072, "{again:?}");
    let resumed = h.delivered(Party::Server, Party::Gw).into_iter().any(|e| {
        matches!(e.body, Body::DeliveryAck(a) if a.session == session && a.resume
            && a.have == 131_072)
    });
    assert!(resumed);
    assert!(h.gw.relayed_deliveries().is_empty());
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

#[test]
fn a_targets_end_while_the_sources_pn_gw_is_away_is_told_when_it_comes_back() {
    let (mut h, b) = two_pns("alice");
    let session = stalled_up(&mut h, b);
    h.lose_wan(Party::Gw);
    // PNE 3's part ends (as gw-2 says) while gw-1 is away, and is said twice: held once.
    let done = DeliveryDone {
        session,
        target: pne_id(3),
        bytes: 131_072,
        result: DeliveryResult::Failed,
        items: Vec::new(),
    };
    assert_eq!(from_gw(&mut h, Party::FarGw, done.clone()), None);
    assert!(
        from_gw(&mut h, Party::FarGw, done).is_some(),
        "ended already"
    );
    assert!(h.delivery_ends(0, session).is_empty(), "not told yet");
    h.regain_wan(Party::Gw);
    assert_eq!(
        h.delivery_ends(0, session),
        [(pne_id(3), DeliveryResult::Failed)]
    );
    let bytes = seeded_content(STALLED, 12);
    assert!(h.store.pne_received.get(&(2, session)) == Some(&bytes));
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(2)]));
}

#[test]
fn a_forward_ends_when_the_sources_pn_gw_does_not_come_back() {
    let (mut h, b) = two_pns("alice");
    let session = stalled_up(&mut h, b);
    h.lose_wan(Party::Gw);
    // The server's grace ends: the targets' side is told, and says why.
    assert_eq!(h.expire_parked(Party::Gw), [session]);
    let why = stopped(&h, session).expect("the targets side reports the stop");
    assert!(why.contains("did not come back"), "{why}");
    assert!(h.gw.relayed_deliveries().contains(&session));
    // Past two flow timeouts the route to the server is given up: the source is told each
    // target's part failed (if it had not given up on its own, hearing nothing).
    h.advance(super::harness::FLOW * 2);
    assert_eq!(
        h.delivery_ends(0, session),
        [
            (pne_id(2), DeliveryResult::Failed),
            (pne_id(3), DeliveryResult::Failed)
        ]
    );
    assert!(h.gw.relayed_deliveries().is_empty());
}

#[test]
fn a_route_to_the_server_lost_with_its_wan_is_given_up_by_the_pn_gw_itself() {
    let (mut h, b) = two_pns("alice");
    let session = stalled_up(&mut h, b);
    h.lose_wan(Party::Gw);
    // Just short of two flow timeouts it is kept; at them, the PN GW gives it up, telling
    // the source (whose own clock is not moved here).
    let loss = h.now();
    h.gw.handle_timeout(loss + super::harness::FLOW * 2 - std::time::Duration::from_millis(1));
    h.pump();
    assert!(h.gw.relayed_deliveries().contains(&session));
    assert_eq!(
        h.gw.poll_timeout(),
        Some(loss + super::harness::FLOW * 2),
        "its deadline"
    );
    h.gw.handle_timeout(loss + super::harness::FLOW * 2);
    h.pump();
    assert!(h.gw.relayed_deliveries().is_empty());
    let failed = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .filter(|e| {
            matches!(&e.body, Body::DeliveryDone(d) if d.session == session
            && d.result == DeliveryResult::Failed && d.bytes == 131_072)
        })
        .count();
    assert_eq!(failed, 2, "each target's part, at what it had");
}

#[test]
fn a_route_to_the_server_lost_with_its_wan_sends_no_chunk_and_holds_a_control() {
    let (mut h, b) = two_pns("alice");
    let session = stalled_up(&mut h, b);
    let up = |h: &Harness| {
        h.log
            .iter()
            .filter(|f| f.from == Party::Gw && f.to == Party::Server)
            .count()
    };
    h.lose_wan(Party::Gw);
    let sent = h.traces.len();
    // The source pauses while gw-1 is away; what it sends goes nowhere yet.
    h.pnes[0]
        .control_delivery(session, cpns_wire::ControlAction::Pause)
        .unwrap();
    h.pump();
    let went_up = h.traces[sent..]
        .iter()
        .any(|(from, to, _)| *from == Party::Gw && *to == Party::Server);
    assert!(!went_up, "nothing went up the lost WAN session");
    let before = up(&h);
    h.regain_wan(Party::Gw);
    assert!(up(&h) > before);
    // Told once the server had the forward again: the targets are paused.
    let paused = h
        .delivered(Party::FarGw, Party::Pne(2))
        .into_iter()
        .any(|e| {
            matches!(e.body, Body::DeliveryControl(c)
            if c.session == session && c.action == cpns_wire::ControlAction::Pause)
        });
    assert!(paused);
    assert!(h.delivery_sent(0, session).is_none(), "paused, not ended");
}

#[test]
fn what_comes_for_a_forward_before_its_pn_gw_finished_its_set_up_is_told_after_it() {
    let (mut h, b) = two_pns("alice");
    let session = stalled_up(&mut h, b);
    h.lose_wan(Party::Gw);
    // gw-1 is authenticated again (its session takes the forward back) but has not answered
    // the status lookup: the forward is not gone on yet.
    h.set_hook(|f| {
        if f.from == Party::Gw && f.message == "StatusUpdateResponse" {
            return Action::Drop;
        }
        Action::Deliver
    });
    h.regain_wan(Party::Gw);
    h.clear_hook();
    assert!(h.parked.is_empty(), "taken back");
    let done = DeliveryDone {
        session,
        target: pne_id(3),
        bytes: 131_072,
        result: DeliveryResult::Failed,
        items: Vec::new(),
    };
    assert_eq!(from_gw(&mut h, Party::FarGw, done), None);
    let told = |h: &Harness| {
        h.delivered(Party::Server, Party::Gw)
            .into_iter()
            .any(|e| matches!(e.body, Body::DeliveryDone(d) if d.session == session))
    };
    assert!(!told(&h), "held until the set-up is done");
    // The status answer comes: the route, the end held, and where to go on from.
    let answer = h
        .dropped
        .iter()
        .rev()
        .find(|f| f.message == "StatusUpdateResponse")
        .unwrap()
        .body
        .clone();
    h.inject(Party::Gw, Party::Server, answer);
    h.pump();
    assert!(told(&h));
    assert_eq!(
        h.delivery_ends(0, session),
        [(pne_id(3), DeliveryResult::Failed)]
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(2)]));
}

/// The controls that crossed `from` → `to` for `session`, in order.
fn controls(h: &Harness, from: Party, to: Party, session: DeliveryId) -> Vec<ControlAction> {
    h.delivered(from, to)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryControl(c) if c.session == session => Some(c.action),
            _ => None,
        })
        .collect()
}

#[test]
fn the_latest_control_made_while_a_pn_gw_was_away_is_the_one_told() {
    // Away: the source's PN GW. It holds the source's last control for the server.
    let (mut h, b) = two_pns("alice");
    let session = stalled_up(&mut h, b);
    h.lose_wan(Party::Gw);
    for action in [ControlAction::Pause, ControlAction::Resume] {
        h.pnes[0].control_delivery(session, action).unwrap();
        h.pump();
    }
    h.regain_wan(Party::Gw);
    assert_eq!(
        controls(&h, Party::Gw, Party::Server, session),
        [ControlAction::Resume]
    );
    delivered_whole(&h, session);

    // Away: the targets' PN GW. Its side at the server holds the last control relayed.
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    h.lose_wan(Party::FarGw);
    for action in [ControlAction::Pause, ControlAction::Resume] {
        h.pnes[0].control_delivery(session, action).unwrap();
        h.pump();
    }
    assert!(controls(&h, Party::FarServer, Party::FarGw, session).is_empty());
    h.regain_wan(Party::FarGw);
    assert_eq!(
        controls(&h, Party::FarServer, Party::FarGw, session),
        [ControlAction::Resume]
    );
    // Told after the route, before any chunk.
    let down: Vec<&str> = h
        .log
        .iter()
        .filter(|f| f.from == Party::FarServer && f.to == Party::FarGw)
        .map(|f| f.message)
        .filter(|m| m.starts_with("Delivery"))
        .collect();
    let route = down.iter().rposition(|m| *m == "DeliveryRoute").unwrap();
    assert_eq!(down[route + 1], "DeliveryControl", "{down:?}");
    delivered_whole(&h, session);
}

#[test]
fn a_forward_ended_while_its_targets_pn_gw_was_away_is_not_told_it_again() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    // Both PN GWs are away; gw-1 does not come back: its side's grace ends, and gw-2's kept
    // forward holds the end.
    h.lose_wan(Party::FarGw);
    h.lose_wan(Party::Gw);
    assert_eq!(h.expire_parked(Party::Gw), [session]);
    let before = h.delivered(Party::FarServer, Party::FarGw).len();
    h.regain_wan(Party::FarGw);
    let told_again = h.delivered(Party::FarServer, Party::FarGw)[before..]
        .iter()
        .any(|e| matches!(&e.body, Body::DeliveryRoute(r) if r.session == session));
    assert!(!told_again, "no route for a forward that ended");
    let stops = h
        .server_events()
        .into_iter()
        .filter(|e| matches!(e, ServerEvent::DeliveryStopped { session: s, .. } if *s == session))
        .count();
    assert_eq!(stops, 1, "the targets' side stopped it once it went on");
}

#[test]
fn a_source_side_that_never_heard_its_targets_tells_its_pn_gw_nothing_to_go_on_from() {
    let (mut h, b) = two_pns("alice");
    // No word of the targets ever reaches the server.
    h.set_hook(|f| {
        if f.from == Party::FarGw && f.message == "DeliveryAck" {
            return Action::Drop;
        }
        Action::Deliver
    });
    let bytes = seeded_content(100_000, 14);
    let session = forward(&mut h, &[2, 3], &bytes, b).unwrap();
    h.clear_hook();
    assert!(chunks(&h, Party::Gw, Party::Server, session).is_empty());
    h.lose_wan(Party::Gw);
    let before = h.delivered(Party::Server, Party::Gw).len();
    h.regain_wan(Party::Gw);
    let after = h.delivered(Party::Server, Party::Gw);
    let route = after[before..]
        .iter()
        .any(|e| matches!(&e.body, Body::DeliveryRoute(r) if r.session == session));
    assert!(route, "the route is told again");
    let ack = after[before..]
        .iter()
        .any(|e| matches!(&e.body, Body::DeliveryAck(a) if a.session == session));
    assert!(!ack, "nothing said of targets that said nothing");
    assert!(chunks(&h, Party::Gw, Party::Server, session).is_empty());
}

#[test]
fn deliveries_from_outside_kept_for_one_pn_gw_go_on_in_no_other_pn_gws_session() {
    let (mut h, _b) = two_pns("alice");
    let now = h.now();
    let kept = h.server.end_deliveries(now);
    assert_eq!(kept.gateway(), Some(&h.gw_cfg.id));
    let far = h.far.as_mut().unwrap();
    let kept = far.server.restore_outbound(now, kept).unwrap_err();
    assert_eq!(kept.gateway(), Some(&h.gw_cfg.id));
}

#[test]
fn a_forward_to_a_pn_gw_with_no_session_ends_at_once() {
    let (mut h, b) = two_pns("alice");
    // The targets' PN GW's session is gone (a new one not yet up).
    let far = h.far.as_mut().unwrap();
    far.server = crate::server::ServerSession::new(
        h.server_cfg.clone(),
        super::harness::EXPORTER,
        h.base,
        cpns_crypto::MachineRng::from_seed_u64(5),
    );
    let bytes = seeded_content(100_000, 13);
    let session = forward(&mut h, &[2, 3], &bytes, b).unwrap();
    assert_eq!(
        h.delivery_ends(0, session),
        [
            (pne_id(2), DeliveryResult::Failed),
            (pne_id(3), DeliveryResult::Failed)
        ]
    );
    assert!(h.gw.relayed_deliveries().is_empty());
}

/// Sends `body` from PN GW `from` to its server session, as if it had; why it was refused,
/// if it was.
fn from_gw(h: &mut Harness, from: Party, body: impl Into<Body>) -> Option<String> {
    let to = match from {
        Party::FarGw => Party::FarServer,
        _ => Party::Server,
    };
    let before = h.server_events().len();
    let gw = if from == Party::FarGw { "gw-2" } else { "gw-1" };
    let env = Envelope::notify(
        9_000_000,
        cpns_wire::Address::Entity(super::harness::id(gw)),
        cpns_wire::Address::Server,
        body,
    );
    h.inject(from, to, plain(&env));
    h.pump();
    h.server_events()[before..].iter().find_map(|e| match e {
        ServerEvent::DeliveryRefused { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn each_server_session_takes_only_what_its_side_of_a_forward_may_send() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    let down = |h: &Harness| chunks(h, Party::FarServer, Party::FarGw, session).len();
    let relayed = down(&h);
    let chunk = |offset, len| DeliveryChunk {
        digest: None,
        session,
        offset,
        sealed: vec![0x5a; len + cpns_crypto::CHUNK_OVERHEAD],
    };
    // From the source's PN GW: past the window the targets allowed, larger than a chunk,
    // empty, past the content, of no session forwarded from here.
    let refused = [
        (chunk(u64::from(WINDOW) + 1, 65_536), "window"),
        (chunk(0, 65_537), "chunk size"),
        (chunk(0, 0), "empty"),
        (chunk(STALLED as u64 - 10, 11), "content's size"),
    ];
    for (c, why) in refused {
        let got = from_gw(&mut h, Party::Gw, c).expect("refused");
        assert!(got.contains(why), "{got}");
    }
    let other = DeliveryChunk {
        digest: None,
        session: DeliveryId::from_bytes([0x77; 16]),
        ..chunk(0, 10)
    };
    assert!(from_gw(&mut h, Party::Gw, other).is_some());
    // The source's side takes no acknowledgement or end from its own PN GW; the targets'
    // side no chunk, no acknowledgement past the content, no end of a stranger.
    let ack = |have| DeliveryAck {
        session,
        have,
        resume: false,
    };
    let done = |target: usize| DeliveryDone {
        session,
        target: pne_id(target),
        bytes: 0,
        result: DeliveryResult::Failed,
        items: Vec::new(),
    };
    for have in [0, 10] {
        let why = from_gw(&mut h, Party::Gw, ack(have)).unwrap_or_default();
        assert!(why.contains("no session forwarded to here"), "{why}");
    }
    assert!(from_gw(&mut h, Party::Gw, done(2)).is_some());
    // Nor does the targets' side take a control from its PN GW: only the source's controls.
    let stop = cpns_wire::DeliveryControl {
        session,
        action: cpns_wire::ControlAction::Stop,
    };
    let why = from_gw(&mut h, Party::FarGw, stop).unwrap_or_default();
    assert!(
        why.contains("control of no delivery forwarded from here"),
        "{why}"
    );
    assert!(from_gw(&mut h, Party::FarGw, chunk(65_536, 10)).is_some());
    assert!(from_gw(&mut h, Party::FarGw, ack(STALLED as u64 + 1)).is_some());
    // Only of what was relayed (the first chunk, which alone was let through, and a window
    // past it), at a chunk's end, moving on.
    let why = |h: &mut Harness, a| from_gw(h, Party::FarGw, a).unwrap_or_default();
    assert_eq!(chunks(&h, Party::FarServer, Party::FarGw, session).len(), 1);
    let w = why(&mut h, ack(u64::from(WINDOW) + 2 * 65_536));
    assert!(w.contains("more than was relayed"), "{w}");
    assert!(why(&mut h, ack(10)).contains("chunk's end"));
    assert!(why(&mut h, ack(65_536)).contains("does not move on"));

    assert!(from_gw(&mut h, Party::FarGw, done(1)).is_some());
    // Nothing of it went on, and the session is still there to end.
    assert_eq!(down(&h), relayed);
    assert!(h.delivery_ends(0, session).is_empty());
    assert_eq!(h.gw.relayed_deliveries(), [session]);
}

#[test]
fn content_is_forwarded_between_two_pns_of_one_pn_gw_without_the_server() {
    let (mut h, b) = two_pns_one_gateway();
    let bytes = seeded_content(200_000, 14);
    let session = forward(&mut h, &[2, 3], &bytes, b).unwrap();
    for i in [2, 3] {
        assert_eq!(h.store.pne_received.get(&(i, session)), Some(&bytes));
        assert_eq!(h.store.deliveries[&(session, pne_id(i))].pn_id, b);
    }
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(2), pne_id(3)])
    );
    assert!(chunks(&h, Party::Gw, Party::Server, session).is_empty());
    // Kept while it moved, so a restarted PN GW relays it again, and forgotten at the end.
    assert!(h.store.gw_routes.is_empty());
    // A member of PN A does not speak for a target in PN B.
    never_in_the_clear(&h, &bytes);
}

#[test]
fn a_pn_gw_takes_an_acknowledgement_of_a_forward_only_from_a_target_in_the_targets_pn() {
    let (mut h, b) = two_pns_one_gateway();
    h.drop_message("DeliveryChunk");
    let bytes = seeded_content(200_000, 15);
    let session = forward(&mut h, &[2], &bytes, b).unwrap();
    h.clear_hook();
    assert!(h.store.gw_routes.contains_key(&session), "kept");
    // PNE 1, a member of PN A only, acknowledges in PNE 2's name: refused.
    let env = Envelope::notify(
        9_000_001,
        cpns_wire::Address::Entity(pne_id(1)),
        cpns_wire::Address::Entity(super::harness::id("gw-1")),
        DeliveryAck {
            session,
            have: 200_000,
            resume: false,
        },
    );
    h.inject(Party::Pne(1), Party::Gw, plain(&env));
    h.pump();
    let refused = h.gw_events().into_iter().any(|e| {
        matches!(e, crate::gateway::GatewayEvent::DeliveryRefused { session: s, from, .. }
            if *s == session && *from == pne_id(1))
    });
    assert!(refused);
    let told: Vec<u64> = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryAck(a) if a.session == session => Some(a.have),
            _ => None,
        })
        .collect();
    assert!(!told.contains(&200_000), "{told:?}");
}

#[test]
fn an_offer_to_the_pn_it_is_made_in_is_an_ordinary_push() {
    let (mut h, _) = two_pns("alice");
    let a = h.joined(0).unwrap().pn_id;
    let bytes = seeded_content(70_000, 16);
    let session = forward(&mut h, &[1], &bytes, a).unwrap();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
    assert!(chunks(&h, Party::Gw, Party::Server, session).is_empty());
}

#[test]
fn a_targets_pn_gw_resumes_a_forward_a_bounded_number_of_times() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    // The targets' WAN still carries no chunk: the session stays where it is.
    h.set_hook(|f| {
        if f.from == Party::FarServer && f.message == "DeliveryChunk" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let resume = DeliveryAck {
        session,
        have: 65_536,
        resume: true,
    };
    // The targets' acceptances resumed it once already (the PN GW says so once all did).
    for _ in 0..63 {
        assert_eq!(from_gw(&mut h, Party::FarGw, resume.clone()), None);
    }
    let why = from_gw(&mut h, Party::FarGw, resume).unwrap_or_default();
    assert!(why.contains("too many"), "{why}");
}

/// The server hands PN GW `gw-1` `body` on its WAN session.
fn from_server(h: &mut Harness, body: impl Into<Body>) {
    let env = Envelope::notify(
        9_100_000 + h.log.len() as u64,
        cpns_wire::Address::Server,
        cpns_wire::Address::Entity(super::harness::id("gw-1")),
        body,
    );
    h.inject(Party::Server, Party::Gw, plain(&env));
    h.pump();
}

fn refused_at_gw(h: &Harness, session: DeliveryId) -> Vec<String> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            crate::gateway::GatewayEvent::DeliveryRefused {
                session: s, reason, ..
            } if *s == session => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pn_gw_takes_a_forwarding_route_only_for_pns_it_serves_and_of_one_kind() {
    let (mut h, b) = two_pns_one_gateway();
    let a = h.joined(0).unwrap().pn_id;
    let route = |n: u8| cpns_wire::DeliveryRoute {
        session: DeliveryId::from_bytes([n; 16]),
        pn_id: a,
        source: pne_id(0),
        targets: vec![pne_id(2)],
        size: 1000,
        chunk: 65_536,
        from_server: false,
        to_pn: None,
        to_server: false,
    };
    let nowhere = PnId::from_bytes([0xee; 16]);
    let bad = [
        cpns_wire::DeliveryRoute {
            to_pn: Some(nowhere),
            ..route(1)
        },
        cpns_wire::DeliveryRoute {
            to_server: true,
            to_pn: Some(b),
            ..route(2)
        },
        cpns_wire::DeliveryRoute {
            to_server: true,
            from_server: true,
            ..route(3)
        },
    ];
    for r in bad {
        let session = r.session;
        from_server(&mut h, r);
        assert_eq!(refused_at_gw(&h, session).len(), 1, "{session}");
    }
    assert!(h.gw.relayed_deliveries().is_empty());
    assert!(h.store.gw_routes.is_empty(), "nothing kept");
    // Well formed: taken; kept unless it goes to the server (which ends with the WAN session).
    from_server(
        &mut h,
        cpns_wire::DeliveryRoute {
            to_pn: Some(b),
            ..route(4)
        },
    );
    from_server(
        &mut h,
        cpns_wire::DeliveryRoute {
            to_server: true,
            ..route(5)
        },
    );
    assert_eq!(h.gw.relayed_deliveries().len(), 2);
    let kept: Vec<DeliveryId> = h.store.gw_routes.keys().copied().collect();
    assert_eq!(kept, [DeliveryId::from_bytes([4; 16])]);
}

#[test]
fn a_pn_gw_relays_a_control_from_the_server_only_for_a_session_the_server_sends() {
    let (mut h, b) = two_pns_one_gateway();
    h.drop_message("DeliveryChunk");
    let bytes = seeded_content(200_000, 17);
    // A session of PNE 0's, relayed by this PN GW between its PNs: not the server's to control.
    let session = forward(&mut h, &[2], &bytes, b).unwrap();
    h.clear_hook();
    let stop = cpns_wire::DeliveryControl {
        session,
        action: cpns_wire::ControlAction::Stop,
    };
    from_server(&mut h, stop);
    assert_eq!(refused_at_gw(&h, session).len(), 1);
    let told = h
        .delivered(Party::Gw, Party::Pne(2))
        .into_iter()
        .any(|e| matches!(e.body, Body::DeliveryControl(_)));
    assert!(!told);
    assert!(h.delivery_ends(2, session).is_empty());
}

#[test]
fn a_route_to_the_server_is_never_kept_in_the_pn_gws_store() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    assert!(h.gw.relayed_deliveries().contains(&session));
    assert!(!h.store.gw_routes.contains_key(&session));
}

#[test]
fn delivery_messages_sent_as_requests_are_not_taken_as_the_notices_they_are() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    let told_source = |h: &Harness| {
        h.delivered(Party::Gw, Party::Pne(0))
            .into_iter()
            .filter(|e| {
                matches!(&e.body, Body::DeliveryAck(a) if a.session == session)
                    || matches!(&e.body, Body::DeliveryDone(d) if d.session == session)
            })
            .count()
    };
    let before = told_source(&h);
    // From the server, as requests: an acknowledgement and an end for the source.
    let as_request = |h: &mut Harness, body: Body| {
        let env = Envelope::request(
            9_200_000 + h.log.len() as u64,
            cpns_wire::Address::Server,
            cpns_wire::Address::Entity(super::harness::id("gw-1")),
            body,
        );
        h.inject(Party::Server, Party::Gw, plain(&env));
        h.pump();
    };
    as_request(
        &mut h,
        DeliveryAck {
            session,
            have: 3 * 65_536,
            resume: true,
        }
        .into(),
    );
    as_request(
        &mut h,
        DeliveryDone {
            session,
            target: pne_id(2),
            bytes: 0,
            result: DeliveryResult::Failed,
            items: Vec::new(),
        }
        .into(),
    );
    assert_eq!(told_source(&h), before, "the source was told nothing");
    assert!(h.delivery_ends(0, session).is_empty());
    // To the targets' PN GW, a control as a request: the targets are told nothing.
    let env = Envelope::request(
        9_300_000,
        cpns_wire::Address::Server,
        cpns_wire::Address::Entity(super::harness::id("gw-2")),
        cpns_wire::DeliveryControl {
            session,
            action: cpns_wire::ControlAction::Stop,
        },
    );
    h.inject(Party::FarServer, Party::FarGw, plain(&env));
    h.pump();
    for i in [2, 3] {
        assert!(h.delivery_ends(i, session).is_empty(), "PNE {i}");
    }
    // From the source on its link, a control as a request: not relayed up.
    let up = |h: &Harness| {
        h.delivered(Party::Gw, Party::Server)
            .into_iter()
            .filter(|e| matches!(e.body, Body::DeliveryControl(_)))
            .count()
    };
    let env = Envelope::request(
        9_400_000,
        cpns_wire::Address::Entity(pne_id(0)),
        cpns_wire::Address::Entity(super::harness::id("gw-1")),
        cpns_wire::DeliveryControl {
            session,
            action: cpns_wire::ControlAction::Pause,
        },
    );
    h.inject(Party::Pne(0), Party::Gw, plain(&env));
    h.pump();
    assert_eq!(up(&h), 0);
}

#[test]
fn a_targets_session_takes_a_bounded_number_of_forwards_each_once_and_only_from_the_server() {
    let (mut h, b) = two_pns("alice");
    let route = |n: u32| cpns_wire::DeliveryRoute {
        session: {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            DeliveryId::from_bytes(id)
        },
        pn_id: b,
        source: pne_id(0),
        targets: vec![pne_id(2)],
        size: 1000,
        chunk: 65_536,
        from_server: true,
        to_pn: None,
        to_server: false,
    };
    let handed = |h: &Harness| {
        h.delivered(Party::FarServer, Party::FarGw)
            .into_iter()
            .filter(|e| matches!(e.body, Body::DeliveryRoute(_)))
            .count()
    };
    let gw1 = super::harness::id("gw-1");
    let forward_in = |h: &mut Harness, r: cpns_wire::DeliveryRoute| {
        h.far.as_mut().unwrap().server.forward_in(gw1.clone(), r);
        h.pump();
    };
    // Not from the server: refused; the same session twice: the second refused.
    forward_in(
        &mut h,
        cpns_wire::DeliveryRoute {
            from_server: false,
            ..route(0)
        },
    );
    assert_eq!(handed(&h), 0);
    forward_in(&mut h, route(1));
    forward_in(&mut h, route(1));
    assert_eq!(handed(&h), 1);
    // Up to the bound, then no more.
    for n in 2..=(crate::server::MAX_FORWARDS as u32) {
        forward_in(&mut h, route(n));
    }
    assert_eq!(handed(&h), crate::server::MAX_FORWARDS);
    forward_in(&mut h, route(1000));
    assert_eq!(handed(&h), crate::server::MAX_FORWARDS);
}

#[test]
fn a_pn_gw_takes_what_the_targets_have_from_the_server_only_for_a_route_to_it_within_its_size() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    let acks_to_source = |h: &Harness| {
        h.delivered(Party::Gw, Party::Pne(0))
            .into_iter()
            .filter_map(|e| match e.body {
                Body::DeliveryAck(a) if a.session == session => Some(a.have),
                _ => None,
            })
            .collect::<Vec<u64>>()
    };
    let refusals = refused_at_gw(&h, session).len();
    from_server(
        &mut h,
        DeliveryAck {
            session,
            have: STALLED as u64 + 1,
            resume: false,
        },
    );
    assert_eq!(refused_at_gw(&h, session).len(), refusals + 1);
    from_server(
        &mut h,
        DeliveryAck {
            session,
            have: STALLED as u64,
            resume: false,
        },
    );
    assert_eq!(refused_at_gw(&h, session).len(), refusals + 1);
    assert_eq!(acks_to_source(&h).last(), Some(&(STALLED as u64)));
    // A session this PN GW relays between its own PNs takes nothing of the kind from the
    // server.
    let (mut h, b) = two_pns_one_gateway();
    h.drop_message("DeliveryChunk");
    let bytes = seeded_content(200_000, 18);
    let session = forward(&mut h, &[2], &bytes, b).unwrap();
    h.clear_hook();
    from_server(
        &mut h,
        DeliveryAck {
            session,
            have: 65_536,
            resume: false,
        },
    );
    assert_eq!(refused_at_gw(&h, session).len(), 1);
}

#[test]
fn the_source_side_hands_its_pn_gw_only_what_fits_the_forward() {
    let (mut h, b) = two_pns("alice");
    let session = stalled(&mut h, b);
    let down = |h: &Harness| {
        h.delivered(Party::Server, Party::Gw)
            .into_iter()
            .filter(|e| {
                matches!(&e.body, Body::DeliveryAck(a) if a.session == session)
                    || matches!(&e.body, Body::DeliveryDone(d) if d.session == session)
            })
            .count()
    };
    let before = down(&h);
    // What the other side would never hand (it checks as much): past the content, the end
    // of one that is no target.
    let relay = |h: &mut Harness, msg: crate::server::Relayed| {
        h.server.relayed(session, msg);
        h.pump();
    };
    relay(
        &mut h,
        crate::server::Relayed::Ack(DeliveryAck {
            session,
            have: STALLED as u64 + 1,
            resume: false,
        }),
    );
    relay(
        &mut h,
        crate::server::Relayed::Done(DeliveryDone {
            session,
            target: pne_id(1),
            bytes: 0,
            result: DeliveryResult::Failed,
            items: Vec::new(),
        }),
    );
    assert_eq!(down(&h), before);
    // A target's end, once: the second is not handed on.
    let end = || {
        crate::server::Relayed::Done(DeliveryDone {
            session,
            target: pne_id(2),
            bytes: 0,
            result: DeliveryResult::Failed,
            items: Vec::new(),
        })
    };
    relay(&mut h, end());
    relay(&mut h, end());
    assert_eq!(down(&h), before + 1);
}

/// PNE 0 makes a service group and each of `members` joins it by invitation: the group.
fn group_of(h: &mut Harness, members: &[usize]) -> cpns_wire::GroupId {
    let now = h.now();
    let id = h.pnes[0].create_group(now, "Album".into(), false).unwrap();
    h.pump();
    let Outcome::ServiceGroupKey { group_id: g, .. } = h.outcome(0, id).clone() else {
        panic!("no group")
    };
    for &i in members {
        let now = h.now();
        let id = h.pnes[0].invite_to_group(now, g, pne_id(i)).unwrap();
        h.pump();
        h.outcome(0, id);
        let now = h.now();
        let id = h.pnes[i].answer_group(now, g, true).unwrap();
        h.pump();
        h.outcome(i, id);
    }
    g
}

/// Each of `offers` is refused by PNE 0 before it leaves it, as no delivery.
fn refused_before_sending(h: &mut Harness, offers: Vec<DeliveryOffer>) {
    let now = h.now();
    for mixed in offers {
        assert!(matches!(
            h.pnes[0].offer_delivery(now, &mixed),
            Err(crate::CommandError::InvalidDelivery(_))
        ));
    }
}

/// PNE `from` offers `bytes` to an audience (`o` fills in its group or user): the sessions
/// granted (the first, then `also`), or the refusal's code.
fn to_audience(
    h: &mut Harness,
    from: usize,
    bytes: &[u8],
    o: impl FnOnce(DeliveryOffer) -> DeliveryOffer,
) -> Result<Vec<DeliveryId>, ErrorCode> {
    h.store.pne_outbox.insert(from, bytes.to_vec());
    let o = o(DeliveryOffer {
        targets: Vec::new(),
        to_pn: None,
        ..offer(&[], bytes, PnId::from_bytes([0; 16]))
    });
    let now = h.now();
    let id = h.pnes[from].offer_delivery(now, &o).unwrap();
    h.pump();
    match h.completion(from, id).map(|c| &c.result) {
        Some(Ok(Outcome::DeliveryGranted { session, also, .. })) => Ok(std::iter::once(*session)
            .chain(also.iter().copied())
            .collect()),
        Some(Err(crate::Failure::Refused(e))) => Err(e.code),
        other => panic!("{other:?}"),
    }
}

/// PNE `from` offers `bytes` to group `g` ([`to_audience`]).
fn to_group(
    h: &mut Harness,
    from: usize,
    g: cpns_wire::GroupId,
    bytes: &[u8],
) -> Result<Vec<DeliveryId>, ErrorCode> {
    to_audience(h, from, bytes, |o| DeliveryOffer {
        group: Some(g),
        ..o
    })
}

/// To a service group (004 §5.5.8, §5.5.9; docs/services.md, "To a service group"): alice's
/// PNE 0 delivers to the group of PNE 1 (in its own PN) and bob's PNE 2 (in bob's PN behind
/// another PN GW): one session for each PN, each member gets it whole, recorded in its PN and
/// charged to its own user; bob's PNE 3, no member, gets nothing; nothing crosses in the clear.
#[test]
fn a_delivery_to_a_service_group_reaches_each_member_in_its_own_pn() {
    let (mut h, b) = two_pns("bob");
    let g = group_of(&mut h, &[1, 2]);
    let bytes = seeded_content(300_000, 31);
    let sessions = to_group(&mut h, 0, g, &bytes).unwrap();
    let [here, there] = sessions[..] else {
        panic!("{sessions:?}")
    };
    assert_eq!(h.store.pne_received.get(&(1, here)), Some(&bytes));
    assert_eq!(h.store.pne_received.get(&(2, there)), Some(&bytes));
    assert!(!h.store.pne_received.keys().any(|(i, _)| *i == 3));
    let a = h.joined(0).unwrap().pn_id;
    let record = |s, i| {
        let r = &h.store.deliveries[&(s, pne_id(i))];
        (r.pn_id, r.charged.to_string(), r.ended.map(|e| e.1))
    };
    let delivered = Some(DeliveryResult::Delivered.code());
    assert_eq!(record(here, 1), (a, "alice".into(), delivered));
    assert_eq!(record(there, 2), (b, "bob".into(), delivered));
    assert_eq!(h.store.deliveries.len(), 2, "one record per member");
    assert_eq!(h.delivery_sent(0, here), Some(vec![pne_id(1)]));
    assert_eq!(h.delivery_sent(0, there), Some(vec![pne_id(2)]));
    never_in_the_clear(&h, &bytes);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    // The source kept each session on its own: its own id, targets and key, no key in what is
    // stored as it is, and nothing of the other session.
    let kept: Vec<_> = h
        .store
        .pne_kept_log
        .iter()
        .filter(|(i, _)| *i == 0)
        .collect();
    assert_eq!(kept.len(), 2);
    for ((_, k), (session, target)) in kept.iter().zip([(here, 1), (there, 2)]) {
        let g: cpns_wire::DeliveryGrant = minicbor::decode(&k.description).unwrap();
        assert_eq!(
            (k.session, g.session, k.as_source),
            (session, session, true)
        );
        assert_eq!(g.targets, [pne_id(target)]);
        assert!(g.also.is_empty(), "nothing of the other session");
        assert_eq!(g.key.0, [0; 32], "no key stored as it is");
    }
    assert!(kept[0].1.key != kept[1].1.key, "each its own key");
}

/// Only a member delivers to a group; a group that is not, or with nobody else reachable, is
/// refused with nothing opened; an offer to a group that also names targets, another PN or
/// requirements is refused before it leaves the PNE.
#[test]
fn a_delivery_to_a_group_is_refused_to_a_non_member_and_where_nobody_is_reached() {
    let (mut h, _) = two_pns("bob");
    let g = group_of(&mut h, &[1]);
    let bytes = seeded_content(10_000, 32);
    assert_eq!(to_group(&mut h, 3, g, &bytes), Err(ErrorCode::Forbidden));
    let nowhere = cpns_wire::GroupId::from_bytes([7; 16]);
    assert_eq!(
        to_group(&mut h, 0, nowhere, &bytes),
        Err(ErrorCode::NotFound)
    );
    let alone = group_of(&mut h, &[]);
    assert_eq!(to_group(&mut h, 0, alone, &bytes), Err(ErrorCode::NotFound));
    assert!(h.store.deliveries.is_empty(), "nothing opened");
    refused_before_sending(
        &mut h,
        vec![
            DeliveryOffer {
                group: Some(g),
                ..offer(&[1], &bytes, PnId::from_bytes([0; 16]))
            },
            DeliveryOffer {
                group: Some(g),
                targets: Vec::new(),
                ..offer(&[], &bytes, PnId::from_bytes([0; 16]))
            },
            DeliveryOffer {
                group: Some(g),
                targets: Vec::new(),
                requires: b"{}".to_vec(),
                to_pn: None,
                ..offer(&[], &bytes, PnId::from_bytes([0; 16]))
            },
        ],
    );
}

/// A group whose members are in two PNs of one PN GW: two sessions, the second relayed by that
/// PN GW between its PNs, each member getting it whole.
#[test]
fn a_delivery_to_a_group_in_two_pns_of_one_pn_gw_is_relayed_between_them() {
    let (mut h, b) = two_pns_one_gateway();
    let g = group_of(&mut h, &[1, 3]);
    let bytes = seeded_content(200_000, 33);
    let sessions = to_group(&mut h, 0, g, &bytes).unwrap();
    let [here, there] = sessions[..] else {
        panic!("{sessions:?}")
    };
    assert_eq!(h.store.pne_received.get(&(1, here)), Some(&bytes));
    assert_eq!(h.store.pne_received.get(&(3, there)), Some(&bytes));
    assert_eq!(h.store.deliveries[&(there, pne_id(3))].pn_id, b);
    assert!(!h.store.pne_received.keys().any(|(i, _)| *i == 2));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// PNE `from` offers `bytes` to user `user` ([`to_audience`]).
fn to_user(
    h: &mut Harness,
    from: usize,
    user: &str,
    bytes: &[u8],
) -> Result<Vec<DeliveryId>, ErrorCode> {
    to_audience(h, from, bytes, |o| DeliveryOffer {
        user: Some(cpns_wire::UserId::new(user).unwrap()),
        ..o
    })
}

/// To a user (docs/services.md, "To a user"): alice's PNE 0 delivers to alice: her PNE 1 in
/// the same PN and her PNEs 2 and 3 in her other PN behind another PN GW, one session each PN;
/// every device gets it whole, recorded in its own PN.
#[test]
fn a_delivery_to_the_sources_own_user_reaches_its_devices_in_every_pn() {
    let (mut h, b) = two_pns("alice");
    let bytes = seeded_content(200_000, 34);
    let sessions = to_user(&mut h, 0, "alice", &bytes).unwrap();
    let [here, there] = sessions[..] else {
        panic!("{sessions:?}")
    };
    assert_eq!(h.store.pne_received.get(&(1, here)), Some(&bytes));
    for i in [2, 3] {
        assert_eq!(
            h.store.pne_received.get(&(i, there)),
            Some(&bytes),
            "PNE {i}"
        );
        assert_eq!(h.store.deliveries[&(there, pne_id(i))].pn_id, b);
    }
    assert!(
        !h.store.pne_received.contains_key(&(0, here)),
        "not to itself"
    );
    never_in_the_clear(&h, &bytes);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// Another user's devices are reached only in the source's PN: bob's, all in his own PN, are
/// not (`not_found`, nothing opened); an unknown user likewise; an offer to a user that also
/// names targets or a group is refused before it leaves the PNE.
#[test]
fn another_users_devices_are_reached_only_in_the_sources_pn() {
    let (mut h, _) = two_pns("bob");
    let bytes = seeded_content(10_000, 35);
    assert_eq!(to_user(&mut h, 0, "bob", &bytes), Err(ErrorCode::NotFound));
    assert_eq!(
        to_user(&mut h, 0, "carol", &bytes),
        Err(ErrorCode::NotFound)
    );
    assert!(h.store.deliveries.is_empty(), "nothing opened");
    // Alice's own: PNE 1 only (her PNEs are all in PN A).
    let sessions = to_user(&mut h, 0, "alice", &bytes).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(h.store.pne_received.get(&(1, sessions[0])), Some(&bytes));
    refused_before_sending(
        &mut h,
        vec![
            DeliveryOffer {
                user: Some(cpns_wire::UserId::new("alice").unwrap()),
                ..offer(&[1], &bytes, PnId::from_bytes([0; 16]))
            },
            DeliveryOffer {
                user: Some(cpns_wire::UserId::new("alice").unwrap()),
                targets: Vec::new(),
                ..offer(&[], &bytes, PnId::from_bytes([0; 16]))
            },
            DeliveryOffer {
                user: Some(cpns_wire::UserId::new("alice").unwrap()),
                to_pn: None,
                ..offer(&[1], &bytes, PnId::from_bytes([0; 16]))
            },
            DeliveryOffer {
                user: Some(cpns_wire::UserId::new("alice").unwrap()),
                group: Some(cpns_wire::GroupId::from_bytes([1; 16])),
                targets: Vec::new(),
                to_pn: None,
                ..offer(&[], &bytes, PnId::from_bytes([0; 16]))
            },
        ],
    );
}

/// An audience is bounded as a list of targets is: 16 devices of a user are reached, 17 are
/// refused (name them instead), with nothing opened.
#[test]
fn a_user_with_more_devices_than_a_delivery_reaches_is_refused() {
    let bytes = seeded_content(1_000, 36);
    for (devices, reached) in [(17, Some(16)), (18, None)] {
        let mut h = Harness::one_pn(&vec![PneSpec::trusted(); devices]);
        let got = to_user(&mut h, 0, "alice", &bytes);
        match reached {
            Some(n) => {
                let sessions = got.unwrap();
                assert_eq!(sessions.len(), 1);
                let records = h.store.deliveries.keys().filter(|(s, _)| *s == sessions[0]);
                assert_eq!(records.count(), n);
            }
            None => {
                assert_eq!(got, Err(ErrorCode::BadRequest));
                assert!(h.store.deliveries.is_empty(), "nothing opened");
            }
        }
    }
}

/// A device of the user in the source's PN and in another is reached in the source's PN,
/// whichever of the two the server lists first; the user's devices in the other PN only are
/// reached there.
#[test]
fn a_users_device_in_two_pns_is_reached_in_the_sources() {
    let (mut h, b) = two_pns_one_gateway();
    let a = h.joined(0).unwrap().pn_id;
    // PNE 1 joins PN B too, registering in it.
    h.register(1, Some(b));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    let bytes = seeded_content(5_000, 37);
    // From PN A (PNE 0), then from PN B (PNE 2): PNE 1 is reached in the source's PN each time.
    for (from, source_pn) in [(0, a), (2, b)] {
        let sessions = to_user(&mut h, from, "alice", &bytes).unwrap();
        let pn_of = |h: &Harness, i: usize| {
            sessions
                .iter()
                .find_map(|s| h.store.deliveries.get(&(*s, pne_id(i))))
                .map(|r| r.pn_id)
        };
        assert_eq!(pn_of(&h, 1), Some(source_pn), "from PNE {from}");
        for i in (0..4).filter(|i| *i != from && *i != 1) {
            let expected = if i < 2 { a } else { b };
            assert_eq!(pn_of(&h, i), Some(expected), "PNE {i} from PNE {from}");
        }
    }
}
