//! (A) Nothing is relayed to the server in a PNE's name from a link that has not proved that
//! PNE (docs/security.md §6): a raw PAN link naming a member that is not linked (the watch, gone
//! since its PN GW restarted) asks for the status of every device of the user, subscribes to
//! their changes and unsubscribes.
//! Each is refused `forbidden` at the PN GW; the server's store is unchanged cell for cell (no
//! subscription kept in that PNE's name), while a proven PNE's own query is answered.

use cpns_wire::{
    ErrorCode, PolicyKind, RequestId, StatusPolicy, StatusQuery, StatusSubscribe, StatusUnsubscribe,
};

use crate::common::cpns;
use crate::harness::{RawLink, discovery, dump, wan_barrier, world};

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

    // A raw link names the watch, a member that is not linked.
    let mut att = RawLink::connect(&pan, "watch", "home-gw").await;
    let me = att.me.clone();
    let msg = att.send(discovery(&me)).await;
    assert_eq!(att.answer(msg).await, Ok(None), "discovery");
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
