//! The shared harness of the `cpns-node` integration tests: a temporary data directory with a PKI,
//! a master key and a server SQLite store; device enrollment as `cpns enroll` does it (EUKey
//! sealed at rest under the master key, bound to the entity id); a CPNS Server, PN GWs and PNEs
//! running over loopback sockets; and raw clients that speak frames by hand to send bad input.
//!
//! Nothing here sleeps to synchronise: every wait is on an event channel or a socket read, under
//! [`TIMEOUT`].

// Each test crate uses part of the harness.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cpns_crypto::{EuKey, MasterKey, at_rest_eukey_aad, seal_at_rest};
use cpns_node::clock::unix_millis;
use cpns_node::gateway::{self, GatewayHandle, GatewayNodeConfig};
use cpns_node::pki::{self, Pki};
use cpns_node::pne::{self, PneReport, PneStep};
use cpns_node::server::{ServerNode, ServerNodeConfig};
use cpns_proto::PanSecurity;
use cpns_proto::gateway::{GatewayConfig, GatewayEvent};
use cpns_proto::pne::PneConfig;
use cpns_proto::server::ServerEvent;
use cpns_store::{EntityKind, EntityRecord, ServerStore, SqliteStore};
use cpns_wire::codec::{FrameKind, LEN_PREFIX, split_frame};
use cpns_wire::{
    Address, DEFAULT_MAX_FRAME, DeviceCapabilities, EntityId, Envelope, UserId, decode_envelope,
    encode_plain_frame,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The longest any single wait of a test may last.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The user owning every enrolled device.
pub const USER: &str = "alice";

/// Runs `f`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// An enrolled device: its entity id and EUKey, as its credential file would hold them.
#[derive(Clone, Debug)]
pub struct Device {
    /// The entity id.
    pub id: EntityId,
    /// The EUKey.
    pub eukey: EuKey,
}

/// A server data directory: PKI, master key and the server store.
/// What [`Harness::home`] starts.
pub struct Home {
    pub gw: Device,
    pub phone: Device,
    pub watch: Device,
    pub server: RunningServer,
    /// The PN GW's local store.
    pub gw_store: SqliteStore,
    /// The PN GW.
    pub running: RunningGateway,
}

pub struct Harness {
    /// Holds every database file; removed on drop.
    pub dir: tempfile::TempDir,
    /// The CA and server certificate.
    pub pki: Pki,
    /// The server's master key.
    pub master: MasterKey,
    /// The server store (state of record).
    pub store: SqliteStore,
}

impl Harness {
    /// A fresh data directory, as `cpns init` makes it.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki::generate(&["localhost".into()]).unwrap();
        let master = MasterKey::generate().unwrap();
        let store = SqliteStore::open(&dir.path().join("cpns.db"))
            .await
            .unwrap();
        Self {
            dir,
            pki,
            master,
            store,
        }
    }

    /// The server's database file.
    pub fn server_db(&self) -> PathBuf {
        self.dir.path().join("cpns.db")
    }

    /// The database file of a device's local store.
    pub fn local_db(&self, id: &EntityId) -> PathBuf {
        self.dir.path().join(format!("{id}.db"))
    }

    /// Opens a device's local store.
    pub async fn local_store(&self, id: &EntityId) -> SqliteStore {
        SqliteStore::open(&self.local_db(id)).await.unwrap()
    }

    /// Enrolls a device as `cpns enroll` does: the EUKey sealed at rest under the master key.
    pub async fn enroll(&self, kind: EntityKind, id: &str) -> Device {
        let user: UserId = USER.parse().unwrap();
        let id: EntityId = id.parse().unwrap();
        let eukey = EuKey::generate().unwrap();
        self.store.ensure_user(&user).await.unwrap();
        let record = EntityRecord {
            id: id.clone(),
            kind,
            owner: user,
            sealed_eukey: seal_at_rest(
                &self.master,
                &at_rest_eukey_aad(id.as_str()),
                eukey.expose_secret(),
            )
            .unwrap(),
            capabilities: None,
            cpns_id: None,
            enrolled_at: unix_millis(),
        };
        self.store.insert_entity(&record).await.unwrap();
        Device { id, eukey }
    }

    /// Starts a CPNS Server on the harness's store, on a fresh loopback port.
    pub async fn start_server(&self) -> RunningServer {
        self.start_server_on(self.store.clone()).await
    }

    /// Starts a CPNS Server on `store`, on a fresh loopback port.
    pub async fn start_server_on(&self, store: SqliteStore) -> RunningServer {
        let (events_tx, events) = mpsc::channel(cpns_node::gateway::EVENT_CAPACITY);
        let node = ServerNode::new(
            ServerNodeConfig::default(),
            store,
            self.master.clone(),
            &self.pki.server_cert_pem,
            &self.pki.server_key_pem,
        )
        .unwrap()
        .with_events(Some(events_tx));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(listener, async {
            let _ = stopped.await;
        }));
        RunningServer {
            addr,
            events,
            stop,
            task,
        }
    }

    /// Starts a PN GW with `gw`'s id and `eukey` (normally `gw.eukey`; another key to play an
    /// impostor), talking to the server at `server`, on an insecure PAN.
    pub async fn start_gateway(
        &self,
        gw: &Device,
        eukey: &EuKey,
        server: SocketAddr,
        store: SqliteStore,
    ) -> RunningGateway {
        let proto = GatewayConfig {
            capabilities: capabilities("home-hub", true, true),
            subscription: Some(format!("user:{USER}")),
            ..GatewayConfig::new(gw.id.clone(), eukey.clone())
        };
        let cfg = GatewayNodeConfig {
            proto,
            ca_cert_pem: self.pki.ca_cert_pem.clone(),
            server_addr: server.to_string(),
            server_name: "localhost".into(),
            pan_security: PanSecurity::Cpns,
            max_links: 64,
            max_unproven_links: 64,
            unproven_lifetime: Duration::from_secs(60),
            max_queued: cpns_node::frames::DEFAULT_MAX_QUEUED,
            pan_max_queued: cpns_node::frames::PAN_MAX_QUEUED,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
        };
        let pan = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pan_addr = pan.local_addr().unwrap().to_string();
        let (events_tx, events) = mpsc::channel(cpns_node::gateway::EVENT_CAPACITY);
        let (stop, stopped) = oneshot::channel();
        let (handle, task) = gateway::start(cfg, store, pan, events_tx, None, stopped)
            .await
            .unwrap();
        RunningGateway {
            handle,
            pan_addr,
            events,
            stop,
            task,
        }
    }

    /// A home: a PN GW `home-gw` and two PNEs, `phone` and `watch`, enrolled; the server
    /// running; the PN GW running on its own local store and connected.
    pub async fn home(&self) -> Home {
        let gw = self.enroll(EntityKind::Gateway, "home-gw").await;
        let phone = self.enroll(EntityKind::Pne, "phone").await;
        let watch = self.enroll(EntityKind::Pne, "watch").await;
        let server = self.start_server().await;
        let gw_store = self.local_store(&gw.id).await;
        let mut running = self
            .start_gateway(&gw, &gw.eukey, server.addr, gw_store.clone())
            .await;
        running.wait_ready().await;
        Home {
            gw,
            phone,
            watch,
            server,
            gw_store,
            running,
        }
    }

    /// Opens a TLS 1.3 session to the server as a PN GW would, trusting the harness's CA.
    pub async fn tls_connect(&self, server: SocketAddr) -> TlsStream<TcpStream> {
        let cfg = pki::client_config(&self.pki.ca_cert_pem).unwrap();
        let tcp = TcpStream::connect(server).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        within(
            "the TLS handshake",
            TlsConnector::from(cfg).connect(name, tcp),
        )
        .await
        .unwrap()
    }
}

/// A running CPNS Server.
pub struct RunningServer {
    /// Where it listens for PN GWs.
    pub addr: SocketAddr,
    /// What its sessions report.
    pub events: mpsc::Receiver<ServerEvent>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Waits for an event matching `f`, skipping others.
    pub async fn wait_for(&mut self, what: &str, f: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        within(what, async {
            loop {
                match self.events.recv().await {
                    Some(e) if f(&e) => return e,
                    Some(_) => {}
                    None => panic!("the server stopped before {what}"),
                }
            }
        })
        .await
    }

    /// Stops the server and waits until every session has ended.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        within("the server to stop", self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A running PN GW.
pub struct RunningGateway {
    /// Commands to it.
    pub handle: GatewayHandle,
    /// Where PNEs reach it.
    pub pan_addr: String,
    /// What it reports.
    pub events: mpsc::Receiver<GatewayEvent>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), cpns_node::NodeError>>,
}

impl RunningGateway {
    /// Waits for an event matching `f`, skipping others; a failed establishment fails the test.
    pub async fn wait_for(
        &mut self,
        what: &str,
        f: impl Fn(&GatewayEvent) -> bool,
    ) -> GatewayEvent {
        within(what, async {
            loop {
                match self.events.recv().await {
                    Some(e) if f(&e) => return e,
                    Some(GatewayEvent::EstablishmentFailed { reason, .. }) => {
                        panic!("establishment failed while waiting for {what}: {reason}")
                    }
                    Some(_) => {}
                    None => panic!("the PN GW stopped before {what}"),
                }
            }
        })
        .await
    }

    /// Waits until the WAN session is set up (002 §B.1.1.2 step 17).
    pub async fn wait_ready(&mut self) {
        self.wait_for("the PN GW's connection set-up", |e| {
            matches!(e, GatewayEvent::WanReady)
        })
        .await;
    }

    /// Stops the PN GW and returns how its task ended.
    pub async fn stop(self) -> Result<(), cpns_node::NodeError> {
        let _ = self.stop.send(());
        within("the PN GW to stop", self.task).await.unwrap()
    }

    /// Waits for the PN GW's task to end by itself (e.g. the server refused it).
    pub async fn ended(self) -> Result<(), cpns_node::NodeError> {
        within("the PN GW to end", self.task).await.unwrap()
    }
}

/// Device capabilities of a device of this type.
pub fn capabilities(device_type: &str, has_ui: bool, gateway_capable: bool) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device_type.into(),
        has_ui,
        networks: vec!["wlan".into()],
        software: vec!["cpns-node-tests".into()],
        battery_pct: None,
        gateway_capable,
        cpu_class: None,
        memory_class: None,
        ..DeviceCapabilities::default()
    }
}

/// Settings of a PNE on an insecure PAN; with `has_ui` it asks for a LocalEUKey.
pub fn pne_config(pne: &Device, has_ui: bool) -> PneConfig {
    PneConfig {
        capabilities: capabilities(if has_ui { "phone" } else { "watch" }, has_ui, false),
        ..PneConfig::new(pne.id.clone(), pne.eukey.clone())
    }
}

/// Runs a PNE through `steps` against the PN GW at `pan_addr`; every step must succeed.
pub async fn run_pne(
    cfg: PneConfig,
    store: SqliteStore,
    pan_addr: &str,
    steps: Vec<PneStep>,
) -> PneReport {
    let who = cfg.id.to_string();
    let (_stop, stop) = oneshot::channel();
    let run = pne::run(cfg, store, pan_addr, steps, None, None, stop);
    let report = within(&format!("PNE {who}"), run)
        .await
        .unwrap_or_else(|e| panic!("PNE {who}: {e}"));
    assert!(
        report.failures().is_empty(),
        "PNE {who} failed: {:?}",
        report.failures()
    );
    report
}

/// Spawns [`run_pne`] in a task of its own.
pub fn spawn_pne(
    cfg: PneConfig,
    store: SqliteStore,
    pan_addr: &str,
    steps: Vec<PneStep>,
) -> JoinHandle<PneReport> {
    let addr = pan_addr.to_string();
    tokio::spawn(async move { run_pne(cfg, store, &addr, steps).await })
}

/// The inventory of the PN a PNE joined, from its report.
pub fn joined(report: &PneReport) -> cpns_wire::PnInventory {
    report
        .joined()
        .cloned()
        .unwrap_or_else(|| panic!("the PNE joined no PN: {:?}", report.events))
}

// ---- raw frames, for bad input ----

/// A whole plain frame carrying `env`.
pub fn plain_frame(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_plain_frame(env, &mut out);
    out
}

/// A whole frame of this kind byte and payload, with a correct length prefix.
pub fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).unwrap();
    let mut out = len.to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// A plain frame whose envelope carries a body of type `code` with an empty map, as a peer of a
/// later protocol version might send: the CBOR is written by hand, not by `cpns-wire`.
pub fn unknown_type_frame(code: u32, msg_id: u64, from: &EntityId, to: &Address) -> Vec<u8> {
    let mut cbor = Vec::new();
    let mut e = minicbor::Encoder::new(&mut cbor);
    e.map(6).unwrap();
    e.u8(0).unwrap().u16(cpns_wire::PROTOCOL_VERSION).unwrap();
    e.u8(1).unwrap().u64(msg_id).unwrap();
    e.u8(3).unwrap().u32(1).unwrap(); // Request
    e.u8(4).unwrap().str(from.as_str()).unwrap();
    e.u8(5).unwrap();
    match to {
        Address::Server => e.u8(0).unwrap(),
        Address::Entity(id) => e.str(id.as_str()).unwrap(),
    };
    e.u8(6)
        .unwrap()
        .array(2)
        .unwrap()
        .u32(code)
        .unwrap()
        .map(0)
        .unwrap();
    // The bytes are what they claim to be: an envelope of an unknown message type.
    let env = decode_envelope(&cbor).unwrap();
    assert_eq!(env.body, cpns_wire::Body::Unknown(code));
    raw_frame(FrameKind::Plain as u8, &cbor)
}

/// Reads one frame's body (without its length prefix); `None` if the stream ends or fails first.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut prefix = [0u8; LEN_PREFIX];
    r.read_exact(&mut prefix).await.ok()?;
    let len = u32::from_be_bytes(prefix);
    assert!(len <= DEFAULT_MAX_FRAME, "the peer sent a {len}-byte frame");
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Reads the next plain envelope; the peer must send one, not close.
pub async fn read_envelope<R: AsyncRead + Unpin>(r: &mut R) -> Envelope {
    let frame = within("a response", read_frame(r))
        .await
        .expect("the peer closed instead of answering");
    let (kind, payload) = split_frame(&frame).unwrap();
    assert_eq!(kind, FrameKind::Plain);
    decode_envelope(payload).unwrap()
}

/// Waits until the peer closes the stream (EOF or an error such as a reset); returns what it
/// sent before.
pub async fn expect_closed<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    within("the peer to close the connection", async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return seen,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}
