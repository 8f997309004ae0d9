//! The PNE runtime: one PAN connection to a PN GW (CPNS-6) driving a [`PneSession`], the PNE's
//! local PN inventory in a [`Store`], and a short script of what the PNE should do (discover,
//! set up a PN, wait to be invited, register).

use std::time::Instant;

use cpns_proto::pne::{PneConfig, PneEvent, PneOutput, PneSession, SecureSession};
use cpns_store::{LocalSession, Store};
use cpns_wire::{PnId, SetupType};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::error::{NodeError, store_failure};
use crate::frames::{DEFAULT_MAX_QUEUED, FrameError, FramedConn};
use crate::gateway::{local_pn_record, local_pn_state};
use crate::server::sleep_until;
use crate::server_store::{open_sk, sealed_sk, unix_millis};
use crate::trace::{TraceSink, report};

/// One step of what a PNE does once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PneStep {
    /// 000 §6.6.1.1 step 1: ask for a PN of this type, until joined or failed.
    Setup(SetupType),
    /// Wait until this PNE joins a PN it is invited to (or declines, or fails).
    AwaitInvitation,
    /// 003 §1.4: register, in this PN or (with `None`) in the PN this PNE belongs to.
    Register(Option<PnId>),
    /// 003 §1.4.1 step 4: call `service` on the server over the secure session (registered
    /// now or before: the session is kept in the local store), until it answers.
    SecureCall {
        /// The service, e.g. [`cpns_wire::ECHO_SERVICE`].
        service: String,
        /// Its payload.
        payload: Vec<u8>,
    },
}

/// What the PNE did.
#[derive(Clone, Debug, Default)]
pub struct PneReport {
    /// Every event, in order.
    pub events: Vec<PneEvent>,
}

impl PneReport {
    /// Whether a step failed.
    pub fn failures(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PneEvent::FlowFailed { flow, reason } => Some(format!("{flow}: {reason}")),
                PneEvent::PnRefused { reason, .. } => Some(reason.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// Runs a PNE against the PN GW at `gw_addr`: discovery, then `steps` in order. Returns when
/// every step has ended (or at `stop`, or when the link closes).
pub async fn run<S: Store>(
    cfg: PneConfig,
    store: S,
    gw_addr: &str,
    steps: Vec<PneStep>,
    events: Option<mpsc::Sender<PneEvent>>,
    trace: TraceSink,
    mut stop: oneshot::Receiver<()>,
) -> Result<PneReport, NodeError> {
    let mut session = PneSession::new(cfg.clone(), cpns_crypto::MachineRng::os());
    let stored = store.local_pns().await?;
    session.restore(stored.iter().map(local_pn_state).collect())?;
    let storage_key = cpns_crypto::device_storage_key(&cfg.eukey);
    if let Some(kept) = store.local_session().await? {
        let session_key = open_sk(&storage_key, &kept.pn_id, &cfg.id, &kept.sealed_session_key)?;
        session.restore_session(SecureSession {
            cpns_id: kept.cpns_id,
            pn_id: kept.pn_id,
            session_key,
            lifetime_s: u32::try_from(kept.lifetime_s).unwrap_or(u32::MAX),
        });
    }
    let connect = |source| NodeError::Connect {
        addr: gw_addr.to_string(),
        source,
    };
    let stream = TcpStream::connect(gw_addr).await.map_err(connect)?;
    stream.set_nodelay(true).map_err(connect)?;
    // The PN GW is the peer this PNE chose to connect to: its frames get the full limit.
    let mut conn = FramedConn::new(stream, cfg.max_frame, DEFAULT_MAX_QUEUED);
    let me = cfg.id.to_string();
    let mut report_out = PneReport::default();
    let mut steps = steps.into_iter();
    let mut current: Option<PneStep> = None;
    session.start_discovery(Instant::now());
    let mut discovered = false;
    loop {
        // Carry out the outputs; see whether the current step ended.
        while let Some(out) = session.poll_output() {
            match out {
                PneOutput::Transmit {
                    frame,
                    trace: record,
                } => {
                    let gw = session
                        .gateway()
                        .map_or_else(|| "gateway".to_string(), |g| g.to_string());
                    report(&trace, &me, &gw, &record);
                    conn.queue(&frame)?;
                }
                PneOutput::Persist { token, pn } => {
                    let result = store
                        .save_local_pn(&local_pn_record(&pn))
                        .await
                        .map_err(|e| store_failure(&e));
                    session.handle_persisted(token, result)?;
                }
                PneOutput::Event(e) => {
                    // The driver reports events (the CLI prints them); the Debug form is for debugging.
                    debug!(event = ?e, "pne");
                    if let Some(tx) = &events
                        && tx.try_send(e.clone()).is_err()
                    {
                        debug!("PNE event dropped: the consumer is not keeping up");
                    }
                    if matches!(e, PneEvent::Discovered { .. }) {
                        discovered = true;
                    }
                    if current.as_ref().is_some_and(|s| step_ends(s, &e)) {
                        current = None;
                    }
                    report_out.events.push(e);
                }
                PneOutput::PersistSession { session: s } => {
                    let sealed = sealed_sk(&storage_key, &s.pn_id, &cfg.id, &s.session_key)
                        .map_err(|e| NodeError::Sealed {
                            what: "the secure session's key".into(),
                            reason: e.to_string(),
                        })?;
                    let record = LocalSession {
                        cpns_id: s.cpns_id,
                        pn_id: s.pn_id,
                        sealed_session_key: sealed,
                        lifetime_s: i64::from(s.lifetime_s),
                        stored_at: unix_millis(),
                    };
                    store.save_local_session(&record).await?;
                }
                PneOutput::Close { reason } => {
                    conn.close().await;
                    return Err(NodeError::Ended(reason));
                }
            }
        }
        if discovered && current.is_none() {
            match steps.next() {
                None => {
                    conn.close().await;
                    return Ok(report_out);
                }
                Some(step) => {
                    let now = Instant::now();
                    let started = match &step {
                        PneStep::Setup(t) => session.start_setup(now, t.clone()).map(|_| ()),
                        PneStep::AwaitInvitation => Ok(()),
                        PneStep::Register(pn) => {
                            let pn = pn.or_else(|| session.inventory().first().map(|i| i.pn_id));
                            session.start_registration(now, pn).map(|_| ())
                        }
                        PneStep::SecureCall { service, payload } => session
                            .secure_call(now, service, payload.clone())
                            .map(|_| ()),
                    };
                    started?;
                    current = Some(step);
                    continue;
                }
            }
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            frame = conn.next_frame() => match frame {
                Ok(frame) => match session.handle_frame(Instant::now(), &frame) {
                    Ok(()) => {}
                    Err(e @ cpns_proto::ProtoError::UnsupportedVersion { .. }) => {
                        debug!(error = %e, "dropped a frame of another protocol version");
                    }
                    Err(e) => return Err(e.into()),
                },
                Err(FrameError::Closed) => return Err(NodeError::Closed("the PN GW")),
                Err(e) => return Err(e.into()),
            },
            () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
            _ = &mut stop => return Ok(report_out),
        }
    }
}

/// Whether `e` ends `step`.
fn step_ends(step: &PneStep, e: &PneEvent) -> bool {
    matches!(
        (step, e),
        (_, PneEvent::FlowFailed { .. })
            | (
                PneStep::Setup(_) | PneStep::AwaitInvitation,
                PneEvent::PnJoined { .. } | PneEvent::PnRefused { .. }
            )
            | (PneStep::AwaitInvitation, PneEvent::InvitationDeclined(_))
            | (PneStep::Register(_), PneEvent::Registered { .. })
            | (PneStep::SecureCall { .. }, PneEvent::SecureAnswer { .. })
    )
}
