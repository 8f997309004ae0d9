//! What a command of the PN GW's owner achieved ([`Outcome`], the `Ok` of its
//! [`crate::Completed`]), and the owner's own requests to the server (capabilities, status,
//! subscriptions) waiting for their answer.

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_wire::{EntityId, PnId, PnInventory, StatusEntry};

use super::Gateway;
use crate::{CommandId, Failure, Flow};

/// What a command of a [`Gateway`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `start_establishment`: the PN was established and stored locally (000 §6.6.1.2).
    Established {
        /// The PN inventory.
        inventory: PnInventory,
    },
    /// `release_pn`: the PN is gone from the server's inventory and the local one (000
    /// §6.6.5).
    Released {
        /// The PN.
        pn_id: PnId,
        /// The members told by PN Release Notification.
        notified: Vec<EntityId>,
    },
    /// `expel`: the member is out of the server's inventory and the local one (000 §6.6.3.2).
    Expelled {
        /// The PN.
        pn_id: PnId,
        /// The member expelled.
        pne: EntityId,
        /// The PN's new group key epoch (none when the server had removed it already).
        epoch: Option<u64>,
        /// The remaining members told by PN Update Notification.
        notified: Vec<EntityId>,
    },
    /// `invite`: the invitee answered (000 §6.6.2.1.1 step 2): joined (authenticated by the
    /// server, every member told of the new epoch), or declined.
    Invited {
        /// The PN.
        pn_id: PnId,
        /// The invitee.
        pne: EntityId,
        /// Whether it joined (else it declined).
        joined: bool,
    },
    /// `set_capabilities`: the capabilities are the PN GW's now; `reported` if the server
    /// confirmed them, else they go with the next connection set-up (002 §B.1.1.2 step 12).
    Capabilities {
        /// Whether the server confirmed them.
        reported: bool,
    },
    /// `set_status`: the server recorded the status (004 §5.5.3).
    StatusReported,
    /// A service group request (create, invite, expel, delete): the group and its epoch now
    /// (0: deleted).
    GroupDone {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// Its epoch.
        epoch: u64,
    },
    /// `group_members`: the members, the owner first.
    GroupMembers(Box<cpns_wire::GroupMembers>),
    /// `subscribe_status`: the server keeps the subscription.
    Subscribed {
        /// Its id.
        subscription: u64,
        /// The watched entities now.
        entries: Vec<StatusEntry>,
    },
}

/// What an owner's request to the server waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Asked {
    Capabilities,
    Status,
    Subscribe,
    /// A service group request (`groups.rs`).
    Group,
}

impl Asked {
    /// The flow a request of this kind is.
    fn flow(self) -> Flow {
        match self {
            Asked::Group => Flow::ServiceGroup,
            _ => Flow::StatusManagement,
        }
    }
}

/// The owner's requests to the server waiting for their answer, by WAN message id.
pub(super) type OwnerWaits = BTreeMap<u64, (Asked, CommandId, Instant)>;

impl Gateway {
    /// Ends command `id`'s flow.
    pub(super) fn complete(&mut self, id: CommandId, flow: Flow, result: Result<Outcome, Failure>) {
        self.event(super::GatewayEvent::Completed(crate::Completed {
            id,
            flow,
            result,
        }));
    }

    /// Waits for the server's answer to `msg`, the request of command `id`.
    pub(super) fn wait_owner(&mut self, now: Instant, msg: u64, asked: Asked, id: CommandId) {
        let deadline = now + self.cfg.timeouts.flow;
        self.owner_waits.insert(msg, (asked, id, deadline));
    }

    /// The server answered an owner's request: true if `env` was one.
    pub(super) fn on_owner_answer(&mut self, env: &cpns_wire::Envelope) -> bool {
        let Some((asked, id, _)) = env.in_reply_to.and_then(|r| self.owner_waits.remove(&r)) else {
            return false;
        };
        let result = match (&env.body, asked) {
            (cpns_wire::Body::DeviceCapabilitiesConfirm(_), Asked::Capabilities) => {
                Ok(Outcome::Capabilities { reported: true })
            }
            (cpns_wire::Body::StatusAck(_), Asked::Status) => Ok(Outcome::StatusReported),
            (cpns_wire::Body::StatusSubscribed(s), Asked::Subscribe) => Ok(Outcome::Subscribed {
                subscription: s.subscription,
                entries: s.entries.clone(),
            }),
            (cpns_wire::Body::GatewayGroupResponse(r), Asked::Group) => group_outcome(r),
            (cpns_wire::Body::ErrorBody(e), _) => Err(Failure::Refused(e.clone())),
            (body, _) => Err(Failure::Unexpected(body.name())),
        };
        self.complete(id, asked.flow(), result);
        true
    }

    /// The owner's requests whose answer did not come in time, or whose session ended.
    pub(super) fn owner_timeouts(&mut self, now: Instant) {
        let late = crate::util::take_expired(&mut self.owner_waits, now, |(_, _, d)| *d);
        for (_, (asked, id, _)) in late {
            self.complete(id, asked.flow(), Err(Failure::TimedOut));
        }
    }

    /// The WAN session ended: the owner's requests on it end too.
    pub(super) fn owner_wan_lost(&mut self) {
        for (_, (asked, id, _)) in std::mem::take(&mut self.owner_waits) {
            self.complete(id, asked.flow(), Err(Failure::WanLost));
        }
    }

    pub(super) fn owner_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.owner_waits.values().map(|(_, _, d)| *d)
    }
}

/// A Gateway Group Response as the outcome of the request it answers.
fn group_outcome(r: &cpns_wire::GatewayGroupResponse) -> Result<Outcome, Failure> {
    let unexpected = |_| Failure::Unexpected("GatewayGroupResponse");
    if r.service == cpns_wire::GROUP_MEMBERS {
        return minicbor::decode::<cpns_wire::GroupMembers>(&r.payload)
            .map(|m| Outcome::GroupMembers(Box::new(m)))
            .map_err(unexpected);
    }
    minicbor::decode::<cpns_wire::GroupDone>(&r.payload)
        .map(|d| Outcome::GroupDone {
            group_id: d.group_id,
            epoch: d.epoch,
        })
        .map_err(unexpected)
}
