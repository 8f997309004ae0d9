//! `cpns usage` and `cpns charging` (004 §5.5.4, CPNS-4; docs/device-status.md): a running
//! PNE's reporting preferences, the uses its applications report and what it sends, usage
//! summaries on the device or per user on the server, and charging records.

use anyhow::bail;
use clap::{Args, Subcommand};
use cpns_control::{Charge, Preference as ApiPreference, Request, Response};
use cpns_store::ServerStore;
use cpns_wire::UserId;

use crate::status::{Target, ask, open_store, print_json, unexpected};

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
            let request = match (service, &preference) {
                (Some(service), Some(p)) => Request::UsagePrefSet {
                    service,
                    preference: preference_named(p)?,
                },
                (None, None) => Request::UsagePrefs {},
                _ => bail!("give a SERVICE and its PREFERENCE, or neither to list them"),
            };
            let answer = ask(t, request).await?;
            if t.json {
                print_json(&answer);
                return Ok(());
            }
            match &answer {
                Response::UsagePrefSet {
                    service,
                    preference,
                } => println!("{service}: {}", preference_name(*preference)),
                Response::UsagePrefs { default, services } => {
                    println!("default: {}", preference_name(*default));
                    for s in services {
                        println!("{}: {}", s.service, preference_name(s.preference));
                    }
                }
                other => return Err(unexpected(other)),
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
            if let (Some(service), Some(start_s), Some(end_s)) = (&service, start, end) {
                let r = Request::UsageRecord {
                    service: service.clone(),
                    start_s,
                    end_s,
                    bytes,
                    battery_start: None,
                };
                let answer = ask(t, r).await?;
                if t.json {
                    print_json(&answer);
                } else {
                    println!(
                        "recorded a use of {service} ({} s, {bytes} bytes)",
                        end_s.saturating_sub(start_s)
                    );
                }
            }
            if send {
                let answer = ask(t, Request::UsageSend {}).await?;
                if t.json {
                    print_json(&answer);
                } else if let Response::UsageSend {
                    sent,
                    charged,
                    withheld,
                    ..
                } = answer
                {
                    println!(
                        "sent {sent} usage records ({charged} charged); {withheld} private \
                         ones stay on the device"
                    );
                } else {
                    return Err(unexpected(&answer));
                }
            }
        }
        UsageVerb::Summary { user } => {
            let answer = match &t.data_dir {
                Some(dir) => {
                    let store = open_store(dir).await?;
                    let rows = store.usage_summary(user.as_ref(), false).await?;
                    store.close().await;
                    Response::UsageSummary {
                        summary: rows
                            .iter()
                            .map(cpns_node::control::pne::usage_row)
                            .collect(),
                    }
                }
                _ => ask(t, Request::UsageSummary {}).await?,
            };
            let Response::UsageSummary { summary } = &answer else {
                return Err(unexpected(&answer));
            };
            if t.json {
                print_json(&answer);
            } else if summary.is_empty() {
                println!("no usage recorded");
            } else {
                for r in summary {
                    let who = r
                        .user
                        .as_ref()
                        .map(|u| format!("{u}: "))
                        .unwrap_or_default();
                    println!(
                        "{who}{}: {} uses, {} s, {} bytes",
                        r.service, r.uses, r.seconds, r.bytes
                    );
                }
            }
        }
    }
    Ok(())
}

/// `private`, `server`, `shared` or `default`.
fn preference_named(s: &str) -> anyhow::Result<ApiPreference> {
    Ok(match s {
        "private" => ApiPreference::Private,
        "server" => ApiPreference::Server,
        "shared" => ApiPreference::Shared,
        "default" => ApiPreference::Default,
        other => bail!("`{other}`: private, server, shared or default"),
    })
}

fn preference_name(p: ApiPreference) -> &'static str {
    match p {
        ApiPreference::Private => "private",
        ApiPreference::Server => "server",
        ApiPreference::Shared => "shared",
        ApiPreference::Default => "default",
    }
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
    let answer = match (&t.data_dir, &user) {
        (Some(dir), Some(user)) => {
            let store = open_store(dir).await?;
            let rows = store.charging_records(user, since).await?;
            store.close().await;
            Response::Charging {
                records: rows.iter().map(Charge::from).collect(),
            }
        }
        (Some(_), None) => {
            bail!("say whose: cpns charging list --user USER --data-dir DIR")
        }
        _ => {
            let request = Request::Charging {
                user,
                since_s: since,
            };
            ask(t, request).await?
        }
    };
    let Response::Charging { records } = &answer else {
        return Err(unexpected(&answer));
    };
    if t.json {
        print_json(&answer);
        return Ok(());
    }
    if records.is_empty() {
        println!("no charging records");
    }
    for r in records {
        let in_pn = match &r.pn_owner {
            Some(o) => format!(" in {o}'s PN"),
            None => String::new(),
        };
        println!(
            "{}: {} by {}{in_pn}, {} bytes, {} units",
            r.user, r.service, r.entity, r.bytes, r.units
        );
    }
    Ok(())
}
