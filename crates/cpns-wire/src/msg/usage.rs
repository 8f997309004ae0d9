//! Usage statistics (004 §5.5.4) and charging records (CPNS-4): what a PNE reports of the
//! services it used, as its user's preferences allow, and what the server charges for it. Both
//! travel as secure calls ([`USAGE_SERVICE`], [`CHARGING_SERVICE`]), sealed end to end under
//! SK_PNE, so a relaying PN GW can neither read nor forge them (docs/device-status.md).

use minicbor::{Decode, Encode};

use super::common::{Status, wire_enum};
use crate::ids::{EntityId, PnId, UserId};

/// The secure-call service a PNE reports usage to: payload [`UsageReport`], answer
/// [`UsageAccepted`].
pub const USAGE_SERVICE: &str = "cpns.usage";
/// The secure-call service a PNE lists its user's charging records with: payload
/// [`ChargingQuery`], answer [`ChargingList`].
pub const CHARGING_SERVICE: &str = "cpns.charging";

/// Units charged for `bytes` of a service whose tariff is `per_mb` units per started MB (10^6
/// bytes; at least one MB is charged): docs/device-status.md, "Charging".
pub fn charge_units(per_mb: u64, bytes: u64) -> u64 {
    per_mb.saturating_mul(bytes.div_ceil(1_000_000).max(1))
}

wire_enum!(
    /// To whom a reported record may go (the user's preference; `private` records never
    /// travel, so they have no value here).
    Audience {
        /// The CPNS server only.
        Server = 1,
        /// The CPNS server, and external applications it serves.
        Shared = 2,
    }
);

/// A user's reporting preference for one service (004 §5.5.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Preference {
    /// Never leaves the device.
    Private,
    /// Reported to the CPNS server only.
    Server,
    /// Reported to the server, which may give it to external applications.
    Shared,
}

impl Preference {
    /// The stored and typed name.
    pub fn name(self) -> &'static str {
        match self {
            Preference::Private => "private",
            Preference::Server => "server",
            Preference::Shared => "shared",
        }
    }

    /// The preference named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "private" => Some(Preference::Private),
            "server" => Some(Preference::Server),
            "shared" => Some(Preference::Shared),
            _ => None,
        }
    }

    /// To whom a record may go; `None`: nowhere.
    pub fn audience(self) -> Option<Audience> {
        match self {
            Preference::Private => None,
            Preference::Server => Some(Audience::Server),
            Preference::Shared => Some(Audience::Shared),
        }
    }
}

/// One use of a service, as the device recorded it (004 §5.5.4.2: the service usage, and the
/// device's capabilities and status during it).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct UsageRecord {
    /// Chosen by the device; the server counts a record once per (device, id).
    #[n(0)]
    pub id: u64,
    /// The service used.
    #[n(1)]
    pub service: String,
    /// When the use started, seconds since the Unix epoch.
    #[n(2)]
    pub start_s: u64,
    /// When it ended.
    #[n(3)]
    pub end_s: u64,
    /// Bytes moved.
    #[n(4)]
    pub bytes: u64,
    /// To whom the record may go further.
    #[n(5)]
    pub audience: Audience,
    /// The device's status during the use.
    #[n(6)]
    pub status: Option<Status>,
    /// Battery at the start, percent.
    #[n(7)]
    pub battery_start: Option<u8>,
    /// Battery at the end, percent.
    #[n(8)]
    pub battery_end: Option<u8>,
    /// Networks the device used.
    #[n(9)]
    #[cbor(default)]
    pub networks: Vec<String>,
}

/// A batch of usage records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct UsageReport {
    /// The records.
    #[n(0)]
    #[cbor(default)]
    pub records: Vec<UsageRecord>,
}

/// The server's answer to a [`UsageReport`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct UsageAccepted {
    /// Records stored.
    #[n(0)]
    pub stored: u32,
    /// Records it had already (a retried report).
    #[n(1)]
    pub duplicates: u32,
    /// Charging records made.
    #[n(2)]
    pub charged: u32,
}

/// Lists the charging records of the asker's user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ChargingQuery {
    /// Only records of uses that started at or after this time, seconds since the Unix epoch.
    #[n(0)]
    pub since_s: Option<u64>,
}

/// A charging record (CPNS-4): chargeable use attributed to the user whose device consumed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ChargingRecord {
    /// The user charged: the consuming device's owner.
    #[n(0)]
    pub user: UserId,
    /// The consuming device.
    #[n(1)]
    pub entity: EntityId,
    /// The PN the use was reported in.
    #[n(2)]
    pub pn_id: Option<PnId>,
    /// That PN's owner, when another user's (a multi-user PN, 001 §5.2.1.1).
    #[n(3)]
    pub pn_owner: Option<UserId>,
    /// The service.
    #[n(4)]
    pub service: String,
    /// Start, seconds since the Unix epoch.
    #[n(5)]
    pub start_s: u64,
    /// End.
    #[n(6)]
    pub end_s: u64,
    /// Bytes moved.
    #[n(7)]
    pub bytes: u64,
    /// Units charged, from the server's tariff.
    #[n(8)]
    pub units: u64,
}

/// The answer to a [`ChargingQuery`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ChargingList {
    /// The records, oldest first.
    #[n(0)]
    #[cbor(default)]
    pub records: Vec<ChargingRecord>,
}
