//! What an entity tells a client that follows it: one [`Event`] per line, tagged by its
//! `event`, after the first answer of a streaming verb (`events` and `subscribe` on a PNE,
//! `subscribe` on the server, `establish` with `wait` on a PN GW).

use cpns_wire::{CpnsId, DeliveryId, EntityId, GroupId, PnId, UserId};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::response::Pn;
use crate::status::Entry;

/// One more item of a delivery offered (`delivery_offered`'s `more`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferedItem {
    /// The service it is delivered as.
    pub service_id: String,
    /// Its name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Something that happened, tagged by its `event`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The PNE is a member of a PN now, stored (000 §6.6.1.1 step 15, §6.6.2.2), whoever
    /// asked for it.
    PnJoined {
        /// The PN as stored.
        pn: Pn,
        /// Whether this PNE initiated it.
        initiator: bool,
    },
    /// The PN's members or group key epoch changed (000 §6.6.2.1.1 step 5).
    PnUpdated {
        /// The PN now.
        pn: Pn,
        /// Its group key epoch.
        epoch: u64,
        /// Whether this PNE holds that epoch's key.
        has_key: bool,
    },
    /// The PN was released (000 §6.6.5) and left the PNE's store.
    PnReleased {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Whether this PNE asked for it.
        by_me: bool,
    },
    /// The PNE was expelled from the PN (000 §6.6.3.2).
    PnExpelled {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// The PNE left the PN (000 §6.6.3.1.1).
    PnLeft {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// A PN the PNE was invited to was not stored: the server did not authenticate (000
    /// §6.6.1.1 step 15).
    PnRefused {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Why.
        error: ApiError,
    },
    /// An invitation waits for the application's `answer_invitation` (policy `ask`); left
    /// unanswered it is declined.
    Invited {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Who invites: the PNE that asked for the PN, or the PN GW.
        #[serde(with = "crate::text")]
        from: EntityId,
        /// Milliseconds left to answer.
        within_ms: u64,
    },
    /// The PNE declined an invitation (by its policy, its application, or at the deadline).
    InvitationDeclined {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// The PNE holds a PN's group key of this epoch, and its PN GW knows (002 §B.1.1.3
    /// steps 22-26).
    GroupKey {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The epoch.
        epoch: u64,
        /// Whether the PNE holds that epoch's key.
        has_key: bool,
    },
    /// The PNE registered by itself, joining a PN it was invited to (003 §1.4.2).
    Registered {
        /// The CPNS ID.
        #[serde(with = "crate::text")]
        cpns_id: CpnsId,
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Session lifetime, seconds.
        lifetime_s: u32,
    },
    /// The link to the PN GW is sealed, proven with the PN's LocalEUKey.
    PanAuthenticated {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The AEAD the link's frames are sealed in: `aes-256-gcm` or `chacha20-poly1305`
        /// (docs/security.md §4.13).
        suite: String,
    },
    /// A capabilities report the PNE made by itself was confirmed.
    CapabilitiesReported {},
    /// A usage report the PNE sent by itself was acknowledged.
    UsageSent {
        /// Records sent and acknowledged.
        sent: u32,
        /// Of those, records the server had already.
        duplicates: u32,
        /// Charging records made.
        charged: u32,
        /// Records of private services, never sent.
        withheld: u32,
    },
    /// A status notification of a subscription (004 §5.5.3.2).
    Status {
        /// The subscription.
        subscription: u64,
        /// Why: `change`, `threshold` or `periodic`.
        reason: String,
        /// The entities concerned, as now.
        entries: Vec<Entry>,
        /// Notifications dropped while this reader fell behind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lagged: Option<u32>,
    },
    /// Another member of a PN sent content, and it checked out: the server certified its
    /// signing key, it signed the content, it is a member, and the content is new
    /// (docs/security.md §4.11).
    Content {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The group key epoch it was sealed under.
        epoch: u64,
        /// The member that sent it.
        #[serde(with = "crate::text")]
        from: EntityId,
        /// Its user.
        #[serde(with = "crate::text")]
        owner: UserId,
        /// The content, when it is UTF-8 text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The content as hex.
        hex: String,
    },
    /// A new directory entry matches one of this PNE's service watches (004 §5.5.5), as the
    /// server told it end to end.
    ServiceMatch {
        /// The watch.
        watch_id: u64,
        /// The entry.
        entry: crate::ServiceEntry,
    },
    /// This PNE is invited into a service group (004 §5.5.9): its application answers.
    ServiceGroupInvited {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// Its name.
        name: String,
        /// Who invited.
        #[serde(with = "crate::text")]
        inviter: EntityId,
        /// The group's owner (a user).
        #[serde(with = "crate::text")]
        owner: UserId,
        /// Until when the invitation holds (Unix milliseconds).
        expires_at_ms: u64,
    },
    /// A service group moved to a new epoch, whose key this PNE now holds (004 §5.5.7.2).
    ServiceGroupKey {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The epoch.
        epoch: u64,
    },
    /// This PNE's membership of a service group ended by another's act.
    ServiceGroupEnded {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// `deleted` or `expelled`.
        why: String,
    },
    /// Another member of a service group sent content, and it checked out: the server certified
    /// its signing key, it signed the content, the content opened under the group's key of the
    /// epoch held, and it is new (docs/security.md §4.11).
    ServiceGroupContent {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The epoch it was sealed under.
        epoch: u64,
        /// The member that sent it.
        #[serde(with = "crate::text")]
        from: EntityId,
        /// Its user.
        #[serde(with = "crate::text")]
        owner: UserId,
        /// The content, when it is UTF-8 text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The content as hex.
        hex: String,
    },
    /// Service group content pushed to this PNE was refused, and why.
    ServiceGroupContentRefused {
        /// The group it named.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The sender it named.
        #[serde(with = "crate::text")]
        from: EntityId,
        /// Why.
        error: ApiError,
    },
    /// A delivery is offered to this PNE (004 §5.5.8): accepted or declined by its
    /// `--deliveries` policy.
    DeliveryOffered {
        /// The session.
        #[serde(with = "crate::text")]
        session: DeliveryId,
        /// Its source.
        #[serde(with = "crate::text")]
        source: EntityId,
        /// The source's user.
        #[serde(with = "crate::text")]
        owner: UserId,
        /// The service it is delivered as.
        service_id: String,
        /// The content's name.
        name: String,
        /// Its media type.
        media_type: String,
        /// Its size in bytes (the first item's).
        size: u64,
        /// Several services in one session: the items after the first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<OfferedItem>,
    },
    /// Every byte of a delivery arrived here, each item's SHA-256 the one offered: kept in the
    /// inbox.
    DeliveryReceived {
        /// The session.
        #[serde(with = "crate::text")]
        session: DeliveryId,
        /// Its source.
        #[serde(with = "crate::text")]
        from: EntityId,
        /// The content's name.
        name: String,
        /// Bytes received.
        bytes: u64,
        /// Bytes of the part for this PNE only, kept beside it as `<name>.specific` (0: none).
        #[serde(default, skip_serializing_if = "crate::request::is_zero")]
        specific: u64,
        /// The names of the items after the first, each kept too.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<String>,
    },
    /// Every target of a delivery this PNE sends ended its part: `delivered` have every byte,
    /// its hash checked (the others were told as `delivery_ended`).
    DeliverySent {
        /// The session.
        #[serde(with = "crate::text")]
        session: DeliveryId,
        /// The targets that have it.
        #[serde(with = "crate::text::list")]
        delivered: Vec<EntityId>,
    },
    /// A small payload in band from another PNE (004 §5.5.8).
    MessageReceived {
        /// Its sender.
        #[serde(with = "crate::text")]
        from: EntityId,
        /// The sender's user.
        #[serde(with = "crate::text")]
        owner: cpns_wire::UserId,
        /// The sender's PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The service it was sent as.
        service_id: String,
        /// Its media type.
        media_type: String,
        /// The payload, when it is UTF-8 text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The payload as hex.
        hex: String,
    },
    /// A consumer asks this PNE for content it declared (004 §5.5.8.2, pull): with `--share`
    /// the file of that name goes to it; without, its application answers (`deliver` to
    /// `requester` with `pn_id`).
    DeliveryRequested {
        /// Who asks.
        #[serde(with = "crate::text")]
        requester: EntityId,
        /// Its user.
        #[serde(with = "crate::text")]
        owner: cpns_wire::UserId,
        /// The content.
        name: String,
        /// The service it is asked as.
        service_id: String,
        /// The requester's PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// The source of a delivery this PNE receives controlled it: `start`, `pause` or `resume`
    /// (a stop ends the part: `delivery_ended`, `stopped`).
    DeliveryControlled {
        /// The session.
        #[serde(with = "crate::text")]
        session: DeliveryId,
        /// What its source asked.
        action: String,
    },
    /// A target's part of a delivery ended otherwise: `declined`, `hash_mismatch`, `failed` or
    /// `stopped`.
    DeliveryEnded {
        /// The session.
        #[serde(with = "crate::text")]
        session: DeliveryId,
        /// The target.
        #[serde(with = "crate::text")]
        target: EntityId,
        /// How.
        result: String,
        /// Why, when the target said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Content relayed to this PNE was refused, and why.
    ContentRefused {
        /// The PN it named.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The sender it named.
        #[serde(with = "crate::text")]
        from: EntityId,
        /// Why.
        error: ApiError,
    },
    /// A command ended (exactly once per command): its outcome or its error.
    Completed {
        /// The command.
        command: u64,
        /// The flow it ran, e.g. `pn_release`.
        flow: String,
        /// What it achieved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<Outcome>,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ApiError>,
    },
    /// A flow the entity started by itself failed.
    FlowFailed {
        /// The flow.
        flow: String,
        /// Why.
        error: ApiError,
    },
    /// Something in a followed inventory changed (004 §5.5.10; a user's on the server, a PN's
    /// on a PNE): `established`, `joined`, `left`, `released` (of a PN), `contents`,
    /// `services` (of a member).
    InventoryChanged {
        /// The PN, if the change is one PN's.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        pn_id: Option<PnId>,
        /// The member, if the change is one member's.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        pne: Option<EntityId>,
        /// What changed.
        change: String,
    },
    /// A PNE follows a PN's inventory again, its link to the PN GW back: the PN as it is now
    /// (changes while the link was down were not told).
    InventoryFollowed {
        /// The PN.
        pn: crate::response::Pn,
    },
    /// This reader fell behind: so many events were dropped before the next.
    Lagged {
        /// Events missed.
        missed: u64,
    },
}

impl Event {
    /// The event's name, as written on the socket.
    pub fn name(&self) -> &'static str {
        match self {
            Event::PnJoined { .. } => "pn_joined",
            Event::PnUpdated { .. } => "pn_updated",
            Event::PnReleased { .. } => "pn_released",
            Event::PnExpelled { .. } => "pn_expelled",
            Event::PnLeft { .. } => "pn_left",
            Event::PnRefused { .. } => "pn_refused",
            Event::Invited { .. } => "invited",
            Event::InvitationDeclined { .. } => "invitation_declined",
            Event::GroupKey { .. } => "group_key",
            Event::Registered { .. } => "registered",
            Event::PanAuthenticated { .. } => "pan_authenticated",
            Event::CapabilitiesReported {} => "capabilities_reported",
            Event::UsageSent { .. } => "usage_sent",
            Event::Status { .. } => "status",
            Event::Content { .. } => "content",
            Event::ContentRefused { .. } => "content_refused",
            Event::ServiceMatch { .. } => "service_match",
            Event::ServiceGroupInvited { .. } => "service_group_invited",
            Event::ServiceGroupKey { .. } => "service_group_key",
            Event::ServiceGroupEnded { .. } => "service_group_ended",
            Event::ServiceGroupContent { .. } => "service_group_content",
            Event::DeliveryOffered { .. } => "delivery_offered",
            Event::DeliveryReceived { .. } => "delivery_received",
            Event::DeliverySent { .. } => "delivery_sent",
            Event::DeliveryEnded { .. } => "delivery_ended",
            Event::DeliveryControlled { .. } => "delivery_controlled",
            Event::DeliveryRequested { .. } => "delivery_requested",
            Event::MessageReceived { .. } => "message_received",
            Event::ServiceGroupContentRefused { .. } => "service_group_content_refused",
            Event::InventoryChanged { .. } => "inventory_changed",
            Event::InventoryFollowed { .. } => "inventory_followed",
            Event::Completed { .. } => "completed",
            Event::FlowFailed { .. } => "flow_failed",
            Event::Lagged { .. } => "lagged",
        }
    }
}

/// Why a PNE is out of a PN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gone {
    /// Released.
    Released,
    /// It left.
    Left,
    /// It was expelled.
    Expelled,
}

/// What a command achieved, tagged by its `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The device on the link answered discovery (000 §6.4 step 2).
    Discovered {
        /// It.
        #[serde(with = "crate::text")]
        gateway: EntityId,
        /// Whether it is a zone-based PN GW.
        zone_support: bool,
        /// The PNs it serves.
        #[serde(with = "crate::text::list")]
        pns: Vec<PnId>,
    },
    /// The link is sealed.
    PanAuthenticated {
        /// The PN whose LocalEUKey proved the PN GW.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The AEAD the link's frames are sealed in: `aes-256-gcm` or `chacha20-poly1305`
        /// (docs/security.md §4.13).
        suite: String,
    },
    /// A PN stored, set up or joined.
    PnJoined {
        /// The PN.
        pn: Pn,
        /// Whether this PNE initiated it.
        initiator: bool,
    },
    /// Registered.
    Registered {
        /// The CPNS ID.
        #[serde(with = "crate::text")]
        cpns_id: CpnsId,
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Session lifetime, seconds.
        lifetime_s: u32,
    },
    /// The server's answer on the secure session.
    SecureAnswer {
        /// The service.
        service: String,
        /// Its answer, hex.
        payload_hex: String,
    },
    /// The PN left the PNE's store.
    PnGone {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Why.
        why: Gone,
        /// With `released`: whether this PNE asked.
        by_me: bool,
    },
    /// An invitation this PNE asked for was answered.
    InviteAnswered {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Whether the invitee joined.
        accepted: bool,
    },
    /// The member was expelled.
    MemberExpelled {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The member.
        #[serde(with = "crate::text")]
        pne: EntityId,
    },
    /// PNs read.
    Inventory {
        /// The PNs.
        pns: Vec<Pn>,
    },
    /// The capabilities are the device's now.
    Capabilities {
        /// Whether a report carrying them was confirmed (else they go with the next).
        reported: bool,
    },
    /// The server recorded the status.
    StatusReported {},
    /// Status entries.
    Statuses {
        /// The entries.
        entries: Vec<Entry>,
    },
    /// A subscription is kept.
    Subscribed {
        /// It.
        subscription: u64,
        /// The watched entities now.
        entries: Vec<Entry>,
    },
    /// A subscription ended.
    Unsubscribed {
        /// It.
        subscription: u64,
    },
    /// A group key pull was answered.
    GroupKey {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The epoch.
        epoch: u64,
        /// Whether the PNE holds its key.
        has_key: bool,
    },
    /// The connection set-up after a (re)connection ended.
    Rejoined {
        /// The PNs of this PN GW the PNE is a member of.
        #[serde(with = "crate::text::list")]
        pns: Vec<PnId>,
    },
    /// Usage records were sent.
    UsageSent {
        /// Records sent and acknowledged.
        sent: u32,
        /// Of those, records the server had already.
        duplicates: u32,
        /// Charging records made.
        charged: u32,
        /// Records of private services, never sent.
        withheld: u32,
    },
    /// An invitation held for the application was answered.
    InvitationAnswered {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Whether it was accepted.
        accepted: bool,
    },
    /// Content was relayed by the PN GW.
    ContentSent {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Members it was relayed to.
        delivered: u32,
    },
    /// A PN GW-initiated establishment ended with the PN stored.
    Established {
        /// The PN.
        pn: Pn,
    },
    /// A service is in the directory (004 §5.5.5).
    ServicePublished {
        /// Its directory id.
        dir_id: u64,
        /// When its lease ends (Unix milliseconds).
        expires_at_ms: u64,
    },
    /// A service was taken out of the directory, if it was there.
    ServiceUnpublished {
        /// Whether it was there.
        removed: bool,
    },
    /// A discovery found these entries.
    ServicesFound {
        /// Their directory ids.
        dir_ids: Vec<u64>,
        /// Whether more follow.
        more: bool,
    },
    /// A description was retrieved.
    ServiceRetrieved {
        /// Its directory id.
        dir_id: u64,
    },
    /// A watch is kept.
    ServiceWatching {
        /// Its id.
        watch_id: u64,
    },
    /// A watch ended, if it was kept.
    ServiceUnwatched {
        /// Whether it was.
        removed: bool,
    },
    /// A service group request gave this PNE a key (create, accept, join, pull).
    ServiceGroupKey {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The epoch whose key is held.
        epoch: u64,
    },
    /// A service group request was done (invite, decline, leave, expel, delete).
    ServiceGroupDone {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// Its epoch now (0: deleted).
        epoch: u64,
    },
    /// A small payload was handed on to its PNE (004 §5.5.8).
    MessageSent {
        /// The PNE.
        #[serde(with = "crate::text")]
        to: EntityId,
    },
    /// The member asked holds the request for content (004 §5.5.8.2, pull).
    DeliveryRequested {
        /// The member asked.
        #[serde(with = "crate::text")]
        source: EntityId,
        /// The content.
        name: String,
    },
    /// A delivery session was set up (004 §5.5.8).
    DeliveryGranted {
        /// The session.
        #[serde(with = "crate::text")]
        session: DeliveryId,
    },
    /// The server kept the contents this PNE declared.
    ContentsDeclared {
        /// How many.
        count: u32,
    },
    /// The server recorded the end of a delivery this PNE received.
    DeliveryRecorded {
        /// The session.
        #[serde(with = "crate::text")]
        session: DeliveryId,
    },
    /// Content was sent to a service group's other members.
    ServiceGroupSent {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The epoch it was sealed under.
        epoch: u64,
        /// Other members it was pushed to.
        delivered: u32,
    },
    /// A service group's members were read.
    ServiceGroupMembers {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// Its members, the owner first.
        #[serde(with = "crate::text::list")]
        members: Vec<EntityId>,
    },
}
