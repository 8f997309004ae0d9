//! The acceptance test of the spine: `cpns server`, `cpns gateway` and two `cpns pne` run as
//! separate processes of the built binary over loopback TCP and TLS. A PN is established both
//! ways (000 §6.6.1.1 initiated by a PNE, §6.6.1.2 by the PN GW), then the server's store and
//! the PN GW's local inventory are read from their SQLite files and must agree. The server and
//! the PN GW print JSON events (`--json`), the PNEs readable lines.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use cpns_store::{DeviceStore, ServerStore, SqliteStore};

mod common;

use common::{BIN, Proc};

fn cpns(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cpns {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A JSON string's text.
fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gateway_and_pnes_as_processes_establish_pns_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { tmp.path().join(n) };
    let data = p("server");
    cpns(&["init", "--data-dir", s(&data)]);
    for (kind, id) in [("gateway", "home-gw"), ("pne", "phone"), ("pne", "watch")] {
        let out = p(&format!("{id}.cred.json"));
        cpns(&[
            "enroll",
            "--data-dir",
            s(&data),
            "--user",
            "alice",
            "--kind",
            kind,
            "--id",
            id,
            "--out",
            s(&out),
        ]);
    }

    let mut server = Proc::spawn(
        "server",
        &[
            "server",
            "--json",
            "--data-dir",
            s(&data),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let server_addr = text(&server.expect_event("listening")["addr"]);
    // Four discoveries: both PNEs in the PNE-initiated round, both again in the second round.
    let mut gw = Proc::spawn(
        "gateway",
        &[
            "gateway",
            "--credential",
            s(&p("home-gw.cred.json")),
            "--server",
            &server_addr,
            "--pan-listen",
            "127.0.0.1:0",
            "--store",
            s(&p("gw.db")),
            "--establish",
            "all",
            "--after-pnes",
            "4",
            "--json",
            "--device-type",
            "home-hub",
            "--networks",
            "wlan,ethernet",
        ],
    );
    let pan = text(&gw.expect_event("pan_listening")["addr"]);
    gw.expect_event("wan_ready");

    // 000 §6.6.1.1: the watch waits to be invited, the phone (with a UI, on an insecure PAN, so
    // with a LocalEUKey) asks for a PN with all PNEs.
    let pne = |id: &'static str, extra: &[&str]| {
        let mut args = vec!["pne", "--gateway", &pan, "--device-type", id];
        let cred = s(&p(&format!("{id}.cred.json"))).to_string();
        let store = s(&p(&format!("{id}.db"))).to_string();
        args.extend(extra);
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--credential".into(), cred, "--store".into(), store]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        Proc::spawn(id, &refs)
    };
    let mut watch = pne("watch", &["--await-invitation", "--no-ui"]);
    watch.expect_line(" discovered  gateway=home-gw ");
    gw.expect_event_where("pne_discovered", |v| v["pne"] == "watch");
    let mut phone = pne("phone", &["--setup", "all"]);
    let first = gw.expect_event("pn_established");
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
    let watch = pne("watch", &["--await-invitation", "--no-ui"]);
    let phone = pne("phone", &["--await-invitation"]);
    let establishing = gw.expect_event("establishing");
    let second = gw.expect_event("pn_established");
    assert_eq!(second["pn_id"], establishing["pn_id"]);
    assert_eq!(second["initiator"], "home-gw");
    phone.succeeds();
    watch.succeeds();
    drop(gw);
    drop(server);

    // The state of record and the PN GW's local inventory agree, PN by PN.
    let established: BTreeSet<(String, String)> = [first, second]
        .iter()
        .map(|e| {
            let members: Vec<String> = e["members"].as_array().unwrap().iter().map(text).collect();
            (text(&e["pn_id"]), members.join(","))
        })
        .collect();
    assert_eq!(established.len(), 2, "two distinct PNs: {established:?}");
    let server_store = SqliteStore::open(&data.join("cpns.db")).await.unwrap();
    let gw_store = SqliteStore::open(&p("gw.db")).await.unwrap();
    let server_pns: BTreeSet<(String, String)> = server_store
        .all_pns()
        .await
        .unwrap()
        .iter()
        .map(|pn| {
            assert_eq!(pn.gateway.as_str(), "home-gw");
            assert!(pn.members.iter().all(|m| m.authenticated));
            let members: Vec<&str> = pn.members.iter().map(|m| m.pne_id.as_str()).collect();
            (pn.pn_id.to_string(), members.join(","))
        })
        .collect();
    let local_pns: BTreeSet<(String, String)> = gw_store
        .local_pns()
        .await
        .unwrap()
        .iter()
        .map(|pn| {
            let members: Vec<&str> = pn.members.iter().map(|m| m.pne_id.as_str()).collect();
            (pn.pn_id.to_string(), members.join(","))
        })
        .collect();
    assert_eq!(
        server_pns, local_pns,
        "server store and PN GW local inventory differ"
    );
    let normalize = |set: &BTreeSet<(String, String)>| -> BTreeSet<(String, BTreeSet<String>)> {
        set.iter()
            .map(|(pn, m)| (pn.clone(), m.split(',').map(str::to_string).collect()))
            .collect()
    };
    assert_eq!(normalize(&server_pns), normalize(&established));
    for (_, members) in normalize(&server_pns) {
        assert_eq!(
            members,
            BTreeSet::from(["phone".to_string(), "watch".to_string()])
        );
    }
    // The phone holds its LocalEUKey for the first PN; the watch (no UI) holds none.
    let phone_store = SqliteStore::open(&p("phone.db")).await.unwrap();
    let phone_pns = phone_store.local_pns().await.unwrap();
    assert_eq!(phone_pns.len(), 2);
    assert!(
        phone_pns
            .iter()
            .all(|pn| pn.members.iter().any(|m| m.sealed_local_key.is_some()))
    );
    let watch_store = SqliteStore::open(&p("watch.db")).await.unwrap();
    let watch_pns = watch_store.local_pns().await.unwrap();
    assert_eq!(watch_pns.len(), 2);
    assert!(
        watch_pns
            .iter()
            .all(|pn| pn.members.iter().all(|m| m.sealed_local_key.is_none()))
    );
}
