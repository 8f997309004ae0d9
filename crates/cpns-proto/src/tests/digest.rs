//! A delivery offered without hashes (docs/security.md §4.12, "The source's digest"): the
//! content moves while its source's driver hashes it; the last chunk waits for the digest the
//! source signs from those hashes, and carries it. Each target checks, before it writes that
//! chunk, that the digest is signed by the session's source under the server's certificate,
//! and then checks every item against it. A relay that drops or alters the digest, or another
//! member that signs one of its own, keeps a target from keeping anything.

use cpns_wire::{Body, DeliveryChunk, DeliveryId, DeliveryResult, HashBytes};

use super::delivery::{content, offer, world};
use super::harness::{Action, Harness, Party, pne_id};
use crate::CommandError;
use crate::pne::{Outcome, PneEvent};

/// PNE 0 offers `bytes` to `to` without hashes: the session granted.
fn push_unhashed(h: &mut Harness, to: &[usize], bytes: &[u8]) -> DeliveryId {
    h.store.pne_outbox.insert(0, bytes.to_vec());
    let now = h.now();
    let unhashed = cpns_wire::DeliveryOffer {
        sha256: None,
        ..offer(to, bytes)
    };
    let id = h.pnes[0].offer_delivery(now, &unhashed).unwrap();
    h.pump();
    match h.outcome(0, id) {
        Outcome::DeliveryGranted { session, .. } => *session,
        other => panic!("{other:?}"),
    }
}

/// The chunks PNE 0 sent of `session`, in order.
fn chunks_sent(h: &Harness, session: DeliveryId) -> Vec<DeliveryChunk> {
    h.delivered(Party::Pne(0), Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryChunk(c) if c.session == session => Some(c),
            _ => None,
        })
        .collect()
}

/// Why PNE `i`'s part of `session` failed, as it was told.
fn failed_why(h: &Harness, i: usize, session: DeliveryId) -> String {
    h.pne_events(i)
        .into_iter()
        .find_map(|e| match e {
            PneEvent::DeliveryEnded {
                session: s,
                result: DeliveryResult::Failed,
                reason: Some(r),
                ..
            } if *s == session => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("PNE {i}'s part did not fail"))
}

#[test]
fn content_offered_without_hashes_moves_while_it_is_hashed_and_arrives_checked() {
    let mut h = world();
    h.store.held_hashes = Some(Vec::new());
    let bytes = content(300_000);
    let session = push_unhashed(&mut h, &[1, 2], &bytes);
    // The invitations carried no hash; the driver was asked to hash the content.
    let asked = h.store.held_hashes.take().unwrap();
    assert_eq!(asked, [(0, session)]);
    // Every chunk but the last went, and was acknowledged, before the hash came.
    let before = chunks_sent(&h, session);
    let last = 300_000 - 300_000 % 65_536;
    assert_eq!(
        before.iter().map(|c| c.offset).collect::<Vec<_>>(),
        (0..last).step_by(65_536).collect::<Vec<_>>()
    );
    assert!(before.iter().all(|c| c.digest.is_none()));
    assert!(h.store.pne_received.is_empty(), "nothing kept yet");
    // The hash comes: the last chunk goes, with the digest, and both targets keep it all.
    h.hash_content(0, session);
    h.pump();
    let after = chunks_sent(&h, session);
    let end = after.last().unwrap();
    assert_eq!(end.offset, last);
    let digest = end
        .digest
        .as_ref()
        .expect("the last chunk carries the digest");
    assert_eq!(
        digest.hashes,
        [HashBytes(
            <sha2::Sha256 as sha2::Digest>::digest(&bytes).into()
        )]
    );
    assert_eq!(digest.certificate.pne_id, pne_id(0));
    for i in [1, 2] {
        assert_eq!(
            h.store.pne_received.get(&(i, session)),
            Some(&bytes),
            "PNE {i}"
        );
        assert_eq!(
            h.store.deliveries[&(session, pne_id(i))].ended,
            Some((300_000, DeliveryResult::Delivered.code()))
        );
    }
    assert_eq!(
        h.delivery_sent(0, session),
        Some(vec![pne_id(1), pne_id(2)])
    );
}

/// PNE 0 pushes `bytes` to PNEs 1 and 2 without hashes while the PN GW rewrites the last chunk
/// it relays to PNE 1 with `alter`: PNE 1 keeps nothing and says why; PNE 2 keeps it all.
fn relayed_digest_altered(alter: impl Fn(&mut DeliveryChunk) + 'static) -> String {
    let mut h = world();
    let bytes = content(200_000);
    h.set_hook(move |f| {
        if f.from == Party::Gw && f.to == Party::Pne(1) && f.message == "DeliveryChunk" {
            let mut last = false;
            let body = super::harness::rewrite(&f.body, |env| {
                if let Body::DeliveryChunk(c) = &mut env.body
                    && c.digest.is_some()
                {
                    last = true;
                    alter(c);
                }
            });
            if last {
                return Action::Replace(body);
            }
        }
        Action::Deliver
    });
    let session = push_unhashed(&mut h, &[1, 2], &bytes);
    h.clear_hook();
    let why = failed_why(&h, 1, session);
    assert!(!h.store.pne_received.contains_key(&(1, session)));
    assert!(!h.store.pne_inbox.contains_key(&(1, session)), "discarded");
    // Not one byte of the last chunk was written.
    assert_eq!(
        h.store.deliveries[&(session, pne_id(1))].ended,
        Some((3 * 65_536, DeliveryResult::Failed.code()))
    );
    assert_eq!(h.store.pne_received.get(&(2, session)), Some(&bytes));
    why
}

#[test]
fn a_last_chunk_whose_digest_a_relay_dropped_is_not_kept() {
    let why = relayed_digest_altered(|c| c.digest = None);
    assert!(why.contains("without its source's signed digest"), "{why}");
}

#[test]
fn a_digest_with_a_hash_altered_on_the_way_does_not_verify() {
    let why = relayed_digest_altered(|c| {
        if let Some(d) = &mut c.digest {
            d.hashes[0].0[0] ^= 1;
        }
    });
    assert!(
        why.contains("does not verify: it was altered on the way"),
        "{why}"
    );
}

#[test]
fn a_digest_naming_more_items_than_the_session_has_is_refused() {
    let why = relayed_digest_altered(|c| {
        if let Some(d) = &mut c.digest {
            d.hashes.push(HashBytes([0; 32]));
        }
    });
    assert!(
        why.contains("names 2 items, and the session has 1"),
        "{why}"
    );
}

#[test]
fn a_digest_under_another_certificate_is_refused() {
    // A certificate the server did not sign.
    let why = relayed_digest_altered(|c| {
        if let Some(d) = &mut c.digest {
            d.certificate.signature.0[0] ^= 1;
        }
    });
    assert!(why.contains("is not the server's"), "{why}");
}

/// Another member holds the session's key too (it is a target), but not the source's signing
/// key: a digest it signs itself, of content it seals itself, names it, not the source.
#[test]
fn another_target_cannot_sign_a_digest_in_the_sources_name() {
    let mut h = world();
    h.store.held_hashes = Some(Vec::new());
    let bytes = content(100_000);
    let session = push_unhashed(&mut h, &[1, 2], &bytes);
    // PNE 2's own certificate and signature, over what it would have PNE 1 take instead.
    let forged_hashes = [<sha2::Sha256 as sha2::Digest>::digest(vec![0u8; 100_000]).into()];
    let signer = cpns_crypto::MemberSigningKey::derive(&h.pne_cfgs[2].eukey, pne_id(2).as_str());
    let signature = signer.sign_delivery_digest(session.as_bytes(), 100_000, &forged_hashes);
    let certificate = h.pne_cfgs[2].signing.as_ref().unwrap().certificate.clone();
    let sealed = h.pnes[0]
        .seal_as_source(session, 65_536, &vec![0u8; 100_000 - 65_536])
        .unwrap();
    let env = cpns_wire::Envelope::notify(
        9_900,
        cpns_wire::Address::Entity(h.gw_cfg.id.clone()),
        cpns_wire::Address::Entity(pne_id(1)),
        DeliveryChunk {
            session,
            offset: 65_536,
            sealed,
            digest: Some(Box::new(cpns_wire::DeliveryDigest {
                hashes: forged_hashes.iter().copied().map(HashBytes).collect(),
                signature: cpns_wire::SignatureBytes(signature),
                certificate,
            })),
        },
    );
    h.inject(Party::Gw, Party::Pne(1), super::harness::plain(&env));
    h.pump();
    let why = failed_why(&h, 1, session);
    assert!(why.contains(&format!("signed by {}", pne_id(2))), "{why}");
    assert!(!h.store.pne_received.contains_key(&(1, session)));
}

#[test]
fn a_source_that_cannot_hash_its_content_ends_the_session_and_sends_no_last_chunk() {
    let mut h = world();
    h.store.hash_fault = Some("the disk went away".into());
    let bytes = content(200_000);
    let session = push_unhashed(&mut h, &[1], &bytes);
    let why = failed_why(&h, 0, session);
    assert!(
        why.contains("could not be hashed: the disk went away"),
        "{why}"
    );
    assert!(
        chunks_sent(&h, session)
            .iter()
            .all(|c| c.offset + 65_536 < 200_000 && c.digest.is_none())
    );
    assert!(!h.store.pne_received.contains_key(&(1, session)));
    assert_eq!(h.pnes[0].delivery_sessions().0, Vec::<DeliveryId>::new());
    // Its target was told it stopped, and keeps nothing.
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::Stopped)]
    );
    assert!(!h.store.pne_inbox.contains_key(&(1, session)));
}

#[test]
fn several_items_are_each_checked_against_the_digest() {
    let mut h = world();
    let (film, notes) = (content(150_000), super::delivery::seeded_content(20_000, 7));
    let bytes = [film.clone(), notes.clone()].concat();
    h.store.pne_outbox.insert(0, bytes.clone());
    // The driver hashes other notes than it sends (its file changed under it): the second item
    // does not match the digest, the first does.
    h.store.pne_outbox_items.insert(0, vec![150_000, 20_000]);
    h.store.held_hashes = Some(Vec::new());
    let now = h.now();
    let unhashed = cpns_wire::DeliveryOffer {
        sha256: None,
        size: 150_000,
        more: vec![cpns_wire::DeliveryItem {
            service_id: "notes".into(),
            name: "notes.txt".into(),
            media_type: "text/plain".into(),
            size: 20_000,
            sha256: None,
        }],
        ..offer(&[1], &film)
    };
    let id = h.pnes[0].offer_delivery(now, &unhashed).unwrap();
    h.pump();
    let Outcome::DeliveryGranted { session, .. } = *h.outcome(0, id) else {
        panic!("not granted");
    };
    let mut hashed_from = bytes.clone();
    hashed_from[160_000] ^= 1;
    h.store.pne_outbox.insert(0, hashed_from);
    h.hash_content(0, session);
    h.store.pne_outbox.insert(0, bytes);
    h.pump();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&film));
    assert_eq!(
        h.delivery_ends(1, session),
        [(pne_id(1), DeliveryResult::HashMismatch)]
    );
}

#[test]
fn only_a_certified_pne_offers_without_hashes_and_only_one_with_an_authority_key_takes_it() {
    let mut h = world();
    let bytes = content(10_000);
    // PNE 1 holds no certificate nor authority key now.
    h.pne_cfgs[1].signing = None;
    h.relink(1, 77, |_| {});
    super::delivery::link_again(&mut h, 1);
    h.store.pne_outbox.insert(1, bytes.clone());
    let now = h.now();
    let unhashed = cpns_wire::DeliveryOffer {
        sha256: None,
        ..offer(&[2], &bytes)
    };
    assert!(matches!(
        h.pnes[1].offer_delivery(now, &unhashed),
        Err(CommandError::NoCertificate)
    ));
    // Offered it by PNE 0, it declines, saying why; PNE 2 takes it.
    let session = push_unhashed(&mut h, &[1, 2], &bytes);
    let declined = h.pne_events(1).into_iter().find_map(|e| match e {
        PneEvent::DeliveryEnded {
            session: s,
            result: DeliveryResult::Declined,
            reason: Some(r),
            ..
        } if *s == session => Some(r.clone()),
        _ => None,
    });
    let declined = declined.expect("PNE 1 declined");
    assert!(declined.contains("holds no authority key"), "{declined}");
    assert_eq!(h.store.pne_received.get(&(2, session)), Some(&bytes));
}

#[test]
fn a_source_whose_link_drops_while_hashing_hashes_again_and_finishes() {
    let mut h = world();
    h.store.held_hashes = Some(Vec::new());
    let bytes = content(200_000);
    let session = push_unhashed(&mut h, &[1], &bytes);
    // The link drops: what its driver was hashing is gone with it.
    let kept = h.pnes[0].take_deliveries();
    h.relink(0, 78, |s| s.restore_deliveries(kept));
    super::delivery::link_again(&mut h, 0);
    let asked = h.store.held_hashes.take().unwrap();
    assert_eq!(asked, [(0, session), (0, session)], "asked again");
    h.hash_content(0, session);
    h.pump();
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
    assert_eq!(h.delivery_sent(0, session), Some(vec![pne_id(1)]));
}

/// The digest rides on the last chunk only (each chunk before it goes as any other), however
/// early the hashes came.
#[test]
fn only_the_last_chunk_carries_the_digest() {
    let mut h = world();
    let bytes = content(300_000);
    let session = push_unhashed(&mut h, &[1], &bytes);
    let sent = chunks_sent(&h, session);
    assert_eq!(sent.len(), 5);
    let with: Vec<u64> = sent
        .iter()
        .filter(|c| c.digest.is_some())
        .map(|c| c.offset)
        .collect();
    assert_eq!(with, [4 * 65_536]);
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
}

/// A target that finds the whole content kept already when it accepts (a partial file of the
/// session from before), with no digest yet, takes the last byte again: the chunk that ends the
/// content brings the digest, and every item is checked against it.
#[test]
fn a_target_holding_it_all_without_the_digest_takes_the_last_byte_again() {
    let ask = super::store::PneSpec {
        deliveries: crate::pne::InvitationPolicy::Ask {
            within: std::time::Duration::from_secs(30),
        },
        ..super::store::PneSpec::trusted()
    };
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    let mut h = Harness::with_server(&[super::store::PneSpec::trusted(), ask, ask], cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, cpns_wire::SetupType::All);
    let bytes = content(150_000);
    let session = push_unhashed(&mut h, &[1], &bytes);
    h.store.pne_inbox.insert((1, session), bytes.clone());
    let now = h.now();
    h.pnes[1].answer_delivery(now, session, true).unwrap();
    h.pump();
    let acks: Vec<u64> = h
        .delivered(Party::Pne(1), Party::Gw)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::DeliveryAck(a) if a.session == session && a.resume => Some(a.have),
            _ => None,
        })
        .collect();
    assert_eq!(acks.first(), Some(&149_999), "{acks:?}");
    let sent = chunks_sent(&h, session);
    let last = sent.last().unwrap();
    assert_eq!(last.offset, 149_999);
    assert!(last.digest.is_some());
    assert_eq!(h.store.pne_received.get(&(1, session)), Some(&bytes));
}
