//! PN GW connection set-up towards the CPNS Server, with authentication, device capabilities
//! update and status update (002 §B.1.1.2 steps 8-17).

use minicbor::{Decode, Encode};

use super::common::{DeviceCapabilities, HashBytes, RandBytes, Status};
use crate::ids::{EntityId, PnId};

/// Connection setup request, PN GW to CPNS Server (002 §B.1.1.2 step 8).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ConnectionSetupRequest {
    /// The PN GW ID.
    #[n(0)]
    pub gw_id: EntityId,
    /// rand_GW, bound into the authentication response.
    #[n(1)]
    pub rand_gw: RandBytes,
    /// Software name and version of the PN GW.
    #[n(2)]
    #[cbor(default)]
    pub software: String,
}

/// Authentication and authorization request, CPNS Server to PN GW (002 §B.1.1.2 step 9).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AuthChallenge {
    /// rand_server.
    #[n(0)]
    pub rand_server: RandBytes,
}

/// Authentication and authorization response, PN GW to CPNS Server (002 §B.1.1.2 step 10): a
/// MAC under the GW's EUKey over both rands and the TLS exporter value (docs/security.md).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AuthResponse {
    /// The MAC.
    #[n(0)]
    pub hash: HashBytes,
}

/// Connection setup confirmation, CPNS Server to PN GW (002 §B.1.1.2 step 11).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ConnectionSetupConfirm {
    /// The server's name, for logs.
    #[n(0)]
    pub server: String,
    /// The largest frame the server accepts, in bytes.
    #[n(1)]
    pub max_frame: u32,
}

/// Device Capabilities Update, PN GW to CPNS Server (002 §B.1.1.2 step 12), and PNE to PN GW
/// (004 §5.5.1).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeviceCapabilitiesUpdate {
    /// The capabilities of the PN GW's device, or of `entity`.
    #[n(0)]
    pub capabilities: DeviceCapabilities,
    /// A PNE of the PN GW's PNs whose capabilities these are, relayed by the PN GW
    /// (docs/device-status.md); none: the sender's own.
    #[n(1)]
    pub entity: Option<EntityId>,
}

/// Device Capabilities confirmation, CPNS Server to PN GW (002 §B.1.1.2 step 13).
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeviceCapabilitiesConfirm {}

/// Status Management update request, CPNS Server to PN GW (002 §B.1.1.2 step 14).
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusUpdateRequest {}

/// Status Management response, PN GW to CPNS Server (002 §B.1.1.2 step 16), after the PN GW's
/// status lookup (step 15).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StatusUpdateResponse {
    /// The PN GW's status.
    #[n(0)]
    pub status: Status,
    /// PNs the PN GW holds in its local inventory (for step 17); with `partial`, only those
    /// stored since its last report.
    #[n(1)]
    #[cbor(default)]
    pub pns: Vec<PnId>,
    /// A change report (docs/ARCHITECTURE.md decision 8): `pns` lists only the PNs stored since
    /// the last report, which the server confirms, removing nothing. The full list goes in the
    /// answer to step 15 and whenever a PN leaves the local inventory.
    #[n(2)]
    #[cbor(default)]
    pub partial: bool,
}
