//! What a PNE command achieved ([`Outcome`], the `Ok` of its [`crate::Completed`]), and the
//! bookkeeping every waiting request of the PNE shares ([`Waiting`]).

use std::time::Instant;

use cpns_wire::{CpnsId, EntityId, PnId, PnInventory, StatusEntry};

use crate::CommandId;

/// Why a PNE is out of a PN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// The PN was released (000 §6.6.5); `by_me` if this PNE asked for it.
    Released {
        /// Whether this PNE asked.
        by_me: bool,
    },
    /// This PNE left it (000 §6.6.3.1.1).
    Left,
    /// Its PN GW expelled this PNE (000 §6.6.3.2).
    Expelled,
}

/// What a command of a [`super::PneSession`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `start_discovery`: the device on the link answered (000 §6.4 step 2).
    Discovered {
        /// Its entity id.
        gateway: EntityId,
        /// Whether it is a zone-based PN GW.
        zone_support: bool,
        /// The PNs it serves.
        pns: Vec<PnId>,
    },
    /// `start_pan_auth`: the PN GW proved itself with the PN's LocalEUKey; the link is sealed.
    PanAuthenticated {
        /// The PN whose LocalEUKey proved the PN GW.
        pn_id: PnId,
        /// The AEAD the link's frames are sealed in (docs/security.md §4.13).
        suite: cpns_crypto::Suite,
    },
    /// `start_setup`, `join_pn`: this PNE authenticated the server and stored the PN (000
    /// §6.6.1.1 steps 14-15, §6.6.2.2).
    PnJoined {
        /// The PN inventory.
        inventory: PnInventory,
        /// Whether this PNE initiated the PN (its set-up), or joined it.
        initiator: bool,
    },
    /// `start_registration`: registered, with a secure session (003 §1.4.1 step 4).
    Registered {
        /// The CPNS ID.
        cpns_id: CpnsId,
        /// The PN registered in.
        pn_id: PnId,
        /// Session lifetime, in seconds.
        lifetime_s: u32,
    },
    /// `secure_call`: the server's answer, opened under SK_PNE.
    SecureAnswer {
        /// The service that answered.
        service: String,
        /// Its answer.
        payload: Vec<u8>,
    },
    /// `release_pn`, `leave_pn`: the PN left this PNE's store, for this reason (a release or
    /// an expulsion may overtake a leave: the PNE is out either way).
    PnGone {
        /// The PN.
        pn_id: PnId,
        /// Why.
        why: Gone,
    },
    /// `invite_pne`: the invitee joined (`accepted`) or declined (000 §6.6.2.1.2 step 6).
    InviteAnswered {
        /// The PN.
        pn_id: PnId,
        /// Whether it accepted and joined.
        accepted: bool,
    },
    /// `expel_pne`: the PN GW expelled the member (004 §5.5.10).
    MemberExpelled {
        /// The PN.
        pn_id: PnId,
        /// The PNE expelled.
        pne: EntityId,
    },
    /// `declare_contents`: the server kept the contents declared, this many.
    ContentsDeclared {
        /// How many.
        count: u32,
    },
    /// `query_inventory`: the PNs read, in creation order (004 §5.5.10), and what their
    /// members offer that this PNE may see (from the server; none from the PN GW).
    Inventory {
        /// The PNs.
        pns: Vec<PnInventory>,
        /// Each member's services in the directory.
        services: Vec<cpns_wire::MemberServices>,
    },
    /// `send_group_content`: the PN GW relayed the content (docs/security.md §4.11).
    ContentSent {
        /// The PN.
        pn_id: PnId,
        /// Members linked to the PN GW that were sent it.
        delivered: u32,
    },
    /// `publish_service`: the service is in the directory (004 §5.5.5).
    ServicePublished(cpns_wire::ServicePublished),
    /// `unpublish_service`: whether it was in the directory.
    ServiceUnpublished {
        /// Whether it was there.
        removed: bool,
    },
    /// `discover_services`: the entries found.
    ServicesFound(cpns_wire::ServiceFound),
    /// `watch_services`: the watch is kept.
    ServiceWatching {
        /// Its id.
        watch_id: u64,
    },
    /// `unwatch_services`: whether the watch was kept.
    ServiceUnwatched {
        /// Whether it was.
        removed: bool,
    },
    /// A service group request that gave this PNE a key (create, answer yes, join, pull): the
    /// key of `epoch` is kept.
    ServiceGroupKey {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// The epoch whose key is held.
        epoch: u64,
    },
    /// A service group request done (invite, answer no, leave, expel, delete): the group's
    /// epoch now (0: deleted).
    ServiceGroupDone {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// Its epoch.
        epoch: u64,
    },
    /// `send_to_group`: the server took the content at `epoch` and pushed it to `delivered`
    /// other members.
    ServiceGroupSent {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// The epoch it was sealed under.
        epoch: u64,
        /// Members it was pushed to.
        delivered: u32,
    },
    /// `offer_delivery`: the server set the session up; the content moves as its targets
    /// accept (004 §5.5.8).
    DeliveryGranted {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The PN whose PN GW relays it.
        pn_id: PnId,
        /// To a service group in several PNs: the session of each other PN, relayed by the
        /// same PN GW; the content is sent in each.
        also: Vec<cpns_wire::DeliveryId>,
    },
    /// `send_message`: the small payload was handed on to its PNE (004 §5.5.8).
    MessageSent {
        /// The PNE.
        to: EntityId,
    },
    /// `request_delivery`: the member was asked for the content (004 §5.5.8.2, pull); its
    /// delivery follows as an offer to this PNE.
    DeliveryRequested {
        /// The member asked.
        source: EntityId,
        /// The content.
        name: String,
    },
    /// The server recorded this PNE's end of a session it received.
    DeliveryEnded {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// How it ended.
        result: cpns_wire::DeliveryResult,
    },
    /// `group_members`: the members.
    ServiceGroupMembers(Box<cpns_wire::GroupMembers>),
    /// `retrieve_service`: the whole description.
    ServiceRetrieved(Box<cpns_wire::ServiceDescriptionAnswer>),
    /// `set_capabilities`: the capabilities are the PNE's now; `reported` if its PN GW
    /// confirmed a report carrying them, else they go with the next report (coalesced).
    Capabilities {
        /// Whether a report carrying them was confirmed.
        reported: bool,
    },
    /// `set_status`: the server recorded the status (004 §5.5.3).
    StatusReported,
    /// `query_status`: the entities, as the server records them.
    Statuses(Vec<StatusEntry>),
    /// `subscribe_status`: the server keeps the subscription.
    Subscribed {
        /// Its id.
        subscription: u64,
        /// The watched entities now.
        entries: Vec<StatusEntry>,
    },
    /// `unsubscribe_status`: the server ended the subscription.
    Unsubscribed(u64),
    /// `request_group_key`: the server's answer was taken (002 §B.1.1.3 steps 22-24): the
    /// epoch it names, and whether this PNE holds that epoch's key now.
    GroupKey {
        /// The PN.
        pn_id: PnId,
        /// The epoch.
        epoch: u64,
        /// Whether the PNE holds its key.
        has_key: bool,
    },
    /// `rejoin`: the catching up after a (re)connection ended (002 §B.1.1.3 steps 18-26): the
    /// PNs of this PN GW it is a member of, in id order, each pulled and confirmed as far as
    /// its PN GW and the server allowed (failures are told as events).
    Rejoined {
        /// The PNs.
        pns: Vec<PnId>,
    },
    /// `answer_invitation`: the application's answer to an invitation held for it was sent;
    /// an acceptance goes on as the PNE's own flow (its join is told by
    /// [`super::PneEvent::PnJoined`]).
    InvitationAnswered {
        /// The PN.
        pn_id: PnId,
        /// Whether it was accepted.
        accepted: bool,
    },
    /// `send_usage`: the server acknowledged the usage records sent (004 §5.5.4).
    UsageSent {
        /// The ids of the records sent and acknowledged (the driver marks them sent).
        ids: Vec<u64>,
        /// Records the server stored now.
        stored: u32,
        /// Records the server had already (a retry).
        duplicates: u32,
        /// Charging records the server made.
        charged: u32,
        /// The records of private services, never sent (the driver marks them done too).
        withheld: Vec<u64>,
    },
}

/// A request of the PNE about one PN, waiting for its answer.
#[derive(Debug)]
pub(super) struct Waiting {
    /// The PN.
    pub(super) pn_id: PnId,
    /// When the wait ends with a timeout.
    pub(super) deadline: Instant,
    /// The command that started it; `None` for a request the machine made itself.
    pub(super) cmd: Option<CommandId>,
    /// A PN Key Request's request id, which its answer's box names (docs/security.md §4.10).
    pub(super) request_id: Option<u64>,
}
