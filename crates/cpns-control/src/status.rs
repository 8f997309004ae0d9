//! Status, usage and charging as JSON (004 §5.5.3, §5.5.4, CPNS-4; docs/device-status.md):
//! an entity's status entry, a subscription's policy, a usage summary row, a charging record,
//! and the conversions from and to the wire's types.

use cpns_wire::{
    Attribute, ChargingRecord, Crossing, EntityId, PnId, PolicyKind, Status, StatusEntry,
    StatusPolicy, UserId,
};
use serde::{Deserialize, Serialize};

/// One entity's status as the server records it (or as a notification tells it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The entity.
    #[serde(with = "crate::text")]
    pub entity: EntityId,
    /// `online`, `offline`, `busy` or `custom` (with its `label`); `status-N` for a status of
    /// a newer version.
    pub status: String,
    /// The label of a `custom` status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Since when, ms since the Unix epoch; absent if never reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Remaining battery, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
    /// Remaining battery time, minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_minutes: Option<u32>,
    /// Memory available, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_mb: Option<u32>,
    /// On the server: the entity's user.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text::opt"
    )]
    pub owner: Option<UserId>,
    /// On the server: the PN GW that reported it (none: itself).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text::opt"
    )]
    pub reported_by: Option<EntityId>,
}

/// The name a status goes by.
pub fn status_name(s: Status) -> String {
    match s {
        Status::Online => "online".into(),
        Status::Offline => "offline".into(),
        Status::Busy => "busy".into(),
        Status::Custom => "custom".into(),
        other => format!("status-{}", other.code()),
    }
}

/// The status a name stands for.
pub fn status_named(s: &str) -> Option<Status> {
    Some(match s {
        "online" => Status::Online,
        "offline" => Status::Offline,
        "busy" => Status::Busy,
        "custom" => Status::Custom,
        other => Status::from_code(other.strip_prefix("status-")?.parse().ok()?),
    })
}

impl From<&StatusEntry> for Entry {
    fn from(e: &StatusEntry) -> Self {
        Self {
            entity: e.entity.clone(),
            status: status_name(e.status),
            label: e.label.clone(),
            since_ms: e.since_ms,
            battery_pct: e.battery_pct,
            battery_minutes: e.battery_minutes,
            free_memory_mb: e.free_memory_mb,
            owner: None,
            reported_by: None,
        }
    }
}

/// A status a PNE may set for itself: `online`, `busy` or `custom` with a label (`offline` is
/// its PN GW's to say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnStatus {
    /// Reachable and serving.
    Online,
    /// Reachable but not taking work.
    Busy,
    /// The user's own, named by a label.
    Custom,
}

impl From<OwnStatus> for Status {
    fn from(s: OwnStatus) -> Self {
        match s {
            OwnStatus::Online => Status::Online,
            OwnStatus::Busy => Status::Busy,
            OwnStatus::Custom => Status::Custom,
        }
    }
}

/// A numeric attribute a threshold looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAttribute {
    /// Remaining battery, percent.
    BatteryPct,
    /// Remaining battery time, minutes.
    BatteryMinutes,
    /// Memory available, MiB.
    FreeMemoryMb,
}

/// When a subscription notifies (004 §5.5.3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Policy {
    /// At every change of status or label.
    #[default]
    OnChange,
    /// When `attribute` crosses a bound: `below` or `above` (one of them).
    Threshold {
        /// The attribute.
        attribute: PolicyAttribute,
        /// Notify when it goes below this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<u32>,
        /// Notify when it goes above this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<u32>,
    },
    /// Every `period_s` seconds.
    Periodic {
        /// The period, seconds.
        period_s: u32,
    },
}

impl Policy {
    /// The wire's policy; a threshold names exactly one of `below` and `above`.
    pub fn to_wire(self) -> Result<StatusPolicy, String> {
        Ok(match self {
            Policy::OnChange => StatusPolicy {
                kind: PolicyKind::OnChange,
                attribute: None,
                crossing: None,
                bound: None,
                period_s: None,
            },
            Policy::Threshold {
                attribute,
                below,
                above,
            } => {
                let (crossing, bound) = match (below, above) {
                    (Some(b), None) => (Crossing::Below, b),
                    (None, Some(b)) => (Crossing::Above, b),
                    _ => return Err("a threshold policy has one of \"below\" or \"above\"".into()),
                };
                StatusPolicy {
                    kind: PolicyKind::Threshold,
                    attribute: Some(match attribute {
                        PolicyAttribute::BatteryPct => Attribute::BatteryPct,
                        PolicyAttribute::BatteryMinutes => Attribute::BatteryMinutes,
                        PolicyAttribute::FreeMemoryMb => Attribute::FreeMemoryMb,
                    }),
                    crossing: Some(crossing),
                    bound: Some(bound),
                    period_s: None,
                }
            }
            Policy::Periodic { period_s } => StatusPolicy {
                kind: PolicyKind::Periodic,
                attribute: None,
                crossing: None,
                bound: None,
                period_s: Some(period_s),
            },
        })
    }
}

/// Usage of one service: a device's own, or on the server per user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRow {
    /// The user (the server's summaries).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text::opt"
    )]
    pub user: Option<UserId>,
    /// The service.
    pub service: String,
    /// Uses.
    pub uses: u64,
    /// Total time, seconds.
    pub seconds: u64,
    /// Total volume, bytes.
    pub bytes: u64,
}

/// A usage reporting preference (004 §5.5.4): what may leave the device, and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    /// Never leaves the device.
    Private,
    /// To the CPNS Server only.
    Server,
    /// To the server and the external applications it serves.
    Shared,
    /// (Setting only) back to the device's default.
    Default,
}

/// One service's own preference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePreference {
    /// The service.
    pub service: String,
    /// Its preference.
    pub preference: Preference,
}

/// A charging record (CPNS-4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    /// The user charged.
    #[serde(with = "crate::text")]
    pub user: UserId,
    /// The consuming device.
    #[serde(with = "crate::text")]
    pub entity: EntityId,
    /// The PN of the use.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text::opt"
    )]
    pub pn_id: Option<PnId>,
    /// That PN's owner, when another user's.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text::opt"
    )]
    pub pn_owner: Option<UserId>,
    /// The service.
    pub service: String,
    /// Start, seconds since the Unix epoch.
    pub start_s: u64,
    /// End.
    pub end_s: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Units charged.
    pub units: u64,
}

impl From<&ChargingRecord> for Charge {
    fn from(c: &ChargingRecord) -> Self {
        Self {
            user: c.user.clone(),
            entity: c.entity.clone(),
            pn_id: c.pn_id,
            pn_owner: c.pn_owner.clone(),
            service: c.service.clone(),
            start_s: c.start_s,
            end_s: c.end_s,
            bytes: c.bytes,
            units: c.units,
        }
    }
}
