//! How `cpns server`, `cpns gateway` and `cpns pne` show what happens, on stdout: one readable
//! line per event,
//!
//! ```text
//! 14:02:11 pn established  pn=3f2a…c1 gateway=home-gw members=phone,watch initiator=phone
//! ```
//!
//! or, with `--json`, one JSON object per line with the time (`ts`, RFC 3339), the `role`, the
//! `event` (snake_case) and the event's fields, PN ids in full:
//!
//! ```text
//! {"ts":"2025-06-01T14:02:11.042+02:00","role":"gateway","event":"pn_established","pn_id":"3f2a…",…}
//! ```
//!
//! Every event is described once, as a name and a list of fields ([`Described`]), by one
//! `describe_*` function per event enum; the line and the JSON object are both rendered from
//! that description. A change of the proto event enums is therefore adapted to in those three
//! `match`es. Reasons are taken with `to_string()`, so they may be `String`s or any type with
//! `Display`. The matches name every variant (the enums are the workspace's own, not
//! `#[non_exhaustive]`): an event added to the machines does not build until it is described
//! here, so none is ever shown as Rust `Debug` output or as "unknown".

use std::io::Write;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use cpns_proto::gateway::{GatewayEvent, Outcome as GwOutcome};
use cpns_proto::pne::{Gone, Outcome, PneEvent};
use cpns_proto::server::ServerEvent;
use cpns_proto::{CommandId, Completed, Flow};
use cpns_wire::{EntityId, PnId, PnInventory};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// Which runtime prints the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `cpns server`.
    Server,
    /// `cpns gateway`.
    Gateway,
    /// `cpns pne`.
    Pne,
}

impl Role {
    /// The role as written in JSON output.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Gateway => "gateway",
            Role::Pne => "pne",
        }
    }
}

/// Events of the command itself rather than of a protocol machine: where it listens, and the
/// outcome of a PN GW-initiated establishment started with `--establish`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RunEvent {
    /// `cpns elect` waits for the other device at this address.
    ElectionListening(String),
    /// The PN GW election ended (002 §B.1.1.1): `gateway` is the PN GW; `me` if it is this
    /// device; where PNEs reach it.
    Elected {
        gateway: EntityId,
        me: bool,
        pan_address: Option<String>,
    },
    /// The server listens for PN GWs at this address.
    Listening(String),
    /// The PN GW listens for PNEs at this address.
    PanListening(String),
    /// The entity takes `cpns pn` requests on this control socket.
    ControlListening(String),
    /// The PN GW started establishing this PN (000 §6.6.1.2).
    Establishing(PnId),
    /// The PN GW could not start an establishment.
    EstablishFailed(String),
}

/// A field's value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    /// Text: an entity id, a CPNS id, a reason.
    Text(String),
    /// A PN id: short in lines, whole in JSON.
    Pn(PnId),
    /// Several PN ids.
    Pns(Vec<PnId>),
    /// Several entity ids.
    List(Vec<String>),
    /// Yes or no.
    Bool(bool),
    /// A count or a number of seconds.
    Number(u64),
    /// The items after the first of a delivery (several services in one session).
    Items(Vec<cpns_wire::DeliveryItem>),
}

/// One field of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    /// Its JSON key: the event field's name.
    key: &'static str,
    /// Its label in a line, shorter where the key is long (`pn` for `pn_id`).
    label: &'static str,
    value: Value,
}

/// An event described once, rendered as a line or as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Described {
    /// snake_case name.
    name: &'static str,
    fields: Vec<Field>,
}

impl Described {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            fields: Vec::new(),
        }
    }

    fn field(mut self, key: &'static str, label: &'static str, value: Value) -> Self {
        self.fields.push(Field { key, label, value });
        self
    }

    fn text(self, key: &'static str, value: impl ToString) -> Self {
        self.field(key, key, Value::Text(value.to_string()))
    }

    /// The command an event completes: in the JSON only (`"command": 3`), where a client
    /// matches it to what it asked; a line leaves it out.
    fn command(self, id: CommandId) -> Self {
        self.field("command", "", Value::Number(id.0))
    }

    fn pn(self, key: &'static str, pn: PnId) -> Self {
        self.field(key, "pn", Value::Pn(pn))
    }

    fn inventory(self, inv: &PnInventory) -> Self {
        let members = inv.members.iter().map(|m| m.pne_id.to_string()).collect();
        self.pn("pn_id", inv.pn_id)
            .text("gateway", &inv.gateway)
            .field("members", "members", Value::List(members))
    }
}

/// Describes an event of the PN GW.
pub(crate) fn describe_gateway(e: &GatewayEvent) -> Described {
    match e {
        GatewayEvent::WanReady => Described::new("wan_ready"),
        GatewayEvent::WanFailed(reason) => Described::new("wan_failed").text("reason", reason),
        GatewayEvent::WanRefused(e) => Described::new("wan_refused")
            .text("code", e.code.name())
            .text("reason", &e.reason),
        GatewayEvent::RelayRefused {
            message,
            bytes,
            limit,
        } => Described::new("relay_refused")
            .text("message", message)
            .text("bytes", bytes)
            .text("limit", limit),
        GatewayEvent::LinkProven { link, pne } => Described::new("link_proven")
            .text("link", link.0)
            .text("pne", pne.as_str()),
        GatewayEvent::DeliveryRelayed {
            session,
            source,
            bytes,
        } => Described::new("delivery_relayed")
            .text("session", session)
            .text("source", source)
            .field("bytes", "bytes", Value::Number(*bytes)),
        GatewayEvent::DeliveryRefused {
            session,
            from,
            reason,
        } => Described::new("delivery_refused")
            .text("session", session)
            .text("from", from)
            .text("reason", reason),
        GatewayEvent::ContentRelayed {
            pn_id,
            from,
            delivered,
        } => Described::new("content_relayed")
            .pn("pn_id", *pn_id)
            .text("from", from)
            .field(
                "delivered",
                "delivered",
                Value::Number(u64::from(*delivered)),
            ),
        GatewayEvent::PneDiscovered { link, pne } => Described::new("pne_discovered")
            .text("pne", pne)
            .field("link", "link", Value::Number(link.0)),
        GatewayEvent::PanAuthenticated { pne, pn_id, suite } => Described::new("pan_authenticated")
            .text("pne", pne)
            .pn("pn_id", *pn_id)
            .text("suite", suite.name()),
        GatewayEvent::Completed(c) => describe_gateway_completed(c),
        GatewayEvent::PnEstablished {
            inventory,
            initiator,
        } => {
            // A PN without an initiating PNE was initiated by the PN GW itself (§6.6.1.2).
            let initiator = initiator.as_ref().unwrap_or(&inventory.gateway);
            established(inventory, initiator)
        }
        GatewayEvent::EstablishmentFailed { pn_id, reason } => {
            Described::new("establishment_failed")
                .pn("pn_id", *pn_id)
                .text("reason", reason)
        }
        GatewayEvent::PneRegistered { pne, cpns_id } => Described::new("pne_registered")
            .text("pne", pne)
            .text("cpns_id", cpns_id),
        GatewayEvent::LinkRejected { link, reason } => Described::new("link_rejected")
            .field("link", "link", Value::Number(link.0))
            .text("reason", reason),
        GatewayEvent::PnReleased {
            pn_id,
            by,
            notified,
        } => gw_released(
            *pn_id,
            by.as_ref().map_or("owner", |p| p.as_str()),
            notified,
        ),
        // Its last member is out, so the PN went with it (at the server too).
        GatewayEvent::PnEmptied { pn_id } => Described::new("pn_emptied").pn("pn_id", *pn_id),
        GatewayEvent::MemberRemoved {
            pn_id,
            pne,
            left,
            epoch,
            notified,
        } => member_removed(*pn_id, pne, *left, *epoch, notified),
        GatewayEvent::MemberJoined {
            pn_id,
            pne,
            epoch,
            notified,
        } => {
            let notified = notified.iter().map(ToString::to_string).collect();
            let d = Described::new("member_joined")
                .pn("pn_id", *pn_id)
                .text("pne", pne);
            let d = match epoch {
                Some(e) => d.field("epoch", "epoch", Value::Number(*e)),
                None => d,
            };
            d.field("notified", "notified", Value::List(notified))
        }
        GatewayEvent::PnExpired { pn_id } => Described::new("pn_expired").pn("pn_id", *pn_id),
        GatewayEvent::PneConfirmAsked {
            pne,
            pn_id,
            requesting_gw,
            confirmed,
        } => Described::new("pne_confirm_asked")
            .text("pne", pne)
            .pn("pn_id", *pn_id)
            .text("requesting_gw", requesting_gw)
            .field("confirmed", "confirmed", Value::Bool(*confirmed)),
        GatewayEvent::MemberConfirmed { pn_id, pne, epoch } => Described::new("member_confirmed")
            .pn("pn_id", *pn_id)
            .text("pne", pne)
            .field("epoch", "epoch", Value::Number(*epoch)),
        GatewayEvent::InviteEnded {
            pn_id,
            invitee,
            reason,
        } => {
            let d = Described::new("invite_ended")
                .pn("pn_id", *pn_id)
                .text("invitee", invitee);
            match reason {
                None => d.text("reason", "declined"),
                Some(r) => d.text("reason", r),
            }
        }
        GatewayEvent::MembershipChangeFailed { pn_id, pne, reason } => {
            Described::new("membership_change_failed")
                .pn("pn_id", *pn_id)
                .text("pne", pne)
                .text("reason", reason)
        }
        GatewayEvent::DepartedKeyNotStored { pn_id, pne, reason } => {
            Described::new("departed_key_not_stored")
                .pn("pn_id", *pn_id)
                .text("pne", pne)
                .text("reason", reason)
        }
        GatewayEvent::ReleaseFailed { pn_id, reason } => Described::new("release_failed")
            .pn("pn_id", *pn_id)
            .text("reason", reason),
        GatewayEvent::StatusNotified(n) => notified(n),
        GatewayEvent::Subscribed {
            subscription,
            entries,
        } => subscribed(*subscription, entries),
    }
}

/// A status notification: its subscription, why, and each entity as `id=status`.
fn notified(n: &cpns_wire::StatusNotification) -> Described {
    let entries: Vec<String> = n.entries.iter().map(entry_word).collect();
    Described::new("status_notified")
        .field(
            "subscription",
            "subscription",
            Value::Number(n.subscription),
        )
        .text("reason", cpns_node::status_hub::reason_name(n.reason))
        .field("entries", "entries", Value::List(entries))
}

/// `phone=busy`, `phone=custom:driving`, `phone=online(battery 9%)`.
fn entry_word(e: &cpns_wire::StatusEntry) -> String {
    let status = match &e.label {
        Some(l) => format!("custom:{l}"),
        None => crate::status::status_name(e.status),
    };
    match e.battery_pct {
        Some(b) => format!("{}={status}(battery {b}%)", e.entity),
        None => format!("{}={status}", e.entity),
    }
}

/// Describes an event of a PNE. A command's completion reads as what it did, with the
/// command's id in the JSON (`command`); a failed one as `flow failed`.
pub(crate) fn describe_pne(e: &PneEvent) -> Described {
    match e {
        PneEvent::Completed(c) => describe_completed(c),
        PneEvent::InvitationDeclined(pn) => Described::new("invitation_declined").pn("pn_id", *pn),
        PneEvent::Invited { pn_id, from, .. } => Described::new("invited")
            .pn("pn_id", *pn_id)
            .text("from", from),
        PneEvent::PanAuthenticated { pn_id, suite } => Described::new("pan_authenticated")
            .pn("pn_id", *pn_id)
            .text("suite", suite.name()),
        PneEvent::PnJoined {
            inventory,
            initiator,
        } => joined(inventory, *initiator),
        PneEvent::PnRefused { pn_id, reason } => Described::new("pn_refused")
            .pn("pn_id", *pn_id)
            .text("reason", reason),
        PneEvent::Registered {
            cpns_id,
            pn_id,
            lifetime_s,
        } => registered(cpns_id, *pn_id, *lifetime_s),
        PneEvent::FlowFailed { flow, reason } => failed(*flow, reason),
        PneEvent::ServiceGroupKey { group_id, epoch } => Described::new("service_group_key")
            .text("group_id", group_id)
            .field("epoch", "epoch", Value::Number(*epoch)),
        PneEvent::ServiceGroupInvited(m) => Described::new("service_group_invited")
            .text("group_id", m.group_id)
            .text("name", &m.name)
            .text("inviter", &m.inviter),
        PneEvent::ServiceGroupEnded { group_id, why } => Described::new("service_group_ended")
            .text("group_id", group_id)
            .text(
                "why",
                match why {
                    cpns_wire::GroupEndReason::Deleted => "deleted",
                    cpns_wire::GroupEndReason::Expelled => "expelled",
                },
            ),
        PneEvent::ServiceMatched(m) => Described::new("service_match")
            .field("watch_id", "watch", Value::Number(m.watch_id))
            .field("dir_id", "directory entry", Value::Number(m.entry.dir_id))
            .text("service_id", &m.entry.service_id)
            .text("offerer", &m.entry.offerer),
        PneEvent::GroupContent {
            pn_id,
            epoch,
            from,
            owner,
            content,
        } => {
            let d = Described::new("content")
                .pn("pn_id", *pn_id)
                .text("from", from)
                .text("owner", owner)
                .field("epoch", "", Value::Number(*epoch))
                .field("hex", "", Value::Text(hex::encode(content)));
            // A line shows short text as it is (escaped), anything else by its size.
            match std::str::from_utf8(content) {
                Ok(t) if t.chars().count() <= SHOWN_TEXT => d.text("text", t),
                _ => d.field("bytes", "bytes", Value::Number(content.len() as u64)),
            }
        }
        PneEvent::ServiceGroupContent {
            group_id,
            epoch,
            from,
            owner,
            content,
        } => {
            let d = Described::new("service_group_content")
                .text("group_id", group_id)
                .text("from", from)
                .text("owner", owner)
                .field("epoch", "", Value::Number(*epoch))
                .field("hex", "", Value::Text(hex::encode(content)));
            match std::str::from_utf8(content) {
                Ok(t) if t.chars().count() <= SHOWN_TEXT => d.text("text", t),
                _ => d.field("bytes", "bytes", Value::Number(content.len() as u64)),
            }
        }
        PneEvent::ServiceGroupContentRefused {
            group_id,
            from,
            reason,
        } => Described::new("service_group_content_refused")
            .text("group_id", group_id)
            .text("from", from)
            .text("reason", reason),
        PneEvent::DeliveryOffered {
            session,
            source,
            owner,
            name,
            size,
            more,
            ..
        } => {
            let d = Described::new("delivery_offered")
                .text("session", session)
                .text("source", source)
                .text("owner", owner)
                .text("name", name)
                .field("size", "bytes", Value::Number(*size));
            if more.is_empty() {
                d
            } else {
                d.field("more", "then", Value::Items(more.clone()))
            }
        }
        PneEvent::DeliveryReceived {
            session,
            from,
            name,
            bytes,
            specific,
            more,
        } => {
            let d = Described::new("delivery_received")
                .text("session", session)
                .text("from", from)
                .text("name", name)
                .field("bytes", "bytes", Value::Number(*bytes))
                .field("specific", "bytes of its own", Value::Number(*specific));
            if more.is_empty() {
                d
            } else {
                d.field("more", "and", Value::List(more.clone()))
            }
        }
        PneEvent::MessageReceived {
            from,
            service_id,
            media_type,
            payload,
            ..
        } => {
            let d = Described::new("message_received")
                .text("from", from)
                .text("service_id", service_id)
                .text("media_type", media_type);
            match std::str::from_utf8(payload) {
                Ok(text) => d.text("text", text.escape_debug()),
                Err(_) => d.text("hex", hex::encode(payload)),
            }
        }
        PneEvent::DeliveryRequested {
            requester,
            name,
            service_id,
            pn_id,
            ..
        } => Described::new("delivery_requested")
            .text("requester", requester)
            .text("name", name)
            .text("service_id", service_id)
            .pn("pn_id", *pn_id),
        PneEvent::DeliveryControlled { session, action } => Described::new("delivery_controlled")
            .text("session", session)
            .text("action", action.name()),
        PneEvent::DeliverySent { session, delivered } => Described::new("delivery_sent")
            .text("session", session)
            .field(
                "delivered",
                "delivered to",
                Value::List(delivered.iter().map(ToString::to_string).collect()),
            ),
        PneEvent::DeliveryEnded {
            session,
            target,
            result,
            reason,
        } => {
            let d = Described::new("delivery_ended")
                .text("session", session)
                .text("target", target)
                .text(
                    "result",
                    cpns_node::control::events::delivery_result(*result),
                );
            match reason {
                Some(r) => d.text("reason", r),
                None => d,
            }
        }
        PneEvent::ContentRefused {
            pn_id,
            from,
            reason,
        } => Described::new("content_refused")
            .pn("pn_id", *pn_id)
            .text("from", from)
            .text("reason", reason),
        PneEvent::Expelled(pn) => Described::new("expelled").pn("pn_id", *pn),
        PneEvent::PnUpdated {
            inventory,
            epoch,
            has_key,
        } => Described::new("pn_updated")
            .inventory(inventory)
            .field("epoch", "epoch", Value::Number(*epoch))
            .field("has_key", "has_key", Value::Bool(*has_key)),
        PneEvent::MembershipConfirmed { pn_id, epoch } => Described::new("membership_confirmed")
            .pn("pn_id", *pn_id)
            .field("epoch", "epoch", Value::Number(*epoch)),
        PneEvent::PnReleased(pn_id) => released(*pn_id, false),
        PneEvent::CapabilitiesReported => Described::new("capabilities_reported"),
        PneEvent::StatusNotified(n) => notified(n),
        PneEvent::InventoryChanged { pn_id, pne, change } => {
            let d = Described::new("inventory_changed")
                .pn("pn_id", *pn_id)
                .text("change", change.name());
            match pne {
                Some(p) => d.text("pne", p),
                None => d,
            }
        }
        PneEvent::InventoryFollowedAgain { inventory } => {
            Described::new("inventory_followed").inventory(inventory)
        }
        PneEvent::UsageSent {
            sent,
            duplicates,
            charged,
            withheld,
        } => usage_sent(*sent, *duplicates, *charged, *withheld),
    }
}

/// Describes a command of the PN GW's owner that ended: as the event the PN GW would tell of
/// the same change, with the command's id in the JSON.
fn describe_gateway_completed(c: &Completed<GwOutcome>) -> Described {
    let d = match &c.result {
        Err(reason) => match c.flow {
            Flow::PnEstablishment => Described::new("establishment_failed").text("reason", reason),
            Flow::PnRelease => Described::new("release_failed").text("reason", reason),
            _ => failed(c.flow, reason),
        },
        Ok(o) => match o {
            GwOutcome::Established { inventory } => established(inventory, &inventory.gateway),
            GwOutcome::Released { pn_id, notified } => gw_released(*pn_id, "owner", notified),
            GwOutcome::Expelled {
                pn_id,
                pne,
                epoch,
                notified,
            } => member_removed(*pn_id, pne, false, *epoch, notified),
            GwOutcome::Invited {
                pn_id,
                pne,
                joined: true,
            } => Described::new("invited")
                .pn("pn_id", *pn_id)
                .text("invitee", pne)
                .field("joined", "joined", Value::Bool(true)),
            // As a member's invitation that ended without a join is told.
            GwOutcome::Invited {
                pn_id,
                pne,
                joined: false,
            } => Described::new("invite_ended")
                .pn("pn_id", *pn_id)
                .text("invitee", pne)
                .text("reason", "declined"),
            GwOutcome::Capabilities { reported: true } => Described::new("capabilities_reported"),
            GwOutcome::Capabilities { reported: false } => Described::new("capabilities_kept"),
            GwOutcome::StatusReported => Described::new("status_reported"),
            GwOutcome::Subscribed {
                subscription,
                entries,
            } => subscribed(*subscription, entries),
            GwOutcome::GroupDone { group_id, epoch } => Described::new("service_group_done")
                .text("group_id", group_id)
                .field("epoch", "epoch", Value::Number(*epoch)),
            GwOutcome::GroupMembers(m) => Described::new("service_group_members")
                .text("group_id", m.group_id)
                .field(
                    "members",
                    "members",
                    Value::List(m.members.iter().map(|x| x.entity.to_string()).collect()),
                ),
        },
    };
    d.command(c.id)
}

fn established(inventory: &PnInventory, initiator: &EntityId) -> Described {
    Described::new("pn_established")
        .inventory(inventory)
        .text("initiator", initiator)
}

fn gw_released(pn_id: PnId, by: &str, notified: &[EntityId]) -> Described {
    let notified = notified.iter().map(ToString::to_string).collect();
    Described::new("pn_released")
        .pn("pn_id", pn_id)
        .text("by", by)
        .field("notified", "notified", Value::List(notified))
}

fn member_removed(
    pn_id: PnId,
    pne: &EntityId,
    left: bool,
    epoch: Option<u64>,
    notified: &[EntityId],
) -> Described {
    let notified = notified.iter().map(ToString::to_string).collect();
    let d = Described::new(if left {
        "member_left"
    } else {
        "member_expelled"
    })
    .pn("pn_id", pn_id)
    .text("pne", pne);
    let d = match epoch {
        Some(e) => d.field("epoch", "epoch", Value::Number(e)),
        None => d,
    };
    d.field("notified", "notified", Value::List(notified))
}

/// The longest content text a line shows; longer content is shown by its size.
const SHOWN_TEXT: usize = 200;

/// Describes a PNE command's completion.
fn describe_completed(c: &Completed<Outcome>) -> Described {
    let d = match &c.result {
        Err(reason) => failed(c.flow, reason),
        Ok(o) => match o {
            Outcome::Discovered {
                gateway,
                zone_support,
                pns,
            } => Described::new("discovered")
                .text("gateway", gateway)
                .field("zone_support", "zone_support", Value::Bool(*zone_support))
                .field("pns", "pns", Value::Pns(pns.clone())),
            Outcome::PanAuthenticated { pn_id, suite } => Described::new("pan_authenticated")
                .pn("pn_id", *pn_id)
                .text("suite", suite.name()),
            Outcome::PnJoined {
                inventory,
                initiator,
            } => joined(inventory, *initiator),
            Outcome::Registered {
                cpns_id,
                pn_id,
                lifetime_s,
            } => registered(cpns_id, *pn_id, *lifetime_s),
            Outcome::SecureAnswer { service, payload } => {
                let d = Described::new("secure_answer").text("service", service);
                // The echo service answers text; the others CBOR, which their own commands read.
                if service == cpns_wire::ECHO_SERVICE {
                    d.text("payload", String::from_utf8_lossy(payload))
                } else {
                    d.field("bytes", "bytes", Value::Number(payload.len() as u64))
                }
            }
            Outcome::PnGone { pn_id, why } => match why {
                Gone::Released { by_me } => released(*pn_id, *by_me),
                Gone::Left => Described::new("pn_left").pn("pn_id", *pn_id),
                Gone::Expelled => Described::new("expelled").pn("pn_id", *pn_id),
            },
            Outcome::InviteAnswered { pn_id, accepted } => Described::new("invite_answered")
                .pn("pn_id", *pn_id)
                .field("accepted", "accepted", Value::Bool(*accepted)),
            Outcome::MemberExpelled { pn_id, pne } => Described::new("member_expelled")
                .pn("pn_id", *pn_id)
                .text("pne", pne),
            Outcome::ContentSent { pn_id, delivered } => {
                Described::new("content_sent").pn("pn_id", *pn_id).field(
                    "delivered",
                    "delivered",
                    Value::Number(u64::from(*delivered)),
                )
            }
            Outcome::ServicePublished(p) => Described::new("service_published")
                .field("dir_id", "directory id", Value::Number(p.dir_id))
                .field(
                    "expires_at_ms",
                    "lease ends (Unix ms)",
                    Value::Number(p.expires_at_ms),
                ),
            Outcome::ServiceUnpublished { removed } => Described::new("service_unpublished").field(
                "removed",
                "removed",
                Value::Bool(*removed),
            ),
            Outcome::ServicesFound(f) => Described::new("services_found").field(
                "dir_ids",
                "entries",
                Value::List(f.entries.iter().map(|e| e.dir_id.to_string()).collect()),
            ),
            Outcome::ServiceWatching { watch_id } => Described::new("service_watching").field(
                "watch_id",
                "watch",
                Value::Number(*watch_id),
            ),
            Outcome::ServiceUnwatched { removed } => Described::new("service_unwatched").field(
                "removed",
                "removed",
                Value::Bool(*removed),
            ),
            Outcome::ServiceGroupKey { group_id, epoch } => Described::new("service_group_key")
                .text("group_id", group_id)
                .field("epoch", "epoch", Value::Number(*epoch)),
            Outcome::ServiceGroupDone { group_id, epoch } => Described::new("service_group_done")
                .text("group_id", group_id)
                .field("epoch", "epoch", Value::Number(*epoch)),
            Outcome::ServiceGroupSent {
                group_id,
                epoch,
                delivered,
            } => Described::new("service_group_sent")
                .text("group_id", group_id)
                .field("epoch", "epoch", Value::Number(*epoch))
                .field(
                    "delivered",
                    "delivered",
                    Value::Number(u64::from(*delivered)),
                ),
            Outcome::MessageSent { to } => Described::new("message_sent").text("to", to),
            Outcome::DeliveryRequested { source, name } => Described::new("delivery_asked")
                .text("source", source)
                .text("name", name),
            Outcome::DeliveryGranted {
                session,
                pn_id,
                also,
            } => {
                let d = Described::new("delivery_granted")
                    .text("session", session)
                    .pn("pn_id", *pn_id);
                if also.is_empty() {
                    d
                } else {
                    let more: Vec<String> = also.iter().map(ToString::to_string).collect();
                    d.text("also", more.join(","))
                }
            }
            Outcome::DeliveryEnded { session, .. } => {
                Described::new("delivery_recorded").text("session", session)
            }
            Outcome::ContentsDeclared { count } => Described::new("contents_declared").field(
                "count",
                "contents",
                Value::Number(u64::from(*count)),
            ),
            Outcome::ServiceGroupMembers(m) => Described::new("service_group_members")
                .text("group_id", m.group_id)
                .field(
                    "members",
                    "members",
                    Value::List(m.members.iter().map(|x| x.entity.to_string()).collect()),
                ),
            Outcome::ServiceRetrieved(d) => Described::new("service_retrieved")
                .field("dir_id", "directory id", Value::Number(d.dir_id))
                .text("offerer", &d.offerer),
            Outcome::Inventory { pns, .. } => {
                let ids = pns.iter().map(|p| p.pn_id.to_string()).collect();
                Described::new("inventory_read").field("pns", "pns", Value::List(ids))
            }
            Outcome::Capabilities { reported: true } => Described::new("capabilities_reported"),
            Outcome::Capabilities { reported: false } => Described::new("capabilities_kept"),
            Outcome::StatusReported => Described::new("status_reported"),
            Outcome::Statuses(entries) => Described::new("status_answered").field(
                "entries",
                "entries",
                Value::List(entries.iter().map(entry_word).collect()),
            ),
            Outcome::Subscribed {
                subscription,
                entries,
            } => subscribed(*subscription, entries),
            Outcome::Unsubscribed(id) => Described::new("unsubscribed").field(
                "subscription",
                "subscription",
                Value::Number(*id),
            ),
            Outcome::GroupKey {
                pn_id,
                epoch,
                has_key,
            } => Described::new("group_key_pulled")
                .pn("pn_id", *pn_id)
                .field("epoch", "epoch", Value::Number(*epoch))
                .field("has_key", "has_key", Value::Bool(*has_key)),
            Outcome::Rejoined { pns } => {
                Described::new("rejoined").field("pns", "pns", Value::Pns(pns.clone()))
            }
            Outcome::InvitationAnswered { pn_id, accepted } => {
                Described::new("invitation_answered")
                    .pn("pn_id", *pn_id)
                    .field("accepted", "accepted", Value::Bool(*accepted))
            }
            Outcome::UsageSent {
                ids,
                duplicates,
                charged,
                withheld,
                ..
            } => {
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                usage_sent(
                    count(ids.len()),
                    *duplicates,
                    *charged,
                    count(withheld.len()),
                )
            }
        },
    };
    d.command(c.id)
}

fn usage_sent(sent: u32, duplicates: u32, charged: u32, withheld: u32) -> Described {
    Described::new("usage_sent")
        .field("sent", "sent", Value::Number(sent.into()))
        .field("duplicates", "duplicates", Value::Number(duplicates.into()))
        .field("charged", "charged", Value::Number(charged.into()))
        .field("withheld", "withheld", Value::Number(withheld.into()))
}

fn subscribed(subscription: u64, entries: &[cpns_wire::StatusEntry]) -> Described {
    Described::new("subscribed")
        .field("subscription", "subscription", Value::Number(subscription))
        .field(
            "entries",
            "entries",
            Value::List(entries.iter().map(entry_word).collect()),
        )
}

fn joined(inventory: &PnInventory, initiator: bool) -> Described {
    Described::new("pn_joined").inventory(inventory).field(
        "initiator",
        "initiator",
        Value::Bool(initiator),
    )
}

fn registered(cpns_id: &cpns_wire::CpnsId, pn_id: PnId, lifetime_s: u32) -> Described {
    Described::new("registered")
        .text("cpns_id", cpns_id)
        .pn("pn_id", pn_id)
        .field("lifetime_s", "lifetime_s", Value::Number(lifetime_s.into()))
}

fn released(pn_id: PnId, by_me: bool) -> Described {
    Described::new("pn_released")
        .pn("pn_id", pn_id)
        .field("by_me", "by_me", Value::Bool(by_me))
}

fn failed(flow: cpns_proto::Flow, reason: &cpns_proto::Failure) -> Described {
    Described::new("flow_failed")
        .text("flow", flow)
        .text("reason", reason)
}

/// Describes an event of a CPNS Server session.
pub(crate) fn describe_server(e: &ServerEvent) -> Described {
    match e {
        ServerEvent::GatewayAuthenticated(gw) => {
            Described::new("gateway_authenticated").text("gateway", gw)
        }
        ServerEvent::GatewayReady(gw) => Described::new("gateway_ready").text("gateway", gw),
        ServerEvent::InventoryReconciled { confirmed, removed } => {
            Described::new("inventory_reconciled")
                .field("confirmed", "confirmed", Value::Pns(confirmed.clone()))
                .field("removed", "removed", Value::Pns(removed.clone()))
        }
        ServerEvent::PnRegistered { pn_id, members } => {
            Described::new("pn_registered").pn("pn_id", *pn_id).field(
                "members",
                "members",
                Value::List(members.iter().map(ToString::to_string).collect()),
            )
        }
        ServerEvent::MembersRemoved {
            pn_id,
            removed,
            epoch,
        } => {
            let removed = removed.iter().map(ToString::to_string).collect();
            Described::new("members_removed")
                .pn("pn_id", *pn_id)
                .field("removed", "removed", Value::List(removed))
                .field("epoch", "epoch", Value::Number(*epoch))
        }
        ServerEvent::PnReleased { pn_id, gateway } => Described::new("pn_released")
            .pn("pn_id", *pn_id)
            .text("gateway", gateway),
        ServerEvent::PneRegistered { pne_id, cpns_id } => Described::new("pne_registered")
            .text("pne_id", pne_id)
            .text("cpns_id", cpns_id),
        ServerEvent::AuthenticationFailed { entity, reason } => {
            Described::new("authentication_failed")
                .text("entity", entity)
                .text("reason", reason)
        }
        ServerEvent::FlowFailed { flow, reason } => Described::new("flow_failed")
            .text("flow", flow)
            .text("reason", reason),
        ServerEvent::DeliveryEnded {
            session,
            target,
            result,
        } => Described::new("delivery_ended")
            .text("session", session)
            .text("target", target)
            .text(
                "result",
                cpns_node::control::events::delivery_result(*result),
            ),
        ServerEvent::DeliverySent { session, delivered } => Described::new("delivery_sent")
            .text("session", session)
            .field(
                "delivered",
                "delivered to",
                Value::List(delivered.iter().map(ToString::to_string).collect()),
            ),
        ServerEvent::InventoryChanged {
            owner,
            pn_id,
            pne,
            change,
        } => {
            let d = Described::new("inventory_changed")
                .text("owner", owner)
                .text("change", change.name());
            let d = match pn_id {
                Some(p) => d.pn("pn_id", *p),
                None => d,
            };
            match pne {
                Some(p) => d.text("pne", p),
                None => d,
            }
        }
        ServerEvent::DeliveryStopped { session, reason } => Described::new("delivery_stopped")
            .text("session", session)
            .text("reason", reason),
        ServerEvent::DeliveryRefused { session, reason } => Described::new("delivery_refused")
            .text("session", session)
            .text("reason", reason),
    }
}

/// Describes an event of the command itself.
pub(crate) fn describe_run(e: &RunEvent) -> Described {
    match e {
        RunEvent::ElectionListening(addr) => {
            Described::new("election_listening").text("addr", addr)
        }
        RunEvent::Elected {
            gateway,
            me,
            pan_address,
        } => {
            let d = Described::new("elected").text("gateway", gateway).field(
                "me",
                "me",
                Value::Bool(*me),
            );
            match pan_address {
                Some(a) => d.text("pan_address", a),
                None => d,
            }
        }
        RunEvent::Listening(addr) => Described::new("listening").text("addr", addr),
        RunEvent::PanListening(addr) => Described::new("pan_listening").text("addr", addr),
        RunEvent::ControlListening(path) => Described::new("control_listening").text("path", path),
        RunEvent::Establishing(pn) => Described::new("establishing").pn("pn_id", *pn),
        RunEvent::EstablishFailed(reason) => {
            Described::new("establish_failed").text("reason", reason)
        }
    }
}

/// The line of a PN GW event.
pub(crate) fn gateway_line(ts: &DateTime<FixedOffset>, e: &GatewayEvent) -> String {
    line(ts, &describe_gateway(e))
}

/// The JSON object of a PN GW event.
pub(crate) fn gateway_json(ts: &DateTime<FixedOffset>, e: &GatewayEvent) -> String {
    json(ts, Role::Gateway, &describe_gateway(e))
}

/// The line of a PNE event.
pub(crate) fn pne_line(ts: &DateTime<FixedOffset>, e: &PneEvent) -> String {
    line(ts, &describe_pne(e))
}

/// The JSON object of a PNE event.
pub(crate) fn pne_json(ts: &DateTime<FixedOffset>, e: &PneEvent) -> String {
    json(ts, Role::Pne, &describe_pne(e))
}

/// The line of a server event.
pub(crate) fn server_line(ts: &DateTime<FixedOffset>, e: &ServerEvent) -> String {
    line(ts, &describe_server(e))
}

/// The JSON object of a server event.
pub(crate) fn server_json(ts: &DateTime<FixedOffset>, e: &ServerEvent) -> String {
    json(ts, Role::Server, &describe_server(e))
}

/// `HH:MM:SS name with spaces  label=value …`.
pub(crate) fn line(ts: &DateTime<FixedOffset>, d: &Described) -> String {
    let mut out = ts.format("%H:%M:%S ").to_string();
    out.push_str(&d.name.replace('_', " "));
    let shown = d.fields.iter().filter(|f| !f.label.is_empty());
    for (i, f) in shown.enumerate() {
        out.push_str(if i == 0 { "  " } else { " " });
        out.push_str(f.label);
        out.push('=');
        match &f.value {
            Value::Text(t) => out.push_str(&quoted(t)),
            Value::Pn(pn) => out.push_str(&short_pn(pn)),
            Value::Pns(pns) => {
                out.push_str(&list(pns.iter().map(short_pn)));
            }
            Value::List(items) => out.push_str(&list(items.iter().map(|s| quoted(s)))),
            Value::Bool(b) => out.push_str(if *b { "yes" } else { "no" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::Items(items) => out.push_str(&list(items.iter().map(|i| {
                format!(
                    "{} ({}, {} bytes)",
                    quoted(&i.name),
                    quoted(&i.service_id),
                    i.size
                )
            }))),
        }
    }
    out
}

/// `{"ts":…,"role":…,"event":…,<fields>}` on one line.
pub(crate) fn json(ts: &DateTime<FixedOffset>, role: Role, d: &Described) -> String {
    let obj = JsonEvent { ts, role, d };
    // Serializing strings, numbers and booleans into a String cannot fail.
    serde_json::to_string(&obj).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
}

struct JsonEvent<'a> {
    ts: &'a DateTime<FixedOffset>,
    role: Role,
    d: &'a Described,
}

impl Serialize for JsonEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written by hand so the keys keep this order: ts, role, event, then the fields.
        let mut m = s.serialize_map(Some(3 + self.d.fields.len()))?;
        m.serialize_entry("ts", &self.ts.to_rfc3339_opts(SecondsFormat::Millis, false))?;
        m.serialize_entry("role", self.role.as_str())?;
        m.serialize_entry("event", self.d.name)?;
        for f in &self.d.fields {
            m.serialize_entry(f.key, &f.value)?;
        }
        m.end()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Text(t) => s.serialize_str(t),
            Value::Pn(pn) => s.serialize_str(&pn.to_string()),
            Value::Pns(pns) => {
                let mut seq = s.serialize_seq(Some(pns.len()))?;
                for pn in pns {
                    seq.serialize_element(&pn.to_string())?;
                }
                seq.end()
            }
            Value::List(items) => items.serialize(s),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => s.serialize_u64(*n),
            Value::Items(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(&serde_json::json!({
                        "service_id": i.service_id,
                        "name": i.name,
                        "media_type": i.media_type,
                        "size": i.size,
                    }))?;
                }
                seq.end()
            }
        }
    }
}

/// A PN id as its first four and last two hex digits: `3f2a…c1`.
pub(crate) fn short_pn(pn: &PnId) -> String {
    let hex = pn.to_string();
    let head = hex.get(..4).unwrap_or(&hex);
    let tail = hex.get(hex.len().saturating_sub(2)..).unwrap_or("");
    format!("{head}…{tail}")
}

/// A comma list, `none` when empty.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(",")
    }
}

/// Text as is when it is one plain word; otherwise in double quotes, with `"` and `\` escaped
/// and control characters written as escapes, so a peer's reason cannot break the line or send
/// terminal control sequences.
fn quoted(t: &str) -> String {
    let plain = !t.is_empty()
        && t.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '\\' | '='));
    if plain {
        return t.to_string();
    }
    let mut out = String::with_capacity(t.len() + 2);
    out.push('"');
    for c in t.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prints events of one role to stdout, as lines or JSON, stamped with the local time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventPrinter {
    role: Role,
    json: bool,
}

impl EventPrinter {
    /// A printer for `role`; `json` selects JSON objects instead of lines.
    pub(crate) fn new(role: Role, json: bool) -> Self {
        Self { role, json }
    }

    /// Prints a PN GW event.
    pub(crate) fn gateway(&self, e: &GatewayEvent) {
        let ts = now();
        self.write(if self.json {
            gateway_json(&ts, e)
        } else {
            gateway_line(&ts, e)
        });
    }

    /// Prints a PNE event.
    pub(crate) fn pne(&self, e: &PneEvent) {
        let ts = now();
        self.write(if self.json {
            pne_json(&ts, e)
        } else {
            pne_line(&ts, e)
        });
    }

    /// Prints a server event.
    pub(crate) fn server(&self, e: &ServerEvent) {
        let ts = now();
        self.write(if self.json {
            server_json(&ts, e)
        } else {
            server_line(&ts, e)
        });
    }

    /// Prints an event of the command itself.
    pub(crate) fn run(&self, e: &RunEvent) {
        let ts = now();
        let d = describe_run(e);
        self.write(if self.json {
            json(&ts, self.role, &d)
        } else {
            line(&ts, &d)
        });
    }

    fn write(&self, text: String) {
        // A closed stdout (`cpns pne | head -1`) must not stop the device.
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

/// The local time, with its offset from UTC.
fn now() -> DateTime<FixedOffset> {
    chrono::Local::now().fixed_offset()
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
