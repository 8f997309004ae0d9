//! Membership changes and group key epochs (docs/pn-lifecycle.md): a PNE leaving (000
//! §6.6.3.1.1), the PN GW expelling one (§6.6.3.2), and the new member list and group key
//! delivered to the remaining members (PN Update Notification, §6.6.2.1.1 step 5).

use minicbor::{Decode, Encode};

use crate::ids::{EntityId, PnId, RequestId};
use crate::msg::PnInventory;
use crate::msg::common::wire_enum;

/// One member's copy of a PN's group key for an epoch, sealed end to end by the server under
/// K_dir(server → PNE) of that member's SK_PNE (docs/security.md §4.10): the PN GW relays it
/// and cannot open it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SealedGroupKey {
    /// The member it is sealed for.
    #[n(0)]
    pub pne_id: EntityId,
    /// nonce(12) ‖ ChaCha20-Poly1305 box of the 32-byte group key.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
}

/// PNE Request (Leave): a member PNE to its PN GW (000 §6.6.3.1.1 step 1), and the PN GW to
/// the CPNS Server on its behalf (step 2).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneLeaveRequest {
    /// Chosen by the sender; a retry carries the same one.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN to leave.
    #[n(1)]
    pub pn_id: PnId,
    /// The leaving PNE.
    #[n(2)]
    pub pne: EntityId,
}

/// PNE Response (Leave): the CPNS Server to the PN GW once the PNE is out of the inventory, with
/// the PN's new epoch and the remaining members' copies of its group key (§6.6.3.1.1 step 4);
/// the PN GW to the leaving PNE, with neither (step 6).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneLeaveResponse {
    /// The PN left.
    #[n(0)]
    pub pn_id: PnId,
    /// The inventory after the change (server to PN GW only).
    #[n(1)]
    pub inventory: Option<PnInventory>,
    /// The PN's new group key epoch (server to PN GW only).
    #[n(2)]
    pub epoch: Option<u64>,
    /// The remaining members' copies of the new group key (server to PN GW only).
    #[n(3)]
    #[cbor(default, skip_if = "Vec::is_empty")]
    pub keys: Vec<SealedGroupKey>,
}

/// PNE Notification (Expel): the PN GW tells a member it is being removed (000 §6.6.3.2 step 1).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneExpelNotification {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
}

/// PN Update Notification: the PN GW tells a remaining member the PN's new member list and
/// hands it its own copy of the new epoch's group key (000 §6.6.2.1.1 step 5, §6.6.2.1.2 steps
/// 7-8; docs/pn-lifecycle.md step 4).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnUpdateNotification {
    /// The PN inventory after the change.
    #[n(0)]
    pub inventory: PnInventory,
    /// The PN's group key epoch.
    #[n(1)]
    pub epoch: u64,
    /// This member's copy of the epoch's group key; `None` for a member the server holds no
    /// SK_PNE for (it asks for its copy once it has one).
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed_key: Option<Vec<u8>>,
}

/// PNE Request (Invite): the PN GW invites a PNE into one of its PNs (000 §6.6.2.1.1 step 1,
/// §6.6.2.1.2 step 2), or a member PNE asks its PN GW to invite another (§6.6.2.1.2 step 1).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneInviteRequest {
    /// Chosen by the sender.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN.
    #[n(1)]
    pub pn_id: PnId,
    /// From a member to its PN GW: the PNE to invite. Absent from the PN GW to the invitee.
    #[n(2)]
    pub invitee: Option<EntityId>,
}

/// PNE Invite Response: the invitee to the PN GW (§6.6.2.1.1 step 2, §6.6.2.1.2 step 3), and
/// the PN GW to the member that asked, once the invitee joined or declined (§6.6.2.1.2 step 6).
/// An invitee that accepts then joins the PN (§6.6.2.2), so the server authenticates it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneInviteResponse {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// Whether the invitee accepted (and, PN GW to member, joined).
    #[n(1)]
    pub accepted: bool,
}

/// PN Key Request (002 §B.1.1.3 step 22): a member PNE asks the CPNS Server, through its PN
/// GW, for its copy of its PN's current group key (a member that missed an update while away).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupKeyRequest {
    /// Chosen by the PNE.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN.
    #[n(1)]
    pub pn_id: PnId,
}

/// PN Key Response (002 §B.1.1.3 step 23): the server's answer, relayed by the PN GW.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupKeyResponse {
    /// The request answered.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN inventory of the epoch, which the copy names.
    #[n(1)]
    pub inventory: PnInventory,
    /// The PN's current group key epoch.
    #[n(2)]
    pub epoch: u64,
    /// The PNE's copy of that epoch's group key, sealed end to end under K_dir of its SK_PNE.
    #[n(3)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed_key: Vec<u8>,
}

/// PN Membership with group key confirmation (002 §B.1.1.3 step 25): a member PNE tells its
/// PN GW, at connection set-up, that it holds the PN's group key of `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MembershipConfirm {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// The epoch whose key the PNE holds.
    #[n(1)]
    pub epoch: u64,
}

/// Connection setup confirmation in a PN (002 §B.1.1.3 step 26): the PN GW's answer to
/// [`MembershipConfirm`]; the PNE's connection set-up in the PN is complete.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MembershipConfirmed {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// The epoch the PN GW recorded for the PNE.
    #[n(1)]
    pub epoch: u64,
}

/// PN Inventory request (004 §5.5.10): a PNE asks for the inventory of its own PN (to its PN
/// GW, which answers from its local inventory) or of a remote PN of its user (to the server,
/// as the payload of the secure call [`INVENTORY_SERVICE`], sealed end to end).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct InventoryQuery {
    /// The PN; absent: every PN the asker may read (to its PN GW: those it is a member of;
    /// to the server: its user's).
    #[n(0)]
    pub pn_id: Option<PnId>,
    /// To its PN GW only: `true` to follow what changes in the PNs answered, as
    /// [`InventoryChanged`] notifications on the link (until it ends, the PNE leaves, or a
    /// query with `false`); `false` to stop; absent: a plain query.
    #[n(1)]
    pub follow: Option<bool>,
}

wire_enum!(
    /// What changed in a PN inventory (004 §5.5.10).
    InventoryChange {
        /// A PN was set up (000 §6.6.1).
        Established = 1,
        /// A PNE joined a PN (003 §1.4.2).
        Joined = 2,
        /// A member left or was expelled (000 §6.6.3).
        Left = 3,
        /// A PN was released (000 §6.6.5).
        Released = 4,
        /// A member declared what it holds (004 §5.5.10).
        Contents = 5,
        /// A member published or took out a service (004 §5.5.5).
        Services = 6,
    }
);

impl InventoryChange {
    /// Its name in the control API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            InventoryChange::Established => "established",
            InventoryChange::Joined => "joined",
            InventoryChange::Left => "left",
            InventoryChange::Released => "released",
            InventoryChange::Contents => "contents",
            InventoryChange::Services => "services",
            InventoryChange::Unknown(_) => "unknown",
        }
    }
}

/// Inventory Changed (notification): what changed in a PN inventory. The server to a PN GW
/// (`pn_id` absent) when a member of its PNs declared contents or published or took out a
/// service, which the PN GW cannot see in the sealed calls it relays; a PN GW to each PNE
/// following that PN ([`InventoryQuery::follow`]), for those and for what it sees itself
/// (members joining and leaving, the PN set up or released). It names what changed, not the
/// change: a follower reads the inventory again for that.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct InventoryChanged {
    /// The PN, if the change is one PN's (always, from a PN GW).
    #[n(0)]
    pub pn_id: Option<PnId>,
    /// The member, if the change is one member's.
    #[n(1)]
    pub pne: Option<EntityId>,
    /// What changed.
    #[n(2)]
    pub change: InventoryChange,
}

/// The answer to an [`InventoryQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct InventoryAnswer {
    /// The PNs, in creation order.
    #[n(0)]
    pub pns: Vec<PnInventory>,
    /// What their members offer (004 §5.5.10: "information of service / content"; what they
    /// hold is each member's `contents`): the directory's entries of each member that the
    /// asker may see (004 §5.5.5 scope), a member offering none left out. (A PN GW's local
    /// answer carries none.)
    #[n(1)]
    #[cbor(default)]
    pub services: Vec<MemberServices>,
}

/// The services one member offers, as the asker may see them.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MemberServices {
    /// The member.
    #[n(0)]
    pub pne: EntityId,
    /// Its entries in the directory.
    #[n(1)]
    #[cbor(default)]
    pub services: Vec<crate::ServiceSummary>,
}

/// Contents Declare: the whole list of what a PNE holds now, replacing what it announced at
/// set-up (000 §6.6.1.1 step 1) in every PN it is a member of (payload of the secure call
/// [`CONTENTS_SERVICE`]; answered the same, as kept).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ContentsDeclare {
    /// The contents, at most [`MAX_CONTENTS`].
    #[n(0)]
    #[cbor(default)]
    pub items: Vec<crate::ContentItem>,
}

/// The secure call a PNE declares its contents with (004 §5.5.10): payload
/// [`ContentsDeclare`], answered the same, as kept.
pub const CONTENTS_SERVICE: &str = "cpns.inventory.contents";
/// Most contents one PNE declares.
pub const MAX_CONTENTS: usize = 256;

/// The server's secure service answering an [`InventoryQuery`] (004 §5.5.10): the payload is
/// the CBOR query, the answer's payload the CBOR [`InventoryAnswer`].
pub const INVENTORY_SERVICE: &str = "cpns.pn-inventory";

/// PNE Confirm Request (001 §5.2.1.1 step 8): the server asks a PNE's home PN GW, over that PN
/// GW's own session, whether the PNE belongs to its user and may be charged to it, before the
/// PNE enters another user's PN.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneConfirmRequest {
    /// Chosen by the server.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN the PNE is to enter.
    #[n(1)]
    pub pn_id: PnId,
    /// The PNE.
    #[n(2)]
    pub pne: EntityId,
    /// The PN GW whose PN it is (of another user).
    #[n(3)]
    pub requesting_gw: EntityId,
}

/// PNE Confirm Response (001 §5.2.1.1 step 9): the home PN GW's answer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PneConfirmResponse {
    /// The request answered.
    #[n(0)]
    pub request_id: RequestId,
    /// The PNE belongs to the PN GW's user, who agrees to it taking part.
    #[n(1)]
    #[cbor(default)]
    pub confirmed: bool,
    /// Its use in that PN may be charged to the PN GW's user.
    #[n(2)]
    #[cbor(default)]
    pub chargeable: bool,
}

/// The elected PN GW's capabilities update (002 §B.1.1.1 step 7): the device that won the
/// election tells the other it now runs in PN GW mode, and where to reach it as one.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GatewayAnnouncement {
    /// The new PN GW.
    #[n(0)]
    pub gateway: EntityId,
    /// Its mode now: `gateway`.
    #[n(1)]
    pub mode: crate::Mode,
    /// Its device capabilities.
    #[n(2)]
    pub capabilities: crate::DeviceCapabilities,
    /// Where PNEs reach it as a PN GW on this PAN (a transport address), if it says.
    #[n(3)]
    pub pan_address: Option<String>,
}

wire_enum!(
    /// Why a PNE's membership of a PN ended while it was away.
    EndReason {
        /// It left, or its PN GW expelled it.
        Removed = 1,
        /// The PN was released.
        Released = 2,
    }
);

/// The server's answer to a PN Key Request from a PNE whose membership ended while it was away
/// (docs/pn-lifecycle.md, "Membership that ended while away"): sealed under K_dir of the
/// SK_PNE it held in that PN, so only that PNE believes it, whoever relays it; it then forgets
/// the PN.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MembershipEnded {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// Why.
    #[n(1)]
    pub reason: EndReason,
    /// `cpns_crypto::seal_membership_ended` of the reason.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
}
