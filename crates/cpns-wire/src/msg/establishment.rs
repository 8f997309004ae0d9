//! PN establishment, initiated by a PNE (000 §6.6.1.1) or by the PN GW (000 §6.6.1.2), and the
//! authentication exchange it shares with PNE registration (003 §1.4).

use minicbor::{Decode, Encode};

use super::common::{
    ContentItem, DeviceCapabilities, HashBytes, PnInventory, RandBytes, wire_enum,
};
use crate::ids::{EntityId, PnId, RequestId};

/// Type of PN set-up asked by an initiating PNE (000 §6.6.1.1 step 1).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SetupType {
    /// `1-1`: a PN of the initiating PNE and the PN GW only.
    #[n(1)]
    OneToOne,
    /// `All`: a PN with every CPNS device connected to the PN GW.
    #[n(2)]
    All,
    /// The PNE IDs to be invited.
    #[n(3)]
    Invite(#[n(0)] Vec<EntityId>),
}

/// What a PNE brings to a PN it joins: the contents of step 1 (initiator) or step 3 (invitee)
/// of 000 §6.6.1.1, and of steps 3-4 of 000 §6.6.1.2.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct JoinInfo {
    /// PNE ID.
    #[n(0)]
    pub pne_id: EntityId,
    /// Device capabilities of the device the PNE belongs to.
    #[n(1)]
    pub capabilities: DeviceCapabilities,
    /// Content information the device has.
    #[n(2)]
    #[cbor(default)]
    pub contents: Vec<ContentItem>,
    /// rand_PNE, for mutual authentication with the CPNS Server.
    #[n(3)]
    pub rand_pne: RandBytes,
    /// Indication to request LocalEUKey assignment (the PNE has enough UI and its PAN link does
    /// not protect CPNS messages).
    #[n(4)]
    #[cbor(default)]
    pub local_key: bool,
    /// The PNE's own user's PN GW, which can confirm it and its chargeability when it takes
    /// part in another user's PN (001 §5.2.1.1 steps 2-3, "PN GW #1 address of CPNS User A").
    #[n(5)]
    pub home_gateway: Option<EntityId>,
}

/// PN Setup Request. From an initiating PNE to the PN GW (000 §6.6.1.1 step 1) it carries
/// `setup` and `join`; from the PN GW to a PNE (000 §6.6.1.1 step 2, §6.6.1.2 steps 1-2) it
/// carries `pn_id` and `initiator`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnSetupRequest {
    /// Chosen by the sender; a retried request with the same id sets up no second PN.
    #[n(0)]
    pub request_id: RequestId,
    /// Type of set-up (PNE to PN GW).
    #[n(1)]
    pub setup: Option<SetupType>,
    /// The initiating PNE's own contribution (PNE to PN GW).
    #[n(2)]
    pub join: Option<JoinInfo>,
    /// The PN being set up (PN GW to PNE).
    #[n(3)]
    pub pn_id: Option<PnId>,
    /// Who initiated the set-up (PN GW to PNE).
    #[n(4)]
    pub initiator: Option<EntityId>,
}

/// PN Setup Response. From an invited PNE to the PN GW it confirms or declines participation
/// (000 §6.6.1.1 step 3, §6.6.1.2 steps 3-4; `join` present when accepting). From the PN GW to
/// the initiating PNE it completes the set-up (000 §6.6.1.1 step 14; `inventory` and
/// `hash_server`).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnSetupResponse {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// Whether the PNE takes part (invitee to PN GW).
    #[n(1)]
    #[cbor(default)]
    pub accept: bool,
    /// The invitee's contribution, when accepting.
    #[n(2)]
    pub join: Option<JoinInfo>,
    /// The PN Inventory (PN GW to initiator).
    #[n(3)]
    pub inventory: Option<PnInventory>,
    /// hash_server_PNE for the initiator (PN GW to initiator).
    #[n(4)]
    pub hash_server: Option<HashBytes>,
    /// With `hash_server`: the PN's group key epoch (000 §6.6.1.1 step 14; docs/pn-lifecycle.md).
    #[n(5)]
    pub epoch: Option<u64>,
    /// With `epoch`: this PNE's copy of that epoch's group key, sealed by the server for it.
    #[n(6)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed_key: Option<Vec<u8>>,
}

/// PN GW information in a PN Registration Request (000 §6.6.1.1 step 4).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GatewayInfo {
    /// PN GW ID.
    #[n(0)]
    pub gw_id: EntityId,
    /// Capabilities of the device the PN GW is deployed on.
    #[n(1)]
    pub capabilities: DeviceCapabilities,
    /// Subscription information.
    #[n(2)]
    pub subscription: Option<String>,
}

/// PN Registration Request, PN GW to CPNS Server (000 §6.6.1.1 step 4, §6.6.1.2 step 5).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnRegistrationRequest {
    /// Chosen by the PN GW.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN.
    #[n(1)]
    pub pn_id: PnId,
    /// PN GW info.
    #[n(2)]
    pub gateway: GatewayInfo,
    /// PNE info with rand_PNE for every PNE taking part.
    #[n(3)]
    pub pnes: Vec<JoinInfo>,
    /// The PNE that initiated the set-up, if a PNE did.
    #[n(4)]
    pub initiator: Option<EntityId>,
    /// The PN's lifetime, in seconds from its registration; past it the PN is released
    /// (docs/pn-lifecycle.md, "Lifetime and member limit", beyond the documents).
    #[n(5)]
    pub lifetime_s: Option<u32>,
    /// The most members the PN may have.
    #[n(6)]
    pub max_members: Option<u32>,
}

wire_enum!(
    /// What an authentication exchange is for; bound into the hashes (docs/security.md).
    AuthPurposeCode {
        /// PN establishment (000 §6.6.1).
        Establishment = 1,
        /// PNE registration (003 §1.4).
        Registration = 2,
    }
);

/// The two wrapped copies of one PNE's LocalEUKey (000 §6.6.1.1 step 5).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct WrappedLocalKeys {
    /// The PNE the key is for.
    #[n(0)]
    pub pne_id: EntityId,
    /// The copy wrapped for the PNE under its EUKey.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub for_pne: Vec<u8>,
    /// The copy wrapped for the PN GW under its EUKey; left out when the PN GW relays to the PNE
    /// (step 6).
    #[n(2)]
    #[cbor(with = "minicbor::bytes", default)]
    pub for_gw: Vec<u8>,
}

/// Authentication request, CPNS Server to PN GW (000 §6.6.1.1 step 5) and PN GW to each PNE
/// (steps 6-7); also the challenge of PNE registration (003 §1.4.1 step 3).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AuthenticationRequest {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// rand_server.
    #[n(1)]
    pub rand_server: RandBytes,
    /// Wrapped LocalEUKeys, for the PNEs that asked for one.
    #[n(2)]
    #[cbor(default)]
    pub local_keys: Vec<WrappedLocalKeys>,
    /// What the exchange is for.
    #[n(3)]
    pub purpose: AuthPurposeCode,
    /// The PNEs being authenticated (server to PN GW); the PN GW relays to each of them.
    #[n(4)]
    #[cbor(default)]
    pub pnes: Vec<EntityId>,
    /// The request this exchange belongs to (PNE registration).
    #[n(5)]
    pub request_id: Option<RequestId>,
}

/// One PNE's hash_PNE.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneHash {
    /// The PNE.
    #[n(0)]
    pub pne_id: EntityId,
    /// Its hash_PNE.
    #[n(1)]
    pub hash: HashBytes,
}

/// Authentication response, PNE to PN GW (000 §6.6.1.1 steps 8-9) and PN GW to CPNS Server with
/// every PNE's hash (step 10).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AuthenticationResponse {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// hash_PNE of each responding PNE.
    #[n(1)]
    pub hashes: Vec<PneHash>,
    /// What the exchange is for.
    #[n(2)]
    pub purpose: AuthPurposeCode,
    /// The request this exchange belongs to (PNE registration).
    #[n(3)]
    pub request_id: Option<RequestId>,
}

/// The server's verdict on one PNE (000 §6.6.1.1 steps 11-12).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MemberVerdict {
    /// The PNE.
    #[n(0)]
    pub pne_id: EntityId,
    /// Whether hash_PNE verified.
    #[n(1)]
    pub authenticated: bool,
    /// hash_server_PNE, for an authenticated PNE.
    #[n(2)]
    pub hash_server: Option<HashBytes>,
    /// For an authenticated PNE: its copy of the PN's first group key (epoch 1), sealed end to
    /// end under K_dir of its SK_PNE (docs/security.md §4.10), which the PN GW hands on.
    #[n(3)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed_key: Option<Vec<u8>>,
    /// Why a PNE is left out when it is not for a failed authentication: another user's PNE
    /// whose home PN GW declined it, did not answer, or is not its user's (001 §5.2.1.1).
    #[n(4)]
    pub refused: Option<crate::ErrorBody>,
}

/// PN Registration Response, CPNS Server to PN GW (000 §6.6.1.1 step 12, §6.6.1.2 step 13).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnRegistrationResponse {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// A verdict for every PNE of the registration request.
    #[n(1)]
    pub verdicts: Vec<MemberVerdict>,
    /// The PN Inventory as registered.
    #[n(2)]
    pub inventory: PnInventory,
    /// The PN's group key epoch the verdicts' copies are for (1, a new PN).
    #[n(3)]
    pub epoch: Option<u64>,
}

/// PN Establishment Notify, PN GW to a PNE that did not initiate the set-up (000 §6.6.1.1
/// step 15, §6.6.1.2 steps 15-16). Without `inventory`, the PNE was left out of the PN.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnEstablishmentNotify {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// The PN Inventory.
    #[n(1)]
    pub inventory: Option<PnInventory>,
    /// hash_server_PNE for this PNE.
    #[n(2)]
    pub hash_server: Option<HashBytes>,
    /// Why the PNE was left out, if it was.
    #[n(3)]
    pub reason: Option<String>,
    /// With `hash_server`: the PN's group key epoch.
    #[n(4)]
    pub epoch: Option<u64>,
    /// With `epoch`: this PNE's copy of that epoch's group key, sealed by the server for it.
    #[n(5)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed_key: Option<Vec<u8>>,
}
