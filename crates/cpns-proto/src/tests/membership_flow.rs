//! Leave and expulsion end to end in the machines (000 §6.6.3.1.1, §6.6.3.2) with group key
//! epochs (docs/pn-lifecycle.md): the server, the PN GW and every member agree afterwards; the
//! remaining members are told and hold the new epoch's key; the PNE that left or was expelled
//! holds none of it and cannot open content sealed after its departure.

use std::time::Duration;

use cpns_crypto::{
    ContentBinding, MachineRng, MemberSigningKey, open_group_content, seal_group_content,
};
use cpns_wire::{
    Address, EntityId, Envelope, ErrorCode, PnId, PnInventory, PnUpdateNotification,
    PneLeaveRequest, RequestId, SetupType,
};

use super::harness::{Action, FLOW, Harness, INVITE, Party, certification_key, id, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::GatewayEvent;
use crate::pne::{Gone, Outcome, PneEvent};
use crate::{Failure, Flow, PanSecurity};

/// Four PNEs on an insecure PAN, all members of one PN set up by PNE 0 (links sealed).
fn with_pn() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::cpns(); 4]);
    h.setup(0, SetupType::All);
    let inv = h.joined(0).expect("the PN was established");
    assert_eq!(inv.members.len(), 4);
    (h, inv.pn_id)
}

fn members(h: &Harness, pn: PnId) -> Vec<EntityId> {
    h.store.pns[&pn]
        .members
        .iter()
        .map(|m| m.pne_id.clone())
        .collect()
}

/// The server's, the PN GW's and every remaining member's inventories agree; `gone` holds
/// nothing of the PN.
fn agree(h: &Harness, pn: PnId, gone: usize) {
    let server = &h.store.pns[&pn];
    let local = &h.store.gw_local[&pn];
    assert_eq!(&local.inventory.members, &server.members);
    assert!(local.wrapped_keys.iter().all(|(p, _)| *p != pne_id(gone)));
    let mem: Vec<&PnInventory> = h.gw.inventory();
    assert_eq!(
        mem.iter().find(|i| i.pn_id == pn).unwrap().members,
        server.members
    );
    for m in &server.members {
        let i = index(&m.pne_id);
        let held = &h.store.pne_local[i][&pn];
        assert_eq!(held.inventory.members, server.members, "PNE {i}");
    }
    assert!(!h.store.pne_local[gone].contains_key(&pn));
    assert!(h.pnes[gone].group_key_of(&pn).is_none());
    assert!(!h.pnes[gone].holds_local_key(&pn));
}

fn index(pne: &EntityId) -> usize {
    pne.as_str()["pne-".len()..].parse::<usize>().unwrap() - 1
}

fn removed(h: &Harness) -> Vec<(EntityId, bool, Option<u64>, Vec<EntityId>)> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::MemberRemoved {
                pne,
                left,
                epoch,
                notified,
                ..
            } => Some((pne.clone(), *left, *epoch, notified.clone())),
            // The owner's expulsion, completed.
            GatewayEvent::Completed(crate::Completed {
                result:
                    Ok(crate::gateway::Outcome::Expelled {
                        pne,
                        epoch,
                        notified,
                        ..
                    }),
                ..
            }) => Some((pne.clone(), false, *epoch, notified.clone())),
            _ => None,
        })
        .collect()
}

/// Why a leave or an expulsion failed, a member's or the owner's.
fn change_failure(h: &Harness) -> Option<Failure> {
    h.gw_events().into_iter().find_map(|e| match e {
        GatewayEvent::MembershipChangeFailed { reason, .. }
        | GatewayEvent::Completed(crate::Completed {
            flow: Flow::MembershipChange,
            result: Err(reason),
            ..
        }) => Some(reason.clone()),
        _ => None,
    })
}

fn expel(h: &mut Harness, pn: PnId, i: usize) -> Result<(), cpns_wire::ErrorBody> {
    let now = h.now();
    let r = h.gw.expel(now, pn, pne_id(i));
    h.pump();
    r.map(drop).map_err(|e| e.to_error())
}

fn updated(h: &Harness, i: usize) -> Vec<(u64, bool)> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::PnUpdated { epoch, has_key, .. } => Some((*epoch, *has_key)),
            _ => None,
        })
        .collect()
}

/// The acceptance test of group key epochs: after PNE 3 is expelled, content sealed under the
/// PN's new epoch opens for every remaining member and not for PNE 3, with anything it holds.
#[test]
fn an_expelled_pne_cannot_open_what_is_sealed_after_its_expulsion() {
    let (mut h, pn) = with_pn();
    // The establishment gave every member epoch 1; a first change moves it to epoch 2, which
    // PNE 3, still a member, holds.
    let (e0, gk0) = h.pnes[3].group_key_of(&pn).expect("PNE 3 holds epoch 1");
    assert_eq!(e0, 1);
    assert!(gk0 == h.pnes[0].group_key_of(&pn).unwrap().1);
    expel(&mut h, pn, 2).unwrap();
    let (e1, gk1) = h.pnes[3].group_key_of(&pn).expect("PNE 3 holds epoch 2");
    assert_eq!(e1, 2);
    // Now PNE 3 is expelled: it is told first, the others get epoch 3.
    expel(&mut h, pn, 3).unwrap();
    assert!(h.pne_events(3).contains(&&PneEvent::Expelled(pn)));
    let (e2, gk2) = h.pnes[0].group_key_of(&pn).expect("PNE 0 holds epoch 3");
    assert_eq!(e2, 3);
    for i in [0, 1] {
        assert!(h.pnes[i].group_key_of(&pn).unwrap().1 == gk2, "PNE {i}");
    }
    let mut rng = MachineRng::from_seed_u64(7);
    let signer = MemberSigningKey::derive(&h.pne_cfgs[0].eukey, "pne-1");
    let sender = certification_key()
        .certify("pne-1", "alice", &signer.public())
        .verify(&certification_key().public())
        .unwrap();
    let binding = |epoch| ContentBinding {
        pn_id: pn.as_bytes(),
        epoch,
        sender: "pne-1",
        content_id: 1,
    };
    let sealed =
        seal_group_content(rng.get(), &gk2, &signer, &binding(3), b"family photo").unwrap();
    for i in [0, 1] {
        let (epoch, gk) = h.pnes[i].group_key_of(&pn).unwrap();
        assert_eq!(
            &open_group_content(&gk, &sender, &binding(epoch), &sealed).unwrap()[..],
            b"family photo"
        );
    }
    // PNE 3 kept nothing; even the keys it once held do not open epoch-3 content, as any
    // epoch.
    assert!(h.pnes[3].group_key_of(&pn).is_none());
    for old in [&gk0, &gk1] {
        for epoch in 1..=3 {
            assert!(open_group_content(old, &sender, &binding(epoch), &sealed).is_err());
        }
    }
    // Nor can it open its former fellow members' copies of epoch 3 with its SK_PNE: every
    // copy the PN GW relayed names its member.
    agree(&h, pn, 3);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

#[test]
fn the_owner_expels_a_member_which_is_told_once_the_change_is_stored() {
    let (mut h, pn) = with_pn();
    expel(&mut h, pn, 1).unwrap();
    assert_eq!(
        removed(&h),
        vec![(
            pne_id(1),
            false,
            Some(2),
            vec![pne_id(0), pne_id(2), pne_id(3)]
        )]
    );
    assert_eq!(members(&h, pn), vec![pne_id(0), pne_id(2), pne_id(3)]);
    agree(&h, pn, 1);
    // 000 §6.6.3.2 step 1, held until the server agreed (step 4) and the PN GW stored the
    // change (step 5): told before, the PNE would forget a PN the server may still list it in.
    let order: Vec<&str> = h.traces.iter().map(|(_, _, t)| t.message).collect();
    let told = order
        .iter()
        .position(|m| *m == "PneExpelNotification")
        .unwrap();
    let agreed = order.iter().position(|m| *m == "PnUpdateResponse").unwrap();
    assert!(agreed < told, "{order:?}");
    assert!(h.pne_events(1).contains(&&PneEvent::Expelled(pn)));
    for i in [0, 2, 3] {
        assert_eq!(updated(&h, i), vec![(2, true)], "PNE {i}");
    }
    assert!(updated(&h, 1).is_empty());
    // Every notification to a member was sealed on its link.
    for i in [0, 2, 3] {
        let t = h.pan_traces(i);
        let n = t
            .iter()
            .find(|t| t.message == "PnUpdateNotification")
            .unwrap();
        assert!(n.sealed);
    }
    // A second expulsion: the PN GW keeps exactly the remaining members' LocalEUKeys, in
    // memory as in its store (it writes the PN from memory).
    expel(&mut h, pn, 2).unwrap();
    let holders: Vec<EntityId> = h.store.gw_local[&pn]
        .wrapped_keys
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(holders, vec![pne_id(0), pne_id(3)]);
}

#[test]
fn a_member_leaves_and_the_others_move_to_the_next_epoch() {
    let (mut h, pn) = with_pn();
    let now = h.now();
    h.pnes[2].leave_pn(now, pn).unwrap();
    h.pump();
    assert!(h.pne_outcomes(2).contains(&&Outcome::PnGone {
        pn_id: pn,
        why: Gone::Left
    }));
    assert_eq!(
        removed(&h),
        vec![(
            pne_id(2),
            true,
            Some(2),
            vec![pne_id(0), pne_id(1), pne_id(3)]
        )]
    );
    agree(&h, pn, 2);
    for i in [0, 1, 3] {
        assert_eq!(updated(&h, i), vec![(2, true)]);
    }
    // The leaver got its answer, not a notification.
    let t = h.pan_traces(2);
    assert!(t.iter().any(|t| t.message == "PneLeaveResponse"));
    assert!(t.iter().all(|t| t.message != "PnUpdateNotification"));
}

#[test]
fn a_leave_on_a_new_link_proves_the_member_first() {
    let (mut h, pn) = with_pn();
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    let now = h.now();
    h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    assert!(
        h.pne_outcomes(1).contains(&&Outcome::PnGone {
            pn_id: pn,
            why: Gone::Left
        }),
        "{:?}",
        h.events
    );
    // No one else proved itself on its new link: no one else is told yet.
    assert_eq!(removed(&h), vec![(pne_id(1), true, Some(2), vec![])]);
}

/// PNE `i` sends a PNE Request (Leave) straight to the PN GW in `pne`'s name; its answer.
fn raw_leave(h: &mut Harness, i: usize, pn: PnId, pne: EntityId) -> ErrorCode {
    h.pump(); // earlier answers delivered: the one found below is this request's
    let env = Envelope::request(
        9_001,
        Address::Entity(pne_id(i)),
        Address::Entity(id("gw-1")),
        PneLeaveRequest {
            request_id: RequestId(5),
            pn_id: pn,
            pne,
        },
    );
    h.deliver_direct(Party::Pne(i), Party::Gw, &plain(&env))
        .unwrap();
    let answer = h
        .queue
        .iter()
        .filter(|f| f.from == Party::Gw && f.to == Party::Pne(i))
        .filter_map(|f| f.env())
        .find(|e| e.in_reply_to == Some(9_001))
        .expect("the PN GW answered");
    answer.error().expect("an error").code
}

#[test]
fn leaves_in_another_name_or_of_a_non_member_are_refused_with_no_change() {
    // A trusted bearer: every link is proven.
    let specs = [
        PneSpec::trusted(),
        PneSpec::trusted(),
        PneSpec::trusted().declining(),
    ];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    let before = h.snapshot();
    // PNE 2, no member, asks to take PNE 0 out (a member asking is an expulsion request,
    // `a_member_asks_its_pn_gw_to_expel_another`).
    assert_eq!(raw_leave(&mut h, 2, pn, pne_id(0)), ErrorCode::Forbidden);
    // PNE 2 declined: it is no member.
    assert_eq!(raw_leave(&mut h, 2, pn, pne_id(2)), ErrorCode::NotFound);
    // An unknown PN.
    assert_eq!(
        raw_leave(&mut h, 1, PnId::from_bytes([9; 16]), pne_id(1)),
        ErrorCode::NotFound
    );
    h.pump();
    assert_eq!(h.snapshot(), before);
    assert!(!h.wan_messages().contains(&"PneLeaveRequest"));
    // The owner expelling a non-member, or from an unknown PN: refused at once.
    let now = h.now();
    assert_eq!(
        h.gw.expel(now, pn, pne_id(2)).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        h.gw.expel(now, PnId::from_bytes([9; 16]), pne_id(1))
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    h.pump();
    assert_eq!(h.snapshot(), before);
}

fn drop_to_server(h: &mut Harness, message: &'static str) {
    h.set_hook(move |f| {
        if f.message == message && f.to == Party::Server {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
}

#[test]
fn a_timeout_keeps_the_member_a_second_change_waits_and_a_retry_finishes() {
    let (mut h, pn) = with_pn();
    drop_to_server(&mut h, "PnUpdateRequest");
    expel(&mut h, pn, 1).unwrap();
    let now = h.now();
    assert_eq!(h.gw.poll_timeout(), Some(now + FLOW));
    // One change per PN at a time: another expulsion, a leave and a release wait their turn.
    assert_eq!(
        h.gw.expel(now, pn, pne_id(2)).unwrap_err().code(),
        ErrorCode::Conflict
    );
    assert_eq!(
        h.gw.release_pn(now, pn).unwrap_err().code(),
        ErrorCode::Conflict
    );
    h.advance(FLOW + Duration::from_millis(1));
    assert_eq!(change_failure(&h), Some(Failure::TimedOut));
    assert_eq!(members(&h, pn).len(), 4);
    assert_eq!(h.store.gw_local[&pn].inventory.members.len(), 4);
    h.clear_hook();
    // PNE 1 was told it is expelled (step 1) and dropped the PN; the retry removes it for good.
    expel(&mut h, pn, 1).unwrap();
    agree(&h, pn, 1);
}

#[test]
fn a_member_the_server_no_longer_has_goes_here_too() {
    let (mut h, pn) = with_pn();
    h.store
        .pns
        .get_mut(&pn)
        .unwrap()
        .members
        .retain(|m| m.pne_id != pne_id(3));
    expel(&mut h, pn, 3).unwrap();
    // Out of the local inventory, with no new epoch: no one is told of one.
    assert_eq!(removed(&h), vec![(pne_id(3), false, None, vec![])]);
    assert!(
        h.store.gw_local[&pn]
            .inventory
            .members
            .iter()
            .all(|m| m.pne_id != pne_id(3))
    );
}

#[test]
fn the_servers_refusal_a_lost_session_and_a_failing_store_keep_the_member() {
    let (mut h, pn) = with_pn();
    h.store.pn_gateway.insert(pn, id("gw-2"));
    let now = h.now();
    h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    assert!(
        matches!(change_failure(&h), Some(Failure::Refused(e)) if e.code == ErrorCode::Forbidden)
    );
    assert!(h.pne_refused(1, ErrorCode::Forbidden));
    assert!(h.pnes[1].holds_local_key(&pn));
    h.store.pn_gateway.insert(pn, id("gw-1"));

    let (mut h, pn) = with_pn();
    drop_to_server(&mut h, "PneLeaveRequest");
    let now = h.now();
    h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    h.gw.wan_closed(now);
    h.pump();
    assert_eq!(change_failure(&h), Some(Failure::WanLost));
    assert!(h.pne_refused(1, ErrorCode::Busy));
    assert_eq!(
        h.gw.expel(now, pn, pne_id(2)).unwrap_err().code(),
        ErrorCode::Busy
    );

    let (mut h, pn) = with_pn();
    h.store.fail_gw = true;
    expel(&mut h, pn, 2).unwrap();
    assert!(matches!(change_failure(&h), Some(Failure::Store(_))));
    // Removed at the server, kept here; no one told of a new epoch.
    assert_eq!(members(&h, pn).len(), 3);
    assert_eq!(h.gw.inventory()[0].members.len(), 4);
    assert!(removed(&h).is_empty());
    assert!(updated(&h, 0).is_empty());
}

/// A PN Update Notification to PNE `i`, claimed to come from `from`.
fn update_note(
    i: usize,
    from: &str,
    inventory: PnInventory,
    epoch: u64,
    key: Option<Vec<u8>>,
) -> Vec<u8> {
    plain(&Envelope::notify(
        9_200,
        Address::Entity(id(from)),
        Address::Entity(pne_id(i)),
        PnUpdateNotification {
            inventory,
            epoch,
            sealed_key: key,
        },
    ))
}

#[test]
fn a_pne_believes_only_its_proven_gateway_and_only_newer_epochs_it_can_open() {
    // A trusted bearer, so forged notifications can be handed over plain.
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    let now = h.now();
    h.gw.expel(now, pn, pne_id(2)).unwrap();
    h.pump();
    let (epoch, gk) = h.pnes[0].group_key_of(&pn).expect("epoch 2");
    assert_eq!(epoch, 2);
    let inv = h.store.pns[&pn].clone();
    // From another entity: ignored.
    h.deliver_direct(
        Party::Gw,
        Party::Pne(0),
        &update_note(0, "gw-2", inv.clone(), 5, None),
    )
    .unwrap();
    // Not newer than the epoch held (a replay): ignored.
    let copy = h
        .log
        .iter()
        .filter(|f| f.to == Party::Pne(1))
        .filter_map(|f| f.env())
        .find_map(|e| match e.body {
            cpns_wire::Body::PnUpdateNotification(n) => n.sealed_key,
            _ => None,
        })
        .expect("PNE 1's copy");
    h.deliver_direct(
        Party::Gw,
        Party::Pne(0),
        &update_note(0, "gw-1", inv.clone(), 2, None),
    )
    .unwrap();
    assert!(h.pnes[0].group_key_of(&pn).unwrap().1 == gk);
    // A newer epoch with another member's copy: the list is taken, the key does not open.
    h.deliver_direct(
        Party::Gw,
        Party::Pne(0),
        &update_note(0, "gw-1", inv.clone(), 3, Some(copy)),
    )
    .unwrap();
    assert_eq!(h.pnes[0].group_key_of(&pn).unwrap().0, epoch);
    assert!(
        h.pne_failures(0)
            .iter()
            .any(|f| matches!(f, Failure::GroupKeyDidNotOpen(_)))
    );
    assert_eq!(
        updated(&h, 0).last(),
        Some(&(3, false)),
        "a copy that did not open"
    );
    // A newer epoch with no copy for this PNE: the list is taken, no key is claimed.
    h.deliver_direct(
        Party::Gw,
        Party::Pne(0),
        &update_note(0, "gw-1", inv.clone(), 4, None),
    )
    .unwrap();
    assert_eq!(updated(&h, 0).last(), Some(&(4, false)));
    assert_eq!(h.pnes[0].group_key_of(&pn).unwrap().0, epoch);
    assert!(h.pne_failed_flows(0).iter().any(|e| matches!(
        e,
        PneEvent::FlowFailed {
            flow: Flow::MembershipChange,
            ..
        }
    )));
    // An update leaving PNE 0 out is no way to expel it.
    let mut without = inv.clone();
    without.members.retain(|m| m.pne_id != pne_id(0));
    h.deliver_direct(
        Party::Gw,
        Party::Pne(0),
        &update_note(0, "gw-1", without, 9, None),
    )
    .unwrap();
    assert!(h.pnes[0].inventory().iter().any(|i| i.pn_id == pn));
    assert!(
        h.pnes[0].inventory()[0]
            .members
            .iter()
            .any(|m| m.pne_id == pne_id(0))
    );
}

fn joined_events(h: &Harness) -> Vec<(EntityId, Option<u64>, Vec<EntityId>)> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::MemberJoined {
                pne,
                epoch,
                notified,
                ..
            } => Some((pne.clone(), *epoch, notified.clone())),
            _ => None,
        })
        .collect()
}

/// 000 §6.6.2.2: a PNE that declined the PN joins it by registering in it; everyone moves to
/// the next epoch, the joiner with its key from the server's sealed grant, the others by PN
/// Update Notification; a retried join adds it once. On an insecure PAN the joiner's
/// registration brings it a LocalEUKey and its link is sealed before it answers the challenge
/// (docs/security.md §4.2); on a trusted bearer it needs none.
#[test]
fn a_pne_joins_and_every_member_shares_the_new_epochs_key() {
    for joiner in [PneSpec::cpns().no_ui(), PneSpec::trusted()] {
        joins_and_shares_the_new_epochs_key(joiner);
    }
}

fn joins_and_shares_the_new_epochs_key(joiner: PneSpec) {
    let specs = [
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns(),
        joiner.declining(),
    ];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(members(&h, pn).len(), 3);
    h.register(3, Some(pn));
    assert_eq!(members(&h, pn).len(), 4, "{:?}", h.events);
    assert_eq!(
        joined_events(&h),
        vec![(pne_id(3), Some(2), vec![pne_id(0), pne_id(1), pne_id(2)])]
    );
    let (_, gk) = &h.store.epochs[&pn];
    for i in 0..4 {
        let (epoch, key) = h.pnes[i].group_key_of(&pn).expect("holds epoch 2");
        assert_eq!(epoch, 2, "PNE {i}");
        assert!(&key == gk, "PNE {i}");
    }
    assert!(h.pne_events(3).iter().any(|e| matches!(
        e,
        PneEvent::PnJoined {
            initiator: false,
            ..
        }
    )));
    // The joiner keeps the PN with its keys; the others keep the new member list.
    for i in 0..4 {
        let held = &h.store.pne_local[i][&pn];
        assert_eq!(held.inventory.members, h.store.pns[&pn].members, "PNE {i}");
    }
    assert_eq!(
        h.store.gw_local[&pn].inventory.members,
        h.store.pns[&pn].members
    );
    if joiner.security == PanSecurity::Cpns {
        // Sealed from its answer to the server's challenge on, with the key stored at both ends.
        h.assert_sealed_member(pn, 3);
    } else {
        // The other members' copies went to them, not to the joiner.
        let answer = h
            .delivered(Party::Gw, Party::Pne(3))
            .into_iter()
            .find_map(|e| match e.body {
                cpns_wire::Body::PneRegistrationResponse(r) => Some(r),
                _ => None,
            })
            .expect("the registration answer");
        assert_eq!(answer.epoch, Some(2));
        assert!(answer.keys.is_empty());
    }
    let from_server = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find_map(|e| match e.body {
            cpns_wire::Body::PneRegistrationResponse(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let holders: Vec<EntityId> = from_server.keys.iter().map(|k| k.pne_id.clone()).collect();
    assert_eq!(holders, vec![pne_id(0), pne_id(1), pne_id(2)]);
    // A retried join: the kept answer, no second member, no new epoch.
    let request = h
        .log
        .iter()
        .rev()
        .find(|f| f.to == Party::Server && f.message == "PneRegistrationRequest")
        .map(|f| f.body.clone())
        .unwrap();
    h.inject(Party::Gw, Party::Server, request);
    h.pump();
    assert_eq!(h.store.effects.get("register_pne"), Some(&1));
    assert_eq!(h.store.epochs[&pn].0, 2);
    assert_eq!(members(&h, pn).len(), 4);
    assert_eq!(joined_events(&h).len(), 1);
    // The next epoch's update reaches the joiner too.
    expel(&mut h, pn, 1).unwrap();
    let (epoch, key) = h.pnes[3].group_key_of(&pn).expect("epoch 3");
    assert_eq!(epoch, 3);
    assert!(key == h.store.epochs[&pn].1);
    assert_eq!(h.pnes[3].inventory()[0].members, h.store.pns[&pn].members);
}

/// Two PNEs that happen to choose the same request id each leave: the PN GW asks the server
/// under its own request ids, so one's kept answer is never replayed for the other.
#[test]
fn leaves_with_the_same_pne_request_id_are_two_leaves() {
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    raw_leave_ok(&mut h, 1, pn);
    raw_leave_ok(&mut h, 2, pn);
    assert_eq!(members(&h, pn), vec![pne_id(0)]);
    assert_eq!(h.store.epochs[&pn].0, 3);
}

/// PNE `i` asks to leave with request id 5; the PN GW's answer must not be an error.
fn raw_leave_ok(h: &mut Harness, i: usize, pn: PnId) {
    h.pump();
    let env = Envelope::request(
        9_001,
        Address::Entity(pne_id(i)),
        Address::Entity(id("gw-1")),
        PneLeaveRequest {
            request_id: RequestId(5),
            pn_id: pn,
            pne: pne_id(i),
        },
    );
    h.deliver_direct(Party::Pne(i), Party::Gw, &plain(&env))
        .unwrap();
    h.pump();
    let answer = h
        .delivered(Party::Gw, Party::Pne(i))
        .into_iter()
        .find(|e| e.in_reply_to == Some(9_001))
        .expect("answered");
    assert!(answer.error().is_none(), "{answer:?}");
}

/// A member that registers in its PN gets a new SK_PNE at the server; it keeps that one, so it
/// opens the copies sealed under it afterwards.
#[test]
fn a_member_that_registered_opens_later_copies_under_its_new_sk_pne() {
    let (mut h, pn) = with_pn();
    let before = h.pnes[1].session_key_of(&pn).unwrap();
    h.register(1, Some(pn));
    let after = h.pnes[1].session_key_of(&pn).unwrap();
    assert!(
        before != after,
        "the registration's SK_PNE replaced the establishment's"
    );
    assert!(h.store.session_keys[&(pn, pne_id(1))] == after);
    expel(&mut h, pn, 3).unwrap();
    assert_eq!(h.pnes[1].group_key_of(&pn).map(|(e, _)| e), Some(2));
}

/// A PNE whose store fails to keep an update says so.
#[test]
fn a_pne_whose_store_fails_on_an_update_says_so() {
    let (mut h, pn) = with_pn();
    h.store.fail_pne = true;
    expel(&mut h, pn, 3).unwrap();
    for i in 0..3 {
        assert!(
            h.pne_failed_flows(i).iter().any(|e| matches!(
                e,
                PneEvent::FlowFailed {
                    flow: Flow::MembershipChange,
                    reason: Failure::Store(_),
                }
            )),
            "PNE {i}"
        );
    }
}

/// A PNE's own leave and release wait twice the flow timeout for their PN GW, then fail; a
/// second one for the same PN is refused while one waits.
#[test]
fn a_pnes_leave_and_release_time_out_when_the_gateway_is_silent() {
    let (mut h, pn) = with_pn();
    h.set_hook(|f| {
        if f.from == Party::Gw && matches!(f.to, Party::Pne(_)) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    // The server never answers either, so nothing changes while the PNEs wait.
    drop_both(&mut h);
    let now = h.now();
    h.pnes[1].leave_pn(now, pn).unwrap();
    assert!(h.pnes[1].leave_pn(now, pn).is_err(), "already leaving");
    h.pnes[2].release_pn(now, pn).unwrap();
    h.pump();
    h.advance(FLOW * 2 - Duration::from_millis(1));
    assert!(h.pne_failures(1).is_empty() && h.pne_failures(2).is_empty());
    h.advance(Duration::from_millis(2));
    assert_eq!(h.pne_failures(1), vec![Failure::TimedOut]);
    assert_eq!(h.pne_failures(2), vec![Failure::TimedOut]);
    assert!(h.pne_failed_flows(1).iter().any(|e| matches!(
        e,
        PneEvent::FlowFailed {
            flow: Flow::MembershipChange,
            ..
        }
    )));
}

/// Drops everything the PN GW sends, to the PNEs and to the server.
fn drop_both(h: &mut Harness) {
    h.set_hook(|f| {
        if f.from == Party::Gw {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
}

/// A PN of PNEs 0-2 on an insecure PAN; PNE 3 (with `spec`) is connected and no member.
fn with_pn_and_outsider(outsider: PneSpec) -> (Harness, PnId) {
    let specs = [PneSpec::cpns(), PneSpec::cpns(), PneSpec::cpns(), outsider];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::Invite(vec![pne_id(1), pne_id(2)]));
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(members(&h, pn).len(), 3);
    (h, pn)
}

/// The invitations that ended without their invitee joining: a member's, told as events, and
/// the owner's, whose commands `owner` are (the invitee of each, by command).
fn invite_ended(h: &Harness) -> Vec<(EntityId, Option<Failure>)> {
    invite_ended_of(h, &h.owner_invites)
}

/// The PN GW's owner invites `pne` into `pn`; the command is kept for [`invite_ended`].
fn owner_invite(h: &mut Harness, pn: PnId, pne: EntityId) {
    let now = h.now();
    let id = h.gw.invite(now, pn, pne.clone()).unwrap();
    h.owner_invites.push((id, pne));
}

fn invite_ended_of(
    h: &Harness,
    owner: &[(crate::CommandId, EntityId)],
) -> Vec<(EntityId, Option<Failure>)> {
    h.gw_events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::InviteEnded {
                invitee, reason, ..
            } => Some((invitee.clone(), reason.clone())),
            GatewayEvent::Completed(c) => {
                let (_, invitee) = owner.iter().find(|(id, _)| *id == c.id)?;
                match &c.result {
                    Ok(crate::gateway::Outcome::Invited { joined: false, .. }) => {
                        Some((invitee.clone(), None))
                    }
                    Err(f) => Some((invitee.clone(), Some(f.clone()))),
                    Ok(_) => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// 000 §6.6.2.1.1: the PN GW invites PNE 3, which accepts and joins: the server authenticates
/// it, every member moves to the next epoch and is told.
#[test]
fn the_pn_gw_invites_a_pne_which_joins() {
    let (mut h, pn) = with_pn_and_outsider(PneSpec::cpns());
    let now = h.now();
    owner_invite(&mut h, pn, pne_id(3));
    h.pump();
    assert_eq!(members(&h, pn).len(), 4, "{:?}", h.events);
    assert_eq!(
        joined_events(&h),
        vec![(pne_id(3), Some(2), vec![pne_id(0), pne_id(1), pne_id(2)])]
    );
    assert!(invite_ended(&h).is_empty());
    let (_, gk) = &h.store.epochs[&pn];
    for i in 0..4 {
        assert!(&h.pnes[i].group_key_of(&pn).unwrap().1 == gk, "PNE {i}");
    }
    assert_eq!(h.gw.flows_in_progress(), 0);
    // Inviting it again: a member already, nothing sent.
    let sent = h.log.len();
    assert_eq!(
        h.gw.invite(now, pn, pne_id(3)).unwrap_err().code(),
        ErrorCode::Conflict
    );
    h.pump();
    assert_eq!(h.log.len(), sent);
}

#[test]
fn an_invitee_that_declines_changes_nothing() {
    let (mut h, pn) = with_pn_and_outsider(PneSpec::cpns().declining());
    let before = h.snapshot();
    owner_invite(&mut h, pn, pne_id(3));
    h.pump();
    assert_eq!(invite_ended(&h), vec![(pne_id(3), None)]);
    assert!(h.pne_events(3).contains(&&PneEvent::InvitationDeclined(pn)));
    assert_eq!(h.snapshot(), before);
    assert_eq!(h.gw.flows_in_progress(), 0);
}

/// 000 §6.6.2.1.2: member PNE 1 asks its PN GW to invite PNE 3; it is answered once PNE 3
/// joined, and every member is told.
#[test]
fn a_member_invites_a_pne_and_is_answered_once_it_joined() {
    let (mut h, pn) = with_pn_and_outsider(PneSpec::cpns());
    let now = h.now();
    h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap();
    h.pump();
    assert!(h.pne_outcomes(1).contains(&&Outcome::InviteAnswered {
        pn_id: pn,
        accepted: true
    }));
    assert_eq!(members(&h, pn).len(), 4);
    for i in [0, 1, 2] {
        assert_eq!(updated(&h, i), vec![(2, true)], "PNE {i}");
    }
    // The same invitation again: a member already, refused at once with nothing sent.
    let sent = h.log.len();
    assert_eq!(
        h.pnes[1].invite_pne(now, pn, pne_id(3)),
        Err(crate::CommandError::AlreadyMember {
            pn_id: pn,
            pne: pne_id(3)
        })
    );
    h.pump();
    assert_eq!(h.log.len(), sent);
}

#[test]
fn a_member_is_told_when_its_invitee_declines() {
    let (mut h, pn) = with_pn_and_outsider(PneSpec::cpns().declining());
    let now = h.now();
    h.pnes[2].invite_pne(now, pn, pne_id(3)).unwrap();
    h.pump();
    assert!(h.pne_outcomes(2).contains(&&Outcome::InviteAnswered {
        pn_id: pn,
        accepted: false
    }));
    assert_eq!(members(&h, pn).len(), 3);
}

#[test]
fn invitations_that_may_not_be_are_refused_at_once() {
    let (mut h, pn) = with_pn_and_outsider(PneSpec::cpns());
    let now = h.now();
    let unknown = PnId::from_bytes([9; 16]);
    assert_eq!(
        h.gw.invite(now, unknown, pne_id(3)).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        h.gw.invite(now, pn, id("pne-9")).unwrap_err().code(),
        ErrorCode::NotFound
    );
    // The invitee never answers: a second invitation waits; the first times out.
    h.set_hook(|f| {
        if f.from == Party::Pne(3) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    owner_invite(&mut h, pn, pne_id(3));
    assert_eq!(
        h.gw.invite(now, pn, pne_id(3)).unwrap_err().code(),
        ErrorCode::Conflict
    );
    h.pump();
    let deadline = h.gw.poll_timeout().unwrap();
    h.advance(deadline - h.now());
    assert_eq!(invite_ended(&h), vec![(pne_id(3), Some(Failure::TimedOut))]);
    assert_eq!(h.gw.flows_in_progress(), 0);
    assert_eq!(members(&h, pn).len(), 3);
    // A PNE that is no member may not invite (on a trusted bearer, where it is proven).
    let specs = [
        PneSpec::trusted(),
        PneSpec::trusted(),
        PneSpec::trusted().declining(),
    ];
    let mut t = Harness::ready(&specs);
    t.setup(0, SetupType::All);
    let tpn = t.joined(0).unwrap().pn_id;
    let env = Envelope::request(
        9_300,
        Address::Entity(pne_id(2)),
        Address::Entity(id("gw-1")),
        cpns_wire::PneInviteRequest {
            request_id: RequestId(1),
            pn_id: tpn,
            invitee: Some(pne_id(2)),
        },
    );
    t.deliver_direct(Party::Pne(2), Party::Gw, &plain(&env))
        .unwrap();
    let answer = t
        .queue
        .iter()
        .filter_map(|f| f.env())
        .find(|e| e.in_reply_to == Some(9_300))
        .unwrap();
    assert_eq!(answer.error().unwrap().code, ErrorCode::Forbidden);
}

/// PNEs 0-2 in a PN; PNE 3 accepts invitations; PNE 4 never answers anything (its frames are
/// dropped).
fn with_two_outsiders() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::cpns(); 5]);
    h.setup(0, SetupType::Invite(vec![pne_id(1), pne_id(2)]));
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| {
        if f.from == Party::Pne(4) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    (h, pn)
}

/// Two invitations into one PN run side by side; one invitee joining ends its own only; an
/// invitation waits for the invitee's answer and its join, then times out.
#[test]
fn invitations_run_side_by_side_and_end_one_by_one() {
    let (mut h, pn) = with_two_outsiders();
    let now = h.now();
    owner_invite(&mut h, pn, pne_id(4));
    assert_eq!(h.gw.poll_timeout(), Some(now + INVITE + FLOW * 2));
    owner_invite(&mut h, pn, pne_id(3));
    h.pump();
    assert_eq!(members(&h, pn).len(), 4, "PNE 3 joined");
    assert!(invite_ended(&h).is_empty());
    assert_eq!(
        h.gw.flows_in_progress(),
        1,
        "PNE 4's invitation still waits"
    );
    h.advance(INVITE + FLOW * 2 - Duration::from_millis(1));
    assert!(invite_ended(&h).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(invite_ended(&h), vec![(pne_id(4), Some(Failure::TimedOut))]);
}

/// The message id of the latest invitation sent to PNE `i`, delivered or dropped.
fn last_invitation_to(h: &Harness, i: usize) -> u64 {
    h.log
        .iter()
        .chain(h.dropped.iter())
        .filter(|f| f.to == Party::Pne(i))
        .filter_map(|f| f.env())
        .filter(|e| matches!(e.body, cpns_wire::Body::PneInviteRequest(_)))
        .map(|e| e.msg_id)
        .max()
        .expect("an invitation went to the PNE")
}

/// The invitee's link closes, or it answers with an error: its invitation ends, the others
/// stay; an answer from another link, or accepting another PN, is no acceptance.
#[test]
fn an_invitation_ends_with_its_invitees_link_or_error_only() {
    let (mut h, pn) = with_two_outsiders();
    let now = h.now();
    owner_invite(&mut h, pn, pne_id(4));
    h.pump();
    let invite_msg = last_invitation_to(&h, 4);
    let answer_from = |i: usize, reply_to: u64, accepted: bool, pn_id: PnId| {
        plain(&Envelope::response(
            8_000,
            reply_to,
            Address::Entity(pne_id(i)),
            Address::Entity(id("gw-1")),
            cpns_wire::PneInviteResponse { pn_id, accepted },
        ))
    };
    let answer = |accepted: bool, pn_id: PnId| answer_from(4, invite_msg, accepted, pn_id);
    // PNE 3, on its own link, answers PNE 4's invitation, accepting or with an error; PNE 4
    // answers a message that was not the invitation: none of them is an answer to it.
    h.deliver_direct(
        Party::Pne(3),
        Party::Gw,
        &answer_from(3, invite_msg, true, pn),
    )
    .unwrap();
    let foreign_error = plain(&Envelope::response(
        8_002,
        invite_msg,
        Address::Entity(pne_id(3)),
        Address::Entity(id("gw-1")),
        cpns_wire::ErrorBody::new(ErrorCode::Conflict, "not mine"),
    ));
    h.deliver_direct(Party::Pne(3), Party::Gw, &foreign_error)
        .unwrap();
    h.deliver_direct(
        Party::Pne(4),
        Party::Gw,
        &answer_from(4, invite_msg + 1_000, false, pn),
    )
    .unwrap();
    assert!(invite_ended(&h).is_empty());
    assert_eq!(h.gw.flows_in_progress(), 1);
    // PNE 4 accepts another PN: no acceptance of this one; the invitation ends.
    h.deliver_direct(
        Party::Pne(4),
        Party::Gw,
        &answer(true, PnId::from_bytes([9; 16])),
    )
    .unwrap();
    assert_eq!(invite_ended(&h), vec![(pne_id(4), None)]);
    // Again, and this time PNE 4 answers with an error.
    owner_invite(&mut h, pn, pne_id(4));
    h.pump();
    let invite_msg = last_invitation_to(&h, 4);
    let error = plain(&Envelope::response(
        8_001,
        invite_msg,
        Address::Entity(pne_id(4)),
        Address::Entity(id("gw-1")),
        cpns_wire::ErrorBody::new(ErrorCode::Conflict, "busy elsewhere"),
    ));
    h.deliver_direct(Party::Pne(4), Party::Gw, &error).unwrap();
    assert!(matches!(
        invite_ended(&h).last(),
        Some((p, Some(Failure::Refused(e)))) if *p == pne_id(4) && e.code == ErrorCode::Conflict
    ));
    // A third time; PNE 3 is invited too; PNE 4's link closes: only its invitation ends.
    owner_invite(&mut h, pn, pne_id(4));
    owner_invite(&mut h, pn, pne_id(3));
    h.set_hook(|f| {
        if f.from == Party::Pne(4) || f.from == Party::Pne(3) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    h.pump();
    h.gw.link_closed(now, crate::gateway::LinkId(4));
    h.pump();
    assert!(matches!(
        invite_ended(&h).last(),
        Some((p, Some(Failure::Refused(e)))) if *p == pne_id(4) && e.code == ErrorCode::NotFound
    ));
    assert_eq!(
        h.gw.flows_in_progress(),
        1,
        "PNE 3's invitation still waits"
    );
}

/// A member's invitations count against its link's flow limit; its own wait ends at its
/// deadline.
#[test]
fn a_members_invitations_are_bounded_and_time_out() {
    let limits = crate::gateway::GatewayLimits {
        flows: 16,
        flows_per_link: 1,
        ..crate::gateway::GatewayLimits::default()
    };
    let mut h = Harness::with_limits(&[PneSpec::cpns(); 5], limits);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let pn = h.joined(0).unwrap().pn_id;
    h.set_hook(|f| {
        if f.from == Party::Pne(4) || f.from == Party::Pne(3) {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[1].invite_pne(now, pn, pne_id(4)).unwrap();
    h.pump();
    h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap();
    h.pump();
    assert!(h.pne_refused(1, ErrorCode::Busy), "{:?}", h.pne_events(1));
    // The PN GW's invitation of PNE 4 ends first, and answers the member with a timeout.
    h.advance(INVITE + FLOW * 2);
    assert!(h.pne_refused(1, ErrorCode::Timeout));
}

/// The PNE's own wait for an invitation it asked for ends at its deadline when its PN GW
/// never answers.
#[test]
fn a_members_invitation_times_out_when_its_gateway_is_silent() {
    let (mut h, pn) = with_pn_and_outsider(PneSpec::cpns());
    drop_both(&mut h);
    let now = h.now();
    h.pnes[1].invite_pne(now, pn, pne_id(3)).unwrap();
    h.pump();
    h.advance(INVITE + FLOW * 3 - Duration::from_millis(1));
    assert!(h.pne_failures(1).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.pne_failures(1), vec![Failure::TimedOut]);
}

/// The PN GW keeps the server's member list after a change, not its own.
#[test]
fn the_pn_gw_keeps_the_servers_member_list() {
    let (mut h, pn) = with_pn();
    // The server records other capabilities for PNE 2 than the PN GW holds.
    let caps = Some(cpns_wire::DeviceCapabilities {
        device_type: "tv".into(),
        ..Default::default()
    });
    h.store.pns.get_mut(&pn).unwrap().members[2].capabilities = caps.clone();
    expel(&mut h, pn, 1).unwrap();
    assert_eq!(h.store.gw_local[&pn].inventory, h.store.pns[&pn]);
    assert_eq!(
        h.store.gw_local[&pn].inventory.members[1].capabilities,
        caps
    );
}

/// 002 §B.1.1.3 steps 22-24: the establishment gives the PN its first group key; the
/// initiator (by PN Setup Response) and every other member (by PN Establishment Notify) hold
/// the server's epoch-1 key; a PNE left out holds none.
#[test]
fn the_establishment_gives_every_member_the_first_epochs_key() {
    let mut h = Harness::ready(&[
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::trusted(),
        PneSpec::cpns().declining(),
    ]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    let (epoch, gk) = &h.store.epochs[&pn];
    assert_eq!(*epoch, 1);
    for i in 0..3 {
        let (e, k) = h.pnes[i].group_key_of(&pn).expect("a member holds epoch 1");
        assert_eq!(e, 1, "PNE {i}");
        assert!(&k == gk, "PNE {i}");
        assert!(
            h.store.pne_local[i][&pn]
                .own
                .as_ref()
                .unwrap()
                .group
                .is_some()
        );
    }
    assert!(h.pnes[3].group_key_of(&pn).is_none());
    // The PN GW relayed copies it keeps none of.
    assert!(h.store.gw_local[&pn].own.is_none());
    assert!(h.pne_failures(0).is_empty());
}

/// 002 §B.1.1.3 steps 22-23: a member that was away during a change asks the server, through
/// its PN GW, for its copy of the current key; a non-member asking is refused.
#[test]
fn a_member_that_missed_an_epoch_pulls_its_key() {
    let (mut h, pn) = with_pn();
    // PNE 3 is away while PNE 2 is expelled: it still holds epoch 1.
    let now = h.now();
    h.gw.link_closed(now, crate::gateway::LinkId(3));
    expel(&mut h, pn, 2).unwrap();
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 1);
    assert_eq!(h.pnes[0].group_key_of(&pn).unwrap().0, 2);
    // Back on new links, PNE 3 asks.
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    let now = h.now();
    h.pnes[3].request_group_key(now, pn).unwrap();
    h.pump();
    let (epoch, key) = h.pnes[3].group_key_of(&pn).expect("epoch 2");
    assert_eq!(epoch, 2);
    assert!(key == h.store.epochs[&pn].1);
    assert_eq!(
        h.store.pne_local[3][&pn].inventory.members,
        h.store.pns[&pn].members
    );
    assert_eq!(updated(&h, 3).last(), Some(&(2, true)));
    // Asking again changes nothing: not a newer epoch.
    h.pnes[3].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(updated(&h, 3).len(), 1);
    // PNE 2, expelled while its link was up (told, so its key went), is no member: it cannot
    // even ask; a pull forged in its name on a link that proved nothing is refused by the PN GW
    // and never reaches the server.
    assert!(h.pnes[2].request_group_key(now, pn).is_err());
    assert_eq!(h.gw.departed_count(), 0);
    let to_server = h.wan_messages().len();
    let env = Envelope::request(
        9_400,
        Address::Entity(pne_id(2)),
        Address::Server,
        cpns_wire::GroupKeyRequest {
            request_id: RequestId(3),
            pn_id: pn,
        },
    );
    h.deliver_direct(Party::Pne(2), Party::Gw, &plain(&env))
        .unwrap();
    h.pump();
    assert_eq!(h.wan_messages().len(), to_server);
    let refusal = h
        .delivered(Party::Gw, Party::Pne(2))
        .into_iter()
        .rev()
        .find_map(|e| match e.body {
            cpns_wire::Body::ErrorBody(b) if e.in_reply_to == Some(9_400) => Some(b),
            _ => None,
        })
        .expect("refused");
    assert_eq!(refusal.code, ErrorCode::Forbidden);
}

/// A key answer whose copy does not open is not taken.
#[test]
fn a_pulled_key_that_does_not_open_is_not_taken() {
    let (mut h, pn) = with_pn();
    let now = h.now();
    h.gw.link_closed(now, crate::gateway::LinkId(3));
    expel(&mut h, pn, 2).unwrap();
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    // The server's answer to PNE 3 is tampered with on its way.
    let now = h.now();
    h.set_hook(|f| match f.env() {
        Some(e) if matches!(e.body, cpns_wire::Body::GroupKeyResponse(_)) && f.to == Party::Gw => {
            Action::Replace(super::harness::rewrite(&f.body, |env| {
                if let cpns_wire::Body::GroupKeyResponse(r) = &mut env.body {
                    r.sealed_key[20] ^= 1;
                }
            }))
        }
        _ => Action::Deliver,
    });
    h.pnes[3].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(h.pnes[3].group_key_of(&pn).unwrap().0, 1);
    assert!(
        h.pne_failures(3)
            .iter()
            .any(|f| matches!(f, Failure::GroupKeyDidNotOpen(_)))
    );
}

/// A pull the server never answers fails at twice the flow timeout, not before, and the PNE
/// says it may be kept behind.
#[test]
fn a_pull_with_no_answer_times_out() {
    let (mut h, pn) = with_pn();
    drop_both(&mut h);
    let now = h.now();
    h.pnes[1].request_group_key(now, pn).unwrap();
    h.pump();
    h.advance(FLOW * 2 - Duration::from_millis(1));
    assert!(h.pne_failures(1).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.pne_failures(1),
        vec![Failure::KeptBehind {
            pn_id: pn,
            why: "its key pull got no answer in time".into()
        }]
    );
}

/// A relay that keeps a member behind: it drops the PN Update Notification of a new epoch and
/// answers the member's pull with the answer to an earlier pull, recorded. The answer names
/// another pull and its copy opens for that pull only: the PNE takes nothing and says it may
/// be kept behind; the server's own answer is taken.
#[test]
fn a_replayed_older_pull_answer_is_refused_and_the_pne_says_it_is_kept_behind() {
    // On a trusted bearer (frames plain), so the relay can drop one and rewrite another.
    let (mut h, pn) = three_members();
    // An answer at epoch 1, recorded on the WAN.
    let now = h.now();
    h.pnes[2].request_group_key(now, pn).unwrap();
    h.pump();
    let recorded = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .rev()
        .find_map(|e| match e.body {
            cpns_wire::Body::GroupKeyResponse(r) if e.to == Address::Entity(pne_id(2)) => Some(r),
            _ => None,
        })
        .expect("a recorded answer");
    assert_eq!(recorded.epoch, 1);
    // Epoch 2; PNE 2's notification is dropped.
    h.set_hook(|f| {
        if f.to == Party::Pne(2) && f.message == "PnUpdateNotification" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    expel(&mut h, pn, 1).unwrap();
    assert_eq!(h.pnes[2].group_key_of(&pn).unwrap().0, 1);
    // Its next pull is answered with the recorded answer, as is and with the request id of
    // this pull written in.
    for rewrite_id in [false, true] {
        let old = recorded.clone();
        h.set_hook(move |f| match f.env() {
            Some(e)
                if f.to == Party::Gw && matches!(e.body, cpns_wire::Body::GroupKeyResponse(_)) =>
            {
                let old = old.clone();
                Action::Replace(super::harness::rewrite(&f.body, move |env| {
                    if let cpns_wire::Body::GroupKeyResponse(r) = &mut env.body {
                        let request_id = r.request_id;
                        *r = old.clone();
                        if rewrite_id {
                            r.request_id = request_id;
                        }
                    }
                }))
            }
            _ => Action::Deliver,
        });
        let now = h.now();
        let pull = h.pnes[2].request_group_key(now, pn).unwrap();
        h.pump();
        assert_eq!(h.pnes[2].group_key_of(&pn).unwrap().0, 1, "{rewrite_id}");
        match h.completion(2, pull).map(|c| &c.result) {
            Some(Err(Failure::KeptBehind { pn_id, .. })) => assert_eq!(*pn_id, pn),
            other => panic!("{rewrite_id}: {other:?}"),
        }
    }
    // The server's own answer is taken.
    h.clear_hook();
    let now = h.now();
    h.pnes[2].request_group_key(now, pn).unwrap();
    h.pump();
    assert_eq!(h.pnes[2].group_key_of(&pn).unwrap().0, 2);
}

/// Three members on a trusted bearer (every link proven), all alice's.
fn three_members() -> (Harness, PnId) {
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    assert_eq!(members(&h, pn).len(), 3);
    (h, pn)
}

/// 004 §5.5.10: a member of the PN GW's user asks it to expel another member. The server
/// agrees, the PN moves to epoch 2, the expelled PNE is told and forgets the PN, the asker is
/// answered, and the remaining members hold the new key.
#[test]
fn a_member_asks_its_pn_gw_to_expel_another() {
    let (mut h, pn) = three_members();
    let now = h.now();
    h.pnes[1].expel_pne(now, pn, pne_id(2)).unwrap();
    h.pump();
    assert!(h.pne_outcomes(1).contains(&&Outcome::MemberExpelled {
        pn_id: pn,
        pne: pne_id(2)
    }));
    assert!(h.pne_events(2).contains(&&PneEvent::Expelled(pn)));
    assert!(h.pnes[2].inventory().is_empty());
    assert_eq!(members(&h, pn), [pne_id(0), pne_id(1)]);
    assert_eq!(
        removed(&h),
        [(pne_id(2), false, Some(2), vec![pne_id(0), pne_id(1)])]
    );
    for i in [0, 1] {
        assert_eq!(updated(&h, i).last(), Some(&(2, true)), "PNE {i}");
        assert!(h.pnes[i].group_key_of(&pn).unwrap().1 == h.store.epochs[&pn].1);
    }
    // The server was told who asked.
    let asked = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .find_map(|e| match e.body {
            cpns_wire::Body::PnUpdateRequest(r) => Some(r.asked_by),
            _ => None,
        });
    assert_eq!(asked, Some(Some(pne_id(1))));
}

/// A member of another user (in the PN, but not of the PN GW's user) may not expel anyone:
/// the server refuses, nothing changes and the target is told nothing. A PNE does not expel
/// itself, a non-member, or from a PN it is not in.
#[test]
fn only_a_member_of_the_pn_gws_user_may_ask_to_expel() {
    let (mut h, pn) = three_members();
    h.store.entities.get_mut(&pne_id(1)).unwrap().owner =
        cpns_wire::UserId::new("mallory").unwrap();
    let before = h.snapshot();
    let now = h.now();
    h.pnes[1].expel_pne(now, pn, pne_id(2)).unwrap();
    h.pump();
    assert!(matches!(
        change_failure(&h),
        Some(Failure::Refused(e)) if e.code == ErrorCode::Forbidden
    ));
    assert_eq!(h.snapshot(), before);
    assert!(!h.pne_events(2).contains(&&PneEvent::Expelled(pn)));
    assert!(removed(&h).is_empty());
    assert!(h.pnes[0].expel_pne(now, pn, pne_id(0)).is_err());
    assert!(
        h.pnes[0]
            .expel_pne(now, pn, EntityId::new("stranger").unwrap())
            .is_err()
    );
    assert!(
        h.pnes[0]
            .expel_pne(now, PnId::from_bytes([9; 16]), pne_id(1))
            .is_err()
    );
}

/// An expulsion request the PN GW never gets fails at the PNE's deadline; one the server
/// never answers fails at the PN GW's, which tells the PNE.
#[test]
fn an_unanswered_expulsion_request_times_out() {
    let (mut h, pn) = three_members();
    h.set_hook(|f| {
        if f.message == "PnUpdateRequest" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[1].expel_pne(now, pn, pne_id(2)).unwrap();
    h.pump();
    h.advance(FLOW + Duration::from_secs(1));
    assert!(
        h.pne_failures(1)
            .iter()
            .any(|f| matches!(f, Failure::Refused(e) if e.code == ErrorCode::Timeout))
    );
    h.set_hook(|f| {
        if f.from == Party::Pne(1) && f.message == "PneLeaveRequest" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    let now = h.now();
    h.pnes[1].expel_pne(now, pn, pne_id(2)).unwrap();
    h.pump();
    h.advance(FLOW);
    assert!(!h.pne_failures(1).contains(&Failure::TimedOut));
    h.advance(FLOW + Duration::from_secs(1));
    assert!(h.pne_failures(1).contains(&Failure::TimedOut));
    assert_eq!(members(&h, pn).len(), 3);
}

/// A PN is a PN GW with at least one authenticated PNE (000 §6.6.1.1 step 12): the change that
/// takes its last member out releases it, at the server and at its PN GW, in the same step
/// (docs/pn-lifecycle.md, "A PN without members"). Here three members leave and the owner
/// expels the last one.
#[test]
fn the_change_that_takes_the_last_member_out_releases_the_pn() {
    let (mut h, pn) = with_pn();
    for i in [1, 2, 3] {
        let now = h.now();
        h.pnes[i].leave_pn(now, pn).unwrap();
        h.pump();
        assert!(h.store.pns.contains_key(&pn), "members are left after {i}");
    }
    assert!(
        !h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::PnEmptied { .. }))
    );
    expel(&mut h, pn, 0).unwrap();
    // Gone everywhere: the server's inventory, the PN GW's memory and store, the last member.
    assert!(!h.store.pns.contains_key(&pn));
    assert!(!h.store.gw_local.contains_key(&pn));
    assert!(h.gw.inventory().iter().all(|i| i.pn_id != pn));
    assert!(!h.store.pne_local[0].contains_key(&pn));
    assert!(
        h.gw_events()
            .contains(&&GatewayEvent::PnEmptied { pn_id: pn })
    );
    assert!(h.server_events().iter().any(|e| matches!(
        e,
        crate::server::ServerEvent::PnReleased { pn_id, .. } if *pn_id == pn
    )));
    // A release asked for afterwards finds no PN.
    let now = h.now();
    assert!(h.gw.release_pn(now, pn).is_err());
}

/// The only member of a 1-1 PN leaves: the PN goes with it, and the member is answered as for
/// any leave.
#[test]
fn the_only_member_leaving_releases_the_pn() {
    let mut h = Harness::ready(&[PneSpec::cpns()]);
    h.setup(0, SetupType::OneToOne);
    let pn = h.joined(0).unwrap().pn_id;
    let now = h.now();
    h.pnes[0].leave_pn(now, pn).unwrap();
    h.pump();
    assert!(h.pne_outcomes(0).contains(&&Outcome::PnGone {
        pn_id: pn,
        why: Gone::Left
    }));
    assert!(!h.store.pns.contains_key(&pn));
    assert!(!h.store.gw_local.contains_key(&pn));
    assert!(!h.store.pne_local[0].contains_key(&pn));
    assert!(
        h.gw_events()
            .contains(&&GatewayEvent::PnEmptied { pn_id: pn })
    );
}

/// An epoch its proven PN GW announced, even without a copy it can open, is one the PNE knows
/// exists: a pull answered with an older one says it may be kept behind. A word from a device
/// that has not proved it is the PN GW announces nothing.
#[test]
fn a_pull_answered_older_than_an_announced_epoch_says_so() {
    let (mut h, pn) = three_members();
    let inventory = h.store.pns[&pn].clone();
    // From a device that only claims to be the PN GW: not taken, nothing announced.
    h.deliver_direct(
        Party::Gw,
        Party::Pne(2),
        &update_note(2, "gw-9", inventory.clone(), 9, Some(vec![1; 60])),
    )
    .unwrap();
    h.pump();
    let now = h.now();
    let pull = h.pnes[2].request_group_key(now, pn).unwrap();
    h.pump();
    assert!(matches!(
        h.completion(2, pull).map(|c| &c.result),
        Some(Ok(Outcome::GroupKey { epoch: 1, .. }))
    ));
    // From its proven PN GW, epoch 9 without a copy: announced.
    h.deliver_direct(
        Party::Gw,
        Party::Pne(2),
        &update_note(2, "gw-1", inventory, 9, None),
    )
    .unwrap();
    h.pump();
    let now = h.now();
    let pull = h.pnes[2].request_group_key(now, pn).unwrap();
    h.pump();
    match h.completion(2, pull).map(|c| &c.result) {
        Some(Err(Failure::KeptBehind { pn_id, why })) => {
            assert_eq!(*pn_id, pn);
            assert!(why.contains("epoch 1") && why.contains("epoch 9"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}
