//! The CPNS Server runtime: a TLS 1.3 listener for PN GW sessions (CPNS-2/7), one task per
//! session driving a [`ServerSession`], the state of record in a [`Store`].
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
use cpns_proto::server::{ServerConfig, ServerEvent, ServerOutput, ServerSession};
use cpns_store::Store;
use cpns_wire::{EntityId, ErrorBody, ErrorCode, PneConfirmRequest, PneConfirmResponse};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::admission::{Admission, Authenticated, Unauthenticated};
use crate::error::NodeError;
use crate::frames::{DEFAULT_MAX_QUEUED, FrameError, FramedConn, PRE_AUTH_MAX_FRAME};
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
    peers: Peers,
}

/// The inboxes of the authenticated PN GW sessions, by PN GW: how one session asks another
/// (001 §5.2.1.1 step 8, PNE Confirm to the PNE's home PN GW) and gets the answer back.
type Peers = Arc<Mutex<HashMap<EntityId, Arc<Inbox>>>>;

/// Questions and answers from other sessions, waiting for this session's task.
#[derive(Default)]
struct Inbox {
    notify: Notify,
    queue: Mutex<VecDeque<PeerMsg>>,
}

/// Most questions and answers one session's inbox holds; beyond, a question is refused busy.
const INBOX_LIMIT: usize = 64;

impl Inbox {
    /// Queues `msg` and wakes the session; gives it back when the inbox is full.
    fn post(&self, msg: PeerMsg) -> Result<(), PeerMsg> {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= INBOX_LIMIT {
            return Err(msg);
        }
        q.push_back(msg);
        drop(q);
        self.notify.notify_one();
        Ok(())
    }

    fn take(&self) -> Option<PeerMsg> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

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
}

/// A session's side of [`Peers`]: its inbox, once its PN GW is authenticated, and the
/// questions of other sessions its PN GW has yet to answer.
#[derive(Default)]
struct PeerState {
    inbox: Option<(EntityId, Arc<Inbox>)>,
    replies: HashMap<u64, oneshot::Sender<Result<PneConfirmResponse, ErrorBody>>>,
    next: u64,
}

impl<S> core::fmt::Debug for ServerNode<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerNode")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl<S: Store + Clone> ServerNode<S> {
    /// A server with its store, master key and TLS certificate (PEM).
    pub fn new(
        cfg: ServerNodeConfig,
        store: S,
        master: MasterKey,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, pki::PkiError> {
        let tls = TlsAcceptor::from(pki::server_config(cert_pem, key_pem)?);
        Ok(Self {
            cfg,
            store,
            master: Arc::new(master),
            tls,
            trace: None,
            events: None,
            keys: server_store::KeyCache::new(KEY_CACHE_ENTRIES),
            peers: Peers::default(),
        })
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
        let admission = Admission::new(self.cfg.max_unauthenticated, self.cfg.max_sessions);
        let (stop_tx, stop_rx) = watch::channel(false);
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
        let _ = stop_tx.send(true);
        while sessions.join_next().await.is_some() {}
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
        stop: watch::Receiver<bool>,
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
        self.run_session(conn, exporter, slot, stop).await
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
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        let mut session = ServerSession::new(
            self.cfg.proto.clone(),
            exporter,
            Instant::now(),
            cpns_crypto::MachineRng::os(),
        );
        let mut slot = Slot::Unauthenticated(slot);
        let mut peer = PeerState::default();
        let ended = self
            .session_loop(&mut session, &mut conn, &mut slot, &mut stop, &mut peer)
            .await;
        if let Some((gw, inbox)) = peer.inbox.take() {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            if peers.get(&gw).is_some_and(|i| Arc::ptr_eq(i, &inbox)) {
                peers.remove(&gw);
            }
        }
        ended
    }

    async fn session_loop<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut ServerSession,
        conn: &mut Box<FramedConn<T>>,
        slot: &mut Slot,
        stop: &mut watch::Receiver<bool>,
        peer: &mut PeerState,
    ) -> Result<(), NodeError> {
        loop {
            if !Box::pin(self.drain(session, conn, peer)).await? {
                conn.close().await;
                return Ok(());
            }
            if let Slot::Unauthenticated(_) = &slot
                && let Some(gw) = session.gateway().cloned()
            {
                let Slot::Unauthenticated(s) = std::mem::replace(slot, Slot::Gone) else {
                    return Err(NodeError::Ended("session slot lost".into()));
                };
                let Some(authed) = s.authenticate() else {
                    warn!(%gw, "refusing an authenticated PN GW: every session slot is taken");
                    return Err(NodeError::Ended("every session slot is taken".into()));
                };
                info!(%gw, "PN GW session authenticated");
                *slot = Slot::Authenticated(authed);
                conn.set_max_frame(self.cfg.proto.max_frame);
                // Other sessions reach this PN GW through its inbox (the newest session wins).
                let inbox = Arc::new(Inbox::default());
                self.peers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(gw.clone(), inbox.clone());
                peer.inbox = Some((gw, inbox));
            }
            let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
            let evicted = match &*slot {
                Slot::Unauthenticated(s) => Some(s.evicted().clone()),
                _ => None,
            };
            let inbox = peer.inbox.as_ref().map(|(_, i)| i.clone());
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
                () = notified(inbox.as_deref()) => {
                    while let Some(msg) = inbox.as_ref().and_then(|i| i.take()) {
                        match msg {
                            PeerMsg::Ask { request, reply } => {
                                peer.next += 1;
                                peer.replies.insert(peer.next, reply);
                                session.confirm_for_other(Instant::now(), peer.next, request);
                            }
                            PeerMsg::Answer { ask, answer } => session.handle_gateway_answer(ask, answer),
                        }
                    }
                }
                () = cancelled(evicted) => {
                    return Err(NodeError::Ended(
                        "evicted: a newer connection needed the slot".into(),
                    ));
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// 001 §5.2.1.1 step 8: hands `request` to the session of `gateway`; its answer comes back
    /// through this session's inbox. A PN GW without a session, or one whose inbox is full,
    /// is answered at once.
    fn ask_peer(
        &self,
        session: &mut ServerSession,
        peer: &PeerState,
        gateway: EntityId,
        ask: u64,
        request: PneConfirmRequest,
    ) {
        let home = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&gateway)
            .cloned();
        let (Some(home), Some((_, me))) = (home, peer.inbox.as_ref()) else {
            let e = ErrorBody::new(
                ErrorCode::Timeout,
                format!("its home PN GW {gateway} is not connected to the CPNS Server"),
            );
            return session.handle_gateway_answer(ask, Err(e));
        };
        let (reply, answer) = oneshot::channel();
        if home.post(PeerMsg::Ask { request, reply }).is_err() {
            let e = ErrorBody::new(ErrorCode::Busy, format!("its home PN GW {gateway} is busy"));
            return session.handle_gateway_answer(ask, Err(e));
        }
        // The home session answers within its own deadline; a session that ends first drops
        // the reply, which is answered as a timeout.
        let me = Arc::downgrade(me);
        tokio::spawn(async move {
            let answer = answer.await.unwrap_or_else(|_| {
                Err(ErrorBody::new(
                    ErrorCode::Timeout,
                    "its home PN GW's session ended before it answered",
                ))
            });
            if let Some(me) = me.upgrade() {
                let _ = me.post(PeerMsg::Answer { ask, answer });
            }
        });
    }

    /// Carries out everything the session asks; false once it asked to close.
    async fn drain<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut ServerSession,
        conn: &mut FramedConn<T>,
        peer: &mut PeerState,
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
                ServerOutput::Load { token, request } => {
                    conn.write_now()?;
                    let loaded = Box::pin(server_store::load(
                        &self.store,
                        &self.master,
                        &self.keys,
                        &request,
                    ))
                    .await?;
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
                } => self.ask_peer(session, peer, gateway, ask, request),
                ServerOutput::GatewayAnswer { ask, answer } => {
                    if let Some(reply) = peer.replies.remove(&ask) {
                        let _ = reply.send(answer);
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

/// Waits for a message in `inbox`; forever without one (a session not authenticated yet).
async fn notified(inbox: Option<&Inbox>) {
    match inbox {
        Some(i) => i.notify.notified().await,
        None => std::future::pending().await,
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
        let (_stop_tx, stop) = watch::channel(false);
        let serve = node.serve(tcp, slot, stop);
        let size = std::mem::size_of_val(&serve);
        assert!(size <= 2048, "a session future of {size} bytes");
        drop(serve);
        node.store.close().await;
    }
}
