//! The PN GW's PAN side (CPNS-1): the accept loop and one task per link.
//!
//! Each link task owns its socket: it reads frames in place ([`FramedConn`]) and hands them to
//! the PN GW's event loop through its bounded inbox (so a busy loop slows the readers down,
//! never grows a queue), and writes what the loop sends it through the link's own bounded
//! command channel. A link that does not read its answers is cut off when its output is full.
//!
//! A new link is *unproven*: it holds one of the few unauthenticated slots ([`Admission`]), may
//! send only small frames and must prove which PNE it is within `unproven_lifetime`. Once the
//! PN GW machine reports it proven ([`GatewayEvent::LinkProven`]), the loop sends
//! [`LinkCmd::Promote`]: the link takes an authenticated slot and the full frame limit.

use std::time::Duration;

use bytes::BytesMut;
use cpns_proto::gateway::LinkId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admission::{Admission, Unauthenticated};
use crate::frames::{FrameError, FramedConn, PRE_AUTH_MAX_FRAME};
use crate::server::{cancelled, sleep_until};

/// Frames the event loop may have waiting for one link's task before the link is cut off.
pub(crate) const LINK_COMMANDS: usize = 64;

/// What the event loop tells a link's task.
#[derive(Debug)]
pub(crate) enum LinkCmd {
    /// Send this whole frame.
    Frame(Vec<u8>),
    /// The link proved its PNE: authenticated slot, full frame limit, no deadline.
    Promote,
}

/// What a link's task tells the event loop.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A new link; the loop sends to it through this channel.
    Opened(mpsc::Sender<LinkCmd>),
    /// A frame arrived.
    Frame(BytesMut),
    /// The link is gone, and why.
    Closed(String),
}

/// Limits of the PAN side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkLimits {
    pub max_frame: u32,
    pub max_queued: usize,
    pub unproven_lifetime: Duration,
}

/// Accepts PNEs until `shutdown`; each link gets a task of its own, reporting to `inbox`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    admission: Admission,
    limits: LinkLimits,
    shutdown: CancellationToken,
    inbox: mpsc::Sender<(LinkId, LinkEvent)>,
) {
    let mut next = 0u64;
    loop {
        let slot = tokio::select! {
            slot = admission.admit() => slot,
            () = shutdown.cancelled() => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "PAN accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        next += 1;
        let link = LinkId(next);
        let inbox = inbox.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(LINK_COMMANDS);
            if inbox.send((link, LinkEvent::Opened(tx))).await.is_err() {
                return;
            }
            let reason = serve_link(stream, slot, limits, rx, &inbox, link, shutdown).await;
            debug!(link = link.0, %reason, "PAN link ended");
            let _ = inbox.send((link, LinkEvent::Closed(reason))).await;
        });
    }
}

/// Serves one link until it ends; returns why.
async fn serve_link(
    stream: TcpStream,
    slot: Unauthenticated,
    limits: LinkLimits,
    mut commands: mpsc::Receiver<LinkCmd>,
    inbox: &mpsc::Sender<(LinkId, LinkEvent)>,
    link: LinkId,
    shutdown: CancellationToken,
) -> String {
    let mut conn = FramedConn::new(stream, PRE_AUTH_MAX_FRAME, limits.max_queued);
    let mut unproven = Some(slot);
    let mut _proven = None;
    let mut deadline = Some(tokio::time::Instant::now() + limits.unproven_lifetime);
    loop {
        let evicted = unproven.as_ref().map(|s| s.evicted().clone());
        tokio::select! {
            frame = conn.next_frame() => match frame {
                Ok(frame) => {
                    if inbox.send((link, LinkEvent::Frame(frame))).await.is_err() {
                        return "the PN GW stopped".into();
                    }
                }
                Err(FrameError::Closed) => return "closed by the PNE".into(),
                Err(e) => return e.to_string(),
            },
            cmd = commands.recv() => match cmd {
                Some(LinkCmd::Frame(frame)) => {
                    if let Err(e) = conn.queue(&frame) {
                        return e.to_string();
                    }
                }
                Some(LinkCmd::Promote) => {
                    let Some(slot) = unproven.take() else { continue };
                    match slot.authenticate() {
                        Some(authed) => {
                            _proven = Some(authed);
                            deadline = None;
                            conn.set_max_frame(limits.max_frame);
                        }
                        None => return "every PAN link slot is taken".into(),
                    }
                }
                None => {
                    // The PN GW closed the link: say what was queued, then hang up.
                    conn.close().await;
                    return "closed by the PN GW".into();
                }
            },
            () = sleep_until(deadline) => {
                return "the PNE did not prove its identity in time".into();
            }
            () = cancelled(evicted) => {
                return "evicted: a newer unproven link needed the slot".into();
            }
            () = shutdown.cancelled() => return "the PN GW stopped".into(),
        }
    }
}
