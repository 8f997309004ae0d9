//! (a) Identity on the PAN (docs/ARCHITECTURE.md decision 11) against the real binary: a raw
//! link claims the id of a member that is connected, registers and floods PN Setup Requests in
//! its name without ever authenticating. Every request is refused, the server's and the PN GW's
//! SQLite inventories are unchanged cell for cell (only the PNs real PNEs established meanwhile
//! are added), and the real member keeps its route: it is still invited and joins.

use std::collections::{BTreeMap, BTreeSet};

use cpns_wire::{
    ErrorCode, HashBytes, PanAuthConfirm, PanAuthInit, PnId, PneRegistrationRequest, RandBytes,
    RequestId, SetupType,
};
use tokio::io::AsyncWriteExt;

use crate::common::names;
use crate::harness::{
    Frame, RawLink, Tables, closed, discovery, dump, quoted_pn, read_frame, setup_request,
    wan_barrier, within, world,
};

/// PN Setup Requests (and a registration every tenth) the attacker floods.
const FLOOD: u64 = 2_000;

/// Codes a refused claim may get.
const REFUSALS: [ErrorCode; 4] = [
    ErrorCode::Forbidden,
    ErrorCode::Conflict,
    ErrorCode::Busy,
    ErrorCode::Unauthenticated,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_a_connected_members_id_changes_no_inventory() {
    let mut w = world(&["phone", "tablet", "tv"]).start();
    let pan = w.pan().to_string();

    // The victim: the phone (with a UI, so holding a LocalEUKey) set up a PN and stays
    // connected, waiting to be invited.
    let mut phone = w.pne("phone").setup("1-1").await_invitation().spawn();
    let victim_pn = phone.expect_event("pn_joined")["pn_id"]
        .as_str()
        .unwrap()
        .to_string();
    w.gw()
        .expect_event_where("pn_established", |v| v["pn_id"] == victim_pn);
    wan_barrier(&pan, "home-gw", 1).await;
    let server_before = dump(&w.server_db()).await;
    let gw_before = dump(&w.store("home-gw")).await;

    // The attacker names the phone: discovery and registration are refused, nothing is routed.
    let mut att = RawLink::connect(&pan, "phone", "home-gw").await;
    let me = att.me.clone();
    let msg = att.send(discovery(&me)).await;
    assert_eq!(att.answer(msg).await, Ok(Some(ErrorCode::Forbidden)));
    let msg = att.send(registration(&me, 1)).await;
    assert_eq!(att.answer(msg).await, Ok(Some(ErrorCode::Forbidden)));

    // A real establishment runs beside the flood: the tablet invites the tv.
    let mut tv = w.pne("tv").await_invitation().no_ui().spawn();
    tv.expect_event("discovered");
    let mut tablet = w.pne("tablet").setup("tv").spawn();

    // The flood: PN Setup Requests (and registrations) in the phone's name, answers read as
    // they come. Each is refused.
    let mut frames = Vec::new();
    let mut sent = BTreeSet::new();
    for i in 0..FLOOD {
        let (msg, frame) = if i % 10 == 9 {
            att.request(registration(&me, i))
        } else {
            att.request(setup_request(&me, i, SetupType::All, 0))
        };
        frames.extend(frame);
        sent.insert(msg);
    }
    let (rd, wr) = (&mut att.rd, &mut att.wr);
    let read_answers = async {
        let mut answered = 0u64;
        while answered < FLOOD {
            match read_frame(rd).await {
                None => return (answered, true),
                Some(Frame::Plain(env)) => {
                    let Some(reply) = env.in_reply_to else {
                        continue; // a request of the PN GW's
                    };
                    assert!(sent.contains(&reply), "an answer to {reply}?");
                    let code = env.error().map(|e| e.code);
                    assert!(
                        code.is_some_and(|c| REFUSALS.contains(&c)),
                        "a request in the phone's name was not refused: {env:?}"
                    );
                    answered += 1;
                }
                Some(Frame::Sealed) => panic!("a sealed frame to an unauthenticated link"),
            }
        }
        (answered, false)
    };
    let (_, (answered, closed_early)) = within("the flood's answers", async {
        tokio::join!(wr.write_all(&frames), read_answers)
    })
    .await;
    println!(
        "identity flood: {answered} of {FLOOD} requests refused, closed early: {closed_early}"
    );
    // A flooder that reads its answers is answered, not cut off for the PN GW's own backlog.
    assert!(
        !closed_early,
        "cut off after {answered} answers although it read them"
    );

    let legit = tablet.expect_event("pn_joined");
    assert_eq!(names(&legit["members"]), ["tablet", "tv"]);
    let legit_pn = legit["pn_id"].as_str().unwrap().to_string();
    tablet.succeeds();
    tv.succeeds();

    // Trying to prove the id without the LocalEUKey: a PN it does not have, then the phone's PN.
    // Both are answered with a challenge (for the unknown PN a decoy, docs/security.md §4.4),
    // so the answers do not tell in which PN the phone holds a key; neither proof can verify,
    // and each link is closed.
    let unknown = PanAuthInit {
        pn_id: PnId::from_bytes([9; 16]),
        pne_id: me.clone(),
        rand_pne: RandBytes([1; 16]),
        suites: Vec::new(),
    };
    let real = PanAuthInit {
        pn_id: victim_pn.parse().unwrap(),
        pne_id: me.clone(),
        rand_pne: RandBytes([2; 16]),
        suites: Vec::new(),
    };
    let mut challenges = Vec::new();
    for (n, init) in [unknown, real].into_iter().enumerate() {
        if n > 0 {
            att = RawLink::connect(&pan, "phone", "home-gw").await;
        }
        let msg = att.send(init).await;
        let challenge = within("the PN GW's challenge", async {
            loop {
                match att.recv().await {
                    Some(Frame::Plain(env)) if env.in_reply_to == Some(msg) => return env,
                    Some(_) => {}
                    None => panic!("closed before the challenge"),
                }
            }
        })
        .await;
        // The envelope's message ids differ from link to link anyway: set aside.
        let mut frame = Vec::new();
        let same_ids = cpns_wire::Envelope {
            msg_id: 0,
            in_reply_to: Some(0),
            ..*challenge.clone()
        };
        cpns_wire::encode_plain_frame(&same_ids, &mut frame);
        assert!(
            matches!(challenge.body, cpns_wire::Body::PanAuthChallenge(_)),
            "{challenge:?}"
        );
        challenges.push(frame);
        att.send(PanAuthConfirm {
            proof: HashBytes([0; 32]),
        })
        .await;
        within("the PN GW to close the link", closed(&mut att.rd)).await;
    }
    assert_eq!(
        challenges[0].len(),
        challenges[1].len(),
        "the two answers look alike"
    );
    assert_ne!(
        challenges[0], challenges[1],
        "each with its own rand_GW and proof"
    );
    for _ in 0..2 {
        w.gw().expect_event_where("link_rejected", |v| {
            v["reason"]
                .as_str()
                .unwrap()
                .contains("proof did not verify")
        });
    }

    // The real phone kept its route: it is invited to a new PN, joins, and is done.
    let mut tablet = w.pne("tablet").setup("phone").spawn();
    let second = tablet.expect_event("pn_joined");
    assert_eq!(names(&second["members"]), ["phone", "tablet"]);
    let second_pn = second["pn_id"].as_str().unwrap().to_string();
    let joined = phone.expect_event("pn_joined");
    assert_eq!(joined["pn_id"], second["pn_id"]);
    tablet.succeeds();
    phone.succeeds();
    assert_eq!(
        w.gw()
            .seen("pne_discovered")
            .iter()
            .filter(|v| v["pne"] == "phone")
            .count(),
        1,
        "only the real phone's link was ever routed as the phone"
    );
    assert_eq!(
        w.gw()
            .seen("link_proven")
            .iter()
            .filter(|v| v["pne"] == "phone")
            .count(),
        1,
        "only the real phone's link ever proved it is the phone"
    );

    // Both inventories: every cell as before; the only new rows are the two real PNs.
    wan_barrier(&pan, "home-gw", 2).await;
    let legit: BTreeSet<String> = [&legit_pn, &second_pn].map(|p| quoted_pn(p)).into();
    let server_after = dump(&w.server_db()).await;
    let gw_after = dump(&w.store("home-gw")).await;
    unchanged_but_for(&server_before, &server_after, &legit, "home-gw");
    unchanged_but_for(&gw_before, &gw_after, &legit, "home-gw");
    assert_eq!(
        server_after["pns"].len(),
        3,
        "the phone's PN and the two real ones"
    );
    assert_eq!(
        gw_after["local_pns"].len(),
        3,
        "the phone's PN and the two real ones"
    );
}

/// 003 §1.4: a PNE Registration Request in `pne`'s name.
fn registration(pne: &cpns_wire::EntityId, request: u64) -> PneRegistrationRequest {
    PneRegistrationRequest {
        request_id: RequestId(request),
        pne_id: pne.clone(),
        pn_id: None,
        rand_pne: RandBytes([5; 16]),
        capabilities: None,
        local_key: false,
    }
}

/// Every row of `before` is in `after`, cell for cell; a row `after` adds belongs to one of the
/// `legit` PNs, or is the PN GW's own entity row (its status reports may rewrite it). A row
/// names its PN by id in its first cell, except the server's: `pns` rows start with their
/// `seq`, then the PN id, and `pn_members` rows with their PN's `seq` (schema 5).
fn unchanged_but_for(before: &Tables, after: &Tables, legit: &BTreeSet<String>, gw: &str) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let seq_to_pn: BTreeMap<&str, &str> = after
        .get("pns")
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let mut c = r.split('|');
            Some((c.next()?, c.next()?))
        })
        .collect();
    let pn_of = |table: &str, row: &str| -> String {
        let mut c = row.split('|');
        let first = c.next().unwrap_or_default();
        match table {
            "pns" => c.next().unwrap_or_default().to_string(),
            "pn_members" => seq_to_pn
                .get(first)
                .copied()
                .unwrap_or_default()
                .to_string(),
            _ => first.to_string(),
        }
    };
    let gw_row = format!("'{gw}'|");
    // Presence (docs/device-status.md): the real PNEs' links come and go and the PN GW reports
    // them, so an entity row's status columns (schema 11: the ninth cell on) may change, but
    // only as this PN GW reported them (the twelfth cell, `reported_by`, is it or none). Rows
    // are compared on the cells before them.
    let reporter = format!("'{gw}'");
    let strip = |table: &str, row: &String| -> String {
        if table != "entities" {
            return row.clone();
        }
        let cells: Vec<&str> = row.split('|').collect();
        if let Some(by) = cells.get(11) {
            assert!(
                *by == "NULL" || *by == reporter,
                "entities: a status reported by someone else: {row}"
            );
        }
        cells[..cells.len().min(8)].join("|")
    };
    for (table, rows) in before {
        let now: BTreeSet<String> = after[table].iter().map(|r| strip(table, r)).collect();
        let was: BTreeSet<String> = rows.iter().map(|r| strip(table, r)).collect();
        for row in was.difference(&now) {
            assert!(
                table == "entities" && row.starts_with(&gw_row),
                "{table}: a row changed or went: {row}"
            );
        }
        for row in now.difference(&was) {
            let pn = pn_of(table, row);
            // The PN GW's status reports rewrite its own entity row; the server keeps its answers
            // to the PN GW's real PN Registration Requests for retries (table replays).
            let gw_own = (table == "entities" || table == "replays") && row.starts_with(&gw_row);
            assert!(
                legit.contains(&pn) || gw_own,
                "{table}: a row appeared that no real establishment made: {row}"
            );
        }
    }
}
