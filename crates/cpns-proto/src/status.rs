//! Policy-based status subscriptions (004 §5.5.3.2), decided without IO: which subscriptions a
//! status change fires, with what, and when periodic ones are due (docs/device-status.md,
//! "Subscriptions").
//!
//! [`StatusBook`] holds every subscription and the last known state of every watched entity.
//! The server's hub feeds it the changes it recorded ([`StatusBook::observe`]) and the time
//! ([`StatusBook::due`]); each returns the [`Notice`]s to deliver, which the hub hands to each
//! subscriber's own queue. Thresholds fire once per crossing: a subscription is *armed* for an
//! entity while the attribute is on the quiet side of the bound (or unknown), fires when it
//! crosses, and is armed again only when the value comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cpns_wire::{
    Attribute, Crossing, EntityId, NotifyReason, PolicyKind, Status, StatusEntry, StatusPolicy,
    UserId,
};

/// Shortest period of a periodic subscription.
pub const MIN_PERIOD: Duration = Duration::from_secs(5);
/// Longest period of a periodic subscription.
pub const MAX_PERIOD: Duration = Duration::from_secs(86_400);
/// Most entities one subscription may list.
pub const MAX_WATCHED: usize = 256;

/// What a status policy reads of an entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityState {
    /// The entity.
    pub entity: EntityId,
    /// Its owner.
    pub owner: UserId,
    /// Its status.
    pub status: Status,
    /// The label of a custom status.
    pub label: Option<String>,
    /// When it took its status, ms since the Unix epoch, if it was ever reported.
    pub since_ms: Option<u64>,
    /// Remaining battery, percent.
    pub battery_pct: Option<u8>,
    /// Remaining battery time, minutes.
    pub battery_minutes: Option<u32>,
    /// Memory available, MiB.
    pub free_memory_mb: Option<u32>,
}

impl EntityState {
    /// The value of `attribute`, if known.
    pub fn attribute(&self, attribute: Attribute) -> Option<u32> {
        match attribute {
            Attribute::BatteryPct => self.battery_pct.map(u32::from),
            Attribute::BatteryMinutes => self.battery_minutes,
            Attribute::FreeMemoryMb => self.free_memory_mb,
            _ => None,
        }
    }

    /// The state as it travels.
    pub fn entry(&self) -> StatusEntry {
        StatusEntry {
            entity: self.entity.clone(),
            status: self.status,
            label: self.label.clone(),
            since_ms: self.since_ms,
            battery_pct: self.battery_pct,
            battery_minutes: self.battery_minutes,
            free_memory_mb: self.free_memory_mb,
        }
    }
}

/// The entries a new subscription's subscriber starts from (004 §5.5.3.2), from the records of
/// the store as the subscription was kept: the entities it names, in their order, or every
/// device of its user, by id — as [`StatusBook::entries`] gives them once the book knows
/// those records.
pub fn snapshot(watched: &Watched, states: &[EntityState]) -> Vec<StatusEntry> {
    match watched {
        Watched::Entities(ids) => ids
            .iter()
            .filter_map(|id| states.iter().find(|s| &s.entity == id))
            .map(EntityState::entry)
            .collect(),
        Watched::User(user) => states
            .iter()
            .filter(|s| &s.owner == user)
            .map(|s| (&s.entity, s))
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .map(EntityState::entry)
            .collect(),
    }
}

/// A checked policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Any change of status or label.
    OnChange,
    /// `attribute` crossing `bound` in direction `crossing`, once per crossing.
    Threshold {
        /// The attribute.
        attribute: Attribute,
        /// Below or above.
        crossing: Crossing,
        /// The bound.
        bound: u32,
    },
    /// Every `period`.
    Periodic {
        /// The period.
        period: Duration,
    },
}

impl Policy {
    /// Checks a policy as it came on the wire; the reason it may not be taken, in words.
    pub fn check(p: &StatusPolicy) -> Result<Policy, String> {
        match p.kind {
            PolicyKind::OnChange => Ok(Policy::OnChange),
            PolicyKind::Threshold => {
                let (Some(attribute), Some(crossing), Some(bound)) =
                    (p.attribute, p.crossing, p.bound)
                else {
                    return Err(
                        "a threshold policy names an attribute, a crossing and a bound".into(),
                    );
                };
                if !matches!(
                    attribute,
                    Attribute::BatteryPct | Attribute::BatteryMinutes | Attribute::FreeMemoryMb
                ) {
                    return Err(format!("unknown attribute {}", attribute.code()));
                }
                if !matches!(crossing, Crossing::Below | Crossing::Above) {
                    return Err(format!("unknown crossing {}", crossing.code()));
                }
                Ok(Policy::Threshold {
                    attribute,
                    crossing,
                    bound,
                })
            }
            PolicyKind::Periodic => {
                let period = Duration::from_secs(u64::from(p.period_s.unwrap_or(0)));
                if !(MIN_PERIOD..=MAX_PERIOD).contains(&period) {
                    return Err(format!(
                        "a periodic policy's period is {} to {} seconds",
                        MIN_PERIOD.as_secs(),
                        MAX_PERIOD.as_secs()
                    ));
                }
                Ok(Policy::Periodic { period })
            }
            other => Err(format!("unknown policy kind {}", other.code())),
        }
    }

    /// Whether `value` is on the firing side of a threshold.
    fn fires(crossing: Crossing, bound: u32, value: u32) -> bool {
        match crossing {
            Crossing::Below => value < bound,
            Crossing::Above => value > bound,
            _ => false,
        }
    }
}

/// What a subscription watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// These entities.
    Entities(Vec<EntityId>),
    /// Every device of this user.
    User(UserId),
}

/// A subscription, as the book holds it; `S` names the subscriber for the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription<S> {
    /// Its id.
    pub id: u64,
    /// Who is told.
    pub subscriber: S,
    /// What it watches.
    pub watched: Watched,
    /// When it fires.
    pub policy: Policy,
}

/// A notification to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice<S> {
    /// The subscription.
    pub subscription: u64,
    /// Its subscriber.
    pub subscriber: S,
    /// Why.
    pub reason: NotifyReason,
    /// The entities concerned, as now.
    pub entries: Vec<StatusEntry>,
}

/// Every subscription, and the last known state of every entity (see the module docs).
#[derive(Debug)]
pub struct StatusBook<S> {
    subs: BTreeMap<u64, Subscription<S>>,
    by_entity: BTreeMap<EntityId, BTreeSet<u64>>,
    by_user: BTreeMap<UserId, BTreeSet<u64>>,
    states: BTreeMap<EntityId, EntityState>,
    /// Entities of each user, for subscriptions that watch a user.
    devices: BTreeMap<UserId, BTreeSet<EntityId>>,
    /// Thresholds that fired and wait for the value to come back: (subscription, entity).
    fired: BTreeSet<(u64, EntityId)>,
    /// When each periodic subscription is next due.
    periodic: BTreeSet<(Instant, u64)>,
    /// Each subscriber's subscriptions.
    by_subscriber: BTreeMap<S, BTreeSet<u64>>,
}

impl<S> Default for StatusBook<S> {
    fn default() -> Self {
        Self {
            subs: BTreeMap::new(),
            by_entity: BTreeMap::new(),
            by_user: BTreeMap::new(),
            states: BTreeMap::new(),
            devices: BTreeMap::new(),
            fired: BTreeSet::new(),
            periodic: BTreeSet::new(),
            by_subscriber: BTreeMap::new(),
        }
    }
}

impl<S: Clone + Ord> StatusBook<S> {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many subscriptions it holds.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The subscription `id`.
    pub fn get(&self, id: u64) -> Option<&Subscription<S>> {
        self.subs.get(&id)
    }

    /// The ids of `subscriber`'s subscriptions, oldest first.
    pub fn ids_of(&self, subscriber: &S) -> Vec<u64> {
        self.by_subscriber
            .get(subscriber)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// How many subscriptions `subscriber` holds.
    pub fn count_of(&self, subscriber: &S) -> usize {
        self.by_subscriber.get(subscriber).map_or(0, BTreeSet::len)
    }

    /// The last known state of `entity`.
    pub fn state(&self, entity: &EntityId) -> Option<&EntityState> {
        self.states.get(entity)
    }

    /// Sets the known state of an entity without evaluating anything (loading the record).
    pub fn know(&mut self, state: EntityState) {
        self.devices
            .entry(state.owner.clone())
            .or_default()
            .insert(state.entity.clone());
        self.states.insert(state.entity.clone(), state);
    }

    /// Whether a subscription watches `entity` (by name, or as a device of `owner`).
    fn is_watched(&self, entity: &EntityId, owner: &UserId) -> bool {
        self.by_entity.contains_key(entity) || self.by_user.contains_key(owner)
    }

    /// Forgets what is known of `entity`.
    fn drop_state(&mut self, entity: &EntityId) {
        if let Some(s) = self.states.remove(entity)
            && let Some(devices) = self.devices.get_mut(&s.owner)
        {
            devices.remove(entity);
            if devices.is_empty() {
                self.devices.remove(&s.owner);
            }
        }
    }

    /// The entities `watched` covers, as known now.
    pub fn entries(&self, watched: &Watched) -> Vec<StatusEntry> {
        match watched {
            Watched::Entities(ids) => ids
                .iter()
                .filter_map(|id| self.states.get(id))
                .map(EntityState::entry)
                .collect(),
            Watched::User(user) => self
                .devices
                .get(user)
                .into_iter()
                .flatten()
                .filter_map(|id| self.states.get(id))
                .map(EntityState::entry)
                .collect(),
        }
    }

    /// Adds a subscription at `now`. A threshold starts armed for every watched entity whose
    /// value is on the quiet side or unknown, and fired for those already past the bound (a
    /// subscriber is told of a crossing, not of a state it subscribed in: the snapshot shows
    /// that). A subscription with the same id is replaced.
    pub fn add(&mut self, now: Instant, sub: Subscription<S>) {
        self.add_with(now, sub, Vec::new());
    }

    /// [`StatusBook::add`], knowing first the watched entities' `states` (from the record: the
    /// book keeps the state only of entities someone watches).
    pub fn add_with(&mut self, now: Instant, sub: Subscription<S>, states: Vec<EntityState>) {
        self.remove(sub.id);
        let id = sub.id;
        match &sub.watched {
            Watched::Entities(ids) => {
                for e in ids {
                    self.by_entity.entry(e.clone()).or_default().insert(id);
                }
            }
            Watched::User(u) => {
                self.by_user.entry(u.clone()).or_default().insert(id);
            }
        }
        for state in states {
            if self.is_watched(&state.entity, &state.owner) {
                self.know(state);
            }
        }
        match sub.policy {
            Policy::Threshold {
                attribute,
                crossing,
                bound,
            } => {
                let past: Vec<EntityId> = self
                    .watched_states(&sub.watched)
                    .filter(|s| {
                        s.attribute(attribute)
                            .is_some_and(|v| Policy::fires(crossing, bound, v))
                    })
                    .map(|s| s.entity.clone())
                    .collect();
                for e in past {
                    self.fired.insert((id, e));
                }
            }
            Policy::Periodic { period } => {
                self.periodic.insert((now + period, id));
            }
            Policy::OnChange => {}
        }
        self.by_subscriber
            .entry(sub.subscriber.clone())
            .or_default()
            .insert(id);
        self.subs.insert(id, sub);
    }

    /// Removes a subscription; the one removed, if it was there.
    pub fn remove(&mut self, id: u64) -> Option<Subscription<S>> {
        let sub = self.subs.remove(&id)?;
        if let Some(ids) = self.by_subscriber.get_mut(&sub.subscriber) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_subscriber.remove(&sub.subscriber);
            }
        }
        match &sub.watched {
            Watched::Entities(ids) => {
                for e in ids {
                    if let Some(set) = self.by_entity.get_mut(e) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.by_entity.remove(e);
                        }
                    }
                }
            }
            Watched::User(u) => {
                if let Some(set) = self.by_user.get_mut(u) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_user.remove(u);
                    }
                }
            }
        }
        self.fired.retain(|(s, _)| *s != id);
        let unwatched: Vec<EntityId> = match &sub.watched {
            Watched::Entities(ids) => ids.clone(),
            Watched::User(u) => self
                .devices
                .get(u)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default(),
        };
        for e in unwatched {
            let owner = self.states.get(&e).map(|s| s.owner.clone());
            if owner.is_some_and(|o| !self.is_watched(&e, &o)) {
                self.drop_state(&e);
            }
        }
        if let Policy::Periodic { .. } = sub.policy {
            self.periodic.retain(|(_, s)| *s != id);
        }
        Some(sub)
    }

    fn watched_states<'a>(
        &'a self,
        w: &'a Watched,
    ) -> Box<dyn Iterator<Item = &'a EntityState> + 'a> {
        match w {
            Watched::Entities(ids) => Box::new(ids.iter().filter_map(|id| self.states.get(id))),
            Watched::User(u) => Box::new(
                self.devices
                    .get(u)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.states.get(id)),
            ),
        }
    }

    /// Records an entity's new state and returns what it fires: on-change subscriptions when
    /// its status or label changed, thresholds it crossed (each once per crossing).
    pub fn observe(&mut self, state: EntityState) -> Vec<Notice<S>> {
        if !self.is_watched(&state.entity, &state.owner) {
            // Nobody watches it: nothing to decide, nothing to keep.
            self.drop_state(&state.entity);
            return Vec::new();
        }
        let before = self.states.get(&state.entity).cloned();
        self.know(state.clone());
        let changed = before
            .as_ref()
            .is_none_or(|b| b.status != state.status || b.label != state.label);
        let mut ids: BTreeSet<u64> = BTreeSet::new();
        if let Some(set) = self.by_entity.get(&state.entity) {
            ids.extend(set);
        }
        if let Some(set) = self.by_user.get(&state.owner) {
            ids.extend(set);
        }
        let mut out = Vec::new();
        for id in ids {
            let Some(sub) = self.subs.get(&id) else {
                continue;
            };
            let reason = match sub.policy {
                Policy::OnChange => changed.then_some(NotifyReason::Change),
                Policy::Threshold {
                    attribute,
                    crossing,
                    bound,
                } => {
                    let key = (id, state.entity.clone());
                    match state.attribute(attribute) {
                        // Unknown now: neither fires nor re-arms.
                        None => None,
                        Some(v) if Policy::fires(crossing, bound, v) => {
                            self.fired.insert(key).then_some(NotifyReason::Threshold)
                        }
                        Some(_) => {
                            self.fired.remove(&key);
                            None
                        }
                    }
                }
                Policy::Periodic { .. } => None,
            };
            if let Some(reason) = reason {
                out.push(Notice {
                    subscription: id,
                    subscriber: sub.subscriber.clone(),
                    reason,
                    entries: vec![state.entry()],
                });
            }
        }
        out
    }

    /// When the next periodic subscription is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.periodic.first().map(|(at, _)| *at)
    }

    /// The periodic notifications due at `now`, one per subscription however late the call,
    /// each rescheduled on its own grid (due time plus whole periods), to the first point after
    /// `now`: a late call neither drifts the schedule nor sends the missed ones in a burst.
    pub fn due(&mut self, now: Instant) -> Vec<Notice<S>> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.periodic.first() {
            if at > now {
                break;
            }
            self.periodic.pop_first();
            let Some(sub) = self.subs.get(&id) else {
                continue;
            };
            let Policy::Periodic { period } = sub.policy else {
                continue;
            };
            let missed = now.duration_since(at).as_nanos() / period.as_nanos();
            let steps = u32::try_from(missed + 1).unwrap_or(u32::MAX);
            let next = at + period.saturating_mul(steps);
            out.push(Notice {
                subscription: id,
                subscriber: sub.subscriber.clone(),
                reason: NotifyReason::Periodic,
                entries: self.entries(&sub.watched),
            });
            self.periodic.insert((next, id));
        }
        out
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
