//! PN release (000 §6.6.5, initiated by the PN GW; §6.6.5.1, initiated by a PNE):
//! docs/pn-lifecycle.md.

use minicbor::{Decode, Encode};

use crate::ids::{EntityId, PnId, RequestId};

/// PN Release Request: PN GW to CPNS Server (000 §6.6.5 step 1, §6.6.5.1 step 2), and a member
/// PNE to its PN GW (§6.6.5.1 step 1).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnReleaseRequest {
    /// Chosen by the sender; a retry carries the same one.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN to release.
    #[n(1)]
    pub pn_id: PnId,
    /// PN GW to server: the member PNE that asked its PN GW for the release (§6.6.5.1 step 2);
    /// absent when the PN GW's owner asked. The server checks it may: only an entity of the
    /// PN's owner releases it (docs/pn-lifecycle.md, "Who may change a PN"). Absent from a PNE
    /// to its PN GW, where the link names the asker.
    #[n(2)]
    pub asked_by: Option<EntityId>,
}

/// PN Release Response: CPNS Server to PN GW once the PN is gone from its inventory (000 §6.6.5
/// step 2, §6.6.5.1 step 4), and PN GW to the PNE that asked (§6.6.5.1 step 5).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnReleaseResponse {
    /// The PN released.
    #[n(0)]
    pub pn_id: PnId,
}

/// PN Release Notification: PN GW to each member PNE (000 §6.6.5 steps 3-4, §6.6.5.1 step 6).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnReleaseNotification {
    /// The PN released.
    #[n(0)]
    pub pn_id: PnId,
}
