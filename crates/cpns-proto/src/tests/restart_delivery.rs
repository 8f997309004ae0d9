//! A PNE restarted midway goes on with its delivery sessions (docs/services.md, "A restarted
//! PNE"): each session it sends or accepted is kept in its store ([`PneOutput::KeepDelivery`]),
//! its key sealed by the driver, and taken back by the restarted machine
//! ([`PneSession::restore_delivery`]); a target goes on from what its file holds, a source from
//! what its targets have, and both forget the session when their part ends.

use cpns_wire::{Body, DeliveryId, DeliveryResult};

use super::delivery::{content, link_again, offer, world};
use super::harness::{Action, Harness, Party, pne_id};
use crate::pne::{KeptSession, Outcome};

/// PNE 0 pushes `bytes` to PNE 1, which takes `taken` chunks before the rest stops reaching it.
fn stalled(h: &mut Harness, bytes: &[u8], taken: usize) -> DeliveryId {
    let mut chunks = 0;
    h.set_hook(move |f| {
        if f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            chunks += 1;
            if chunks > taken {
                return Action::Drop;
            }
        }
        Action::Deliver
    });
    h.store.pne_outbox.insert(0, bytes.to_vec());
    let now = h.now();
    let id = h.pnes[0].offer_delivery(now, &offer(&[1], bytes)).unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session, .. } = *h.outcome(0, id) else {
        panic!("granted")
    };
    h.clear_hook();
    session
}

/// What PNE `i` kept of its sessions.
fn kept(h: &Harness, i: usize) -> Vec<KeptSession> {
    h.store
        .pne_deliveries
        .iter()
        .filter(|((p, _), _)| *p == i)
        .map(|(_, k)| k.clone())
        .collect()
}

/// PNE `i` restarted: a fresh machine from its store, its kept sessions taken back, linked again.
fn restart(h: &mut Harness, i: usize, seed: u64) {
    let sessions = kept(h, i);
    h.relink(i, seed, move |s| {
        for k in sessions {
            s.restore_delivery(k).unwrap();
        }
    });
    link_again(h, i);
}

#[test]
fn a_target_restarted_midway_goes_on_from_what_its_file_holds() {
    let mut h = world();
    let bytes = content(400_000);
    let session = stalled(&mut h, &bytes, 2);
    // Both ends kept the session: the source at the grant, the target at its acceptance.
    for i in [0, 1] {
        let k = kept(&h, i);
        assert_eq!(k.len(), 1, "PNE {i}");
        assert_eq!((k[0].session, k[0].as_source), (session, i == 0));
        assert!(format!("{:?}", k[0]).contains("<redacted>"));
        // The key goes to the driver to seal; what is stored as it is holds none of it.
        let key = k[0].key.expose_secret();
        assert!(
            !k[0].description.windows(32).any(|w| w == key),
            "PNE {i}: the key in the description"
        );
    }
    let held = h.store.pne_inbox[&(1, session)].len();
    assert_eq!(held, 2 * 65_536);
    restart(&mut h, 1, 91);
    assert!(h.store.pne_received.get(&(1, session)) == Some(&bytes));
    // What it held was not sent again: the source went on from it.
    let resent: Vec<u64> = h
        .delivered(Party::Pne(0), Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) if c.session == session => Some(c.offset),
            _ => None,
        })
        .collect();
    assert!(
        resent.iter().filter(|&&o| o == 0).count() == 1,
        "{resent:?}"
    );
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(1)]));
    assert!(
        kept(&h, 0).is_empty() && kept(&h, 1).is_empty(),
        "forgotten at the end"
    );
    assert_eq!(
        h.store.deliveries[&(session, pne_id(1))].ended,
        Some((400_000, DeliveryResult::Delivered.code()))
    );
}

#[test]
fn a_source_restarted_midway_goes_on_from_what_its_targets_have() {
    let mut h = world();
    let bytes = content(400_000);
    let session = stalled(&mut h, &bytes, 3);
    restart(&mut h, 0, 92);
    assert!(h.store.pne_received.get(&(1, session)) == Some(&bytes));
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(1)]));
    assert!(kept(&h, 0).is_empty() && kept(&h, 1).is_empty());
}

#[test]
fn a_kept_session_is_taken_back_once_and_only_as_kept() {
    let mut h = world();
    let bytes = content(200_000);
    let session = stalled(&mut h, &bytes, 1);
    let mut k = kept(&h, 1).remove(0);
    // Held already (the machine never restarted): refused.
    assert!(h.pnes[1].restore_delivery(k.clone()).is_err());
    // A description that does not decode, or of another session: refused.
    let fresh = |h: &mut Harness| {
        crate::pne::PneSession::new(
            h.pne_cfgs[1].clone(),
            cpns_crypto::MachineRng::from_seed_u64(93),
        )
    };
    let mut s = fresh(&mut h);
    let garbled = KeptSession {
        description: vec![0xff, 0x00],
        ..k.clone()
    };
    assert!(s.restore_delivery(garbled).is_err());
    k.session = DeliveryId::from_bytes([0xaa; 16]);
    assert!(s.restore_delivery(k).is_err());
    assert_eq!(s.delivery_sessions(), (vec![], vec![]));
    let _ = session;
}

/// Sessions taken back go on one at a time, in the order they were kept (as offered), not in
/// the order of their ids: when the one moving ends, the one kept next moves.
#[test]
fn kept_sessions_taken_back_move_in_the_order_they_were_kept() {
    let mut h = world();
    let bytes = content(200_000);
    let first = stalled(&mut h, &bytes, 1);
    let k = kept(&h, 1).remove(0);
    let invite: cpns_wire::DeliveryInvite = minicbor::decode(&k.description).unwrap();
    let another = |id: u8| KeptSession {
        session: DeliveryId::from_bytes([id; 16]),
        description: minicbor::to_vec(cpns_wire::DeliveryInvite {
            session: DeliveryId::from_bytes([id; 16]),
            ..invite.clone()
        })
        .unwrap(),
        ..k.clone()
    };
    let mut fresh = crate::pne::PneSession::new(
        h.pne_cfgs[1].clone(),
        cpns_crypto::MachineRng::from_seed_u64(94),
    );
    // Kept in this order: the first (it moves), then one whose id sorts last, then one whose
    // id sorts first.
    fresh.restore_delivery(k.clone()).unwrap();
    fresh.restore_delivery(another(0xfe)).unwrap();
    fresh.restore_delivery(another(0x01)).unwrap();
    let opened = |s: &mut crate::pne::PneSession| {
        let mut opened = Vec::new();
        while let Some(out) = s.poll_output() {
            if let crate::pne::PneOutput::OpenReceive { session, .. } = out {
                opened.push(session);
            }
        }
        opened
    };
    assert_eq!(opened(&mut fresh), [first], "one moves at a time");
    // The first cannot be opened (its file is gone): the one kept next moves.
    fresh.handle_receive_opened(h.now(), first, Err("gone".into()));
    assert_eq!(opened(&mut fresh), [DeliveryId::from_bytes([0xfe; 16])]);
}
