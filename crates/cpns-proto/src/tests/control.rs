//! Service control of a delivery session (004 §5.5.8.2, "Service Control (e.g. start, stop)";
//! docs/services.md, "Service control"): its source starts a session set up held, pauses,
//! resumes or stops it; each target is told through the PN GW (and the server, between PNs),
//! holds without giving up, goes on, or ends its part keeping nothing. Only the source controls
//! a session, and only in a state the action fits.

use sha2::Digest;

use cpns_wire::{
    Body, ControlAction, DeliveryControl, DeliveryId, DeliveryOffer, DeliveryResult, Envelope,
    HashBytes, SetupType,
};

use super::delivery::seeded_content;
use super::harness::{Action, Harness, Party, plain, pne_id};
use super::store::PneSpec;
use crate::CommandError;
use crate::pne::{Outcome, PneEvent};

/// PNEs 0, 1 and 2 in one PN.
fn world() -> Harness {
    Harness::one_pn(&[PneSpec::trusted(); 3])
}

fn offer(to: &[usize], bytes: &[u8], held: bool) -> DeliveryOffer {
    DeliveryOffer {
        service_id: "video".into(),
        targets: to.iter().map(|i| pne_id(*i)).collect(),
        name: "film.mp4".into(),
        media_type: "video/mp4".into(),
        size: bytes.len() as u64,
        sha256: Some(HashBytes(sha2::Sha256::digest(bytes).into())),
        to_pn: None,
        held,
        requires: Vec::new(),
        suite: None,
        group: None,
        user: None,
        more: Vec::new(),
    }
}

/// PNE 0 offers `bytes` to `to`: the session granted.
fn push(h: &mut Harness, to: &[usize], bytes: &[u8], held: bool) -> DeliveryId {
    h.store.pne_outbox.insert(0, bytes.to_vec());
    let now = h.now();
    let id = h.pnes[0]
        .offer_delivery(now, &offer(to, bytes, held))
        .unwrap();
    h.pump();
    match h.outcome(0, id) {
        Outcome::DeliveryGranted { session, .. } => *session,
        other => panic!("{other:?}"),
    }
}

fn control(
    h: &mut Harness,
    session: DeliveryId,
    action: ControlAction,
) -> Result<(), CommandError> {
    let r = h.pnes[0].control_delivery(session, action);
    h.pump();
    r
}

fn chunks_sent(h: &Harness, session: DeliveryId) -> usize {
    h.delivered(Party::Pne(0), Party::Gw)
        .into_iter()
        .filter(|e| matches!(&e.body, Body::DeliveryChunk(c) if c.session == session))
        .count()
}

fn controlled(h: &Harness, i: usize, session: DeliveryId) -> Vec<ControlAction> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::DeliveryControlled { session: s, action } if *s == session => Some(*action),
            _ => None,
        })
        .collect()
}

/// Holds back every acknowledgement the PN GW gives the source after its first `n`: the
/// session stops a window past them, mid-way.
fn hold_acks_after(h: &mut Harness, n: usize) {
    let mut seen = 0;
    h.set_hook(move |f| {
        if f.from == Party::Gw && f.to == Party::Pne(0) && f.message == "DeliveryAck" {
            seen += 1;
            if seen > n {
                return Action::Drop;
            }
        }
        Action::Deliver
    });
}

/// Hands the source the acknowledgements held back.
fn release_acks(h: &mut Harness) {
    h.clear_hook();
    let held: Vec<Vec<u8>> = h
        .dropped
        .drain(..)
        .filter(|f| f.message == "DeliveryAck")
        .map(|f| f.body)
        .collect();
    for body in held {
        h.inject(Party::Gw, Party::Pne(0), body);
    }
    h.pump();
}

#[test]
fn a_session_set_up_held_moves_only_once_started_and_its_targets_wait_meanwhile() {
    let mut h = world();
    let bytes = seeded_content(300_000, 21);
    let session = push(&mut h, &[1, 2], &bytes, true);
    // Accepted by both, nothing sent; five minutes on, neither target gave up.
    assert_eq!(chunks_sent(&h, session), 0);
    h.advance(std::time::Duration::from_secs(300));
    assert_eq!(chunks_sent(&h, session), 0);
    assert!(h.delivery_ends(1, session).is_empty() && h.delivery_ends(2, session).is_empty());
    control(&mut h, session, ControlAction::Start).unwrap();
    for i in [1, 2] {
        assert_eq!(h.store.pne_received.get(&(i, session)), Some(&bytes));
        assert_eq!(controlled(&h, i, session), [ControlAction::Start]);
    }
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(1), pne_id(2)])
    );
    // Started once: not again.
    assert!(matches!(
        h.pnes[0].control_delivery(session, ControlAction::Start),
        Err(CommandError::NotSending(_))
    ));
}

#[test]
fn a_paused_session_sends_nothing_its_targets_do_not_give_up_and_it_resumes_to_the_end() {
    let mut h = world();
    hold_acks_after(&mut h, 2);
    let bytes = seeded_content(600_000, 22);
    let session = push(&mut h, &[1, 2], &bytes, false);
    let before = chunks_sent(&h, session);
    assert!(
        before > 0 && h.delivery_sent(0, session).is_none(),
        "mid-way"
    );
    control(&mut h, session, ControlAction::Pause).unwrap();
    // What the targets acknowledged reaches the source now: paused, it sends nothing more.
    release_acks(&mut h);
    assert_eq!(chunks_sent(&h, session), before);
    h.advance(std::time::Duration::from_secs(300));
    assert_eq!(chunks_sent(&h, session), before);
    for i in [1, 2] {
        assert!(h.delivery_ends(i, session).is_empty(), "PNE {i} waited");
        assert_eq!(controlled(&h, i, session), [ControlAction::Pause]);
    }
    control(&mut h, session, ControlAction::Resume).unwrap();
    for i in [1, 2] {
        assert_eq!(h.store.pne_received.get(&(i, session)), Some(&bytes));
        assert_eq!(
            controlled(&h, i, session),
            [ControlAction::Pause, ControlAction::Resume]
        );
    }
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(1), pne_id(2)])
    );
}

#[test]
fn a_stopped_session_ends_every_targets_part_keeping_nothing_and_is_recorded_so() {
    let mut h = world();
    hold_acks_after(&mut h, 2);
    let bytes = seeded_content(600_000, 23);
    let session = push(&mut h, &[1, 2], &bytes, false);
    control(&mut h, session, ControlAction::Stop).unwrap();
    release_acks(&mut h);
    for i in [1, 2] {
        assert!(!h.store.pne_received.contains_key(&(i, session)));
        assert!(!h.store.pne_inbox.contains_key(&(i, session)), "discarded");
        let (bytes, result) = h.store.deliveries[&(session, pne_id(i))].ended.unwrap();
        assert_eq!(result, DeliveryResult::Stopped.code());
        assert!(bytes < 600_000);
        assert_eq!(
            h.delivery_ends(i, session),
            [(pne_id(i), DeliveryResult::Stopped)]
        );
    }
    assert_eq!(
        h.delivery_ends(0, session),
        [
            (pne_id(1), DeliveryResult::Stopped),
            (pne_id(2), DeliveryResult::Stopped)
        ]
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![]));
    assert!(h.gw.relayed_deliveries().is_empty(), "the route is gone");
}

#[test]
fn only_the_source_controls_a_session_and_only_as_its_state_allows() {
    let mut h = world();
    hold_acks_after(&mut h, 2);
    let bytes = seeded_content(600_000, 24);
    let session = push(&mut h, &[1, 2], &bytes, false);
    // A target may not control the session it receives; nobody controls one that is not.
    assert!(matches!(
        h.pnes[1].control_delivery(session, ControlAction::Stop),
        Err(CommandError::NotSending(_))
    ));
    let stranger = DeliveryId::from_bytes([0x42; 16]);
    assert!(matches!(
        h.pnes[0].control_delivery(stranger, ControlAction::Pause),
        Err(CommandError::NotSending(_))
    ));
    // A moving session cannot be started or resumed; a paused one not paused again.
    for (a, says) in [
        (ControlAction::Start, "a session moving cannot start"),
        (ControlAction::Resume, "a session moving cannot resume"),
    ] {
        let e = h.pnes[0].control_delivery(session, a).unwrap_err();
        assert!(
            matches!(&e, CommandError::DeliveryState(r) if r == says),
            "{e}"
        );
        assert_eq!(e.code(), cpns_wire::ErrorCode::WrongState);
    }
    control(&mut h, session, ControlAction::Pause).unwrap();
    assert!(matches!(
        h.pnes[0].control_delivery(session, ControlAction::Pause),
        Err(CommandError::DeliveryState(r)) if r == "a session paused cannot pause"
    ));
    // A target forging its source's control at the PN GW: refused there, the others untouched.
    let forged = Envelope::notify(
        9_000_002,
        cpns_wire::Address::Entity(pne_id(1)),
        cpns_wire::Address::Entity(super::harness::id("gw-1")),
        DeliveryControl {
            session,
            action: ControlAction::Stop,
        },
    );
    h.inject(Party::Pne(1), Party::Gw, plain(&forged));
    h.pump();
    let refused = h.gw_events().into_iter().any(|e| {
        matches!(e, crate::gateway::GatewayEvent::DeliveryRefused { session: s, from, reason }
            if *s == session && *from == pne_id(1) && reason.contains("source"))
    });
    assert!(refused);
    assert!(
        h.delivery_ends(2, session).is_empty(),
        "PNE 2 was not stopped"
    );
    let to_two = h
        .delivered(Party::Gw, Party::Pne(2))
        .into_iter()
        .filter(|e| matches!(&e.body, Body::DeliveryControl(c) if c.action == ControlAction::Stop))
        .count();
    assert_eq!(to_two, 0);
    // Resumed, it goes to the end.
    control(&mut h, session, ControlAction::Resume).unwrap();
    release_acks(&mut h);
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(1), pne_id(2)])
    );
}

#[test]
fn service_control_reaches_targets_behind_another_pn_gw_through_the_server() {
    let specs = [PneSpec::trusted(); 4];
    let mut h = Harness::with_far(&specs, 2, "alice");
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    h.setup(2, SetupType::Invite(vec![pne_id(3)]));
    let b = h.joined(2).unwrap().pn_id;
    let bytes = seeded_content(200_000, 25);
    h.store.pne_outbox.insert(0, bytes.clone());
    let now = h.now();
    let o = DeliveryOffer {
        to_pn: Some(b),
        ..offer(&[2, 3], &bytes, true)
    };
    let id = h.pnes[0].offer_delivery(now, &o).unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session, .. } = *h.outcome(0, id) else {
        panic!()
    };
    h.advance(std::time::Duration::from_secs(300));
    assert!(h.delivery_sent(0, session).is_none() && h.delivery_ends(2, session).is_empty());
    control(&mut h, session, ControlAction::Start).unwrap();
    for i in [2, 3] {
        assert_eq!(h.store.pne_received.get(&(i, session)), Some(&bytes));
        assert_eq!(controlled(&h, i, session), [ControlAction::Start]);
    }
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(2), pne_id(3)])
    );
    // The control crossed each WAN session once.
    let up = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter(|e| matches!(e.body, Body::DeliveryControl(_)))
        .count();
    let down = h
        .delivered(Party::FarServer, Party::FarGw)
        .into_iter()
        .filter(|e| matches!(e.body, Body::DeliveryControl(_)))
        .count();
    assert_eq!((up, down), (1, 1));
}

/// The last control PNE `i` was told, counted.
fn told_controls(h: &Harness, i: usize, session: DeliveryId) -> usize {
    h.pne_events(i)
        .into_iter()
        .filter(|e| matches!(e, PneEvent::DeliveryControlled { session: s, .. } if *s == session))
        .count()
}

#[test]
fn a_target_gives_up_two_flow_timeouts_after_its_last_chunk_or_resume_and_not_before() {
    // Accepted, and no chunk ever comes: failed at 60 s after the acceptance, not at 59.
    let mut h = world();
    h.drop_message("DeliveryChunk");
    let bytes = seeded_content(200_000, 26);
    let session = push(&mut h, &[1], &bytes, false);
    fails_after_60_s(&mut h, session);
    // Held, then started, and no chunk comes: failed 60 s after the start, not before.
    let mut h = world();
    h.drop_message("DeliveryChunk");
    let session = push(&mut h, &[1], &bytes, true);
    h.advance(std::time::Duration::from_secs(300));
    control(&mut h, session, ControlAction::Start).unwrap();
    assert_eq!(told_controls(&h, 1, session), 1);
    fails_after_60_s(&mut h, session);
}

/// PNE 1 still waits for `session` 59 s from now, and has given it up, failed, at 61 s.
fn fails_after_60_s(h: &mut Harness, session: DeliveryId) {
    h.advance(std::time::Duration::from_secs(59));
    assert!(h.delivery_ends(1, session).is_empty());
    h.advance(std::time::Duration::from_secs(2));
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::Failed)]
    );
}

#[test]
fn a_control_sent_as_a_request_is_not_taken() {
    let mut h = world();
    let bytes = seeded_content(100_000, 27);
    let session = push(&mut h, &[1], &bytes, true);
    let env = Envelope::request(
        9_500_000,
        cpns_wire::Address::Entity(super::harness::id("gw-1")),
        cpns_wire::Address::Entity(pne_id(1)),
        DeliveryControl {
            session,
            action: ControlAction::Stop,
        },
    );
    h.inject(Party::Gw, Party::Pne(1), plain(&env));
    h.pump();
    assert!(h.delivery_ends(1, session).is_empty());
    assert_eq!(told_controls(&h, 1, session), 0);
}

/// Holds back every chunk the PN GW relays to PNE 1 after its first: they are in flight, in
/// `h.dropped`, until [`late_chunks`] hands them over.
fn hold_chunks_to_1(h: &mut Harness) {
    let mut seen = 0;
    h.set_hook(move |f| {
        if f.from == Party::Gw && f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            seen += 1;
            if seen > 1 {
                return Action::Drop;
            }
        }
        Action::Deliver
    });
}

/// Hands PNE 1 the chunks held back, in order; the hook stays.
fn late_chunks(h: &mut Harness) -> usize {
    let held: Vec<Vec<u8>> = h
        .dropped
        .drain(..)
        .filter(|f| f.message == "DeliveryChunk")
        .map(|f| f.body)
        .collect();
    let n = held.len();
    for body in held {
        h.inject(Party::Gw, Party::Pne(1), body);
    }
    h.pump();
    n
}

/// PNE 1 loses its link and links again, keeping its sessions.
fn relinked(h: &mut Harness) {
    let kept = h.pnes[1].take_deliveries();
    h.relink(1, 41, move |p| p.restore_deliveries(kept));
    super::delivery::link_again(h, 1);
}

#[test]
fn a_paused_target_does_not_give_up_on_a_late_chunk_nor_on_linking_again() {
    let mut h = world();
    hold_chunks_to_1(&mut h);
    let bytes = seeded_content(600_000, 25);
    let session = push(&mut h, &[1], &bytes, false);
    control(&mut h, session, ControlAction::Pause).unwrap();
    assert_eq!(controlled(&h, 1, session), [ControlAction::Pause]);
    // Chunks sent before the pause reach the target after it: taken, and still it waits.
    assert!(late_chunks(&mut h) > 0);
    h.advance(std::time::Duration::from_secs(300));
    assert!(h.delivery_ends(1, session).is_empty(), "gave up paused");
    // A new link, paused still: it waits on.
    h.clear_hook();
    relinked(&mut h);
    h.advance(std::time::Duration::from_secs(300));
    assert!(h.delivery_ends(1, session).is_empty(), "gave up relinked");
    control(&mut h, session, ControlAction::Resume).unwrap();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
}

#[test]
fn a_moving_target_gives_up_two_flow_timeouts_after_its_last_chunk_or_link_not_its_first() {
    let flow = std::time::Duration::from_secs(30);
    for relink in [false, true] {
        let mut h = world();
        hold_chunks_to_1(&mut h);
        let bytes = seeded_content(600_000, 26);
        let session = push(&mut h, &[1], &bytes, false);
        // Forty seconds on, the target hears of the session again: chunks late, or a new
        // link. Its clock starts over from there, not from its first chunk.
        h.advance(flow + flow / 3);
        if relink {
            h.clear_hook();
            hold_chunks_to_1_from_now(&mut h);
            relinked(&mut h);
        } else {
            assert!(late_chunks(&mut h) > 0);
        }
        h.advance(flow + flow / 3);
        assert!(h.delivery_ends(1, session).is_empty(), "relink {relink}");
        h.advance(flow);
        assert_eq!(
            h.delivery_ends(1, session),
            [(pne_id(1), DeliveryResult::Failed)],
            "relink {relink}"
        );
    }
}

/// Holds back every chunk the PN GW relays to PNE 1 from now on.
fn hold_chunks_to_1_from_now(h: &mut Harness) {
    h.set_hook(|f| {
        if f.from == Party::Gw && f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            return Action::Drop;
        }
        Action::Deliver
    });
}

/// The reason PNE `i`'s part of `session` ended failed with, if it did.
fn failed_because(h: &Harness, i: usize, session: DeliveryId) -> Option<String> {
    h.pne_events(i).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session: s,
            result: DeliveryResult::Failed,
            reason,
            ..
        } if *s == session => reason.clone(),
        _ => None,
    })
}

/// A session its source pauses keeps its place at its target for [`PAUSED_LIMIT`] only, from
/// the pause: then the target's part ends failed, saying why, and the session waiting behind it
/// moves to the end. One set up held and never started gives its place up the same way.
#[test]
fn a_session_held_or_paused_too_long_gives_its_place_up_at_its_targets() {
    use crate::pne::PAUSED_LIMIT;
    let minute = std::time::Duration::from_secs(60);
    let mut h = world();
    hold_acks_after(&mut h, 2);
    let first = seeded_content(600_000, 27);
    let paused = push(&mut h, &[1], &first, false);
    control(&mut h, paused, ControlAction::Pause).unwrap();
    release_acks(&mut h);
    let second = seeded_content(100_000, 28);
    let behind = push(&mut h, &[1], &second, false);
    let held = push(&mut h, &[2], &second, true);
    h.advance(PAUSED_LIMIT - minute);
    assert!(
        h.delivery_ends(1, paused).is_empty(),
        "paused, within the limit"
    );
    assert!(
        h.delivery_ends(2, held).is_empty(),
        "held, within the limit"
    );
    assert!(
        !h.store.pne_received.contains_key(&(1, behind)),
        "waits behind"
    );
    h.advance(minute);
    for (i, session) in [(1, paused), (2, held)] {
        assert_eq!(
            failed_because(&h, i, session).as_deref(),
            Some("its source held or paused it for 1800 s: its place here is given up"),
            "PNE {i}"
        );
    }
    assert_eq!(h.store.pne_received.get(&(1, behind)), Some(&second));
    // Paused, resumed and paused again: the limit counts from the last pause.
    let mut h = world();
    hold_acks_after(&mut h, 2);
    let session = push(&mut h, &[1], &first, false);
    control(&mut h, session, ControlAction::Pause).unwrap();
    h.advance(PAUSED_LIMIT - minute);
    control(&mut h, session, ControlAction::Resume).unwrap();
    control(&mut h, session, ControlAction::Pause).unwrap();
    h.advance(PAUSED_LIMIT - minute);
    assert!(
        h.delivery_ends(1, session).is_empty(),
        "a new pause, a new limit"
    );
    release_acks(&mut h);
    control(&mut h, session, ControlAction::Resume).unwrap();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&first));
}

/// Stopped while a target is away (its link closed, it may never come back): the PN GW tells
/// the source that target's part ended `stopped` rather than hold the route for it; the target
/// linked now ends its own; the route goes once both have.
#[test]
fn a_session_stopped_while_a_target_is_away_is_not_held_for_it() {
    let mut h = world();
    hold_acks_after(&mut h, 2);
    let bytes = seeded_content(600_000, 25);
    let session = push(&mut h, &[1, 2], &bytes, false);
    let now = h.now();
    h.gw.link_closed(now, crate::gateway::LinkId(2));
    h.pump();
    control(&mut h, session, ControlAction::Stop).unwrap();
    release_acks(&mut h);
    assert_eq!(
        h.delivery_ends(0, session),
        [
            (pne_id(2), DeliveryResult::Stopped),
            (pne_id(1), DeliveryResult::Stopped)
        ]
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![]));
    assert!(h.gw.relayed_deliveries().is_empty(), "the route is gone");
}
