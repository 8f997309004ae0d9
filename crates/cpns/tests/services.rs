//! The service directory as separate `cpns` processes run it (004 §5.5.5; docs/services.md): a
//! server, alice's PN GWs at home and at the office, bob's PN GW, and a PNE registered behind
//! each, every one with its own SQLite store. alice's TV publishes; her phone at the office is
//! told of it by a watch, discovers it by keyword and retrieves it; bob's phone sees none of her
//! user- or PN-scoped entries; a capability filter narrows a discovery; a short lease ends; the
//! TV going offline hides its entries; the stores are compared afterwards.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cpns_store::{ServerStore, SqliteStore};
use cpns_wire::EntityId;
use serde_json::Value;

mod common;

use common::{Proc, World, cpns, json_lines, run, s};

/// A description of service `id` with `keywords` (a JSON list's inside), in `scope`, leased
/// `lease_s`, needing `requires` (a JSON object) of a consumer; written to a file of `w`'s.
fn description(
    w: &World,
    id: &str,
    keywords: &str,
    scope: &str,
    lease_s: u32,
    requires: &str,
) -> String {
    let path = w.path(&format!("{id}.json"));
    let doc = format!(
        r#"{{"service_id":"{id}","name":"{id} of alice","type":"media.renderer","version":"1",
            "keywords":[{keywords}],"scope":{scope},"delivery":["push"],"lease_s":{lease_s},
            "requires":{requires}}}"#
    );
    std::fs::write(&path, doc).unwrap();
    s(&path).to_string()
}

/// `cpns service ARGS --store <id's store> --json`, which must succeed: its answer.
fn service(w: &World, id: &str, args: &[&str]) -> Value {
    let store = w.store(id);
    let mut all = vec!["service"];
    all.extend(args);
    all.extend(["--store", s(&store), "--json"]);
    let out = cpns(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"))
}

/// The service ids `id`'s discovery of `args` lists.
fn found(w: &World, id: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["discover"];
    all.extend(args);
    let v = service(w, id, &all);
    assert_eq!(v["verb"], "service_discover", "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["service_id"].as_str().unwrap().to_string())
        .collect()
}

/// Asks until `f` holds of `id`'s discovery of `args`, for at most 30 s (a lease running out,
/// the status hub hearing of a device gone); panics with the last answer otherwise.
fn until_found(w: &World, id: &str, args: &[&str], f: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = found(w, id, args);
        if f(&got) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} {args:?}: still {got:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_published_watched_discovered_and_kept_to_its_scope() {
    let w = World::builder()
        .gateway("home-gw")
        .gateway("office-gw")
        .pnes(&["tv", "phone"])
        .user("bob")
        .gateway("bob-gw")
        .pne("bobs-phone")
        .start();
    let (_office, office_pan) = w.start_gateway("office-gw", &[]);
    let (_bob_gw, bob_pan) = w.start_gateway("bob-gw", &[]);
    let mut tv = w.pne("tv").stay().setup("1-1").register().spawn();
    let tv_pn = tv.expect_event("registered")["pn_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut phone = w
        .pne("phone")
        .at(&office_pan)
        .stay()
        .setup("1-1")
        .register()
        .spawn();
    phone.expect_event("registered");
    let mut bob = w
        .pne("bobs-phone")
        .at(&bob_pan)
        .stay()
        .no_ui()
        .setup("1-1")
        .register()
        .spawn();
    bob.expect_event("registered");

    // The phone watches for video, following its matches.
    let phone_db = w.store("phone");
    let watcher = Proc::spawn(
        "service",
        &[
            "service",
            "watch",
            "video",
            "--follow",
            "--count",
            "1",
            "--json",
            "--store",
            s(&phone_db),
        ],
    );
    let watching: Value = serde_json::from_str(&watcher.line()).unwrap();
    let watch_id = watching["watch_id"].as_u64().unwrap();

    // The TV publishes: for alice's devices, for its own PN, and for everyone.
    let ui = r#"{"has_ui":true}"#;
    let user = r#"{"kind":"user"}"#;
    let public = r#"{"kind":"public"}"#;
    let in_pn = format!(r#"{{"kind":"pn","pn_id":"{tv_pn}"}}"#);
    let renderer = description(&w, "renderer", r#""Video","tv""#, user, 600, ui);
    let p = service(&w, "tv", &["publish", &renderer]);
    let renderer_id = p["dir_id"].as_u64().unwrap();
    assert!(p["expires_at_ms"].as_u64().unwrap() > 0, "{p}");
    let told: Value = serde_json::from_str(&watcher.line()).unwrap();
    assert_eq!(told["event"], "service_match", "{told}");
    assert_eq!(told["watch_id"], watch_id);
    assert_eq!(told["entry"]["dir_id"], renderer_id);
    assert_eq!(told["entry"]["offerer"], "tv");
    assert_eq!(
        told["entry"]["keywords"],
        serde_json::json!(["video", "tv"])
    );
    watcher.succeeds();
    phone.expect_event_where("service_match", |v| v["watch_id"] == watch_id);
    for (id, scope, requires) in [
        ("household", in_pn.as_str(), "{}"),
        ("screen", public, ui),
        ("speaker", public, "{}"),
    ] {
        let doc = description(&w, id, r#""video""#, scope, 600, requires);
        service(&w, "tv", &["publish", &doc]);
    }

    // Alice's phone, at another PN GW: her entries and the public ones, not the TV's PN's.
    let mine = found(&w, "phone", &["video"]);
    assert_eq!(mine, ["renderer", "screen", "speaker"]);
    let got = service(&w, "phone", &["retrieve", &renderer_id.to_string()]);
    assert_eq!(got["offerer"], "tv");
    assert_eq!(got["description"]["name"], "renderer of alice");
    assert_eq!(
        got["description"]["keywords"],
        serde_json::json!(["video", "tv"])
    );
    let readable = cpns(&[
        "service",
        "discover",
        "video",
        "tv",
        "--store",
        s(&phone_db),
    ]);
    assert!(
        readable.starts_with(&format!("{renderer_id}: renderer \"renderer of alice\"")),
        "{readable}"
    );

    // Bob's phone: only the public ones, and alice's user-scoped entry is not there to
    // retrieve. Without a UI, only the speaker fits it.
    assert_eq!(found(&w, "bobs-phone", &["video"]), ["screen", "speaker"]);
    assert_eq!(
        found(&w, "bobs-phone", &["video", "--fits-me"]),
        ["speaker"]
    );
    assert_eq!(found(&w, "phone", &["video", "--fits-me"]), mine);

    // The operator merges the directory's index on the running server: until nothing is
    // left, a line per request; discovery answers as before.
    let data_dir = w.data_dir();
    let out = cpns(&[
        "service",
        "merge",
        "--data-dir",
        s(&data_dir),
        "--pages",
        "1",
    ]);
    assert!(
        out.lines()
            .last()
            .unwrap_or("")
            .starts_with("directory index merged ("),
        "{out}"
    );
    let out = cpns(&["service", "merge", "--data-dir", s(&data_dir), "--json"]);
    let answers = json_lines(&out);
    assert_eq!(answers.last().unwrap()["more"], false, "{out}");
    assert_eq!(answers.last().unwrap()["steps"], 0, "merged already: {out}");
    assert_eq!(found(&w, "phone", &["video"]), mine);
    let out = run(&[
        "service",
        "merge",
        "--data-dir",
        s(&data_dir),
        "--pages",
        "0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad_request") && err.contains("pages"),
        "{err}"
    );
    let bob_db = w.store("bobs-phone");
    let out = run(&[
        "service",
        "retrieve",
        &renderer_id.to_string(),
        "--store",
        s(&bob_db),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not_found") || err.contains("no such service"),
        "{err}"
    );
    // Nor may bob unpublish the TV's.
    let v = service(&w, "bobs-phone", &["unpublish", "renderer"]);
    assert_eq!(v["removed"], false);

    // A short lease runs out.
    let flash = description(&w, "flash", r#""flash""#, user, 5, "{}");
    service(&w, "tv", &["publish", &flash]);
    assert_eq!(found(&w, "phone", &["flash"]), ["flash"]);
    until_found(&w, "phone", &["flash"], <[String]>::is_empty);

    // The TV goes away: its PN GW reports it offline, and its entries are hidden.
    tv.kill();
    until_found(&w, "phone", &["video"], <[String]>::is_empty);
    assert!(found(&w, "bobs-phone", &["video"]).is_empty());

    // Every store agrees on the PNs; the server's directory holds what the TV published, for
    // it, and the phone's watch.
    w.stores().await.agree();
    let store = SqliteStore::open(&w.server_db()).await.unwrap();
    let tv_id = EntityId::new("tv").unwrap();
    let view = store
        .directory_view(
            &tv_id,
            &cpns_store::DirectoryAsk::Offered {
                service_id: "none".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        view.offered, 5,
        "renderer, household, screen, speaker, flash"
    );
    let phone_id = EntityId::new("phone").unwrap();
    let view = store
        .directory_view(&phone_id, &cpns_store::DirectoryAsk::Watching)
        .await
        .unwrap();
    assert_eq!(view.watches, 1);
    let v = service(&w, "phone", &["unwatch", &watch_id.to_string()]);
    assert_eq!(v["removed"], true);
    let view = store
        .directory_view(&phone_id, &cpns_store::DirectoryAsk::Watching)
        .await
        .unwrap();
    assert_eq!(view.watches, 0);
    store.close().await;
}

/// `cpns group ARGS --store <id's store> --json`, which must succeed: its answer.
fn group(w: &World, id: &str, args: &[&str]) -> Value {
    let store = w.store(id);
    let mut all = vec!["group"];
    all.extend(args);
    all.extend(["--store", s(&store), "--json"]);
    let out = cpns(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"))
}

/// The group keys a device's store keeps: (group id, epoch).
async fn kept_groups(w: &World, id: &str) -> Vec<(String, u64)> {
    use cpns_store::DeviceStore;
    let store = SqliteStore::open(&w.store(id)).await.unwrap();
    let kept = store.local_groups().await.unwrap();
    store.close().await;
    kept.into_iter()
        .map(|g| (g.group_id.to_string(), g.epoch))
        .collect()
}

/// The texts of the service group content `p` was told of so far.
fn contents(p: &Proc) -> Vec<String> {
    p.seen("service_group_content")
        .iter()
        .map(|v| common::text(&v["text"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_group_spans_two_pns_and_two_users_and_its_key_follows_its_members() {
    let w = World::builder()
        .gateway("home-gw")
        .gateway("office-gw")
        .pnes(&["phone", "tv"])
        .user("bob")
        .gateway("bob-gw")
        .pne("bobs-phone")
        .start();
    let (_office, office_pan) = w.start_gateway("office-gw", &[]);
    let (_bob_gw, bob_pan) = w.start_gateway("bob-gw", &[]);
    let mut phone = w.pne("phone").stay().setup("1-1").register().spawn();
    phone.expect_event("registered");
    let mut tv = w
        .pne("tv")
        .at(&office_pan)
        .stay()
        .setup("1-1")
        .register()
        .spawn();
    tv.expect_event("registered");
    let mut bob = w
        .pne("bobs-phone")
        .at(&bob_pan)
        .stay()
        .setup("1-1")
        .register()
        .spawn();
    bob.expect_event("registered");

    // alice's phone makes the group and invites her TV (at another PN GW, in another PN) and
    // bob's phone; each is told, and consents.
    let made = group(&w, "phone", &["create", "Holiday album"]);
    let g = common::text(&made["group_id"]);
    assert_eq!(made["epoch"], 1);
    for (p, id) in [(&mut tv, "tv"), (&mut bob, "bobs-phone")] {
        group(&w, "phone", &["invite", &g, id]);
        let invited = p.expect_event_where("service_group_invited", |v| v["group_id"] == g);
        assert_eq!(invited["inviter"], "phone");
        let answer = group(&w, id, &["accept", &g]);
        assert_eq!(answer["accepted"], true, "{answer}");
    }
    // Push: each acceptance moved the group on, and the members already in were pushed the
    // new key (the phone epochs 2 and 3, the TV epoch 3).
    phone.expect_event_where("service_group_key", |v| {
        v["group_id"] == g && v["epoch"] == 3
    });
    tv.expect_event_where("service_group_key", |v| {
        v["group_id"] == g && v["epoch"] == 3
    });
    let members = group(&w, "bobs-phone", &["members", &g]);
    let listed: Vec<(String, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (common::text(&m["pne"]), common::text(&m["owner"])))
        .collect();
    assert_eq!(
        listed,
        [
            ("phone".to_string(), "alice".to_string()),
            ("tv".into(), "alice".into()),
            ("bobs-phone".into(), "bob".into())
        ]
    );

    // Content sealed by the phone opens at the TV and at bob's phone.
    let sent = group(&w, "phone", &["send", &g, "photo 1"]);
    assert_eq!(
        (sent["epoch"].as_u64(), sent["delivered"].as_u64()),
        (Some(3), Some(2))
    );
    for p in [&mut tv, &mut bob] {
        let got = p.expect_event_where("service_group_content", |v| v["group_id"] == g);
        assert_eq!(
            (common::text(&got["text"]), common::text(&got["from"])),
            ("photo 1".into(), "phone".into())
        );
        assert_eq!(got["owner"], "alice");
    }

    // A file pushed to the group: one session for each PN a member is in (the TV's behind
    // the office PN GW, bob's behind his), each member keeping it whole, each record charged
    // to the member's own user.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let album = w.path("album.zip");
    std::fs::write(&album, &bytes).unwrap();
    let phone_db = w.store("phone");
    let out = cpns(&[
        "content",
        "push",
        s(&album),
        "--group",
        &g,
        "--wait",
        "--json",
        "--store",
        s(&phone_db),
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines[0]["verb"], "deliver", "{out}");
    assert_eq!(lines[0]["also"].as_array().map(Vec::len), Some(1), "{out}");
    let sent: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "delivery_sent")
        .collect();
    assert_eq!(sent.len(), 2, "{out}");
    for (p, id) in [(&mut tv, "tv"), (&mut bob, "bobs-phone")] {
        p.expect_event_where("delivery_received", |v| v["name"] == "album.zip");
        let mut inbox = w.store(id).into_os_string();
        inbox.push(".inbox");
        let kept = std::path::PathBuf::from(inbox).join("album.zip");
        assert_eq!(std::fs::read(&kept).unwrap(), bytes, "{id}");
    }
    // Each target's end reaches the server by its own call, which the phone's word may
    // overtake: the records are read once both are closed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut charged: Vec<(String, String, Option<u32>)> = Vec::new();
    while Instant::now() < deadline {
        let store = SqliteStore::open(&w.server_db()).await.unwrap();
        charged = store
            .deliveries(None, None)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.target.to_string(), r.charged.to_string(), r.result))
            .collect();
        store.close().await;
        if charged.len() == 2 && charged.iter().all(|c| c.2.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    charged.sort();
    assert_eq!(
        charged,
        [
            ("bobs-phone".to_string(), "bob".to_string(), Some(1)),
            ("tv".into(), "alice".into(), Some(1))
        ]
    );

    // The TV is away (killed) while bob is expelled: epoch 4, which bob never gets.
    tv.kill();
    let expelled = group(&w, "phone", &["expel", &g, "bobs-phone"]);
    assert_eq!(expelled["epoch"], 4);
    let ended = bob.expect_event_where("service_group_ended", |v| v["group_id"] == g);
    assert_eq!(ended["why"], "expelled");
    phone.expect_event_where("service_group_key", |v| {
        v["group_id"] == g && v["epoch"] == 4
    });
    group(&w, "phone", &["send", &g, "photo 2"]);
    // Bob's PNE forgot the key, cannot pull it, and is not sent the next item: a later notice
    // to it (a new invitation) arrives with no content before it.
    assert_eq!(
        group(&w, "bobs-phone", &["list"])["groups"],
        serde_json::json!([])
    );
    assert!(kept_groups(&w, "bobs-phone").await.is_empty());
    let bob_db = w.store("bobs-phone");
    let out = run(&["group", "key", &g, "--store", s(&bob_db)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forbidden"), "{err}");
    group(&w, "phone", &["invite", &g, "bobs-phone"]);
    bob.expect_event_where("service_group_invited", |v| v["group_id"] == g);
    assert_eq!(
        contents(&bob),
        ["photo 1"],
        "the expelled member got nothing after"
    );

    // The TV comes back with the key its store kept (epoch 3): content of epoch 4 is refused
    // with the reason, until it pulls the key back.
    let mut tv = w.pne("tv").at(&office_pan).stay().spawn();
    tv.expect_event("discovered");
    assert_eq!(kept_groups(&w, "tv").await, [(g.clone(), 3)]);
    let held = group(&w, "tv", &["list"]);
    assert_eq!(held["groups"][0]["epoch"], 3, "{held}");
    // Its link is up once a call of its own goes through: the pull is retried until it does.
    let pulled = until_ok(|| {
        let tv_db = w.store("tv");
        let out = run(&["group", "members", &g, "--json", "--store", s(&tv_db)]);
        out.status.success()
    });
    assert!(pulled);
    group(&w, "phone", &["send", &g, "photo 2b"]);
    let refused = tv.expect_event_where("service_group_content_refused", |v| v["group_id"] == g);
    let why = common::text(&refused["reason"]);
    assert!(
        why.contains("sealed under epoch 4, and this PNE holds epoch 3"),
        "{why}"
    );
    let key = group(&w, "tv", &["key", &g]);
    assert_eq!(key["epoch"], 4);
    assert_eq!(kept_groups(&w, "tv").await, [(g.clone(), 4)]);
    group(&w, "phone", &["send", &g, "photo 3"]);
    let got = tv.expect_event_where("service_group_content", |v| v["group_id"] == g);
    assert_eq!(common::text(&got["text"]), "photo 3");

    // Every store agrees: the server's group (phone and TV at epoch 4, bob invited again), the
    // members' kept keys; then the owner deletes it, and it is gone everywhere.
    w.stores().await.agree();
    let server = SqliteStore::open(&w.server_db()).await.unwrap();
    let gid: cpns_wire::GroupId = g.parse().unwrap();
    let view = server
        .group_view(&gid, &EntityId::new("phone").unwrap(), None, 0)
        .await
        .unwrap();
    let group_row = view.group.as_ref().unwrap();
    assert_eq!(group_row.epoch, 4);
    let on_server: Vec<String> = view
        .members
        .iter()
        .map(|m| m.member.entity.to_string())
        .collect();
    assert_eq!(on_server, ["phone", "tv"]);
    assert_eq!(kept_groups(&w, "phone").await, [(g.clone(), 4)]);
    group(&w, "phone", &["delete", &g]);
    let ended = tv.expect_event_where("service_group_ended", |v| v["group_id"] == g);
    assert_eq!(ended["why"], "deleted");
    let view = server
        .group_view(&gid, &EntityId::new("phone").unwrap(), None, 0)
        .await
        .unwrap();
    assert!(view.group.is_none());
    server.close().await;
    for id in ["phone", "tv", "bobs-phone"] {
        assert!(kept_groups(&w, id).await.is_empty(), "{id}");
    }
}

/// Tries `f` until it holds, for at most 30 s; whether it did.
fn until_ok(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// 004 §5.5.10 with separate processes: the TV declares what it holds (`cpns content declare`)
/// and publishes a renderer; the phone's query of its user's PNs, answered by the server, lists
/// both under the TV; a file that is not a contents list is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_shows_what_a_member_holds_and_offers() {
    let mut w = World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "tv"])
        .start();
    let (_phone, _tv, pn) = w.pn_with("phone", &["tv"]);
    // The operator's application follows alice's inventories, live.
    let data_dir = w.data_dir();
    let watch = Proc::spawn(
        "pn",
        &["pn", "watch", "alice", "--data-dir", s(&data_dir), "--json"],
    );
    let first: Value = serde_json::from_str(&watch.line()).unwrap();
    assert_eq!(first["verb"], "inventory_subscribe", "{first}");
    // And the phone follows its PN's, through its PN GW.
    let phone_db = w.store("phone");
    let follow = Proc::spawn(
        "follow",
        &["pn", "follow", &pn, "--store", s(&phone_db), "--json"],
    );
    let first: Value = serde_json::from_str(&follow.line()).unwrap();
    assert_eq!(
        (&first["verb"], &first["pn"]["pn_id"]),
        (&Value::from("inventory_follow"), &Value::from(pn.as_str())),
        "{first}"
    );
    let tv_db = w.store("tv");
    let list = w.path("contents.json");
    std::fs::write(
        &list,
        r#"[{"name":"holiday.mp4","media_type":"video/mp4"},{"name":"album.zip","media_type":"application/zip"}]"#,
    )
    .unwrap();
    let out = cpns(&[
        "content",
        "declare",
        s(&list),
        "--store",
        s(&tv_db),
        "--json",
    ]);
    let kept: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(kept["kept"], 2, "{out}");
    let doc = description(
        &w,
        "renderer",
        r#""video""#,
        r#"{"kind":"user"}"#,
        3600,
        "{}",
    );
    service(&w, "tv", &["publish", &doc]);
    for change in ["contents", "services"] {
        let told: Value = serde_json::from_str(&follow.line()).unwrap();
        assert_eq!(
            (
                &told["event"],
                &told["pn_id"],
                &told["pne"],
                &told["change"]
            ),
            (
                &Value::from("inventory_changed"),
                &Value::from(pn.as_str()),
                &Value::from("tv"),
                &Value::from(change)
            ),
            "{told}"
        );
        let told: Value = serde_json::from_str(&watch.line()).unwrap();
        assert_eq!(
            (&told["event"], &told["pne"], &told["change"]),
            (
                &Value::from("inventory_changed"),
                &Value::from("tv"),
                &Value::from(change)
            ),
            "{told}"
        );
    }
    // Not a contents list: refused, with what it should be.
    let bad = w.path("bad.json");
    std::fs::write(&bad, r#"{"name":"x"}"#).unwrap();
    let out = run(&["content", "declare", s(&bad), "--store", s(&tv_db)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a JSON list"));

    let out = cpns(&["pn", "query", "--store", s(&w.store("phone")), "--json"]);
    let read: Value = serde_json::from_str(out.trim()).unwrap();
    let holdings = read["holdings"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(holdings.len(), 1, "{out}");
    let tv_holds = &holdings[0];
    assert_eq!(tv_holds["pne"], "tv");
    let names: Vec<&str> = tv_holds["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["holiday.mp4", "album.zip"]);
    assert_eq!(tv_holds["services"][0]["service_id"], "renderer");
    assert_eq!(tv_holds["services"][0]["type"], "media.renderer");
    // The server's record holds them too.
    let store = SqliteStore::open(&w.server_db()).await.unwrap();
    let rec = store.pn(&pn.parse().unwrap()).await.unwrap().unwrap();
    let m = rec
        .members
        .iter()
        .find(|m| m.pne_id.as_str() == "tv")
        .unwrap();
    assert_eq!(m.contents.len(), 2);
    store.close().await;
}
