//! PNE registration (003 §1.4): a PN member is forwarded as is (§1.4.1); a non-member is first
//! added to the PN with a PN Update, the PN GW's local inventory is updated, and then it is
//! registered (§1.4.2). Each ends with a CPNS ID and a grant sealed under the
//! server → PNE key of SK_PNE.

use cpns_crypto::{GrantBinding, open_registration_grant};
use cpns_wire::{
    Body, CpnsId, ErrorCode, PnId, PneRegistrationResponse, RegistrationGrant, SetupType,
};

use super::harness::{Harness, Party, id, pne_id};
use super::store::PneSpec;
use crate::gateway::GatewayEvent;
use crate::pne::Outcome;
use crate::server::ServerEvent;

fn cpns(n: u32) -> CpnsId {
    CpnsId::new(format!("cpns-{n:06}")).unwrap()
}

/// Ready harness where PNE 0 established a PN with `setup`.
fn with_pn(specs: &[PneSpec], setup: SetupType) -> (Harness, PnId) {
    let mut h = Harness::ready(specs);
    h.setup(0, setup);
    let pn = h.joined(0).unwrap().pn_id;
    (h, pn)
}

fn registration_response(h: &Harness) -> PneRegistrationResponse {
    h.delivered(Party::Server, Party::Gw)
        .into_iter()
        .rev()
        .find_map(|e| match e.body {
            Body::PneRegistrationResponse(r) => Some(r),
            _ => None,
        })
        .expect("the server answered the registration")
}

#[test]
fn member_pne_registers_and_opens_its_grant() {
    let (mut h, pn) = with_pn(&[PneSpec::cpns()], SetupType::OneToOne);
    let wan_before = h.wan_messages().len();
    let pan_before = h.pan_traces(0).len();
    h.register(0, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    // §1.4.1 step 3: forwarded as is, no PN update.
    assert_eq!(
        h.wan_messages()[wan_before..],
        [
            "PneRegistrationRequest",
            "AuthenticationRequest",
            "AuthenticationResponse",
            "PneRegistrationResponse",
        ]
    );
    assert!(h.pan_traces(0)[pan_before..].iter().all(|r| r.sealed));
    let registered = Outcome::Registered {
        cpns_id: cpns(1),
        pn_id: pn,
        lifetime_s: 86_400,
    };
    assert!(h.pne_outcomes(0).contains(&&registered));
    assert_eq!(h.pnes[0].cpns_id(), Some(&cpns(1)));
    assert!(h.server_events().contains(&&ServerEvent::PneRegistered {
        pne_id: pne_id(0),
        cpns_id: cpns(1),
    }));
    assert!(h.gw_events().contains(&&GatewayEvent::PneRegistered {
        pne: pne_id(0),
        cpns_id: cpns(1),
    }));
    assert_eq!(h.store.cpns_ids.get(&pne_id(0)), Some(&cpns(1)));
    // The grant opens under the SK_PNE the server kept, bound to the PN, the PNE, the request
    // and the CPNS ID, and names the same CPNS ID.
    let resp = registration_response(&h);
    let sk = &h.store.session_keys[&(pn, pne_id(0))];
    let pne = pne_id(0);
    let binding = GrantBinding {
        pn_id: pn.as_bytes(),
        pne_id: pne.as_str(),
        request_id: resp.request_id.0,
        cpns_id: resp.cpns_id.as_str(),
    };
    let plain = open_registration_grant(sk, &binding, &resp.sealed_grant).unwrap();
    let grant: RegistrationGrant = minicbor::decode(&plain).unwrap();
    assert_eq!(grant.cpns_id, cpns(1));
    let other_request = GrantBinding {
        request_id: resp.request_id.0 ^ 1,
        ..binding
    };
    assert!(open_registration_grant(sk, &other_request, &resp.sealed_grant).is_err());
    // Registration changes no inventory.
    h.assert_agree(pn);
}

#[test]
fn non_member_is_added_by_pn_update_then_registered() {
    let (mut h, pn) = with_pn(&[PneSpec::cpns(), PneSpec::trusted()], SetupType::OneToOne);
    assert_eq!(h.members(pn), [pne_id(0)]);
    let wan_before = h.wan_messages().len();
    h.register(1, None);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    // §1.4.2 steps 4-5: the PN update comes first, then the registration on the PNE's behalf.
    assert_eq!(
        h.wan_messages()[wan_before..],
        [
            "PnUpdateRequest",
            "PnUpdateResponse",
            "PneRegistrationRequest",
            "AuthenticationRequest",
            "AuthenticationResponse",
            "PneRegistrationResponse",
            "StatusUpdateResponse",
        ]
    );
    assert_eq!(h.members(pn), [pne_id(0), pne_id(1)]);
    // The server's record and the PN GW's local inventory (memory and store) agree.
    let record = &h.store.pns[&pn];
    assert_eq!(h.gw.inventory(), [record]);
    assert_eq!(&h.store.gw_local[&pn].inventory, record);
    // The member's LocalEUKey copy survived the local update.
    assert_eq!(h.store.gw_local[&pn].wrapped_keys.len(), 1);
    let registered = Outcome::Registered {
        cpns_id: cpns(1),
        pn_id: pn,
        lifetime_s: 86_400,
    };
    assert!(h.pne_outcomes(1).contains(&&registered));
    assert_eq!(h.store.cpns_ids.get(&pne_id(1)), Some(&cpns(1)));
    assert!(h.store.session_keys.contains_key(&(pn, pne_id(1))));
}

#[test]
fn every_registered_pne_gets_its_own_cpns_id() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted(), PneSpec::cpns()], SetupType::All);
    h.register(0, Some(pn));
    h.register(1, Some(pn));
    assert_eq!(h.pnes[0].cpns_id(), Some(&cpns(1)));
    assert_eq!(h.pnes[1].cpns_id(), Some(&cpns(2)));
    assert_eq!(h.store.cpns_ids.len(), 2);
    h.assert_agree(pn);
}

#[test]
fn retried_registration_request_gets_the_same_answer() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted()], SetupType::OneToOne);
    h.register(0, Some(pn));
    let first = registration_response(&h);
    // The PN GW retries the very same request (same sender, same request id).
    let req = h
        .log
        .iter()
        .rev()
        .find(|f| f.from == Party::Gw && f.message == "PneRegistrationRequest")
        .unwrap()
        .clone();
    let retry = super::harness::rewrite(&req.body, |e| e.msg_id = 9_000);
    h.deliver_direct(Party::Gw, Party::Server, &retry).unwrap();
    h.pump();
    let again = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find(|e| e.in_reply_to == Some(9_000))
        .unwrap();
    assert_eq!(again.body, Body::PneRegistrationResponse(first));
    // No second CPNS ID, no second registration.
    assert_eq!(h.store.cpns_ids.len(), 1);
    let registered = h
        .server_events()
        .iter()
        .filter(|e| matches!(e, ServerEvent::PneRegistered { .. }))
        .count();
    assert_eq!(registered, 1);
}

#[test]
fn registration_without_any_pn_is_refused_by_the_gateway() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.register(0, None);
    let err = h
        .delivered(Party::Gw, Party::Pne(0))
        .into_iter()
        .find_map(|e| e.error().cloned())
        .unwrap();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(h.pne_refused(0, ErrorCode::NotFound));
    assert!(h.wan_messages().len() == 8, "nothing reached the server");
    assert!(h.store.cpns_ids.is_empty());
}

#[test]
fn registration_not_stored_is_an_internal_error() {
    let (mut h, pn) = with_pn(&[PneSpec::trusted()], SetupType::OneToOne);
    h.store.fail_server = true;
    h.register(0, Some(pn));
    assert!(h.pne_refused(0, ErrorCode::Internal));
    assert_eq!(h.pnes[0].cpns_id(), None);
    assert!(h.store.cpns_ids.is_empty());
    assert!(
        !h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::PneRegistered { .. }))
    );
}

#[test]
fn pne_registers_over_a_link_resealed_after_gateway_restart() {
    let specs = [PneSpec::cpns()];
    let (mut h, pn) = with_pn(&specs, SetupType::OneToOne);
    h.restart_from_stores(&specs);
    let now = h.now();
    h.pnes[0].start_pan_auth(now, pn).unwrap();
    h.pump();
    let mark = h.pan_traces(0).len();
    h.register(0, Some(pn));
    assert_eq!(h.pnes[0].cpns_id(), Some(&cpns(1)));
    let after = &h.pan_traces(0)[mark..];
    assert_eq!(after.len(), 4, "request, challenge, response, answer");
    assert!(after.iter().all(|r| r.sealed));
    assert_eq!(h.server.gateway(), Some(&id("gw-1")));
}

/// 003 §1.4.2: a non-member joins the PN it names; one naming a PN its PN GW does not serve is
/// refused `not_found` at the PN GW, and joins no other PN in its place.
#[test]
fn a_non_member_naming_a_pn_its_gw_does_not_serve_is_refused() {
    let (mut h, pn) = with_pn(&[PneSpec::cpns(), PneSpec::trusted()], SetupType::OneToOne);
    let wan_before = h.wan_messages().len();
    let elsewhere = PnId::from_bytes([0xee; 16]);
    h.register(1, Some(elsewhere));
    assert!(h.pne_refused(1, ErrorCode::NotFound));
    assert_eq!(
        h.wan_messages().len(),
        wan_before,
        "nothing reached the server"
    );
    assert_eq!(h.members(pn), [pne_id(0)]);
    assert!(h.store.cpns_ids.is_empty());
}

/// 003 §1.4.2, docs/security.md §4.1: a non-member naming no PN joins the PN with the lowest
/// PN ID its PN GW serves.
#[test]
fn a_non_member_naming_no_pn_joins_the_lowest_pn_id() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::OneToOne);
    h.setup(1, SetupType::OneToOne);
    let a = h.joined(0).unwrap().pn_id;
    let b = h.joined(1).unwrap().pn_id;
    assert_ne!(a, b);
    h.register(2, None);
    let lowest = a.min(b);
    let highest = a.max(b);
    assert!(h.members(lowest).contains(&pne_id(2)));
    assert!(!h.members(highest).contains(&pne_id(2)));
    assert!(
        h.pne_outcomes(2)
            .iter()
            .any(|o| matches!(o, Outcome::Registered { pn_id, .. } if *pn_id == lowest))
    );
}
