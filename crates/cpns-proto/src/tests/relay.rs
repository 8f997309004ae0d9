//! The PN GW's relay of PNE<->server traffic (003 §1.4; 000 §6.6.1.1 step 6): its deadlines, a
//! WAN that goes away, a link that closes, refusals by the server, routes that do not exist, and
//! the message ids it gives what it relays.

use std::time::Duration;

use cpns_wire::{
    Address, Body, Envelope, ErrorCode, PneRegistrationRequest, RandBytes, RequestId, SetupType,
    StatusUpdateRequest,
};

use super::harness::{Action, FLOW, Harness, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::{GatewayEvent, LinkId};
use crate::{Failure, Flow};

/// PNE 0 is a member of a PN; every frame from the server is held from now on.
fn member_with_silent_server() -> (Harness, cpns_wire::PnId) {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| {
        if f.from == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    (h, pn)
}

/// A PNE Registration Request of PNE `i` as it sends it on its link.
fn registration(i: usize, n: u64) -> Envelope {
    Envelope::request(
        700 + n,
        Address::Entity(pne_id(i)),
        Address::Server,
        PneRegistrationRequest {
            request_id: RequestId(n),
            pne_id: pne_id(i),
            pn_id: None,
            rand_pne: RandBytes([9; 16]),
            capabilities: None,
            local_key: false,
        },
    )
}

/// The errors the PN GW answered PNE `i`'s message `msg` with.
fn answers(h: &Harness, i: usize, msg: u64) -> Vec<(ErrorCode, String)> {
    h.delivered(Party::Gw, Party::Pne(i))
        .iter()
        .filter(|e| e.in_reply_to == Some(msg))
        .filter_map(|e| e.error().map(|e| (e.code, e.reason.clone())))
        .collect()
}

#[test]
fn a_silent_server_times_the_relayed_request_out_at_its_deadline() {
    let (mut h, _pn) = member_with_silent_server();
    let now = h.now();
    let req = registration(0, 1);
    h.deliver_direct(Party::Pne(0), Party::Gw, &plain(&req))
        .unwrap();
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 1);
    assert_eq!(h.gw.poll_timeout(), Some(now + FLOW));
    h.advance(FLOW - Duration::from_millis(1));
    assert!(
        answers(&h, 0, req.msg_id).is_empty(),
        "not before the deadline"
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(
        answers(&h, 0, req.msg_id),
        [(
            ErrorCode::Timeout,
            "the CPNS Server did not answer in time".into()
        )]
    );
    assert_eq!(h.gw.flows_in_progress(), 0);
    assert_eq!(h.gw.poll_timeout(), None);
}

#[test]
fn a_lost_wan_ends_relayed_requests_and_forming_pns_with_busy() {
    let (mut h, _pn) = member_with_silent_server();
    let req = registration(0, 1);
    h.deliver_direct(Party::Pne(0), Party::Gw, &plain(&req))
        .unwrap();
    let now = h.now();
    h.pnes[1].start_setup(now, SetupType::OneToOne).unwrap();
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 2);
    h.gw.wan_closed(now);
    h.pump();
    assert_eq!(
        answers(&h, 0, req.msg_id),
        [(
            ErrorCode::Busy,
            "the PN GW lost its connection to the CPNS Server".into()
        )]
    );
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::EstablishmentFailed {
            reason: Failure::WanLost,
            ..
        }
    )));
    assert!(h.pne_failed_flows(1).iter().any(|e| matches!(
        e,
        crate::pne::PneEvent::FlowFailed {
            flow: Flow::PnEstablishment,
            ..
        }
    )));
    assert_eq!(h.gw.flows_in_progress(), 0);
    assert!(!h.gw.wan_ready());
}

#[test]
fn a_closed_link_drops_what_was_relayed_for_it() {
    let (mut h, _pn) = member_with_silent_server();
    let req = registration(0, 1);
    h.deliver_direct(Party::Pne(0), Party::Gw, &plain(&req))
        .unwrap();
    let other = registration(1, 2);
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&other))
        .unwrap();
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 2);
    let now = h.now();
    h.gw.link_closed(now, LinkId(0));
    assert_eq!(h.gw.flows_in_progress(), 1, "only link 0's relay is gone");
    // Its deadline no longer wakes anything: only link 1's request times out.
    h.advance(FLOW);
    assert!(answers(&h, 0, req.msg_id).is_empty());
    assert_eq!(answers(&h, 1, other.msg_id).len(), 1);
}

#[test]
fn the_servers_refusal_of_a_join_reaches_the_pne() {
    // PNE 1 claims an id the server does not know: the PN update adding it is refused.
    let specs = [PneSpec::trusted(), PneSpec::trusted().impersonating(5)];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::OneToOne);
    let req = registration(5, 3);
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&req))
        .unwrap();
    h.pump();
    let got = answers(&h, 1, req.msg_id);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, ErrorCode::Forbidden);
    assert!(
        got[0]
            .1
            .starts_with("the CPNS Server refused to add the PNE to the PN:"),
        "{}",
        got[0].1
    );
    assert_eq!(h.gw.flows_in_progress(), 0);
}

#[test]
fn a_server_request_for_an_unknown_pne_is_answered_not_found() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let ask = Envelope::request(
        55,
        Address::Server,
        Address::Entity(id("nobody")),
        StatusUpdateRequest {},
    );
    h.deliver_direct(Party::Server, Party::Gw, &plain(&ask))
        .unwrap();
    let answer = h
        .queue
        .iter()
        .filter(|f| f.from == Party::Gw && f.to == Party::Server)
        .find_map(|f| f.env())
        .expect("answered");
    assert_eq!(answer.in_reply_to, Some(55));
    assert_eq!(
        answer.error().map(|e| (e.code, e.reason.as_str())),
        Some((ErrorCode::NotFound, "no route to nobody"))
    );
    // A notification for an unknown PNE is dropped without an answer.
    let before = h.queue.len();
    let note = Envelope::notify(
        56,
        Address::Server,
        Address::Entity(id("nobody")),
        StatusUpdateRequest {},
    );
    h.deliver_direct(Party::Server, Party::Gw, &plain(&note))
        .unwrap();
    assert_eq!(h.queue.len(), before);
}

#[test]
fn relayed_messages_get_fresh_message_ids_on_each_hop() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(1, Some(pn));
    assert!(h.pnes[1].cpns_id().is_some());
    // Each sender numbers what it sends from its own counter, relayed messages included: the
    // ids it sends on a hop only ever grow.
    for (from, to) in [
        (Party::Gw, Party::Pne(1)),
        (Party::Gw, Party::Server),
        (Party::Server, Party::Gw),
    ] {
        let ids: Vec<u64> = h.delivered(from, to).iter().map(|e| e.msg_id).collect();
        assert!(ids.len() > 3, "{from:?} -> {to:?}: {ids:?}");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{from:?} -> {to:?}: {ids:?}"
        );
    }
    // The relayed answer names the PNE's own request.
    let asked = h
        .delivered(Party::Pne(1), Party::Gw)
        .into_iter()
        .find(|e| matches!(e.body, Body::PneRegistrationRequest(_)))
        .unwrap();
    let answered = h
        .delivered(Party::Gw, Party::Pne(1))
        .into_iter()
        .find(|e| matches!(e.body, Body::PneRegistrationResponse(_)))
        .unwrap();
    assert_eq!(answered.in_reply_to, Some(asked.msg_id));
}

#[test]
fn the_wan_set_up_waits_its_whole_deadline_and_takes_only_a_requested_challenge() {
    let mut h = Harness::new(&[]);
    h.set_hook(|f| match f.message {
        "AuthChallenge" => Action::Drop,
        _ => Action::Deliver,
    });
    let now = h.now();
    h.gw.wan_connected(now, super::harness::EXPORTER).unwrap();
    h.pump();
    h.advance(FLOW - Duration::from_secs(1));
    assert!(
        !h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::WanFailed(_)))
    );
    // A challenge that is not a request is refused: the set-up fails.
    let mut h = Harness::new(&[]);
    h.set_hook(|f| {
        if f.message == "AuthChallenge" {
            Action::Replace(super::harness::rewrite(&f.body, |env| {
                env.kind = cpns_wire::MsgKind::Notify;
            }))
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.gw.wan_connected(now, super::harness::EXPORTER).unwrap();
    h.pump();
    assert!(h.gw_events().iter().any(
        |e| matches!(e, GatewayEvent::WanFailed(r) if r.contains("unexpected AuthChallenge"))
    ));
}

/// The WAN set-up takes a Connection Setup Confirm only as the answer to its request, and the
/// status query only as a request.
#[test]
fn the_wan_set_up_takes_only_the_messages_it_expects() {
    for (message, change) in [
        ("ConnectionSetupConfirm", 0u8),
        ("StatusUpdateRequest", 1u8),
    ] {
        let mut h = Harness::new(&[]);
        h.set_hook(move |f| {
            if f.message == message {
                Action::Replace(super::harness::rewrite(&f.body, |env| {
                    if change == 0 {
                        env.in_reply_to = env.in_reply_to.map(|r| r + 1000);
                    } else {
                        env.kind = cpns_wire::MsgKind::Notify;
                    }
                }))
            } else {
                Action::Deliver
            }
        });
        let now = h.now();
        h.gw.wan_connected(now, super::harness::EXPORTER).unwrap();
        h.pump();
        assert!(!h.gw.wan_ready(), "{message}");
        assert!(
            h.gw_events().iter().any(
                |e| matches!(e, GatewayEvent::WanFailed(r) if r.contains(&format!("unexpected {message}")))
            ),
            "{message}: {:?}",
            h.gw_events()
        );
    }
}

/// A non-member's registration waits for its PN update (003 §1.4.2 step 4) for the flow timeout
/// exactly, and counts against its link's share of flows.
#[test]
fn a_pending_join_counts_against_its_link_and_times_out_at_its_deadline() {
    let limits = crate::gateway::GatewayLimits {
        flows: 100,
        flows_per_link: 2,
        ..crate::gateway::GatewayLimits::default()
    };
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::with_limits(&specs, limits);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::OneToOne);
    h.set_hook(|f| {
        if f.from == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    // PNE 1 is no member: each request waits for a PN update.
    let now = h.now();
    let first = registration(1, 1);
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&first))
        .unwrap();
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&registration(1, 2)))
        .unwrap();
    let third = registration(1, 3);
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&third))
        .unwrap();
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 2);
    assert_eq!(answers(&h, 1, third.msg_id)[0].0, ErrorCode::Busy);
    // PNE 0's link has its own share.
    h.deliver_direct(Party::Pne(0), Party::Gw, &plain(&registration(0, 4)))
        .unwrap();
    assert_eq!(h.gw.flows_in_progress(), 3);
    assert_eq!(h.gw.poll_timeout(), Some(now + FLOW));
    h.advance(FLOW - Duration::from_millis(1));
    assert!(answers(&h, 1, first.msg_id).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(answers(&h, 1, first.msg_id)[0].0, ErrorCode::Timeout);
    assert_eq!(h.gw.flows_in_progress(), 0);
}

#[test]
fn a_relayed_server_message_carries_no_wan_reply_id_onto_the_pan() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let to = Address::Entity(pne_id(0));
    // A request and a notification that (wrongly) name a WAN message they answer.
    let mut ask = Envelope::request(55, Address::Server, to.clone(), StatusUpdateRequest {});
    ask.in_reply_to = Some(999);
    let mut note = Envelope::notify(56, Address::Server, to, StatusUpdateRequest {});
    note.in_reply_to = Some(998);
    for env in [&ask, &note] {
        h.deliver_direct(Party::Server, Party::Gw, &plain(env))
            .unwrap();
    }
    h.pump();
    let relayed: Vec<Envelope> = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .filter(|e| matches!(e.body, Body::StatusUpdateRequest(_)))
        .collect();
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    assert!(
        relayed.iter().all(|e| e.in_reply_to.is_none()),
        "{relayed:?}"
    );
    // Each gets an id of the PN GW's PAN numbering, not the server's.
    assert!(
        relayed.iter().all(|e| ![55, 56].contains(&e.msg_id)),
        "{relayed:?}"
    );
    // The PNE's answer to the request (it takes no status requests: an error) goes back naming
    // the server's own message; the notification is not answered.
    let back = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter(|e| e.from == Address::Entity(pne_id(0)))
        .map(|e| e.in_reply_to)
        .collect::<Vec<_>>();
    assert_eq!(back, [Some(55)]);
}

#[test]
fn closing_one_link_keeps_the_relayed_server_requests_of_the_others() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    h.setup(1, SetupType::All);
    for (i, msg) in [(0, 70), (1, 71)] {
        let ask = Envelope::request(
            msg,
            Address::Server,
            Address::Entity(pne_id(i)),
            StatusUpdateRequest {},
        );
        h.deliver_direct(Party::Server, Party::Gw, &plain(&ask))
            .unwrap();
    }
    let now = h.now();
    h.gw.link_closed(now, LinkId(0));
    h.pump();
    let answered: Vec<Option<u64>> = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .filter(|e| e.from == Address::Entity(pne_id(1)))
        .map(|e| e.in_reply_to)
        .collect();
    assert_eq!(answered, [Some(71)], "PNE 1's answer is still relayed");
    assert!(
        h.delivered(Party::Gw, Party::Server)
            .iter()
            .all(|e| e.in_reply_to != Some(70)),
        "nothing answers for the closed link's PNE"
    );
}
