//! The PN GW as its PNEs' proxy for capabilities and status (004 §5.5.1, §5.5.3;
//! docs/device-status.md, "Who holds what").
//!
//! - A PNE on its proven link that is a member of one of this PN GW's PNs reports its own
//!   capabilities (Device Capabilities Update) and status (Status Report); the PN GW checks
//!   them, holds each PNE to its own rate, and relays them to the server in the PNE's name.
//! - The PN GW reports its PNEs' presence: a member on a proven link is `online`; when its
//!   link closes, or stays silent past `pan_offline_after` (the PNE sends Heartbeats), it is
//!   `offline`. What changed is reported once the flow that changed it is done
//!   ([`Gateway::sync_presence`]); on a new WAN session every member present is reported again.
//! - Status queries and subscriptions of a PNE are relayed as they are; the server's
//!   notifications to a PNE go down its link (the relay, `relay_down`).
//! - The server's Capabilities Query is answered for the PN GW itself, or relayed to the PNE.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cpns_wire::{
    CapabilitiesAnswer, CapabilitiesQuery, DeviceCapabilities, DeviceCapabilitiesUpdate, EntityId,
    Envelope, ErrorCode, Status, StatusEntry, StatusReport,
};

use super::outcome::Asked;
use super::{Gateway, LinkId, Outcome};
use crate::rate::{TokenBucket, retry_in};
use crate::{CommandError, CommandId, Flow};

/// Per-PNE bounds of what a PN GW relays for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PneReportLimits {
    /// Capabilities updates: burst.
    pub caps_burst: u32,
    /// Capabilities updates: one more every.
    pub caps_every: Duration,
    /// Status reports: burst.
    pub status_burst: u32,
    /// Status reports: one more every.
    pub status_every: Duration,
}

impl Default for PneReportLimits {
    fn default() -> Self {
        Self {
            caps_burst: 5,
            caps_every: Duration::from_secs(2),
            status_burst: 5,
            status_every: Duration::from_secs(1),
        }
    }
}

/// What the PN GW tracks of its PNEs' presence and reports.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// PNEs reported online to the server on this WAN session.
    online: BTreeSet<EntityId>,
    /// PNEs whose presence may have changed since the last sync.
    dirty: BTreeSet<EntityId>,
    /// When each link was last heard.
    heard: BTreeMap<LinkId, Instant>,
    caps: BTreeMap<EntityId, TokenBucket>,
    status: BTreeMap<EntityId, TokenBucket>,
}

impl Presence {
    pub(super) fn mark(&mut self, pne: &EntityId) {
        self.dirty.insert(pne.clone());
    }

    pub(super) fn heard(&mut self, link: LinkId, now: Instant) {
        self.heard.insert(link, now);
    }

    pub(super) fn link_gone(&mut self, link: LinkId) {
        self.heard.remove(&link);
    }

    /// A new WAN session: the server knows nothing this PN GW reported before.
    pub(super) fn wan_lost(&mut self) {
        let online = std::mem::take(&mut self.online);
        self.dirty.extend(online);
    }

    /// Buckets of PNEs gone, and full ones, are dropped.
    fn forget(&mut self, pne: &EntityId) {
        self.caps.remove(pne);
        self.status.remove(pne);
    }
}

impl Gateway {
    /// The PNE proven on `link` if it is a member of one of this PN GW's PNs.
    fn proven_member(&self, link: LinkId) -> Result<EntityId, &'static str> {
        let l = self.links.get(&link).ok_or("no such link")?;
        let pne = l
            .peer
            .clone()
            .filter(|_| l.proven)
            .ok_or("prove the identity first (PN GW authentication)")?;
        if !self.is_member(&pne) {
            return Err("not a member of a PN of this PN GW");
        }
        Ok(pne)
    }

    fn is_member(&self, pne: &EntityId) -> bool {
        self.pns
            .values()
            .any(|p| p.state.inventory.members.iter().any(|m| &m.pne_id == pne))
    }

    /// A member PNE's own capabilities (004 §5.5.1), relayed to the server in its name.
    pub(super) fn on_pne_capabilities(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: DeviceCapabilitiesUpdate,
    ) {
        let pne = match self.proven_member(link) {
            Ok(p) => p,
            Err(why) => return self.reject_pan(link, env, ErrorCode::Forbidden, why),
        };
        if m.entity.as_ref().is_some_and(|e| e != &pne) {
            return self.reject_pan(
                link,
                env,
                ErrorCode::Forbidden,
                "a PNE reports only its own capabilities",
            );
        }
        if let Err(why) = m.capabilities.check() {
            let reason = format!("capabilities: {why}");
            return self.reject_pan(link, env, ErrorCode::BadRequest, &reason);
        }
        let limits = self.cfg.pne_limits;
        let bucket = self
            .presence
            .caps
            .entry(pne.clone())
            .or_insert_with(|| TokenBucket::new(now, limits.caps_burst, limits.caps_every));
        if let Err(wait) = bucket.take(now) {
            let reason = retry_in("capabilities updates", wait);
            return self.reject_pan(link, env, ErrorCode::RateLimited, &reason);
        }
        // The local inventory answers with a member's capabilities of record (004 §5.5.10):
        // the latest it reported, not those it joined with. Kept in memory; the next write of
        // the PN stores them.
        for pn in self.pns.values_mut() {
            let members = pn.state.inventory.members.iter_mut();
            for member in members.filter(|x| x.pne_id == pne) {
                member.capabilities = Some(m.capabilities.clone());
            }
        }
        let update = DeviceCapabilitiesUpdate {
            capabilities: m.capabilities,
            entity: Some(pne.clone()),
        };
        self.on_pne_request_for_server(now, link, env, update);
    }

    /// A member PNE's own status (busy, a custom one), relayed to the server in its name.
    pub(super) fn on_pne_status_report(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: StatusReport,
    ) {
        let pne = match self.proven_member(link) {
            Ok(p) => p,
            Err(why) => return self.reject_pan(link, env, ErrorCode::Forbidden, why),
        };
        if m.entries.len() != 1 || m.entries[0].entity != pne {
            return self.reject_pan(
                link,
                env,
                ErrorCode::Forbidden,
                "a PNE reports its own status, one entry",
            );
        }
        if m.entries[0].status == Status::Offline {
            return self.reject_pan(
                link,
                env,
                ErrorCode::BadRequest,
                "a PNE that speaks is not offline: its PN GW says when it is",
            );
        }
        let limits = self.cfg.pne_limits;
        let bucket = self
            .presence
            .status
            .entry(pne)
            .or_insert_with(|| TokenBucket::new(now, limits.status_burst, limits.status_every));
        if let Err(wait) = bucket.take(now) {
            let reason = retry_in("status reports", wait);
            return self.reject_pan(link, env, ErrorCode::RateLimited, &reason);
        }
        self.on_pne_request_for_server(now, link, env, m);
    }

    /// The server asks for an entity's capabilities: this PN GW's own, answered here; a PNE's,
    /// relayed to it (`relay_down`, by the envelope's addressee).
    pub(super) fn on_capabilities_query(&mut self, env: &Envelope, q: CapabilitiesQuery) {
        if q.entity != self.cfg.id {
            let e = cpns_wire::ErrorBody::new(
                ErrorCode::NotFound,
                format!(
                    "{} is not this PN GW; address the query to the PNE",
                    q.entity
                ),
            );
            return self.send_wan_response(env.msg_id, e);
        }
        let answer = CapabilitiesAnswer {
            entity: self.cfg.id.clone(),
            capabilities: self.cfg.capabilities.clone(),
        };
        self.send_wan_response(env.msg_id, answer);
    }

    /// The PN GW's own capabilities.
    pub fn capabilities(&self) -> &DeviceCapabilities {
        &self.cfg.capabilities
    }

    /// The PN GW's own capabilities changed (`cpns caps set` on a running PN GW): reported to
    /// the server at once (004 §5.5.1). Completes with [`Outcome::Capabilities`]: once the
    /// server confirmed them, or at once without a WAN session (the next connection set-up
    /// reports them, 002 §B.1.1.2 step 12).
    pub fn set_capabilities(
        &mut self,
        now: Instant,
        caps: DeviceCapabilities,
    ) -> Result<CommandId, CommandError> {
        caps.check().map_err(CommandError::InvalidCapabilities)?;
        self.cfg.capabilities = caps.clone();
        let id = self.commands.next();
        let update = DeviceCapabilitiesUpdate {
            capabilities: caps,
            entity: None,
        };
        match self
            .wan_ready()
            .then(|| self.send_wan_request(update))
            .flatten()
        {
            Some(msg) => self.wait_owner(now, msg, Asked::Capabilities, id),
            None => {
                let kept = Outcome::Capabilities { reported: false };
                self.complete(id, Flow::StatusManagement, Ok(kept));
            }
        }
        Ok(id)
    }

    /// Subscribes this PN GW itself to the status of `entities` (none: every device of its
    /// user), 004 §5.5.3.2. Completes with [`Outcome::Subscribed`]; the notifications come as
    /// [`super::GatewayEvent::StatusNotified`].
    pub fn subscribe_status(
        &mut self,
        now: Instant,
        entities: Vec<EntityId>,
        policy: cpns_wire::StatusPolicy,
    ) -> Result<CommandId, CommandError> {
        if !self.wan_ready() {
            return Err(CommandError::NoServerSession);
        }
        let req = cpns_wire::StatusSubscribe {
            request_id: cpns_wire::RequestId(self.rng.u64()),
            entities,
            policy,
        };
        let msg = self.send_wan_request(req).ok_or(CommandError::TooLarge)?;
        let id = self.commands.next();
        self.wait_owner(now, msg, Asked::Subscribe, id);
        Ok(id)
    }

    /// Reports this PN GW's own status (busy, online, or custom with `label`) to the server.
    /// Completes with [`Outcome::StatusReported`].
    pub fn set_status(
        &mut self,
        now: Instant,
        status: Status,
        label: Option<String>,
    ) -> Result<CommandId, CommandError> {
        if !self.wan_ready() {
            return Err(CommandError::NoServerSession);
        }
        let mut entry = StatusEntry::new(self.cfg.id.clone(), status);
        entry.label = label;
        let report = StatusReport {
            entries: vec![entry],
        };
        let msg = self
            .send_wan_request(report)
            .ok_or(CommandError::TooLarge)?;
        let id = self.commands.next();
        self.wait_owner(now, msg, Asked::Status, id);
        Ok(id)
    }

    /// Reports what changed of the PNEs' presence since the last sync: a member PNE on a
    /// proven link is online, any other that was reported online is offline. Called at the
    /// end of every input.
    pub(super) fn sync_presence(&mut self) {
        if self.presence.dirty.is_empty() || !self.wan_ready() || !self.cfg.report_presence {
            return;
        }
        let dirty = std::mem::take(&mut self.presence.dirty);
        let mut entries = Vec::new();
        for pne in dirty {
            let here = self
                .routes
                .get(&pne)
                .and_then(|l| self.links.get(l))
                .is_some_and(|l| l.proven && l.peer.as_ref() == Some(&pne))
                && self.is_member(&pne);
            let was = self.presence.online.contains(&pne);
            if here && !was {
                self.presence.online.insert(pne.clone());
                entries.push(StatusEntry::new(pne, Status::Online));
            } else if !here && was {
                self.presence.online.remove(&pne);
                self.presence.forget(&pne);
                entries.push(StatusEntry::new(pne, Status::Offline));
            }
        }
        for chunk in entries.chunks(crate::server::MAX_ENTRIES) {
            let report = StatusReport {
                entries: chunk.to_vec(),
            };
            self.send_wan_request(report);
        }
    }

    /// Every member on a proven link, to be reported (a new WAN session).
    pub(super) fn presence_wan_ready(&mut self) {
        self.presence.wan_lost();
        let proven: Vec<EntityId> = self
            .links
            .values()
            .filter(|l| l.proven)
            .filter_map(|l| l.peer.clone())
            .collect();
        self.presence.dirty.extend(proven);
    }

    /// Links silent past the bound are closed: their PNEs are gone (docs/device-status.md,
    /// "Reports").
    pub(super) fn silence_timeouts(&mut self, now: Instant) {
        let Some(after) = self.cfg.pan_offline_after else {
            return;
        };
        let silent: Vec<LinkId> = self
            .presence
            .heard
            .iter()
            .filter(|(_, at)| **at + after <= now)
            .map(|(l, _)| *l)
            .collect();
        for link in silent {
            self.reject_link(link, &format!("silent for {} s", after.as_secs()));
            self.link_closed(now, link);
        }
    }

    /// When the next link falls silent past the bound.
    pub(super) fn silence_deadline(&self) -> Option<Instant> {
        let after = self.cfg.pan_offline_after?;
        self.presence.heard.values().min().map(|at| *at + after)
    }
}
