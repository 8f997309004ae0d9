//! Group content through the machines (docs/security.md §4.11): a member's content reaches the
//! other members linked to the PN GW, signed by it and sealed under the PN's group key; the PN
//! GW relays what it cannot read; a member that receives content believes it only from the
//! member that signed it, once, under the epoch it holds.

use cpns_crypto::{ContentBinding, MachineRng, MemberSigningKey, seal_group_content};
use cpns_wire::{
    Address, Body, Envelope, ErrorCode, GroupContent, PnId, PublicKeyBytes, SetupType,
};

use super::harness::{Action, Harness, Party, id, plain, pne_id, rewrite};
use super::store::PneSpec;
use crate::gateway::{CONTENT_BURST, GatewayEvent};
use crate::pne::{Outcome, PneEvent};
use crate::{CommandError, Failure};

const PHOTO: &[u8] = b"family photo, for the family only";

/// Three members of one PN, set up by PNE 0, on `spec` links.
fn with_pn(spec: PneSpec) -> (Harness, PnId) {
    let mut h = Harness::ready(&[spec; 3]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).expect("the PN was established").pn_id;
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    (h, pn)
}

fn received(h: &Harness, i: usize) -> Vec<(String, Vec<u8>)> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::GroupContent { from, content, .. } => {
                Some((from.to_string(), content.clone()))
            }
            _ => None,
        })
        .collect()
}

fn refused(h: &Harness, i: usize) -> Vec<String> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::ContentRefused {
                reason: Failure::ContentRefused(why),
                ..
            } => Some(why.clone()),
            _ => None,
        })
        .collect()
}

fn send(h: &mut Harness, i: usize, pn: PnId, content: &[u8]) -> crate::CommandId {
    let now = h.now();
    let id = h.pnes[i]
        .send_group_content(now, pn, content.to_vec())
        .expect("the send is taken");
    h.pump();
    id
}

/// The Group Content the PN GW relayed to PNE `to`, as it went.
fn relayed_to(h: &Harness, to: usize) -> Vec<GroupContent> {
    h.delivered(Party::Gw, Party::Pne(to))
        .into_iter()
        .filter_map(|e| match e.body {
            Body::GroupContent(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn content_reaches_every_other_member_signed_and_sealed() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    let id = send(&mut h, 0, pn, PHOTO);
    assert_eq!(
        h.outcome(0, id),
        &Outcome::ContentSent {
            pn_id: pn,
            delivered: 2
        }
    );
    for i in [1, 2] {
        assert_eq!(received(&h, i), [("pne-1".to_string(), PHOTO.to_vec())]);
        let told = h.pne_events(i).into_iter().find_map(|e| match e {
            PneEvent::GroupContent { owner, epoch, .. } => Some((owner.clone(), *epoch)),
            _ => None,
        });
        assert_eq!(told, Some(("alice".parse().unwrap(), 1)));
    }
    assert!(received(&h, 0).is_empty(), "the sender is not sent its own");
    // The PN GW relayed it, and no frame anywhere held the content in the clear.
    assert!(h.gw_events().contains(&&GatewayEvent::ContentRelayed {
        pn_id: pn,
        from: pne_id(0),
        delivered: 2
    }));
    assert!(
        h.log
            .iter()
            .all(|f| !f.body.windows(PHOTO.len()).any(|w| w == PHOTO))
    );
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// On a trusted PAN frames are plain, so the hook can play a PN GW (or bearer) that alters
/// what it relays: a flipped byte, another content id, another epoch, or a certificate the
/// server did not sign. Each is refused with its reason, and nothing is told as content.
#[test]
fn content_altered_on_its_way_is_refused() {
    type Edit = fn(&mut GroupContent);
    let edits: [(Edit, &str); 5] = [
        (|m| m.sealed[20] ^= 1, "does not open"),
        (|m| m.content_id ^= 1, "does not open"),
        (|m| m.epoch += 1, "sealed under epoch 2"),
        (
            |m| m.certificate.key = PublicKeyBytes([7; 32]),
            "not the server's",
        ),
        (|m| m.certificate.signature.0[0] ^= 1, "not the server's"),
    ];
    for (edit, why) in edits {
        let (mut h, pn) = with_pn(PneSpec::trusted());
        h.set_hook(move |f| match (f.from, f.to, f.message) {
            (Party::Gw, Party::Pne(2), "GroupContent") => Action::Replace(rewrite(&f.body, |e| {
                if let Body::GroupContent(m) = &mut e.body {
                    edit(m);
                }
            })),
            _ => Action::Deliver,
        });
        send(&mut h, 0, pn, PHOTO);
        assert!(received(&h, 2).is_empty(), "{why}");
        let r = refused(&h, 2);
        assert!(r.len() == 1 && r[0].contains(why), "{why}: {r:?}");
        // The member it reached unaltered took it.
        assert_eq!(received(&h, 1).len(), 1);
    }
}

/// PNE 1, a member holding the group key, makes content that names PNE 0 as its sender, with
/// PNE 0's certificate (public: it travels with every content PNE 0 sends). The PN GW refuses to
/// relay it in PNE 0's name; a PN GW that relays it anyway cannot make a member believe it.
#[test]
fn content_signed_by_one_member_cannot_be_passed_off_as_anothers() {
    let (mut h, pn) = with_pn(PneSpec::trusted());
    send(&mut h, 0, pn, b"hello");
    let genuine = relayed_to(&h, 2).pop().expect("relayed");
    let (epoch, gk) = h.pnes[1].group_key_of(&pn).unwrap();
    let forger = MemberSigningKey::derive(&h.pne_cfgs[1].eukey, "pne-2");
    let mut rng = MachineRng::from_seed_u64(9);
    let forge = |rng: &mut MachineRng, content_id| {
        let b = ContentBinding {
            pn_id: pn.as_bytes(),
            epoch,
            sender: "pne-1",
            content_id,
        };
        seal_group_content(rng.get(), &gk, &forger, &b, b"send me your password").unwrap()
    };
    let forged = GroupContent {
        content_id: 77,
        sealed: forge(&mut rng, 77),
        ..genuine.clone()
    };
    // As PNE 1 on its own link: the PN GW relays content only in the name of the link's member.
    let ask = Envelope::request(
        9000,
        Address::Entity(pne_id(1)),
        Address::Entity(id("gw-1")),
        forged.clone(),
    );
    h.inject(Party::Pne(1), Party::Gw, plain(&ask));
    h.pump();
    let answer = h
        .delivered(Party::Gw, Party::Pne(1))
        .into_iter()
        .find(|e| e.in_reply_to == Some(9000))
        .expect("answered");
    assert!(
        matches!(&answer.body, Body::ErrorBody(e) if e.code == ErrorCode::Forbidden),
        "{answer:?}"
    );
    assert!(relayed_to(&h, 2).len() == 1, "nothing more relayed");
    // As a PN GW that relays it anyway, with PNE 0's certificate, then with PNE 1's own.
    let own_cert = GroupContent {
        content_id: 78,
        sealed: forge(&mut rng, 78),
        certificate: h.pne_cfgs[1].signing.clone().unwrap().certificate,
        ..genuine.clone()
    };
    for (n, m) in [forged, own_cert].into_iter().enumerate() {
        let env = Envelope::notify(
            9100 + n as u64,
            Address::Entity(id("gw-1")),
            Address::Entity(pne_id(2)),
            m,
        );
        h.inject(Party::Gw, Party::Pne(2), plain(&env));
        h.pump();
    }
    assert_eq!(received(&h, 2), [("pne-1".to_string(), b"hello".to_vec())]);
    let r = refused(&h, 2);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[0].contains("its sender did not sign it"), "{r:?}");
    assert!(r[1].contains("another member's"), "{r:?}");
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// The PN GW relays content only as its sender names itself, in the message and in the
/// certificate beside it; a PNE takes Group Content only as the PN GW's notification.
#[test]
fn content_names_its_sender_twice_and_comes_to_a_pne_only_as_a_notification() {
    let (mut h, pn) = with_pn(PneSpec::trusted());
    send(&mut h, 0, pn, b"hello");
    let genuine = relayed_to(&h, 2).pop().expect("relayed");
    // PNE 1 names itself as sender, with PNE 0's certificate.
    let borrowed = GroupContent {
        sender: pne_id(1),
        ..genuine.clone()
    };
    let ask = Envelope::request(
        9300,
        Address::Entity(pne_id(1)),
        Address::Entity(id("gw-1")),
        borrowed,
    );
    h.inject(Party::Pne(1), Party::Gw, plain(&ask));
    h.pump();
    let answer = h
        .delivered(Party::Gw, Party::Pne(1))
        .into_iter()
        .find(|e| e.in_reply_to == Some(9300))
        .expect("answered");
    assert!(
        matches!(&answer.body, Body::ErrorBody(e) if e.code == ErrorCode::Forbidden),
        "{answer:?}"
    );
    assert_eq!(relayed_to(&h, 2).len(), 1, "nothing more relayed");
    // Group Content to a PNE as a request (not the PN GW's notification): refused, not taken.
    let as_request = Envelope::request(
        9301,
        Address::Entity(id("gw-1")),
        Address::Entity(pne_id(2)),
        GroupContent {
            content_id: genuine.content_id ^ 7,
            ..genuine
        },
    );
    h.inject(Party::Gw, Party::Pne(2), plain(&as_request));
    h.pump();
    assert_eq!(received(&h, 2).len(), 1, "only the relayed one was taken");
    let refusal = h
        .delivered(Party::Pne(2), Party::Gw)
        .into_iter()
        .find(|e| e.in_reply_to == Some(9301))
        .expect("answered");
    assert!(
        matches!(&refusal.body, Body::ErrorBody(e) if e.code == ErrorCode::WrongState),
        "{refusal:?}"
    );
}

/// Content as large as a Group Content carries (256 KiB, docs/security.md §4.11) goes through
/// and is taken whole.
#[test]
fn the_largest_content_goes_through() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    let big = vec![0xa5; 256 * 1024];
    let id = send(&mut h, 0, pn, &big);
    assert!(matches!(
        h.outcome(0, id),
        Outcome::ContentSent { delivered: 2, .. }
    ));
    assert_eq!(received(&h, 1), [("pne-1".to_string(), big)]);
}

#[test]
fn content_relayed_twice_is_taken_once() {
    let (mut h, pn) = with_pn(PneSpec::trusted());
    send(&mut h, 0, pn, PHOTO);
    let frame = h
        .log
        .iter()
        .find(|f| f.to == Party::Pne(2) && f.message == "GroupContent")
        .expect("relayed")
        .body
        .clone();
    h.inject(Party::Gw, Party::Pne(2), frame);
    h.pump();
    assert_eq!(received(&h, 2).len(), 1);
    assert_eq!(refused(&h, 2), ["it was received before (a replay)"]);
}

/// After PNE 2's expulsion the PN is at epoch 2: content reaches only PNE 1, PNE 2 cannot send,
/// and content sealed under epoch 1 (as PNE 2 could still make) is refused by the members.
#[test]
fn a_member_expelled_gets_no_later_content_and_its_old_epoch_is_refused() {
    let (mut h, pn) = with_pn(PneSpec::trusted());
    send(&mut h, 0, pn, b"before");
    let before = relayed_to(&h, 1).pop().unwrap();
    let (epoch1, gk1) = h.pnes[2].group_key_of(&pn).unwrap();
    let now = h.now();
    h.gw.expel(now, pn, pne_id(2)).unwrap();
    h.pump();
    assert!(h.pnes[2].group_key_of(&pn).is_none());
    let sent = send(&mut h, 0, pn, b"after");
    assert_eq!(
        h.outcome(0, sent),
        &Outcome::ContentSent {
            pn_id: pn,
            delivered: 1
        }
    );
    assert_eq!(received(&h, 2), [("pne-1".to_string(), b"before".to_vec())]);
    let now = h.now();
    assert_eq!(
        h.pnes[2].send_group_content(now, pn, b"x".to_vec()),
        Err(CommandError::NotAMember(pn))
    );
    // What the expelled PNE could still seal, under the epoch it held, with its own key.
    let signer = MemberSigningKey::derive(&h.pne_cfgs[2].eukey, "pne-3");
    let b = ContentBinding {
        pn_id: pn.as_bytes(),
        epoch: epoch1,
        sender: "pne-3",
        content_id: 5,
    };
    let old = GroupContent {
        epoch: epoch1,
        sender: pne_id(2),
        content_id: 5,
        sealed: seal_group_content(MachineRng::from_seed_u64(3).get(), &gk1, &signer, &b, b"x")
            .unwrap(),
        certificate: h.pne_cfgs[2].signing.clone().unwrap().certificate,
        ..before
    };
    let env = Envelope::notify(
        9200,
        Address::Entity(id("gw-1")),
        Address::Entity(pne_id(1)),
        old,
    );
    h.inject(Party::Gw, Party::Pne(1), plain(&env));
    h.pump();
    let r = refused(&h, 1);
    assert!(r == ["its sender is not a member of the PN"], "{r:?}");
}

#[test]
fn a_send_is_refused_at_once_without_what_it_needs() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    let now = h.now();
    let other = PnId::from_bytes([9; 16]);
    assert_eq!(
        h.pnes[0].send_group_content(now, other, b"x".to_vec()),
        Err(CommandError::NotAMember(other))
    );
    let big = vec![0; crate::pne::MAX_GROUP_CONTENT + 1];
    assert_eq!(
        h.pnes[0].send_group_content(now, pn, big),
        Err(CommandError::TooLarge)
    );
    // A PNE whose credential holds no certificate can neither send nor believe content.
    let mut cfg = h.pne_cfgs[0].clone();
    cfg.signing = None;
    let mut bare = crate::pne::PneSession::new(cfg, MachineRng::from_seed_u64(4));
    assert_eq!(
        bare.send_group_content(now, pn, b"x".to_vec()),
        Err(CommandError::NoCertificate)
    );
    // Nothing was sent by any of them.
    let before = h.log.len();
    h.pump();
    assert_eq!(h.log.len(), before);
    assert!(h.pnes[0].poll_output().is_none());
}

/// The PN GW relays content only from a proven member, as itself, within its rate, and only to
/// proven links: a stranger's link naming no one, or a member past its burst, is refused.
#[test]
fn the_pn_gw_relays_only_proven_members_within_their_rate() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    send(&mut h, 0, pn, b"first");
    let genuine = relayed_to(&h, 1).pop();
    assert!(
        genuine.is_none(),
        "sealed links: the relay is not readable here"
    );
    // A burst: the first CONTENT_BURST - 1 more go, the next is refused busy.
    let now = h.now();
    let ids: Vec<_> = (0..CONTENT_BURST)
        .map(|n| {
            h.pnes[0]
                .send_group_content(now, pn, vec![n as u8])
                .unwrap()
        })
        .collect();
    h.pump();
    let busy: Vec<_> = ids
        .iter()
        .filter(|id| {
            matches!(
                h.completion(0, **id).map(|c| &c.result),
                Some(Err(Failure::Refused(e))) if e.code == ErrorCode::Busy
            )
        })
        .collect();
    assert_eq!(busy.len(), 1, "one over the burst");
    assert_eq!(received(&h, 1).len(), CONTENT_BURST as usize);
    // Later the bucket has refilled.
    h.advance(crate::gateway::CONTENT_EVERY * 2);
    let id = send(&mut h, 0, pn, b"later");
    assert!(matches!(
        h.outcome(0, id),
        Outcome::ContentSent { delivered: 2, .. }
    ));
}

/// A raw link that never proved anyone asks to relay content in a member's name: nothing is
/// relayed, and the link is refused.
#[test]
fn an_unproven_link_relays_no_content() {
    let mut h = Harness::ready(&[
        PneSpec::cpns(),
        PneSpec::cpns(),
        PneSpec::cpns().impersonating(1),
    ]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    let m = GroupContent {
        pn_id: pn,
        epoch: 1,
        sender: pne_id(1),
        content_id: 1,
        sealed: vec![0; 100],
        certificate: h.pne_cfgs[1].signing.clone().unwrap().certificate,
    };
    let env = Envelope::request(
        4242,
        Address::Entity(pne_id(1)),
        Address::Entity(id("gw-1")),
        m,
    );
    h.inject(Party::Pne(2), Party::Gw, plain(&env));
    h.pump();
    let answers: Vec<_> = h
        .delivered(Party::Gw, Party::Pne(2))
        .into_iter()
        .filter(|e| e.in_reply_to == Some(4242))
        .collect();
    assert!(
        matches!(&answers[..], [Envelope { body: Body::ErrorBody(e), .. }] if e.code == ErrorCode::Conflict),
        "{answers:?}"
    );
    assert!(
        !h.gw_events()
            .iter()
            .any(|e| matches!(e, GatewayEvent::ContentRelayed { .. }))
    );
    assert!(relayed_to(&h, 0).is_empty());
}

/// A PN GW that has not proved itself on the link (a new link, before PAN authentication) is
/// sent no content; one that takes it and never answers lets the send end at its deadline, not
/// before.
#[test]
fn a_send_needs_a_proven_pn_gw_and_ends_at_its_deadline() {
    let (mut h, pn) = with_pn(PneSpec::cpns());
    // PNE 0 back on a new link: it discovered the PN GW, which has proved nothing yet.
    h.relink(0, 21, |_| {});
    let now = h.now();
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    assert!(!h.pnes[0].link_sealed());
    let now = h.now();
    assert_eq!(
        h.pnes[0].send_group_content(now, pn, b"x".to_vec()),
        Err(CommandError::GatewayNotLinked(id("gw-1")))
    );
    // PNE 1 sends; the PN GW's answer is lost.
    h.drop_message("GroupContentSent");
    let sent = send(&mut h, 1, pn, b"lost answer");
    assert!(h.completion(1, sent).is_none());
    h.advance(super::harness::FLOW - std::time::Duration::from_secs(1));
    assert!(h.completion(1, sent).is_none(), "not before its deadline");
    h.advance(std::time::Duration::from_secs(2));
    assert!(matches!(
        h.completion(1, sent).map(|c| &c.result),
        Some(Err(Failure::TimedOut))
    ));
}

/// The PN GW's answer ends a send only if it names the PN sent to (and comes from that PN's
/// proven PN GW): an answer to the same message naming another PN is not taken.
#[test]
fn a_send_ends_only_with_the_answer_for_its_pn() {
    let (mut h, pn) = with_pn(PneSpec::trusted());
    h.drop_message("GroupContentSent");
    let sent = send(&mut h, 1, pn, b"hello");
    let asked = h
        .delivered(Party::Pne(1), Party::Gw)
        .into_iter()
        .rfind(|e| matches!(e.body, Body::GroupContent(_)))
        .expect("sent");
    let answer = |pn_id| {
        plain(&Envelope::response(
            9400 + u64::from(pn_id == pn),
            asked.msg_id,
            Address::Entity(id("gw-1")),
            Address::Entity(pne_id(1)),
            cpns_wire::GroupContentSent {
                pn_id,
                delivered: 2,
            },
        ))
    };
    h.clear_hook();
    h.inject(Party::Gw, Party::Pne(1), answer(PnId::from_bytes([9; 16])));
    h.pump();
    assert!(h.completion(1, sent).is_none(), "another PN's answer");
    h.inject(Party::Gw, Party::Pne(1), answer(pn));
    h.pump();
    assert_eq!(
        h.outcome(1, sent),
        &Outcome::ContentSent {
            pn_id: pn,
            delivered: 2
        }
    );
}
