//! `cpns pn ...`: acts on a running PN GW through its control socket (`cpns_node::control`)
//! and prints its answer, one readable line per PN, or the answer as JSON with `--json`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use cpns_node::control;
use cpns_node::gateway::GatewayHandle;
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
}

/// `cpns pn ...`.
pub(crate) async fn pn(a: PnArgs) -> anyhow::Result<()> {
    let path = match (&a.control, &a.store) {
        (Some(c), _) => c.clone(),
        (None, Some(s)) => control::socket_path(s),
        (None, None) => bail!("say which entity: --store <its store> or --control <its socket>"),
    };
    let request = match a.verb {
        PnVerb::Show => json!({ "verb": "show" }),
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
        print_pns(&answer);
    }
    Ok(())
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
            "PN {} at {}: {}",
            pn["pn_id"].as_str().unwrap_or("?"),
            pn["gateway"].as_str().unwrap_or("?"),
            if members.is_empty() {
                "no members".to_string()
            } else {
                members.join(", ")
            }
        );
    }
}

/// Answers a control request on a running PN GW.
pub(crate) async fn answer_gateway(handle: GatewayHandle, request: Value) -> Value {
    match request["verb"].as_str() {
        Some("show") => match handle.inventory().await {
            Ok(pns) => {
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
            Err(e) => control::error(e),
        },
        Some(other) => control::error(format!("unknown verb `{other}`; known: show")),
        None => control::error("a request needs a \"verb\""),
    }
}
