//! `cpns demo`: the whole system on one machine, over real loopback sockets, TLS and SQLite
//! files in a temporary data directory: init and enroll, a CPNS Server, a PN GW on an insecure
//! PAN and three PNEs; then discovery, a PNE-initiated establishment with LocalEUKey (000
//! §6.6.1.1), a PN GW-initiated establishment (§6.6.1.2) and a PNE registration (003 §1.4.1).
//! It prints the messages actually exchanged as a sequence diagram, and the PN inventory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use cpns_node::gateway::{self, GatewayNodeConfig};
use cpns_node::pne::{self, PneReport, PneStep};
use cpns_node::server::{ServerNode, ServerNodeConfig};
use cpns_node::{DeviceCredential, TraceEvent, trace};
use cpns_proto::gateway::{EstablishTargets, GatewayConfig, GatewayEvent};
use cpns_proto::pne::PneConfig;
use cpns_proto::{PanSecurity, Timeouts};
use cpns_store::SqliteStore;
use cpns_wire::SetupType;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::admin::{self, DataDir, Kind};
use crate::capabilities::defaults;

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Where to put the demo's data (default: a new directory under the system's temp dir).
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

const USER: &str = "alice";
const GW: &str = "home-gw";

/// `cpns demo`.
pub(crate) async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    // The data stays after the demo, so its SQLite files can be inspected (`cpns inventory`).
    let root = match a.keep.clone() {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("cpns-demo-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&root)?;
    let dir = DataDir(root.join("server"));
    println!("CPNS demo: data in {}\n", root.display());

    // Init and enroll.
    admin::init(admin::InitArgs {
        data_dir: dir.0.clone(),
        names: vec!["localhost".into()],
    })
    .await?;
    let gw = admin::enroll_device(&dir, USER, Kind::Gateway, GW).await?;
    let phone = admin::enroll_device(&dir, USER, Kind::Pne, "phone").await?;
    let watch = admin::enroll_device(&dir, USER, Kind::Pne, "watch").await?;
    let tv = admin::enroll_device(&dir, USER, Kind::Pne, "tv").await?;
    println!("enrolled {GW} (PN GW), phone, watch, tv (PNEs) for user {USER}\n");

    let (trace_tx, mut trace_rx) = mpsc::channel::<TraceEvent>(cpns_node::trace::TRACE_CAPACITY);
    let sink = Some(trace_tx);

    // The CPNS Server.
    let store = SqliteStore::open(&dir.db()).await?;
    let node = ServerNode::new(
        ServerNodeConfig::default(),
        store.clone(),
        dir.master_key()?,
        &dir.read("server.pem")?,
        &dir.read("server.key")?,
    )?
    .with_trace(sink.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server_addr = listener.local_addr()?;
    let (server_stop, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(node.run(listener, async {
        let _ = server_stopped.await;
    }));

    // The PN GW, on an insecure PAN (LocalEUKey and sealed frames where a PNE has a UI).
    let gw_store = SqliteStore::open(&root.join("home-gw.db")).await?;
    let proto = GatewayConfig {
        limits: Default::default(),
        confirm_others: false,
        pn_lifetime_s: None,
        pn_max_members: None,
        id: gw.entity_id.clone(),
        eukey: gw.eukey.clone(),
        capabilities: defaults("home-hub", true, true),
        subscription: Some(format!("user:{USER}")),
        zone_support: false,
        max_frame: cpns_wire::DEFAULT_MAX_FRAME,
        timeouts: Timeouts::default(),
    };
    let mut cfg = GatewayNodeConfig::new(&gw, proto, server_addr.to_string());
    cfg.pan_security = PanSecurity::Cpns;
    let pan = TcpListener::bind("127.0.0.1:0").await?;
    let pan_addr = pan.local_addr()?.to_string();
    let (gw_events_tx, mut gw_events) = mpsc::channel(cpns_node::gateway::EVENT_CAPACITY);
    let (gw_stop, gw_stopped) = oneshot::channel();
    let (handle, gw_task) = gateway::start(
        cfg,
        gw_store.clone(),
        pan,
        gw_events_tx,
        sink.clone(),
        gw_stopped,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    wait_for(&mut gw_events, |e| matches!(e, GatewayEvent::WanReady))
        .await
        .context("PN GW connection set-up")?;

    // PNE-initiated establishment: the watch waits to be invited, the phone asks for a PN
    // with the watch (000 §6.6.1.1).
    let watch_run = spawn_pne(
        &root,
        &watch,
        "watch",
        false,
        &pan_addr,
        vec![PneStep::AwaitInvitation],
        &sink,
    );
    discovered(&mut gw_events, "watch").await?;
    let invite = SetupType::Invite(vec![watch.entity_id.clone()]);
    let phone_run = spawn_pne(
        &root,
        &phone,
        "phone",
        true,
        &pan_addr,
        vec![PneStep::Setup(invite)],
        &sink,
    );
    finish("phone", phone_run.await?)?;
    finish("watch", watch_run.await?)?;

    // PN GW-initiated establishment with the TV (000 §6.6.1.2).
    let tv_run = spawn_pne(
        &root,
        &tv,
        "tv",
        false,
        &pan_addr,
        vec![PneStep::AwaitInvitation],
        &sink,
    );
    discovered(&mut gw_events, "tv").await?;
    handle
        .establish(EstablishTargets::Invite(vec![tv.entity_id.clone()]))
        .await
        .map_err(anyhow::Error::msg)?;
    finish("tv", tv_run.await?)?;

    // PNE registration, PN member case (003 §1.4.1): the watch reconnects and registers, then
    // uses the secure session it set up (step 4): a call sealed end to end, which the PN GW
    // relays without being able to read it.
    let watch_run = spawn_pne(
        &root,
        &watch,
        "watch",
        false,
        &pan_addr,
        vec![
            PneStep::Register(None),
            PneStep::SecureCall {
                service: cpns_wire::ECHO_SERVICE.into(),
                payload: b"hello, sealed end to end".to_vec(),
            },
        ],
        &sink,
    );
    finish("watch", watch_run.await?)?;

    let _ = gw_stop.send(());
    let _ = gw_task.await;
    let _ = server_stop.send(());
    let _ = server.await;
    drop(sink);

    let mut events = Vec::new();
    while let Some(mut e) = trace_rx.recv().await {
        // Before discovery and authentication, a runtime knows its peer only by role.
        if e.receiver == "gateway" {
            e.receiver = GW.into();
        }
        events.push(e);
    }
    let participants: Vec<String> = ["server", GW, "phone", "watch", "tv"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    println!("Messages exchanged ([sealed] = AEAD-sealed on the PAN with keys from LocalEUKey):\n");
    println!("{}", trace::render_sequence(&participants, &events));

    println!("PN inventory of the CPNS Server ({}):", dir.db().display());
    print!("{}", admin::server_inventory_text(&dir.db()).await?);
    println!("\nLocal PN inventory of the PN GW:");
    print!(
        "{}",
        admin::local_inventory_text(&root.join("home-gw.db")).await?
    );
    gw_store.close().await;
    store.close().await;
    println!(
        "\nThe data is kept in {}; `cpns inventory --data-dir {}` reads it again.",
        root.display(),
        dir.0.display()
    );
    Ok(())
}

type PneTask = tokio::task::JoinHandle<Result<PneReport, String>>;

fn spawn_pne(
    root: &std::path::Path,
    cred: &DeviceCredential,
    device_type: &str,
    has_ui: bool,
    pan_addr: &str,
    steps: Vec<PneStep>,
    sink: &cpns_node::TraceSink,
) -> PneTask {
    let cfg = PneConfig {
        id: cred.entity_id.clone(),
        eukey: cred.eukey.clone(),
        capabilities: defaults(device_type, has_ui, false),
        contents: Vec::new(),
        security: PanSecurity::Cpns,
        accept_invitations: true,
        max_frame: cpns_wire::DEFAULT_MAX_FRAME,
        timeouts: Timeouts::default(),
        home_gateway: None,
    };
    let db = root.join(format!("{}.db", cred.entity_id));
    let addr = pan_addr.to_string();
    let sink = sink.clone();
    tokio::spawn(async move {
        let store = SqliteStore::open(&db).await.map_err(|e| e.to_string())?;
        let (_stop_tx, stop) = oneshot::channel();
        let run = pne::run(cfg, store.clone(), &addr, steps, None, sink, stop);
        let r = match tokio::time::timeout(Duration::from_secs(60), run).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        store.close().await;
        r
    })
}

fn finish(who: &str, r: Result<PneReport, String>) -> anyhow::Result<()> {
    let report = r.map_err(|e| anyhow::anyhow!("{who}: {e}"))?;
    let failures = report.failures();
    if !failures.is_empty() {
        bail!("{who}: {}", failures.join("; "));
    }
    Ok(())
}

async fn wait_for(
    rx: &mut mpsc::Receiver<GatewayEvent>,
    f: impl Fn(&GatewayEvent) -> bool,
) -> anyhow::Result<()> {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if let GatewayEvent::EstablishmentFailed { reason, .. } = &e {
                bail!("establishment failed: {reason}");
            }
            if f(&e) {
                return Ok(());
            }
        }
        bail!("the PN GW stopped")
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .context("timed out")?
}

/// Waits until the PN GW knows the PNE `id` (000 §6.4).
async fn discovered(rx: &mut mpsc::Receiver<GatewayEvent>, id: &str) -> anyhow::Result<()> {
    wait_for(
        rx,
        |e| matches!(e, GatewayEvent::PneDiscovered { pne, .. } if pne.as_str() == id),
    )
    .await
    .with_context(|| format!("{id} discovery"))
}
