//! The server's side of device capabilities and status management (004 §5.5.1, §5.5.3;
//! docs/device-status.md): capabilities and status reports from a PN GW about itself and the
//! PNEs of its PNs, status queries, subscriptions, heartbeats and the notifications the hub
//! hands back.
//!
//! A PN GW speaks for itself and for the PNEs of its own PNs only: a report, query or
//! subscription naming any other PNE is refused `forbidden` and changes nothing. Which PNEs it
//! serves is read from the store once per PNE and kept for the session (a PNE leaving one of
//! its PNs on this session is forgotten). Each entity's reports are rate-limited on their own,
//! so one busy device is refused `rate_limited` while the others go on.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cpns_wire::{
    Address, DeviceCapabilities, EntityId, Envelope, ErrorBody, ErrorCode, Status, StatusAck,
    StatusAnswer, StatusEntry, StatusNotification, StatusQuery, StatusReport, StatusSubscribe,
    StatusSubscribed, StatusUnsubscribe,
};

use super::connect::Gw;
use super::{Load, Parked, Persisted, Publish, ServerEffect, ServerSession, StatusesLoaded};
use crate::StoreFailure;
use crate::rate::{TokenBucket, retry_in};
use crate::status::{EntityState, MAX_WATCHED, Policy};

/// Most entries of one status report.
pub const MAX_ENTRIES: usize = 64;
/// Most bytes of a custom status's label.
pub const MAX_LABEL: usize = 64;
/// Most status subscriptions one subscriber holds.
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Most PNEs a session remembers as served, and devices it keeps a rate bucket for; beyond,
/// the oldest knowledge is dropped and read again when needed.
const MAX_TRACKED: usize = 4096;

/// Per-device bounds of the reports a session takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportLimits {
    /// Capabilities updates: burst.
    pub caps_burst: u32,
    /// Capabilities updates: one more every.
    pub caps_every: Duration,
    /// Status entries: burst.
    pub status_burst: u32,
    /// Status entries: one more every.
    pub status_every: Duration,
    /// Usage reports: burst.
    pub usage_burst: u32,
    /// Usage reports: one more every.
    pub usage_every: Duration,
    /// Directory requests (publish, unpublish, discover, retrieve; 004 §5.5.5): burst.
    pub directory_burst: u32,
    /// Directory requests: one more every.
    pub directory_every: Duration,
}

impl Default for ReportLimits {
    fn default() -> Self {
        Self {
            caps_burst: 5,
            caps_every: Duration::from_secs(2),
            status_burst: 10,
            status_every: Duration::from_millis(500),
            usage_burst: 10,
            usage_every: Duration::from_secs(6),
            directory_burst: 20,
            directory_every: Duration::from_millis(100),
        }
    }
}

/// A status the session records; the driver stamps the time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewStatus {
    /// The entity.
    pub entity: EntityId,
    /// Its status.
    pub status: Status,
    /// The label of a custom status.
    pub label: Option<String>,
    /// The PN GW reporting it, for a PNE.
    pub reported_by: Option<EntityId>,
}

/// What a session knows of the devices it reports for.
#[derive(Debug, Default)]
pub(super) struct Reporting {
    /// PNEs the store showed to be members of this PN GW's PNs.
    served: BTreeSet<EntityId>,
    /// Rate buckets of capabilities updates, by entity.
    caps: std::collections::BTreeMap<EntityId, TokenBucket>,
    /// Rate buckets of status entries, by entity.
    status: std::collections::BTreeMap<EntityId, TokenBucket>,
    /// Rate buckets of usage reports, by PNE.
    usage: std::collections::BTreeMap<EntityId, TokenBucket>,
    /// Rate buckets of directory requests, by PNE.
    directory: std::collections::BTreeMap<EntityId, TokenBucket>,
}

impl Reporting {
    /// Whether it holds nothing: an idle session gives it back.
    pub(super) fn is_empty(&self) -> bool {
        self.served.is_empty()
            && self.caps.is_empty()
            && self.status.is_empty()
            && self.usage.is_empty()
            && self.directory.is_empty()
    }

    /// Takes a usage report token of `pne`.
    pub(super) fn take_usage(
        &mut self,
        now: Instant,
        pne: &EntityId,
        limits: ReportLimits,
    ) -> Result<(), Duration> {
        take(
            &mut self.usage,
            now,
            pne,
            limits.usage_burst,
            limits.usage_every,
        )
    }

    /// Takes a directory request token of `pne`.
    pub(super) fn take_directory(
        &mut self,
        now: Instant,
        pne: &EntityId,
        limits: ReportLimits,
    ) -> Result<(), Duration> {
        take(
            &mut self.directory,
            now,
            pne,
            limits.directory_burst,
            limits.directory_every,
        )
    }

    /// Forgets which PNEs are served (members left a PN of this PN GW, or it released one):
    /// the store is read again when they are next named.
    pub(super) fn forget_served(&mut self) {
        self.served = BTreeSet::new();
    }
}

/// Takes one token of `entity`'s bucket in `buckets`.
fn take(
    buckets: &mut std::collections::BTreeMap<EntityId, TokenBucket>,
    now: Instant,
    entity: &EntityId,
    burst: u32,
    every: Duration,
) -> Result<(), Duration> {
    if buckets.len() >= MAX_TRACKED && !buckets.contains_key(entity) {
        // Full buckets hold nothing worth keeping.
        buckets.retain(|_, b| !b.is_full(now));
        if buckets.len() >= MAX_TRACKED {
            buckets.pop_first();
        }
    }
    buckets
        .entry(entity.clone())
        .or_insert_with(|| TokenBucket::new(now, burst, every))
        .take(now)
}

/// What waits for the store's word on which PNEs this PN GW serves.
#[derive(Debug)]
pub(super) enum NeedsServed {
    Caps {
        req_msg: u64,
        to: Address,
        entity: EntityId,
        caps: Box<DeviceCapabilities>,
    },
    Report {
        req_msg: u64,
        to: Address,
        changes: Vec<NewStatus>,
    },
    Query {
        req_msg: u64,
        asker: EntityId,
        query: StatusQuery,
    },
    Subscribe {
        req_msg: u64,
        subscriber: EntityId,
        req: Box<StatusSubscribe>,
    },
    Unsubscribe {
        req_msg: u64,
        subscriber: EntityId,
        id: u64,
    },
}

impl NeedsServed {
    /// The request it answers.
    pub(super) fn req_msg(&self) -> u64 {
        match self {
            NeedsServed::Caps { req_msg, .. }
            | NeedsServed::Report { req_msg, .. }
            | NeedsServed::Query { req_msg, .. }
            | NeedsServed::Subscribe { req_msg, .. }
            | NeedsServed::Unsubscribe { req_msg, .. } => *req_msg,
        }
    }

    /// The PNEs it names.
    fn pnes(&self, gw: &EntityId) -> Vec<EntityId> {
        let mut out: Vec<EntityId> = match self {
            NeedsServed::Caps { entity, .. } => vec![entity.clone()],
            NeedsServed::Report { changes, .. } => {
                changes.iter().map(|c| c.entity.clone()).collect()
            }
            NeedsServed::Query { asker, .. } => vec![asker.clone()],
            NeedsServed::Subscribe { subscriber, .. }
            | NeedsServed::Unsubscribe { subscriber, .. } => vec![subscriber.clone()],
        };
        out.retain(|e| e != gw);
        out.sort();
        out.dedup();
        out
    }
}

/// A status query or subscription waiting for the statuses it reads.
#[derive(Debug)]
pub(super) enum StatusRead {
    Query {
        req_msg: u64,
        asker: EntityId,
        query: StatusQuery,
    },
    Subscribe {
        req_msg: u64,
        subscriber: EntityId,
        req: Box<StatusSubscribe>,
    },
}

impl StatusRead {
    /// The request it answers.
    pub(super) fn req_msg(&self) -> u64 {
        self.parts().0
    }

    /// The request's message, who asks, and the entities it names.
    fn parts(&self) -> (u64, &EntityId, &[EntityId]) {
        match self {
            StatusRead::Query {
                req_msg,
                asker,
                query,
            } => (*req_msg, asker, &query.entities),
            StatusRead::Subscribe {
                req_msg,
                subscriber,
                req,
            } => (*req_msg, subscriber, &req.entities),
        }
    }
}

impl ServerSession {
    /// What the session knows of the devices it reports for, made when first needed.
    pub(super) fn reporting(&mut self) -> &mut Reporting {
        self.reporting.get_or_insert_with(Box::default)
    }

    /// Whether `pne` is known to be served by this session's PN GW.
    fn served(&self, pne: &EntityId) -> bool {
        self.reporting
            .as_ref()
            .is_some_and(|r| r.served.contains(pne))
    }

    /// The entity a relayed request speaks for: the PN GW itself, or the PNE it names as the
    /// sender.
    fn speaker(gw: &Gw, env: &Envelope) -> EntityId {
        match &env.from {
            Address::Entity(e) => e.clone(),
            Address::Server => gw.id.clone(),
        }
    }

    /// Device Capabilities Update (002 §B.1.1.2 step 12 for the PN GW's own; 004 §5.5.1 for a
    /// PNE's, relayed).
    pub(super) fn on_capabilities_update(
        &mut self,
        now: Instant,
        gw: &Gw,
        env: &Envelope,
        m: cpns_wire::DeviceCapabilitiesUpdate,
    ) {
        if let Err(why) = m.capabilities.check() {
            return self.reject(env, ErrorCode::BadRequest, format!("capabilities: {why}"));
        }
        let speaker = Self::speaker(gw, env);
        let entity = m.entity.unwrap_or_else(|| speaker.clone());
        if speaker != gw.id && entity != speaker {
            return self.reject(
                env,
                ErrorCode::Forbidden,
                "a PNE reports only its own capabilities",
            );
        }
        let limits = self.cfg.report_limits;
        let bucket = take(
            &mut self.reporting().caps,
            now,
            &entity,
            limits.caps_burst,
            limits.caps_every,
        );
        if let Err(wait) = bucket {
            return self.reject(
                env,
                ErrorCode::RateLimited,
                retry_in("capabilities updates", wait),
            );
        }
        if entity == gw.id {
            return self.on_capabilities(gw, env, m.capabilities);
        }
        self.with_served(
            gw,
            NeedsServed::Caps {
                req_msg: env.msg_id,
                to: env.from.clone(),
                entity,
                caps: Box::new(m.capabilities),
            },
        );
    }

    /// Status Report from the PN GW: its own status and its PNEs'.
    pub(super) fn on_status_report(
        &mut self,
        now: Instant,
        gw: &Gw,
        env: &Envelope,
        m: StatusReport,
    ) {
        if m.entries.is_empty() || m.entries.len() > MAX_ENTRIES {
            return self.reject(
                env,
                ErrorCode::BadRequest,
                format!("a status report holds 1 to {MAX_ENTRIES} entries"),
            );
        }
        let speaker = Self::speaker(gw, env);
        if speaker != gw.id && m.entries.iter().any(|e| e.entity != speaker) {
            return self.reject(
                env,
                ErrorCode::Forbidden,
                "a PNE reports only its own status",
            );
        }
        let mut changes = Vec::with_capacity(m.entries.len());
        for e in m.entries {
            if let Err(why) = check_entry(&e) {
                return self.reject(env, ErrorCode::BadRequest, format!("{}: {why}", e.entity));
            }
            changes.push(NewStatus {
                reported_by: (e.entity != gw.id).then(|| gw.id.clone()),
                entity: e.entity,
                status: e.status,
                label: e.label,
            });
        }
        let limits = self.cfg.report_limits;
        for c in &changes {
            let bucket = take(
                &mut self.reporting().status,
                now,
                &c.entity,
                limits.status_burst,
                limits.status_every,
            );
            if let Err(wait) = bucket {
                let reason = format!("{}: {}", c.entity, retry_in("status reports", wait));
                return self.reject(env, ErrorCode::RateLimited, reason);
            }
        }
        self.with_served(
            gw,
            NeedsServed::Report {
                req_msg: env.msg_id,
                to: env.from.clone(),
                changes,
            },
        );
    }

    /// Status Query (retrieval on request, 004 §5.5.3.2).
    pub(super) fn on_status_query(&mut self, gw: &Gw, env: &Envelope, query: StatusQuery) {
        if query.entities.len() > MAX_WATCHED {
            return self.reject(
                env,
                ErrorCode::BadRequest,
                format!("a query names at most {MAX_WATCHED} entities"),
            );
        }
        let asker = Self::speaker(gw, env);
        self.with_served(
            gw,
            NeedsServed::Query {
                req_msg: env.msg_id,
                asker,
                query,
            },
        );
    }

    /// Status Subscribe (policy-based status report, 004 §5.5.3.2).
    pub(super) fn on_status_subscribe(&mut self, gw: &Gw, env: &Envelope, req: StatusSubscribe) {
        if let Err(why) = Policy::check(&req.policy) {
            return self.reject(env, ErrorCode::BadRequest, why);
        }
        if req.entities.len() > MAX_WATCHED {
            return self.reject(
                env,
                ErrorCode::BadRequest,
                format!("a subscription watches at most {MAX_WATCHED} entities"),
            );
        }
        let subscriber = Self::speaker(gw, env);
        self.with_served(
            gw,
            NeedsServed::Subscribe {
                req_msg: env.msg_id,
                subscriber,
                req: Box::new(req),
            },
        );
    }

    /// Status Unsubscribe.
    pub(super) fn on_status_unsubscribe(&mut self, gw: &Gw, env: &Envelope, m: StatusUnsubscribe) {
        let subscriber = Self::speaker(gw, env);
        self.with_served(
            gw,
            NeedsServed::Unsubscribe {
                req_msg: env.msg_id,
                subscriber,
                id: m.subscription,
            },
        );
    }

    /// Goes on with `w` once every PNE it names is known to be served by this PN GW, reading
    /// the store for those not known yet.
    fn with_served(&mut self, gw: &Gw, w: NeedsServed) {
        let unknown: Vec<EntityId> = w
            .pnes(&gw.id)
            .into_iter()
            .filter(|p| !self.served(p))
            .collect();
        if unknown.is_empty() {
            return self.served_known(w);
        }
        let load = Load::Served {
            gateway: gw.id.clone(),
            candidates: unknown,
        };
        self.load(Parked::ServedLoad(Box::new(w)), load);
    }

    /// The store's answer on which PNEs are served.
    pub(super) fn served_loaded(&mut self, w: NeedsServed, served: Vec<EntityId>) {
        let Some(gw) = self.conn.gateway().map(|g| g.id.clone()) else {
            return;
        };
        let r = self.reporting();
        if r.served.len() + served.len() > MAX_TRACKED {
            r.served.clear();
        }
        r.served.extend(served);
        let stranger = w.pnes(&gw).into_iter().find(|p| !self.served(p));
        if let Some(p) = stranger {
            let reason = format!("{p} is not a member of a PN of this PN GW");
            return self.respond_error(w.req_msg(), ErrorCode::Forbidden, reason);
        }
        self.served_known(w);
    }

    fn served_known(&mut self, w: NeedsServed) {
        match w {
            NeedsServed::Caps {
                req_msg,
                to,
                entity,
                caps,
            } => {
                let effect = ServerEffect::EntityReport {
                    id: entity,
                    capabilities: Some(caps),
                    status: None,
                };
                self.persist(Parked::CapsPersist { req_msg, to }, effect);
            }
            NeedsServed::Report {
                req_msg,
                to,
                changes,
            } => {
                // The PNEs reported online are reached through this session from now on;
                // those reported offline no longer are (the PN GW itself is reached anyway).
                let gw = self.conn.gateway().map(|g| g.id.clone());
                let reach = changes
                    .iter()
                    .filter(|c| Some(&c.entity) != gw.as_ref())
                    .map(|c| (c.entity.clone(), c.status != Status::Offline))
                    .collect();
                self.persist(
                    Parked::StatusPersist { req_msg, to, reach },
                    ServerEffect::RecordStatuses { changes },
                );
            }
            NeedsServed::Query {
                req_msg,
                asker,
                query,
            } => self.read_statuses(StatusRead::Query {
                req_msg,
                asker,
                query,
            }),
            NeedsServed::Subscribe {
                req_msg,
                subscriber,
                req,
            } => self.read_statuses(StatusRead::Subscribe {
                req_msg,
                subscriber,
                req,
            }),
            NeedsServed::Unsubscribe {
                req_msg,
                subscriber,
                id,
            } => {
                let parked = Parked::UnsubscribePersist {
                    req_msg,
                    subscriber: subscriber.clone(),
                    id,
                };
                self.persist(parked, ServerEffect::RemoveSubscription { subscriber, id });
            }
        }
    }

    /// Loads what a query or a subscription reads: the asker (its user), what it names, and
    /// for a query of no entity every device of its user, for a subscription its count.
    fn read_statuses(&mut self, read: StatusRead) {
        let (_, asker, named) = read.parts();
        let load = Load::Statuses {
            asker: asker.clone(),
            named: named.to_vec(),
            whole_user: matches!(&read, StatusRead::Query { .. } if named.is_empty()),
            subscriptions: matches!(&read, StatusRead::Subscribe { .. }),
        };
        self.load(Parked::StatusRead(Box::new(read)), load);
    }

    /// The statuses a query or a subscription reads: who asks (its user) and what it names.
    pub(super) fn status_read(&mut self, read: StatusRead, loaded: StatusesLoaded) {
        let (req_msg, asker, named) = read.parts();
        let (asker, named) = (asker.clone(), named.to_vec());
        let Some(owner) = loaded
            .statuses
            .iter()
            .find(|s| s.entity == asker)
            .map(|s| s.owner.clone())
        else {
            let e = ErrorBody::new(ErrorCode::Forbidden, "the asker is not enrolled");
            return self.answer_error_to(req_msg, &asker, e);
        };
        let found = |id: &EntityId| loaded.statuses.iter().find(|s| &s.entity == id);
        for id in &named {
            match found(id) {
                None => {
                    let e = ErrorBody::new(ErrorCode::NotFound, format!("no {id}"));
                    return self.answer_error_to(req_msg, &asker, e);
                }
                Some(s) if s.owner != owner => {
                    let reason = format!("{id} is another user's device");
                    let e = ErrorBody::new(ErrorCode::Forbidden, reason);
                    return self.answer_error_to(req_msg, &asker, e);
                }
                Some(_) => {}
            }
        }
        match read {
            StatusRead::Query { query, .. } => {
                let entries = if query.entities.is_empty() {
                    loaded
                        .owner_statuses
                        .iter()
                        .map(EntityState::entry)
                        .collect()
                } else {
                    named
                        .iter()
                        .filter_map(found)
                        .map(EntityState::entry)
                        .collect()
                };
                self.respond(req_msg, Address::Entity(asker), StatusAnswer { entries });
            }
            StatusRead::Subscribe { req, .. } => {
                if loaded.subscriptions >= MAX_SUBSCRIPTIONS {
                    let reason =
                        format!("{asker} holds {MAX_SUBSCRIPTIONS} subscriptions, the most it may");
                    let e = ErrorBody::new(ErrorCode::Busy, reason);
                    return self.answer_error_to(req_msg, &asker, e);
                }
                let req = *req;
                let effect = ServerEffect::AddSubscription {
                    subscriber: asker.clone(),
                    owner,
                    request_id: req.request_id,
                    entities: req.entities,
                    policy: req.policy,
                };
                self.persist(
                    Parked::SubscribePersist {
                        req_msg,
                        subscriber: asker,
                    },
                    effect,
                );
            }
        }
    }

    /// A capabilities or status report, stored: the records as now go to the status hub, the
    /// session reaches (or no longer reaches) whom the report says, and `ok` goes to `to`; or
    /// why not.
    pub(super) fn report_stored(
        &mut self,
        req_msg: u64,
        to: Address,
        ok: impl Into<cpns_wire::Body>,
        reach: Vec<(EntityId, bool)>,
        result: Result<Persisted, StoreFailure>,
    ) {
        match result {
            Ok(p) => {
                if let Persisted::Recorded(states) = p {
                    self.publish(Publish::Changed(states));
                }
                for (entity, here) in reach {
                    self.publish(Publish::Reach { entity, here });
                }
                self.respond(req_msg, to, ok);
            }
            Err(StoreFailure::NotFound(what)) => self.respond_error(
                req_msg,
                ErrorCode::NotFound,
                format!("{what} is not enrolled"),
            ),
            Err(e) => self.respond_error(req_msg, ErrorCode::Internal, format!("store: {e}")),
        }
    }

    /// 004 §5.5.3.2: the subscription is kept. The hub holds it from the records it was kept
    /// with, the session reaches its subscriber, and the subscriber gets its id and the
    /// snapshot of what it watches.
    pub(super) fn subscribe_persisted(
        &mut self,
        req_msg: u64,
        subscriber: EntityId,
        result: Result<Persisted, StoreFailure>,
    ) {
        match result {
            Ok(Persisted::Subscribed {
                id,
                watched,
                policy,
                states,
            }) => {
                // Checked when it was first kept; a policy this version cannot check is the
                // store's to explain.
                let policy = match Policy::check(&policy) {
                    Ok(p) => p,
                    Err(why) => {
                        let reason = format!("the kept subscription's policy: {why}");
                        let e = ErrorBody::new(ErrorCode::Internal, reason);
                        return self.answer_error_to(req_msg, &subscriber, e);
                    }
                };
                let entries = crate::status::snapshot(&watched, &states);
                let subscription = crate::status::Subscription {
                    id,
                    subscriber: subscriber.clone(),
                    watched,
                    policy,
                };
                self.publish(Publish::Subscribed {
                    subscription,
                    states,
                });
                self.publish(Publish::Reach {
                    entity: subscriber.clone(),
                    here: true,
                });
                self.respond(
                    req_msg,
                    Address::Entity(subscriber),
                    StatusSubscribed {
                        subscription: id,
                        entries,
                    },
                );
            }
            Ok(_) => {
                let e = ErrorBody::new(ErrorCode::Internal, "the store said nothing");
                self.answer_error_to(req_msg, &subscriber, e);
            }
            Err(e) => {
                let e = ErrorBody::new(ErrorCode::Internal, format!("store: {e}"));
                self.answer_error_to(req_msg, &subscriber, e);
            }
        }
    }

    /// Answers a request of `asker` (a PNE relayed by its PN GW, or the PN GW itself) with an
    /// error addressed to it, as its answer would be.
    fn answer_error_to(&mut self, req_msg: u64, asker: &EntityId, e: ErrorBody) {
        self.respond(req_msg, Address::Entity(asker.clone()), e);
    }

    /// The subscription is removed from the store; the hub drops it too.
    pub(super) fn unsubscribe_persisted(
        &mut self,
        req_msg: u64,
        subscriber: EntityId,
        id: u64,
        result: Result<Persisted, StoreFailure>,
    ) {
        let to = Address::Entity(subscriber.clone());
        match result {
            Ok(p) => {
                self.publish(Publish::Unsubscribed { subscriber, id });
                if p == Persisted::Removed(true) {
                    self.respond(req_msg, to, StatusAck {});
                } else {
                    self.respond_error(req_msg, ErrorCode::NotFound, "no such subscription");
                }
            }
            Err(e) => self.respond_error(req_msg, ErrorCode::Internal, format!("store: {e}")),
        }
    }

    /// A secure notice for `to`, a PNE behind this session's PN GW
    /// ([`super::ServerOutput::Notice`]).
    pub fn send_notice(&mut self, to: EntityId, notice: cpns_wire::SecureNotice) {
        if self.conn.gateway().is_none() {
            return;
        }
        let id = self.ids.next();
        self.transmit(Envelope::notify(
            id,
            Address::Server,
            Address::Entity(to),
            notice,
        ));
    }

    /// A notification the hub has for `to`: the PN GW itself or a PNE behind it.
    pub fn notify(&mut self, to: EntityId, n: StatusNotification) {
        if self.conn.gateway().is_none() {
            return;
        }
        let id = self.ids.next();
        self.transmit(Envelope::notify(
            id,
            Address::Server,
            Address::Entity(to),
            n,
        ));
    }

    /// Asks the PN GW of this session for `entity`'s capabilities now (004 §5.5.1: query by
    /// id): its own, or a PNE's, which it relays. The answer comes back as
    /// [`super::ServerOutput::CapabilitiesAnswered`] with `ask`, or an error: the PN GW's or the
    /// PNE's refusal, a timeout, or `not_found` when this session has no PN GW yet.
    pub fn ask_capabilities(&mut self, now: Instant, entity: EntityId, ask: u64) {
        if self.conn.gateway().is_none() {
            let e = cpns_wire::ErrorBody::new(ErrorCode::NotFound, "no PN GW on this session");
            self.out
                .push_back(super::ServerOutput::CapabilitiesAnswered {
                    ask,
                    result: Err(e),
                });
            return;
        }
        let q = cpns_wire::CapabilitiesQuery {
            entity: entity.clone(),
        };
        let msg = self.send_request(Address::Entity(entity), q);
        let deadline = now + self.cfg.timeouts.flow;
        self.caps_asks.insert(msg, (ask, deadline));
    }

    /// The answer to a Capabilities Query this session sent.
    pub(super) fn on_capabilities_answer(
        &mut self,
        env: &Envelope,
        m: cpns_wire::CapabilitiesAnswer,
    ) {
        let Some((ask, _)) = env.in_reply_to.and_then(|r| self.caps_asks.remove(&r)) else {
            return;
        };
        let result = match m.capabilities.check() {
            Ok(()) => Ok(m.capabilities),
            Err(why) => Err(cpns_wire::ErrorBody::new(
                ErrorCode::BadRequest,
                format!("the capabilities answered are not acceptable: {why}"),
            )),
        };
        self.out
            .push_back(super::ServerOutput::CapabilitiesAnswered { ask, result });
    }

    /// An error answering a Capabilities Query; true if it answered one.
    pub(super) fn capabilities_refused(&mut self, reply_to: u64, e: &cpns_wire::ErrorBody) -> bool {
        let Some((ask, _)) = self.caps_asks.remove(&reply_to) else {
            return false;
        };
        self.out
            .push_back(super::ServerOutput::CapabilitiesAnswered {
                ask,
                result: Err(e.clone()),
            });
        true
    }

    pub(super) fn caps_ask_timeouts(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .caps_asks
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(m, _)| *m)
            .collect();
        for msg in late {
            if let Some((ask, _)) = self.caps_asks.remove(&msg) {
                let e = cpns_wire::ErrorBody::new(ErrorCode::Timeout, "no answer in time");
                self.out
                    .push_back(super::ServerOutput::CapabilitiesAnswered {
                        ask,
                        result: Err(e),
                    });
            }
        }
    }

    /// The silence after which the PN GW is taken for gone, if the session is up.
    pub(super) fn silence_deadline(&self) -> Option<Instant> {
        let after = self.cfg.offline_after?;
        self.conn.gateway()?;
        Some(self.last_heard + after)
    }

    pub(super) fn silence_timeout(&mut self, now: Instant) {
        if self.silence_deadline().is_some_and(|d| d <= now) {
            let after = self.cfg.offline_after.unwrap_or_default();
            self.conn = super::connect::Conn::Closed;
            self.out.push_back(super::ServerOutput::Close {
                reason: format!("the PN GW was silent for {} s", after.as_secs()),
            });
        }
    }
}

/// Why a status entry may not be taken.
fn check_entry(e: &StatusEntry) -> Result<(), String> {
    match (&e.label, e.status) {
        (Some(l), Status::Custom) if l.is_empty() || l.len() > MAX_LABEL => {
            Err(format!("a custom status's label is 1 to {MAX_LABEL} bytes"))
        }
        (None, Status::Custom) => Err("a custom status has a label".into()),
        (Some(_), s) if s != Status::Custom => Err("only a custom status has a label".into()),
        _ => Ok(()),
    }
}
