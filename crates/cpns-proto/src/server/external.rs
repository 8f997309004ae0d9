//! Deliveries from external entities through the server (004 §5.5.8.1, "Between CPNS Server
//! and External entities"; docs/services.md, "Delivery from outside a PN"): an operator's
//! service hands the server content for members of a PN, with a part for each target of its
//! own if it likes (004 §5.5.8.2, "common and specific data"). The session is set up as a PNE's
//! is (records, route, a notice sealed to each target), and this session sends it: the common
//! part crosses the PN GW's WAN session once, in chunks sealed under the session's key, and the
//! PN GW gives every target each chunk; each target's specific part travels in its own notice,
//! sealed to it. What every target has comes back from the PN GW as from a PNE source's PN GW,
//! and so does each target's end.
//!
//! The session's source lives in this session. When the WAN session is lost (the PN GW
//! restarted, or its connection dropped), the sessions it sent are handed to the driver
//! ([`ServerSession::end_deliveries`], [`KeptOutbound`]), with the forwards it relayed
//! (`forward.rs`), which gives them to the PN GW's next
//! session ([`ServerSession::restore_outbound`]): the route is told the PN GW again and the
//! source goes on from what every target was last known to have, the targets saying again
//! what they hold as the chunks come. A session gone on so, of which no target says anything
//! for two flow timeouts (the time a target waits for a chunk), stops, told as
//! [`ServerEvent::DeliveryStopped`].

use std::time::Instant;

use cpns_wire::{
    Address, DELIVERY_OFFERED, DeliveryAck, DeliveryDone, DeliveryId, DeliveryOffer,
    DeliveryResult, EntityId, Envelope, ErrorBody, ErrorCode, MAX_SPECIFIC, PnId, UserId,
};

use super::delivery::{CHUNK, WINDOW, check_offer};
use super::groups::Reach;
use super::{Load, Parked, Persisted, ServerEvent, ServerOutput, ServerSession};
use crate::source::{Read, Source};

/// Sessions an external entity sends through one PN GW's session at once (set up or sending);
/// one past them is refused.
pub const MAX_OUTBOUND: usize = 8;

/// Content an external entity delivers through the server to members of one PN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalDelivery {
    /// The external entity: the source named in the records and to the targets.
    pub source: EntityId,
    /// The user it delivers as (the operator's service's account).
    pub owner: UserId,
    /// The PN whose members receive it; this session's PN GW serves it.
    pub pn_id: PnId,
    /// What is offered, and to whom (as a PNE offers).
    pub offer: DeliveryOffer,
    /// A part for one target only, by target: at most [`MAX_SPECIFIC`] bytes each.
    pub specific: Vec<(EntityId, Vec<u8>)>,
}

/// An external delivery waiting for its PN.
#[derive(Debug)]
pub(super) struct ExternalLoad {
    ask: u64,
    d: ExternalDelivery,
    now_ms: i64,
}

/// An external delivery whose records are being opened.
#[derive(Debug)]
pub(super) struct ExternalOpened {
    ask: u64,
    now_ms: i64,
    route: cpns_wire::DeliveryRoute,
    invites: Vec<(Reach, cpns_wire::DeliveryInvite)>,
    source: Source,
}

/// A session from outside this session sends: its sending end, its route (told the PN GW
/// again after a lost WAN session), and when a target was last heard of.
#[derive(Debug)]
pub(super) struct Outgoing {
    source: Source,
    route: cpns_wire::DeliveryRoute,
    /// Since a lost WAN session it went on after, while no target has said anything: from
    /// when (none: not waiting so).
    awaiting: Option<Instant>,
}

/// The sessions from outside a PN a lost WAN session was sending, and the sessions forwarded
/// between PNs it relayed, kept for its PN GW's next session ([`ServerSession::end_deliveries`],
/// [`ServerSession::restore_outbound`]).
#[derive(Debug, Default)]
pub struct KeptOutbound {
    gateway: Option<EntityId>,
    sessions: std::collections::BTreeMap<DeliveryId, Box<Outgoing>>,
    forwards: super::forward::Forwards,
    /// When the first WAN session they were lost with ended (they have not moved since).
    since: Option<Instant>,
}

impl KeptOutbound {
    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.forwards.is_empty()
    }

    /// The PN GW whose session was sending them.
    pub fn gateway(&self) -> Option<&EntityId> {
        self.gateway.as_ref()
    }

    /// The sessions kept, from outside and forwarded.
    pub fn sessions(&self) -> Vec<DeliveryId> {
        let mut all: Vec<DeliveryId> = self.sessions.keys().copied().collect();
        all.extend(self.forwards.keys());
        all.sort_unstable();
        all
    }

    /// What the other side of forwarded session `session` hands it (through
    /// [`ServerSession::relayed`] when it is live), held for the PN GW's next session as
    /// `forward.rs` says; given back if that forward is not kept here.
    pub fn hold(&mut self, session: DeliveryId, msg: super::Relayed) -> Result<(), super::Relayed> {
        let Some(f) = self.forwards.get_mut(&session) else {
            return Err(msg);
        };
        f.hold(msg);
        Ok(())
    }

    /// Its PN GW did not come back within their grace: every forward kept ends, its other
    /// side told why (each letter for the session of that side's PN GW: its PN GW, the
    /// session, and the end). The sessions from outside are the driver's to stop.
    pub fn expire(&mut self, reason: &str) -> Vec<(EntityId, DeliveryId, super::Relayed)> {
        std::mem::take(&mut self.forwards)
            .into_values()
            .map(|f| {
                let session = f.session();
                (
                    f.peer().clone(),
                    session,
                    super::Relayed::Ended(reason.into()),
                )
            })
            .collect()
    }

    /// When the WAN session they were first lost with ended: they have not moved since, and
    /// are kept no longer than their targets wait for a chunk, counted from then.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Takes on the sessions `other` keeps (two lost sessions of one PN GW), from the earlier
    /// of their losses.
    pub fn absorb(&mut self, mut other: KeptOutbound) {
        self.sessions.append(&mut other.sessions);
        self.forwards.append(&mut other.forwards);
        self.since = earlier(self.since, other.since);
        if self.gateway.is_none() {
            self.gateway = other.gateway;
        }
    }
}

/// The earlier of two times, either maybe absent.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What is wrong with an external delivery, if anything.
fn check(d: &ExternalDelivery) -> Result<(), String> {
    check_offer(&d.offer, &d.source)?;
    if d.offer.targets.is_empty() || d.offer.held || !d.offer.requires.is_empty() {
        return Err(
            "a delivery from outside names its targets, and is neither held nor by \
                    capability"
                .into(),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (t, part) in &d.specific {
        if !d.offer.targets.contains(t) {
            return Err(format!("a specific part for {t}, which is not a target"));
        }
        if !seen.insert(t) {
            return Err(format!("two specific parts for {t}"));
        }
        if part.len() > MAX_SPECIFIC {
            return Err(format!(
                "the specific part for {t} is larger than {MAX_SPECIFIC} bytes"
            ));
        }
    }
    Ok(())
}

impl ServerSession {
    /// Delivers `d` to members of a PN this session's PN GW serves (004 §5.5.8.1). Answered
    /// [`ServerOutput::DeliveryStarted`] with `ask` once set up (or refused: no PN GW here, a
    /// PN it does not serve, a target that is no member with a secure session, a malformed
    /// offer, too many at once, a store failure); the content is then read from the driver
    /// ([`ServerOutput::ReadContent`]) as the targets take it, and each target's end is told
    /// ([`ServerEvent::DeliveryEnded`], [`ServerEvent::DeliverySent`]).
    pub fn deliver(&mut self, now: Instant, d: ExternalDelivery, ask: u64) {
        let refuse = |s: &mut Self, code, why: &str| {
            let result = Err(ErrorBody::new(code, why));
            s.out
                .push_back(ServerOutput::DeliveryStarted { ask, result });
        };
        if self.conn.gateway().is_none() {
            return refuse(self, ErrorCode::NotFound, "no PN GW on this session");
        }
        let Some(now_ms) = self.unix_ms(now) else {
            return refuse(self, ErrorCode::Internal, "the server has no wall clock");
        };
        if let Err(why) = check(&d) {
            return refuse(self, ErrorCode::BadRequest, &why);
        }
        if self.outbound_count() >= MAX_OUTBOUND {
            let why = format!("this PN GW takes {MAX_OUTBOUND} deliveries from outside at once");
            return refuse(self, ErrorCode::Busy, &why);
        }
        let load = Load::Pn {
            pn: d.pn_id,
            replay: None,
            entities: d.offer.targets.clone(),
            member_keys: true,
        };
        let parked = ExternalLoad { ask, d, now_ms };
        self.load(Parked::ExternalLoad(Box::new(parked)), load);
    }

    /// External sessions set up or sending.
    fn outbound_count(&self) -> usize {
        let starting = self
            .parked
            .values()
            .filter(|p| matches!(p, Parked::ExternalLoad(_) | Parked::ExternalOpened(_)))
            .count();
        let restoring = self.restoring.as_ref().map_or(0, |k| k.sessions.len());
        self.outbound.len() + restoring + starting
    }

    /// The PN is read (or could not be).
    pub(super) fn external_loaded(
        &mut self,
        p: ExternalLoad,
        loaded: Result<super::PnLoaded, crate::StoreFailure>,
    ) {
        let ExternalLoad { ask, d, now_ms } = p;
        let set_up = loaded
            .map_err(|e| (ErrorCode::Internal, format!("store: {e}")))
            .and_then(|l| {
                let here = super::delivery::Targets::Here { from_server: true };
                self.set_up(&d.source, &d.owner, &d.offer, &d.specific, here, &l)
            });
        let set_up = match set_up {
            Ok(s) => s,
            Err((code, why)) => {
                let result = Err(ErrorBody::new(code, why));
                return self
                    .out
                    .push_back(ServerOutput::DeliveryStarted { ask, result });
            }
        };
        // The operator's offer was checked, its suite with it.
        let suite = super::delivery::suite_of(d.offer.suite)
            .unwrap_or(cpns_crypto::Suite::ChaCha20Poly1305);
        let source = Source::new(
            set_up.session,
            &set_up.key,
            d.offer.total(),
            CHUNK,
            WINDOW,
            d.offer.targets.clone(),
            suite,
        );
        let effect = set_up.effect(&d.source, d.offer, &self.cfg.tariff, now_ms);
        let opened = ExternalOpened {
            ask,
            now_ms,
            route: set_up.route,
            invites: set_up.invites,
            source,
        };
        self.persist(Parked::ExternalOpened(Box::new(opened)), effect);
    }

    /// The records are open: the PN GW learns the route, each target is told, and the source
    /// waits for every target's first word.
    pub(super) fn external_opened(
        &mut self,
        o: ExternalOpened,
        result: Result<Persisted, crate::StoreFailure>,
    ) {
        let session = o.route.session;
        if let Err(e) = result {
            let result = Err(ErrorBody::new(ErrorCode::Internal, format!("store: {e}")));
            return self
                .out
                .push_back(ServerOutput::DeliveryStarted { ask: o.ask, result });
        }
        self.send_to_gateway(o.route.clone());
        for (reach, invite) in &o.invites {
            self.push(reach, DELIVERY_OFFERED, invite, o.now_ms);
        }
        let outgoing = Outgoing {
            source: o.source,
            route: o.route,
            awaiting: None,
        };
        self.outbound.insert(session, Box::new(outgoing));
        self.out.push_back(ServerOutput::DeliveryStarted {
            ask: o.ask,
            result: Ok(session),
        });
    }

    /// The driver read the content at `offset` of external session `session`, or could not
    /// (the session stops).
    pub fn handle_content_read(
        &mut self,
        session: DeliveryId,
        offset: u64,
        read: Result<cpns_crypto::ChunkPlain, String>,
    ) {
        let Some(o) = self.outbound.get_mut(&session) else {
            return;
        };
        let s = &mut o.source;
        let len = read.as_ref().map_or(0, |b| b.content().len() as u64);
        match s.read(self.rng.get(), offset, read) {
            Read::Stale => return,
            Read::Failed(reason) => {
                self.outbound.remove(&session);
                return self.event(ServerEvent::DeliveryStopped { session, reason });
            }
            Read::Sealed(Some(chunk)) => {
                s.sent(&chunk, len);
                self.send_to_gateway(chunk);
            }
            Read::Sealed(None) => {}
        }
        self.outbound_read_more(session);
    }

    fn outbound_read_more(&mut self, session: DeliveryId) {
        let Some(o) = self.outbound.get_mut(&session) else {
            return;
        };
        if let Some((offset, len)) = o.source.next_read() {
            self.out.push_back(ServerOutput::ReadContent {
                session,
                offset,
                len,
            });
        }
    }

    /// What every target of an external session has, from the PN GW.
    pub(super) fn on_outbound_ack(&mut self, env: &Envelope, m: DeliveryAck) {
        let Some(o) = self.outbound.get_mut(&m.session) else {
            return self.not_outbound(env, m.session);
        };
        o.awaiting = None;
        o.source.acknowledged(m.have, m.resume);
        self.outbound_read_more(m.session);
    }

    /// A target's end of an external session, from the PN GW; with every target's end, the
    /// session is done.
    pub(super) fn on_outbound_done(&mut self, env: &Envelope, m: DeliveryDone) {
        let Some(o) = self.outbound.get_mut(&m.session) else {
            return self.not_outbound(env, m.session);
        };
        o.awaiting = None;
        let Some(all) = o.source.ended(&m.target, m.result) else {
            return;
        };
        // Told the PN GW again after a lost WAN session, the route names only the targets
        // still open: one that ended acknowledges nothing more.
        o.route.targets = o.source.open_targets().to_vec();
        if m.result != DeliveryResult::Delivered {
            self.event(ServerEvent::DeliveryEnded {
                session: m.session,
                target: m.target,
                result: m.result,
            });
        }
        if all && let Some(o) = self.outbound.remove(&m.session) {
            self.event(ServerEvent::DeliverySent {
                session: m.session,
                delivered: o.source.delivered(),
            });
        }
    }

    /// A delivery message for a session this session does not send.
    fn not_outbound(&mut self, env: &Envelope, session: DeliveryId) {
        let why = format!("no delivery {session} is sent from here");
        self.reject(env, ErrorCode::NotFound, why);
    }

    /// The driver abandons external session `session` (its asker gave up waiting for it): it
    /// sends nothing more; its targets end it when no chunk comes.
    pub fn abandon_delivery(&mut self, session: DeliveryId) {
        if self.outbound.remove(&session).is_some() {
            let reason = "its asker gave up waiting for its set-up".to_string();
            self.event(ServerEvent::DeliveryStopped { session, reason });
        }
    }

    /// The connection ended (the driver says so before it drops the session, or the session
    /// closed itself): every external session sending on it, and every session forwarded
    /// through it, is handed over, to go on in its PN GW's next session
    /// ([`Self::restore_outbound`]). A session of no PN GW (none authenticated) keeps none.
    pub fn end_deliveries(&mut self, now: Instant) -> KeptOutbound {
        let mut kept = KeptOutbound {
            gateway: self.conn.gateway().map(|g| g.id.clone()),
            sessions: std::mem::take(&mut self.outbound),
            forwards: std::mem::take(&mut self.forwards),
            since: Some(now),
        };
        // Those restored here and never gone on (the PN GW never finished its set-up) keep
        // the time of their first loss.
        if let Some(restoring) = self.restoring.take() {
            kept.absorb(*restoring);
        }
        kept
    }

    /// The sessions from outside a lost WAN session of this session's PN GW was sending: once
    /// the PN GW's connection set-up is done (it answered the status lookup, 002 §B.1.1.2 step
    /// 16; at once if it has), each route is told the PN GW again, and each source goes on
    /// from what every target was last known to have (a target holding more says so at the
    /// next chunk, and takes only what it lacks). Given back if this session is not the same
    /// PN GW's, or has no authenticated PN GW yet.
    pub fn restore_outbound(
        &mut self,
        now: Instant,
        kept: KeptOutbound,
    ) -> Result<(), KeptOutbound> {
        let here = self.conn.gateway().map(|g| g.id.clone());
        if here.is_none() || here.as_ref() != kept.gateway.as_ref() {
            return Err(kept);
        }
        match &mut self.restoring {
            Some(restoring) => restoring.absorb(kept),
            None => self.restoring = Some(Box::new(kept)),
        }
        if self.reported {
            self.resume_outbound(now);
        }
        Ok(())
    }

    /// The PN GW's connection set-up is done: the sessions from outside restored go on, and
    /// so do the forwards (`forward.rs`).
    pub(super) fn resume_outbound(&mut self, now: Instant) {
        let Some(kept) = self.restoring.take() else {
            return;
        };
        let KeptOutbound {
            sessions, forwards, ..
        } = *kept;
        for (session, mut o) in sessions {
            o.source.rewind();
            // Moving when the WAN session was lost: a target says where it is at the first
            // chunk. One that was not (no target had accepted yet) waits as before.
            o.awaiting = o.source.moving().then_some(now);
            self.send_to_gateway(o.route.clone());
            self.outbound.insert(session, o);
            self.outbound_read_more(session);
        }
        for f in forwards.into_values() {
            self.resume_forward(f);
        }
    }

    /// When the first session from outside gone on after a lost WAN session, and not heard of
    /// since, stops.
    pub(super) fn outbound_deadline(&self) -> Option<Instant> {
        let quiet = self.cfg.timeouts.flow * 2;
        self.outbound
            .values()
            .filter_map(|o| o.awaiting)
            .map(|a| a + quiet)
            .min()
    }

    /// Sessions from outside that went on after a lost WAN session and of which no target
    /// said anything for two flow timeouts stop: each target that was taking it has given up
    /// waiting for a chunk by then.
    pub(super) fn outbound_timeouts(&mut self, now: Instant) {
        let quiet = self.cfg.timeouts.flow * 2;
        let stale: Vec<DeliveryId> = self
            .outbound
            .iter()
            .filter(|(_, o)| o.awaiting.is_some_and(|a| a + quiet <= now))
            .map(|(s, _)| *s)
            .collect();
        for session in stale {
            self.outbound.remove(&session);
            let reason = format!(
                "no target said anything for {} s after the PN GW's session came back",
                quiet.as_secs()
            );
            self.event(ServerEvent::DeliveryStopped { session, reason });
        }
    }

    pub(super) fn send_to_gateway(&mut self, body: impl Into<cpns_wire::Body>) {
        let env = Envelope::notify(self.ids.next(), Address::Server, self.peer(), body);
        self.transmit(env);
    }
}
