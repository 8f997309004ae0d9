//! Bounded flows (issue 6, "Bounded resources"): a PNE runs one PN set-up at a time, a PAN link
//! at most `flows_per_link` flows, the PN GW at most `flows`; beyond them a request is answered
//! `busy` at once and nothing else changes. The PN GW reports itself busy while at its limit.

use cpns_wire::{
    Address, Envelope, ErrorCode, JoinInfo, PnSetupRequest, PneRegistrationRequest, RandBytes,
    RequestId, SetupType, Status, StatusUpdateRequest,
};

use super::harness::{Action, Harness, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::GatewayLimits;

fn setup_request(h: &Harness, i: usize, n: u64) -> Vec<u8> {
    big_setup_request(h, i, n, 0)
}

fn registration_request(i: usize, n: u64) -> Vec<u8> {
    let env = Envelope::request(
        2000 + n,
        Address::Entity(pne_id(i)),
        Address::Server,
        PneRegistrationRequest {
            request_id: RequestId(n),
            pne_id: pne_id(i),
            pn_id: None,
            rand_pne: RandBytes([n as u8; 16]),
            capabilities: None,
            local_key: false,
        },
    );
    plain(&env)
}

/// Answers the PN GW sent to PNE `i` with `busy`.
fn busy_to(h: &Harness, i: usize) -> Vec<String> {
    h.delivered(Party::Gw, Party::Pne(i))
        .iter()
        .filter_map(|e| e.error())
        .filter(|e| e.code == ErrorCode::Busy)
        .map(|e| e.reason.clone())
        .collect()
}

/// Holds every frame from the server, so flows stay in progress.
fn hold_server(h: &mut Harness) {
    h.set_hook(|f| {
        if f.from == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
}

#[test]
fn one_set_up_at_a_time_per_pne() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    hold_server(&mut h);
    for n in 1..=5 {
        let frame = setup_request(&h, 0, n);
        h.deliver_direct(Party::Pne(0), Party::Gw, &frame).unwrap();
    }
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 1);
    assert_eq!(
        busy_to(&h, 0),
        vec!["a PN set-up of this PNE is in progress"; 4]
    );
    let registrations = h
        .log
        .iter()
        .filter(|f| f.message == "PnRegistrationRequest")
        .count();
    assert_eq!(registrations, 1);
    // Another PNE is not held up by it.
    let frame = setup_request(&h, 1, 9);
    h.deliver_direct(Party::Pne(1), Party::Gw, &frame).unwrap();
    assert_eq!(h.gw.flows_in_progress(), 2);
    assert!(busy_to(&h, 1).is_empty());
}

#[test]
fn a_link_runs_at_most_its_share_of_flows() {
    let limits = GatewayLimits {
        flows: 100,
        flows_per_link: 3,
        ..crate::gateway::GatewayLimits::default()
    };
    let mut h = Harness::with_limits(&[PneSpec::trusted(), PneSpec::trusted()], limits);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    assert!(h.joined(0).is_some());
    hold_server(&mut h);
    for n in 1..=8 {
        h.deliver_direct(Party::Pne(0), Party::Gw, &registration_request(0, n))
            .unwrap();
    }
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 3);
    let busy = busy_to(&h, 0);
    assert_eq!(busy.len(), 5);
    assert!(busy[0].contains("as many requests in progress as it may"));
    // The other PNE still gets its share.
    for n in 1..=3 {
        h.deliver_direct(Party::Pne(1), Party::Gw, &registration_request(1, n))
            .unwrap();
    }
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 6);
    assert!(busy_to(&h, 1).is_empty());
}

#[test]
fn the_gateway_runs_at_most_its_flows_and_says_it_is_busy() {
    let limits = GatewayLimits {
        flows: 2,
        flows_per_link: 4,
        ..crate::gateway::GatewayLimits::default()
    };
    let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::with_limits(&specs, limits);
    h.connect_gw();
    h.discover_all();
    hold_server(&mut h);
    for i in 0..3 {
        let frame = setup_request(&h, i, i as u64 + 1);
        h.deliver_direct(Party::Pne(i), Party::Gw, &frame).unwrap();
    }
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 2);
    assert!(busy_to(&h, 2)[0].contains("as many flows as it takes"));
    assert!(
        h.gw.start_establishment(h.now(), crate::gateway::EstablishTargets::All)
            .is_err()
    );
    // Step 15: asked for its status now, the PN GW says busy.
    let ask = Envelope::request(
        77,
        Address::Server,
        Address::Entity(id("gw-1")),
        StatusUpdateRequest {},
    );
    h.clear_hook();
    h.deliver_direct(Party::Server, Party::Gw, &plain(&ask))
        .unwrap();
    let last = h
        .queue
        .iter()
        .rev()
        .find_map(|f| {
            f.env().and_then(|e| match e.body {
                cpns_wire::Body::StatusUpdateResponse(r) => Some(r),
                _ => None,
            })
        })
        .expect("a status report is on its way");
    assert_eq!(last.status, Status::Busy);
}

/// A PNE Registration Request as the PN GW relays it for member `i` of `pn`.
fn relayed_registration(i: usize, pn: cpns_wire::PnId, n: u64) -> Vec<u8> {
    let env = Envelope::request(
        5000 + n,
        Address::Entity(pne_id(i)),
        Address::Server,
        PneRegistrationRequest {
            request_id: RequestId(n),
            pne_id: pne_id(i),
            pn_id: Some(pn),
            rand_pne: RandBytes([n as u8; 16]),
            capabilities: None,
            local_key: false,
        },
    );
    plain(&env)
}

/// Ready harness whose server has these limits, with a PN of PNE 0; the server's answers are
/// held so its flows stay in progress.
fn server_with(max_flows: usize, budget: &crate::server::FlowBudget) -> (Harness, cpns_wire::PnId) {
    let cfg = crate::server::ServerConfig {
        max_flows,
        budget: budget.clone(),
        offline_after: None,
        ..crate::server::ServerConfig::default()
    };
    let mut h = Harness::with_server(&[PneSpec::trusted()], cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    hold_server(&mut h);
    (h, pn)
}

fn busy_from_server(h: &Harness) -> Vec<String> {
    h.queue
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(|f| f.env())
        .filter_map(|e| e.error().cloned())
        .filter(|e| e.code == ErrorCode::Busy)
        .map(|e| e.reason)
        .collect()
}

#[test]
fn a_server_session_runs_at_most_max_flows_and_gives_them_back() {
    let budget = crate::server::FlowBudget::new(1000);
    let (mut h, pn) = server_with(3, &budget);
    assert_eq!(budget.in_use(), 0, "the establishment gave its unit back");
    for n in 1..=5 {
        h.deliver_direct(Party::Gw, Party::Server, &relayed_registration(0, pn, n))
            .unwrap();
    }
    assert_eq!(h.server.flows_in_progress(), 3);
    assert_eq!(budget.in_use(), 3);
    let busy = busy_from_server(&h);
    assert_eq!(busy.len(), 2);
    assert!(busy[0].contains("this PN GW has as many flows in progress"));
    // The flows time out: every unit comes back, and new flows are taken again.
    h.queue.clear();
    h.advance(super::harness::FLOW * 2);
    assert_eq!(h.server.flows_in_progress(), 0);
    assert_eq!(budget.in_use(), 0);
    h.deliver_direct(Party::Gw, Party::Server, &relayed_registration(0, pn, 9))
        .unwrap();
    assert_eq!(budget.in_use(), 1);
    // A session that ends gives back what it held.
    let cfg = h.server_cfg.clone();
    h.server = crate::server::ServerSession::new(
        cfg,
        super::harness::EXPORTER,
        h.now(),
        cpns_crypto::MachineRng::from_seed_u64(3),
    );
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn every_session_of_a_server_draws_on_one_budget() {
    let budget = crate::server::FlowBudget::new(4);
    let (mut a, pn_a) = server_with(64, &budget);
    let (mut b, pn_b) = server_with(64, &budget);
    for n in 1..=3 {
        a.deliver_direct(Party::Gw, Party::Server, &relayed_registration(0, pn_a, n))
            .unwrap();
    }
    for n in 1..=3 {
        b.deliver_direct(Party::Gw, Party::Server, &relayed_registration(0, pn_b, n))
            .unwrap();
    }
    assert_eq!(budget.in_use(), 4);
    assert_eq!(
        a.server.flows_in_progress() + b.server.flows_in_progress(),
        4
    );
    let busy = busy_from_server(&b);
    assert_eq!(busy.len(), 2);
    assert!(busy[0].contains("the CPNS Server is running as many flows"));
}

/// A PN Setup Request (1-1) of PNE `i`, request id `n`, whose join information carries a content
/// name of `contents` bytes (none for 0).
fn big_setup_request(h: &Harness, i: usize, n: u64, contents: usize) -> Vec<u8> {
    let join = JoinInfo {
        pne_id: pne_id(i),
        capabilities: h.pne_cfgs[i].capabilities.clone(),
        contents: (contents > 0)
            .then(|| cpns_wire::ContentItem {
                name: "x".repeat(contents),
                media_type: "audio/mpeg".into(),
            })
            .into_iter()
            .collect(),
        rand_pne: RandBytes([n as u8; 16]),
        local_key: false,
        home_gateway: None,
    };
    let env = Envelope::request(
        1000 + n,
        Address::Entity(pne_id(i)),
        Address::Entity(id("gw-1")),
        PnSetupRequest {
            request_id: RequestId(n),
            setup: Some(SetupType::OneToOne),
            join: Some(join),
            pn_id: None,
            initiator: None,
        },
    );
    plain(&env)
}

fn errors_to(h: &Harness, i: usize) -> Vec<(ErrorCode, String)> {
    h.delivered(Party::Gw, Party::Pne(i))
        .iter()
        .filter_map(|e| e.error().map(|e| (e.code, e.reason.clone())))
        .collect()
}

#[test]
fn join_information_beyond_the_bound_is_refused_at_the_pan() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let wan_before = h.wan_messages().len();
    let frame = big_setup_request(&h, 0, 1, crate::gateway::MAX_JOIN_INFO);
    h.deliver_direct(Party::Pne(0), Party::Gw, &frame).unwrap();
    h.pump();
    let errors = errors_to(&h, 0);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, ErrorCode::BadRequest);
    assert!(errors[0].1.contains("16 KiB"));
    assert_eq!(h.wan_messages().len(), wan_before, "nothing relayed");
    assert_eq!(h.gw.flows_in_progress(), 0);
}

#[test]
fn a_request_over_the_server_limit_fails_its_flow_not_the_session() {
    // The server accepts frames of 4 KiB; a PNE's 6 KiB of join information fits the PN GW's
    // bound but not the server's frame.
    let cfg = crate::server::ServerConfig {
        max_frame: 4096,
        offline_after: None,
        ..crate::server::ServerConfig::default()
    };
    let mut h = Harness::with_server(&[PneSpec::trusted(), PneSpec::trusted()], cfg);
    h.connect_gw();
    h.discover_all();
    let wan_before = h.wan_messages().len();
    let frame = big_setup_request(&h, 0, 1, 6 * 1024);
    h.deliver_direct(Party::Pne(0), Party::Gw, &frame).unwrap();
    h.pump();
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        crate::gateway::GatewayEvent::RelayRefused { message: "PnRegistrationRequest", limit: 4096, bytes } if *bytes > 4096
    )));
    let errors = errors_to(&h, 0);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, ErrorCode::BadRequest);
    assert!(errors[0].1.contains("larger than the CPNS Server accepts"));
    assert_eq!(
        h.wan_messages().len(),
        wan_before,
        "nothing over the limit was sent"
    );
    assert!(h.closes.is_empty(), "{:?}", h.closes);
    // The session goes on: another PNE's establishment completes.
    assert!(h.gw.wan_ready());
    h.setup(1, SetupType::OneToOne);
    let inv = h.joined(1).expect("the next establishment completes");
    h.assert_agree(inv.pn_id);
}

#[test]
fn a_session_gives_back_exactly_the_units_of_the_flows_that_ended() {
    let budget = crate::server::FlowBudget::new(1000);
    let (mut h, pn) = server_with(64, &budget);
    for n in 1..=2 {
        h.deliver_direct(Party::Gw, Party::Server, &relayed_registration(0, pn, n))
            .unwrap();
    }
    h.advance(super::harness::FLOW / 2);
    h.deliver_direct(Party::Gw, Party::Server, &relayed_registration(0, pn, 3))
        .unwrap();
    assert_eq!(budget.in_use(), 3);
    // The first two time out; the third goes on.
    h.advance(super::harness::FLOW / 2);
    assert_eq!(h.server.flows_in_progress(), 1);
    assert_eq!(budget.in_use(), 1);
}

#[test]
fn a_set_up_counts_against_the_link_that_asked_for_it() {
    let limits = GatewayLimits {
        flows: 100,
        flows_per_link: 1,
        ..crate::gateway::GatewayLimits::default()
    };
    let specs = [PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::with_limits(&specs, limits);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::OneToOne);
    assert!(h.joined(0).is_some());
    hold_server(&mut h);
    // PNE 1 asks for a PN: its link's one flow.
    let frame = setup_request(&h, 1, 7);
    h.deliver_direct(Party::Pne(1), Party::Gw, &frame).unwrap();
    h.pump();
    assert_eq!(h.gw.flows_in_progress(), 1);
    // PNE 1 cannot start another; PNE 0 (a member) still can.
    h.deliver_direct(Party::Pne(1), Party::Gw, &registration_request(1, 8))
        .unwrap();
    h.deliver_direct(Party::Pne(0), Party::Gw, &registration_request(0, 9))
        .unwrap();
    h.pump();
    assert_eq!(busy_to(&h, 1).len(), 1);
    assert!(busy_to(&h, 0).is_empty());
    assert_eq!(h.gw.flows_in_progress(), 2);
}

#[test]
fn a_set_up_retried_while_in_progress_is_not_run_twice_nor_refused() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    hold_server(&mut h);
    let frame = setup_request(&h, 0, 1);
    h.deliver_direct(Party::Pne(0), Party::Gw, &frame).unwrap();
    // The same request again (same request id): silently left to the running flow.
    h.deliver_direct(Party::Pne(0), Party::Gw, &frame).unwrap();
    h.pump();
    assert!(busy_to(&h, 0).is_empty());
    assert_eq!(h.gw.flows_in_progress(), 1);
    // Another PNE's request with the same request id is its own flow.
    let other = setup_request(&h, 1, 1);
    h.deliver_direct(Party::Pne(1), Party::Gw, &other).unwrap();
    assert_eq!(h.gw.flows_in_progress(), 2);
}
