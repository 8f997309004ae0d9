//! Deliveries from outside a PN (004 §5.5.8.1, "Between CPNS Server and External entities";
//! §5.5.8.2, "aggregation of common and specific data for multiple PNEs"): an external entity
//! hands the server content for members of a PN; the common part crosses the WAN once and the
//! PN GW gives it to every target, each target's own part comes sealed to it; what is wrong is
//! refused with its reason and opens nothing.

#![allow(clippy::unwrap_used)]

use sha2::Digest;

use cpns_wire::{
    Address, Body, DeliveryAck, DeliveryChunk, DeliveryId, DeliveryOffer, DeliveryResult, EntityId,
    Envelope, ErrorCode, HashBytes, PnId, SetupType,
};

use super::delivery::{from_pne, seeded_content as content};
use super::harness::{Harness, Party, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::GatewayEvent;
use crate::pne::PneEvent;
use crate::server::{ExternalDelivery, MAX_OUTBOUND, ServerEvent};

/// Eight PNEs, members of one PN behind one PN GW.
const PNES: usize = 8;

fn world() -> (Harness, PnId) {
    world_with(&[PneSpec::trusted(); PNES])
}

fn world_with(specs: &[PneSpec]) -> (Harness, PnId) {
    world_cfg(specs, |_| {})
}

fn world_cfg(
    specs: &[PneSpec],
    tune: impl FnOnce(&mut crate::server::ServerConfig),
) -> (Harness, PnId) {
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    cfg.tariff.insert("vod".into(), 1);
    tune(&mut cfg);
    let mut h = Harness::with_server(specs, cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.members(pn).len(), specs.len());
    (h, pn)
}

fn vod() -> EntityId {
    "vod-service".parse().unwrap()
}

/// `bytes` from the external entity `vod-service` to `targets` of PN `pn`, with `specific`.
fn delivery(
    pn: PnId,
    targets: &[usize],
    bytes: &[u8],
    specific: Vec<(EntityId, Vec<u8>)>,
) -> ExternalDelivery {
    ExternalDelivery {
        source: vod(),
        owner: "operator".parse().unwrap(),
        pn_id: pn,
        offer: DeliveryOffer {
            service_id: "vod".into(),
            targets: targets.iter().map(|i| pne_id(*i)).collect(),
            name: "film.mp4".into(),
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
        },
        specific,
    }
}

/// The server delivers `d` (its content in the server's outbox): the answer to `ask`.
fn deliver(h: &mut Harness, d: ExternalDelivery, ask: u64) -> Result<DeliveryId, ErrorCode> {
    let now = h.now();
    h.server.deliver(now, d, ask);
    h.pump();
    let (_, result) = h
        .deliveries_started
        .iter()
        .find(|(a, _)| *a == ask)
        .unwrap();
    result.as_ref().map(|s| *s).map_err(|e| e.code)
}

/// From now on, what the PN GW tells the server its targets have past `have` bytes is lost
/// (the WAN session is about to be lost with it).
fn acks_lost_past(h: &mut Harness, have: u64) {
    use super::harness::Action;
    h.set_hook(move |f| {
        if f.from == Party::Gw
            && f.to == Party::Server
            && let Some(Body::DeliveryAck(a)) = f.env().map(|e| e.body)
            && a.have > have
        {
            return Action::Drop;
        }
        Action::Deliver
    });
}

fn server_chunks(h: &Harness, session: DeliveryId) -> Vec<u64> {
    h.delivered(Party::Server, Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) if c.session == session => Some(c.offset),
            _ => None,
        })
        .collect()
}

#[test]
fn content_from_outside_crosses_the_wan_once_and_each_target_gets_its_own_part_too() {
    let (mut h, pn) = world();
    let bytes = content(300_000, 1);
    h.store.server_outbox = bytes.clone();
    let targets: Vec<usize> = (0..PNES).collect();
    let parts: Vec<(EntityId, Vec<u8>)> = targets
        .iter()
        .map(|i| (pne_id(*i), content(1_000 + *i, 100 + *i as u32)))
        .collect();
    let session = deliver(&mut h, delivery(pn, &targets, &bytes, parts.clone()), 7).unwrap();

    // Every target has the common part, hash checked, and its own part.
    for (i, (_, part)) in parts.iter().enumerate() {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
        assert_eq!(
            h.store.pne_specific.get(&(i, session)),
            Some(part),
            "PNE {i}"
        );
        let told = h.pne_events(i).into_iter().any(|e| {
            matches!(e, PneEvent::DeliveryReceived { session: s, from, bytes: 300_000, specific, .. }
                if *s == session && *from == vod() && *specific == part.len() as u64)
        });
        assert!(told, "PNE {i} was told");
    }
    // The WAN carried each chunk once; the PAN carried it to each target.
    let wan = server_chunks(&h, session);
    assert_eq!(wan, [0, 65_536, 131_072, 196_608, 262_144]);
    assert_eq!(h.server_reads, 5, "the content was read once");
    for i in 0..PNES {
        let to_pne = h
            .delivered(Party::Gw, Party::Pne(i))
            .into_iter()
            .filter(|e| matches!(&e.body, Body::DeliveryChunk(c) if c.session == session))
            .count();
        assert_eq!(to_pne, 5, "PNE {i}");
    }
    let relayed = h.gw_events().into_iter().any(|e| {
        matches!(e, GatewayEvent::DeliveryRelayed { session: s, bytes, .. }
            if *s == session && *bytes == 300_000 * PNES as u64)
    });
    assert!(relayed);
    // Nothing of the content, nor of anyone's own part, crossed anywhere in the clear.
    for probe in [&bytes[150_000..150_032], &parts[3].1[500..532]] {
        assert!(
            h.log
                .iter()
                .all(|f| !f.body.windows(32).any(|w| w == probe))
        );
    }
    // The server was told every target has it, and each record is closed, charged to the
    // target's user, with the external entity as its source.
    let sent = h.server_events().into_iter().find_map(|e| match e {
        ServerEvent::DeliverySent {
            session: s,
            delivered,
        } if *s == session => Some(delivered.clone()),
        _ => None,
    });
    let mut sent = sent.unwrap();
    sent.sort();
    assert_eq!(sent, (0..PNES).map(pne_id).collect::<Vec<_>>());
    for i in 0..PNES {
        let r = &h.store.deliveries[&(session, pne_id(i))];
        assert_eq!(r.ended, Some((300_000, DeliveryResult::Delivered.code())));
        assert_eq!((r.source.clone(), r.charged.as_str()), (vod(), "alice"));
        assert_eq!(r.per_mb, Some(1), "at the service's tariff");
    }
    // The PN GW kept no route of it (it ends with the WAN session).
    assert!(!h.store.gw_routes.contains_key(&session));
    assert!(h.gw.relayed_deliveries().is_empty());
}

#[test]
fn a_target_that_declines_ends_its_part_and_the_others_still_get_it() {
    let decline = PneSpec {
        deliveries: crate::pne::InvitationPolicy::Decline,
        ..PneSpec::trusted()
    };
    let mut specs = [PneSpec::trusted(); PNES];
    specs[2] = decline;
    let (mut h, pn) = world_with(&specs);
    let bytes = content(150_000, 6);
    h.store.server_outbox = bytes.clone();
    let session = deliver(&mut h, delivery(pn, &[1, 2, 3], &bytes, vec![]), 1).unwrap();
    for i in [1, 3] {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
    }
    assert!(!h.store.pne_received.contains_key(&(2, session)));
    let events: Vec<&ServerEvent> = h.server_events();
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::DeliveryEnded { session: s, target, result: DeliveryResult::Declined }
            if *s == session && *target == pne_id(2))));
    let sent = events.iter().find_map(|e| match e {
        ServerEvent::DeliverySent {
            session: s,
            delivered,
        } if *s == session => Some(delivered.clone()),
        _ => None,
    });
    let mut sent = sent.unwrap();
    sent.sort();
    assert_eq!(sent, [pne_id(1), pne_id(3)]);
    assert_eq!(
        h.store.deliveries[&(session, pne_id(2))].ended,
        Some((0, DeliveryResult::Declined.code()))
    );
}

#[test]
fn what_is_wrong_is_refused_with_its_reason_and_opens_nothing() {
    let (mut h, pn) = world();
    let bytes = content(10_000, 2);
    h.store.server_outbox = bytes.clone();
    let big = vec![0u8; cpns_wire::MAX_SPECIFIC + 1];
    let stranger: PnId = PnId::from_bytes([0xee; 16]);
    let cases: Vec<(ExternalDelivery, ErrorCode)> = vec![
        (
            delivery(stranger, &[1], &bytes, vec![]),
            ErrorCode::NotFound,
        ),
        (
            delivery(pn, &[1], &bytes, vec![(pne_id(2), vec![1])]),
            ErrorCode::BadRequest,
        ),
        (
            delivery(
                pn,
                &[1],
                &bytes,
                vec![(pne_id(1), vec![1]), (pne_id(1), vec![2])],
            ),
            ErrorCode::BadRequest,
        ),
        (
            delivery(pn, &[1], &bytes, vec![(pne_id(1), big)]),
            ErrorCode::BadRequest,
        ),
        (delivery(pn, &[], &bytes, vec![]), ErrorCode::BadRequest),
        (delivery(pn, &[1], &[], vec![]), ErrorCode::BadRequest),
    ];
    let mut not_member = delivery(pn, &[1], &bytes, vec![]);
    not_member.offer.targets = vec!["stranger-tv".parse().unwrap()];
    // Neither held nor by capability: what a PNE may ask of its own offer.
    let mut held = delivery(pn, &[1], &bytes, vec![]);
    held.offer.held = true;
    let mut by_capability = delivery(pn, &[1], &bytes, vec![]);
    by_capability.offer.requires = br#"{"has_ui":true}"#.to_vec();
    let cases: Vec<_> = cases
        .into_iter()
        .chain([
            (held, ErrorCode::BadRequest),
            (by_capability, ErrorCode::BadRequest),
        ])
        .collect();
    for (ask, (d, code)) in cases
        .into_iter()
        .chain([(not_member, ErrorCode::NotFound)])
        .enumerate()
    {
        assert_eq!(deliver(&mut h, d, ask as u64), Err(code), "case {ask}");
    }
    assert!(h.store.deliveries.is_empty(), "no record opened");
    assert!(h.gw.relayed_deliveries().is_empty(), "no route");
    assert_eq!(h.server_reads, 0);
    assert!(
        h.log.iter().all(|f| f.message != "DeliveryRoute"),
        "the PN GW was told of nothing"
    );
}

#[test]
fn a_pn_gw_takes_only_so_many_deliveries_from_outside_at_once() {
    let (mut h, pn) = world();
    let bytes = content(10_000, 3);
    h.store.server_outbox = bytes.clone();
    // The targets take nothing: their first word is lost, so every session stays open.
    h.drop_message("DeliveryAck");
    for ask in 0..MAX_OUTBOUND as u64 {
        deliver(&mut h, delivery(pn, &[1], &bytes, vec![]), ask).unwrap();
    }
    let past = MAX_OUTBOUND as u64;
    assert_eq!(
        deliver(&mut h, delivery(pn, &[1], &bytes, vec![]), past),
        Err(ErrorCode::Busy)
    );
    assert_eq!(h.store.deliveries.len(), MAX_OUTBOUND);
}

#[test]
fn deliveries_from_outside_still_being_set_up_count_toward_the_bound() {
    let (mut h, pn) = world();
    let bytes = content(10_000, 5);
    h.store.server_outbox = bytes.clone();
    // Every set-up waits for the store: none is sending yet, all are taken.
    h.store.hold_loads = true;
    let now = h.now();
    for ask in 0..MAX_OUTBOUND as u64 {
        h.server
            .deliver(now, delivery(pn, &[1], &bytes, vec![]), ask);
    }
    h.pump();
    assert_eq!(h.store.held.len(), MAX_OUTBOUND);
    assert!(h.deliveries_started.is_empty());
    let past = MAX_OUTBOUND as u64;
    h.server
        .deliver(now, delivery(pn, &[1], &bytes, vec![]), past);
    h.pump();
    assert!(matches!(
        &h.deliveries_started[..],
        [(a, Err(e))] if *a == past && e.code == ErrorCode::Busy
    ));
    assert_eq!(
        h.store.held.len(),
        MAX_OUTBOUND,
        "nothing more asked of the store"
    );
}

#[test]
fn a_part_of_its_own_is_taken_up_to_its_bound() {
    let (mut h, pn) = world();
    let bytes = content(10_000, 6);
    h.store.server_outbox = bytes.clone();
    let most = vec![7u8; cpns_wire::MAX_SPECIFIC];
    let session = deliver(
        &mut h,
        delivery(pn, &[1], &bytes, vec![(pne_id(1), most.clone())]),
        1,
    )
    .unwrap();
    assert_eq!(h.store.pne_specific.get(&(1, session)), Some(&most));
}

#[test]
fn no_pne_sends_the_chunks_of_a_delivery_from_outside_and_the_server_none_of_a_pnes() {
    let (mut h, pn) = world();
    let bytes = content(100_000, 4);
    h.store.server_outbox = bytes.clone();
    h.drop_message("DeliveryAck");
    let session = deliver(&mut h, delivery(pn, &[1, 2], &bytes, vec![]), 1).unwrap();
    // A member of the PN sends a chunk in the session's name: refused, nothing relayed.
    from_pne(
        &mut h,
        3,
        DeliveryChunk {
            digest: None,
            session,
            offset: 0,
            sealed: vec![1; 100],
        },
    );
    let refused = h.gw_events().into_iter().any(|e| {
        matches!(e, GatewayEvent::DeliveryRefused { session: s, reason, .. }
            if *s == session && reason.contains("only the session's source"))
    });
    assert!(refused);
    assert!(
        h.delivered(Party::Gw, Party::Pne(1))
            .iter()
            .all(|e| !matches!(e.body, Body::DeliveryChunk(_))),
        "nothing relayed"
    );
    // An acknowledgement of what the server does not send: refused at the server.
    h.clear_hook();
    let other = DeliveryId::from_bytes([9; 16]);
    let env = Envelope::request(
        9_990,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Server,
        DeliveryAck {
            session: other,
            have: 0,
            resume: true,
        },
    );
    h.inject(Party::Gw, Party::Server, plain(&env));
    h.pump();
    let answer = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find(|e| e.in_reply_to == Some(9_990))
        .map(|e| e.body);
    assert!(matches!(answer, Some(Body::ErrorBody(e)) if e.code == ErrorCode::NotFound));
}

#[test]
fn a_delivery_from_outside_goes_on_in_the_pn_gws_next_session() {
    let (mut h, pn) = world();
    let bytes = content(1_200_000, 5);
    h.store.server_outbox = bytes.clone();
    // The WAN session is lost once the targets hold a third: what they say past it is lost
    // with it.
    acks_lost_past(&mut h, 200_000);
    let session = deliver(&mut h, delivery(pn, &[1, 2], &bytes, vec![]), 1).unwrap();
    assert!(!h.store.pne_received.contains_key(&(1, session)));
    let now = h.now();
    let kept = h.server.end_deliveries(now);
    assert!(!kept.is_empty());
    assert_eq!(kept.sessions(), [session]);
    assert_eq!(kept.gateway(), Some(&h.gw_cfg.id));
    assert_eq!(kept.since(), Some(now));
    h.gw.wan_closed(now);
    h.pump();
    assert!(
        h.gw.relayed_deliveries().is_empty(),
        "its route went with the WAN"
    );
    let stopped = |h: &Harness| {
        h.server_events()
            .into_iter()
            .any(|e| matches!(e, ServerEvent::DeliveryStopped { session: s, .. } if *s == session))
    };
    assert!(!stopped(&h), "kept, not stopped");
    h.clear_hook();
    // A session of no PN GW yet does not take them: they are given back whole.
    let mut bare = crate::server::ServerSession::new(
        h.server_cfg.clone(),
        super::harness::EXPORTER,
        now,
        cpns_crypto::MachineRng::from_seed_u64(5),
    );
    let kept = bare.restore_outbound(now, kept).unwrap_err();
    assert_eq!(kept.sessions(), [session]);
    // The PN GW's next session: the route is told again and the source goes on from what
    // every target had, not from the start.
    let before = server_chunks(&h, session).len();
    h.reopen_wan();
    let now = h.now();
    h.server.restore_outbound(now, kept).unwrap();
    h.pump();
    assert!(!stopped(&h));
    for i in [1, 2] {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
    }
    let again: Vec<u64> = server_chunks(&h, session)
        .into_iter()
        .skip(before)
        .collect();
    assert!(
        again[0] >= 196_608,
        "went on from what the targets had: {again:?}"
    );
    let sent = h.server_events().into_iter().find_map(|e| match e {
        ServerEvent::DeliverySent {
            session: s,
            delivered,
        } if *s == session => Some(delivered.clone()),
        _ => None,
    });
    assert_eq!(sent, Some(vec![pne_id(1), pne_id(2)]));
}

/// PNE 1 takes 1,000,000 bytes from outside until it holds more than 100,000; then the WAN
/// session is lost, and the PN GW's next session takes the delivery back with the routes of
/// `h`: the session, and what the last session kept of it.
fn lost_and_restored(h: &mut Harness, pn: PnId, seed: u32) -> DeliveryId {
    use super::harness::Action;
    let bytes = content(1_000_000, seed);
    h.store.server_outbox = bytes.clone();
    acks_lost_past(h, 100_000);
    let session = deliver(h, delivery(pn, &[1], &bytes, vec![]), 1).unwrap();
    let now = h.now();
    let kept = h.server.end_deliveries(now);
    h.gw.wan_closed(now);
    h.pump();
    h.reopen_wan();
    // Nothing of the target reaches the server from now on (a PN GW that lost it).
    h.set_hook(|f| {
        if f.from == Party::Gw
            && f.to == Party::Server
            && matches!(f.message, "DeliveryAck" | "DeliveryDone")
        {
            return Action::Drop;
        }
        Action::Deliver
    });
    let now = h.now();
    h.server.restore_outbound(now, kept).unwrap();
    h.pump();
    session
}

fn stopped(h: &Harness, session: DeliveryId) -> Option<String> {
    h.server_events().into_iter().find_map(|e| match e {
        ServerEvent::DeliveryStopped { session: s, reason } if *s == session => {
            Some(reason.clone())
        }
        _ => None,
    })
}

#[test]
fn a_delivery_gone_on_that_no_target_speaks_of_stops_after_two_flow_timeouts() {
    let (mut h, pn) = world();
    let session = lost_and_restored(&mut h, pn, 6);
    let flow = h.server_cfg.timeouts.flow;
    h.advance(flow * 2 - std::time::Duration::from_secs(1));
    assert_eq!(stopped(&h, session), None, "not before two flow timeouts");
    h.advance(std::time::Duration::from_secs(1));
    let reason = stopped(&h, session).expect("stopped");
    assert!(reason.contains("no target said anything"), "{reason}");
    // Stopped: nothing is kept of it when this session ends too.
    let now = h.now();
    assert!(h.server.end_deliveries(now).is_empty());
}

#[test]
fn a_delivery_from_outside_waiting_for_its_targets_is_not_stopped() {
    // The target's application has not answered the offer: it says nothing, for as long as
    // its user takes.
    let ask = PneSpec {
        deliveries: crate::pne::InvitationPolicy::Ask {
            within: std::time::Duration::from_secs(3600),
        },
        ..PneSpec::trusted()
    };
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    cfg.offline_after = None;
    let mut h = Harness::with_server(&[PneSpec::trusted(), ask], cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    let bytes = content(100_000, 8);
    h.store.server_outbox = bytes.clone();
    let session = deliver(&mut h, delivery(pn, &[1], &bytes, vec![]), 1).unwrap();
    let flow = h.server_cfg.timeouts.flow;
    h.advance(flow * 3);
    assert_eq!(stopped(&h, session), None);
    // Lost and taken back before anything moved: it waits as before, and is not stopped.
    let now = h.now();
    let kept = h.server.end_deliveries(now);
    h.gw.wan_closed(now);
    h.pump();
    h.reopen_wan();
    let now = h.now();
    h.server.restore_outbound(now, kept).unwrap();
    h.pump();
    h.advance(flow * 3);
    assert_eq!(stopped(&h, session), None);
    let now = h.now();
    assert_eq!(h.server.end_deliveries(now).sessions(), [session]);
}

#[test]
fn a_restored_route_names_only_the_targets_still_open() {
    // PNE 2 declines every delivery; PNE 1 takes it, and stalls.
    let decline = PneSpec {
        deliveries: crate::pne::InvitationPolicy::Decline,
        ..PneSpec::trusted()
    };
    let (mut h, pn) = world_with(&[PneSpec::trusted(), PneSpec::trusted(), decline]);
    let bytes = content(1_000_000, 9);
    h.store.server_outbox = bytes.clone();
    acks_lost_past(&mut h, 100_000);
    let session = deliver(&mut h, delivery(pn, &[1, 2], &bytes, vec![]), 1).unwrap();
    assert_eq!(
        h.delivery_ends(2, session),
        [(pne_id(2), DeliveryResult::Declined)]
    );
    h.lose_wan(Party::Gw);
    h.clear_hook();
    h.regain_wan(Party::Gw);
    let routes: Vec<Vec<EntityId>> = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryRoute(r) if r.session == session => Some(r.targets),
            _ => None,
        })
        .collect();
    assert_eq!(routes.last(), Some(&vec![pne_id(1)]));
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
}

#[test]
fn an_abandoned_delivery_from_outside_sends_nothing_more() {
    let (mut h, pn) = world();
    let bytes = content(300_000, 7);
    h.store.server_outbox = bytes.clone();
    // The targets' first word is held back: the session is set up and has sent nothing.
    h.drop_message("DeliveryAck");
    let session = deliver(&mut h, delivery(pn, &[1], &bytes, vec![]), 1).unwrap();
    h.clear_hook();
    h.server.abandon_delivery(session);
    h.pump();
    assert!(h.server_events().into_iter().any(|e| matches!(e,
        ServerEvent::DeliveryStopped { session: s, .. } if *s == session)));
    // Its target says where it is: nothing is read, nothing sent.
    let env = cpns_wire::Envelope::notify(
        9_991,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Server,
        DeliveryAck {
            session,
            have: 0,
            resume: true,
        },
    );
    h.inject(Party::Gw, Party::Server, plain(&env));
    h.pump();
    assert_eq!(h.server_reads, 0);
    assert!(server_chunks(&h, session).is_empty());
    // Abandoned twice: nothing more is said.
    let stopped = h.server_events().len();
    h.server.abandon_delivery(session);
    h.pump();
    assert_eq!(h.server_events().len(), stopped);
}

#[test]
fn a_delivery_gone_on_is_given_up_two_flow_timeouts_after_it_went_on() {
    // No heartbeat deadline: the session's next deadline is the delivery's.
    let (mut h, pn) = world_cfg(&[PneSpec::trusted(); 3], |c| c.offline_after = None);
    let session = lost_and_restored(&mut h, pn, 10);
    let flow = h.server_cfg.timeouts.flow;
    assert_eq!(h.server.poll_timeout(), Some(h.now() + flow * 2));
    assert_eq!(stopped(&h, session), None);
}

#[test]
fn kept_deliveries_of_two_lost_sessions_go_together_from_the_earlier_loss() {
    use super::harness::Action;
    let (mut h, pn) = world();
    let bytes = content(300_000, 11);
    h.store.server_outbox = bytes.clone();
    h.drop_message("DeliveryAck");
    let session = deliver(&mut h, delivery(pn, &[1], &bytes, vec![]), 1).unwrap();
    h.clear_hook();
    let early = h.now();
    h.advance(std::time::Duration::from_secs(5));
    let late = h.now();
    let mut kept = h.server.end_deliveries(late);
    assert_eq!(kept.since(), Some(late));
    // An earlier loss, of a session of no PN GW that sent nothing: the time is the earlier,
    // the sessions and the PN GW are the later's.
    let mut other = crate::server::ServerSession::new(
        h.server_cfg.clone(),
        super::harness::EXPORTER,
        early,
        cpns_crypto::MachineRng::from_seed_u64(6),
    );
    let earlier = other.end_deliveries(early);
    assert!(earlier.is_empty());
    assert_eq!(earlier.gateway(), None);
    kept.absorb(earlier);
    assert_eq!(kept.since(), Some(early));
    assert_eq!(kept.sessions(), [session]);
    assert_eq!(kept.gateway(), Some(&h.gw_cfg.id));
    // Absorbed the other way round, the PN GW comes with the sessions.
    let mut none = other.end_deliveries(late);
    none.absorb(kept);
    assert_eq!(none.gateway(), Some(&h.gw_cfg.id));
    assert_eq!(none.sessions(), [session]);
    assert_eq!(none.since(), Some(early));
    // Restored into a session whose PN GW has not finished its set-up (its answer to the
    // status lookup is lost): they wait, counted toward the bound, and keep their time.
    // (And the targets' acknowledgements, so that what is set up stays open.)
    h.set_hook(|f| {
        if matches!(f.message, "StatusUpdateResponse" | "DeliveryAck") {
            return Action::Drop;
        }
        Action::Deliver
    });
    h.gw.wan_closed(h.now());
    h.pump();
    h.reopen_wan();
    let now = h.now();
    let sent = h.delivered(Party::Server, Party::Gw).len();
    h.server.restore_outbound(now, none).unwrap();
    h.pump();
    assert!(
        !h.delivered(Party::Server, Party::Gw)
            .into_iter()
            .skip(sent)
            .any(|e| matches!(&e.body, Body::DeliveryRoute(r) if r.session == session)),
        "no route before the set-up is done"
    );
    for ask in 0..(MAX_OUTBOUND as u64 - 1) {
        let d = delivery(pn, &[2], &bytes, vec![]);
        assert!(deliver(&mut h, d, 100 + ask).is_ok(), "delivery {ask}");
    }
    let d = delivery(pn, &[2], &bytes, vec![]);
    assert_eq!(deliver(&mut h, d, 200), Err(ErrorCode::Busy));
    let again = h.server.end_deliveries(h.now());
    assert!(again.sessions().contains(&session));
    assert_eq!(again.since(), Some(early));
}

/// A target that accepted just as its PN GW's WAN session went (its acceptance lost with it):
/// once the PN GW's next session took the delivery back and told its route again, the
/// server's source still waits for the target (nothing moved yet), and the target for a chunk.
/// A flow timeout into its wait the target says again what it has, and it all moves.
#[test]
fn a_target_whose_acceptance_went_with_the_wan_session_says_it_again_and_gets_it_all() {
    use super::harness::Action;
    // No heartbeats here: the server does not end a silent PN GW's session meanwhile.
    let (mut h, pn) = world_cfg(&[PneSpec::trusted(); PNES], |c| c.offline_after = None);
    let bytes = content(300_000, 9);
    h.store.server_outbox = bytes.clone();
    h.set_hook(|f| {
        if f.from == Party::Gw
            && f.to == Party::Server
            && matches!(f.env().map(|e| e.body), Some(Body::DeliveryAck(_)))
        {
            return Action::Drop;
        }
        Action::Deliver
    });
    let session = deliver(&mut h, delivery(pn, &[1], &bytes, vec![]), 1).unwrap();
    assert!(
        server_chunks(&h, session).is_empty(),
        "its acceptance was lost"
    );
    h.lose_wan(Party::Gw);
    h.clear_hook();
    h.regain_wan(Party::Gw);
    assert!(
        server_chunks(&h, session).is_empty(),
        "the route is told again; the source waits for its target"
    );
    h.advance(std::time::Duration::from_secs(29));
    assert!(
        server_chunks(&h, session).is_empty(),
        "not before a flow timeout"
    );
    h.advance(std::time::Duration::from_secs(2));
    assert!(
        h.store.pne_received.get(&(1, session)) == Some(&bytes),
        "the target has it all"
    );
    assert!(h.server_events().into_iter().any(|e| matches!(
        e,
        ServerEvent::DeliverySent { session: s, .. } if *s == session
    )));
}
