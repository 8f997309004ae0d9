//! (A) Nothing is relayed to the server in a PNE's name from a link that has not proved that
//! PNE (docs/security.md §6): a raw PAN link naming a member that is not linked (the watch, gone
//! since its PN GW restarted) discovers the PN GW, asks for the status of every device of the
//! user, subscribes to their changes and unsubscribes, pulls the PN's group key and makes a
//! secure call. Its discovery answer names no PN.
//! Each is refused `forbidden` at the PN GW; the server's store is unchanged cell for cell (no
//! subscription kept in that PNE's name), while a proven PNE's own query is answered.

use cpns_wire::{
    Body, ErrorCode, GroupKeyRequest, PolicyKind, RequestId, SecureRequest, StatusPolicy,
    StatusQuery, StatusSubscribe, StatusUnsubscribe,
};

use crate::common::cpns;
use crate::harness::{Frame, RawLink, discovery, dump, wan_barrier, within, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unproven_link_gets_no_status_and_keeps_no_subscription_in_a_pnes_name() {
    let mut w = world(&["phone", "watch"]).start();
    // A PN of the phone and the watch; the watch leaves once it joined, the phone stays.
    let mut watch = w.pne("watch").await_invitation().spawn();
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "watch");
    let mut phone = w.pne("phone").setup("all").stay().spawn();
    w.gw().expect_event("pn_established");
    watch.expect_event("pn_joined");
    phone.expect_event("rejoined");
    // A new PN GW process: the phone comes back and proves itself, the watch does not.
    w.restart_gateway(&[]);
    phone.expect_event("rejoined");
    let pan = w.pan().to_string();
    wan_barrier(&pan, "home-gw", 1).await;
    let server_before = dump(&w.server_db()).await;
    let pn = w.stores().await.server[0].pn_id;

    // A raw link names the watch, a member that is not linked.
    let mut att = RawLink::connect(&pan, "watch", "home-gw").await;
    let me = att.me.clone();
    let msg = att.send(discovery(&me)).await;
    // Answered, and told no PN id: the watch's PN is named only to a link that proved it.
    let answer = within("the discovery answer", async {
        loop {
            match att.recv().await {
                Some(Frame::Plain(env)) if env.in_reply_to == Some(msg) => return *env,
                Some(_) => {}
                None => panic!("the link closed"),
            }
        }
    })
    .await;
    let Body::EntityDiscoveryResponse(found) = answer.body else {
        panic!("not a discovery answer: {answer:?}");
    };
    assert!(found.pns.is_empty(), "{:?}", found.pns);
    let on_change = StatusPolicy {
        kind: PolicyKind::OnChange,
        attribute: None,
        crossing: None,
        bound: None,
        period_s: None,
    };
    let asks = [
        (
            "status query",
            att.send(StatusQuery { entities: vec![] }).await,
        ),
        (
            "status subscribe",
            att.send(StatusSubscribe {
                request_id: RequestId(5),
                entities: vec![],
                policy: on_change,
            })
            .await,
        ),
        (
            "status unsubscribe",
            att.send(StatusUnsubscribe { subscription: 1 }).await,
        ),
        // The PN id is known to whoever saw it once (here, from the store): a key pull in the
        // watch's name would be answered with the PN's members in the clear, and a secure call
        // run in its name; neither goes up.
        (
            "key pull",
            att.send(GroupKeyRequest {
                request_id: RequestId(6),
                pn_id: pn,
            })
            .await,
        ),
        (
            "secure request",
            att.send(SecureRequest {
                request_id: RequestId(7),
                pn_id: pn,
                sealed: vec![0; 64],
            })
            .await,
        ),
    ];
    for (what, msg) in asks {
        assert_eq!(
            att.answer(msg).await,
            Ok(Some(ErrorCode::Forbidden)),
            "{what}"
        );
    }
    drop(att);
    wan_barrier(&pan, "home-gw", 2).await;
    assert_eq!(
        dump(&w.server_db()).await,
        server_before,
        "the server's store"
    );

    // The phone, proven on its link, is answered.
    let phone_store = w.store("phone");
    let line = cpns(&["status", "show", "--store", phone_store.to_str().unwrap()]);
    assert!(line.contains("phone"), "{line}");
}
