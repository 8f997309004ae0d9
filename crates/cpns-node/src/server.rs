//! The CPNS Server runtime: a TLS 1.3 listener for PN GW sessions (CPNS-2/7), one task per
//! session driving a [`ServerSession`], the state of record in a [`Store`].
//!
//! Shape after mini-redis: the accept loop takes a permit from a semaphore before accepting, so
//! at most `max_sessions` sessions run; a watch channel tells every session to stop; `run`
//! returns once every session has ended.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpns_crypto::MasterKey;
use cpns_proto::server::{ServerConfig, ServerEvent, ServerOutput, ServerSession};
use cpns_store::Store;
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::frames::{FrameError, FrameReader, write_frame};
use crate::trace::{TraceSink, report};
use crate::{pki, server_store};

/// Settings of the server runtime.
#[derive(Clone, Debug)]
pub struct ServerNodeConfig {
    /// Protocol settings.
    pub proto: ServerConfig,
    /// Most concurrent PN GW sessions; further connections wait to be accepted.
    pub max_sessions: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ServerNodeConfig {
    fn default() -> Self {
        Self {
            proto: ServerConfig::default(),
            max_sessions: 10_000,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What a server session reports to whoever runs the server (the demo, tests).
pub type ServerEvents = Option<mpsc::UnboundedSender<ServerEvent>>;

/// The CPNS Server runtime.
pub struct ServerNode<S> {
    cfg: ServerNodeConfig,
    store: S,
    master: Arc<MasterKey>,
    tls: TlsAcceptor,
    trace: TraceSink,
    events: ServerEvents,
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
        let limit = Arc::new(Semaphore::new(self.cfg.max_sessions));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = JoinSet::new();
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        info!(addr = %listener.local_addr()?, "CPNS Server listening");
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
                () = &mut shutdown => break,
            };
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
            while sessions.try_join_next().is_some() {}
            let this = this.clone();
            let stop = stop_rx.clone();
            let span = info_span!("session", %peer);
            sessions.spawn(
                async move {
                    if let Err(e) = this.serve(stream, stop).await {
                        debug!(error = %e, "session ended");
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
        info!("CPNS Server shutting down");
        let _ = stop_tx.send(true);
        while sessions.join_next().await.is_some() {}
        Ok(())
    }

    async fn serve(
        &self,
        stream: TcpStream,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), String> {
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(self.cfg.handshake_timeout, self.tls.accept(stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let exporter = pki::exporter(tls.get_ref().1).map_err(|e| e.to_string())?;
        let (rd, mut wr) = tokio::io::split(tls);
        let mut frames = spawn_reader(rd, self.cfg.proto.max_frame);
        let mut session = ServerSession::new(
            self.cfg.proto.clone(),
            exporter,
            Instant::now(),
            cpns_crypto::MachineRng::os(),
        );
        loop {
            if !self.drain(&mut session, &mut wr).await? {
                return Ok(());
            }
            let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(Ok(frame)) => {
                        if let Err(e) = session.handle_frame(Instant::now(), &frame) {
                            warn!(error = %e, "closing session: undecodable frame");
                            return Err(e.to_string());
                        }
                    }
                    Some(Err(FrameError::Closed)) | None => return Ok(()),
                    Some(Err(e)) => {
                        warn!(error = %e, "closing session");
                        return Err(e.to_string());
                    }
                },
                () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Carries out everything the session asks; false once it asked to close.
    async fn drain<W: AsyncWrite + Unpin>(
        &self,
        session: &mut ServerSession,
        wr: &mut WriteHalf<W>,
    ) -> Result<bool, String> {
        while let Some(out) = session.poll_output() {
            match out {
                ServerOutput::Transmit { frame, trace } => {
                    let peer = session
                        .gateway()
                        .map_or_else(|| "gateway".to_string(), |g| g.to_string());
                    report(&self.trace, "server", &peer, &trace);
                    write_frame(wr, &frame).await.map_err(|e| e.to_string())?;
                }
                ServerOutput::Load { token, request } => {
                    let loaded = server_store::load(&self.store, &self.master, &request)
                        .await
                        .map_err(|e| format!("store: {e}"))?;
                    session
                        .handle_loaded(Instant::now(), token, loaded)
                        .map_err(|e| e.to_string())?;
                }
                ServerOutput::Persist { token, effect } => {
                    let result = server_store::persist(&self.store, &self.master, effect).await;
                    if let Err(e) = &result {
                        warn!(error = %e, "persist failed");
                    }
                    session
                        .handle_persisted(Instant::now(), token, result)
                        .map_err(|e| e.to_string())?;
                }
                ServerOutput::Event(e) => {
                    // The driver reports events (the CLI prints them); the Debug form is for debugging.
                    debug!(event = ?e, "server");
                    if let Some(tx) = &self.events {
                        let _ = tx.send(e);
                    }
                }
                ServerOutput::Close { reason } => {
                    info!(%reason, "closing session");
                    let _ = tokio::io::AsyncWriteExt::shutdown(wr).await;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Reads frames in a task of its own (reading is not cancel-safe) and hands them over. The task
/// ends, dropping its half of the stream, as soon as the receiver is dropped: a session that ends
/// on a bad frame must not leave the connection open behind it.
pub(crate) fn spawn_reader<R: AsyncRead + Send + 'static>(
    rd: R,
    max_frame: u32,
) -> mpsc::Receiver<Result<Vec<u8>, FrameError>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut reader = FrameReader::new(Box::pin(rd), max_frame);
        loop {
            // Cancelling a read mid-frame is fine here: nobody will read this stream again.
            let item = tokio::select! {
                item = reader.next() => item.map(<[u8]>::to_vec),
                () = tx.closed() => return,
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    rx
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
