//! Forwarding between PNs through the server (004 §5.5.8, "forwarding ... through the server
//! between PNs"; docs/services.md, "Forwarding between PNs"): a source offers content to
//! members of a PN served by another PN GW. The session of the source's PN GW (the **source
//! side**) sets it up, hands the targets' PN GW's session (the **targets side**) its route, and
//! from then on the two relay what neither can read: the source's chunks, sealed under the
//! session's key, go up the source's WAN session once and down the targets' once; what the
//! targets have and their ends come back the other way. Each side checks what its own PN GW
//! sends: a chunk within the content, the chunk size and the window the source was allowed; an
//! acknowledgement within the content; an end only of a target not ended.
//!
//! Either session ending ends the forward at both ends: the other side is told
//! ([`Relayed::Ended`]), and the source side tells its PN GW each target's part failed, which
//! the PN GW tells the source.

use std::collections::{BTreeMap, BTreeSet};

use cpns_wire::{
    DeliveryAck, DeliveryChunk, DeliveryDone, DeliveryId, DeliveryResult, DeliveryRoute, EntityId,
    Envelope, ErrorCode,
};

use super::delivery::WINDOW;
use super::{ServerEvent, ServerOutput, ServerSession};

/// Forwarded sessions one server session relays at once, on each side; a forward past them
/// is refused (its other side is told it ended).
pub const MAX_FORWARDS: usize = 32;
/// The bytes a sealed chunk adds to its content.
const OVERHEAD: u64 = cpns_crypto::CHUNK_OVERHEAD as u64;

/// What one server session hands the other of a forwarded session ([`ServerOutput::Relay`],
/// [`ServerSession::relayed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relayed {
    /// A chunk from the source, checked by the source side: for the targets' PN GW.
    Chunk(DeliveryChunk),
    /// The least every target has, from the targets' PN GW: for the source's.
    Ack(DeliveryAck),
    /// A target's end, from the targets' PN GW: for the source's.
    Done(DeliveryDone),
    /// Service control from the source, checked by the source side: for the targets' PN GW.
    Control(cpns_wire::DeliveryControl),
    /// The other side ended the forward (its session ended, or it could not take it), and
    /// why.
    Ended(String),
}

/// Which end of a forwarded session this server session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Its PN GW serves the source.
    Source,
    /// Its PN GW serves the targets.
    Targets,
}

/// A forwarded session this server session relays.
#[derive(Debug)]
pub(super) struct Forward {
    side: Side,
    /// The other side's PN GW.
    peer: EntityId,
    size: u64,
    chunk: u64,
    /// Targets not ended.
    targets: BTreeSet<EntityId>,
    /// Source side: the least every target had, as last told the source.
    have: u64,
    /// Source side: the furthest byte the source was ever allowed to send (a window past
    /// what it was told): no chunk reaches past it.
    reach: u64,
    /// Targets side: the furthest byte relayed to the targets (no target has more), and the
    /// acknowledgement last relayed to the source side.
    down: u64,
    told: Option<u64>,
    /// Targets side: acknowledgements saying `resume` relayed; past [`MAX_RESUMES`], refused.
    resumes: u32,
}

/// Acknowledgements saying `resume` (a target linking again) one forwarded session relays.
const MAX_RESUMES: u32 = 64;

/// The forwarded sessions of one server session.
pub(super) type Forwards = BTreeMap<DeliveryId, Forward>;

impl Forward {
    fn new(side: Side, peer: EntityId, route: &DeliveryRoute) -> Self {
        Self {
            side,
            peer,
            size: route.size,
            chunk: u64::from(route.chunk),
            targets: route.targets.iter().cloned().collect(),
            have: 0,
            reach: u64::from(WINDOW).min(route.size),
            down: 0,
            told: None,
            resumes: 0,
        }
    }

    /// What is wrong with acknowledgement `m` from the targets' PN GW, if anything: each
    /// is of what was relayed, at a chunk's end, moving on unless it resumes, and resumes are
    /// bounded; so what crosses to the source side stays within a few per chunk.
    fn ack_fault(&self, m: &DeliveryAck) -> Option<&'static str> {
        if m.have > self.down || !m.have.is_multiple_of(self.chunk) && m.have != self.size {
            Some("an acknowledgement of more than was relayed, or not at a chunk's end")
        } else if !m.resume && self.told.is_some_and(|t| m.have <= t) {
            Some("an acknowledgement that does not move on")
        } else if m.resume && self.resumes >= MAX_RESUMES {
            Some("too many acknowledgements resuming one session")
        } else {
            None
        }
    }

    /// What is wrong with chunk `m` from the source's PN GW, if anything.
    fn chunk_fault(&self, m: &DeliveryChunk) -> Option<&'static str> {
        let len = (m.sealed.len() as u64).saturating_sub(OVERHEAD);
        let end = m.offset.checked_add(len);
        if m.sealed.len() as u64 > self.chunk + OVERHEAD || len == 0 {
            Some("a chunk larger than the session's chunk size, or empty")
        } else if end.is_none_or(|end| end > self.size) {
            Some("a chunk past the content's size")
        } else if end.is_none_or(|end| end > self.reach) {
            Some("a chunk past the window its targets allowed")
        } else {
            None
        }
    }
}

impl ServerSession {
    /// A session set up here whose targets are behind PN GW `gateway`: this side relays its
    /// source's chunks there, and `far` is handed to that PN GW's session.
    pub(super) fn forward_out(
        &mut self,
        near: &DeliveryRoute,
        gateway: EntityId,
        far: DeliveryRoute,
    ) {
        let f = Forward::new(Side::Source, gateway.clone(), near);
        self.forwards.insert(near.session, f);
        self.out.push_back(ServerOutput::Forward {
            gateway,
            route: far,
        });
    }

    /// The session of PN GW `from` forwards a session to members of a PN this session's PN GW
    /// serves ([`ServerOutput::Forward`]): its route goes to the PN GW, and this side relays
    /// it. Refused (`from`'s session told it ended) without a PN GW here, past
    /// [`MAX_FORWARDS`], or for a session relayed here already.
    pub fn forward_in(&mut self, from: EntityId, route: DeliveryRoute) {
        let session = route.session;
        let targets_side = self
            .forwards
            .values()
            .filter(|f| f.side == Side::Targets)
            .count();
        let why = if self.conn.gateway().is_none() {
            Some("the targets' PN GW has no session".to_string())
        } else if !route.from_server || self.forwards.contains_key(&session) {
            Some("a forward this session relays already, or not from the server".to_string())
        } else if targets_side >= MAX_FORWARDS {
            Some(format!(
                "the targets' PN GW takes {MAX_FORWARDS} forwarded deliveries at once"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return self.relay(from, session, Relayed::Ended(why));
        }
        let f = Forward::new(Side::Targets, from, &route);
        self.forwards.insert(session, f);
        self.send_to_gateway(route);
    }

    /// Whether `session` is forwarded through this session.
    pub(super) fn is_forward(&self, session: &DeliveryId) -> bool {
        self.forwards.contains_key(session)
    }

    /// A chunk of a forwarded session from the source's PN GW: checked, and handed to the
    /// targets side.
    pub(super) fn on_forward_chunk(&mut self, env: &Envelope, m: DeliveryChunk) {
        let peer = match self.forwards.get(&m.session) {
            Some(f) if f.side == Side::Source => match f.chunk_fault(&m) {
                None => f.peer.clone(),
                Some(why) => return self.delivery_refused(env, m.session, why),
            },
            _ => {
                let why = "a chunk of no delivery forwarded from here";
                return self.delivery_refused(env, m.session, why);
            }
        };
        self.relay(peer, m.session, Relayed::Chunk(m));
    }

    /// Service control from the source's PN GW (its source's, which that PN GW relays only
    /// from the source): handed to the targets side.
    pub(super) fn on_forward_control(&mut self, env: &Envelope, m: cpns_wire::DeliveryControl) {
        let peer = match self.forwards.get(&m.session) {
            Some(f) if f.side == Side::Source => f.peer.clone(),
            _ => {
                let why = "control of no delivery forwarded from here";
                return self.delivery_refused(env, m.session, why);
            }
        };
        self.relay(peer, m.session, Relayed::Control(m));
    }

    /// What the targets have, from the targets' PN GW: handed to the source side.
    pub(super) fn on_forward_ack(&mut self, env: &Envelope, m: DeliveryAck) {
        let peer = match self.forwards.get_mut(&m.session) {
            Some(f) if f.side == Side::Targets => {
                if let Some(why) = f.ack_fault(&m) {
                    return self.delivery_refused(env, m.session, why);
                }
                f.told = Some(m.have);
                f.resumes += u32::from(m.resume);
                f.peer.clone()
            }
            _ => {
                let why = "an acknowledgement of no session forwarded to here";
                return self.delivery_refused(env, m.session, why);
            }
        };
        self.relay(peer, m.session, Relayed::Ack(m));
    }

    /// A target's end, from the targets' PN GW: handed to the source side; with every
    /// target's end, the forward is done here.
    pub(super) fn on_forward_done(&mut self, env: &Envelope, m: DeliveryDone) {
        let ended = match self.forwards.get_mut(&m.session) {
            Some(f) if f.side == Side::Targets && f.targets.contains(&m.target) => {
                f.targets.remove(&m.target);
                Some((f.peer.clone(), f.targets.is_empty()))
            }
            _ => None,
        };
        let Some((peer, all)) = ended else {
            let why = "the end of a target of no session forwarded to here, or ended already";
            return self.delivery_refused(env, m.session, why);
        };
        if all {
            self.forwards.remove(&m.session);
        }
        self.relay(peer, m.session, Relayed::Done(m));
    }

    /// What the other side of forwarded session `session` hands this one. Anything of a
    /// session not forwarded here, or for the other side, is dropped.
    pub fn relayed(&mut self, session: DeliveryId, msg: Relayed) {
        let Some(f) = self.forwards.get_mut(&session) else {
            return;
        };
        match (f.side, msg) {
            (Side::Targets, Relayed::Chunk(m)) => {
                let len = (m.sealed.len() as u64).saturating_sub(OVERHEAD);
                f.down = f.down.max(m.offset.saturating_add(len));
                self.send_to_gateway(m);
            }
            (Side::Targets, Relayed::Control(m)) => self.send_to_gateway(m),
            (Side::Source, Relayed::Ack(m)) if m.have <= f.size => {
                f.have = m.have;
                f.reach = f
                    .reach
                    .max(m.have.saturating_add(u64::from(WINDOW)).min(f.size));
                self.send_to_gateway(m);
            }
            (Side::Source, Relayed::Done(m)) if f.targets.contains(&m.target) => {
                f.targets.remove(&m.target);
                if f.targets.is_empty() {
                    self.forwards.remove(&session);
                }
                self.send_to_gateway(m);
            }
            (_, Relayed::Ended(reason)) => self.forward_ended(session, reason),
            _ => {}
        }
    }

    /// Forwarded session `session` ended at its other side (or could not be handed there):
    /// the source side tells its PN GW each target not ended failed.
    pub fn forward_ended(&mut self, session: DeliveryId, reason: String) {
        let Some(f) = self.forwards.remove(&session) else {
            return;
        };
        if f.side == Side::Source {
            for target in f.targets {
                self.send_to_gateway(DeliveryDone {
                    session,
                    target,
                    bytes: f.have,
                    result: DeliveryResult::Failed,
                    items: Vec::new(),
                });
            }
        }
        self.event(ServerEvent::DeliveryStopped { session, reason });
    }

    /// This session ends: every forward through it ends at its other side too.
    pub(super) fn end_forwards(&mut self) {
        let forwards = std::mem::take(&mut self.forwards);
        let me = self
            .gateway()
            .map_or_else(|| "a PN GW".to_string(), |g| g.to_string());
        for (session, f) in forwards {
            let why = format!("the session of {me} with the server ended");
            self.relay(f.peer, session, Relayed::Ended(why));
        }
    }

    /// Refuses a delivery message of the PN GW, saying so to whoever runs the server (a
    /// notice is not answered).
    fn delivery_refused(&mut self, env: &Envelope, session: DeliveryId, why: &str) {
        self.reject(env, ErrorCode::BadRequest, why);
        self.event(ServerEvent::DeliveryRefused {
            session,
            reason: why.into(),
        });
    }

    fn relay(&mut self, gateway: EntityId, session: DeliveryId, msg: Relayed) {
        self.out.push_back(ServerOutput::Relay {
            gateway,
            session,
            msg,
        });
    }
}
