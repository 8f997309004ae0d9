//! `cpns elect`: two devices that meet with no PN GW elect one (002 §B.1.1.1 steps 1-7), then
//! each takes its role: the winner runs as the PN GW (`cpns gateway`, connecting to the CPNS
//! Server), the other as a PNE of it (`cpns pne --stay`). The device's credential must be
//! enrolled for both roles (`cpns enroll --kind both`) to win; a PNE-only one takes part but
//! never wins.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser};
use cpns_node::frames::{DEFAULT_MAX_QUEUED, FramedConn};
use cpns_node::{DeviceCredential, DeviceKind};
use cpns_proto::election::{Election, ElectionOutput, Outcome};
use tokio::net::{TcpListener, TcpStream};

use crate::capabilities::{CapabilityArgs, defaults};
use crate::events::{EventPrinter, Role, RunEvent};

#[derive(Args, Debug)]
pub(crate) struct ElectArgs {
    /// The device's credential: enrolled for both roles (`--kind both`) to be able to win, or
    /// as a PNE only.
    #[arg(long)]
    pub credential: PathBuf,
    /// The device's local store (SQLite file), for the role it takes.
    #[arg(long)]
    pub store: PathBuf,
    /// The CPNS Server, should this device become the PN GW.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub server: String,
    /// Wait for the other device on this address (one of the two listens, the other dials).
    #[arg(long, required_unless_present = "peer", conflicts_with = "peer")]
    pub listen: Option<String>,
    /// Dial the other device listening here.
    #[arg(long)]
    pub peer: Option<String>,
    /// Should this device become the PN GW, take PNEs on this address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub pan_listen: String,
    /// PAN security, for the role taken: `cpns` or `trusted`.
    #[arg(long, default_value = "cpns")]
    pub pan_security: String,
    /// Give up on the election after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Print events as JSON objects, one per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub caps: CapabilityArgs,
}

/// Runs the election, then the role it gave.
pub(crate) async fn elect(a: ElectArgs) -> anyhow::Result<()> {
    let cred = DeviceCredential::read(&a.credential)?;
    let able = match cred.kind {
        DeviceKind::Both => true,
        DeviceKind::Pne => false,
        DeviceKind::Gateway => bail!(
            "{} is a PN GW's credential: a PN GW needs no election, run `cpns gateway`",
            a.credential.display()
        ),
    };
    let mut caps = a.caps.resolve(defaults("phone", true, able))?;
    if !able {
        // Enrolled as a PNE only: the server would not take it as a PN GW.
        caps.gateway_capable = false;
    }
    let printer = EventPrinter::new(Role::Pne, a.json);
    // Where it would take PNEs, known before it can announce it (step 7).
    let pan_address = if caps.gateway_capable {
        let l = TcpListener::bind(&a.pan_listen)
            .await
            .with_context(|| format!("--pan-listen {}", a.pan_listen))?;
        Some(l.local_addr()?.to_string())
    } else {
        None
    };
    let wait = Duration::from_secs(a.timeout_s);
    let stream = tokio::time::timeout(wait, pair(&a, &printer))
        .await
        .context("no other device paired in time")??;
    let machine = Election::new(
        cred.entity_id.clone(),
        caps,
        pan_address.clone(),
        cpns_wire::DEFAULT_MAX_FRAME,
    );
    let outcome = run(stream, machine, wait, &None).await?;
    match outcome {
        Outcome::BecomeGateway { .. } => {
            printer.run(&RunEvent::Elected {
                gateway: cred.entity_id.clone(),
                me: true,
                pan_address: pan_address.clone(),
            });
            let pan = pan_address.context("elected without a PAN address")?;
            let mut argv = vec!["cpns", "gateway", "--pan-listen", &pan];
            argv.extend(["--server", &a.server]);
            run_role(&a, argv).await
        }
        Outcome::Follow {
            gateway,
            pan_address,
        } => {
            printer.run(&RunEvent::Elected {
                gateway: gateway.clone(),
                me: false,
                pan_address: pan_address.clone(),
            });
            let Some(pan) = pan_address else {
                bail!("the elected PN GW {gateway} did not say where to reach it");
            };
            run_role(&a, vec!["cpns", "pne", "--stay", "--gateway", &pan]).await
        }
        Outcome::NoGateway => bail!(
            "neither device can be a PN GW: enroll one with --kind both and give it --gateway-capable"
        ),
        Outcome::Failed(why) => bail!("the election failed: {why}"),
    }
}

/// Pairs with the other device: waits for it (`--listen`) or dials it (`--peer`), retrying
/// until it listens.
async fn pair(a: &ElectArgs, printer: &EventPrinter) -> anyhow::Result<TcpStream> {
    if let Some(addr) = &a.listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("--listen {addr}"))?;
        printer.run(&RunEvent::ElectionListening(l.local_addr()?.to_string()));
        let (s, _) = l.accept().await?;
        return Ok(s);
    }
    let Some(peer) = &a.peer else {
        bail!("say --listen or --peer");
    };
    let mut delay = Duration::from_millis(50);
    loop {
        match TcpStream::connect(peer).await {
            Ok(s) => return Ok(s),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Drives the election machine over the paired link until it ends; reports each message sent
/// to `trace` (the demo's diagram).
pub(crate) async fn run(
    stream: TcpStream,
    mut m: Election,
    wait: Duration,
    trace: &cpns_node::TraceSink,
) -> anyhow::Result<Outcome> {
    stream.set_nodelay(true)?;
    let mut conn = FramedConn::new(stream, cpns_wire::DEFAULT_MAX_FRAME, DEFAULT_MAX_QUEUED);
    m.start(Instant::now(), wait)?;
    loop {
        while let Some(out) = m.poll_output() {
            match out {
                ElectionOutput::Transmit(frame) => {
                    report(trace, m.me(), m.peer(), &frame);
                    // The other device may have ended its part (it decided, and closed) while
                    // this one still answers it: what it sent is read all the same, so a
                    // frame that cannot go out ends nothing.
                    let _ = conn.queue(&frame);
                }
                ElectionOutput::Done(outcome) => {
                    // The announcement reaches the other device before this one moves on,
                    // if it still listens.
                    let _ = conn.flush().await;
                    if matches!(outcome, Outcome::BecomeGateway { .. }) {
                        // The other device closes once it read the announcement; closing
                        // first, with its answers unread, would reset the link under it.
                        let linger = async { while conn.next_frame().await.is_ok() {} };
                        let _ = tokio::time::timeout(Duration::from_secs(2), linger).await;
                    }
                    return Ok(outcome);
                }
            }
        }
        let _ = conn.write_now();
        let deadline = m.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            frame = conn.next_frame() => {
                let mut frame = frame.context("the other device left the election")?;
                m.handle_frame(Instant::now(), &mut frame)?;
            }
            () = sleep_until(deadline) => m.handle_timeout(Instant::now()),
        }
    }
}

/// Reports a frame of the election to `trace`, named as the protocol names it.
fn report(
    trace: &cpns_node::TraceSink,
    me: &cpns_wire::EntityId,
    peer: Option<&cpns_wire::EntityId>,
    frame: &[u8],
) {
    let Some(tx) = trace else {
        return;
    };
    let message = cpns_proto::link::frame_body(frame)
        .and_then(|b| cpns_wire::decode_envelope(b.get(1..)?).ok())
        .map_or("?", |env| env.body.name());
    let event = cpns_node::TraceEvent {
        at: Instant::now(),
        sender: me.to_string(),
        receiver: peer.map_or_else(|| "peer".to_string(), ToString::to_string),
        message,
        on_behalf_of: None,
        sealed: false,
    };
    let _ = tx.try_send(event);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs `cpns gateway` or `cpns pne` as this device, with its credential, store and
/// capabilities.
async fn run_role(a: &ElectArgs, mut argv: Vec<&str>) -> anyhow::Result<()> {
    let cred = a.credential.to_string_lossy().into_owned();
    let store = a.store.to_string_lossy().into_owned();
    argv.extend(["--credential", &cred, "--store", &store]);
    argv.extend(["--pan-security", &a.pan_security]);
    if a.json {
        argv.push("--json");
    }
    let cli = crate::Cli::try_parse_from(argv).context("the role's arguments")?;
    match cli.command {
        crate::Command::Gateway(mut g) => {
            g.caps = a.caps.clone();
            crate::run::gateway(g).await
        }
        crate::Command::Pne(mut p) => {
            p.caps = a.caps.clone();
            crate::run::pne(p).await
        }
        _ => bail!("no such role"),
    }
}
