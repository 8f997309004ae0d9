//! `cpns caps show|set` (004 §5.5.1; docs/device-status.md): an entity's capabilities, as the
//! server recorded them (`--data-dir`, read from its store), asked of the device now (`--live`),
//! or a running PNE's or PN GW's own, which `set` changes (the flags of
//! [`crate::capabilities`] over what it has now).

use anyhow::bail;
use clap::{Args, Subcommand};
use cpns_control::{Capabilities, Request, Response};
use cpns_store::ServerStore;
use cpns_wire::EntityId;

use crate::capabilities::CapabilityArgs;
use crate::status::{Target, ask, open_store, print_json, unexpected};

#[derive(Args, Debug)]
pub(crate) struct CapsArgs {
    #[command(subcommand)]
    pub verb: CapsVerb,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub(crate) enum CapsVerb {
    /// An entity's capabilities: on the server, as last reported (or asked of the device now
    /// with --live, through its PN GW); on a running PNE or PN GW, its own.
    Show {
        /// The entity (with --data-dir).
        entity: Option<EntityId>,
        /// Ask the device now, through its PN GW (004 §5.5.1, query by id).
        #[arg(long)]
        live: bool,
    },
    /// Change a running PNE's or PN GW's capabilities: reported at once, or coalesced when only
    /// dynamic values (battery, free memory, networks, running applications) changed.
    Set {
        #[command(flatten)]
        caps: Box<CapabilityArgs>,
    },
}

/// `cpns caps ...`.
pub(crate) async fn caps(a: CapsArgs) -> anyhow::Result<()> {
    let t = &a.target;
    let answer = match &a.verb {
        CapsVerb::Show { entity, live } => match (&t.data_dir, entity) {
            (Some(dir), Some(entity)) if !live => {
                let store = open_store(dir).await?;
                let rec = store.entity(entity).await?;
                store.close().await;
                let Some(rec) = rec else {
                    bail!("no entity {entity} is enrolled");
                };
                match rec.capabilities {
                    Some(c) => Response::Caps {
                        entity: entity.clone(),
                        live: false,
                        capabilities: Capabilities::from(&c),
                    },
                    None => bail!("{entity} has reported no capabilities yet"),
                }
            }
            (Some(_), None) => bail!("say which entity: cpns caps show ENTITY --data-dir DIR"),
            _ => {
                let request = Request::Caps {
                    entity: entity.clone(),
                    live: *live,
                };
                ask(t, request).await?
            }
        },
        CapsVerb::Set { caps } => {
            let base = match ask(
                t,
                Request::Caps {
                    entity: None,
                    live: false,
                },
            )
            .await?
            {
                Response::Caps { capabilities, .. } => capabilities
                    .to_device()
                    .map_err(|why| anyhow::anyhow!("the entity's capabilities: {why}"))?,
                other => return Err(unexpected(&other)),
            };
            let caps = caps.resolve(base)?;
            let capabilities = Box::new(Capabilities::from(&caps));
            ask(t, Request::CapsSet { capabilities }).await?
        }
    };
    if t.json {
        print_json(&answer);
        return Ok(());
    }
    match &answer {
        Response::Caps {
            entity,
            capabilities,
            ..
        }
        | Response::CapsSet {
            entity,
            capabilities,
        } => println!("{entity}: {}", caps_line(capabilities)),
        other => return Err(unexpected(other)),
    }
    Ok(())
}

/// One readable line of capabilities.
fn caps_line(c: &Capabilities) -> String {
    let mut parts = vec![c.device_type.clone().unwrap_or_else(|| "?".into())];
    match c.battery_pct {
        Some(b) => parts.push(format!("battery {b}%")),
        None => parts.push("mains".into()),
    }
    let join = |v: &Option<Vec<String>>| -> Option<String> {
        v.as_ref().filter(|v| !v.is_empty()).map(|v| v.join(","))
    };
    if let Some(n) = join(&c.networks) {
        parts.push(format!("on {n}"));
    }
    if let Some(s) = join(&c.software) {
        parts.push(format!("software {s}"));
    }
    if let Some(r) = join(&c.running) {
        parts.push(format!("running {r}"));
    }
    if let Some(m) = c.free_memory_mb {
        parts.push(format!("{m} MiB free"));
    }
    if c.gateway_capable == Some(true) {
        parts.push("PN GW capable".into());
    }
    parts.join(", ")
}
