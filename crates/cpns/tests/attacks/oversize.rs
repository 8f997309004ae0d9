//! (e) PN Setup Requests as large as a PAN link may send them: the PN GW relays the PN
//! Registration Request they lead to, and must keep its WAN session (a frame over the server's
//! limit would end it) and keep serving PNEs.

use cpns_node::frames::PRE_AUTH_MAX_FRAME;
use cpns_wire::{DEFAULT_MAX_FRAME, ErrorCode};
use tokio::io::AsyncWriteExt;

use crate::common::{World, names};
use crate::harness::{RawLink, closed, discovery, setup_request_of_size, within, world};

/// A PNE establishes a PN through the PN GW, which must not have lost its WAN session since it
/// started: a lost session shows as `wan_failed` before the PN is established.
fn served_without_losing_the_wan(w: &mut World, extra: &[&str]) {
    let mut phone = w.pne("phone").setup("1-1").args(extra).spawn();
    let joined = phone.expect_event("pn_joined");
    assert_eq!(names(&joined["members"]), ["phone"]);
    phone.succeeds();
    let gw = w.gw();
    gw.expect_event_where("pn_established", |v| v["pn_id"] == joined["pn_id"]);
    assert!(
        gw.seen("wan_failed").is_empty(),
        "the PN GW lost its WAN session: {:?}",
        gw.seen("wan_failed")
    );
    assert!(gw.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_request_at_the_unproven_frame_limit_keeps_the_wan_session() {
    let mut w = world(&["phone"]).start();
    let pan = w.pan().to_string();

    // Exactly the limit of an unproven link, in the name of an id nobody enrolled: relayed to
    // the server, which refuses the PN. The answer comes back over the same WAN session.
    let mut att = RawLink::connect(&pan, "mallory", "home-gw").await;
    let (msg, frame) = setup_request_of_size(&mut att, PRE_AUTH_MAX_FRAME as usize);
    att.wr.write_all(&frame).await.unwrap();
    assert_eq!(att.answer(msg).await, Ok(Some(ErrorCode::Unauthenticated)));

    // One byte more: the link is closed before the frame is read, nothing is answered.
    let mut over = RawLink::connect(&pan, "mallory-2", "home-gw").await;
    let (_, frame) = setup_request_of_size(&mut over, PRE_AUTH_MAX_FRAME as usize + 1);
    over.wr.write_all(&frame).await.unwrap();
    assert!(
        within("the PN GW to refuse the frame", over.recv())
            .await
            .is_none(),
        "an over-limit frame was answered"
    );

    served_without_losing_the_wan(&mut w, &[]);
}

// The join information is refused at the PAN (more than the PN GW relays), and whatever the PN
// GW builds for the WAN stays within the server's announced limit: the WAN session survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_request_near_the_frame_maximum_from_a_proven_link_keeps_the_wan_session() {
    // On a trusted PAN the bearer's pairing is the proof: a link is proven once it names
    // itself, and may then send frames up to the full limit.
    let trusted = ["--pan-security", "trusted"];
    let mut w = world(&["phone"]).gateway_args(&trusted).start();
    let pan = w.pan().to_string();

    let mut att = RawLink::connect(&pan, "mallory", "home-gw").await;
    let me = att.me.clone();
    let msg = att.send(discovery(&me)).await;
    assert_eq!(att.answer(msg).await, Ok(None));
    w.gw()
        .expect_event_where("link_proven", |v| v["pne"] == "mallory");

    // The largest PN Setup Request the link may send: the PN Registration Request it leads to
    // carries the same join information, and more.
    let (msg, frame) = setup_request_of_size(&mut att, DEFAULT_MAX_FRAME as usize);
    att.wr.write_all(&frame).await.unwrap();
    match within("an answer", att.answer(msg)).await {
        Ok(Some(code)) => println!("the near-maximum PN Setup Request was refused: {code:?}"),
        Ok(None) => panic!("the near-maximum PN Setup Request was accepted"),
        Err(()) => println!("the near-maximum PN Setup Request closed its link"),
    }
    // The link may be closed for it; either way the PN GW must still have its WAN session.
    drop(att.wr);
    within("the attacker's link to end", closed(&mut att.rd)).await;

    served_without_losing_the_wan(&mut w, &trusted);
}
