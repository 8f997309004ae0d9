//! (f) The server dies (SIGKILL, right after a PN was established, so the PN GW's report
//! confirming it may not be stored yet) and comes back on the same address and data directory:
//! the PN GW reconnects by itself (`wan_failed`, then `wan_ready` again), and the server's
//! inventory, the PN GW's local one and the PNEs', read from their SQLite files, agree PN for PN.

use cpns_store::PnState;

use crate::common::{World, names};
use crate::harness::{wan_barrier, world};

/// Every inventory agrees, PN by PN (the server's, the PN GW's, each PNE's), and the server
/// holds exactly `expected` PNs, all active, every member authenticated.
async fn agree(w: &World, expected: usize) {
    let stores = w.stores().await;
    stores.agree();
    assert_eq!(stores.server.len(), expected, "{stores:?}");
    for pn in &stores.server {
        assert_eq!(pn.gateway.as_str(), "home-gw");
        assert_eq!(
            pn.state,
            PnState::Active,
            "PN {} not confirmed: {stores:?}",
            pn.pn_id
        );
        assert!(
            pn.members.iter().all(|m| m.authenticated),
            "a member not authenticated: {stores:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reconnects_to_a_restarted_server_and_the_inventories_agree() {
    let mut w = world(&["phone", "tv"]).start();
    let pan = w.pan().to_string();
    let addr = w.server_addr().to_string();

    let mut phone = w.pne("phone").setup("1-1").spawn();
    let first = phone.expect_event("pn_joined");
    w.gw()
        .expect_event_where("pn_established", |v| v["pn_id"] == first["pn_id"]);
    w.server().kill();
    w.gw().expect_event("wan_failed");
    phone.succeeds();

    w.start_server(&addr);
    assert_eq!(w.server_addr(), addr);
    w.gw().expect_event("wan_ready");
    // Step 17 done: the PN GW's report of its PN list is stored (and reconciled).
    w.server()
        .expect_event_where("gateway_ready", |v| v["gateway"] == "home-gw");
    agree(&w, 1).await;

    // The new session serves: a second PN, then every inventory agrees again.
    let mut tv = w.pne("tv").setup("1-1").no_ui().spawn();
    let second = tv.expect_event("pn_joined");
    assert_eq!(names(&second["members"]), ["tv"]);
    tv.succeeds();
    w.gw()
        .expect_event_where("pn_established", |v| v["pn_id"] == second["pn_id"]);
    wan_barrier(&pan, "home-gw", 1).await;
    agree(&w, 2).await;
    let failed = w.gw().seen("wan_failed").len();
    println!("PN GW: {failed} wan_failed event(s) before it reconnected");
}
