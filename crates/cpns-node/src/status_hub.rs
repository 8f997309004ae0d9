//! The server's status hub (docs/device-status.md, "Fan-out"): every subscription, shared by
//! all sessions, and one bounded mailbox per subscriber.
//!
//! What fires is decided by [`cpns_proto::status::StatusBook`]; the hub only delivers. A change
//! is handed to every mailbox it concerns without waiting: a push takes the mailbox's own lock
//! for a few instructions and wakes its reader. A subscriber that does not read fills its own
//! mailbox and nothing else: once full, a notification replaces the one queued for the same
//! subscription and entity (status is state, the newest is what counts), or else the oldest,
//! and the mailbox counts what it dropped (`lagged`, told with the next notification it
//! gives). No publisher ever waits for a subscriber.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use cpns_proto::status::{EntityState, Notice, StatusBook, Subscription};
use cpns_wire::{EntityId, NotifyReason, StatusEntry, StatusNotification};
use tokio::sync::Notify;

/// Who a subscription's notifications go to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subscriber {
    /// An entity (a PN GW, or a PNE through its PN GW): delivered while it is attached.
    Entity(EntityId),
    /// An external application on the server's control socket, by connection number.
    External(u64),
}

/// Most notifications a mailbox holds.
pub const MAILBOX_LIMIT: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One notification waiting in a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// To whom (a mailbox may serve a PN GW and the PNEs behind it).
    pub to: Subscriber,
    /// The notification.
    pub notification: StatusNotification,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Pending>,
    lagged: u32,
    closed: bool,
}

/// A subscriber's mailbox: bounded, coalescing, read by one task.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    ready: Notify,
    limit: usize,
}

impl Mailbox {
    /// An empty mailbox holding at most `limit` notifications.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            limit: limit.max(1),
        })
    }

    /// Queues `p` without waiting; see the module docs for a full mailbox. False if the
    /// mailbox is closed.
    pub fn push(&self, p: Pending) -> bool {
        let mut q = lock(&self.queue);
        if q.closed {
            return false;
        }
        if q.items.len() >= self.limit {
            let same = |o: &Pending| {
                o.to == p.to
                    && o.notification.subscription == p.notification.subscription
                    && o.notification.entries.len() == 1
                    && p.notification.entries.len() == 1
                    && o.notification.entries[0].entity == p.notification.entries[0].entity
            };
            match q.items.iter().position(same) {
                Some(i) => {
                    q.items.remove(i);
                }
                None => {
                    q.items.pop_front();
                }
            }
            q.lagged = q.lagged.saturating_add(1);
        }
        q.items.push_back(p);
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Takes everything queued, waiting until there is something; the first notification
    /// carries the count of those dropped since the last take. `None` once closed and empty.
    pub async fn take(&self) -> Option<Vec<Pending>> {
        loop {
            {
                let mut q = lock(&self.queue);
                if !q.items.is_empty() {
                    let mut items: Vec<Pending> = q.items.drain(..).collect();
                    let lagged = std::mem::take(&mut q.lagged);
                    if lagged > 0 {
                        items[0].notification.lagged = Some(lagged);
                    }
                    return Some(items);
                }
                if q.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Closes the mailbox: pushes are refused, and [`Mailbox::take`] ends once it is empty.
    pub fn close(&self) {
        lock(&self.queue).closed = true;
        self.ready.notify_one();
    }

    /// How many notifications wait.
    pub fn len(&self) -> usize {
        lock(&self.queue).items.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default)]
struct Inner {
    book: StatusBook<Subscriber>,
    /// Where each subscriber's notifications go while it is reachable.
    boxes: BTreeMap<Subscriber, Arc<Mailbox>>,
}

/// The hub, shared by every session of a server.
#[derive(Debug, Default)]
pub struct StatusHub {
    inner: Mutex<Inner>,
}

impl StatusHub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Sets known states without notifying (the records loaded at start).
    pub fn know(&self, states: impl IntoIterator<Item = EntityState>) {
        let mut inner = self.inner();
        for s in states {
            inner.book.know(s);
        }
    }

    /// Adds (or replaces) a subscription at `now`, with the watched entities' `states` as the
    /// record holds them (the hub keeps only watched entities' states); the watched entities'
    /// entries now (the subscriber's snapshot).
    pub fn subscribe(
        &self,
        now: Instant,
        sub: Subscription<Subscriber>,
        states: Vec<EntityState>,
    ) -> Vec<StatusEntry> {
        let mut inner = self.inner();
        let watched = sub.watched.clone();
        inner.book.add_with(now, sub, states);
        inner.book.entries(&watched)
    }

    /// Removes subscription `id` if `subscriber` holds it; whether it did.
    pub fn unsubscribe(&self, subscriber: &Subscriber, id: u64) -> bool {
        let mut inner = self.inner();
        if inner
            .book
            .get(id)
            .is_none_or(|s| &s.subscriber != subscriber)
        {
            return false;
        }
        inner.book.remove(id).is_some()
    }

    /// Removes every subscription of `subscriber` (an external application that left).
    pub fn forget(&self, subscriber: &Subscriber) {
        let mut inner = self.inner();
        let ids = inner.book.ids_of(subscriber);
        for id in ids {
            inner.book.remove(id);
        }
        inner.boxes.remove(subscriber);
    }

    /// How many subscriptions `subscriber` holds.
    pub fn count_of(&self, subscriber: &Subscriber) -> usize {
        self.inner().book.count_of(subscriber)
    }

    /// Delivers `subscriber`'s notifications to `mailbox` from now on.
    pub fn attach(&self, subscriber: Subscriber, mailbox: &Arc<Mailbox>) {
        self.inner().boxes.insert(subscriber, Arc::clone(mailbox));
    }

    /// Stops delivering to `subscriber` if it is still attached to `mailbox` (a newer session
    /// may have attached it elsewhere since).
    pub fn detach(&self, subscriber: &Subscriber, mailbox: &Arc<Mailbox>) {
        let mut inner = self.inner();
        if inner
            .boxes
            .get(subscriber)
            .is_some_and(|b| Arc::ptr_eq(b, mailbox))
        {
            inner.boxes.remove(subscriber);
        }
    }

    /// The last known state of `entity`.
    pub fn state(&self, entity: &EntityId) -> Option<EntityState> {
        self.inner().book.state(entity).cloned()
    }

    /// Records a change the store holds now and delivers what it fires; how many
    /// notifications were queued.
    pub fn publish(&self, state: EntityState) -> usize {
        let mut inner = self.inner();
        let notices = inner.book.observe(state);
        deliver(&inner.boxes, notices)
    }

    /// Delivers the periodic notifications due at `now`; how many were queued.
    pub fn tick(&self, now: Instant) -> usize {
        let mut inner = self.inner();
        let notices = inner.book.due(now);
        deliver(&inner.boxes, notices)
    }

    /// When [`StatusHub::tick`] has work next.
    pub fn next_tick(&self) -> Option<Instant> {
        self.inner().book.poll_timeout()
    }
}

fn deliver(boxes: &BTreeMap<Subscriber, Arc<Mailbox>>, notices: Vec<Notice<Subscriber>>) -> usize {
    let mut queued = 0;
    for n in notices {
        // A subscriber not attached now (its session is down) misses this one; it gets the
        // state again with its next snapshot or periodic notification.
        let Some(mailbox) = boxes.get(&n.subscriber) else {
            continue;
        };
        let pending = Pending {
            to: n.subscriber,
            notification: StatusNotification {
                subscription: n.subscription,
                reason: n.reason,
                entries: n.entries,
                lagged: None,
            },
        };
        if mailbox.push(pending) {
            queued += 1;
        }
    }
    queued
}

/// The reason a notification gives, as a word for people.
pub fn reason_name(r: NotifyReason) -> &'static str {
    match r {
        NotifyReason::Change => "change",
        NotifyReason::Threshold => "threshold",
        NotifyReason::Periodic => "periodic",
        _ => "unknown",
    }
}

#[cfg(test)]
#[path = "status_hub_tests.rs"]
mod tests;
