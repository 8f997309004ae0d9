//! What a PNE's machine tells, as the control API's events (`cpns_control::Event`): the lines
//! of the `events` stream an application on the device follows (CPNS-5, 004 §5.3.2.5), and the
//! `completed` event of a PN GW's establishment.
//!
//! A PN change is told the same way whoever asked for it: a command's completion that joined
//! or left a PN is told as `pn_joined` / `pn_left` / `pn_released` / `pn_expelled` too, then as
//! `completed`, so an application follows its PNs from the PN events alone.

use std::time::Instant;

use cpns_control::{ApiError, Entry, Event, Gone as ApiGone, Outcome as ApiOutcome, Pn};
use cpns_proto::pne::{Gone, Outcome, PneEvent};
use cpns_proto::{Completed, Failure, Flow};

/// A flow's name on the socket: `pn_release`, `membership_change`, …
pub fn flow_name(f: Flow) -> &'static str {
    match f {
        Flow::EntityDiscovery => "entity_discovery",
        Flow::PanAuthentication => "pan_authentication",
        Flow::PnEstablishment => "pn_establishment",
        Flow::PnRegistration => "pn_registration",
        Flow::PneRegistration => "pne_registration",
        Flow::SecureCall => "secure_call",
        Flow::StatusUpdate => "status_update",
        Flow::InventoryReconciliation => "inventory_reconciliation",
        Flow::KeepingAnswer => "keeping_answer",
        Flow::PnRelease => "pn_release",
        Flow::MembershipChange => "membership_change",
        Flow::InventoryQuery => "inventory_query",
        Flow::StatusManagement => "status_management",
        Flow::ConnectionSetup => "connection_setup",
        Flow::GroupContent => "group_content",
        // `Flow` is `#[non_exhaustive]`: a flow added later is named here when it is.
        _ => "other",
    }
}

fn failure(f: &Failure) -> ApiError {
    f.to_error().into()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The events a PNE's event is told as, `now` being when it is told (for the time left to
/// answer an invitation).
pub fn pne_events(e: &PneEvent, now: Instant) -> Vec<Event> {
    match e {
        PneEvent::Completed(c) => completed(c),
        PneEvent::InvitationDeclined(pn_id) => vec![Event::InvitationDeclined { pn_id: *pn_id }],
        PneEvent::Invited {
            pn_id,
            from,
            deadline,
        } => vec![Event::Invited {
            pn_id: *pn_id,
            from: from.clone(),
            within_ms: u64::try_from(deadline.saturating_duration_since(now).as_millis())
                .unwrap_or(u64::MAX),
        }],
        PneEvent::PanAuthenticated { pn_id, suite } => vec![Event::PanAuthenticated {
            pn_id: *pn_id,
            suite: suite.name().into(),
        }],
        PneEvent::PnJoined {
            inventory,
            initiator,
        } => vec![Event::PnJoined {
            pn: inventory.into(),
            initiator: *initiator,
        }],
        PneEvent::PnRefused { pn_id, reason } => vec![Event::PnRefused {
            pn_id: *pn_id,
            error: failure(reason),
        }],
        PneEvent::Registered {
            cpns_id,
            pn_id,
            lifetime_s,
        } => vec![Event::Registered {
            cpns_id: cpns_id.clone(),
            pn_id: *pn_id,
            lifetime_s: *lifetime_s,
        }],
        PneEvent::PnReleased(pn_id) => vec![Event::PnReleased {
            pn_id: *pn_id,
            by_me: false,
        }],
        PneEvent::Expelled(pn_id) => vec![Event::PnExpelled { pn_id: *pn_id }],
        PneEvent::PnUpdated {
            inventory,
            epoch,
            has_key,
        } => vec![Event::PnUpdated {
            pn: inventory.into(),
            epoch: *epoch,
            has_key: *has_key,
        }],
        PneEvent::MembershipConfirmed { pn_id, epoch } => vec![Event::GroupKey {
            pn_id: *pn_id,
            epoch: *epoch,
            has_key: true,
        }],
        PneEvent::CapabilitiesReported => vec![Event::CapabilitiesReported {}],
        PneEvent::StatusNotified(n) => vec![status(n)],
        PneEvent::InventoryChanged { pn_id, pne, change } => vec![Event::InventoryChanged {
            pn_id: Some(*pn_id),
            pne: pne.clone(),
            change: change.name().into(),
        }],
        PneEvent::InventoryFollowedAgain { inventory } => vec![Event::InventoryFollowed {
            pn: inventory.into(),
        }],
        PneEvent::ServiceMatched(m) => vec![Event::ServiceMatch {
            watch_id: m.watch_id,
            entry: cpns_control::ServiceEntry::from(&m.entry),
        }],
        PneEvent::ServiceGroupInvited(m) => vec![Event::ServiceGroupInvited {
            group_id: m.group_id,
            name: m.name.clone(),
            inviter: m.inviter.clone(),
            owner: m.owner.clone(),
            expires_at_ms: m.expires_at_ms,
        }],
        PneEvent::ServiceGroupKey { group_id, epoch } => vec![Event::ServiceGroupKey {
            group_id: *group_id,
            epoch: *epoch,
        }],
        PneEvent::ServiceGroupEnded { group_id, why } => vec![Event::ServiceGroupEnded {
            group_id: *group_id,
            why: match why {
                cpns_wire::GroupEndReason::Deleted => "deleted",
                cpns_wire::GroupEndReason::Expelled => "expelled",
            }
            .into(),
        }],
        PneEvent::UsageSent {
            sent,
            duplicates,
            charged,
            withheld,
        } => vec![Event::UsageSent {
            sent: *sent,
            duplicates: *duplicates,
            charged: *charged,
            withheld: *withheld,
        }],
        PneEvent::GroupContent {
            pn_id,
            epoch,
            from,
            owner,
            content,
        } => vec![Event::Content {
            pn_id: *pn_id,
            epoch: *epoch,
            from: from.clone(),
            owner: owner.clone(),
            text: String::from_utf8(content.clone()).ok(),
            hex: hex::encode(content),
        }],
        PneEvent::ServiceGroupContent {
            group_id,
            epoch,
            from,
            owner,
            content,
        } => vec![Event::ServiceGroupContent {
            group_id: *group_id,
            epoch: *epoch,
            from: from.clone(),
            owner: owner.clone(),
            text: String::from_utf8(content.clone()).ok(),
            hex: hex::encode(content),
        }],
        PneEvent::ServiceGroupContentRefused {
            group_id,
            from,
            reason,
        } => vec![Event::ServiceGroupContentRefused {
            group_id: *group_id,
            from: from.clone(),
            error: failure(reason),
        }],
        PneEvent::DeliveryOffered {
            session,
            source,
            owner,
            service_id,
            name,
            media_type,
            size,
            more,
        } => vec![Event::DeliveryOffered {
            session: *session,
            source: source.clone(),
            owner: owner.clone(),
            service_id: service_id.clone(),
            name: name.clone(),
            media_type: media_type.clone(),
            size: *size,
            more: more
                .iter()
                .map(|i| cpns_control::OfferedItem {
                    service_id: i.service_id.clone(),
                    name: i.name.clone(),
                    media_type: i.media_type.clone(),
                    size: i.size,
                })
                .collect(),
        }],
        PneEvent::DeliveryReceived {
            session,
            from,
            name,
            bytes,
            specific,
            more,
        } => vec![Event::DeliveryReceived {
            session: *session,
            from: from.clone(),
            name: name.clone(),
            bytes: *bytes,
            specific: *specific,
            more: more.clone(),
        }],
        PneEvent::DeliverySent { session, delivered } => vec![Event::DeliverySent {
            session: *session,
            delivered: delivered.clone(),
        }],
        PneEvent::DeliveryEnded {
            session,
            target,
            result,
            reason,
        } => vec![Event::DeliveryEnded {
            session: *session,
            target: target.clone(),
            result: delivery_result(*result).into(),
            reason: reason.clone(),
        }],
        PneEvent::MessageReceived {
            from,
            owner,
            pn_id,
            service_id,
            media_type,
            payload,
        } => vec![Event::MessageReceived {
            from: from.clone(),
            owner: owner.clone(),
            pn_id: *pn_id,
            service_id: service_id.clone(),
            media_type: media_type.clone(),
            text: String::from_utf8(payload.clone()).ok(),
            hex: hex::encode(payload),
        }],
        PneEvent::DeliveryRequested {
            requester,
            owner,
            name,
            service_id,
            pn_id,
        } => vec![Event::DeliveryRequested {
            requester: requester.clone(),
            owner: owner.clone(),
            name: name.clone(),
            service_id: service_id.clone(),
            pn_id: *pn_id,
        }],
        PneEvent::DeliveryControlled { session, action } => vec![Event::DeliveryControlled {
            session: *session,
            action: action.name().into(),
        }],
        PneEvent::ContentRefused {
            pn_id,
            from,
            reason,
        } => vec![Event::ContentRefused {
            pn_id: *pn_id,
            from: from.clone(),
            error: failure(reason),
        }],
        PneEvent::FlowFailed { flow, reason } => vec![Event::FlowFailed {
            flow: flow_name(*flow).into(),
            error: failure(reason),
        }],
    }
}

/// A status notification as its event.
pub fn status(n: &cpns_wire::StatusNotification) -> Event {
    Event::Status {
        subscription: n.subscription,
        reason: crate::status_hub::reason_name(n.reason).into(),
        entries: n.entries.iter().map(Entry::from).collect(),
        lagged: n.lagged,
    }
}

/// A command's completion: the PN change it made, if any, then `completed`.
fn completed(c: &Completed<Outcome>) -> Vec<Event> {
    let mut events: Vec<Event> = match &c.result {
        Ok(o) => pn_change(o).into_iter().collect(),
        Err(_) => Vec::new(),
    };
    let (outcome, error) = match &c.result {
        Ok(o) => (Some(outcome(o)), None),
        Err(f) => (None, Some(failure(f))),
    };
    events.push(Event::Completed {
        command: c.id.0,
        flow: flow_name(c.flow).into(),
        outcome,
        error,
    });
    events
}

/// The PN change an outcome made, as the PN event told whoever asked for it.
fn pn_change(o: &Outcome) -> Option<Event> {
    match o {
        Outcome::PnJoined {
            inventory,
            initiator,
        } => Some(Event::PnJoined {
            pn: inventory.into(),
            initiator: *initiator,
        }),
        Outcome::PnGone { pn_id, why } => Some(match why {
            Gone::Released { by_me } => Event::PnReleased {
                pn_id: *pn_id,
                by_me: *by_me,
            },
            Gone::Left => Event::PnLeft { pn_id: *pn_id },
            Gone::Expelled => Event::PnExpelled { pn_id: *pn_id },
        }),
        Outcome::GroupKey {
            pn_id,
            epoch,
            has_key,
        } => Some(Event::GroupKey {
            pn_id: *pn_id,
            epoch: *epoch,
            has_key: *has_key,
        }),
        Outcome::Discovered { .. }
        | Outcome::PanAuthenticated { .. }
        | Outcome::Registered { .. }
        | Outcome::SecureAnswer { .. }
        | Outcome::InviteAnswered { .. }
        | Outcome::MemberExpelled { .. }
        | Outcome::Inventory { .. }
        | Outcome::Capabilities { .. }
        | Outcome::StatusReported
        | Outcome::Statuses(_)
        | Outcome::Subscribed { .. }
        | Outcome::Unsubscribed(_)
        | Outcome::Rejoined { .. }
        | Outcome::UsageSent { .. }
        | Outcome::ContentSent { .. }
        | Outcome::ServicePublished(_)
        | Outcome::ServiceUnpublished { .. }
        | Outcome::ServicesFound(_)
        | Outcome::ServiceRetrieved(_)
        | Outcome::ServiceWatching { .. }
        | Outcome::ServiceUnwatched { .. }
        | Outcome::ServiceGroupKey { .. }
        | Outcome::ServiceGroupDone { .. }
        | Outcome::ServiceGroupMembers(_)
        | Outcome::ServiceGroupSent { .. }
        | Outcome::DeliveryGranted { .. }
        | Outcome::DeliveryRequested { .. }
        | Outcome::MessageSent { .. }
        | Outcome::DeliveryEnded { .. }
        | Outcome::ContentsDeclared { .. }
        | Outcome::InvitationAnswered { .. } => None,
    }
}

/// A PNE command's outcome, as the API tells it.
pub fn outcome(o: &Outcome) -> ApiOutcome {
    match o {
        Outcome::Discovered {
            gateway,
            zone_support,
            pns,
        } => ApiOutcome::Discovered {
            gateway: gateway.clone(),
            zone_support: *zone_support,
            pns: pns.clone(),
        },
        Outcome::PanAuthenticated { pn_id, suite } => ApiOutcome::PanAuthenticated {
            pn_id: *pn_id,
            suite: suite.name().into(),
        },
        Outcome::PnJoined {
            inventory,
            initiator,
        } => ApiOutcome::PnJoined {
            pn: inventory.into(),
            initiator: *initiator,
        },
        Outcome::Registered {
            cpns_id,
            pn_id,
            lifetime_s,
        } => ApiOutcome::Registered {
            cpns_id: cpns_id.clone(),
            pn_id: *pn_id,
            lifetime_s: *lifetime_s,
        },
        Outcome::SecureAnswer { service, payload } => ApiOutcome::SecureAnswer {
            service: service.clone(),
            payload_hex: hex::encode(payload),
        },
        Outcome::PnGone { pn_id, why } => {
            let (why, by_me) = match why {
                Gone::Released { by_me } => (ApiGone::Released, *by_me),
                Gone::Left => (ApiGone::Left, true),
                Gone::Expelled => (ApiGone::Expelled, false),
            };
            ApiOutcome::PnGone {
                pn_id: *pn_id,
                why,
                by_me,
            }
        }
        Outcome::InviteAnswered { pn_id, accepted } => ApiOutcome::InviteAnswered {
            pn_id: *pn_id,
            accepted: *accepted,
        },
        Outcome::MemberExpelled { pn_id, pne } => ApiOutcome::MemberExpelled {
            pn_id: *pn_id,
            pne: pne.clone(),
        },
        Outcome::Inventory { pns, .. } => ApiOutcome::Inventory {
            pns: pns.iter().map(Pn::from).collect(),
        },
        Outcome::Capabilities { reported } => ApiOutcome::Capabilities {
            reported: *reported,
        },
        Outcome::StatusReported => ApiOutcome::StatusReported {},
        Outcome::Statuses(entries) => ApiOutcome::Statuses {
            entries: entries.iter().map(Entry::from).collect(),
        },
        Outcome::Subscribed {
            subscription,
            entries,
        } => ApiOutcome::Subscribed {
            subscription: *subscription,
            entries: entries.iter().map(Entry::from).collect(),
        },
        Outcome::Unsubscribed(subscription) => ApiOutcome::Unsubscribed {
            subscription: *subscription,
        },
        Outcome::GroupKey {
            pn_id,
            epoch,
            has_key,
        } => ApiOutcome::GroupKey {
            pn_id: *pn_id,
            epoch: *epoch,
            has_key: *has_key,
        },
        Outcome::Rejoined { pns } => ApiOutcome::Rejoined { pns: pns.clone() },
        Outcome::UsageSent {
            ids,
            duplicates,
            charged,
            withheld,
            ..
        } => ApiOutcome::UsageSent {
            sent: count(ids.len()),
            duplicates: *duplicates,
            charged: *charged,
            withheld: count(withheld.len()),
        },
        Outcome::InvitationAnswered { pn_id, accepted } => ApiOutcome::InvitationAnswered {
            pn_id: *pn_id,
            accepted: *accepted,
        },
        Outcome::ContentSent { pn_id, delivered } => ApiOutcome::ContentSent {
            pn_id: *pn_id,
            delivered: *delivered,
        },
        Outcome::ServicePublished(p) => ApiOutcome::ServicePublished {
            dir_id: p.dir_id,
            expires_at_ms: p.expires_at_ms,
        },
        Outcome::ServiceUnpublished { removed } => {
            ApiOutcome::ServiceUnpublished { removed: *removed }
        }
        Outcome::ServicesFound(f) => ApiOutcome::ServicesFound {
            dir_ids: f.entries.iter().map(|e| e.dir_id).collect(),
            more: f.more,
        },
        Outcome::ServiceRetrieved(d) => ApiOutcome::ServiceRetrieved { dir_id: d.dir_id },
        Outcome::ServiceWatching { watch_id } => ApiOutcome::ServiceWatching {
            watch_id: *watch_id,
        },
        Outcome::ServiceUnwatched { removed } => ApiOutcome::ServiceUnwatched { removed: *removed },
        Outcome::ServiceGroupKey { group_id, epoch } => ApiOutcome::ServiceGroupKey {
            group_id: *group_id,
            epoch: *epoch,
        },
        Outcome::ServiceGroupDone { group_id, epoch } => ApiOutcome::ServiceGroupDone {
            group_id: *group_id,
            epoch: *epoch,
        },
        Outcome::ServiceGroupSent {
            group_id,
            epoch,
            delivered,
        } => ApiOutcome::ServiceGroupSent {
            group_id: *group_id,
            epoch: *epoch,
            delivered: *delivered,
        },
        Outcome::MessageSent { to } => ApiOutcome::MessageSent { to: to.clone() },
        Outcome::DeliveryRequested { source, name } => ApiOutcome::DeliveryRequested {
            source: source.clone(),
            name: name.clone(),
        },
        Outcome::DeliveryGranted { session, .. } => {
            ApiOutcome::DeliveryGranted { session: *session }
        }
        Outcome::DeliveryEnded { session, .. } => {
            ApiOutcome::DeliveryRecorded { session: *session }
        }
        Outcome::ContentsDeclared { count } => ApiOutcome::ContentsDeclared { count: *count },
        Outcome::ServiceGroupMembers(m) => ApiOutcome::ServiceGroupMembers {
            group_id: m.group_id,
            members: m.members.iter().map(|x| x.entity.clone()).collect(),
        },
    }
}

/// A delivery's end as the API names it.
pub fn delivery_result(r: cpns_wire::DeliveryResult) -> &'static str {
    match r {
        cpns_wire::DeliveryResult::Delivered => "delivered",
        cpns_wire::DeliveryResult::Declined => "declined",
        cpns_wire::DeliveryResult::HashMismatch => "hash_mismatch",
        cpns_wire::DeliveryResult::Failed => "failed",
        cpns_wire::DeliveryResult::Stopped => "stopped",
        _ => "unknown",
    }
}
