//! `cpns content …`: service and content delivery (004 §5.5.8; docs/services.md, "Delivery") on
//! a running PNE (`cpns pne --stay`), through its control socket. `push` offers a file to PNEs
//! of its PN: the server sets the session up and the PNE sends the file in sealed chunks through
//! its PN GW; with `--wait` it follows until every target has every byte (or a target's part
//! ended otherwise). What a PNE receives is kept in its inbox (`cpns pne --inbox`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use cpns_control::{Event, Line, Request, Response};
use cpns_wire::EntityId;

use crate::status::{Target, ask, print_json, unexpected};

#[derive(Args, Debug)]
pub(crate) struct ContentArgs {
    #[command(subcommand)]
    pub verb: ContentVerb,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ContentVerb {
    /// Declare the contents a running PNE holds now (004 §5.5.10), from FILE: a JSON list of
    /// `{"name": …, "media_type": …}`, at most 256. They replace what it announced in every PN
    /// it is a member of; `cpns pn query` lists them.
    Declare {
        /// The JSON file.
        file: PathBuf,
    },
    /// Push FILE to PNEs of the running PNE's PN, or of another PN (--pn), sealed end to end
    /// through the PN GWs.
    Push(PushArgs),
    /// Send a small payload in band to one PNE (at most 16 KiB), sealed end to end through the
    /// server.
    Message {
        /// The PNE.
        to: EntityId,
        /// The payload, as text.
        text: String,
        /// Its media type.
        #[arg(long = "type", default_value = "text/plain")]
        media_type: String,
        /// The service it is sent as.
        #[arg(long, default_value = "message")]
        service: String,
        /// The PNE's PN, when another than the running PNE's.
        #[arg(long)]
        pn: Option<cpns_wire::PnId>,
    },
    /// Ask a member for content it declared it holds (pull): it answers with a delivery to the
    /// running PNE, kept in its inbox; follow it with `cpns pn events`.
    Pull {
        /// The member.
        source: EntityId,
        /// The content's name, as the member declared it.
        name: String,
        /// The service it is asked as.
        #[arg(long, default_value = "content")]
        service: String,
        /// The member's PN, when another than the running PNE's.
        #[arg(long)]
        pn: Option<cpns_wire::PnId>,
    },
    /// Service control of a delivery the running PNE sends: start (one pushed --held), pause,
    /// resume or stop; its targets are told.
    Control {
        /// The session (as `push` printed it).
        session: cpns_wire::DeliveryId,
        /// start, pause, resume or stop.
        action: cpns_wire::ControlAction,
    },
}

/// `cpns content push`.
#[derive(Args, Debug)]
pub(crate) struct PushArgs {
    /// The file.
    file: PathBuf,
    /// The targets (a comma list of PNE ids), or `all`: every other member of the PN.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["group", "user"])]
    to: Vec<EntityId>,
    /// On a PNE: to a service group it is a member of (its id, as `cpns group` prints it):
    /// every other member reachable now, one session for each PN they are in.
    #[arg(long, conflicts_with_all = ["to", "pn", "requires", "user"])]
    group: Option<cpns_wire::GroupId>,
    /// On a PNE: to a user: that user's devices reachable now, in the PNE's PN and, for its own
    /// user, in whichever PN each is proven in; one session for each PN.
    #[arg(long, conflicts_with_all = ["to", "pn", "requires"])]
    user: Option<cpns_wire::UserId>,
    /// The service it is delivered as (for the records and charging).
    #[arg(long, default_value = "content")]
    service: String,
    /// Its media type.
    #[arg(long = "type", default_value = "application/octet-stream")]
    media_type: String,
    /// Its name for the targets (default: the file's name).
    #[arg(long)]
    name: Option<String>,
    /// Follow it until every target has every byte, or a target's part ended otherwise.
    #[arg(long)]
    wait: bool,
    /// The PN whose members receive it: on the server (--data-dir), from outside the PN; on
    /// a PNE, another PN (of its user, or holding its user's devices) to forward it to.
    #[arg(long)]
    pn: Option<cpns_wire::PnId>,
    /// On the server: the external entity it comes from (default `operator`).
    #[arg(long)]
    source: Option<EntityId>,
    /// On the server: a part for one target only, as TARGET=FILE (at most 64 KiB); again
    /// for each such target.
    #[arg(long, value_name = "TARGET=FILE")]
    specific: Vec<String>,
    /// On a PNE: set it up held; it moves once started (`cpns content control SESSION start`).
    #[arg(long)]
    held: bool,
    /// On a PNE: by device capability: the server picks one target (among --to, or every other
    /// member with --to all) that fits these requirements (JSON, as a service description's
    /// `requires`, e.g. '{"has_ui":true}') and is online.
    #[arg(long, value_name = "JSON")]
    requires: Option<String>,
    /// Several services in one session: one more item, FILE delivered as service SERVICE
    /// after the others (its name the file's, its media type `application/octet-stream`, or
    /// TYPE with SERVICE:TYPE=FILE); again for each item, at most 7.
    #[arg(long, value_name = "SERVICE=FILE")]
    also: Vec<String>,
}

/// `cpns content`.
pub(crate) async fn content(a: ContentArgs) -> anyhow::Result<()> {
    let t = &a.target;
    match a.verb {
        ContentVerb::Declare { file } => declare(t, &file).await,
        ContentVerb::Push(p) => push(t, p).await,
        ContentVerb::Control { session, action } => control(t, session, action).await,
        ContentVerb::Message {
            to,
            text,
            media_type,
            service,
            pn,
        } => {
            let request = Request::MessageSend {
                to,
                text: Some(text),
                hex: None,
                service_id: Some(service),
                media_type: Some(media_type),
                pn_id: pn,
            };
            let answer = ask(t, request).await?;
            let Response::MessageSend { to } = &answer else {
                return Err(unexpected(&answer));
            };
            if t.json {
                print_json(&answer);
            } else {
                println!("message handed on to {to}");
            }
            Ok(())
        }
        ContentVerb::Pull {
            source,
            name,
            service,
            pn,
        } => {
            let request = Request::DeliveryRequest {
                source,
                name,
                service_id: Some(service),
                pn_id: pn,
            };
            let answer = ask(t, request).await?;
            let Response::DeliveryRequest { source, name } = &answer else {
                return Err(unexpected(&answer));
            };
            if t.json {
                print_json(&answer);
            } else {
                println!(
                    "{source} was asked for \"{}\"; its delivery follows",
                    name.escape_debug()
                );
            }
            Ok(())
        }
    }
}

/// `cpns content control`.
async fn control(
    t: &Target,
    session: cpns_wire::DeliveryId,
    action: cpns_wire::ControlAction,
) -> anyhow::Result<()> {
    let request = Request::DeliveryControl {
        session,
        action: action.name().into(),
    };
    let answer = ask(t, request).await?;
    let Response::DeliveryControl { session, action } = &answer else {
        return Err(unexpected(&answer));
    };
    if t.json {
        print_json(&answer);
    } else {
        println!("delivery {session}: {action}, its targets told");
    }
    Ok(())
}

/// `cpns content declare`.
async fn declare(t: &Target, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let contents: Vec<cpns_control::Content> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: a JSON list of {{\"name\": …, \"media_type\": …}}",
            file.display()
        )
    })?;
    let answer = ask(t, Request::ContentsSet { contents }).await?;
    let Response::ContentsSet { kept } = &answer else {
        return Err(unexpected(&answer));
    };
    if t.json {
        print_json(&answer);
    } else {
        println!("{kept} contents declared");
    }
    Ok(())
}

/// `cpns content push`.
async fn push(t: &Target, a: PushArgs) -> anyhow::Result<()> {
    let PushArgs {
        file,
        to,
        service,
        media_type,
        name,
        wait,
        pn,
        source,
        specific,
        held,
        requires,
        group,
        user,
        also,
    } = a;
    let more = also
        .iter()
        .map(|s| item_file(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let file = std::fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
    let on_server = t.data_dir.is_some();
    if on_server && (group.is_some() || user.is_some()) {
        anyhow::bail!("--group and --user are a PNE's: a delivery from outside names its targets");
    }
    if !on_server && (source.is_some() || !specific.is_empty()) {
        anyhow::bail!("--source and --specific are the server's: name it with --data-dir");
    }
    if on_server && (held || requires.is_some()) {
        anyhow::bail!("--held and --requires are a PNE's: a delivery from outside is neither");
    }
    let requires = requires
        .map(|r| serde_json::from_str::<serde_json::Value>(&r))
        .transpose()
        .context("--requires: a JSON object, as a service description's \"requires\"")?;
    // `--to all`: every other member of the PN (by capability: for the server to pick from).
    let to = if to.iter().map(EntityId::as_str).eq(["all"]) {
        Vec::new()
    } else {
        to
    };
    if on_server && pn.is_none() {
        anyhow::bail!("on the server, say which PN's members receive it: --pn PN_ID");
    }
    let specific = specific
        .iter()
        .map(|s| specific_file(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let named = to.len();
    let request = Request::Deliver {
        file: file.to_string_lossy().into_owned(),
        to,
        service_id: Some(service),
        name,
        media_type: Some(media_type),
        pn_id: pn,
        source,
        specific,
        wait: on_server && wait,
        held,
        requires,
        group,
        user: user.clone(),
        more,
    };
    // With --wait, the events are followed from before the offer, so none of it is missed: a
    // PNE's from its event stream, the server's on the request's own answer.
    let path = t.socket()?;
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let follower = wait.then(|| {
        let path = path.clone();
        let follow = if on_server {
            request.clone()
        } else {
            Request::Events {}
        };
        tokio::spawn(async move {
            cpns_node::control::stream(&path, &follow, |line| tx.send(line).is_ok()).await
        })
    });
    let first = if wait { lines.recv().await } else { None };
    let answer = match first {
        None if !wait => ask(t, request).await?,
        Some(Line::Answer(Ok(r))) if on_server => r,
        Some(Line::Answer(Ok(_))) => ask(t, request).await?,
        Some(Line::Answer(Err(e))) => anyhow::bail!("refused: {e}"),
        _ => anyhow::bail!("the entity did not let the delivery be followed"),
    };
    let Response::Deliver {
        session,
        size,
        also,
        ..
    } = &answer
    else {
        return Err(unexpected(&answer));
    };
    let session = *session;
    // Every session of the offer (a group in several PNs has one per PN), until each is sent.
    let mut open: std::collections::BTreeSet<cpns_wire::DeliveryId> = std::iter::once(session)
        .chain(also.iter().copied())
        .collect();
    if t.json {
        print_json(&answer);
    } else {
        let whom = match (group, &user) {
            (Some(g), _) => format!("service group {g}"),
            (None, Some(u)) => format!("the devices of {u}"),
            _ if named == 0 => "every other member".into(),
            _ => format!("{named} target{}", if named == 1 { "" } else { "s" }),
        };
        let sessions: Vec<String> = open.iter().map(ToString::to_string).collect();
        println!(
            "delivery {}: {} ({size} bytes) offered to {whom}",
            sessions.join(", "),
            file.display(),
        );
    }
    let Some(follower) = follower else {
        return Ok(());
    };
    let mut failed = 0;
    let mut reached = 0;
    while !open.is_empty() {
        let Some(line) = lines.recv().await else {
            break;
        };
        let Line::Event(e) = &line else { continue };
        let ours = match e {
            Event::DeliverySent { session: s, .. } | Event::DeliveryEnded { session: s, .. } => {
                open.contains(s)
            }
            _ => false,
        };
        if !ours {
            continue;
        }
        if t.json {
            println!("{}", cpns_control::encode_event(e));
        }
        match e {
            Event::DeliverySent {
                session, delivered, ..
            } => {
                if !t.json {
                    let to: Vec<String> = delivered.iter().map(ToString::to_string).collect();
                    println!(
                        "delivery {session}: delivered to {} (its hash checked)",
                        if to.is_empty() {
                            "no target".into()
                        } else {
                            to.join(", ")
                        }
                    );
                }
                reached += delivered.len();
                open.remove(session);
            }
            Event::DeliveryEnded {
                session,
                target,
                result,
                reason,
            } => {
                failed += 1;
                if !t.json {
                    match reason {
                        Some(r) => println!("delivery {session} at {target}: {result} ({r})"),
                        None => println!("delivery {session} at {target}: {result}"),
                    }
                }
            }
            _ => {}
        }
    }
    follower.abort();
    if !open.is_empty() {
        anyhow::bail!(
            "delivery {session}: the entity stopped telling its end before every target's part \
             ended (it stopped, or its connection did); {failed} target part(s) ended otherwise"
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} targets did not get it", failed + reached);
    }
    Ok(())
}

/// A `--specific TARGET=FILE`: the target and the file as an absolute path.
/// One more item of a delivery, from `SERVICE=FILE` or `SERVICE:TYPE=FILE`.
fn item_file(s: &str) -> anyhow::Result<cpns_control::DeliverItem> {
    let (service, file) = s
        .split_once('=')
        .with_context(|| format!("--also {s}: say SERVICE=FILE or SERVICE:TYPE=FILE"))?;
    let (service, media_type) = match service.split_once(':') {
        Some((service, media_type)) => (service, Some(media_type.to_string())),
        None => (service, None),
    };
    if service.is_empty() {
        anyhow::bail!("--also {s}: name the service it is delivered as, SERVICE=FILE");
    }
    let file = std::fs::canonicalize(file).with_context(|| format!("--also {s}"))?;
    Ok(cpns_control::DeliverItem {
        file: file.to_string_lossy().into_owned(),
        service_id: Some(service.to_string()),
        name: None,
        media_type,
    })
}

fn specific_file(s: &str) -> anyhow::Result<cpns_control::SpecificFile> {
    let (to, file) = s
        .split_once('=')
        .with_context(|| format!("--specific {s}: say TARGET=FILE"))?;
    let to = to
        .parse()
        .map_err(|e| anyhow::anyhow!("--specific {s}: {e}"))?;
    let file = std::fs::canonicalize(file).with_context(|| format!("--specific {s}"))?;
    Ok(cpns_control::SpecificFile {
        to,
        file: file.to_string_lossy().into_owned(),
    })
}
