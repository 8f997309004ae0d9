//! `cpns group …`: service groups (004 §5.5.9, §5.5.7.2; docs/services.md, "Service groups") on
//! a running PNE (`cpns pne --stay`), through its control socket: make, invite, answer, join,
//! leave, expel, delete; pull the key; list the members and the groups held; send content
//! sealed under the group's key. Each asks the server end to end; what other members send
//! arrives as `service_group_content` events (`cpns pn events`). On a running PN GW (its
//! owner's socket, `--store` its store): make a group for a device of its owner, invite,
//! expel, delete and list the members of its owner's groups.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use cpns_control::{Request, Response};
use cpns_wire::{EntityId, GroupId};

use crate::status::{Target, ask, print_json, unexpected};

#[derive(Args, Debug)]
pub(crate) struct GroupArgs {
    #[command(subcommand)]
    pub verb: GroupVerb,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub(crate) enum GroupVerb {
    /// Make a service group: on a PNE, with itself as its owning member; on a PN GW (its
    /// owner's), for a device of its owner named with --owning.
    Create {
        /// Its name (1 to 64 characters).
        name: String,
        /// The other devices of the owner's user may join without an invitation.
        #[arg(long)]
        open: bool,
        /// On a PN GW: the PNE of its owner that owns the group (and is pushed its key).
        #[arg(long)]
        owning: Option<EntityId>,
    },
    /// Invite a PNE (of any user) into a group this PNE (or this PN GW's owner) owns.
    Invite {
        /// The group.
        group: GroupId,
        /// The PNE.
        pne: EntityId,
    },
    /// Accept an invitation into a group (the consent).
    Accept {
        /// The group.
        group: GroupId,
    },
    /// Decline an invitation into a group.
    Decline {
        /// The group.
        group: GroupId,
    },
    /// Join a group open to this PNE's user.
    Join {
        /// The group.
        group: GroupId,
    },
    /// Leave a group.
    Leave {
        /// The group.
        group: GroupId,
    },
    /// Expel a member from a group this PNE (or this PN GW's owner) owns.
    Expel {
        /// The group.
        group: GroupId,
        /// The member.
        pne: EntityId,
    },
    /// Delete a group this PNE (or this PN GW's owner) owns.
    Delete {
        /// The group.
        group: GroupId,
    },
    /// Pull a group's current key from the server (after being away during a change).
    Key {
        /// The group.
        group: GroupId,
    },
    /// A group's members, the owner first.
    Members {
        /// The group.
        group: GroupId,
    },
    /// The groups whose key this PNE holds.
    List,
    /// Send content to a group's other members, sealed under its key: TEXT, or --hex, or
    /// --file (at most 256 KiB less 256 bytes).
    Send {
        /// The group.
        group: GroupId,
        /// The content as text.
        #[arg(conflicts_with_all = ["hex", "file"], required_unless_present_any = ["hex", "file"])]
        text: Option<String>,
        /// The content as hex.
        #[arg(long, conflicts_with = "file")]
        hex: Option<String>,
        /// The content of a file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// `cpns group`.
pub(crate) async fn group(a: GroupArgs) -> anyhow::Result<()> {
    let t = &a.target;
    let request = match a.verb {
        GroupVerb::Create { name, open, owning } => Request::GroupCreate {
            name,
            open_to_user: open,
            owning,
        },
        GroupVerb::Invite { group, pne } => Request::GroupInvite {
            group_id: group,
            pne,
        },
        GroupVerb::Accept { group } => Request::GroupAnswer {
            group_id: group,
            accept: true,
        },
        GroupVerb::Decline { group } => Request::GroupAnswer {
            group_id: group,
            accept: false,
        },
        GroupVerb::Join { group } => Request::GroupJoin { group_id: group },
        GroupVerb::Leave { group } => Request::GroupLeave { group_id: group },
        GroupVerb::Expel { group, pne } => Request::GroupExpel {
            group_id: group,
            pne,
        },
        GroupVerb::Delete { group } => Request::GroupDelete { group_id: group },
        GroupVerb::Key { group } => Request::GroupKey { group_id: group },
        GroupVerb::Members { group } => Request::GroupMembers { group_id: group },
        GroupVerb::List => Request::Groups {},
        GroupVerb::Send {
            group,
            text,
            hex,
            file,
        } => {
            let hex = match file {
                Some(f) => Some(hex::encode(
                    std::fs::read(&f).with_context(|| format!("read {}", f.display()))?,
                )),
                None => hex,
            };
            Request::GroupSend {
                group_id: group,
                text,
                hex,
            }
        }
    };
    let answer = ask(t, request).await?;
    if t.json {
        print_json(&answer);
        return Ok(());
    }
    println!("{}", line(&answer).ok_or_else(|| unexpected(&answer))?);
    Ok(())
}

/// The readable line of a group verb's answer.
fn line(r: &Response) -> Option<String> {
    Some(match r {
        Response::GroupCreate { group_id, epoch } => {
            format!("made service group {group_id} (epoch {epoch}, its key held)")
        }
        Response::GroupInvite { group_id, pne } => format!(
            "invited {pne} into service group {group_id}; the invitation holds for 5 minutes"
        ),
        Response::GroupAnswer {
            group_id,
            accepted: true,
            epoch,
        } => format!("a member of service group {group_id} (epoch {epoch}, its key held)"),
        Response::GroupAnswer { group_id, .. } => {
            format!("declined the invitation into service group {group_id}")
        }
        Response::GroupJoin { group_id, epoch } => {
            format!("joined service group {group_id} (epoch {epoch}, its key held)")
        }
        Response::GroupLeave { group_id } => format!("left service group {group_id}"),
        Response::GroupExpel {
            group_id,
            pne,
            epoch,
        } => format!("{pne} expelled from service group {group_id}; now at epoch {epoch}"),
        Response::GroupDelete { group_id } => format!("service group {group_id} deleted"),
        Response::GroupKey { group_id, epoch } => {
            format!("service group {group_id}: key of epoch {epoch} held")
        }
        Response::GroupMembers {
            group_id,
            name,
            epoch,
            members,
        } => {
            let who: Vec<String> = members
                .iter()
                .map(|m| {
                    let owns = if m.is_owner { ", owner" } else { "" };
                    format!("{} ({}{owns})", m.pne, m.owner)
                })
                .collect();
            format!(
                "service group {group_id} \"{}\" at epoch {epoch}: {}",
                name.escape_debug(),
                who.join(", ")
            )
        }
        Response::Groups { groups } if groups.is_empty() => "no service groups".into(),
        Response::Groups { groups } => groups
            .iter()
            .map(|g| {
                format!(
                    "{} \"{}\": key of epoch {} held",
                    g.group_id,
                    g.name.escape_debug(),
                    g.epoch
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Response::GroupSend {
            group_id,
            epoch,
            delivered,
        } => {
            let to = match delivered {
                0 => "no other member".to_string(),
                1 => "1 member".to_string(),
                n => format!("{n} members"),
            };
            format!("sent to service group {group_id} under epoch {epoch}'s key; pushed to {to}")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use cpns_control::{GroupMember, HeldGroup};

    fn g() -> GroupId {
        "5d0c1e2f3a4b5c6d7e8f90a1b2c3d4e5".parse().unwrap()
    }

    /// Each answer reads as one line a person understands; another verb's answer is none.
    #[test]
    fn each_answer_is_one_readable_line() {
        let tv = EntityId::new("tv").unwrap();
        let members = Response::GroupMembers {
            group_id: g(),
            name: "Album \"1\"".into(),
            epoch: 3,
            members: vec![
                GroupMember {
                    pne: EntityId::new("phone").unwrap(),
                    owner: "alice".parse().unwrap(),
                    is_owner: true,
                },
                GroupMember {
                    pne: tv.clone(),
                    owner: "bob".parse().unwrap(),
                    is_owner: false,
                },
            ],
        };
        assert_eq!(
            line(&members).unwrap(),
            format!(
                "service group {} \"Album \\\"1\\\"\" at epoch 3: phone (alice, owner), tv (bob)",
                g()
            )
        );
        let sent = |delivered| Response::GroupSend {
            group_id: g(),
            epoch: 4,
            delivered,
        };
        assert!(
            line(&sent(0))
                .unwrap()
                .ends_with("pushed to no other member")
        );
        assert!(line(&sent(1)).unwrap().ends_with("pushed to 1 member"));
        assert!(line(&sent(2)).unwrap().ends_with("pushed to 2 members"));
        let declined = Response::GroupAnswer {
            group_id: g(),
            accepted: false,
            epoch: 2,
        };
        assert!(line(&declined).unwrap().starts_with("declined"));
        let held = Response::Groups {
            groups: vec![HeldGroup {
                group_id: g(),
                name: "Album".into(),
                epoch: 2,
            }],
        };
        assert_eq!(
            line(&held).unwrap(),
            format!("{} \"Album\": key of epoch 2 held", g())
        );
        assert_eq!(
            line(&Response::Groups { groups: vec![] }).unwrap(),
            "no service groups"
        );
        assert!(line(&Response::Events {}).is_none());
        assert!(
            line(&Response::GroupExpel {
                group_id: g(),
                pne: tv,
                epoch: 5
            })
            .unwrap()
            .contains("now at epoch 5")
        );
    }
}
