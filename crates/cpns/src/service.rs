//! `cpns service …`: service descriptions and the directory (004 §5.5.5; docs/services.md).
//! `check` reads a description file as the directory will (`cpns_service::parse`) and says what
//! it holds, or what to fix, so a description can be written and checked before any device
//! publishes it. `publish`, `unpublish`, `discover` and `retrieve` ask a running PNE (`cpns pne
//! --stay`) through its control socket, which asks the server end to end.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use cpns_control::{Request, Response};
use cpns_service::{Delivery, Scope};

use crate::status::{Target, ask, print_json, unexpected};

#[derive(Args, Debug)]
pub(crate) struct ServiceArgs {
    #[command(subcommand)]
    pub verb: ServiceVerb,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ServiceVerb {
    /// Check a service description file (application/vnd.cpns.service+json,
    /// docs/service.schema.json): print what it holds, or what to fix.
    Check {
        /// The description file.
        file: PathBuf,
        /// Print the description as the directory keeps it (keywords normalised), as JSON.
        #[arg(long)]
        json: bool,
    },
    /// On a running PNE: publish the description in FILE as this PNE, or update the one it
    /// published with the same service id (its lease starts again).
    Publish {
        /// The description file.
        file: PathBuf,
    },
    /// On a running PNE: take one of its services out of the directory.
    Unpublish {
        /// The service id, as its description gives it.
        service_id: String,
    },
    /// On a running PNE: the directory's entries it may see that have every KEYWORD (none:
    /// any entry).
    Discover {
        /// Keywords.
        keywords: Vec<String>,
        /// Any one keyword is enough.
        #[arg(long)]
        any: bool,
        /// Only this service type.
        #[arg(long = "type")]
        service_type: Option<String>,
        /// Only services this device can consume (by its capabilities of record).
        #[arg(long)]
        fits_me: bool,
        /// Entries after this directory id (the next page).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// On a running PNE: watch the directory for entries published from now on that it may
    /// see and that have every KEYWORD (none: any entry). Prints the watch's id; with
    /// --follow, then each match as it comes (`cpns pn events` shows them too).
    Watch {
        /// Keywords.
        keywords: Vec<String>,
        /// Any one keyword is enough.
        #[arg(long)]
        any: bool,
        /// Only this service type.
        #[arg(long = "type")]
        service_type: Option<String>,
        /// Follow the matches until stopped.
        #[arg(long)]
        follow: bool,
        /// With --follow: stop after this many matches.
        #[arg(long, requires = "follow")]
        count: Option<u64>,
    },
    /// On a running PNE: end one of its watches.
    Unwatch {
        /// The watch's id, as `watch` printed it.
        watch_id: u64,
    },
    /// On a running PNE: one whole description from the directory, as JSON.
    Retrieve {
        /// Its directory id, as `discover` lists it.
        dir_id: u64,
    },
    /// On the running server (--data-dir): merge the directory's full-text index into one
    /// segment, a few steps per request (each step a write of its own, so the server's other
    /// writes go between them), printing progress, until nothing is left to merge.
    Merge {
        /// Pages of merged index per step.
        #[arg(long, default_value_t = 1_000)]
        pages: u32,
    },
}

/// `cpns service merge`: requests of a few steps each until nothing is left, a line (or a JSON
/// answer) each.
async fn merge(t: &Target, pages: u32) -> anyhow::Result<()> {
    let mut total = 0u64;
    let mut start = true;
    loop {
        let request = Request::DirectoryMerge {
            start,
            steps: None,
            pages: Some(pages),
        };
        let answer = ask(t, request).await?;
        let Response::DirectoryMerge { steps, more } = &answer else {
            return Err(unexpected(&answer));
        };
        total += u64::from(*steps);
        if t.json {
            print_json(&answer);
        } else if *more {
            println!("directory index: {total} steps merged, more to do");
        } else {
            println!("directory index merged ({total} steps)");
        }
        if !more {
            return Ok(());
        }
        start = false;
    }
}

/// `cpns service`.
pub(crate) async fn service(a: ServiceArgs) -> anyhow::Result<()> {
    let t = &a.target;
    match a.verb {
        ServiceVerb::Merge { pages } => merge(t, pages).await,
        ServiceVerb::Publish { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            // Checked here first, with the file named in what to fix.
            let d = cpns_service::parse(&bytes)
                .with_context(|| format!("{} is not a service description", file.display()))?;
            let description = serde_json::from_slice(&bytes)?;
            let answer = ask(t, Request::ServicePublish { description }).await?;
            let Response::ServicePublish {
                dir_id,
                expires_at_ms,
            } = &answer
            else {
                return Err(unexpected(&answer));
            };
            if t.json {
                print_json(&answer);
            } else {
                println!(
                    "published {} as directory entry {dir_id}; its lease ends in {} s unless \
                     published again",
                    d.service_id,
                    seconds_until(*expires_at_ms)
                );
            }
            Ok(())
        }
        ServiceVerb::Unpublish { service_id } => {
            let answer = ask(t, Request::ServiceUnpublish { service_id }).await?;
            match &answer {
                _ if t.json => print_json(&answer),
                Response::ServiceUnpublish {
                    service_id,
                    removed: true,
                } => println!("unpublished {service_id}"),
                Response::ServiceUnpublish { service_id, .. } => {
                    println!("{service_id} was not in the directory")
                }
                other => return Err(unexpected(other)),
            }
            Ok(())
        }
        ServiceVerb::Discover {
            keywords,
            any,
            service_type,
            fits_me,
            after,
        } => {
            let request = Request::ServiceDiscover {
                keywords,
                any,
                service_type,
                fits_me,
                after,
            };
            let answer = ask(t, request).await?;
            let Response::ServiceDiscover { entries, more } = &answer else {
                return Err(unexpected(&answer));
            };
            if t.json {
                print_json(&answer);
                return Ok(());
            }
            if entries.is_empty() {
                println!("no service found");
            }
            for e in entries {
                println!(
                    "{}: {} \"{}\" ({}) offered by {} of {}; keywords {}",
                    e.dir_id,
                    e.service_id,
                    e.name.escape_debug(),
                    e.service_type,
                    e.offerer,
                    e.owner,
                    e.keywords.join(", ")
                );
            }
            if let (true, Some(last)) = (*more, entries.last()) {
                println!("more follow: --after {}", last.dir_id);
            }
            Ok(())
        }
        ServiceVerb::Watch {
            keywords,
            any,
            service_type,
            follow,
            count,
        } => {
            let request = Request::ServiceWatch {
                keywords,
                any,
                service_type,
            };
            watch(t, request, follow, count).await
        }
        ServiceVerb::Unwatch { watch_id } => {
            let answer = ask(t, Request::ServiceUnwatch { watch_id }).await?;
            match &answer {
                _ if t.json => print_json(&answer),
                Response::ServiceUnwatch { removed: true, .. } => {
                    println!("watch {watch_id} ended")
                }
                Response::ServiceUnwatch { .. } => println!("no watch {watch_id} of this PNE"),
                other => return Err(unexpected(other)),
            }
            Ok(())
        }
        ServiceVerb::Retrieve { dir_id } => {
            let answer = ask(t, Request::ServiceRetrieve { dir_id }).await?;
            let Response::ServiceRetrieve { description, .. } = &answer else {
                return Err(unexpected(&answer));
            };
            if t.json {
                print_json(&answer);
            } else {
                println!("{}", serde_json::to_string_pretty(description)?);
            }
            Ok(())
        }
        ServiceVerb::Check { file, json } => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let d = cpns_service::parse(&bytes)
                .with_context(|| format!("{} is not a service description", file.display()))?;
            if json {
                println!("{}", String::from_utf8_lossy(&d.to_json()));
                return Ok(());
            }
            let scope = match &d.scope {
                Scope::Pn { pn_id } => format!("the members of PN {pn_id}"),
                Scope::User => "every device of its user".into(),
                Scope::Group { group_id } => format!("the members of service group {group_id}"),
                Scope::Public => "every device".into(),
            };
            let delivery: Vec<&str> = d
                .delivery
                .iter()
                .map(|m| match m {
                    Delivery::Push => "push",
                    Delivery::Pull => "pull",
                })
                .collect();
            println!(
                "ok: service {} ({}, version {}): \"{}\"; keywords {}; seen by {scope}; delivery {}; lease {} s",
                d.service_id,
                d.service_type,
                d.version,
                d.name.escape_debug(),
                d.keywords.join(", "),
                delivery.join(" and "),
                d.lease_s
            );
            Ok(())
        }
    }
}

/// Whole seconds from now until `at_ms` (Unix milliseconds); 0 if past.
fn seconds_until(at_ms: u64) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    at_ms.saturating_sub(now_ms).div_ceil(1000)
}

/// `cpns service watch`: with `follow`, the PNE's events are followed from before the watch is
/// made, so no match of it is missed, and each match of it is printed.
async fn watch(
    t: &Target,
    request: Request,
    follow: bool,
    count: Option<u64>,
) -> anyhow::Result<()> {
    use cpns_control::{Event, Line};

    let path = t.socket()?;
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let follower = follow.then(|| {
        let path = path.clone();
        tokio::spawn(async move {
            cpns_node::control::stream(&path, &Request::Events {}, |line| tx.send(line).is_ok())
                .await
        })
    });
    if follow {
        match lines.recv().await {
            Some(Line::Answer(Ok(_))) => {}
            Some(Line::Answer(Err(e))) => anyhow::bail!("refused: {e}"),
            _ => anyhow::bail!("the PNE did not let its events be followed"),
        }
    }
    let answer = ask(t, request).await?;
    let Response::ServiceWatch { watch_id } = &answer else {
        return Err(unexpected(&answer));
    };
    let watch_id = *watch_id;
    if t.json {
        print_json(&answer);
    } else {
        println!("watching (watch {watch_id}); `cpns service unwatch {watch_id}` ends it");
    }
    let Some(follower) = follower else {
        return Ok(());
    };
    let mut seen = 0u64;
    while count.is_none_or(|n| seen < n) {
        let Some(line) = lines.recv().await else {
            break;
        };
        let Line::Event(e) = &line else {
            continue;
        };
        let Event::ServiceMatch { watch_id: w, entry } = e else {
            continue;
        };
        if *w != watch_id {
            continue;
        }
        seen += 1;
        if t.json {
            println!("{}", cpns_control::encode_event(e));
        } else {
            println!(
                "{}: {} \"{}\" ({}) offered by {} of {}; keywords {}",
                entry.dir_id,
                entry.service_id,
                entry.name.escape_debug(),
                entry.service_type,
                entry.offerer,
                entry.owner,
                entry.keywords.join(", ")
            );
        }
    }
    follower.abort();
    Ok(())
}
