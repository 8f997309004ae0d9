//! Deliveries from outside a PN, at the session that sends them (docs/services.md, "Delivery
//! from outside a PN"): the file each one reads from, who waits for its answer, and who
//! follows its events. Held by the session: they end with it (a follower's stream ends).

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
    ) -> Result<Vec<u8>, String> {
        self.files.read(session, offset, len).await
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
