//! Delivery at the PN GW (004 §5.5.8; docs/services.md, "Delivery"): the server tells it each
//! session to relay (Delivery Route: its PN, its source, its targets, its size). A chunk is
//! taken only from the session's source, proven on its link, within the content's size and the
//! chunk size, and relayed as it came to every target linked now (the PN GW cannot read it: it
//! holds no session key). Acknowledgements are taken only from the session's targets; the
//! source is told the least of what every target has, which is the flow control (a source
//! sends at most a window past it, so the PN GW holds no more than that per link) and, after a
//! dropped link, the resumption. A target's end is relayed to the source; with every target's
//! end the route is gone, told as [`GatewayEvent::DeliveryRelayed`] with the bytes relayed.
//!
//! A session from outside the PN (`from_server`: an external entity sending through the server,
//! docs/services.md, "Delivery from outside a PN") comes the same way, except that its chunks
//! come on the WAN session, once for all its targets, and what they have and their ends go back
//! there. Such a route is not kept: it ends with the WAN session, whose server side sends it.
//!
//! Forwarding between PNs (docs/services.md, "Forwarding between PNs"): a session whose targets
//! are members of another PN this PN GW serves (`to_pn`) is relayed here as any other, its
//! targets proven members of that PN; one whose targets are behind another PN GW (`to_server`)
//! sends its source's chunks up the WAN session, once, and takes what the targets have and
//! their ends from there; at that PN GW it is a session `from_server`. A route `to_server` is
//! not kept in the store, but it outlives a lost WAN session for as long as the server keeps
//! the forward for this PN GW's next session (two flow timeouts): meanwhile the source's
//! chunks are dropped (it is told where to go on from when the server has the forward again)
//! and its last control is held. The server telling the route again says it has; past the two
//! flow timeouts without it, the source is told each target's part failed and the route goes.

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_wire::{
    Address, DeliveryAck, DeliveryChunk, DeliveryDone, DeliveryId, DeliveryRoute, EntityId,
    Envelope, PnId,
};

use super::{Gateway, GatewayEvent, GatewayOutput, LinkId};

/// Sessions a PN GW relays at once; a route past them is refused.
pub const MAX_ROUTES: usize = 256;
/// The bytes a sealed chunk adds to its content.
const OVERHEAD: u64 = cpns_crypto::CHUNK_OVERHEAD as u64;

/// A session the PN GW relays.
#[derive(Debug)]
pub(crate) struct Route {
    pn_id: PnId,
    source: EntityId,
    /// Each target not ended, with what it acknowledged (none before its first).
    targets: BTreeMap<EntityId, Option<u64>>,
    size: u64,
    chunk: u64,
    /// The least every target had when the source was last told.
    told: Option<u64>,
    /// Content bytes relayed to targets.
    relayed: u64,
    /// The source sends through the server, on the WAN session.
    from_server: bool,
    /// The PN the targets are members of: `pn_id`, or another this PN GW serves.
    targets_pn: PnId,
    /// The targets are behind another PN GW: chunks go up the WAN session, what they have
    /// and their ends come down it.
    to_server: bool,
    /// A route to the server whose WAN session was lost: since when (none: the server has
    /// it), and the source's last control meanwhile, told once the server has it again.
    lost: Option<(Instant, Option<cpns_wire::DeliveryControl>)>,
}

/// Who sends a delivery message on a link: the session's source, or one of its targets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Target,
}

/// The sessions the PN GW relays.
pub(super) type Routes = BTreeMap<DeliveryId, Route>;

impl Gateway {
    /// The server's route of a session to relay.
    pub(super) fn on_delivery_route(&mut self, env: &Envelope, m: DeliveryRoute) {
        if env.from != Address::Server {
            return;
        }
        if let Some(route) = self.deliveries.get_mut(&m.session) {
            // A route to the server told again after a lost WAN session: the server has the
            // forward again, and the control held meanwhile goes up.
            if route.to_server
                && m.to_server
                && let Some((_, held)) = route.lost.take()
                && let Some(control) = held
            {
                self.send_wan_notify(control);
            }
            return;
        }
        let served = |p: &PnId| self.pns.contains_key(p);
        let why = if !served(&m.pn_id) || m.to_pn.as_ref().is_some_and(|p| !served(p)) {
            Some("a PN this PN GW does not serve".to_string())
        } else if m.to_server && (m.from_server || m.to_pn.is_some()) {
            Some("a route from and to the server at once, or to two places".to_string())
        } else if self.deliveries.len() >= MAX_ROUTES {
            Some(format!(
                "no room for another delivery ({MAX_ROUTES} at once)"
            ))
        } else {
            None
        };
        if let Some(reason) = why {
            return self.event(GatewayEvent::DeliveryRefused {
                session: m.session,
                from: m.source,
                reason,
            });
        }
        if !m.from_server && !m.to_server {
            self.out.push_back(GatewayOutput::KeepRoute(m.clone()));
        }
        self.take_route(m);
    }

    fn take_route(&mut self, m: DeliveryRoute) {
        let route = Route {
            targets_pn: m.to_pn.unwrap_or(m.pn_id),
            to_server: m.to_server,
            pn_id: m.pn_id,
            source: m.source,
            targets: m.targets.into_iter().map(|t| (t, None)).collect(),
            size: m.size,
            chunk: u64::from(m.chunk),
            told: None,
            relayed: 0,
            from_server: m.from_server,
            lost: None,
        };
        self.deliveries.insert(m.session, route);
    }

    /// The delivery sessions this PN GW relays.
    pub fn relayed_deliveries(&self) -> Vec<DeliveryId> {
        self.deliveries.keys().copied().collect()
    }

    /// Takes the routes the local store kept (before any link): a restarted PN GW relays
    /// those sessions again as their PNEs resume them. Those past the bound, or of a PN it no
    /// longer serves, are left out.
    pub fn restore_routes(&mut self, kept: Vec<DeliveryRoute>) {
        for m in kept {
            if !m.from_server
                && !m.to_server
                && self.deliveries.len() < MAX_ROUTES
                && self.pns.contains_key(&m.pn_id)
                && m.to_pn.is_none_or(|p| self.pns.contains_key(&p))
            {
                self.take_route(m);
            }
        }
    }

    /// The proven PNE on `link`, if the session is relayed here and it is a member of the PN
    /// of the session's side it speaks for (the source's, or the targets' here): the sender.
    /// Otherwise the refusal is told, and `None`.
    fn delivery_sender(
        &mut self,
        link: LinkId,
        session: DeliveryId,
        role: Role,
    ) -> Option<EntityId> {
        let pne = self.deliveries.get(&session).and_then(|route| {
            // The targets of a route to the server are not here: no member here is one (an
            // acknowledgement or end from one is refused as not a target's).
            let pn = match role {
                Role::Source => &route.pn_id,
                Role::Target => &route.targets_pn,
            };
            self.proven_member_of(link, pn, "deliver").ok()
        });
        if pne.is_none() {
            let from = self.link_peer(link);
            let why = "no such session here, or not a proven member of its PN";
            self.delivery_refused(session, from, why);
        }
        pne
    }

    fn delivery_refused(&mut self, session: DeliveryId, from: EntityId, reason: &str) {
        self.event(GatewayEvent::DeliveryRefused {
            session,
            from,
            reason: reason.into(),
        });
    }

    /// A chunk from the source: relayed to every target linked now.
    pub(super) fn on_delivery_chunk(&mut self, link: LinkId, m: DeliveryChunk) {
        let Some(pne) = self.delivery_sender(link, m.session, Role::Source) else {
            return;
        };
        let Some(route) = self.deliveries.get(&m.session) else {
            return;
        };
        let why = if route.from_server || pne != route.source {
            Some("only the session's source sends its chunks")
        } else {
            chunk_fault(route, &m).or_else(|| past_window(route, &m))
        };
        if let Some(why) = why {
            return self.delivery_refused(m.session, pne, why);
        }
        self.relay_chunk(m);
    }

    /// A chunk of a session from outside the PN, from the server: relayed to every target
    /// linked now.
    pub(super) fn on_server_delivery_chunk(&mut self, m: DeliveryChunk) {
        let Some(route) = self.deliveries.get(&m.session) else {
            let why = "no such session here";
            return self.delivery_refused(m.session, self.cfg.id.clone(), why);
        };
        let why = if route.from_server {
            chunk_fault(route, &m)
        } else {
            Some("only the session's source sends its chunks")
        };
        if let Some(why) = why {
            let source = route.source.clone();
            return self.delivery_refused(m.session, source, why);
        }
        self.relay_chunk(m);
    }

    /// Service control from the session's source (004 §5.5.8.2): to every target linked now,
    /// or up the WAN session for targets behind another PN GW. From anyone else, refused.
    pub(super) fn on_delivery_control(&mut self, link: LinkId, m: cpns_wire::DeliveryControl) {
        let Some(pne) = self.delivery_sender(link, m.session, Role::Source) else {
            return;
        };
        let Some(route) = self.deliveries.get(&m.session) else {
            return;
        };
        if route.from_server || pne != route.source {
            let why = "only the session's source controls it";
            return self.delivery_refused(m.session, pne, why);
        }
        if route.to_server {
            if let Some(route) = self.deliveries.get_mut(&m.session)
                && let Some((_, held)) = &mut route.lost
            {
                *held = Some(m);
                return;
            }
            return self.send_wan_notify(m);
        }
        let stop = m.action == cpns_wire::ControlAction::Stop;
        let session = m.session;
        self.tell_targets(session, m);
        if stop {
            self.stopped_without(session);
        }
    }

    /// A session its source stopped: each target linked now was told, and ends its part; one
    /// not linked is not waited for (it may never come back): the source is told its part
    /// ended `stopped`, and with no target left the route goes, so nothing is held here.
    fn stopped_without(&mut self, session: DeliveryId) {
        let Some(route) = self.deliveries.get(&session) else {
            return;
        };
        let away: Vec<(EntityId, u64)> = route
            .targets
            .iter()
            .filter(|(t, _)| self.proven_link_of(t).is_none())
            .map(|(t, have)| (t.clone(), have.unwrap_or(0)))
            .collect();
        let source = route.source.clone();
        for (target, bytes) in away {
            if let Some(r) = self.deliveries.get_mut(&session) {
                r.targets.remove(&target);
            }
            if let Some(l) = self.proven_link_of(&source) {
                let done = DeliveryDone {
                    session,
                    target,
                    bytes,
                    result: cpns_wire::DeliveryResult::Stopped,
                    items: Vec::new(),
                };
                self.send_pan_notify(l, done);
            }
        }
        if self
            .deliveries
            .get(&session)
            .is_some_and(|r| r.targets.is_empty())
        {
            self.route_done(session);
        }
    }

    /// Service control of a session from outside the PN (or forwarded to it), from the server:
    /// to every target linked now.
    pub(super) fn on_server_delivery_control(&mut self, m: cpns_wire::DeliveryControl) {
        match self.deliveries.get(&m.session) {
            Some(route) if route.from_server => self.tell_targets(m.session, m),
            _ => {
                let why = "control, from the server, of a session it does not send here";
                self.delivery_refused(m.session, self.cfg.id.clone(), why);
            }
        }
    }

    /// `body` to every target of `session` linked now.
    fn tell_targets(&mut self, session: DeliveryId, body: impl Into<cpns_wire::Body> + Clone) {
        let Some(route) = self.deliveries.get(&session) else {
            return;
        };
        let to: Vec<LinkId> = route
            .targets
            .keys()
            .filter_map(|t| self.proven_link_of(t))
            .collect();
        for l in to {
            self.send_pan_notify(l, body.clone());
        }
    }

    /// A chunk the session's source sent, checked: to every target linked now, or once up
    /// the WAN session for targets behind another PN GW.
    fn relay_chunk(&mut self, m: DeliveryChunk) {
        let Some(route) = self.deliveries.get_mut(&m.session) else {
            return;
        };
        let len = (m.sealed.len() as u64).saturating_sub(OVERHEAD);
        if route.to_server {
            // With the WAN session lost, no chunk goes up: the source sends it again from
            // what the targets have once the server has the forward again.
            if route.lost.is_some() {
                return;
            }
            route.relayed = route.relayed.saturating_add(len);
            return self.send_wan_notify(m);
        }
        let Some(route) = self.deliveries.get(&m.session) else {
            return;
        };
        let to: Vec<LinkId> = route
            .targets
            .keys()
            .filter_map(|t| self.proven_link_of(t))
            .collect();
        if let Some(route) = self.deliveries.get_mut(&m.session) {
            route.relayed = route.relayed.saturating_add(len * to.len() as u64);
        }
        // Each target but the last gets a copy; the last takes the chunk itself.
        if let Some((last, others)) = to.split_last() {
            for l in others {
                self.send_pan_notify(*l, m.clone());
            }
            self.send_pan_notify(*last, m);
        }
    }

    /// A target's acknowledgement: the source is told the least of every target's.
    pub(super) fn on_delivery_ack(&mut self, link: LinkId, m: DeliveryAck) {
        let Some(pne) = self.delivery_sender(link, m.session, Role::Target) else {
            return;
        };
        let Some(route) = self.deliveries.get_mut(&m.session) else {
            return;
        };
        let (size, source) = (route.size, route.source.clone());
        let Some(have) = route.targets.get_mut(&pne) else {
            return self.delivery_refused(m.session, pne, "only a target acknowledges a session");
        };
        if m.have > size {
            return self.delivery_refused(
                m.session,
                pne,
                "an acknowledgement past the content's size",
            );
        }
        *have = Some(m.have);
        self.tell_source(m.session, m.resume, &source);
    }

    /// What the targets behind another PN GW have (the least of every one's, from the server)
    /// of a session sent from here: the source is told.
    pub(super) fn on_server_delivery_ack(&mut self, m: DeliveryAck) {
        let Some(route) = self.deliveries.get_mut(&m.session) else {
            let why = "no such session here";
            return self.delivery_refused(m.session, self.cfg.id.clone(), why);
        };
        if !route.to_server || m.have > route.size {
            let why = "an acknowledgement from the server of a session not sent to it, or past \
                       the content's size";
            return self.delivery_refused(m.session, self.cfg.id.clone(), why);
        }
        for have in route.targets.values_mut() {
            *have = Some(m.have);
        }
        let source = route.source.clone();
        self.tell_source(m.session, m.resume, &source);
    }

    /// The end of a target behind another PN GW, from the server: told to the source; with
    /// every target's end, the route goes.
    pub(super) fn on_server_delivery_done(&mut self, m: DeliveryDone) {
        let Some(route) = self.deliveries.get_mut(&m.session) else {
            let why = "no such session here";
            return self.delivery_refused(m.session, self.cfg.id.clone(), why);
        };
        if !route.to_server || route.targets.remove(&m.target).is_none() {
            let why = "the end, from the server, of a target not sent to it";
            return self.delivery_refused(m.session, self.cfg.id.clone(), why);
        }
        let (source, ended) = (route.source.clone(), route.targets.is_empty());
        if let Some(l) = self.proven_link_of(&source) {
            self.send_pan_notify(l, m.clone());
        }
        if ended {
            self.route_ended(m.session);
        } else {
            self.tell_source(m.session, false, &source);
        }
    }

    /// Every target of a route ended: it goes, from the store too.
    fn route_done(&mut self, session: DeliveryId) {
        if self.deliveries.contains_key(&session) {
            self.out.push_back(GatewayOutput::ForgetRoute(session));
        }
        self.route_ended(session);
    }

    /// Every target of a route not kept ended: it goes.
    fn route_ended(&mut self, session: DeliveryId) {
        if let Some(r) = self.deliveries.remove(&session) {
            self.event(GatewayEvent::DeliveryRelayed {
                session,
                source: r.source,
                bytes: r.relayed,
            });
        }
    }

    /// Tells the source the least every target has, once each acknowledged, when it moved or
    /// a target starts again.
    fn tell_source(&mut self, session: DeliveryId, resume: bool, source: &EntityId) {
        let Some(route) = self.deliveries.get_mut(&session) else {
            return;
        };
        let Some(least) = route
            .targets
            .values()
            .copied()
            .collect::<Option<Vec<u64>>>()
        else {
            return;
        };
        let Some(least) = least.into_iter().min() else {
            return;
        };
        if route.told == Some(least) && !resume {
            return;
        }
        route.told = Some(least);
        let ack = DeliveryAck {
            session,
            have: least,
            resume,
        };
        if route.from_server {
            self.send_wan_notify(ack);
        } else if let Some(l) = self.proven_link_of(source) {
            self.send_pan_notify(l, ack);
        }
    }

    /// A source's link is proven (again): what every target has is told it again, to resume
    /// from (the targets may have said it while the source was away).
    pub(super) fn delivery_source_linked(&mut self, pne: &EntityId) {
        let sessions: Vec<DeliveryId> = self
            .deliveries
            .iter()
            .filter(|(_, r)| !r.from_server && r.source == *pne && r.told.is_some())
            .map(|(s, _)| *s)
            .collect();
        for session in sessions {
            if let Some(route) = self.deliveries.get_mut(&session) {
                route.told = None;
            }
            self.tell_source(session, true, pne);
        }
    }

    /// A target's end: relayed to the source; with every target's end, the route goes.
    pub(super) fn on_delivery_done(&mut self, link: LinkId, m: DeliveryDone) {
        let Some(pne) = self.delivery_sender(link, m.session, Role::Target) else {
            return;
        };
        let Some(route) = self.deliveries.get_mut(&m.session) else {
            return;
        };
        if m.target != pne || route.targets.remove(&pne).is_none() {
            return self.delivery_refused(m.session, pne, "a target ends only its own part");
        }
        let source = route.source.clone();
        let ended = route.targets.is_empty();
        if route.from_server {
            self.send_wan_notify(m.clone());
        } else if let Some(l) = self.proven_link_of(&source) {
            self.send_pan_notify(l, m.clone());
        }
        if ended {
            return self.route_done(m.session);
        }
        // The ones left may all be further now.
        self.tell_source(m.session, false, &source);
    }

    /// The WAN session is lost: the sessions from outside the PN end with it (their source was
    /// on it; the server tells the route again when it goes on). Those sent to another PN GW
    /// wait for the server to have them again, from `now` (a route lost already keeps the time
    /// of its first loss).
    pub(super) fn delivery_wan_lost(&mut self, now: Instant) {
        let gone: Vec<DeliveryId> = self
            .deliveries
            .iter()
            .filter(|(_, r)| r.from_server)
            .map(|(s, _)| *s)
            .collect();
        for session in gone {
            self.route_ended(session);
        }
        for route in self.deliveries.values_mut().filter(|r| r.to_server) {
            route.lost.get_or_insert((now, None));
        }
    }

    /// When the first route to the server lost with a WAN session is given up.
    pub(super) fn delivery_deadline(&self) -> Option<Instant> {
        let grace = self.cfg.timeouts.flow * 2;
        self.deliveries
            .values()
            .filter_map(|r| r.lost.as_ref().map(|(at, _)| *at + grace))
            .min()
    }

    /// Routes to the server the server did not tell again within two flow timeouts of their
    /// loss (it keeps a forward no longer): the source of each is told every target's part
    /// failed, at what it had, and the route goes.
    pub(super) fn delivery_timeouts(&mut self, now: Instant) {
        let grace = self.cfg.timeouts.flow * 2;
        let gone: Vec<DeliveryId> = self
            .deliveries
            .iter()
            .filter(|(_, r)| r.lost.as_ref().is_some_and(|(at, _)| *at + grace <= now))
            .map(|(s, _)| *s)
            .collect();
        for session in gone {
            let Some(r) = self.deliveries.get(&session) else {
                continue;
            };
            let link = self.proven_link_of(&r.source);
            let ends: Vec<DeliveryDone> = r
                .targets
                .iter()
                .map(|(target, have)| DeliveryDone {
                    session,
                    target: target.clone(),
                    bytes: have.unwrap_or(0),
                    result: cpns_wire::DeliveryResult::Failed,
                    items: Vec::new(),
                })
                .collect();
            for done in ends {
                if let Some(l) = link {
                    self.send_pan_notify(l, done);
                }
            }
            self.route_ended(session);
        }
    }

    /// The PNE a link speaks as, for an event.
    fn link_peer(&self, link: LinkId) -> EntityId {
        self.links
            .get(&link)
            .and_then(|l| l.peer.clone())
            .unwrap_or_else(|| self.cfg.id.clone())
    }
}

/// What is wrong with chunk `m` of `route`, if anything: larger than the session's chunk,
/// empty, or past the content's size.
/// A source's chunk that ends past the window its targets allowed it (what it was last told
/// they all have, plus the session's window): a source that floods is held to its window here,
/// so what the PN GW relays for it (to its targets' links, or up its WAN session) stays within
/// one window. A source resuming past what this PN GW knows (after the PN GW restarted) is
/// told where the targets are as they say it again, and sends again from there.
fn past_window(route: &Route, m: &DeliveryChunk) -> Option<&'static str> {
    let len = (m.sealed.len() as u64).saturating_sub(OVERHEAD);
    let allowed = route
        .told
        .unwrap_or(0)
        .saturating_add(u64::from(crate::server::delivery::WINDOW));
    (m.offset.saturating_add(len) > allowed)
        .then_some("a chunk past the window its targets allowed the source")
}

fn chunk_fault(route: &Route, m: &DeliveryChunk) -> Option<&'static str> {
    let len = (m.sealed.len() as u64).saturating_sub(OVERHEAD);
    if m.sealed.len() as u64 > route.chunk + OVERHEAD || len == 0 {
        Some("a chunk larger than the session's chunk size, or empty")
    } else if m.offset.checked_add(len).is_none_or(|end| end > route.size) {
        Some("a chunk past the content's size")
    } else {
        None
    }
}
