//! PN establishment that succeeds: initiated by a PNE with each setup type (000 §6.6.1.1 steps
//! 1-15) and by the PN GW (§6.6.1.2 steps 1-16), over `cpns` PANs (LocalEUKey assigned, PN GW
//! authentication, sealed link) and `trusted` PANs (no LocalEUKey); then a PN GW restart that
//! restores its PNs and re-seals a PNE's new link with the stored LocalEUKey.

use cpns_wire::{Body, PnId, PnInventory, SetupType};

use super::harness::{Harness, Party, id, pne_id};
use super::store::PneSpec;
use crate::gateway::{EstablishTargets, GatewayEvent};
use crate::pne::PneEvent;
use crate::server::ServerEvent;

/// PNE `i` is a member of `pn` without any LocalEUKey and its link stayed plain.
fn assert_plain_member(h: &Harness, pn: PnId, i: usize) {
    assert!(!h.pnes[i].link_sealed());
    assert!(
        h.pan_traces(i)
            .iter()
            .all(|r| !r.sealed && !r.message.starts_with("PanAuth"))
    );
    assert!(h.store.pne_local[i][&pn].wrapped_keys.is_empty());
    assert!(
        !h.store.gw_local[&pn]
            .wrapped_keys
            .iter()
            .any(|(p, _)| *p == pne_id(i))
    );
}

fn ids(n: &[usize]) -> Vec<cpns_wire::EntityId> {
    n.iter().map(|&i| pne_id(i)).collect()
}

/// Runs a PNE-initiated establishment by PNE 0 and checks what every flow shares.
fn pne_initiated(specs: &[PneSpec], setup: SetupType, members: &[usize]) -> (Harness, PnInventory) {
    let mut h = Harness::ready(specs);
    h.setup(0, setup);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    let inv = h.joined(0).expect("the initiator joined");
    assert_eq!(h.members(inv.pn_id), ids(members));
    assert_eq!(inv.gateway, id("gw-1"));
    // The initiator's set-up completed with the PN; the invitees were told.
    assert!(h.pne_outcomes(0).contains(&&crate::pne::Outcome::PnJoined {
        inventory: inv.clone(),
        initiator: true
    }));
    for &i in &members[1..] {
        assert!(h.pne_events(i).contains(&&PneEvent::PnJoined {
            inventory: inv.clone(),
            initiator: false,
        }));
    }
    assert!(h.server_events().contains(&&ServerEvent::PnRegistered {
        pn_id: inv.pn_id,
        members: ids(members),
    }));
    assert!(h.gw_events().contains(&&GatewayEvent::PnEstablished {
        inventory: inv.clone(),
        initiator: Some(pne_id(0)),
    }));
    // SK_PNE is kept by the server for every member (step 12).
    for &i in members {
        assert!(h.store.session_keys.contains_key(&(inv.pn_id, pne_id(i))));
    }
    assert_eq!(h.assert_agree(inv.pn_id), inv);
    (h, inv)
}

#[test]
fn one_to_one_on_cpns_pan_assigns_local_eukey_and_seals_link() {
    let (h, inv) = pne_initiated(&[PneSpec::cpns()], SetupType::OneToOne, &[0]);
    h.assert_sealed_member(inv.pn_id, 0);
    assert_eq!(
        h.wan_messages()[8..],
        [
            "PnRegistrationRequest",
            "AuthenticationRequest",
            "AuthenticationResponse",
            "PnRegistrationResponse",
            // Stored locally: the PN GW's PN list confirms the pending PN (step 17).
            "StatusUpdateResponse",
        ]
    );
    assert!(h.store.pending.is_empty(), "the PN is confirmed");
    // Step 1: the PNE asked for a LocalEUKey; step 5: the server wrapped one per recipient.
    let req = h
        .delivered(Party::Gw, Party::Server)
        .into_iter()
        .find_map(|e| match e.body {
            Body::PnRegistrationRequest(r) => Some(r),
            _ => None,
        });
    assert!(req.unwrap().pnes[0].local_key);
}

#[test]
fn one_to_one_on_trusted_pan_has_no_local_eukey() {
    let (h, inv) = pne_initiated(&[PneSpec::trusted()], SetupType::OneToOne, &[0]);
    assert_plain_member(&h, inv.pn_id, 0);
    let auth = h
        .delivered(Party::Server, Party::Gw)
        .into_iter()
        .find_map(|e| match e.body {
            Body::AuthenticationRequest(a) => Some(a),
            _ => None,
        });
    assert!(auth.unwrap().local_keys.is_empty());
}

/// A PNE without a UI on an insecure PAN asks for a LocalEUKey too, and its link is sealed
/// (docs/security.md §4.2): no member of a `cpns` PAN keeps a plain link.
#[test]
fn cpns_pan_without_ui_is_sealed_too() {
    let (h, inv) = pne_initiated(&[PneSpec::cpns().no_ui()], SetupType::OneToOne, &[0]);
    h.assert_sealed_member(inv.pn_id, 0);
}

#[test]
fn all_on_cpns_pans_seals_every_link() {
    let specs = [PneSpec::cpns(); 3];
    let (h, inv) = pne_initiated(&specs, SetupType::All, &[0, 1, 2]);
    for i in 0..3 {
        h.assert_sealed_member(inv.pn_id, i);
    }
    // The PN GW keeps one LocalEUKey copy per member.
    assert_eq!(h.store.gw_local[&inv.pn_id].wrapped_keys.len(), 3);
}

#[test]
fn all_on_trusted_pans() {
    let specs = [PneSpec::trusted(); 3];
    let (h, inv) = pne_initiated(&specs, SetupType::All, &[0, 1, 2]);
    for i in 0..3 {
        assert_plain_member(&h, inv.pn_id, i);
    }
}

#[test]
fn invite_list_on_cpns_pans_invites_only_those_named() {
    let specs = [PneSpec::cpns(); 3];
    let (h, inv) = pne_initiated(&specs, SetupType::Invite(vec![pne_id(1)]), &[0, 1]);
    h.assert_sealed_member(inv.pn_id, 0);
    h.assert_sealed_member(inv.pn_id, 1);
    // Step 2 names the PN and the initiator; PNE 3 was never asked.
    let invite = h
        .delivered(Party::Gw, Party::Pne(1))
        .into_iter()
        .find_map(|e| match e.body {
            Body::PnSetupRequest(r) => Some(r),
            _ => None,
        });
    let invite = invite.unwrap();
    assert_eq!(
        (invite.pn_id, invite.initiator),
        (Some(inv.pn_id), Some(pne_id(0)))
    );
    assert!(
        h.pan_traces(2)
            .iter()
            .all(|r| r.message.starts_with("EntityDiscovery"))
    );
    assert!(h.pnes[2].inventory().is_empty());
}

#[test]
fn invite_list_on_trusted_pans() {
    let specs = [PneSpec::trusted(); 3];
    let (h, inv) = pne_initiated(&specs, SetupType::Invite(vec![pne_id(2)]), &[0, 2]);
    assert_plain_member(&h, inv.pn_id, 0);
    assert_plain_member(&h, inv.pn_id, 2);
    assert!(h.pnes[1].inventory().is_empty());
}

/// PN GW-initiated establishment (000 §6.6.1.2): every invitee gets the PN Establishment Notify.
fn gw_initiated(
    specs: &[PneSpec],
    targets: EstablishTargets,
    members: &[usize],
) -> (Harness, PnId) {
    let mut h = Harness::ready(specs);
    let now = h.now();
    let started = h.gw.start_establishment(now, targets).unwrap();
    let pn = started.pn_id;
    h.pump();
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert_eq!(h.members(pn), ids(members));
    let inv = h.assert_agree(pn);
    for &i in members {
        assert!(h.pne_events(i).contains(&&PneEvent::PnJoined {
            inventory: inv.clone(),
            initiator: false,
        }));
        let notified = h
            .pan_traces(i)
            .iter()
            .any(|r| r.message == "PnEstablishmentNotify");
        assert!(notified, "pne {i} was not notified (steps 15-16)");
    }
    // The owner's command completed with the PN, by its id.
    assert_eq!(
        h.gw_outcome(started.id),
        &crate::gateway::Outcome::Established { inventory: inv }
    );
    (h, pn)
}

#[test]
fn gateway_initiated_all_over_mixed_pans() {
    let specs = [PneSpec::cpns(), PneSpec::trusted()];
    let (h, pn) = gw_initiated(&specs, EstablishTargets::All, &[0, 1]);
    h.assert_sealed_member(pn, 0);
    assert_plain_member(&h, pn, 1);
}

#[test]
fn gateway_initiated_invite_list() {
    let specs = [PneSpec::cpns(), PneSpec::cpns(), PneSpec::trusted()];
    let (h, pn) = gw_initiated(
        &specs,
        EstablishTargets::Invite(vec![pne_id(1), pne_id(2)]),
        &[1, 2],
    );
    h.assert_sealed_member(pn, 1);
    assert_plain_member(&h, pn, 2);
    assert!(h.pnes[0].inventory().is_empty());
    assert!(!h.pnes[0].link_sealed());
}

#[test]
fn gateway_initiated_needs_the_server_and_a_pne() {
    let mut h = Harness::new(&[PneSpec::cpns()]);
    let now = h.now();
    assert!(
        h.gw.start_establishment(now, EstablishTargets::All)
            .is_err()
    );
    h.connect_gw();
    // No PNE discovered yet: nobody to invite.
    assert!(
        h.gw.start_establishment(now, EstablishTargets::All)
            .is_err()
    );
}

#[test]
fn restored_gateway_reseals_a_new_link_with_the_stored_local_eukey() {
    let specs = [PneSpec::cpns(), PneSpec::cpns()];
    let (mut h, inv) = pne_initiated(&specs, SetupType::All, &[0, 1]);
    h.restart_from_stores(&specs);
    // The PN GW and the PNEs came back with the same PN.
    assert_eq!(h.gw.inventory(), [&inv]);
    assert_eq!(h.pnes[1].inventory(), [&inv]);
    assert!(!h.pnes[0].link_sealed());
    let before = h.traces.len();
    let now = h.now();
    let proofs: Vec<_> = (0..2)
        .map(|i| h.pnes[i].start_pan_auth(now, inv.pn_id).unwrap())
        .collect();
    h.pump();
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    for (i, proof) in proofs.into_iter().enumerate() {
        assert!(h.pnes[i].link_sealed());
        // Once at establishment, by the PNE itself; once after the restart, by command.
        let own = h
            .pne_events(i)
            .iter()
            .filter(
                |e| matches!(e, PneEvent::PanAuthenticated { pn_id, .. } if *pn_id == inv.pn_id),
            )
            .count();
        assert_eq!(own, 1, "at establishment");
        assert!(matches!(
            h.outcome(i, proof),
            crate::pne::Outcome::PanAuthenticated { pn_id, .. } if *pn_id == inv.pn_id
        ));
    }
    let after: Vec<_> = h.traces[before..]
        .iter()
        .map(|(_, _, t)| t.message)
        .collect();
    assert_eq!(after.iter().filter(|m| **m == "PanAuthConfirm").count(), 2);
    // Whatever travels next on the new link is sealed both ways.
    let mark = h.pan_traces(0).len();
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    let next = &h.pan_traces(0)[mark..];
    assert_eq!(next.len(), 2);
    assert!(
        next.iter()
            .all(|r| r.sealed && r.message.starts_with("EntityDiscovery"))
    );
    // A PN the PNE does not belong to cannot be used to seal.
    let other = PnId::from_bytes([9; 16]);
    assert!(h.pnes[0].start_pan_auth(now, other).is_err());
}

/// A device keeps its LocalEUKey copy as `rand_server ‖ wrapped` (docs/security.md §4.2). The
/// copy is bound to that rand_server: put another one in front, or drop it (the bare 60-byte
/// copy), and a restart refuses the stored PN instead of unwrapping it.
#[test]
fn a_stored_copy_bound_to_another_rand_server_is_refused_at_restore() {
    let specs = [PneSpec::cpns()];
    let (h, inv) = pne_initiated(&specs, SetupType::OneToOne, &[0]);
    let gw_state = h.store.gw_local[&inv.pn_id].clone();
    let pne_state = h.store.pne_local[0][&inv.pn_id].clone();
    for state in [&gw_state, &pne_state] {
        assert_eq!(state.wrapped_keys.len(), 1);
        assert_eq!(
            state.wrapped_keys[0].1.len(),
            cpns_crypto::STORED_WRAPPED_KEY_LEN
        );
    }
    let other_rand = |s: &crate::LocalPnState| {
        let mut s = s.clone();
        s.wrapped_keys[0].1[3] ^= 0x01;
        s
    };
    let bare = |s: &crate::LocalPnState| {
        let mut s = s.clone();
        s.wrapped_keys[0].1.drain(..16);
        s
    };
    let rng = || cpns_crypto::MachineRng::from_seed_u64(5);
    let gw = |s: crate::LocalPnState| {
        crate::gateway::Gateway::new(h.gw_cfg.clone(), rng()).restore(vec![s])
    };
    let pne = |s: crate::LocalPnState| {
        crate::pne::PneSession::new(h.pne_cfgs[0].clone(), rng()).restore(vec![s])
    };
    let bad_tag = Err(crate::ProtoError::Crypto(cpns_crypto::CryptoError::BadTag));
    assert_eq!(gw(gw_state.clone()), Ok(()));
    assert_eq!(gw(other_rand(&gw_state)), bad_tag);
    assert!(matches!(
        gw(bare(&gw_state)),
        Err(crate::ProtoError::Crypto(
            cpns_crypto::CryptoError::Malformed(_)
        ))
    ));
    assert_eq!(pne(pne_state.clone()), Ok(()));
    assert_eq!(pne(other_rand(&pne_state)), bad_tag);
    assert!(matches!(
        pne(bare(&pne_state)),
        Err(crate::ProtoError::Crypto(
            cpns_crypto::CryptoError::Malformed(_)
        ))
    ));
}
