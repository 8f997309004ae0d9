//! `cpns server`, `cpns gateway` and `cpns pne`: the three runtimes as processes of their own.
//! Events are printed to stdout, one readable line or (`--json`) one JSON object each
//! ([`crate::events`]); logs go to stderr.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use cpns_node::gateway::{self, GatewayNodeConfig};
use cpns_node::pne::{self, PneStep};
use cpns_node::server::{ServerNode, ServerNodeConfig};
use cpns_node::{DeviceCredential, DeviceKind};
use cpns_proto::PanSecurity;
use cpns_proto::gateway::{EstablishTargets, GatewayConfig, GatewayEvent};
use cpns_proto::pne::{InvitationPolicy, PneConfig};
use cpns_store::SqliteStore;
use cpns_wire::{EntityId, SetupType};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::admin::DataDir;
use crate::capabilities::{CapabilityArgs, defaults};
use crate::events::{EventPrinter, Role, RunEvent};

#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
    /// The data directory made by `cpns init`.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    pub data_dir: PathBuf,
    /// Address to listen on for PN GWs.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: String,
    /// Most concurrent PN GW sessions.
    #[arg(long, default_value_t = 10_000)]
    pub max_sessions: usize,
    /// A PN GW silent this long (not even a Heartbeat) is taken for gone: its session closes
    /// and it and the PNEs it reported turn offline (docs/device-status.md).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub offline_after_s: u64,
    /// How long a flow waits for a PN GW's answer; a PN GW's lost session keeps its
    /// deliveries from outside and its forwards between PNs for twice this (docs/services.md).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub flow_timeout_s: u64,
    /// How long a delivery record may stay open before the server ends it `failed` (its
    /// target never ended it: gone for good; docs/services.md). Default: a week.
    #[arg(long, value_name = "SECS", default_value_t = cpns_node::server::OPEN_DELIVERY_MAX.as_secs(), value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub delivery_open_max_s: u64,
    /// A chargeable service and its units per started MB (repeatable), e.g.
    /// `--chargeable video=2`; usage of a service not named is not charged.
    #[arg(long, value_name = "SERVICE=UNITS", value_parser = tariff_entry)]
    pub chargeable: Vec<(String, u64)>,
    /// The control socket local applications use (CPNS-4: capabilities, status, subscriptions,
    /// usage, charging), mode 0600 [default: server.sock in the data directory].
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Print events as JSON objects, one per line, instead of readable lines.
    #[arg(long)]
    pub json: bool,
}

/// `SERVICE=UNITS`.
fn tariff_entry(s: &str) -> Result<(String, u64), String> {
    let (service, units) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: a tariff entry is SERVICE=UNITS_PER_MB"))?;
    if service.is_empty() {
        return Err("the service name is empty".into());
    }
    let units = units
        .parse()
        .map_err(|_| format!("`{units}`: units per MB are a whole number"))?;
    Ok((service.to_string(), units))
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, not when it
/// is first awaited: a signal that comes right after the process said it is listening (a test,
/// a supervisor) stops it cleanly instead of killing it.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// `cpns server`.
pub(crate) async fn server(a: ServerArgs) -> anyhow::Result<()> {
    let dir = DataDir(a.data_dir);
    dir.make_private()?;
    let store = SqliteStore::open(&dir.db())
        .await
        .with_context(|| format!("open {}", dir.db().display()))?;
    let mut cfg = ServerNodeConfig {
        max_sessions: a.max_sessions,
        ..ServerNodeConfig::default()
    };
    cfg.proto.offline_after = Some(Duration::from_secs(a.offline_after_s));
    cfg.proto.timeouts.flow = Duration::from_secs(a.flow_timeout_s);
    cfg.open_delivery_max = Duration::from_secs(a.delivery_open_max_s);
    cfg.proto.tariff = a.chargeable.iter().cloned().collect();
    let printer = EventPrinter::new(Role::Server, a.json);
    let (events_tx, mut events) = mpsc::channel(cpns_node::gateway::EVENT_CAPACITY);
    let node = ServerNode::new(
        cfg,
        store.clone(),
        dir.master_key()?,
        &dir.read("server.pem")?,
        &dir.read("server.key")?,
    )?
    .with_events(Some(events_tx));
    let listener = TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("listen on {}", a.listen))?;
    let control_path = a
        .control
        .clone()
        .unwrap_or_else(|| crate::status::server_socket(&dir.0));
    let control = cpns_node::control::ControlSocket::bind(&control_path).await?;
    let shutdown = shutdown_signal()?;
    printer.run(&RunEvent::Listening(listener.local_addr()?.to_string()));
    printer.run(&RunEvent::ControlListening(
        control.path().display().to_string(),
    ));
    let api = cpns_node::control::server::ServerApi::new(node.handle());
    let (control_stop, control_stopped) = tokio::sync::watch::channel(false);
    let control_task = tokio::spawn(control.serve(
        move |request| {
            let api = api.clone();
            async move { api.answer(request).await }
        },
        control_stopped,
    ));
    let printing = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            printer.server(&e);
        }
    });
    // The node's sessions hold the event sender; it is dropped once they have all ended.
    node.run(listener, shutdown).await?;
    let _ = control_stop.send(true);
    let _ = control_task.await;
    let _ = printing.await;
    store.close().await;
    Ok(())
}

fn read_credential(path: &std::path::Path, kind: DeviceKind) -> anyhow::Result<DeviceCredential> {
    let cred = DeviceCredential::read(path)?;
    if cred.kind != kind && cred.kind != DeviceKind::Both {
        bail!(
            "{} is a {} credential, not a {} one",
            path.display(),
            kind_name(cred.kind),
            kind_name(kind)
        );
    }
    Ok(cred)
}

fn kind_name(k: DeviceKind) -> &'static str {
    match k {
        DeviceKind::Pne => "PNE",
        DeviceKind::Gateway => "PN GW",
        DeviceKind::Both => "PNE-or-PN GW",
    }
}

fn pan_security(s: &str) -> anyhow::Result<PanSecurity> {
    PanSecurity::parse(s)
        .with_context(|| format!("PAN security must be `cpns` or `trusted`, not `{s}`"))
}

/// The AEAD suites of `--aead`, most wanted first (docs/security.md §4.13): `auto` is this
/// CPU's order (AES-256-GCM first where it has AES instructions); a suite's name puts it first.
fn suites(choice: &str) -> anyhow::Result<Vec<cpns_crypto::Suite>> {
    use cpns_crypto::Suite;
    let first = match choice {
        "auto" => return Ok(Suite::local_preference().to_vec()),
        "aes-256-gcm" => Suite::Aes256Gcm,
        "chacha20-poly1305" => Suite::ChaCha20Poly1305,
        other => {
            anyhow::bail!("--aead is `auto`, `aes-256-gcm` or `chacha20-poly1305`, not `{other}`")
        }
    };
    let mut order = vec![first];
    order.extend(Suite::ALL.into_iter().filter(|s| *s != first));
    Ok(order)
}

#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// The PN GW's credential file.
    #[arg(long)]
    pub credential: PathBuf,
    /// The CPNS Server's address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub server: String,
    /// Address to listen on for PNEs.
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub pan_listen: String,
    /// The PN GW's local store (SQLite file).
    #[arg(long)]
    pub store: PathBuf,
    /// PAN security: `cpns` (insecure bearer: LocalEUKey and sealed frames) or `trusted`.
    #[arg(long, default_value = "cpns")]
    pub pan_security: String,
    /// Start a PN GW-initiated establishment (000 §6.6.1.2) with `all` PNEs or a comma list.
    #[arg(long)]
    pub establish: Option<String>,
    /// With --establish: wait until this many PNEs have made themselves known.
    #[arg(long, default_value_t = 1)]
    pub after_pnes: usize,
    /// Whether this PN GW's owner confirms its own PNEs taking part in other users' PNs, and
    /// agrees to be charged for them, when the CPNS Server asks (001 §5.2.1.1, PNE Confirm).
    #[arg(long, value_name = "yes|no", default_value = "no", value_parser = yes_or_no, action = clap::ArgAction::Set)]
    pub confirm_others: bool,
    /// Give the PNs this PN GW establishes a lifetime, in seconds: past it each is released
    /// and its members told (beyond the documents).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub pn_lifetime_s: Option<u32>,
    /// Let the PNs this PN GW establishes have at most this many members.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub pn_max_members: Option<u32>,
    /// Most concurrent PAN links whose PNE proved its identity; a proven PNE beyond them is
    /// refused.
    #[arg(long, default_value_t = 1024)]
    pub max_links: usize,
    /// Most concurrent PAN links still proving their PNE; a new link beyond them evicts the
    /// oldest unproven one.
    #[arg(long, default_value_t = 64)]
    pub max_unproven_links: usize,
    /// How long a PAN link may stay unproven before it is closed, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub unproven_lifetime_ms: u64,
    /// A PAN link silent this long (not even a Heartbeat) is closed and its PNE reported
    /// offline (docs/device-status.md).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub pan_offline_after_s: u64,
    /// The AEAD of sealed PAN links, wanted first: `auto` (AES-256-GCM where this CPU has AES
    /// instructions, else ChaCha20-Poly1305), `aes-256-gcm` or `chacha20-poly1305`. A link
    /// takes AES-256-GCM only when both its ends want it first.
    #[arg(long, value_name = "SUITE", default_value = "auto")]
    pub aead: String,
    /// Print events as JSON objects, one per line, instead of readable lines.
    #[arg(long)]
    pub json: bool,
    /// The control socket `cpns pn` talks to (mode 0600); default: the store's path with
    /// `.sock` added.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// The PN GW's own device capabilities.
    #[command(flatten)]
    pub caps: CapabilityArgs,
}

/// `cpns gateway`.
pub(crate) async fn gateway(a: GatewayArgs) -> anyhow::Result<()> {
    let cred = read_credential(&a.credential, DeviceKind::Gateway)?;
    let capabilities = a.caps.resolve(defaults("home-hub", true, true))?;
    let store = SqliteStore::open(&a.store)
        .await
        .with_context(|| format!("open {}", a.store.display()))?;
    let proto = GatewayConfig {
        confirm_others: a.confirm_others,
        pn_lifetime_s: a.pn_lifetime_s,
        pn_max_members: a.pn_max_members,
        pan_offline_after: Some(Duration::from_secs(a.pan_offline_after_s)),
        capabilities,
        subscription: Some(format!("user:{}", cred.owner)),
        suites: suites(&a.aead)?,
        ..GatewayConfig::new(cred.entity_id.clone(), cred.eukey.clone())
    };
    let mut cfg = GatewayNodeConfig::new(&cred, proto, a.server.clone());
    cfg.pan_security = pan_security(&a.pan_security)?;
    cfg.max_links = a.max_links;
    cfg.max_unproven_links = a.max_unproven_links;
    cfg.unproven_lifetime = Duration::from_millis(a.unproven_lifetime_ms);
    let targets = match a.establish.as_deref() {
        None => None,
        Some("all") => Some(EstablishTargets::All),
        Some(list) => Some(EstablishTargets::Invite(
            list.split(',')
                .map(|s| s.trim().parse::<EntityId>())
                .collect::<Result<_, _>>()
                .context("--establish")?,
        )),
    };
    let control_path = a
        .control
        .clone()
        .unwrap_or_else(|| cpns_node::control::socket_path(&a.store));
    let control = cpns_node::control::ControlSocket::bind(&control_path).await?;
    let listener = TcpListener::bind(&a.pan_listen)
        .await
        .with_context(|| format!("listen on {}", a.pan_listen))?;
    let printer = EventPrinter::new(Role::Gateway, a.json);
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    printer.run(&RunEvent::PanListening(listener.local_addr()?.to_string()));
    printer.run(&RunEvent::ControlListening(
        control.path().display().to_string(),
    ));
    let (events_tx, mut events) = mpsc::channel(cpns_node::gateway::EVENT_CAPACITY);
    let (stop_tx, stop) = oneshot::channel();
    let (handle, task) = gateway::start(cfg, store.clone(), listener, events_tx, None, stop)
        .await
        .map_err(anyhow::Error::msg)?;
    let (control_stop, control_stopped) = tokio::sync::watch::channel(false);
    let api = cpns_node::control::gateway::GatewayApi::new(handle.clone());
    let control_task = tokio::spawn(control.serve(
        move |request| {
            let api = api.clone();
            async move { api.answer(request).await }
        },
        control_stopped,
    ));
    let mut known = 0usize;
    let mut ready = false;
    let mut targets = targets;
    let mut stop_tx = Some(stop_tx);
    loop {
        tokio::select! {
            e = events.recv() => {
                let Some(e) = e else { break };
                printer.gateway(&e);
                match e {
                    GatewayEvent::WanReady => ready = true,
                    GatewayEvent::PneDiscovered { .. } => known += 1,
                    _ => {}
                }
                if ready && known >= a.after_pnes
                    && let Some(t) = targets.take() {
                        match handle.establish(t).await {
                            Ok(started) => printer.run(&RunEvent::Establishing(started.pn_id)),
                            Err(e) => printer.run(&RunEvent::EstablishFailed(e.to_string())),
                        }
                    }
            }
            () = &mut shutdown => {
                if let Some(s) = stop_tx.take() { let _ = s.send(()); }
                break;
            }
        }
    }
    let _ = control_stop.send(true);
    let _ = control_task.await;
    let r = task.await.context("the PN GW task")?;
    store.close().await;
    r.map_err(anyhow::Error::msg)
}

#[derive(Args, Debug)]
pub(crate) struct PneArgs {
    /// The PNE's credential file.
    #[arg(long)]
    pub credential: PathBuf,
    /// The PN GW's PAN address.
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub gateway: String,
    /// The PNE's local store (SQLite file).
    #[arg(long)]
    pub store: PathBuf,
    /// PAN security: `cpns` or `trusted` (must match the PN GW's).
    #[arg(long, default_value = "cpns")]
    pub pan_security: String,
    /// Ask for a PN (000 §6.6.1.1): `1-1`, `all`, or a comma list of PNE ids to invite.
    #[arg(long)]
    pub setup: Option<String>,
    /// Wait to be invited to a PN (000 §6.6.1.2) and join it.
    #[arg(long)]
    pub await_invitation: bool,
    /// How to answer invitations to PNs (000 §6.6.1.1 step 3, §6.6.2.1): `accept`,
    /// `decline`, or `ask` the application on the device (with --stay: an `invited` event on
    /// the control socket, answered with `answer_invitation` or `cpns pn answer`; unanswered
    /// within --ask-within-s, declined).
    #[arg(long, value_name = "accept|decline|ask", default_value = "accept", value_parser = invitations)]
    pub invitations: Invitations,
    /// How to answer deliveries offered to this PNE (004 §5.5.8): `accept` (kept in --inbox)
    /// or `decline`.
    #[arg(long, value_name = "accept|decline", default_value = "accept", value_parser = ["accept", "decline"])]
    pub deliveries: String,
    /// With --stay: where received deliveries are kept (mode 0700); default: the store's path
    /// with `.inbox` added.
    #[arg(long, requires = "stay")]
    pub inbox: Option<PathBuf>,
    /// With --stay: a directory whose files others may pull by name (docs/services.md,
    /// "Pull"): a request for content this PNE declared is answered with a delivery of the file
    /// of that name there; without it, requests are told (`delivery_requested`) for the
    /// application to answer.
    #[arg(long, requires = "stay")]
    pub share: Option<PathBuf>,
    /// Decline invitations (`--invitations decline`).
    #[arg(long, conflicts_with = "invitations")]
    pub decline: bool,
    /// With `--invitations ask`: how long the application has to answer, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = cpns_proto::pne::ASK_WITHIN.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub ask_within_s: u64,
    /// This PNE's own user's PN GW (its entity id): named when it takes part in another user's
    /// PN, so the server asks that PN GW to confirm it and its charging (001 §5.2.1.1).
    #[arg(long, value_name = "PN_GW_ID")]
    pub home_gateway: Option<cpns_wire::EntityId>,
    /// Register with the server (003 §1.4) after the other steps.
    #[arg(long)]
    pub register: bool,
    /// Then send TEXT to the server's echo service over the secure session that registration
    /// set up (now or earlier: the session is kept in --store), sealed end to end so the PN GW
    /// cannot read it, and print the answer.
    #[arg(long, value_name = "TEXT")]
    pub echo: Option<String>,
    /// Then stay: keep the link to the PN GW (reconnecting with backoff when it drops), follow
    /// what the PN GW says changes, and take `cpns pn` requests on the control socket until
    /// stopped (Ctrl-C or SIGTERM).
    #[arg(long)]
    pub stay: bool,
    /// With --stay: the control socket (mode 0600); default: the store's path with `.sock`
    /// added.
    #[arg(long, requires = "stay")]
    pub control: Option<PathBuf>,
    /// Give up on the steps after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
    /// How often the PNE tells its PN GW it is there when it has nothing else to say.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_s: u64,
    /// At most one report of dynamic capabilities (battery, free memory, networks, running
    /// applications) per this many seconds, with the latest values.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub dynamic_interval_s: u64,
    /// The AEAD wanted first for the sealed PAN link and the chunks this PNE sends: `auto`
    /// (AES-256-GCM where this CPU has AES instructions, else ChaCha20-Poly1305),
    /// `aes-256-gcm` or `chacha20-poly1305`.
    #[arg(long, value_name = "SUITE", default_value = "auto")]
    pub aead: String,
    /// A battery going below this percentage is reported at once.
    #[arg(long, value_name = "PCT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub battery_alert: u8,
    /// With --stay: send the usage records the preferences allow this often (seconds; 0: only
    /// on `cpns usage report --send`), once registered.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub usage_every_s: u64,
    /// With --stay: the usage reporting preference of a service with none of its own
    /// (`private`, `server` or `shared`; `cpns usage prefs` sets one per service).
    #[arg(long, value_name = "PREF", default_value = "server", value_parser = usage_pref)]
    pub usage_default: cpns_proto::usage::Preference,
    /// Print events as JSON objects, one per line, instead of readable lines.
    #[arg(long)]
    pub json: bool,
    /// The PNE's device capabilities.
    #[command(flatten)]
    pub caps: CapabilityArgs,
}

/// Parses a setup type: `1-1`, `all` or a comma list.
pub(crate) fn setup_type(s: &str) -> anyhow::Result<SetupType> {
    Ok(match s {
        "1-1" => SetupType::OneToOne,
        "all" => SetupType::All,
        list => SetupType::Invite(
            list.split(',')
                .map(|p| p.trim().parse())
                .collect::<Result<_, _>>()
                .context("--setup")?,
        ),
    })
}

/// `cpns pne`.
pub(crate) async fn pne(a: PneArgs) -> anyhow::Result<()> {
    let cred = read_credential(&a.credential, DeviceKind::Pne)?;
    if cred.certified.is_none() {
        eprintln!(
            "note: {} holds no member certificate (written before group content was signed): \
             this PNE can neither send nor read group content until the device is enrolled again",
            a.credential.display()
        );
    }
    let capabilities = a.caps.resolve(defaults("phone", true, false))?;
    let store = SqliteStore::open(&a.store)
        .await
        .with_context(|| format!("open {}", a.store.display()))?;
    let cfg = PneConfig {
        capabilities,
        security: pan_security(&a.pan_security)?,
        invitations: match (a.decline, a.invitations) {
            (true, _) | (false, Invitations::Decline) => InvitationPolicy::Decline,
            (false, Invitations::Accept) => InvitationPolicy::Accept,
            (false, Invitations::Ask) => InvitationPolicy::Ask {
                within: Duration::from_secs(a.ask_within_s),
            },
        },
        deliveries: if a.deliveries == "decline" {
            InvitationPolicy::Decline
        } else {
            InvitationPolicy::Accept
        },
        home_gateway: a.home_gateway.clone(),
        heartbeat: Some(Duration::from_secs(a.heartbeat_s)),
        dynamic_interval: Duration::from_secs(a.dynamic_interval_s),
        battery_alert: Some(a.battery_alert),
        usage_every: (a.usage_every_s > 0).then(|| Duration::from_secs(a.usage_every_s)),
        signing: cred.signing(),
        suites: suites(&a.aead)?,
        ..PneConfig::new(cred.entity_id.clone(), cred.eukey.clone())
    };
    let mut steps = Vec::new();
    if let Some(s) = &a.setup {
        steps.push(PneStep::Setup(setup_type(s)?));
    }
    if a.await_invitation {
        steps.push(PneStep::AwaitInvitation);
    }
    if a.register {
        steps.push(PneStep::Register(None));
    }
    if let Some(text) = &a.echo {
        steps.push(PneStep::SecureCall {
            service: cpns_wire::ECHO_SERVICE.into(),
            payload: text.as_bytes().to_vec(),
        });
    }
    let (events_tx, mut events) = mpsc::channel(cpns_node::gateway::EVENT_CAPACITY);
    let printer = EventPrinter::new(Role::Pne, a.json);
    let printing = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            printer.pne(&e);
        }
    });
    if a.stay {
        return pne_stay(a, cfg, store, steps, events_tx, printing).await;
    }
    let (_stop_tx, stop) = oneshot::channel();
    let run = pne::run(
        cfg,
        store.clone(),
        &a.gateway,
        steps,
        Some(events_tx),
        None,
        stop,
    );
    let report = tokio::time::timeout(Duration::from_secs(a.timeout_s), run)
        .await
        .map_err(|_| anyhow::anyhow!("gave up after {} s", a.timeout_s))?
        .map_err(anyhow::Error::msg)?;
    let _ = printing.await;
    store.close().await;
    let failures = report.failures();
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// `cpns pne --stay`: the steps, then a long-running PNE with its control socket.
async fn pne_stay(
    a: PneArgs,
    cfg: PneConfig,
    store: SqliteStore,
    steps: Vec<PneStep>,
    events: mpsc::Sender<cpns_proto::pne::PneEvent>,
    printing: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    let control_path = a
        .control
        .clone()
        .unwrap_or_else(|| cpns_node::control::socket_path(&a.store));
    let control = cpns_node::control::ControlSocket::bind(&control_path).await?;
    let printer = EventPrinter::new(Role::Pne, a.json);
    printer.run(&RunEvent::ControlListening(
        control.path().display().to_string(),
    ));
    let shutdown = shutdown_signal()?;
    let (stop_tx, stop) = oneshot::channel();
    let mut serve_cfg = pne::ServeConfig::new(a.gateway.clone());
    serve_cfg.usage_default = a.usage_default;
    serve_cfg.share = a.share.clone();
    serve_cfg.inbox = Some(a.inbox.clone().unwrap_or_else(|| {
        let mut p = a.store.clone().into_os_string();
        p.push(".inbox");
        PathBuf::from(p)
    }));
    let (handle, mut task) = pne::serve(
        cfg,
        serve_cfg,
        store.clone(),
        steps,
        Some(events),
        None,
        stop,
    );
    let (control_stop, control_stopped) = tokio::sync::watch::channel(false);
    let api = cpns_node::control::pne::PneApi::new(handle, store.clone(), a.usage_default);
    let control_task = tokio::spawn(control.serve(
        move |request| {
            let api = api.clone();
            async move { api.answer(request).await }
        },
        control_stopped,
    ));
    let r = tokio::select! {
        r = &mut task => r,
        () = shutdown => {
            let _ = stop_tx.send(());
            task.await
        }
    };
    let _ = control_stop.send(true);
    let _ = control_task.await;
    let _ = printing.await;
    store.close().await;
    r.context("the PNE task")?.map_err(anyhow::Error::msg)
}

/// The answer to invitations `cpns pne --invitations` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Invitations {
    /// `accept`.
    Accept,
    /// `decline`.
    Decline,
    /// `ask`.
    Ask,
}

/// `accept`, `decline` or `ask`.
fn invitations(s: &str) -> Result<Invitations, String> {
    match s {
        "accept" => Ok(Invitations::Accept),
        "decline" => Ok(Invitations::Decline),
        "ask" => Ok(Invitations::Ask),
        other => Err(format!("`{other}`: accept, decline or ask")),
    }
}

/// `private`, `server` or `shared`.
fn usage_pref(s: &str) -> Result<cpns_proto::usage::Preference, String> {
    cpns_proto::usage::Preference::parse(s)
        .ok_or_else(|| format!("`{s}`: private, server or shared"))
}

/// `yes` or `no`.
fn yes_or_no(s: &str) -> Result<bool, String> {
    match s {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("`{other}`: say yes or no")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::suites;
    use cpns_crypto::Suite;

    #[test]
    fn aead_puts_the_suite_named_first_and_auto_follows_the_cpu() {
        assert_eq!(suites("auto").unwrap(), Suite::local_preference());
        assert_eq!(
            suites("chacha20-poly1305").unwrap(),
            [Suite::ChaCha20Poly1305, Suite::Aes256Gcm]
        );
        assert_eq!(
            suites("aes-256-gcm").unwrap(),
            [Suite::Aes256Gcm, Suite::ChaCha20Poly1305]
        );
        let e = suites("rot13").unwrap_err().to_string();
        assert!(
            e.contains("`auto`, `aes-256-gcm` or `chacha20-poly1305`, not `rot13`"),
            "{e}"
        );
    }
}
