//! `cpns demo`: the whole system on one machine, over real loopback sockets, TLS and SQLite
//! files in a temporary data directory: init and enroll, a CPNS Server, a PN GW on an insecure
//! PAN and four PNEs (and a device that may serve either role); then discovery, a PNE-initiated establishment with LocalEUKey (000
//! §6.6.1.1), a PN GW-initiated establishment (§6.6.1.2) and a PNE registration (003 §1.4.1).
//! Then the PN lives (docs/pn-lifecycle.md): two devices elect a PN GW (002 §B.1.1.1), the PN GW
//! invites a PNE into the phone's PN (000 §6.6.2.1.1), the TV joins it (§6.6.2.2), the PN GW
//! expels the invitee (§6.6.3.2) and releases the TV's first PN (§6.6.5), each change moving
//! the PN's group key epoch. Before the expulsion, services (004 §5.5.5, §5.5.8, §5.5.9;
//! docs/services.md): the TV publishes a video renderer, the phone discovers it by keyword and
//! pushes a video to it in sealed chunks, and the phone, TV and speaker share an album in a
//! service group until the speaker is expelled from it. It prints the messages actually
//! exchanged as a sequence diagram (a delivery's chunks and acknowledgements folded), and the PN
//! inventory.

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
        suites: cpns_crypto::Suite::local_preference().to_vec(),
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
    // A delivery is many chunks and acknowledgements of one kind each way: the first two of
    // each are drawn, and the rest counted.
    let mut seen = std::collections::BTreeMap::new();
    let mut folded = 0usize;
    events.retain(|e| {
        if !matches!(e.message, "DeliveryChunk" | "DeliveryAck") {
            return true;
        }
        let n = seen
            .entry((e.sender.clone(), e.receiver.clone(), e.message.to_string()))
            .or_insert(0usize);
        *n += 1;
        let kept = *n <= 2;
        folded += usize::from(!kept);
        kept
    });
    println!("Messages exchanged ([sealed] = AEAD-sealed on the PAN with keys from LocalEUKey):\n");
    println!("{}", trace::render_sequence(&participants, &events));
    if folded > 0 {
        println!(
            "(of the delivery's chunks and acknowledgements, the first two of each way are drawn; \
             {folded} more crossed)\n"
        );
    }

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
        suites: cpns_crypto::Suite::local_preference().to_vec(),
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
    let [_, _, speaker_h] = &handles[..] else {
        bail!("three PNEs stay");
    };
    lived.extend(services(root, phone_h, tv_h, speaker_h).await?);
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

/// The services scene (004 §5.5.5, §5.5.8, §5.5.9; docs/services.md): the TV publishes a video
/// renderer, the phone finds it by keyword and pushes a video to it in sealed chunks; the
/// phone, the TV and the speaker share an album in a service group, the speaker is expelled
/// and holds no key of the next photo. Returns one line per step.
async fn services(
    root: &std::path::Path,
    phone: &pne::PneHandle,
    tv: &pne::PneHandle,
    speaker: &pne::PneHandle,
) -> anyhow::Result<Vec<String>> {
    use cpns_node::pne::{DirectoryAsk, GroupAsk};
    use cpns_proto::pne::{Outcome, PneEvent};
    let mut lines = Vec::new();
    let err = anyhow::Error::msg;
    let renderer = br#"{"service_id":"renderer","type":"media.renderer","name":"Living-room TV","version":"1","keywords":["video","renderer","tv"],"delivery":["push"],"scope":{"kind":"user"},"lease_s":3600}"#;
    let Outcome::ServicePublished(cpns_wire::ServicePublished { dir_id, .. }) = tv
        .directory(DirectoryAsk::Publish(renderer.to_vec()))
        .await
        .map_err(err)?
    else {
        bail!("the tv's service was not published");
    };
    let found = phone
        .directory(DirectoryAsk::Discover(cpns_wire::ServiceDiscover {
            keywords: vec!["renderer".into()],
            all: false,
            service_type: None,
            fits_me: false,
            after: 0,
        }))
        .await
        .map_err(err)?;
    let Outcome::ServicesFound(found) = found else {
        bail!("the phone's discovery found nothing");
    };
    let Some(entry) = found.entries.iter().find(|e| e.dir_id == dir_id) else {
        bail!("the phone did not find the tv's renderer");
    };
    lines.push(format!(
        "publish, discover: the tv published \"{}\" ({}); the phone found it by the keyword \
         \"renderer\", offered by {}",
        entry.name, entry.service_type, entry.offerer
    ));

    // A video, pushed to what was found, in sealed chunks through the PN GW.
    let video: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = root.join("holiday.mp4");
    std::fs::write(&path, &video)?;
    let offer = cpns_wire::DeliveryOffer {
        service_id: "video".into(),
        targets: vec![entry.offerer.clone()],
        name: "holiday.mp4".into(),
        media_type: "video/mp4".into(),
        size: video.len() as u64,
        sha256: Some(cpns_wire::HashBytes(
            <sha2::Sha256 as sha2::Digest>::digest(&video).into(),
        )),
        to_pn: None,
        held: false,
        requires: Vec::new(),
        suite: None,
        group: None,
        user: None,
        more: Vec::new(),
    };
    let mut tv_events = tv.events();
    phone.deliver(offer, vec![path]).await.map_err(err)?;
    let received = async {
        loop {
            match tv_events.recv().await {
                Ok(PneEvent::DeliveryReceived { bytes, .. }) => return Ok(bytes),
                Ok(PneEvent::DeliveryEnded { result, reason, .. }) => {
                    bail!("the tv's part ended {result:?}: {reason:?}")
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("the tv stopped: {e}"),
            }
        }
    };
    let bytes = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .context("the tv did not receive the video")??;
    lines.push(format!(
        "deliver: the phone pushed holiday.mp4 ({bytes} bytes) to the tv in chunks of 64 KiB \
         sealed end to end; the PN GW relayed what it cannot read; the tv checked its SHA-256 \
         and kept it in {}",
        root.join("tv.inbox").display()
    ));

    // A service group: an album the phone, the tv and the speaker share.
    let Outcome::ServiceGroupKey { group_id, .. } = phone
        .group(GroupAsk::Create("Holiday album".into(), false))
        .await
        .map_err(err)?
    else {
        bail!("the album was not made");
    };
    for member in [tv, speaker] {
        let mut events = member.events();
        phone
            .group(GroupAsk::Invite(group_id, member.id().clone()))
            .await
            .map_err(err)?;
        let invited = async {
            loop {
                match events.recv().await {
                    Ok(PneEvent::ServiceGroupInvited(i)) if i.group_id == group_id => {
                        return Ok(());
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => bail!("{} stopped: {e}", member.id()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), invited)
            .await
            .context("an invitation did not arrive")??;
        member
            .group(GroupAsk::Answer(group_id, true))
            .await
            .map_err(err)?;
    }
    let send = |photo: &'static [u8]| async move {
        match phone
            .group(GroupAsk::Send(group_id, photo.to_vec()))
            .await
            .map_err(err)?
        {
            Outcome::ServiceGroupSent {
                epoch, delivered, ..
            } => Ok((epoch, delivered)),
            other => bail!("the photo was not sent: {other:?}"),
        }
    };
    // Each acceptance moved the album to a new epoch, whose key reaches the phone by push.
    holds(phone, group_id, 3).await?;
    let (epoch, delivered) = send(b"photo 1: the beach").await?;
    lines.push(format!(
        "group: the phone made the album {group_id}, the tv and the speaker accepted; photo 1 \
         went sealed under its key of epoch {epoch} to {delivered} members"
    ));
    let Outcome::ServiceGroupDone { epoch: after, .. } = phone
        .group(GroupAsk::Expel(group_id, speaker.id().clone()))
        .await
        .map_err(err)?
    else {
        bail!("the speaker was not expelled from the album");
    };
    holds(phone, group_id, after).await?;
    let (epoch, delivered) = send(b"photo 2: the sunset").await?;
    let kept = speaker.groups().await.map_err(err)?;
    let holds = kept.iter().any(|(g, _, _)| *g == group_id);
    if holds {
        bail!("the speaker still holds the album's key");
    }
    lines.push(format!(
        "expel from the group: the phone expelled the speaker (epoch {after}); photo 2 went \
         under epoch {epoch} to {delivered} member; the speaker holds no key of the album and \
         cannot open it"
    ));
    Ok(lines)
}

/// Waits until `member` holds the key of `group` at `epoch` or later (pushed to it, 004
/// §5.5.9: a change of the group moves it to a new epoch).
async fn holds(
    member: &pne::PneHandle,
    group: cpns_wire::GroupId,
    epoch: u64,
) -> anyhow::Result<()> {
    use cpns_proto::pne::PneEvent;
    let mut events = member.events();
    let held = member.groups().await.map_err(anyhow::Error::msg)?;
    if held.iter().any(|(g, _, e)| *g == group && *e >= epoch) {
        return Ok(());
    }
    let pushed = async {
        loop {
            match events.recv().await {
                Ok(PneEvent::ServiceGroupKey { group_id, epoch: e })
                    if group_id == group && e >= epoch =>
                {
                    return Ok(());
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("{} stopped: {e}", member.id()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), pushed)
        .await
        .with_context(|| {
            format!(
                "{} was not pushed the album's key of epoch {epoch}",
                member.id()
            )
        })?
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
    // What it receives is kept in its inbox (docs/services.md, "Delivery").
    let mut serve = pne::ServeConfig::new(pan_addr.to_string());
    serve.inbox = Some(root.join(format!("{}.inbox", cred.entity_id)));
    let (handle, _task) = pne::serve(
        cfg,
        serve,
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
