#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cpns_wire::{DeviceCapabilities, EntityId};

use super::*;

/// A starting instant; only offsets from it are compared.
fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn id(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

fn caps(networks: &[&str], battery: Option<u8>, cpu: u8, mem: u8) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: "phone".into(),
        has_ui: true,
        networks: networks.iter().map(|n| (*n).into()).collect(),
        software: Vec::new(),
        battery_pct: battery,
        gateway_capable: true,
        cpu_class: Some(cpu),
        memory_class: Some(mem),
        ..DeviceCapabilities::default()
    }
}

/// The rule of docs/pn-lifecycle.md, "GW election", value by value.
#[test]
fn the_score_follows_the_documented_rule() {
    type Row<'a> = (&'a [&'a str], Option<u8>, u8, u8, u32);
    let table: [Row<'_>; 9] = [
        (&["ethernet"], None, 0, 0, 3000 + 100 + 100),
        (
            &["wlan", "bluetooth"],
            None,
            3,
            3,
            2000 + 100 + 100 + 30 + 30,
        ),
        (&["lte"], Some(40), 1, 2, 1000 + 40 + 10 + 20),
        (&["bluetooth"], Some(100), 3, 3, 100 + 30 + 30),
        (&["WiFi", "LTE"], Some(5), 0, 0, 2000 + 5),
        (&[], None, 0, 0, 100 + 100),
        (&["5g", "wired"], Some(0), 2, 0, 3000 + 20),
        // Out-of-range classes count as the highest, a battery above 100 as full.
        (&["nr"], Some(200), 9, 7, 1000 + 100 + 30 + 30),
        (&["gsm"], Some(1), 0, 0, 1001),
    ];
    for (networks, battery, cpu, mem, want) in table {
        assert_eq!(
            score(&caps(networks, battery, cpu, mem)),
            want,
            "{networks:?} {battery:?} {cpu} {mem}"
        );
    }
    let mut not_capable = caps(&["ethernet"], None, 3, 3);
    not_capable.gateway_capable = false;
    assert_eq!(score(&not_capable), 0);
    // Absent classes count 0.
    let mut unknown = caps(&["wlan"], Some(50), 0, 0);
    unknown.cpu_class = None;
    unknown.memory_class = None;
    assert_eq!(score(&unknown), 2050);
}

#[test]
fn the_best_capable_device_wins_and_a_tie_goes_to_the_smallest_id() {
    let (a, b, c) = (id("a-tv"), id("b-phone"), id("c-watch"));
    let wired = caps(&["ethernet"], None, 0, 0);
    let wlan = caps(&["wlan"], None, 3, 3);
    let mut watch = caps(&["ethernet"], None, 3, 3);
    watch.gateway_capable = false;
    // Wired beats WLAN whatever the classes; the watch, not capable, never wins.
    assert_eq!(elect([(&b, &wlan), (&a, &wired), (&c, &watch)]), Some(&a));
    // A tie: the smallest id, whatever the order given.
    assert_eq!(elect([(&b, &wlan), (&a, &wlan)]), Some(&a));
    assert_eq!(elect([(&a, &wlan), (&b, &wlan)]), Some(&a));
    // Battery decides between otherwise equal devices.
    let low = caps(&["lte"], Some(10), 0, 0);
    let high = caps(&["lte"], Some(90), 0, 0);
    assert_eq!(elect([(&a, &low), (&b, &high)]), Some(&b));
    assert_eq!(elect([(&c, &watch)]), None);
    assert_eq!(elect(std::iter::empty()), None);
}

/// Two machines on one link, frames carried until both are done.
fn run(a: &mut Election, b: &mut Election, now: Instant) -> (Outcome, Outcome) {
    a.start(now, Duration::from_secs(5)).unwrap();
    b.start(now, Duration::from_secs(5)).unwrap();
    let (mut da, mut db) = (None, None);
    for _ in 0..50 {
        let mut moved = false;
        while let Some(o) = a.poll_output() {
            moved = true;
            match o {
                ElectionOutput::Transmit(f) => b.handle_frame(now, &mut body(&f)).unwrap(),
                ElectionOutput::Done(x) => da = Some(x),
            }
        }
        while let Some(o) = b.poll_output() {
            moved = true;
            match o {
                ElectionOutput::Transmit(f) => a.handle_frame(now, &mut body(&f)).unwrap(),
                ElectionOutput::Done(x) => db = Some(x),
            }
        }
        if !moved {
            break;
        }
    }
    (da.expect("a ended"), db.expect("b ended"))
}

fn body(frame: &[u8]) -> Vec<u8> {
    crate::link::frame_body(frame).unwrap().to_vec()
}

fn machine(me: &str, c: DeviceCapabilities, addr: Option<&str>) -> Election {
    Election::new(id(me), c, addr.map(Into::into), 65_536)
}

/// Steps 1-7 between two machines: both name the same PN GW; it learns it won, the other where
/// to reach it.
#[test]
fn two_pnes_elect_the_same_pn_gw_and_the_other_follows_it() {
    let now = t0();
    for (hub_first, names) in [(true, ("hub", "phone")), (false, ("phone", "hub"))] {
        let hub = caps(&["ethernet"], None, 1, 1);
        let phone = caps(&["wlan", "lte"], Some(70), 3, 3);
        let (mut a, mut b) = if hub_first {
            (
                machine(names.0, hub, Some("10.0.0.2:7401")),
                machine(names.1, phone, Some("x")),
            )
        } else {
            (
                machine(names.0, phone, Some("x")),
                machine(names.1, hub, Some("10.0.0.2:7401")),
            )
        };
        let (oa, ob) = run(&mut a, &mut b, now);
        let (won, followed) = if hub_first { (oa, ob) } else { (ob, oa) };
        assert_eq!(won, Outcome::BecomeGateway { peer: id("phone") });
        assert_eq!(
            followed,
            Outcome::Follow {
                gateway: id("hub"),
                pan_address: Some("10.0.0.2:7401".into())
            }
        );
    }
}

#[test]
fn with_no_capable_device_there_is_no_pn_gw() {
    let now = t0();
    let mut c = caps(&["wlan"], None, 0, 0);
    c.gateway_capable = false;
    let (mut a, mut b) = (machine("a", c.clone(), None), machine("b", c, None));
    assert_eq!(
        run(&mut a, &mut b, now),
        (Outcome::NoGateway, Outcome::NoGateway)
    );
}

/// A peer that announces itself PN GW though the rule elects this device is not followed.
#[test]
fn a_peer_claiming_the_role_against_the_rule_is_not_followed() {
    let now = t0();
    let mut mine = machine("a", caps(&["ethernet"], None, 0, 0), None);
    mine.start(now, Duration::from_secs(5)).unwrap();
    // The peer says who it is and what it has (less than this device), then claims the role.
    let mut liar = machine("b", caps(&["bluetooth"], Some(3), 0, 0), None);
    liar.start(now, Duration::from_secs(5)).unwrap();
    let mut frames: Vec<Vec<u8>> = std::iter::from_fn(|| liar.poll_output())
        .filter_map(|o| match o {
            ElectionOutput::Transmit(f) => Some(f),
            ElectionOutput::Done(_) => None,
        })
        .collect();
    let claim = Envelope::notify(
        99,
        Address::Entity(id("b")),
        Address::Entity(id("a")),
        GatewayAnnouncement {
            gateway: id("b"),
            mode: Mode::Gateway,
            capabilities: caps(&["bluetooth"], Some(3), 0, 0),
            pan_address: None,
        },
    );
    let mut codec = LinkCodec::new(65_536);
    frames.insert(0, codec.encode(&claim).unwrap());
    for f in &frames {
        mine.handle_frame(now, &mut body(f)).unwrap();
    }
    let outcomes: Vec<Outcome> = std::iter::from_fn(|| mine.poll_output())
        .filter_map(|o| match o {
            ElectionOutput::Done(x) => Some(x),
            ElectionOutput::Transmit(_) => None,
        })
        .collect();
    assert!(
        matches!(&outcomes[..], [Outcome::Failed(Failure::Refused(_))]),
        "{outcomes:?}"
    );
}

/// A peer that is a PN GW already: no election, this device follows it.
#[test]
fn a_peer_already_in_pn_gw_mode_is_followed_at_once() {
    let now = t0();
    let mut mine = machine("a", caps(&["ethernet"], None, 3, 3), None);
    mine.start(now, Duration::from_secs(5)).unwrap();
    let gw = Envelope::request(
        1,
        Address::Entity(id("home-gw")),
        Address::Server,
        EntityDiscoveryRequest {
            entity_id: id("home-gw"),
            mode: Mode::Gateway,
        },
    );
    let f = LinkCodec::new(65_536).encode(&gw).unwrap();
    mine.handle_frame(now, &mut body(&f)).unwrap();
    let done = std::iter::from_fn(|| mine.poll_output()).find_map(|o| match o {
        ElectionOutput::Done(x) => Some(x),
        ElectionOutput::Transmit(_) => None,
    });
    assert_eq!(
        done,
        Some(Outcome::Follow {
            gateway: id("home-gw"),
            pan_address: None
        })
    );
}

/// A silent peer: the election fails at its deadline, not before; nothing is done twice.
#[test]
fn a_silent_peer_fails_the_election_at_its_deadline() {
    let now = t0();
    let mut mine = machine("a", caps(&["wlan"], None, 0, 0), None);
    mine.start(now, Duration::from_secs(5)).unwrap();
    while mine.poll_output().is_some() {}
    assert_eq!(mine.poll_timeout(), Some(now + Duration::from_secs(5)));
    mine.handle_timeout(now + Duration::from_secs(4));
    assert_eq!(mine.poll_output(), None);
    mine.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(
        mine.poll_output(),
        Some(ElectionOutput::Done(Outcome::Failed(Failure::TimedOut)))
    );
    assert_eq!(mine.poll_timeout(), None);
    mine.handle_timeout(now + Duration::from_secs(9));
    assert_eq!(mine.poll_output(), None);
}

/// A peer that claims this device's own id, or changes its id, ends the election.
#[test]
fn a_peer_with_this_devices_id_or_two_ids_is_refused() {
    let now = t0();
    for claims in [["a", "a"], ["b", "c"]] {
        let mut mine = machine("a", caps(&["wlan"], None, 0, 0), None);
        mine.start(now, Duration::from_secs(5)).unwrap();
        while mine.poll_output().is_some() {}
        for (n, who) in claims.iter().enumerate() {
            let env = Envelope::request(
                n as u64 + 1,
                Address::Entity(id(who)),
                Address::Server,
                EntityDiscoveryRequest {
                    entity_id: id(who),
                    mode: Mode::Pne,
                },
            );
            let f = LinkCodec::new(65_536).encode(&env).unwrap();
            mine.handle_frame(now, &mut body(&f)).unwrap();
        }
        let done = std::iter::from_fn(|| mine.poll_output()).find_map(|o| match o {
            ElectionOutput::Done(x) => Some(x),
            ElectionOutput::Transmit(_) => None,
        });
        assert!(
            matches!(done, Some(Outcome::Failed(_))),
            "{claims:?}: {done:?}"
        );
    }
}

/// Feeds PNE "b"'s envelopes to a started machine of "a"; what it sent back and how it ended.
fn feed(envs: &[Envelope]) -> (Vec<Envelope>, Option<Outcome>) {
    let now = t0();
    let mut mine = machine("a", caps(&["wlan"], None, 0, 0), None);
    mine.start(now, Duration::from_secs(5)).unwrap();
    while mine.poll_output().is_some() {}
    let mut codec = LinkCodec::new(65_536);
    for env in envs {
        let f = codec.encode(env).unwrap();
        mine.handle_frame(now, &mut body(&f)).unwrap();
    }
    let mut sent = Vec::new();
    let mut done = None;
    let mut reader = LinkCodec::new(65_536);
    while let Some(o) = mine.poll_output() {
        match o {
            ElectionOutput::Transmit(f) => sent.push(reader.decode(&mut body(&f)).unwrap()),
            ElectionOutput::Done(x) => done = Some(x),
        }
    }
    (sent, done)
}

fn from_b(n: u64, body: impl Into<cpns_wire::Body>) -> Envelope {
    Envelope::request(n, Address::Entity(id("b")), Address::Entity(id("a")), body)
}

/// Discovery and capabilities are answered; a request the election does not expect gets
/// `wrong_state`; a response or notification it does not expect gets nothing.
#[test]
fn the_peers_requests_are_answered_and_unexpected_ones_refused() {
    let discovery = from_b(
        1,
        EntityDiscoveryRequest {
            entity_id: id("b"),
            mode: Mode::Pne,
        },
    );
    let (sent, done) = feed(std::slice::from_ref(&discovery));
    assert_eq!(done, None);
    // The machine knows who is who once the peer said (the diagram names them so).
    let mut m = machine("a", caps(&["wlan"], None, 0, 0), None);
    assert_eq!((m.me(), m.peer()), (&id("a"), None));
    let f = LinkCodec::new(65_536).encode(&discovery).unwrap();
    m.handle_frame(t0(), &mut body(&f)).unwrap();
    assert_eq!(m.peer(), Some(&id("b")));
    assert!(matches!(
        &sent[..],
        [e] if e.in_reply_to == Some(1)
            && matches!(&e.body, cpns_wire::Body::EntityDiscoveryResponse(r) if r.entity_id == id("a"))
    ));
    let unexpected = from_b(
        2,
        cpns_wire::PnReleaseRequest {
            request_id: cpns_wire::RequestId(1),
            pn_id: cpns_wire::PnId::from_bytes([1; 16]),
            asked_by: None,
        },
    );
    let mut note = from_b(
        3,
        cpns_wire::PnReleaseNotification {
            pn_id: cpns_wire::PnId::from_bytes([1; 16]),
        },
    );
    note.kind = cpns_wire::MsgKind::Notify;
    let (sent, done) = feed(&[unexpected, note]);
    assert_eq!(done, None);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].in_reply_to, Some(2));
    assert_eq!(sent[0].error().map(|e| e.code), Some(ErrorCode::WrongState));
}

/// The peer's error ends the election at once.
#[test]
fn an_error_from_the_peer_ends_the_election() {
    let mut err = from_b(1, ErrorBody::new(ErrorCode::Busy, "no"));
    err.kind = cpns_wire::MsgKind::Response;
    err.in_reply_to = Some(1);
    let (_, done) = feed(&[err]);
    assert!(
        matches!(done, Some(Outcome::Failed(Failure::Refused(e))) if e.code == ErrorCode::Busy)
    );
}

/// The elected peer's announcement must name itself: one naming a third device is refused.
#[test]
fn an_announcement_naming_another_device_is_refused() {
    let discovery = from_b(
        1,
        EntityDiscoveryRequest {
            entity_id: id("b"),
            mode: Mode::Pne,
        },
    );
    let better = from_b(
        2,
        DeviceCapabilitiesUpdate {
            capabilities: caps(&["ethernet"], None, 3, 3),
            entity: None,
        },
    );
    let mut claim = from_b(
        3,
        GatewayAnnouncement {
            gateway: id("c"),
            mode: Mode::Gateway,
            capabilities: caps(&["ethernet"], None, 3, 3),
            pan_address: None,
        },
    );
    claim.kind = cpns_wire::MsgKind::Notify;
    let (_, done) = feed(&[discovery.clone(), better.clone(), claim]);
    assert!(matches!(done, Some(Outcome::Failed(_))), "{done:?}");
    // Named right, and in PN GW mode, it is followed.
    let mut ok = from_b(
        4,
        GatewayAnnouncement {
            gateway: id("b"),
            mode: Mode::Gateway,
            capabilities: caps(&["ethernet"], None, 3, 3),
            pan_address: Some("x".into()),
        },
    );
    ok.kind = cpns_wire::MsgKind::Notify;
    let (_, done) = feed(&[discovery, better, ok]);
    assert_eq!(
        done,
        Some(Outcome::Follow {
            gateway: id("b"),
            pan_address: Some("x".into())
        })
    );
}
