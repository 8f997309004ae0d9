//! `cpns caps`, `cpns status`, `cpns usage`, `cpns charging` (docs/device-status.md): what a
//! device can do, whether it is there, how it is used, and what it costs. They act on a
//! running PNE (`--store`, its control socket), or on the server: its data directory for what
//! the store of record holds (`--data-dir`), its control socket for what needs the running
//! server (`caps show --live`, `status subscribe`, `status watch`).
//!
//! The control verbs each entity answers are here too: [`answer_server`] on the server's
//! socket (CPNS-4 for local applications), [`answer_pne`] for the PNE's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cpns_node::control::{self, Answer};
use cpns_node::pne::{PneHandle, StatusAsk, StatusReply};
use cpns_node::server::ServerHandle;
use cpns_node::status_hub::{Mailbox, Subscriber};
use cpns_proto::status::{Policy, Subscription};
use cpns_proto::usage::Preference;
use cpns_store::{DeviceStore, ServerStore, SqliteStore, StatusRecord};
use cpns_wire::{
    Attribute, Audience, ChargingRecord, Crossing, DeviceCapabilities, EntityId, PolicyKind,
    Status, StatusEntry, StatusNotification, StatusPolicy, UsageRecord, UserId,
};
use serde_json::{Value, json};

use crate::admin::DataDir;
use crate::capabilities::CapabilityArgs;

/// Where a command acts.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct Target {
    /// The server's data directory (its store of record; its control socket `server.sock`).
    #[arg(long, global = true, conflicts_with_all = ["store", "control"])]
    pub data_dir: Option<PathBuf>,
    /// A running PNE's store; its control socket is that path with `.sock` added.
    #[arg(long, global = true, conflicts_with = "control")]
    pub store: Option<PathBuf>,
    /// A control socket itself.
    #[arg(long, global = true)]
    pub control: Option<PathBuf>,
    /// Print answers as JSON objects, one per line.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Target {
    /// The control socket to ask.
    fn socket(&self) -> anyhow::Result<PathBuf> {
        match (&self.control, &self.store, &self.data_dir) {
            (Some(c), _, _) => Ok(c.clone()),
            (None, Some(s), _) => Ok(control::socket_path(s)),
            (None, None, Some(d)) => Ok(server_socket(d)),
            _ => {
                bail!("say where: --data-dir <server data dir>, or --store <a running PNE's store>")
            }
        }
    }
}

/// The server's control socket in its data directory.
pub(crate) fn server_socket(dir: &Path) -> PathBuf {
    dir.join("server.sock")
}

// ---------------------------------------------------------------------------------------
// cpns caps
// ---------------------------------------------------------------------------------------

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
    /// with --live, through its PN GW); on a running PNE, its own.
    Show {
        /// The entity (with --data-dir).
        entity: Option<EntityId>,
        /// Ask the device now, through its PN GW (004 §5.5.1, query by id).
        #[arg(long)]
        live: bool,
    },
    /// Change a running PNE's capabilities: reported at once, or coalesced when only dynamic
    /// values (battery, free memory, networks, running applications) changed.
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
                    Some(c) => {
                        json!({ "ok": true, "entity": entity.as_str(), "capabilities": caps_json(&c) })
                    }
                    None => bail!("{entity} has reported no capabilities yet"),
                }
            }
            (Some(_), None) => bail!("say which entity: cpns caps show ENTITY --data-dir DIR"),
            _ => {
                let mut request = json!({ "verb": "caps" });
                if let Some(e) = entity {
                    request["entity"] = json!(e.as_str());
                    request["live"] = json!(live);
                }
                ask(t, &request).await?
            }
        },
        CapsVerb::Set { caps } => {
            let base = {
                let now = ask(t, &json!({ "verb": "caps" })).await?;
                caps_from_json(&now["capabilities"])?
            };
            let caps = caps.resolve(base)?;
            ask(
                t,
                &json!({ "verb": "caps_set", "capabilities": caps_json(&caps) }),
            )
            .await?
        }
    };
    if t.json {
        println!("{answer}");
        return Ok(());
    }
    let who = answer["entity"].as_str().unwrap_or("this device");
    println!("{who}: {}", caps_line(&answer["capabilities"]));
    Ok(())
}

/// Asks the entity's control socket; an error answer is an error.
async fn ask(t: &Target, request: &Value) -> anyhow::Result<Value> {
    let path = t.socket()?;
    let answer = control::request(&path, request).await?;
    if answer["ok"] != true {
        let reason = answer["error"].as_str().unwrap_or("no reason given");
        bail!("refused: {reason}");
    }
    Ok(answer)
}

async fn open_store(dir: &Path) -> anyhow::Result<SqliteStore> {
    let dir = DataDir(dir.to_owned());
    SqliteStore::open(&dir.db())
        .await
        .with_context(|| format!("open {} (run `cpns init` first?)", dir.db().display()))
}

/// Capabilities as JSON (the keys of `cpns pne --capabilities FILE`).
pub(crate) fn caps_json(c: &DeviceCapabilities) -> Value {
    let mut v = json!({
        "device_type": c.device_type,
        "has_ui": c.has_ui,
        "networks": c.networks,
        "software": c.software,
        "battery_pct": c.battery_pct,
        "gateway_capable": c.gateway_capable,
        "cpu_class": c.cpu_class,
        "memory_class": c.memory_class,
        "battery_mah": c.battery_mah,
        "processor": c.processor,
        "memory_mb": c.memory_mb,
        "chipsets": c.chipsets,
        "drivers": c.drivers,
        "free_memory_mb": c.free_memory_mb,
        "battery_minutes": c.battery_minutes,
        "running": c.running,
        "active_drivers": c.active_drivers,
    });
    if let Some(s) = c.screen {
        v["screen"] = json!({ "width": s.width, "height": s.height });
    }
    if !c.unknown.is_empty() {
        v["unknown_keys"] = json!(c.unknown.keys().collect::<Vec<_>>());
    }
    v
}

/// Capabilities from their JSON (unknown keys of newer versions are not carried by JSON).
pub(crate) fn caps_from_json(v: &Value) -> anyhow::Result<DeviceCapabilities> {
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let num = |k: &str| v[k].as_u64();
    let small = |k: &str| num(k).and_then(|n| u8::try_from(n).ok());
    let mid = |k: &str| num(k).and_then(|n| u32::try_from(n).ok());
    let Some(device_type) = v["device_type"].as_str() else {
        bail!("capabilities name a device_type");
    };
    Ok(DeviceCapabilities {
        device_type: device_type.to_owned(),
        has_ui: v["has_ui"].as_bool().unwrap_or(false),
        networks: list("networks"),
        software: list("software"),
        battery_pct: small("battery_pct"),
        gateway_capable: v["gateway_capable"].as_bool().unwrap_or(false),
        cpu_class: small("cpu_class"),
        memory_class: small("memory_class"),
        screen: match (
            v["screen"]["width"].as_u64(),
            v["screen"]["height"].as_u64(),
        ) {
            (Some(w), Some(h)) => Some(cpns_wire::Screen {
                width: u32::try_from(w).unwrap_or(u32::MAX),
                height: u32::try_from(h).unwrap_or(u32::MAX),
            }),
            _ => None,
        },
        battery_mah: mid("battery_mah"),
        processor: v["processor"].as_str().map(str::to_owned),
        memory_mb: mid("memory_mb"),
        chipsets: list("chipsets"),
        drivers: list("drivers"),
        free_memory_mb: mid("free_memory_mb"),
        battery_minutes: mid("battery_minutes"),
        running: list("running"),
        active_drivers: list("active_drivers"),
        unknown: Default::default(),
    })
}

/// One readable line of capabilities.
fn caps_line(v: &Value) -> String {
    let mut parts = vec![v["device_type"].as_str().unwrap_or("?").to_string()];
    if let Some(b) = v["battery_pct"].as_u64() {
        parts.push(format!("battery {b}%"));
    } else {
        parts.push("mains".into());
    }
    let join = |k: &str| -> Option<String> {
        let a: Vec<&str> = v[k].as_array()?.iter().filter_map(Value::as_str).collect();
        (!a.is_empty()).then(|| a.join(","))
    };
    if let Some(n) = join("networks") {
        parts.push(format!("on {n}"));
    }
    if let Some(s) = join("software") {
        parts.push(format!("software {s}"));
    }
    if let Some(r) = join("running") {
        parts.push(format!("running {r}"));
    }
    if let Some(m) = v["free_memory_mb"].as_u64() {
        parts.push(format!("{m} MiB free"));
    }
    if v["gateway_capable"] == true {
        parts.push("PN GW capable".into());
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------
// cpns status
// ---------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(subcommand)]
    pub verb: StatusVerb,
    #[command(flatten)]
    pub target: Target,
}

/// A subscription's policy on the command line.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct PolicyArgs {
    /// Notify when ATTR goes below N, once per crossing (ATTR: battery, battery_minutes,
    /// free_memory), e.g. `--below battery=10`.
    #[arg(long, value_name = "ATTR=N", conflicts_with_all = ["above", "every"])]
    pub below: Option<String>,
    /// Notify when ATTR goes above N, once per crossing.
    #[arg(long, value_name = "ATTR=N", conflicts_with = "every")]
    pub above: Option<String>,
    /// Notify every SECS seconds (5 to 86400) with the current status.
    #[arg(long, value_name = "SECS")]
    pub every: Option<u32>,
}

impl PolicyArgs {
    fn policy(&self) -> anyhow::Result<StatusPolicy> {
        let threshold = |s: &str, crossing| -> anyhow::Result<StatusPolicy> {
            let (attr, n) = s
                .split_once('=')
                .context("a threshold is ATTR=N, e.g. battery=10")?;
            let attribute = match attr {
                "battery" | "battery_pct" => Attribute::BatteryPct,
                "battery_minutes" => Attribute::BatteryMinutes,
                "free_memory" | "free_memory_mb" => Attribute::FreeMemoryMb,
                other => {
                    bail!("unknown attribute `{other}`: battery, battery_minutes or free_memory")
                }
            };
            Ok(StatusPolicy {
                kind: PolicyKind::Threshold,
                attribute: Some(attribute),
                crossing: Some(crossing),
                bound: Some(n.parse().context("the bound is a whole number")?),
                period_s: None,
            })
        };
        let p = match (&self.below, &self.above, self.every) {
            (Some(b), _, _) => threshold(b, Crossing::Below)?,
            (_, Some(a), _) => threshold(a, Crossing::Above)?,
            (_, _, Some(s)) => StatusPolicy {
                kind: PolicyKind::Periodic,
                attribute: None,
                crossing: None,
                bound: None,
                period_s: Some(s),
            },
            _ => StatusPolicy {
                kind: PolicyKind::OnChange,
                attribute: None,
                crossing: None,
                bound: None,
                period_s: None,
            },
        };
        Policy::check(&p).map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum StatusVerb {
    /// The status of entities (none named: every device of --user, or on a PNE of its user).
    Show {
        /// The entities.
        entities: Vec<EntityId>,
        /// Every device of this user (with --data-dir).
        #[arg(long)]
        user: Option<UserId>,
    },
    /// Set a running PNE's own status: online, busy, or custom:LABEL.
    Set {
        /// online, busy, or custom:LABEL (e.g. custom:driving).
        status: String,
    },
    /// Subscribe (004 §5.5.3.2) and print each notification until stopped: on the server as an
    /// external application, on a PNE as that PNE (through its PN GW).
    Subscribe {
        /// The entities watched (none: every device of --user, or of the PNE's user).
        entities: Vec<EntityId>,
        /// Every device of this user (on the server).
        #[arg(long)]
        user: Option<UserId>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Stop after this many notifications.
        #[arg(long)]
        count: Option<u64>,
    },
    /// A live view of a user's devices, redrawn at every change (on the server).
    Watch {
        /// The user.
        #[arg(long)]
        user: UserId,
    },
}

/// `cpns status ...`.
pub(crate) async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let t = &a.target;
    match a.verb {
        StatusVerb::Show { entities, user } => {
            let entries = match &t.data_dir {
                Some(dir) => {
                    let store = open_store(dir).await?;
                    let recs = match (&user, entities.is_empty()) {
                        (Some(u), _) => store.statuses_of_owner(u).await?,
                        (None, false) => store.statuses(&entities).await?,
                        (None, true) => store.all_statuses().await?,
                    };
                    store.close().await;
                    recs.iter().map(record_json).collect::<Vec<_>>()
                }
                None => {
                    let request = json!({ "verb": "status", "entities": ids(&entities) });
                    let answer = ask(t, &request).await?;
                    answer["entries"].as_array().cloned().unwrap_or_default()
                }
            };
            if t.json {
                println!("{}", json!({ "ok": true, "entries": entries }));
            } else if entries.is_empty() {
                println!("no such entities");
            } else {
                for e in &entries {
                    println!("{}", entry_line(e));
                }
            }
        }
        StatusVerb::Set { status } => {
            let (status, label) = parse_status(&status)?;
            let request =
                json!({ "verb": "status_set", "status": status_name(status), "label": label });
            ask(t, &request).await?;
            if t.json {
                println!("{}", json!({ "ok": true }));
            } else {
                println!(
                    "status set: {}",
                    label.map_or_else(
                        || status_name(status).to_string(),
                        |l| format!("custom:{l}")
                    )
                );
            }
        }
        StatusVerb::Subscribe {
            entities,
            user,
            policy,
            count,
        } => {
            let policy = policy.policy()?;
            let mut request = json!({
                "verb": "subscribe",
                "entities": ids(&entities),
                "policy": policy_json(&policy),
            });
            if let Some(u) = &user {
                request["user"] = json!(u.as_str());
            }
            let path = t.socket()?;
            let mut seen = 0u64;
            let json_out = t.json;
            let mut refused: Option<String> = None;
            control::stream(&path, &request, |v| {
                if v["ok"] == false {
                    refused = Some(v["error"].as_str().unwrap_or("refused").to_string());
                    return false;
                }
                if json_out {
                    println!("{v}");
                } else if v.get("subscription").is_some() && v.get("reason").is_none() {
                    println!("subscribed ({}); now:", v["subscription"]);
                    for e in v["entries"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                    {
                        println!("  {}", entry_line(e));
                    }
                } else {
                    println!("{}", notification_line(&v));
                }
                if v.get("reason").is_some() {
                    seen += 1;
                }
                count.is_none_or(|c| seen < c)
            })
            .await?;
            if let Some(r) = refused {
                bail!("refused: {r}");
            }
        }
        StatusVerb::Watch { user } => watch(t, &user).await?,
    }
    Ok(())
}

/// `cpns status watch`: redraws a table of the user's devices at every notification.
async fn watch(t: &Target, user: &UserId) -> anyhow::Result<()> {
    let path = t.socket()?;
    let request = json!({
        "verb": "subscribe",
        "user": user.as_str(),
        "entities": [],
        "policy": { "kind": "on_change" },
        "attributes": true,
    });
    let mut table: std::collections::BTreeMap<String, Value> = Default::default();
    let json_out = t.json;
    control::stream(&path, &request, |v| {
        for e in v["entries"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(id) = e["entity"].as_str() {
                table.insert(id.to_string(), e.clone());
            }
        }
        if json_out {
            println!("{v}");
            return true;
        }
        // Clear the screen, then the table: one line per device.
        print!("\x1b[2J\x1b[H");
        println!("devices of {user} ({} known; Ctrl-C to stop)", table.len());
        for e in table.values() {
            println!("  {}", entry_line(e));
        }
        true
    })
    .await?;
    Ok(())
}

fn ids(entities: &[EntityId]) -> Vec<&str> {
    entities.iter().map(EntityId::as_str).collect()
}

/// `online`, `busy`, `custom:LABEL`.
fn parse_status(s: &str) -> anyhow::Result<(Status, Option<String>)> {
    Ok(match s {
        "online" => (Status::Online, None),
        "busy" => (Status::Busy, None),
        "offline" => bail!("a device that speaks is not offline: its PN GW says when it is"),
        other => match other.strip_prefix("custom:") {
            Some(label) if !label.is_empty() => (Status::Custom, Some(label.to_string())),
            _ => bail!("a status is online, busy or custom:LABEL, not `{other}`"),
        },
    })
}

/// The name a status goes by.
pub(crate) fn status_name(s: Status) -> String {
    match s {
        Status::Online => "online".into(),
        Status::Offline => "offline".into(),
        Status::Busy => "busy".into(),
        Status::Custom => "custom".into(),
        other => format!("status-{}", other.code()),
    }
}

fn status_of_name(s: &str) -> Option<Status> {
    Some(match s {
        "online" => Status::Online,
        "offline" => Status::Offline,
        "busy" => Status::Busy,
        "custom" => Status::Custom,
        _ => return None,
    })
}

/// A status entry as JSON.
pub(crate) fn entry_json(e: &StatusEntry) -> Value {
    json!({
        "entity": e.entity.as_str(),
        "status": status_name(e.status),
        "label": e.label,
        "since_ms": e.since_ms,
        "battery_pct": e.battery_pct,
        "battery_minutes": e.battery_minutes,
        "free_memory_mb": e.free_memory_mb,
    })
}

/// A status record as JSON.
fn record_json(r: &StatusRecord) -> Value {
    let mut v = entry_json(&state_entry(r));
    v["owner"] = json!(r.owner.as_ref().map(UserId::as_str));
    v["reported_by"] = json!(r.reported_by.as_ref().map(EntityId::as_str));
    v
}

fn state_entry(r: &StatusRecord) -> StatusEntry {
    StatusEntry {
        entity: r.entity.clone(),
        status: r.status,
        label: r.label.clone(),
        since_ms: r.since.and_then(|t| u64::try_from(t).ok()),
        battery_pct: r.attributes.battery_pct,
        battery_minutes: r.attributes.battery_minutes,
        free_memory_mb: r.attributes.free_memory_mb,
    }
}

/// `phone: busy since 12:03:04, battery 40%`.
fn entry_line(e: &Value) -> String {
    let mut s = format!(
        "{}: {}",
        e["entity"].as_str().unwrap_or("?"),
        match e["label"].as_str() {
            Some(l) => format!("custom:{l}"),
            None => e["status"].as_str().unwrap_or("?").to_string(),
        }
    );
    match e["since_ms"].as_u64() {
        Some(ms) => s.push_str(&format!(" since {}", clock(ms))),
        None => s.push_str(" (never reported)"),
    }
    if let Some(b) = e["battery_pct"].as_u64() {
        s.push_str(&format!(", battery {b}%"));
    }
    if let Some(m) = e["battery_minutes"].as_u64() {
        s.push_str(&format!(", {m} min left"));
    }
    if let Some(m) = e["free_memory_mb"].as_u64() {
        s.push_str(&format!(", {m} MiB free"));
    }
    s
}

/// `threshold: phone: online since …`.
fn notification_line(v: &Value) -> String {
    let entries: Vec<String> = v["entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(entry_line)
        .collect();
    let lagged = match v["lagged"].as_u64() {
        Some(n) if n > 0 => format!(" ({n} older notifications dropped: this reader fell behind)"),
        _ => String::new(),
    };
    format!(
        "{}: {}{lagged}",
        v["reason"].as_str().unwrap_or("notification"),
        entries.join("; ")
    )
}

/// UTC time of day of a Unix time in ms.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}Z", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// A policy as JSON.
fn policy_json(p: &StatusPolicy) -> Value {
    let attr = |a: Option<Attribute>| match a {
        Some(Attribute::BatteryPct) => "battery_pct",
        Some(Attribute::BatteryMinutes) => "battery_minutes",
        Some(Attribute::FreeMemoryMb) => "free_memory_mb",
        _ => "unknown",
    };
    match p.kind {
        PolicyKind::Threshold => {
            let side = if p.crossing == Some(Crossing::Above) {
                "above"
            } else {
                "below"
            };
            json!({ "kind": "threshold", "attribute": attr(p.attribute), side: p.bound })
        }
        PolicyKind::Periodic => json!({ "kind": "periodic", "period_s": p.period_s }),
        _ => json!({ "kind": "on_change" }),
    }
}

/// A policy from its JSON, checked.
fn policy_from_json(v: &Value) -> Result<(StatusPolicy, Policy), String> {
    let attr = match v["attribute"].as_str() {
        None => None,
        Some("battery_pct") => Some(Attribute::BatteryPct),
        Some("battery_minutes") => Some(Attribute::BatteryMinutes),
        Some("free_memory_mb") => Some(Attribute::FreeMemoryMb),
        Some(other) => return Err(format!("unknown attribute `{other}`")),
    };
    let bound = |k: &str| v[k].as_u64().and_then(|n| u32::try_from(n).ok());
    let p = match v["kind"].as_str() {
        Some("on_change") | None => StatusPolicy {
            kind: PolicyKind::OnChange,
            attribute: None,
            crossing: None,
            bound: None,
            period_s: None,
        },
        Some("threshold") => {
            let (crossing, b) = match (bound("below"), bound("above")) {
                (Some(b), None) => (Crossing::Below, b),
                (None, Some(b)) => (Crossing::Above, b),
                _ => return Err("a threshold policy has one of \"below\" or \"above\"".into()),
            };
            StatusPolicy {
                kind: PolicyKind::Threshold,
                attribute: attr,
                crossing: Some(crossing),
                bound: Some(b),
                period_s: None,
            }
        }
        Some("periodic") => StatusPolicy {
            kind: PolicyKind::Periodic,
            attribute: None,
            crossing: None,
            bound: None,
            period_s: bound("period_s"),
        },
        Some(other) => return Err(format!("unknown policy kind `{other}`")),
    };
    let checked = Policy::check(&p)?;
    Ok((p, checked))
}

/// The entities a request names in `entities`.
fn entities_of(request: &Value) -> Result<Vec<EntityId>, Value> {
    request["entities"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| control::error("entities are strings"))?
                .parse()
                .map_err(|e| control::error(format!("entity: {e}")))
        })
        .collect()
}

/// A notification as JSON.
fn notification_json(n: &StatusNotification) -> Value {
    json!({
        "subscription": n.subscription,
        "reason": cpns_node::status_hub::reason_name(n.reason),
        "entries": n.entries.iter().map(entry_json).collect::<Vec<_>>(),
        "lagged": n.lagged,
    })
}

// ---------------------------------------------------------------------------------------
// The server's control socket (CPNS-4 for local applications)
// ---------------------------------------------------------------------------------------

/// Numbers the external subscribers of one server.
static EXTERNAL: AtomicU64 = AtomicU64::new(1);

/// Subscription ids the server gives external applications (their own range: entities'
/// subscriptions are numbered by the store).
static EXTERNAL_SUB: AtomicU64 = AtomicU64::new(1 << 62);

const SERVER_VERBS: &str = "known: caps, status, subscribe, usage, charging";

/// Answers a request on the server's control socket.
pub(crate) async fn answer_server(h: ServerHandle<SqliteStore>, request: Value) -> Answer {
    let store = h.store();
    match request["verb"].as_str() {
        Some("caps") => {
            let Ok(entity) = request["entity"].as_str().unwrap_or("").parse::<EntityId>() else {
                return control::error("caps names an \"entity\"").into();
            };
            if request["live"] == true {
                return match h.ask_capabilities(&entity).await {
                    Ok(c) => json!({ "ok": true, "entity": entity.as_str(), "live": true, "capabilities": caps_json(&c) }).into(),
                    Err(e) => control::error(e).into(),
                };
            }
            match store.entity(&entity).await {
                Ok(Some(rec)) => match rec.capabilities {
                    Some(c) => json!({ "ok": true, "entity": entity.as_str(), "capabilities": caps_json(&c) }).into(),
                    None => control::error(format!("not_found: {entity} has reported no capabilities")).into(),
                },
                Ok(None) => control::error(format!("not_found: no entity {entity}")).into(),
                Err(e) => control::error(e).into(),
            }
        }
        Some("status") => {
            let entities = match entities_of(&request) {
                Ok(e) => e,
                Err(answer) => return answer.into(),
            };
            let user = request["user"]
                .as_str()
                .and_then(|u| u.parse::<UserId>().ok());
            let recs = match (user, entities.is_empty()) {
                (Some(u), _) => store.statuses_of_owner(&u).await,
                (None, false) => store.statuses(&entities).await,
                (None, true) => store.all_statuses().await,
            };
            match recs {
                Ok(recs) => json!({ "ok": true, "entries": recs.iter().map(record_json).collect::<Vec<_>>() }).into(),
                Err(e) => control::error(e).into(),
            }
        }
        Some("subscribe") => subscribe_external(&h, &request).await,
        Some("usage") => {
            let user = request["user"]
                .as_str()
                .and_then(|u| u.parse::<UserId>().ok());
            // What external applications may see: only records their users shared.
            match store.usage_summary(user.as_ref(), true).await {
                Ok(rows) => {
                    json!({ "ok": true, "shared_only": true, "summary": summary_json(&rows) })
                        .into()
                }
                Err(e) => control::error(e).into(),
            }
        }
        Some("charging") => {
            let Some(user) = request["user"]
                .as_str()
                .and_then(|u| u.parse::<UserId>().ok())
            else {
                return control::error("charging names a \"user\"").into();
            };
            let since = request["since_s"].as_u64().unwrap_or(0);
            match store.charging_records(&user, since).await {
                Ok(rows) => json!({ "ok": true, "records": rows.iter().map(charge_json).collect::<Vec<_>>() }).into(),
                Err(e) => control::error(e).into(),
            }
        }
        Some(other) => control::error(format!("unknown verb `{other}`; {SERVER_VERBS}")).into(),
        None => control::error("a request needs a \"verb\"").into(),
    }
}

/// An external application subscribes: its notifications stream on its connection, from a
/// bounded mailbox of its own, until it hangs up.
async fn subscribe_external(h: &ServerHandle<SqliteStore>, request: &Value) -> Answer {
    let checked = match policy_from_json(&request["policy"]) {
        Ok((_, checked)) => checked,
        Err(why) => return control::error(why).into(),
    };
    let entities = match entities_of(request) {
        Ok(e) => e,
        Err(answer) => return answer.into(),
    };
    let watched = match (request["user"].as_str(), entities.is_empty()) {
        (Some(u), true) => match u.parse::<UserId>() {
            Ok(u) => cpns_proto::status::Watched::User(u),
            Err(e) => return control::error(format!("user: {e}")).into(),
        },
        (None, false) => cpns_proto::status::Watched::Entities(entities),
        _ => return control::error("subscribe names \"entities\" or a \"user\"").into(),
    };
    let states = match cpns_node::server_store::watched_states(h.store(), &watched).await {
        Ok(s) => s,
        Err(e) => return control::error(e).into(),
    };
    let who = Subscriber::External(EXTERNAL.fetch_add(1, Ordering::Relaxed));
    let id = EXTERNAL_SUB.fetch_add(1, Ordering::Relaxed);
    let hub = Arc::clone(h.hub());
    let mailbox = Mailbox::new(cpns_node::status_hub::MAILBOX_LIMIT);
    hub.attach(who.clone(), &mailbox);
    let snapshot = hub.subscribe(
        Instant::now(),
        Subscription {
            id,
            subscriber: who.clone(),
            watched,
            policy: checked,
        },
        states,
    );
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        // Until the application hangs up (its receiver goes): then its subscription goes too.
        while let Some(batch) = mailbox.take().await {
            for p in batch {
                if tx.send(notification_json(&p.notification)).await.is_err() {
                    hub.forget(&who);
                    return;
                }
            }
        }
    });
    let first = json!({
        "ok": true,
        "subscription": id,
        "entries": snapshot.iter().map(entry_json).collect::<Vec<_>>(),
    });
    Answer::Stream(first, rx)
}

// ---------------------------------------------------------------------------------------
// A running PNE's control verbs
// ---------------------------------------------------------------------------------------

/// Answers the status, capabilities, usage and charging verbs on a running PNE; `None` for a
/// verb that is not one of them.
pub(crate) async fn answer_pne(
    handle: &PneHandle,
    store: &SqliteStore,
    usage_default: Preference,
    request: &Value,
) -> Option<Answer> {
    let answer: Answer = match request["verb"].as_str()? {
        "caps" => match handle.capabilities(None).await {
            Ok(c) => json!({ "ok": true, "capabilities": caps_json(&c) }).into(),
            Err(e) => control::error(e).into(),
        },
        "caps_set" => match caps_from_json(&request["capabilities"]) {
            Ok(c) => match handle.capabilities(Some(c)).await {
                Ok(c) => json!({ "ok": true, "capabilities": caps_json(&c) }).into(),
                Err(e) => control::error(e).into(),
            },
            Err(e) => control::error(e).into(),
        },
        "status_set" => {
            let Some(status) = request["status"].as_str().and_then(status_of_name) else {
                return Some(control::error("status_set names a \"status\"").into());
            };
            let label = request["label"].as_str().map(str::to_owned);
            match handle.status(StatusAsk::Set(status, label)).await {
                Ok(_) => json!({ "ok": true }).into(),
                Err(e) => control::error(e).into(),
            }
        }
        "status" => {
            let entities = match entities_of(request) {
                Ok(e) => e,
                Err(answer) => return Some(answer.into()),
            };
            match handle.status(StatusAsk::Query(entities)).await {
                Ok(StatusReply::Entries(e)) => json!({ "ok": true, "entries": e.iter().map(entry_json).collect::<Vec<_>>() }).into(),
                Ok(_) => control::error("an unexpected answer").into(),
                Err(e) => control::error(e).into(),
            }
        }
        "subscribe" => {
            let (policy, _) = match policy_from_json(&request["policy"]) {
                Ok(p) => p,
                Err(why) => return Some(control::error(why).into()),
            };
            let entities = match entities_of(request) {
                Ok(e) => e,
                Err(answer) => return Some(answer.into()),
            };
            let (tx, mut notes) = tokio::sync::mpsc::channel(64);
            match handle.status(StatusAsk::Subscribe(entities, policy, tx)).await {
                Ok(StatusReply::Subscribed {
                    subscription,
                    entries,
                }) => {
                    let (out, rx) = tokio::sync::mpsc::channel(16);
                    tokio::spawn(async move {
                        while let Some(n) = notes.recv().await {
                            if out.send(notification_json(&n)).await.is_err() {
                                return;
                            }
                        }
                    });
                    let first = json!({
                        "ok": true,
                        "subscription": subscription,
                        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
                    });
                    Answer::Stream(first, rx)
                }
                Ok(_) => control::error("an unexpected answer").into(),
                Err(e) => control::error(e).into(),
            }
        }
        "usage_record" => usage_record(handle, store, request).await.into(),
        "usage_prefs" => match store.usage_prefs().await {
            Ok(p) => json!({
                "ok": true,
                "default": usage_default.name(),
                "services": p.into_iter().map(|(s, v)| json!({ "service": s, "preference": v.name() })).collect::<Vec<_>>(),
            })
            .into(),
            Err(e) => control::error(e).into(),
        },
        "usage_pref_set" => {
            let Some(service) = request["service"].as_str() else {
                return Some(control::error("usage_pref_set names a \"service\"").into());
            };
            let pref = match request["preference"].as_str() {
                None | Some("default") => None,
                Some(p) => match Preference::parse(p) {
                    Some(p) => Some(p),
                    None => return Some(control::error(format!("`{p}`: private, server, shared or default")).into()),
                },
            };
            match store.set_usage_pref(service, pref).await {
                Ok(()) => json!({ "ok": true, "service": service, "preference": pref.map_or("default", Preference::name) }).into(),
                Err(e) => control::error(e).into(),
            }
        }
        "usage_summary" => match store.local_usage_summary().await {
            Ok(rows) => json!({ "ok": true, "summary": summary_json(&rows) }).into(),
            Err(e) => control::error(e).into(),
        },
        "usage_send" => {
            let prefs = match cpns_node::pne::usage_prefs(store, usage_default).await {
                Ok(p) => p,
                Err(e) => return Some(control::error(e).into()),
            };
            match handle.send_usage(prefs).await {
                Ok(s) => json!({ "ok": true, "sent": s.sent, "duplicates": s.duplicates, "charged": s.charged, "withheld": s.withheld }).into(),
                Err(e) => control::error(e).into(),
            }
        }
        "charging" => match handle.charging(request["since_s"].as_u64().unwrap_or(0)).await {
            Ok(rows) => json!({ "ok": true, "records": rows.iter().map(charge_json).collect::<Vec<_>>() }).into(),
            Err(e) => control::error(e).into(),
        },
        _ => return None,
    };
    Some(answer)
}

/// An application on the device reports one use of a service (the local API, CPNS-5): kept
/// with the device's status and battery, unsent.
async fn usage_record(handle: &PneHandle, store: &SqliteStore, r: &Value) -> Value {
    let (Some(service), Some(start_s), Some(end_s)) = (
        r["service"].as_str(),
        r["start_s"].as_u64(),
        r["end_s"].as_u64(),
    ) else {
        return control::error("usage_record names a \"service\", \"start_s\" and \"end_s\"");
    };
    if service.is_empty() || service.len() > cpns_proto::usage::MAX_SERVICE {
        return control::error("a service name is 1 to 128 bytes");
    }
    if end_s < start_s {
        return control::error("a use ends after it starts");
    }
    let caps = handle.capabilities(None).await.ok();
    // A random id: the server counts a record once per device and id (a retried send).
    let id = cpns_crypto::MachineRng::os().u64() & (i64::MAX as u64);
    let record = UsageRecord {
        id,
        service: service.to_owned(),
        start_s,
        end_s,
        bytes: r["bytes"].as_u64().unwrap_or(0),
        audience: Audience::Server,
        status: Some(Status::Online),
        battery_start: r["battery_start"]
            .as_u64()
            .and_then(|b| u8::try_from(b).ok()),
        battery_end: caps.as_ref().and_then(|c| c.battery_pct),
        networks: caps.map(|c| c.networks).unwrap_or_default(),
    };
    match store.save_local_usage(&record).await {
        Ok(()) => json!({ "ok": true, "record_id": record.id }),
        Err(e) => control::error(e),
    }
}

fn summary_json(rows: &[cpns_store::UsageSummary]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            json!({
                "user": r.user.as_ref().map(UserId::as_str),
                "service": r.service,
                "uses": r.uses,
                "seconds": r.seconds,
                "bytes": r.bytes,
            })
        })
        .collect()
}

fn charge_json(c: &ChargingRecord) -> Value {
    json!({
        "user": c.user.as_str(),
        "entity": c.entity.as_str(),
        "pn_id": c.pn_id.map(|p| p.to_string()),
        "pn_owner": c.pn_owner.as_ref().map(UserId::as_str),
        "service": c.service,
        "start_s": c.start_s,
        "end_s": c.end_s,
        "bytes": c.bytes,
        "units": c.units,
    })
}

// ---------------------------------------------------------------------------------------
// cpns usage, cpns charging
// ---------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub(crate) struct UsageArgs {
    #[command(subcommand)]
    pub verb: UsageVerb,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub(crate) enum UsageVerb {
    /// A running PNE's reporting preferences; with SERVICE and PREFERENCE, set one:
    /// `private` (never leaves the device), `server` (the CPNS server only), `shared` (the
    /// server and the external applications it serves) or `default`.
    Prefs {
        /// The service.
        service: Option<String>,
        /// Its preference.
        preference: Option<String>,
    },
    /// Report a use of a service to a running PNE (an application on the device does this),
    /// and/or send what the preferences allow now (--send).
    Report {
        /// The service used.
        #[arg(long, requires_all = ["start", "end"])]
        service: Option<String>,
        /// Its start, seconds since the Unix epoch.
        #[arg(long)]
        start: Option<u64>,
        /// Its end.
        #[arg(long)]
        end: Option<u64>,
        /// Bytes moved.
        #[arg(long, default_value_t = 0)]
        bytes: u64,
        /// Send the unsent records the preferences allow now.
        #[arg(long)]
        send: bool,
    },
    /// Usage per service: a PNE's own (every record, private ones too), or on the server per
    /// user and service (--data-dir, optionally --user).
    Summary {
        /// One user's (with --data-dir).
        #[arg(long)]
        user: Option<UserId>,
    },
}

/// `cpns usage ...`.
pub(crate) async fn usage(a: UsageArgs) -> anyhow::Result<()> {
    let t = &a.target;
    match a.verb {
        UsageVerb::Prefs {
            service,
            preference,
        } => {
            let request = match (&service, &preference) {
                (Some(s), Some(p)) => {
                    json!({ "verb": "usage_pref_set", "service": s, "preference": p })
                }
                (None, None) => json!({ "verb": "usage_prefs" }),
                _ => bail!("give a SERVICE and its PREFERENCE, or neither to list them"),
            };
            let answer = ask(t, &request).await?;
            if t.json {
                println!("{answer}");
            } else if service.is_some() {
                println!(
                    "{}: {}",
                    answer["service"].as_str().unwrap_or("?"),
                    answer["preference"].as_str().unwrap_or("?")
                );
            } else {
                println!("default: {}", answer["default"].as_str().unwrap_or("?"));
                for s in answer["services"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    println!(
                        "{}: {}",
                        s["service"].as_str().unwrap_or("?"),
                        s["preference"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        UsageVerb::Report {
            service,
            start,
            end,
            bytes,
            send,
        } => {
            if service.is_none() && !send {
                bail!("give a use (--service --start --end [--bytes]) and/or --send");
            }
            if let (Some(service), Some(start), Some(end)) = (&service, start, end) {
                let r = json!({ "verb": "usage_record", "service": service, "start_s": start, "end_s": end, "bytes": bytes });
                let answer = ask(t, &r).await?;
                if t.json {
                    println!("{answer}");
                } else {
                    println!(
                        "recorded a use of {service} ({} s, {bytes} bytes)",
                        end.saturating_sub(start)
                    );
                }
            }
            if send {
                let answer = ask(t, &json!({ "verb": "usage_send" })).await?;
                if t.json {
                    println!("{answer}");
                } else {
                    println!(
                        "sent {} usage records ({} charged); {} private ones stay on the device",
                        answer["sent"], answer["charged"], answer["withheld"]
                    );
                }
            }
        }
        UsageVerb::Summary { user } => {
            let rows = match &t.data_dir {
                Some(dir) => {
                    let store = open_store(dir).await?;
                    let rows = store.usage_summary(user.as_ref(), false).await?;
                    store.close().await;
                    summary_json(&rows)
                }
                None => {
                    let answer = ask(t, &json!({ "verb": "usage_summary" })).await?;
                    answer["summary"].as_array().cloned().unwrap_or_default()
                }
            };
            if t.json {
                println!("{}", json!({ "ok": true, "summary": rows }));
            } else if rows.is_empty() {
                println!("no usage recorded");
            } else {
                for r in &rows {
                    let who = r["user"]
                        .as_str()
                        .map(|u| format!("{u}: "))
                        .unwrap_or_default();
                    println!(
                        "{who}{}: {} uses, {} s, {} bytes",
                        r["service"].as_str().unwrap_or("?"),
                        r["uses"],
                        r["seconds"],
                        r["bytes"]
                    );
                }
            }
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct ChargingArgs {
    #[command(subcommand)]
    pub verb: ChargingVerb,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ChargingVerb {
    /// A user's charging records: on the server (--data-dir --user), or a running PNE's own
    /// user's (--store), asked of the server end to end.
    List {
        /// The user (with --data-dir).
        #[arg(long)]
        user: Option<UserId>,
        /// Only uses started at or after this time, seconds since the Unix epoch.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

/// `cpns charging list`.
pub(crate) async fn charging(a: ChargingArgs) -> anyhow::Result<()> {
    let t = &a.target;
    let ChargingVerb::List { user, since } = a.verb;
    let rows = match (&t.data_dir, &user) {
        (Some(dir), Some(user)) => {
            let store = open_store(dir).await?;
            let rows = store.charging_records(user, since).await?;
            store.close().await;
            rows.iter().map(charge_json).collect::<Vec<_>>()
        }
        (Some(_), None) => bail!("say whose: cpns charging list --user USER --data-dir DIR"),
        (None, _) => {
            let answer = ask(t, &json!({ "verb": "charging", "since_s": since })).await?;
            answer["records"].as_array().cloned().unwrap_or_default()
        }
    };
    if t.json {
        println!("{}", json!({ "ok": true, "records": rows }));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no charging records");
    }
    for r in &rows {
        let in_pn = match r["pn_owner"].as_str() {
            Some(o) => format!(" in {o}'s PN"),
            None => String::new(),
        };
        println!(
            "{}: {} by {}{in_pn}, {} bytes, {} units",
            r["user"].as_str().unwrap_or("?"),
            r["service"].as_str().unwrap_or("?"),
            r["entity"].as_str().unwrap_or("?"),
            r["bytes"],
            r["units"]
        );
    }
    Ok(())
}
