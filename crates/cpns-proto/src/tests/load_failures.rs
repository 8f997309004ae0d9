//! A load that fails ends only the flow that asked (docs/ARCHITECTURE.md, "A load can fail"):
//! a read error or a stored key that does not open answers that flow's request `internal` and
//! emits `FlowFailed` with why; the PN GW's session stays up and every other flow on it,
//! in progress at the same time or after, goes on. One case per flow that reads the store.

use cpns_wire::{
    Address, Body, ConnectionSetupRequest, ECHO_SERVICE, Envelope, ErrorCode, GroupKeyRequest,
    INVENTORY_SERVICE, InventoryQuery, PnId, PnReleaseRequest, PnUpdateRequest, PneLeaveRequest,
    RandBytes, RequestId, SetupType, Status, StatusEntry, StatusQuery, StatusReport,
};

use super::harness::{EXPORTER, Harness, Party, plain, pne_id};
use super::store::PneSpec;
use crate::pne::Outcome;
use crate::server::{Load, Loaded, ServerEvent};
use crate::{Failure, Flow, StoreFailure};

/// PNE 0 established a PN with PNE 1 and registered in it (a secure session).
fn registered() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::cpns(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    (h, pn)
}

/// A seal that does not open, as the driver reports it.
fn sealed() -> StoreFailure {
    StoreFailure::Sealed("the SK_PNE of pne-1: aead::Error".into())
}

/// A read that fails, as the driver reports it.
fn disk() -> StoreFailure {
    StoreFailure::Failed("disk I/O error".into())
}

/// The flows the server reported failed, with why.
fn failed_flows(h: &Harness) -> Vec<(Flow, Failure)> {
    h.server_events()
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::FlowFailed { flow, reason } => Some((*flow, reason.clone())),
            _ => None,
        })
        .collect()
}

/// Whether the server's session asked to close.
fn server_closed(h: &Harness) -> bool {
    h.closes.iter().any(|(by, _, _)| *by == Party::Server)
}

/// Sends `body` on the PN GW's session in the name of `from`; the server's answer.
fn ask(h: &mut Harness, msg: u64, from: Address, body: impl Into<Body>) -> Body {
    let env = Envelope::request(msg, from, Address::Server, body);
    h.deliver_direct(Party::Gw, Party::Server, &plain(&env))
        .unwrap();
    h.server_answer(msg)
}

/// The code of an error answer.
fn code(b: &Body) -> Option<ErrorCode> {
    match b {
        Body::ErrorBody(e) => Some(e.code),
        _ => None,
    }
}

/// The echo answers PNE `i` got.
fn echoes(h: &Harness, i: usize) -> usize {
    h.pne_outcomes(i)
        .into_iter()
        .filter(|o| matches!(o, Outcome::SecureAnswer { service, .. } if service == ECHO_SERVICE))
        .count()
}

fn echo(h: &mut Harness, i: usize) {
    let now = h.now();
    h.pnes[i]
        .secure_call(now, ECHO_SERVICE, b"ping".to_vec())
        .unwrap();
    h.pump();
}

/// 003 §1.4.1 step 4: the member's SK_PNE does not open. The call is answered `internal` and
/// reported; the session stays, and the next call, its key readable again, is answered.
#[test]
fn a_key_that_does_not_open_ends_the_secure_call_not_the_session() {
    let (mut h, _) = registered();
    h.store.fail_load = Some(|l| matches!(l, Load::Session { .. }).then(sealed));
    echo(&mut h, 0);
    assert_eq!(echoes(&h, 0), 0);
    assert!(h.pne_refused(0, ErrorCode::Internal));
    assert_eq!(
        failed_flows(&h),
        [(Flow::SecureCall, Failure::Store(sealed()))]
    );
    assert!(!server_closed(&h), "{:?}", h.closes);
    assert!(h.gw.wan_ready());
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    h.store.fail_load = None;
    echo(&mut h, 0);
    assert_eq!(echoes(&h, 0), 1, "the same session answers the next call");
    assert!(!server_closed(&h));
}

/// Two flows in progress together: the first one's read fails, the second's does not. Only
/// the first ends; the second is answered, on the same session.
#[test]
fn a_failed_read_ends_its_flow_while_a_concurrent_one_goes_on() {
    let (mut h, _) = registered();
    h.store.hold_loads = true;
    echo(&mut h, 0);
    assert_eq!(h.store.held.len(), 1, "the secure call waits for its read");
    let now = h.now();
    h.pnes[1].query_status(now, vec![pne_id(0)]);
    h.pump();
    assert_eq!(h.store.held.len(), 2, "so does the status query");
    assert!(matches!(h.store.held[0].1, Load::Session { .. }));
    h.store.hold_loads = false;
    // The secure call's read fails; the query's, answered after it, does not.
    h.answer_held(0, Some(Err(disk())));
    assert!(h.pne_refused(0, ErrorCode::Internal));
    assert_eq!(
        failed_flows(&h),
        [(Flow::SecureCall, Failure::Store(disk()))]
    );
    h.answer_held(0, None);
    let answered = h.pne_outcomes(1).into_iter().find_map(|o| match o {
        Outcome::Statuses(entries) => Some(entries.clone()),
        _ => None,
    });
    assert_eq!(answered.map(|e| e.len()), Some(1), "{:?}", h.pne_events(1));
    assert!(h.pne_failures(1).is_empty());
    assert_eq!(failed_flows(&h).len(), 1);
    assert!(!server_closed(&h));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// An answer of another kind than the load asked for (a driver's mistake) fails the flow the
/// same way, and only it.
#[test]
fn an_answer_of_the_wrong_kind_ends_only_its_flow() {
    let (mut h, _) = registered();
    h.store.hold_loads = true;
    echo(&mut h, 0);
    h.store.hold_loads = false;
    h.answer_held(0, Some(Ok(Loaded::Served(Vec::new()))));
    assert!(h.pne_refused(0, ErrorCode::Internal));
    let want =
        StoreFailure::Failed("the driver answered a session load with a served answer".into());
    assert_eq!(failed_flows(&h), [(Flow::SecureCall, Failure::Store(want))]);
    echo(&mut h, 0);
    assert_eq!(echoes(&h, 0), 1);
}

/// 002 §B.1.1.2 step 8: the PN GW's record cannot be read. Its set-up is answered `internal`
/// (not refused: nothing says it is not who it claims), and the same session takes a new
/// set-up request.
#[test]
fn a_failed_read_of_the_gateway_answers_its_setup_and_keeps_the_session() {
    let mut h = Harness::new(&[PneSpec::trusted()]);
    h.store.fail_load = Some(|l| matches!(l, Load::Gateway { .. }).then(sealed));
    let now = h.now();
    h.gw.wan_connected(now, EXPORTER).unwrap();
    h.pump();
    assert!(!h.gw.wan_ready());
    let refused = h.delivered(Party::Server, Party::Gw);
    assert_eq!(refused.len(), 1);
    assert_eq!(code(&refused[0].body), Some(ErrorCode::Internal));
    assert_eq!(
        failed_flows(&h),
        [(Flow::ConnectionSetup, Failure::Store(sealed()))]
    );
    assert!(
        !h.server_events()
            .iter()
            .any(|e| matches!(e, ServerEvent::AuthenticationFailed { .. })),
        "not refused"
    );
    assert!(!server_closed(&h));
    // The session waits for a set-up again: a new request is challenged.
    h.store.fail_load = None;
    let gw = h.gw_cfg.id.clone();
    let again = ConnectionSetupRequest {
        gw_id: gw.clone(),
        rand_gw: RandBytes([3; 16]),
        software: "test".into(),
    };
    let env = Envelope::request(77, Address::Entity(gw), Address::Server, again);
    h.deliver_direct(Party::Gw, Party::Server, &plain(&env))
        .unwrap();
    let challenged = h
        .queue
        .iter()
        .filter(|f| f.from == Party::Server)
        .filter_map(|f| f.env())
        .any(|e| matches!(e.body, Body::AuthChallenge(_)));
    assert!(challenged, "{:?}", h.queue);
}

/// 000 §6.6.1.1 step 5: the PN's read fails while a PNE sets one up: the establishment ends,
/// no PN is registered, and the next set-up goes through.
#[test]
fn a_failed_read_ends_a_pn_establishment() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.store.fail_load = Some(|l| matches!(l, Load::Pn { .. }).then(disk));
    h.setup(0, SetupType::All);
    assert!(h.joined(0).is_none());
    assert!(h.store.pns.is_empty());
    assert_eq!(
        failed_flows(&h),
        [(Flow::PnEstablishment, Failure::Store(disk()))]
    );
    assert!(!server_closed(&h));
    h.store.fail_load = None;
    h.setup(0, SetupType::All);
    assert!(h.joined(0).is_some());
}

/// 003 §1.4.1: the PN's read fails at a PNE's registration: the PNE is answered `internal`,
/// gets no CPNS ID, and registers once the store reads again.
#[test]
fn a_failed_read_ends_a_pne_registration() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.store.fail_load = Some(|l| {
        matches!(
            l,
            Load::Pn {
                member_keys: true,
                ..
            }
        )
        .then(sealed)
    });
    h.register(1, Some(pn));
    assert!(h.pne_refused(1, ErrorCode::Internal));
    assert!(h.pnes[1].cpns_id().is_none());
    assert_eq!(
        failed_flows(&h),
        [(Flow::PneRegistration, Failure::Store(sealed()))]
    );
    h.store.fail_load = None;
    h.register(1, Some(pn));
    assert!(h.pnes[1].cpns_id().is_some());
    assert!(!server_closed(&h));
}

/// The PN flows the PN GW asks for (release, update, leave) and a member's group key request:
/// each one's failed read answers it `internal` with its own flow named, changes nothing, and
/// leaves the session up for the next request.
#[test]
fn failed_reads_end_each_pn_change_and_the_pn_stays() {
    let (mut h, pn) = registered();
    let gw = Address::Entity(h.gw_cfg.id.clone());
    let before = h.members(pn);
    h.store.fail_load = Some(|l| matches!(l, Load::Pn { .. } | Load::GroupKey { .. }).then(disk));
    let release = PnReleaseRequest {
        request_id: RequestId(901),
        pn_id: pn,
        asked_by: None,
    };
    let update = PnUpdateRequest {
        request_id: RequestId(902),
        pn_id: pn,
        add: Vec::new(),
        remove: vec![pne_id(1)],
        asked_by: None,
    };
    let leave = PneLeaveRequest {
        request_id: RequestId(903),
        pn_id: pn,
        pne: pne_id(1),
    };
    let key = GroupKeyRequest {
        request_id: RequestId(904),
        pn_id: pn,
    };
    let asks: [(u64, Address, Body, Flow); 4] = [
        (9001, gw.clone(), release.into(), Flow::PnRelease),
        (9002, gw.clone(), update.into(), Flow::MembershipChange),
        (9003, gw.clone(), leave.into(), Flow::MembershipChange),
        (9004, Address::Entity(pne_id(0)), key.into(), Flow::GroupKey),
    ];
    for (n, (msg, from, body, flow)) in asks.into_iter().enumerate() {
        let answer = ask(&mut h, msg, from, body);
        assert_eq!(
            code(&answer),
            Some(ErrorCode::Internal),
            "{flow}: {answer:?}"
        );
        let failed = failed_flows(&h);
        assert_eq!(failed.len(), n + 1);
        assert_eq!(failed[n], (flow, Failure::Store(disk())));
    }
    assert_eq!(h.members(pn), before, "nothing changed");
    assert!(!server_closed(&h));
    // The session goes on: the release, asked again, goes through.
    h.store.fail_load = None;
    let again = PnReleaseRequest {
        request_id: RequestId(905),
        pn_id: pn,
        asked_by: None,
    };
    let answer = ask(&mut h, 9005, gw, again);
    assert!(matches!(answer, Body::PnReleaseResponse(_)), "{answer:?}");
}

/// Status management (004 §5.5.3): a report naming a PNE whose membership cannot be read, and
/// a query whose records cannot be read, each answered `internal`; nothing recorded.
#[test]
fn failed_reads_end_status_reports_and_queries() {
    let (mut h, _) = registered();
    let gw = Address::Entity(h.gw_cfg.id.clone());
    h.store.fail_load =
        Some(|l| matches!(l, Load::Served { .. } | Load::Statuses { .. }).then(disk));
    // A fresh session knows no served PNE yet: the report reads which it serves.
    h.reopen_wan();
    let report = StatusReport {
        entries: vec![StatusEntry::new(pne_id(1), Status::Busy)],
    };
    let answer = ask(&mut h, 9101, gw.clone(), report);
    assert_eq!(code(&answer), Some(ErrorCode::Internal), "{answer:?}");
    let query = StatusQuery {
        entities: vec![pne_id(0)],
    };
    let answer = ask(&mut h, 9102, gw.clone(), query);
    assert_eq!(code(&answer), Some(ErrorCode::Internal), "{answer:?}");
    assert_eq!(
        failed_flows(&h),
        [
            (Flow::StatusManagement, Failure::Store(disk())),
            (Flow::StatusManagement, Failure::Store(disk()))
        ]
    );
    assert!(
        !h.store.statuses.contains_key(&pne_id(1)),
        "nothing recorded"
    );
    h.store.fail_load = None;
    let query = StatusQuery {
        entities: vec![pne_id(0)],
    };
    let answer = ask(&mut h, 9103, gw, query);
    assert!(matches!(answer, Body::StatusAnswer(_)), "{answer:?}");
}

/// The secure services that read the store (004 §5.5.10 inventory, §5.5.4 usage, CPNS-4
/// charging): each one's failed read answers its call `internal`, as a secure call that
/// failed.
#[test]
fn failed_reads_end_each_secure_service_call() {
    let (mut h, pn) = registered();
    h.store.fail_load = Some(|l| {
        matches!(
            l,
            Load::Inventory { .. } | Load::UsageOwners { .. } | Load::Charging { .. }
        )
        .then(disk)
    });
    let now_s = (super::harness::WALL_AT_BASE / 1000) as u64;
    let usage = cpns_wire::UsageReport {
        records: vec![cpns_wire::UsageRecord {
            id: 1,
            service: "video".into(),
            start_s: now_s - 600,
            end_s: now_s - 60,
            bytes: 1_000,
            audience: cpns_wire::Audience::Server,
            status: None,
            battery_start: None,
            battery_end: None,
            networks: Vec::new(),
        }],
    };
    let calls: [(&str, Vec<u8>, Flow); 3] = [
        (
            INVENTORY_SERVICE,
            minicbor::to_vec(InventoryQuery {
                pn_id: Some(pn),
                follow: None,
            })
            .unwrap(),
            Flow::InventoryQuery,
        ),
        (
            cpns_wire::USAGE_SERVICE,
            minicbor::to_vec(&usage).unwrap(),
            Flow::SecureCall,
        ),
        (
            cpns_wire::CHARGING_SERVICE,
            minicbor::to_vec(cpns_wire::ChargingQuery::default()).unwrap(),
            Flow::SecureCall,
        ),
    ];
    for (n, (service, payload, flow)) in calls.into_iter().enumerate() {
        let now = h.now();
        h.pnes[0].secure_call(now, service, payload).unwrap();
        h.pump();
        let failed = failed_flows(&h);
        assert_eq!(failed.len(), n + 1, "{service}");
        assert_eq!(failed[n], (flow, Failure::Store(disk())));
        let refused = h
            .pne_failures(0)
            .into_iter()
            .filter(|f| matches!(f, Failure::Refused(e) if e.code == ErrorCode::Internal))
            .count();
        assert_eq!(refused, n + 1, "{service}");
    }
    assert!(h.store.usage.is_empty(), "no usage stored");
    assert!(!server_closed(&h));
    h.store.fail_load = None;
    echo(&mut h, 0);
    assert_eq!(echoes(&h, 0), 1);
}
