//! (f) Who may read, change or release a PN (000 §6.6.3.1.1 step 1, §6.6.5.1 step 1, 004
//! §5.5.10; docs/pn-lifecycle.md, "Inventory queries"): raw PAN links ask the PN GW for the PN's
//! inventory, to release it, to take a member out of it and to invite someone, in the name of a member (unproven), of a non-member of the same
//! user and of another user's PNE. Each is refused `forbidden` (or `conflict` for the id of a
//! connected member); the server's and the PN GW's SQLite inventories are unchanged cell for
//! cell, and the members are told nothing. The PN GW's owner then releases the PN and every
//! member is told.

use cpns_wire::{ErrorCode, InventoryQuery, PnId, PnReleaseRequest, PneLeaveRequest, RequestId};

use crate::common::cpns;
use crate::harness::{RawLink, discovery, dump, quoted_pn, wan_barrier, world};

fn leave(pn: PnId, pne: &str) -> PneLeaveRequest {
    PneLeaveRequest {
        request_id: RequestId(78),
        pn_id: pn,
        pne: crate::harness::id(pne),
    }
}

fn release(pn: PnId) -> PnReleaseRequest {
    PnReleaseRequest {
        request_id: RequestId(77),
        pn_id: pn,
        asked_by: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_proven_member_or_the_owner_changes_or_releases_a_pn() {
    let mut w = world(&["phone", "watch", "tv"])
        .user("bob")
        .pne("bobs-phone")
        .start();
    let pan = w.pan().to_string();
    let mut watch = w.pne("watch").await_invitation().stay().spawn();
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "watch");
    let mut phone = w.pne("phone").setup("all").stay().spawn();
    let pn_hex = w.gw().expect_event("pn_established")["pn_id"]
        .as_str()
        .unwrap()
        .to_string();
    let pn: PnId = pn_hex.parse().unwrap();
    phone.expect_event_where("pn_joined", |v| v["pn_id"] == pn_hex);
    watch.expect_event_where("pn_joined", |v| v["pn_id"] == pn_hex);
    // Staying, each then runs its connection set-up (proof, key pull, capabilities report);
    // once both ended, nothing more of theirs is on its way to either store.
    phone.expect_event("rejoined");
    watch.expect_event("rejoined");
    wan_barrier(&pan, "home-gw", 1).await;
    let server_before = dump(&w.server_db()).await;
    let gw_before = dump(&w.store("home-gw")).await;

    // A non-member of the same user and another user's PNE, on links that proved nothing.
    for who in ["tv", "bobs-phone"] {
        let mut att = RawLink::connect(&pan, who, "home-gw").await;
        let me = att.me.clone();
        let msg = att.send(discovery(&me)).await;
        assert_eq!(att.answer(msg).await, Ok(None), "{who}: discovery");
        let msg = att.send(release(pn)).await;
        assert_eq!(
            att.answer(msg).await,
            Ok(Some(ErrorCode::Forbidden)),
            "{who}"
        );
        // Nor ask to expel a member, or to invite someone (004 §5.5.10).
        let msg = att.send(leave(pn, "watch")).await;
        assert_eq!(
            att.answer(msg).await,
            Ok(Some(ErrorCode::Forbidden)),
            "{who}: expel"
        );
        let invite = cpns_wire::PneInviteRequest {
            request_id: RequestId(79),
            pn_id: pn,
            invitee: Some(crate::harness::id(who)),
        };
        let msg = att.send(invite).await;
        assert_eq!(
            att.answer(msg).await,
            Ok(Some(ErrorCode::Forbidden)),
            "{who}: invite"
        );
        // Nor may it read the PN (004 §5.5.10), named or among "every PN of mine".
        for pn_id in [Some(pn), None] {
            let msg = att
                .send(InventoryQuery {
                    pn_id,
                    follow: None,
                })
                .await;
            assert_eq!(
                att.answer(msg).await,
                Ok(Some(ErrorCode::Forbidden)),
                "{who}: inventory query {pn_id:?}"
            );
        }
    }
    // A link naming the phone, a member that is connected: refused too.
    let mut att = RawLink::connect(&pan, "phone", "home-gw").await;
    for msg in [
        att.send(release(pn)).await,
        att.send(leave(pn, "phone")).await,
        att.send(InventoryQuery {
            pn_id: Some(pn),
            follow: None,
        })
        .await,
    ] {
        let answer = att.answer(msg).await;
        assert!(
            matches!(answer, Ok(Some(ErrorCode::Forbidden | ErrorCode::Conflict))),
            "{answer:?}"
        );
    }
    // Nothing reached the server.
    wan_barrier(&pan, "home-gw", 2).await;
    assert_eq!(dump(&w.server_db()).await, server_before);
    assert_eq!(dump(&w.store("home-gw")).await, gw_before);
    assert!(w.gw().seen("pn_released").is_empty());
    assert!(w.gw().seen("member_left").is_empty());

    // The owner may: the PN goes, and both members are told.
    let gw_store = w.store("home-gw");
    let line = cpns(&[
        "pn",
        "release",
        &pn_hex,
        "--store",
        gw_store.to_str().unwrap(),
    ]);
    assert!(
        line.starts_with(&format!("PN {pn_hex} released; told: ")),
        "{line}"
    );
    phone.expect_event_where("pn_released", |v| v["pn_id"] == pn_hex);
    watch.expect_event_where("pn_released", |v| v["pn_id"] == pn_hex);
    // Gone from both stores, every row of it (both held it before).
    let quoted = quoted_pn(&pn_hex);
    for before in [&server_before, &gw_before] {
        assert!(before.values().flatten().any(|r| r.contains(&quoted)));
    }
    for db in [w.server_db(), gw_store] {
        let after = dump(&db).await;
        // Only the server's word for members away at the time is left: one `departed` row per
        // member that held an SK_PNE, each saying the PN was released.
        let rows: Vec<&String> = after
            .iter()
            .filter(|(table, _)| table.as_str() != "departed")
            .flat_map(|(_, rows)| rows)
            .filter(|r| r.contains(&quoted))
            .collect();
        assert!(rows.is_empty(), "{}: {rows:?}", db.display());
    }
    let departed = &dump(&w.server_db()).await["departed"];
    let mut who: Vec<&str> = departed
        .iter()
        .filter(|r| r.contains(&quoted) && r.contains("'released'"))
        .filter_map(|r| r.split('|').nth(1))
        .collect();
    who.sort_unstable();
    assert_eq!(who, ["'phone'", "'watch'"], "{departed:?}");
}
