//! The PN GW: one machine for its WAN session to the CPNS Server (CPNS-7) and every PAN link to
//! its PNEs (CPNS-1), because its flows span both: it builds PNs from PNE requests, registers
//! them with the server, relays authentication between PNEs and the server, keeps the local PN
//! inventory and the routing table, and relays PNE registration (000 §6.6.1, 002 §B.1.1.2,
//! 003 §1.4).
//!
//! The driver opens links with [`Gateway::link_opened`], feeds each link's frames to
//! [`Gateway::handle_pan_frame`] and the WAN's to [`Gateway::handle_wan_frame`], and carries out
//! [`GatewayOutput`]s. Local PN inventory changes come out as [`GatewayOutput::Persist`]; the
//! step that depends on them continues only when the driver reports them durable.

mod connect;
mod content;
pub mod delivery;
mod departed;
mod establish;
mod expiry;
mod follow;
mod groups;
mod invite;
mod membership;
mod outcome;
mod pan;
mod pn_flows;
mod register;
mod rejoin;
mod relay;
mod release;
mod status;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use cpns_crypto::{EuKey, LocalEuKey, MachineRng};
use cpns_wire::{
    Address, Body, CpnsId, DeviceCapabilities, EntityId, Envelope, ErrorBody, ErrorCode, MsgKind,
    PnId, PnInventory,
};

use crate::command::CommandIds;
use crate::link::{LinkCodec, PanSecurity};
use crate::util::{MsgIds, Tokens};
use crate::{Completed, LocalPnState, ProtoError, Timeouts, Token, TraceRecord};

pub use content::{CONTENT_BURST, CONTENT_EVERY};
pub use establish::{EstablishTargets, Establishing, MAX_JOIN_INFO};
pub use outcome::Outcome;

/// Settings of a PN GW. [`GatewayConfig::new`] gives the defaults; set the fields that differ
/// with struct update syntax:
///
/// ```
/// # use cpns_crypto::EuKey;
/// # use cpns_proto::gateway::GatewayConfig;
/// # let (id, eukey) = ("gw-1".parse().unwrap(), EuKey::from_bytes([1; 32]));
/// let cfg = GatewayConfig {
///     confirm_others: true,
///     ..GatewayConfig::new(id, eukey)
/// };
/// assert_eq!(cfg.pn_lifetime_s, None);
/// ```
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The PN GW's entity id.
    pub id: EntityId,
    /// Its EUKey.
    pub eukey: EuKey,
    /// Capabilities of the device it runs on.
    pub capabilities: DeviceCapabilities,
    /// Subscription information sent in PN registration (000 §6.6.1.1 step 4).
    pub subscription: Option<String>,
    /// Whether it is a zone-based PN GW (000 §6.4 note 2).
    pub zone_support: bool,
    /// Largest frame accepted.
    pub max_frame: u32,
    /// Flow timeouts.
    pub timeouts: Timeouts,
    /// Bounds on flows in progress.
    pub limits: GatewayLimits,
    /// Whether this PN GW's owner confirms its own PNEs taking part in other users' PNs, and
    /// agrees to be charged for them (001 §5.2.1.1 step 9).
    pub confirm_others: bool,
    /// The lifetime, in seconds, of the PNs this PN GW establishes: past it they are released
    /// (beyond the documents; docs/pn-lifecycle.md, "Lifetime and member limit").
    pub pn_lifetime_s: Option<u32>,
    /// The most members a PN this PN GW establishes may have.
    pub pn_max_members: Option<u32>,
    /// How often it sends the server a Heartbeat once set up (docs/device-status.md): well
    /// under the server's offline bound. `None`: never (a server that takes silence).
    pub heartbeat: Option<std::time::Duration>,
    /// A PAN link silent this long (no frame, not even a Heartbeat) is closed and its PNE
    /// reported offline; `None`: never.
    pub pan_offline_after: Option<std::time::Duration>,
    /// Whether it reports its PNEs' presence to the server (docs/device-status.md).
    pub report_presence: bool,
    /// How often each PNE may report through it.
    pub pne_limits: PneReportLimits,
    /// The AEAD suites it takes for its PAN links' frames, most wanted first (docs/security.md
    /// §4.13); it chooses from each PNE's offer by [`cpns_crypto::Suite::choose`].
    pub suites: Vec<cpns_crypto::Suite>,
}

/// The default [`GatewayConfig::heartbeat`].
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// The default [`GatewayConfig::pan_offline_after`].
pub const PAN_OFFLINE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

pub use status::PneReportLimits;

impl GatewayConfig {
    /// The settings of PN GW `id` with its EUKey, and for everything else the defaults: device
    /// capabilities [`DeviceCapabilities::default`] (a driver sets its device's), no
    /// subscription information, not zone-based, frames up to
    /// [`DEFAULT_MAX_FRAME`](cpns_wire::DEFAULT_MAX_FRAME), [`Timeouts::default`],
    /// [`GatewayLimits::default`], not confirming its PNEs in other users' PNs, PNs with no
    /// lifetime and no member limit, a Heartbeat every [`HEARTBEAT`], PAN links silent for
    /// [`PAN_OFFLINE_AFTER`] closed, its PNEs' presence reported, and
    /// [`PneReportLimits::default`].
    pub fn new(id: EntityId, eukey: EuKey) -> Self {
        Self {
            id,
            eukey,
            capabilities: DeviceCapabilities::default(),
            subscription: None,
            zone_support: false,
            max_frame: cpns_wire::DEFAULT_MAX_FRAME,
            timeouts: Timeouts::default(),
            limits: GatewayLimits::default(),
            confirm_others: false,
            pn_lifetime_s: None,
            pn_max_members: None,
            heartbeat: Some(HEARTBEAT),
            pan_offline_after: Some(PAN_OFFLINE_AFTER),
            report_presence: true,
            pne_limits: PneReportLimits::default(),
            suites: crate::pne::DEFAULT_SUITES.to_vec(),
        }
    }
}

/// How many flows a PN GW runs at once (issue 6, "Bounded resources"): beyond them a new request
/// is answered `busy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Flows in progress in the whole PN GW (PNs being formed, relayed requests, registrations).
    pub flows: usize,
    /// Flows in progress started from one PAN link.
    pub flows_per_link: usize,
    /// Group Contents one link may send at once (docs/security.md §4.11)...
    pub content_burst: u32,
    /// ...and then one per this interval.
    pub content_every: std::time::Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            flows: 256,
            flows_per_link: 4,
            content_burst: content::CONTENT_BURST,
            content_every: content::CONTENT_EVERY,
        }
    }
}

/// Identifies one PAN link (a connected PNE) of the PN GW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// Something the PN GW wants the driver or the operator to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayEvent {
    /// A command of the PN GW's owner ended (exactly once per command). What the PN GW does
    /// for its PNEs, or by itself, is told by the other events.
    Completed(Completed<Outcome>),
    /// The WAN session is set up and reported (002 §B.1.1.2 step 17).
    WanReady,
    /// A status notification for one of this PN GW's own subscriptions (004 §5.5.3.2).
    StatusNotified(cpns_wire::StatusNotification),
    /// The server kept a subscription of this PN GW made before a reconnection, with the
    /// watched entities now.
    Subscribed {
        /// Its id.
        subscription: u64,
        /// The snapshot.
        entries: Vec<cpns_wire::StatusEntry>,
    },
    /// The WAN session failed.
    WanFailed(String),
    /// The server refused the PN GW's connection set-up (002 §B.1.1.2 steps 9-11) with this
    /// error: retrying with the same credential will not help.
    WanRefused(ErrorBody),
    /// A message for the server was not sent: its frame would exceed the server's limit. The
    /// flow it belonged to ends with an error; the session goes on.
    RelayRefused {
        /// The message.
        message: &'static str,
        /// Its frame size.
        bytes: usize,
        /// The server's limit.
        limit: usize,
    },
    /// A PAN link proved it is this PNE (docs/ARCHITECTURE.md, "Identity on the PAN"): it leaves
    /// the unauthenticated quota.
    LinkProven {
        /// The link.
        link: LinkId,
        /// The PNE.
        pne: EntityId,
    },
    /// A member's group content was relayed to the other members linked to this PN GW
    /// A delivery session's every target ended: the route is gone (004 §5.5.8).
    DeliveryRelayed {
        /// The session.
        session: cpns_wire::DeliveryId,
        /// Its source.
        source: EntityId,
        /// Content bytes relayed to its targets, all together.
        bytes: u64,
    },
    /// A delivery message was refused: its session unknown here, its sender not the one that
    /// may send it, or out of the session's bounds.
    DeliveryRefused {
        /// The session it named.
        session: cpns_wire::DeliveryId,
        /// The PNE that sent it.
        from: EntityId,
        /// Why.
        reason: String,
    },
    /// (docs/security.md §4.11).
    ContentRelayed {
        /// The PN.
        pn_id: PnId,
        /// The member that sent it.
        from: EntityId,
        /// Members it was relayed to.
        delivered: u32,
    },
    /// A PNE made itself known on a link (000 §6.4).
    PneDiscovered {
        /// The link.
        link: LinkId,
        /// The PNE.
        pne: EntityId,
    },
    /// A PNE and the PN GW authenticated each other with LocalEUKey; the link is now sealed.
    PanAuthenticated {
        /// The PNE.
        pne: EntityId,
        /// The PN whose LocalEUKey was used.
        pn_id: PnId,
        /// The AEAD the link's frames are sealed in (docs/security.md §4.13).
        suite: cpns_crypto::Suite,
    },
    /// A PN was established and stored locally (000 §6.6.1.1 step 13).
    PnEstablished {
        /// The PN inventory.
        inventory: PnInventory,
        /// The initiating PNE, if a PNE initiated it.
        initiator: Option<EntityId>,
    },
    /// A PN establishment ended without a PN.
    EstablishmentFailed {
        /// The PN.
        pn_id: PnId,
        /// Why.
        reason: crate::Failure,
    },
    /// A PNE was registered with the server (003 §1.4).
    PneRegistered {
        /// The PNE.
        pne: EntityId,
        /// Its CPNS ID.
        cpns_id: CpnsId,
    },
    /// A PN was released (000 §6.6.5, §6.6.5.1): gone from the server's inventory and the
    /// local one, with its LocalEUKeys.
    PnReleased {
        /// The PN.
        pn_id: PnId,
        /// The member PNE that asked, or `None` for the PN GW's owner.
        by: Option<EntityId>,
        /// The members told by PN Release Notification (the asker is answered instead).
        notified: Vec<EntityId>,
    },
    /// The change that took a PN's last member out released the PN, at the server and here
    /// (docs/pn-lifecycle.md, "A PN without members"); told after that change's own event.
    PnEmptied {
        /// The PN.
        pn_id: PnId,
    },
    /// A member left (000 §6.6.3.1.1) or was expelled (§6.6.3.2): it is out of the server's
    /// inventory and the local one, with its LocalEUKey.
    MemberRemoved {
        /// The PN.
        pn_id: PnId,
        /// The member.
        pne: EntityId,
        /// It asked to leave (else it was expelled).
        left: bool,
        /// The PN's new group key epoch (none when the server had removed it already).
        epoch: Option<u64>,
        /// The remaining members told by PN Update Notification.
        notified: Vec<EntityId>,
    },
    /// A PNE joined a PN by registering in it (000 §6.6.2.2, 003 §1.4.2): it is in the server's
    /// inventory and the local one, and the other members were given the new epoch's key.
    MemberJoined {
        /// The PN.
        pn_id: PnId,
        /// The new member.
        pne: EntityId,
        /// The PN's new group key epoch.
        epoch: Option<u64>,
        /// The other members told by PN Update Notification.
        notified: Vec<EntityId>,
    },
    /// A PN's lifetime ended (beyond the documents): this PN GW releases it, as its owner
    /// would (000 §6.6.5), and the release's events follow.
    PnExpired {
        /// The PN.
        pn_id: PnId,
    },
    /// A member confirmed it holds the PN's current group key (002 §B.1.1.3 steps 25-26): its
    /// connection set-up in the PN is complete.
    MemberConfirmed {
        /// The PN.
        pn_id: PnId,
        /// The member.
        pne: EntityId,
        /// The epoch it holds.
        epoch: u64,
    },
    /// The server asked whether this PN GW's user owns a PNE taking part in another user's PN
    /// and pays for it (001 §5.2.1.1 steps 8-9); answered by the owner's policy.
    PneConfirmAsked {
        /// The PNE.
        pne: EntityId,
        /// The other user's PN.
        pn_id: PnId,
        /// That PN's PN GW.
        requesting_gw: EntityId,
        /// What this PN GW answered.
        confirmed: bool,
    },
    /// An invitation into a PN ended without the invitee joining: it declined (`reason` `None`),
    /// answered with an error, disconnected, or the deadline passed.
    InviteEnded {
        /// The PN.
        pn_id: PnId,
        /// The invitee.
        invitee: EntityId,
        /// Why, unless it declined.
        reason: Option<crate::Failure>,
    },
    /// A leave or expulsion ended with the member kept.
    MembershipChangeFailed {
        /// The PN.
        pn_id: PnId,
        /// The member.
        pne: EntityId,
        /// Why.
        reason: crate::Failure,
    },
    /// A release ended with the PN kept.
    ReleaseFailed {
        /// The PN.
        pn_id: PnId,
        /// Why.
        reason: crate::Failure,
    },
    /// A link misbehaved and is being closed.
    LinkRejected {
        /// The link.
        link: LinkId,
        /// Why.
        reason: String,
    },
    /// The key of a member that left while away could not be stored: it is kept until the PN
    /// GW restarts.
    DepartedKeyNotStored {
        /// The PN.
        pn_id: PnId,
        /// The PNE.
        pne: EntityId,
        /// Why.
        reason: crate::StoreFailure,
    },
}

/// What the driver must do next.
#[derive(Debug)]
#[must_use]
pub enum GatewayOutput {
    /// Send a whole frame to the server.
    TransmitWan {
        /// The frame, length prefix included.
        frame: Vec<u8>,
        /// What it is.
        trace: TraceRecord,
    },
    /// Send a whole frame on a PAN link.
    TransmitPan {
        /// The link.
        link: LinkId,
        /// The frame, length prefix included.
        frame: Vec<u8>,
        /// What it is.
        trace: TraceRecord,
    },
    /// Close a PAN link after sending what was queued for it.
    CloseLink {
        /// The link.
        link: LinkId,
        /// Why.
        reason: String,
    },
    /// Close the WAN session.
    CloseWan {
        /// Why.
        reason: String,
    },
    /// Store (or replace) a PN in the local inventory in one transaction and answer with
    /// [`Gateway::handle_persisted`].
    Persist {
        /// Token to answer with.
        token: Token,
        /// The PN.
        pn: LocalPnState,
    },
    /// Keep a departed member's LocalEUKey copy (its stored form, docs/security.md §4.2),
    /// replacing one of the same PN and PNE, and answer with [`Gateway::handle_persisted`]
    /// (see [`Gateway::restore_departed`]).
    KeepDeparted {
        /// Token to answer with.
        token: Token,
        /// The PN the PNE was a member of.
        pn_id: PnId,
        /// The PNE.
        pne: EntityId,
        /// The copy, rand_server ‖ wrapped.
        stored: Vec<u8>,
    },
    /// Keep a delivery route in the local store (a restarted PN GW relays the session again;
    /// [`Gateway::restore_routes`]). Nothing waits for the answer: a route not kept is only
    /// lost with a restart.
    KeepRoute(cpns_wire::DeliveryRoute),
    /// Remove a delivery route from the local store: every target's part ended.
    ForgetRoute(cpns_wire::DeliveryId),
    /// Remove a departed member's key, and answer with [`Gateway::handle_persisted`].
    DropDeparted {
        /// Token to answer with.
        token: Token,
        /// The PN.
        pn_id: PnId,
        /// The PNE.
        pne: EntityId,
    },
    /// Remove a PN from the local inventory, with its members and their LocalEUKeys, in one
    /// transaction, and answer with [`Gateway::handle_persisted`].
    Forget {
        /// Token to answer with.
        token: Token,
        /// The PN.
        pn_id: PnId,
    },
    /// Something happened.
    Event(GatewayEvent),
}

/// One PAN link.
#[derive(Debug)]
struct Link {
    codec: LinkCodec,
    security: PanSecurity,
    /// The PNE on the link, once it named itself.
    peer: Option<EntityId>,
    /// Whether the link proved it is `peer` (docs/ARCHITECTURE.md, "Identity on the PAN"): by
    /// PN GW authentication with a LocalEUKey of the PNE (after which the link is sealed), or
    /// because the bearer itself is trusted. A registration relayed on the link proves nothing
    /// by itself: on a `cpns` PAN its answer to the server's challenge travels only sealed.
    proven: bool,
    /// PN GW authentication in progress on this link (challenge sent).
    pan_auth: Option<pan::PendingPanAuth>,
    /// The LocalEUKey the server issued to the PNE on this link in the registration it runs.
    reg_key: Option<register::RegKey>,
    /// How much group content the link may still send (docs/security.md §4.11).
    content: Option<crate::rate::TokenBucket>,
    /// The PNs whose inventory changes the PNE on the link follows ([`follow`]).
    follows: BTreeSet<PnId>,
}

/// An established PN, in memory.
#[derive(Debug)]
struct LocalPn {
    state: LocalPnState,
    /// Unwrapped LocalEUKeys per member.
    keys: BTreeMap<EntityId, LocalEuKey>,
    /// The PN's current group key epoch, as the server's latest answer named it (not kept
    /// across restarts: the members' pulls at their next connection set-up tell it again).
    epoch: Option<u64>,
    /// The epoch each member last confirmed holding (002 §B.1.1.3 step 25).
    confirmed: BTreeMap<EntityId, u64>,
    /// Whether [`GatewayEvent::PnExpired`] was reported.
    expiry_told: bool,
}

impl LocalPn {
    fn new(state: LocalPnState, keys: BTreeMap<EntityId, LocalEuKey>) -> Self {
        Self {
            state,
            keys,
            epoch: None,
            confirmed: BTreeMap::new(),
            expiry_told: false,
        }
    }
}

/// The PN GW machine.
#[derive(Debug)]
pub struct Gateway {
    cfg: GatewayConfig,
    wan: connect::Wan,
    wan_codec: LinkCodec,
    links: BTreeMap<LinkId, Link>,
    /// The routing table: which link reaches which PNE.
    routes: BTreeMap<EntityId, LinkId>,
    /// The delivery sessions it relays.
    deliveries: delivery::Routes,
    pns: BTreeMap<PnId, LocalPn>,
    /// The wall clock at an instant, for PN lifetimes ([`Gateway::set_wall_clock`]).
    wall: Option<(Instant, i64)>,
    /// When to look at a PN's expiry next (its end, then retries), soonest first; entries of
    /// PNs gone since are dropped when due.
    expiries: std::collections::BTreeSet<(Instant, PnId)>,
    forming: BTreeMap<PnId, establish::Forming>,
    /// Keys of members whose membership ended while they were away.
    departed: departed::Departed,
    relays: relay::Relays,
    releases: release::Releases,
    changes: membership::Changes,
    invites: Vec<invite::Invite>,
    /// The largest frame the server accepts, as it announced (002 §B.1.1.2 step 11).
    server_max_frame: usize,
    /// When the next Heartbeat to the server is due, while the WAN session is up.
    next_heartbeat: Option<Instant>,
    /// Its PNEs' presence as reported, and their rate buckets.
    presence: status::Presence,
    rng: MachineRng,
    ids: MsgIds,
    tokens: Tokens,
    commands: CommandIds,
    /// The owner's requests to the server waiting for their answer.
    owner_waits: outcome::OwnerWaits,
    parked: BTreeMap<Token, Parked>,
    out: VecDeque<GatewayOutput>,
}

/// Work parked until the driver reports a local persist.
#[derive(Debug)]
enum Parked {
    Establishment(PnId),
    MemberAdded(Box<register::JoinStored>),
    Released(Box<release::Releasing>),
    MemberRemoved(Box<membership::Agreed>),
    Departed(PnId, EntityId),
}

impl Gateway {
    /// A PN GW with an empty local inventory, drawing every random value from `rng`.
    pub fn new(cfg: GatewayConfig, rng: MachineRng) -> Self {
        let wan_codec = LinkCodec::new(cfg.max_frame);
        let cfg_max = cfg.max_frame;
        Self {
            cfg,
            wan: connect::Wan::Down,
            wan_codec,
            links: BTreeMap::new(),
            routes: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            pns: BTreeMap::new(),
            wall: None,
            expiries: std::collections::BTreeSet::new(),
            forming: BTreeMap::new(),
            departed: departed::Departed::default(),
            relays: relay::Relays::default(),
            releases: release::Releases::default(),
            changes: membership::Changes::default(),
            invites: Vec::new(),
            server_max_frame: cfg_max as usize,
            next_heartbeat: None,
            presence: status::Presence::default(),
            rng,
            ids: MsgIds::default(),
            tokens: Tokens::default(),
            commands: CommandIds::default(),
            owner_waits: BTreeMap::new(),
            parked: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    /// Reloads the local PN inventory kept in the store (a restart). PNs whose LocalEUKeys do
    /// not unwrap under this PN GW's EUKey are refused.
    pub fn restore(&mut self, pns: Vec<LocalPnState>) -> Result<(), ProtoError> {
        for state in pns {
            let keys = self.unwrap_keys(&state)?;
            if let Some(at) = state.expires_at.and_then(|at| self.instant_of(at)) {
                self.expiries.insert((at, state.inventory.pn_id));
            }
            self.pns
                .insert(state.inventory.pn_id, LocalPn::new(state, keys));
        }
        Ok(())
    }

    /// The PN GW's entity id.
    pub fn id(&self) -> &EntityId {
        &self.cfg.id
    }

    /// The local PN inventory.
    pub fn inventory(&self) -> Vec<&PnInventory> {
        let mut v: Vec<&PnInventory> = self.pns.values().map(|p| &p.state.inventory).collect();
        v.sort_by_key(|i| i.pn_id);
        v
    }

    /// Whether the WAN session is set up.
    pub fn wan_ready(&self) -> bool {
        matches!(self.wan, connect::Wan::Ready)
    }

    /// A new PAN link with a PNE.
    pub fn link_opened(&mut self, link: LinkId, security: PanSecurity) {
        let codec = LinkCodec::new(self.cfg.max_frame);
        self.links.insert(
            link,
            Link {
                codec,
                security,
                peer: None,
                proven: false,
                pan_auth: None,
                reg_key: None,
                follows: BTreeSet::new(),
                content: None,
            },
        );
    }

    /// A PAN link closed; its route is dropped and flows waiting on it stop waiting.
    pub fn link_closed(&mut self, now: Instant, link: LinkId) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        self.presence.link_gone(link);
        if let Some(pne) = l.peer {
            if self.routes.get(&pne) == Some(&link) {
                self.routes.remove(&pne);
            }
            self.presence.mark(&pne);
            self.pne_gone(now, &pne);
        }
        self.relays.forget_link(link);
        self.invites_link_closed(link);
        self.sync_presence();
    }

    /// Takes one frame (without its length prefix) from a PAN link, opening a sealed one where
    /// it lies (what `frame` holds afterwards is unspecified). An `Err` means the link must be
    /// closed; the machine has already queued [`GatewayOutput::CloseLink`].
    pub fn handle_pan_frame(
        &mut self,
        now: Instant,
        link: LinkId,
        frame: &mut [u8],
    ) -> Result<(), ProtoError> {
        let Some(l) = self.links.get_mut(&link) else {
            return Err(ProtoError::WrongState("unknown link"));
        };
        self.presence.heard(link, now);
        let env = match l.codec.decode(frame) {
            Ok(env) => env,
            // Another version: a request is answered, anything else dropped; the link stays.
            Err(e @ ProtoError::UnsupportedVersion { .. }) => {
                let (msg_id, body) = crate::link::version_answer(e)?;
                self.send_pan_response(link, msg_id, body);
                return Ok(());
            }
            Err(e) => {
                self.reject_link(link, &e.to_string());
                return Err(e);
            }
        };
        self.on_pan(now, link, env);
        self.sync_presence();
        Ok(())
    }

    /// Takes one frame (without its length prefix) from the server.
    pub fn handle_wan_frame(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), ProtoError> {
        let env = match self.wan_codec.decode(frame) {
            Ok(env) => env,
            Err(e) => {
                let (msg_id, body) = crate::link::version_answer(e)?;
                self.send_wan_response(msg_id, body);
                return Ok(());
            }
        };
        self.on_wan(now, env);
        self.sync_presence();
        Ok(())
    }

    /// Answers a [`GatewayOutput::Persist`].
    pub fn handle_persisted(
        &mut self,
        now: Instant,
        token: Token,
        result: Result<(), crate::StoreFailure>,
    ) -> Result<(), ProtoError> {
        match self.parked.remove(&token).ok_or(ProtoError::UnknownToken)? {
            Parked::Establishment(pn) => {
                self.establishment_persisted(now, pn, result);
                self.mark_members(&pn);
            }
            Parked::MemberAdded(p) => {
                self.presence.mark(p.pne());
                self.member_add_persisted(now, *p, result);
            }
            Parked::Released(r) => self.release_stored(*r, result),
            Parked::MemberRemoved(a) => self.change_stored(*a, result),
            Parked::Departed(pn_id, pne) => self.departed_stored(pn_id, pne, result),
        }
        self.sync_presence();
        Ok(())
    }

    /// Ends every wait whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.wan_timeout(now);
        self.heartbeat_timeout(now);
        self.establishment_timeouts(now);
        self.relay_timeouts(now);
        self.release_timeouts(now);
        self.change_timeouts(now);
        self.invite_timeouts(now);
        self.owner_timeouts(now);
        self.expiry_timeouts(now);
        self.silence_timeouts(now);
        self.delivery_timeouts(now);
        self.sync_presence();
    }

    /// The earliest deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let forming = self.forming.values().filter_map(|f| f.wait_deadline());
        let relays = self.relays.deadlines();
        self.wan
            .deadline()
            .into_iter()
            .chain(self.next_heartbeat)
            .chain(self.silence_deadline())
            .chain(forming)
            .chain(relays)
            .chain(self.releases.deadlines())
            .chain(self.changes.deadlines())
            .chain(self.invite_deadlines())
            .chain(self.owner_deadlines())
            .chain(self.expiry_deadlines())
            .chain(self.delivery_deadline())
            .min()
    }

    /// Flows in progress: PNs being formed, requests relayed to the server, registrations
    /// waiting for their PN update, releases, leaves, expulsions and invitations.
    pub fn flows_in_progress(&self) -> usize {
        self.forming.len()
            + self.relays.len()
            + self.releases.len()
            + self.changes.len()
            + self.invites.len()
    }

    /// Flows in progress that `link` started.
    fn flows_of_link(&self, link: LinkId) -> usize {
        let forming = self
            .forming
            .values()
            .filter(|f| f.initiated_on(link))
            .count();
        forming
            + self.relays.of_link(link)
            + self.releases.of_link(link)
            + self.changes.of_link(link)
            + self.invites_of_link(link)
    }

    /// Whether a new flow from `link` must wait: the reason to answer `busy` with, if so.
    fn over_limit(&self, link: LinkId) -> Option<&'static str> {
        if self.flows_in_progress() >= self.cfg.limits.flows {
            Some("the PN GW is running as many flows as it takes; try again later")
        } else if self.flows_of_link(link) >= self.cfg.limits.flows_per_link {
            Some("this PNE has as many requests in progress as it may; wait for their answers")
        } else {
            None
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<GatewayOutput> {
        self.out.pop_front()
    }

    // ---- dispatch ----

    fn on_pan(&mut self, now: Instant, link: LinkId, env: Envelope) {
        if let Body::Unknown(code) = env.body {
            return self.reject_pan(
                link,
                &env,
                ErrorCode::UnsupportedMessage,
                &format!("unknown message type {code}"),
            );
        }
        // A PNE speaks only for itself: once it named itself, every message must come from it.
        let peer = self.links.get(&link).and_then(|l| l.peer.clone());
        if let (Some(peer), Address::Entity(from)) = (&peer, &env.from)
            && peer != from
        {
            return self.reject_pan(
                link,
                &env,
                ErrorCode::Forbidden,
                "a PNE speaks only for itself",
            );
        }
        // A link naming an id that another live link holds may only try to prove it.
        if let Some(peer) = &peer
            && !matches!(
                env.body,
                Body::PanAuthInit(_) | Body::PanAuthConfirm(_) | Body::EntityDiscoveryRequest(_)
            )
            && !self.identify(link, peer)
        {
            return self.reject_pan(
                link,
                &env,
                ErrorCode::Conflict,
                "another link speaks as this PNE; prove the identity first (PN GW authentication)",
            );
        }
        if env.to != Address::Entity(self.cfg.id.clone()) && env.to != Address::Server {
            return self.reject_pan(link, &env, ErrorCode::NotFound, "no route to the addressee");
        }
        match env.body.clone() {
            Body::EntityDiscoveryRequest(m) => self.on_discovery_request(link, &env, m),
            Body::EntityDiscoveryResponse(m) => self.on_discovery_response(link, m),
            Body::PanAuthInit(m) => self.on_pan_auth_init(link, &env, m),
            Body::PanAuthConfirm(m) => self.on_pan_auth_confirm(link, &env, m),
            Body::PnSetupRequest(m) => self.on_pne_setup_request(now, link, &env, m),
            Body::PnSetupResponse(m) => self.on_invitation_answer(now, link, &env, m),
            Body::AuthenticationResponse(m) => self.on_pne_auth_response(now, link, &env, m),
            Body::PneRegistrationRequest(m) => self.on_pne_registration(now, link, &env, m),
            Body::SecureRequest(m) => self.on_pne_request_for_server(now, link, &env, m),
            Body::GroupKeyRequest(m) => self.on_pne_request_for_server(now, link, &env, m),
            Body::MembershipConfirm(m) => self.on_membership_confirm(link, &env, m),
            Body::InventoryQuery(m) => self.on_inventory_query(link, &env, m),
            Body::GroupContent(m) => self.on_group_content(now, link, &env, m),
            Body::DeliveryChunk(m) if env.kind == MsgKind::Notify => {
                self.on_delivery_chunk(link, m)
            }
            Body::DeliveryAck(m) if env.kind == MsgKind::Notify => self.on_delivery_ack(link, m),
            Body::DeliveryDone(m) if env.kind == MsgKind::Notify => self.on_delivery_done(link, m),
            Body::DeliveryControl(m) if env.kind == MsgKind::Notify => {
                self.on_delivery_control(link, m)
            }
            Body::DeviceCapabilitiesUpdate(m) => self.on_pne_capabilities(now, link, &env, m),
            Body::StatusReport(m) => self.on_pne_status_report(now, link, &env, m),
            Body::StatusQuery(m) => self.on_pne_request_for_server(now, link, &env, m),
            Body::StatusSubscribe(m) => self.on_pne_request_for_server(now, link, &env, m),
            Body::StatusUnsubscribe(m) => self.on_pne_request_for_server(now, link, &env, m),
            Body::CapabilitiesAnswer(_) => self.relay_up_response(now, link, &env),
            // Heard: the link's silence clock started again.
            Body::Heartbeat(_) => {}
            Body::PnReleaseRequest(m) => self.on_pne_release_request(now, link, &env, m),
            Body::PneLeaveRequest(m) => self.on_pne_leave_request(now, link, &env, m),
            Body::PneInviteRequest(m) => self.on_member_invite(now, link, &env, m),
            Body::PneInviteResponse(m) => {
                if !self.on_invite_answer(link, &env, &m) {
                    self.reject_pan(
                        link,
                        &env,
                        ErrorCode::WrongState,
                        "no invitation awaits this",
                    );
                }
            }
            Body::ErrorBody(e) => self.on_pan_error(now, link, &env, e),
            _ => self.reject_pan(
                link,
                &env,
                ErrorCode::WrongState,
                &format!("{} is not expected here", env.body.name()),
            ),
        }
    }

    fn on_wan(&mut self, now: Instant, env: Envelope) {
        if let Body::Unknown(code) = env.body {
            if env.kind == MsgKind::Request {
                let e = ErrorBody::new(
                    ErrorCode::UnsupportedMessage,
                    format!("unknown message type {code}"),
                );
                self.send_wan_response(env.msg_id, e);
            }
            return;
        }
        if !self.wan_ready() {
            return self.on_wan_setup(now, env);
        }
        // Traffic for a PNE is relayed by the routing table.
        if let Address::Entity(to) = &env.to
            && to != &self.cfg.id
        {
            return self.relay_down(now, env);
        }
        match env.body.clone() {
            Body::StatusUpdateRequest(_) => self.on_status_request(&env),
            Body::AuthenticationRequest(m) => self.on_server_auth_request(now, &env, m),
            Body::PnRegistrationResponse(m) => self.on_registration_response(now, &env, m),
            Body::PnUpdateResponse(m) => {
                let expulsion = env.in_reply_to.is_some_and(|r| self.on_expel_answer(r, &m));
                if !expulsion {
                    self.on_update_response(now, &env, m);
                }
            }
            Body::PneLeaveResponse(m) => self.on_leave_answer(&env, m),
            Body::PnReleaseResponse(m) => self.on_release_response(&env, m),
            Body::PneConfirmRequest(m) => self.on_pne_confirm_request(&env, m),
            Body::CapabilitiesQuery(m) => self.on_capabilities_query(&env, m),
            Body::StatusNotification(n) => self.event(GatewayEvent::StatusNotified(n)),
            Body::DeliveryRoute(m) => self.on_delivery_route(&env, m),
            Body::InventoryChanged(m) if env.kind == MsgKind::Notify => {
                self.on_server_inventory_changed(m);
            }
            Body::DeliveryChunk(m) if env.kind == MsgKind::Notify => {
                self.on_server_delivery_chunk(m)
            }
            Body::DeliveryAck(m) if env.kind == MsgKind::Notify => self.on_server_delivery_ack(m),
            Body::DeliveryDone(m) if env.kind == MsgKind::Notify => self.on_server_delivery_done(m),
            Body::DeliveryControl(m) if env.kind == MsgKind::Notify => {
                self.on_server_delivery_control(m)
            }
            Body::StatusSubscribed(_)
            | Body::StatusAck(_)
            | Body::DeviceCapabilitiesConfirm(_)
            | Body::GatewayGroupResponse(_)
                if self.on_owner_answer(&env) => {}
            Body::StatusSubscribed(m) => self.event(GatewayEvent::Subscribed {
                subscription: m.subscription,
                entries: m.entries,
            }),
            Body::ErrorBody(_) if self.on_owner_answer(&env) => {}
            Body::ErrorBody(e) => self.on_wan_error(now, &env, e),
            // Confirms (device capabilities, connection set-up) need no action.
            _ if env.kind == MsgKind::Request => {
                let e = ErrorBody::new(
                    ErrorCode::WrongState,
                    format!("{} is not expected here", env.body.name()),
                );
                self.send_wan_response(env.msg_id, e);
            }
            _ => {}
        }
    }

    /// 001 §5.2.1.1 steps 8-9: the owner's policy answers; the server checked already that
    /// the PNE is an enrolled PNE of this PN GW's user.
    fn on_pne_confirm_request(&mut self, env: &Envelope, m: cpns_wire::PneConfirmRequest) {
        let confirmed = self.cfg.confirm_others;
        let answer = cpns_wire::PneConfirmResponse {
            request_id: m.request_id,
            confirmed,
            chargeable: confirmed,
        };
        self.send_wan_response(env.msg_id, answer);
        self.event(GatewayEvent::PneConfirmAsked {
            pne: m.pne,
            pn_id: m.pn_id,
            requesting_gw: m.requesting_gw,
            confirmed,
        });
    }

    // ---- helpers ----

    fn unwrap_keys(
        &self,
        state: &LocalPnState,
    ) -> Result<BTreeMap<EntityId, LocalEuKey>, ProtoError> {
        let mut keys = BTreeMap::new();
        for (pne, stored) in &state.wrapped_keys {
            let key = self.unwrap_stored(&state.inventory.pn_id, pne, stored)?;
            keys.insert(pne.clone(), key);
        }
        Ok(keys)
    }

    fn event(&mut self, e: GatewayEvent) {
        self.follow_event(&e);
        self.out.push_back(GatewayOutput::Event(e));
    }

    fn persist(&mut self, parked: Parked, pn: LocalPnState) {
        let token = self.tokens.next();
        self.parked.insert(token, parked);
        self.out.push_back(GatewayOutput::Persist { token, pn });
    }

    fn trace(env: &Envelope, sealed: bool) -> TraceRecord {
        TraceRecord {
            from: env.from.to_string(),
            to: env.to.to_string(),
            message: env.body.name(),
            sealed,
        }
    }

    /// Sends `env` to the server; false, sending nothing, when its frame would exceed what the
    /// server announced it accepts (a flow's own failure, never the session's).
    #[must_use]
    fn transmit_wan(&mut self, env: &Envelope) -> bool {
        match self.wan_codec.encode(env) {
            Ok(frame) if crate::link::body_fits(&frame, self.server_max_frame) => {
                self.out.push_back(GatewayOutput::TransmitWan {
                    frame,
                    trace: Self::trace(env, false),
                });
                true
            }
            Ok(frame) => {
                self.event(GatewayEvent::RelayRefused {
                    message: env.body.name(),
                    bytes: frame.len(),
                    limit: self.server_max_frame,
                });
                false
            }
            Err(e) => {
                self.out.push_back(GatewayOutput::CloseWan {
                    reason: format!("encode: {e}"),
                });
                false
            }
        }
    }

    fn transmit_pan(&mut self, link: LinkId, env: &Envelope) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let sealed = l.codec.tx_sealed();
        match l.codec.encode(env) {
            Ok(frame) => self.out.push_back(GatewayOutput::TransmitPan {
                link,
                frame,
                trace: Self::trace(env, sealed),
            }),
            Err(e) => self.out.push_back(GatewayOutput::CloseLink {
                link,
                reason: format!("encode: {e}"),
            }),
        }
    }

    fn me(&self) -> Address {
        Address::Entity(self.cfg.id.clone())
    }

    /// Tells the server something (a notify on the WAN session).
    fn send_wan_notify(&mut self, body: impl Into<Body>) {
        let env = Envelope::notify(self.ids.next(), self.me(), Address::Server, body);
        let _ = self.transmit_wan(&env);
    }

    /// Sends a request to the server: its message id, or `None` when it is too large to send.
    fn send_wan_request(&mut self, body: impl Into<Body>) -> Option<u64> {
        let env = Envelope::request(self.ids.next(), self.me(), Address::Server, body);
        self.transmit_wan(&env).then_some(env.msg_id)
    }

    /// Answers the server; an answer too large to send becomes a `bad_request` error answer.
    fn send_wan_response(&mut self, in_reply_to: u64, body: impl Into<Body>) {
        let env = Envelope::response(
            self.ids.next(),
            in_reply_to,
            self.me(),
            Address::Server,
            body,
        );
        if !self.transmit_wan(&env) {
            let e = ErrorBody::new(
                ErrorCode::BadRequest,
                "the answer is larger than the CPNS Server accepts",
            );
            let small =
                Envelope::response(self.ids.next(), in_reply_to, self.me(), Address::Server, e);
            let _ = self.transmit_wan(&small);
        }
    }

    fn pan_to(&self, link: LinkId) -> Address {
        self.links
            .get(&link)
            .and_then(|l| l.peer.clone())
            .map_or(Address::Server, Address::Entity)
    }

    fn send_pan_request(&mut self, link: LinkId, body: impl Into<Body>) -> u64 {
        let env = Envelope::request(self.ids.next(), self.me(), self.pan_to(link), body);
        self.transmit_pan(link, &env);
        env.msg_id
    }

    fn send_pan_response(&mut self, link: LinkId, in_reply_to: u64, body: impl Into<Body>) {
        let env = Envelope::response(
            self.ids.next(),
            in_reply_to,
            self.me(),
            self.pan_to(link),
            body,
        );
        self.transmit_pan(link, &env);
    }

    fn send_pan_notify(&mut self, link: LinkId, body: impl Into<Body>) {
        let env = Envelope::notify(self.ids.next(), self.me(), self.pan_to(link), body);
        self.transmit_pan(link, &env);
    }

    /// Answers a bad PAN request with an error; other bad messages are dropped. The answer is
    /// addressed to whoever the request named as its sender, on the link it came on: a link
    /// that names nobody yet (a refused discovery) still gets a refusal its PNE takes as its own.
    fn reject_pan(&mut self, link: LinkId, env: &Envelope, code: ErrorCode, reason: &str) {
        if env.kind == MsgKind::Request {
            let answer = Envelope::response(
                self.ids.next(),
                env.msg_id,
                self.me(),
                env.from.clone(),
                ErrorBody::new(code, reason),
            );
            self.transmit_pan(link, &answer);
        }
    }

    /// Closes a link that broke the protocol.
    fn reject_link(&mut self, link: LinkId, reason: &str) {
        self.event(GatewayEvent::LinkRejected {
            link,
            reason: reason.into(),
        });
        self.out.push_back(GatewayOutput::CloseLink {
            link,
            reason: reason.into(),
        });
    }

    /// Takes a link's claim to be `pne` and routes to it (000 §6.6.1.1 step 4: routing table).
    ///
    /// A claim is first come, first served: it never takes the route of another live link, and
    /// on a `cpns` PAN it stays unproven until [`Gateway::prove`]. False when the link already
    /// named another PNE or `pne` is routed to another link.
    fn identify(&mut self, link: LinkId, pne: &EntityId) -> bool {
        let taken = self
            .routes
            .get(pne)
            .is_some_and(|&other| other != link && self.links.contains_key(&other));
        let Some(l) = self.links.get_mut(&link) else {
            return false;
        };
        match &l.peer {
            Some(p) if p != pne || taken => false,
            Some(_) => {
                // The link keeps (or takes back, once the other link is gone) its route.
                self.routes.insert(pne.clone(), link);
                true
            }
            None if taken => false,
            None => {
                l.peer = Some(pne.clone());
                let trusted = l.security == PanSecurity::Trusted;
                l.proven = trusted;
                self.routes.insert(pne.clone(), link);
                self.event(GatewayEvent::PneDiscovered {
                    link,
                    pne: pne.clone(),
                });
                if trusted {
                    self.presence.mark(pne);
                    self.event(GatewayEvent::LinkProven {
                        link,
                        pne: pne.clone(),
                    });
                    self.delivery_source_linked(pne);
                }
                true
            }
        }
    }

    /// Whether a live link other than a claim holds `pne`'s route: one that proved it.
    fn held_by_proof(&self, pne: &EntityId) -> bool {
        self.routes
            .get(pne)
            .and_then(|l| self.links.get(l))
            .is_some_and(|l| l.proven && l.peer.as_ref() == Some(pne))
    }

    /// Names the PNE on a link for a proof of its identity (PN GW authentication), even when
    /// another link holds the route: the proof, once it checks, takes the route.
    fn claim_for_proof(&mut self, link: LinkId, pne: &EntityId) -> bool {
        if self.identify(link, pne) {
            return true;
        }
        let Some(l) = self.links.get_mut(&link) else {
            return false;
        };
        match &l.peer {
            Some(p) => p == pne,
            None => {
                l.peer = Some(pne.clone());
                true
            }
        }
    }

    /// The link proved it is the PNE it named: it gets the PNE's route. Another link that held
    /// the route, proven or not, is closed: only one link speaks as a PNE, and a proof wins.
    fn prove(&mut self, link: LinkId) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let Some(pne) = l.peer.clone() else {
            return;
        };
        let newly = !std::mem::replace(&mut l.proven, true);
        self.presence.mark(&pne);
        if newly {
            self.event(GatewayEvent::LinkProven {
                link,
                pne: pne.clone(),
            });
            self.delivery_source_linked(&pne);
        }
        if let Some(other) = self.routes.insert(pne.clone(), link)
            && other != link
            && let Some(o) = self.links.get_mut(&other)
        {
            o.peer = None;
            self.reject_link(other, &format!("another link proved it is {pne}"));
        }
    }
}

impl Gateway {
    /// Marks every member of `pn` for the next presence sync.
    fn mark_members(&mut self, pn: &PnId) {
        let members: Vec<EntityId> = self
            .pns
            .get(pn)
            .map(|p| {
                p.state
                    .inventory
                    .members
                    .iter()
                    .map(|m| m.pne_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for m in &members {
            self.presence.mark(m);
        }
    }
}
