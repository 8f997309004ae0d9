//! The CPNS Server runtime: a TLS 1.3 listener for PN GW sessions (CPNS-2/7), one task per
//! session driving a [`ServerSession`](cpns_proto::server::ServerSession), the state of record
//! in a [`ServerStore`].
//!
//! - [`listener`](self::listener): the accept loop, shaped after mini-redis: it takes a slot
//!   before accepting, so at most `max_sessions` sessions run; a watch channel tells every
//!   session to stop; [`ServerNode::run`] returns once every session has ended.
//! - [`session`](self::session): one PN GW session, the machine's loop over its connection,
//!   the store and the status hub.
//! - [`mailroom`](self::mailroom): questions and answers between sessions (001 §5.2.1.1 step 8,
//!   PNE Confirm to the home PN GW; 004 §5.5.1, a capabilities query by id).
//! - [`handle`](self::handle): [`ServerHandle`], how the server's control socket asks the
//!   running sessions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpns_crypto::MasterKey;
use cpns_proto::server::{ServerConfig, ServerEvent};
use cpns_store::ServerStore;
use cpns_wire::EntityId;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use crate::error::NodeError;
use crate::frames::DEFAULT_MAX_QUEUED;
use crate::status_hub::{Mailbox, StatusHub, Subscriber};
use crate::trace::TraceSink;
use crate::{pki, server_store};

mod handle;
mod listener;
mod mailroom;
mod outbound;
mod relay;
mod session;

pub use handle::{DeliverFromOutside, DeliveryStarted, ServerHandle};
pub use mailroom::InventoryNote;
pub(crate) use mailroom::Signal;
use mailroom::{Mailroom, Office};

/// Most entities whose opened EUKey the server keeps in memory (~100 bytes each).
const KEY_CACHE_ENTRIES: usize = 100_000;

/// Settings of the server runtime.
#[derive(Clone, Debug)]
pub struct ServerNodeConfig {
    /// Protocol settings.
    pub proto: ServerConfig,
    /// Most concurrent authenticated PN GW sessions; a PN GW beyond them is refused.
    pub max_sessions: usize,
    /// Most connections still in the TLS handshake or the PN GW's authentication; a newcomer
    /// beyond them evicts the oldest.
    pub max_unauthenticated: usize,
    /// Most bytes queued for a PN GW that does not read them before its session is cut off.
    pub max_queued: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a delivery record may stay open (its target never ended it: gone for good)
    /// before the server ends it `failed` (docs/services.md, "A target gone for good").
    pub open_delivery_max: Duration,
}

impl Default for ServerNodeConfig {
    fn default() -> Self {
        Self {
            proto: ServerConfig::default(),
            max_sessions: 10_000,
            max_unauthenticated: 256,
            max_queued: DEFAULT_MAX_QUEUED,
            handshake_timeout: Duration::from_secs(10),
            open_delivery_max: OPEN_DELIVERY_MAX,
        }
    }
}

/// How long a delivery record may stay open by default: a week, well past any session's life
/// (a paused or held one gives its place up within minutes; 64 GiB moves in hours).
pub const OPEN_DELIVERY_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a server session reports to whoever runs the server (the demo, tests). Bounded: events
/// a slow consumer cannot take are dropped, never queued without end.
pub type ServerEvents = Option<mpsc::Sender<ServerEvent>>;

/// The CPNS Server runtime.
pub struct ServerNode<S> {
    cfg: ServerNodeConfig,
    store: S,
    master: Arc<MasterKey>,
    tls: TlsAcceptor,
    trace: TraceSink,
    events: ServerEvents,
    keys: server_store::KeyCache,
    office: Arc<Office>,
    hub: Arc<StatusHub>,
    /// The sessions' settings, shared by all.
    proto: Arc<ServerConfig>,
}

/// What a session leaves behind when it ends: its PN GW, and who it delivered
/// notifications for, so the PN GW and what it reported turn offline and the hub stops
/// delivering to a mailbox nobody reads.
#[derive(Default)]
struct SessionEnd {
    gateway: Option<EntityId>,
    mailbox: Option<Arc<Mailbox>>,
    attached: std::collections::BTreeSet<EntityId>,
    /// Deliveries from outside a PN this session sends.
    outbound: outbound::Outbound,
    /// Where other sessions hand this one what they relay of forwarded deliveries; made when
    /// first needed.
    relay: Option<Box<relay::RelayInbox>>,
}

impl<S> core::fmt::Debug for ServerNode<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerNode")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl<S: ServerStore + Clone> ServerNode<S> {
    /// A server with its store, master key and TLS certificate (PEM).
    pub fn new(
        cfg: ServerNodeConfig,
        store: S,
        master: MasterKey,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, pki::PkiError> {
        let tls = TlsAcceptor::from(pki::server_config(cert_pem, key_pem)?);
        let proto = Arc::new(cfg.proto.clone());
        Ok(Self {
            cfg,
            store,
            master: Arc::new(master),
            tls,
            trace: None,
            events: None,
            keys: server_store::KeyCache::new(KEY_CACHE_ENTRIES),
            office: Arc::new(Office {
                signal: watch::Sender::new(Signal::default()),
                mailroom: Mutex::new(Mailroom::default()),
                inventory: tokio::sync::broadcast::channel(mailroom::INVENTORY_FEED).0,
                relays: Mutex::default(),
                parked: Mutex::default(),
            }),
            hub: StatusHub::new(),
            proto,
        })
    }

    /// The status hub: every subscription and who gets its notifications (the server's
    /// control socket subscribes external applications here).
    pub fn hub(&self) -> Arc<StatusHub> {
        Arc::clone(&self.hub)
    }

    /// A handle that asks the running server's sessions (the server's control socket).
    pub fn handle(&self) -> ServerHandle<S> {
        ServerHandle {
            office: Arc::clone(&self.office),
            hub: Arc::clone(&self.hub),
            store: self.store.clone(),
            wait: self.cfg.proto.timeouts.flow,
        }
    }

    /// Loads every status record and subscription into the hub, so subscriptions kept
    /// before a restart notify again and policies start from the state of record.
    async fn load_hub(&self) -> Result<(), NodeError> {
        let now = Instant::now();
        for sub in self.store.subscriptions().await? {
            // A policy this version cannot check (a newer one's) is left out, not fatal.
            let Ok(policy) = cpns_proto::status::Policy::check(&sub.policy) else {
                warn!(
                    subscription = sub.id,
                    "a kept subscription has a policy this version does not know"
                );
                continue;
            };
            let watched = server_store::watched_of(sub.entities, sub.owner);
            let states = server_store::watched_states(&self.store, &watched).await?;
            self.hub.subscribe(
                now,
                cpns_proto::status::Subscription {
                    id: sub.id,
                    subscriber: Subscriber::Entity(sub.subscriber),
                    watched,
                    policy,
                },
                states,
            );
        }
        Ok(())
    }

    /// Reports every message sent to `sink`.
    pub fn with_trace(mut self, sink: TraceSink) -> Self {
        self.trace = sink;
        self
    }

    /// Reports session events to `events`.
    pub fn with_events(mut self, events: ServerEvents) -> Self {
        self.events = events;
        self
    }
}
