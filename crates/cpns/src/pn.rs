//! `cpns pn ...`: acts on a running PN GW or PNE (`cpns gateway`, `cpns pne --stay`) through
//! its control socket (the typed API of `cpns_control`, served by `cpns_node::control`;
//! docs/control-api.md) and prints its answer, one readable line per PN, or the answer line as
//! it came with `--json`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use cpns_control::{ApiError, Event, Line, Outcome, Pn, Request, Response, Targets};
use cpns_node::control;
use cpns_wire::{EntityId, PnId};

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
    /// A running server's data directory (its control socket `server.sock`), for `watch`.
    #[arg(long, global = true, conflicts_with_all = ["store", "control"])]
    pub data_dir: Option<PathBuf>,
    /// Print the entity's answer (and a stream's events) as JSON lines, as they came.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PnVerb {
    /// The PNs the entity holds, with their members.
    Show,
    /// On the server (--data-dir): follow what changes in USER's PN inventories (004
    /// §5.5.10): PNs set up and released, members joining and leaving, members declaring
    /// contents and publishing services; until interrupted.
    Watch {
        /// The user.
        user: cpns_wire::UserId,
    },
    /// On a PNE: follow what changes in the inventory of PN, one it is a member of, through
    /// its PN GW (004 §5.5.10): members joining and leaving, members declaring contents and
    /// publishing services, the PN released; until interrupted, the PNE leaves the PN, or the
    /// PN is released.
    Follow {
        /// The PN's id (32 hex digits, as `cpns pn show` prints it).
        pn: PnId,
    },
    /// On a PN GW: what its WAN sessions with the server carried since it started (frames and
    /// bytes each way), e.g. to see content for several PNEs cross once.
    Traffic,
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
    /// On a PNE: ask its PN GW for a PN (000 §6.6.1.1): `1-1`, `all`, or a comma list of PNEs
    /// to invite; done once the PN is stored.
    Setup {
        /// `1-1`, `all` or `watch,tv`.
        #[arg(value_parser = targets)]
        with: Targets,
    },
    /// On a PNE: register with the server (003 §1.4), in a PN it is a member of (none: its
    /// first).
    Register {
        /// The PN's id.
        pn: Option<PnId>,
    },
    /// On a PN GW: establish a PN with `all` its PNEs or a comma list (000 §6.6.1.2).
    Establish {
        /// `all` or `watch,tv`.
        #[arg(value_parser = targets)]
        with: Targets,
        /// Wait until the establishment ended.
        #[arg(long)]
        wait: bool,
    },
    /// On a PNE that asks its application (`cpns pne --invitations ask`): accept or decline
    /// an invitation it holds.
    Answer {
        /// The PN's id, as the `invited` event names it.
        pn: PnId,
        /// `accept` or `decline`.
        #[arg(value_parser = accept_or_decline, action = clap::ArgAction::Set)]
        answer: bool,
    },
    /// On a PNE: send content to the other members of a PN linked to its PN GW, signed by this
    /// PNE and sealed under the PN's group key (docs/security.md §4.11); each member that
    /// checks it tells a `content` event (`cpns pn events`).
    Send {
        /// The PN's id.
        pn: PnId,
        /// The content, as text.
        #[arg(required_unless_present = "hex", conflicts_with = "hex")]
        text: Option<String>,
        /// The content as hex bytes, instead of text.
        #[arg(long)]
        hex: Option<String>,
    },
    /// On a PNE: follow what happens (PN changes, invitations, group keys, content from
    /// other members, status notifications, command completions), one line each, until
    /// stopped.
    Events {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn targets(s: &str) -> Result<Targets, String> {
    Targets::parse(s)
}

fn accept_or_decline(s: &str) -> Result<bool, String> {
    match s {
        "accept" => Ok(true),
        "decline" => Ok(false),
        other => Err(format!("`{other}`: say accept or decline")),
    }
}

/// `cpns pn ...`.
pub(crate) async fn pn(a: PnArgs) -> anyhow::Result<()> {
    let path = match (&a.control, &a.store, &a.data_dir) {
        (Some(c), _, _) => c.clone(),
        (None, Some(s), _) => control::socket_path(s),
        (None, None, Some(d)) => crate::status::server_socket(d),
        (None, None, None) => bail!(
            "say which entity: --store <its store>, --control <its socket>, or --data-dir \
             <a server's data dir>"
        ),
    };
    let request = match &a.verb {
        PnVerb::Show => Request::Show {},
        PnVerb::Traffic => Request::Traffic {},
        PnVerb::Watch { user } => Request::InventorySubscribe { user: user.clone() },
        PnVerb::Follow { pn } => Request::InventoryFollow { pn_id: *pn },
        PnVerb::Release { pn } => Request::Release { pn_id: *pn },
        PnVerb::Expel { pn, pne } => Request::Expel {
            pn_id: *pn,
            pne: pne.clone(),
        },
        PnVerb::Leave { pn } => Request::Leave { pn_id: *pn },
        PnVerb::Join { pn } => Request::Join { pn_id: *pn },
        PnVerb::Invite { pn, pne } => Request::Invite {
            pn_id: *pn,
            pne: pne.clone(),
        },
        PnVerb::Members { pn } => Request::Members { pn_id: *pn },
        PnVerb::Query { pn } => Request::Query { pn_id: *pn },
        PnVerb::Setup { with } => Request::Setup { with: with.clone() },
        PnVerb::Register { pn } => Request::Register { pn_id: *pn },
        PnVerb::Establish { with, wait } => Request::Establish {
            with: with.clone(),
            wait: *wait,
        },
        PnVerb::Answer { pn, answer } => Request::AnswerInvitation {
            pn_id: *pn,
            accept: *answer,
        },
        PnVerb::Send { pn, text, hex } => Request::Send {
            pn_id: *pn,
            text: text.clone(),
            hex: hex.clone(),
        },
        PnVerb::Events { .. } => Request::Events {},
    };
    let limit = match a.verb {
        PnVerb::Events { count } => count,
        _ => None,
    };
    // Events follow the answer of these; the others end with it.
    let streams = matches!(
        request,
        Request::Events {}
            | Request::Establish { wait: true, .. }
            | Request::InventorySubscribe { .. }
            | Request::InventoryFollow { .. }
    );
    let json = a.json;
    let mut refused: Option<ApiError> = None;
    let mut seen = 0u64;
    control::stream(&path, &request, |line| {
        if json {
            println!("{}", encode(&line));
        }
        match line {
            Line::Answer(Err(e)) => {
                refused = Some(e);
                false
            }
            Line::Answer(Ok(r)) => {
                if !json {
                    print_answer(&r);
                }
                streams && limit != Some(0)
            }
            Line::Event(e) => {
                if !json {
                    print_event(&e);
                }
                seen += 1;
                limit.is_none_or(|n| seen < n)
            }
        }
    })
    .await?;
    if let Some(e) = refused {
        bail!("the entity refused: {e}");
    }
    Ok(())
}

/// A line as the entity wrote it.
pub(crate) fn encode(line: &Line) -> String {
    match line {
        Line::Answer(a) => cpns_control::encode_answer(a),
        Line::Event(e) => cpns_control::encode_event(e),
    }
}

fn names(ids: &[EntityId]) -> String {
    ids.iter()
        .map(EntityId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `told: phone, watch`, or that nobody was.
fn told(notified: &[EntityId]) -> String {
    if notified.is_empty() {
        "no member was connected to be told".to_string()
    } else {
        format!("told: {}", names(notified))
    }
}

/// One readable answer.
fn print_answer(r: &Response) {
    match r {
        Response::Show { pns } | Response::Members { pns } => print_pns(pns),
        Response::Query { pns, holdings } => {
            print_pns(pns);
            for h in holdings {
                let contents: Vec<String> = h
                    .contents
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.media_type))
                    .collect();
                let services: Vec<String> = h
                    .services
                    .iter()
                    .map(|s| format!("{} \"{}\" ({})", s.service_id, s.name, s.service_type))
                    .collect();
                println!(
                    "  {}: holds {}; offers {}",
                    h.pne,
                    if contents.is_empty() {
                        "nothing declared".into()
                    } else {
                        contents.join(", ")
                    },
                    if services.is_empty() {
                        "nothing it may see".into()
                    } else {
                        services.join(", ")
                    }
                );
            }
        }
        Response::ContentsSet { kept } => println!("{kept} contents declared"),
        Response::InventorySubscribe { user } => {
            println!("following the inventories of {user}'s PNs")
        }
        Response::InventoryFollow { pn } => println!("following {}", pn_line(pn)),
        Response::Setup { pn } => println!("set up {}", pn_line(pn)),
        Response::Traffic {
            wan_frames_in,
            wan_bytes_in,
            wan_frames_out,
            wan_bytes_out,
        } => println!(
            "WAN since start: {wan_bytes_in} bytes in ({wan_frames_in} frames), {wan_bytes_out} \
             bytes out ({wan_frames_out} frames)"
        ),
        Response::Register {
            cpns_id,
            pn_id,
            lifetime_s,
        } => println!("registered as {cpns_id} in PN {pn_id} (a session of {lifetime_s} s)"),
        Response::Release {
            pn_id,
            notified: Some(n),
        } => println!("PN {pn_id} released; {}", told(n)),
        Response::Release { pn_id, .. } => println!("PN {pn_id} released"),
        Response::Expel {
            pn_id,
            pne,
            notified: Some(n),
            epoch: Some(epoch),
        } => println!(
            "{pne} expelled from PN {pn_id}; group key epoch {epoch}; {}",
            told(n)
        ),
        Response::Expel {
            pn_id,
            pne,
            notified: Some(_),
            epoch: None,
        } => println!("{pne} expelled from PN {pn_id} (the server had removed it already)"),
        // A PNE's answer: its PN GW did it; the epoch comes by PN Update Notification.
        Response::Expel { pn_id, pne, .. } => println!("{pne} expelled from PN {pn_id}"),
        Response::Leave { pn_id } => println!("left PN {pn_id}"),
        Response::Join { pn_id } => println!("joined PN {pn_id}"),
        Response::Invite {
            pn_id,
            pne,
            accepted: true,
        } => println!("{pne} joined PN {pn_id}"),
        Response::Invite { pn_id, pne, .. } => println!("{pne} declined to join PN {pn_id}"),
        Response::Establish { command, pn_id } => {
            println!("establishing PN {pn_id} (command {command})")
        }
        Response::AnswerInvitation {
            pn_id,
            accepted: true,
        } => println!("accepted the invitation to PN {pn_id}"),
        Response::AnswerInvitation { pn_id, .. } => {
            println!("declined the invitation to PN {pn_id}")
        }
        Response::Events {} => println!("following; Ctrl-C to stop"),
        Response::Send { pn_id, delivered } => match delivered {
            0 => println!("sent to PN {pn_id}; no other member is connected to its PN GW now"),
            1 => println!("sent to PN {pn_id}; relayed to 1 member"),
            n => println!("sent to PN {pn_id}; relayed to {n} members"),
        },
        // Verbs `cpns pn` does not send: the line as it came.
        other @ (Response::Hello { .. }
        | Response::Caps { .. }
        | Response::CapsSet { .. }
        | Response::Status { .. }
        | Response::StatusSet {}
        | Response::Subscribe { .. }
        | Response::UsageRecord { .. }
        | Response::UsagePrefs { .. }
        | Response::UsagePrefSet { .. }
        | Response::UsageSummary { .. }
        | Response::UsageSend { .. }
        | Response::Usage { .. }
        | Response::Charging { .. }
        | Response::DirectoryMerge { .. }
        | Response::ServicePublish { .. }
        | Response::ServiceUnpublish { .. }
        | Response::ServiceDiscover { .. }
        | Response::ServiceRetrieve { .. }
        | Response::ServiceWatch { .. }
        | Response::ServiceUnwatch { .. }
        | Response::GroupCreate { .. }
        | Response::GroupInvite { .. }
        | Response::GroupAnswer { .. }
        | Response::GroupJoin { .. }
        | Response::GroupLeave { .. }
        | Response::GroupExpel { .. }
        | Response::GroupDelete { .. }
        | Response::GroupKey { .. }
        | Response::GroupMembers { .. }
        | Response::Groups { .. }
        | Response::GroupSend { .. }
        | Response::Deliver { .. }
        | Response::DeliveryControl { .. }
        | Response::DeliveryRequest { .. }
        | Response::MessageSend { .. }) => {
            println!("{}", cpns_control::encode_answer(&Ok(other.clone())))
        }
    }
}

/// One readable event.
fn print_event(e: &Event) {
    match e {
        Event::PnJoined { pn, .. } => println!("joined {}", pn_line(pn)),
        Event::PnUpdated { pn, epoch, .. } => {
            println!("updated {}; group key epoch {epoch}", pn_line(pn))
        }
        Event::PnReleased { pn_id, .. } => println!("PN {pn_id} released"),
        Event::PnExpelled { pn_id } => println!("expelled from PN {pn_id}"),
        Event::PnLeft { pn_id } => println!("left PN {pn_id}"),
        Event::Invited {
            pn_id,
            from,
            within_ms,
        } => println!(
            "invited to PN {pn_id} by {from}: answer within {} s \
             (cpns pn answer {pn_id} accept|decline)",
            within_ms / 1000
        ),
        Event::InvitationDeclined { pn_id } => println!("declined the invitation to PN {pn_id}"),
        Event::Completed {
            command,
            flow,
            outcome: Some(Outcome::Established { pn }),
            ..
        } => println!("{flow} (command {command}) ended: {}", pn_line(pn)),
        Event::Completed {
            command,
            flow,
            error: Some(e),
            ..
        } => println!("{flow} (command {command}) failed: {e}"),
        Event::Completed { command, flow, .. } => println!("{flow} (command {command}) ended"),
        Event::GroupKey {
            pn_id,
            epoch,
            has_key,
        } => println!(
            "PN {pn_id}: group key epoch {epoch}{}",
            if *has_key { ", held" } else { ", not held" }
        ),
        Event::Registered { cpns_id, pn_id, .. } => {
            println!("registered as {cpns_id} in PN {pn_id}")
        }
        Event::PnRefused { pn_id, error } => println!("PN {pn_id} refused: {error}"),
        Event::FlowFailed { flow, error } => println!("{flow} failed: {error}"),
        Event::Lagged { missed } => println!("({missed} events missed: this reader fell behind)"),
        Event::InventoryFollowed { pn } => {
            println!("following again (the link came back): {}", pn_line(pn))
        }
        Event::InventoryChanged { pn_id, pne, change } => println!(
            "inventory: {change}{}{}",
            pn_id.map_or_else(String::new, |p| format!(" PN {p}")),
            pne.as_ref().map_or_else(String::new, |p| format!(" {p}"))
        ),
        Event::Content {
            pn_id,
            from,
            owner,
            text,
            hex,
            ..
        } => match text {
            // Another member's words: shown escaped, so they cannot steer the terminal.
            Some(t) => println!("PN {pn_id}: {from} ({owner}) says: {}", t.escape_debug()),
            None => println!(
                "PN {pn_id}: {from} ({owner}) sent {} bytes: {hex}",
                hex.len() / 2
            ),
        },
        Event::ContentRefused { pn_id, from, error } => {
            println!("PN {pn_id}: content naming {from} refused: {error}")
        }
        Event::ServiceGroupInvited {
            group_id,
            name,
            inviter,
            owner,
            ..
        } => println!(
            "invited by {inviter} into service group {group_id} \"{}\" of {owner}",
            name.escape_debug()
        ),
        Event::ServiceGroupKey { group_id, epoch } => {
            println!("service group {group_id}: key of epoch {epoch} held")
        }
        Event::ServiceGroupEnded { group_id, why } => {
            println!("service group {group_id}: membership ended ({why})")
        }
        Event::ServiceGroupContent {
            group_id,
            from,
            owner,
            text,
            hex,
            ..
        } => match text {
            // Another member's words: shown escaped, so they cannot steer the terminal.
            Some(t) => println!(
                "service group {group_id}: {from} ({owner}) says: {}",
                t.escape_debug()
            ),
            None => println!(
                "service group {group_id}: {from} ({owner}) sent {} bytes: {hex}",
                hex.len() / 2
            ),
        },
        Event::ServiceGroupContentRefused {
            group_id,
            from,
            error,
        } => println!("service group {group_id}: content naming {from} refused: {error}"),
        Event::DeliveryOffered {
            session,
            source,
            owner,
            name,
            size,
            more,
            ..
        } => println!(
            "delivery {session} offered by {source} ({owner}): \"{}\", {size} bytes{}",
            name.escape_debug(),
            more.iter()
                .map(|i| format!(
                    ", then \"{}\" as {}, {} bytes",
                    i.name.escape_debug(),
                    i.service_id.escape_debug(),
                    i.size
                ))
                .collect::<String>()
        ),
        Event::DeliveryReceived {
            session,
            from,
            name,
            bytes,
            specific,
            more,
        } => println!(
            "delivery {session} from {from} received: \"{}\"{}, {bytes} bytes, {} \
             checked{}",
            name.escape_debug(),
            more.iter()
                .map(|n| format!(", \"{}\"", n.escape_debug()))
                .collect::<String>(),
            if more.is_empty() {
                "its hash"
            } else {
                "each hash"
            },
            if *specific > 0 {
                format!(" (and {specific} bytes for this PNE only)")
            } else {
                String::new()
            }
        ),
        Event::DeliverySent { session, delivered } => println!(
            "delivery {session}: done; delivered to {}",
            if delivered.is_empty() {
                "no target".to_string()
            } else {
                names(delivered)
            }
        ),
        Event::DeliveryEnded {
            session,
            target,
            result,
            reason,
        } => match reason {
            Some(r) => println!("delivery {session} at {target}: {result} ({r})"),
            None => println!("delivery {session} at {target}: {result}"),
        },
        Event::MessageReceived {
            from, text, hex, ..
        } => match text {
            Some(t) => println!("message from {from}: {}", t.escape_debug()),
            None => println!("message from {from}: {hex} (hex)"),
        },
        Event::DeliveryRequested {
            requester,
            name,
            pn_id,
            ..
        } => println!(
            "{requester} (PN {pn_id}) asks for \"{}\"",
            name.escape_debug()
        ),
        Event::DeliveryControlled { session, action } => {
            println!("delivery {session}: its source asked {action}")
        }
        Event::ServiceMatch { watch_id, entry } => println!(
            "watch {watch_id}: {} \"{}\" ({}) offered by {} of {}, directory entry {}",
            entry.service_id,
            entry.name.escape_debug(),
            entry.service_type,
            entry.offerer,
            entry.owner,
            entry.dir_id
        ),
        // The rest, as the line came.
        other @ (Event::PanAuthenticated { .. }
        | Event::CapabilitiesReported {}
        | Event::UsageSent { .. }
        | Event::Status { .. }) => println!("{}", cpns_control::encode_event(other)),
    }
}

/// `PN <id> at <PN GW>: <members>`.
fn pn_line(pn: &Pn) -> String {
    let members = if pn.members.is_empty() {
        "no members".to_string()
    } else {
        names(&pn.members)
    };
    format!("PN {} at {}: {members}", pn.pn_id, pn.gateway)
}

/// One line per PN: its id, its PN GW and its members; on a PN GW's `members`, who holds
/// its current group key.
fn print_pns(pns: &[Pn]) {
    if pns.is_empty() {
        println!("no PNs");
    }
    for pn in pns {
        println!("{}{}", pn_line(pn), key_holders(pn));
    }
}

/// On a PN GW's `members`: the current epoch and who confirmed holding its key.
fn key_holders(pn: &Pn) -> String {
    let Some(confirmed) = &pn.confirmed else {
        return String::new();
    };
    let who = if confirmed.is_empty() {
        "none yet".to_string()
    } else {
        names(confirmed)
    };
    match pn.epoch {
        Some(epoch) => format!("; group key epoch {epoch}, confirmed by: {who}"),
        None => "; group key epoch not known yet (no member pulled it since the start)".into(),
    }
}
