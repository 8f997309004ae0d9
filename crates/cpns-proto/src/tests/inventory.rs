//! Reading PN inventories (004 §5.5.10): a member reads its own PN from its PN GW; a PN of its
//! user elsewhere, or every PN of its user, from the server over its secure session, end to
//! end; anyone else is refused, and nothing changes.

use std::time::Duration;

use cpns_wire::{
    Address, Body, Envelope, ErrorCode, InventoryQuery, PnId, PnInventory, SetupType, UserId,
};

use super::harness::{Action, FLOW, Harness, Party, plain, pne_id};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};
use crate::server::InventoryChange;
use crate::{Failure, Flow};

/// Three PNs at one PN GW, all of alice's: A = {PNE 0, PNE 1}, B = {PNE 2}, C = {PNE 3}, with
/// every link sealed (each PNE proved itself setting its PN up).
fn three_pns() -> (Harness, [PnId; 3]) {
    let mut h = Harness::ready(&[PneSpec::cpns(); 4]);
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    h.setup(2, SetupType::OneToOne);
    h.setup(3, SetupType::OneToOne);
    let pn = |h: &Harness, i| h.joined(i).expect("established").pn_id;
    let pns = [pn(&h, 0), pn(&h, 2), pn(&h, 3)];
    for i in 0..4 {
        assert!(h.pnes[i].link_sealed(), "PNE {i}");
    }
    (h, pns)
}

/// What PNE `i` read last.
fn read(h: &Harness, i: usize) -> Option<Vec<PnInventory>> {
    h.pne_events(i).into_iter().rev().find_map(|e| match e {
        PneEvent::Completed(crate::Completed {
            result: Ok(Outcome::Inventory { pns, .. }),
            ..
        }) => Some(pns.clone()),
        _ => None,
    })
}

/// The failures of PNE `i`'s inventory queries.
fn refused(h: &Harness, i: usize) -> Vec<Failure> {
    h.pne_failed_flows(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::FlowFailed {
                flow: Flow::InventoryQuery,
                reason,
            } => Some(reason),
            _ => None,
        })
        .collect()
}

fn sent(h: &Harness, from: Party, to: Party, message: &str) -> usize {
    h.log
        .iter()
        .filter(|f| f.from == from && f.to == to && f.message == message)
        .count()
}

fn query(h: &mut Harness, i: usize, pn: Option<PnId>) {
    let now = h.now();
    h.pnes[i].query_inventory(now, pn).unwrap();
    h.pump();
}

/// A member reads its own PN from its PN GW's local inventory: no server round trip.
#[test]
fn a_member_reads_its_own_pn_from_its_pn_gw() {
    let (mut h, [a, ..]) = three_pns();
    let before = sent(&h, Party::Gw, Party::Server, "SecureRequest");
    query(&mut h, 1, Some(a));
    assert_eq!(read(&h, 1), Some(vec![h.store.pns[&a].clone()]));
    assert_eq!(sent(&h, Party::Pne(1), Party::Gw, "InventoryQuery"), 1);
    assert_eq!(sent(&h, Party::Gw, Party::Server, "SecureRequest"), before);
    assert!(refused(&h, 1).is_empty());
}

/// A PN of the same user that the PNE is not in is read from the server, sealed end to end:
/// the PN GW relays a box it cannot read (no member id of the PN in the clear).
#[test]
fn a_remote_pn_of_the_same_user_is_read_from_the_server_end_to_end() {
    let (mut h, [a, b, _]) = three_pns();
    query(&mut h, 0, Some(b));
    assert_eq!(read(&h, 0), Some(vec![h.store.pns[&b].clone()]));
    assert_eq!(sent(&h, Party::Pne(0), Party::Gw, "InventoryQuery"), 0);
    let answer = h
        .log
        .iter()
        .rev()
        .find(|f| f.from == Party::Server && f.message == "SecureResponse")
        .expect("answered over the secure session");
    let member = pne_id(2);
    let clear = answer
        .body
        .windows(member.as_str().len())
        .any(|w| w == member.as_str().as_bytes());
    assert!(!clear, "the PN GW could read the member list");
    // Every PN of the user, when none is named: A, B and C.
    query(&mut h, 0, None);
    let mut all: Vec<PnId> = read(&h, 0).unwrap().iter().map(|p| p.pn_id).collect();
    all.sort();
    let mut want = vec![a, b, h.joined(3).unwrap().pn_id];
    want.sort();
    assert_eq!(all, want);
}

/// An entity of another user reads the PN it is a member of, and nothing else: another user's
/// PN is `forbidden`, an unknown one `not_found`, and its "every PN of my user" is empty.
#[test]
fn another_users_entity_reads_only_what_it_belongs_to() {
    let (mut h, [a, b, c]) = three_pns();
    let mallory = UserId::new("mallory").unwrap();
    h.store.entities.get_mut(&pne_id(3)).unwrap().owner = mallory;
    query(&mut h, 3, Some(a));
    query(&mut h, 3, Some(b));
    query(&mut h, 3, Some(PnId::from_bytes([9; 16])));
    let codes: Vec<ErrorCode> = refused(&h, 3)
        .iter()
        .filter_map(|f| match f {
            Failure::Refused(e) => Some(e.code),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        [
            ErrorCode::Forbidden,
            ErrorCode::Forbidden,
            ErrorCode::NotFound
        ]
    );
    assert_eq!(read(&h, 3), None);
    // Its own PN, from its PN GW; and no PN of its own user anywhere.
    query(&mut h, 3, Some(c));
    assert_eq!(read(&h, 3), Some(vec![h.store.pns[&c].clone()]));
    query(&mut h, 3, None);
    assert_eq!(read(&h, 3), Some(vec![]));
}

/// The PN GW's answer to the raw query PNE `from` sends in `claims`'s name.
fn raw_query(h: &mut Harness, from: usize, claims: usize, pn: Option<PnId>) -> Envelope {
    let env = Envelope::request(
        9_800 + h.log.len() as u64,
        Address::Entity(pne_id(claims)),
        Address::Entity(h.gw_cfg.id.clone()),
        InventoryQuery {
            pn_id: pn,
            follow: None,
        },
    );
    h.pump();
    h.deliver_direct(Party::Pne(from), Party::Gw, &plain(&env))
        .unwrap();
    h.pump();
    h.delivered(Party::Gw, Party::Pne(from))
        .into_iter()
        .rev()
        .find(|e| e.in_reply_to == Some(env.msg_id))
        .expect("answered")
}

/// At the PN GW: a link that has not proved its PNE reads nothing, a proven one reads only
/// the PNs it is a member of (`forbidden` for another, `not_found` for one not served here);
/// no refusal changes any inventory.
#[test]
fn the_pn_gw_answers_only_members_on_proven_links() {
    // Trusted links: each is its PNE once it spoke, and frames stay plain.
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let a = h.joined(0).unwrap().pn_id;
    let inventories = (h.store.pns.clone(), h.store.gw_local.clone());
    let code = |e: &Envelope| e.error().map(|e| e.code);
    let answer = raw_query(&mut h, 2, 2, Some(a));
    assert_eq!(code(&answer), Some(ErrorCode::Forbidden));
    let answer = raw_query(&mut h, 2, 2, Some(PnId::from_bytes([9; 16])));
    assert_eq!(code(&answer), Some(ErrorCode::NotFound));
    // Every PN here it is in: none.
    let answer = raw_query(&mut h, 2, 2, None);
    assert!(matches!(&answer.body, Body::InventoryAnswer(m) if m.pns.is_empty()));
    // In a member's name, on its own link: refused before anything is read.
    let answer = raw_query(&mut h, 2, 0, Some(a));
    assert!(answer.error().is_some(), "{answer:?}");
    // The member itself reads A, and with no PN named, A again.
    let answer = raw_query(&mut h, 1, 1, None);
    assert!(matches!(&answer.body, Body::InventoryAnswer(m) if m.pns == [h.store.pns[&a].clone()]));
    assert_eq!(h.store.pns, inventories.0);
    assert_eq!(h.store.gw_local, inventories.1);

    // On an insecure PAN, a link that has not proved itself since a restart reads nothing.
    let (mut h, [a, ..]) = three_pns();
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    let answer = raw_query(&mut h, 1, 1, Some(a));
    assert_eq!(code(&answer), Some(ErrorCode::Forbidden));
    let answer = raw_query(&mut h, 1, 1, None);
    assert_eq!(code(&answer), Some(ErrorCode::Forbidden));
}

/// A PN GW that never answers: the query fails at its deadline.
#[test]
fn an_unanswered_query_times_out() {
    let (mut h, [a, ..]) = three_pns();
    h.set_hook(|f| {
        if f.message == "InventoryAnswer" {
            Action::Drop
        } else {
            Action::Deliver
        }
    });
    query(&mut h, 1, Some(a));
    assert!(refused(&h, 1).is_empty());
    h.advance(FLOW / 2);
    assert!(refused(&h, 1).is_empty());
    h.advance(FLOW / 2 + Duration::from_secs(1));
    h.pump();
    assert_eq!(refused(&h, 1), [Failure::TimedOut]);
    assert_eq!(read(&h, 1), None);
}

/// A member whose PN GW has not proved itself on this link (after a restart) reads even its own
/// PN from the server, end to end: a PN GW it cannot tell from an impostor is not asked.
#[test]
fn a_member_on_an_unproven_link_reads_its_own_pn_from_the_server() {
    let (mut h, [a, ..]) = three_pns();
    h.restart_from_stores(&[PneSpec::cpns(); 4]);
    h.discover_all();
    let before = sent(&h, Party::Pne(1), Party::Gw, "InventoryQuery");
    query(&mut h, 1, Some(a));
    assert_eq!(read(&h, 1), Some(vec![h.store.pns[&a].clone()]));
    assert_eq!(sent(&h, Party::Pne(1), Party::Gw, "InventoryQuery"), before);
    assert!(refused(&h, 1).is_empty());
}

/// On a trusted bearer (frames plain): the PN GW's refusal of a local query is reported; an
/// answer from another sender, or one nothing asked for, is not believed.
#[test]
fn a_local_answer_is_believed_only_from_the_pn_gw_and_only_when_asked() {
    let mut h = Harness::ready(&[PneSpec::trusted(); 2]);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    // The query is rewritten on its way to name a PN the PN GW does not serve: refused.
    h.set_hook(|f| match f.env() {
        Some(e) if matches!(e.body, Body::InventoryQuery(_)) => {
            Action::Replace(super::harness::rewrite(&f.body, |env| {
                env.body = Body::InventoryQuery(InventoryQuery {
                    pn_id: Some(PnId::from_bytes([9; 16])),
                    follow: None,
                });
            }))
        }
        _ => Action::Deliver,
    });
    query(&mut h, 1, Some(pn));
    assert!(matches!(
        &refused(&h, 1)[..],
        [Failure::Refused(e)] if e.code == ErrorCode::NotFound
    ));
    // An answer that claims to come from another entity.
    h.set_hook(|f| match f.env() {
        Some(e) if matches!(e.body, Body::InventoryAnswer(_)) => {
            Action::Replace(super::harness::rewrite(&f.body, |env| {
                env.from = Address::Entity(pne_id(0));
            }))
        }
        _ => Action::Deliver,
    });
    query(&mut h, 1, Some(pn));
    assert_eq!(read(&h, 1), None);
    h.clear_hook();
    // An answer nothing asked for.
    let unasked = Envelope::response(
        9_950,
        424_242,
        Address::Entity(h.gw_cfg.id.clone()),
        Address::Entity(pne_id(1)),
        cpns_wire::InventoryAnswer {
            pns: vec![],
            services: vec![],
        },
    );
    h.deliver_direct(Party::Gw, Party::Pne(1), &plain(&unasked))
        .unwrap();
    assert_eq!(read(&h, 1), None);
    // Asked properly, it reads its PN.
    query(&mut h, 1, Some(pn));
    assert_eq!(read(&h, 1), Some(vec![h.store.pns[&pn].clone()]));
}

/// What PNE `i` read last, with what its members offer.
fn read_with_services(
    h: &Harness,
    i: usize,
) -> Option<(Vec<PnInventory>, Vec<cpns_wire::MemberServices>)> {
    h.pne_events(i).into_iter().rev().find_map(|e| match e {
        PneEvent::Completed(crate::Completed {
            result: Ok(Outcome::Inventory { pns, services }),
            ..
        }) => Some((pns.clone(), services.clone())),
        _ => None,
    })
}

fn item(name: &str) -> cpns_wire::ContentItem {
    cpns_wire::ContentItem {
        name: name.into(),
        media_type: "video/mp4".into(),
    }
}

/// 004 §5.5.10: "the information of PNE(s) contains device capability and information of
/// service / content". PNE 1 declares what it holds (replacing what it announced at set-up) and
/// PNE 3 publishes a user-scoped service; PNE 0 reads its user's PNs from the server and sees
/// both, each under its member.
#[test]
fn an_inventory_from_the_server_shows_what_members_hold_and_offer() {
    let (mut h, pns) = three_pns();
    let now = h.now();
    let id = h.pnes[1]
        .declare_contents(now, vec![item("holiday.mp4"), item("wedding.mp4")])
        .unwrap();
    h.pump();
    assert_eq!(h.outcome(1, id), &Outcome::ContentsDeclared { count: 2 });
    let doc = br#"{"service_id":"renderer","name":"Bedroom TV","type":"media.renderer","version":"1","keywords":["video"],"scope":{"kind":"user"},"delivery":["push"],"lease_s":3600}"#;
    let now = h.now();
    h.pnes[3].publish_service(now, doc.to_vec()).unwrap();
    h.pump();
    query(&mut h, 0, None);
    let (read, services) = read_with_services(&h, 0).expect("read");
    assert_eq!(read.len(), 3);
    let pn_a = read.iter().find(|p| p.pn_id == pns[0]).unwrap();
    let member = pn_a.members.iter().find(|m| m.pne_id == pne_id(1)).unwrap();
    assert_eq!(member.contents, [item("holiday.mp4"), item("wedding.mp4")]);
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(services[0].pne, pne_id(3));
    assert_eq!(
        (
            services[0].services[0].service_id.as_str(),
            services[0].services[0].name.as_str()
        ),
        ("renderer", "Bedroom TV")
    );
    // The PN GW's local answer names members and what they announced; services are the
    // server's.
    query(&mut h, 0, Some(pns[0]));
    let (_, local) = read_with_services(&h, 0).unwrap();
    assert!(local.is_empty());
}

#[test]
fn a_bad_contents_declaration_is_refused_with_its_reason_and_changes_nothing() {
    let (mut h, pns) = three_pns();
    let now = h.now();
    let too_many: Vec<_> = (0..=cpns_wire::MAX_CONTENTS)
        .map(|n| item(&format!("clip-{n}.mp4")))
        .collect();
    let bad = [
        too_many,
        vec![item("")],
        vec![item(&"x".repeat(256))],
        vec![item("a\u{1}b")],
        vec![item("same"), item("same")],
        vec![cpns_wire::ContentItem {
            name: "ok".into(),
            media_type: String::new(),
        }],
    ];
    for contents in bad.clone() {
        assert!(matches!(
            h.pnes[1].declare_contents(now, contents),
            Err(crate::CommandError::InvalidContents(_))
        ));
    }
    // The same, crafted past the PNE's own checks: the server refuses each.
    for contents in bad {
        let payload = minicbor::to_vec(cpns_wire::ContentsDeclare { items: contents }).unwrap();
        let now = h.now();
        let id = h.pnes[1]
            .secure_call(now, cpns_wire::CONTENTS_SERVICE, payload)
            .unwrap();
        h.pump();
        assert!(
            matches!(h.completion(1, id).map(|c| &c.result),
                Some(Err(Failure::Refused(e))) if e.code == ErrorCode::BadRequest),
            "{:?}",
            h.completion(1, id)
        );
    }
    query(&mut h, 0, None);
    let read = read(&h, 0).unwrap();
    let pn_a = read.iter().find(|p| p.pn_id == pns[0]).unwrap();
    assert!(pn_a.members.iter().all(|m| m.contents.is_empty()));
}

/// The inventory changes the server tells its owner's followers of (004 §5.5.10), one per
/// change: PNs set up, a member declaring contents or publishing, a member leaving.
#[test]
fn the_server_tells_each_inventory_change_with_its_owner() {
    use crate::server::ServerEvent;
    let (mut h, pns) = three_pns();
    let changes = |h: &Harness| -> Vec<(
        String,
        Option<PnId>,
        Option<cpns_wire::EntityId>,
        InventoryChange,
    )> {
        h.server_events()
            .into_iter()
            .filter_map(|e| match e {
                ServerEvent::InventoryChanged {
                    owner,
                    pn_id,
                    pne,
                    change,
                } => Some((owner.to_string(), *pn_id, pne.clone(), *change)),
                _ => None,
            })
            .collect()
    };
    let set_up: Vec<_> = changes(&h)
        .into_iter()
        .filter(|c| c.3 == InventoryChange::Established)
        .map(|c| (c.0, c.1))
        .collect();
    assert_eq!(
        set_up,
        pns.iter()
            .map(|p| ("alice".to_string(), Some(*p)))
            .collect::<Vec<_>>()
    );
    let before = changes(&h).len();
    let now = h.now();
    h.pnes[1]
        .declare_contents(now, vec![item("holiday.mp4")])
        .unwrap();
    h.pump();
    let doc = br#"{"service_id":"renderer","name":"TV","type":"media.renderer","version":"1","keywords":["video"],"scope":{"kind":"user"},"delivery":["push"],"lease_s":3600}"#;
    let now = h.now();
    h.pnes[3].publish_service(now, doc.to_vec()).unwrap();
    h.pump();
    let now = h.now();
    h.pnes[1].leave_pn(now, pns[0]).unwrap();
    h.pump();
    let after = changes(&h)[before..].to_vec();
    assert_eq!(
        after,
        [
            (
                "alice".into(),
                None,
                Some(pne_id(1)),
                InventoryChange::Contents
            ),
            (
                "alice".into(),
                None,
                Some(pne_id(3)),
                InventoryChange::Services
            ),
            (
                "alice".into(),
                Some(pns[0]),
                Some(pne_id(1)),
                InventoryChange::Left
            ),
        ]
    );
    // A declaration refused by the server changes nothing, and tells nothing.
    let payload = minicbor::to_vec(cpns_wire::ContentsDeclare {
        items: vec![item(""), item("x")],
    })
    .unwrap();
    let now = h.now();
    h.pnes[2]
        .secure_call(now, cpns_wire::CONTENTS_SERVICE, payload)
        .unwrap();
    h.pump();
    assert_eq!(changes(&h).len(), before + 3);
}

/// The inventory changes PNE `i` was told, in order.
fn told(h: &Harness, i: usize) -> Vec<(PnId, Option<cpns_wire::EntityId>, InventoryChange)> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::InventoryChanged { pn_id, pne, change } => {
                Some((*pn_id, pne.clone(), *change))
            }
            _ => None,
        })
        .collect()
}

fn follow(h: &mut Harness, i: usize, pn: PnId, on: bool) {
    let now = h.now();
    h.pnes[i].follow_inventory(now, pn, on).unwrap();
    h.pump();
}

const VIDEO: &[u8] = br#"{"service_id":"renderer","name":"TV","type":"media.renderer","version":"1","keywords":["video"],"scope":{"kind":"user"},"delivery":["push"],"lease_s":3600}"#;

/// A member follows its PN's inventory through its PN GW (docs/services.md, "Following the
/// changes"): told of another member's contents and services (which the server tells the PN GW,
/// what changed and not the change) and of members leaving, never of another PN's changes; a
/// stop ends it. Over sealed links.
#[test]
fn a_member_following_its_pn_is_told_each_change_and_no_other_pns() {
    let (mut h, [a, _, c]) = three_pns();
    let now = h.now();
    assert_eq!(
        h.pnes[2].follow_inventory(now, a, true),
        Err(crate::CommandError::NotAMember(a)),
        "a PN it is not a member of"
    );
    follow(&mut h, 0, a, true);
    assert_eq!(read(&h, 0), Some(vec![h.store.pns[&a].clone()]));
    assert_eq!(h.pnes[0].following(), [a]);
    let now = h.now();
    h.pnes[1]
        .declare_contents(now, vec![item("holiday.mp4")])
        .unwrap();
    h.pump();
    let now = h.now();
    h.pnes[1].publish_service(now, VIDEO.to_vec()).unwrap();
    h.pump();
    // PNE 3 is in C only: its service is no change of A.
    let now = h.now();
    h.pnes[3].publish_service(now, VIDEO.to_vec()).unwrap();
    h.pump();
    assert_eq!(
        told(&h, 0),
        [
            (a, Some(pne_id(1)), InventoryChange::Contents),
            (a, Some(pne_id(1)), InventoryChange::Services),
        ]
    );
    for i in 1..4 {
        assert!(told(&h, i).is_empty(), "PNE {i} follows nothing");
    }
    // PNE 2 joins A by registering in it.
    h.register(2, Some(a));
    assert_eq!(
        told(&h, 0)[2..],
        [(a, Some(pne_id(2)), InventoryChange::Joined)]
    );
    // Stopped: nothing more; following again, PNE 1 leaving is told.
    follow(&mut h, 0, a, false);
    assert!(h.pnes[0].following().is_empty());
    let now = h.now();
    h.pnes[1]
        .declare_contents(now, vec![item("b.mp4")])
        .unwrap();
    h.pump();
    assert_eq!(told(&h, 0).len(), 3);
    follow(&mut h, 0, a, true);
    let now = h.now();
    h.pnes[1].leave_pn(now, a).unwrap();
    h.pump();
    assert_eq!(
        told(&h, 0)[3..],
        [(a, Some(pne_id(1)), InventoryChange::Left)]
    );
    // C's only member follows it and releases it: told, and following nothing after.
    follow(&mut h, 3, c, true);
    let now = h.now();
    h.pnes[3].release_pn(now, c).unwrap();
    h.pump();
    assert!(h.pnes[3].following().is_empty());
    assert_eq!(told(&h, 3), [(c, None, InventoryChange::Released)], "once");
    // PNE 2 follows A and leaves it: told it left, once.
    follow(&mut h, 2, a, true);
    let now = h.now();
    h.pnes[2].leave_pn(now, a).unwrap();
    h.pump();
    assert_eq!(told(&h, 2), [(a, Some(pne_id(2)), InventoryChange::Left)]);
    assert!(h.pnes[2].following().is_empty());
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// At the PN GW, on plain links: a following is the link's, for PNs its PNE is a member of
/// (a stranger's follow is refused and tells it nothing after); a change notice a PNE sends is
/// refused, tells nobody; a PNE drops a notice of a PN it does not follow, or from other than
/// its PN GW.
#[test]
fn only_members_follow_and_only_the_pn_gw_tells() {
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let a = h.joined(0).unwrap().pn_id;
    follow(&mut h, 0, a, true);
    // PNE 2 (in no PN) asks to follow A on its own link.
    let ask = Envelope::request(
        9_900,
        Address::Entity(pne_id(2)),
        Address::Entity(h.gw_cfg.id.clone()),
        InventoryQuery {
            pn_id: Some(a),
            follow: Some(true),
        },
    );
    h.deliver_direct(Party::Pne(2), Party::Gw, &plain(&ask))
        .unwrap();
    h.pump();
    let answer = h
        .delivered(Party::Gw, Party::Pne(2))
        .into_iter()
        .find(|e| e.in_reply_to == Some(9_900))
        .expect("answered");
    assert_eq!(answer.error().map(|e| e.code), Some(ErrorCode::Forbidden));
    // A notice PNE 1 makes up: refused at the PN GW, relayed to nobody.
    let forged = Envelope::notify(
        9_901,
        Address::Entity(pne_id(1)),
        Address::Entity(h.gw_cfg.id.clone()),
        cpns_wire::InventoryChanged {
            pn_id: Some(a),
            pne: Some(pne_id(1)),
            change: InventoryChange::Left,
        },
    );
    h.deliver_direct(Party::Pne(1), Party::Gw, &plain(&forged))
        .unwrap();
    h.pump();
    let now = h.now();
    h.pnes[1]
        .declare_contents(now, vec![item("holiday.mp4")])
        .unwrap();
    h.pump();
    let notices = |h: &Harness, i: usize| {
        h.delivered(Party::Gw, Party::Pne(i))
            .into_iter()
            .filter(|e| matches!(e.body, Body::InventoryChanged(_)))
            .count()
    };
    assert_eq!(notices(&h, 0), 1, "the declaration only");
    assert_eq!(
        told(&h, 0),
        [(a, Some(pne_id(1)), InventoryChange::Contents)]
    );
    assert_eq!(notices(&h, 2), 0, "the stranger is told nothing");
    assert_eq!(notices(&h, 1), 0, "PNE 1 follows nothing");
    // At PNE 0: a notice of a PN it does not follow, and one from PNE 1's address, are dropped.
    for (from, pn) in [
        (
            Address::Entity(h.gw_cfg.id.clone()),
            PnId::from_bytes([9; 16]),
        ),
        (Address::Entity(pne_id(1)), a),
    ] {
        let note = Envelope::notify(
            9_902,
            from,
            Address::Entity(pne_id(0)),
            cpns_wire::InventoryChanged {
                pn_id: Some(pn),
                pne: None,
                change: InventoryChange::Released,
            },
        );
        h.deliver_direct(Party::Gw, Party::Pne(0), &plain(&note))
            .unwrap();
        h.pump();
    }
    assert_eq!(told(&h, 0).len(), 1);
    assert_eq!(h.pnes[0].following(), [a]);
}

/// A follower whose link drops follows again once its next link's connection set-up in the PN
/// is done, and is given the inventory as it is then; changes after are told again.
#[test]
fn a_follower_whose_link_came_back_follows_again() {
    let (mut h, [a, ..]) = three_pns();
    follow(&mut h, 0, a, true);
    let kept = h.pnes[0].following();
    h.relink(0, 77, |p| p.restore_following(kept));
    super::delivery::link_again(&mut h, 0);
    let again: Vec<PnInventory> = h
        .pne_events(0)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::InventoryFollowedAgain { inventory } => Some(inventory.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(again, [h.store.pns[&a].clone()]);
    let now = h.now();
    h.pnes[1]
        .declare_contents(now, vec![item("holiday.mp4")])
        .unwrap();
    h.pump();
    assert_eq!(
        told(&h, 0),
        [(a, Some(pne_id(1)), InventoryChange::Contents)]
    );
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

/// A notice as PNE `i`'s PN GW would send it on its plain link, of kind `kind`.
fn notice_to(
    h: &mut Harness,
    i: usize,
    id: u64,
    request: bool,
    change: cpns_wire::InventoryChanged,
) {
    let from = Address::Entity(h.gw_cfg.id.clone());
    let to = Address::Entity(pne_id(i));
    let env = if request {
        Envelope::request(id, from, to, change)
    } else {
        Envelope::notify(id, from, to, change)
    };
    h.deliver_direct(Party::Gw, Party::Pne(i), &plain(&env))
        .unwrap();
    h.pump();
}

/// At a follower: what its PN GW says of it leaving (or of the PN's release) ends its
/// following, what it says of another member's leaving does not; a notice sent as a request is
/// no notice.
#[test]
fn a_follower_stops_following_when_told_it_left_or_the_pn_went() {
    let mut h = Harness::ready(&[PneSpec::trusted(); 2]);
    h.setup(0, SetupType::Invite(vec![pne_id(1)]));
    let a = h.joined(0).unwrap().pn_id;
    let change = |pne: Option<usize>, change| cpns_wire::InventoryChanged {
        pn_id: Some(a),
        pne: pne.map(pne_id),
        change,
    };
    follow(&mut h, 0, a, true);
    notice_to(
        &mut h,
        0,
        9_910,
        true,
        change(Some(1), InventoryChange::Left),
    );
    assert!(told(&h, 0).is_empty(), "a request is no notice");
    notice_to(
        &mut h,
        0,
        9_911,
        false,
        change(Some(1), InventoryChange::Left),
    );
    assert_eq!(h.pnes[0].following(), [a], "another member left");
    notice_to(
        &mut h,
        0,
        9_912,
        false,
        change(Some(0), InventoryChange::Joined),
    );
    assert_eq!(h.pnes[0].following(), [a], "it joined: no leaving");
    notice_to(
        &mut h,
        0,
        9_913,
        false,
        change(Some(0), InventoryChange::Left),
    );
    assert!(h.pnes[0].following().is_empty(), "it left");
    follow(&mut h, 0, a, true);
    notice_to(
        &mut h,
        0,
        9_914,
        false,
        change(None, InventoryChange::Released),
    );
    assert!(h.pnes[0].following().is_empty(), "released");
    assert_eq!(told(&h, 0).len(), 4);
}

/// At the PN GW: a member that leaves stops being told (and the others still are); a release
/// is told to every follower; a change the server sends as a request is relayed to nobody; a
/// PNE whose PN GW is not on its link cannot follow.
#[test]
fn the_pn_gw_stops_telling_a_member_that_left_and_tells_a_release() {
    let mut h = Harness::ready(&[PneSpec::trusted(); 3]);
    h.setup(0, SetupType::Invite(vec![pne_id(1), pne_id(2)]));
    let a = h.joined(0).unwrap().pn_id;
    for i in [0, 2] {
        follow(&mut h, i, a, true);
    }
    let notices = |h: &Harness, i: usize| {
        h.delivered(Party::Gw, Party::Pne(i))
            .into_iter()
            .filter_map(|e| match e.body {
                Body::InventoryChanged(c) => Some(c.change),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let now = h.now();
    h.pnes[2].leave_pn(now, a).unwrap();
    h.pump();
    let at_2 = notices(&h, 2).len();
    let now = h.now();
    h.pnes[1]
        .declare_contents(now, vec![item("late.mp4")])
        .unwrap();
    h.pump();
    assert_eq!(notices(&h, 2).len(), at_2, "PNE 2 left: told nothing after");
    assert_eq!(
        notices(&h, 0),
        [InventoryChange::Left, InventoryChange::Contents]
    );
    // The server's word sent as a request: relayed to nobody.
    let env = Envelope::request(
        9_920,
        Address::Server,
        Address::Entity(h.gw_cfg.id.clone()),
        cpns_wire::InventoryChanged {
            pn_id: None,
            pne: Some(pne_id(1)),
            change: InventoryChange::Services,
        },
    );
    h.deliver_direct(Party::Server, Party::Gw, &plain(&env))
        .unwrap();
    h.pump();
    assert_eq!(notices(&h, 0).len(), 2);
    // The PN GW releases A: PNE 0 is told on its link.
    let now = h.now();
    h.pnes[0].release_pn(now, a).unwrap();
    h.pump();
    assert_eq!(notices(&h, 0).last(), Some(&InventoryChange::Released));
    // A PNE whose PN GW is on its link but not proven yet (discovered again, on an insecure
    // PAN) cannot follow; nor one with no PN GW on its link.
    let (mut h, [b, ..]) = three_pns();
    h.relink(0, 78, |_| {});
    let now = h.now();
    assert!(matches!(
        h.pnes[0].follow_inventory(now, b, true),
        Err(crate::CommandError::GatewayNotLinked(_))
    ));
    h.pnes[0].start_discovery(now).unwrap();
    h.pump();
    let now = h.now();
    assert!(matches!(
        h.pnes[0].follow_inventory(now, b, true),
        Err(crate::CommandError::GatewayNotLinked(_))
    ));
}
