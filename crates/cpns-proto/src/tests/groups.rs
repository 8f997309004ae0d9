//! Service groups at the server (004 §5.5.9, §5.5.7.2; docs/services.md, "Service groups"):
//! made, joined by invitation (the invitee's consent) or, open to the owner's devices, by
//! asking; each change a new epoch whose key is pushed, sealed, to the members that remain or
//! join and never to one that left; pulled by a member; content relayed to the others; every
//! act of another's authority refused. The PNEs here speak through raw secure calls (the typed
//! commands are the PNE's to come); pushes are read by opening the notices delivered to them.

use cpns_crypto::{NoticeBinding, open_secure_notice};
use cpns_wire::{
    Body, ErrorBody, ErrorCode, GROUP_ANSWER, GROUP_CONTENT, GROUP_CREATE, GROUP_DELETE,
    GROUP_ENDED, GROUP_EXPEL, GROUP_INVITE, GROUP_INVITED, GROUP_JOIN, GROUP_KEY, GROUP_KEY_PUSH,
    GROUP_LEAVE, GROUP_MEMBERS, GROUP_SEND, GroupAnswer, GroupContentBox, GroupCreate, GroupDone,
    GroupEndReason, GroupEnded, GroupExpel, GroupId, GroupInvitation, GroupInvite, GroupKeyCopy,
    GroupMembers, GroupRef, MemberCertificate, PublicKeyBytes, SecureCall, SetupType,
    SignatureBytes, UserId,
};

use super::harness::{Harness, Party, pne_id};
use super::store::PneSpec;
use crate::Failure;
use crate::pne::Outcome;

/// PNEs 0, 1 and 2 are members of one PN, each with its SK_PNE there.
fn world() -> Harness {
    let mut cfg = crate::server::ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::with_server(&specs, cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    h
}

/// PNE `i` calls `service` with `payload`: the answer's payload, or the refusal.
fn call<T: minicbor::Encode<()>>(
    h: &mut Harness,
    i: usize,
    service: &str,
    payload: &T,
) -> Result<Vec<u8>, ErrorBody> {
    let now = h.now();
    let id = h.pnes[i]
        .secure_call(now, service, minicbor::to_vec(payload).unwrap())
        .unwrap();
    h.pump();
    match h.completion(i, id).map(|c| c.result.clone()) {
        Some(Ok(Outcome::SecureAnswer {
            service: s,
            payload,
        })) => {
            assert_eq!(s, service);
            Ok(payload)
        }
        Some(Err(Failure::Refused(e))) => Err(e),
        other => panic!("{service}: {other:?}"),
    }
}

fn decode<T: for<'b> minicbor::Decode<'b, ()>>(b: Vec<u8>) -> T {
    minicbor::decode(&b).unwrap()
}

/// The notices delivered to PNE `i`, opened under its SK_PNE of the PN each names.
fn pushed(h: &Harness, i: usize) -> Vec<SecureCall> {
    let me = pne_id(i);
    h.log
        .iter()
        .filter(|f| f.to == Party::Pne(i))
        .filter_map(|f| match f.env()?.body {
            Body::SecureNotice(n) => Some(n),
            _ => None,
        })
        .filter_map(|n| {
            let sk = h.store.session_keys.get(&(n.pn_id, me.clone()))?;
            let b = NoticeBinding {
                pn_id: n.pn_id.as_bytes(),
                pne_id: me.as_str(),
                notice_id: n.notice_id,
            };
            let plain = open_secure_notice(sk, &b, &n.sealed).ok()?;
            minicbor::decode(&plain).ok()
        })
        .collect()
}

/// The pushes of `service` PNE `i` got, decoded.
fn pushes<T: for<'b> minicbor::Decode<'b, ()>>(h: &Harness, i: usize, service: &str) -> Vec<T> {
    pushed(h, i)
        .into_iter()
        .filter(|c| c.service == service)
        .map(|c| decode(c.payload))
        .collect()
}

fn create(h: &mut Harness, i: usize, open_to_user: bool) -> GroupId {
    let made = GroupCreate {
        name: "Holiday album".into(),
        open_to_user,
        owning: None,
    };
    let copy: GroupKeyCopy = decode(call(h, i, GROUP_CREATE, &made).unwrap());
    assert_eq!((copy.epoch, copy.name.as_str()), (1, "Holiday album"));
    copy.group_id
}

/// PNE 0 makes a group and invites PNE `i`, which accepts: its copy.
fn joined(h: &mut Harness, g: GroupId, i: usize) -> GroupKeyCopy {
    let invite = GroupInvite {
        group_id: g,
        invitee: pne_id(i),
    };
    let _: GroupDone = decode(call(h, 0, GROUP_INVITE, &invite).unwrap());
    let answer = GroupAnswer {
        group_id: g,
        accept: true,
    };
    decode(call(h, i, GROUP_ANSWER, &answer).unwrap())
}

fn members(h: &mut Harness, i: usize, g: GroupId) -> Vec<String> {
    let m: GroupMembers = decode(call(h, i, GROUP_MEMBERS, &GroupRef { group_id: g }).unwrap());
    m.members.iter().map(|m| m.entity.to_string()).collect()
}

fn code(r: Result<Vec<u8>, ErrorBody>) -> ErrorCode {
    r.unwrap_err().code
}

#[test]
fn an_invitation_accepted_moves_the_group_to_a_new_key_pushed_to_the_members() {
    let mut h = world();
    let g = create(&mut h, 0, false);
    let invite = GroupInvite {
        group_id: g,
        invitee: pne_id(1),
    };
    let _: GroupDone = decode(call(&mut h, 0, GROUP_INVITE, &invite).unwrap());
    let told: Vec<GroupInvitation> = pushes(&h, 1, GROUP_INVITED);
    assert_eq!(told.len(), 1);
    assert_eq!((told[0].group_id, &told[0].inviter), (g, &pne_id(0)));
    assert_eq!(told[0].owner, UserId::new("alice").unwrap());
    // It holds five minutes from now.
    let now_ms = super::harness::WALL_AT_BASE
        + i64::try_from(h.now().duration_since(h.base).as_millis()).unwrap();
    assert_eq!(
        told[0].expires_at_ms,
        u64::try_from(now_ms + 5 * 60 * 1000).unwrap()
    );
    // Not a member until it consents.
    assert_eq!(
        code(call(&mut h, 1, GROUP_KEY, &GroupRef { group_id: g })),
        ErrorCode::Forbidden
    );
    let answer = GroupAnswer {
        group_id: g,
        accept: true,
    };
    let mine: GroupKeyCopy = decode(call(&mut h, 1, GROUP_ANSWER, &answer).unwrap());
    assert_eq!(mine.epoch, 2);
    assert_eq!(mine.key.0, *h.store.groups[&g].key.expose_secret());
    // The owner got the new key pushed; the joiner got it in its answer, not twice.
    let owner: Vec<GroupKeyCopy> = pushes(&h, 0, GROUP_KEY_PUSH);
    assert_eq!(owner.len(), 1);
    assert_eq!((owner[0].epoch, &owner[0].key), (2, &mine.key));
    assert!(pushes::<GroupKeyCopy>(&h, 1, GROUP_KEY_PUSH).is_empty());
    assert_eq!(
        members(&mut h, 1, g),
        [pne_id(0).to_string(), pne_id(1).to_string()]
    );
    let listed: GroupMembers =
        decode(call(&mut h, 1, GROUP_MEMBERS, &GroupRef { group_id: g }).unwrap());
    let owners: Vec<bool> = listed.members.iter().map(|m| m.is_owner).collect();
    assert_eq!(owners, [true, false], "the owner first, and only it");
    assert_eq!((listed.epoch, listed.name.as_str()), (2, "Holiday album"));
    // A pull gives the same.
    let pulled: GroupKeyCopy =
        decode(call(&mut h, 1, GROUP_KEY, &GroupRef { group_id: g }).unwrap());
    assert_eq!((pulled.epoch, &pulled.key), (2, &mine.key));
    // The invitation is used up.
    assert_eq!(
        code(call(&mut h, 1, GROUP_ANSWER, &answer)),
        ErrorCode::Conflict
    );
    // Nothing of the key crossed the PN GW in the clear.
    assert!(
        h.log
            .iter()
            .all(|f| !f.body.windows(32).any(|w| w == mine.key.0.as_slice())),
        "a group key crossed the PN GW in the clear"
    );
}

#[test]
fn an_expelled_member_gets_no_later_key_and_is_told() {
    let mut h = world();
    let g = create(&mut h, 0, false);
    joined(&mut h, g, 1);
    let two = joined(&mut h, g, 2);
    assert_eq!(two.epoch, 3);
    let expel = GroupExpel {
        group_id: g,
        member: pne_id(1),
    };
    let done: GroupDone = decode(call(&mut h, 0, GROUP_EXPEL, &expel).unwrap());
    assert_eq!(done.epoch, 4);
    let ended: Vec<GroupEnded> = pushes(&h, 1, GROUP_ENDED);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].why, GroupEndReason::Expelled);
    let epochs = |h: &Harness, i| -> Vec<u64> {
        pushes::<GroupKeyCopy>(h, i, GROUP_KEY_PUSH)
            .iter()
            .map(|c| c.epoch)
            .collect()
    };
    assert_eq!(epochs(&h, 2), [4], "the one that stays");
    assert_eq!(epochs(&h, 1), [3], "the expelled one got 3, never 4");
    assert_eq!(
        code(call(&mut h, 1, GROUP_KEY, &GroupRef { group_id: g })),
        ErrorCode::Forbidden
    );
    let now4 = h.store.groups[&g].key.expose_secret().to_vec();
    assert!(
        pushed(&h, 1)
            .iter()
            .all(|c| !c.payload.windows(32).any(|w| w == now4.as_slice())),
        "the expelled member holds no copy of the new key"
    );
    // A member leaving moves it again; the owner is told the next key.
    let _: GroupDone = decode(call(&mut h, 2, GROUP_LEAVE, &GroupRef { group_id: g }).unwrap());
    assert_eq!(epochs(&h, 0).last(), Some(&5));
    assert_eq!(members(&mut h, 0, g), [pne_id(0).to_string()]);
}

#[test]
fn content_goes_to_the_other_members_from_a_member_in_its_own_name_at_the_current_epoch() {
    let mut h = world();
    let g = create(&mut h, 0, false);
    let copy = joined(&mut h, g, 1);
    let content = |sender: usize, epoch: u64| GroupContentBox {
        group_id: g,
        epoch,
        sender: pne_id(sender),
        content_id: 7,
        sealed: vec![0x5c; 100],
        certificate: MemberCertificate {
            pne_id: pne_id(sender),
            owner: UserId::new("alice").unwrap(),
            key: PublicKeyBytes([1; 32]),
            signature: SignatureBytes([2; 64]),
        },
    };
    let done: GroupDone = decode(call(&mut h, 1, GROUP_SEND, &content(1, copy.epoch)).unwrap());
    assert_eq!(done.delivered, 1);
    let got: Vec<GroupContentBox> = pushes(&h, 0, GROUP_CONTENT);
    assert_eq!(got, [content(1, copy.epoch)]);
    assert!(
        pushes::<GroupContentBox>(&h, 1, GROUP_CONTENT).is_empty(),
        "not to itself"
    );
    // In another's name, at an old epoch, from a non-member, too large: refused, nothing sent.
    assert_eq!(
        code(call(&mut h, 1, GROUP_SEND, &content(0, copy.epoch))),
        ErrorCode::Forbidden
    );
    // Its own name on the box, another's certificate in it: refused too.
    let mut passed_off = content(1, copy.epoch);
    passed_off.certificate.pne_id = pne_id(0);
    assert_eq!(
        code(call(&mut h, 1, GROUP_SEND, &passed_off)),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(call(&mut h, 1, GROUP_SEND, &content(1, 1))),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(call(&mut h, 2, GROUP_SEND, &content(2, copy.epoch))),
        ErrorCode::Forbidden
    );
    let mut big = content(1, copy.epoch);
    big.sealed = vec![0; 256 * 1024 + 1];
    assert_eq!(
        code(call(&mut h, 1, GROUP_SEND, &big)),
        ErrorCode::BadRequest
    );
    assert_eq!(pushes::<GroupContentBox>(&h, 0, GROUP_CONTENT).len(), 1);
    // 256 KiB is still content.
    big.sealed.pop();
    let done: GroupDone = decode(call(&mut h, 1, GROUP_SEND, &big).unwrap());
    assert_eq!(done.delivered, 1);
}

#[test]
fn only_the_owner_invites_expels_and_deletes_and_a_non_member_changes_nothing() {
    let mut h = world();
    let g = create(&mut h, 0, false);
    joined(&mut h, g, 1);
    let before = h.store.groups[&g].epoch;
    let invite = GroupInvite {
        group_id: g,
        invitee: pne_id(2),
    };
    assert_eq!(
        code(call(&mut h, 1, GROUP_INVITE, &invite)),
        ErrorCode::Forbidden
    );
    let expel = GroupExpel {
        group_id: g,
        member: pne_id(0),
    };
    assert_eq!(
        code(call(&mut h, 1, GROUP_EXPEL, &expel)),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(call(&mut h, 0, GROUP_EXPEL, &expel)),
        ErrorCode::Conflict,
        "the owner"
    );
    let stranger = GroupExpel {
        group_id: g,
        member: pne_id(2),
    };
    assert_eq!(
        code(call(&mut h, 0, GROUP_EXPEL, &stranger)),
        ErrorCode::NotFound
    );
    let r = GroupRef { group_id: g };
    assert_eq!(
        code(call(&mut h, 1, GROUP_DELETE, &r)),
        ErrorCode::Forbidden
    );
    assert_eq!(code(call(&mut h, 0, GROUP_LEAVE, &r)), ErrorCode::Conflict);
    assert_eq!(code(call(&mut h, 2, GROUP_LEAVE, &r)), ErrorCode::NotFound);
    assert_eq!(
        code(call(&mut h, 2, GROUP_MEMBERS, &r)),
        ErrorCode::Forbidden
    );
    // Not open: asking to join is refused; an answer without an invitation too.
    assert_eq!(code(call(&mut h, 2, GROUP_JOIN, &r)), ErrorCode::Forbidden);
    let answer = GroupAnswer {
        group_id: g,
        accept: true,
    };
    assert_eq!(
        code(call(&mut h, 2, GROUP_ANSWER, &answer)),
        ErrorCode::NotFound
    );
    assert_eq!(h.store.groups[&g].epoch, before, "nothing changed");
    assert_eq!(h.store.groups[&g].members.len(), 2);
    // No such group.
    let none = GroupRef {
        group_id: GroupId::from_bytes([9; 16]),
    };
    assert_eq!(code(call(&mut h, 0, GROUP_KEY, &none)), ErrorCode::NotFound);
}

#[test]
fn a_decline_drops_the_invitation_and_an_open_group_takes_its_owners_devices() {
    let mut h = world();
    let g = create(&mut h, 0, false);
    let invite = GroupInvite {
        group_id: g,
        invitee: pne_id(1),
    };
    let _: GroupDone = decode(call(&mut h, 0, GROUP_INVITE, &invite).unwrap());
    let no = GroupAnswer {
        group_id: g,
        accept: false,
    };
    let _: GroupDone = decode(call(&mut h, 1, GROUP_ANSWER, &no).unwrap());
    assert!(h.store.group_invites.is_empty());
    let yes = GroupAnswer {
        group_id: g,
        accept: true,
    };
    assert_eq!(
        code(call(&mut h, 1, GROUP_ANSWER, &yes)),
        ErrorCode::NotFound
    );
    // An open group: a device of the owner's user joins by asking; another user's does not.
    let open = create(&mut h, 0, true);
    let copy: GroupKeyCopy =
        decode(call(&mut h, 1, GROUP_JOIN, &GroupRef { group_id: open }).unwrap());
    assert_eq!(copy.epoch, 2);
    h.store.entities.get_mut(&pne_id(2)).unwrap().owner = UserId::new("carol").unwrap();
    assert_eq!(
        code(call(&mut h, 2, GROUP_JOIN, &GroupRef { group_id: open })),
        ErrorCode::Forbidden
    );
}

#[test]
fn a_deleted_group_tells_its_members_and_is_gone() {
    let mut h = world();
    let g = create(&mut h, 0, false);
    joined(&mut h, g, 1);
    let r = GroupRef { group_id: g };
    let done: GroupDone = decode(call(&mut h, 0, GROUP_DELETE, &r).unwrap());
    assert_eq!(done.epoch, 0);
    let ended: Vec<GroupEnded> = pushes(&h, 1, GROUP_ENDED);
    assert_eq!(ended[0].why, GroupEndReason::Deleted);
    assert!(h.store.groups.is_empty());
    assert_eq!(code(call(&mut h, 1, GROUP_KEY, &r)), ErrorCode::NotFound);
}

#[test]
fn bad_group_requests_are_refused_with_their_reason() {
    let mut h = world();
    for name in ["", &"n".repeat(65), "line\nbreak"] {
        let made = GroupCreate {
            name: name.into(),
            open_to_user: false,
            owning: None,
        };
        assert_eq!(
            code(call(&mut h, 0, GROUP_CREATE, &made)),
            ErrorCode::BadRequest
        );
    }
    // 64 characters (not bytes) are still a name.
    let longest = GroupCreate {
        name: "é".repeat(64),
        open_to_user: false,
        owning: None,
    };
    let copy: GroupKeyCopy = decode(call(&mut h, 0, GROUP_CREATE, &longest).unwrap());
    assert_eq!(copy.name.chars().count(), 64);
    h.store.groups.clear();
    let e = call(
        &mut h,
        0,
        GROUP_INVITE,
        &GroupRef {
            group_id: GroupId::from_bytes([1; 16]),
        },
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.reason.contains("did not decode"), "{}", e.reason);
    assert!(h.store.groups.is_empty());
    // A PNE is in a bounded number of groups.
    for _ in 0..crate::server::groups::MAX_GROUPS {
        create(&mut h, 1, false);
    }
    let made = GroupCreate {
        name: "one more".into(),
        open_to_user: false,
        owning: None,
    };
    assert_eq!(
        code(call(&mut h, 1, GROUP_CREATE, &made)),
        ErrorCode::Forbidden
    );
}

#[test]
fn a_groups_entry_in_the_directory_is_its_members_only() {
    let mut h = world();
    let g = create(&mut h, 0, false);
    joined(&mut h, g, 1);
    let now = h.now();
    let w = h.pnes[1]
        .watch_services(
            now,
            cpns_wire::ServiceWatch {
                keywords: vec!["photo".into()],
                all: true,
                service_type: None,
            },
        )
        .unwrap();
    h.pump();
    assert!(matches!(h.outcome(1, w), Outcome::ServiceWatching { .. }));
    let doc = |scope_group: &str| {
        format!(
            r#"{{"service_id":"album","name":"Album","type":"media.album","version":"1",
                "keywords":["photo"],"scope":{{"kind":"group","group_id":"{scope_group}"}},
                "delivery":["pull"],"lease_s":600}}"#
        )
        .into_bytes()
    };
    // Not a member of that group: refused.
    let now = h.now();
    let id = h.pnes[2].publish_service(now, doc(&g.to_string())).unwrap();
    h.pump();
    assert!(matches!(
        h.completion(2, id).map(|c| &c.result),
        Some(Err(Failure::Refused(e))) if e.code == ErrorCode::Forbidden
    ));
    // A member publishes; the other member finds it and was told; a non-member sees nothing.
    let id = h.pnes[0].publish_service(now, doc(&g.to_string())).unwrap();
    h.pump();
    assert!(matches!(h.outcome(0, id), Outcome::ServicePublished(_)));
    let found = |h: &mut Harness, i: usize| {
        let now = h.now();
        let id = h.pnes[i]
            .discover_services(
                now,
                cpns_wire::ServiceDiscover {
                    keywords: vec!["photo".into()],
                    all: true,
                    service_type: None,
                    fits_me: false,
                    after: 0,
                },
            )
            .unwrap();
        h.pump();
        match h.outcome(i, id) {
            Outcome::ServicesFound(f) => f.entries.len(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(found(&mut h, 1), 1);
    assert_eq!(found(&mut h, 2), 0);
    let told = h
        .pne_events(1)
        .into_iter()
        .filter(|e| matches!(e, crate::pne::PneEvent::ServiceMatched(_)))
        .count();
    assert_eq!(told, 1);
}

/// The PNE's typed commands: what each PNE holds of a group's key, and what it is told.
fn held(h: &Harness, i: usize, g: GroupId) -> Option<(u64, [u8; 32])> {
    h.pnes[i]
        .groups()
        .find(|(id, _)| **id == g)
        .map(|(_, k)| (k.epoch, *k.key.expose_secret()))
}

fn done(h: &mut Harness, i: usize, id: crate::CommandId) -> &Outcome {
    h.pump();
    h.outcome(i, id)
}

#[test]
fn a_group_of_three_through_the_pnes_commands_with_an_expulsion_and_a_pull() {
    let mut h = world();
    let now = h.now();
    let id = h.pnes[0].create_group(now, "Album".into(), false).unwrap();
    let Outcome::ServiceGroupKey { group_id: g, epoch } = done(&mut h, 0, id).clone() else {
        panic!()
    };
    assert_eq!(epoch, 1);
    for i in [1, 2] {
        let now = h.now();
        let id = h.pnes[0].invite_to_group(now, g, pne_id(i)).unwrap();
        assert!(matches!(
            done(&mut h, 0, id),
            Outcome::ServiceGroupDone { .. }
        ));
        let invited = h
            .pne_events(i)
            .into_iter()
            .any(|e| matches!(e, crate::pne::PneEvent::ServiceGroupInvited(m) if m.group_id == g));
        assert!(invited, "PNE {i} was told of its invitation");
        let now = h.now();
        let id = h.pnes[i].answer_group(now, g, true).unwrap();
        assert!(matches!(
            done(&mut h, i, id),
            Outcome::ServiceGroupKey { .. }
        ));
    }
    // All three hold epoch 3's key, the server's.
    let server = (3, *h.store.groups[&g].key.expose_secret());
    for i in 0..3 {
        assert_eq!(held(&h, i, g), Some(server), "PNE {i}");
    }
    // PNE 1 is away: its notices are lost. PNE 2 is expelled.
    h.drop_message("SecureNotice");
    let now = h.now();
    let id = h.pnes[0].expel_from_group(now, g, pne_id(2)).unwrap();
    assert!(matches!(
        done(&mut h, 0, id),
        Outcome::ServiceGroupDone { epoch: 4, .. }
    ));
    h.clear_hook();
    let four = (4, *h.store.groups[&g].key.expose_secret());
    assert_eq!(held(&h, 1, g).map(|k| k.0), Some(3), "away, still at 3");
    // The expelled one holds at most the old key, never the new.
    assert_ne!(held(&h, 2, g), Some(four));
    // Back, PNE 1 pulls the key.
    let now = h.now();
    let id = h.pnes[1].pull_service_group_key(now, g).unwrap();
    assert!(matches!(
        done(&mut h, 1, id),
        Outcome::ServiceGroupKey { epoch: 4, .. }
    ));
    assert_eq!(held(&h, 1, g), Some(four));
    // The owner got epoch 4 pushed (its notices were lost too: it pulls as well).
    let now = h.now();
    let id = h.pnes[0].pull_service_group_key(now, g).unwrap();
    done(&mut h, 0, id);
    assert_eq!(held(&h, 0, g), Some(four));
    // The expelled PNE cannot pull it.
    let now = h.now();
    let id = h.pnes[2].pull_service_group_key(now, g).unwrap();
    h.pump();
    assert!(matches!(
        h.completion(2, id).map(|c| &c.result),
        Some(Err(Failure::Refused(e))) if e.code == ErrorCode::Forbidden
    ));
    // Told when not away: PNE 1 leaves, the owner is pushed epoch 5 and told.
    let now = h.now();
    let id = h.pnes[1].leave_group(now, g).unwrap();
    assert!(matches!(
        done(&mut h, 1, id),
        Outcome::ServiceGroupDone { epoch: 5, .. }
    ));
    assert_eq!(held(&h, 1, g), None, "a group left is forgotten");
    assert_eq!(held(&h, 0, g).map(|k| k.0), Some(5));
    let told = h.pne_events(0).into_iter().any(|e| {
        matches!(e, crate::pne::PneEvent::ServiceGroupKey { group_id, epoch: 5 } if *group_id == g)
    });
    assert!(told);
    // Deleted: the owner forgets it; a member would be told.
    let now = h.now();
    let id = h.pnes[0].delete_group(now, g).unwrap();
    assert!(matches!(
        done(&mut h, 0, id),
        Outcome::ServiceGroupDone { epoch: 0, .. }
    ));
    assert_eq!(held(&h, 0, g), None);
}

#[test]
fn a_pne_reads_its_groups_members_and_forgets_a_group_it_was_expelled_from() {
    let mut h = world();
    let now = h.now();
    let id = h.pnes[0].create_group(now, "Album".into(), false).unwrap();
    let Outcome::ServiceGroupKey { group_id: g, .. } = done(&mut h, 0, id).clone() else {
        panic!()
    };
    let now = h.now();
    let id = h.pnes[0].invite_to_group(now, g, pne_id(1)).unwrap();
    done(&mut h, 0, id);
    let now = h.now();
    let id = h.pnes[1].answer_group(now, g, true).unwrap();
    done(&mut h, 1, id);
    let now = h.now();
    let id = h.pnes[1].group_members(now, g).unwrap();
    let Outcome::ServiceGroupMembers(m) = done(&mut h, 1, id).clone() else {
        panic!()
    };
    let ids: Vec<_> = m.members.iter().map(|x| x.entity.clone()).collect();
    assert_eq!(ids, [pne_id(0), pne_id(1)]);
    assert_eq!(m.epoch, 2);
    // Expelled while connected: told, and the key is forgotten.
    assert!(held(&h, 1, g).is_some());
    let now = h.now();
    let id = h.pnes[0].expel_from_group(now, g, pne_id(1)).unwrap();
    done(&mut h, 0, id);
    let told = h.pne_events(1).into_iter().any(|e| {
        matches!(e, crate::pne::PneEvent::ServiceGroupEnded { group_id, why }
            if *group_id == g && *why == cpns_wire::GroupEndReason::Expelled)
    });
    assert!(told);
    assert_eq!(held(&h, 1, g), None);
}

/// PNE 0 makes a group, and PNEs 1 and 2 join it by invitation, through the typed commands:
/// the group, at epoch 3.
fn group_of_three(h: &mut Harness) -> GroupId {
    let now = h.now();
    let id = h.pnes[0].create_group(now, "Album".into(), false).unwrap();
    let Outcome::ServiceGroupKey { group_id: g, .. } = done(h, 0, id).clone() else {
        panic!()
    };
    for i in [1, 2] {
        let now = h.now();
        let id = h.pnes[0].invite_to_group(now, g, pne_id(i)).unwrap();
        done(h, 0, id);
        let now = h.now();
        let id = h.pnes[i].answer_group(now, g, true).unwrap();
        done(h, i, id);
    }
    assert_eq!(held(h, 0, g).map(|k| k.0), Some(3));
    g
}

/// PNE `i` sends `text` to group `g`: how many members the server pushed it to.
fn send(h: &mut Harness, i: usize, g: GroupId, text: &str) -> Result<u32, Failure> {
    let now = h.now();
    let id = h.pnes[i].send_to_group(now, g, text.as_bytes()).unwrap();
    h.pump();
    match h.completion(i, id).map(|c| c.result.clone()) {
        Some(Ok(Outcome::ServiceGroupSent {
            group_id,
            delivered,
            ..
        })) => {
            assert_eq!(group_id, g);
            Ok(delivered)
        }
        Some(Err(f)) => Err(f),
        other => panic!("{other:?}"),
    }
}

/// What PNE `i` was told of group content: each opened content as (sender, text), each
/// refusal as its reason.
fn told_content(h: &Harness, i: usize) -> (Vec<(String, String)>, Vec<String>) {
    let (mut opened, mut refused) = (Vec::new(), Vec::new());
    for e in h.pne_events(i) {
        match e {
            crate::pne::PneEvent::ServiceGroupContent { from, content, .. } => opened.push((
                from.to_string(),
                String::from_utf8(content.clone()).unwrap(),
            )),
            crate::pne::PneEvent::ServiceGroupContentRefused { reason, .. } => {
                refused.push(reason.to_string())
            }
            _ => {}
        }
    }
    (opened, refused)
}

#[test]
fn members_open_what_another_sealed_and_an_expelled_member_cannot_open_the_next_item() {
    let mut h = world();
    let g = group_of_three(&mut h);
    assert_eq!(send(&mut h, 1, g, "first photo"), Ok(2));
    for i in [0, 2] {
        let (opened, refused) = told_content(&h, i);
        assert_eq!(opened, [(pne_id(1).to_string(), "first photo".to_string())]);
        assert!(refused.is_empty(), "{refused:?}");
    }
    assert!(told_content(&h, 1).0.is_empty(), "not to itself");
    // Neither the PN GW nor the server read it: no frame carries it in the clear.
    assert!(
        h.log
            .iter()
            .all(|f| !f.body.windows(11).any(|w| w == b"first photo")),
        "group content crossed in the clear"
    );
    // PNE 2 is expelled; the next item is not pushed to it, and the key it held (epoch 3)
    // does not open it.
    let old = held(&h, 2, g).unwrap();
    let now = h.now();
    let id = h.pnes[0].expel_from_group(now, g, pne_id(2)).unwrap();
    done(&mut h, 0, id);
    assert_eq!(send(&mut h, 0, g, "second photo"), Ok(1));
    assert_eq!(
        told_content(&h, 1).0.last(),
        Some(&(pne_id(0).to_string(), "second photo".to_string()))
    );
    assert_eq!(told_content(&h, 2).0.len(), 1, "only the first item");
    let next: GroupContentBox = pushes(&h, 1, GROUP_CONTENT).pop().unwrap();
    assert_eq!(next.epoch, 4);
    let signing = h.pne_cfgs[0].signing.clone().unwrap();
    let cert = cpns_crypto::MemberCertificate {
        pne_id: next.certificate.pne_id.to_string(),
        owner: next.certificate.owner.to_string(),
        key: cpns_crypto::MemberKey(next.certificate.key.0),
        signature: next.certificate.signature.0,
    }
    .verify(&signing.authority)
    .unwrap();
    let binding = cpns_crypto::ContentBinding {
        pn_id: g.as_bytes(),
        epoch: next.epoch,
        sender: next.sender.as_str(),
        content_id: next.content_id,
    };
    let old_key = cpns_crypto::GroupKey::from_bytes(old.1);
    assert!(cpns_crypto::open_group_content(&old_key, &cert, &binding, &next.sealed).is_err());
    let binding3 = cpns_crypto::ContentBinding {
        epoch: 3,
        ..binding
    };
    assert!(cpns_crypto::open_group_content(&old_key, &cert, &binding3, &next.sealed).is_err());
    // The one that holds epoch 4 opens it.
    let four = cpns_crypto::GroupKey::from_bytes(*h.store.groups[&g].key.expose_secret());
    let plain = cpns_crypto::open_group_content(&four, &cert, &binding, &next.sealed).unwrap();
    assert_eq!(plain.as_slice(), b"second photo");
    // The expelled PNE holds no key to send with.
    let now = h.now();
    assert!(matches!(
        h.pnes[2].send_to_group(now, g, b"x"),
        Err(crate::CommandError::NoServiceGroupKey(id)) if id == g
    ));
}

#[test]
fn a_member_away_during_a_change_refuses_content_of_the_newer_epoch_until_it_pulls_the_key() {
    let mut h = world();
    let g = group_of_three(&mut h);
    // PNE 1 is away while PNE 2 is expelled: it misses epoch 4's key.
    h.set_hook(|f| {
        if f.to == Party::Pne(1) && f.message == "SecureNotice" {
            super::harness::Action::Drop
        } else {
            super::harness::Action::Deliver
        }
    });
    let now = h.now();
    let id = h.pnes[0].expel_from_group(now, g, pne_id(2)).unwrap();
    done(&mut h, 0, id);
    h.clear_hook();
    assert_eq!(send(&mut h, 0, g, "after the change"), Ok(1));
    let (opened, refused) = told_content(&h, 1);
    assert!(opened.is_empty());
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].contains("sealed under epoch 4, and this PNE holds epoch 3"),
        "{}",
        refused[0]
    );
    // Back, it pulls the key, and the next item opens.
    let now = h.now();
    let id = h.pnes[1].pull_service_group_key(now, g).unwrap();
    done(&mut h, 1, id);
    assert_eq!(send(&mut h, 0, g, "once more"), Ok(1));
    assert_eq!(
        told_content(&h, 1).0,
        [(pne_id(0).to_string(), "once more".to_string())]
    );
    // A sender at an old epoch is refused by the server, with what to do.
    h.pnes[1].restore_groups([(
        g,
        crate::pne::HeldGroup {
            name: "Album".into(),
            epoch: 3,
            key: cpns_crypto::GroupKey::from_bytes([7; 32]),
        },
    )]);
    match send(&mut h, 1, g, "stale") {
        Err(Failure::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::Conflict);
            assert!(e.reason.contains("pull its key"), "{}", e.reason);
        }
        other => panic!("{other:?}"),
    }
}

/// A box PNE `i` seals itself, as `send_to_group` would, with `edit` applied before it goes
/// out as a raw secure call: what the server answered.
fn crafted(
    h: &mut Harness,
    i: usize,
    g: GroupId,
    content_id: u64,
    edit: impl FnOnce(&mut GroupContentBox),
) -> Result<Vec<u8>, ErrorBody> {
    let (epoch, key) = held(h, i, g).unwrap();
    let me = pne_id(i);
    let cfg = &h.pne_cfgs[i];
    let signer = cpns_crypto::MemberSigningKey::derive(&cfg.eukey, me.as_str());
    let binding = cpns_crypto::ContentBinding {
        pn_id: g.as_bytes(),
        epoch,
        sender: me.as_str(),
        content_id,
    };
    let sealed = cpns_crypto::seal_group_content_with_nonce(
        &cpns_crypto::GroupKey::from_bytes(key),
        &signer,
        &binding,
        b"crafted",
        [content_id as u8; 12],
    )
    .unwrap();
    let mut b = GroupContentBox {
        group_id: g,
        epoch,
        sender: me,
        content_id,
        sealed,
        certificate: cfg.signing.clone().unwrap().certificate,
    };
    edit(&mut b);
    call(h, i, GROUP_SEND, &b)
}

#[test]
fn content_that_fails_a_check_is_refused_with_its_reason_and_a_replay_is_told_once() {
    let mut h = world();
    let g = group_of_three(&mut h);
    // A box as the PNE seals it opens; the same box again is a replay.
    crafted(&mut h, 1, g, 1, |_| {}).unwrap();
    crafted(&mut h, 1, g, 1, |_| {}).unwrap();
    // Tampered in flight (or by its sender): does not open.
    crafted(&mut h, 1, g, 2, |b| b.sealed[30] ^= 1).unwrap();
    // A certificate the server did not sign.
    crafted(&mut h, 1, g, 3, |b| b.certificate.signature.0[0] ^= 1).unwrap();
    // Sealed and signed by PNE 1 under another's id: the server refuses it, as another's name.
    let e = crafted(&mut h, 1, g, 4, |b| b.sender = pne_id(0)).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    // Its content id changed after signing: it no longer opens (the id is bound).
    crafted(&mut h, 1, g, 5, |b| b.content_id = 55).unwrap();
    let (opened, refused) = told_content(&h, 0);
    assert_eq!(opened, [(pne_id(1).to_string(), "crafted".to_string())]);
    let wanted = [
        "it was received before (a replay)",
        "it does not open under the group's key",
        "its certificate is not the server's",
        "it does not open under the group's key",
    ];
    assert_eq!(refused.len(), wanted.len(), "{refused:?}");
    for (got, want) in refused.iter().zip(wanted) {
        assert!(got.contains(want), "{got} (wanted {want})");
    }
}

#[test]
fn a_pnes_group_keys_are_kept_in_its_store_and_forgotten_with_the_group() {
    let mut h = world();
    let g = group_of_three(&mut h);
    let kept = |h: &Harness, i: usize| {
        h.store
            .pne_groups
            .get(&i)
            .and_then(|k| k.get(&g))
            .map(|k| (k.epoch, *k.key.expose_secret()))
    };
    for i in 0..3 {
        assert_eq!(kept(&h, i), held(&h, i, g), "PNE {i}");
    }
    let now = h.now();
    let id = h.pnes[0].expel_from_group(now, g, pne_id(2)).unwrap();
    done(&mut h, 0, id);
    assert_eq!(kept(&h, 0).map(|k| k.0), Some(4));
    assert_eq!(kept(&h, 2), None, "forgotten with the expulsion");
    // A restarted PNE takes what its store kept and opens content at once.
    let mut again = crate::pne::PneSession::new(
        h.pne_cfgs[1].clone(),
        cpns_crypto::MachineRng::seeded([5; 32]),
    );
    again.restore_groups(h.store.pne_groups[&1].clone());
    assert_eq!(
        again
            .groups()
            .map(|(id, k)| (*id, k.epoch))
            .collect::<Vec<_>>(),
        [(g, 4)]
    );
    let now = h.now();
    let id = h.pnes[1].leave_group(now, g).unwrap();
    done(&mut h, 1, id);
    assert_eq!(kept(&h, 1), None);
    let now = h.now();
    let id = h.pnes[0].delete_group(now, g).unwrap();
    done(&mut h, 0, id);
    assert!(h.store.pne_groups.values().all(|k| k.is_empty()));
}

/// Hands `env` to the server as the PN GW's session sent it: the server's answer.
fn server_reply(h: &mut Harness, env: &cpns_wire::Envelope) -> cpns_wire::Body {
    h.deliver_direct(Party::Gw, Party::Server, &super::harness::plain(env))
        .unwrap();
    let answer = h.server_answer(env.msg_id);
    h.pump();
    answer
}

/// What the PN GW's owner's group command `id` ended with.
fn gw_done(h: &mut Harness, id: crate::CommandId) -> Result<crate::gateway::Outcome, Failure> {
    h.pump();
    h.gw_completion(id).unwrap().result.clone()
}

#[test]
fn the_pn_gws_owner_makes_a_group_for_its_device_invites_expels_lists_and_deletes() {
    let mut h = world();
    let now = h.now();
    let id =
        h.gw.create_group(now, "Family".into(), false, pne_id(0))
            .unwrap();
    let Ok(crate::gateway::Outcome::GroupDone { group_id: g, epoch }) = gw_done(&mut h, id) else {
        panic!()
    };
    assert_eq!(epoch, 1);
    // The owning PNE was pushed the key; the PN GW never saw it.
    assert_eq!(held(&h, 0, g).map(|k| k.0), Some(1));
    let key = *h.store.groups[&g].key.expose_secret();
    assert_eq!(held(&h, 0, g).map(|k| k.1), Some(key));
    assert!(
        h.log
            .iter()
            .filter(|f| f.to == Party::Gw || f.from == Party::Gw)
            .filter(|f| f.message == "GatewayGroupResponse")
            .all(|f| !f.body.windows(32).any(|w| w == key.as_slice())),
        "a group key reached the PN GW"
    );
    assert_eq!(h.store.groups[&g].creator, pne_id(0));
    // It invites PNE 1, which consents; it expels it again; it lists the members.
    let now = h.now();
    let id = h.gw.invite_to_group(now, g, pne_id(1)).unwrap();
    assert!(gw_done(&mut h, id).is_ok());
    let invited = h.pne_events(1).into_iter().any(|e| {
        matches!(e, crate::pne::PneEvent::ServiceGroupInvited(m)
            if m.group_id == g && m.inviter == h.gw_cfg.id)
    });
    assert!(invited);
    let now = h.now();
    let id = h.pnes[1].answer_group(now, g, true).unwrap();
    done(&mut h, 1, id);
    let now = h.now();
    let id = h.gw.group_members(now, g).unwrap();
    let Ok(crate::gateway::Outcome::GroupMembers(m)) = gw_done(&mut h, id) else {
        panic!()
    };
    let listed: Vec<_> = m.members.iter().map(|x| x.entity.clone()).collect();
    assert_eq!(listed, [pne_id(0), pne_id(1)]);
    let now = h.now();
    let id = h.gw.expel_from_group(now, g, pne_id(1)).unwrap();
    assert_eq!(
        gw_done(&mut h, id),
        Ok(crate::gateway::Outcome::GroupDone {
            group_id: g,
            epoch: 3
        })
    );
    assert_eq!(held(&h, 1, g), None, "the expelled member forgot it");
    assert_eq!(held(&h, 0, g).map(|k| k.0), Some(3), "pushed to the owner");
    // Deleted: the owning PNE, which did not ask, is told too.
    let now = h.now();
    let id = h.gw.delete_group(now, g).unwrap();
    assert!(gw_done(&mut h, id).is_ok());
    assert!(h.store.groups.is_empty());
    assert_eq!(held(&h, 0, g), None);
    let told = h.pne_events(0).into_iter().any(|e| {
        matches!(e, crate::pne::PneEvent::ServiceGroupEnded { group_id, why }
            if *group_id == g && *why == cpns_wire::GroupEndReason::Deleted)
    });
    assert!(told);
}

#[test]
fn the_pn_gw_asks_only_for_its_owners_groups_and_devices_and_never_as_a_member() {
    let mut h = world();
    let refused = |h: &mut Harness, id| match gw_done(h, id) {
        Err(Failure::Refused(e)) => e,
        other => panic!("{other:?}"),
    };
    // Not for another user's PNE.
    h.store.entities.get_mut(&pne_id(2)).unwrap().owner = UserId::new("carol").unwrap();
    let now = h.now();
    let id =
        h.gw.create_group(now, "Family".into(), false, pne_id(2))
            .unwrap();
    let e = refused(&mut h, id);
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(
        e.reason.contains("not a device of this PN GW's owner"),
        "{}",
        e.reason
    );
    assert!(h.store.groups.is_empty());
    // Carol's PNE makes its own group: alice's PN GW neither invites, expels, lists nor
    // deletes in it.
    let carols = create(&mut h, 2, false);
    for ask in 0..4 {
        let now = h.now();
        let id = match ask {
            0 => h.gw.invite_to_group(now, carols, pne_id(0)),
            1 => h.gw.expel_from_group(now, carols, pne_id(2)),
            2 => h.gw.group_members(now, carols),
            _ => h.gw.delete_group(now, carols),
        }
        .unwrap();
        assert_eq!(refused(&mut h, id).code, ErrorCode::Forbidden, "ask {ask}");
    }
    assert_eq!(h.store.groups[&carols].epoch, 1);
    assert!(h.store.group_invites.is_empty());
    // What is a member's own to ask, a PN GW may not; a creation names its owning PNE; a PNE
    // makes only a group it owns itself.
    let gw = h.gw_cfg.id.clone();
    for (n, (service, payload)) in [
        (
            GROUP_JOIN,
            minicbor::to_vec(GroupRef { group_id: carols }).unwrap(),
        ),
        (
            GROUP_LEAVE,
            minicbor::to_vec(GroupRef { group_id: carols }).unwrap(),
        ),
        (
            GROUP_KEY,
            minicbor::to_vec(GroupRef { group_id: carols }).unwrap(),
        ),
        (
            GROUP_ANSWER,
            minicbor::to_vec(GroupAnswer {
                group_id: carols,
                accept: true,
            })
            .unwrap(),
        ),
        (
            GROUP_CREATE,
            minicbor::to_vec(GroupCreate {
                name: "x".into(),
                open_to_user: false,
                owning: None,
            })
            .unwrap(),
        ),
        ("cpns.echo", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let n = n as u64;
        let req = cpns_wire::GatewayGroupRequest {
            request_id: cpns_wire::RequestId(500 + n),
            service: service.into(),
            payload,
        };
        let env = cpns_wire::Envelope::request(
            900 + n,
            cpns_wire::Address::Entity(gw.clone()),
            cpns_wire::Address::Server,
            req,
        );
        let answer = server_reply(&mut h, &env);
        let cpns_wire::Body::ErrorBody(e) = answer else {
            panic!("{service}: {answer:?}")
        };
        let want = match service {
            GROUP_CREATE => ErrorCode::BadRequest,
            "cpns.echo" => ErrorCode::NotFound,
            _ => ErrorCode::Forbidden,
        };
        assert_eq!(e.code, want, "{service}: {}", e.reason);
    }
    let made = GroupCreate {
        name: "x".into(),
        open_to_user: false,
        owning: Some(pne_id(1)),
    };
    assert_eq!(
        code(call(&mut h, 0, GROUP_CREATE, &made)),
        ErrorCode::Forbidden
    );
    assert_eq!(h.store.groups.len(), 1);
}

#[test]
fn a_pn_gws_group_request_sent_again_is_answered_again_and_done_once() {
    let mut h = world();
    let now = h.now();
    let id =
        h.gw.create_group(now, "Family".into(), false, pne_id(0))
            .unwrap();
    assert!(gw_done(&mut h, id).is_ok());
    let sent = h
        .log
        .iter()
        .find(|f| f.message == "GatewayGroupRequest")
        .unwrap()
        .body
        .clone();
    let answers = |h: &Harness| {
        h.log
            .iter()
            .filter(|f| f.message == "GatewayGroupResponse")
            .count()
    };
    let before = answers(&h);
    h.inject(Party::Gw, Party::Server, sent);
    h.pump();
    assert_eq!(answers(&h), before + 1, "answered again");
    assert_eq!(h.store.groups.len(), 1, "made once");
    // From the PN GW's session, but in a PNE's name: refused.
    let req = cpns_wire::GatewayGroupRequest {
        request_id: cpns_wire::RequestId(77),
        service: GROUP_MEMBERS.into(),
        payload: minicbor::to_vec(GroupRef {
            group_id: *h.store.groups.keys().next().unwrap(),
        })
        .unwrap(),
    };
    let env = cpns_wire::Envelope::request(
        991,
        cpns_wire::Address::Entity(pne_id(0)),
        cpns_wire::Address::Server,
        req,
    );
    let cpns_wire::Body::ErrorBody(e) = server_reply(&mut h, &env) else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::Forbidden);
}

#[test]
fn a_pn_gws_group_request_is_a_service_group_flow_and_times_out_unanswered() {
    let mut h = world();
    let now = h.now();
    let id =
        h.gw.create_group(now, "Family".into(), false, pne_id(0))
            .unwrap();
    h.pump();
    assert_eq!(h.gw_completion(id).unwrap().flow, crate::Flow::ServiceGroup);
    // The server's answer is lost: the PN GW waits until its flow timeout, then gives up.
    h.drop_message("GatewayGroupResponse");
    let now = h.now();
    let id =
        h.gw.create_group(now, "Family 2".into(), false, pne_id(0))
            .unwrap();
    h.pump();
    assert!(h.gw_completion(id).is_none());
    let deadline =
        h.gw.poll_timeout()
            .expect("a deadline for the unanswered request");
    assert!(deadline > h.now());
    h.advance(deadline.duration_since(h.now()) + std::time::Duration::from_millis(1));
    let c = h.gw_completion(id).unwrap();
    assert_eq!(c.flow, crate::Flow::ServiceGroup);
    assert_eq!(c.result, Err(Failure::TimedOut));
}

#[test]
fn group_content_is_sent_up_to_its_bound_and_not_a_byte_more() {
    let mut h = world();
    let g = group_of_three(&mut h);
    let max = crate::pne::MAX_SERVICE_GROUP_CONTENT;
    assert_eq!(max, 256 * 1024 - 256);
    let now = h.now();
    assert!(matches!(
        h.pnes[1].send_to_group(now, g, &vec![7; max + 1]),
        Err(crate::CommandError::TooLarge)
    ));
    let id = h.pnes[1].send_to_group(now, g, &vec![7; max]).unwrap();
    h.pump();
    assert!(matches!(
        h.outcome(1, id),
        Outcome::ServiceGroupSent { delivered: 2, .. }
    ));
    let got = h.pne_events(0).into_iter().any(|e| {
        matches!(e, crate::pne::PneEvent::ServiceGroupContent { content, .. } if content.len() == max)
    });
    assert!(got, "the largest content arrived whole");
}
