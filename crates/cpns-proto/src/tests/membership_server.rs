//! Leave and expulsion at the server (000 §6.6.3.1.1 steps 2-4, §6.6.3.2 steps 2-4): the PN GW
//! asks for its own PN; the server removes the member and moves the PN to its next group key
//! epoch in one write, sealing the new key to each remaining member with an SK_PNE and to no
//! one else; a retry gets the kept answer; refusals change nothing.

use cpns_crypto::{GroupKeyBinding, open_group_key};
use cpns_wire::{
    Address, Body, EntityId, Envelope, ErrorCode, PnId, PnUpdateRequest, PnUpdateResponse,
    PneLeaveRequest, PneLeaveResponse, RequestId, SetupType,
};

use super::harness::{Harness, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::server::ServerEvent;

fn gw() -> Address {
    Address::Entity(id("gw-1"))
}

/// A ready harness where PNE 0 established a PN with PNEs 1 and 2, all authenticated (each
/// with an SK_PNE at the server).
fn with_pn() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(h.store.pns[&pn].members.len(), 3);
    for i in 0..3 {
        assert!(h.store.session_keys.contains_key(&(pn, pne_id(i))));
    }
    (h, pn)
}

fn send(h: &mut Harness, msg: u64, from: Address, body: impl Into<Body>) {
    let env = Envelope::request(msg, from, Address::Server, body);
    h.deliver_direct(Party::Gw, Party::Server, &plain(&env))
        .unwrap();
}

fn leave(h: &mut Harness, msg: u64, from: Address, request: u64, pn: PnId, pne: EntityId) {
    let req = PneLeaveRequest {
        request_id: RequestId(request),
        pn_id: pn,
        pne,
    };
    send(h, msg, from, req);
}

fn expel(h: &mut Harness, msg: u64, request: u64, pn: PnId, pne: EntityId) {
    let req = PnUpdateRequest {
        request_id: RequestId(request),
        pn_id: pn,
        add: Vec::new(),
        remove: vec![pne],
        asked_by: None,
    };
    send(h, msg, gw(), req);
}

/// The server's answer to `msg`, still in flight to the PN GW.
fn answer(h: &Harness, msg: u64) -> Body {
    h.server_answer(msg)
}

fn refused(h: &Harness, msg: u64) -> ErrorCode {
    match answer(h, msg) {
        Body::ErrorBody(e) => e.code,
        other => panic!("not an error: {other:?}"),
    }
}

/// Checks the copies: one per remaining member, each opening with that member's SK_PNE to the
/// group key the store keeps for `epoch`, and with no other member's.
fn copies_open_for_the_members_only(
    h: &Harness,
    pn: PnId,
    epoch: u64,
    keys: &[cpns_wire::SealedGroupKey],
    members: &[usize],
    gone: usize,
) {
    let (stored_epoch, gk) = &h.store.epochs[&pn];
    assert_eq!(*stored_epoch, epoch);
    let holders: Vec<EntityId> = keys.iter().map(|k| k.pne_id.clone()).collect();
    let want: Vec<EntityId> = members.iter().map(|&i| pne_id(i)).collect();
    assert_eq!(holders, want);
    // The copies name the member list of the epoch: the server's after the change.
    let digest = cpns_crypto::inventory_digest(&crate::util::inventory_cbor(&h.store.pns[&pn]));
    for k in keys {
        let binding = GroupKeyBinding {
            pn_id: pn.as_bytes(),
            epoch,
            pne_id: k.pne_id.as_str(),
            inventory_digest: &digest,
            pull: None,
        };
        let sk = &h.store.session_keys[&(pn, k.pne_id.clone())];
        assert!(open_group_key(sk, &binding, &k.sealed).unwrap() == *gk);
        // The member that is gone cannot open a copy, with its old SK_PNE, in any name.
        let cut = h_session_key_of(h, pn, gone);
        for name in [k.pne_id.clone(), pne_id(gone)] {
            let b = GroupKeyBinding {
                pne_id: name.as_str(),
                ..binding
            };
            assert!(open_group_key(&cut, &b, &k.sealed).is_err());
        }
    }
}

/// The SK_PNE the PNE itself derived for the PN (the server dropped it with the member).
fn h_session_key_of(h: &Harness, pn: PnId, i: usize) -> cpns_crypto::SessionKey {
    h.pnes[i]
        .session_key_of(&pn)
        .expect("the PNE keeps its SK_PNE")
}

fn removed_events(h: &Harness) -> Vec<(Vec<EntityId>, u64)> {
    h.server_events()
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::MembersRemoved { removed, epoch, .. } => Some((removed.clone(), *epoch)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_leave_moves_the_pn_to_its_next_epoch_for_the_others_only() {
    let (mut h, pn) = with_pn();
    leave(&mut h, 7_001, gw(), 21, pn, pne_id(1));
    let Body::PneLeaveResponse(PneLeaveResponse {
        pn_id,
        inventory: Some(inventory),
        epoch: Some(epoch),
        keys,
    }) = answer(&h, 7_001)
    else {
        panic!("not a full leave answer");
    };
    assert_eq!(pn_id, pn);
    assert_eq!(
        epoch, 2,
        "the PN's epoch after the one of its establishment"
    );
    let members: Vec<EntityId> = inventory.members.iter().map(|m| m.pne_id.clone()).collect();
    assert_eq!(members, vec![pne_id(0), pne_id(2)]);
    assert_eq!(h.store.pns[&pn], inventory);
    copies_open_for_the_members_only(&h, pn, 2, &keys, &[0, 2], 1);
    assert_eq!(removed_events(&h), vec![(vec![pne_id(1)], 2)]);

    // A retry: the kept answer, nothing removed again, no new epoch.
    leave(&mut h, 7_002, gw(), 21, pn, pne_id(1));
    assert_eq!(answer(&h, 7_002), answer(&h, 7_001));
    assert_eq!(h.store.effects.get("update_members"), Some(&1));
    assert_eq!(h.store.epochs[&pn].0, 2);

    // The next change moves to epoch 3 with a new key.
    let gk1 = h.store.epochs[&pn].1.clone();
    expel(&mut h, 7_003, 22, pn, pne_id(2));
    let Body::PnUpdateResponse(PnUpdateResponse {
        epoch: Some(3),
        keys,
        ..
    }) = answer(&h, 7_003)
    else {
        panic!("not an expulsion answer with epoch 3");
    };
    assert!(h.store.epochs[&pn].1 != gk1, "a new key");
    copies_open_for_the_members_only(&h, pn, 3, &keys, &[0], 2);
}

#[test]
fn an_expulsion_removes_members_only_and_seals_to_the_rest() {
    let (mut h, pn) = with_pn();
    expel(&mut h, 7_001, 31, pn, pne_id(2));
    let Body::PnUpdateResponse(PnUpdateResponse {
        inventory,
        epoch: Some(2),
        keys,
    }) = answer(&h, 7_001)
    else {
        panic!("not an expulsion answer");
    };
    assert_eq!(inventory.members.len(), 2);
    copies_open_for_the_members_only(&h, pn, 2, &keys, &[0, 1], 2);
    // A PN update adding nobody and removing nobody moves no epoch.
    let req = PnUpdateRequest {
        request_id: RequestId(32),
        pn_id: pn,
        add: Vec::new(),
        remove: Vec::new(),
        asked_by: None,
    };
    send(&mut h, 7_002, gw(), req);
    assert!(matches!(
        answer(&h, 7_002),
        Body::PnUpdateResponse(PnUpdateResponse {
            epoch: None,
            ref keys,
            ..
        }) if keys.is_empty()
    ));
    assert_eq!(h.store.epochs[&pn].0, 2);
}

#[test]
fn leaves_that_may_not_be_are_refused_and_change_nothing() {
    let (mut h, pn) = with_pn();
    let before = h.snapshot();
    // Not a member.
    leave(&mut h, 7_001, gw(), 1, pn, id("pne-9"));
    assert_eq!(refused(&h, 7_001), ErrorCode::NotFound);
    // An unknown PN.
    leave(
        &mut h,
        7_002,
        gw(),
        2,
        PnId::from_bytes([0xee; 16]),
        pne_id(1),
    );
    assert_eq!(refused(&h, 7_002), ErrorCode::NotFound);
    // In a PNE's name: only the PN GW asks, checked before anything is loaded.
    let loads = h.store.loads.get();
    leave(&mut h, 7_003, Address::Entity(pne_id(1)), 3, pn, pne_id(1));
    assert_eq!(refused(&h, 7_003), ErrorCode::Forbidden);
    assert_eq!(h.store.loads.get(), loads);
    // Another PN GW's PN.
    h.store.pn_gateway.insert(pn, id("gw-2"));
    leave(&mut h, 7_004, gw(), 4, pn, pne_id(1));
    assert_eq!(refused(&h, 7_004), ErrorCode::Forbidden);
    h.store.pn_gateway.insert(pn, id("gw-1"));
    // A failing store: internal, and nothing kept: the same request succeeds later.
    h.store.fail_server = true;
    leave(&mut h, 7_005, gw(), 5, pn, pne_id(1));
    assert_eq!(refused(&h, 7_005), ErrorCode::Internal);
    h.store.fail_server = false;
    h.pump();
    assert_eq!(h.snapshot(), before);
    assert_eq!(h.store.epochs[&pn].0, 1, "still the establishment's epoch");
    assert!(removed_events(&h).is_empty());
    leave(&mut h, 7_006, gw(), 5, pn, pne_id(1));
    assert!(matches!(answer(&h, 7_006), Body::PneLeaveResponse(_)));
}

/// 004 §5.5.10: a PN GW naming who asked for an expulsion (`asked_by`) is refused unless that
/// one is a member of the PN and an entity of the PN GW's own user; nothing changes.
#[test]
fn an_expulsion_asked_by_a_non_member_or_another_users_pne_is_refused() {
    let mut h = Harness::ready(&[PneSpec::trusted(); 4]);
    h.setup(0, SetupType::Invite(vec![pne_id(1), pne_id(2)]));
    let pn = h.joined(0).unwrap().pn_id;
    h.store.entities.get_mut(&pne_id(1)).unwrap().owner =
        cpns_wire::UserId::new("mallory").unwrap();
    let before = h.store.pns.clone();
    // PNE 3, alice's, is no member; PNE 1, a member, is mallory's; "ghost" is not enrolled.
    for (n, asker) in [(1, pne_id(3)), (2, pne_id(1)), (3, id("ghost"))] {
        let req = PnUpdateRequest {
            request_id: RequestId(700 + n),
            pn_id: pn,
            add: Vec::new(),
            remove: vec![pne_id(2)],
            asked_by: Some(asker.clone()),
        };
        send(&mut h, 9_700 + n, gw(), req);
        assert_eq!(refused(&h, 9_700 + n), ErrorCode::Forbidden, "{asker}");
        h.pump();
    }
    assert_eq!(h.store.pns, before);
    // PNE 0, alice's and a member, may.
    let req = PnUpdateRequest {
        request_id: RequestId(710),
        pn_id: pn,
        add: Vec::new(),
        remove: vec![pne_id(2)],
        asked_by: Some(pne_id(0)),
    };
    send(&mut h, 9_710, gw(), req);
    assert!(matches!(answer(&h, 9_710), Body::PnUpdateResponse(_)));
}

/// 002 §B.1.1.3 steps 22-23 at the server: a member's request for its PN's group key is
/// answered with the current epoch and a copy that opens under its SK_PNE; a PNE that is no
/// member is `forbidden`; for a PN the store says another PN GW serves, it is `not_found` at
/// this one.
#[test]
fn a_member_gets_its_pns_group_key_only_from_the_pns_own_pn_gw() {
    let (mut h, pn) = with_pn();
    // Expel PNE 2: the PN moves to a new epoch with a group key.
    expel(&mut h, 9500, 50, pn, pne_id(2));
    assert!(matches!(answer(&h, 9500), Body::PnUpdateResponse(_)));
    let (epoch, key) = h.store.epochs[&pn].clone();
    let ask = |request| cpns_wire::GroupKeyRequest {
        request_id: RequestId(request),
        pn_id: pn,
    };
    send(&mut h, 9501, Address::Entity(pne_id(1)), ask(1));
    let Body::GroupKeyResponse(got) = answer(&h, 9501) else {
        panic!("{:?}", answer(&h, 9501));
    };
    assert_eq!(got.epoch, epoch);
    let members: Vec<EntityId> = got
        .inventory
        .members
        .iter()
        .map(|m| m.pne_id.clone())
        .collect();
    assert_eq!(members, [pne_id(0), pne_id(1)]);
    let digest = cpns_crypto::inventory_digest(&crate::util::inventory_cbor(&got.inventory));
    let me = pne_id(1);
    let binding = GroupKeyBinding {
        pn_id: pn.as_bytes(),
        epoch,
        pne_id: me.as_str(),
        inventory_digest: &digest,
        pull: Some(got.request_id.0),
    };
    let sk = &h.store.session_keys[&(pn, me.clone())];
    let opened = open_group_key(sk, &binding, &got.sealed_key).unwrap();
    assert_eq!(opened.expose_secret(), key.expose_secret());
    // The copy answers this pull only: as a pushed copy, or another pull's, it does not open.
    for pull in [None, Some(got.request_id.0 + 1)] {
        let other = GroupKeyBinding { pull, ..binding };
        assert!(open_group_key(sk, &other, &got.sealed_key).is_err());
    }
    // A PNE that never was a member gets nothing, not even a reason about keys.
    send(&mut h, 9503, Address::Entity(id("stranger")), ask(3));
    assert_eq!(refused(&h, 9503), ErrorCode::Forbidden);
    // Another PN GW's PN, as far as the store knows.
    h.store.pn_gateway.insert(pn, id("gw-9"));
    send(&mut h, 9502, Address::Entity(pne_id(1)), ask(2));
    assert_eq!(refused(&h, 9502), ErrorCode::NotFound);
}
