//! Deliveries from outside a PN, at the session that sends them (docs/services.md, "Delivery
//! from outside a PN"): the file each one reads from, who waits for its answer, and who
//! follows its events. Held by the session; when its connection is lost, those sending are
//! parked for the PN GW's next session ([`Parked`]), with the forwards between PNs it relayed
//! (`relay.rs`), for as long as their targets wait for a chunk; past that they end (a follower
//! is told so, and each forward's other side).

use std::collections::HashMap;
use std::path::PathBuf;

use cpns_control::Event;
use cpns_proto::server::ServerEvent;
use cpns_wire::{DeliveryId, EntityId, ErrorBody};
use tokio::sync::{mpsc, oneshot};

use crate::content_files::ContentFiles;

/// Where the answer to a delivery's set-up goes.
pub(super) type StartReply = oneshot::Sender<Result<DeliveryId, ErrorBody>>;

/// A delivery asked of this session and not set up yet.
struct Pending {
    files: Vec<(PathBuf, u64)>,
    reply: StartReply,
    follower: Option<Follower>,
}

/// Who follows a session's events, and the session's source (named in a stop).
pub(super) struct Follower {
    pub(super) events: mpsc::Sender<Event>,
    pub(super) source: EntityId,
}

/// The deliveries from outside this session sends.
#[derive(Default)]
pub(super) struct Outbound {
    next: u64,
    pending: HashMap<u64, Pending>,
    files: ContentFiles,
    followers: HashMap<DeliveryId, Follower>,
}

impl Outbound {
    /// A delivery of `files` (one per item, each with its size) is asked: the number its
    /// set-up is answered with.
    pub(super) fn ask(
        &mut self,
        files: Vec<(PathBuf, u64)>,
        reply: StartReply,
        follower: Option<Follower>,
    ) -> u64 {
        self.next += 1;
        self.pending.insert(
            self.next,
            Pending {
                files,
                reply,
                follower,
            },
        );
        self.next
    }

    /// The answer to set-up `ask`: the asker is told; a session set up reads its file.
    /// The session set up, if its asker still waits for it; one whose asker gave up (its
    /// answer came too late) is to be abandoned: it is returned, and nothing of it is kept.
    pub(super) fn started(
        &mut self,
        ask: u64,
        result: Result<DeliveryId, ErrorBody>,
    ) -> Option<DeliveryId> {
        let p = self.pending.remove(&ask)?;
        let session = result.as_ref().ok().copied();
        if p.reply.send(result).is_err() {
            return session;
        }
        if let Some(session) = session {
            self.files.send_from(session, p.files);
            if let Some(f) = p.follower {
                self.followers.insert(session, f);
            }
        }
        None
    }

    /// `len` bytes at `offset` of what `session` sends.
    pub(super) async fn read(
        &mut self,
        session: DeliveryId,
        offset: u64,
        len: u64,
    ) -> Result<cpns_crypto::ChunkPlain, String> {
        self.files.read(session, offset, len).await
    }
}

/// The deliveries from outside a lost session was sending, waiting for its PN GW's next
/// session: the machine's part and the files and followers. Dropped unclaimed, each follower is
/// told its delivery ended.
pub(super) struct Parked {
    pub(super) kept: cpns_proto::server::KeptOutbound,
    pub(super) sending: Outbound,
    /// Which parking this is (a later one of the same PN GW replaces it).
    pub(super) token: u64,
}

/// What a parking past its grace leaves to do: the stops, as the server reports them, and the
/// end of each forward, for the session of its other side's PN GW.
pub(super) struct Expired {
    pub(super) stops: Vec<ServerEvent>,
    pub(super) letters: Vec<(EntityId, DeliveryId, cpns_proto::server::Relayed)>,
}

impl Parked {
    /// Its PN GW `gw` did not come back within `grace`: each session kept, or followed,
    /// stops, its follower told why, and each forward's other side is to be told it ended.
    pub(super) fn expire(mut self, gw: &EntityId, grace: std::time::Duration) -> Expired {
        let reason = format!(
            "{gw} did not come back within {} s of losing its session with the server",
            grace.as_secs()
        );
        let mut sessions = self.kept.sessions();
        sessions.extend(self.sending.followers.keys().copied());
        sessions.sort_unstable();
        sessions.dedup();
        let stops = sessions
            .into_iter()
            .map(|session| {
                let stop = ServerEvent::DeliveryStopped {
                    session,
                    reason: reason.clone(),
                };
                self.sending.tell(&stop);
                stop
            })
            .collect();
        let letters = self.kept.expire(&reason);
        Expired { stops, letters }
    }
}

impl Outbound {
    /// The deliveries set up and sending (their files and followers), taken out; those whose
    /// set-up is not answered stay (their askers are told when this ends).
    pub(super) fn take_sending(&mut self) -> Outbound {
        Outbound {
            next: 0,
            pending: HashMap::new(),
            files: self.files.take_sending(),
            followers: std::mem::take(&mut self.followers),
        }
    }

    /// Takes on what `other` sends (restored in a new session).
    pub(super) fn absorb(&mut self, mut other: Outbound) {
        self.files.absorb_sending(other.files.take_sending());
        self.followers.extend(other.followers.drain());
    }
}

impl Drop for Outbound {
    /// The session ends (its connection is gone): whoever follows a delivery it sent is told
    /// it stopped, not left with a stream that merely ends.
    fn drop(&mut self) {
        for (session, f) in self.followers.drain() {
            let _ = f.events.try_send(Event::DeliveryEnded {
                session,
                target: f.source.clone(),
                result: "failed".into(),
                reason: Some("the PN GW's session with the server ended".into()),
            });
        }
    }
}

impl Outbound {
    /// A delivery event of the session's machine, for whoever follows that session; the
    /// session's end ends the stream and closes its file.
    pub(super) fn tell(&mut self, e: &ServerEvent) {
        let (session, last) = match e {
            ServerEvent::DeliveryEnded { session, .. } => (*session, false),
            ServerEvent::DeliverySent { session, .. }
            | ServerEvent::DeliveryStopped { session, .. } => (*session, true),
            _ => return,
        };
        if let Some(f) = self.followers.get(&session)
            && let Some(event) = event_of(e, &f.source)
        {
            let _ = f.events.try_send(event);
        }
        if last {
            self.followers.remove(&session);
            self.files.forget(session);
        }
    }
}

/// A delivery event as its follower reads it; a stop is the source's own part ending.
fn event_of(e: &ServerEvent, source: &EntityId) -> Option<Event> {
    Some(match e {
        ServerEvent::DeliveryEnded {
            session,
            target,
            result,
        } => Event::DeliveryEnded {
            session: *session,
            target: target.clone(),
            result: crate::control::events::delivery_result(*result).into(),
            reason: None,
        },
        ServerEvent::DeliverySent { session, delivered } => Event::DeliverySent {
            session: *session,
            delivered: delivered.clone(),
        },
        ServerEvent::DeliveryStopped { session, reason } => Event::DeliveryEnded {
            session: *session,
            target: source.clone(),
            result: "failed".into(),
            reason: Some(reason.clone()),
        },
        _ => return None,
    })
}

impl<S: cpns_store::ServerStore + Clone> super::ServerNode<S> {
    /// The deliveries from outside a lost session of `gw` was sending, parked until a session
    /// of `gw` takes them: one that authenticates next, or one already running (the old
    /// connection was found dead after the PN GW came back on a new one), woken for it. They
    /// are kept for as long as their targets wait for a chunk (two flow timeouts, counted
    /// from their first loss), then end, each follower told.
    pub(super) fn park_outbound(
        &self,
        gw: EntityId,
        kept: cpns_proto::server::KeptOutbound,
        sending: Outbound,
    ) {
        static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let token = TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let grace = self.cfg.proto.timeouts.flow * 2;
        let until = {
            let mut parked = self.office.parked();
            // Two lost sessions of one PN GW: kept together, from the earlier loss.
            let (kept, sending) = match parked.remove(&gw) {
                Some(mut earlier) => {
                    earlier.kept.absorb(kept);
                    earlier.sending.absorb(sending);
                    (earlier.kept, earlier.sending)
                }
                None => (kept, sending),
            };
            let since = kept.since().unwrap_or_else(std::time::Instant::now);
            tracing::info!(%gw, sessions = kept.sessions().len(), "deliveries from outside wait for the PN GW's next session");
            parked.insert(
                gw.clone(),
                Parked {
                    kept,
                    sending,
                    token,
                },
            );
            since + grace
        };
        // A session of this PN GW already running takes them at its next turn.
        self.office.ring();
        let office = std::sync::Arc::clone(&self.office);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
            let expired = {
                let mut parked = office.parked();
                match parked.get(&gw) {
                    Some(p) if p.token == token => parked.remove(&gw),
                    _ => None,
                }
            };
            if let Some(p) = expired {
                tracing::warn!(%gw, sessions = ?p.kept.sessions(), "deliveries kept for a PN GW stopped: it did not come back in time");
                let Expired { stops, letters } = p.expire(&gw, grace);
                for (peer, session, msg) in letters {
                    // Gone there too: nothing is left to tell.
                    let _ = office.hand_over(&peer, session, msg);
                }
                for stop in stops {
                    if let Some(tx) = &events
                        && tx.try_send(stop).is_err()
                    {
                        tracing::debug!("server event dropped: the consumer is not keeping up");
                    }
                }
            }
        });
    }

    /// The deliveries from outside parked for `gw`, if any, go on in its session `session`.
    pub(super) fn unpark_outbound(
        &self,
        session: &mut cpns_proto::server::ServerSession,
        end: &mut super::SessionEnd,
        gw: &EntityId,
    ) {
        let Some(p) = self.office.parked().remove(gw) else {
            return;
        };
        let Parked {
            kept,
            sending,
            token,
        } = p;
        match session.restore_outbound(std::time::Instant::now(), kept) {
            Ok(()) => {
                tracing::info!(%gw, "deliveries kept for the PN GW go on in its session");
                end.outbound.absorb(sending);
                // The other side of each forward relays to it here from now on (by mail, each
                // letter would wake every session).
                let _ = self.inbox(end);
            }
            // Not this PN GW's session after all: parked again, as they were.
            Err(kept) => {
                let back = Parked {
                    kept,
                    sending,
                    token,
                };
                self.office.parked().insert(gw.clone(), back);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery parked past its grace stops as any other: its follower is told the
    /// source's part failed and why (the PN GW did not come back), the server reports
    /// `DeliveryStopped`, and nothing is told twice when the parking is dropped.
    #[tokio::test]
    async fn a_parked_delivery_past_its_grace_tells_its_follower_why_it_stopped() {
        let session = DeliveryId::from_bytes([7; 16]);
        let source: EntityId = "vod-service".parse().expect("an id");
        let (tx, mut rx) = mpsc::channel(4);
        let mut sending = Outbound::default();
        sending.followers.insert(
            session,
            Follower {
                events: tx,
                source: source.clone(),
            },
        );
        let parked = Parked {
            kept: cpns_proto::server::KeptOutbound::default(),
            sending,
            token: 0,
        };
        let gw: EntityId = "home-gw".parse().expect("an id");
        let Expired { stops, letters } = parked.expire(&gw, std::time::Duration::from_secs(60));
        assert!(letters.is_empty(), "no forward was kept");
        let [ServerEvent::DeliveryStopped { session: s, reason }] = stops.as_slice() else {
            panic!("one stop, not {stops:?}");
        };
        assert_eq!(*s, session);
        assert!(
            reason.contains("home-gw did not come back within 60 s"),
            "{reason}"
        );
        let Some(Event::DeliveryEnded {
            session: told,
            target,
            result,
            reason: Some(why),
        }) = rx.recv().await
        else {
            panic!("the follower was not told its delivery ended");
        };
        assert_eq!(
            (told, &target, result.as_str()),
            (session, &source, "failed")
        );
        assert_eq!(&why, reason);
        // The follower was told once: its stream ends with the stop.
        assert!(rx.recv().await.is_none());
    }
}
