//! (B) A claim cannot lock out the device that can prove itself: a raw PAN link takes the
//! watch's id while the watch is away (its PN GW restarted), and holds it. The watch comes back
//! holding its LocalEUKey: its discovery is answered although the id is claimed, its proof
//! (PN GW authentication) takes the id, and the squatter's link is closed. Without this the
//! watch was refused at discovery and stayed off, in backoff, as long as the squatter held on.

use std::time::Instant;

use crate::harness::{RawLink, discovery, read_frame, within, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatter_never_keeps_an_id_from_the_device_that_proves_it() {
    let mut w = world(&["phone", "watch"]).start();
    let watch = w.pne("watch").await_invitation().stay().spawn();
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "watch");
    let mut phone = w.pne("phone").setup("all").stay().spawn();
    w.gw().expect_event("pn_established");
    phone.expect_event("rejoined");
    // The watch goes away, and its PN GW restarts: the id is free.
    drop(watch);
    w.restart_gateway(&[]);
    phone.expect_event("rejoined");
    let pan = w.pan().to_string();

    // A squatter claims it first, and holds on.
    let mut squatter = RawLink::connect(&pan, "watch", "home-gw").await;
    let me = squatter.me.clone();
    let msg = squatter.send(discovery(&me)).await;
    assert_eq!(squatter.answer(msg).await, Ok(None), "a free id is claimed");

    // The watch comes back and proves itself.
    let back = Instant::now();
    let mut watch = w.pne("watch").stay().spawn();
    watch.expect_event("rejoined");
    eprintln!(
        "the watch was back, proven, {} ms after it started",
        back.elapsed().as_millis()
    );
    let proven = w
        .gw()
        .expect_event_where("link_proven", |v| v["pne"] == "watch");
    let rejected = w.gw().expect_event("link_rejected");
    assert_eq!(rejected["reason"], "another link proved it is watch");
    assert_ne!(rejected["link"], proven["link"]);
    // The squatter's link is closed.
    within("the squatter's link to close", async {
        while read_frame(&mut squatter.rd).await.is_some() {}
    })
    .await;
}
