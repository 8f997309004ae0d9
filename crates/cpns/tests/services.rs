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

use common::{Proc, World, cpns, run, s};

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
