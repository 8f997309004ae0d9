//! The acceptance test of the spine: `cpns server`, `cpns gateway` and two `cpns pne` run as
//! separate processes of the built binary over loopback TCP and TLS. A PN is established both
//! ways (000 §6.6.1.1 initiated by a PNE, §6.6.1.2 by the PN GW), then the server's store, the
//! PN GW's local inventory and each PNE's are read from their SQLite files and must agree. The
//! server and the PN GW print JSON events (`--json`), the PNEs readable lines.

#![allow(clippy::unwrap_used)]

mod common;

use common::{World, members, names, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gateway_and_pnes_as_processes_establish_pns_both_ways() {
    // Four discoveries: both PNEs in the PNE-initiated round, both again in the second round.
    let mut w = World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "watch"])
        .gateway_args(&[
            "--establish",
            "all",
            "--after-pnes",
            "4",
            "--device-type",
            "home-hub",
            "--networks",
            "wlan,ethernet",
        ])
        .start();

    // 000 §6.6.1.1: the watch waits to be invited, the phone (with a UI, on an insecure PAN, so
    // with a LocalEUKey) asks for a PN with all PNEs.
    let mut watch = w.pne("watch").readable().await_invitation().no_ui().spawn();
    watch.expect_line(" discovered  gateway=home-gw ");
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "watch");
    let mut phone = w.pne("phone").readable().setup("all").spawn();
    let first = w.gw().expect_event("pn_established");
    assert_eq!(first["initiator"], "phone");
    assert!(
        phone
            .expect_line(" pn joined  pn=")
            .ends_with(" initiator=yes")
    );
    assert!(
        watch
            .expect_line(" pn joined  pn=")
            .ends_with(" initiator=no")
    );
    phone.succeeds();
    watch.succeeds();

    // 000 §6.6.1.2: both come back and wait; the PN GW invites all once it sees both.
    let watch = w.pne("watch").readable().await_invitation().no_ui().spawn();
    let phone = w.pne("phone").readable().await_invitation().spawn();
    let establishing = w.gw().expect_event("establishing");
    let second = w.gw().expect_event("pn_established");
    assert_eq!(second["pn_id"], establishing["pn_id"]);
    assert_eq!(second["initiator"], "home-gw");
    phone.succeeds();
    watch.succeeds();
    w.stop_gateway();

    // The state of record, the PN GW's local inventory and each PNE's agree, PN by PN, and
    // hold the two PNs established, each of both PNEs, every member authenticated.
    let stores = w.stores().await;
    stores.agree();
    let established = members(&[
        (text(&first["pn_id"]), &["phone", "watch"]),
        (text(&second["pn_id"]), &["phone", "watch"]),
    ]);
    assert_eq!(established.len(), 2, "two distinct PNs: {established:?}");
    for e in [&first, &second] {
        assert_eq!(names(&e["members"]), ["phone", "watch"]);
    }
    assert_eq!(stores.at_server(), established);
    for pn in &stores.server {
        assert_eq!(pn.gateway.as_str(), "home-gw");
        assert!(pn.members.iter().all(|m| m.authenticated), "{stores:?}");
    }
    // Every member on the insecure PAN holds its LocalEUKey for each PN, the watch (no UI)
    // too (docs/security.md §4.2).
    for id in ["phone", "watch"] {
        let pns = &stores.local[id];
        assert_eq!(pns.len(), 2, "{id}");
        for pn in pns {
            let key = pn
                .members
                .iter()
                .any(|m| m.pne_id.as_str() == id && m.sealed_local_key.is_some());
            assert!(key, "{id}: {pn:?}");
        }
    }
}

/// `cpns service check`: a description file reads as the directory will read it, or the command
/// says what to fix and fails; `--json` prints it as kept (keywords normalised).
#[test]
fn a_service_description_is_checked_before_it_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("tv.json");
    std::fs::write(
        &good,
        r#"{"service_id":"tv-renderer","name":"Living room TV","type":"media.renderer",
            "version":"1.0","keywords":["Video","renderer"],"scope":{"kind":"user"},
            "delivery":["push"],"lease_s":3600}"#,
    )
    .unwrap();
    let line = common::cpns(&["service", "check", common::s(&good)]);
    assert_eq!(
        line,
        "ok: service tv-renderer (media.renderer, version 1.0): \"Living room TV\"; keywords \
         video, renderer; seen by every device of its user; delivery push; lease 3600 s\n"
    );
    let kept: serde_json::Value = serde_json::from_str(&common::cpns(&[
        "service",
        "check",
        "--json",
        common::s(&good),
    ]))
    .unwrap();
    assert_eq!(kept["keywords"], serde_json::json!(["video", "renderer"]));
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"service_id":"x","name":"n","type":"t","version":"1","keywords":["two words"],
            "scope":{"kind":"user"},"delivery":["push"],"lease_s":30}"#,
    )
    .unwrap();
    let out = common::run(&["service", "check", common::s(&bad)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a service description"), "{err}");
    assert!(err.contains("keywords: a keyword is one word"), "{err}");
    let missing = common::run(&["service", "check", "/nonexistent/x.json"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.json"));
}
