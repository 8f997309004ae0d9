//! `cpns caps`, `cpns status`, `cpns usage`, `cpns charging` (docs/device-status.md): what a
//! device can do, whether it is there, how it is used, and what it costs. They ask a running
//! PNE (`--store`, its control socket: CPNS-5) or the running server (`--data-dir`, its
//! control socket `server.sock`: CPNS-4 for local applications) with the typed control API
//! (docs/control-api.md), or read the server's store of record directly (`--data-dir`) for
//! what it holds without the server running. Either way the answer is a `cpns_control` type,
//! printed as a readable line or (`--json`) as the answer line.
//!
//! This file holds where they act ([`Target`]) and `cpns status`; `cpns caps` is in
//! `caps_cmd.rs`, `cpns usage` and `cpns charging` in `usage.rs`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cpns_control::{Entry, Event, Line, OwnStatus, Policy, PolicyAttribute, Request, Response};
use cpns_node::control;
use cpns_node::control::server::record_entry;
use cpns_store::{ServerStore, SqliteStore};
use cpns_wire::{EntityId, UserId};

use crate::admin::DataDir;

/// Where a command acts.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct Target {
    /// The server's data directory (its store of record; its control socket `server.sock`).
    #[arg(long, global = true, conflicts_with_all = ["store", "control"])]
    pub data_dir: Option<PathBuf>,
    /// The store of a running PNE (for `caps`, or PN GW); its control socket is that path
    /// with `.sock` added.
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
    pub(crate) fn socket(&self) -> anyhow::Result<PathBuf> {
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

/// Asks the entity's control socket; a refusal is an error.
pub(crate) async fn ask(t: &Target, request: Request) -> anyhow::Result<Response> {
    let path = t.socket()?;
    match control::call(&path, &request).await? {
        Ok(r) => Ok(r),
        Err(e) => bail!("refused: {e}"),
    }
}

/// Prints an answer as its JSON line.
pub(crate) fn print_json(r: &Response) {
    println!("{}", cpns_control::encode_answer(&Ok(r.clone())));
}

pub(crate) async fn open_store(dir: &Path) -> anyhow::Result<SqliteStore> {
    let dir = DataDir(dir.to_owned());
    SqliteStore::open(&dir.db())
        .await
        .with_context(|| format!("open {} (run `cpns init` first?)", dir.db().display()))
}

/// An answer of an unexpected kind: an entity that mixed up its answers.
pub(crate) fn unexpected(r: &Response) -> anyhow::Error {
    anyhow::anyhow!("an unexpected answer: {}", r.verb())
}

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
    /// The policy the flags name, checked as the entity will check it.
    fn policy(&self) -> anyhow::Result<Policy> {
        let threshold = |s: &str, below: bool| -> anyhow::Result<Policy> {
            let (attr, n) = s
                .split_once('=')
                .context("a threshold is ATTR=N, e.g. battery=10")?;
            let attribute = match attr {
                "battery" | "battery_pct" => PolicyAttribute::BatteryPct,
                "battery_minutes" => PolicyAttribute::BatteryMinutes,
                "free_memory" | "free_memory_mb" => PolicyAttribute::FreeMemoryMb,
                other => {
                    bail!("unknown attribute `{other}`: battery, battery_minutes or free_memory")
                }
            };
            let bound = n.parse().context("the bound is a whole number")?;
            Ok(Policy::Threshold {
                attribute,
                below: below.then_some(bound),
                above: (!below).then_some(bound),
            })
        };
        let p = match (&self.below, &self.above, self.every) {
            (Some(b), _, _) => threshold(b, true)?,
            (_, Some(a), _) => threshold(a, false)?,
            (_, _, Some(period_s)) => Policy::Periodic { period_s },
            _ => Policy::OnChange,
        };
        let wire = p.to_wire().map_err(anyhow::Error::msg)?;
        cpns_proto::status::Policy::check(&wire).map_err(anyhow::Error::msg)?;
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
            let answer = match &t.data_dir {
                Some(dir) => {
                    let store = open_store(dir).await?;
                    let recs = match (&user, entities.is_empty()) {
                        (Some(u), _) => store.statuses_of_owner(u).await?,
                        (None, false) => store.statuses(&entities).await?,
                        (None, true) => store.all_statuses().await?,
                    };
                    store.close().await;
                    Response::Status {
                        entries: recs.iter().map(record_entry).collect(),
                    }
                }
                _ => ask(t, Request::Status { entities, user }).await?,
            };
            let Response::Status { entries } = &answer else {
                return Err(unexpected(&answer));
            };
            if t.json {
                print_json(&answer);
            } else if entries.is_empty() {
                println!("no such entities");
            } else {
                for e in entries {
                    println!("{}", entry_line(e));
                }
            }
        }
        StatusVerb::Set { status } => {
            let (status, label) = parse_status(&status)?;
            let answer = ask(
                t,
                Request::StatusSet {
                    status,
                    label: label.clone(),
                },
            )
            .await?;
            if t.json {
                print_json(&answer);
            } else {
                match label {
                    Some(l) => println!("status set: custom:{l}"),
                    None => println!("status set: {}", own_status_name(status)),
                }
            }
        }
        StatusVerb::Subscribe {
            entities,
            user,
            policy,
            count,
        } => {
            let request = Request::Subscribe {
                entities,
                user,
                policy: policy.policy()?,
            };
            let path = t.socket()?;
            let mut seen = 0u64;
            let json_out = t.json;
            let mut refused = None;
            control::stream(&path, &request, |line| {
                if json_out {
                    println!("{}", crate::pn::encode(&line));
                }
                match line {
                    Line::Answer(Err(e)) => {
                        refused = Some(e);
                        return false;
                    }
                    Line::Answer(Ok(Response::Subscribe {
                        subscription,
                        entries,
                    })) if !json_out => {
                        println!("subscribed ({subscription}); now:");
                        for e in &entries {
                            println!("  {}", entry_line(e));
                        }
                    }
                    Line::Event(e) => {
                        if !json_out {
                            println!("{}", notification_line(&e));
                        }
                        seen += 1;
                    }
                    Line::Answer(Ok(_)) => {}
                }
                count.is_none_or(|c| seen < c)
            })
            .await?;
            if let Some(e) = refused {
                bail!("refused: {e}");
            }
        }
        StatusVerb::Watch { user } => watch(t, &user).await?,
    }
    Ok(())
}

/// `cpns status watch`: redraws a table of the user's devices at every notification.
async fn watch(t: &Target, user: &UserId) -> anyhow::Result<()> {
    let path = t.socket()?;
    let request = Request::Subscribe {
        entities: Vec::new(),
        user: Some(user.clone()),
        policy: Policy::OnChange,
    };
    let mut table: std::collections::BTreeMap<String, Entry> = Default::default();
    let json_out = t.json;
    let mut refused = None;
    control::stream(&path, &request, |line| {
        if json_out {
            println!("{}", crate::pn::encode(&line));
        }
        let entries = match line {
            Line::Answer(Err(e)) => {
                refused = Some(e);
                return false;
            }
            Line::Answer(Ok(Response::Subscribe { entries, .. }))
            | Line::Event(Event::Status { entries, .. }) => entries,
            Line::Answer(Ok(_)) | Line::Event(_) => Vec::new(),
        };
        for e in entries {
            table.insert(e.entity.to_string(), e);
        }
        if json_out {
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
    if let Some(e) = refused {
        bail!("refused: {e}");
    }
    Ok(())
}

/// `online`, `busy`, `custom:LABEL`.
fn parse_status(s: &str) -> anyhow::Result<(OwnStatus, Option<String>)> {
    Ok(match s {
        "online" => (OwnStatus::Online, None),
        "busy" => (OwnStatus::Busy, None),
        "offline" => bail!("a device that speaks is not offline: its PN GW says when it is"),
        other => match other.strip_prefix("custom:") {
            Some(label) if !label.is_empty() => (OwnStatus::Custom, Some(label.to_string())),
            _ => bail!("a status is online, busy or custom:LABEL, not `{other}`"),
        },
    })
}

fn own_status_name(s: OwnStatus) -> &'static str {
    match s {
        OwnStatus::Online => "online",
        OwnStatus::Busy => "busy",
        OwnStatus::Custom => "custom",
    }
}

/// The name a status goes by.
pub(crate) fn status_name(s: cpns_wire::Status) -> String {
    cpns_control::status_name(s)
}

/// `phone: busy since 12:03:04, battery 40%`.
fn entry_line(e: &Entry) -> String {
    let mut s = format!(
        "{}: {}",
        e.entity,
        match &e.label {
            Some(l) => format!("custom:{l}"),
            None => e.status.clone(),
        }
    );
    match e.since_ms {
        Some(ms) => s.push_str(&format!(" since {}", clock(ms))),
        None => s.push_str(" (never reported)"),
    }
    if let Some(b) = e.battery_pct {
        s.push_str(&format!(", battery {b}%"));
    }
    if let Some(m) = e.battery_minutes {
        s.push_str(&format!(", {m} min left"));
    }
    if let Some(m) = e.free_memory_mb {
        s.push_str(&format!(", {m} MiB free"));
    }
    s
}

/// `threshold: phone: online since …`.
fn notification_line(e: &Event) -> String {
    let Event::Status {
        reason,
        entries,
        lagged,
        ..
    } = e
    else {
        return cpns_control::encode_event(e);
    };
    let entries: Vec<String> = entries.iter().map(entry_line).collect();
    let lagged = match lagged {
        Some(n) if *n > 0 => {
            format!(" ({n} older notifications dropped: this reader fell behind)")
        }
        _ => String::new(),
    };
    format!("{reason}: {}{lagged}", entries.join("; "))
}

/// UTC time of day of a Unix time in ms.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}Z", (s / 3600) % 24, (s / 60) % 60, s % 60)
}
