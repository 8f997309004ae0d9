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
//! The session's source lives in this session: it ends with it (a lost WAN session ends it,
//! told as [`ServerEvent::DeliveryStopped`]).

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
        self.outbound.len() + starting
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
        self.send_to_gateway(o.route);
        for (reach, invite) in &o.invites {
            self.push(reach, DELIVERY_OFFERED, invite, o.now_ms);
        }
        self.outbound.insert(session, Box::new(o.source));
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
        read: Result<Vec<u8>, String>,
    ) {
        let Some(s) = self.outbound.get_mut(&session) else {
            return;
        };
        let len = read.as_ref().map_or(0, |b| b.len() as u64);
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
        let Some(s) = self.outbound.get_mut(&session) else {
            return;
        };
        if let Some((offset, len)) = s.next_read() {
            self.out.push_back(ServerOutput::ReadContent {
                session,
                offset,
                len,
            });
        }
    }

    /// What every target of an external session has, from the PN GW.
    pub(super) fn on_outbound_ack(&mut self, env: &Envelope, m: DeliveryAck) {
        let Some(s) = self.outbound.get_mut(&m.session) else {
            return self.not_outbound(env, m.session);
        };
        s.acknowledged(m.have, m.resume);
        self.outbound_read_more(m.session);
    }

    /// A target's end of an external session, from the PN GW; with every target's end, the
    /// session is done.
    pub(super) fn on_outbound_done(&mut self, env: &Envelope, m: DeliveryDone) {
        let Some(s) = self.outbound.get_mut(&m.session) else {
            return self.not_outbound(env, m.session);
        };
        let Some(all) = s.ended(&m.target, m.result) else {
            return;
        };
        if m.result != DeliveryResult::Delivered {
            self.event(ServerEvent::DeliveryEnded {
                session: m.session,
                target: m.target,
                result: m.result,
            });
        }
        if all && let Some(s) = self.outbound.remove(&m.session) {
            self.event(ServerEvent::DeliverySent {
                session: m.session,
                delivered: s.delivered(),
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
    /// closed itself): every external session sending on it stops, and every session
    /// forwarded through it ends at its other side too.
    pub fn end_deliveries(&mut self) {
        self.end_forwards();
        let sessions: Vec<DeliveryId> = self.outbound.keys().copied().collect();
        self.outbound.clear();
        for session in sessions {
            let reason = "the PN GW's session with the server ended".to_string();
            self.event(ServerEvent::DeliveryStopped { session, reason });
        }
    }

    pub(super) fn send_to_gateway(&mut self, body: impl Into<cpns_wire::Body>) {
        let env = Envelope::notify(self.ids.next(), Address::Server, self.peer(), body);
        self.transmit(env);
    }
}
