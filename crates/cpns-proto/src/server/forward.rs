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
//! A session ending (its PN GW restarted, or its connection dropped) does not end the forwards
//! through it: they are kept with the deliveries from outside it was sending ([`KeptOutbound`],
//! [`ServerSession::end_deliveries`]), and what the other side hands them meanwhile is held
//! ([`KeptOutbound::hold`]): what the targets have is noted, a target's end and a control are
//! kept to be told, chunks are dropped (the source sends them again). The PN GW's next session
//! takes them back ([`ServerSession::restore_outbound`]) and, once its connection set-up is
//! done, tells its PN GW the route again (one that kept it takes nothing new; one that restarted
//! relays it again), then what was held, then where to go on from: the source side tells its
//! PN GW what every target has (`resume`), the targets side tells the source side what they
//! had last said. Kept past its grace (its PN GW did not come back), a forward ends at its
//! other side ([`KeptOutbound::expire`], [`Relayed::Ended`]); ended at the source side, the
//! source side tells its PN GW each target's part failed, which the PN GW tells the source.
//!
//! [`KeptOutbound`]: super::KeptOutbound
//! [`KeptOutbound::hold`]: super::KeptOutbound::hold
//! [`KeptOutbound::expire`]: super::KeptOutbound::expire

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
    /// The route this side's PN GW was told (told it again when its next session takes the
    /// forward back).
    route: DeliveryRoute,
    /// Targets not ended.
    targets: BTreeSet<EntityId>,
    /// Source side: the least every target had, as last told the source, and whether any
    /// was told.
    have: u64,
    heard: bool,
    /// Source side: the furthest byte the source was ever allowed to send (a window past
    /// what it was told): no chunk reaches past it.
    reach: u64,
    /// Targets side: the furthest byte relayed to the targets (no target has more), and the
    /// acknowledgement last relayed to the source side.
    down: u64,
    told: Option<u64>,
    /// Targets side: acknowledgements saying `resume` relayed; past [`MAX_RESUMES`], refused.
    resumes: u32,
    /// While this side's PN GW is away (the forward kept for its next session): what the
    /// other side handed it to tell that PN GW, in order. At most a target's end for each
    /// target and one control, or only the forward's end.
    held: Vec<Relayed>,
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
            targets: route.targets.iter().cloned().collect(),
            route: route.clone(),
            have: 0,
            heard: false,
            reach: u64::from(WINDOW).min(route.size),
            down: 0,
            told: None,
            resumes: 0,
            held: Vec::new(),
        }
    }

    /// The session this forwards.
    pub(super) fn session(&self) -> DeliveryId {
        self.route.session
    }

    /// The other side's PN GW.
    pub(super) fn peer(&self) -> &EntityId {
        &self.peer
    }

    /// The content's size.
    fn size(&self) -> u64 {
        self.route.size
    }

    /// The largest chunk's content.
    fn chunk(&self) -> u64 {
        u64::from(self.route.chunk)
    }

    /// Source side: what the targets have, from the targets side; the source may go a window
    /// past it.
    fn took_ack(&mut self, m: &DeliveryAck) {
        self.have = m.have;
        self.heard = true;
        self.reach = self
            .reach
            .max(m.have.saturating_add(u64::from(WINDOW)).min(self.size()));
    }

    /// What the other side hands this one while its PN GW is away: what the targets have is
    /// noted; a target's end (once for each target not ended) and a control (the latest) are
    /// kept to be told; the forward's end replaces everything, and nothing is held after it; a
    /// chunk is dropped (the source
    /// sends it again from what the targets have), and so is anything for the other side.
    pub(super) fn hold(&mut self, msg: Relayed) {
        if matches!(self.held.first(), Some(Relayed::Ended(_))) {
            return;
        }
        match (self.side, msg) {
            (Side::Source, Relayed::Ack(m)) if m.have <= self.size() => self.took_ack(&m),
            (Side::Source, Relayed::Done(m)) => {
                let held = |h: &Relayed| matches!(h, Relayed::Done(d) if d.target == m.target);
                if self.targets.contains(&m.target) && !self.held.iter().any(held) {
                    self.held.push(Relayed::Done(m));
                }
            }
            (Side::Targets, Relayed::Control(m)) => {
                self.held.retain(|h| !matches!(h, Relayed::Control(_)));
                self.held.push(Relayed::Control(m));
            }
            (_, Relayed::Ended(reason)) => self.held = vec![Relayed::Ended(reason)],
            _ => {}
        }
    }

    /// What is wrong with acknowledgement `m` from the targets' PN GW, if anything: each
    /// is of what was relayed, at a chunk's end, moving on unless it resumes, and resumes are
    /// bounded; so what crosses to the source side stays within a few per chunk.
    fn ack_fault(&self, m: &DeliveryAck) -> Option<&'static str> {
        if m.have > self.down || !m.have.is_multiple_of(self.chunk()) && m.have != self.size() {
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
        if m.sealed.len() as u64 > self.chunk() + OVERHEAD || len == 0 {
            Some("a chunk larger than the session's chunk size, or empty")
        } else if end.is_none_or(|end| end > self.size()) {
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
    /// session not forwarded here, or for the other side, is dropped; of one taken back from a
    /// lost session and not gone on yet, held.
    pub fn relayed(&mut self, session: DeliveryId, msg: Relayed) {
        let msg = match &mut self.restoring {
            Some(kept) => match kept.hold(session, msg) {
                Ok(()) => return,
                Err(msg) => msg,
            },
            None => msg,
        };
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
            (Side::Source, Relayed::Ack(m)) if m.have <= f.size() => {
                f.took_ack(&m);
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

    /// A forward taken back from a lost session of this PN GW goes on (004 §5.5.8, forwarding
    /// between PNs; once the PN GW's connection set-up is done, 002 §B.1.1.2 step 16): its PN
    /// GW is told the route again (naming the targets not ended) and what was held for it,
    /// then where to go on from. One whose other side ended meanwhile ends here (at the source side, once its
    /// PN GW has the route to take the targets' ends).
    pub(super) fn resume_forward(&mut self, mut f: Forward) {
        let session = f.session();
        let held = std::mem::take(&mut f.held);
        let ended = matches!(held.first(), Some(Relayed::Ended(_)));
        let (side, peer, have, heard, told) = (f.side, f.peer.clone(), f.have, f.heard, f.told);
        if !(ended && side == Side::Targets) {
            let mut route = f.route.clone();
            route.targets = f.targets.iter().cloned().collect();
            self.send_to_gateway(route);
        }
        self.forwards.insert(session, f);
        for msg in held {
            self.relayed(session, msg);
        }
        if !self.forwards.contains_key(&session) {
            return;
        }
        let resume = |have| DeliveryAck {
            session,
            have,
            resume: true,
        };
        match (side, told) {
            (Side::Source, _) if heard => self.send_to_gateway(resume(have)),
            (Side::Targets, Some(have)) => self.relay(peer, session, Relayed::Ack(resume(have))),
            _ => {}
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

#[cfg(test)]
mod tests {
    use cpns_wire::{ControlAction, DeliveryControl, PnId};

    use super::*;

    fn id(s: &str) -> EntityId {
        s.parse().expect("an entity id")
    }

    fn forward(side: Side) -> Forward {
        let route = DeliveryRoute {
            session: DeliveryId::from_bytes([4; 16]),
            pn_id: PnId::from_bytes([1; 16]),
            source: id("phone"),
            targets: vec![id("tv"), id("screen")],
            size: 1_000_000,
            chunk: super::super::delivery::CHUNK,
            from_server: side == Side::Targets,
            to_pn: None,
            to_server: side == Side::Source,
        };
        Forward::new(side, id("gw-2"), &route)
    }

    fn done(f: &Forward, target: &str) -> Relayed {
        Relayed::Done(DeliveryDone {
            session: f.session(),
            target: id(target),
            bytes: 0,
            result: DeliveryResult::Failed,
            items: Vec::new(),
        })
    }

    fn control(f: &Forward, action: ControlAction) -> Relayed {
        Relayed::Control(DeliveryControl {
            session: f.session(),
            action,
        })
    }

    #[test]
    fn a_source_side_kept_notes_what_the_targets_have_within_the_content() {
        let mut f = forward(Side::Source);
        let ack = |have| {
            Relayed::Ack(DeliveryAck {
                session: DeliveryId::from_bytes([4; 16]),
                have,
                resume: false,
            })
        };
        f.hold(ack(1_000_001));
        assert_eq!((f.have, f.heard), (0, false), "past the content: not taken");
        f.hold(ack(131_072));
        assert_eq!((f.have, f.heard), (131_072, true));
        assert_eq!(f.reach, 131_072 + u64::from(WINDOW));
        // Near the end, the window stops at the content's size.
        f.hold(ack(983_040));
        assert_eq!(f.reach, 1_000_000);
        assert!(f.held.is_empty(), "noted, not held");
    }

    #[test]
    fn a_source_side_kept_holds_each_open_targets_end_once() {
        let mut f = forward(Side::Source);
        f.hold(done(&f, "tv"));
        f.hold(done(&f, "tv"));
        f.hold(done(&f, "radio"));
        assert_eq!(f.held, [done(&f, "tv")]);
        f.hold(done(&f, "screen"));
        assert_eq!(f.held, [done(&f, "tv"), done(&f, "screen")]);
        // Nothing meant for the targets' side is held here.
        f.hold(control(&f, ControlAction::Stop));
        assert_eq!(f.held.len(), 2);
        // The forward's end is all that is left to tell.
        f.hold(Relayed::Ended("gone".into()));
        assert_eq!(f.held, [Relayed::Ended("gone".into())]);
        // And stays so: an end held after it is not one more to tell.
        f.hold(done(&f, "tv"));
        assert_eq!(f.held, [Relayed::Ended("gone".into())]);
    }

    #[test]
    fn a_targets_side_kept_holds_the_latest_control_and_drops_chunks() {
        let mut f = forward(Side::Targets);
        f.hold(control(&f, ControlAction::Pause));
        f.hold(control(&f, ControlAction::Resume));
        assert_eq!(f.held, [control(&f, ControlAction::Resume)]);
        f.hold(Relayed::Chunk(DeliveryChunk {
            session: f.session(),
            offset: 0,
            sealed: vec![0; 100],
            digest: None,
        }));
        f.hold(done(&f, "tv"));
        assert_eq!(f.held, [control(&f, ControlAction::Resume)]);
        assert_eq!(f.down, 0, "a chunk dropped was not relayed");
    }
}
