//! A PN that lives, as separate `cpns` processes: a server, a PN GW and long-running PNEs
//! (`cpns pne --stay`), acted on through their control sockets with `cpns pn`. After every
//! flow the server's store, the PN GW's local inventory and every PNE's agree, every member
//! that should have been told was, and no one else.
//!
//! PN release (000 §6.6.5) by the PN GW's owner and (§6.6.5.1) by a member PNE.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use cpns_store::{DeviceStore, ServerStore, SqliteStore};
use cpns_wire::PnId;

mod common;

use common::{Proc, Stores, World, cpns, members, names, run, s};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `cpns pn ... --json` on the entity whose store is `store`: its answer.
fn pn_json(store: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["pn"];
    all.extend(args);
    all.extend(["--store", s(store), "--json"]);
    let out = run(&all);
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("cpns {all:?}: {text:?}: {e}"))
}

/// The code of a refusal (docs/control-api.md, "Errors").
fn code(answer: &serde_json::Value) -> &str {
    assert_eq!(answer["ok"], false, "{answer}");
    answer["error"]["code"].as_str().unwrap()
}

/// A server and the PN GW `home-gw` running, and PNEs `pnes` enrolled, all of alice.
fn world(pnes: &[&str]) -> World {
    World::builder().gateway("home-gw").pnes(pnes).start()
}

/// [`world`] of `phone`, `watch` and `tv`, and bob's PNE `bobs-tv`: another user's PNE on the
/// same PAN.
fn with_bobs_tv() -> World {
    World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "watch", "tv"])
        .user("bob")
        .pne("bobs-tv")
        .start()
}

/// PNEs `members` (waiting for an invitation) and `outsider` (declining) are known to the
/// PN GW; then `initiator` asks for a PN with all of them. Every PNE stays (`--stay`). Returns
/// the PNEs, initiator first, and the PN.
fn established(
    w: &mut World,
    initiator: &'static str,
    members: &[&'static str],
    outsider: &'static str,
) -> (Vec<(&'static str, Proc)>, PnId) {
    let mut pnes = Vec::new();
    for id in members {
        let p = w.pne(id).stay().await_invitation().spawn();
        w.gw()
            .expect_event_where("pne_discovered", |v| v["pne"] == *id);
        pnes.push((*id, p));
    }
    let p = w.pne(outsider).stay().decline().spawn();
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == outsider);
    pnes.push((outsider, p));
    let p = w.pne(initiator).stay().setup("all").spawn();
    pnes.insert(0, (initiator, p));
    let est = w.gw().expect_event("pn_established");
    let pn: PnId = est["pn_id"].as_str().unwrap().parse().unwrap();
    for (id, p) in &mut pnes {
        if *id != outsider {
            p.expect_event_where("pn_joined", |v| v["pn_id"] == pn.to_string());
        }
    }
    (pnes, pn)
}

/// Lines the PNE printed: waits for its `pn_released` event.
fn told(p: &mut Proc, pn: PnId) -> serde_json::Value {
    p.expect_event_where("pn_released", |v| v["pn_id"] == pn.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pn_gws_owner_releases_a_pn_and_its_members_are_told() {
    let mut w = world(&["phone", "watch", "tablet"]);
    let (mut pnes, pn) = established(&mut w, "phone", &["watch"], "tablet");
    let all = ["phone", "watch", "tablet"];
    let before = w.stores().await;
    before.agree();
    assert_eq!(before.at("home-gw"), members(&[(pn, &["phone", "watch"])]));

    // `members` names one PN, on the PN GW as on a member; an unknown PN is not found.
    for id in ["home-gw", "watch"] {
        let shown = pn_json(&w.store(id), &["members", &pn.to_string()]);
        assert_eq!(
            names(&shown["pns"][0]["members"]),
            ["phone", "watch"],
            "{id}"
        );
    }
    let unknown = pn_json(&w.store("home-gw"), &["members", &"0".repeat(32)]);
    assert_eq!(code(&unknown), "not_found");

    // The tablet is no member: its own request goes nowhere and changes nothing.
    let refused = pn_json(&w.store("tablet"), &["release", &pn.to_string()]);
    assert_eq!(code(&refused), "not_found");

    let answer = pn_json(&w.store("home-gw"), &["release", &pn.to_string()]);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(names(&answer["notified"]), ["phone", "watch"]);
    let event = w.gw().expect_event("pn_released");
    assert_eq!(event["by"], "owner");
    w.server()
        .expect_event_where("pn_released", |v| v["pn_id"] == pn.to_string());
    for (id, p) in &mut pnes {
        if *id != "tablet" {
            assert_eq!(told(p, pn)["by_me"], false, "{id}");
        }
    }
    // Every PNE answers `show` from its own inventory: empty for all.
    for id in all {
        let shown = pn_json(&w.store(id), &["show"]);
        assert_eq!(shown["pns"], serde_json::json!([]), "{id}: {shown}");
    }
    let after = w.stores().await;
    after.agree();
    assert!(after.server.is_empty(), "{after:?}");
    // The tablet printed no release: nothing was sent to it.
    let (_, tablet) = pnes.iter_mut().find(|(id, _)| *id == "tablet").unwrap();
    assert!(
        tablet
            .lines_so_far()
            .iter()
            .all(|l| !l.contains("pn_released"))
    );
    // A second release of the PN: a clear error, nothing changed.
    let again = pn_json(&w.store("home-gw"), &["release", &pn.to_string()]);
    assert_eq!(code(&again), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_pne_releases_its_pn_and_the_others_are_told() {
    let mut w = world(&["phone", "watch", "tablet", "tv"]);
    let (mut pnes, pn) = established(&mut w, "phone", &["watch", "tablet"], "tv");
    w.stores().await.agree();

    // The watch asks its PN GW (§6.6.5.1 step 1); the CLI prints one line.
    let line = cpns(&[
        "pn",
        "release",
        &pn.to_string(),
        "--store",
        s(&w.store("watch")),
    ]);
    assert_eq!(line, format!("PN {pn} released\n"));
    let event = w.gw().expect_event("pn_released");
    assert_eq!(event["by"], "watch");
    assert_eq!(names(&event["notified"]), ["phone", "tablet"]);
    for (id, p) in &mut pnes {
        match *id {
            "watch" => assert_eq!(told(p, pn)["by_me"], true),
            "tv" => {}
            _ => assert_eq!(told(p, pn)["by_me"], false, "{id}"),
        }
    }
    let after = w.stores().await;
    after.agree();
    assert!(after.at("home-gw").is_empty(), "{after:?}");
    let (_, tv) = pnes.iter_mut().find(|(id, _)| *id == "tv").unwrap();
    assert!(tv.lines_so_far().iter().all(|l| !l.contains("pn_released")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pne_that_lost_its_gateway_reconnects_proves_itself_and_is_told() {
    let mut w = world(&["phone", "watch", "tv"]);
    let (mut pnes, pn) = established(&mut w, "phone", &["watch"], "tv");
    // The PN GW goes away: the PNEs lose their links and reconnect with backoff to the new
    // process, which reloads the PN from its store.
    w.restart_gateway(&[]);
    // Each member proves itself on its new link with the PN's LocalEUKey (PN GW
    // authentication), so the PN GW will tell it what changes.
    // In whatever order they come.
    let mut proven = BTreeSet::new();
    while proven.len() < 2 {
        let e = w
            .gw()
            .expect_event_where("pan_authenticated", |v| v["pn_id"] == pn.to_string());
        proven.insert(e["pne"].as_str().unwrap().to_string());
    }
    assert_eq!(
        proven,
        BTreeSet::from(["phone".to_string(), "watch".to_string()])
    );
    for (id, p) in &mut pnes {
        if *id != "tv" {
            p.expect_event_where("pan_authenticated", |v| v["pn_id"] == pn.to_string());
        }
    }
    let answer = pn_json(&w.store("home-gw"), &["release", &pn.to_string()]);
    assert_eq!(answer["ok"], true, "{answer}");
    let notified = names(&answer["notified"]);
    assert_eq!(notified, ["phone", "watch"]);
    for (id, p) in &mut pnes {
        if *id != "tv" {
            assert_eq!(told(p, pn)["by_me"], false, "{id}");
        }
    }
    let after = w.stores().await;
    after.agree();
    assert!(after.server.is_empty());
}

/// The group key a PNE keeps for `pn`, opened with its own storage key from its credential.
async fn pne_group_key(w: &World, id: &str, pn: PnId) -> Option<(u64, cpns_crypto::GroupKey)> {
    let cred = cpns_node::DeviceCredential::read(&w.cred(id)).unwrap();
    let storage = cpns_crypto::device_storage_key(&cred.eukey);
    let st = SqliteStore::open(&w.store(id)).await.unwrap();
    let pns = st.local_pns().await.unwrap();
    st.close().await;
    let g = pns.iter().find(|p| p.pn_id == pn)?.group.clone()?;
    let gk = cpns_crypto::open_group_key_at_rest(&storage, pn.as_bytes(), g.epoch, &g.sealed_key)
        .expect("the PNE's group key opens under its storage key");
    Some((g.epoch, gk))
}

/// The group key the server keeps for `pn`, opened with its master key.
async fn server_group_key(w: &World, pn: PnId) -> (u64, cpns_crypto::GroupKey) {
    let hex = std::fs::read_to_string(w.data_dir().join("master.key")).unwrap();
    let master = cpns_crypto::MasterKey::from_hex(hex.trim()).unwrap();
    let st = SqliteStore::open(&w.server_db()).await.unwrap();
    let g = st.pn(&pn).await.unwrap().unwrap().group.unwrap();
    st.close().await;
    let gk = cpns_crypto::open_group_key_at_rest(&master, pn.as_bytes(), g.epoch, &g.sealed_key)
        .unwrap();
    (g.epoch, gk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expelled_member_is_told_and_only_the_others_get_the_new_group_key() {
    let mut w = world(&["phone", "watch", "tablet", "tv"]);
    let (mut pnes, pn) = established(&mut w, "phone", &["watch", "tablet"], "tv");
    w.stores().await.agree();
    // The establishment gave the PN its first group key: every member holds the server's.
    let (epoch, gk1) = server_group_key(&w, pn).await;
    assert_eq!(epoch, 1);
    for id in ["phone", "watch", "tablet"] {
        assert!(pne_group_key(&w, id, pn).await.expect(id).1 == gk1, "{id}");
    }
    assert!(pne_group_key(&w, "tv", pn).await.is_none());

    let line = cpns(&[
        "pn",
        "expel",
        &pn.to_string(),
        "tablet",
        "--store",
        s(&w.store("home-gw")),
    ]);
    assert!(
        line.starts_with(&format!(
            "tablet expelled from PN {pn}; group key epoch 2; told: "
        )),
        "{line}"
    );
    let event = w.gw().expect_event("member_expelled");
    assert_eq!(event["pne"], "tablet");
    assert_eq!(event["epoch"], 2);
    let told = names(&event["notified"]);
    assert_eq!(told, ["phone", "watch"]);
    for (id, p) in &mut pnes {
        match *id {
            "tablet" => {
                p.expect_event_where("expelled", |v| v["pn_id"] == pn.to_string());
            }
            "tv" => {}
            _ => {
                let u = p.expect_event_where("pn_updated", |v| v["pn_id"] == pn.to_string());
                assert_eq!(u["epoch"], 2, "{id}");
                assert_eq!(u["has_key"], true, "{id}");
            }
        }
    }
    let after = w.stores().await;
    after.agree();
    assert_eq!(after.at("home-gw"), members(&[(pn, &["phone", "watch"])]));

    // The server, the phone and the watch hold the same epoch-2 key; the tablet holds none.
    let (epoch, gk) = server_group_key(&w, pn).await;
    assert_eq!(epoch, 2);
    for id in ["phone", "watch"] {
        let (e, k) = pne_group_key(&w, id, pn).await.expect(id);
        assert_eq!(e, 2);
        assert!(k == gk, "{id} holds another key");
    }
    assert!(pne_group_key(&w, "tablet", pn).await.is_none());
    // Content the phone sends under the new epoch reaches the watch, signed by the phone and
    // sealed under epoch 2; the tablet, out, is sent nothing.
    let line = cpns(&[
        "pn",
        "send",
        &pn.to_string(),
        "holiday video",
        "--store",
        s(&w.store("phone")),
    ]);
    assert_eq!(line, format!("sent to PN {pn}; relayed to 1 member\n"));
    let (_, watch) = pnes.iter_mut().find(|(id, _)| *id == "watch").unwrap();
    let c = watch.expect_event_where("content", |v| v["pn_id"] == pn.to_string());
    assert_eq!(c["from"], "phone");
    assert_eq!(c["text"], "holiday video");
    assert_eq!(c["epoch"], 2);
    assert_eq!(c["hex"], hex::encode("holiday video"));

    // The watch leaves; the phone alone gets epoch 3.
    let line = cpns(&[
        "pn",
        "leave",
        &pn.to_string(),
        "--store",
        s(&w.store("watch")),
    ]);
    assert_eq!(line, format!("left PN {pn}\n"));
    let event = w.gw().expect_event("member_left");
    assert_eq!(event["pne"], "watch");
    assert_eq!(event["epoch"], 3);
    assert_eq!(event["notified"], serde_json::json!(["phone"]));
    let (_, phone) = pnes.iter_mut().find(|(id, _)| *id == "phone").unwrap();
    let u = phone.expect_event_where("pn_updated", |v| v["epoch"] == 3);
    assert_eq!(u["members"], serde_json::json!(["phone"]));
    let after = w.stores().await;
    after.agree();
    let (epoch, gk2) = server_group_key(&w, pn).await;
    assert_eq!(epoch, 3);
    assert!(pne_group_key(&w, "phone", pn).await.unwrap().1 == gk2);
    assert!(pne_group_key(&w, "watch", pn).await.is_none());
    // The phone's content now goes to nobody: the watch, out, is sent nothing.
    let line = cpns(&[
        "pn",
        "send",
        &pn.to_string(),
        "later",
        "--store",
        s(&w.store("phone")),
    ]);
    assert_eq!(
        line,
        format!("sent to PN {pn}; no other member is connected to its PN GW now\n")
    );

    // Refusals at the control socket: a non-member leaving, expelling a non-member.
    let refused = pn_json(&w.store("tv"), &["leave", &pn.to_string()]);
    assert_eq!(code(&refused), "not_found");
    let refused = pn_json(&w.store("home-gw"), &["expel", &pn.to_string(), "tv"]);
    assert_eq!(code(&refused), "not_found");
    w.stores().await.agree();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pne_joins_a_pn_and_every_member_holds_the_new_group_key() {
    let mut w = with_bobs_tv();
    let (mut pnes, pn) = established(&mut w, "phone", &["watch"], "tv");
    let all = ["phone", "watch", "tv"];
    w.stores().await.agree();

    // The tv asks to join the PN its PN GW serves (000 §6.6.2.2).
    let line = cpns(&["pn", "join", &pn.to_string(), "--store", s(&w.store("tv"))]);
    assert_eq!(line, format!("joined PN {pn}\n"));
    let event = w.gw().expect_event("member_joined");
    assert_eq!(event["pne"], "tv");
    assert_eq!(event["epoch"], 2);
    let told = names(&event["notified"]);
    assert_eq!(told, ["phone", "watch"]);
    for (id, p) in &mut pnes {
        if *id == "tv" {
            p.expect_event_where("pn_joined", |v| v["pn_id"] == pn.to_string());
        } else {
            let u = p.expect_event_where("pn_updated", |v| v["epoch"] == 2);
            assert_eq!(u["has_key"], true, "{id}");
        }
    }
    let after = w.stores().await;
    after.agree();
    assert_eq!(
        after.at("home-gw"),
        members(&[(pn, &["phone", "watch", "tv"])])
    );
    let (_, gk) = server_group_key(&w, pn).await;
    for id in all {
        let (e, k) = pne_group_key(&w, id, pn).await.expect(id);
        assert_eq!(e, 2, "{id}");
        assert!(k == gk, "{id} holds another key");
    }

    // Joining again: already a member, nothing changes.
    let again = pn_json(&w.store("tv"), &["join", &pn.to_string()]);
    assert_eq!(code(&again), "conflict");

    // Bob's PNE cannot join alice's PN: refused, every store unchanged.
    let before = w.stores().await;
    let mut intruder = w.pne("bobs-tv").stay().spawn();
    intruder.expect_event("discovered");
    let bob_store = w.store("bobs-tv");
    let refused = pn_json(&bob_store, &["join", &pn.to_string()]);
    assert_eq!(code(&refused), "forbidden");
    let after = w.stores().await;
    assert_eq!(after.at_server(), before.at_server());
    assert_eq!(after.at("home-gw"), before.at("home-gw"));
    assert!(after.at("bobs-tv").is_empty());
    assert_eq!(server_group_key(&w, pn).await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_by_the_pn_gw_and_by_a_member_end_in_joins_or_declines() {
    let mut w = world(&["phone", "watch", "tv", "tablet", "speaker"]);
    let mut pnes = Vec::new();
    let mut watch = w.pne("watch").stay().await_invitation().spawn();
    w.gw()
        .expect_event_where("pne_discovered", |v| v["pne"] == "watch");
    // Connected, no members: the tv and the tablet accept invitations, the speaker declines.
    for (id, decline) in [("tv", false), ("tablet", false), ("speaker", true)] {
        let p = w.pne(id).stay();
        let p = if decline { p.decline() } else { p }.spawn();
        w.gw()
            .expect_event_where("pne_discovered", |v| v["pne"] == id);
        pnes.push((id, p));
    }
    let mut phone = w.pne("phone").stay().setup("watch").spawn();
    let pn: PnId = w.gw().expect_event("pn_established")["pn_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    phone.expect_event_where("pn_joined", |v| v["pn_id"] == pn.to_string());
    watch.expect_event_where("pn_joined", |v| v["pn_id"] == pn.to_string());
    w.stores().await.agree();

    // 000 §6.6.2.1.1: the PN GW's owner invites the tv, which joins.
    let line = cpns(&[
        "pn",
        "invite",
        &pn.to_string(),
        "tv",
        "--store",
        s(&w.store("home-gw")),
    ]);
    assert_eq!(line, format!("tv joined PN {pn}\n"));
    let joined = w
        .gw()
        .expect_event_where("member_joined", |v| v["pne"] == "tv");
    assert_eq!(joined["epoch"], 2);
    for p in [&mut phone, &mut watch] {
        p.expect_event_where("pn_updated", |v| v["epoch"] == 2 && v["has_key"] == true);
    }
    // 000 §6.6.2.1.2: the watch asks its PN GW to invite the tablet, which joins.
    let answer = pn_json(&w.store("watch"), &["invite", &pn.to_string(), "tablet"]);
    assert_eq!(answer["accepted"], true, "{answer}");
    let joined = w
        .gw()
        .expect_event_where("member_joined", |v| v["pne"] == "tablet");
    assert_eq!(joined["epoch"], 3);
    let told = names(&joined["notified"]);
    // The tv joined without a LocalEUKey: its link was proven by its registration, and the
    // update's copy, which names the member list, proves the update to it.
    assert_eq!(told, ["phone", "tv", "watch"]);
    let (_, tv) = pnes.iter_mut().find(|(id, _)| *id == "tv").unwrap();
    for p in [&mut phone, &mut watch, tv] {
        p.expect_event_where("pn_updated", |v| v["epoch"] == 3 && v["has_key"] == true);
    }
    // The speaker declines: nothing changes.
    let before = w.stores().await;
    let answer = pn_json(&w.store("home-gw"), &["invite", &pn.to_string(), "speaker"]);
    assert_eq!(answer["accepted"], false, "{answer}");
    w.gw().expect_event_where("invite_ended", |v| {
        v["invitee"] == "speaker" && v["reason"] == "declined"
    });
    let after = w.stores().await;
    after.agree();
    assert_eq!(after.at_server(), before.at_server());
    assert_eq!(
        after.at("home-gw"),
        members(&[(pn, &["phone", "watch", "tv", "tablet"])])
    );
    // Every member holds the server's key of epoch 3.
    let (epoch, gk) = server_group_key(&w, pn).await;
    assert_eq!(epoch, 3);
    for id in ["phone", "watch", "tv", "tablet"] {
        assert!(pne_group_key(&w, id, pn).await.expect(id).1 == gk, "{id}");
    }
    assert!(pne_group_key(&w, "speaker", pn).await.is_none());
    // Inviting a member again is refused with a clear error.
    let again = pn_json(&w.store("home-gw"), &["invite", &pn.to_string(), "tv"]);
    assert_eq!(code(&again), "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_away_during_a_change_pulls_the_new_key_when_it_is_back() {
    let mut w = world(&["phone", "watch", "tablet", "tv"]);
    let (mut pnes, pn) = established(&mut w, "phone", &["watch", "tablet"], "tv");
    // The tablet goes away (its process killed); the watch is expelled meanwhile.
    let at = pnes.iter().position(|(id, _)| *id == "tablet").unwrap();
    drop(pnes.remove(at));
    let answer = pn_json(&w.store("home-gw"), &["expel", &pn.to_string(), "watch"]);
    assert_eq!(answer["epoch"], 2, "{answer}");
    assert_eq!(names(&answer["notified"]), ["phone"]);
    assert_eq!(pne_group_key(&w, "tablet", pn).await.unwrap().0, 1);
    // Back, it asks the server for its copy (002 §B.1.1.3 step 22) and holds epoch 2.
    let mut tablet = w.pne("tablet").stay().spawn();
    let u = tablet.expect_event_where("pn_updated", |v| v["epoch"] == 2);
    assert_eq!(u["has_key"], true);
    assert_eq!(names(&u["members"]), ["phone", "tablet"]);
    let (epoch, gk) = server_group_key(&w, pn).await;
    assert_eq!(epoch, 2);
    assert!(pne_group_key(&w, "tablet", pn).await.unwrap().1 == gk);
    // It confirms holding epoch 2 and its PN GW confirms the set-up (steps 25-26); the phone
    // confirmed when it took the key from its PN Update Notification.
    let c = tablet.expect_event("membership_confirmed");
    assert_eq!(
        (&c["pn_id"], &c["epoch"]),
        (&pn.to_string().into(), &2.into())
    );
    // (The tablet confirmed epoch 1 when it first joined: that earlier event may still be
    // unread, so wait for the confirmation of epoch 2 itself.)
    let g = w.gw().expect_event_where("member_confirmed", |v| {
        v["pne"] == "tablet" && v["epoch"] == 2
    });
    assert_eq!(g["pn_id"], pn.to_string());
    let shown = pn_json(&w.store("home-gw"), &["members", &pn.to_string()]);
    assert_eq!(shown["pns"][0]["epoch"], 2, "{shown}");
    assert_eq!(names(&shown["pns"][0]["confirmed"]), ["phone", "tablet"]);
    let text = cpns(&[
        "pn",
        "members",
        &pn.to_string(),
        "--store",
        s(&w.store("home-gw")),
    ]);
    assert!(
        text.contains("group key epoch 2, confirmed by: phone, tablet"),
        "{text}"
    );
    w.stores().await.agree();
}

/// 004 §5.5.10: a member reads its own PN from its PN GW, another PN of its user from the
/// server, and every PN of its user; a PNE of another user that belongs to no PN reads nothing.
/// No store changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pne_reads_its_own_pn_and_its_users_other_pns() {
    let mut w = with_bobs_tv();
    let (mut pnes, a) = established(&mut w, "phone", &["watch"], "tv");
    // The tv, which declined, sets up a PN of its own: B.
    let at = pnes.iter().position(|(id, _)| *id == "tv").unwrap();
    drop(pnes.remove(at));
    let mut tv = w.pne("tv").stay().setup("1-1").spawn();
    let joined = tv.expect_event("pn_joined");
    let b: PnId = joined["pn_id"].as_str().unwrap().parse().unwrap();
    let before = w.stores().await;
    before.agree();

    let watch = w.store("watch");
    let own = pn_json(&watch, &["query", &a.to_string()]);
    assert_eq!(own["pns"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(names(&own["pns"][0]["members"]), ["phone", "watch"]);
    let remote = pn_json(&watch, &["query", &b.to_string()]);
    assert_eq!(remote["pns"][0]["pn_id"], b.to_string(), "{remote}");
    assert_eq!(names(&remote["pns"][0]["members"]), ["tv"]);
    let every = pn_json(&watch, &["query"]);
    let ids: BTreeSet<String> = every["pns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pn_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, BTreeSet::from([a.to_string(), b.to_string()]));
    let text = cpns(&["pn", "query", &b.to_string(), "--store", s(&watch)]);
    assert_eq!(text, format!("PN {b} at home-gw: tv\n"));

    // Bob's PNE belongs to no PN and holds no session: it reads nothing.
    let bob_store = w.store("bobs-tv");
    let mut intruder = w.pne("bobs-tv").stay().spawn();
    intruder.expect_event("discovered");
    for args in [vec!["query", &a.to_string()[..]], vec!["query"]] {
        let refused = pn_json(&bob_store, &args);
        assert_eq!(refused["ok"], false, "{refused}");
    }
    let after = w.stores().await;
    assert_eq!(after.at_server(), before.at_server());
    assert_eq!(after.at("home-gw"), before.at("home-gw"));
}

/// 004 §5.5.10: a member asks its PN GW to expel another (`cpns pn expel` on the PNE). The
/// server agrees (the asker is of the PN GW's user); the expelled PNE is told and forgets the
/// PN, the others hold the new epoch's key, and every store agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_asks_its_pn_gw_to_expel_another() {
    let mut w = world(&["phone", "watch", "tv", "tablet"]);
    let (mut pnes, pn) = established(&mut w, "phone", &["watch", "tv"], "tablet");
    w.stores().await.agree();
    let line = cpns(&[
        "pn",
        "expel",
        &pn.to_string(),
        "tv",
        "--store",
        s(&w.store("watch")),
    ]);
    assert_eq!(line, format!("tv expelled from PN {pn}\n"));
    let event = w.gw().expect_event("member_expelled");
    assert_eq!(event["pne"], "tv");
    assert_eq!(event["epoch"], 2);
    assert_eq!(names(&event["notified"]), ["phone", "watch"]);
    for (id, p) in &mut pnes {
        match *id {
            "tv" => {
                p.expect_event_where("expelled", |v| v["pn_id"] == pn.to_string());
            }
            "phone" | "watch" => {
                let u = p.expect_event_where("pn_updated", |v| v["epoch"] == 2);
                assert_eq!(u["has_key"], true, "{id}");
            }
            _ => {}
        }
    }
    let after = w.stores().await;
    after.agree();
    assert_eq!(after.at("home-gw"), members(&[(pn, &["phone", "watch"])]));
    // Expelling it again: not a member any more.
    let again = pn_json(&w.store("watch"), &["expel", &pn.to_string(), "tv"]);
    assert_eq!(again["ok"], false, "{again}");
}

/// How a multi-user case sets up alice's home PN GW.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Home {
    /// Running, confirming (`yes`) or not (`no`) its user's PNEs in others' PNs.
    Runs(&'static str),
    /// Not running: the server cannot ask it.
    Down,
}

/// 001 §5.2.1.1 across processes: bob's PN GW (`bob-gw`) establishes a PN with alice's phone,
/// which names `named` as its home PN GW; alice's `home-gw` is as `home` says. Returns bob's
/// PN GW's establishment event, the phone's last event about it, and the server's PNs.
async fn multi_user(
    home: Home,
    named: &str,
) -> (
    serde_json::Value,
    serde_json::Value,
    Vec<cpns_store::PnRecord>,
) {
    let mut w = World::builder()
        .gateway("home-gw")
        .pne("phone")
        .user("bob")
        .gateway("bob-gw")
        .start();
    match home {
        Home::Runs(answer) => w.restart_gateway(&["--confirm-others", answer]),
        Home::Down => w.stop_gateway(),
    }
    let (mut bob, bob_pan) = w.start_gateway("bob-gw", &["--establish", "phone"]);
    let mut phone = w
        .pne("phone")
        .at(&bob_pan)
        .stay()
        .await_invitation()
        .home_gateway(named)
        .spawn();
    let outcome = bob.expect_any(&["pn_established", "establishment_failed"]);
    let told = phone.expect_any(&["pn_joined", "pn_refused", "flow_failed"]);
    if let Home::Runs(answer) = home
        && named == "home-gw"
    {
        let asked = w.gw().expect_event("pne_confirm_asked");
        assert_eq!(asked["pne"], "phone");
        assert_eq!(asked["requesting_gw"], "bob-gw");
        assert_eq!(asked["confirmed"], answer == "yes");
    }
    // Bob's PN GW holds what the server holds, and alice's PN GW and the phone's own store
    // agree with it too (the phone holds a PN only if it is in one).
    let stores = w.stores().await;
    stores.agree();
    let server = stores.at_server();
    assert_eq!(stores.at("bob-gw"), server);
    assert!(stores.at("home-gw").is_empty());
    assert_eq!(stores.at("phone"), server);
    (outcome, told, stores.server)
}

/// 001 §5.2.1.1 end to end: alice's home PN GW confirms her phone in bob's PN; the server
/// registers it with alice recorded as its user, and bob's PN GW holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pne_of_another_user_enters_a_pn_once_its_home_pn_gw_confirms() {
    let (outcome, told, pns) = multi_user(Home::Runs("yes"), "home-gw").await;
    assert_eq!(outcome["event"], "pn_established", "{outcome}");
    assert_eq!(names(&outcome["members"]), ["phone"]);
    assert_eq!(told["event"], "pn_joined", "{told}");
    assert_eq!(pns.len(), 1);
    assert_eq!(pns[0].gateway.as_str(), "bob-gw");
    assert_eq!(pns[0].owner.as_str(), "bob");
    assert_eq!(pns[0].members[0].pne_id.as_str(), "phone");
    assert_eq!(
        pns[0].members[0].owner.as_ref().map(|u| u.as_str()),
        Some("alice")
    );
}

/// Its home PN GW declining, not running, or a home PN GW named that is not alice's: the
/// phone is left out with the reason, and the server stores no PN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pne_of_another_user_not_confirmed_changes_nothing() {
    for (home, named, code) in [
        (Home::Runs("no"), "home-gw", "declined"),
        (Home::Down, "home-gw", "timeout"),
        (Home::Runs("yes"), "bob-gw", "forbidden"),
    ] {
        let (outcome, told, pns) = multi_user(home, named).await;
        assert_eq!(
            outcome["event"], "establishment_failed",
            "{home:?}: {outcome}"
        );
        assert_ne!(told["event"], "pn_joined", "{home:?}: {told}");
        assert!(told.to_string().contains(code), "{home:?}: {told}");
        assert!(pns.is_empty(), "{home:?}: {pns:?}");
    }
}

/// 002 §B.1.1.1 across processes: two devices enrolled for both roles meet with no PN GW
/// (`cpns elect`); the wired, mains-powered hub is elected whichever side dials, runs as the PN
/// GW connected to the server, and the phone follows it as a PNE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_elect_a_pn_gw_and_take_their_roles() {
    let w = World::builder()
        .gateway("home-gw")
        .device("both", "hub")
        .device("both", "phone")
        .start();
    let device = |id: &str, pair: &[&str], caps: &[&str]| {
        let cred = w.cred(id);
        let store = w.store(id);
        let mut args = vec![
            "elect",
            "--json",
            "--credential",
            s(&cred),
            "--store",
            s(&store),
            "--server",
            w.server_addr(),
        ];
        args.extend(pair);
        args.extend(caps);
        Proc::spawn("elect", &args)
    };
    // The phone listens, the hub dials.
    let mut phone = device(
        "phone",
        &["--listen", "127.0.0.1:0"],
        &[
            "--networks",
            "wlan,lte",
            "--battery",
            "60",
            "--cpu-class",
            "3",
        ],
    );
    let addr = phone.expect_event("election_listening")["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let mut hub = device(
        "hub",
        &["--peer", &addr],
        &["--networks", "ethernet", "--battery", "none"],
    );
    let won = hub.expect_event("elected");
    assert_eq!(
        (won["gateway"].as_str(), won["me"].as_bool()),
        (Some("hub"), Some(true))
    );
    let pan = won["pan_address"].as_str().unwrap().to_string();
    let followed = phone.expect_event("elected");
    assert_eq!(followed["gateway"], "hub");
    assert_eq!(followed["me"], false);
    assert_eq!(followed["pan_address"], pan.as_str());
    // The hub now serves as a PN GW with the server; the phone finds it as its PN GW.
    let listening = hub.expect_event("pan_listening");
    assert_eq!(listening["addr"], pan.as_str());
    hub.expect_event("wan_ready");
    let found = phone.expect_event("discovered");
    assert_eq!(found["gateway"], "hub");
    let shown = pn_json(&w.store("hub"), &["show"]);
    assert_eq!(shown["ok"], true, "{shown}");
}

/// Beyond the documents: a PN GW giving its PNs a lifetime and a member limit. A join beyond the
/// limit is refused naming it; when the lifetime ends, the PN GW releases the PN, every member
/// is told, and every store forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pn_expires_and_a_full_pn_refuses_a_member() {
    let mut w = World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "watch", "tv"])
        .gateway_args(&["--pn-lifetime-s", "3", "--pn-max-members", "2"])
        .start();
    let (mut pnes, pn) = established(&mut w, "phone", &["watch"], "tv");
    w.stores().await.agree();
    let refused = pn_json(&w.store("tv"), &["join", &pn.to_string()]);
    assert_eq!(code(&refused), "conflict");
    // The lifetime ends: released, and both members told.
    let expired = w.gw().expect_event("pn_expired");
    assert_eq!(expired["pn_id"], pn.to_string());
    let released = w.gw().expect_event("pn_released");
    assert_eq!(names(&released["notified"]), ["phone", "watch"]);
    for (id, p) in &mut pnes {
        if *id != "tv" {
            told(p, pn);
        }
    }
    let after = w.stores().await;
    after.agree();
    assert!(
        after.server.is_empty() && after.at("home-gw").is_empty(),
        "{after:?}"
    );
}

/// `cpns demo`, the README's first command: it ends well, its diagram shows the lifecycle's
/// messages (group content too), one line per lifecycle step, and its stores hold what those steps left: the
/// phone's PN with the watch and the TV, without the expelled speaker, and no released PN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_whole_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["demo", "--keep", s(tmp.path())]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for message in [
        "GatewayAnnouncement",
        "PneInviteRequest",
        "PnUpdateNotification",
        "MembershipConfirmed",
        "PneExpelNotification",
        "PnReleaseNotification",
        "GroupContent [sealed]",
        "GroupContentSent [sealed]",
        "DeliveryRoute",
        "DeliveryChunk [sealed]",
        "DeliveryDone [sealed]",
    ] {
        assert!(
            text.contains(message),
            "no {message} in the diagram:\n{text}"
        );
    }
    for step in [
        "election: hub",
        "invite: ",
        "join: the tv",
        "content: the phone said \"dinner is ready\"",
        "took it as phone's",
        "the phone found it by the keyword \"renderer\", offered by tv",
        "deliver: the phone pushed holiday.mp4 (3145728 bytes) to the tv",
        "the tv and the speaker accepted; photo 1 went",
        "to 2 members",
        "to 1 member; the speaker holds no key of the album",
        "expel: ",
        "release: ",
    ] {
        assert!(text.contains(step), "no step {step:?}:\n{text}");
    }
    // The video is in the tv's inbox, whole.
    let kept = std::fs::read(tmp.path().join("tv.inbox").join("holiday.mp4")).unwrap();
    let sent = std::fs::read(tmp.path().join("holiday.mp4")).unwrap();
    assert_eq!((kept.len(), kept == sent), (3 * 1024 * 1024, true));
    // The diagram draws the first chunks and counts the rest.
    assert!(text.contains("more crossed)"), "{text}");
    let gw = [("home-gw".to_string(), tmp.path().join("home-gw.db"))];
    let stores = Stores::read(&tmp.path().join("server").join("cpns.db"), &gw).await;
    let server = stores.at_server();
    assert_eq!(server.len(), 1, "{server:?}");
    let (_, members) = server.iter().next().unwrap();
    assert_eq!(members, &set(&["phone", "watch", "tv"]));
    assert_eq!(stores.at("home-gw"), server);
}

/// `cpns elect` with a PN GW's credential says what to run instead, and a `--peer` that never
/// answers ends at `--timeout-s` with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_refuses_what_it_cannot_do() {
    let w = World::builder().gateway("home-gw").pne("lonely").start();
    let cred = w.cred("home-gw");
    let store = w.store("x");
    let out = run(&[
        "elect",
        "--credential",
        s(&cred),
        "--store",
        s(&store),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `cpns gateway`"), "{err}");
    // Nothing listens there: a port just freed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = run(&[
        "elect",
        "--credential",
        s(&w.cred("lonely")),
        "--store",
        s(&store),
        "--peer",
        &addr,
        "--timeout-s",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no other device paired in time"), "{err}");
}

/// A member away while its PN is released learns it when it is back: the server's word,
/// sealed for it, through its PN GW; it forgets the PN and every store agrees again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_away_when_its_pn_is_released_forgets_it_when_back() {
    let mut w = world(&["phone", "watch", "tv"]);
    let (mut pnes, pn) = established(&mut w, "phone", &["watch"], "tv");
    let at = pnes.iter().position(|(id, _)| *id == "watch").unwrap();
    drop(pnes.remove(at));
    let answer = pn_json(&w.store("home-gw"), &["release", &pn.to_string()]);
    assert_eq!(names(&answer["notified"]), ["phone"], "{answer}");
    // Away, the watch still holds it.
    assert!(!w.stores().await.at("watch").is_empty());
    let mut watch = w.pne("watch").stay().spawn();
    let gone = watch.expect_event_where("pn_released", |v| v["pn_id"] == pn.to_string());
    assert_eq!(gone["by_me"], false);
    let after = w.stores().await;
    after.agree();
    assert!(after.server.is_empty());
}

/// Who may change a PN, across processes (docs/pn-lifecycle.md, "Who may change a PN"):
/// alice's phone, a member of bob's PN once her home PN GW confirmed it (001), asks bob's PN
/// GW to release the PN, to invite bob's radio and to expel bob's tv. The server refuses all
/// three (`forbidden`): every store is as it was, the radio is not in the PN and the tv is
/// told nothing. The phone may leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_member_may_leave_but_not_release_invite_or_expel() {
    let mut w = World::builder()
        .gateway("home-gw")
        .pne("phone")
        .user("bob")
        .gateway("bob-gw")
        .pnes(&["bobs-tv", "bobs-radio"])
        .start();
    w.restart_gateway(&["--confirm-others", "yes"]);
    let (mut bob, bob_pan) = w.start_gateway(
        "bob-gw",
        &["--establish", "phone,bobs-tv", "--after-pnes", "2"],
    );
    let mut tv = w
        .pne("bobs-tv")
        .at(&bob_pan)
        .stay()
        .await_invitation()
        .spawn();
    let mut phone = w
        .pne("phone")
        .at(&bob_pan)
        .stay()
        .await_invitation()
        .home_gateway("home-gw")
        .spawn();
    let est = bob.expect_event("pn_established");
    let pn = est["pn_id"].as_str().unwrap().to_string();
    for p in [&mut phone, &mut tv] {
        p.expect_event_where("pn_joined", |v| v["pn_id"] == pn);
        p.expect_event("rejoined");
    }
    let mut radio = w.pne("bobs-radio").at(&bob_pan).stay().spawn();
    bob.expect_event_where("pne_discovered", |v| v["pne"] == "bobs-radio");
    radio.expect_event("rejoined");
    let before = w.stores().await;
    before.agree();
    assert_eq!(
        before.at_server().into_values().next().unwrap(),
        set(&["phone", "bobs-tv"])
    );

    for (asked, args) in [
        ("release", vec!["release", pn.as_str()]),
        ("invite", vec!["invite", pn.as_str(), "bobs-radio"]),
        ("expel", vec!["expel", pn.as_str(), "bobs-tv"]),
    ] {
        let answer = pn_json(&w.store("phone"), &args);
        assert_eq!(code(&answer), "forbidden", "{asked}");
    }
    let after = w.stores().await;
    assert!(after.server == before.server, "the server's store changed");
    assert!(after.local == before.local, "a device's store changed");
    assert!(tv.seen("expelled").is_empty());
    assert!(radio.seen("pn_joined").is_empty());
    assert!(bob.seen("member_expelled").is_empty() && bob.seen("pn_released").is_empty());

    // It may leave: out of the server's inventory, bob's PN GW's and its own.
    let answer = pn_json(&w.store("phone"), &["leave", pn.as_str()]);
    assert_eq!(answer["ok"], true, "{answer}");
    phone.expect_event_where("pn_left", |v| v["pn_id"] == pn);
    bob.expect_event_where("member_left", |v| v["pne"] == "phone");
    let stores = w.stores().await;
    stores.agree();
    assert_eq!(
        stores.at_server().into_values().next().unwrap(),
        set(&["bobs-tv"])
    );
    assert!(stores.at("phone").is_empty());
}

/// A PN is a PN GW with at least one PNE: the only member of a 1-1 PN leaves, and the PN goes
/// with it at the server and at its PN GW (docs/pn-lifecycle.md, "A PN without members").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_leaving_takes_the_pn_with_it() {
    let mut w = world(&["phone"]);
    let mut phone = w.pne("phone").setup("1-1").stay().spawn();
    let pn = w.gw().expect_event("pn_established")["pn_id"]
        .as_str()
        .unwrap()
        .to_string();
    phone.expect_event("rejoined");
    let answer = pn_json(&w.store("phone"), &["leave", pn.as_str()]);
    assert_eq!(answer["ok"], true, "{answer}");
    w.gw()
        .expect_event_where("member_left", |v| v["pne"] == "phone");
    w.gw()
        .expect_event_where("pn_emptied", |v| v["pn_id"] == pn);
    let stores = w.stores().await;
    stores.agree();
    assert!(stores.at_server().is_empty(), "{stores:?}");
    assert!(stores.at("home-gw").is_empty());
    assert!(stores.at("phone").is_empty());
}

/// A PNE that is a member of no PN registers naming none (docs/security.md §4.1; issue E):
/// it joins the PN with the lowest PN ID of those its PN GW serves, as the code and the
/// docs say, whichever was set up first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_naming_no_pn_joins_the_lowest_pn_id() {
    let mut w = World::builder()
        .gateway("home-gw")
        .pnes(&["phone", "tv", "watch"])
        .start();
    let mut made = Vec::new();
    for id in ["phone", "tv"] {
        let mut p = w.pne(id).setup("1-1").spawn();
        let joined = p.expect_event("pn_joined");
        made.push(joined["pn_id"].as_str().unwrap().to_string());
        p.succeeds();
        w.gw()
            .expect_event_where("pn_established", |v| v["pn_id"] == joined["pn_id"]);
    }
    assert_ne!(made[0], made[1]);
    let lowest = made.iter().min().unwrap().clone();
    let mut watch = w.pne("watch").register().spawn();
    let registered = watch.expect_event("registered");
    assert_eq!(registered["pn_id"], lowest, "{made:?}");
    watch.succeeds();
    // The server and the PN GW agree (the tv ran once and was not linked to be told).
    let stores = w.stores().await;
    assert_eq!(stores.at_server(), stores.at("home-gw"));
    let at = stores.at_server();
    let members_of = |pn: &str| at.iter().find(|(p, _)| **p == pn).unwrap().1.clone();
    assert!(members_of(&lowest).contains("watch"));
    let other = made.iter().find(|p| **p != lowest).unwrap();
    assert!(!members_of(other).contains("watch"));
}

/// The AEAD of a sealed PAN link (docs/security.md §4.13), agreed between real processes: a PN
/// GW that wants ChaCha20-Poly1305 first gets it whatever the PNE wants (one end without AES
/// instructions, as far as the other can tell); both wanting AES-256-GCM first get it. The PN
/// GW says which, and the PN is set up over the link either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pan_link_is_sealed_in_the_suite_both_ends_agree_on() {
    for (gw_wants, expect) in [
        ("chacha20-poly1305", "chacha20-poly1305"),
        ("aes-256-gcm", "aes-256-gcm"),
    ] {
        let mut w = World::builder()
            .gateway("home-gw")
            .pnes(&["phone"])
            .gateway_args(&["--aead", gw_wants])
            .start();
        let _phone = w
            .pne("phone")
            .args(&["--aead", "aes-256-gcm"])
            .setup("1-1")
            .spawn();
        let e = w
            .gw()
            .expect_event_where("pan_authenticated", |v| v["pne"] == "phone");
        assert_eq!(e["suite"], expect, "{e}");
        w.gw().expect_event("pn_established");
    }
}
