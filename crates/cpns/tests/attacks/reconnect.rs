//! (f) The server dies (SIGKILL, right after a PN was established, so the PN GW's report
//! confirming it may not be stored yet) and comes back on the same address and data directory:
//! the PN GW reconnects by itself (`wan_failed`, then `wan_ready` again), and the server's
//! inventory and the PN GW's local one, read from their SQLite files, agree PN for PN.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{Tables, World, dump, members, wan_barrier};

/// The cells of a dumped row.
fn cells(row: &str) -> Vec<&str> {
    row.split('|').collect()
}

/// A quoted TEXT cell's text.
fn text(cell: &str) -> String {
    cell.trim_matches('\'').to_string()
}

/// The server's PNs of `gw`: PN id (quoted BLOB) → (state, members), every member
/// authenticated.
fn server_pns(t: &Tables, gw: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    // pns: seq, pn_id, gateway, owner, state, created_at
    let rows: Vec<Vec<&str>> = t["pns"]
        .iter()
        .map(|r| cells(r))
        .filter(|c| text(c[2]) == gw)
        .collect();
    let by_seq: BTreeMap<&str, String> = rows.iter().map(|c| (c[0], c[1].to_string())).collect();
    let mut pns: BTreeMap<String, (String, BTreeSet<String>)> = rows
        .iter()
        .map(|c| (c[1].to_string(), (text(c[4]), BTreeSet::new())))
        .collect();
    // pn_members: pn_seq, pne_id, position, initiator, authenticated, ...
    for c in t["pn_members"].iter().map(|r| cells(r)) {
        if let Some((_, members)) = by_seq.get(c[0]).and_then(|pn| pns.get_mut(pn)) {
            assert_eq!(c[4], "1", "a member not authenticated: {c:?}");
            members.insert(text(c[1]));
        }
    }
    pns
}

/// The PN GW's local PNs: PN id (quoted BLOB) → members.
fn local_pns(t: &Tables) -> BTreeMap<String, BTreeSet<String>> {
    // local_pns: pn_id, gateway, stored_at, seq; local_members: pn_id, pne_id, ...
    let mut pns: BTreeMap<String, BTreeSet<String>> = t["local_pns"]
        .iter()
        .map(|r| (cells(r)[0].to_string(), BTreeSet::new()))
        .collect();
    for c in t["local_members"].iter().map(|r| cells(r)) {
        pns.get_mut(c[0]).unwrap().insert(text(c[1]));
    }
    pns
}

/// Both inventories hold exactly `expected` PNs (count), with the same members, all active at
/// the server.
async fn agree(w: &World, expected: usize) {
    let server = server_pns(&dump(&w.server_db()).await, "home-gw");
    let local = local_pns(&dump(&w.local_db("home-gw")).await);
    assert_eq!(server.len(), expected, "server: {server:?}");
    for (pn, (state, _)) in &server {
        assert_eq!(state, "active", "PN {pn} not confirmed: {server:?}");
    }
    let server: BTreeMap<String, BTreeSet<String>> =
        server.into_iter().map(|(pn, (_, m))| (pn, m)).collect();
    assert_eq!(
        server, local,
        "the server's inventory and the PN GW's differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reconnects_to_a_restarted_server_and_the_inventories_agree() {
    let w = World::new(&[("gateway", "home-gw"), ("pne", "phone"), ("pne", "tv")]);
    let (mut server, addr) = w.server("127.0.0.1:0").await;
    let (mut gw, pan) = w.gateway("home-gw", &addr, &[]).await;

    let mut phone = w.pne("phone", &pan, &["--setup", "1-1"]);
    let first = phone.expect("pn_joined").await;
    gw.expect_where("pn_established", |v| v["pn_id"] == first["pn_id"])
        .await;
    server.kill9();
    gw.expect("wan_failed").await;
    phone.succeeds().await;

    let (mut server, again) = w.server(&addr).await;
    assert_eq!(again, addr);
    gw.expect("wan_ready").await;
    // Step 17 done: the PN GW's report of its PN list is stored (and reconciled).
    server
        .expect_where("gateway_ready", |v| v["gateway"] == "home-gw")
        .await;
    agree(&w, 1).await;

    // The new session serves: a second PN, then both inventories agree again.
    let mut tv = w.pne("tv", &pan, &["--setup", "1-1", "--no-ui"]);
    let second = tv.expect("pn_joined").await;
    assert_eq!(members(&second), ["tv"]);
    tv.succeeds().await;
    gw.expect_where("pn_established", |v| v["pn_id"] == second["pn_id"])
        .await;
    wan_barrier(&pan, "home-gw", 1).await;
    agree(&w, 2).await;
    let failed = gw.seen("wan_failed").len();
    println!("PN GW: {failed} wan_failed event(s) before it reconnected");
}
