//! Status management (004 §5.5.3): reports, retrieval, policy-based subscriptions and their
//! notifications, and the heartbeat that lets a missing entity be seen as offline
//! (docs/device-status.md).

use minicbor::{Decode, Encode};

use super::common::{Status, wire_enum};
use crate::ids::{EntityId, RequestId};

/// One entity's status, as reported, recorded or notified.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusEntry {
    /// The entity.
    #[n(0)]
    pub entity: EntityId,
    /// Its status.
    #[n(1)]
    pub status: Status,
    /// The label of a [`Status::Custom`] status, e.g. `driving`.
    #[n(2)]
    pub label: Option<String>,
    /// When the entity took this status, milliseconds since the Unix epoch (set by the
    /// server in what it answers and notifies).
    #[n(3)]
    pub since_ms: Option<u64>,
    /// Remaining battery, percent, as last reported in its capabilities.
    #[n(4)]
    pub battery_pct: Option<u8>,
    /// Estimated remaining battery time, minutes.
    #[n(5)]
    pub battery_minutes: Option<u32>,
    /// Memory available, MiB.
    #[n(6)]
    pub free_memory_mb: Option<u32>,
}

impl StatusEntry {
    /// An entry with only a status.
    pub fn new(entity: EntityId, status: Status) -> Self {
        Self {
            entity,
            status,
            label: None,
            since_ms: None,
            battery_pct: None,
            battery_minutes: None,
            free_memory_mb: None,
        }
    }
}

/// Status Report: a PNE's own status to its PN GW; the PN GW's, and its PNEs' presence, to the
/// server. Answered with [`StatusAck`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusReport {
    /// The entries.
    #[n(0)]
    pub entries: Vec<StatusEntry>,
}

/// Acknowledges a [`StatusReport`] or a [`StatusUnsubscribe`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusAck {}

/// Heartbeat (a notify): the sender is alive. Sent on a link with nothing else to send for the
/// heartbeat interval; a link silent for longer than the receiver's offline bound is closed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Heartbeat {}

/// Status Query: retrieval on request (004 §5.5.3.2), answered from the server's record with
/// [`StatusAnswer`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusQuery {
    /// The entities asked about; none: every device of the asker's user.
    #[n(0)]
    #[cbor(default)]
    pub entities: Vec<EntityId>,
}

/// Status Answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusAnswer {
    /// The entities found, as recorded.
    #[n(0)]
    #[cbor(default)]
    pub entries: Vec<StatusEntry>,
}

wire_enum!(
    /// What makes a subscription notify.
    PolicyKind {
        /// Any change of status or label.
        OnChange = 1,
        /// An attribute crossing a bound, once per crossing.
        Threshold = 2,
        /// The current status, every period.
        Periodic = 3,
    }
);

wire_enum!(
    /// A numeric attribute a threshold policy looks at.
    Attribute {
        /// Remaining battery, percent.
        BatteryPct = 1,
        /// Remaining battery time, minutes.
        BatteryMinutes = 2,
        /// Memory available, MiB.
        FreeMemoryMb = 3,
    }
);

wire_enum!(
    /// Which side of the bound fires a threshold policy.
    Crossing {
        /// The value goes below the bound.
        Below = 1,
        /// The value goes above the bound.
        Above = 2,
    }
);

/// A subscription's policy (004 §5.5.3.2: policy-based status information report).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusPolicy {
    /// The kind.
    #[n(0)]
    pub kind: PolicyKind,
    /// With `Threshold`: the attribute.
    #[n(1)]
    pub attribute: Option<Attribute>,
    /// With `Threshold`: which crossing fires.
    #[n(2)]
    pub crossing: Option<Crossing>,
    /// With `Threshold`: the bound.
    #[n(3)]
    pub bound: Option<u32>,
    /// With `Periodic`: the period, seconds.
    #[n(4)]
    pub period_s: Option<u32>,
}

/// Status Subscribe: from a PN GW for itself, or from a PNE through its PN GW (the envelope's
/// sender is the subscriber). Answered with [`StatusSubscribed`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusSubscribe {
    /// Chosen by the subscriber; a retry with the same id gets the same subscription.
    #[n(0)]
    pub request_id: RequestId,
    /// The entities watched; none: every device of the subscriber's user.
    #[n(1)]
    #[cbor(default)]
    pub entities: Vec<EntityId>,
    /// The policy.
    #[n(2)]
    pub policy: StatusPolicy,
}

/// Status Subscribed: the subscription's id and a snapshot of what it watches.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusSubscribed {
    /// The subscription.
    #[n(0)]
    pub subscription: u64,
    /// The watched entities' status now.
    #[n(1)]
    #[cbor(default)]
    pub entries: Vec<StatusEntry>,
}

/// Status Unsubscribe; answered with [`StatusAck`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusUnsubscribe {
    /// The subscription.
    #[n(0)]
    pub subscription: u64,
}

wire_enum!(
    /// Why a notification was sent.
    NotifyReason {
        /// A watched entity's status changed.
        Change = 1,
        /// A threshold was crossed.
        Threshold = 2,
        /// The period came round.
        Periodic = 3,
    }
);

/// Status Notification (a notify): the server to a subscriber's PN GW, the PN GW to the PNE
/// that subscribed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusNotification {
    /// The subscription.
    #[n(0)]
    pub subscription: u64,
    /// Why.
    #[n(1)]
    pub reason: NotifyReason,
    /// The entities concerned, as now.
    #[n(2)]
    pub entries: Vec<StatusEntry>,
    /// Notifications replaced by newer ones while the subscriber fell behind.
    #[n(3)]
    pub lagged: Option<u32>,
}
