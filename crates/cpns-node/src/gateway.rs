//! The PN GW runtime: a TLS session to the CPNS Server (CPNS-7), a PAN listener for PNEs
//! (CPNS-1), and one task that owns the [`Gateway`] machine and its local store.
//!
//! Sockets are served by small tasks that only read or write frames; everything they read goes
//! through one channel to the machine's task, so the machine needs no lock. The local PN
//! inventory is reloaded from the store at start (a restarted PN GW keeps its PNs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cpns_proto::gateway::{
    EstablishTargets, Gateway, GatewayConfig, GatewayEvent, GatewayOutput, LinkId,
};
use cpns_proto::{LocalPnState, PanSecurity, ProtoError};
use cpns_store::{LocalMember, LocalPn, Store};
use cpns_wire::{EntityId, PnId, PnInventory};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::frames::FrameError;
use crate::server::{sleep_until, spawn_reader};
use crate::server_store::{caps_bytes, inventory_member, unix_millis};
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
    /// Most concurrent PAN links.
    pub max_links: usize,
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
        }
    }
}

enum Input {
    LinkOpened(LinkId, mpsc::UnboundedSender<Vec<u8>>),
    LinkFrame(LinkId, Result<Vec<u8>, FrameError>),
    WanFrame(Result<Vec<u8>, FrameError>),
    Establish(EstablishTargets, oneshot::Sender<Result<PnId, ProtoError>>),
    Inventory(oneshot::Sender<Vec<PnInventory>>),
}

/// Commands to a running PN GW.
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    tx: mpsc::UnboundedSender<Input>,
}

impl GatewayHandle {
    /// 000 §6.6.1.2: start a PN GW-initiated establishment.
    pub async fn establish(&self, targets: EstablishTargets) -> Result<PnId, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Establish(targets, tx))
            .map_err(|_| "the PN GW stopped".to_string())?;
        rx.await
            .map_err(|_| "the PN GW stopped".to_string())?
            .map_err(|e| e.to_string())
    }

    /// The PN GW's local PN inventory.
    pub async fn inventory(&self) -> Result<Vec<PnInventory>, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Inventory(tx))
            .map_err(|_| "the PN GW stopped".to_string())?;
        rx.await.map_err(|_| "the PN GW stopped".to_string())
    }
}

/// A local PN as the store keeps it.
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
                capabilities: m.capabilities.as_ref().map(caps_bytes),
                sealed_local_key: state
                    .wrapped_keys
                    .iter()
                    .find(|(p, _)| *p == m.pne_id)
                    .map(|(_, k)| k.clone()),
                route: Some("pan".into()),
            })
            .collect(),
        stored_at: unix_millis(),
    }
}

/// A local PN from the store.
pub fn local_pn_state(pn: &LocalPn) -> LocalPnState {
    LocalPnState {
        inventory: PnInventory {
            pn_id: pn.pn_id,
            gateway: pn.gateway.clone(),
            members: pn
                .members
                .iter()
                .map(|m| inventory_member(&m.pne_id, m.capabilities.as_deref()))
                .collect(),
        },
        wrapped_keys: pn
            .members
            .iter()
            .filter_map(|m| Some((m.pne_id.clone(), m.sealed_local_key.clone()?)))
            .collect(),
    }
}

/// Starts the PN GW: reloads its local PNs, connects to the server, serves PNEs on
/// `pan_listener`. Events go to `events`; the returned task ends when `stop` fires or the WAN
/// session ends.
pub async fn start<S: Store>(
    cfg: GatewayNodeConfig,
    store: S,
    pan_listener: TcpListener,
    events: mpsc::UnboundedSender<GatewayEvent>,
    trace: TraceSink,
    stop: oneshot::Receiver<()>,
) -> Result<(GatewayHandle, tokio::task::JoinHandle<Result<(), String>>), String> {
    let mut machine = Gateway::new(cfg.proto.clone(), cpns_crypto::MachineRng::os());
    let stored = store
        .local_pns()
        .await
        .map_err(|e| format!("local store: {e}"))?;
    machine
        .restore(stored.iter().map(local_pn_state).collect())
        .map_err(|e| format!("local store: {e}"))?;
    info!(pns = stored.len(), "local PN inventory reloaded");

    // WAN: TLS 1.3 to the server, exporter for the EUKey challenge-response.
    let connector =
        TlsConnector::from(pki::client_config(&cfg.ca_cert_pem).map_err(|e| e.to_string())?);
    let tcp = TcpStream::connect(&cfg.server_addr)
        .await
        .map_err(|e| format!("connect {}: {e}", cfg.server_addr))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(cfg.server_name.clone()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to the server: {e}"))?;
    let exporter = pki::exporter(tls.get_ref().1).map_err(|e| e.to_string())?;
    let (wan_rd, mut wan_wr) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut wan_frames = spawn_reader(wan_rd, cfg.proto.max_frame);
    let wan_tx = tx.clone();
    tokio::spawn(async move {
        while let Some(f) = wan_frames.recv().await {
            if wan_tx.send(Input::WanFrame(f)).is_err() {
                return;
            }
        }
    });
    let (wan_out, mut wan_out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = wan_out_rx.recv().await {
            if crate::frames::write_frame(&mut wan_wr, &frame)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = wan_wr.shutdown().await;
    });
    machine
        .wan_connected(Instant::now(), exporter)
        .map_err(|e| e.to_string())?;

    // PAN: accept PNEs.
    let accept_tx = tx.clone();
    let max_frame = cfg.proto.max_frame;
    let limit = Arc::new(Semaphore::new(cfg.max_links));
    let security = cfg.pan_security;
    let pan_task = tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = pan_listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            next += 1;
            let link = LinkId(next);
            let (rd, mut wr) = stream.into_split();
            let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
            if accept_tx.send(Input::LinkOpened(link, out_tx)).is_err() {
                return;
            }
            // When the machine closes the link (its writer channel is dropped), the writer
            // shuts the socket and tells the reader to stop, which frees the link's slot.
            let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
            tokio::spawn(async move {
                while let Some(frame) = out_rx.recv().await {
                    if crate::frames::write_frame(&mut wr, &frame).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
                let _ = closed_tx.send(());
            });
            let mut frames = spawn_reader(rd, max_frame);
            let in_tx = accept_tx.clone();
            tokio::spawn(async move {
                loop {
                    let f = tokio::select! {
                        f = frames.recv() => f,
                        _ = &mut closed_rx => Some(Err(FrameError::Closed)),
                    };
                    let Some(f) = f else { break };
                    let end = f.is_err();
                    if in_tx.send(Input::LinkFrame(link, f)).is_err() || end {
                        break;
                    }
                }
                drop(permit);
            });
        }
    });

    let handle = GatewayHandle { tx };
    let me = cfg.proto.id.clone();
    let task = tokio::spawn(async move {
        let mut actor = Actor {
            machine,
            store,
            links: HashMap::new(),
            peers: HashMap::new(),
            wan_out,
            events,
            trace,
            me,
        };
        let r = actor.run(&mut rx, security, stop).await;
        pan_task.abort();
        r
    });
    Ok((handle, task))
}

struct Actor<S> {
    machine: Gateway,
    store: S,
    links: HashMap<LinkId, mpsc::UnboundedSender<Vec<u8>>>,
    peers: HashMap<LinkId, EntityId>,
    wan_out: mpsc::UnboundedSender<Vec<u8>>,
    events: mpsc::UnboundedSender<GatewayEvent>,
    trace: TraceSink,
    me: EntityId,
}

impl<S: Store> Actor<S> {
    async fn run(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Input>,
        security: PanSecurity,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), String> {
        loop {
            self.drain().await?;
            let deadline = self
                .machine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let input = tokio::select! {
                i = rx.recv() => match i { Some(i) => i, None => return Ok(()) },
                () = sleep_until(deadline) => {
                    self.machine.handle_timeout(Instant::now());
                    continue;
                }
                _ = &mut stop => return Ok(()),
            };
            let now = Instant::now();
            match input {
                Input::LinkOpened(link, out) => {
                    self.links.insert(link, out);
                    self.machine.link_opened(link, security);
                }
                Input::LinkFrame(link, Ok(frame)) => {
                    if let Err(e) = self.machine.handle_pan_frame(now, link, &frame) {
                        warn!(link = link.0, error = %e, "PAN link closed: bad frame");
                    }
                }
                Input::LinkFrame(link, Err(e)) => {
                    if !matches!(e, FrameError::Closed) {
                        warn!(link = link.0, error = %e, "PAN link closed");
                    }
                    self.links.remove(&link);
                    self.peers.remove(&link);
                    self.machine.link_closed(now, link);
                }
                Input::WanFrame(Ok(frame)) => {
                    if let Err(e) = self.machine.handle_wan_frame(now, &frame) {
                        return Err(format!("bad frame from the server: {e}"));
                    }
                }
                Input::WanFrame(Err(e)) => {
                    self.machine.wan_closed(now);
                    self.drain().await?;
                    return Err(format!("the server session ended: {e}"));
                }
                Input::Establish(targets, reply) => {
                    let _ = reply.send(self.machine.start_establishment(now, targets));
                }
                Input::Inventory(reply) => {
                    let _ = reply.send(self.machine.inventory().into_iter().cloned().collect());
                }
            }
        }
    }

    async fn drain(&mut self) -> Result<(), String> {
        while let Some(out) = self.machine.poll_output() {
            match out {
                GatewayOutput::TransmitWan { frame, trace } => {
                    report(&self.trace, self.me.as_str(), "server", &trace);
                    let _ = self.wan_out.send(frame);
                }
                GatewayOutput::TransmitPan { link, frame, trace } => {
                    let peer = self
                        .peers
                        .get(&link)
                        .map_or_else(|| trace.to.clone(), |p| p.to_string());
                    report(&self.trace, self.me.as_str(), &peer, &trace);
                    if let Some(tx) = self.links.get(&link) {
                        let _ = tx.send(frame);
                    }
                }
                GatewayOutput::CloseLink { link, reason } => {
                    info!(link = link.0, %reason, "closing PAN link");
                    // Dropping the writer's channel closes the socket once queued frames are out.
                    self.links.remove(&link);
                }
                GatewayOutput::CloseWan { reason } => return Err(reason),
                GatewayOutput::Persist { token, pn } => {
                    let result = self
                        .store
                        .save_local_pn(&local_pn_record(&pn))
                        .await
                        .map_err(|e| e.to_string());
                    self.machine
                        .handle_persisted(Instant::now(), token, result)
                        .map_err(|e| e.to_string())?;
                }
                GatewayOutput::Event(e) => {
                    if let GatewayEvent::PneDiscovered { link, pne } = &e {
                        self.peers.insert(*link, pne.clone());
                    }
                    // The driver reports events (the CLI prints them); the Debug form is for debugging.
                    debug!(event = ?e, "gateway");
                    let _ = self.events.send(e);
                }
            }
        }
        Ok(())
    }
}
