//! PNE registration (003 §1.4.1 PN member case, §1.4.2 non-member case) and the PN update the
//! PN GW sends for a non-member (003 §1.4.2 step 4, 000 §6.6.2).

use minicbor::{Decode, Encode};

use super::common::{DeviceCapabilities, HashBytes, PnInventory, RandBytes};
use crate::ids::{CpnsId, EntityId, PnId, RequestId};

/// PNE Registration Request, PNE to PN GW and PN GW to CPNS Server (003 §1.4.1 steps 1-3,
/// §1.4.2 steps 2 and 5).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneRegistrationRequest {
    /// Chosen by the PNE.
    #[n(0)]
    pub request_id: RequestId,
    /// The PNE.
    #[n(1)]
    pub pne_id: EntityId,
    /// The PN the PNE belongs to; absent for a non-member (the PN GW fills it in).
    #[n(2)]
    pub pn_id: Option<PnId>,
    /// rand_PNE.
    #[n(3)]
    pub rand_pne: RandBytes,
    /// The PNE's device capabilities, used when the PN GW adds it to a PN.
    #[n(4)]
    pub capabilities: Option<DeviceCapabilities>,
    /// Asks for a LocalEUKey for (PN, PNE), as a join information's `local_key` does (000
    /// §6.6.1.1 step 1): a PNE on a `cpns` PAN that holds none for the PN it registers in. The
    /// server sends the wrapped copies in its Authentication Request (docs/security.md §4.2).
    /// Absent when false, so a request that asks for none encodes as before.
    #[n(5)]
    #[cbor(default, skip_if = "core::ops::Not::not")]
    pub local_key: bool,
}

/// PNE Registration Response, CPNS Server to PN GW to PNE (003 §1.4.1 steps 3-4).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneRegistrationResponse {
    /// The request answered.
    #[n(0)]
    pub request_id: RequestId,
    /// The PNE.
    #[n(1)]
    pub pne_id: EntityId,
    /// The PN.
    #[n(2)]
    pub pn_id: PnId,
    /// The CPNS ID allocated to the PNE.
    #[n(3)]
    pub cpns_id: CpnsId,
    /// hash_server_PNE, by which the PNE authenticates the server.
    #[n(4)]
    pub hash_server: HashBytes,
    /// [`RegistrationGrant`] sealed end to end under K_dir(server → PNE), the direction key
    /// derived from SK_PNE (docs/security.md §4.6): the PN GW cannot read or alter it.
    #[n(5)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed_grant: Vec<u8>,
    /// When the registration made the PNE a member (a join, 000 §6.6.2.2): the PN's new group
    /// key epoch (docs/pn-lifecycle.md, "Group key epochs").
    #[n(6)]
    pub epoch: Option<u64>,
    /// With `epoch`: the other members' copies of its group key, for the PN GW to hand on (the
    /// joining PNE's own is in the grant). The PN GW strips them before relaying the answer.
    #[n(7)]
    #[cbor(default, skip_if = "Vec::is_empty")]
    pub keys: Vec<crate::SealedGroupKey>,
    /// With `epoch`: the PN's inventory as the server now records it, which the copies name;
    /// the PN GW keeps it and hands it on with them.
    #[n(8)]
    pub inventory: Option<PnInventory>,
}

/// The key material of a registration, sealed from server to PNE (003 §1.4.1 step 3: "security
/// related information such as key").
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RegistrationGrant {
    /// The CPNS ID, repeated under the seal.
    #[n(0)]
    pub cpns_id: CpnsId,
    /// Identifier of the PNE<->server secure session keyed by SK_PNE.
    #[n(1)]
    pub session_id: RandBytes,
    /// Seconds the session is valid for.
    #[n(2)]
    pub lifetime_s: u32,
    /// When the registration made the PNE a member (a join): the PN as the server now records
    /// it, so the joining PNE stores an inventory the PN GW could not alter.
    #[n(3)]
    pub inventory: Option<PnInventory>,
    /// With `inventory`: the PN's group key epoch.
    #[n(4)]
    pub epoch: Option<u64>,
    /// With `epoch`: its group key (the grant itself is sealed for this PNE alone).
    #[n(5)]
    #[cbor(with = "minicbor::bytes")]
    pub group_key: Option<Vec<u8>>,
}

/// PN Update Request, PN GW to CPNS Server (003 §1.4.2 step 4, 000 §6.6.2.1.1 step 3).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnUpdateRequest {
    /// Chosen by the PN GW.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN.
    #[n(1)]
    pub pn_id: PnId,
    /// PNEs to add, with their capabilities.
    #[n(2)]
    #[cbor(default)]
    pub add: Vec<NewMember>,
    /// PNEs to remove.
    #[n(3)]
    #[cbor(default)]
    pub remove: Vec<EntityId>,
    /// The member PNE that asked its PN GW for the change (004 §5.5.10); absent when the PN
    /// GW's owner asked. The server checks it may.
    #[n(4)]
    pub asked_by: Option<EntityId>,
}

/// A PNE added by a PN update.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct NewMember {
    /// The PNE.
    #[n(0)]
    pub pne_id: EntityId,
    /// Its capabilities.
    #[n(1)]
    pub capabilities: Option<DeviceCapabilities>,
}

/// PN Update Response, CPNS Server to PN GW (003 §1.4.2 step 4, 000 §6.6.2.1.1 step 4).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnUpdateResponse {
    /// The PN Inventory after the update.
    #[n(0)]
    pub inventory: PnInventory,
    /// When the update removed members (an expulsion, 000 §6.6.3.2 step 4): the PN's new group
    /// key epoch (docs/pn-lifecycle.md, "Group key epochs").
    #[n(1)]
    pub epoch: Option<u64>,
    /// With `epoch`: the remaining members' copies of its group key, each sealed end to end.
    #[n(2)]
    #[cbor(default, skip_if = "Vec::is_empty")]
    pub keys: Vec<crate::SealedGroupKey>,
}
