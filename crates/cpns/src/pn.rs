//! `cpns pn ...`: acts on a running PN GW or PNE (`cpns gateway`, `cpns pne --stay`) through
//! its control socket (`cpns_node::control`) and prints its answer, one readable line per PN,
//! or the answer as JSON with `--json`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use cpns_node::control;
use cpns_node::gateway::GatewayHandle;
use cpns_node::pne::PneHandle;
use cpns_wire::{EntityId, PnId, PnInventory};
use serde_json::{Value, json};

#[derive(Args, Debug)]
pub(crate) struct PnArgs {
    #[command(subcommand)]
    pub verb: PnVerb,
    /// The running entity's store; its control socket is that path with `.sock` added.
    #[arg(long, global = true)]
    pub store: Option<PathBuf>,
    /// The control socket itself (instead of --store).
    #[arg(long, global = true, conflicts_with = "store")]
    pub control: Option<PathBuf>,
    /// Print the entity's answer as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PnVerb {
    /// The PNs the entity holds, with their members.
    Show,
    /// Release a PN (000 §6.6.5): on a PN GW, one of its PNs; on a PNE of the PN's owner, one
    /// it is a member of (§6.6.5.1). The PN leaves the server, the PN GW and every member,
    /// which are told.
    Release {
        /// The PN's id (32 hex digits, as `cpns pn show` prints it).
        pn: PnId,
    },
    /// Expel a member from a PN (000 §6.6.3.2): on a PN GW, from one of its PNs; on a PNE of
    /// the PN's owner, from a PN it is a member of (004 §5.5.10). The member is told once the
    /// server agreed and the change is stored. The PN moves to a new group key epoch that only
    /// the remaining members get.
    Expel {
        /// The PN's id.
        pn: PnId,
        /// The member to expel.
        pne: EntityId,
    },
    /// On a PNE: leave a PN it is a member of (000 §6.6.3.1.1); the others move to a new group
    /// key epoch.
    Leave {
        /// The PN's id.
        pn: PnId,
    },
    /// On a PNE: join one of the PNs its PN GW serves (000 §6.6.2.2), as its discovery lists
    /// them; the server authenticates it first, and every member moves to a new group key epoch.
    Join {
        /// The PN's id.
        pn: PnId,
    },
    /// Invite a PNE into a PN (000 §6.6.2.1): on a PN GW, into one of its PNs; on a PNE of the
    /// PN's owner, into one it is a member of (its PN GW invites). The invitee joins if it
    /// accepts.
    Invite {
        /// The PN's id.
        pn: PnId,
        /// The PNE to invite.
        pne: EntityId,
    },
    /// The members of one PN the entity holds.
    Members {
        /// The PN's id.
        pn: PnId,
    },
    /// On a PNE: read a PN's inventory (004 §5.5.10): one it is a member of from its PN GW,
    /// another of its user's from the server, end to end; with no PN, every PN of its user.
    Query {
        /// The PN's id; none: every PN of the PNE's user.
        pn: Option<PnId>,
    },
}

/// `cpns pn ...`.
pub(crate) async fn pn(a: PnArgs) -> anyhow::Result<()> {
    let path = match (&a.control, &a.store) {
        (Some(c), _) => c.clone(),
        (None, Some(s)) => control::socket_path(s),
        (None, None) => bail!("say which entity: --store <its store> or --control <its socket>"),
    };
    let request = match &a.verb {
        PnVerb::Show => json!({ "verb": "show" }),
        PnVerb::Release { pn } => json!({ "verb": "release", "pn_id": pn.to_string() }),
        PnVerb::Expel { pn, pne } => {
            json!({ "verb": "expel", "pn_id": pn.to_string(), "pne": pne.as_str() })
        }
        PnVerb::Leave { pn } => json!({ "verb": "leave", "pn_id": pn.to_string() }),
        PnVerb::Join { pn } => json!({ "verb": "join", "pn_id": pn.to_string() }),
        PnVerb::Invite { pn, pne } => {
            json!({ "verb": "invite", "pn_id": pn.to_string(), "pne": pne.as_str() })
        }
        PnVerb::Members { pn } => json!({ "verb": "members", "pn_id": pn.to_string() }),
        PnVerb::Query { pn: Some(pn) } => json!({ "verb": "query", "pn_id": pn.to_string() }),
        PnVerb::Query { pn: None } => json!({ "verb": "query" }),
    };
    let answer = control::request(&path, &request).await?;
    if a.json {
        println!("{answer}");
    }
    if answer["ok"] != true {
        let reason = answer["error"].as_str().unwrap_or("no reason given");
        bail!("the entity refused: {reason}");
    }
    if !a.json {
        match a.verb {
            PnVerb::Show | PnVerb::Members { .. } | PnVerb::Query { .. } => print_pns(&answer),
            PnVerb::Release { pn } => print_released(pn, &answer),
            PnVerb::Expel { pn, pne } => print_expelled(pn, &pne, &answer),
            PnVerb::Leave { pn } => println!("left PN {pn}"),
            PnVerb::Join { pn } => println!("joined PN {pn}"),
            PnVerb::Invite { pn, pne } => match answer["accepted"].as_bool() {
                Some(false) => println!("{pne} declined to join PN {pn}"),
                _ => println!("{pne} joined PN {pn}"),
            },
        }
    }
    Ok(())
}

/// `<PNE> expelled from PN <id>`, and on a PN GW the new epoch and who was told.
fn print_expelled(pn: PnId, pne: &EntityId, answer: &Value) {
    if answer.get("expelled").is_some() {
        // A PNE's answer: its PN GW did it; the epoch comes by PN Update Notification.
        return println!("{pne} expelled from PN {pn}");
    }
    let told: Vec<&str> = answer["notified"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let told = if told.is_empty() {
        "no member was connected to be told".to_string()
    } else {
        format!("told: {}", told.join(", "))
    };
    match answer["epoch"].as_u64() {
        Some(epoch) => println!("{pne} expelled from PN {pn}; group key epoch {epoch}; {told}"),
        None => println!("{pne} expelled from PN {pn} (the server had removed it already)"),
    }
}

/// `PN <id> released`, and who was told.
fn print_released(pn: PnId, answer: &Value) {
    match answer["notified"].as_array() {
        Some(told) => {
            let told: Vec<&str> = told.iter().filter_map(Value::as_str).collect();
            let told = if told.is_empty() {
                "no member was connected to be told".to_string()
            } else {
                format!("told: {}", told.join(", "))
            };
            println!("PN {pn} released; {told}");
        }
        None => println!("PN {pn} released"),
    }
}

/// One line per PN: its id, its PN GW and its members.
fn print_pns(answer: &Value) {
    let pns = answer["pns"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if pns.is_empty() {
        println!("no PNs");
    }
    for pn in pns {
        let members: Vec<&str> = pn["members"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "PN {} at {}: {}{}",
            pn["pn_id"].as_str().unwrap_or("?"),
            pn["gateway"].as_str().unwrap_or("?"),
            if members.is_empty() {
                "no members".to_string()
            } else {
                members.join(", ")
            },
            key_holders(pn)
        );
    }
}

/// On a PN GW's `members`: the current epoch and who confirmed holding its key.
fn key_holders(pn: &Value) -> String {
    let Some(confirmed) = pn["confirmed"].as_array() else {
        return String::new();
    };
    let confirmed: Vec<&str> = confirmed.iter().filter_map(Value::as_str).collect();
    let who = if confirmed.is_empty() {
        "none yet".to_string()
    } else {
        confirmed.join(", ")
    };
    match pn["epoch"].as_u64() {
        Some(epoch) => format!("; group key epoch {epoch}, confirmed by: {who}"),
        None => "; group key epoch not known yet (no member pulled it since the start)".into(),
    }
}

/// The PNs of an inventory as the control socket answers them.
fn pns_json(pns: &[PnInventory]) -> Value {
    let pns: Vec<Value> = pns
        .iter()
        .map(|inv| {
            json!({
                "pn_id": inv.pn_id.to_string(),
                "gateway": inv.gateway.as_str(),
                "members": inv.members.iter().map(|m| m.pne_id.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "ok": true, "pns": pns })
}

/// The PN a request names in `pn_id`.
fn pn_of(request: &Value) -> Result<PnId, Value> {
    let Some(text) = request["pn_id"].as_str() else {
        let verb = request["verb"].as_str().unwrap_or("request");
        return Err(control::error(format!("a {verb} needs a \"pn_id\"")));
    };
    text.parse()
        .map_err(|e| control::error(format!("pn_id: {e}")))
}

/// The PNE a request names in `pne`.
fn pne_of(request: &Value) -> Result<EntityId, Value> {
    let Some(text) = request["pne"].as_str() else {
        let verb = request["verb"].as_str().unwrap_or("request");
        return Err(control::error(format!("an {verb} needs a \"pne\"")));
    };
    text.parse()
        .map_err(|e| control::error(format!("pne: {e}")))
}

/// The one PN `pn` of an inventory, as `show` answers it.
fn members_json(pns: &[PnInventory], pn: PnId) -> Value {
    let one: Vec<PnInventory> = pns.iter().filter(|i| i.pn_id == pn).cloned().collect();
    if one.is_empty() {
        return control::error(format!("not_found: no PN {pn} here"));
    }
    pns_json(&one)
}

const GATEWAY_VERBS: &str = "known: show, members, invite, expel, release, caps, caps_set";
const PNE_VERBS: &str = "known: show, members, query, invite, expel, join, leave, release, \
     caps, caps_set, status, status_set, subscribe, usage_record, usage_prefs, usage_pref_set, \
     usage_summary, usage_send, charging";

/// `show` (every PN) or `members` (the one PN the request names) from an entity's inventory.
fn inventory_answer(
    verb: &str,
    request: &Value,
    inventory: Result<Vec<PnInventory>, cpns_node::NodeError>,
) -> Value {
    let pns = match inventory {
        Ok(pns) => pns,
        Err(e) => return control::error(e),
    };
    if verb == "show" {
        return pns_json(&pns);
    }
    match pn_of(request) {
        Ok(pn) => members_json(&pns, pn),
        Err(answer) => answer,
    }
}

/// A release's or an expulsion's answer.
fn released_json(r: Result<cpns_node::gateway::Released, cpns_node::NodeError>) -> Value {
    match r {
        Ok(r) => {
            let mut answer = json!({
                "ok": true,
                "pn_id": r.pn_id.to_string(),
                "notified": r.notified.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            });
            if let Some(epoch) = r.epoch {
                answer["epoch"] = json!(epoch);
            }
            answer
        }
        Err(e) => control::error(e),
    }
}

/// Answers a control request on a running PN GW.
pub(crate) async fn answer_gateway(handle: GatewayHandle, request: Value) -> Value {
    match request["verb"].as_str() {
        Some("show") => inventory_answer("show", &request, handle.inventory().await),
        Some("members") => {
            let mut answer = inventory_answer("members", &request, handle.inventory().await);
            if let (Ok(pn), Some(entry)) = (pn_of(&request), answer["pns"].get_mut(0)) {
                match handle.confirmations(pn).await {
                    Ok(Some(c)) => {
                        entry["epoch"] = json!(c.epoch);
                        let confirmed: Vec<&str> = c.confirmed.iter().map(|p| p.as_str()).collect();
                        entry["confirmed"] = json!(confirmed);
                    }
                    Ok(None) => {}
                    Err(e) => return control::error(e),
                }
            }
            answer
        }
        Some("release") => match pn_of(&request) {
            Ok(pn) => released_json(handle.release(pn).await),
            Err(answer) => answer,
        },
        Some("expel") => match (pn_of(&request), pne_of(&request)) {
            (Ok(pn), Ok(pne)) => released_json(handle.expel(pn, pne).await),
            (Err(answer), _) | (_, Err(answer)) => answer,
        },
        Some("invite") => match (pn_of(&request), pne_of(&request)) {
            (Ok(pn), Ok(pne)) => match handle.invite(pn, pne).await {
                Ok(r) => {
                    let mut answer = released_json(Ok(r));
                    answer["accepted"] = json!(true);
                    answer
                }
                Err(cpns_node::NodeError::Rejected(e))
                    if e.code == cpns_wire::ErrorCode::Declined =>
                {
                    json!({ "ok": true, "pn_id": pn.to_string(), "accepted": false })
                }
                Err(e) => control::error(e),
            },
            (Err(answer), _) | (_, Err(answer)) => answer,
        },
        Some("caps") => match handle.capabilities(None).await {
            Ok(c) => json!({ "ok": true, "capabilities": crate::status::caps_json(&c) }),
            Err(e) => control::error(e),
        },
        Some("caps_set") => match crate::status::caps_from_json(&request["capabilities"]) {
            Ok(c) => match handle.capabilities(Some(c)).await {
                Ok(c) => json!({ "ok": true, "capabilities": crate::status::caps_json(&c) }),
                Err(e) => control::error(e),
            },
            Err(e) => control::error(e),
        },
        Some(other) => control::error(format!("unknown verb `{other}`; {GATEWAY_VERBS}")),
        None => control::error("a request needs a \"verb\""),
    }
}

/// Answers a control request on a running PNE.
pub(crate) async fn answer_pne(handle: PneHandle, request: Value) -> Value {
    match request["verb"].as_str() {
        Some(verb @ ("show" | "members")) => {
            inventory_answer(verb, &request, handle.inventory().await)
        }
        Some("expel") => match (pn_of(&request), pne_of(&request)) {
            (Ok(pn), Ok(pne)) => match handle.expel(pn, pne.clone()).await {
                Ok(pn) => json!({ "ok": true, "pn_id": pn.to_string(), "expelled": pne.as_str() }),
                Err(e) => control::error(e),
            },
            (Err(answer), _) | (_, Err(answer)) => answer,
        },
        Some("query") => {
            let pn = match request.get("pn_id") {
                None | Some(Value::Null) => None,
                Some(_) => match pn_of(&request) {
                    Ok(pn) => Some(pn),
                    Err(answer) => return answer,
                },
            };
            match handle.query(pn).await {
                Ok(pns) => pns_json(&pns),
                Err(e) => control::error(e),
            }
        }
        Some(verb @ ("release" | "leave" | "join")) => match pn_of(&request) {
            Ok(pn) => {
                let done = match verb {
                    "release" => handle.release(pn).await,
                    "leave" => handle.leave(pn).await,
                    _ => handle.join(pn).await,
                };
                match done {
                    Ok(pn) => json!({ "ok": true, "pn_id": pn.to_string() }),
                    Err(e) => control::error(e),
                }
            }
            Err(answer) => answer,
        },
        Some("invite") => match (pn_of(&request), pne_of(&request)) {
            (Ok(pn), Ok(pne)) => match handle.invite(pn, pne).await {
                Ok(accepted) => {
                    json!({ "ok": true, "pn_id": pn.to_string(), "accepted": accepted })
                }
                Err(e) => control::error(e),
            },
            (Err(answer), _) | (_, Err(answer)) => answer,
        },
        Some(other) => control::error(format!("unknown verb `{other}`; {PNE_VERBS}")),
        None => control::error("a request needs a \"verb\""),
    }
}
