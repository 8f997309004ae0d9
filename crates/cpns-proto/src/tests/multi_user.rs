//! Multi-user PNs (001 §5.2.1.1): a PNE of user carol takes part in a PN that alice's PN GW
//! establishes. The server authenticates it, then asks carol's home PN GW to confirm it over
//! that PN GW's own session; the PN registers it only when confirmed, with carol recorded as
//! its user. A refusal, an unreachable or silent home PN GW, and a home PN GW that is not
//! carol's each leave it out with a clear reason, and nothing of it is stored.

use std::time::Duration;

use cpns_crypto::EuKey;
use cpns_wire::{
    ErrorBody, ErrorCode, PnId, PneConfirmRequest, PneConfirmResponse, RequestId, UserId,
};

use super::harness::{FLOW, Harness, id, pne_id};
use super::store::PneSpec;
use crate::gateway::{EstablishTargets, GatewayEvent};
use crate::pne::PneEvent;
use crate::server::{EntityRole, KnownEntity};

fn carol() -> UserId {
    UserId::new("carol").unwrap()
}

/// PNE 0 is alice's; PNE 1 is carol's and names `home` as its home PN GW. carol's PN GW
/// `carol-gw` is enrolled (as `home_owner`'s).
fn world(home: Option<&str>, home_owner: UserId) -> Harness {
    world_of(&[PneSpec::trusted(), PneSpec::trusted()], home, home_owner)
}

/// [`world`] with these PNEs.
fn world_of(specs: &[PneSpec], home: Option<&str>, home_owner: UserId) -> Harness {
    let mut h = Harness::new(specs);
    h.store.entities.get_mut(&pne_id(1)).unwrap().owner = carol();
    h.store.entities.insert(
        id("carol-gw"),
        KnownEntity {
            id: id("carol-gw"),
            role: EntityRole::Gateway,
            owner: home_owner,
            eukey: EuKey::from_bytes([7; 32]),
        },
    );
    h.pne_cfgs[1].home_gateway = home.map(id);
    h.restart_from_stores(specs);
    h.discover_all();
    h
}

/// The home PN GW answers `confirmed` (and chargeable alike).
fn home_says(h: &mut Harness, confirmed: bool) {
    h.home = Box::new(move |_, req| {
        Some(Ok(PneConfirmResponse {
            request_id: req.request_id,
            confirmed,
            chargeable: confirmed,
        }))
    });
}

/// alice's PN GW establishes a PN with both PNEs (000 §6.6.1.2, 001 steps 1-3).
fn establish(h: &mut Harness) -> PnId {
    let now = h.now();
    let pn =
        h.gw.start_establishment(now, EstablishTargets::All)
            .unwrap()
            .pn_id;
    h.pump();
    pn
}

fn left_out_reason(h: &Harness, pn: PnId) -> Option<String> {
    h.pne_events(1).into_iter().find_map(|e| match e {
        PneEvent::PnRefused { pn_id, reason } if *pn_id == pn => Some(reason.to_string()),
        PneEvent::FlowFailed { reason, .. } => Some(reason.to_string()),
        _ => None,
    })
}

/// Steps 8-12: carol's home PN GW confirms; the PN holds both PNEs, carol's recorded as hers.
#[test]
fn a_confirmed_pne_of_another_user_enters_the_pn_as_its_users() {
    let mut h = world(Some("carol-gw"), carol());
    home_says(&mut h, true);
    let pn = establish(&mut h);
    assert_eq!(h.asked.len(), 1);
    let (home, q) = &h.asked[0];
    assert_eq!(home, &id("carol-gw"));
    assert_eq!(
        (q.pn_id, &q.pne, &q.requesting_gw),
        (pn, &pne_id(1), &id("gw-1"))
    );
    assert_eq!(h.members(pn), [pne_id(0), pne_id(1)]);
    assert_eq!(h.store.member_owners[&(pn, pne_id(1))], Some(carol()));
    assert_eq!(h.store.member_owners[&(pn, pne_id(0))], None);
    assert!(h.joined(1).is_some(), "{:?}", h.pne_events(1));
    assert_eq!(h.gw.inventory()[0].members.len(), 2);
}

/// A refusal, no home PN GW connected, one that never answers, one not of carol's: carol's
/// PNE is left out with the reason, alice's PNE still gets its PN, and carol's is stored
/// nowhere.
#[test]
fn a_pne_of_another_user_not_confirmed_is_left_out_with_the_reason() {
    let cases: [(&str, Option<&str>, UserId, ErrorCode); 5] = [
        ("declined", Some("carol-gw"), carol(), ErrorCode::Declined),
        (
            "not connected",
            Some("carol-gw"),
            carol(),
            ErrorCode::Timeout,
        ),
        ("silent", Some("carol-gw"), carol(), ErrorCode::Timeout),
        (
            "wrong owner",
            Some("carol-gw"),
            UserId::new("dave").unwrap(),
            ErrorCode::Forbidden,
        ),
        ("no home named", None, carol(), ErrorCode::Forbidden),
    ];
    for (case, home, owner, code) in cases {
        let mut h = world(home, owner);
        match case {
            "declined" => home_says(&mut h, false),
            "silent" => h.home = Box::new(|_, _| None),
            _ => {}
        }
        let pn = establish(&mut h);
        if case == "silent" {
            // The establishment waits for the home PN GW until its deadline, not less.
            assert!(h.members_or_none(pn).is_none(), "{case}");
            h.advance(FLOW / 2 - Duration::from_secs(1));
            assert!(h.members_or_none(pn).is_none(), "{case}");
            h.advance(Duration::from_secs(2));
        }
        assert_eq!(h.members(pn), [pne_id(0)], "{case}");
        assert!(
            !h.store.member_owners.contains_key(&(pn, pne_id(1))),
            "{case}"
        );
        assert!(h.pnes[1].inventory().is_empty(), "{case}");
        let reason = left_out_reason(&h, pn).unwrap_or_default();
        assert!(reason.contains(code.name()), "{case}: {reason}");
        if case == "declined" {
            assert!(reason.contains("did not confirm"), "{reason}");
        }
        let asked = h.asked.len();
        let want = usize::from(matches!(case, "declined" | "not connected" | "silent"));
        assert_eq!(asked, want, "{case}: asked the home PN GW");
        assert!(h.joined(0).is_some(), "{case}: alice's PNE has its PN");
    }
}

/// A PN of carol's PNE alone (1-1 at alice's PN GW) is not registered at all when its home PN
/// GW refuses: the PNE that asked hears `declined`.
#[test]
fn a_pn_of_only_a_refused_pne_is_not_registered() {
    let mut h = world(Some("carol-gw"), carol());
    home_says(&mut h, false);
    h.setup(1, cpns_wire::SetupType::OneToOne);
    assert!(h.store.pns.is_empty());
    assert!(h.pnes[1].inventory().is_empty());
    let failure = h.pne_failures(1);
    assert!(
        failure.iter().any(|f| f.to_string().contains("declined")),
        "{failure:?}"
    );
}

/// The home side (001 step 8 on the home PN GW's session): the server asks its own PN GW,
/// which answers by its owner's policy; a silent PN GW is answered for at the deadline, and
/// a question to a session not ready is answered at once.
#[test]
fn the_home_session_asks_its_pn_gw_and_hands_the_answer_back() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let q = |n| PneConfirmRequest {
        request_id: RequestId(n),
        pn_id: PnId::from_bytes([3; 16]),
        pne: pne_id(0),
        requesting_gw: id("bob-gw"),
    };
    let now = h.now();
    h.server.confirm_for_other(now, 41, q(1));
    h.pump();
    assert_eq!(
        h.gateway_answers,
        [(
            41,
            Ok(PneConfirmResponse {
                request_id: RequestId(1),
                confirmed: false,
                chargeable: false
            })
        )]
    );
    assert!(h.gw_events().iter().any(|e| matches!(
        e,
        GatewayEvent::PneConfirmAsked {
            confirmed: false,
            ..
        }
    )));
    // A PN GW whose owner confirms.
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    h.gw_cfg.confirm_others = true;
    h.restart_from_stores(&[PneSpec::trusted()]);
    let now = h.now();
    h.server.confirm_for_other(now, 42, q(2));
    h.pump();
    assert!(matches!(&h.gateway_answers[..], [(42, Ok(r))] if r.confirmed && r.chargeable));
    // A PN GW that never answers.
    h.set_hook(|f| {
        if f.message == "PneConfirmResponse" {
            super::harness::Action::Drop
        } else {
            super::harness::Action::Deliver
        }
    });
    h.server.confirm_for_other(now, 43, q(3));
    h.pump();
    assert_eq!(h.gateway_answers.len(), 1);
    // Answered for at a third of the flow's time, not before.
    h.advance(FLOW / 3 - Duration::from_secs(1));
    assert_eq!(h.gateway_answers.len(), 1);
    h.advance(Duration::from_secs(2));
    assert!(matches!(
        &h.gateway_answers[1],
        (
            43,
            Err(ErrorBody {
                code: ErrorCode::Timeout,
                ..
            })
        )
    ));
    // A PN GW that answers with an error: handed back as it is.
    h.set_hook(|f| {
        if f.message == "PneConfirmResponse" {
            super::harness::Action::Replace(super::harness::rewrite(&f.body, |env| {
                env.body = cpns_wire::Body::ErrorBody(ErrorBody::new(ErrorCode::Forbidden, "no"));
            }))
        } else {
            super::harness::Action::Deliver
        }
    });
    let now = h.now();
    h.server.confirm_for_other(now, 45, q(5));
    h.pump();
    assert!(matches!(
        h.gateway_answers.last(),
        Some((
            45,
            Err(ErrorBody {
                code: ErrorCode::Forbidden,
                ..
            })
        ))
    ));
    // A session whose PN GW is not authenticated yet answers at once.
    let mut fresh = crate::server::ServerSession::new(
        crate::server::ServerConfig::default(),
        [0; 32],
        now,
        cpns_crypto::MachineRng::from_seed_u64(3),
    );
    fresh.confirm_for_other(now, 44, q(4));
    let out = std::iter::from_fn(|| fresh.poll_output()).find_map(|o| match o {
        crate::server::ServerOutput::GatewayAnswer { ask, answer } => Some((ask, answer)),
        _ => None,
    });
    assert!(matches!(out, Some((44, Err(e))) if e.code == ErrorCode::Busy));
}

/// A home PN GW that confirms its PNE but will not be charged for it leaves it out too.
#[test]
fn a_confirmed_pne_its_user_will_not_pay_for_is_left_out() {
    let mut h = world(Some("carol-gw"), carol());
    h.home = Box::new(|_, req| {
        Some(Ok(PneConfirmResponse {
            request_id: req.request_id,
            confirmed: true,
            chargeable: false,
        }))
    });
    let pn = establish(&mut h);
    assert_eq!(h.members(pn), [pne_id(0)]);
    let reason = left_out_reason(&h, pn).unwrap_or_default();
    assert!(reason.contains("charged"), "{reason}");
}

/// carol's PNE asks alice's PN GW for a PN with alice's PNE; carol's home PN GW declines: the
/// PN is not registered (nobody starts a PN in another's name) and the initiator hears why.
#[test]
fn an_initiator_its_home_pn_gw_declines_hears_why() {
    let mut h = world(Some("carol-gw"), carol());
    home_says(&mut h, false);
    h.setup(1, cpns_wire::SetupType::All);
    assert!(h.store.pns.is_empty());
    let failures = h.pne_failures(1);
    assert!(
        failures
            .iter()
            .any(|f| matches!(f, crate::Failure::Refused(e) if e.code == ErrorCode::Declined)),
        "{failures:?}"
    );
}

/// With one PNE failing its authentication and the other declined by its home PN GW, the PN
/// fails as not authenticated: not every PNE was refused for a reason of its own.
#[test]
fn a_pn_with_a_failed_authentication_and_a_refusal_fails_unauthenticated() {
    let specs = [PneSpec::trusted().wrong_key(), PneSpec::trusted()];
    let mut h = world_of(&specs, Some("carol-gw"), carol());
    home_says(&mut h, false);
    let _ = establish(&mut h);
    assert!(h.store.pns.is_empty());
    let failed = h
        .gw_completions()
        .into_iter()
        .find_map(|c| c.result.clone().err());
    assert!(
        matches!(&failed, Some(crate::Failure::Refused(e)) if e.code == ErrorCode::Unauthenticated),
        "{failed:?}"
    );
}
