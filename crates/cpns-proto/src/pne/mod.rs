//! A PNE on its PAN link to the PN GW (CPNS-6): CPNS entity discovery (000 §6.4), PN
//! establishment as initiator or invitee (000 §6.6.1), PN GW authentication with LocalEUKey on an
//! insecure PAN, and PNE registration (003 §1.4).
//!
//! The PNE keeps what it learns only once it has authenticated the server: a PN whose
//! `hash_server_PNE` does not verify is not stored (000 §6.6.1.1 step 15).

mod content;
pub(crate) mod delivery;
mod establish;
mod follow;
mod groups;
mod invite;
mod membership;
mod outcome;
mod register;
mod rejoin;
mod release;
mod secure;
mod services;
mod status;
mod usage;

pub use content::{MAX_GROUP_CONTENT, Signing};
pub use delivery::{KeptDeliveries, KeptSession, MAX_RECEIVING, PAUSED_LIMIT, ReceiveItem};
pub use groups::{HeldGroup, MAX_SERVICE_GROUP_CONTENT};
pub use outcome::{Gone, Outcome};
pub use rejoin::Phase as RejoinPhase;
pub use secure::SecureSession;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use cpns_crypto::{EuKey, LocalEuKey, MachineRng, PanAuthInput, PanKeys, Rand, Recipient};
use cpns_wire::{
    Address, Body, ContentItem, CpnsId, DeviceCapabilities, EntityDiscoveryRequest,
    EntityDiscoveryResponse, EntityId, Envelope, ErrorBody, ErrorCode, Mode, MsgKind,
    PanAuthChallenge, PanAuthConfirm, PanAuthInit, PnId, PnInventory,
};

use crate::command::CommandIds;
use crate::link::{LinkCodec, PanSecurity};
use crate::util::{MsgIds, Tokens, hash_of, hash_wire, rand_of, rand_wire};
use crate::{
    CommandError, CommandId, Completed, Failure, Flow, LocalPnState, ProtoError, Timeouts, Token,
    TraceRecord,
};
use outcome::Waiting;

/// Settings of a PNE. [`PneConfig::new`] gives the defaults; set the fields that differ with
/// struct update syntax:
///
/// ```
/// # use cpns_crypto::EuKey;
/// # use cpns_proto::pne::{InvitationPolicy, PneConfig};
/// # let (id, eukey) = ("phone".parse().unwrap(), EuKey::from_bytes([1; 32]));
/// let cfg = PneConfig {
///     invitations: InvitationPolicy::Decline,
///     ..PneConfig::new(id, eukey)
/// };
/// assert!(cfg.heartbeat.is_some());
/// ```
#[derive(Clone, Debug)]
pub struct PneConfig {
    /// The PNE's entity id.
    pub id: EntityId,
    /// Its EUKey.
    pub eukey: EuKey,
    /// Capabilities of its device.
    pub capabilities: DeviceCapabilities,
    /// Contents its device offers.
    pub contents: Vec<ContentItem>,
    /// The security of its PAN link.
    pub security: PanSecurity,
    /// How it answers invitations to PNs (000 §6.6.1.1 step 3, §6.6.2.1.1 step 2).
    pub invitations: InvitationPolicy,
    /// How it answers deliveries offered to it (004 §5.5.8).
    pub deliveries: InvitationPolicy,
    /// Largest frame accepted.
    pub max_frame: u32,
    /// Flow timeouts.
    pub timeouts: Timeouts,
    /// Its own user's PN GW, named when it takes part in another user's PN so the server can
    /// ask that PN GW to confirm it (001 §5.2.1.1 step 2).
    pub home_gateway: Option<EntityId>,
    /// How often it sends its PN GW a Heartbeat once the link is in use; `None`: never.
    pub heartbeat: Option<std::time::Duration>,
    /// At most one report of dynamic capabilities (battery, free memory, networks, running
    /// applications) per this interval, with the latest values (docs/device-status.md).
    pub dynamic_interval: std::time::Duration,
    /// Its member certificate and the server's certification key, to sign group content and
    /// check other members' (docs/security.md §4.11); `None`: it can do neither.
    pub signing: Option<content::Signing>,
    /// The battery level below which a change is reported at once (a threshold crossed).
    pub battery_alert: Option<u8>,
    /// How often the PNE sends the usage records its preferences allow by itself, while it
    /// holds a secure session (004 §5.5.4); `None`: only on a `send_usage` command.
    pub usage_every: Option<std::time::Duration>,
    /// The AEAD suites it takes for its PAN links' frames and seals its deliveries' chunks in,
    /// most wanted first (docs/security.md §4.13); a driver gives
    /// [`cpns_crypto::Suite::local_preference`].
    pub suites: Vec<cpns_crypto::Suite>,
}

/// The suites a machine takes when its driver names none: AES-256-GCM first. Fixed, so that a
/// run replays the same on any CPU; a driver gives [`cpns_crypto::Suite::local_preference`].
pub const DEFAULT_SUITES: [cpns_crypto::Suite; 2] = [
    cpns_crypto::Suite::Aes256Gcm,
    cpns_crypto::Suite::ChaCha20Poly1305,
];

/// How a PNE answers an invitation to a PN: one being set up (PN Setup Request, 000 §6.6.1.1
/// steps 2-3, §6.6.1.2 steps 3-4) or an existing one (PNE Invite Request, §6.6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationPolicy {
    /// Accept every invitation (the default).
    Accept,
    /// Decline every invitation.
    Decline,
    /// Tell the application on the device ([`PneEvent::Invited`]) and hold the request until
    /// it answers ([`PneSession::answer_invitation`]) or `within` passes, then decline.
    Ask {
        /// How long the application has to answer.
        within: std::time::Duration,
    },
}

/// The default time an application has to answer an invitation ([`InvitationPolicy::Ask`]):
/// less than a PN GW's default wait for invited PNEs ([`Timeouts::invite`], 10 s), so an
/// answer given in time still counts.
pub const ASK_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);

/// The default [`PneConfig::heartbeat`].
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
/// The default [`PneConfig::dynamic_interval`].
pub const DYNAMIC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// The default [`PneConfig::battery_alert`].
pub const BATTERY_ALERT: u8 = 10;

impl PneConfig {
    /// The settings of PNE `id` with its EUKey, and for everything else the defaults: device
    /// capabilities [`DeviceCapabilities::default`] (a driver sets its device's), no contents,
    /// an insecure PAN ([`PanSecurity::Cpns`]: LocalEUKey and sealed frames), accepting
    /// invitations, frames up to [`DEFAULT_MAX_FRAME`](cpns_wire::DEFAULT_MAX_FRAME),
    /// [`Timeouts::default`], no home PN GW named, a Heartbeat every [`HEARTBEAT`], dynamic
    /// capabilities reported at most every [`DYNAMIC_INTERVAL`], and a battery below
    /// [`BATTERY_ALERT`] % reported at once; usage sent only when asked.
    pub fn new(id: EntityId, eukey: EuKey) -> Self {
        Self {
            id,
            eukey,
            capabilities: DeviceCapabilities::default(),
            contents: Vec::new(),
            security: PanSecurity::Cpns,
            invitations: InvitationPolicy::Accept,
            deliveries: InvitationPolicy::Accept,
            max_frame: cpns_wire::DEFAULT_MAX_FRAME,
            timeouts: Timeouts::default(),
            home_gateway: None,
            heartbeat: Some(HEARTBEAT),
            dynamic_interval: DYNAMIC_INTERVAL,
            battery_alert: Some(BATTERY_ALERT),
            usage_every: None,
            signing: None,
            suites: DEFAULT_SUITES.to_vec(),
        }
    }

    /// Whether the PNE asks for a LocalEUKey: its PAN does not protect CPNS messages (000
    /// §6.6.1.1 step 1). The step asks it of a PNE "with enough UI"; here the key comes
    /// wrapped under the PNE's EUKey (docs/security.md §4.2) and no person handles it, so every
    /// PNE on a `cpns` PAN asks, with or without a UI, and every member's link is sealed.
    pub fn wants_local_key(&self) -> bool {
        self.security == PanSecurity::Cpns
    }
}

/// Something the PNE wants its driver or user to know: the end of a command
/// ([`PneEvent::Completed`]), or what happened without one (an invitation, a PN GW's word, the
/// flows of the catching up after a reconnection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PneEvent {
    /// A command ended (exactly once per command).
    Completed(Completed<Outcome>),
    /// The PNE declined an invitation (by its policy, its application's answer, or because
    /// the application did not answer in time).
    InvitationDeclined(PnId),
    /// An invitation waits for the application's answer ([`InvitationPolicy::Ask`]):
    /// [`PneSession::answer_invitation`] before `deadline`, or it is declined.
    Invited {
        /// The PN.
        pn_id: PnId,
        /// Who invites: the PNE that asked for the PN being set up, else the PN GW.
        from: EntityId,
        /// When it is declined if not answered.
        deadline: Instant,
    },
    /// PN GW authentication this PNE started itself succeeded; the link is sealed.
    PanAuthenticated {
        /// The PN whose LocalEUKey proved the PN GW.
        pn_id: PnId,
        /// The AEAD the link's frames are sealed in (docs/security.md §4.13).
        suite: cpns_crypto::Suite,
    },
    /// The PNE authenticated the server and stored a PN it was invited to (000 §6.6.1.1
    /// steps 14-15, §6.6.1.2 steps 15-16, §6.6.2.1).
    PnJoined {
        /// The PN inventory.
        inventory: PnInventory,
        /// Whether this PNE initiated it.
        initiator: bool,
    },
    /// The server's hash did not verify: the PN it was invited to was not stored (000
    /// §6.6.1.1 step 15).
    PnRefused {
        /// The PN.
        pn_id: PnId,
        /// Why.
        reason: crate::Failure,
    },
    /// The PNE registered by itself, joining a PN it was invited to (003 §1.4.2).
    Registered {
        /// Its CPNS ID.
        cpns_id: CpnsId,
        /// The PN.
        pn_id: PnId,
        /// Session lifetime, in seconds.
        lifetime_s: u32,
    },
    /// Its PN GW told it a PN this PNE belonged to was released; the PN left its local store
    /// with its LocalEUKey (000 §6.6.5 steps 3-4, §6.6.5.1 step 6).
    PnReleased(PnId),
    /// The PN GW expelled this PNE from a PN, which left its local store (000 §6.6.3.2 step 1).
    Expelled(PnId),
    /// The PN GW told this PNE a PN's new member list and group key epoch (000 §6.6.2.1.1 step 5).
    PnUpdated {
        /// The PN inventory now.
        inventory: PnInventory,
        /// The PN's group key epoch.
        epoch: u64,
        /// Whether this PNE holds that epoch's group key (its copy opened).
        has_key: bool,
    },
    /// The PN GW confirmed this PNE's connection set-up in a PN (002 §B.1.1.3 steps 25-26):
    /// it holds the PN's current group key, and its PN GW knows.
    MembershipConfirmed {
        /// The PN.
        pn_id: PnId,
        /// The epoch it holds.
        epoch: u64,
    },
    /// The PN GW confirmed a capabilities report the PNE made by itself (004 §5.5.1): a
    /// coalesced change, or the report after a reconnection.
    CapabilitiesReported,
    /// A notification of one of this PNE's subscriptions.
    StatusNotified(cpns_wire::StatusNotification),
    /// Something changed in the inventory of a PN this PNE follows
    /// ([`PneSession::follow_inventory`]): what, and of which member.
    InventoryChanged {
        /// The PN.
        pn_id: PnId,
        /// The member, if the change is one member's.
        pne: Option<EntityId>,
        /// What changed.
        change: cpns_wire::InventoryChange,
    },
    /// This PNE follows a PN's inventory again, its link to the PN GW back: the inventory as
    /// it is now (changes while it was away were not told).
    InventoryFollowedAgain {
        /// The PN's inventory.
        inventory: cpns_wire::PnInventory,
    },
    /// A new directory entry matches one of this PNE's service watches (004 §5.5.5), told by
    /// the server end to end.
    ServiceMatched(cpns_wire::ServiceMatch),
    /// A service group moved to a new epoch, whose key this PNE now holds (004 §5.5.7.2).
    ServiceGroupKey {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// The epoch.
        epoch: u64,
    },
    /// This PNE is invited into a service group: `answer_group` says yes or no.
    ServiceGroupInvited(cpns_wire::GroupInvitation),
    /// This PNE's membership of a service group ended by another's act; its key is forgotten.
    ServiceGroupEnded {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// Why.
        why: cpns_wire::GroupEndReason,
    },
    /// Another member of a service group sent content, and every check passed: its
    /// certificate is the server's and names it, the content opened under the group's key of
    /// the epoch this PNE holds, it signed it, and it was not seen before (docs/security.md
    /// §4.11).
    ServiceGroupContent {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// The epoch it was sealed under.
        epoch: u64,
        /// The member that signed it.
        from: EntityId,
        /// Its user, as its certificate names it.
        owner: cpns_wire::UserId,
        /// The content.
        content: Vec<u8>,
    },
    /// Service group content pushed to this PNE was refused: the check that failed.
    ServiceGroupContentRefused {
        /// The group it named.
        group_id: cpns_wire::GroupId,
        /// The sender it named.
        from: EntityId,
        /// Why ([`crate::Failure::ContentRefused`]).
        reason: crate::Failure,
    },
    /// A delivery is offered to this PNE (004 §5.5.8): accepted or declined by its policy, or
    /// waiting for `answer_delivery`.
    DeliveryOffered {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Its source.
        source: EntityId,
        /// The source's user.
        owner: cpns_wire::UserId,
        /// The service it is delivered as.
        service_id: String,
        /// The content's name.
        name: String,
        /// Its media type.
        media_type: String,
        /// Its size (the first item's).
        size: u64,
        /// The items after the first (several services in one session; docs/services.md).
        more: Vec<cpns_wire::DeliveryItem>,
    },
    /// Every byte of a delivery this PNE received arrived, each item's SHA-256 the one
    /// offered.
    DeliveryReceived {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Its source.
        from: EntityId,
        /// The content's name (the first item's).
        name: String,
        /// Bytes received (every item's).
        bytes: u64,
        /// Bytes of the part for this PNE only (0: none).
        specific: u64,
        /// The names of the items after the first, each kept too.
        more: Vec<String>,
    },
    /// Every target of a delivery this PNE sends ended its part: those that have every byte,
    /// its hash checked (the others were told as [`PneEvent::DeliveryEnded`]).
    DeliverySent {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The targets that have it.
        delivered: Vec<EntityId>,
    },
    /// A target's part of a delivery ended otherwise (declined, a hash mismatch, a failure):
    /// told to the target and, relayed by the PN GW, to the source.
    DeliveryEnded {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The target.
        target: EntityId,
        /// How.
        result: cpns_wire::DeliveryResult,
        /// Why, when the target knows more.
        reason: Option<String>,
    },
    /// A small payload in band from another PNE, through the server, sealed end to end to
    /// this PNE (004 §5.5.8).
    MessageReceived {
        /// Its sender.
        from: EntityId,
        /// The sender's user.
        owner: cpns_wire::UserId,
        /// The sender's PN.
        pn_id: PnId,
        /// The service it was sent as.
        service_id: String,
        /// Its media type.
        media_type: String,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A consumer asks this PNE for content it declared it holds (004 §5.5.8.2, pull): its
    /// application (or its driver's shared directory) answers with a delivery to `requester`,
    /// `to_pn` `pn_id`.
    DeliveryRequested {
        /// Who asks.
        requester: EntityId,
        /// Its user.
        owner: cpns_wire::UserId,
        /// The content, by the name this PNE declared.
        name: String,
        /// The service it is asked as.
        service_id: String,
        /// The requester's PN.
        pn_id: PnId,
    },
    /// The source of a delivery this PNE receives controlled it (004 §5.5.8.2, service
    /// control): it is held (`pause`) or goes on (`start`, `resume`). A stop ends the part, told
    /// as [`PneEvent::DeliveryEnded`].
    DeliveryControlled {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// What its source asked.
        action: cpns_wire::ControlAction,
    },
    /// The server acknowledged a usage report the PNE sent by itself (004 §5.5.4).
    UsageSent {
        /// Records sent and acknowledged.
        sent: u32,
        /// Of those, records the server had already (a retry).
        duplicates: u32,
        /// Charging records the server made.
        charged: u32,
        /// Records of private services, never sent.
        withheld: u32,
    },
    /// Another member of a PN sent content, and every check passed (docs/security.md §4.11):
    /// its certificate is the server's, it is a member, the content opened under the epoch's
    /// group key, it signed it, and it was not seen before.
    GroupContent {
        /// The PN.
        pn_id: PnId,
        /// The group key epoch it was sealed under.
        epoch: u64,
        /// The member that signed it.
        from: EntityId,
        /// Its user, as its certificate names it.
        owner: cpns_wire::UserId,
        /// The content.
        content: Vec<u8>,
    },
    /// Group content relayed to this PNE was refused: the check that failed.
    ContentRefused {
        /// The PN it named.
        pn_id: PnId,
        /// The sender it named.
        from: EntityId,
        /// Why ([`crate::Failure::ContentRefused`]).
        reason: crate::Failure,
    },
    /// A flow the PNE started by itself ended without success.
    FlowFailed {
        /// Which flow.
        flow: crate::Flow,
        /// Why.
        reason: crate::Failure,
    },
}

/// What the driver must do next.
#[derive(Debug)]
#[must_use]
pub enum PneOutput {
    /// Send this whole frame to the PN GW.
    Transmit {
        /// The frame, length prefix included.
        frame: Vec<u8>,
        /// What it is.
        trace: TraceRecord,
    },
    /// Store a PN in the local inventory and answer with [`PneSession::handle_persisted`].
    Persist {
        /// Token to answer with.
        token: Token,
        /// The PN.
        pn: LocalPnState,
    },
    /// Keep the secure session a registration gave (003 §1.4.1 step 4): the CPNS ID and SK_PNE,
    /// the key sealed at rest under the PNE's EUKey (docs/security.md §4.9). Nothing waits for
    /// the answer: a session lost with the store is set up again by registering again.
    PersistSession {
        /// The session.
        session: SecureSession,
    },
    /// Remove a PN and its LocalEUKey from the local inventory and answer with
    /// [`PneSession::handle_persisted`].
    Forget {
        /// Token to answer with.
        token: Token,
        /// The PN.
        pn_id: PnId,
    },
    /// Load the device's usage records not sent yet and its reporting preferences, and
    /// answer with [`PneSession::handle_usage_loaded`] (the PNE's own turn, 004 §5.5.4).
    LoadUsage {
        /// Token to answer with.
        token: Token,
    },
    /// Mark these usage records done in the device's store: sent and acknowledged, or of a
    /// private service and never to be sent. Nothing waits for the answer: a record not marked
    /// goes again, and the server keeps each once (by its id).
    MarkUsage {
        /// The records' ids.
        ids: Vec<u64>,
    },
    /// Hash each item of what a delivery this PNE sends carries, offered without hashes, and
    /// answer with [`PneSession::handle_content_hashed`]: every chunk but the last moves
    /// meanwhile; the last carries the digest signed from them (docs/security.md §4.12).
    HashContent {
        /// The session.
        session: cpns_wire::DeliveryId,
    },
    /// Read `len` bytes at `offset` of what a delivery this PNE sends carries, and answer with
    /// [`PneSession::handle_chunk_read`].
    ReadChunk {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Where.
        offset: u64,
        /// How much.
        len: u64,
    },
    /// Open where a delivery this PNE accepted is kept (a new file, or a partial one of the
    /// same session), and answer with [`PneSession::handle_receive_opened`] and how many bytes
    /// it holds.
    OpenReceive {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The content's size: every item's, one after another.
        size: u64,
        /// Its items, in order (one, or several services in one session): each kept as a
        /// file of its own.
        items: Vec<ReceiveItem>,
    },
    /// Write a chunk of a received delivery at `offset`, in order after those before it, and
    /// answer with [`PneSession::handle_chunk_written`] (once written, or taken to be written:
    /// nothing is durable before [`PneOutput::FinishReceive`], and a driver that starts again
    /// says what its files hold, from which the source goes on).
    WriteChunk {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Where.
        offset: u64,
        /// The content, opened in the buffer it came in.
        bytes: cpns_crypto::OpenedChunk,
    },
    /// Every byte of a received delivery is written: check each item's SHA-256 against
    /// `sha256`, keep each that matches, discard each that does not, and answer with
    /// [`PneSession::handle_receive_finished`], a match for each item.
    FinishReceive {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// The SHA-256 offered of each item, in order: each is checked, kept or discarded on
        /// its own.
        sha256: Vec<[u8; 32]>,
        /// The part of the delivery for this PNE only, kept beside the content if it is kept
        /// (empty: none; docs/services.md, "Delivery from outside a PN").
        specific: Vec<u8>,
    },
    /// Discard what was kept of a received delivery that ended without its content.
    DiscardReceive {
        /// The session.
        session: cpns_wire::DeliveryId,
    },
    /// Keep this service group's key in the device's store, sealed under its storage key
    /// (docs/security.md §4.10), replacing the one kept. Nothing waits for the answer: a key
    /// not kept is pulled again after a restart.
    KeepGroup {
        /// The group.
        group_id: cpns_wire::GroupId,
        /// Its key and epoch.
        group: HeldGroup,
    },
    /// Keep this delivery session in the device's store, its key sealed under the device's
    /// storage key (docs/security.md §4.9), so that a restarted PNE goes on with it
    /// ([`PneSession::restore_delivery`]); a source's files with it. Nothing waits for the
    /// answer: a session not kept is lost with a restart, as before.
    KeepDelivery(delivery::KeptSession),
    /// Remove this delivery session from the device's store: this PNE's part of it ended.
    ForgetDelivery {
        /// The session.
        session: cpns_wire::DeliveryId,
    },
    /// Remove this service group's key from the device's store (left, expelled, deleted).
    ForgetGroup {
        /// The group.
        group_id: cpns_wire::GroupId,
    },
    /// Something happened.
    Event(PneEvent),
    /// Close the link.
    Close {
        /// Why.
        reason: String,
    },
}

/// PN GW authentication in progress (PanAuthInit sent).
struct PanPending {
    init_msg: u64,
    pn_id: PnId,
    local: LocalEuKey,
    rand_pne: Rand,
    /// Sent once the link is sealed, in order: what waited for the proof (an Authentication
    /// Response, requests in this PNE's name).
    then: Vec<Envelope>,
    deadline: Instant,
    /// The `start_pan_auth` command, if one started it.
    cmd: Option<CommandId>,
}

impl core::fmt::Debug for PanPending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PanPending")
            .field("pn_id", &self.pn_id)
            .finish_non_exhaustive()
    }
}

/// A PN this PNE belongs to.
#[derive(Debug)]
struct MemberOf {
    state: LocalPnState,
    local: Option<LocalEuKey>,
}

/// Work parked until the driver reports a local store write.
#[derive(Debug)]
enum Parked {
    /// A PN joined, stored (000 §6.6.1.1 step 15); the command that asked for it, if any.
    Joined {
        pn_id: PnId,
        initiator: bool,
        cmd: Option<CommandId>,
    },
    /// A PN this PNE is out of, removed.
    Forgotten { pn_id: PnId, why: Gone },
    /// A PN whose inventory or keys changed, stored again.
    Updated(PnId),
    /// A secure request whose number is being stored before it goes (docs/security.md §4.8).
    Numbered(Box<cpns_wire::SecureRequest>),
}

/// The PNE machine.
#[derive(Debug)]
pub struct PneSession {
    cfg: PneConfig,
    codec: LinkCodec,
    gateway: Option<EntityId>,
    /// The PN GW that proved itself on this link with a LocalEUKey it holds for this PNE.
    proven_gateway: Option<EntityId>,
    rng: MachineRng,
    ids: MsgIds,
    tokens: Tokens,
    commands: CommandIds,
    /// Discovery in progress: its message id, deadline and command.
    discovery: Option<(u64, Instant, Option<CommandId>)>,
    pan: Option<PanPending>,
    flows: establish::Flows,
    pns: BTreeMap<PnId, MemberOf>,
    parked: BTreeMap<Token, Parked>,
    /// Requests about one PN waiting for the PN GW, by message id.
    releases: BTreeMap<u64, Waiting>,
    leaves: BTreeMap<u64, Waiting>,
    invites: BTreeMap<u64, Waiting>,
    key_pulls: BTreeMap<u64, Waiting>,
    /// The newest epoch of each PN this PNE saw announced (a PN Update Notification of its
    /// proven PN GW, or a copy that opened), to notice a pull answered with an older one.
    announced: BTreeMap<PnId, u64>,
    /// Membership confirmations waiting for the PN GW (002 §B.1.1.3 steps 25-26).
    confirms: BTreeMap<u64, Waiting>,
    /// Expulsions this PNE asked for, by message id, with the PNE expelled.
    expels: BTreeMap<u64, (Waiting, EntityId)>,
    /// The catching up after a (re)connection, while it runs.
    rejoin: Option<rejoin::Rejoin>,
    /// Usage reporting (004 §5.5.4).
    usage: usage::UsageReporting,
    /// The time of the latest input, for the flows that input moves on.
    now: Option<Instant>,
    /// Inventory queries waiting for the PN GW (004 §5.5.10).
    inventory_queries: secure::PendingQueries,
    /// The PNs whose inventory changes this PNE follows (asked again each time its link to
    /// their PN GW comes back; [`follow`]).
    following: BTreeSet<PnId>,
    cpns_id: Option<CpnsId>,
    session: Option<SecureSession>,
    secure_calls: secure::PendingCalls,
    /// The keys of this PNE's service groups (in memory: after a restart, pulled again).
    groups: groups::HeldGroups,
    /// The number of the last secure notice taken, by the PN whose SK_PNE sealed it
    /// (docs/security.md §4.8, "Notices").
    notices: BTreeMap<PnId, u64>,
    /// Capabilities and status reporting, heartbeats.
    reporting: status::Reporting,
    /// Invitations held for the application ([`InvitationPolicy::Ask`]).
    held: invite::HeldInvitations,
    /// Its signing key for group content, derived from its EUKey when it holds a certificate
    /// (docs/security.md §4.11).
    signer: Option<cpns_crypto::MemberSigningKey>,
    /// Group content sent, waiting for the PN GW's answer.
    content_sends: content::PendingSends,
    /// Group content received, to refuse a replay.
    content_seen: content::Seen,
    /// Content ids of service group content seen, per group.
    group_content_seen: content::Seen<cpns_wire::GroupId>,
    /// The delivery sessions it sends and receives.
    deliveries: delivery::Deliveries,
    /// Senders' certificates that verified (docs/security.md §4.11).
    certified: content::CertCache,
    /// PNs whose LocalEUKey the PN GW on the link did not prove it holds (docs/security.md
    /// §4.4, "Not provable here"): not tried again by the PNE itself until a new key comes.
    unprovable: std::collections::BTreeSet<PnId>,
    out: VecDeque<PneOutput>,
}

impl PneSession {
    /// A PNE on a fresh link, drawing every random value from `rng`.
    pub fn new(cfg: PneConfig, rng: MachineRng) -> Self {
        let codec = LinkCodec::new(cfg.max_frame);
        let signer = cfg
            .signing
            .as_ref()
            .map(|_| cpns_crypto::MemberSigningKey::derive(&cfg.eukey, cfg.id.as_str()));
        Self {
            signer,
            content_sends: BTreeMap::new(),
            content_seen: content::Seen::default(),
            group_content_seen: content::Seen::default(),
            deliveries: delivery::Deliveries::default(),
            certified: content::CertCache::default(),
            unprovable: std::collections::BTreeSet::new(),
            cfg,
            codec,
            gateway: None,
            proven_gateway: None,
            rng,
            ids: MsgIds::default(),
            tokens: Tokens::default(),
            commands: CommandIds::default(),
            discovery: None,
            pan: None,
            flows: establish::Flows::default(),
            pns: BTreeMap::new(),
            parked: BTreeMap::new(),
            releases: BTreeMap::new(),
            leaves: BTreeMap::new(),
            invites: BTreeMap::new(),
            key_pulls: BTreeMap::new(),
            announced: BTreeMap::new(),
            confirms: BTreeMap::new(),
            expels: BTreeMap::new(),
            rejoin: None,
            usage: usage::UsageReporting::default(),
            now: None,
            inventory_queries: BTreeMap::new(),
            following: BTreeSet::new(),
            cpns_id: None,
            session: None,
            secure_calls: secure::PendingCalls::new(),
            notices: BTreeMap::new(),
            groups: BTreeMap::new(),
            reporting: status::Reporting::default(),
            held: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    /// Reloads the PNs this PNE stored. A PN whose LocalEUKey does not unwrap under this PNE's
    /// EUKey is refused.
    pub fn restore(&mut self, pns: Vec<LocalPnState>) -> Result<(), ProtoError> {
        for state in pns {
            let local = match state.wrapped_keys.iter().find(|(p, _)| *p == self.cfg.id) {
                Some((_, stored)) => Some(self.unwrap_stored_key(
                    &state.inventory.pn_id,
                    &state.inventory.gateway,
                    stored,
                )?),
                None => None,
            };
            self.pns
                .insert(state.inventory.pn_id, MemberOf { state, local });
        }
        Ok(())
    }

    /// The device's capabilities as the PNE holds them now.
    pub fn capabilities(&self) -> &DeviceCapabilities {
        &self.cfg.capabilities
    }

    /// The PNE's entity id.
    pub fn id(&self) -> &EntityId {
        &self.cfg.id
    }

    /// The PN GW, once discovered.
    pub fn gateway(&self) -> Option<&EntityId> {
        self.gateway.as_ref()
    }

    /// The PNs this PNE belongs to.
    pub fn inventory(&self) -> Vec<&PnInventory> {
        let mut v: Vec<&PnInventory> = self.pns.values().map(|p| &p.state.inventory).collect();
        v.sort_by_key(|i| i.pn_id);
        v
    }

    /// Whether this PNE holds a LocalEUKey for `pn_id`.
    pub fn holds_local_key(&self, pn_id: &PnId) -> bool {
        self.pns.get(pn_id).is_some_and(|p| p.local.is_some())
    }

    /// The CPNS ID, once registered.
    pub fn cpns_id(&self) -> Option<&CpnsId> {
        self.cpns_id.as_ref()
    }

    /// Whether frames on the link are sealed both ways.
    pub fn link_sealed(&self) -> bool {
        self.codec.fully_sealed()
    }

    /// 000 §6.4 step 1: Entity Discovery Request to the device on the link. Completes with
    /// [`Outcome::Discovered`], or [`Failure::NoAnswer`] at its deadline.
    pub fn start_discovery(&mut self, now: Instant) -> Result<CommandId, CommandError> {
        if self.discovery.is_some() {
            return Err(CommandError::ChangeRunning {
                flow: Flow::EntityDiscovery,
            });
        }
        self.link_in_use(now);
        let req = EntityDiscoveryRequest {
            entity_id: self.cfg.id.clone(),
            mode: Mode::Pne,
        };
        let msg = self.send_request(req);
        let id = self.commands.next();
        self.discovery = Some((msg, now + self.cfg.timeouts.flow, Some(id)));
        Ok(id)
    }

    /// Seals a new link to the PN GW of a PN this PNE belongs to, with its stored LocalEUKey
    /// (PN GW authentication, as after 000 §6.6.1.1 step 6). Completes with
    /// [`Outcome::PanAuthenticated`]; a proof that does not verify also closes the link.
    pub fn start_pan_auth(&mut self, now: Instant, pn_id: PnId) -> Result<CommandId, CommandError> {
        let local = self.pns.get(&pn_id).and_then(|p| p.local.clone());
        let Some(local) = local else {
            return Err(CommandError::NoLocalKey(pn_id));
        };
        let id = self.commands.next();
        self.begin_pan_auth(now, pn_id, local, Vec::new(), Some(id))?;
        Ok(id)
    }

    /// Takes one frame (without its length prefix) from the PN GW, opening a sealed one where
    /// it lies (what `frame` holds afterwards is unspecified). An `Err` means the link must be
    /// closed.
    pub fn handle_frame(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), ProtoError> {
        self.now = Some(now);
        self.link_in_use(now);
        let env = match self.codec.decode(frame) {
            Ok(env) => env,
            Err(e) => {
                let (msg_id, body) = crate::link::version_answer(e)?;
                self.send_response(msg_id, body);
                return Ok(());
            }
        };
        let taken = self.on_envelope(now, env);
        self.rejoin_step();
        taken
    }

    /// Answers a [`PneOutput::Persist`].
    pub fn handle_persisted(
        &mut self,
        token: Token,
        result: Result<(), crate::StoreFailure>,
    ) -> Result<(), ProtoError> {
        let (pn_id, initiator, cmd) = match self.parked.remove(&token) {
            None => return Err(ProtoError::UnknownToken),
            Some(Parked::Forgotten { pn_id, why }) => {
                self.forgotten(pn_id, why, result);
                self.rejoin_step();
                return Ok(());
            }
            Some(Parked::Updated(pn_id)) => {
                self.updated(pn_id, result);
                return Ok(());
            }
            Some(Parked::Numbered(req)) => {
                self.numbered(*req, result);
                return Ok(());
            }
            Some(Parked::Joined {
                pn_id,
                initiator,
                cmd,
            }) => (pn_id, initiator, cmd),
        };
        self.joined(pn_id, initiator, cmd, result);
        self.rejoin_step();
        Ok(())
    }

    /// The local store answered the write of a PN joined.
    fn joined(
        &mut self,
        pn_id: PnId,
        initiator: bool,
        cmd: Option<CommandId>,
        result: Result<(), crate::StoreFailure>,
    ) {
        // An initiator's set-up, or a join by registration (000 §6.6.2.2).
        let flow = match (initiator, cmd) {
            (false, Some(_)) => Flow::PneRegistration,
            _ => Flow::PnEstablishment,
        };
        match result {
            Ok(()) => {
                let Some(inventory) = self.pns.get(&pn_id).map(|p| p.state.inventory.clone())
                else {
                    return;
                };
                match cmd {
                    Some(id) => {
                        let joined = Outcome::PnJoined {
                            inventory,
                            initiator,
                        };
                        self.complete(id, flow, Ok(joined));
                    }
                    None => self.event(PneEvent::PnJoined {
                        inventory,
                        initiator,
                    }),
                }
            }
            Err(e) => {
                self.pns.remove(&pn_id);
                self.fail(cmd, flow, Failure::Store(e));
            }
        }
    }

    /// Ends every wait whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if let Some((_, _, cmd)) = self.discovery.take_if(|(_, d, _)| *d <= now) {
            self.fail(cmd, Flow::EntityDiscovery, Failure::NoAnswer);
        }
        if let Some(p) = self.pan.take_if(|p| p.deadline <= now) {
            self.fail_link(p.cmd, Failure::TimedOut);
        }
        self.flow_timeouts(now);
        self.secure_timeouts(now);
        self.release_timeouts(now);
        self.leave_timeouts(now);
        self.status_timeouts(now);
        self.usage_timeouts(now);
        self.content_timeouts(now);
        self.invitation_timeouts(now);
        self.delivery_timeouts(now);
        self.rejoin_step();
    }

    /// The earliest deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let d = self.discovery.map(|(_, d, _)| d);
        let p = self.pan.as_ref().map(|p| p.deadline);
        d.into_iter()
            .chain(p)
            .chain(self.flows.deadlines())
            .chain(secure::deadlines(&self.secure_calls))
            .chain(self.releases.values().map(|w| w.deadline))
            .chain(self.leaves.values().map(|w| w.deadline))
            .chain(self.invites.values().map(|w| w.deadline))
            .chain(self.key_pulls.values().map(|w| w.deadline))
            .chain(self.confirms.values().map(|w| w.deadline))
            .chain(self.expels.values().map(|(w, _)| w.deadline))
            .chain(self.inventory_queries.values().map(|q| q.deadline))
            .chain(self.content_sends.values().map(|(d, _, _)| *d))
            .chain(self.status_deadlines())
            .chain(self.usage_deadline())
            .chain(self.invitation_deadline())
            .chain(self.delivery_deadline())
            .min()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<PneOutput> {
        self.out.pop_front()
    }

    fn on_envelope(&mut self, now: Instant, env: Envelope) -> Result<(), ProtoError> {
        // A discovery request comes before the asker knows who is on the link (000 §6.4 note
        // 1), so it cannot name this PNE; everything else must.
        let discovery = matches!(env.body, Body::EntityDiscoveryRequest(_));
        if !discovery && env.to != Address::Entity(self.cfg.id.clone()) {
            self.reject(&env, ErrorCode::NotFound, "not addressed to this PNE");
            return Ok(());
        }
        match env.body.clone() {
            Body::EntityDiscoveryRequest(m) => {
                // Discovery is mutual (002 §B.1.1.1): a PN GW asking makes itself known.
                if m.mode == Mode::Gateway && self.gateway.is_none() {
                    self.gateway = Some(m.entity_id);
                }
                let pns = self.pns_told_to_gateway();
                let resp = EntityDiscoveryResponse {
                    mode: Mode::Pne,
                    entity_id: self.cfg.id.clone(),
                    zone_support: false,
                    pns,
                };
                self.send_response(env.msg_id, resp);
            }
            Body::EntityDiscoveryResponse(m)
                if self
                    .discovery
                    .is_some_and(|(msg, _, _)| Some(msg) == env.in_reply_to) =>
            {
                let cmd = self.discovery.take().and_then(|(_, _, cmd)| cmd);
                if m.mode == Mode::Gateway {
                    self.gateway = Some(m.entity_id.clone());
                }
                let found = Outcome::Discovered {
                    gateway: m.entity_id,
                    zone_support: m.zone_support,
                    pns: m.pns,
                };
                if let Some(id) = cmd {
                    self.complete(id, Flow::EntityDiscovery, Ok(found));
                }
            }
            Body::PanAuthChallenge(m) => self.on_pan_challenge(&env, m)?,
            Body::PnSetupRequest(m) => self.on_invitation(now, &env, m),
            Body::AuthenticationRequest(m) => self.on_auth_request(now, &env, m),
            Body::PnSetupResponse(m) => self.on_setup_response(&env, m),
            Body::PnEstablishmentNotify(m) => self.on_establishment_notify(m),
            Body::PneRegistrationResponse(m) => self.on_registration_response(&env, m),
            Body::SecureResponse(m) => self.on_secure_response(&env, m),
            Body::PnReleaseResponse(m) => self.on_release_response(&env, m),
            Body::PnReleaseNotification(m) => self.on_release_notification(&env, m),
            Body::PneLeaveResponse(m) => self.on_leave_response(&env, m),
            Body::PneInviteRequest(m) => self.on_invite(now, &env, m),
            Body::PneInviteResponse(m) => self.on_invite_response(&env, m),
            Body::GroupKeyResponse(m) => self.on_group_key_response(now, &env, m),
            Body::MembershipConfirmed(m) => self.on_membership_confirmed(now, &env, m),
            Body::MembershipEnded(m) => self.on_membership_ended(&env, m),
            Body::InventoryAnswer(m) => self.on_inventory_answer(&env, m),
            Body::InventoryChanged(m) if env.kind == MsgKind::Notify => {
                self.on_inventory_changed(&env, m);
            }
            Body::PneExpelNotification(m) => self.on_expel_notification(&env, m),
            Body::PnUpdateNotification(m) => self.on_update_notification(now, &env, m),
            Body::DeviceCapabilitiesConfirm(_)
            | Body::StatusAck(_)
            | Body::StatusAnswer(_)
            | Body::StatusSubscribed(_) => {
                self.on_status_answer(&env);
            }
            Body::CapabilitiesQuery(m) => self.on_capabilities_query(&env, m),
            Body::StatusNotification(n) => self.event(PneEvent::StatusNotified(n)),
            Body::SecureNotice(m) if env.kind == MsgKind::Notify => {
                self.on_secure_notice(now, &env, m);
            }
            Body::GroupContent(m) if env.kind == MsgKind::Notify => self.on_group_content(m),
            Body::GroupContentSent(m) => self.on_content_sent(&env, m),
            Body::DeliveryChunk(m) if env.kind == MsgKind::Notify => {
                self.on_delivery_chunk(now, &env, m);
            }
            Body::DeliveryAck(m) if env.kind == MsgKind::Notify => self.on_delivery_ack(&env, m),
            Body::DeliveryDone(m) if env.kind == MsgKind::Notify => self.on_delivery_done(&env, m),
            Body::DeliveryControl(m) if env.kind == MsgKind::Notify => {
                self.on_delivery_control(now, &env, m)
            }
            Body::ErrorBody(e) => self.on_error(&env, e),
            Body::Unknown(code) => self.reject(
                &env,
                ErrorCode::UnsupportedMessage,
                &format!("unknown message type {code}"),
            ),
            _ => self.reject(
                &env,
                ErrorCode::WrongState,
                &format!("{} is not expected here", env.body.name()),
            ),
        }
        Ok(())
    }

    // ---- PN GW authentication ----

    fn begin_pan_auth(
        &mut self,
        now: Instant,
        pn_id: PnId,
        local: LocalEuKey,
        then: Vec<Envelope>,
        cmd: Option<CommandId>,
    ) -> Result<(), CommandError> {
        if self.pan.is_some() || self.codec.rx_sealed() {
            return Err(CommandError::LinkBusy);
        }
        let rand_pne = self.rng.rand();
        let init = PanAuthInit {
            pn_id,
            pne_id: self.cfg.id.clone(),
            rand_pne: rand_wire(&rand_pne),
            suites: self.offered_suites(),
        };
        let init_msg = self.send_request(init);
        let deadline = now + self.cfg.timeouts.flow;
        self.pan = Some(PanPending {
            init_msg,
            pn_id,
            local,
            rand_pne,
            then,
            deadline,
            cmd,
        });
        Ok(())
    }

    /// The suites this PNE offers a PN GW, as their codes, most wanted first.
    fn offered_suites(&self) -> Vec<u8> {
        self.cfg.suites.iter().map(|s| s.code()).collect()
    }

    /// Verify the PN GW's proof, seal what comes in, confirm, seal what goes out.
    fn on_pan_challenge(&mut self, env: &Envelope, m: PanAuthChallenge) -> Result<(), ProtoError> {
        let Some(p) = self.pan.take_if(|p| Some(p.init_msg) == env.in_reply_to) else {
            self.reject(
                env,
                ErrorCode::WrongState,
                "no PN GW authentication in progress",
            );
            return Ok(());
        };
        let gw = self.gateway_for(env);
        // The PN GW's choice must be one this PNE offered; its proof covers offer and choice.
        let offered = self.offered_suites();
        let suite = m
            .suite
            .map_or(
                Some(cpns_crypto::Suite::ChaCha20Poly1305),
                cpns_crypto::Suite::from_code,
            )
            .filter(|s| self.cfg.suites.contains(s));
        let Some(suite) = suite else {
            self.fail_link(p.cmd, Failure::SuiteNotOffered(m.suite.unwrap_or(1)));
            return Ok(());
        };
        let keys = PanKeys::derive(
            &p.local,
            &PanAuthInput {
                pn_id: p.pn_id.as_bytes(),
                pne_id: self.cfg.id.as_str(),
                gw_id: gw.as_str(),
                rand_pne: &p.rand_pne,
                rand_gw: &rand_of(&m.rand_gw),
                offered: &offered,
                suite,
            },
        );
        if keys.verify_gw_proof(&hash_of(&m.proof)).is_err() {
            // The PN GW holds no such key (it lost it, or answered with a decoy), or it is not
            // the PN GW it claims: this PN's key is not tried on it again by the PNE itself, so
            // a reconnection does not run into the same wall (docs/security.md §4.4).
            self.unprovable.insert(p.pn_id);
            self.fail_link(p.cmd, Failure::GatewayNotProven(p.pn_id));
            return Ok(());
        }
        self.proven_gateway = Some(gw);
        let proof = keys.pne_proof();
        let (sealer, opener) = keys.into_pne_side();
        self.codec.seal_rx(opener);
        self.send_notify(PanAuthConfirm {
            proof: hash_wire(&proof),
        });
        self.codec.seal_tx(sealer);
        match p.cmd {
            Some(id) => self.complete(
                id,
                Flow::PanAuthentication,
                Ok(Outcome::PanAuthenticated {
                    pn_id: p.pn_id,
                    suite,
                }),
            ),
            None => self.event(PneEvent::PanAuthenticated {
                pn_id: p.pn_id,
                suite,
            }),
        }
        for then in &p.then {
            self.transmit(then);
        }
        Ok(())
    }

    /// Sends a request in this PNE's name, to the PN GW or (relayed) to the server. On an
    /// insecure PAN whose link is not sealed yet it follows the PNE's proof (docs/security.md
    /// §4.4; the PN GW relays nothing in a PNE's name from a link that has not proved it):
    /// queued behind a PN GW authentication that runs, or sent after one started here with the
    /// LocalEUKey of `pn_id`, else of any PN this PNE holds of the PN GW on the link. Without
    /// such a key it goes as it is, and the PN GW refuses it. Its message id.
    pub(super) fn send_proven(
        &mut self,
        now: Instant,
        pn_id: Option<PnId>,
        to: Address,
        body: impl Into<Body>,
    ) -> u64 {
        let env = Envelope::request(self.ids.next(), self.me(), to, body);
        if self.cfg.security == PanSecurity::Cpns && !self.codec.rx_sealed() {
            if let Some(p) = self.pan.as_mut() {
                p.then.push(env.clone());
                return env.msg_id;
            }
            if let Some((pn, local)) = self.proof_key(pn_id)
                && self
                    .begin_pan_auth(now, pn, local, vec![env.clone()], None)
                    .is_ok()
            {
                return env.msg_id;
            }
        }
        self.transmit(&env);
        env.msg_id
    }

    /// A LocalEUKey to prove this PNE with on the link: `pn_id`'s, else that of any PN it holds
    /// of the PN GW on the link.
    pub(super) fn proof_key(&self, pn_id: Option<PnId>) -> Option<(PnId, LocalEuKey)> {
        let held = |pn: &PnId| {
            if self.unprovable.contains(pn) {
                return None;
            }
            self.pns.get(pn).and_then(|p| p.local.clone())
        };
        if let Some(k) = pn_id.and_then(|pn| held(&pn)) {
            return pn_id.map(|pn| (pn, k));
        }
        self.pns
            .iter()
            .filter(|(_, p)| {
                self.gateway
                    .as_ref()
                    .is_none_or(|g| *g == p.state.inventory.gateway)
            })
            .filter(|(pn, _)| !self.unprovable.contains(*pn))
            .find_map(|(pn, p)| p.local.clone().map(|k| (*pn, k)))
    }

    /// The PNs whose LocalEUKey a PN GW did not prove it holds: the driver hands them to the
    /// machine of its next link ([`PneSession::skip_proofs`]).
    pub fn unprovable(&self) -> &std::collections::BTreeSet<PnId> {
        &self.unprovable
    }

    /// PNs not to prove this PNE with by itself (a PN GW of an earlier link did not prove it
    /// holds their key); a key a registration gives later is tried again.
    pub fn skip_proofs(&mut self, pns: &std::collections::BTreeSet<PnId>) {
        self.unprovable.extend(pns.iter().copied());
    }

    /// The PNs this PNE names in its discovery answer: only to a PN GW it may believe (one
    /// that proved itself on this link, or the one on a trusted bearer), and only that PN GW's,
    /// so a device that only claims to be a PN GW learns no PN id (docs/security.md §4.4).
    fn pns_told_to_gateway(&self) -> Vec<PnId> {
        let believed = match (self.cfg.security, &self.gateway) {
            (PanSecurity::Trusted, Some(gw)) => Some(gw),
            (PanSecurity::Cpns, Some(gw)) if self.proven_gateway.as_ref() == Some(gw) => Some(gw),
            _ => None,
        };
        self.pns
            .iter()
            .filter(|(_, p)| Some(&p.state.inventory.gateway) == believed)
            .map(|(id, _)| *id)
            .collect()
    }

    // ---- helpers ----

    /// Unwraps the PNE's copy of a LocalEUKey in its stored form, rand_server ‖ wrapped
    /// (000 §6.6.1.1 step 7; docs/security.md §4.2).
    fn unwrap_stored_key(
        &self,
        pn_id: &PnId,
        gw: &EntityId,
        stored: &[u8],
    ) -> Result<LocalEuKey, ProtoError> {
        Ok(cpns_crypto::unwrap_stored_local_eukey(
            &self.cfg.eukey,
            Recipient::Pne,
            (pn_id.as_bytes(), self.cfg.id.as_str(), gw.as_str()),
            stored,
        )?)
    }

    /// The PN GW's id: from discovery, else as the message names its sender.
    fn gateway_for(&self, env: &Envelope) -> EntityId {
        match (&self.gateway, &env.from) {
            (Some(gw), _) => gw.clone(),
            (None, Address::Entity(e)) => e.clone(),
            (None, Address::Server) => self.cfg.id.clone(),
        }
    }

    fn peer(&self) -> Address {
        self.gateway
            .clone()
            .map_or(Address::Server, Address::Entity)
    }

    fn me(&self) -> Address {
        Address::Entity(self.cfg.id.clone())
    }

    fn event(&mut self, e: PneEvent) {
        self.out.push_back(PneOutput::Event(e));
    }

    /// Ends command `id`'s flow.
    fn complete(&mut self, id: CommandId, flow: Flow, result: Result<Outcome, Failure>) {
        self.event(PneEvent::Completed(Completed { id, flow, result }));
    }

    /// Ends a flow that failed: its command's completion, or for a flow this PNE started by
    /// itself, [`PneEvent::FlowFailed`].
    fn fail(&mut self, cmd: Option<CommandId>, flow: Flow, reason: Failure) {
        match cmd {
            Some(id) => self.complete(id, flow, Err(reason)),
            None => self.event(PneEvent::FlowFailed { flow, reason }),
        }
    }

    fn transmit(&mut self, env: &Envelope) {
        let trace = TraceRecord {
            from: env.from.to_string(),
            to: env.to.to_string(),
            message: env.body.name(),
            sealed: self.codec.tx_sealed(),
        };
        match self.codec.encode(env) {
            Ok(frame) => self.out.push_back(PneOutput::Transmit { frame, trace }),
            Err(e) => self.out.push_back(PneOutput::Close {
                reason: format!("encode: {e}"),
            }),
        }
    }

    fn send_request_to(&mut self, to: Address, body: impl Into<Body>) -> u64 {
        let env = Envelope::request(self.ids.next(), self.me(), to, body);
        self.transmit(&env);
        env.msg_id
    }

    fn send_request(&mut self, body: impl Into<Body>) -> u64 {
        self.send_request_to(self.peer(), body)
    }

    fn response(&mut self, in_reply_to: u64, to: Address, body: impl Into<Body>) -> Envelope {
        Envelope::response(self.ids.next(), in_reply_to, self.me(), to, body)
    }

    fn send_response(&mut self, in_reply_to: u64, body: impl Into<Body>) {
        let env = self.response(in_reply_to, self.peer(), body);
        self.transmit(&env);
    }

    fn send_notify(&mut self, body: impl Into<Body>) {
        let env = Envelope::notify(self.ids.next(), self.me(), self.peer(), body);
        self.transmit(&env);
    }

    fn reject(&mut self, env: &Envelope, code: ErrorCode, reason: &str) {
        if env.kind == MsgKind::Request {
            let resp = self.response(env.msg_id, env.from.clone(), ErrorBody::new(code, reason));
            self.transmit(&resp);
        }
    }

    fn fail_link(&mut self, cmd: Option<CommandId>, reason: Failure) {
        self.out.push_back(PneOutput::Close {
            reason: format!("PN GW authentication failed: {reason}"),
        });
        self.fail(cmd, Flow::PanAuthentication, reason);
    }
}

#[cfg(test)]
mod tests {
    use cpns_crypto::{EuKey, MachineRng};
    use cpns_wire::{EntityId, PnId, PnInventory};

    use crate::pne::{PneConfig, PneSession};
    use crate::{LocalPnState, PanSecurity};

    fn id(s: &str) -> EntityId {
        EntityId::new(s).expect("a valid id")
    }

    fn pn_of(gw: &str, n: u8) -> LocalPnState {
        LocalPnState {
            inventory: PnInventory {
                pn_id: PnId::from_bytes([n; 16]),
                gateway: id(gw),
                members: Vec::new(),
            },
            wrapped_keys: Vec::new(),
            own: None,
            expires_at: None,
        }
    }

    /// A PNE names its PNs only to a PN GW it may believe, and only that PN GW's: on an
    /// insecure PAN the one that proved itself on the link, on a trusted bearer the one there.
    #[test]
    fn a_pne_names_its_pns_only_to_a_gateway_it_may_believe() {
        for security in [PanSecurity::Cpns, PanSecurity::Trusted] {
            let cfg = PneConfig {
                security,
                heartbeat: None,
                ..PneConfig::new(id("pne-1"), EuKey::from_bytes([1; 32]))
            };
            let mut s = PneSession::new(cfg, MachineRng::from_seed_u64(1));
            s.restore(vec![pn_of("gw-1", 1), pn_of("gw-2", 2)])
                .expect("plain PNs restore");
            assert!(s.pns_told_to_gateway().is_empty(), "no PN GW yet");
            s.gateway = Some(id("gw-1"));
            let told = s.pns_told_to_gateway();
            match security {
                PanSecurity::Trusted => assert_eq!(told, [PnId::from_bytes([1; 16])]),
                PanSecurity::Cpns => assert!(told.is_empty(), "not proven"),
            }
            s.proven_gateway = Some(id("gw-2"));
            let told = s.pns_told_to_gateway();
            match security {
                PanSecurity::Trusted => assert_eq!(told, [PnId::from_bytes([1; 16])]),
                PanSecurity::Cpns => assert!(told.is_empty(), "another PN GW proved itself"),
            }
            s.proven_gateway = Some(id("gw-1"));
            assert_eq!(s.pns_told_to_gateway(), [PnId::from_bytes([1; 16])]);
        }
    }
}
