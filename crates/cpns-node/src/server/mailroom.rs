//! How sessions signal and write to each other: one watch channel (stop, or look for mail) and
//! a mailroom of letters by PN GW, held only while mail waits. A PNE Confirm for another PN
//! GW's PNE (001 §5.2.1.1 step 8) and a capabilities query by id (004 §5.5.1) go to the session
//! of the PN GW that can answer, and the answer comes back the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cpns_proto::server::ServerSession;
use cpns_store::ServerStore;
use cpns_wire::{EntityId, ErrorBody, ErrorCode, PneConfirmRequest, PneConfirmResponse};
use tokio::sync::{oneshot, watch};

use super::ServerNode;

/// How sessions signal and write to each other.
pub(super) struct Office {
    /// Tells every session to stop, or to look for mail.
    pub(super) signal: watch::Sender<Signal>,
    pub(super) mailroom: Mutex<Mailroom>,
    /// What the sessions' inventories changed, for local applications that follow them
    /// (`inventory_subscribe`): a subscriber that falls behind is told how much it missed.
    pub(super) inventory: tokio::sync::broadcast::Sender<InventoryNote>,
    /// The relay inbox of each session taking part in a forwarded delivery, by its PN GW
    /// (`relay.rs`).
    pub(super) relays: Mutex<HashMap<EntityId, super::relay::Inbox>>,
    /// Deliveries from outside a PN whose PN GW's session was lost, by PN GW, waiting for its
    /// next session (`outbound.rs`, "Parked").
    pub(super) parked: Mutex<HashMap<EntityId, super::outbound::Parked>>,
}

/// One inventory change, as the sessions publish it to the server's subscribers.
#[derive(Clone, Debug)]
pub struct InventoryNote {
    /// The PN's owner (its PN GW's user).
    pub owner: cpns_wire::UserId,
    /// The PN, if the change is one PN's.
    pub pn_id: Option<cpns_wire::PnId>,
    /// The member, if the change is one member's.
    pub pne: Option<EntityId>,
    /// What changed.
    pub change: cpns_proto::server::InventoryChange,
}

/// Inventory changes buffered for the slowest subscriber.
pub(super) const INVENTORY_FEED: usize = 256;

impl Office {
    pub(super) fn room(&self) -> MutexGuard<'_, Mailroom> {
        self.mailroom.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn relays(&self) -> MutexGuard<'_, HashMap<EntityId, super::relay::Inbox>> {
        self.relays.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The parked deliveries from outside, by PN GW.
    pub(super) fn parked(&self) -> MutexGuard<'_, HashMap<EntityId, super::outbound::Parked>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every session to look for mail.
    pub(super) fn ring(&self) {
        self.signal.send_modify(|s| s.mail = s.mail.wrapping_add(1));
    }

    /// Posts the answer to question `ask` for the session of `to`.
    fn answer(
        &self,
        to: &EntityId,
        ask: u64,
        answer: Result<PneConfirmResponse, ErrorBody>,
        until: Instant,
    ) {
        let now = Instant::now();
        let letter = PeerMsg::Answer { ask, answer };
        if self.room().post(now, to, until, letter).is_ok() {
            self.ring();
        }
    }
}

/// What the server tells its sessions through one watch channel (so an idle session holds
/// nothing more than the receiver it has anyway): stop, or look for mail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    /// Every session ends.
    pub(super) stop: bool,
    /// Bumped whenever a session has mail (001 §5.2.1.1: a PNE Confirm or its answer).
    mail: u64,
}

/// Questions and answers between PN GW sessions (001 §5.2.1.1 step 8: PNE Confirm to the
/// PNE's home PN GW, over that PN GW's own session), by the PN GW whose session takes them.
/// Held only while mail waits: an idle session costs nothing here.
#[derive(Default)]
pub(super) struct Mailroom {
    boxes: HashMap<EntityId, VecDeque<Letter>>,
    /// Letters waiting in all boxes.
    letters: usize,
    /// Where each home session's answer goes, by the number it was given, until when.
    pub(super) replies: HashMap<
        u64,
        (
            Instant,
            oneshot::Sender<Result<PneConfirmResponse, ErrorBody>>,
        ),
    >,
    /// Where each Capabilities Query's answer goes, by the number it was given, until when.
    pub(super) caps_replies: HashMap<u64, (Instant, CapsReply)>,
    next: u64,
}

/// Where the answer to a Capabilities Query goes.
type CapsReply = oneshot::Sender<Result<cpns_wire::DeviceCapabilities, ErrorBody>>;

/// Most letters waiting at once; beyond, a question is refused busy.
const MAILROOM_LIMIT: usize = 1024;

/// One message for a session, and when it is no longer worth delivering.
struct Letter {
    id: u64,
    until: Instant,
    msg: PeerMsg,
}

/// How long a live session may take to pick up its mail: a question still in the box after it
/// went to a PN GW with no session, which is answered so at once.
pub(super) const PICKUP: Duration = Duration::from_secs(2);

/// What one session hands another.
pub(super) enum PeerMsg {
    /// A question for this session's PN GW, and where its answer goes.
    Ask {
        request: PneConfirmRequest,
        reply: oneshot::Sender<Result<PneConfirmResponse, ErrorBody>>,
    },
    /// The answer to a question this session asked.
    Answer {
        ask: u64,
        answer: Result<PneConfirmResponse, ErrorBody>,
    },
    /// Ask this session's PN GW for an entity's capabilities (004 §5.5.1: query by id).
    CapsAsk { entity: EntityId, reply: CapsReply },
    /// A secure notice for a PNE behind this session's PN GW (a service match).
    Notice {
        to: EntityId,
        notice: cpns_wire::SecureNotice,
    },
    /// What another session relays of a forwarded delivery, sent before this session had a
    /// relay inbox (it comes after the route's letter, in order).
    Relay {
        session: cpns_wire::DeliveryId,
        msg: cpns_proto::server::Relayed,
    },
    /// A delivery forwarded between PNs to members of a PN this session's PN GW serves: its
    /// route, from the session of the source's PN GW `from`.
    Forward {
        from: EntityId,
        route: Box<cpns_wire::DeliveryRoute>,
    },
    /// Deliver content from outside to members of a PN this session's PN GW serves (004
    /// §5.5.8.1), read from `files` (one per item, each with its size as offered).
    Deliver {
        delivery: Box<cpns_proto::server::ExternalDelivery>,
        files: Vec<(std::path::PathBuf, u64)>,
        reply: super::outbound::StartReply,
        follower: Option<super::outbound::Follower>,
    },
}

impl Mailroom {
    /// Drops letters past their time (an answer's sender then reports the question unanswered).
    fn sweep(&mut self, now: Instant) {
        let mut kept = 0;
        self.boxes.retain(|_, b| {
            b.retain(|l| l.until > now);
            kept += b.len();
            !b.is_empty()
        });
        self.letters = kept;
        self.replies
            .retain(|_, (until, r)| *until > now && !r.is_closed());
        self.caps_replies
            .retain(|_, (until, r)| *until > now && !r.is_closed());
    }

    /// Posts `msg` for the session of `to`; its letter id, or the message back when the
    /// mailroom is full.
    pub(super) fn post(
        &mut self,
        now: Instant,
        to: &EntityId,
        until: Instant,
        msg: PeerMsg,
    ) -> Result<u64, PeerMsg> {
        self.sweep(now);
        if self.letters >= MAILROOM_LIMIT {
            return Err(msg);
        }
        self.letters += 1;
        self.next += 1;
        let id = self.next;
        self.boxes
            .entry(to.clone())
            .or_default()
            .push_back(Letter { id, until, msg });
        Ok(id)
    }

    /// Keeps where the answer to a question this session's PN GW takes goes, until `until`;
    /// the number the answer will come back with.
    fn await_reply(
        &mut self,
        until: Instant,
        reply: oneshot::Sender<Result<PneConfirmResponse, ErrorBody>>,
    ) -> u64 {
        self.next += 1;
        self.replies.insert(self.next, (until, reply));
        self.next
    }

    /// [`Mailroom::await_reply`] for a Capabilities Query.
    fn await_caps_reply(&mut self, until: Instant, reply: CapsReply) -> u64 {
        self.next += 1;
        self.caps_replies.insert(self.next, (until, reply));
        self.next
    }

    /// Takes back letter `id` from `to`'s box if no session took it; true if it was there.
    pub(super) fn withdraw(&mut self, to: &EntityId, id: u64) -> bool {
        let Some(b) = self.boxes.get_mut(to) else {
            return false;
        };
        let before = b.len();
        b.retain(|l| l.id != id);
        let withdrawn = b.len() < before;
        if b.is_empty() {
            self.boxes.remove(to);
        }
        if withdrawn {
            self.letters = self.letters.saturating_sub(1);
        }
        withdrawn
    }

    fn take(&mut self, gw: &EntityId) -> VecDeque<Letter> {
        let letters = self.boxes.remove(gw).unwrap_or_default();
        self.letters = self.letters.saturating_sub(letters.len());
        letters
    }
}

impl<S: ServerStore + Clone> ServerNode<S> {
    pub(super) fn room(&self) -> MutexGuard<'_, Mailroom> {
        self.office.room()
    }

    /// 001 §5.2.1.1 step 8: posts `request` for the session of `gateway`; its answer comes back
    /// as mail to this session. A full mailroom is answered at once (`busy`); a PN GW with no
    /// session never takes the letter, and the asking establishment's own deadline answers.
    pub(super) fn ask_peer(
        &self,
        session: &mut ServerSession,
        gateway: EntityId,
        ask: u64,
        request: PneConfirmRequest,
    ) {
        let Some(me) = session.gateway().cloned() else {
            return;
        };
        let now = Instant::now();
        let until = now + self.cfg.proto.timeouts.flow / 2;
        let (reply, answer) = oneshot::channel();
        let posted = self
            .room()
            .post(now, &gateway, until, PeerMsg::Ask { request, reply });
        let Ok(letter) = posted else {
            let e = ErrorBody::new(
                ErrorCode::Busy,
                "the CPNS Server has too many questions between PN GWs open",
            );
            return session.handle_gateway_answer(ask, Err(e));
        };
        self.office.ring();
        // The answer, or its absence once the letter or the home session is gone, comes back
        // as mail; the establishment's own deadline bounds the wait.
        let office = self.office.clone();
        tokio::spawn(async move {
            let mut answer = answer;
            let got = tokio::select! {
                a = &mut answer => Some(a),
                () = tokio::time::sleep(PICKUP) => None,
            };
            let got = match got {
                Some(a) => a.ok(),
                // Not picked up: no session of that PN GW here.
                None if office.room().withdraw(&gateway, letter) => {
                    let e = ErrorBody::new(
                        ErrorCode::Timeout,
                        format!("its home PN GW {gateway} is not connected to the CPNS Server"),
                    );
                    Some(Err(e))
                }
                None => {
                    let wait = until.saturating_duration_since(Instant::now());
                    tokio::time::timeout(wait, answer)
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
            };
            let answer = got.unwrap_or_else(|| {
                Err(ErrorBody::new(
                    ErrorCode::Timeout,
                    format!("its home PN GW {gateway} did not answer in time"),
                ))
            });
            office.answer(&me, ask, answer, until);
        });
    }

    /// A secure notice for `to`, through the session of `gateway` (this one's or another's):
    /// posted, and dropped unsaid if no session of that PN GW takes it soon (a full mailroom,
    /// or none connected; docs/services.md, "Watches").
    pub(super) fn post_notice(
        &self,
        gateway: &EntityId,
        to: EntityId,
        notice: cpns_wire::SecureNotice,
    ) {
        let now = Instant::now();
        let posted = self
            .room()
            .post(now, gateway, now + PICKUP, PeerMsg::Notice { to, notice });
        if posted.is_ok() {
            self.office.ring();
        }
    }

    /// Mail for this session's PN GW: questions go to its machine, answers to the flows that
    /// asked.
    pub(super) fn deliver_mail(&self, session: &mut ServerSession, end: &mut super::SessionEnd) {
        let Some(gw) = session.gateway().cloned() else {
            return;
        };
        // Deliveries from outside a lost session of this PN GW was sending go on here.
        self.unpark_outbound(session, end, &gw);
        let letters = self.room().take(&gw);
        let now = Instant::now();
        for letter in letters {
            match letter.msg {
                PeerMsg::Ask { request, reply } => {
                    let id = self.room().await_reply(letter.until, reply);
                    session.confirm_for_other(now, id, request);
                }
                PeerMsg::Answer { ask, answer } => session.handle_gateway_answer(ask, answer),
                PeerMsg::CapsAsk { entity, reply } => {
                    let id = self.room().await_caps_reply(letter.until, reply);
                    session.ask_capabilities(now, entity, id);
                }
                PeerMsg::Notice { to, notice } => session.send_notice(to, notice),
                PeerMsg::Forward { from, route } => self.forwarded_here(session, end, from, *route),
                PeerMsg::Relay { session: id, msg } => session.relayed(id, msg),
                PeerMsg::Deliver {
                    delivery,
                    files,
                    reply,
                    follower,
                } => {
                    let ask = end.outbound.ask(files, reply, follower);
                    session.deliver(now, *delivery, ask);
                }
            }
        }
    }
}
