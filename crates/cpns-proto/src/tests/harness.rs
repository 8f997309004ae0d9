//! The three-party harness: one [`ServerSession`], one [`Gateway`] and N [`PneSession`]s, a fake
//! clock, a tiny in-memory test store answering every `Load`/`Persist`, and a pump that moves
//! frames between the parties until nothing is left to do.
//!
//! Every frame in flight passes an optional hook that may deliver, drop or replace it; every
//! frame delivered is kept in [`Harness::log`] (to capture and replay), every trace record and
//! event is kept, and every `Err` a machine returns is kept in [`Harness::errors`]. PNE `i` sits
//! on PAN link `LinkId(i)` and is called `pne-{i+1}`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use cpns_crypto::{EuKey, MachineRng};
use cpns_wire::codec::{encode_plain_frame, split_frame};
use cpns_wire::{
    DeviceCapabilities, EntityId, Envelope, FrameKind, SetupType, UserId, decode_envelope,
};

use super::store::{PneSpec, Store};
use crate::gateway::{Gateway, GatewayConfig, GatewayEvent, GatewayLimits, GatewayOutput, LinkId};
use crate::link::frame_body;
use crate::pne::{PneConfig, PneEvent, PneOutput, PneSession};
use crate::server::{
    EntityRole, KnownEntity, ServerConfig, ServerEvent, ServerOutput, ServerSession,
};
use crate::{ProtoError, Timeouts, TraceRecord};

/// The TLS exporter value shared by server and PN GW: both ends of one TLS session.
pub(super) const EXPORTER: [u8; 32] = [0x42; 32];
/// Default timeouts of every machine in the harness.
pub(super) const INVITE: Duration = Duration::from_secs(10);
pub(super) const FLOW: Duration = Duration::from_secs(30);
/// The wall clock (Unix milliseconds) at the harness's base instant.
pub(super) const WALL_AT_BASE: i64 = 1_800_000_000_000;

/// A party of the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Party {
    Server,
    Gw,
    Pne(usize),
    /// The second PN GW's session at the server ([`Harness::with_far`]).
    FarServer,
    /// The second PN GW.
    FarGw,
}

/// A second PN GW, its session at the server, and the PNEs from `from` on behind it: two PNs
/// behind two PN GWs, one server store (forwarding between PNs).
pub(super) struct Far {
    pub server: ServerSession,
    pub gw: Gateway,
    /// The first PNE behind it; every later one is too.
    pub from: usize,
}

/// A frame in flight, without its length prefix.
#[derive(Clone, Debug)]
pub(super) struct Flight {
    pub from: Party,
    pub to: Party,
    pub body: Vec<u8>,
    pub message: &'static str,
    pub sealed: bool,
    seq: u64,
}

impl Flight {
    /// The envelope, if the frame is plain (WAN, trusted PAN, or before PAN sealing).
    pub fn env(&self) -> Option<Envelope> {
        match split_frame(&self.body) {
            Ok((FrameKind::Plain, payload)) => decode_envelope(payload).ok(),
            _ => None,
        }
    }
}

/// What the hook does with a frame in flight.
pub(super) enum Action {
    Deliver,
    Drop,
    Replace(Vec<u8>),
}

type Hook = Box<dyn FnMut(&Flight) -> Action>;

/// An event of any party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ev {
    Server(ServerEvent),
    Gw(GatewayEvent),
    Pne(usize, PneEvent),
}

/// The frame body of a plain envelope, as a peer would receive it.
pub(super) fn plain(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_plain_frame(env, &mut out);
    frame_body(&out).unwrap().to_vec()
}

/// Decodes a plain frame body, lets `f` edit the envelope, and encodes it again.
pub(super) fn rewrite(body: &[u8], f: impl FnOnce(&mut Envelope)) -> Vec<u8> {
    let (kind, payload) = split_frame(body).unwrap();
    assert_eq!(kind, FrameKind::Plain, "only plain frames can be rewritten");
    let mut env = decode_envelope(payload).unwrap();
    f(&mut env);
    plain(&env)
}

pub(super) fn id(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

pub(super) fn pne_id(i: usize) -> EntityId {
    id(&format!("pne-{}", i + 1))
}

/// The three parties, the clock and the store.
pub(super) struct Harness {
    pub base: Instant,
    offset: Duration,
    pub server: ServerSession,
    pub gw: Gateway,
    /// A second PN GW, if the harness has one.
    pub far: Option<Box<Far>>,
    pub pnes: Vec<PneSession>,
    pub gw_cfg: GatewayConfig,
    pub pne_cfgs: Vec<PneConfig>,
    pub store: Store,
    pub queue: VecDeque<Flight>,
    pub log: Vec<Flight>,
    pub dropped: Vec<Flight>,
    pub traces: Vec<(Party, Party, TraceRecord)>,
    pub events: Vec<Ev>,
    /// Where the machines' latest restart is in `events`.
    pub restarted_at: usize,
    /// The owner's invitations the PN GW took, by command, with their invitee.
    pub owner_invites: Vec<(crate::CommandId, EntityId)>,
    /// What the server told its status hub, in order.
    pub published: Vec<crate::server::Publish>,
    pub errors: Vec<(Party, ProtoError)>,
    /// Closes asked for: who, which link (for PAN), why.
    pub closes: Vec<(Party, Option<usize>, String)>,
    closed_at: BTreeMap<(Party, Party), u64>,
    seq: u64,
    hook: Option<Hook>,
    /// Seeds every machine (and its restarts): a run replays exactly from it.
    rng: MachineRng,
    /// The server's settings, kept for restarts.
    pub server_cfg: ServerConfig,
    /// Plays the home PN GWs of other users' PNEs (001 §5.2.1.1 steps 8-9): each question the
    /// server asks another session, with the answer to give (`None`: none, ever).
    pub home: HomeGateways,
    /// The questions the server asked, by home PN GW.
    pub asked: Vec<(EntityId, cpns_wire::PneConfirmRequest)>,
    /// What the server's own PN GW answered to questions of other sessions.
    /// Answers to the server's Capabilities Queries, by ask.
    /// Secure notices the server asked to deliver: through which PN GW, to whom.
    pub notices: Vec<(EntityId, EntityId)>,
    /// What lost server sessions kept for their PN GW's next one, as the node parks it
    /// ([`Harness::lose_wan`]): what is relayed to them meanwhile is held there.
    pub parked: Vec<crate::server::KeptOutbound>,
    pub capabilities_answers: Vec<(
        u64,
        Result<cpns_wire::DeviceCapabilities, cpns_wire::ErrorBody>,
    )>,
    /// The server's answers to [`ServerSession::deliver`].
    pub deliveries_started: Vec<(u64, Result<cpns_wire::DeliveryId, cpns_wire::ErrorBody>)>,
    /// Reads of external content the server asked for.
    pub server_reads: usize,
    pub gateway_answers: Vec<(
        u64,
        Result<cpns_wire::PneConfirmResponse, cpns_wire::ErrorBody>,
    )>,
}

/// What a home PN GW answers, if anything.
pub(super) type HomeGateways = Box<
    dyn FnMut(
        &EntityId,
        &cpns_wire::PneConfirmRequest,
    ) -> Option<Result<cpns_wire::PneConfirmResponse, cpns_wire::ErrorBody>>,
>;

/// No home PN GW is connected.
pub(super) fn no_home_gateway() -> HomeGateways {
    Box::new(|gw, _| {
        Some(Err(cpns_wire::ErrorBody::new(
            cpns_wire::ErrorCode::Timeout,
            format!("its home PN GW {gw} is not connected to the CPNS Server"),
        )))
    })
}

fn caps(device: &str, has_ui: bool) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device.into(),
        has_ui,
        networks: vec!["wlan".into()],
        ..DeviceCapabilities::default()
    }
}

/// The server's certification key in the harness (docs/security.md §4.11).
pub(super) fn certification_key() -> cpns_crypto::CertificationKey {
    cpns_crypto::CertificationKey::from_master(&cpns_crypto::MasterKey::from_bytes([0x4d; 32]))
}

impl Harness {
    /// The parties, with the PN GW and every PNE enrolled for user `alice`; nothing connected.
    pub fn new(specs: &[PneSpec]) -> Self {
        Self::with_seed(specs, 1)
    }

    /// [`Harness::new`] with every key and random value drawn from `seed`.
    pub fn with_seed(specs: &[PneSpec], seed: u64) -> Self {
        Self::with_options(
            specs,
            seed,
            GatewayLimits::default(),
            ServerConfig {
                offline_after: None,
                ..ServerConfig::default()
            },
            None,
        )
    }

    /// [`Harness::new`], the PN GW connected, every PNE discovered and in one PN that PNE 0
    /// set up with all of them.
    pub fn one_pn(specs: &[PneSpec]) -> Self {
        let mut h = Self::new(specs);
        h.connect_gw();
        h.discover_all();
        h.setup(0, SetupType::All);
        assert!(h.errors.is_empty(), "{:?}", h.errors);
        h
    }

    /// [`Harness::new`] with a second PN GW, `gw-2` of user `owner`, and the PNEs from `from`
    /// on (of `owner` too) behind it; nothing connected.
    pub fn with_far(specs: &[PneSpec], from: usize, owner: &str) -> Self {
        Self::with_options(
            specs,
            1,
            GatewayLimits::default(),
            ServerConfig {
                offline_after: None,
                ..ServerConfig::default()
            },
            Some((from, UserId::new(owner).unwrap())),
        )
    }

    /// [`Harness::new`] with the PN GW's flow limits set.
    pub fn with_limits(specs: &[PneSpec], limits: GatewayLimits) -> Self {
        Self::with_options(
            specs,
            1,
            limits,
            ServerConfig {
                offline_after: None,
                ..ServerConfig::default()
            },
            None,
        )
    }

    /// [`Harness::new`] with the server's settings given (also after a restart).
    pub fn with_server(specs: &[PneSpec], server_cfg: ServerConfig) -> Self {
        Self::with_options(specs, 1, GatewayLimits::default(), server_cfg, None)
    }

    fn with_options(
        specs: &[PneSpec],
        seed: u64,
        limits: GatewayLimits,
        server_cfg: ServerConfig,
        far: Option<(usize, UserId)>,
    ) -> Self {
        let mut rng = MachineRng::from_seed_u64(seed);
        // Only offsets from this base are ever compared; frames carry no time.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let timeouts = Timeouts {
            invite: INVITE,
            flow: FLOW,
        };
        let owner = UserId::new("alice").unwrap();
        let mut store = Store::default();
        let gw_cfg = GatewayConfig {
            limits,
            // Silence and heartbeats have tests of their own (status_server.rs); the
            // others jump the clock far ahead.
            heartbeat: None,
            pan_offline_after: None,
            // Presence reports have tests of their own (status_gateway.rs); the others
            // read the WAN exchange message by message.
            report_presence: false,
            capabilities: DeviceCapabilities {
                gateway_capable: true,
                cpu_class: None,
                memory_class: None,
                ..caps("home-hub", false)
            },
            subscription: Some("family-plan".into()),
            timeouts,
            ..GatewayConfig::new(id("gw-1"), EuKey::random(rng.get()))
        };
        store.entities.insert(
            gw_cfg.id.clone(),
            KnownEntity {
                id: gw_cfg.id.clone(),
                role: EntityRole::Gateway,
                owner: owner.clone(),
                eukey: gw_cfg.eukey.clone(),
            },
        );
        let mut gw = Gateway::new(gw_cfg.clone(), rng.fork());
        gw.set_wall_clock(base, WALL_AT_BASE);
        let mut far_gw = far.as_ref().map(|(_, far_owner)| {
            let cfg = GatewayConfig {
                id: id("gw-2"),
                eukey: EuKey::random(rng.get()),
                ..gw_cfg.clone()
            };
            store.entities.insert(
                cfg.id.clone(),
                KnownEntity {
                    id: cfg.id.clone(),
                    role: EntityRole::Gateway,
                    owner: far_owner.clone(),
                    eukey: cfg.eukey.clone(),
                },
            );
            let mut g = Gateway::new(cfg.clone(), rng.fork());
            g.set_wall_clock(base, WALL_AT_BASE);
            g
        });
        let far_from = far.as_ref().map(|(f, _)| *f);
        let mut pne_cfgs = Vec::new();
        let ca = certification_key();
        for (i, spec) in specs.iter().enumerate() {
            let behind_far = far_from.is_some_and(|f| i >= f);
            let owner = match &far {
                Some((_, far_owner)) if behind_far => far_owner.clone(),
                _ => owner.clone(),
            };
            let id = pne_id(spec.impersonates.unwrap_or(i));
            let eukey = EuKey::random(rng.get());
            // Every PNE is certified by the server, as `cpns enroll` does (security.md §4.11).
            let member = cpns_crypto::MemberSigningKey::derive(&eukey, id.as_str());
            let cert = ca.certify(id.as_str(), owner.as_str(), &member.public());
            let signing = crate::pne::Signing::new(
                id.clone(),
                owner.clone(),
                &eukey,
                cert.signature,
                ca.public(),
            );
            let cfg = PneConfig {
                capabilities: caps("phone", spec.has_ui),
                security: spec.security,
                invitations: spec.invitations,
                deliveries: spec.deliveries,
                timeouts,
                heartbeat: None,
                signing: Some(signing),
                ..PneConfig::new(id, eukey)
            };
            let server_copy = if spec.wrong_key {
                EuKey::random(rng.get())
            } else {
                cfg.eukey.clone()
            };
            if spec.impersonates.is_none() {
                store.entities.insert(
                    cfg.id.clone(),
                    KnownEntity {
                        id: cfg.id.clone(),
                        role: EntityRole::Pne,
                        owner: owner.clone(),
                        eukey: server_copy,
                    },
                );
            }
            store.pne_local.push(BTreeMap::new());
            match (&mut far_gw, behind_far) {
                (Some(g), true) => g.link_opened(LinkId(i as u64), spec.security),
                _ => gw.link_opened(LinkId(i as u64), spec.security),
            }
            pne_cfgs.push(cfg);
        }
        let mut server = ServerSession::new(server_cfg.clone(), EXPORTER, base, rng.fork());
        server.set_wall_clock(base, WALL_AT_BASE);
        let far = far_gw.zip(far_from).map(|(gw, from)| {
            let mut server = ServerSession::new(server_cfg.clone(), EXPORTER, base, rng.fork());
            server.set_wall_clock(base, WALL_AT_BASE);
            Box::new(Far { server, gw, from })
        });
        let pnes = pne_cfgs
            .iter()
            .map(|c| PneSession::new(c.clone(), rng.fork()))
            .collect();
        Self {
            base,
            offset: Duration::ZERO,
            server,
            gw,
            far,
            pnes,
            gw_cfg,
            pne_cfgs,
            store,
            queue: VecDeque::new(),
            log: Vec::new(),
            dropped: Vec::new(),
            traces: Vec::new(),
            events: Vec::new(),
            restarted_at: 0,
            owner_invites: Vec::new(),
            published: Vec::new(),
            errors: Vec::new(),
            closes: Vec::new(),
            closed_at: BTreeMap::new(),
            parked: Vec::new(),
            seq: 0,
            hook: None,
            home: no_home_gateway(),
            asked: Vec::new(),
            gateway_answers: Vec::new(),
            capabilities_answers: Vec::new(),
            deliveries_started: Vec::new(),
            server_reads: 0,
            notices: Vec::new(),
            rng,
            server_cfg,
        }
    }

    /// Parties set up, PN GW connected to the server, every PNE has discovered the PN GW.
    pub fn ready(specs: &[PneSpec]) -> Self {
        let mut h = Self::new(specs);
        h.connect_gw();
        h.discover_all();
        h
    }

    pub fn now(&self) -> Instant {
        self.base + self.offset
    }

    /// Advances the fake clock, lets every machine see its timeouts, and pumps.
    pub fn advance(&mut self, d: Duration) {
        self.offset += d;
        let now = self.now();
        self.server.handle_timeout(now);
        self.gw.handle_timeout(now);
        if let Some(f) = &mut self.far {
            f.server.handle_timeout(now);
            f.gw.handle_timeout(now);
        }
        for p in &mut self.pnes {
            p.handle_timeout(now);
        }
        self.pump();
    }

    pub fn set_hook(&mut self, hook: impl FnMut(&Flight) -> Action + 'static) {
        self.hook = Some(Box::new(hook));
    }

    /// Drops every frame carrying `message`, wherever it goes (a peer that never answers).
    pub fn drop_message(&mut self, message: &'static str) {
        self.set_hook(move |f| {
            if f.message == message {
                Action::Drop
            } else {
                Action::Deliver
            }
        });
    }

    pub fn clear_hook(&mut self) {
        self.hook = None;
    }

    /// 002 §B.1.1.2 step 8 with the shared exporter; pumps and checks the PN GW is ready.
    pub fn connect_gw(&mut self) {
        let now = self.now();
        self.gw.wan_connected(now, EXPORTER).unwrap();
        self.pump();
        assert!(
            self.gw.wan_ready(),
            "connection set-up failed: {:?}",
            self.events
        );
        if let Some(f) = &mut self.far {
            f.gw.wan_connected(now, EXPORTER).unwrap();
            self.pump();
            let ready = self.far.as_ref().is_some_and(|f| f.gw.wan_ready());
            assert!(ready, "connection set-up failed: {:?}", self.events);
        }
    }

    /// The PN GW PNE `i` is linked to.
    pub fn gw_of(&self, i: usize) -> Party {
        match &self.far {
            Some(f) if i >= f.from => Party::FarGw,
            _ => Party::Gw,
        }
    }

    fn gw_mut(&mut self, which: Party) -> &mut Gateway {
        match (which, &mut self.far) {
            (Party::FarGw, Some(f)) => &mut f.gw,
            _ => &mut self.gw,
        }
    }

    fn server_mut(&mut self, which: Party) -> &mut ServerSession {
        match (which, &mut self.far) {
            (Party::FarServer, Some(f)) => &mut f.server,
            _ => &mut self.server,
        }
    }

    /// The server session of PN GW `gateway`, if it has one here.
    fn session_of(&self, gateway: &EntityId) -> Option<Party> {
        if self.server.gateway() == Some(gateway) {
            return Some(Party::Server);
        }
        match &self.far {
            Some(f) if f.server.gateway() == Some(gateway) => Some(Party::FarServer),
            _ => None,
        }
    }

    /// After the PN GW's WAN session closed: a new server session, and connection set-up again.
    pub fn reopen_wan(&mut self) {
        let now = self.now();
        self.server = ServerSession::new(self.server_cfg.clone(), EXPORTER, now, self.rng.fork());
        self.server.set_wall_clock(self.base, WALL_AT_BASE);
        self.connect_gw();
    }

    /// The server side of PN GW `gw` (the PN GW's party).
    fn server_of(gw: Party) -> Party {
        if gw == Party::FarGw {
            Party::FarServer
        } else {
            Party::Server
        }
    }

    /// The WAN session of PN GW `gw` is lost: its server session hands over what it keeps,
    /// parked here as the node parks it (what the other side relays to it is held), a bare
    /// session stands in for the next, the PN GW is told, and frames on the hop are lost.
    pub fn lose_wan(&mut self, gw: Party) {
        let now = self.now();
        let srv = Self::server_of(gw);
        let kept = self.server_mut(srv).end_deliveries(now);
        let mut bare = ServerSession::new(self.server_cfg.clone(), EXPORTER, now, self.rng.fork());
        bare.set_wall_clock(self.base, WALL_AT_BASE);
        *self.server_mut(srv) = bare;
        if !kept.is_empty() {
            self.parked.push(kept);
        }
        self.gw_mut(gw).wan_closed(now);
        self.forget_in_flight(gw, srv);
        self.closed_at.insert((gw, srv), self.seq);
        self.pump();
    }

    /// PN GW `gw` sets up a WAN session again after [`Harness::lose_wan`], and the parties
    /// run: its new server session takes back what was parked for it once the PN GW is
    /// authenticated, as the node's does.
    pub fn regain_wan(&mut self, gw: Party) {
        let now = self.now();
        let srv = Self::server_of(gw);
        self.forget_in_flight(gw, srv);
        self.closed_at.remove(&(gw, srv));
        self.gw_mut(gw).wan_connected(now, EXPORTER).unwrap();
        self.pump();
    }

    /// Frames in flight between `a` and `b`, either way, are lost.
    fn forget_in_flight(&mut self, a: Party, b: Party) {
        self.queue
            .retain(|f| (f.from, f.to) != (a, b) && (f.from, f.to) != (b, a));
    }

    /// What was parked for the PN GW of server session `which`, taken back there once that
    /// PN GW is authenticated (the node does so at the session's first turn after it).
    fn claim_parked(&mut self, which: Party) {
        if self.parked.is_empty() {
            return;
        }
        let Some(gw) = self.server_mut(which).gateway().cloned() else {
            return;
        };
        let Some(i) = self.parked.iter().position(|k| k.gateway() == Some(&gw)) else {
            return;
        };
        let kept = self.parked.swap_remove(i);
        let now = self.now();
        if let Err(kept) = self.server_mut(which).restore_outbound(now, kept) {
            self.parked.push(kept);
        }
    }

    /// What was parked for PN GW `gw` passes its grace: every forward kept ends at its other
    /// side, as the node hands those ends over; the sessions kept, or none.
    pub fn expire_parked(&mut self, gw: Party) -> Vec<cpns_wire::DeliveryId> {
        let id = match gw {
            Party::FarGw => self.far.as_ref().map(|f| f.gw.id().clone()),
            _ => Some(self.gw_cfg.id.clone()),
        };
        let Some(i) = self.parked.iter().position(|k| k.gateway() == id.as_ref()) else {
            return Vec::new();
        };
        let mut kept = self.parked.swap_remove(i);
        let sessions = kept.sessions();
        for (peer, session, msg) in kept.expire("its PN GW did not come back") {
            self.hand_over(&peer, session, msg);
        }
        self.pump();
        sessions
    }

    /// PNE `i` back on a new link (the old one closed): a new machine restored from its store,
    /// set up by `prepare` before it runs, and frames flow on the hop again.
    pub fn relink(&mut self, i: usize, seed: u64, prepare: impl FnOnce(&mut PneSession)) {
        let now = self.now();
        let (gw, security) = (self.gw_of(i), self.pne_cfgs[i].security);
        self.gw_mut(gw).link_closed(now, LinkId(i as u64));
        self.gw_mut(gw).link_opened(LinkId(i as u64), security);
        let mut back = PneSession::new(self.pne_cfgs[i].clone(), MachineRng::from_seed_u64(seed));
        back.restore(self.store.pne_local[i].values().cloned().collect())
            .unwrap();
        prepare(&mut back);
        self.pnes[i] = back;
        self.queue
            .retain(|f| f.from != Party::Pne(i) && f.to != Party::Pne(i));
        self.closed_at.remove(&(gw, Party::Pne(i)));
    }

    pub fn discover_all(&mut self) {
        let now = self.now();
        for p in &mut self.pnes {
            p.start_discovery(now).unwrap();
        }
        self.pump();
    }

    /// PNE `i` starts a PN of type `setup`; pumps.
    pub fn setup(&mut self, i: usize, setup: SetupType) {
        let now = self.now();
        self.pnes[i].start_setup(now, setup).unwrap();
        self.pump();
    }

    /// PNE `i` asks to be registered (003 §1.4.1 step 1), in `pn` if given.
    pub fn register(&mut self, i: usize, pn: Option<cpns_wire::PnId>) {
        let now = self.now();
        self.pnes[i].start_registration(now, pn).unwrap();
        self.pump();
    }

    /// Answers the server's held load `i` (of [`Store::held`]) with `answer`, or from the
    /// store if `None`; pumps.
    pub fn answer_held(
        &mut self,
        i: usize,
        answer: Option<Result<crate::server::Loaded, crate::StoreFailure>>,
    ) {
        let (token, load) = self.store.held.remove(i);
        let loaded = answer.unwrap_or_else(|| self.store.load(&load));
        let now = self.now();
        if let Err(e) = self.server.handle_loaded(now, token, loaded) {
            self.errors.push((Party::Server, e));
        }
        self.pump();
    }

    /// Queues a frame body as if `from` had sent it to `to`.
    pub fn inject(&mut self, from: Party, to: Party, body: Vec<u8>) {
        self.seq += 1;
        self.queue.push_back(Flight {
            from,
            to,
            body,
            message: "injected",
            sealed: false,
            seq: self.seq,
        });
    }

    /// Hands a frame body straight to `to`'s machine and returns its verdict (no hook).
    pub fn deliver_direct(
        &mut self,
        from: Party,
        to: Party,
        body: &[u8],
    ) -> Result<(), ProtoError> {
        let now = self.now();
        // The machines open a sealed frame where it lies.
        let mut body = body.to_vec();
        let body = &mut body[..];
        let res = match (from, to) {
            (_, Party::Server) => self.server.handle_frame(now, body),
            (_, Party::FarServer) => self.server_mut(Party::FarServer).handle_frame(now, body),
            (Party::Server, Party::Gw) => self.gw.handle_wan_frame(now, body),
            (Party::FarServer, Party::FarGw) => {
                self.gw_mut(Party::FarGw).handle_wan_frame(now, body)
            }
            (Party::Pne(i), Party::Gw) => self.gw.handle_pan_frame(now, LinkId(i as u64), body),
            (Party::Pne(i), Party::FarGw) => {
                self.gw_mut(Party::FarGw)
                    .handle_pan_frame(now, LinkId(i as u64), body)
            }
            (_, Party::Pne(i)) => self.pnes[i].handle_frame(now, body),
            _ => Err(ProtoError::WrongState("no such hop")),
        };
        self.drain();
        res
    }

    /// Moves frames until every machine is quiet.
    pub fn pump(&mut self) {
        for _ in 0..20_000 {
            self.drain();
            let Some(mut f) = self.queue.pop_front() else {
                return;
            };
            let action = match self.hook.as_mut() {
                Some(h) => h(&f),
                None => Action::Deliver,
            };
            match action {
                Action::Deliver => {}
                Action::Drop => {
                    self.dropped.push(f);
                    continue;
                }
                Action::Replace(body) => f.body = body,
            }
            let cut = [(f.from, f.to), (f.to, f.from)]
                .iter()
                .any(|k| self.closed_at.get(k).is_some_and(|&at| f.seq > at));
            if cut {
                self.dropped.push(f);
                continue;
            }
            if let Err(e) = self.deliver_direct(f.from, f.to, &f.body.clone()) {
                self.errors.push((f.to, e));
            }
            self.log.push(f);
        }
        panic!("the parties did not quiesce");
    }

    fn send(&mut self, from: Party, to: Party, frame: &[u8], trace: TraceRecord) {
        self.seq += 1;
        let body = frame_body(frame).expect("machines emit well-formed frames");
        self.queue.push_back(Flight {
            from,
            to,
            body: body.to_vec(),
            message: trace.message,
            sealed: trace.sealed,
            seq: self.seq,
        });
        self.traces.push((from, to, trace));
    }

    fn close(&mut self, by: Party, link: Option<usize>, reason: String) {
        let hop = match (by, link) {
            (Party::Server, _) | (Party::Gw, None) => (Party::Gw, Party::Server),
            (Party::FarServer, _) | (Party::FarGw, None) => (Party::FarGw, Party::FarServer),
            (_, Some(i)) | (Party::Pne(i), None) => (self.gw_of(i), Party::Pne(i)),
        };
        self.closed_at.entry(hop).or_insert(self.seq);
        self.closes.push((by, link, reason));
    }

    /// Carries out every output of every machine, answering store work at once.
    fn drain(&mut self) {
        // A machine that never stops asking (a read that asks for the next read, forever) is
        // a failure, not a hang.
        let mut outputs = 0u64;
        let mut count = || {
            outputs += 1;
            assert!(outputs < 1_000_000, "the machines did not stop asking");
        };
        loop {
            let mut busy = false;
            for which in [Party::Server, Party::FarServer] {
                if which == Party::FarServer && self.far.is_none() {
                    continue;
                }
                self.claim_parked(which);
                while let Some(o) = self.server_mut(which).poll_output() {
                    busy = true;
                    count();
                    self.on_server(which, o);
                }
            }
            for which in [Party::Gw, Party::FarGw] {
                if which == Party::FarGw && self.far.is_none() {
                    continue;
                }
                while let Some(o) = self.gw_mut(which).poll_output() {
                    busy = true;
                    count();
                    self.on_gw(which, o);
                }
            }
            for i in 0..self.pnes.len() {
                while let Some(o) = self.pnes[i].poll_output() {
                    busy = true;
                    count();
                    self.on_pne(i, o);
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn on_server(&mut self, which: Party, o: ServerOutput) {
        let its_gw = if which == Party::FarServer {
            Party::FarGw
        } else {
            Party::Gw
        };
        let now = self.now();
        match o {
            ServerOutput::Transmit { frame, trace } => self.send(which, its_gw, &frame, trace),
            ServerOutput::Load { token, load } if self.store.hold_loads => {
                self.store.held.push((token, load));
            }
            ServerOutput::Load { token, load } => {
                let loaded = self.store.load(&load);
                if let Err(e) = self.server_mut(which).handle_loaded(now, token, loaded) {
                    self.errors.push((which, e));
                }
            }
            ServerOutput::Persist { token, effect } => {
                let result = self.store.apply(effect);
                if let Err(e) = self.server_mut(which).handle_persisted(now, token, result) {
                    self.errors.push((which, e));
                }
            }
            ServerOutput::Event(e) => self.events.push(Ev::Server(e)),
            ServerOutput::Publish(p) => self.published.push(p),
            ServerOutput::Close { reason } => self.close(which, None, reason),
            ServerOutput::AskGateway {
                gateway,
                ask,
                request,
            } => {
                let answer = (self.home)(&gateway, &request);
                self.asked.push((gateway, request));
                if let Some(answer) = answer {
                    self.server_mut(which).handle_gateway_answer(ask, answer);
                }
            }
            ServerOutput::GatewayAnswer { ask, answer } => self.gateway_answers.push((ask, answer)),
            ServerOutput::CapabilitiesAnswered { ask, result } => {
                self.capabilities_answers.push((ask, result))
            }
            ServerOutput::DeliveryStarted { ask, result } => {
                self.deliveries_started.push((ask, result))
            }
            ServerOutput::ReadContent {
                session,
                offset,
                len,
            } => {
                let content = &self.store.server_outbox;
                let read = usize::try_from(offset)
                    .ok()
                    .and_then(|o| content.get(o..o + len as usize))
                    .map(cpns_crypto::ChunkPlain::copy_of)
                    .ok_or_else(|| "read past the end".to_string());
                self.server_reads += 1;
                self.server_mut(which)
                    .handle_content_read(session, offset, read);
            }
            ServerOutput::Notice {
                gateway,
                to,
                notice,
            } => {
                // A notice for a PNE of a PN GW with no session here has none to go to.
                self.notices.push((gateway.clone(), to.clone()));
                if let Some(at) = self.session_of(&gateway) {
                    self.server_mut(at).send_notice(to, notice);
                }
            }
            ServerOutput::Forward { gateway, route } => match self.session_of(&gateway) {
                Some(at) => {
                    let from = self.server_mut(which).gateway().cloned().unwrap();
                    self.server_mut(at).forward_in(from, route)
                }
                None => self
                    .server_mut(which)
                    .forward_ended(route.session, format!("{gateway} has no session")),
            },
            ServerOutput::Relay {
                gateway,
                session,
                msg,
            } => {
                if !self.hand_over(&gateway, session, msg) {
                    self.server_mut(which)
                        .forward_ended(session, format!("{gateway} has no session"));
                }
            }
        }
    }

    /// Hands what one server session relays of a forward to the session of PN GW `gateway`,
    /// or, with that PN GW away, to what is parked for it, as the node does; whether either
    /// took it.
    fn hand_over(
        &mut self,
        gateway: &EntityId,
        session: cpns_wire::DeliveryId,
        msg: crate::server::Relayed,
    ) -> bool {
        if let Some(at) = self.session_of(gateway) {
            self.server_mut(at).relayed(session, msg);
            return true;
        }
        self.parked
            .iter_mut()
            .find(|k| k.gateway() == Some(gateway))
            .is_some_and(|k| k.hold(session, msg).is_ok())
    }

    fn on_gw(&mut self, which: Party, o: GatewayOutput) {
        let its_server = if which == Party::FarGw {
            Party::FarServer
        } else {
            Party::Server
        };
        let now = self.now();
        match o {
            GatewayOutput::TransmitWan { frame, trace } => {
                self.send(which, its_server, &frame, trace)
            }
            GatewayOutput::TransmitPan { link, frame, trace } => {
                self.send(which, Party::Pne(link.0 as usize), &frame, trace)
            }
            GatewayOutput::CloseLink { link, reason } => {
                self.close(which, Some(link.0 as usize), reason)
            }
            GatewayOutput::CloseWan { reason } => self.close(which, None, reason),
            GatewayOutput::Persist { token, pn } => {
                self.store.gw_writes.push("save");
                let result = if self.store.fail_gw {
                    Err(crate::StoreFailure::Failed("disk full".into()))
                } else {
                    self.store.gw_local.insert(pn.inventory.pn_id, pn);
                    Ok(())
                };
                if let Err(e) = self.gw_mut(which).handle_persisted(now, token, result) {
                    self.errors.push((which, e));
                }
            }
            GatewayOutput::Forget { token, pn_id } => {
                self.store.gw_writes.push("forget");
                let result = if self.store.fail_gw {
                    Err(crate::StoreFailure::Failed("disk full".into()))
                } else {
                    self.store.gw_local.remove(&pn_id);
                    Ok(())
                };
                if let Err(e) = self.gw_mut(which).handle_persisted(now, token, result) {
                    self.errors.push((which, e));
                }
            }
            GatewayOutput::KeepDeparted {
                token,
                pn_id,
                pne,
                stored,
            } => {
                self.store.gw_writes.push("keep_departed");
                let result = if self.store.fail_gw {
                    Err(crate::StoreFailure::Failed("disk full".into()))
                } else {
                    let kept = &mut self.store.gw_departed;
                    kept.retain(|(p, e, _)| (*p, e) != (pn_id, &pne));
                    kept.push((pn_id, pne, stored));
                    Ok(())
                };
                if let Err(e) = self.gw_mut(which).handle_persisted(now, token, result) {
                    self.errors.push((which, e));
                }
            }
            GatewayOutput::DropDeparted { token, pn_id, pne } => {
                self.store.gw_writes.push("drop_departed");
                self.store
                    .gw_departed
                    .retain(|(p, e, _)| (*p, e) != (pn_id, &pne));
                if let Err(e) = self.gw_mut(which).handle_persisted(now, token, Ok(())) {
                    self.errors.push((which, e));
                }
            }
            GatewayOutput::KeepRoute(r) => {
                self.store.gw_routes.insert(r.session, r);
            }
            GatewayOutput::ForgetRoute(s) => {
                self.store.gw_routes.remove(&s);
            }
            GatewayOutput::Event(e) => self.events.push(Ev::Gw(e)),
        }
    }

    /// PNE `i`'s HashContent, answered as a driver does: each item of what it sends hashed (one
    /// item, unless the test says how its content splits), or the fault the test set.
    pub fn hash_content(&mut self, i: usize, session: cpns_wire::DeliveryId) {
        let content = self.store.pne_outbox.get(&i).cloned().unwrap_or_default();
        let sizes = self
            .store
            .pne_outbox_items
            .get(&i)
            .cloned()
            .unwrap_or_else(|| vec![content.len() as u64]);
        let mut at = 0usize;
        let hashes = sizes
            .iter()
            .map(|&n| {
                let item = &content[at..at + n as usize];
                at += n as usize;
                <sha2::Sha256 as sha2::Digest>::digest(item).into()
            })
            .collect();
        let hashed = match self.store.hash_fault.take() {
            Some(why) => Err(why),
            None => Ok(hashes),
        };
        self.pnes[i].handle_content_hashed(session, hashed);
    }

    /// PNE `i`'s FinishReceive: the kept content is checked against `sha256` and handed on.
    pub fn finish_receive(
        &mut self,
        i: usize,
        session: cpns_wire::DeliveryId,
        sha256: &[[u8; 32]],
    ) {
        use sha2::Digest;
        let now = self.now();
        let kept = self
            .store
            .pne_inbox
            .remove(&(i, session))
            .unwrap_or_default();
        let sizes = self
            .store
            .pne_items
            .remove(&(i, session))
            .unwrap_or_else(|| vec![kept.len() as u64]);
        let (mut at, mut matched, mut received) = (0usize, Vec::new(), Vec::new());
        for (size, want) in sizes.iter().zip(sha256) {
            let end = (at + *size as usize).min(kept.len());
            let item = &kept[at..end];
            let ok = sha2::Sha256::digest(item).as_slice() == want.as_slice();
            if ok {
                received.extend_from_slice(item);
            }
            matched.push(ok);
            at = end;
        }
        if matched.iter().any(|m| *m) {
            self.store.pne_received.insert((i, session), received);
        }
        self.pnes[i].handle_receive_finished(now, session, Ok(matched));
    }

    fn on_pne(&mut self, i: usize, o: PneOutput) {
        match o {
            PneOutput::Transmit { frame, trace } => {
                self.send(Party::Pne(i), self.gw_of(i), &frame, trace)
            }
            PneOutput::Persist { token, pn } => {
                let result = if self.store.fail_pne {
                    Err(crate::StoreFailure::Failed("disk full".into()))
                } else {
                    self.store.pne_local[i].insert(pn.inventory.pn_id, pn);
                    Ok(())
                };
                if let Err(e) = self.pnes[i].handle_persisted(token, result) {
                    self.errors.push((Party::Pne(i), e));
                }
            }
            PneOutput::Forget { token, pn_id } => {
                let result = if self.store.fail_pne {
                    Err(crate::StoreFailure::Failed("disk full".into()))
                } else {
                    self.store.pne_local[i].remove(&pn_id);
                    Ok(())
                };
                if let Err(e) = self.pnes[i].handle_persisted(token, result) {
                    self.errors.push((Party::Pne(i), e));
                }
            }
            PneOutput::PersistSession { session } => {
                self.store.pne_sessions.insert(i, session);
            }
            PneOutput::LoadUsage { token } => {
                *self.store.usage_loads.entry(i).or_default() += 1;
                let loaded = if self.store.fail_pne {
                    Err(crate::StoreFailure::Failed("disk full".into()))
                } else {
                    Ok(self.store.pne_usage.get(&i).cloned().unwrap_or_default())
                };
                let now = self.now();
                if let Err(e) = self.pnes[i].handle_usage_loaded(now, token, loaded) {
                    self.errors.push((Party::Pne(i), e));
                }
            }
            PneOutput::MarkUsage { ids } => {
                if let Some((records, _)) = self.store.pne_usage.get_mut(&i) {
                    records.retain(|r| !ids.contains(&r.id));
                }
            }
            PneOutput::KeepDelivery(kept) => {
                self.store.pne_kept_log.push((i, kept.clone()));
                self.store.pne_deliveries.insert((i, kept.session), kept);
            }
            PneOutput::ForgetDelivery { session } => {
                self.store.pne_deliveries.remove(&(i, session));
            }
            PneOutput::HashContent { session } => match &mut self.store.held_hashes {
                Some(held) => held.push((i, session)),
                None => self.hash_content(i, session),
            },
            PneOutput::ReadChunk {
                session,
                offset,
                len,
            } => {
                // As a driver reads, exactly: what is short of `len` is an error.
                let content = self.store.pne_outbox.get(&i).cloned().unwrap_or_default();
                let read = usize::try_from(offset)
                    .ok()
                    .and_then(|o| content.get(o..o + len as usize))
                    .map(<[u8]>::to_vec)
                    .map(|mut b| {
                        if let Some(n) = self.store.read_fault {
                            b.resize(n, 0);
                        }
                        cpns_crypto::ChunkPlain::copy_of(&b)
                    })
                    .ok_or_else(|| "read past the end".to_string());
                self.pnes[i].handle_chunk_read(session, offset, read);
            }
            PneOutput::OpenReceive { session, items, .. } => {
                let now = self.now();
                let sizes = items.iter().map(|i| i.size).collect();
                self.store.pne_items.insert((i, session), sizes);
                let kept = self.store.pne_inbox.entry((i, session)).or_default();
                let have = kept.len() as u64;
                self.pnes[i].handle_receive_opened(now, session, Ok(have));
            }
            PneOutput::WriteChunk {
                session,
                offset,
                bytes,
            } => {
                let now = self.now();
                let kept = self.store.pne_inbox.entry((i, session)).or_default();
                // As a file is written where asked: what it held from there is written over.
                let written = if kept.len() as u64 >= offset {
                    kept.truncate(offset as usize);
                    kept.extend_from_slice(bytes.content());
                    Ok(())
                } else {
                    Err(format!(
                        "a write at {offset}, the file holding {}",
                        kept.len()
                    ))
                };
                self.pnes[i].handle_chunk_written(now, session, written);
            }
            PneOutput::FinishReceive {
                session,
                sha256,
                specific,
            } => {
                if !specific.is_empty() {
                    self.store.pne_specific.insert((i, session), specific);
                }
                match &mut self.store.held_finishes {
                    Some(held) => held.push((i, session, sha256)),
                    None => self.finish_receive(i, session, &sha256),
                }
            }
            PneOutput::DiscardReceive { session } => {
                self.store.pne_inbox.remove(&(i, session));
            }
            PneOutput::KeepGroup { group_id, group } => {
                self.store
                    .pne_groups
                    .entry(i)
                    .or_default()
                    .insert(group_id, group);
            }
            PneOutput::ForgetGroup { group_id } => {
                if let Some(kept) = self.store.pne_groups.get_mut(&i) {
                    kept.remove(&group_id);
                }
            }
            PneOutput::Event(e) => self.events.push(Ev::Pne(i, e)),
            PneOutput::Close { reason } => self.close(Party::Pne(i), None, reason),
        }
    }

    /// Restarts the PN GW and every PNE from their stores, on a new TLS session and new PAN
    /// links (same security as before), and connects the PN GW again.
    pub fn restart_from_stores(&mut self, specs: &[PneSpec]) {
        let now = self.now();
        // The new machines count their commands from 1 again.
        self.restarted_at = self.events.len();
        self.queue.clear();
        self.closed_at.clear();
        self.server = ServerSession::new(self.server_cfg.clone(), EXPORTER, now, self.rng.fork());
        self.server.set_wall_clock(self.base, WALL_AT_BASE);
        self.gw = Gateway::new(self.gw_cfg.clone(), self.rng.fork());
        self.gw.set_wall_clock(self.base, WALL_AT_BASE);
        self.gw
            .restore(self.store.gw_local.values().cloned().collect())
            .unwrap();
        self.gw
            .restore_departed(self.store.gw_departed.clone())
            .unwrap();
        self.gw
            .restore_routes(self.store.gw_routes.values().cloned().collect());
        for (i, spec) in specs.iter().enumerate() {
            self.gw.link_opened(LinkId(i as u64), spec.security);
            let mut p = PneSession::new(self.pne_cfgs[i].clone(), self.rng.fork());
            p.restore(self.store.pne_local[i].values().cloned().collect())
                .unwrap();
            p.restore_groups(self.store.pne_groups.get(&i).cloned().unwrap_or_default());
            self.pnes[i] = p;
        }
        self.connect_gw();
    }
}
