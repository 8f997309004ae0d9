//! Conformance cases of [`ServerStore`]'s flow reads (`pn_view`, `member_view`,
//! `inventory_view`, `usage_owners`, `charging_records_of`, `status_view`): each gives what the
//! separate reads it stands for give, in one snapshot.

use cpns_store::{Departed, Departure, PnRecord, ServerStore};
use cpns_wire::{Audience, Status};

use super::status_usage::{change, household, record, row, subscription};
use super::{eid, enroll, entity, pid, pn, uid};

/// A PN flow's read: the PN, the kept answer of the sender's request, the enrolled entities
/// among those named (in order of first mention); each absent when there is none.
pub async fn pn_view_reads_a_pn_with_its_answer_and_entities<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1", "pne-2"]).await;
    let p = pn(1, "gw-1", &["pne-1", "pne-2"]);
    s.register_pn(&p).await.unwrap();
    s.remember_answer("gw-1", 7, b"kept", 10, 1_000)
        .await
        .unwrap();
    let named = [eid("pne-2"), eid("ghost"), eid("pne-1"), eid("pne-2")];
    let view = s.pn_view(&pid(1), Some(("gw-1", 7)), &named).await.unwrap();
    assert_eq!(view.pn, Some(p));
    assert_eq!(view.answer.as_deref(), Some(&b"kept"[..]));
    assert_eq!(view.entities, s.entities(&named).await.unwrap());
    let order: Vec<&str> = view.entities.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(order, ["pne-2", "pne-1"]);
    // Nothing asked, nothing there.
    let none = s.pn_view(&pid(2), None, &[]).await.unwrap();
    assert_eq!((none.pn, none.answer, none.entities), (None, None, vec![]));
    let other = s.pn_view(&pid(1), Some(("gw-1", 8)), &[]).await.unwrap();
    assert_eq!(other.answer, None, "another request id has no answer");
}

/// A member's read: the PN, and the membership that ended only for a PNE that is no member.
pub async fn member_view_gives_an_ended_membership_to_a_non_member<S: ServerStore>(s: &S) {
    let p = pn(1, "gw-1", &["pne-1", "pne-2"]);
    s.register_pn(&p).await.unwrap();
    s.update_members(&pid(1), &[], &[eid("pne-2")], None)
        .await
        .unwrap();
    let gone = s.member_view(&pid(1), &eid("pne-2")).await.unwrap();
    let rest = s.pn(&pid(1)).await.unwrap();
    assert_eq!(gone.pn, rest);
    assert_eq!(
        gone.departed,
        Some(Departed {
            sealed_session_key: b"sk:pne-2".to_vec(),
            why: Departure::Removed,
        })
    );
    let member = s.member_view(&pid(1), &eid("pne-1")).await.unwrap();
    assert_eq!((member.pn, member.departed), (rest, None));
    // Back in the PN: a member again, nothing ended.
    s.upsert_member(&pid(1), &super::member("pne-2", false))
        .await
        .unwrap();
    let back = s.member_view(&pid(1), &eid("pne-2")).await.unwrap();
    assert!(back.pn.is_some() && back.departed.is_none());
    // A released PN: no PN, the membership ended by the release.
    s.release_pn(&eid("gw-1"), &pid(1)).await.unwrap();
    let released = s.member_view(&pid(1), &eid("pne-1")).await.unwrap();
    assert_eq!(released.pn, None);
    assert_eq!(released.departed.map(|d| d.why), Some(Departure::Released));
    let never = s.member_view(&pid(9), &eid("pne-1")).await.unwrap();
    assert_eq!((never.pn, never.departed), (None, None));
}

/// An inventory query's read: the asker's user and the PN named, or every PN of its user;
/// nothing for an asker not enrolled.
const NOW: i64 = 1_800_000_000_000;

pub async fn inventory_view_reads_the_askers_pns<S: ServerStore>(s: &S) {
    enroll(s, &["pne-1"]).await;
    let a = pn(1, "gw-1", &["pne-1"]);
    let theirs = PnRecord {
        owner: uid("bob"),
        ..pn(2, "gw-2", &["pne-9"])
    };
    let b = pn(3, "gw-1", &["pne-2"]);
    for p in [&a, &theirs, &b] {
        s.register_pn(p).await.unwrap();
    }
    let all = s.inventory_view(&eid("pne-1"), None, NOW).await.unwrap();
    assert_eq!(all.owner, Some(uid("alice")));
    assert_eq!(all.pns, vec![a.clone(), b]);
    let one = s
        .inventory_view(&eid("pne-1"), Some(&pid(2)), NOW)
        .await
        .unwrap();
    assert_eq!((one.owner, one.pns), (Some(uid("alice")), vec![theirs]));
    let missing = s
        .inventory_view(&eid("pne-1"), Some(&pid(7)), NOW)
        .await
        .unwrap();
    assert!(missing.pns.is_empty());
    let stranger = s.inventory_view(&eid("ghost"), None, NOW).await.unwrap();
    assert_eq!((stranger.owner, stranger.pns), (None, vec![]));
    let stranger = s
        .inventory_view(&eid("ghost"), Some(&pid(1)), NOW)
        .await
        .unwrap();
    assert_eq!((stranger.owner, stranger.pns), (None, vec![a]));
}

/// The users a usage report is charged by: the reporter's and its PN's owner.
pub async fn usage_owners_name_the_reporters_and_the_pns_users<S: ServerStore>(s: &S) {
    household(s).await;
    s.register_pn(&pn(1, "gw", &["watch"])).await.unwrap();
    let o = s.usage_owners(&eid("watch"), &pid(1)).await.unwrap();
    assert_eq!((o.entity, o.pn), (Some(uid("bob")), Some(uid("alice"))));
    let o = s.usage_owners(&eid("ghost"), &pid(2)).await.unwrap();
    assert_eq!((o.entity, o.pn), (None, None));
    let o = s.usage_owners(&eid("phone"), &pid(2)).await.unwrap();
    assert_eq!((o.entity, o.pn), (Some(uid("alice")), None));
}

/// The charging records of an entity's user, as by user; none for an entity not enrolled.
pub async fn charging_records_of_an_entity_are_its_users<S: ServerStore>(s: &S) {
    household(s).await;
    s.store_usage(&[
        row(
            "phone",
            "alice",
            None,
            record(1, "video", 100, 10, 5_000, Audience::Server),
            Some(5),
        ),
        row(
            "watch",
            "bob",
            Some("alice"),
            record(1, "video", 300, 10, 2_000, Audience::Server),
            Some(2),
        ),
    ])
    .await
    .unwrap();
    let of_tv = s.charging_records_of(&eid("tv"), 0).await.unwrap();
    assert_eq!(of_tv, s.charging_records(&uid("alice"), 0).await.unwrap());
    assert_eq!(of_tv.len(), 1);
    assert_eq!(
        of_tv[0].entity,
        eid("phone"),
        "the user's, not the entity's own"
    );
    let of_watch = s.charging_records_of(&eid("watch"), 0).await.unwrap();
    assert_eq!(of_watch.len(), 1);
    assert_eq!(of_watch[0].user, uid("bob"));
    assert!(
        s.charging_records_of(&eid("watch"), 301)
            .await
            .unwrap()
            .is_empty(),
        "since"
    );
    assert!(
        s.charging_records_of(&eid("ghost"), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A status query's or subscription's read: the asker and what it names, every device of its
/// user if asked, its subscriptions if asked.
pub async fn status_view_reads_what_a_query_names<S: ServerStore>(s: &S) {
    household(s).await;
    s.record_statuses(&[change("tv", Status::Busy, 4, Some("gw"))])
        .await
        .unwrap();
    s.add_subscription(&subscription("phone", 1, &["tv"]))
        .await
        .unwrap();
    s.add_subscription(&subscription("phone", 2, &[]))
        .await
        .unwrap();
    let named = [eid("tv"), eid("ghost"), eid("watch")];
    let v = s
        .status_view(&eid("phone"), &named, false, false)
        .await
        .unwrap();
    let want = s
        .statuses(&[eid("phone"), eid("tv"), eid("ghost"), eid("watch")])
        .await
        .unwrap();
    assert_eq!(v.statuses, want);
    assert_eq!(v.statuses.len(), 3);
    assert_eq!((v.of_user, v.subscriptions), (vec![], 0));
    let v = s.status_view(&eid("phone"), &[], true, true).await.unwrap();
    assert_eq!(v.statuses.len(), 1);
    assert_eq!(v.of_user, s.statuses_of_owner(&uid("alice")).await.unwrap());
    assert_eq!(v.of_user.len(), 3);
    assert_eq!(v.subscriptions, 2);
    let v = s.status_view(&eid("ghost"), &[], true, true).await.unwrap();
    assert_eq!(
        (v.statuses, v.of_user, v.subscriptions),
        (vec![], vec![], 0)
    );
    // Another user's device is read as named (the machine decides what the asker may see).
    s.insert_entity(&entity("gw-b", "bob")).await.unwrap();
    let v = s
        .status_view(&eid("watch"), &[], true, false)
        .await
        .unwrap();
    let users: Vec<&str> = v.of_user.iter().map(|r| r.entity.as_str()).collect();
    assert_eq!(users, ["gw-b", "watch"]);
}

/// What an inventory shows of its members' services: each member's directory entries the
/// asker may see now (by offerer, then in publishing order), by the directory's own scope (its user's, its PNs', public; not expired);
/// and a member's declared contents replace what it announced, in every PN it is in.
pub async fn an_inventory_shows_what_members_offer_as_the_asker_may_see_it<S: ServerStore>(s: &S) {
    use cpns_store::{ServiceEntry, ServiceScope};
    enroll(s, &["pne-1", "pne-2"]).await;
    s.ensure_user(&uid("bob")).await.unwrap();
    s.insert_entity(&entity("pne-9", "bob")).await.unwrap();
    let mut shared = pn(1, "gw-1", &["pne-1", "pne-2", "pne-9"]);
    shared.members[2].owner = Some(uid("bob"));
    s.register_pn(&shared).await.unwrap();
    s.register_pn(&pn(2, "gw-1", &["pne-2"])).await.unwrap();
    let entry = |offerer: &str, owner: &str, id: &str, scope, expires_at| ServiceEntry {
        dir_id: 0,
        offerer: eid(offerer),
        owner: uid(owner),
        service_id: id.into(),
        service_type: "media.renderer".into(),
        keywords: vec!["video".into()],
        scope,
        description: format!("{{\"service_id\":\"{id}\"}}").into_bytes(),
        updated_at: NOW,
        expires_at,
    };
    let later = NOW + 3_600_000;
    for e in [
        entry("pne-2", "alice", "tv", ServiceScope::User, later),
        entry("pne-2", "alice", "old", ServiceScope::User, NOW - 1),
        entry("pne-9", "bob", "bobs", ServiceScope::User, later),
        entry("pne-9", "bob", "open", ServiceScope::Public, later),
        entry("pne-9", "bob", "here", ServiceScope::Pn(pid(1)), later),
        entry(
            "pne-1",
            "alice",
            "elsewhere",
            ServiceScope::Pn(pid(2)),
            later,
        ),
    ] {
        s.publish_service(&e).await.unwrap();
    }
    let seen = |v: &cpns_store::InventoryView| -> Vec<(String, String)> {
        v.services
            .iter()
            .map(|e| (e.offerer.to_string(), e.service_id.clone()))
            .collect()
    };
    let alice = s
        .inventory_view(&eid("pne-1"), Some(&pid(1)), NOW)
        .await
        .unwrap();
    assert_eq!(
        seen(&alice),
        [
            ("pne-2".to_string(), "tv".to_string()),
            ("pne-9".into(), "open".into()),
            ("pne-9".into(), "here".into()),
        ]
    );
    // Bob's guest sees its own user's entries, the PN's and the public one; not alice's
    // user-scoped one, nor her PN-2-scoped one.
    let bob = s
        .inventory_view(&eid("pne-9"), Some(&pid(1)), NOW)
        .await
        .unwrap();
    assert_eq!(
        seen(&bob),
        [
            ("pne-9".to_string(), "bobs".to_string()),
            ("pne-9".into(), "open".into()),
            ("pne-9".into(), "here".into()),
        ]
    );
    // A stranger sees nothing.
    let ghost = s
        .inventory_view(&eid("ghost"), Some(&pid(1)), NOW)
        .await
        .unwrap();
    assert!(ghost.services.is_empty());
    // Declared contents replace the announced ones in both of pne-2's PNs.
    let now_holds = vec![cpns_wire::ContentItem {
        name: "holiday.mp4".into(),
        media_type: "video/mp4".into(),
    }];
    assert_eq!(s.set_contents(&eid("pne-2"), &now_holds).await.unwrap(), 2);
    for id in [1, 2] {
        let p = s.pn(&pid(id)).await.unwrap().unwrap();
        let m = p.members.iter().find(|m| m.pne_id == eid("pne-2")).unwrap();
        assert_eq!(m.contents, now_holds, "PN {id}");
    }
    assert_eq!(s.set_contents(&eid("ghost"), &now_holds).await.unwrap(), 0);
}
