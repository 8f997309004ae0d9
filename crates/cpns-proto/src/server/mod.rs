//! The CPNS Server's side of one PN GW session (CPNS-2): connection set-up with authentication
//! (002 §B.1.1.2), PN registration with PNE authentication (000 §6.6.1 steps 4-12), PN update
//! and PNE registration (003 §1.4).
//!
//! The state of record lives in the store: the machine asks the driver to [load](ServerOutput::Load)
//! what it needs and to [persist](ServerOutput::Persist) every effect, and answers the PN GW only
//! once the effect is durable.

mod budget;
mod confirm;
mod connect;
pub mod delivery;
pub mod directory;
mod establish;
mod external;
mod forward;
mod group_delivery;
pub mod groups;
mod load;
mod membership;
mod notices;
mod register;
mod release;
mod secure;
mod services;
mod status;
pub mod window;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use cpns_crypto::{EuKey, MachineRng, SessionKey};
use cpns_wire::{
    Address, Body, CpnsId, DeviceCapabilities, EntityId, Envelope, ErrorBody, ErrorCode, MsgKind,
    NewMember, PnId, PnInventory, RequestId, Status, UserId,
};

use crate::StoreFailure;
use crate::link::LinkCodec;
use crate::util::{MsgIds, Tokens};
use crate::{ProtoError, Timeouts, Token, TraceRecord};

pub use budget::FlowBudget;
pub use external::{ExternalDelivery, KeptOutbound, MAX_OUTBOUND};
pub use forward::{MAX_FORWARDS, Relayed};
pub use load::{
    GroupKeyLoaded, InventoryLoaded, Load, Loaded, PnLoaded, SessionLoaded, StatusesLoaded,
    UsageOwners, UserReachLoaded,
};
pub use notices::NoticeClock;
pub use secure::check_contents;
pub use status::{MAX_ENTRIES, MAX_LABEL, MAX_SUBSCRIPTIONS, NewStatus, ReportLimits};

use connect::Conn;
use establish::Establishment;
use register::Registration;

/// Settings of the server side.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Name the server gives in `ConnectionSetupConfirm`.
    pub name: String,
    /// Largest frame accepted.
    pub max_frame: u32,
    /// Flow timeouts.
    pub timeouts: Timeouts,
    /// How long a new session may take to set up and authenticate its PN GW (002 §B.1.1.2
    /// steps 8-11) before it is closed: short, so unauthenticated sessions cannot linger.
    pub setup_timeout: std::time::Duration,
    /// Lifetime of a PNE<->server session granted at PNE registration, in seconds.
    pub session_lifetime_s: u32,
    /// Most flows (establishments, registrations, PN updates) in progress on one session.
    pub max_flows: usize,
    /// Flows in progress across every session of this server (shared by cloning).
    pub budget: FlowBudget,
    /// How often each device may report (docs/device-status.md, "Rate limits").
    pub report_limits: ReportLimits,
    /// A PN GW silent this long (no frame, not even a Heartbeat) is taken for gone and its
    /// session closed; `None`: never.
    pub offline_after: Option<std::time::Duration>,
    /// Chargeable services and their units per started MB (docs/device-status.md, "Charging
    /// records"); a service not listed is not charged.
    pub tariff: BTreeMap<String, u64>,
    /// The numbers of secure notices, shared by every session of this server (by cloning).
    pub notices: NoticeClock,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            name: "cpns-server".into(),
            max_frame: cpns_wire::DEFAULT_MAX_FRAME,
            timeouts: Timeouts::default(),
            setup_timeout: std::time::Duration::from_secs(10),
            session_lifetime_s: 86_400,
            max_flows: 64,
            budget: FlowBudget::default(),
            report_limits: ReportLimits::default(),
            offline_after: Some(std::time::Duration::from_secs(30)),
            tariff: BTreeMap::new(),
            notices: NoticeClock::default(),
        }
    }
}

/// Role of an enrolled entity, as the machine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityRole {
    /// A PNE.
    Pne,
    /// A PN GW.
    Gateway,
    /// Either: a device that serves as a PNE, or as a PN GW once elected (002 §B.1.1.1).
    Both,
}

impl EntityRole {
    /// Whether the entity may take part in PNs as a PNE.
    pub fn is_pne(self) -> bool {
        matches!(self, EntityRole::Pne | EntityRole::Both)
    }

    /// Whether the entity may connect as a PN GW.
    pub fn is_gateway(self) -> bool {
        matches!(self, EntityRole::Gateway | EntityRole::Both)
    }
}

/// An enrolled entity with its EUKey opened, as the driver loads it from the store.
#[derive(Clone, Debug)]
pub struct KnownEntity {
    /// The entity id.
    pub id: EntityId,
    /// Its role.
    pub role: EntityRole,
    /// Its owner.
    pub owner: UserId,
    /// Its EUKey.
    pub eukey: EuKey,
}

/// A PN of the inventory of record, as the driver loads it.
#[derive(Clone, Debug)]
pub struct KnownPn {
    /// The PN GW serving it.
    pub gateway: EntityId,
    /// The user owning that PN GW, hence the PN.
    pub owner: UserId,
    /// Its inventory (members with capabilities).
    pub inventory: PnInventory,
    /// Its current group key epoch; 0 before it has a group key.
    pub epoch: u64,
    /// The most members it may have (beyond the documents).
    pub max_members: Option<u32>,
    /// Its lifetime is over, as of the load (the driver holds the clock).
    pub expired: bool,
}

impl KnownPn {
    /// Why the PN takes no new member: it expired, or holds its most members already.
    pub(super) fn full(&self) -> Option<String> {
        if self.expired {
            return Some(format!("PN {} has expired", self.inventory.pn_id));
        }
        let max = self.max_members?;
        (self.inventory.members.len() >= max as usize).then(|| {
            format!(
                "PN {} has its maximum of {max} members",
                self.inventory.pn_id
            )
        })
    }
}

/// A member of a PN being registered, with the SK_PNE the server derived for it.
#[derive(Clone, Debug)]
pub struct RegisteredMember {
    /// The PNE.
    pub pne_id: EntityId,
    /// Whether it initiated the set-up.
    pub initiator: bool,
    /// Its capabilities.
    pub capabilities: DeviceCapabilities,
    /// The contents it announced (000 §6.6.1.1 step 1).
    pub contents: Vec<cpns_wire::ContentItem>,
    /// SK_PNE, to be sealed at rest by the driver.
    pub session_key: SessionKey,
    /// Its own user, when it is not the PN owner's: confirmed by that user's home PN GW and
    /// charged for its use (001 §5.2.1.1 step 10).
    pub owner: Option<UserId>,
}

/// A PN's next group key epoch (docs/pn-lifecycle.md, "Group key epochs").
#[derive(Clone, Debug)]
pub struct NewGroupEpoch {
    /// The epoch.
    pub epoch: u64,
    /// Its group key, to be sealed at rest by the driver.
    pub key: cpns_crypto::GroupKey,
}

/// A change of the state of record the driver must make durable, in one transaction.
#[derive(Clone, Debug)]
pub enum ServerEffect {
    /// Capabilities and/or status reported by an entity of itself (002 §B.1.1.2 steps 12-17,
    /// 004 §5.5.1), stamped with the time by the driver. The driver answers
    /// [`Persisted::Recorded`] with its record as now.
    EntityReport {
        /// The entity.
        id: EntityId,
        /// Reported capabilities.
        capabilities: Option<Box<DeviceCapabilities>>,
        /// Reported status.
        status: Option<Status>,
    },
    /// Register a PN with its authenticated members (000 §6.6.1.1 step 11), pending until the PN
    /// GW's store confirms it ([`ServerEffect::ReconcilePns`]).
    RegisterPn {
        /// The PN.
        pn_id: PnId,
        /// Its PN GW.
        gateway: EntityId,
        /// The PN GW's owner.
        owner: UserId,
        /// The authenticated members.
        members: Vec<RegisteredMember>,
        /// The PN's first group key epoch (docs/pn-lifecycle.md, "Group key epochs").
        group: Option<NewGroupEpoch>,
        /// Its lifetime from now, in seconds, if limited (beyond the documents).
        lifetime_s: Option<u32>,
        /// The most members it may have.
        max_members: Option<u32>,
    },
    /// Add and remove members of a PN (003 §1.4.2 step 4), and move it to a new group key epoch
    /// when members leave (000 §6.6.3).
    UpdateMembers {
        /// The PN.
        pn_id: PnId,
        /// Members to add (unauthenticated until they register).
        add: Vec<NewMember>,
        /// Members to remove.
        remove: Vec<EntityId>,
        /// The PN's new group key epoch, with its key for the driver to seal at rest.
        group: Option<NewGroupEpoch>,
    },
    /// 002 §B.1.1.2 step 17: the PN list the PN GW reported decides which of its PNs exist
    /// (`cpns_store::ServerStore::reconcile_gateway_pns`). The driver answers with
    /// [`Persisted::Reconciled`].
    ReconcilePns {
        /// The PN GW.
        gateway: EntityId,
        /// The PNs its local inventory holds.
        listed: Vec<PnId>,
        /// Whether unlisted pending PNs go too (no registration of this PN GW is in flight).
        drop_unlisted_pending: bool,
    },
    /// A partial status report: PNs the PN GW stored since its last report are confirmed
    /// (`cpns_store::ServerStore::confirm_pns`); nothing is removed. The driver answers with
    /// [`Persisted::Reconciled`] (its `removed` empty).
    ConfirmPns {
        /// The PN GW.
        gateway: EntityId,
        /// The PNs it reported stored.
        pns: Vec<PnId>,
    },
    /// Keep a member's secure session replay window: the number a Secure Request carried is
    /// taken, and is run only once this is durable (docs/security.md §4.8;
    /// `cpns_store::ServerStore::set_secure_window`). The driver answers [`Persisted::Done`].
    SecureWindow {
        /// The PN whose SK_PNE sealed the request.
        pn_id: PnId,
        /// The member.
        pne: EntityId,
        /// The window with the number taken.
        window: window::ReplayWindow,
    },
    /// Keep the answer to a mutating request, so a retry with the same request id gets it again
    /// after a reconnect or a restart (docs/design.md §3, §5).
    RememberAnswer {
        /// Who asked.
        sender: Address,
        /// The request id.
        request_id: RequestId,
        /// The answer as sent.
        answer: Box<Envelope>,
    },
    /// Release a PN of this PN GW with its members, in any state (000 §6.6.5 step 2;
    /// `cpns_store::ServerStore::release_pn`).
    ReleasePn {
        /// The PN GW that asked (the PN's own: checked before).
        gateway: EntityId,
        /// The PN.
        pn_id: PnId,
    },
    /// Remove a PN the PN GW never confirmed (`cpns_store::ServerStore::remove_pending_pn`).
    DropPendingPn {
        /// The PN.
        pn_id: PnId,
    },
    /// Record a registered PNE: allocate its CPNS ID and keep SK_PNE (003 §1.4.1 step 3), adding
    /// it to the PN if it joins by this registration (§1.4.2 step 5). The driver answers with
    /// [`Persisted::CpnsId`].
    RegisterPne {
        /// The PN.
        pn_id: PnId,
        /// The PNE.
        pne_id: EntityId,
        /// Capabilities of a PNE joining the PN by this registration; `None` keeps the record's.
        capabilities: Option<Box<DeviceCapabilities>>,
        /// SK_PNE, to be sealed at rest.
        session_key: SessionKey,
        /// When the PNE joins the PN by this registration: the PN's next group key epoch.
        group: Option<NewGroupEpoch>,
    },
    /// Record statuses (004 §5.5.3), stamped with the time by the driver, which answers
    /// [`Persisted::Recorded`] with the records as now.
    RecordStatuses {
        /// The changes.
        changes: Vec<NewStatus>,
    },
    /// Keep a status subscription (a retry finds the one kept). The driver answers with
    /// [`Persisted::Subscribed`].
    AddSubscription {
        /// The subscriber.
        subscriber: EntityId,
        /// Its user.
        owner: UserId,
        /// Its request id.
        request_id: RequestId,
        /// The watched entities; none: every device of `owner`.
        entities: Vec<EntityId>,
        /// The policy (checked).
        policy: cpns_wire::StatusPolicy,
    },
    /// Remove a subscriber's subscription; the driver answers [`Persisted::Removed`].
    RemoveSubscription {
        /// The subscriber.
        subscriber: EntityId,
        /// The subscription.
        id: u64,
    },
    /// Store usage records and the charging records they make (004 §5.5.4); the driver
    /// answers [`Persisted::Usage`].
    StoreUsage {
        /// The reporting PNE.
        entity: EntityId,
        /// Its user, charged for its chargeable use.
        owner: UserId,
        /// The PN it reported in.
        pn_id: PnId,
        /// That PN's owner, when another user.
        pn_owner: Option<UserId>,
        /// The records, each with its units if chargeable.
        records: Vec<(cpns_wire::UsageRecord, Option<u64>)>,
    },
    /// Publish a service, or update the one its offerer published with the same service id
    /// (004 §5.5.5; `cpns_store::ServerStore::publish_service`); the driver answers
    /// [`Persisted::Published`] with its directory id and the watches it may match
    /// (`cpns_store::ServerStore::watch_candidates`, at most [`directory::MAX_TOLD`]), each with
    /// its watcher's SK_PNE opened.
    PublishService {
        /// The offerer: the PNE whose secure call asked.
        offerer: EntityId,
        /// Its user.
        owner: UserId,
        /// What the directory keeps.
        publish: Box<directory::Publish>,
        /// Unix milliseconds of the publish.
        now_ms: i64,
    },
    /// Keep a service watch (`cpns_store::ServerStore::add_watch`); the driver answers
    /// [`Persisted::Watch`] with its id.
    AddWatch {
        /// The watching PNE.
        watcher: EntityId,
        /// Its user.
        owner: UserId,
        /// The PN whose SK_PNE sealed the watch (and will seal its matches).
        pn_id: PnId,
        /// Normalised keywords; none: every entry.
        keywords: Vec<String>,
        /// Every keyword must match.
        all: bool,
        /// Only this type.
        service_type: Option<String>,
        /// Unix milliseconds.
        now_ms: i64,
    },
    /// End a watcher's watch; the driver answers [`Persisted::Removed`].
    RemoveWatch {
        /// The watching PNE.
        watcher: EntityId,
        /// The watch.
        watch_id: u64,
    },
    /// Make a service group with its creator as first member, at epoch 1
    /// (`cpns_store::ServerStore::create_group`; the driver seals the key at rest). The driver
    /// answers [`Persisted::Done`].
    CreateGroup {
        /// The group.
        group: cpns_wire::GroupId,
        /// Its name.
        name: String,
        /// The owning user.
        owner: UserId,
        /// Its creator, the owning member.
        creator: EntityId,
        /// The PN whose SK_PNE seals what the creator is pushed.
        creator_pn: PnId,
        /// Open to the owner's devices.
        open_to_user: bool,
        /// Epoch 1's key.
        key: cpns_crypto::GroupKey,
        /// Unix milliseconds.
        now_ms: i64,
    },
    /// Change a group's members and move it from `from_epoch` to the next with `key`
    /// (`cpns_store::ServerStore::change_group`; a conflict if another change came first). The
    /// driver answers [`Persisted::Done`].
    ChangeGroup {
        /// The group.
        group: cpns_wire::GroupId,
        /// The epoch read.
        from_epoch: u64,
        /// The next epoch's key.
        key: cpns_crypto::GroupKey,
        /// A member that joins: the PNE, its user, the PN of its request.
        add: Option<(EntityId, UserId, PnId)>,
        /// Members that leave or are expelled.
        remove: Vec<EntityId>,
        /// Unix milliseconds.
        now_ms: i64,
    },
    /// Open a delivery session's records, one per target (004 §5.5.8); the driver answers
    /// [`Persisted::Done`].
    OpenDelivery {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Its items, in order (one, or several services in one session): a record for each
        /// target and item.
        items: Vec<RecordItem>,
        /// The source.
        source: EntityId,
        /// The PN whose PN GW relays it.
        pn_id: PnId,
        /// The targets, each with the user charged (its own).
        targets: Vec<(EntityId, UserId)>,
        /// Unix milliseconds.
        now_ms: i64,
        /// More sessions of the same offer, opened with it (to a service group in several
        /// PNs): each with its PN and targets.
        also: Vec<OpenPart>,
    },
    /// Replace the contents `pne` announced, in every PN it is a member of (004 §5.5.10);
    /// the driver answers [`Persisted::Done`].
    SetContents {
        /// The PNE.
        pne: EntityId,
        /// What it holds now.
        contents: Vec<cpns_wire::ContentItem>,
    },
    /// End a target's open delivery record; the driver answers [`Persisted::Removed`] (false:
    /// it had none open).
    CloseDelivery {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The target.
        target: EntityId,
        /// Bytes it received from the session's start.
        bytes: u64,
        /// How each item ended, in order (`cpns_wire::DeliveryResult` codes); one: every
        /// item's.
        results: Vec<u32>,
        /// Unix milliseconds.
        now_ms: i64,
    },
    /// Keep an invitation; the driver answers [`Persisted::Done`].
    InviteToGroup {
        /// The group.
        group: cpns_wire::GroupId,
        /// The invitee.
        invitee: EntityId,
        /// Who invited.
        inviter: EntityId,
        /// Until when (Unix milliseconds).
        expires_at_ms: i64,
    },
    /// Drop an invitation (a decline); the driver answers [`Persisted::Removed`].
    DropInvitation {
        /// The group.
        group: cpns_wire::GroupId,
        /// The invitee.
        invitee: EntityId,
    },
    /// Delete a group with its members, invitations and key; the driver answers
    /// [`Persisted::Removed`].
    DeleteGroup {
        /// The group.
        group: cpns_wire::GroupId,
    },
    /// Take an offerer's service out of the directory; the driver answers
    /// [`Persisted::Removed`].
    UnpublishService {
        /// The offerer: the PNE whose secure call asked.
        offerer: EntityId,
        /// Its id for the service.
        service_id: String,
    },
}

/// What the driver reports back for a persisted effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// The effect is durable.
    Done,
    /// The effect is durable and the PNE has this CPNS ID.
    CpnsId(CpnsId),
    /// The inventory follows the PN GW's list: these PNs were confirmed, these removed.
    Reconciled {
        /// Pending PNs now active.
        confirmed: Vec<PnId>,
        /// PNs removed from the inventory.
        removed: Vec<PnId>,
    },
    /// The report or statuses are recorded; the records of the entities concerned as the store
    /// holds them now (with their attributes and times).
    Recorded(Vec<crate::status::EntityState>),
    /// The subscription is kept (the one kept first, for a retry) with the records of what it
    /// watches as of the same transaction.
    Subscribed {
        /// Its id.
        id: u64,
        /// What it watches, as kept.
        watched: crate::status::Watched,
        /// Its policy, as kept.
        policy: cpns_wire::StatusPolicy,
        /// The records of the enrolled entities it watches.
        states: Vec<crate::status::EntityState>,
    },
    /// Whether a subscription was removed.
    Removed(bool),
    /// What storing usage did.
    Usage(cpns_wire::UsageAccepted),
    /// The service is in the directory.
    Published {
        /// Its directory id.
        dir_id: u64,
        /// The watches it may match.
        watchers: Vec<directory::Watcher>,
    },
    /// The watch is kept under this id.
    Watch(u64),
}

/// What the server's status hub must do once an effect is stored (docs/device-status.md,
/// "Fan-out"): the machine says it, so the driver only carries it out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// These records, as the store now holds them, changed: notify the subscriptions they
    /// concern (004 §5.5.3.2).
    Changed(Vec<crate::status::EntityState>),
    /// A subscription is kept: hold it, knowing first the records of what it watches as of
    /// its write.
    Subscribed {
        /// The subscription, its subscriber named by entity.
        subscription: crate::status::Subscription<EntityId>,
        /// The records it starts from.
        states: Vec<crate::status::EntityState>,
    },
    /// `subscriber`'s subscription `id` is removed.
    Unsubscribed {
        /// The subscriber.
        subscriber: EntityId,
        /// The subscription.
        id: u64,
    },
    /// This session now reaches `entity` (a PNE its PN GW reported online, one that subscribed
    /// through it), or no longer does (reported offline): deliver `entity`'s notifications on
    /// this session, or stop.
    Reach {
        /// The entity.
        entity: EntityId,
        /// Whether this session reaches it now.
        here: bool,
    },
}

/// Something the session wants the driver or the operator to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// The PN GW proved its EUKey (002 §B.1.1.2 step 10).
    GatewayAuthenticated(EntityId),
    /// The PN GW finished its connection set-up (002 §B.1.1.2 step 17).
    GatewayReady(EntityId),
    /// A PN was released by its PN GW (000 §6.6.5 step 2).
    PnReleased {
        /// The PN.
        pn_id: PnId,
        /// Its PN GW.
        gateway: EntityId,
    },
    /// Members left or were expelled from a PN, which moved to a new group key epoch (000
    /// §6.6.3).
    MembersRemoved {
        /// The PN.
        pn_id: PnId,
        /// The members removed.
        removed: Vec<EntityId>,
        /// The PN's new epoch.
        epoch: u64,
    },
    /// A PN was registered with these authenticated members.
    PnRegistered {
        /// The PN.
        pn_id: PnId,
        /// Authenticated members.
        members: Vec<EntityId>,
    },
    /// The inventory was brought in line with the PN GW's PN list (002 §B.1.1.2 step 17).
    InventoryReconciled {
        /// Pending PNs the PN GW confirmed.
        confirmed: Vec<PnId>,
        /// PNs the PN GW no longer holds, removed.
        removed: Vec<PnId>,
    },
    /// A PNE was registered.
    PneRegistered {
        /// The PNE.
        pne_id: EntityId,
        /// Its CPNS ID.
        cpns_id: CpnsId,
    },
    /// Authentication of an entity failed.
    AuthenticationFailed {
        /// Who.
        entity: EntityId,
        /// Why.
        reason: crate::Failure,
    },
    /// A flow ended without success.
    FlowFailed {
        /// Which flow.
        flow: crate::Flow,
        /// Why.
        reason: crate::Failure,
    },
    /// What an inventory shows changed (004 §5.5.10), for its owner's subscribers: a PN of the
    /// PN GW of this session (`owner` its user) was set up, joined, left or released, or one
    /// of its members changed what it holds or offers.
    InventoryChanged {
        /// The PN GW's user, the PN's owner.
        owner: UserId,
        /// The PN, if the change is one PN's.
        pn_id: Option<PnId>,
        /// The member, if the change is one member's.
        pne: Option<EntityId>,
        /// What changed.
        change: InventoryChange,
    },
    /// A target's part of a delivery from outside ended otherwise than delivered.
    DeliveryEnded {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The target.
        target: EntityId,
        /// How.
        result: cpns_wire::DeliveryResult,
    },
    /// Every target's part of a delivery from outside ended.
    DeliverySent {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The targets that have it, hash checked.
        delivered: Vec<EntityId>,
    },
    /// A delivery message from the PN GW was refused: of no session it may send for, or out of
    /// its bounds (docs/services.md, "Forwarding between PNs").
    DeliveryRefused {
        /// The session it named.
        session: cpns_wire::DeliveryId,
        /// Why.
        reason: String,
    },
    /// A delivery from outside, or one forwarded between PNs through this session, stopped
    /// before every target's end (its content could not be read, or a connection ended).
    DeliveryStopped {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Why.
        reason: String,
    },
}

/// One item of a session whose records a [`ServerEffect::OpenDelivery`] opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordItem {
    /// The service it is delivered as.
    pub service_id: String,
    /// Its name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// The service's tariff now, units per started MB (none: not chargeable): a target's part
    /// of it that ends delivered is charged by it.
    pub per_mb: Option<u64>,
}

/// One more session a [`ServerEffect::OpenDelivery`] opens records of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPart {
    /// The session.
    pub session: cpns_wire::DeliveryId,
    /// The PN its records name (its targets').
    pub pn_id: PnId,
    /// The targets, each with the user charged (its own).
    pub targets: Vec<(EntityId, UserId)>,
}

/// What changed in an inventory ([`ServerEvent::InventoryChanged`]; the wire's own).
pub use cpns_wire::InventoryChange;

/// What the driver must do next.
#[derive(Debug)]
#[must_use]
pub enum ServerOutput {
    /// Send this whole frame to the PN GW.
    Transmit {
        /// The frame, length prefix included.
        frame: Vec<u8>,
        /// What it is, for traces.
        trace: TraceRecord,
    },
    /// Read what `load` names, in one snapshot of the store, and answer with
    /// [`ServerSession::handle_loaded`].
    Load {
        /// Token to answer with.
        token: Token,
        /// What to read.
        load: Load,
    },
    /// Persist an effect in one transaction and answer with [`ServerSession::handle_persisted`].
    Persist {
        /// Token to answer with.
        token: Token,
        /// The effect.
        effect: ServerEffect,
    },
    /// Something happened.
    Event(ServerEvent),
    /// Tell the status hub, after the store work it follows (see [`Publish`]).
    Publish(Publish),
    /// Ask another PN GW's session (001 §5.2.1.1 step 8): deliver `request` to the session of
    /// `gateway` with [`ServerSession::confirm_for_other`], and its answer back here with
    /// [`ServerSession::handle_gateway_answer`] (an error if that PN GW has no session).
    AskGateway {
        /// The home PN GW.
        gateway: EntityId,
        /// Names the question in the answer.
        ask: u64,
        /// The question.
        request: cpns_wire::PneConfirmRequest,
    },
    /// The answer of this session's PN GW to a question another session asked through
    /// [`ServerSession::confirm_for_other`] (001 §5.2.1.1 step 9).
    GatewayAnswer {
        /// The question's `ask`, as given.
        ask: u64,
        /// The PN GW's answer, or why there is none.
        answer: Result<cpns_wire::PneConfirmResponse, ErrorBody>,
    },
    /// The answer to [`ServerSession::deliver`]: the session set up, or why not.
    DeliveryStarted {
        /// The `ask` given.
        ask: u64,
        /// The session, or the refusal.
        result: Result<cpns_wire::DeliveryId, ErrorBody>,
    },
    /// Read `len` bytes at `offset` of the content of external session `session`; answer with
    /// [`ServerSession::handle_content_read`].
    ReadContent {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Where.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// The answer to [`ServerSession::ask_capabilities`].
    CapabilitiesAnswered {
        /// The `ask` given.
        ask: u64,
        /// The capabilities, or why there are none.
        result: Result<DeviceCapabilities, ErrorBody>,
    },
    /// Deliver a secure notice to `to` through the session of PN GW `gateway` (this one's or
    /// another's), with [`ServerSession::send_notice`]; dropped if that PN GW has no session
    /// (a notice is not kept for later: docs/services.md, "Watches").
    Notice {
        /// The PN GW to relay it.
        gateway: EntityId,
        /// The PNE it is for.
        to: EntityId,
        /// The notice.
        notice: cpns_wire::SecureNotice,
    },
    /// Hand the route of a session forwarded between PNs to the session of PN GW `gateway`
    /// (the targets'), with [`ServerSession::forward_in`], before the notices to its targets;
    /// if that PN GW has no session, say so here with [`ServerSession::forward_ended`].
    Forward {
        /// The targets' PN GW.
        gateway: EntityId,
        /// What it relays: a route `from_server`.
        route: cpns_wire::DeliveryRoute,
    },
    /// Hand `msg` of forwarded session `session` to the other session relaying it, that of
    /// PN GW `gateway`, with [`ServerSession::relayed`], in order; if it is gone (or cannot
    /// take it), say so here with [`ServerSession::forward_ended`].
    Relay {
        /// The other side's PN GW.
        gateway: EntityId,
        /// The session.
        session: cpns_wire::DeliveryId,
        /// What it is handed.
        msg: Relayed,
    },
    /// End the session after sending what was queued.
    Close {
        /// Why.
        reason: String,
    },
}

/// Work parked while the driver loads or persists.
#[derive(Debug)]
enum Parked {
    SetupLoad(connect::SetupLoad),
    Report {
        /// The capabilities update this answers, if any.
        req: Option<u64>,
        /// Whether this is the session's first status report: the one that makes it ready.
        first_status: bool,
    },
    Reconcile,
    DropPending(PnId),
    Remembered,
    SecureLoad(secure::SecureLoad),
    SecureTaken(Box<secure::Taken>),
    InventoryLoad(secure::InventoryLoad),
    PnRegistrationLoad {
        req_msg: u64,
        req: cpns_wire::PnRegistrationRequest,
    },
    PnRegistrationPersist(PnId),
    PneRegistrationLoad(register::RegLoad),
    PneRegistrationPersist((EntityId, RequestId)),
    UpdateLoad {
        req_msg: u64,
        req: cpns_wire::PnUpdateRequest,
    },
    ReleaseLoad {
        req_msg: u64,
        req: cpns_wire::PnReleaseRequest,
    },
    ReleasePersist {
        req_msg: u64,
        request_id: RequestId,
        pn_id: PnId,
    },
    LeaveLoad {
        req_msg: u64,
        req: cpns_wire::PneLeaveRequest,
    },
    GroupKeyLoad {
        req_msg: u64,
        pne: EntityId,
        req: cpns_wire::GroupKeyRequest,
    },
    RemovalPersist(Box<membership::Removal>),
    ServedLoad(Box<status::NeedsServed>),
    StatusRead(Box<status::StatusRead>),
    CapsPersist {
        req_msg: u64,
        to: Address,
    },
    StatusPersist {
        req_msg: u64,
        to: Address,
        /// Whom the session reaches, or no longer, once recorded.
        reach: Vec<(EntityId, bool)>,
    },
    SubscribePersist {
        req_msg: u64,
        subscriber: EntityId,
    },
    UnsubscribePersist {
        req_msg: u64,
        subscriber: EntityId,
        id: u64,
    },
    UsageLoad(Box<secure::UsageLoad>),
    UsagePersist(Box<secure::Call>),
    ChargingLoad(Box<secure::Call>),
    GroupLoad(Box<groups::GroupLoad>),
    DeliveryLoad(Box<delivery::DeliveryLoad>),
    GroupDeliveryLoad(Box<delivery::DeliveryLoad>),
    UserDeliveryLoad(Box<delivery::DeliveryLoad>),
    ForwardLoad(Box<delivery::ForwardLoad>),
    PickLoad(Box<delivery::PickLoad>),
    RequestLoad(Box<delivery::RequestLoad>),
    MessageLoad(Box<delivery::MessageLoad>),
    DeliveryOpened(Box<delivery::DeliveryOpened>),
    DeliveryClosed(Box<(secure::Call, cpns_wire::DeliveryDone)>),
    ExternalLoad(Box<external::ExternalLoad>),
    ContentsWrite(Box<(secure::Call, cpns_wire::ContentsDeclare)>),
    ExternalOpened(Box<external::ExternalOpened>),
    GroupWrite(Box<(groups::GroupWrite, groups::Pushes)>),
    GroupDelete(Box<(groups::GroupWrite, Vec<groups::Reach>)>),
    DirectoryLoad(Box<services::DirectoryLoad>),
    DirectoryWrite(Box<services::DirectoryWrite>),
}

/// Responses kept for retried requests (docs/design.md §3: idempotent on (sender, request id)).
const REPLAY_CACHE: usize = 256;

impl Drop for ServerSession {
    /// A session that ends gives back every budget unit its flows held.
    fn drop(&mut self) {
        self.cfg.budget.release(self.held);
    }
}

/// The server side of one PN GW session.
#[derive(Debug)]
pub struct ServerSession {
    /// Shared by every session of a server (an idle session's memory, ARCHITECTURE decision 22).
    cfg: std::sync::Arc<ServerConfig>,
    tls_exporter: [u8; 32],
    codec: LinkCodec,
    conn: Conn,
    rng: MachineRng,
    ids: MsgIds,
    tokens: Tokens,
    parked: BTreeMap<Token, Parked>,
    establishments: BTreeMap<PnId, Establishment>,
    registrations: BTreeMap<(EntityId, RequestId), Registration>,
    /// PNs registered on this session and not yet confirmed by the PN GW's PN list, with the
    /// deadline after which they are removed.
    unconfirmed: BTreeMap<PnId, Instant>,
    /// Whether the PN GW reported its PN list on this session yet (the first report may drop
    /// unconfirmed PNs of earlier sessions).
    reported: bool,
    /// The PN GW's status last persisted on this session: an unchanged status is not written
    /// again.
    last_status: Option<Status>,
    /// PNEs a PN Update Request added, waiting to authenticate before they enter the inventory
    /// (003 §1.4.2 steps 4-5; docs/ARCHITECTURE.md, "Identity on the PAN").
    pending_members: BTreeMap<(PnId, EntityId), register::PendingMember>,
    answered: VecDeque<((Address, RequestId), Envelope)>,
    /// Answers to secure calls, kept for a retry in this session: by the request itself (its
    /// PNE, PN, number and sealed tag), since numbers run per SK_PNE and a PNE has one in each
    /// of its PNs, and a new one after registering again.
    secure_answered: VecDeque<(secure::Retry, Envelope)>,
    /// The replay windows of the secure sessions of this PN GW's members that called, as taken
    /// (docs/security.md §4.8), each with the SK_PNE it belongs to: loaded with the member's
    /// SK_PNE the first time, and again once the store holds another SK_PNE (a registration
    /// or an establishment started a new window).
    windows: BTreeMap<(PnId, EntityId), (cpns_crypto::SessionKey, window::ReplayWindow)>,
    /// PNE Confirm Requests other sessions asked this session's PN GW, by message id
    /// (001 §5.2.1.1 steps 8-9).
    asked: BTreeMap<u64, confirm::Asked>,
    /// Units of the server's [`FlowBudget`] this session holds: one per flow in progress.
    held: usize,
    /// What the session knows of the devices it reports for (served PNEs, rate buckets).
    reporting: Option<Box<status::Reporting>>,
    /// When the PN GW was last heard.
    last_heard: Instant,
    /// Capabilities Queries sent, by message id: the ask they answer and their deadline.
    caps_asks: BTreeMap<u64, (u64, Instant)>,
    /// The wall clock at an instant ([`ServerSession::set_wall_clock`]).
    wall: Option<(Instant, i64)>,
    /// Deliveries from external entities this session sends (docs/services.md, "Delivery from
    /// outside a PN").
    outbound: BTreeMap<cpns_wire::DeliveryId, Box<external::Outgoing>>,
    /// Sessions from outside a lost WAN session of this PN GW was sending, and forwards it
    /// relayed, waiting for its connection set-up to be done here
    /// ([`ServerSession::restore_outbound`]).
    restoring: Option<Box<KeptOutbound>>,
    /// Sessions forwarded between PNs that this session relays, at either end (docs/
    /// services.md, "Forwarding between PNs").
    forwards: forward::Forwards,
    out: VecDeque<ServerOutput>,
}

impl ServerSession {
    /// A session on a new TLS connection whose RFC 5705 exporter value (label
    /// [`cpns_crypto::TLS_EXPORTER_LABEL`]) is `tls_exporter`, drawing every random value from
    /// `rng`.
    pub fn new(
        cfg: impl Into<std::sync::Arc<ServerConfig>>,
        tls_exporter: [u8; 32],
        now: Instant,
        rng: MachineRng,
    ) -> Self {
        let cfg = cfg.into();
        let codec = LinkCodec::new(cfg.max_frame);
        let deadline = now + cfg.setup_timeout;
        Self {
            cfg,
            tls_exporter,
            codec,
            conn: Conn::AwaitSetup { deadline },
            rng,
            ids: MsgIds::default(),
            tokens: Tokens::default(),
            parked: BTreeMap::new(),
            establishments: BTreeMap::new(),
            registrations: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            unconfirmed: BTreeMap::new(),
            reported: false,
            last_status: None,
            answered: VecDeque::new(),
            secure_answered: VecDeque::new(),
            windows: BTreeMap::new(),
            asked: BTreeMap::new(),
            held: 0,
            reporting: None,
            last_heard: now,
            caps_asks: BTreeMap::new(),
            wall: None,
            outbound: BTreeMap::new(),
            restoring: None,
            forwards: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    /// The wall clock (Unix milliseconds) at `now`: usage reports are checked against it. The
    /// driver calls it when the session starts, as the PN GW's driver does.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: i64) {
        self.wall = Some((now, unix_ms));
    }

    /// Unix seconds at `at`, by the wall clock given.
    fn unix_s(&self, at: Instant) -> Option<u64> {
        u64::try_from(self.unix_ms(at)? / 1000).ok()
    }

    /// Unix milliseconds at `at`, by the wall clock given.
    fn unix_ms(&self, at: Instant) -> Option<i64> {
        let (base, unix) = self.wall?;
        Some(if at >= base {
            unix.saturating_add(i64::try_from(at.duration_since(base).as_millis()).ok()?)
        } else {
            unix.saturating_sub(i64::try_from(base.duration_since(at).as_millis()).ok()?)
        })
    }

    /// The authenticated PN GW, once connection set-up has authenticated it.
    pub fn gateway(&self) -> Option<&EntityId> {
        self.conn.gateway().map(|g| &g.id)
    }

    /// Takes one frame (without its length prefix) from the PN GW. An `Err` means the frame was
    /// undecodable and the session must be closed; everything else is answered on the wire.
    pub fn handle_frame(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), ProtoError> {
        self.last_heard = now;
        let env = match self.codec.decode(frame) {
            Ok(env) => env,
            Err(e) => {
                let (msg_id, body) = crate::link::version_answer(e)?;
                self.respond(msg_id, Address::Server, body);
                return Ok(());
            }
        };
        self.handle_envelope(now, env);
        self.release_ended_flows();
        Ok(())
    }

    /// Flows in progress on this session: establishments, registrations and PN updates,
    /// including those waiting for the store.
    pub fn flows_in_progress(&self) -> usize {
        let waiting = self
            .parked
            .values()
            .filter(|p| {
                matches!(
                    p,
                    Parked::PnRegistrationLoad { .. }
                        | Parked::PneRegistrationLoad(_)
                        | Parked::UpdateLoad { .. }
                        | Parked::ReleaseLoad { .. }
                        | Parked::ReleasePersist { .. }
                        | Parked::LeaveLoad { .. }
                        | Parked::GroupKeyLoad { .. }
                        | Parked::RemovalPersist(_)
                        | Parked::SecureLoad(_)
                        | Parked::InventoryLoad(_)
                )
            })
            .count();
        self.establishments.len() + self.registrations.len() + waiting
    }

    /// Starts a flow if the session's and the server's limits allow; answers `busy` otherwise.
    fn admit(&mut self, env: &Envelope) -> bool {
        let reason = if self.flows_in_progress() >= self.cfg.max_flows {
            "this PN GW has as many flows in progress as it may; wait for their answers"
        } else if !self.cfg.budget.try_acquire() {
            "the CPNS Server is running as many flows as it takes; try again later"
        } else {
            self.held += 1;
            return true;
        };
        self.reject(env, ErrorCode::Busy, reason);
        false
    }

    /// Gives back the budget units of flows that ended.
    fn release_ended_flows(&mut self) {
        let ended = self.held.saturating_sub(self.flows_in_progress());
        self.cfg.budget.release(ended);
        self.held -= ended;
    }

    fn handle_envelope(&mut self, now: Instant, env: Envelope) {
        if let Body::Unknown(code) = env.body {
            return self.reject(
                &env,
                ErrorCode::UnsupportedMessage,
                format!("unknown message type {code}"),
            );
        }
        if matches!(self.conn, Conn::Closed) {
            return;
        }
        match self.conn.gateway().cloned() {
            None => self.handle_unauthenticated(now, env),
            Some(gw) => self.handle_connected(now, gw, env),
        }
    }

    fn handle_connected(&mut self, now: Instant, gw: connect::Gw, env: Envelope) {
        // Requests relayed for a PNE carry the PNE as sender; anything else must come from the
        // PN GW itself.
        match env.body.clone() {
            Body::DeviceCapabilitiesUpdate(m) => self.on_capabilities_update(now, &gw, &env, m),
            Body::StatusReport(m) => self.on_status_report(now, &gw, &env, m),
            Body::StatusQuery(m) => self.on_status_query(&gw, &env, m),
            Body::StatusSubscribe(m) => self.on_status_subscribe(&gw, &env, m),
            Body::StatusUnsubscribe(m) => self.on_status_unsubscribe(&gw, &env, m),
            // Heard: `last_heard` moved on; nothing to answer.
            Body::Heartbeat(_) => {}
            Body::CapabilitiesAnswer(m) => self.on_capabilities_answer(&env, m),
            Body::StatusUpdateResponse(m) => self.on_status(now, &gw, m),
            Body::PnRegistrationRequest(m) => self.on_pn_registration(now, &gw, &env, m),
            Body::AuthenticationResponse(m)
                if m.purpose == cpns_wire::AuthPurposeCode::Registration =>
            {
                self.on_registration_auth(&env, m)
            }
            Body::AuthenticationResponse(m) => self.on_establishment_auth(now, &gw, &env, m),
            Body::PneRegistrationRequest(m) => self.on_pne_registration(now, &gw, &env, m),
            Body::SecureRequest(m) => self.on_secure_request(&gw, &env, m),
            Body::PnUpdateRequest(m) => self.on_pn_update(&gw, &env, m),
            Body::PnReleaseRequest(m) => self.on_pn_release(&gw, &env, m),
            Body::PneLeaveRequest(m) => self.on_pne_leave(&gw, &env, m),
            Body::GatewayGroupRequest(m) => self.on_gateway_group(now, &gw, &env, m),
            Body::GroupKeyRequest(m) => self.on_group_key_request(&env, m),
            Body::DeliveryChunk(m) => self.on_forward_chunk(&env, m),
            Body::DeliveryControl(m) => self.on_forward_control(&env, m),
            Body::DeliveryAck(m) if self.is_forward(&m.session) => self.on_forward_ack(&env, m),
            Body::DeliveryDone(m) if self.is_forward(&m.session) => self.on_forward_done(&env, m),
            Body::DeliveryAck(m) => self.on_outbound_ack(&env, m),
            Body::DeliveryDone(m) => self.on_outbound_done(&env, m),
            Body::PneConfirmResponse(m) => self.on_confirm_response(&env, m),
            Body::ErrorBody(e) => self.on_error(&env, e),
            _ => self.reject(
                &env,
                ErrorCode::WrongState,
                format!("{} is not expected here", env.body.name()),
            ),
        }
    }

    /// Answers a [`ServerOutput::Load`] with what the driver read, or why it could not (a read
    /// error, a stored key that does not open). A failed load ends only the flow that asked:
    /// its request is answered `internal` and [`ServerEvent::FlowFailed`] says why; the session
    /// and its other flows go on. An answer of another kind than the load asked for fails the
    /// flow the same way.
    pub fn handle_loaded(
        &mut self,
        now: Instant,
        token: Token,
        loaded: Result<Loaded, StoreFailure>,
    ) -> Result<(), ProtoError> {
        use crate::Flow;
        let peer = Address::Server;
        match self.parked.remove(&token).ok_or(ProtoError::UnknownToken)? {
            Parked::SetupLoad(p) => match load::gateway(loaded) {
                Ok(gw) => self.setup_loaded(now, p, gw),
                Err(e) => self.setup_load_failed(p, e),
            },
            Parked::PnRegistrationLoad { req_msg, req } => match load::pn(loaded) {
                Ok(l) => self.pn_registration_loaded(now, req_msg, req, l),
                Err(e) => self.load_failed(req_msg, peer, Flow::PnEstablishment, e),
            },
            Parked::PneRegistrationLoad(p) => match load::pn(loaded) {
                Ok(l) => self.pne_registration_loaded(now, p, l),
                Err(e) => {
                    let (req_msg, to) = p.asker();
                    self.load_failed(req_msg, to, Flow::PneRegistration, e);
                }
            },
            Parked::SecureLoad(p) => match load::session(loaded) {
                Ok(l) => self.secure_loaded(now, p, l),
                Err(e) => {
                    let (req_msg, to) = p.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::InventoryLoad(p) => match load::inventory(loaded) {
                Ok(l) => self.inventory_loaded(p, l),
                Err(e) => {
                    let (req_msg, to) = p.asker();
                    self.load_failed(req_msg, to, Flow::InventoryQuery, e);
                }
            },
            Parked::UpdateLoad { req_msg, req } => match load::pn(loaded) {
                Ok(l) => self.pn_update_loaded(now, req_msg, req, l),
                Err(e) => self.load_failed(req_msg, peer, Flow::MembershipChange, e),
            },
            Parked::ReleaseLoad { req_msg, req } => match load::pn(loaded) {
                Ok(l) => self.pn_release_loaded(req_msg, req, l),
                Err(e) => self.load_failed(req_msg, peer, Flow::PnRelease, e),
            },
            Parked::LeaveLoad { req_msg, req } => match load::pn(loaded) {
                Ok(l) => self.pne_leave_loaded(req_msg, req, l),
                Err(e) => self.load_failed(req_msg, peer, Flow::MembershipChange, e),
            },
            Parked::GroupKeyLoad { req_msg, pne, req } => match load::group_key(loaded) {
                Ok(l) => self.group_key_loaded(req_msg, &pne, req, l),
                Err(e) => self.load_failed(req_msg, Address::Entity(pne), Flow::GroupKey, e),
            },
            Parked::ServedLoad(w) => match load::served(loaded) {
                Ok(l) => self.served_loaded(*w, l),
                Err(e) => self.load_failed(w.req_msg(), peer, Flow::StatusManagement, e),
            },
            Parked::StatusRead(r) => match load::statuses(loaded) {
                Ok(l) => self.status_read(*r, l),
                Err(e) => self.load_failed(r.req_msg(), peer, Flow::StatusManagement, e),
            },
            Parked::UsageLoad(u) => match load::usage_owners(loaded) {
                Ok(l) => self.usage_loaded(*u, l),
                Err(e) => {
                    let (req_msg, to) = u.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::ChargingLoad(c) => match load::charging(loaded) {
                Ok(l) => self.charging_loaded(*c, l),
                Err(e) => {
                    let (req_msg, to) = c.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::ExternalLoad(d) => self.external_loaded(*d, load::pn(loaded)),
            Parked::DeliveryLoad(d) => match load::pn(loaded) {
                Ok(l) => self.delivery_loaded(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::MessageLoad(d) => match load::pn(loaded) {
                Ok(l) => self.message_loaded(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::RequestLoad(d) => match load::pn(loaded) {
                Ok(l) => self.request_loaded(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::PickLoad(d) => match load::statuses(loaded) {
                Ok(l) => self.picked(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::ForwardLoad(d) => match load::pn(loaded) {
                Ok(l) => self.forward_loaded(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::UserDeliveryLoad(d) => match load::user_reach(loaded) {
                Ok(l) => self.user_delivery_loaded(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::GroupDeliveryLoad(d) => match load::group(loaded) {
                Ok(l) => self.group_delivery_loaded(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::GroupLoad(g) => match load::group(loaded) {
                Ok(l) => self.group_loaded(*g, l),
                Err(e) => {
                    let (req_msg, to) = g.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            Parked::DirectoryLoad(d) => match load::directory(loaded) {
                Ok(l) => self.directory_loaded(*d, l),
                Err(e) => {
                    let (req_msg, to) = d.asker();
                    self.load_failed(req_msg, to, Flow::SecureCall, e);
                }
            },
            other => {
                self.parked.insert(token, other);
                return Err(ProtoError::UnknownToken);
            }
        }
        self.release_ended_flows();
        Ok(())
    }

    /// A load failed: the flow that asked ends, its request `req_msg` answered `internal` to
    /// `to` (the PN GW for [`Address::Server`]), and the operator told why.
    fn load_failed(&mut self, req_msg: u64, to: Address, flow: crate::Flow, e: StoreFailure) {
        let answer = ErrorBody::new(ErrorCode::Internal, format!("store: {e}"));
        self.respond(req_msg, to, answer);
        self.event(ServerEvent::FlowFailed {
            flow,
            reason: crate::Failure::Store(e),
        });
    }

    /// Answers a [`ServerOutput::Persist`]; `Err` carries why the store failed.
    pub fn handle_persisted(
        &mut self,
        now: Instant,
        token: Token,
        result: Result<Persisted, StoreFailure>,
    ) -> Result<(), ProtoError> {
        match self.parked.remove(&token).ok_or(ProtoError::UnknownToken)? {
            Parked::Report { req, first_status } => {
                self.report_persisted(req, first_status, result)
            }
            Parked::Reconcile => self.reconcile_persisted(result),
            Parked::SecureTaken(t) => self.secure_taken(now, *t, result),
            Parked::Remembered => {
                if let Err(e) = result {
                    self.event(ServerEvent::FlowFailed {
                        flow: crate::Flow::KeepingAnswer,
                        reason: crate::Failure::Store(e),
                    });
                }
            }
            Parked::DropPending(pn) => self.drop_pending_persisted(pn, result),
            Parked::PnRegistrationPersist(pn) => self.pn_registration_persisted(now, pn, result),
            Parked::PneRegistrationPersist(key) => {
                self.pne_registration_persisted(now, key, result)
            }
            Parked::ReleasePersist {
                req_msg,
                request_id,
                pn_id,
            } => self.pn_release_persisted(req_msg, request_id, pn_id, result),
            Parked::RemovalPersist(r) => self.removal_persisted(*r, result),
            Parked::CapsPersist { req_msg, to } => {
                let ok = cpns_wire::DeviceCapabilitiesConfirm {};
                self.report_stored(req_msg, to, ok, Vec::new(), result)
            }
            Parked::StatusPersist { req_msg, to, reach } => {
                self.report_stored(req_msg, to, cpns_wire::StatusAck {}, reach, result)
            }
            Parked::SubscribePersist {
                req_msg,
                subscriber,
            } => self.subscribe_persisted(req_msg, subscriber, result),
            Parked::UnsubscribePersist {
                req_msg,
                subscriber,
                id,
            } => self.unsubscribe_persisted(req_msg, subscriber, id, result),
            Parked::UsagePersist(c) => self.usage_persisted(*c, result),
            Parked::DirectoryWrite(w) => self.directory_written(*w, result),
            Parked::GroupWrite(w) => {
                let (w, pushes) = *w;
                self.group_written(w, pushes, result);
            }
            Parked::DeliveryOpened(o) => self.delivery_opened(*o, result),
            Parked::ExternalOpened(o) => self.external_opened(*o, result),
            Parked::ContentsWrite(w) => {
                let (c, declared) = *w;
                self.contents_written(c, declared, result);
            }
            Parked::DeliveryClosed(d) => {
                let (c, done) = *d;
                self.delivery_closed(c, done, result);
            }
            Parked::GroupDelete(d) => {
                let (w, ends) = *d;
                self.group_deleted(w, ends, result);
            }
            other => {
                self.parked.insert(token, other);
                return Err(ProtoError::UnknownToken);
            }
        }
        self.release_ended_flows();
        Ok(())
    }

    /// Ends every flow whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.connect_timeout(now);
        self.confirmation_timeouts(now);
        self.pne_confirm_timeouts(now);
        self.establishment_timeouts(now);
        self.registration_timeouts(now);
        self.silence_timeout(now);
        self.caps_ask_timeouts(now);
        self.outbound_timeouts(now);
        self.release_ended_flows();
    }

    /// The earliest deadline of the session, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let flows = self
            .establishments
            .values()
            .map(|e| e.deadline)
            .chain(self.registrations.values().map(|r| r.deadline))
            .chain(self.pending_members.values().map(|p| p.deadline))
            .chain(self.unconfirmed.values().copied())
            .chain(self.asked.values().map(|a| a.deadline));
        self.conn
            .deadline()
            .into_iter()
            .chain(self.silence_deadline())
            .chain(self.caps_asks.values().map(|(_, d)| *d))
            .chain(self.outbound_deadline())
            .chain(flows)
            .min()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        let out = self.out.pop_front();
        if out.is_none() {
            self.shed_idle_memory();
        }
        out
    }

    /// Once the driver has taken every output, gives back what emptied collections still hold
    /// (an emptied `BTreeMap` keeps its root node, a `VecDeque` its capacity): an idle session
    /// costs only its own fields (docs/ARCHITECTURE.md decision 22).
    fn shed_idle_memory(&mut self) {
        fn fresh<K: Ord, V>(m: &mut BTreeMap<K, V>) {
            if m.is_empty() {
                *m = BTreeMap::new();
            }
        }
        fresh(&mut self.parked);
        fresh(&mut self.establishments);
        fresh(&mut self.registrations);
        fresh(&mut self.unconfirmed);
        fresh(&mut self.pending_members);
        fresh(&mut self.asked);
        fresh(&mut self.caps_asks);
        if self.reporting.as_ref().is_some_and(|r| r.is_empty()) {
            self.reporting = None;
        }
        if self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
    }

    // ---- helpers shared by the flows ----

    fn park(&mut self, parked: Parked) -> Token {
        let token = self.tokens.next();
        self.parked.insert(token, parked);
        token
    }

    fn load(&mut self, parked: Parked, load: Load) {
        let token = self.park(parked);
        self.out.push_back(ServerOutput::Load { token, load });
    }

    fn persist(&mut self, parked: Parked, effect: ServerEffect) {
        let token = self.park(parked);
        self.out.push_back(ServerOutput::Persist { token, effect });
    }

    fn event(&mut self, e: ServerEvent) {
        // The inventory changes these events are, for the PN owner's subscribers.
        let changes: Vec<(PnId, Option<EntityId>, InventoryChange)> = match &e {
            ServerEvent::PnRegistered { pn_id, .. } => {
                vec![(*pn_id, None, InventoryChange::Established)]
            }
            ServerEvent::MembersRemoved { pn_id, removed, .. } => removed
                .iter()
                .map(|m| (*pn_id, Some(m.clone()), InventoryChange::Left))
                .collect(),
            ServerEvent::PnReleased { pn_id, .. } => {
                vec![(*pn_id, None, InventoryChange::Released)]
            }
            _ => Vec::new(),
        };
        self.out.push_back(ServerOutput::Event(e));
        for (pn_id, pne, change) in changes {
            self.inventory_changed(Some(pn_id), pne, change);
        }
    }

    /// Tells the owner's subscribers that an inventory of this session's PN GW changed.
    pub(super) fn inventory_changed(
        &mut self,
        pn_id: Option<PnId>,
        pne: Option<EntityId>,
        change: InventoryChange,
    ) {
        let Some((gw, owner)) = self.conn.gateway().map(|g| (g.id.clone(), g.owner.clone())) else {
            return;
        };
        // What the PN GW cannot see in the sealed calls it relays, for the PNEs following
        // its PNs (docs/services.md, "Following the changes"): what changed, not the change.
        if pn_id.is_none()
            && let Some(member) = &pne
        {
            let id = self.ids.next();
            let note = cpns_wire::InventoryChanged {
                pn_id: None,
                pne: Some(member.clone()),
                change,
            };
            self.transmit(Envelope::notify(
                id,
                Address::Server,
                Address::Entity(gw),
                note,
            ));
        }
        self.out
            .push_back(ServerOutput::Event(ServerEvent::InventoryChanged {
                owner,
                pn_id,
                pne,
                change,
            }));
    }

    fn publish(&mut self, p: Publish) {
        self.out.push_back(ServerOutput::Publish(p));
    }

    fn transmit(&mut self, env: Envelope) {
        let trace = TraceRecord {
            from: env.from.to_string(),
            to: env.to.to_string(),
            message: env.body.name(),
            sealed: false,
        };
        match self.codec.encode(&env) {
            Ok(frame) => self.out.push_back(ServerOutput::Transmit { frame, trace }),
            Err(e) => self.out.push_back(ServerOutput::Close {
                reason: format!("encode: {e}"),
            }),
        }
    }

    fn peer(&self) -> Address {
        self.conn
            .gateway()
            .map_or(Address::Server, |g| Address::Entity(g.id.clone()))
    }

    fn send_request(&mut self, to: Address, body: impl Into<Body>) -> u64 {
        let id = self.ids.next();
        self.transmit(Envelope::request(id, Address::Server, to, body));
        id
    }

    fn respond(&mut self, in_reply_to: u64, to: Address, body: impl Into<Body>) -> Envelope {
        let to = if to == Address::Server {
            self.peer()
        } else {
            to
        };
        let env = Envelope::response(self.ids.next(), in_reply_to, Address::Server, to, body);
        self.transmit(env.clone());
        env
    }

    fn respond_error(&mut self, in_reply_to: u64, code: ErrorCode, reason: impl Into<String>) {
        self.respond(in_reply_to, Address::Server, ErrorBody::new(code, reason));
    }

    /// Answers a bad request with an error, unless it was itself a response or notification.
    fn reject(&mut self, env: &Envelope, code: ErrorCode, reason: impl Into<String>) {
        if env.kind == MsgKind::Request {
            let to = env.from.clone();
            self.respond(env.msg_id, to, ErrorBody::new(code, reason));
        }
    }

    /// Keeps an answer for retries: in memory for this session, and in the store so that it
    /// survives reconnects and restarts. The store record is written after the flow's effect
    /// (its answer needs the effect's outcome); a crash between the two only means a retry runs
    /// the flow again, which every effect tolerates (a PN registered again replaces itself, a
    /// PNE registered again keeps its CPNS ID).
    fn remember(&mut self, sender: Address, request_id: RequestId, env: Envelope) {
        if self.answered.len() == REPLAY_CACHE {
            self.answered.pop_front();
        }
        self.answered
            .push_back(((sender.clone(), request_id), env.clone()));
        let effect = ServerEffect::RememberAnswer {
            sender,
            request_id,
            answer: Box::new(env),
        };
        self.persist(Parked::Remembered, effect);
    }

    /// Keeps a secure call's answer for a retry of the very same request, in this session's
    /// memory only (its number is taken, durably, before it runs; docs/security.md §4.8).
    fn keep_answer(&mut self, retry: secure::Retry, env: Envelope) {
        if self.secure_answered.len() == REPLAY_CACHE {
            self.secure_answered.pop_front();
        }
        self.secure_answered.push_back((retry, env));
    }

    /// A retry of a secure request answered in this session: the same answer sent again.
    fn replay_secure(&mut self, retry: &secure::Retry, env: &Envelope) -> bool {
        let Some((_, prev)) = self.secure_answered.iter().find(|(r, _)| r == retry) else {
            return false;
        };
        let mut again = prev.clone();
        again.msg_id = self.ids.next();
        again.in_reply_to = Some(env.msg_id);
        self.transmit(again);
        true
    }

    /// The loaded PN and the connected PN GW, when the PN is that PN GW's own. Otherwise
    /// answers `req_msg` itself — the kept answer of a retry, `not_found` or `forbidden` — and
    /// gives `None`.
    fn own_pn(&mut self, req_msg: u64, loaded: &mut PnLoaded) -> Option<(connect::Gw, KnownPn)> {
        let gw = self.conn.gateway().cloned()?;
        if self.replay_loaded(loaded, req_msg) {
            return None;
        }
        let Some(pn) = loaded.pn.take() else {
            self.respond_error(req_msg, ErrorCode::NotFound, "no such PN");
            return None;
        };
        if pn.gateway != gw.id {
            let reason = "the PN is served by another PN GW";
            self.respond_error(req_msg, ErrorCode::Forbidden, reason);
            return None;
        }
        Some((gw, pn))
    }

    /// Re-sends a kept answer the store returned for a retried request; true if there was one.
    fn replay_loaded(&mut self, loaded: &mut PnLoaded, req_msg: u64) -> bool {
        let Some(mut again) = loaded.replay.take() else {
            return false;
        };
        again.msg_id = self.ids.next();
        again.in_reply_to = Some(req_msg);
        self.transmit(again);
        true
    }

    /// Re-sends the answer of a completed request of `sender` with this id, if any (a retry).
    fn replay(&mut self, sender: &Address, request_id: RequestId, env: &Envelope) -> bool {
        let Some((_, prev)) = self
            .answered
            .iter()
            // The request id first: a number, where most sessions have one sender and comparing
            // its id would compare equal strings all the way (a profiled 3 % of the server).
            .find(|((s, r), _)| *r == request_id && s == sender)
        else {
            return false;
        };
        let mut again = prev.clone();
        again.msg_id = self.ids.next();
        again.in_reply_to = Some(env.msg_id);
        self.transmit(again);
        true
    }

    fn on_error(&mut self, env: &Envelope, e: ErrorBody) {
        // An error answering one of our requests ends the flow it belongs to.
        let Some(reply_to) = env.in_reply_to else {
            return;
        };
        if self.confirm_refused(reply_to, &e) || self.capabilities_refused(reply_to, &e) {
            return;
        }
        if let Some(pn) = self
            .establishments
            .iter()
            .find(|(_, f)| f.auth_msg() == Some(reply_to))
            .map(|(p, _)| *p)
        {
            self.fail_establishment(pn, ErrorCode::Unauthenticated, crate::Failure::Refused(e));
        } else if let Some(key) = self
            .registrations
            .iter()
            .find(|(_, r)| r.auth_msg() == Some(reply_to))
            .map(|(k, _)| k.clone())
        {
            self.fail_registration(key, ErrorCode::Unauthenticated, crate::Failure::Refused(e));
        }
    }
}

#[cfg(test)]
mod idle_memory_tests {
    use super::*;

    /// Once the driver has taken every output, the session holds no queue capacity (an idle
    /// session costs only its own fields, docs/ARCHITECTURE.md decision 22).
    #[test]
    fn a_drained_session_gives_its_output_queue_back() {
        // Only offsets from this base are compared.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut s = ServerSession::new(
            ServerConfig::default(),
            [0; 32],
            now,
            MachineRng::from_seed_u64(3),
        );
        // The PN GW never authenticates: past the set-up deadline the session closes.
        s.handle_timeout(now + std::time::Duration::from_secs(3600));
        assert!(s.out.capacity() > 0, "the close is queued");
        let mut taken = 0;
        while s.poll_output().is_some() {
            taken += 1;
        }
        assert!(taken > 0);
        assert_eq!(s.out.capacity(), 0);
    }
}
