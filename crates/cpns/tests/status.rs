//! Capabilities, status, usage and charging as separate `cpns` processes
//! (docs/device-status.md): a server, a PN GW and long-running PNEs on loopback, a subscriber
//! on the server's control socket as an external application, and the stores read afterwards.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cpns_store::{ServerStore, SqliteStore};
use cpns_wire::{EntityId, Status, UserId};
use serde_json::Value;

mod common;

use common::{Proc, World, cpns, run, s};

/// `cpns ... --json`: the one JSON answer.
fn cpns_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = cpns(&all);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("cpns {all:?}: {text:?}: {e}"))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server (with `server_args`) and the PN GW `home-gw` (with `gateway_args`) running, and
/// the PNEs `phone` and `tablet` enrolled, all of alice.
fn world(server_args: &[&str], gateway_args: &[&str]) -> World {
    World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "tablet"])
        .server_args(server_args)
        .gateway_args(gateway_args)
        .start()
}

/// `tablet` waits to be invited, `phone` (reaching the PN GW at `phone_pan`, if given) asks for
/// a PN with every PNE and registers; both stay, reporting dynamic capabilities at most once a
/// second. Once both joined and were reported online, the two PNEs.
fn household(w: &mut World, phone_pan: Option<&str>, extra: &[&str]) -> (Proc, Proc) {
    let often = ["--dynamic-interval-s", "1"];
    let mut tablet = w
        .pne("tablet")
        .stay()
        .args(&often)
        .await_invitation()
        .spawn();
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "tablet");
    let pan = phone_pan.map_or_else(|| w.pan().to_string(), str::to_string);
    let mut phone = w
        .pne("phone")
        .at(&pan)
        .stay()
        .args(&often)
        .setup("all")
        .register()
        .args(extra)
        .spawn();
    phone.expect_event("registered");
    tablet.expect_event("pn_joined");
    // Proven to its PN GW, each reports what it is (so a test's own reports come after).
    phone.expect_event("capabilities_reported");
    tablet.expect_event("capabilities_reported");
    (phone, tablet)
}

/// A subscriber on the server's control socket (an external application).
fn subscribe(w: &World, args: &[&str]) -> Proc {
    let data = w.data_dir();
    let mut all = vec!["status", "subscribe", "--json", "--data-dir", s(&data)];
    all.extend(args);
    Proc::spawn("status", &all)
}

/// The server's store, open.
async fn server_store(w: &World) -> SqliteStore {
    SqliteStore::open(&w.server_db()).await.unwrap()
}

fn eid(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

/// The next JSON line of a subscriber.
fn next(sub: &Proc) -> Value {
    let line = sub.line();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}

fn entry<'a>(n: &'a Value, id: &str) -> &'a Value {
    n["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == id)
        .unwrap_or_else(|| panic!("no {id} in {n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capability_change_reaches_the_server_which_also_asks_the_pne_through_its_pn_gw() {
    let mut w = world(&[], &[]);
    let (mut phone, _tablet) = household(&mut w, None, &[]);
    let phone_db = w.store("phone");
    cpns(&[
        "caps",
        "set",
        "--store",
        s(&phone_db),
        "--software",
        "maps/4,game/2",
        "--battery",
        "64",
        "--running",
        "maps",
    ]);
    // Confirmed by the PN GW only once the server stored it.
    phone.expect_event("capabilities_reported");
    let st = server_store(&w).await;
    let rec = st.entity(&eid("phone")).await.unwrap().unwrap();
    let caps = rec.capabilities.unwrap();
    assert_eq!(caps.software, ["maps/4", "game/2"]);
    assert_eq!(caps.battery_pct, Some(64));
    assert_eq!(caps.running, ["maps"]);
    let status = &st.statuses(&[eid("phone")]).await.unwrap()[0];
    assert_eq!(status.attributes.battery_pct, Some(64));
    assert_eq!(status.status, Status::Online);
    st.close().await;
    // As recorded, and asked of the PNE now through its PN GW.
    let data = w.data_dir();
    let recorded = cpns_json(&["caps", "show", "phone", "--data-dir", s(&data)]);
    assert_eq!(recorded["capabilities"]["battery_pct"], 64);
    let live = cpns_json(&["caps", "show", "phone", "--live", "--data-dir", s(&data)]);
    assert_eq!(live["live"], true);
    assert_eq!(live["capabilities"]["software"][1], "game/2");
    // The PN GW answers for itself, with what it was just given.
    let gw_db = w.store("home-gw");
    cpns(&["caps", "set", "--store", s(&gw_db), "--software", "hub/2"]);
    let gw = cpns_json(&["caps", "show", "home-gw", "--live", "--data-dir", s(&data)]);
    assert_eq!(gw["capabilities"]["device_type"], "home-hub");
    assert_eq!(gw["capabilities"]["software"][0], "hub/2");
    // An entity no PN GW reaches: a clear refusal.
    let out = run(&["caps", "show", "nobody", "--live", "--data-dir", s(&data)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no entity nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pne_and_a_hung_one_turn_offline_and_a_subscriber_is_told_within_the_bound() {
    let bound = 3;
    let b = bound.to_string();
    let mut w = world(&[], &["--pan-offline-after-s", &b]);
    // Heartbeats well within the bound keep the quiet PNEs.
    let (mut phone, mut tablet) = household(&mut w, None, &["--heartbeat-s", "1"]);
    let sub = subscribe(&w, &["phone", "tablet"]);
    let first = next(&sub);
    assert_eq!(entry(&first, "phone")["status"], "online");
    assert_eq!(entry(&first, "tablet")["status"], "online");
    // Killed: its link closes, the PN GW says so at once.
    tablet.kill();
    let n = next(&sub);
    assert_eq!(
        (n["reason"].as_str(), entry(&n, "tablet")["status"].as_str()),
        (Some("change"), Some("offline"))
    );
    // Hung (stopped, its socket still open): silent past the bound, then offline.
    let stopped = Instant::now();
    phone.signal("STOP");
    let n = next(&sub);
    let waited = stopped.elapsed();
    assert_eq!(entry(&n, "phone")["status"], "offline");
    assert!(
        waited <= Duration::from_secs(bound + 5),
        "told after {waited:?}, bound {bound} s"
    );
    phone.signal("CONT");
    phone.expect_any(&["flow_failed", "discovered"]);
    let st = server_store(&w).await;
    let recs = st.statuses(&[eid("phone"), eid("tablet")]).await.unwrap();
    st.close().await;
    assert!(recs.iter().all(|r| r.reported_by == Some(eid("home-gw"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_policy_fires_once_per_crossing_not_on_every_report() {
    let mut w = world(&[], &[]);
    let (mut phone, _tablet) = household(&mut w, None, &[]);
    let phone_db = w.store("phone");
    let set = |pct: &str| {
        cpns(&["caps", "set", "--store", s(&phone_db), "--battery", pct]);
    };
    set("50");
    phone.expect_event("capabilities_reported");
    let sub = subscribe(&w, &["phone", "--below", "battery=10"]);
    assert_eq!(entry(&next(&sub), "phone")["battery_pct"], 50);
    // Each report below reaches the server (the PNE confirms each), but only crossings fire.
    for pct in ["9", "8", "7", "30", "5"] {
        set(pct);
        phone.expect_event("capabilities_reported");
    }
    let st = server_store(&w).await;
    let rec = &st.statuses(&[eid("phone")]).await.unwrap()[0];
    st.close().await;
    assert_eq!(
        rec.attributes.battery_pct,
        Some(5),
        "every report was recorded"
    );
    let one = next(&sub);
    let two = next(&sub);
    assert_eq!(one["reason"], "threshold");
    assert_eq!(entry(&one, "phone")["battery_pct"], 9);
    assert_eq!(
        entry(&two, "phone")["battery_pct"],
        5,
        "8 and 7 did not fire; 30 re-armed"
    );
}

/// Relays a TCP connection to `to`, keeping every byte that crossed, both ways.
fn tap(to: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            let Ok(outbound) = TcpStream::connect(&to) else {
                return;
            };
            for (mut from, mut into) in [
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                (outbound, inbound),
            ] {
                let keep = Arc::clone(&keep);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        keep.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_a_private_service_never_leaves_the_device_and_allowed_usage_is_charged_to_its_owner()
 {
    let mut w = world(&["--chargeable", "game=3"], &[]);
    let pan = w.pan().to_string();
    let (phone_pan, wire) = tap(pan);
    let (_phone, _tablet) = household(&mut w, Some(&phone_pan), &["--pan-security", "cpns"]);
    let db = w.store("phone");
    let db = s(&db);
    cpns(&[
        "usage",
        "prefs",
        "ultraviolet-video",
        "private",
        "--store",
        db,
    ]);
    cpns(&["usage", "prefs", "game", "shared", "--store", db]);
    let (start, end) = ((now_s() - 600).to_string(), (now_s() - 60).to_string());
    for (service, bytes) in [
        ("ultraviolet-video", "7000000"),
        ("game", "2500000"),
        ("maps", "10"),
    ] {
        cpns(&[
            "usage",
            "report",
            "--service",
            service,
            "--start",
            &start,
            "--end",
            &end,
            "--bytes",
            bytes,
            "--store",
            db,
        ]);
    }
    let sent = cpns_json(&["usage", "report", "--send", "--store", db]);
    assert_eq!(
        (
            sent["sent"].as_u64(),
            sent["withheld"].as_u64(),
            sent["charged"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    // Sending again sends nothing: every record was acknowledged or withheld.
    let again = cpns_json(&["usage", "report", "--send", "--store", db]);
    assert_eq!(
        (again["sent"].as_u64(), again["withheld"].as_u64()),
        (Some(0), Some(0))
    );

    // Not on the wire, in any form the PN GW relays, and not at the server.
    let bytes = wire.lock().unwrap().clone();
    assert!(!bytes.is_empty());
    assert!(
        !bytes
            .windows(b"ultraviolet".len())
            .any(|w| w == b"ultraviolet")
    );
    let st = server_store(&w).await;
    let all = st.usage_summary(None, false).await.unwrap();
    let services: Vec<&str> = all.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(services, ["game", "maps"]);
    assert!(
        all.iter()
            .all(|r| r.user == Some(UserId::new("alice").unwrap()))
    );
    // External applications see what was shared only.
    let shared = st.usage_summary(None, true).await.unwrap();
    assert_eq!(
        shared
            .iter()
            .map(|r| r.service.as_str())
            .collect::<Vec<_>>(),
        ["game"]
    );
    st.close().await;
    // The device keeps its own, private use too.
    let mine = cpns_json(&["usage", "summary", "--store", db]);
    let local: Vec<&str> = mine["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["service"].as_str().unwrap())
        .collect();
    assert_eq!(local, ["game", "maps", "ultraviolet-video"]);

    // Charging: 3 units per started MB of game, 2.5 MB: 9 units, to alice, listable by her.
    let data = w.data_dir();
    let listed = cpns_json(&[
        "charging",
        "list",
        "--user",
        "alice",
        "--data-dir",
        s(&data),
    ]);
    let records = listed["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0]["service"].as_str(), records[0]["units"].as_u64()),
        (Some("game"), Some(9))
    );
    let from_pne = cpns_json(&["charging", "list", "--store", db]);
    assert_eq!(from_pne["records"], listed["records"]);
    let bob = cpns_json(&["charging", "list", "--user", "bob", "--data-dir", s(&data)]);
    assert!(bob["records"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_frequent_reports_from_one_device_are_refused_while_the_others_go_on() {
    let mut w = world(&[], &[]);
    let (_phone, _tablet) = household(&mut w, None, &[]);
    let phone = w.store("phone");
    let tablet = w.store("tablet");
    let mut refused = None;
    for _ in 0..12 {
        let out = run(&["status", "set", "busy", "--store", s(&phone)]);
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).to_string());
            break;
        }
    }
    let refused = refused.expect("a burst of status reports is refused");
    assert!(
        refused.contains("rate_limited") && refused.contains("try again in"),
        "{refused}"
    );
    // The other device is not held back.
    cpns(&["status", "set", "custom:reading", "--store", s(&tablet)]);
    let st = server_store(&w).await;
    let recs = st.statuses(&[eid("phone"), eid("tablet")]).await.unwrap();
    st.close().await;
    assert_eq!(recs[0].status, Status::Busy);
    assert_eq!(
        (recs[1].status, recs[1].label.as_deref()),
        (Status::Custom, Some("reading"))
    );
    // Bad input never leaves the CLI, and says what to do.
    let out = run(&["status", "set", "sleeping", "--store", s(&phone)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("online, busy or custom:LABEL"));
    let out = run(&[
        "caps",
        "set",
        "--store",
        s(&phone),
        "--running",
        &vec!["app"; 65].join(","),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 64"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staying_pne_sends_allowed_usage_on_its_own() {
    let mut w = world(&[], &[]);
    let (mut phone, _tablet) = household(&mut w, None, &["--usage-every-s", "1"]);
    let db = w.store("phone");
    let (start, end) = ((now_s() - 300).to_string(), (now_s() - 30).to_string());
    cpns(&[
        "usage",
        "report",
        "--service",
        "maps",
        "--start",
        &start,
        "--end",
        &end,
        "--bytes",
        "42",
        "--store",
        s(&db),
    ]);
    // Sent by the PNE itself (004 §5.5.4), acknowledged by the server.
    phone.expect_event_where("usage_sent", |v| v["sent"] == 1);
    let st = server_store(&w).await;
    let all = st.usage_summary(None, false).await.unwrap();
    st.close().await;
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].service.as_str(), all[0].bytes), ("maps", 42));
}
