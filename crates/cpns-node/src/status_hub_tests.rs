//! Tests of the hub: fan-out, a slow subscriber alone, coalescing, attach and detach.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpns_proto::status::{EntityState, Policy, Subscription, Watched};
use cpns_wire::{Attribute, Crossing, EntityId, NotifyReason, Status, UserId};

use super::*;

fn eid(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

fn state(id: &str, status: Status, battery: Option<u8>) -> EntityState {
    EntityState {
        entity: eid(id),
        owner: UserId::new("alice").unwrap(),
        status,
        label: None,
        since_ms: None,
        battery_pct: battery,
        battery_minutes: None,
        free_memory_mb: None,
    }
}

fn on_change(id: u64, who: Subscriber, watched: &str) -> Subscription<Subscriber> {
    Subscription {
        id,
        subscriber: who,
        watched: Watched::Entities(vec![eid(watched)]),
        policy: Policy::OnChange,
    }
}

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

#[tokio::test]
async fn a_change_reaches_every_attached_subscriber_once() {
    let hub = StatusHub::new();
    hub.know([state("phone", Status::Online, None)]);
    let boxes: Vec<_> = (0..100).map(|_| Mailbox::new(MAILBOX_LIMIT)).collect();
    for (i, b) in boxes.iter().enumerate() {
        let who = Subscriber::External(i as u64);
        let snapshot = hub.subscribe(t0(), on_change(i as u64, who.clone(), "phone"), vec![]);
        assert_eq!(
            snapshot[0].status,
            Status::Online,
            "the snapshot shows the state now"
        );
        hub.attach(who, b);
    }
    // One more subscriber, not attached: skipped, nothing else disturbed.
    hub.subscribe(
        t0(),
        on_change(1000, Subscriber::External(1000), "phone"),
        vec![],
    );
    assert_eq!(hub.publish(state("phone", Status::Busy, None)), 100);
    for (i, b) in boxes.iter().enumerate() {
        let got = b.take().await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to, Subscriber::External(i as u64));
        assert_eq!(got[0].notification.subscription, i as u64);
        assert_eq!(got[0].notification.reason, NotifyReason::Change);
        assert_eq!(got[0].notification.entries[0].status, Status::Busy);
    }
    assert_eq!(
        hub.publish(state("phone", Status::Busy, Some(3))),
        0,
        "no change: nothing"
    );
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_falls_behind_alone() {
    let hub = StatusHub::new();
    let slow = Mailbox::new(4);
    let quick = Mailbox::new(4);
    for (i, (who, b)) in [(0, &slow), (1, &quick)].into_iter().enumerate() {
        let who = Subscriber::External(who);
        for (k, e) in ["phone", "tv"].into_iter().enumerate() {
            hub.subscribe(t0(), on_change((i * 10 + k) as u64, who.clone(), e), vec![]);
        }
        hub.attach(who, b);
    }
    let statuses = [Status::Online, Status::Busy, Status::Offline];
    let mut quick_seen = 0;
    for round in 0..30 {
        let s = statuses[round % 3];
        hub.publish(state("phone", s, None));
        hub.publish(state("tv", s, None));
        // The quick one reads everything, every round.
        quick_seen += quick.take().await.unwrap().len();
    }
    assert_eq!(quick_seen, 60, "the quick subscriber lost nothing");
    let slow_got = slow.take().await.unwrap();
    assert!(slow_got.len() <= 4, "bounded: {}", slow_got.len());
    // The newest state of each entity survived the coalescing.
    let last = statuses[29 % 3];
    for e in ["phone", "tv"] {
        let newest = slow_got
            .iter()
            .rev()
            .find(|p| p.notification.entries[0].entity == eid(e))
            .unwrap();
        assert_eq!(newest.notification.entries[0].status, last, "{e}");
    }
    assert_eq!(
        slow_got[0].notification.lagged,
        Some(56),
        "60 pushed, 4 kept"
    );
    assert!(
        slow_got[1..]
            .iter()
            .all(|p| p.notification.lagged.is_none())
    );
    assert!(slow.is_empty());
}

#[tokio::test]
async fn take_waits_for_a_push_and_ends_once_closed() {
    let b = Mailbox::new(8);
    let reader = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.take().await })
    };
    let pending = Pending {
        to: Subscriber::External(1),
        notification: StatusNotification {
            subscription: 1,
            reason: NotifyReason::Periodic,
            entries: vec![],
            lagged: None,
        },
    };
    assert!(b.push(pending.clone()));
    assert_eq!(reader.await.unwrap().unwrap(), vec![pending.clone()]);
    b.close();
    assert!(!b.push(pending), "a closed mailbox takes nothing");
    assert_eq!(b.take().await, None);
}

#[tokio::test]
async fn only_the_holder_unsubscribes_and_forget_removes_all() {
    let hub = StatusHub::new();
    let app = Subscriber::External(1);
    let other = Subscriber::External(2);
    hub.subscribe(t0(), on_change(1, app.clone(), "phone"), vec![]);
    hub.subscribe(t0(), on_change(2, app.clone(), "tv"), vec![]);
    assert_eq!(hub.count_of(&app), 2);
    assert!(!hub.unsubscribe(&other, 1));
    assert!(hub.unsubscribe(&app, 1));
    assert!(!hub.unsubscribe(&app, 1));
    assert_eq!(hub.count_of(&app), 1);
    let b = Mailbox::new(8);
    hub.attach(app.clone(), &b);
    hub.forget(&app);
    assert_eq!(hub.count_of(&app), 0);
    assert_eq!(hub.publish(state("tv", Status::Busy, None)), 0);
}

#[tokio::test]
async fn a_detach_by_an_old_session_leaves_the_new_one_attached() {
    let hub = StatusHub::new();
    let gw = Subscriber::Entity(eid("gw"));
    hub.subscribe(t0(), on_change(1, gw.clone(), "phone"), vec![]);
    let old = Mailbox::new(8);
    let new = Mailbox::new(8);
    hub.attach(gw.clone(), &old);
    hub.attach(gw.clone(), &new);
    hub.detach(&gw, &old);
    assert_eq!(hub.publish(state("phone", Status::Busy, None)), 1);
    assert_eq!(new.len(), 1);
    assert!(old.is_empty());
    hub.detach(&gw, &new);
    assert_eq!(hub.publish(state("phone", Status::Online, None)), 0);
}

#[tokio::test]
async fn thresholds_and_periodic_ones_are_delivered_too() {
    let hub = StatusHub::new();
    let app = Subscriber::External(1);
    let b = Mailbox::new(8);
    hub.attach(app.clone(), &b);
    let start = t0();
    hub.know([state("phone", Status::Online, Some(50))]);
    hub.subscribe(
        start,
        Subscription {
            id: 1,
            subscriber: app.clone(),
            watched: Watched::Entities(vec![eid("phone")]),
            policy: Policy::Threshold {
                attribute: Attribute::BatteryPct,
                crossing: Crossing::Below,
                bound: 10,
            },
        },
        vec![],
    );
    hub.subscribe(
        start,
        Subscription {
            id: 2,
            subscriber: app,
            watched: Watched::Entities(vec![eid("phone")]),
            policy: Policy::Periodic {
                period: Duration::from_secs(5),
            },
        },
        vec![],
    );
    assert_eq!(hub.publish(state("phone", Status::Online, Some(9))), 1);
    assert_eq!(hub.publish(state("phone", Status::Online, Some(8))), 0);
    assert_eq!(hub.next_tick(), Some(start + Duration::from_secs(5)));
    assert_eq!(hub.tick(start + Duration::from_secs(5)), 1);
    let got = b.take().await.unwrap();
    let reasons: Vec<_> = got
        .iter()
        .map(|p| reason_name(p.notification.reason))
        .collect();
    assert_eq!(reasons, ["threshold", "periodic"]);
    assert_eq!(got[1].notification.entries[0].battery_pct, Some(8));
    assert_eq!(hub.state(&eid("phone")).unwrap().battery_pct, Some(8));
}
