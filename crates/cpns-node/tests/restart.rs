//! Durability across restarts: a PN established before the CPNS Server and the PN GW stop is in
//! both SQLite files afterwards (the server's inventory of record with authenticated members, the
//! PN GW's local inventory with wrapped LocalEUKeys), a restarted PN GW reloads it, and its PNEs
//! register in it (000 §6.6.1.1 steps 11-15, 003 §1.4.1; docs/design.md §5: nothing acknowledged is
//! lost).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{Harness, Home, joined, pne_config, run_pne, spawn_pne};
use cpns_node::pne::PneStep;
use cpns_proto::Completed;
use cpns_proto::gateway::GatewayEvent;
use cpns_proto::pne::{Outcome, PneEvent};
use cpns_store::{DeviceStore, PnState, ServerStore, SqliteStore};
use cpns_wire::{EntityId, PnId, PnInventory, SetupType};

fn members(inv: &PnInventory) -> BTreeSet<EntityId> {
    inv.members.iter().map(|m| m.pne_id.clone()).collect()
}

fn registered_in(events: &[PneEvent]) -> Option<PnId> {
    events.iter().find_map(|e| match e {
        PneEvent::Registered { pn_id, .. }
        | PneEvent::Completed(Completed {
            result: Ok(Outcome::Registered { pn_id, .. }),
            ..
        }) => Some(*pn_id),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn established_pn_survives_server_and_gateway_restart() {
    let h = Harness::new().await;
    // ---- (a) establish a PN: the phone (with a UI: LocalEUKey) invites the watch ----
    let Home {
        gw,
        phone,
        watch,
        server,
        gw_store,
        running: mut g,
    } = h.home().await;
    let watch_run = spawn_pne(
        pne_config(&watch, false),
        h.local_store(&watch.id).await,
        &g.pan_addr,
        vec![PneStep::AwaitInvitation],
    );
    g.wait_for(
        "the watch's discovery",
        |e| matches!(e, GatewayEvent::PneDiscovered { pne, .. } if *pne == watch.id),
    )
    .await;
    let phone_store = h.local_store(&phone.id).await;
    // 000 §6.6.1.1 step 1: the phone announces contents; they are kept with the member.
    let songs = vec![cpns_wire::ContentItem {
        name: "holiday.mp3".into(),
        media_type: "audio/mpeg".into(),
    }];
    let mut phone_cfg = pne_config(&phone, true);
    phone_cfg.contents = songs.clone();
    let phone_report = run_pne(
        phone_cfg,
        phone_store.clone(),
        &g.pan_addr,
        vec![PneStep::Setup(SetupType::Invite(vec![watch.id.clone()]))],
    )
    .await;
    phone_store.close().await;
    assert!(
        phone_report
            .events
            .iter()
            .any(|e| matches!(e, PneEvent::PanAuthenticated { .. })),
        "the phone's link was not sealed with its LocalEUKey: {:?}",
        phone_report.events
    );
    let inv = joined(&phone_report);
    let pn = inv.pn_id;
    let expected: BTreeSet<EntityId> = [phone.id.clone(), watch.id.clone()].into();
    assert_eq!(members(&inv), expected);
    let watch_report = common::within("the watch", watch_run).await.unwrap();
    assert_eq!(joined(&watch_report).pn_id, pn);

    // Stop both, and every store handle.
    g.stop().await.unwrap();
    gw_store.close().await;
    server.stop().await;
    h.store.close().await;

    // The SQLite files, reopened, hold what was acknowledged.
    let server_store = SqliteStore::open(&h.server_db()).await.unwrap();
    let pns = server_store.all_pns().await.unwrap();
    assert_eq!(pns.len(), 1);
    let rec = &pns[0];
    assert_eq!(rec.pn_id, pn);
    assert_eq!(rec.gateway, gw.id);
    assert_eq!(rec.owner.as_str(), common::USER);
    assert_eq!(rec.state, PnState::Active);
    let stored: BTreeSet<EntityId> = rec.members.iter().map(|m| m.pne_id.clone()).collect();
    assert_eq!(stored, expected);
    for m in &rec.members {
        let contents = m.contents.clone();
        let announced = if m.pne_id == phone.id {
            songs.clone()
        } else {
            vec![]
        };
        assert_eq!(contents, announced, "{}'s contents on the server", m.pne_id);
        assert!(m.authenticated, "{} is not authenticated", m.pne_id);
        assert!(m.sealed_session_key.is_some(), "{} has no SK_PNE", m.pne_id);
        assert_eq!(m.initiator, m.pne_id == phone.id);
    }

    let gw_store = SqliteStore::open(&h.local_db(&gw.id)).await.unwrap();
    let local = gw_store.local_pns().await.unwrap();
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].pn_id, pn);
    assert_eq!(local[0].gateway, gw.id);
    let local_members: BTreeSet<EntityId> =
        local[0].members.iter().map(|m| m.pne_id.clone()).collect();
    assert_eq!(local_members, expected);
    for m in &local[0].members {
        let contents = m.contents.clone();
        let announced = if m.pne_id == phone.id {
            songs.clone()
        } else {
            vec![]
        };
        assert_eq!(contents, announced, "{}'s contents on the PN GW", m.pne_id);
        // Every PNE on the insecure PAN holds a LocalEUKey, with a UI or without.
        assert!(m.sealed_local_key.is_some(), "{}", m.pne_id);
    }
    let phone_local = h.local_store(&phone.id).await;
    let phone_pns = phone_local.local_pns().await.unwrap();
    assert_eq!(phone_pns.len(), 1);
    assert!(
        phone_pns[0]
            .members
            .iter()
            .any(|m| m.pne_id == phone.id && m.sealed_local_key.is_some())
    );

    // ---- (b) restart the server on the same database and the PN GW on the same local store ----
    let server = h.start_server_on(server_store.clone()).await;
    let mut g = h
        .start_gateway(&gw, &gw.eukey, server.addr, gw_store.clone())
        .await;
    g.wait_ready().await;
    let reloaded = g.handle.inventory().await.unwrap();
    assert_eq!(reloaded.len(), 1, "the PN GW did not reload its PN");
    assert_eq!(reloaded[0].pn_id, pn);
    assert_eq!(reloaded[0].gateway, gw.id);
    assert_eq!(members(&reloaded[0]), expected);

    // Both PNEs reconnect and register in the PN they stored (003 §1.4.1).
    let report = run_pne(
        pne_config(&phone, true),
        phone_local.clone(),
        &g.pan_addr,
        vec![PneStep::Register(None)],
    )
    .await;
    // The restarted PN GW names no PN before a proof (docs/security.md §4.4); the phone proves
    // itself with the LocalEUKey it kept for the PN, which the PN GW reloaded.
    assert!(
        report.events.iter().any(|e| matches!(
            e,
            PneEvent::Completed(Completed {
                result: Ok(Outcome::Discovered { pns, .. }),
                ..
            }) if pns.is_empty()
        )),
        "discovery before the proof: {:?}",
        report.events
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, PneEvent::PanAuthenticated { pn_id, .. } if *pn_id == pn)),
        "the phone did not prove itself in its PN: {:?}",
        report.events
    );
    assert_eq!(registered_in(&report.events), Some(pn));
    phone_local.close().await;
    let watch_local = h.local_store(&watch.id).await;
    let report = run_pne(
        pne_config(&watch, false),
        watch_local.clone(),
        &g.pan_addr,
        vec![PneStep::Register(Some(pn))],
    )
    .await;
    assert_eq!(registered_in(&report.events), Some(pn));
    watch_local.close().await;
    for pne in [&phone.id, &watch.id] {
        g.wait_for(
            "the PN GW to relay the registration",
            |e| matches!(e, GatewayEvent::PneRegistered { pne: p, .. } if p == pne),
        )
        .await;
        let entity = server_store.entity(pne).await.unwrap().unwrap();
        assert!(entity.cpns_id.is_some(), "{pne} has no CPNS ID");
    }

    // ---- (c) the server's inventory of record and the PN GW's local one agree ----
    let local = g.handle.inventory().await.unwrap();
    let of_record = server_store.pns_of_gateway(&gw.id).await.unwrap();
    assert_eq!(
        local.iter().map(|i| i.pn_id).collect::<Vec<_>>(),
        of_record.iter().map(|p| p.pn_id).collect::<Vec<_>>()
    );
    let record_members: BTreeSet<EntityId> = of_record[0]
        .members
        .iter()
        .map(|m| m.pne_id.clone())
        .collect();
    assert_eq!(members(&local[0]), record_members);
    assert!(of_record[0].members.iter().all(|m| m.authenticated));

    // ---- (d) the watch's secure session (003 §1.4.1 step 4) survives its restart ----
    // It kept its CPNS ID and SK_PNE, sealed under its own EUKey, and calls the server's echo
    // service end to end through the PN GW without registering again.
    let watch_local = h.local_store(&watch.id).await;
    let kept = watch_local.local_session().await.unwrap().expect("kept");
    assert_eq!(kept.pn_id, pn);
    assert_eq!(
        Some(&kept.cpns_id),
        server_store
            .entity(&watch.id)
            .await
            .unwrap()
            .unwrap()
            .cpns_id
            .as_ref()
    );
    assert!(
        !kept.sealed_session_key.windows(8).any(|w| watch
            .eukey
            .expose_secret()
            .windows(8)
            .any(|k| k == w)),
        "nothing of the EUKey in the store"
    );
    let report = run_pne(
        pne_config(&watch, false),
        watch_local.clone(),
        &g.pan_addr,
        vec![PneStep::SecureCall {
            service: cpns_wire::ECHO_SERVICE.into(),
            payload: b"hello over the PN GW".to_vec(),
        }],
    )
    .await;
    let answer = report.events.iter().find_map(|e| match e {
        PneEvent::Completed(Completed {
            result: Ok(Outcome::SecureAnswer { payload, .. }),
            ..
        }) => Some(payload.clone()),
        _ => None,
    });
    assert_eq!(answer.as_deref(), Some(&b"hello over the PN GW"[..]));
    assert!(
        registered_in(&report.events).is_none(),
        "no new registration"
    );
    watch_local.close().await;

    g.stop().await.unwrap();
    server.stop().await;
    gw_store.close().await;
    server_store.close().await;
}
