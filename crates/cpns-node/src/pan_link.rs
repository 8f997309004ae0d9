//! The PN GW's PAN side (CPNS-1): the accept loop and one task per link.
//!
//! Each link task owns its socket: it reads frames in place ([`FramedConn`]) and hands them to
//! the PN GW's event loop through its bounded inbox, at most [`LINK_FRAMES_IN_FLIGHT`] at a time
//! (so a busy loop slows the readers down, never grows a queue, and one flooding link cannot
//! fill the inbox), and writes what the loop sends it through the link's own bounded command
//! channel, also while it waits for the loop. A link that does not read its answers is cut off
//! when its output is full; one that reads them is not, however fast it sends.
//!
//! A new link is *unproven*: it holds one of the few unauthenticated slots ([`Admission`]), may
//! send only small frames and must prove which PNE it is within `unproven_lifetime`. Once the
//! PN GW machine reports it proven ([`GatewayEvent::LinkProven`]), the loop sends
//! [`LinkCmd::Promote`]: the link takes an authenticated slot and the full frame limit.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use cpns_proto::gateway::LinkId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admission::{Admission, Authenticated, Unauthenticated};
use crate::clock::{cancelled, sleep_until};
use crate::frames::{FrameError, FramedConn, PRE_AUTH_MAX_FRAME};

/// Frames the event loop may have waiting for one link's task before the link is cut off.
pub(crate) const LINK_COMMANDS: usize = 64;

/// Frames of one link handed to the event loop and not yet taken by it. Beyond them the link
/// reads nothing more from its PNE: a flooding link holds at most this many places of the loop's
/// shared inbox, and the answers to them fit its command channel ([`LINK_COMMANDS`]) even when
/// the link's task is not scheduled for a while.
pub(crate) const LINK_FRAMES_IN_FLIGHT: usize = 8;

/// A frame read from a link. It holds one of the link's places in the loop's inbox
/// ([`LINK_FRAMES_IN_FLIGHT`]) until the loop drops it.
pub(crate) struct LinkFrame {
    bytes: BytesMut,
    _place: OwnedSemaphorePermit,
}

impl Deref for LinkFrame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::ops::DerefMut for LinkFrame {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl core::fmt::Debug for LinkFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "LinkFrame({} bytes)", self.bytes.len())
    }
}

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
    Frame(LinkFrame),
    /// The link is gone, and why.
    Closed(String),
}

/// Limits of the PAN side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkLimits {
    pub max_frame: u32,
    /// The bound of what may wait for the PNE before it is proven.
    pub max_queued: usize,
    /// The bound once it is proven.
    pub proven_max_queued: usize,
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
        // Its slot. When every unproven slot is taken, the oldest unproven link is evicted for
        // it: only once a newcomer is here, never ahead of one (taking the slot before
        // accepting would evict a link for a connection that may never come, and leave one
        // slot fewer than `max_unproven_links` for links that are here).
        let slot = tokio::select! {
            slot = admission.admit() => slot,
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

/// Why a command of the loop ends a link.
enum Ended {
    /// Cut off, for this reason.
    Cut(String),
    /// The PN GW closed the link: say what was queued, then hang up.
    Hangup,
}

/// The proof state of one link: its slot, and the deadline while unproven.
struct Proof {
    unproven: Option<Unauthenticated>,
    proven: Option<Authenticated>,
    deadline: Option<tokio::time::Instant>,
}

impl Proof {
    /// Carries out one command of the event loop.
    fn command(
        &mut self,
        cmd: Option<LinkCmd>,
        conn: &mut FramedConn<TcpStream>,
        limits: &LinkLimits,
    ) -> Result<(), Ended> {
        match cmd {
            Some(LinkCmd::Frame(frame)) => {
                conn.queue(&frame).map_err(|e| Ended::Cut(e.to_string()))
            }
            Some(LinkCmd::Promote) => {
                let Some(slot) = self.unproven.take() else {
                    return Ok(());
                };
                let Some(authed) = slot.authenticate() else {
                    return Err(Ended::Cut("every PAN link slot is taken".into()));
                };
                self.proven = Some(authed);
                self.deadline = None;
                conn.set_max_frame(limits.max_frame);
                conn.set_max_queued(limits.proven_max_queued);
                Ok(())
            }
            None => Err(Ended::Hangup),
        }
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
    let places = Arc::new(Semaphore::new(LINK_FRAMES_IN_FLIGHT));
    let mut proof = Proof {
        unproven: Some(slot),
        proven: None,
        deadline: Some(tokio::time::Instant::now() + limits.unproven_lifetime),
    };
    loop {
        let evicted = proof.unproven.as_ref().map(|s| s.evicted().clone());
        let ended = tokio::select! {
            frame = conn.next_frame() => match frame {
                Ok(bytes) => {
                    // Hand the frame to the loop once it took enough of this link's earlier
                    // ones and has room. Meanwhile keep taking its commands for this link and
                    // writing them out: a PNE that reads its answers is never cut off for the
                    // loop's own backlog, only one whose output buffer is full.
                    let handed = async {
                        let place = places.clone().acquire_owned().await;
                        (place, inbox.reserve().await)
                    };
                    tokio::pin!(handed);
                    let permit = loop {
                        tokio::select! {
                            biased;
                            cmd = commands.recv() => {
                                if let Err(end) = proof.command(cmd, &mut conn, &limits) {
                                    break Err(end);
                                }
                            }
                            (place, permit) = &mut handed => match (place, permit) {
                                (Ok(place), Ok(permit)) => break Ok((place, permit)),
                                _ => return "the PN GW stopped".into(),
                            },
                            flushed = conn.flush(), if conn.queued() > 0 => {
                                if let Err(e) = flushed {
                                    return e.to_string();
                                }
                            }
                            () = shutdown.cancelled() => return "the PN GW stopped".into(),
                        }
                    };
                    permit.map(|(place, permit)| {
                        let frame = LinkFrame { bytes, _place: place };
                        permit.send((link, LinkEvent::Frame(frame)));
                    })
                }
                Err(FrameError::Closed) => return "closed by the PNE".into(),
                Err(e) => return e.to_string(),
            },
            cmd = commands.recv() => proof.command(cmd, &mut conn, &limits),
            () = sleep_until(proof.deadline) => {
                return "the PNE did not prove its identity in time".into();
            }
            () = cancelled(evicted) => {
                return "evicted: a newer unproven link needed the slot".into();
            }
            () = shutdown.cancelled() => return "the PN GW stopped".into(),
        };
        match ended {
            Ok(()) => {}
            Err(Ended::Cut(reason)) => return reason,
            Err(Ended::Hangup) => {
                conn.close().await;
                return "closed by the PN GW".into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::frames::{DEFAULT_MAX_QUEUED, FrameError, PAN_MAX_QUEUED};

    /// A frame of `len` bytes of body.
    fn frame(len: usize) -> Vec<u8> {
        let mut f = u32::try_from(len).unwrap().to_be_bytes().to_vec();
        f.resize(4 + len, 7);
        f
    }

    /// How many 60 KiB frames `conn` queues for a peer that reads nothing before its bound
    /// refuses one.
    fn taken_before_full(conn: &mut FramedConn<TcpStream>) -> usize {
        let mut n = 0;
        loop {
            match conn.queue(&frame(60 * 1024)) {
                Ok(()) => n += 1,
                Err(FrameError::QueueFull(_)) => return n,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A link's output bound is the tight one until its PNE is proven, and room for a
    /// delivery's window once it is (a peer that reads nothing, at the socket).
    #[tokio::test]
    async fn a_links_bound_is_raised_once_its_pne_is_proven() {
        let limits = LinkLimits {
            max_frame: 1 << 20,
            max_queued: DEFAULT_MAX_QUEUED,
            proven_max_queued: PAN_MAX_QUEUED,
            unproven_lifetime: Duration::from_secs(60),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Admission::new(2, 2);
        let mut conns = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..2 {
            peers.push(TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            conns.push(FramedConn::new(
                stream,
                PRE_AUTH_MAX_FRAME,
                limits.max_queued,
            ));
        }
        let unproven = taken_before_full(&mut conns[0]);
        assert_eq!(unproven, DEFAULT_MAX_QUEUED / (60 * 1024 + 4));
        let mut proof = Proof {
            unproven: Some(admission.admit().await),
            proven: None,
            deadline: None,
        };
        assert!(
            proof
                .command(Some(LinkCmd::Promote), &mut conns[1], &limits)
                .is_ok()
        );
        let proven = taken_before_full(&mut conns[1]);
        assert_eq!(proven, PAN_MAX_QUEUED / (60 * 1024 + 4));
        assert!(proof.proven.is_some() && proof.unproven.is_none());
    }
}
