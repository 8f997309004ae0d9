//! The CPNS Server runtime: a TLS 1.3 listener for PN GW sessions (CPNS-2/7), one task per
//! session driving a [`ServerSession`], the state of record in a [`ServerStore`].
//!
//! Shape after mini-redis: the accept loop takes a permit from a semaphore before accepting, so
//! at most `max_sessions` sessions run; a watch channel tells every session to stop; `run`
//! returns once every session has ended.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cpns_crypto::MasterKey;
use cpns_proto::ProtoError;
use cpns_proto::server::{Publish, ServerConfig, ServerEvent, ServerOutput, ServerSession};
use cpns_proto::status::Subscription;
use cpns_store::ServerStore;
use cpns_wire::{EntityId, ErrorBody, ErrorCode, PneConfirmRequest, PneConfirmResponse};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::admission::{Admission, Authenticated, Unauthenticated};
use crate::error::NodeError;
use crate::frames::{DEFAULT_MAX_QUEUED, FrameError, FramedConn, PRE_AUTH_MAX_FRAME};
use crate::status_hub::{MAILBOX_LIMIT, Mailbox, StatusHub, Subscriber};
use crate::trace::{TraceSink, report};
use crate::{pki, server_store};

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
}

impl Default for ServerNodeConfig {
    fn default() -> Self {
        Self {
            proto: ServerConfig::default(),
            max_sessions: 10_000,
            max_unauthenticated: 256,
            max_queued: DEFAULT_MAX_QUEUED,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

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
}

/// How sessions signal and write to each other.
struct Office {
    /// Tells every session to stop, or to look for mail.
    signal: watch::Sender<Signal>,
    mailroom: Mutex<Mailroom>,
}

impl Office {
    fn room(&self) -> std::sync::MutexGuard<'_, Mailroom> {
        self.mailroom.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every session to look for mail.
    fn ring(&self) {
        self.signal.send_modify(|s| s.mail = s.mail.wrapping_add(1));
    }

    /// Posts the answer to question `ask` for the session of `to`.
    fn answer(
        &self,
        to: &EntityId,
        ask: u64,
        answer: Result<PneConfirmResponse, ErrorBody>,
        until: Instant,
    ) {
        let now = Instant::now();
        let letter = PeerMsg::Answer { ask, answer };
        if self.room().post(now, to, until, letter).is_ok() {
            self.ring();
        }
    }
}

/// What the server tells its sessions through one watch channel (so an idle session holds
/// nothing more than the receiver it has anyway): stop, or look for mail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    /// Every session ends.
    stop: bool,
    /// Bumped whenever a session has mail (001 §5.2.1.1: a PNE Confirm or its answer).
    mail: u64,
}

/// Questions and answers between PN GW sessions (001 §5.2.1.1 step 8: PNE Confirm to the
/// PNE's home PN GW, over that PN GW's own session), by the PN GW whose session takes them.
/// Held only while mail waits: an idle session costs nothing here.
#[derive(Default)]
struct Mailroom {
    boxes: HashMap<EntityId, VecDeque<Letter>>,
    /// Letters waiting in all boxes.
    letters: usize,
    /// Where each home session's answer goes, by the number it was given, until when.
    replies: HashMap<
        u64,
        (
            Instant,
            oneshot::Sender<Result<PneConfirmResponse, ErrorBody>>,
        ),
    >,
    /// Where each Capabilities Query's answer goes, by the number it was given, until when.
    caps_replies: HashMap<u64, (Instant, CapsReply)>,
    next: u64,
}

/// Where the answer to a Capabilities Query goes.
type CapsReply = oneshot::Sender<Result<cpns_wire::DeviceCapabilities, ErrorBody>>;

/// Most letters waiting at once; beyond, a question is refused busy.
const MAILROOM_LIMIT: usize = 1024;

/// One message for a session, and when it is no longer worth delivering.
struct Letter {
    id: u64,
    until: Instant,
    msg: PeerMsg,
}

/// How long a live session may take to pick up its mail: a question still in the box after it
/// went to a PN GW with no session, which is answered so at once.
const PICKUP: Duration = Duration::from_secs(2);

/// What one session hands another.
enum PeerMsg {
    /// A question for this session's PN GW, and where its answer goes.
    Ask {
        request: PneConfirmRequest,
        reply: oneshot::Sender<Result<PneConfirmResponse, ErrorBody>>,
    },
    /// The answer to a question this session asked.
    Answer {
        ask: u64,
        answer: Result<PneConfirmResponse, ErrorBody>,
    },
    /// Ask this session's PN GW for an entity's capabilities (004 §5.5.1: query by id).
    CapsAsk { entity: EntityId, reply: CapsReply },
}

impl Mailroom {
    /// Drops letters past their time (an answer's sender then reports the question unanswered).
    fn sweep(&mut self, now: Instant) {
        let mut kept = 0;
        self.boxes.retain(|_, b| {
            b.retain(|l| l.until > now);
            kept += b.len();
            !b.is_empty()
        });
        self.letters = kept;
        self.replies
            .retain(|_, (until, r)| *until > now && !r.is_closed());
        self.caps_replies
            .retain(|_, (until, r)| *until > now && !r.is_closed());
    }

    /// Posts `msg` for the session of `to`; its letter id, or the message back when the
    /// mailroom is full.
    fn post(
        &mut self,
        now: Instant,
        to: &EntityId,
        until: Instant,
        msg: PeerMsg,
    ) -> Result<u64, PeerMsg> {
        self.sweep(now);
        if self.letters >= MAILROOM_LIMIT {
            return Err(msg);
        }
        self.letters += 1;
        self.next += 1;
        let id = self.next;
        self.boxes
            .entry(to.clone())
            .or_default()
            .push_back(Letter { id, until, msg });
        Ok(id)
    }

    /// Takes back letter `id` from `to`'s box if no session took it; true if it was there.
    fn withdraw(&mut self, to: &EntityId, id: u64) -> bool {
        let Some(b) = self.boxes.get_mut(to) else {
            return false;
        };
        let before = b.len();
        b.retain(|l| l.id != id);
        let withdrawn = b.len() < before;
        if b.is_empty() {
            self.boxes.remove(to);
        }
        if withdrawn {
            self.letters = self.letters.saturating_sub(1);
        }
        withdrawn
    }

    fn take(&mut self, gw: &EntityId) -> VecDeque<Letter> {
        let letters = self.boxes.remove(gw).unwrap_or_default();
        self.letters = self.letters.saturating_sub(letters.len());
        letters
    }
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

    /// Serves PN GWs on `listener` until `shutdown` completes, then ends every session and
    /// returns once they have ended.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        if let Err(e) = self.load_hub().await {
            return Err(std::io::Error::other(format!(
                "loading status subscriptions: {e}"
            )));
        }
        let ticker = tokio::spawn(tick(self.hub()));
        let admission = Admission::new(self.cfg.max_unauthenticated, self.cfg.max_sessions);
        let stop_rx = self.office.signal.subscribe();
        let mut sessions = JoinSet::new();
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        info!(addr = %listener.local_addr()?, "CPNS Server listening");
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Its slot; when every unauthenticated slot is taken, the oldest unauthenticated
            // session is evicted for it, only once a newcomer is here (never ahead of one).
            let slot = tokio::select! {
                slot = admission.admit() => slot,
                () = &mut shutdown => break,
            };
            while sessions.try_join_next().is_some() {}
            let this = this.clone();
            let stop = stop_rx.clone();
            let span = info_span!("session", %peer);
            sessions.spawn(
                async move {
                    if let Err(e) = this.serve(stream, slot, stop).await {
                        debug!(error = %e, "session ended");
                    }
                }
                .instrument(span),
            );
        }
        info!("CPNS Server shutting down");
        this.office.signal.send_modify(|s| s.stop = true);
        while sessions.join_next().await.is_some() {}
        ticker.abort();
        Ok(())
    }

    /// One PN GW session: TLS, then the session machine, reading frames in this task. Before
    /// the PN GW authenticated, frames are small and the whole set-up has a short deadline;
    /// after, the session trades its slot for an authenticated one.
    ///
    /// What a session costs (docs/ARCHITECTURE.md decision 22): the handshake runs in a future
    /// of its own on the heap, dropped once done, and the TLS stream moves straight into the
    /// connection, so the session's task holds one copy of what an idle session needs.
    async fn serve(
        &self,
        stream: TcpStream,
        slot: Unauthenticated,
        stop: watch::Receiver<Signal>,
    ) -> Result<(), NodeError> {
        stream
            .set_nodelay(true)
            .map_err(|e| NodeError::Tls(e.to_string()))?;
        let (tls, exporter) = Box::pin(self.handshake(stream, &slot)).await?;
        let conn = Box::new(FramedConn::new(
            tls,
            PRE_AUTH_MAX_FRAME,
            self.cfg.max_queued,
        ));
        let mut end = SessionEnd::default();
        let result = self.run_session(conn, exporter, slot, stop, &mut end).await;
        self.end_session(end).await;
        result
    }

    /// A session ended: the hub stops delivering to its mailbox, and its PN GW and every PNE
    /// it reported turn offline (docs/device-status.md, "Reports"), their subscribers told.
    async fn end_session(&self, end: SessionEnd) {
        let Some(gw) = end.gateway else { return };
        if let Some(mailbox) = &end.mailbox {
            mailbox.close();
            self.hub.detach(&Subscriber::Entity(gw.clone()), mailbox);
            for e in &end.attached {
                self.hub.detach(&Subscriber::Entity(e.clone()), mailbox);
            }
        }
        match self
            .store
            .offline_reported_by(&gw, server_store::unix_millis())
            .await
        {
            Ok(changed) => server_store::publish(&self.hub, changed),
            Err(e) => warn!(%gw, error = %e, "could not record the PN GW offline"),
        }
    }

    /// The TLS handshake, within its deadline and until the slot is evicted.
    async fn handshake(
        &self,
        stream: TcpStream,
        slot: &Unauthenticated,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, [u8; 32]), NodeError> {
        let handshake = tokio::select! {
            r = tokio::time::timeout(self.cfg.handshake_timeout, self.tls.accept(stream)) => r,
            () = slot.evicted().cancelled() => {
                return Err(NodeError::Ended("evicted before the TLS handshake ended".into()));
            }
        };
        let tls = handshake
            .map_err(|_| NodeError::Tls("the handshake timed out".into()))?
            .map_err(|e| NodeError::Tls(format!("handshake: {e}")))?;
        let exporter = pki::exporter(tls.get_ref().1)?;
        Ok((tls, exporter))
    }

    /// The session machine over an established connection.
    async fn run_session<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut conn: Box<FramedConn<T>>,
        exporter: [u8; 32],
        slot: Unauthenticated,
        mut stop: watch::Receiver<Signal>,
        end: &mut SessionEnd,
    ) -> Result<(), NodeError> {
        let mut session = ServerSession::new(
            std::sync::Arc::clone(&self.proto),
            exporter,
            Instant::now(),
            cpns_crypto::MachineRng::os(),
        );
        session.set_wall_clock(Instant::now(), server_store::unix_millis());
        let mut slot = Slot::Unauthenticated(slot);
        loop {
            if !Box::pin(self.drain(&mut session, &mut conn, end)).await? {
                conn.close().await;
                return Ok(());
            }
            if let Slot::Unauthenticated(_) = &slot
                && let Some(gw) = session.gateway().cloned()
            {
                let Slot::Unauthenticated(s) = std::mem::replace(&mut slot, Slot::Gone) else {
                    return Err(NodeError::Ended("session slot lost".into()));
                };
                let Some(authed) = s.authenticate() else {
                    warn!(%gw, "refusing an authenticated PN GW: every session slot is taken");
                    return Err(NodeError::Ended("every session slot is taken".into()));
                };
                info!(%gw, "PN GW session authenticated");
                slot = Slot::Authenticated(authed);
                end.gateway = Some(gw.clone());
                // A mailbox only for a session with someone to notify (an idle session's
                // memory, ARCHITECTURE decision 22).
                self.reach(end, vec![(gw, true)]);
                conn.set_max_frame(self.cfg.proto.max_frame);
            }
            let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
            let evicted = match &slot {
                Slot::Unauthenticated(s) => Some(s.evicted().clone()),
                _ => None,
            };
            let mailbox = end.mailbox.clone();
            tokio::select! {
                frame = conn.next_frame() => match frame {
                    Ok(frame) => {
                        let handled = session.handle_frame(Instant::now(), &frame);
                        if let Err(e @ ProtoError::UnsupportedVersion { .. }) = &handled {
                            debug!(error = %e, "dropped a frame of another protocol version");
                        } else if let Err(e) = handled {
                            warn!(error = %e, "closing session: undecodable frame");
                            return Err(e.into());
                        }
                    }
                    Err(FrameError::Closed) => return Ok(()),
                    Err(e @ (FrameError::Io(_) | FrameError::Truncated)) => {
                        debug!(error = %e, "connection lost");
                        return Err(e.into());
                    }
                    Err(e) => {
                        warn!(error = %e, "closing session");
                        return Err(e.into());
                    }
                },
                () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
                Some(notes) = take_mail(mailbox) => {
                    for n in notes {
                        if let Subscriber::Entity(to) = n.to {
                            session.notify(to, n.notification);
                        }
                    }
                }
                () = cancelled(evicted) => {
                    return Err(NodeError::Ended(
                        "evicted: a newer connection needed the slot".into(),
                    ));
                }
                changed = stop.changed() => {
                    if changed.is_err() || stop.borrow().stop {
                        return Ok(());
                    }
                    self.deliver_mail(&mut session);
                }
            }
        }
    }

    fn room(&self) -> std::sync::MutexGuard<'_, Mailroom> {
        self.office.room()
    }

    /// 001 §5.2.1.1 step 8: posts `request` for the session of `gateway`; its answer comes back
    /// as mail to this session. A full mailroom is answered at once (`busy`); a PN GW with no
    /// session never takes the letter, and the asking establishment's own deadline answers.
    fn ask_peer(
        &self,
        session: &mut ServerSession,
        gateway: EntityId,
        ask: u64,
        request: PneConfirmRequest,
    ) {
        let Some(me) = session.gateway().cloned() else {
            return;
        };
        let now = Instant::now();
        let until = now + self.cfg.proto.timeouts.flow / 2;
        let (reply, answer) = oneshot::channel();
        let posted = self
            .room()
            .post(now, &gateway, until, PeerMsg::Ask { request, reply });
        let Ok(letter) = posted else {
            let e = ErrorBody::new(
                ErrorCode::Busy,
                "the CPNS Server has too many questions between PN GWs open",
            );
            return session.handle_gateway_answer(ask, Err(e));
        };
        self.office.ring();
        // The answer, or its absence once the letter or the home session is gone, comes back
        // as mail; the establishment's own deadline bounds the wait.
        let office = self.office.clone();
        tokio::spawn(async move {
            let mut answer = answer;
            let got = tokio::select! {
                a = &mut answer => Some(a),
                () = tokio::time::sleep(PICKUP) => None,
            };
            let got = match got {
                Some(a) => a.ok(),
                // Not picked up: no session of that PN GW here.
                None if office.room().withdraw(&gateway, letter) => {
                    let e = ErrorBody::new(
                        ErrorCode::Timeout,
                        format!("its home PN GW {gateway} is not connected to the CPNS Server"),
                    );
                    Some(Err(e))
                }
                None => {
                    let wait = until.saturating_duration_since(Instant::now());
                    tokio::time::timeout(wait, answer)
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
            };
            let answer = got.unwrap_or_else(|| {
                Err(ErrorBody::new(
                    ErrorCode::Timeout,
                    format!("its home PN GW {gateway} did not answer in time"),
                ))
            });
            office.answer(&me, ask, answer, until);
        });
    }

    /// Mail for this session's PN GW: questions go to its machine, answers to the flows that
    /// asked.
    fn deliver_mail(&self, session: &mut ServerSession) {
        let Some(gw) = session.gateway().cloned() else {
            return;
        };
        let letters = self.room().take(&gw);
        let now = Instant::now();
        for letter in letters {
            match letter.msg {
                PeerMsg::Ask { request, reply } => {
                    let id = {
                        let mut room = self.room();
                        room.next += 1;
                        let id = room.next;
                        room.replies.insert(id, (letter.until, reply));
                        id
                    };
                    session.confirm_for_other(now, id, request);
                }
                PeerMsg::Answer { ask, answer } => session.handle_gateway_answer(ask, answer),
                PeerMsg::CapsAsk { entity, reply } => {
                    let id = {
                        let mut room = self.room();
                        room.next += 1;
                        let id = room.next;
                        room.caps_replies.insert(id, (letter.until, reply));
                        id
                    };
                    session.ask_capabilities(now, entity, id);
                }
            }
        }
    }

    /// Carries out everything the session asks; false once it asked to close.
    async fn drain<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut ServerSession,
        conn: &mut FramedConn<T>,
        end: &mut SessionEnd,
    ) -> Result<bool, NodeError> {
        while let Some(out) = session.poll_output() {
            match out {
                ServerOutput::Transmit { frame, trace } => {
                    if self.trace.is_some() {
                        let peer = session
                            .gateway()
                            .map_or_else(|| "gateway".to_string(), |g| g.to_string());
                        report(&self.trace, "server", &peer, &trace);
                    }
                    conn.queue(&frame)?;
                }
                ServerOutput::Load { token, load } => {
                    conn.write_now()?;
                    let loaded = Box::pin(server_store::load(
                        &self.store,
                        &self.master,
                        &self.keys,
                        &load,
                    ))
                    .await;
                    // A failed read ends the flow that asked, not the session.
                    if let Err(e) = &loaded {
                        warn!(error = %e, load = load.name(), "load failed");
                    }
                    session.handle_loaded(Instant::now(), token, loaded)?;
                }
                ServerOutput::Persist { token, effect } => {
                    conn.write_now()?;
                    let result =
                        Box::pin(server_store::persist(&self.store, &self.master, effect)).await;
                    if let Err(e) = &result {
                        warn!(error = %e, "persist failed");
                    }
                    session.handle_persisted(Instant::now(), token, result)?;
                }
                ServerOutput::Publish(p) => self.publish(end, p),
                ServerOutput::Event(e) => {
                    debug!(event = ?e, "server");
                    if let Some(tx) = &self.events
                        && tx.try_send(e).is_err()
                    {
                        debug!("server event dropped: the consumer is not keeping up");
                    }
                }
                ServerOutput::AskGateway {
                    gateway,
                    ask,
                    request,
                } => self.ask_peer(session, gateway, ask, request),
                ServerOutput::GatewayAnswer { ask, answer } => {
                    let reply = self.room().replies.remove(&ask);
                    if let Some((_, reply)) = reply {
                        let _ = reply.send(answer);
                    }
                }
                ServerOutput::CapabilitiesAnswered { ask, result } => {
                    let reply = self.room().caps_replies.remove(&ask);
                    if let Some((_, reply)) = reply {
                        let _ = reply.send(result);
                    }
                }
                ServerOutput::Close { reason } => {
                    debug!(%reason, "closing session");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Asks a running server's sessions on behalf of a local operator or application (CPNS-4 on
/// the server's control socket; docs/device-status.md).
#[derive(Clone)]
pub struct ServerHandle<S> {
    office: Arc<Office>,
    hub: Arc<StatusHub>,
    store: S,
    wait: Duration,
}

impl<S: ServerStore + Clone> ServerHandle<S> {
    /// The status hub.
    pub fn hub(&self) -> &Arc<StatusHub> {
        &self.hub
    }

    /// The store of record.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// `entity`'s capabilities as its device holds them now (004 §5.5.1, query by id): asked
    /// of its PN GW's session, which answers for itself or relays the query to the PNE. A PNE
    /// is reached through the PN GW that reported it online; one that is not online, or whose
    /// PN GW has no session here, is `not_found`.
    pub async fn ask_capabilities(
        &self,
        entity: &EntityId,
    ) -> Result<cpns_wire::DeviceCapabilities, ErrorBody> {
        let internal =
            |e: cpns_store::StoreError| ErrorBody::new(ErrorCode::Internal, e.to_string());
        let rec = self
            .store
            .statuses(std::slice::from_ref(entity))
            .await
            .map_err(internal)?
            .pop()
            .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, format!("no entity {entity}")))?;
        let enrolled = self.store.entity(entity).await.map_err(internal)?;
        let is_gateway = enrolled.is_some_and(|e| e.kind.is_gateway());
        let via = match (&rec.reported_by, is_gateway) {
            (_, true) if rec.status != cpns_wire::Status::Offline => entity.clone(),
            (Some(gw), false) if rec.status != cpns_wire::Status::Offline => gw.clone(),
            _ => {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!("{entity} is offline: no PN GW reaches it now"),
                ));
            }
        };
        let now = Instant::now();
        let until = now + self.wait;
        let (reply, answer) = oneshot::channel();
        let letter = PeerMsg::CapsAsk {
            entity: entity.clone(),
            reply,
        };
        let posted = self.office.room().post(now, &via, until, letter);
        let Ok(id) = posted else {
            return Err(ErrorBody::new(
                ErrorCode::Busy,
                "the CPNS Server has too many questions for PN GWs open",
            ));
        };
        self.office.ring();
        let late = || {
            ErrorBody::new(
                ErrorCode::Timeout,
                format!("{entity} did not answer in time"),
            )
        };
        let mut answer = answer;
        if let Ok(got) = tokio::time::timeout(PICKUP, &mut answer).await {
            return got.unwrap_or_else(|_| Err(late()));
        }
        // Not answered within the pick-up time: gone if the letter was never taken.
        if self.office.room().withdraw(&via, id) {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("{via} has no session with the CPNS Server"),
            ));
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(late()),
        }
    }
}

impl<S: ServerStore + Clone> ServerNode<S> {
    /// Carries out what the session's machine says the status hub must do, once the effect it
    /// follows is stored (docs/device-status.md, "Fan-out").
    fn publish(&self, end: &mut SessionEnd, p: Publish) {
        match p {
            Publish::Changed(states) => {
                for state in states {
                    self.hub.publish(state);
                }
            }
            Publish::Subscribed {
                subscription,
                states,
            } => {
                let subscription = Subscription {
                    id: subscription.id,
                    subscriber: Subscriber::Entity(subscription.subscriber),
                    watched: subscription.watched,
                    policy: subscription.policy,
                };
                // The snapshot was made by the machine from the same records.
                let _ = self.hub.subscribe(Instant::now(), subscription, states);
            }
            Publish::Unsubscribed { subscriber, id } => {
                self.hub.unsubscribe(&Subscriber::Entity(subscriber), id);
            }
            Publish::Reach { entity, here } => self.reach(end, vec![(entity, here)]),
            other => debug!(publish = ?other, "a publish this server does not know"),
        }
    }

    /// Attaches the entities this session reaches (its PN GW, PNEs it reported online or that
    /// subscribed through it) that hold subscriptions to its mailbox, made when first needed;
    /// detaches those it no longer reaches.
    fn reach(&self, end: &mut SessionEnd, reach: Vec<(EntityId, bool)>) {
        for (entity, here) in reach {
            let who = Subscriber::Entity(entity.clone());
            if here {
                if self.hub.count_of(&who) == 0 {
                    continue;
                }
                let mailbox = end
                    .mailbox
                    .get_or_insert_with(|| Mailbox::new(MAILBOX_LIMIT));
                self.hub.attach(who, mailbox);
                end.attached.insert(entity);
            } else if let Some(mailbox) = &end.mailbox {
                self.hub.detach(&who, mailbox);
                end.attached.remove(&entity);
            }
        }
    }
}

/// The notifications waiting in `mailbox`; never without one.
async fn take_mail(mailbox: Option<Arc<Mailbox>>) -> Option<Vec<crate::status_hub::Pending>> {
    match mailbox {
        Some(m) => m.take().await,
        None => std::future::pending().await,
    }
}

/// Delivers periodic notifications when they are due.
async fn tick(hub: Arc<StatusHub>) {
    loop {
        let now = Instant::now();
        let next = hub
            .next_tick()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        hub.tick(Instant::now());
    }
}

/// The connection slot a session holds (kept for its `Drop`, which gives the slot back).
enum Slot {
    Unauthenticated(Unauthenticated),
    Authenticated(#[allow(dead_code)] Authenticated),
    Gone,
}

/// Completes when `token` is cancelled; never without one.
pub(crate) async fn cancelled(token: Option<tokio_util::sync::CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle session's task holds is a measured cost (docs/ARCHITECTURE.md decision 22):
    /// the session future stays small — the handshake lives in its own short-lived box, the
    /// connection in one box, and nothing is copied twice by moves. A regression (a large
    /// future awaited inline, a connection moved into a future) fails here.
    #[tokio::test]
    async fn a_session_future_holds_one_small_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = cpns_store::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        let p = pki::generate(&["localhost".into()]).unwrap();
        let node = ServerNode::new(
            ServerNodeConfig::default(),
            store,
            MasterKey::generate().unwrap(),
            &p.server_cert_pem,
            &p.server_key_pem,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let admission = Admission::new(1, 1);
        let slot = admission.admit().await;
        let (_stop_tx, stop) = watch::channel(Signal::default());
        let serve = node.serve(tcp, slot, stop);
        let size = std::mem::size_of_val(&serve);
        assert!(size <= 2048, "a session future of {size} bytes");
        drop(serve);
        node.store.close().await;
    }
}
