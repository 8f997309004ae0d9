//! The service directory (004 §5.5.5; docs/services.md): publish and update by (offerer,
//! service id), unpublish, discover by keywords (all or any), type and scope, retrieve, leases.

use cpns_store::{ServiceEntry, ServiceQuery, ServiceScope, ServiceViewer};

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn entry(
    offerer: &str,
    owner: &str,
    id: &str,
    keywords: &[&str],
    scope: ServiceScope,
) -> ServiceEntry {
    ServiceEntry {
        dir_id: 0,
        offerer: eid(offerer),
        owner: uid(owner),
        service_id: id.into(),
        service_type: "media.renderer".into(),
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        scope,
        description: format!("{{\"service_id\":\"{id}\"}}").into_bytes(),
        updated_at: NOW,
        expires_at: NOW + 3_600_000,
    }
}

fn viewer(user: &str, pns: &[PnId]) -> ServiceViewer {
    ServiceViewer {
        user: uid(user),
        pns: pns.to_vec(),
        groups: Vec::new(),
    }
}

fn query(v: ServiceViewer, keywords: &[&str], all: bool) -> ServiceQuery {
    ServiceQuery {
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        all,
        service_type: None,
        viewer: v,
        now: NOW,
        limit: 100,
        after: 0,
    }
}

async fn found<S: ServerStore>(s: &S, q: &ServiceQuery) -> Vec<String> {
    s.discover_services(q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}/{}", e.offerer, e.service_id))
        .collect()
}

async fn world<S: ServerStore>(s: &S) {
    enroll(s, &["tv", "phone"]).await;
    s.ensure_user(&uid("bob")).await.unwrap();
    s.insert_entity(&entity("bobs-tv", "bob")).await.unwrap();
}

/// A publish reads back whole; a second publish of the same service updates it under the same
/// directory id; an unpublish takes it out once; an offerer not enrolled publishes nothing.
pub async fn services_publish_update_and_unpublish<S: ServerStore>(s: &S) {
    world(s).await;
    let e = entry(
        "tv",
        "alice",
        "renderer",
        &["video", "renderer"],
        ServiceScope::User,
    );
    let id = s.publish_service(&e).await.unwrap();
    let got = s
        .service(id, &viewer("alice", &[]), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        ServiceEntry {
            dir_id: id,
            ..e.clone()
        }
    );
    let updated = ServiceEntry {
        keywords: vec!["film".into()],
        updated_at: NOW + 10,
        expires_at: NOW + 7_200_000,
        ..e.clone()
    };
    assert_eq!(
        s.publish_service(&updated).await.unwrap(),
        id,
        "the same entry"
    );
    let q = query(viewer("alice", &[]), &["video"], true);
    assert!(found(s, &q).await.is_empty(), "the old keyword is gone");
    let q = query(viewer("alice", &[]), &["film"], true);
    assert_eq!(found(s, &q).await, ["tv/renderer"]);
    let got = s
        .service(id, &viewer("alice", &[]), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.expires_at, NOW + 7_200_000);
    assert!(s.unpublish_service(&eid("tv"), "renderer").await.unwrap());
    assert!(!s.unpublish_service(&eid("tv"), "renderer").await.unwrap());
    assert!(
        s.service(id, &viewer("alice", &[]), NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(found(s, &q).await.is_empty());
    let stranger = entry("nobody", "alice", "x", &["x"], ServiceScope::Public);
    assert!(matches!(
        s.publish_service(&stranger).await,
        Err(StoreError::NotFound { .. })
    ));
    let wordless = entry("tv", "alice", "y", &[], ServiceScope::Public);
    assert!(s.publish_service(&wordless).await.is_err());
}

/// Keywords match all or any, quoted so none is read as search syntax; the type narrows; paging
/// goes by directory id.
pub async fn services_are_found_by_keywords_type_and_page<S: ServerStore>(s: &S) {
    world(s).await;
    for (id, words) in [
        ("a", &["video", "renderer"][..]),
        ("b", &["video", "camera"]),
        ("c", &["audio", "renderer"]),
    ] {
        s.publish_service(&entry("tv", "alice", id, words, ServiceScope::Public))
            .await
            .unwrap();
    }
    let alice = || viewer("alice", &[]);
    assert_eq!(
        found(s, &query(alice(), &["video"], true)).await,
        ["tv/a", "tv/b"]
    );
    assert_eq!(
        found(s, &query(alice(), &["video", "renderer"], true)).await,
        ["tv/a"]
    );
    assert_eq!(
        found(s, &query(alice(), &["video", "renderer"], false)).await,
        ["tv/a", "tv/b", "tv/c"]
    );
    assert_eq!(found(s, &query(alice(), &[], true)).await.len(), 3);
    // Words that are FTS5 syntax are only words: operators, a prefix star, a quote and a
    // phrase match nothing, nor does punctuation around a word (a keyword matches whole). Nor
    // is a keyword ever read as a scope or a token of the index (migrations 17, 24): "pub",
    // alice's user token and the tokens of "video" and of "renderer" with "video" match no
    // entry that lacks them as keywords.
    for odd in [
        "AND",
        "NOT",
        "vid*",
        "video OR audio",
        "\"",
        "(",
        "renderer)",
        "pub",
        "u616c696365",
        "766964656f",
        "115e46d27d051801",
    ] {
        let got = s.discover_services(&query(alice(), &[odd], true)).await;
        assert!(got.is_ok_and(|g| g.is_empty()), "{odd}");
    }
    let mut typed = query(alice(), &["renderer"], false);
    typed.service_type = Some("media.camera".into());
    assert!(found(s, &typed).await.is_empty());
    typed.service_type = Some("media.renderer".into());
    assert_eq!(found(s, &typed).await.len(), 2);
    let mut page = query(alice(), &[], true);
    page.limit = 2;
    let first = s.discover_services(&page).await.unwrap();
    assert_eq!(first.len(), 2);
    page.after = first[1].dir_id;
    let rest = s.discover_services(&page).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(rest[0].dir_id > first[1].dir_id);
}

/// A keyword matches whole, punctuation and all, as a watch's does; all of several keywords are
/// found in any order (through the public entries' pairs of keywords), in scoped and public
/// entries alike, and an entry that changes its keywords or its scope leaves the pairs it had.
pub async fn keywords_match_whole_and_all_of_several_in_any_order<S: ServerStore>(s: &S) {
    world(s).await;
    for (id, words, scope) in [
        ("abc", &["alpha", "beta", "gamma"][..], ServiceScope::Public),
        ("ab", &["alpha", "beta"], ServiceScope::Public),
        ("bc", &["beta", "gamma"], ServiceScope::Public),
        ("ac-mine", &["alpha", "gamma"], ServiceScope::User),
        ("dash", &["video-renderer", "4k"], ServiceScope::Public),
    ] {
        s.publish_service(&entry("tv", "alice", id, words, scope))
            .await
            .unwrap();
    }
    let alice = || viewer("alice", &[]);
    let bob = || viewer("bob", &[]);
    for order in [
        ["alpha", "beta", "gamma"],
        ["gamma", "alpha", "beta"],
        ["beta", "gamma", "alpha"],
    ] {
        assert_eq!(found(s, &query(alice(), &order, true)).await, ["tv/abc"]);
    }
    assert_eq!(
        found(s, &query(alice(), &["beta", "alpha"], true)).await,
        ["tv/abc", "tv/ab"]
    );
    assert_eq!(
        found(s, &query(alice(), &["gamma", "alpha"], true)).await,
        ["tv/abc", "tv/ac-mine"],
        "a scoped entry with both, beside the public one"
    );
    assert_eq!(
        found(s, &query(bob(), &["gamma", "alpha"], true)).await,
        ["tv/abc"],
        "another user's entry is not his"
    );
    assert_eq!(
        found(s, &query(alice(), &["alpha", "delta"], true)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        found(s, &query(alice(), &["alpha", "delta"], false))
            .await
            .len(),
        3,
        "any: every entry with alpha"
    );
    // Whole keywords: a part of one finds nothing; the whole finds it, with another too.
    assert!(found(s, &query(alice(), &["video"], true)).await.is_empty());
    assert!(
        found(s, &query(alice(), &["renderer"], false))
            .await
            .is_empty()
    );
    assert_eq!(
        found(s, &query(alice(), &["video-renderer"], true)).await,
        ["tv/dash"]
    );
    assert_eq!(
        found(s, &query(alice(), &["4k", "video-renderer"], true)).await,
        ["tv/dash"]
    );
    // New keywords leave the old pairs; a public entry made the user's leaves bob's view.
    let mut moved = entry(
        "tv",
        "alice",
        "abc",
        &["alpha", "delta"],
        ServiceScope::Public,
    );
    s.publish_service(&moved).await.unwrap();
    assert_eq!(
        found(s, &query(bob(), &["alpha", "gamma"], true)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        found(s, &query(bob(), &["delta", "alpha"], true)).await,
        ["tv/abc"]
    );
    moved.scope = ServiceScope::User;
    s.publish_service(&moved).await.unwrap();
    assert!(
        found(s, &query(bob(), &["delta", "alpha"], true))
            .await
            .is_empty()
    );
    assert_eq!(
        found(s, &query(alice(), &["delta", "alpha"], true)).await,
        ["tv/abc"]
    );
}

/// A viewer sees public entries, its own user's, its PNs' and its groups', never another
/// user's user- or PN-scoped ones; an entry whose lease ended is shown to nobody.
pub async fn services_are_shown_by_scope_and_lease<S: ServerStore>(s: &S) {
    world(s).await;
    let home = pid(1);
    let scopes = [
        ("pub", ServiceScope::Public),
        ("mine", ServiceScope::User),
        ("pn", ServiceScope::Pn(home)),
        ("grp", ServiceScope::Group("family".into())),
    ];
    for (id, scope) in scopes {
        s.publish_service(&entry("tv", "alice", id, &["video"], scope))
            .await
            .unwrap();
    }
    let mut ended = entry("phone", "alice", "old", &["video"], ServiceScope::Public);
    ended.expires_at = NOW;
    let ended_id = s.publish_service(&ended).await.unwrap();
    let see = |v| query(v, &["video"], true);
    assert_eq!(
        found(s, &see(viewer("alice", &[]))).await,
        ["tv/pub", "tv/mine"]
    );
    assert_eq!(
        found(s, &see(viewer("alice", &[home]))).await,
        ["tv/pub", "tv/mine", "tv/pn"]
    );
    let mut family = viewer("alice", &[]);
    family.groups = vec!["family".into()];
    assert_eq!(
        found(s, &see(family)).await,
        ["tv/pub", "tv/mine", "tv/grp"]
    );
    // Bob sees only the public one, even naming alice's PN as his.
    assert_eq!(found(s, &see(viewer("bob", &[]))).await, ["tv/pub"]);
    let mut bob = viewer("bob", &[pid(2)]);
    bob.groups = vec!["other".into()];
    assert_eq!(found(s, &see(bob)).await, ["tv/pub"]);
    let all = s
        .discover_services(&see(viewer("alice", &[home])))
        .await
        .unwrap();
    let mine = all.iter().find(|e| e.service_id == "mine").unwrap().dir_id;
    assert!(
        s.service(mine, &viewer("bob", &[]), NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.service(mine, &viewer("alice", &[]), NOW)
            .await
            .unwrap()
            .is_some()
    );
    // The lease: ended at NOW, so not shown at NOW; shown a moment before.
    assert!(
        s.service(ended_id, &viewer("alice", &[]), NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.service(ended_id, &viewer("alice", &[]), NOW - 1)
            .await
            .unwrap()
            .is_some()
    );
}

/// A directory request's view: the asker as a viewer (its user, the PNs it is an
/// authenticated member of), its capabilities, and what it asked for as it may see it; an
/// offerer recorded offline hides its entries until it is back; an asker not enrolled sees
/// nothing.
pub async fn directory_view_reads_the_asker_and_what_it_may_see<S: ServerStore>(s: &S) {
    use cpns_store::{DirectoryAsk, ServiceSearch};

    world(s).await;
    let mut phone = entity("phone2", "alice");
    phone.capabilities = Some(caps("phone"));
    s.insert_entity(&phone).await.unwrap();
    let mut home = pn(1, "gw-1", &["phone2", "tv"]);
    home.members[1].authenticated = false;
    s.register_pn(&home).await.unwrap();
    s.register_pn(&pn(2, "gw-2", &["tv"])).await.unwrap();

    let asks = DirectoryAsk::Offered {
        service_id: "in-1".into(),
    };
    let v = s.directory_view(&eid("phone2"), &asks).await.unwrap();
    assert_eq!(v.viewer, Some(viewer("alice", &[pid(1)])));
    assert_eq!(v.capabilities, Some(caps("phone")));
    assert!(v.entries.is_empty());
    // tv is listed in PN 1 but not authenticated there: only PN 2 counts.
    let v = s.directory_view(&eid("tv"), &asks).await.unwrap();
    assert_eq!(v.viewer, Some(viewer("alice", &[pid(2)])));
    assert_eq!(v.capabilities, None);
    let v = s.directory_view(&eid("nobody"), &asks).await.unwrap();
    assert_eq!(v, cpns_store::DirectoryView::default());

    for (id, scope) in [
        ("in-1", ServiceScope::Pn(pid(1))),
        ("in-2", ServiceScope::Pn(pid(2))),
        ("mine", ServiceScope::User),
    ] {
        s.publish_service(&entry("tv", "alice", id, &["video"], scope))
            .await
            .unwrap();
    }
    let search = ServiceSearch {
        keywords: vec!["video".into()],
        all: true,
        service_type: None,
        now: NOW,
        limit: 10,
        after: 0,
    };
    let names = |v: cpns_store::DirectoryView| {
        v.entries
            .into_iter()
            .map(|e| e.service_id)
            .collect::<Vec<_>>()
    };
    let discover = DirectoryAsk::Discover(search.clone());
    let v = s.directory_view(&eid("phone2"), &discover).await.unwrap();
    assert_eq!(names(v), ["in-1", "mine"]);
    // What tv offers besides the one it publishes again.
    let v = s.directory_view(&eid("tv"), &asks).await.unwrap();
    assert_eq!(v.offered, 2);
    let v = s.directory_view(&eid("phone2"), &asks).await.unwrap();
    assert_eq!(v.offered, 0);
    let v = s.directory_view(&eid("bobs-tv"), &discover).await.unwrap();
    assert!(names(v).is_empty(), "bob sees none of alice's");
    let v = s.directory_view(&eid("nobody"), &discover).await.unwrap();
    assert!(v.entries.is_empty());
    let in_2 = s
        .discover_services(&search.as_viewer(viewer("alice", &[pid(2)])))
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.service_id == "in-2")
        .unwrap()
        .dir_id;
    let retrieve = |now| DirectoryAsk::Retrieve { dir_id: in_2, now };
    let v = s
        .directory_view(&eid("phone2"), &retrieve(NOW))
        .await
        .unwrap();
    assert!(v.entries.is_empty(), "PN 2 is not phone2's");
    let v = s.directory_view(&eid("tv"), &retrieve(NOW)).await.unwrap();
    assert_eq!(names(v), ["in-2"]);

    // The offerer goes offline: its entries are hidden; back online, shown again.
    s.record_report(&eid("tv"), None, Some((Status::Offline, NOW)))
        .await
        .unwrap();
    let v = s.directory_view(&eid("phone2"), &discover).await.unwrap();
    assert!(names(v).is_empty(), "offline offerer hidden");
    let v = s.directory_view(&eid("tv"), &retrieve(NOW)).await.unwrap();
    assert!(v.entries.is_empty());
    s.record_report(&eid("tv"), None, Some((Status::Busy, NOW + 1)))
        .await
        .unwrap();
    let v = s.directory_view(&eid("phone2"), &discover).await.unwrap();
    assert_eq!(names(v), ["in-1", "mine"]);
}

/// The directory's index merged into one segment, a step at a time: a directory published
/// one entry per write has work to merge; the steps end; a merge begun again finds nothing to
/// do; every entry is found as before.
pub async fn the_directory_index_merges_a_step_at_a_time<S: ServerStore>(s: &S) {
    world(s).await;
    for n in 0..40 {
        let e = entry(
            "tv",
            "alice",
            &format!("svc-{n}"),
            &["video", &format!("kw{n}")],
            ServiceScope::Public,
        );
        s.publish_service(&e).await.unwrap();
    }
    let mut steps = 0;
    let mut start = true;
    while s.merge_directory(4, start).await.unwrap() {
        start = false;
        steps += 1;
        assert!(steps < 10_000, "the merge never ends");
    }
    assert!(steps > 0, "forty writes leave segments to merge");
    assert!(
        !s.merge_directory(4, true).await.unwrap(),
        "merged: nothing left"
    );
    let all = found(s, &query(viewer("bob", &[]), &["video"], true)).await;
    assert_eq!(all.len(), 40);
    assert_eq!(
        found(s, &query(viewer("bob", &[]), &["video", "kw7"], true)).await,
        ["tv/svc-7"]
    );
}

fn watch(watcher: &str, pn: PnId, keywords: &[&str]) -> cpns_store::WatchRecord {
    cpns_store::WatchRecord {
        watch_id: 0,
        watcher: eid(watcher),
        owner: uid("alice"),
        pn_id: pn,
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        all: true,
        service_type: Some("media.renderer".into()),
        created_at: NOW,
    }
}

/// A watch reads back as a candidate of an entry sharing a keyword (or of every entry, with
/// none), with its watcher's key and PNs; never of its own entries, nor once its watcher left
/// the watch's PN; it ends once, and only by its watcher.
pub async fn watches_are_candidates_of_entries_that_may_match<S: ServerStore>(s: &S) {
    use cpns_store::DirectoryAsk;

    world(s).await;
    let home = pn(1, "gw-1", &["phone", "tv"]);
    s.register_pn(&home).await.unwrap();
    s.register_pn(&pn(2, "gw-2", &["phone"])).await.unwrap();
    let video = s
        .add_watch(&watch("phone", pid(1), &["video", "tv"]))
        .await
        .unwrap();
    let any = s.add_watch(&watch("phone", pid(2), &[])).await.unwrap();
    let tvs = s.add_watch(&watch("tv", pid(1), &["video"])).await.unwrap();
    assert!(video < any && any < tvs);
    let ids = |c: Vec<cpns_store::WatchCandidate>| {
        c.into_iter().map(|c| c.watch.watch_id).collect::<Vec<_>>()
    };
    let words = |w: &[&str]| w.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    // tv publishes "video": phone's two watches, not tv's own.
    let c = s
        .watch_candidates(&words(&["video"]), &eid("tv"), 100)
        .await
        .unwrap();
    assert_eq!(ids(c.clone()), [video, any]);
    let first = &c[0];
    assert_eq!(
        first.watch,
        cpns_store::WatchRecord {
            watch_id: video,
            ..watch("phone", pid(1), &["video", "tv"])
        }
    );
    assert_eq!(first.gateway, eid("gw-1"));
    assert_eq!(first.sealed_session_key, b"sk:phone".to_vec());
    assert_eq!(first.pns, [pid(1), pid(2)]);
    assert_eq!(c[1].gateway, eid("gw-2"));
    // A keyword no watch has: only the watch of every entry. A limit holds.
    let c = s
        .watch_candidates(&words(&["audio"]), &eid("tv"), 100)
        .await
        .unwrap();
    assert_eq!(ids(c), [any]);
    let c = s
        .watch_candidates(&words(&["video", "tv"]), &eid("bobs-tv"), 2)
        .await
        .unwrap();
    assert_eq!(ids(c), [video, any]);
    // Counted for its watcher.
    let v = s
        .directory_view(&eid("phone"), &DirectoryAsk::Watching)
        .await
        .unwrap();
    assert_eq!(v.watches, 2);
    // phone leaves PN 1: its watch there has no key any more.
    s.update_members(&pid(1), &[], &[eid("phone")], None)
        .await
        .unwrap();
    let c = s
        .watch_candidates(&words(&["video"]), &eid("bobs-tv"), 100)
        .await
        .unwrap();
    assert_eq!(ids(c), [any, tvs]);
    // Only its watcher ends a watch, once.
    assert!(!s.remove_watch(&eid("tv"), any).await.unwrap());
    assert!(s.remove_watch(&eid("phone"), any).await.unwrap());
    assert!(!s.remove_watch(&eid("phone"), any).await.unwrap());
    let c = s
        .watch_candidates(&words(&["video"]), &eid("bobs-tv"), 100)
        .await
        .unwrap();
    assert_eq!(ids(c), [tvs]);
    // A watcher not enrolled keeps nothing.
    assert!(matches!(
        s.add_watch(&watch("nobody", pid(1), &["x"])).await,
        Err(StoreError::NotFound { .. })
    ));
}
