//! `cpns demo`: the whole system on one machine, over real loopback sockets, TLS and SQLite
//! files in a temporary data directory: init and enroll, a CPNS Server, a PN GW on an insecure
//! PAN and four PNEs (and a device that may serve either role); then discovery, a PNE-initiated establishment with LocalEUKey (000
//! §6.6.1.1), a PN GW-initiated establishment (§6.6.1.2) and a PNE registration (003 §1.4.1).
//! Then the PN lives (docs/pn-lifecycle.md): two devices elect a PN GW (002 §B.1.1.1), the PN GW
//! invites a PNE into the phone's PN (000 §6.6.2.1.1), the TV joins it (§6.6.2.2), the PN GW
//! expels the invitee (§6.6.3.2) and releases the TV's first PN (§6.6.5), each change moving
//! the PN's group key epoch. It prints the messages actually exchanged as a sequence diagram,
//! and the PN inventory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use cpns_node::gateway::{self, GatewayNodeConfig};
use cpns_node::pne::{self, PneReport, PneStep};
use cpns_node::server::{ServerNode, ServerNodeConfig};
use cpns_node::{DeviceCredential, TraceEvent, trace};
use cpns_proto::PanSecurity;
use cpns_proto::gateway::{EstablishTargets, GatewayConfig, GatewayEvent};
use cpns_proto::pne::PneConfig;
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
    let speaker = admin::enroll_device(&dir, USER, Kind::Pne, "speaker").await?;
    let hub = admin::enroll_device(&dir, USER, Kind::Both, "hub").await?;
    println!(
        "enrolled {GW} (PN GW), phone, watch, tv, speaker (PNEs) and hub (either role) for user {USER}\n"
    );

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
        capabilities: defaults("home-hub", true, true),
        subscription: Some(format!("user:{USER}")),
        ..GatewayConfig::new(gw.entity_id.clone(), gw.eukey.clone())
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

    let lived = lifecycle(
        &root,
        &handle,
        &pan_addr,
        [&phone, &tv, &speaker],
        &hub,
        &sink,
    )
    .await?;

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
        // Before the election's discovery, each device knows the other only as its peer.
        if e.receiver == "peer" {
            e.receiver = if e.sender == "hub" { "speaker" } else { "hub" }.into();
        }
        events.push(e);
    }
    let participants: Vec<String> = ["server", GW, "phone", "watch", "tv", "speaker", "hub"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    println!("Messages exchanged ([sealed] = AEAD-sealed on the PAN with keys from LocalEUKey):\n");
    println!("{}", trace::render_sequence(&participants, &events));

    println!("The PN lived:");
    for line in &lived {
        println!("  {line}");
    }
    println!();
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
    let cfg = pne_config(cred, device_type, has_ui);
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

fn pne_config(cred: &DeviceCredential, device_type: &str, has_ui: bool) -> PneConfig {
    PneConfig {
        capabilities: defaults(device_type, has_ui, false),
        signing: cred.signing(),
        ..PneConfig::new(cred.entity_id.clone(), cred.eukey.clone())
    }
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

/// The PN lives (docs/pn-lifecycle.md): an election, an invitation, a join, an expulsion and a
/// release, with the phone, the TV and the speaker staying linked to the PN GW so they are
/// told. Returns one line per step.
async fn lifecycle(
    root: &std::path::Path,
    gw: &gateway::GatewayHandle,
    pan_addr: &str,
    [phone, tv, speaker]: [&DeviceCredential; 3],
    hub: &DeviceCredential,
    sink: &cpns_node::TraceSink,
) -> anyhow::Result<Vec<String>> {
    let mut lived = Vec::new();
    // 002 §B.1.1.1: the speaker (on battery, WLAN) meets the hub (wired, mains) with no PN GW.
    let winner = elect(speaker, hub, sink).await?;
    lived.push(format!(
        "election: {winner} is the PN GW of the two (wired and on mains); `cpns elect` would now run it as one"
    ));
    let pns = gw.inventory().await.map_err(anyhow::Error::msg)?;
    let with = |id: &DeviceCredential| {
        pns.iter()
            .find(|p| p.members.iter().any(|m| m.pne_id == id.entity_id))
            .map(|p| p.pn_id)
    };
    let (Some(home), Some(tvs)) = (with(phone), with(tv)) else {
        bail!("the first scenes left no PNs to live on");
    };
    // The members stay linked, so the PN GW tells them what changes.
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for (cred, device, ui) in [
        (phone, "phone", true),
        (tv, "tv", false),
        (speaker, "speaker", false),
    ] {
        let (h, stop) = stay(root, cred, device, ui, pan_addr, sink).await?;
        handles.push(h);
        stops.push(stop);
    }
    let [phone_h, tv_h, _speaker_h] = &handles[..] else {
        bail!("three PNEs stay");
    };
    let r = gw
        .invite(home, speaker.entity_id.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    lived.push(format!(
        "invite: the PN GW invited the speaker into PN {}; it joined (told: {})",
        crate::events::short_pn(&home),
        names(&r.notified)
    ));
    tv_h.join(home).await.map_err(anyhow::Error::msg)?;
    lived.push(format!(
        "join: the tv joined PN {} by itself",
        crate::events::short_pn(&home)
    ));
    // Group content (docs/security.md §4.11): the phone signs and seals it under the PN's
    // group key; the PN GW relays what it cannot read; the tv takes it once it checked who
    // sent it.
    let mut tv_events = tv_h.events();
    let words = "dinner is ready";
    let delivered = phone_h
        .send_content(home, words.as_bytes().to_vec())
        .await
        .map_err(anyhow::Error::msg)?;
    let took = async {
        loop {
            match tv_events.recv().await {
                Ok(cpns_proto::pne::PneEvent::GroupContent { from, content, .. })
                    if content == words.as_bytes() =>
                {
                    return Ok(from);
                }
                Ok(cpns_proto::pne::PneEvent::ContentRefused { reason, .. }) => {
                    bail!("the tv refused the phone's content: {reason}")
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("the tv stopped: {e}"),
            }
        }
    };
    let from = tokio::time::timeout(Duration::from_secs(10), took)
        .await
        .context("the tv did not take the phone's content")??;
    lived.push(format!(
        "content: the phone said \"{words}\" to PN {}, signed and sealed under its group key; \
         the PN GW, which cannot read it, relayed it to {delivered} member(s); the tv checked \
         the signature and took it as {from}'s",
        crate::events::short_pn(&home)
    ));
    let r = gw
        .expel(home, speaker.entity_id.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    lived.push(format!(
        "expel: the PN GW expelled the speaker; group key epoch {}; told: {}",
        r.epoch.map_or_else(|| "-".into(), |e| e.to_string()),
        names(&r.notified)
    ));
    let r = gw.release(tvs).await.map_err(anyhow::Error::msg)?;
    lived.push(format!(
        "release: the PN GW released the tv's first PN {}; told: {}",
        crate::events::short_pn(&tvs),
        names(&r.notified)
    ));
    for stop in stops {
        let _ = stop.send(());
    }
    Ok(lived)
}

fn names(ids: &[cpns_wire::EntityId]) -> String {
    if ids.is_empty() {
        return "no one linked".into();
    }
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A PNE that stays linked (`cpns pne --stay`), until its stop is sent.
async fn stay(
    root: &std::path::Path,
    cred: &DeviceCredential,
    device_type: &str,
    has_ui: bool,
    pan_addr: &str,
    sink: &cpns_node::TraceSink,
) -> anyhow::Result<(pne::PneHandle, oneshot::Sender<()>)> {
    let cfg = pne_config(cred, device_type, has_ui);
    let store = SqliteStore::open(&root.join(format!("{}.db", cred.entity_id))).await?;
    let (events_tx, mut events) = mpsc::channel(64);
    let (stop_tx, stop) = oneshot::channel();
    let (handle, _task) = pne::serve(
        cfg,
        pne::ServeConfig::new(pan_addr.to_string()),
        store,
        Vec::new(),
        Some(events_tx),
        sink.clone(),
        stop,
    );
    // Linked once it found its PN GW; its set-up in its PNs goes on as it may.
    let found = async {
        while let Some(e) = events.recv().await {
            if let cpns_proto::pne::PneEvent::Completed(cpns_proto::Completed {
                result: Ok(cpns_proto::pne::Outcome::Discovered { .. }),
                ..
            }) = e
            {
                return Ok(());
            }
        }
        bail!("{} stopped", cred.entity_id)
    };
    tokio::time::timeout(Duration::from_secs(10), found)
        .await
        .context("a PNE that stays found no PN GW")??;
    // Keep its events flowing (the channel is bounded).
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Ok((handle, stop_tx))
}

/// 002 §B.1.1.1 between two devices on loopback; the winner's id.
async fn elect(
    a: &DeviceCredential,
    b: &DeviceCredential,
    sink: &cpns_node::TraceSink,
) -> anyhow::Result<cpns_wire::EntityId> {
    use cpns_proto::election::{Election, Outcome};
    let mut battery = defaults("speaker", false, false);
    battery.battery_pct = Some(70);
    let mut wired = defaults("hub", true, true);
    wired.networks = vec!["ethernet".into()];
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let wait = Duration::from_secs(10);
    let ma = Election::new(
        a.entity_id.clone(),
        battery,
        None,
        cpns_wire::DEFAULT_MAX_FRAME,
    );
    let mb = Election::new(
        b.entity_id.clone(),
        wired,
        Some("127.0.0.1:7401".into()),
        cpns_wire::DEFAULT_MAX_FRAME,
    );
    let dial = async {
        let s = tokio::net::TcpStream::connect(addr).await?;
        crate::elect::run(s, ma, wait, sink).await
    };
    let take = async {
        let (s, _) = listener.accept().await?;
        crate::elect::run(s, mb, wait, sink).await
    };
    let (oa, ob) = tokio::try_join!(dial, take)?;
    match (oa, ob) {
        (Outcome::Follow { gateway, .. }, Outcome::BecomeGateway { .. }) => Ok(gateway),
        (Outcome::BecomeGateway { .. }, Outcome::Follow { gateway, .. }) => Ok(gateway),
        (Outcome::Failed(why), _) | (_, Outcome::Failed(why)) => {
            bail!("the election failed: {why}")
        }
        _ => bail!("the two devices did not agree on a PN GW"),
    }
}
