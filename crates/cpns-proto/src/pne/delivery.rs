//! Delivery at the PNE (004 §5.5.8; docs/services.md, "Delivery"), both ends.
//!
//! As a **source**: `offer_delivery` asks the server for a session (a secure call), completing
//! with [`Outcome::DeliveryGranted`] and the session's key kept. Once every target has
//! acknowledged (its acceptance), it asks the driver for the content a chunk at a time
//! ([`PneOutput::ReadChunk`]), seals each under the session's key and sends it to its PN GW,
//! never more than a window past what every target acknowledged; an acknowledgement that says
//! `resume` sends again from what the targets have. Offered without hashes, it asks the driver
//! to hash the content meanwhile ([`PneOutput::HashContent`]) and sends the digest it signs
//! from them with the last chunk, which waits for it. A target's end other than having it is
//! told as [`PneEvent::DeliveryEnded`]; with every target's end, [`PneEvent::DeliverySent`]
//! names those that have it.
//!
//! As a **target**: the server's notice is told as [`PneEvent::DeliveryOffered`]; accepted (by
//! policy, or `answer_delivery`), the driver opens where it keeps the content and says how much
//! it has already ([`PneOutput::OpenReceive`]), and the PNE acknowledges that (`resume`). Each
//! chunk from its PN GW must open under the session's key at the very offset expected; it goes
//! to the driver to write ([`PneOutput::WriteChunk`]) and is acknowledged once the driver took it. The
//! hashes it checks against come with the invitation, or, offered without them, with the last
//! chunk: its source's digest, which must be signed by the source under the server's
//! certificate before the chunk is written. With
//! every byte, the driver checks the SHA-256 ([`PneOutput::FinishReceive`]), and the end is told
//! to the server (`cpns.delivery.done`, its record), to the PN GW (for the source), and as
//! [`PneEvent::DeliveryReceived`] or [`PneEvent::DeliveryEnded`]. A chunk that does not open (a
//! PN GW that altered it) ends the session at once, refused.

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_crypto::{CHUNK_OVERHEAD, ChunkBinding, ChunkSealer, DeliveryKey};
use cpns_wire::{
    Address, DELIVERY_DONE, DELIVERY_OFFER, DeliveryAck, DeliveryChunk, DeliveryDigest,
    DeliveryDone, DeliveryGrant, DeliveryId, DeliveryInvite, DeliveryOffer, DeliveryResult,
    EntityId, Envelope, HashBytes, PnId, SecureCall, SignatureBytes,
};

use super::{Outcome, PneEvent, PneOutput, PneSession};
use crate::source::{Read, Source};
use crate::{CommandError, CommandId, Failure, Flow};

/// A session this PNE sends: through the PN GW of its PN.
#[derive(Debug)]
pub(super) struct Sending {
    source: Source,
    pn_id: PnId,
    /// When its targets last said something (an acknowledgement or an end), or it was set up,
    /// controlled or linked again: past two flow timeouts of silence while it waits on them,
    /// it gives up ([`Source::awaits_targets`]).
    heard: Option<Instant>,
}

/// A session this PNE receives.
#[derive(Debug)]
pub(super) struct Receiving {
    invite: DeliveryInvite,
    sealer: ChunkSealer,
    /// Each item's SHA-256 to check: the invitation's, or, offered without them, its source's
    /// digest once the last chunk brought it, verified.
    hashes: Option<Vec<[u8; 32]>>,
    state: Recv,
    /// Bytes written from the start.
    have: u64,
    /// `have` when last acknowledged.
    acked: u64,
    /// A write asked of the driver and not answered: its offset and length.
    writing: Option<(u64, u64)>,
    /// Its place among the sessions offered here: those accepted and waiting move in this
    /// order.
    order: u64,
    /// While it moves (opening or taking): when it ends, failed, if no chunk comes before
    /// (its source or its PN GW gone, or two sessions waiting on each other at two targets).
    idle_until: Option<Instant>,
    /// Held or paused by its source (service control): it does not give up waiting for a
    /// chunk, only after [`PAUSED_LIMIT`] (`idle_until` then counts from the offer or pause).
    paused: bool,
    /// The `idle_until` of the wait in which it said again what it has: once a wait.
    nudged: Option<Instant>,
}

impl Sending {
    /// When it gives up on its targets, if it waits on them: two flow timeouts after they last
    /// said something (as long as a target waits for a chunk before it gives up).
    fn gives_up_at(&self, flow: std::time::Duration) -> Option<Instant> {
        self.source
            .awaits_targets()
            .then(|| self.heard.map(|h| h + flow * 2))
            .flatten()
    }
}

impl Receiving {
    /// When it says again what it has, if no chunk comes: a flow timeout into a wait for one
    /// (halfway to giving up), once a wait; not while held or paused, nor before it takes
    /// chunks, nor while a write is out.
    fn nudge_at(&self, flow: std::time::Duration) -> Option<Instant> {
        let idle = self.idle_until?;
        let due = self.state == Recv::Taking
            && !self.paused
            && self.writing.is_none()
            && self.nudged != Some(idle);
        due.then(|| idle.checked_sub(flow)).flatten()
    }
}

/// Where a received session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// Told; waiting for the application's answer.
    Offered,
    /// Accepted; waiting for the session this PNE takes now to be taken whole. One session
    /// moves to a PNE at a time, so what its PN GW holds for its link stays within one window
    /// (the link is cut past the bound it may leave unread).
    Waiting,
    /// Accepted; the driver is opening where it keeps the content.
    Opening,
    /// Taking chunks.
    Taking,
    /// Every byte written; the driver is checking its hash.
    Checking,
}

/// The sessions this PNE sends and receives.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    sending: BTreeMap<DeliveryId, Sending>,
    receiving: BTreeMap<DeliveryId, Receiving>,
    /// The order the next session offered here takes.
    next_order: u64,
}

/// The delivery sessions of a PNE whose link dropped, handed to its next link's machine
/// ([`PneSession::take_deliveries`], [`PneSession::restore_deliveries`]): a target says again what
/// it has once its connection set-up in the PN is done, and its source goes on from there.
#[derive(Debug, Default)]
pub struct KeptDeliveries(Deliveries);

impl KeptDeliveries {
    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.0.sending.is_empty() && self.0.receiving.is_empty()
    }
}

/// A delivery session as a device keeps it across a restart ([`PneOutput::KeepDelivery`],
/// [`PneSession::restore_delivery`]): its key, and what it is, in CBOR without the key: a
/// source's grant of this one session, a target's invitation.
#[derive(Clone)]
pub struct KeptSession {
    /// The session.
    pub session: DeliveryId,
    /// Kept by its source (else by a target).
    pub as_source: bool,
    /// Its key: sealed by the driver before it is stored.
    pub key: DeliveryKey,
    /// A source's [`DeliveryGrant`] (this session only, `also` empty), or a target's
    /// [`DeliveryInvite`], in CBOR, the key in it zeroed.
    pub description: Vec<u8>,
}

impl core::fmt::Debug for KeptSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeptSession")
            .field("session", &self.session)
            .field("as_source", &self.as_source)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One item of a session this PNE receives, as its driver keeps it ([`PneOutput::OpenReceive`]):
/// a file of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveItem {
    /// Its name, as the source gave it (not a path: the driver names the file).
    pub name: String,
    /// Its size.
    pub size: u64,
}

/// What is out of bounds in an invitation (a server that broke the rules of an offer), if
/// anything: more items than a session carries, an empty item, more than a session's size in
/// all, or hashes for some items and not others.
pub(crate) fn invite_fault(invite: &DeliveryInvite) -> Option<String> {
    use crate::server::delivery::{MAX_ITEMS, MAX_SIZE};
    let sizes = std::iter::once(invite.size).chain(invite.more.iter().map(|i| i.size));
    let total = sizes
        .clone()
        .try_fold(0u64, |t, s| t.checked_add(s))
        .filter(|t| *t <= MAX_SIZE);
    let bad = invite.more.len() >= MAX_ITEMS || sizes.clone().any(|s| s == 0) || total.is_none();
    if bad {
        return Some(format!(
            "its items are out of bounds: at most {MAX_ITEMS}, each 1 byte or more, {} GiB \
             together",
            MAX_SIZE >> 30
        ));
    }
    let hashed = invite.sha256.is_some();
    invite
        .more
        .iter()
        .any(|i| i.sha256.is_some() != hashed)
        .then(|| "some of its items come with a SHA-256 and some without".to_string())
}

/// Each item of `invite`, in order: the first, which its own fields describe, then `more`: its
/// name and size.
fn items(invite: &DeliveryInvite) -> impl Iterator<Item = (&str, u64)> {
    std::iter::once((invite.name.as_str(), invite.size))
        .chain(invite.more.iter().map(|i| (i.name.as_str(), i.size)))
}

/// Each item's SHA-256 as offered, if the invitation has them (for every item, or none: see
/// [`invite_fault`]).
fn offered_hashes(invite: &DeliveryInvite) -> Option<Vec<[u8; 32]>> {
    std::iter::once(invite.sha256)
        .chain(invite.more.iter().map(|i| i.sha256))
        .map(|h| h.map(|h| h.0))
        .collect()
}

/// Sessions a PNE receives at once; an offer past them is declined.
pub const MAX_RECEIVING: usize = 8;

/// How long a session its source holds or pauses keeps its place at a target (one of its
/// [`MAX_RECEIVING`], and the one moving if it moves): past it, counted from the offer or the
/// pause, the target's part ends failed, so a source that holds a session and goes away cannot
/// keep a target from receiving.
pub const PAUSED_LIMIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl PneSession {
    /// Offers `offer` to its targets (004 §5.5.8): completes with
    /// [`Outcome::DeliveryGranted`] once the server set the session up; the content then moves
    /// as the targets accept, read from the driver ([`PneOutput::ReadChunk`]).
    pub fn offer_delivery(
        &mut self,
        now: Instant,
        offer: &DeliveryOffer,
    ) -> Result<CommandId, CommandError> {
        // The chunks go in the suite this PNE wants first (docs/security.md §4.13).
        let offer = DeliveryOffer {
            suite: self.cfg.suites.first().map(|s| s.code()),
            ..offer.clone()
        };
        if let Err(why) = crate::server::delivery::check_offer(&offer, &self.cfg.id) {
            return Err(CommandError::InvalidDelivery(why));
        }
        // Offered without hashes, the last chunk carries a digest this PNE signs.
        if offer.sha256.is_none() && self.signer.is_none() {
            return Err(CommandError::NoCertificate);
        }
        self.typed_call(now, DELIVERY_OFFER, &offer, Flow::Delivery)
    }

    /// Sends a small payload in band to one PNE (004 §5.5.8; docs/services.md, "Small payloads
    /// in band"): sealed to the server under this PNE's SK_PNE and to the target under its
    /// own; completes with [`Outcome::MessageSent`] once handed on.
    pub fn send_message(
        &mut self,
        now: Instant,
        m: &cpns_wire::DeliveryMessage,
    ) -> Result<CommandId, CommandError> {
        if let Err(why) = crate::server::delivery::check_message(m, &self.cfg.id) {
            return Err(CommandError::InvalidDelivery(why));
        }
        self.typed_call(now, cpns_wire::DELIVERY_MESSAGE, m, Flow::Delivery)
    }

    /// Asks a member for content it declared it holds (004 §5.5.8.2, pull): completes with
    /// [`Outcome::DeliveryRequested`] once the server told it; the member then offers it to
    /// this PNE (an ordinary delivery, [`PneEvent::DeliveryOffered`]).
    pub fn request_delivery(
        &mut self,
        now: Instant,
        req: &cpns_wire::DeliveryRequest,
    ) -> Result<CommandId, CommandError> {
        if let Err(why) = crate::server::delivery::check_request(req, &self.cfg.id) {
            return Err(CommandError::InvalidDelivery(why));
        }
        self.typed_call(now, cpns_wire::DELIVERY_REQUEST, req, Flow::Delivery)
    }

    /// A member's notice that a consumer asks it for content: told to its application (or
    /// its driver's shared directory), which answers with a delivery.
    pub(super) fn on_delivery_requested(&mut self, asked: cpns_wire::DeliveryRequested) {
        self.event(PneEvent::DeliveryRequested {
            requester: asked.requester,
            owner: asked.owner,
            name: asked.name,
            service_id: asked.service_id,
            pn_id: asked.pn_id,
        });
    }

    /// Accepts or declines a delivery offered to this PNE (its application's answer).
    pub fn answer_delivery(
        &mut self,
        now: Instant,
        session: DeliveryId,
        accept: bool,
    ) -> Result<(), CommandError> {
        match self.deliveries.receiving.get(&session) {
            Some(r) if r.state == Recv::Offered => {}
            _ => return Err(CommandError::NoDelivery(session)),
        }
        if accept {
            self.keep_receiving(session);
            self.accept_delivery(session);
        } else {
            self.end_receiving(now, session, DeliveryResult::Declined, 0, None);
        }
        Ok(())
    }

    /// Takes the delivery sessions out of this machine (its link dropped), for the next one.
    pub fn take_deliveries(&mut self) -> KeptDeliveries {
        let mut kept = std::mem::take(&mut self.deliveries);
        // A write the driver was answering belongs to the link that is gone (a read too: the
        // next link's machine rewinds each source, `resume_deliveries`); a target that was
        // opening or checking goes on where the driver left its file.
        for r in kept.receiving.values_mut() {
            r.writing = None;
        }
        KeptDeliveries(kept)
    }

    /// Takes the delivery sessions a previous link's machine kept. A session that waits for its
    /// digest has its content hashed again: the previous link's driver was hashing it.
    pub fn restore_deliveries(&mut self, kept: KeptDeliveries) {
        self.deliveries = kept.0;
        let awaiting: Vec<DeliveryId> = self
            .deliveries
            .sending
            .iter()
            .filter(|(_, s)| s.source.awaits_digest())
            .map(|(id, _)| *id)
            .collect();
        for session in awaiting {
            self.out.push_back(PneOutput::HashContent { session });
        }
    }

    /// After the connection set-up in its PNs: each session this PNE receives through the PN GW
    /// on the link says again what it has (`resume`), so its source goes on from there; each it
    /// sends goes on from what its targets were last known to have.
    pub(super) fn resume_deliveries(&mut self) {
        // What was in flight on the old link may be lost: from what every target was last
        // known to have (a target that has more says so, and takes only what it lacks).
        for s in self.deliveries.sending.values_mut() {
            s.source.rewind();
            s.heard = self.now;
        }
        let sending: Vec<DeliveryId> = self.deliveries.sending.keys().copied().collect();
        for session in sending {
            self.read_more(session);
        }
        let taking: Vec<(DeliveryId, u64, PnId)> = self
            .deliveries
            .receiving
            .iter()
            .filter(|(_, r)| r.state == Recv::Taking)
            .map(|(id, r)| (*id, r.have, r.invite.pn_id))
            .collect();
        let idle = self.now.map(|n| n + self.cfg.timeouts.flow * 2);
        for (session, have, pn) in taking {
            if let Some(r) = self.deliveries.receiving.get_mut(&session)
                && !r.paused
            {
                r.idle_until = idle;
            }
            self.say_what_it_has(session, have, &pn);
        }
    }

    /// Tells the PN GW of `pn`, if linked, that this PNE holds `have` bytes of `session` and
    /// takes the rest from there (`resume`).
    fn say_what_it_has(&mut self, session: DeliveryId, have: u64, pn: &PnId) {
        if let Some(gw) = self.pn_gateway(pn) {
            let ack = DeliveryAck {
                session,
                have,
                resume: true,
            };
            self.send_notify_to(gw, ack);
        }
    }

    /// Service control of a session this PNE sends (004 §5.5.8.2): started (one set up
    /// held), paused, resumed or stopped here, and told to every target through its PN GW, which
    /// relays it only from the session's source. Refused for a session this PNE does not send
    /// (another's is not its to control), in a state the action does not fit, or without its PN
    /// GW on the link (the targets would not be told).
    pub fn control_delivery(
        &mut self,
        session: DeliveryId,
        action: cpns_wire::ControlAction,
    ) -> Result<(), CommandError> {
        let Some(pn) = self.deliveries.sending.get(&session).map(|s| s.pn_id) else {
            return Err(CommandError::NotSending(session));
        };
        let Some(gw) = self.pn_gateway(&pn) else {
            let gw = self.pns.get(&pn).map(|p| p.state.inventory.gateway.clone());
            return Err(match gw {
                Some(gw) => CommandError::GatewayNotLinked(gw),
                None => CommandError::NotSending(session),
            });
        };
        if let Some(s) = self.deliveries.sending.get_mut(&session) {
            s.source
                .control(action)
                .map_err(CommandError::DeliveryState)?;
            s.heard = self.now;
        }
        self.send_notify_to(gw, cpns_wire::DeliveryControl { session, action });
        self.read_more(session);
        Ok(())
    }

    /// Service control of a session this PNE receives, from its source through its PN GW: held
    /// where it is, going on, or its part ended (`Stopped`, nothing kept); told as
    /// [`PneEvent::DeliveryControlled`] (a stop as [`PneEvent::DeliveryEnded`]).
    pub(super) fn on_delivery_control(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: cpns_wire::DeliveryControl,
    ) {
        use cpns_wire::ControlAction;
        let Some(r) = self.deliveries.receiving.get(&m.session) else {
            return;
        };
        if !self.sent_by_pns_gateway(env, &r.invite.pn_id) {
            return;
        }
        let idle = now + self.cfg.timeouts.flow * 2;
        let have = r.have;
        match m.action {
            ControlAction::Stop => {
                let why = "its source stopped it".to_string();
                return self.end_receiving(
                    now,
                    m.session,
                    DeliveryResult::Stopped,
                    have,
                    Some(why),
                );
            }
            ControlAction::Pause => {
                if let Some(r) = self.deliveries.receiving.get_mut(&m.session) {
                    if !r.paused {
                        r.idle_until = Some(now + PAUSED_LIMIT);
                    }
                    r.paused = true;
                }
            }
            ControlAction::Start | ControlAction::Resume => {
                if let Some(r) = self.deliveries.receiving.get_mut(&m.session) {
                    r.paused = false;
                    r.idle_until = matches!(r.state, Recv::Opening | Recv::Taking).then_some(idle);
                }
            }
            _ => return,
        }
        self.event(PneEvent::DeliveryControlled {
            session: m.session,
            action: m.action,
        });
    }

    /// The sessions this PNE sends and receives, by id.
    pub fn delivery_sessions(&self) -> (Vec<DeliveryId>, Vec<DeliveryId>) {
        (
            self.deliveries.sending.keys().copied().collect(),
            self.deliveries.receiving.keys().copied().collect(),
        )
    }

    /// The server's answer to an offer: the session is kept, its key with it.
    pub(super) fn delivery_answered(&mut self, a: SecureCall) -> Result<Outcome, Failure> {
        if a.service == cpns_wire::DELIVERY_MESSAGE {
            return minicbor::decode::<cpns_wire::DeliveryMessage>(&a.payload)
                .map(|m| Outcome::MessageSent { to: m.peer })
                .map_err(|_| Failure::AnswerDidNotOpen);
        }
        if a.service == cpns_wire::DELIVERY_REQUEST {
            return minicbor::decode::<cpns_wire::DeliveryRequest>(&a.payload)
                .map(|r| Outcome::DeliveryRequested {
                    source: r.source,
                    name: r.name,
                })
                .map_err(|_| Failure::AnswerDidNotOpen);
        }
        if a.service == DELIVERY_DONE {
            return minicbor::decode::<DeliveryDone>(&a.payload)
                .map(|d| Outcome::DeliveryEnded {
                    session: d.session,
                    result: d.result,
                })
                .map_err(|_| Failure::AnswerDidNotOpen);
        }
        let g =
            minicbor::decode::<DeliveryGrant>(&a.payload).map_err(|_| Failure::AnswerDidNotOpen)?;
        let key = DeliveryKey::from_bytes(g.key.0);
        // What each session keeps of the grant: no key, nothing of the other sessions; its own
        // session and targets are set for each.
        let shape = DeliveryGrant {
            key: cpns_wire::KeyBytes([0; 32]),
            also: Vec::new(),
            ..g.clone()
        };
        let parts =
            std::iter::once((g.session, key, g.targets.clone())).chain(g.also.iter().map(|p| {
                (
                    p.session,
                    DeliveryKey::from_bytes(p.key.0),
                    p.targets.clone(),
                )
            }));
        for (session, key, targets) in parts {
            let kept = DeliveryGrant {
                session,
                targets: targets.clone(),
                ..shape.clone()
            };
            self.out.push_back(PneOutput::KeepDelivery(KeptSession {
                session,
                as_source: true,
                key: key.clone(),
                description: minicbor::to_vec(&kept).unwrap_or_default(),
            }));
            self.start_sending(session, &key, &shape, targets);
        }
        Ok(Outcome::DeliveryGranted {
            session: g.session,
            pn_id: g.pn_id,
            also: g.also.iter().map(|p| p.session).collect(),
        })
    }

    /// The server's notice of a delivery for this PNE.
    pub(super) fn on_delivery_offered(&mut self, now: Instant, invite: DeliveryInvite) {
        let session = invite.session;
        if self.deliveries.receiving.contains_key(&session) {
            return;
        }
        let key = DeliveryKey::from_bytes(invite.key.0);
        let fault = invite_fault(&invite);
        // A suite this PNE does not take: declined, once its application is told.
        let suite = crate::server::delivery::suite_of(invite.suite)
            .ok()
            .filter(|s| self.cfg.suites.contains(s));
        let r = Receiving {
            sealer: ChunkSealer::new(
                &key,
                session.as_bytes(),
                suite.unwrap_or(cpns_crypto::Suite::ChaCha20Poly1305),
            ),
            hashes: offered_hashes(&invite),
            invite: invite.clone(),
            state: Recv::Offered,
            have: 0,
            acked: 0,
            writing: None,
            order: self.deliveries.next_order,
            idle_until: invite.held.then(|| now + PAUSED_LIMIT),
            paused: invite.held,
            nudged: None,
        };
        self.deliveries.next_order += 1;
        let full = self.deliveries.receiving.len() >= MAX_RECEIVING;
        self.deliveries.receiving.insert(session, r);
        self.event(PneEvent::DeliveryOffered {
            session,
            source: invite.source,
            owner: invite.owner,
            service_id: invite.service_id,
            name: invite.name,
            media_type: invite.media_type,
            size: invite.size,
            more: invite.more,
        });
        if full {
            return self.end_receiving(now, session, DeliveryResult::Declined, 0, None);
        }
        if suite.is_none() {
            let why = format!(
                "sealed in an AEAD suite this PNE does not take (code {})",
                invite.suite.unwrap_or(1)
            );
            return self.end_receiving(now, session, DeliveryResult::Declined, 0, Some(why));
        }
        if let Some(why) = fault {
            return self.end_receiving(now, session, DeliveryResult::Declined, 0, Some(why));
        }
        if invite.sha256.is_none() && self.cfg.signing.is_none() {
            let why = "its source signs the content's digest, and this PNE holds no authority key \
                       to check it (enroll it again for one)"
                .to_string();
            return self.end_receiving(now, session, DeliveryResult::Declined, 0, Some(why));
        }
        match self.cfg.deliveries {
            crate::pne::InvitationPolicy::Accept => {
                self.keep_receiving(session);
                self.accept_delivery(session);
            }
            crate::pne::InvitationPolicy::Decline => {
                self.end_receiving(now, session, DeliveryResult::Declined, 0, None);
            }
            crate::pne::InvitationPolicy::Ask { .. } => {}
        }
    }

    /// Sends session `session` to `targets` under `key`, as grant `g` says: held, or waiting for
    /// its digest (its content hashed meanwhile) with the last chunk.
    fn start_sending(
        &mut self,
        session: DeliveryId,
        key: &DeliveryKey,
        g: &DeliveryGrant,
        targets: Vec<EntityId>,
    ) {
        // The suite this PNE offered, as the server granted it (the server checked the code).
        let suite = crate::server::delivery::suite_of(g.suite)
            .unwrap_or(cpns_crypto::Suite::ChaCha20Poly1305);
        let mut source = Source::new(session, key, g.size, g.chunk, g.window, targets, suite);
        if g.held {
            source = source.held();
        }
        if g.digest {
            source = source.awaiting_digest();
            self.out.push_back(PneOutput::HashContent { session });
        }
        let sending = Sending {
            source,
            pn_id: g.pn_id,
            heard: self.now,
        };
        self.deliveries.sending.insert(session, sending);
    }

    /// An accepted session is kept in the device's store, to go on after a restart.
    fn keep_receiving(&mut self, session: DeliveryId) {
        let Some(r) = self.deliveries.receiving.get(&session) else {
            return;
        };
        let kept = DeliveryInvite {
            key: cpns_wire::KeyBytes([0; 32]),
            ..r.invite.clone()
        };
        self.out.push_back(PneOutput::KeepDelivery(KeptSession {
            session,
            as_source: false,
            key: DeliveryKey::from_bytes(r.invite.key.0),
            description: minicbor::to_vec(&kept).unwrap_or_default(),
        }));
    }

    /// Takes back a delivery session the device kept ([`PneOutput::KeepDelivery`]) after a
    /// restart, before any link: a source's goes on once its PN GW says where the targets are
    /// (as after a dropped link; offered without hashes, its content is hashed again); a
    /// target's is opened again where its driver keeps it and says what it holds once linked,
    /// one at a time as ever. One this PNE holds already, or whose description does not decode,
    /// is refused, saying why.
    pub fn restore_delivery(&mut self, kept: KeptSession) -> Result<(), String> {
        let session = kept.session;
        if self.deliveries.sending.contains_key(&session)
            || self.deliveries.receiving.contains_key(&session)
        {
            return Err(format!("delivery {session} is held already"));
        }
        if kept.as_source {
            let g = minicbor::decode::<DeliveryGrant>(&kept.description)
                .ok()
                .filter(|g| g.session == session)
                .ok_or_else(|| format!("delivery {session}: its kept grant does not decode"))?;
            let targets = g.targets.clone();
            self.start_sending(session, &kept.key, &g, targets);
            return Ok(());
        }
        let invite = minicbor::decode::<DeliveryInvite>(&kept.description)
            .ok()
            .filter(|i| i.session == session && invite_fault(i).is_none())
            .ok_or_else(|| format!("delivery {session}: its kept invitation does not decode"))?;
        let invite = DeliveryInvite {
            key: cpns_wire::KeyBytes(*kept.key.expose_secret()),
            ..invite
        };
        let suite = crate::server::delivery::suite_of(invite.suite)
            .ok()
            .filter(|s| self.cfg.suites.contains(s))
            .ok_or_else(|| {
                format!("delivery {session}: sealed in a suite this PNE does not take")
            })?;
        let r = Receiving {
            sealer: ChunkSealer::new(&kept.key, session.as_bytes(), suite),
            hashes: offered_hashes(&invite),
            invite,
            state: Recv::Waiting,
            have: 0,
            acked: 0,
            writing: None,
            order: self.deliveries.next_order,
            idle_until: None,
            paused: false,
            nudged: None,
        };
        self.deliveries.next_order += 1;
        self.deliveries.receiving.insert(session, r);
        self.take_next_waiting();
        Ok(())
    }

    fn accept_delivery(&mut self, session: DeliveryId) {
        let busy = self
            .deliveries
            .receiving
            .values()
            .any(|r| matches!(r.state, Recv::Opening | Recv::Taking));
        let Some(r) = self.deliveries.receiving.get_mut(&session) else {
            return;
        };
        if busy {
            r.state = Recv::Waiting;
            return;
        }
        r.state = Recv::Opening;
        if !r.paused {
            r.idle_until = self.now.map(|n| n + self.cfg.timeouts.flow * 2);
        }
        let size = r.invite.total();
        let items = items(&r.invite)
            .map(|(name, size)| ReceiveItem {
                name: name.to_string(),
                size,
            })
            .collect();
        self.out.push_back(PneOutput::OpenReceive {
            session,
            size,
            items,
        });
    }

    /// When the first session moving here says again what it has, or gives up waiting for a
    /// chunk; or a session sent from here gives up on its silent targets.
    pub(super) fn delivery_deadline(&self) -> Option<Instant> {
        let flow = self.cfg.timeouts.flow;
        let sending = self
            .deliveries
            .sending
            .values()
            .filter_map(|s| s.gives_up_at(flow));
        self.deliveries
            .receiving
            .values()
            .flat_map(|r| [r.nudge_at(flow), r.idle_until])
            .flatten()
            .chain(sending)
            .min()
    }

    /// Sessions taking chunks that got none for a flow timeout say again what they have
    /// (`resume`), once a wait: what they said last may have been lost on the way (a WAN
    /// session lost and set up again while they accepted), and their source waits for it.
    /// Sessions that got no chunk in time end, failed: the next waiting one moves.
    pub(super) fn delivery_timeouts(&mut self, now: Instant) {
        let flow = self.cfg.timeouts.flow;
        let silent: Vec<DeliveryId> = self
            .deliveries
            .sending
            .iter()
            .filter(|(_, s)| s.gives_up_at(flow).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for session in silent {
            self.sending_abandoned(session, flow * 2);
        }
        let quiet: Vec<(DeliveryId, u64, PnId)> = self
            .deliveries
            .receiving
            .iter_mut()
            .filter(|(_, r)| r.nudge_at(flow).is_some_and(|d| d <= now))
            .map(|(s, r)| {
                r.nudged = r.idle_until;
                (*s, r.have, r.invite.pn_id)
            })
            .collect();
        for (session, have, pn) in quiet {
            self.say_what_it_has(session, have, &pn);
        }
        let idle: Vec<(DeliveryId, u64, bool)> = self
            .deliveries
            .receiving
            .iter()
            .filter(|(_, r)| r.idle_until.is_some_and(|d| d <= now))
            .map(|(s, r)| (*s, r.have, r.paused))
            .collect();
        for (session, have, paused) in idle {
            let why = if paused {
                format!(
                    "its source held or paused it for {} s: its place here is given up",
                    PAUSED_LIMIT.as_secs()
                )
            } else {
                format!(
                    "no chunk came for {} s: its source or PN GW stopped",
                    (self.cfg.timeouts.flow * 2).as_secs()
                )
            };
            self.end_receiving(now, session, DeliveryResult::Failed, have, Some(why));
        }
    }

    /// The next session waiting to move, if none moves now.
    fn take_next_waiting(&mut self) {
        let moving = self
            .deliveries
            .receiving
            .values()
            .any(|r| matches!(r.state, Recv::Opening | Recv::Taking));
        let next = self
            .deliveries
            .receiving
            .iter()
            .filter(|(_, r)| r.state == Recv::Waiting)
            .min_by_key(|(_, r)| r.order)
            .map(|(s, _)| *s);
        if let (false, Some(session)) = (moving, next) {
            self.accept_delivery(session);
        }
    }

    /// The driver opened where a received session's content is kept, holding `have` bytes of
    /// it already (a resumed session), or could not.
    pub fn handle_receive_opened(
        &mut self,
        now: Instant,
        session: DeliveryId,
        opened: Result<u64, String>,
    ) {
        let Some(r) = self.deliveries.receiving.get_mut(&session) else {
            return;
        };
        if r.state != Recv::Opening {
            return;
        }
        match opened {
            Ok(have) if have <= r.invite.total() => {
                // All of it kept already, and no digest yet: the last byte is taken again, with
                // the digest its chunk carries.
                let have = if r.hashes.is_none() {
                    have.min(r.invite.total() - 1)
                } else {
                    have
                };
                r.have = have;
                r.acked = have;
                r.state = Recv::Taking;
                let pn = r.invite.pn_id;
                self.say_what_it_has(session, have, &pn);
                self.after_write(session);
            }
            Ok(_) => {
                let why = "more is kept than offered".to_string();
                self.end_receiving(now, session, DeliveryResult::Failed, 0, Some(why));
            }
            Err(why) => self.end_receiving(now, session, DeliveryResult::Failed, 0, Some(why)),
        }
    }

    /// A chunk its PN GW relayed.
    pub(super) fn on_delivery_chunk(&mut self, now: Instant, env: &Envelope, m: DeliveryChunk) {
        let Some(r) = self.deliveries.receiving.get(&m.session) else {
            return;
        };
        if !self.sent_by_pns_gateway(env, &r.invite.pn_id) {
            return;
        }
        if r.state != Recv::Taking || r.writing.is_some() {
            return;
        }
        if m.offset != r.have {
            // A chunk already written (a resend), or one past a gap: what it has is said again.
            let ack = DeliveryAck {
                session: m.session,
                have: r.have,
                resume: m.offset > r.have,
            };
            if let Some(gw) = self.pn_gateway(&r.invite.pn_id) {
                self.send_notify_to(gw, ack);
            }
            return;
        }
        let total = r.invite.total();
        let b = ChunkBinding {
            session: m.session.as_bytes(),
            part: "",
            offset: m.offset,
            total,
        };
        let too_big = m.sealed.len() > r.invite.chunk as usize + CHUNK_OVERHEAD;
        let opened = if too_big {
            None
        } else {
            r.sealer.open_owned(&b, m.sealed).ok()
        };
        let Some(plain) = opened
            .filter(|p| !p.content().is_empty() && m.offset + p.content().len() as u64 <= total)
        else {
            let why = format!(
                "the chunk at {} did not open under the session's key: it was altered on the way",
                m.offset
            );
            let have = r.have;
            return self.end_receiving(now, m.session, DeliveryResult::Failed, have, Some(why));
        };
        let len = plain.content().len() as u64;
        // The chunk that ends the content of a session offered without hashes: its source's
        // digest must come with it and check out before any of it is written.
        if m.offset + len == total && r.hashes.is_none() {
            let have = r.have;
            match self.source_digest(m.session, m.digest.as_deref()) {
                Ok(hashes) => {
                    if let Some(r) = self.deliveries.receiving.get_mut(&m.session) {
                        r.hashes = Some(hashes);
                    }
                }
                Err(why) => {
                    return self.end_receiving(
                        now,
                        m.session,
                        DeliveryResult::Failed,
                        have,
                        Some(why),
                    );
                }
            }
        }
        let idle = now + self.cfg.timeouts.flow * 2;
        if let Some(r) = self.deliveries.receiving.get_mut(&m.session) {
            r.writing = Some((m.offset, len));
            if !r.paused {
                r.idle_until = Some(idle);
            }
        }
        self.out.push_back(PneOutput::WriteChunk {
            session: m.session,
            offset: m.offset,
            bytes: plain,
        });
    }

    /// The driver wrote a chunk, or could not.
    pub fn handle_chunk_written(
        &mut self,
        now: Instant,
        session: DeliveryId,
        written: Result<(), String>,
    ) {
        let Some(r) = self.deliveries.receiving.get_mut(&session) else {
            return;
        };
        let Some((offset, len)) = r.writing.take() else {
            return;
        };
        if let Err(why) = written {
            let have = r.have;
            return self.end_receiving(now, session, DeliveryResult::Failed, have, Some(why));
        }
        r.have = offset + len;
        self.after_write(session);
    }

    /// After a write: acknowledged (every chunk, so a source's window never waits on a
    /// partial one); every byte in, the hash is checked.
    fn after_write(&mut self, session: DeliveryId) {
        let Some(r) = self.deliveries.receiving.get_mut(&session) else {
            return;
        };
        let done = r.have == r.invite.total();
        if done || r.have > r.acked {
            r.acked = r.have;
            let ack = DeliveryAck {
                session,
                have: r.have,
                resume: false,
            };
            let pn = r.invite.pn_id;
            if done {
                r.state = Recv::Checking;
                r.idle_until = None;
            }
            // Every byte in: checked against the invitation's hashes or the source's digest,
            // which its last chunk brought (an empty list checks nothing and keeps nothing).
            let sha256 = if done {
                r.hashes.clone().unwrap_or_default()
            } else {
                Vec::new()
            };
            let specific = if done {
                r.invite.specific.clone()
            } else {
                Vec::new()
            };
            if let Some(gw) = self.pn_gateway(&pn) {
                self.send_notify_to(gw, ack);
            }
            if done {
                self.out.push_back(PneOutput::FinishReceive {
                    session,
                    sha256,
                    specific,
                });
            }
            if done {
                self.take_next_waiting();
            }
        }
    }

    /// The driver checked a received session's content: for each item, whether its SHA-256
    /// is the one offered (kept if so, discarded if not).
    pub fn handle_receive_finished(
        &mut self,
        now: Instant,
        session: DeliveryId,
        matched: Result<Vec<bool>, String>,
    ) {
        let Some(r) = self.deliveries.receiving.get(&session) else {
            return;
        };
        if r.state != Recv::Checking {
            return;
        }
        let have = r.have;
        let n = 1 + r.invite.more.len();
        let matched = match matched {
            Ok(m) if m.len() == n => m,
            Ok(m) => {
                let why = format!("{} hashes checked of {n} items", m.len());
                return self.end_receiving(now, session, DeliveryResult::Failed, have, Some(why));
            }
            Err(why) => {
                return self.end_receiving(now, session, DeliveryResult::Failed, have, Some(why));
            }
        };
        let results: Vec<DeliveryResult> = matched
            .iter()
            .map(|&ok| {
                if ok {
                    DeliveryResult::Delivered
                } else {
                    DeliveryResult::HashMismatch
                }
            })
            .collect();
        let not_kept: Vec<&str> = items(&r.invite)
            .zip(&matched)
            .filter(|(_, ok)| !**ok)
            .map(|((name, _), _)| name)
            .collect();
        if not_kept.is_empty() {
            return self.end_with(now, session, DeliveryResult::Delivered, have, None, results);
        }
        let why = if n == 1 {
            "its SHA-256 is not the one offered; nothing was kept".to_string()
        } else {
            format!(
                "the SHA-256 of {} is not the one offered: not kept ({} of {n} items kept)",
                not_kept
                    .iter()
                    .map(|s| format!("\"{}\"", s.escape_debug()))
                    .collect::<Vec<_>>()
                    .join(", "),
                n - not_kept.len()
            )
        };
        self.end_with(
            now,
            session,
            DeliveryResult::HashMismatch,
            have,
            Some(why),
            results,
        );
    }

    /// Ends this PNE's part of a session it receives: the PN GW (for the source) and the
    /// server (for the record) are told, and so is the application.
    fn end_receiving(
        &mut self,
        now: Instant,
        session: DeliveryId,
        result: DeliveryResult,
        bytes: u64,
        why: Option<String>,
    ) {
        self.end_with(now, session, result, bytes, why, Vec::new());
    }

    /// [`Self::end_receiving`], with how each item ended once every byte was checked: told to
    /// the server (for each item's record) when the session has several.
    fn end_with(
        &mut self,
        now: Instant,
        session: DeliveryId,
        result: DeliveryResult,
        bytes: u64,
        why: Option<String>,
        items: Vec<DeliveryResult>,
    ) {
        let Some(r) = self.deliveries.receiving.remove(&session) else {
            return;
        };
        if r.state != Recv::Offered {
            self.out.push_back(PneOutput::ForgetDelivery { session });
        }
        self.take_next_waiting();
        let done = DeliveryDone {
            session,
            target: self.cfg.id.clone(),
            bytes,
            result,
            items: if r.invite.more.is_empty() {
                Vec::new()
            } else {
                items
            },
        };
        if let Some(gw) = self.pn_gateway(&r.invite.pn_id) {
            self.send_notify_to(gw, done.clone());
        }
        // The record: a call of its own, whose completion nobody waits for. Its failure, to
        // start as to end, is told as an event: the server's record of the session stays open.
        let payload = minicbor::to_vec(&done).unwrap_or_default();
        if let Err(e) = self.call(now, DELIVERY_DONE, payload, Flow::Delivery, None) {
            self.fail(None, Flow::Delivery, Failure::NotStarted(e));
        }
        if !matches!(
            result,
            DeliveryResult::Delivered | DeliveryResult::HashMismatch
        ) {
            self.out.push_back(PneOutput::DiscardReceive { session });
        }
        let event = match result {
            DeliveryResult::Delivered => PneEvent::DeliveryReceived {
                session,
                from: r.invite.source,
                name: r.invite.name,
                bytes,
                specific: r.invite.specific.len() as u64,
                more: r.invite.more.into_iter().map(|i| i.name).collect(),
            },
            _ => PneEvent::DeliveryEnded {
                session,
                target: self.cfg.id.clone(),
                result,
                reason: why,
            },
        };
        self.event(event);
    }

    /// An acknowledgement its PN GW relayed: the least of what every target has.
    pub(super) fn on_delivery_ack(&mut self, env: &Envelope, m: DeliveryAck) {
        let now = self.now;
        let Some(s) = self.relayed_sending(env, &m.session) else {
            return;
        };
        s.heard = now;
        s.source.acknowledged(m.have, m.resume);
        self.read_more(m.session);
    }

    /// A target's end, relayed by the PN GW: told unless it has it; with every target's end,
    /// the session is done.
    pub(super) fn on_delivery_done(&mut self, env: &Envelope, m: DeliveryDone) {
        let now = self.now;
        let Some(s) = self.relayed_sending(env, &m.session) else {
            return;
        };
        s.heard = now;
        let Some(all) = s.source.ended(&m.target, m.result) else {
            return;
        };
        if m.result != DeliveryResult::Delivered {
            self.event(PneEvent::DeliveryEnded {
                session: m.session,
                target: m.target,
                result: m.result,
                reason: None,
            });
        }
        if all && let Some(s) = self.deliveries.sending.remove(&m.session) {
            self.out
                .push_back(PneOutput::ForgetDelivery { session: m.session });
            self.event(PneEvent::DeliverySent {
                session: m.session,
                delivered: s.source.delivered(),
            });
        }
    }

    /// `plain` sealed as this PNE seals the chunk at `offset` of session `session` it sends:
    /// what a source that breaks the rules could send (tests of the targets' checks).
    #[cfg(test)]
    pub(crate) fn seal_as_source(
        &mut self,
        session: DeliveryId,
        offset: u64,
        plain: &[u8],
    ) -> Option<Vec<u8>> {
        let s = self.deliveries.sending.get(&session)?;
        s.source.seal_any(self.rng.get(), offset, plain)
    }

    /// A session this PNE sends, when `env` came from the PN GW of its PN (proven on the link).
    fn relayed_sending(&mut self, env: &Envelope, session: &DeliveryId) -> Option<&mut Sending> {
        let pn = self.deliveries.sending.get(session)?.pn_id;
        if !self.sent_by_pns_gateway(env, &pn) {
            return None;
        }
        self.deliveries.sending.get_mut(session)
    }

    /// Asks the driver for the next chunk, if the window has room and none is being read; not
    /// without a link to the PN GW (after the connection set-up it goes on).
    fn read_more(&mut self, session: DeliveryId) {
        let Some(pn) = self.deliveries.sending.get(&session).map(|s| s.pn_id) else {
            return;
        };
        if self.pn_gateway(&pn).is_none() {
            return;
        }
        let Some(s) = self.deliveries.sending.get_mut(&session) else {
            return;
        };
        if let Some((offset, len)) = s.source.next_read() {
            self.out.push_back(PneOutput::ReadChunk {
                session,
                offset,
                len,
            });
        }
    }

    /// The driver hashed each item of a session this PNE sends, offered without hashes, or
    /// could not (the session ends): the digest is signed, and the last chunk may go with it.
    pub fn handle_content_hashed(
        &mut self,
        session: DeliveryId,
        hashed: Result<Vec<[u8; 32]>, String>,
    ) {
        let Some(s) = self.deliveries.sending.get_mut(&session) else {
            return;
        };
        if !s.source.awaits_digest() {
            return;
        }
        let signed = match (hashed, self.signer.as_ref(), self.cfg.signing.as_ref()) {
            (Ok(hashes), Some(signer), Some(signing)) => {
                let (id, total) = s.source.signed_over();
                let signature = signer.sign_delivery_digest(id.as_bytes(), total, &hashes);
                Ok(Box::new(DeliveryDigest {
                    hashes: hashes.into_iter().map(HashBytes).collect(),
                    signature: SignatureBytes(signature),
                    certificate: signing.certificate.clone(),
                }))
            }
            (Err(why), ..) => Err(format!("its content could not be hashed: {why}")),
            (Ok(_), ..) => Err("this PNE holds no certificate to sign its digest with".into()),
        };
        match signed {
            Ok(digest) => {
                s.source.set_digest(digest);
                self.read_more(session);
            }
            Err(why) => self.sending_failed(session, why),
        }
    }

    /// The hashes of session `session`'s items, from the digest its last chunk carries: signed
    /// by its source (the invitation's), under a certificate of the server's, one per item; or
    /// why not.
    fn source_digest(
        &mut self,
        session: DeliveryId,
        digest: Option<&DeliveryDigest>,
    ) -> Result<Vec<[u8; 32]>, String> {
        let Some(r) = self.deliveries.receiving.get(&session) else {
            return Err("no such session".into());
        };
        let Some(d) = digest else {
            return Err(
                "the last chunk came without its source's signed digest of the content".into(),
            );
        };
        let Some(signing) = self.cfg.signing.as_ref() else {
            return Err("this PNE holds no authority key to check its source's digest".into());
        };
        if d.certificate.pne_id != r.invite.source || d.certificate.owner != r.invite.owner {
            return Err(format!(
                "its digest is signed by {}, not by its source {}",
                d.certificate.pne_id, r.invite.source
            ));
        }
        let items = 1 + r.invite.more.len();
        if d.hashes.len() != items {
            return Err(format!(
                "its source's digest names {} items, and the session has {items}",
                d.hashes.len()
            ));
        }
        let total = r.invite.total();
        let hashes: Vec<[u8; 32]> = d.hashes.iter().map(|h| h.0).collect();
        let certified = self
            .certified
            .verify(&d.certificate, &signing.authority)
            .map_err(|_| {
                "the certificate of its source's digest is not the server's".to_string()
            })?;
        certified
            .verify_delivery_digest(session.as_bytes(), total, &hashes, &d.signature.0)
            .map_err(|_| {
                "its source's digest does not verify: it was altered on the way".to_string()
            })?;
        Ok(hashes)
    }

    /// The driver read a chunk of a session this PNE sends, or could not (the session ends).
    pub fn handle_chunk_read(
        &mut self,
        session: DeliveryId,
        offset: u64,
        read: Result<cpns_crypto::ChunkPlain, String>,
    ) {
        let Some(s) = self.deliveries.sending.get_mut(&session) else {
            return;
        };
        let len = read.as_ref().map_or(0, |b| b.content().len() as u64);
        match s.source.read(self.rng.get(), offset, read) {
            Read::Stale => return,
            Read::Failed(why) => return self.sending_failed(session, why),
            // Only on a link to the PN GW: a chunk not sent is read again later.
            Read::Sealed(Some(chunk)) => {
                let pn = s.pn_id;
                if let Some(gw) = self.pn_gateway(&pn) {
                    if let Some(s) = self.deliveries.sending.get_mut(&session) {
                        s.source.sent(&chunk, len);
                    }
                    self.send_notify_to(gw, chunk);
                }
            }
            Read::Sealed(None) => {}
        }
        self.read_more(session);
    }

    /// Ends a session this PNE sends, here and in its store, telling its PN GW (when linked)
    /// that it stopped; what it was, if it was sent from here.
    fn stop_sending(&mut self, session: DeliveryId) -> Option<Sending> {
        let s = self.deliveries.sending.remove(&session)?;
        self.out.push_back(PneOutput::ForgetDelivery { session });
        if let Some(gw) = self.pn_gateway(&s.pn_id) {
            let stop = cpns_wire::DeliveryControl {
                session,
                action: cpns_wire::ControlAction::Stop,
            };
            self.send_notify_to(gw, stop);
        }
        Some(s)
    }

    /// A session this PNE sends whose targets said nothing for `quiet` while it waited on them
    /// (each gone, or its PN GW): it ends, each target whose part is open told as failed, and
    /// its PN GW is told it stopped (a target still there ends its part, and the PN GW drops
    /// the route, so nothing is held for targets that never come back).
    fn sending_abandoned(&mut self, session: DeliveryId, quiet: std::time::Duration) {
        let Some(s) = self.stop_sending(session) else {
            return;
        };
        let reason = format!(
            "no word from it for {} s while the session waited on it: it or its PN GW is gone",
            quiet.as_secs()
        );
        for target in s.source.open_targets().to_vec() {
            self.event(PneEvent::DeliveryEnded {
                session,
                target,
                result: DeliveryResult::Failed,
                reason: Some(reason.clone()),
            });
        }
        self.event(PneEvent::DeliverySent {
            session,
            delivered: s.source.delivered(),
        });
    }

    /// A session this PNE sends cannot go on (its content could not be read or hashed): it
    /// ends here, and its targets are told it stopped (service control `stop`, through its PN
    /// GW when linked), so they end their parts now, keeping nothing, rather than wait for a
    /// chunk until they give up.
    fn sending_failed(&mut self, session: DeliveryId, why: String) {
        self.stop_sending(session);
        self.event(PneEvent::DeliveryEnded {
            session,
            target: self.cfg.id.clone(),
            result: DeliveryResult::Failed,
            reason: Some(why),
        });
    }

    /// The PN GW of a PN this PNE holds, if it is the one on the link.
    fn pn_gateway(&self, pn: &PnId) -> Option<EntityId> {
        let gw = self.pns.get(pn)?.state.inventory.gateway.clone();
        (self.gateway.as_ref() == Some(&gw)).then_some(gw)
    }

    fn send_notify_to(&mut self, to: EntityId, body: impl Into<cpns_wire::Body>) {
        let env = Envelope::notify(self.ids.next(), self.me(), Address::Entity(to), body);
        self.transmit(&env);
    }
}
