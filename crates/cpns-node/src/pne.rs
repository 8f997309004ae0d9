//! The PNE runtime: one PAN connection to a PN GW (CPNS-6) driving a [`PneSession`], the PNE's
//! local PN inventory in a [`DeviceStore`], and a short script of what the PNE should do (discover,
//! set up a PN, wait to be invited, register, release). [`run`] does the script and returns;
//! [`serve`] then stays, reconnecting with backoff, and takes commands.

use std::time::{Duration, Instant};

use cpns_crypto::{MasterKey, open_group_key_at_rest, seal_group_key_at_rest};
use cpns_proto::pne::{PneConfig, PneEvent, PneOutput, PneSession, SecureSession};
use cpns_proto::usage::{Preference, Preferences};
use cpns_proto::{Flow, LocalPnState, OwnKeys, PanSecurity, StoreFailure};
use cpns_store::{DeviceStore, GroupEpoch, LocalPn, LocalSession};
use cpns_wire::{
    CHARGING_SERVICE, ChargingList, ChargingQuery, ChargingRecord, DeviceCapabilities, EntityId,
    ErrorBody, ErrorCode, PnId, PnInventory, SetupType, Status, StatusEntry, StatusNotification,
    StatusPolicy, USAGE_SERVICE, UsageAccepted,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::error::{NodeError, store_failure};
use crate::frames::{DEFAULT_MAX_QUEUED, FrameError, FramedConn};
use crate::gateway::{local_pn_record, local_pn_state};
use crate::server::sleep_until;
use crate::server_store::{open_sk, sealed_sk, unix_millis};
use crate::trace::{TraceSink, report};

/// One step of what a PNE does once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PneStep {
    /// 000 §6.6.1.1 step 1: ask for a PN of this type, until joined or failed.
    Setup(SetupType),
    /// Wait until this PNE joins a PN it is invited to (or declines, or fails).
    AwaitInvitation,
    /// 003 §1.4: register, in this PN or (with `None`) in the PN this PNE belongs to.
    Register(Option<PnId>),
    /// 003 §1.4.1 step 4: call `service` on the server over the secure session (registered
    /// now or before: the session is kept in the local store), until it answers.
    SecureCall {
        /// The service, e.g. [`cpns_wire::ECHO_SERVICE`].
        service: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// 000 §6.6.5.1: ask the PN GW to release this PN, until it is released.
    Release(PnId),
    /// 000 §6.6.3.1.1: ask the PN GW to take this PNE out of this PN, until it is out.
    Leave(PnId),
}

/// What the PNE did.
#[derive(Clone, Debug, Default)]
pub struct PneReport {
    /// Every event, in order.
    pub events: Vec<PneEvent>,
}

impl PneReport {
    /// Whether a step failed.
    pub fn failures(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PneEvent::FlowFailed { flow, reason } => Some(format!("{flow}: {reason}")),
                PneEvent::PnRefused { reason, .. } => Some(reason.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// Runs a PNE against the PN GW at `gw_addr`: discovery, then `steps` in order. Returns when
/// every step has ended (or at `stop`, or when the link closes).
pub async fn run<S: DeviceStore>(
    cfg: PneConfig,
    store: S,
    gw_addr: &str,
    steps: Vec<PneStep>,
    events: Option<mpsc::Sender<PneEvent>>,
    trace: TraceSink,
    mut stop: oneshot::Receiver<()>,
) -> Result<PneReport, NodeError> {
    let mut link = Link::open(cfg, store, gw_addr, events, trace).await?;
    let mut steps = steps.into_iter();
    let mut current: Option<PneStep> = None;
    loop {
        // Carry out the outputs; see whether the current step ended.
        for e in link.drain().await? {
            if current.as_ref().is_some_and(|s| step_ends(s, &e)) {
                current = None;
            }
        }
        if link.discovered && current.is_none() {
            match steps.next() {
                None => {
                    link.conn.close().await;
                    return Ok(link.report);
                }
                Some(step) => {
                    link.start(&step)?;
                    current = Some(step);
                    continue;
                }
            }
        }
        tokio::select! {
            r = link.next() => r?,
            _ = &mut stop => return Ok(link.report),
        }
    }
}

/// How a command's answer is given.
type Reply = oneshot::Sender<Result<PnId, ErrorBody>>;

/// The one PN change a command asked the PN GW for, waiting for its end.
type Asking = (PnId, Flow, Reply);

/// Commands to a PNE that [`serve`] runs.
#[derive(Debug)]
enum Command {
    Inventory(oneshot::Sender<Vec<PnInventory>>),
    Release(PnId, Reply),
    Leave(PnId, Reply),
    Join(PnId, Reply),
    Invite(PnId, EntityId, oneshot::Sender<Result<bool, ErrorBody>>),
    Query(Option<PnId>, QueryReply),
    Expel(PnId, EntityId, Reply),
    /// The device's capabilities, set first if given (004 §5.5.1).
    Caps(Option<Box<DeviceCapabilities>>, CapsReply),
    /// A status request (004 §5.5.3).
    Status(StatusAsk, oneshot::Sender<Result<StatusReply, ErrorBody>>),
    /// Send the usage records the preferences allow now (004 §5.5.4).
    SendUsage(Preferences, oneshot::Sender<Result<UsageSent, ErrorBody>>),
    /// This PNE's user's charging records since a time (CPNS-4).
    Charging(u64, oneshot::Sender<Result<Vec<ChargingRecord>, ErrorBody>>),
}

/// Where the answer to a capabilities command goes.
type CapsReply = oneshot::Sender<Result<DeviceCapabilities, ErrorBody>>;

/// A status request of a running PNE.
#[derive(Debug)]
pub enum StatusAsk {
    /// Set this PNE's own status.
    Set(Status, Option<String>),
    /// The server's record of these entities (none: every device of this PNE's user).
    Query(Vec<EntityId>),
    /// Subscribe; the notifications go to the sender until it closes.
    Subscribe(
        Vec<EntityId>,
        StatusPolicy,
        mpsc::Sender<StatusNotification>,
    ),
}

/// The answer to a [`StatusAsk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusReply {
    /// The server recorded the status.
    Reported,
    /// The entities, as the server holds them.
    Entries(Vec<StatusEntry>),
    /// The subscription, with the watched entities now.
    Subscribed {
        /// Its id.
        subscription: u64,
        /// The snapshot.
        entries: Vec<StatusEntry>,
    },
}

/// What sending usage did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageSent {
    /// Records sent and acknowledged.
    pub sent: u32,
    /// Of those, records the server had already (a retry).
    pub duplicates: u32,
    /// Charging records the server made.
    pub charged: u32,
    /// Records of private services, kept on the device and never sent.
    pub withheld: u32,
}

/// A secure call a command waits for.
enum SecureAsk {
    Usage {
        ids: Vec<u64>,
        withheld: u32,
        reply: oneshot::Sender<Result<UsageSent, ErrorBody>>,
    },
    Charging(oneshot::Sender<Result<Vec<ChargingRecord>, ErrorBody>>),
}

/// Where the answer to an inventory query goes.
type QueryReply = oneshot::Sender<Result<Vec<PnInventory>, ErrorBody>>;

/// Acts on a PNE that [`serve`] runs.
#[derive(Clone, Debug)]
pub struct PneHandle {
    tx: mpsc::Sender<Command>,
}

impl PneHandle {
    /// The PNs the PNE belongs to.
    pub async fn inventory(&self) -> Result<Vec<PnInventory>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Inventory(tx))
            .await
            .map_err(|_| NodeError::Stopped("PNE"))?;
        rx.await.map_err(|_| NodeError::Stopped("PNE"))
    }

    /// 000 §6.6.5.1: asks the PN GW to release a PN the PNE is a member of; `Ok` once the PN is
    /// gone from the server, the PN GW and this PNE.
    pub async fn release(&self, pn_id: PnId) -> Result<PnId, NodeError> {
        self.call(|tx| Command::Release(pn_id, tx)).await
    }

    /// 000 §6.6.3.1.1: asks the PN GW to take this PNE out of a PN; `Ok` once it is out of the
    /// server's inventory, the PN GW's and its own.
    pub async fn leave(&self, pn_id: PnId) -> Result<PnId, NodeError> {
        self.call(|tx| Command::Leave(pn_id, tx)).await
    }

    /// 000 §6.6.2.2: asks to join a PN the PN GW serves; `Ok` once the server authenticated
    /// this PNE and it is a member everywhere, holding the PN's new group key.
    pub async fn join(&self, pn_id: PnId) -> Result<PnId, NodeError> {
        self.call(|tx| Command::Join(pn_id, tx)).await
    }

    /// 000 §6.6.2.1.2: asks the PN GW to invite `invitee` into a PN this PNE is a member of;
    /// `Ok(true)` once it joined, `Ok(false)` if it declined.
    pub async fn invite(&self, pn_id: PnId, invitee: EntityId) -> Result<bool, NodeError> {
        self.call(|tx| Command::Invite(pn_id, invitee, tx)).await
    }

    /// 004 §5.5.10: asks the PN GW to expel `pne` from a PN this PNE is a member of; `Ok` once
    /// the server agreed and the PN GW removed it (the server lets only a member of the PN
    /// GW's own user ask).
    pub async fn expel(&self, pn_id: PnId, pne: EntityId) -> Result<PnId, NodeError> {
        self.call(|tx| Command::Expel(pn_id, pne, tx)).await
    }

    /// 004 §5.5.10: reads a PN's inventory (its own from its PN GW, another of its user's from
    /// the server, end to end), or with `None` every PN of its user.
    pub async fn query(&self, pn_id: Option<PnId>) -> Result<Vec<PnInventory>, NodeError> {
        self.call(|tx| Command::Query(pn_id, tx)).await
    }

    /// The device's capabilities; with `set`, changed first (reported to the server at once,
    /// or coalesced for dynamic-only changes: docs/device-status.md).
    pub async fn capabilities(
        &self,
        set: Option<DeviceCapabilities>,
    ) -> Result<DeviceCapabilities, NodeError> {
        self.call(|tx| Command::Caps(set.map(Box::new), tx)).await
    }

    /// A status request: set this PNE's own status, query, or subscribe (004 §5.5.3).
    pub async fn status(&self, ask: StatusAsk) -> Result<StatusReply, NodeError> {
        self.call(|tx| Command::Status(ask, tx)).await
    }

    /// Sends the usage records `prefs` allow (004 §5.5.4), end to end; private ones are
    /// marked withheld and never sent. Needs the secure session a registration gives.
    pub async fn send_usage(&self, prefs: Preferences) -> Result<UsageSent, NodeError> {
        self.call(|tx| Command::SendUsage(prefs, tx)).await
    }

    /// This PNE's user's charging records of uses since `since_s` (CPNS-4), end to end.
    pub async fn charging(&self, since_s: u64) -> Result<Vec<ChargingRecord>, NodeError> {
        self.call(|tx| Command::Charging(since_s, tx)).await
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ErrorBody>>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(command(tx))
            .await
            .map_err(|_| NodeError::Stopped("PNE"))?;
        rx.await
            .map_err(|_| NodeError::Stopped("PNE"))?
            .map_err(NodeError::Rejected)
    }
}

/// Settings of a long-running PNE ([`serve`]).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The PN GW's PAN address.
    pub gateway: String,
    /// Delay before the first reconnection to the PN GW (doubling, with jitter).
    pub reconnect_initial: Duration,
    /// Longest delay between reconnections.
    pub reconnect_max: Duration,
    /// How often the usage records the preferences allow are sent (004 §5.5.4), when the PNE
    /// holds a secure session; `None`: only when asked.
    pub usage_every: Option<Duration>,
    /// The reporting preference of a service with none of its own.
    pub usage_default: Preference,
}

impl ServeConfig {
    /// Reconnecting to the PN GW at `gateway` after 250 ms, doubling up to 15 s.
    pub fn new(gateway: String) -> Self {
        Self {
            gateway,
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(15),
            usage_every: None,
            usage_default: Preference::Server,
        }
    }
}

/// Runs a PNE that stays (docs/pn-lifecycle.md, "Long-running entities"): it runs `steps` once,
/// then stays connected to its PN GW, proves itself with a LocalEUKey of a PN it shares with
/// it (so the PN GW can tell it what changes), keeps its local inventory current, and acts on
/// the commands of its [`PneHandle`]. A lost link is opened again with backoff. Ends at `stop`,
/// or with an error when a step fails.
pub fn serve<S: DeviceStore + Clone>(
    cfg: PneConfig,
    serve: ServeConfig,
    store: S,
    steps: Vec<PneStep>,
    events: Option<mpsc::Sender<PneEvent>>,
    trace: TraceSink,
    stop: oneshot::Receiver<()>,
) -> (PneHandle, tokio::task::JoinHandle<Result<(), NodeError>>) {
    let (tx, commands) = mpsc::channel(16);
    let task = tokio::spawn(serve_loop(
        cfg, serve, store, steps, events, trace, commands, stop,
    ));
    (PneHandle { tx }, task)
}

#[allow(clippy::too_many_arguments)]
async fn serve_loop<S: DeviceStore + Clone>(
    cfg: PneConfig,
    serve: ServeConfig,
    store: S,
    steps: Vec<PneStep>,
    events: Option<mpsc::Sender<PneEvent>>,
    trace: TraceSink,
    mut commands: mpsc::Receiver<Command>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), NodeError> {
    let mut cfg = cfg;
    let mut backoff = Backoff::new(
        serve.reconnect_initial,
        serve.reconnect_max,
        cpns_crypto::MachineRng::os(),
    );
    let mut steps = Some(steps);
    loop {
        let opened = tokio::select! {
            l = Link::open(cfg.clone(), store.clone(), &serve.gateway, events.clone(), trace.clone()) => l,
            _ = &mut stop => return Ok(()),
        };
        let lost = match opened {
            Ok(mut link) => {
                let steps = steps.take().unwrap_or_default();
                let stayed = link
                    .stay(steps, &serve, &mut backoff, &mut commands, &mut stop)
                    .await;
                // What the device is now outlives the link.
                cfg.capabilities = link.session.capabilities().clone();
                match stayed {
                    Ok(()) => return Ok(()),
                    Err(e @ NodeError::Ended(_)) if link.steps_failed => return Err(e),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        warn!(error = %lost, ?delay, "no link to the PN GW; reconnecting");
        let wake = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                c = commands.recv() => match c {
                    Some(c) => offline(&store, &cfg.capabilities, c).await,
                    None => return Ok(()),
                },
                _ = &mut stop => return Ok(()),
            }
        }
    }
}

/// Answers a command while there is no link to the PN GW.
async fn offline<S: DeviceStore>(store: &S, caps: &DeviceCapabilities, c: Command) {
    match c {
        Command::Inventory(reply) => {
            let pns = store.local_pns().await.unwrap_or_default();
            let _ = reply.send(pns.iter().map(|p| local_pn_state(p).inventory).collect());
        }
        Command::Release(_, reply)
        | Command::Leave(_, reply)
        | Command::Join(_, reply)
        | Command::Expel(_, _, reply) => {
            let _ = reply.send(Err(no_link()));
        }
        Command::Invite(_, _, reply) => {
            let _ = reply.send(Err(no_link()));
        }
        Command::Query(_, reply) => {
            let _ = reply.send(Err(no_link()));
        }
        Command::Caps(None, reply) => {
            let _ = reply.send(Ok(caps.clone()));
        }
        Command::Caps(Some(_), reply) => {
            let _ = reply.send(Err(no_link()));
        }
        Command::Status(_, reply) => {
            let _ = reply.send(Err(no_link()));
        }
        Command::SendUsage(_, reply) => {
            let _ = reply.send(Err(no_link()));
        }
        Command::Charging(_, reply) => {
            let _ = reply.send(Err(no_link()));
        }
    }
}

/// The reporting preferences kept in a PNE's store, `default` for services with none.
pub async fn usage_prefs<S: DeviceStore>(
    store: &S,
    default: Preference,
) -> Result<Preferences, cpns_store::StoreError> {
    let mut prefs = Preferences {
        default,
        ..Preferences::default()
    };
    prefs.services.extend(store.usage_prefs().await?);
    Ok(prefs)
}

/// Why a secure call could not start: most often, no secure session yet.
fn no_session(e: &cpns_proto::ProtoError) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::WrongState,
        format!("{e}: this PNE has no secure session with the server; run it with --register"),
    )
}

/// Why a command that needs the PN GW fails while the PNE reconnects.
fn no_link() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Busy,
        "the PNE has no link to its PN GW; it is reconnecting, try again shortly",
    )
}

/// One PAN link to the PN GW and the machine on it.
struct Link<S> {
    session: PneSession,
    conn: FramedConn<TcpStream>,
    store: S,
    cfg: PneConfig,
    storage_key: MasterKey,
    events: Option<mpsc::Sender<PneEvent>>,
    trace: TraceSink,
    report: PneReport,
    discovered: bool,
    /// Set when a step failed: a long-running PNE stops rather than retry it.
    steps_failed: bool,
}

impl<S: DeviceStore> Link<S> {
    /// Reloads the local inventory and secure session, connects, and starts discovery.
    async fn open(
        cfg: PneConfig,
        store: S,
        gw_addr: &str,
        events: Option<mpsc::Sender<PneEvent>>,
        trace: TraceSink,
    ) -> Result<Self, NodeError> {
        let mut session = PneSession::new(cfg.clone(), cpns_crypto::MachineRng::os());
        let stored = store.local_pns().await?;
        let storage_key = cpns_crypto::device_storage_key(&cfg.eukey);
        let states = stored
            .iter()
            .map(|p| pne_state(p, &storage_key, &cfg.id))
            .collect::<Result<_, _>>()?;
        session.restore(states)?;
        if let Some(kept) = store.local_session().await? {
            let session_key =
                open_sk(&storage_key, &kept.pn_id, &cfg.id, &kept.sealed_session_key)?;
            session.restore_session(SecureSession {
                cpns_id: kept.cpns_id,
                pn_id: kept.pn_id,
                session_key,
                lifetime_s: u32::try_from(kept.lifetime_s).unwrap_or(u32::MAX),
            });
        }
        let connect = |source| NodeError::Connect {
            addr: gw_addr.to_string(),
            source,
        };
        let stream = TcpStream::connect(gw_addr).await.map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        // The PN GW is the peer this PNE chose to connect to: its frames get the full limit.
        let conn = FramedConn::new(stream, cfg.max_frame, DEFAULT_MAX_QUEUED);
        session.start_discovery(Instant::now());
        Ok(Self {
            session,
            conn,
            store,
            cfg,
            storage_key,
            events,
            trace,
            report: PneReport::default(),
            discovered: false,
            steps_failed: false,
        })
    }

    /// Carries out the machine's outputs; the events among them, in order.
    async fn drain(&mut self) -> Result<Vec<PneEvent>, NodeError> {
        let mut happened = Vec::new();
        let me = self.cfg.id.to_string();
        while let Some(out) = self.session.poll_output() {
            match out {
                PneOutput::Transmit {
                    frame,
                    trace: record,
                } => {
                    let gw = self
                        .session
                        .gateway()
                        .map_or_else(|| "gateway".to_string(), |g| g.to_string());
                    report(&self.trace, &me, &gw, &record);
                    self.conn.queue(&frame)?;
                }
                PneOutput::Persist { token, pn } => {
                    let result = match pne_record(&pn, &self.storage_key, &self.cfg.id) {
                        Ok(record) => self
                            .store
                            .save_local_pn(&record)
                            .await
                            .map_err(|e| store_failure(&e)),
                        Err(e) => Err(e),
                    };
                    self.session.handle_persisted(token, result)?;
                }
                PneOutput::Forget { token, pn_id } => {
                    // A PN already gone is what was asked for.
                    let result = self
                        .store
                        .remove_local_pn(&pn_id)
                        .await
                        .map(drop)
                        .map_err(|e| store_failure(&e));
                    self.session.handle_persisted(token, result)?;
                }
                PneOutput::Event(e) => {
                    // The driver reports events (the CLI prints them); the Debug form is for debugging.
                    debug!(event = ?e, "pne");
                    if let Some(tx) = &self.events
                        && tx.try_send(e.clone()).is_err()
                    {
                        debug!("PNE event dropped: the consumer is not keeping up");
                    }
                    if matches!(e, PneEvent::Discovered { .. }) {
                        self.discovered = true;
                    }
                    self.report.events.push(e.clone());
                    happened.push(e);
                }
                PneOutput::PersistSession { session: s } => {
                    let sealed =
                        sealed_sk(&self.storage_key, &s.pn_id, &self.cfg.id, &s.session_key)
                            .map_err(|e| NodeError::Sealed {
                                what: "the secure session's key".into(),
                                reason: e.to_string(),
                            })?;
                    let record = LocalSession {
                        cpns_id: s.cpns_id,
                        pn_id: s.pn_id,
                        sealed_session_key: sealed,
                        lifetime_s: i64::from(s.lifetime_s),
                        stored_at: unix_millis(),
                    };
                    self.store.save_local_session(&record).await?;
                }
                PneOutput::Close { reason } => {
                    self.conn.close().await;
                    return Err(NodeError::Ended(reason));
                }
            }
        }
        Ok(happened)
    }

    /// Starts a step.
    fn start(&mut self, step: &PneStep) -> Result<(), NodeError> {
        let now = Instant::now();
        let s = &mut self.session;
        match step {
            PneStep::Setup(t) => s.start_setup(now, t.clone()).map(drop),
            PneStep::AwaitInvitation => Ok(()),
            PneStep::Register(pn) => {
                let pn = pn.or_else(|| s.inventory().first().map(|i| i.pn_id));
                s.start_registration(now, pn).map(drop)
            }
            PneStep::SecureCall { service, payload } => {
                s.secure_call(now, service, payload.clone()).map(drop)
            }
            PneStep::Release(pn) => s.release_pn(now, *pn).map(drop),
            PneStep::Leave(pn) => s.leave_pn(now, *pn).map(drop),
        }?;
        Ok(())
    }

    /// Waits for the next frame or deadline and hands it to the machine.
    async fn next(&mut self) -> Result<(), NodeError> {
        let deadline = self
            .session
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            frame = self.conn.next_frame() => match frame {
                Ok(frame) => match self.session.handle_frame(Instant::now(), &frame) {
                    Ok(()) => {}
                    Err(e @ cpns_proto::ProtoError::UnsupportedVersion { .. }) => {
                        debug!(error = %e, "dropped a frame of another protocol version");
                    }
                    Err(e) => return Err(e.into()),
                },
                Err(FrameError::Closed) => return Err(NodeError::Closed("the PN GW")),
                Err(e) => return Err(e.into()),
            },
            () = sleep_until(deadline) => self.session.handle_timeout(Instant::now()),
        }
        Ok(())
    }

    /// Runs `steps`, then stays on the link serving commands until `stop` (`Ok`) or the link
    /// is lost (`Err`).
    async fn stay(
        &mut self,
        steps: Vec<PneStep>,
        serve: &ServeConfig,
        backoff: &mut Backoff,
        commands: &mut mpsc::Receiver<Command>,
        stop: &mut oneshot::Receiver<()>,
    ) -> Result<(), NodeError> {
        let mut steps = steps.into_iter();
        let mut current: Option<PneStep> = None;
        let mut proving = false;
        // Set when the proof is over (or there is none to give): the key pulls may go.
        let mut pulling = false;
        let mut pulled = false;
        // The one PN change this PNE asked its PN GW for, waiting for its end.
        let mut asking: Option<Asking> = None;
        // The one invitation this PNE asked for, waiting for its answer.
        let mut inviting: Option<(PnId, oneshot::Sender<Result<bool, ErrorBody>>)> = None;
        // The one inventory query this PNE asked for.
        let mut querying: Option<QueryReply> = None;
        // The one status request, and the one secure call, a command waits for.
        let mut status_asking: Option<(
            StatusAsk,
            oneshot::Sender<Result<StatusReply, ErrorBody>>,
        )> = None;
        let mut secure_asking: Option<SecureAsk> = None;
        // Where each subscription's notifications go.
        let mut watchers: std::collections::BTreeMap<u64, mpsc::Sender<StatusNotification>> =
            std::collections::BTreeMap::new();
        let mut reported_caps = false;
        let mut next_usage = serve
            .usage_every
            .map(|every| tokio::time::Instant::now() + every);
        loop {
            for e in self.drain().await? {
                self.on_status_event(&e, &mut status_asking, &mut watchers);
                self.on_secure_event(&e, &mut secure_asking).await;
                if let PneEvent::Discovered { .. } = e {
                    backoff.reset();
                }
                if let PneEvent::FlowFailed {
                    flow: Flow::PanAuthentication,
                    ..
                } = e
                {
                    pulling = true;
                }
                if current.as_ref().is_some_and(|s| step_ends(s, &e)) {
                    current = None;
                    if let PneEvent::FlowFailed { flow, reason } = &e {
                        self.steps_failed = true;
                        return Err(NodeError::Ended(format!("{flow}: {reason}")));
                    }
                }
                let done = match &e {
                    PneEvent::PnReleased { pn_id, by_me: true } => Some((*pn_id, Flow::PnRelease)),
                    PneEvent::PnLeft(pn_id) | PneEvent::MemberExpelled { pn_id, .. } => {
                        Some((*pn_id, Flow::MembershipChange))
                    }
                    PneEvent::PnJoined { inventory, .. } => {
                        Some((inventory.pn_id, Flow::PneRegistration))
                    }
                    _ => None,
                };
                // The PN went another way meanwhile (released, or this PNE expelled, told by
                // its PN GW or at its pull): a release or a leave asked of it is done too,
                // since this PNE is out of it either way.
                let gone = match &e {
                    PneEvent::PnReleased { pn_id, .. } | PneEvent::Expelled(pn_id) => Some(*pn_id),
                    _ => None,
                };
                if let Some(pn_id) = gone
                    && asking.as_ref().is_some_and(|(p, f, _)| {
                        *p == pn_id && matches!(f, Flow::PnRelease | Flow::MembershipChange)
                    })
                    && let Some((_, _, reply)) = asking.take()
                {
                    let _ = reply.send(Ok(pn_id));
                }
                if let Some((pn_id, flow)) = done
                    && asking
                        .as_ref()
                        .is_some_and(|(p, f, _)| *p == pn_id && *f == flow)
                    && let Some((_, _, reply)) = asking.take()
                {
                    let _ = reply.send(Ok(pn_id));
                }
                if let PneEvent::FlowFailed { flow, reason } = &e
                    && asking.as_ref().is_some_and(|(_, f, _)| f == flow)
                    && let Some((_, _, reply)) = asking.take()
                {
                    let _ = reply.send(Err(reason.to_error()));
                }
                match &e {
                    PneEvent::InventoryRead { pns } => {
                        if let Some(reply) = querying.take() {
                            let _ = reply.send(Ok(pns.clone()));
                        }
                    }
                    PneEvent::FlowFailed {
                        flow: Flow::InventoryQuery,
                        reason,
                    } => {
                        if let Some(reply) = querying.take() {
                            let _ = reply.send(Err(reason.to_error()));
                        }
                    }
                    _ => {}
                }
                match &e {
                    PneEvent::InviteAnswered { pn_id, accepted }
                        if inviting.as_ref().is_some_and(|(p, _)| p == pn_id) =>
                    {
                        if let Some((_, reply)) = inviting.take() {
                            let _ = reply.send(Ok(*accepted));
                        }
                    }
                    PneEvent::FlowFailed {
                        flow: Flow::MembershipChange,
                        reason,
                    } => {
                        if let Some((_, reply)) = inviting.take() {
                            let _ = reply.send(Err(reason.to_error()));
                        }
                    }
                    _ => {}
                }
            }
            if !self.discovered {
                // Wait for discovery.
            } else if current.is_none()
                && let Some(step) = steps.next()
            {
                self.start(&step)?;
                current = Some(step);
                continue;
            } else if current.is_none() && !proving {
                // Prove itself to the PN GW, so the PN GW tells it what changes and takes its
                // confirmations; then the connection set-up in each of its PNs there (002
                // §B.1.1.3 steps 22-26): catch up with the epochs it missed while away.
                proving = true;
                if let Some(pn) = self.provable_pn() {
                    self.session.start_pan_auth(Instant::now(), pn)?;
                    continue;
                }
                // Nothing to prove (a sealed or trusted link): the pulls go at once.
                pulling = true;
                continue;
            } else if proving && !pulled && (pulling || self.session.link_sealed()) {
                pulled = true;
                let now = Instant::now();
                for pn in self.pns_here() {
                    self.session.request_group_key(now, pn)?;
                }
                continue;
            } else if pulled && !reported_caps && !self.pns_here().is_empty() {
                // Proven to a PN GW of its PNs: the server gets what the device is now
                // (004 §5.5.1), also what changed while it was away.
                reported_caps = true;
                self.session.report_capabilities(Instant::now());
                continue;
            }
            tokio::select! {
                r = self.next() => r?,
                () = crate::server::sleep_until(next_usage) => {
                    next_usage = serve.usage_every.map(|every| tokio::time::Instant::now() + every);
                    // When nothing else waits for the secure session, and there is one.
                    if secure_asking.is_none() && self.session.cpns_id().is_some() {
                        match usage_prefs(&self.store, serve.usage_default).await {
                            Ok(prefs) => {
                                // Nobody waits for this answer; the records are marked sent when
                                // the server acknowledges them.
                                let (reply, _) = oneshot::channel();
                                secure_asking = self.start_usage(&prefs, reply).await;
                            }
                            Err(e) => warn!(error = %e, "usage preferences unreadable; not sent"),
                        }
                    }
                }
                c = commands.recv() => match c {
                    None => return Ok(()),
                    Some(Command::Inventory(reply)) => {
                        let pns = self.session.inventory().into_iter().cloned().collect();
                        let _ = reply.send(pns);
                    }
                    Some(Command::Release(pn, reply)) => {
                        self.ask(&mut asking, (pn, Flow::PnRelease), reply, |s, now| s.release_pn(now, pn));
                    }
                    Some(Command::Leave(pn, reply)) => {
                        self.ask(&mut asking, (pn, Flow::MembershipChange), reply, |s, now| s.leave_pn(now, pn));
                    }
                    Some(Command::Join(pn, reply)) => {
                        self.ask(&mut asking, (pn, Flow::PneRegistration), reply, |s, now| s.join_pn(now, pn));
                    }
                    Some(Command::Expel(pn, pne, reply)) => {
                        self.ask(&mut asking, (pn, Flow::MembershipChange), reply, |s, now| s.expel_pne(now, pn, pne));
                    }
                    Some(Command::Query(pn, reply)) => {
                        let started = if querying.is_some() {
                            Err(ErrorBody::new(ErrorCode::Conflict, "an inventory query of this PNE waits for its answer"))
                        } else {
                            self.session
                                .query_inventory(Instant::now(), pn)
                                .map_err(|e| ErrorBody::new(e.code(), e.to_string()))
                        };
                        match started {
                            Ok(()) => querying = Some(reply),
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Some(Command::Caps(set, reply)) => {
                        let answer = match set {
                            None => Ok(self.session.capabilities().clone()),
                            Some(caps) => self
                                .session
                                .set_capabilities(Instant::now(), *caps)
                                .map(|()| self.session.capabilities().clone())
                                .map_err(|why| ErrorBody::new(ErrorCode::BadRequest, why)),
                        };
                        let _ = reply.send(answer);
                    }
                    Some(Command::Status(ask, reply)) => {
                        if status_asking.is_some() {
                            let e = ErrorBody::new(ErrorCode::Conflict, "a status request of this PNE waits for its answer");
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        let now = Instant::now();
                        let started = match &ask {
                            StatusAsk::Set(status, label) => self
                                .session
                                .set_status(now, *status, label.clone())
                                .map(|_| ())
                                .map_err(|why| ErrorBody::new(ErrorCode::BadRequest, why)),
                            StatusAsk::Query(entities) => {
                                self.session.query_status(now, entities.clone());
                                Ok(())
                            }
                            StatusAsk::Subscribe(entities, policy, _) => {
                                self.session.subscribe_status(now, entities.clone(), policy.clone());
                                Ok(())
                            }
                        };
                        match started {
                            Ok(()) => status_asking = Some((ask, reply)),
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Some(Command::SendUsage(prefs, reply)) => {
                        if secure_asking.is_some() {
                            let e = ErrorBody::new(ErrorCode::Conflict, "a secure call of this PNE waits for its answer");
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        secure_asking = self.start_usage(&prefs, reply).await;
                    }
                    Some(Command::Charging(since, reply)) => {
                        if secure_asking.is_some() {
                            let e = ErrorBody::new(ErrorCode::Conflict, "a secure call of this PNE waits for its answer");
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        let query = ChargingQuery { since_s: Some(since) };
                        let payload = minicbor::to_vec(&query).unwrap_or_default();
                        match self.session.secure_call(Instant::now(), CHARGING_SERVICE, payload) {
                            Ok(_) => secure_asking = Some(SecureAsk::Charging(reply)),
                            Err(e) => {
                                let _ = reply.send(Err(no_session(&e)));
                            }
                        }
                    }
                    Some(Command::Invite(pn, invitee, reply)) => {
                        let started = if inviting.is_some() {
                            Err(ErrorBody::new(ErrorCode::Conflict, "an invitation of this PNE waits for its answer"))
                        } else {
                            self.session
                                .invite_pne(Instant::now(), pn, invitee)
                                .map_err(|e| ErrorBody::new(e.code(), e.to_string()))
                        };
                        match started {
                            Ok(_) => inviting = Some((pn, reply)),
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                },
                _ = &mut *stop => {
                    self.conn.close().await;
                    return Ok(());
                }
            }
        }
    }

    /// Answers the status command waiting, and hands notifications to their subscribers.
    fn on_status_event(
        &mut self,
        e: &PneEvent,
        asking: &mut Option<(StatusAsk, oneshot::Sender<Result<StatusReply, ErrorBody>>)>,
        watchers: &mut std::collections::BTreeMap<u64, mpsc::Sender<StatusNotification>>,
    ) {
        if let PneEvent::StatusNotified(n) = e {
            let id = n.subscription;
            let gone = match watchers.get(&id) {
                // A subscriber that does not read misses notifications, never blocks this PNE.
                Some(tx) => matches!(
                    tx.try_send(n.clone()),
                    Err(mpsc::error::TrySendError::Closed(_))
                ),
                None => true,
            };
            if gone {
                watchers.remove(&id);
                self.session.unsubscribe_status(Instant::now(), id);
            }
            return;
        }
        let answer = match e {
            PneEvent::StatusReported => Ok(StatusReply::Reported),
            PneEvent::StatusAnswered { entries } => Ok(StatusReply::Entries(entries.clone())),
            PneEvent::Subscribed {
                subscription,
                entries,
            } => Ok(StatusReply::Subscribed {
                subscription: *subscription,
                entries: entries.clone(),
            }),
            PneEvent::FlowFailed {
                flow: Flow::StatusManagement,
                reason,
            } => Err(reason.to_error()),
            _ => return,
        };
        let Some((ask, reply)) = asking.take() else {
            return;
        };
        if let (StatusAsk::Subscribe(_, _, tx), Ok(StatusReply::Subscribed { subscription, .. })) =
            (&ask, &answer)
        {
            watchers.insert(*subscription, tx.clone());
        }
        let _ = reply.send(answer);
    }

    /// Sends what the preferences allow of the unsent usage records, end to end; private ones
    /// are marked done at once and never sent (004 §5.5.4.2).
    async fn start_usage(
        &mut self,
        prefs: &Preferences,
        reply: oneshot::Sender<Result<UsageSent, ErrorBody>>,
    ) -> Option<SecureAsk> {
        let internal =
            |e: cpns_store::StoreError| ErrorBody::new(ErrorCode::Internal, e.to_string());
        let unsent = match self.store.unsent_local_usage(256).await {
            Ok(u) => u,
            Err(e) => {
                let _ = reply.send(Err(internal(e)));
                return None;
            }
        };
        let records: Vec<_> = unsent.into_iter().map(|u| u.record).collect();
        let out = cpns_proto::usage::outgoing(&records, prefs);
        let withheld = u32::try_from(out.withheld.len()).unwrap_or(u32::MAX);
        if let Err(e) = self.store.mark_local_usage_sent(&out.withheld).await {
            let _ = reply.send(Err(internal(e)));
            return None;
        }
        if out.report.records.is_empty() {
            let _ = reply.send(Ok(UsageSent {
                withheld,
                ..UsageSent::default()
            }));
            return None;
        }
        let ids = out.report.records.iter().map(|r| r.id).collect();
        let payload = minicbor::to_vec(&out.report).unwrap_or_default();
        match self
            .session
            .secure_call(Instant::now(), USAGE_SERVICE, payload)
        {
            Ok(_) => Some(SecureAsk::Usage {
                ids,
                withheld,
                reply,
            }),
            Err(e) => {
                let _ = reply.send(Err(no_session(&e)));
                None
            }
        }
    }

    /// Answers the secure call a command waits for.
    async fn on_secure_event(&mut self, e: &PneEvent, asking: &mut Option<SecureAsk>) {
        let got = match e {
            PneEvent::SecureAnswer {
                service, payload, ..
            } if service == USAGE_SERVICE || service == CHARGING_SERVICE => Ok(payload),
            PneEvent::FlowFailed {
                flow: Flow::SecureCall,
                reason,
            } => Err(reason.to_error()),
            _ => return,
        };
        match (asking.take(), got) {
            (
                Some(SecureAsk::Usage {
                    ids,
                    withheld,
                    reply,
                }),
                Ok(payload),
            ) => {
                let answer = match minicbor::decode::<UsageAccepted>(payload) {
                    Ok(a) => match self.store.mark_local_usage_sent(&ids).await {
                        Ok(()) => Ok(UsageSent {
                            sent: a.stored + a.duplicates,
                            duplicates: a.duplicates,
                            charged: a.charged,
                            withheld,
                        }),
                        Err(e) => Err(ErrorBody::new(ErrorCode::Internal, e.to_string())),
                    },
                    Err(_) => Err(ErrorBody::new(
                        ErrorCode::Internal,
                        "the server's answer did not decode",
                    )),
                };
                let _ = reply.send(answer);
            }
            (Some(SecureAsk::Charging(reply)), Ok(payload)) => {
                let answer = minicbor::decode::<ChargingList>(payload)
                    .map(|l| l.records)
                    .map_err(|_| {
                        ErrorBody::new(ErrorCode::Internal, "the server's answer did not decode")
                    });
                let _ = reply.send(answer);
            }
            (Some(SecureAsk::Usage { reply, .. }), Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Some(SecureAsk::Charging(reply)), Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (None, _) => {}
        }
    }

    /// Starts the change of `pn` a command asked for, unless one is waiting already.
    fn ask(
        &mut self,
        asking: &mut Option<Asking>,
        (pn, flow): (PnId, Flow),
        reply: Reply,
        start: impl FnOnce(
            &mut PneSession,
            Instant,
        ) -> Result<cpns_wire::RequestId, cpns_proto::ProtoError>,
    ) {
        let started = if asking.is_some() {
            Err(ErrorBody::new(
                ErrorCode::Conflict,
                "this PNE is waiting for its PN GW's answer to an earlier request",
            ))
        } else {
            start(&mut self.session, Instant::now())
                .map_err(|e| ErrorBody::new(e.code(), e.to_string()))
        };
        match started {
            Ok(_) => *asking = Some((pn, flow, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// The PNs this PNE belongs to whose PN GW is the one on this link.
    fn pns_here(&self) -> Vec<PnId> {
        let Some(gw) = self.session.gateway() else {
            return Vec::new();
        };
        self.session
            .inventory()
            .into_iter()
            .filter(|i| &i.gateway == gw)
            .map(|i| i.pn_id)
            .collect()
    }

    /// A PN whose PN GW is the one on this link and whose LocalEUKey this PNE holds, when the
    /// link is not sealed yet on an insecure PAN.
    fn provable_pn(&self) -> Option<PnId> {
        if self.cfg.security != PanSecurity::Cpns || self.session.link_sealed() {
            return None;
        }
        let gw = self.session.gateway()?;
        self.session
            .inventory()
            .into_iter()
            .find(|i| &i.gateway == gw && self.session.holds_local_key(&i.pn_id))
            .map(|i| i.pn_id)
    }
}

/// A PNE's local PN as the store keeps it: its own SK_PNE and group key sealed under the
/// device's storage key (docs/security.md §4.9, §4.10).
fn pne_record(
    state: &LocalPnState,
    storage_key: &MasterKey,
    me: &EntityId,
) -> Result<LocalPn, StoreFailure> {
    let mut record = local_pn_record(state);
    if let Some(own) = &state.own {
        let pn = &state.inventory.pn_id;
        record.sealed_session_key = Some(sealed_sk(storage_key, pn, me, &own.session_key)?);
        record.group = own
            .group
            .as_ref()
            .map(|(epoch, gk)| {
                let sealed_key = seal_group_key_at_rest(storage_key, pn.as_bytes(), *epoch, gk)
                    .map_err(|e| StoreFailure::Sealed(e.to_string()))?;
                Ok::<_, StoreFailure>(GroupEpoch {
                    epoch: *epoch,
                    sealed_key,
                })
            })
            .transpose()?;
    }
    Ok(record)
}

/// A PNE's local PN from the store, its own keys opened with the device's storage key.
fn pne_state(
    pn: &LocalPn,
    storage_key: &MasterKey,
    me: &EntityId,
) -> Result<LocalPnState, NodeError> {
    let mut state = local_pn_state(pn);
    if let Some(sealed) = &pn.sealed_session_key {
        let session_key = open_sk(storage_key, &pn.pn_id, me, sealed)?;
        let group = pn
            .group
            .as_ref()
            .map(|g| {
                open_group_key_at_rest(storage_key, pn.pn_id.as_bytes(), g.epoch, &g.sealed_key)
                    .map(|gk| (g.epoch, gk))
                    .map_err(|e| NodeError::Sealed {
                        what: format!("the group key of PN {}", pn.pn_id),
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        state.own = Some(OwnKeys { session_key, group });
    }
    Ok(state)
}

/// Whether `e` ends `step`.
fn step_ends(step: &PneStep, e: &PneEvent) -> bool {
    // Status management runs beside the steps: its failures are its own.
    if let PneEvent::FlowFailed { flow, .. } = e {
        return *flow != Flow::StatusManagement;
    }
    matches!(
        (step, e),
        (
            PneStep::Setup(_) | PneStep::AwaitInvitation,
            PneEvent::PnJoined { .. } | PneEvent::PnRefused { .. }
        ) | (PneStep::AwaitInvitation, PneEvent::InvitationDeclined(_))
            | (PneStep::Register(_), PneEvent::Registered { .. })
            | (PneStep::SecureCall { .. }, PneEvent::SecureAnswer { .. })
            | (
                PneStep::Release(_),
                PneEvent::PnReleased { by_me: true, .. }
            )
    )
}
