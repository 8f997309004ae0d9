//! The PN GW runtime: a TLS session to the CPNS Server (CPNS-7), a PAN listener for PNEs
//! (CPNS-1), and one event loop that owns the [`Gateway`] machine.
//!
//! Everything is bounded (issue 6, "Bounded resources"): the loop's inbox, each link's
//! command channel and output buffer, the store queue, the event channel. The loop never waits
//! on a socket or the store: PAN links are tasks of their own ([`crate::pan_link`]), the WAN
//! session is read in place in the loop's `select!`, and local store writes run in a worker
//! beside it that reports back as an input. When the WAN session drops, the PN GW keeps its PAN
//! links and local inventory and reconnects with backoff and jitter; the connection set-up
//! reports its PN list again, which reconciles the server's inventory (002 §B.1.1.2 step 17).
//! The local PN inventory is reloaded from the store at start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cpns_proto::gateway::{
    EstablishTargets, Establishing, Gateway, GatewayConfig, GatewayEvent, GatewayOutput, LinkId,
    Outcome,
};
use cpns_proto::{CommandId, LocalPnState, PanSecurity, ProtoError, StoreFailure, Token};
use cpns_store::{DepartedKey, DeviceStore, LocalMember, LocalPn};
use cpns_wire::{EntityId, ErrorBody, ErrorCode, PnId, PnInventory};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admission::Admission;
use crate::backoff::Backoff;
use crate::clock::{sleep_until, unix_millis};
use crate::error::{NodeError, store_failure};
use crate::frames::{DEFAULT_MAX_QUEUED, FrameError, FramedConn, PAN_MAX_QUEUED, Traffic};
use crate::pan_link::{LinkCmd, LinkEvent, LinkLimits};
use crate::trace::{TraceSink, report};
use crate::{DeviceCredential, pki};

/// Settings of the PN GW runtime.
#[derive(Clone, Debug)]
pub struct GatewayNodeConfig {
    /// Protocol settings (id, EUKey, capabilities...).
    pub proto: GatewayConfig,
    /// The CA certificate (PEM) that signs the server's certificate.
    pub ca_cert_pem: String,
    /// The server's address.
    pub server_addr: String,
    /// The name in the server's certificate.
    pub server_name: String,
    /// The security of the PAN links.
    pub pan_security: PanSecurity,
    /// Most concurrent PAN links whose PNE is proven.
    pub max_links: usize,
    /// Most concurrent PAN links still proving their PNE; a newcomer beyond them evicts the
    /// oldest.
    pub max_unproven_links: usize,
    /// How long a PAN link may stay unproven (long enough for a first PN establishment).
    pub unproven_lifetime: Duration,
    /// Most bytes queued for a peer that does not read them before it is cut off: the server,
    /// and a PAN link before its PNE is proven.
    pub max_queued: usize,
    /// The same for a PAN link whose PNE is proven: room for a delivery's window of chunks.
    pub pan_max_queued: usize,
    /// Delay before the first reconnection attempt to the server (doubling, with jitter).
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
}

impl GatewayNodeConfig {
    /// Settings for a PN GW with this credential, talking to `server_addr`.
    pub fn new(cred: &DeviceCredential, proto: GatewayConfig, server_addr: String) -> Self {
        Self {
            proto,
            ca_cert_pem: cred.ca_cert_pem.clone(),
            server_addr,
            server_name: "localhost".into(),
            pan_security: PanSecurity::Cpns,
            max_links: 1024,
            max_unproven_links: 64,
            unproven_lifetime: Duration::from_secs(60),
            max_queued: DEFAULT_MAX_QUEUED,
            pan_max_queued: PAN_MAX_QUEUED,
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// Capacity of the event loop's inbox (commands, store results, WAN connections).
const INBOX: usize = 256;
/// Capacity of the channel from the PAN link tasks to the loop.
const LINK_INBOX: usize = 1024;
/// Capacity of the store worker's queue: beyond it a write fails at once as overloaded.
const STORE_QUEUE: usize = 1024;
/// A good capacity for the event channels the runtimes are given: events a slow consumer cannot
/// take are dropped (and logged at debug), never queued without end.
pub const EVENT_CAPACITY: usize = 1024;
/// Time allowed to connect and set up TLS to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

enum Input {
    WanUp(Box<TlsStream<TcpStream>>, [u8; 32]),
    WanDown(String),
    Persisted(Token, Result<(), StoreFailure>),
    /// An establishment: the command and PN at once to the first, the completion to the
    /// second (a dropped receiver: nobody waits).
    Establish(
        EstablishTargets,
        oneshot::Sender<Result<Establishing, ErrorBody>>,
        Reply,
    ),
    Inventory(oneshot::Sender<Vec<PnInventory>>),
    Confirmations(PnId, oneshot::Sender<Option<Confirmations>>),
    Capabilities(oneshot::Sender<cpns_wire::DeviceCapabilities>),
    /// A command of the machine; its completion goes to the reply.
    Command(Ask, Reply),
}

/// Where a command's outcome goes.
type Reply = oneshot::Sender<Result<Outcome, ErrorBody>>;

/// A command of the machine, as the [`GatewayHandle`] asks it.
#[derive(Debug)]
enum Ask {
    Release(PnId),
    Expel(PnId, EntityId),
    Invite(PnId, EntityId),
    SetCapabilities(Box<cpns_wire::DeviceCapabilities>),
    Group(GatewayGroupAsk),
}

/// A service group request of the PN GW's owner (004 §5.5.9), of the groups its user owns.
#[derive(Debug)]
pub enum GatewayGroupAsk {
    /// Make a group, named, open to the user's devices or not, owned by this PNE of the user.
    Create(String, bool, EntityId),
    /// Invite a PNE.
    Invite(cpns_wire::GroupId, EntityId),
    /// Expel a member.
    Expel(cpns_wire::GroupId, EntityId),
    /// Delete the group.
    Delete(cpns_wire::GroupId),
    /// The members.
    Members(cpns_wire::GroupId),
}

/// What [`GatewayHandle::release`] or [`GatewayHandle::expel`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The PN.
    pub pn_id: PnId,
    /// The members told (PN Release Notification, or PN Update Notification with the new
    /// epoch's key).
    pub notified: Vec<EntityId>,
    /// After an expulsion: the PN's new group key epoch.
    pub epoch: Option<u64>,
}

/// Who holds a PN's current group key, as its members confirmed (002 §B.1.1.3 step 25).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmations {
    /// The PN's current epoch, once this PN GW learned it.
    pub epoch: Option<u64>,
    /// The members that confirmed that epoch.
    pub confirmed: Vec<EntityId>,
}

/// Commands to a running PN GW.
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    tx: mpsc::Sender<Input>,
    id: EntityId,
    /// What its WAN sessions carried since it started.
    wan_traffic: Arc<Traffic>,
}

/// A PN GW-initiated establishment started ([`GatewayHandle::establish`]): its command and
/// PN at once, and its end by [`Establishment::completed`].
#[derive(Debug)]
pub struct Establishment {
    /// The command; its completion is also the PN GW's `GatewayEvent::Completed`.
    pub id: CommandId,
    /// The PN being established.
    pub pn_id: PnId,
    done: oneshot::Receiver<Result<Outcome, ErrorBody>>,
}

impl Establishment {
    /// Waits for the establishment to end: the PN as stored, or why it was not established.
    pub async fn completed(self) -> Result<PnInventory, NodeError> {
        match self.done.await.map_err(|_| NodeError::Stopped("PN GW"))? {
            Ok(Outcome::Established { inventory }) => Ok(inventory),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(NodeError::Rejected(e)),
        }
    }
}

impl core::fmt::Debug for Input {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Input::WanUp(..) => "WanUp",
            Input::WanDown(_) => "WanDown",
            Input::Persisted(..) => "Persisted",
            Input::Establish(..) => "Establish",
            Input::Inventory(_) => "Inventory",
            Input::Confirmations(..) => "Confirmations",
            Input::Capabilities(_) => "Capabilities",
            Input::Command(..) => "Command",
        })
    }
}

impl GatewayHandle {
    /// The PN GW's entity id.
    pub fn id(&self) -> &EntityId {
        &self.id
    }

    /// What its WAN sessions with the server carried since it started.
    pub fn wan_traffic(&self) -> &Traffic {
        &self.wan_traffic
    }

    /// 000 §6.6.1.2: starts a PN GW-initiated establishment: the command and the PN's id, at
    /// once; its end comes by [`Establishment::completed`] (and as the PN GW's
    /// [`GatewayEvent::Completed`] event).
    pub async fn establish(&self, targets: EstablishTargets) -> Result<Establishment, NodeError> {
        let (done_tx, done) = oneshot::channel();
        let started = self
            .ask(|tx| Input::Establish(targets, tx, done_tx))
            .await?
            .map_err(NodeError::Rejected)?;
        Ok(Establishment {
            id: started.id,
            pn_id: started.pn_id,
            done,
        })
    }

    /// 000 §6.6.5: releases one of the PN GW's PNs, on the server and locally, and tells its
    /// members. An `Err(NodeError::Rejected)` carries the reason the PN was kept.
    pub async fn release(&self, pn_id: PnId) -> Result<Released, NodeError> {
        match self.run(Ask::Release(pn_id)).await? {
            Outcome::Released { pn_id, notified } => Ok(Released {
                pn_id,
                notified,
                epoch: None,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// 000 §6.6.3.2: expels `pne` from one of the PN GW's PNs; the PN moves to its next group
    /// key epoch, handed to the remaining members. An `Err(NodeError::Rejected)` carries the
    /// reason the member was kept.
    pub async fn expel(&self, pn_id: PnId, pne: EntityId) -> Result<Released, NodeError> {
        match self.run(Ask::Expel(pn_id, pne)).await? {
            Outcome::Expelled {
                pn_id,
                epoch,
                notified,
                ..
            } => Ok(Released {
                pn_id,
                notified,
                epoch,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// 000 §6.6.2.1.1: invites `pne` into one of the PN GW's PNs; `Ok` once it accepted and
    /// joined (the server authenticated it and every member got the new epoch's key). An
    /// `Err(NodeError::Rejected)` says why it is not a member: declined, not connected, ...
    pub async fn invite(&self, pn_id: PnId, pne: EntityId) -> Result<Released, NodeError> {
        match self.run(Ask::Invite(pn_id, pne)).await? {
            Outcome::Invited {
                pn_id,
                joined: true,
                ..
            } => Ok(Released {
                pn_id,
                notified: Vec::new(),
                epoch: None,
            }),
            Outcome::Invited { joined: false, .. } => Err(NodeError::Rejected(ErrorBody::new(
                ErrorCode::Declined,
                "the PNE declined",
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// A service group request of the PN GW's owner: its outcome ([`Outcome::GroupDone`] or
    /// [`Outcome::GroupMembers`]), or why the server refused it.
    pub async fn group(&self, ask: GatewayGroupAsk) -> Result<Outcome, NodeError> {
        self.run(Ask::Group(ask)).await
    }

    /// The PN GW's local PN inventory.
    pub async fn inventory(&self) -> Result<Vec<PnInventory>, NodeError> {
        self.ask(Input::Inventory).await
    }

    /// The PN GW's own capabilities; with `set`, changed first and reported to the server
    /// (004 §5.5.1). An `Err(NodeError::Rejected)` says why new ones were refused.
    pub async fn capabilities(
        &self,
        set: Option<cpns_wire::DeviceCapabilities>,
    ) -> Result<cpns_wire::DeviceCapabilities, NodeError> {
        if let Some(caps) = set {
            self.run(Ask::SetCapabilities(Box::new(caps))).await?;
        }
        self.ask(Input::Capabilities).await
    }

    /// Which members of `pn_id` confirmed its current group key epoch; `None` for a PN this
    /// PN GW does not serve.
    pub async fn confirmations(&self, pn_id: PnId) -> Result<Option<Confirmations>, NodeError> {
        self.ask(|tx| Input::Confirmations(pn_id, tx)).await
    }

    /// Runs a command of the machine; its outcome, or why it did not succeed.
    async fn run(&self, ask: Ask) -> Result<Outcome, NodeError> {
        self.ask(|tx| Input::Command(ask, tx))
            .await?
            .map_err(NodeError::Rejected)
    }

    async fn ask<T>(
        &self,
        input: impl FnOnce(oneshot::Sender<T>) -> Input,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(input(tx))
            .await
            .map_err(|_| NodeError::Stopped("PN GW"))?;
        rx.await.map_err(|_| NodeError::Stopped("PN GW"))
    }
}

/// An outcome of another command: a driver that mixed up its waiters.
fn unexpected(o: &Outcome) -> NodeError {
    NodeError::Rejected(ErrorBody::new(
        ErrorCode::Internal,
        format!("an unexpected outcome: {o:?}"),
    ))
}

/// A local PN as the store keeps it, without a PNE's own keys ([`crate::pne`] adds them).
pub fn local_pn_record(state: &LocalPnState) -> LocalPn {
    let inv = &state.inventory;
    LocalPn {
        pn_id: inv.pn_id,
        gateway: inv.gateway.clone(),
        members: inv
            .members
            .iter()
            .map(|m| LocalMember {
                pne_id: m.pne_id.clone(),
                capabilities: m.capabilities.clone(),
                sealed_local_key: state
                    .wrapped_keys
                    .iter()
                    .find(|(p, _)| *p == m.pne_id)
                    .map(|(_, k)| k.clone()),
                route: Some("pan".into()),
                contents: m.contents.clone(),
            })
            .collect(),
        stored_at: unix_millis(),
        sealed_session_key: None,
        group: None,
        expires_at: state.expires_at,
        secure_seq: 0,
    }
}

/// A local PN from the store, without a PNE's own keys ([`crate::pne`] opens them).
pub fn local_pn_state(pn: &LocalPn) -> LocalPnState {
    LocalPnState {
        inventory: PnInventory {
            pn_id: pn.pn_id,
            gateway: pn.gateway.clone(),
            members: pn.members.iter().map(|m| m.inventory_member()).collect(),
        },
        wrapped_keys: pn
            .members
            .iter()
            .filter_map(|m| Some((m.pne_id.clone(), m.sealed_local_key.clone()?)))
            .collect(),
        own: None,
        expires_at: pn.expires_at,
    }
}

/// Starts the PN GW: reloads its local PNs, connects to the server (and reconnects whenever
/// the session drops), serves PNEs on `pan_listener`. Events go to `events` (bounded). The
/// returned task ends when `stop` fires, or with an error when the server refuses this PN GW's
/// credential (retrying would not help).
pub async fn start<S: DeviceStore + Clone>(
    cfg: GatewayNodeConfig,
    store: S,
    pan_listener: TcpListener,
    events: mpsc::Sender<GatewayEvent>,
    trace: TraceSink,
    stop: oneshot::Receiver<()>,
) -> Result<
    (
        GatewayHandle,
        tokio::task::JoinHandle<Result<(), NodeError>>,
    ),
    NodeError,
> {
    let mut machine = Gateway::new(cfg.proto.clone(), cpns_crypto::MachineRng::os());
    // PN lifetimes are kept as Unix times: the machine learns the wall clock before it reloads
    // them.
    machine.set_wall_clock(Instant::now(), unix_millis());
    let stored = store.local_pns().await?;
    machine.restore(stored.iter().map(local_pn_state).collect())?;
    machine.restore_routes(store.local_routes().await?);
    let departed = store.departed().await?;
    let kept = departed.len();
    machine.restore_departed(
        departed
            .into_iter()
            .map(|d| (d.pn_id, d.pne_id, d.sealed_local_key))
            .collect(),
    )?;
    info!(
        pns = stored.len(),
        departed = kept,
        "local PN inventory reloaded"
    );
    let connector = TlsConnector::from(pki::client_config(&cfg.ca_cert_pem)?);
    let server_name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| NodeError::Tls(format!("server name {:?}: {e}", cfg.server_name)))?;

    let (tx, inbox) = mpsc::channel(INBOX);
    let (links_tx, links) = mpsc::channel(LINK_INBOX);
    let shutdown = CancellationToken::new();
    let limits = LinkLimits {
        max_frame: cfg.proto.max_frame,
        max_queued: cfg.max_queued,
        proven_max_queued: cfg.pan_max_queued,
        unproven_lifetime: cfg.unproven_lifetime,
    };
    let admission = Admission::new(cfg.max_unproven_links, cfg.max_links);
    tokio::spawn(crate::pan_link::accept_loop(
        pan_listener,
        admission,
        limits,
        shutdown.clone(),
        links_tx,
    ));
    let store_jobs = spawn_store_worker(store, tx.clone(), shutdown.clone());
    let connect = Connect {
        connector,
        server_name,
        addr: cfg.server_addr.clone(),
        inbox: tx.clone(),
    };
    connect.spawn(Duration::ZERO);

    let me = cfg.proto.id.clone();
    let wan_traffic = Arc::new(Traffic::default());
    let handle = GatewayHandle {
        tx,
        id: me.clone(),
        wan_traffic: Arc::clone(&wan_traffic),
    };
    let backoff = Backoff::new(
        cfg.reconnect_initial,
        cfg.reconnect_max,
        cpns_crypto::MachineRng::os(),
    );
    let task = tokio::spawn(async move {
        let mut actor = Actor {
            machine,
            security: cfg.pan_security,
            max_frame: cfg.proto.max_frame,
            max_queued: cfg.max_queued,
            wan: None,
            wan_traffic,
            connect,
            backoff,
            links: BTreeMap::new(),
            peers: BTreeMap::new(),
            store_jobs,
            waiters: BTreeMap::new(),
            events,
            trace,
            me,
            refused: None,
        };
        let r = actor.run(inbox, links, stop).await;
        shutdown.cancel();
        if let Some(mut wan) = actor.wan.take() {
            wan.close().await;
        }
        r
    });
    Ok((handle, task))
}

/// Opens the WAN session in a task of its own and reports it to the loop.
struct Connect {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    addr: String,
    inbox: mpsc::Sender<Input>,
}

impl Connect {
    fn spawn(&self, after: Duration) {
        let connector = self.connector.clone();
        let name = self.server_name.clone();
        let addr = self.addr.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let attempt = async {
                let connect = |source| NodeError::Connect {
                    addr: addr.clone(),
                    source,
                };
                let tcp = TcpStream::connect(&addr).await.map_err(connect)?;
                tcp.set_nodelay(true).map_err(connect)?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| NodeError::Tls(format!("to the server: {e}")))?;
                let exporter = pki::exporter(tls.get_ref().1)?;
                Ok::<_, NodeError>((tls, exporter))
            };
            let input = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                Ok(Ok((tls, exporter))) => Input::WanUp(Box::new(tls), exporter),
                Ok(Err(e)) => Input::WanDown(e.to_string()),
                Err(_) => Input::WanDown(format!("connect {addr}: timed out")),
            };
            let _ = inbox.send(input).await;
        });
    }
}

/// A local store write.
enum StoreJob {
    Save(LocalPnState),
    Forget(PnId),
    KeepDeparted(DepartedKey),
    DropDeparted(PnId, EntityId),
    /// A delivery route: nothing waits for it (a failure is logged).
    KeepRoute(cpns_wire::DeliveryRoute),
    ForgetRoute(cpns_wire::DeliveryId),
}

/// Runs local store writes beside the loop, in order, and reports each back as an input.
fn spawn_store_worker<S: DeviceStore>(
    store: S,
    inbox: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) -> mpsc::Sender<(Option<Token>, StoreJob)> {
    let (tx, mut jobs) = mpsc::channel::<(Option<Token>, StoreJob)>(STORE_QUEUE);
    tokio::spawn(async move {
        loop {
            let job = tokio::select! {
                job = jobs.recv() => job,
                () = shutdown.cancelled() => None,
            };
            let Some((token, job)) = job else { return };
            let result = match job {
                StoreJob::Save(pn) => store.save_local_pn(&local_pn_record(&pn)).await,
                // A PN already gone is what was asked for.
                StoreJob::Forget(pn) => store.remove_local_pn(&pn).await.map(drop),
                StoreJob::KeepDeparted(key) => store.save_departed(&key).await,
                StoreJob::DropDeparted(pn, pne) => store.remove_departed(&pn, &pne).await.map(drop),
                StoreJob::KeepRoute(r) => store.save_local_route(&r).await,
                StoreJob::ForgetRoute(s) => store.remove_local_route(&s).await.map(drop),
            }
            .map_err(|e| store_failure(&e));
            let Some(token) = token else {
                if let Err(e) = result {
                    warn!(error = %e, "a delivery route could not be kept");
                }
                continue;
            };
            if inbox.send(Input::Persisted(token, result)).await.is_err() {
                return;
            }
        }
    });
    tx
}

struct Actor {
    machine: Gateway,
    security: PanSecurity,
    max_frame: u32,
    max_queued: usize,
    wan: Option<FramedConn<TlsStream<TcpStream>>>,
    wan_traffic: Arc<Traffic>,
    connect: Connect,
    backoff: Backoff,
    links: BTreeMap<LinkId, mpsc::Sender<LinkCmd>>,
    peers: BTreeMap<LinkId, EntityId>,
    store_jobs: mpsc::Sender<(Option<Token>, StoreJob)>,
    /// Whom each command's completion is for.
    waiters: BTreeMap<CommandId, Reply>,
    events: mpsc::Sender<GatewayEvent>,
    trace: TraceSink,
    me: EntityId,
    /// Set when the server refused this PN GW's credential: the loop ends with it.
    refused: Option<cpns_wire::ErrorBody>,
}

impl Actor {
    async fn run(
        &mut self,
        mut inbox: mpsc::Receiver<Input>,
        mut links: mpsc::Receiver<(LinkId, LinkEvent)>,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), NodeError> {
        loop {
            self.drain();
            if let Some(refusal) = self.refused.take() {
                return Err(NodeError::Refused(refusal));
            }
            let deadline = self
                .machine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            // While more than half of what the server may leave unread waits for it, the PAN
            // links wait (their sources' chunks would go up the WAN session, forwarded), and the
            // WAN session is read and written meanwhile: backpressure, not a cut-off.
            let congested = self
                .wan
                .as_ref()
                .is_some_and(|w| w.queued() > self.max_queued / 2);
            let drain_to = congested.then_some(self.max_queued / 2);
            tokio::select! {
                i = inbox.recv() => match i {
                    Some(i) => self.on_input(i),
                    None => return Ok(()),
                },
                l = links.recv(), if !congested => match l {
                    Some((link, e)) => self.on_link(link, e),
                    None => return Ok(()),
                },
                frame = wan_frame(&mut self.wan, drain_to) => {
                    if let Some(frame) = frame {
                        self.on_wan_frame(frame);
                    }
                }
                () = sleep_until(deadline) => self.machine.handle_timeout(Instant::now()),
                _ = &mut stop => return Ok(()),
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::WanUp(tls, exporter) => {
                info!("connected to the CPNS Server");
                let conn = FramedConn::new(*tls, self.max_frame, self.max_queued);
                self.wan = Some(conn.counting(Arc::clone(&self.wan_traffic)));
                if let Err(e) = self.machine.wan_connected(now, exporter) {
                    self.wan_lost(&format!("connection set-up: {e}"));
                }
            }
            Input::WanDown(reason) => {
                warn!(%reason, "no connection to the CPNS Server");
                self.emit(GatewayEvent::WanFailed(reason));
                let delay = self.backoff.next_delay();
                debug!(?delay, "reconnecting to the CPNS Server later");
                self.connect.spawn(delay);
            }
            Input::Persisted(token, result) => {
                if let Err(e) = self.machine.handle_persisted(now, token, result) {
                    warn!(error = %e, "store answer for an unknown flow");
                }
            }
            Input::Establish(targets, reply, done) => {
                let started = self.machine.start_establishment(now, targets);
                if let Ok(e) = &started {
                    // Before anything else runs: the completion cannot come first.
                    self.waiters.insert(e.id, done);
                }
                let _ = reply.send(started.map_err(|e| e.to_error()));
            }
            Input::Inventory(reply) => {
                let _ = reply.send(self.machine.inventory().into_iter().cloned().collect());
            }
            Input::Capabilities(reply) => {
                let _ = reply.send(self.machine.capabilities().clone());
            }
            Input::Command(ask, reply) => {
                let m = &mut self.machine;
                let started = match ask {
                    Ask::Release(pn_id) => m.release_pn(now, pn_id),
                    Ask::Expel(pn_id, pne) => m.expel(now, pn_id, pne),
                    Ask::Invite(pn_id, pne) => m.invite(now, pn_id, pne),
                    Ask::SetCapabilities(caps) => m.set_capabilities(now, *caps),
                    Ask::Group(GatewayGroupAsk::Create(name, open, owning)) => {
                        m.create_group(now, name, open, owning)
                    }
                    Ask::Group(GatewayGroupAsk::Invite(g, pne)) => m.invite_to_group(now, g, pne),
                    Ask::Group(GatewayGroupAsk::Expel(g, pne)) => m.expel_from_group(now, g, pne),
                    Ask::Group(GatewayGroupAsk::Delete(g)) => m.delete_group(now, g),
                    Ask::Group(GatewayGroupAsk::Members(g)) => m.group_members(now, g),
                };
                match started {
                    Ok(id) => {
                        self.waiters.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_error()));
                    }
                }
            }
            Input::Confirmations(pn_id, reply) => {
                let answer = self
                    .machine
                    .inventory()
                    .iter()
                    .any(|i| i.pn_id == pn_id)
                    .then(|| Confirmations {
                        epoch: self.machine.epoch(&pn_id),
                        confirmed: self.machine.confirmed_members(&pn_id).unwrap_or_default(),
                    });
                let _ = reply.send(answer);
            }
        }
    }

    fn on_link(&mut self, link: LinkId, event: LinkEvent) {
        let now = Instant::now();
        match event {
            LinkEvent::Opened(tx) => {
                self.links.insert(link, tx);
                self.machine.link_opened(link, self.security);
            }
            LinkEvent::Frame(mut frame) => {
                if !self.links.contains_key(&link) {
                    return; // cut off already; its last frames are not taken
                }
                if let Err(e) = self.machine.handle_pan_frame(now, link, &mut frame) {
                    debug!(link = link.0, error = %e, "PAN link closed: bad frame");
                }
            }
            LinkEvent::Closed(reason) => {
                debug!(link = link.0, %reason, "PAN link closed");
                self.links.remove(&link);
                self.peers.remove(&link);
                self.machine.link_closed(now, link);
            }
        }
    }

    fn on_wan_frame(&mut self, frame: Result<BytesMut, FrameError>) {
        match frame {
            Ok(mut frame) => match self.machine.handle_wan_frame(Instant::now(), &mut frame) {
                Ok(()) => {}
                Err(e @ ProtoError::UnsupportedVersion { .. }) => {
                    debug!(error = %e, "dropped a frame of another protocol version");
                }
                Err(e) => self.wan_lost(&format!("bad frame from the server: {e}")),
            },
            Err(FrameError::Closed) => self.wan_lost("the server closed the session"),
            Err(e) => self.wan_lost(&format!("the server session failed: {e}")),
        }
    }

    /// The WAN session is gone: flows waiting on it fail, PAN links stay, and a reconnection
    /// is scheduled.
    fn wan_lost(&mut self, reason: &str) {
        self.emit(GatewayEvent::WanFailed(reason.to_string()));
        self.wan_gone(reason);
    }

    /// [`Actor::wan_lost`] when the machine itself ended the session (and said why).
    fn wan_gone(&mut self, reason: &str) {
        if let Some(mut wan) = self.wan.take() {
            tokio::spawn(async move { wan.close().await });
        }
        warn!(%reason, "the session with the CPNS Server ended");
        self.machine.wan_closed(Instant::now());
        if self.refused.is_some() {
            return;
        }
        let delay = self.backoff.next_delay();
        debug!(?delay, "reconnecting to the CPNS Server later");
        self.connect.spawn(delay);
    }

    /// Cuts a PAN link off: its task hangs up once it sees its channel closed.
    fn cut(&mut self, link: LinkId, reason: &str) {
        if self.links.remove(&link).is_some() {
            debug!(link = link.0, %reason, "cutting a PAN link off");
            self.peers.remove(&link);
            self.machine.link_closed(Instant::now(), link);
        }
    }

    /// Hands a write to the store worker; a full queue fails it at once as overloaded.
    fn store(&mut self, token: Token, job: StoreJob) {
        if self.store_jobs.try_send((Some(token), job)).is_err() {
            let overloaded = Err(StoreFailure::Overloaded);
            let _ = self
                .machine
                .handle_persisted(Instant::now(), token, overloaded);
        }
    }

    fn emit(&self, e: GatewayEvent) {
        debug!(event = ?e, "gateway");
        if self.events.try_send(e).is_err() {
            debug!("PN GW event dropped: the consumer is not keeping up");
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                GatewayOutput::TransmitWan { frame, trace } => {
                    report(&self.trace, self.me.as_str(), "server", &trace);
                    let queued = match &mut self.wan {
                        Some(wan) => wan.queue(&frame).map_err(|e| e.to_string()),
                        None => Err("no session".into()),
                    };
                    if let Err(e) = queued {
                        self.wan_lost(&format!("cannot send to the server: {e}"));
                    }
                }
                GatewayOutput::TransmitPan { link, frame, trace } => {
                    let peer = self
                        .peers
                        .get(&link)
                        .map_or_else(|| trace.to.clone(), |p| p.to_string());
                    report(&self.trace, self.me.as_str(), &peer, &trace);
                    let full = self
                        .links
                        .get(&link)
                        .is_some_and(|tx| tx.try_send(LinkCmd::Frame(frame)).is_err());
                    if full {
                        self.cut(link, "the PNE does not read its answers");
                    }
                }
                GatewayOutput::CloseLink { link, reason } => {
                    // Dropping the link's channel: its task sends what was queued and hangs up.
                    if self.links.remove(&link).is_some() {
                        debug!(link = link.0, %reason, "closing PAN link");
                    }
                }
                GatewayOutput::CloseWan { reason } => self.wan_gone(&reason),
                GatewayOutput::Persist { token, pn } => self.store(token, StoreJob::Save(pn)),
                GatewayOutput::KeepDeparted {
                    token,
                    pn_id,
                    pne,
                    stored,
                } => {
                    let key = DepartedKey {
                        pn_id,
                        pne_id: pne,
                        sealed_local_key: stored,
                        departed_at: unix_millis(),
                    };
                    self.store(token, StoreJob::KeepDeparted(key));
                }
                GatewayOutput::DropDeparted { token, pn_id, pne } => {
                    self.store(token, StoreJob::DropDeparted(pn_id, pne));
                }
                GatewayOutput::Forget { token, pn_id } => {
                    self.store(token, StoreJob::Forget(pn_id));
                }
                GatewayOutput::KeepRoute(r) => {
                    if self
                        .store_jobs
                        .try_send((None, StoreJob::KeepRoute(r)))
                        .is_err()
                    {
                        warn!("a delivery route was not kept: the local store is behind");
                    }
                }
                GatewayOutput::ForgetRoute(s) => {
                    if self
                        .store_jobs
                        .try_send((None, StoreJob::ForgetRoute(s)))
                        .is_err()
                    {
                        warn!("a delivery route was not forgotten: the local store is behind");
                    }
                }
                GatewayOutput::Event(e) => {
                    match &e {
                        GatewayEvent::PneDiscovered { link, pne } => {
                            self.peers.insert(*link, pne.clone());
                        }
                        GatewayEvent::LinkProven { link, .. } => {
                            let full = self
                                .links
                                .get(link)
                                .is_some_and(|tx| tx.try_send(LinkCmd::Promote).is_err());
                            if full {
                                self.cut(*link, "the PNE does not read its answers");
                            }
                        }
                        GatewayEvent::WanReady => self.backoff.reset(),
                        GatewayEvent::Completed(c) => {
                            // A waiter that went away (an establishment nobody waits for)
                            // takes nothing: the completion is still told.
                            if let Some(reply) = self.waiters.remove(&c.id) {
                                let _ = reply.send(c.result.clone().map_err(|f| f.to_error()));
                            }
                        }
                        _ => {}
                    }
                    if let GatewayEvent::WanRefused(err) = &e
                        && matches!(err.code, ErrorCode::Unauthenticated | ErrorCode::Forbidden)
                    {
                        self.refused = Some(err.clone());
                    }
                    self.emit(e);
                }
            }
        }
    }
}

/// The next frame of the WAN session; never, while there is none.
async fn wan_frame(
    wan: &mut Option<FramedConn<TlsStream<TcpStream>>>,
    drain_to: Option<usize>,
) -> Option<Result<BytesMut, FrameError>> {
    match wan {
        Some(conn) => conn.next_frame_or_drained(drain_to).await,
        None => std::future::pending().await,
    }
}
