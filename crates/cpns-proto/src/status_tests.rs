//! Tests of [`StatusBook`]: what fires, once, and when.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cpns_wire::{
    Attribute, Crossing, EntityId, NotifyReason, PolicyKind, Status, StatusPolicy, UserId,
};

use super::*;

/// A starting instant; only offsets from it are compared.
fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn eid(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

fn state(id: &str, owner: &str, status: Status, battery: Option<u8>) -> EntityState {
    EntityState {
        entity: eid(id),
        owner: UserId::new(owner).unwrap(),
        status,
        label: None,
        since_ms: Some(1),
        battery_pct: battery,
        battery_minutes: None,
        free_memory_mb: None,
    }
}

fn sub(id: u64, watched: Watched, policy: Policy) -> Subscription<&'static str> {
    Subscription {
        id,
        subscriber: "app",
        watched,
        policy,
    }
}

fn phone() -> Watched {
    Watched::Entities(vec![eid("phone")])
}

const BELOW_10: Policy = Policy::Threshold {
    attribute: Attribute::BatteryPct,
    crossing: Crossing::Below,
    bound: 10,
};

/// The reasons of what `battery` readings fire, one reading at a time.
fn run(book: &mut StatusBook<&'static str>, readings: &[Option<u8>]) -> Vec<usize> {
    readings
        .iter()
        .map(|b| {
            book.observe(state("phone", "alice", Status::Online, *b))
                .len()
        })
        .collect()
}

#[test]
fn a_threshold_fires_once_per_crossing() {
    let now = t0();
    let mut book = StatusBook::new();
    book.know(state("phone", "alice", Status::Online, Some(50)));
    book.add(now, sub(1, phone(), BELOW_10));
    // 20: quiet; 9: crosses, fires; 8, 5: still below, nothing; 10: back (not below), re-armed;
    // 7: crosses again, fires; unknown: neither fires nor re-arms; 3: still fired, nothing.
    let fired = run(
        &mut book,
        &[
            Some(20),
            Some(9),
            Some(8),
            Some(5),
            Some(10),
            Some(7),
            None,
            Some(3),
        ],
    );
    assert_eq!(fired, [0, 1, 0, 0, 0, 1, 0, 0]);
}

#[test]
fn a_threshold_already_crossed_at_subscription_waits_for_the_next_crossing() {
    let now = t0();
    let mut book = StatusBook::new();
    book.know(state("phone", "alice", Status::Online, Some(5)));
    book.add(now, sub(1, phone(), BELOW_10));
    assert_eq!(run(&mut book, &[Some(4), Some(50), Some(9)]), [0, 0, 1]);
}

#[test]
fn a_threshold_above_fires_going_up() {
    let now = t0();
    let mut book = StatusBook::new();
    let above = Policy::Threshold {
        attribute: Attribute::BatteryPct,
        crossing: Crossing::Above,
        bound: 90,
    };
    book.add(now, sub(1, phone(), above));
    assert_eq!(
        run(
            &mut book,
            &[Some(80), Some(90), Some(91), Some(95), Some(89), Some(100)]
        ),
        [0, 0, 1, 0, 0, 1]
    );
    let notices = book.observe(state("phone", "alice", Status::Online, Some(50)));
    assert!(notices.is_empty());
    let n = book.observe(state("phone", "alice", Status::Online, Some(99)));
    assert_eq!(n[0].reason, NotifyReason::Threshold);
    assert_eq!(
        n[0].entries[0].battery_pct,
        Some(99),
        "it says the value that crossed"
    );
}

#[test]
fn thresholds_on_the_other_attributes_read_them() {
    let now = t0();
    let mut book = StatusBook::new();
    for (id, attribute) in [(1, Attribute::BatteryMinutes), (2, Attribute::FreeMemoryMb)] {
        let p = Policy::Threshold {
            attribute,
            crossing: Crossing::Below,
            bound: 30,
        };
        book.add(now, sub(id, phone(), p));
    }
    let mut s = state("phone", "alice", Status::Online, Some(50));
    s.battery_minutes = Some(20);
    s.free_memory_mb = Some(100);
    let n = book.observe(s.clone());
    assert_eq!(n.iter().map(|n| n.subscription).collect::<Vec<_>>(), [1]);
    s.free_memory_mb = Some(29);
    let n = book.observe(s);
    assert_eq!(n.iter().map(|n| n.subscription).collect::<Vec<_>>(), [2]);
}

#[test]
fn on_change_fires_on_status_and_label_not_on_attributes() {
    let now = t0();
    let mut book = StatusBook::new();
    book.know(state("phone", "alice", Status::Online, Some(50)));
    book.add(now, sub(1, phone(), Policy::OnChange));
    assert!(
        book.observe(state("phone", "alice", Status::Online, Some(40)))
            .is_empty()
    );
    let n = book.observe(state("phone", "alice", Status::Busy, Some(40)));
    assert_eq!((n.len(), n[0].reason), (1, NotifyReason::Change));
    assert_eq!(n[0].entries[0].status, Status::Busy);
    let mut custom = state("phone", "alice", Status::Custom, Some(40));
    custom.label = Some("driving".into());
    assert_eq!(book.observe(custom.clone()).len(), 1);
    custom.label = Some("in-a-meeting".into());
    assert_eq!(
        book.observe(custom.clone()).len(),
        1,
        "a new label is a change"
    );
    assert!(book.observe(custom).is_empty());
    // Another entity does not fire it.
    assert!(
        book.observe(state("tv", "alice", Status::Offline, None))
            .is_empty()
    );
}

#[test]
fn a_user_watch_sees_every_device_of_that_user_only() {
    let now = t0();
    let mut book = StatusBook::new();
    book.know(state("phone", "alice", Status::Online, None));
    book.know(state("watch", "bob", Status::Online, None));
    let alice = Watched::User(UserId::new("alice").unwrap());
    book.add(now, sub(1, alice.clone(), Policy::OnChange));
    assert_eq!(book.entries(&alice).len(), 1);
    assert!(
        book.observe(state("watch", "bob", Status::Offline, None))
            .is_empty()
    );
    assert_eq!(
        book.observe(state("phone", "alice", Status::Offline, None))
            .len(),
        1
    );
    // A device seen for the first time is a change.
    assert_eq!(
        book.observe(state("tv", "alice", Status::Online, None))
            .len(),
        1
    );
    assert_eq!(book.entries(&alice).len(), 2);
}

#[test]
fn each_subscription_fires_for_itself() {
    let now = t0();
    let mut book = StatusBook::new();
    book.add(now, sub(1, phone(), Policy::OnChange));
    book.add(
        now,
        sub(
            2,
            Watched::User(UserId::new("alice").unwrap()),
            Policy::OnChange,
        ),
    );
    book.add(
        now,
        sub(3, Watched::Entities(vec![eid("tv")]), Policy::OnChange),
    );
    let n = book.observe(state("phone", "alice", Status::Online, None));
    assert_eq!(n.iter().map(|n| n.subscription).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn periodic_subscriptions_are_due_on_their_grid() {
    let t0 = t0();
    let p = Duration::from_secs(10);
    let mut book = StatusBook::new();
    book.know(state("phone", "alice", Status::Busy, Some(50)));
    book.add(t0, sub(1, phone(), Policy::Periodic { period: p }));
    assert_eq!(book.poll_timeout(), Some(t0 + p));
    assert!(book.due(t0 + p - Duration::from_millis(1)).is_empty());
    let n = book.due(t0 + p);
    assert_eq!((n.len(), n[0].reason), (1, NotifyReason::Periodic));
    assert_eq!(n[0].entries[0].status, Status::Busy);
    assert_eq!(book.poll_timeout(), Some(t0 + 2 * p));
    // Late by two and a half periods: one notice, the next on the grid.
    let n = book.due(t0 + 4 * p + p / 2);
    assert_eq!(n.len(), 1);
    assert_eq!(book.poll_timeout(), Some(t0 + 5 * p));
    // Status changes do not fire it.
    assert!(
        book.observe(state("phone", "alice", Status::Online, Some(1)))
            .is_empty()
    );
}

#[test]
fn a_removed_subscription_is_gone_everywhere() {
    let now = t0();
    let mut book = StatusBook::new();
    book.know(state("phone", "alice", Status::Online, Some(50)));
    book.add(now, sub(1, phone(), BELOW_10));
    book.add(
        now,
        sub(2, phone(), Policy::Periodic { period: MIN_PERIOD }),
    );
    book.add(
        now,
        sub(
            3,
            Watched::User(UserId::new("alice").unwrap()),
            Policy::OnChange,
        ),
    );
    assert_eq!(run(&mut book, &[Some(5)]), [1]);
    for id in [1, 2, 3] {
        assert!(book.remove(id).is_some());
    }
    assert!(book.remove(1).is_none());
    assert!(book.is_empty());
    assert_eq!(book.poll_timeout(), None);
    assert!(book.due(now + MAX_PERIOD).is_empty());
    assert_eq!(run(&mut book, &[Some(50), Some(5)]), [0, 0]);
    assert!(
        book.observe(state("phone", "alice", Status::Offline, None))
            .is_empty()
    );
    // Added again under the same id: armed afresh.
    book.add(now, sub(1, phone(), BELOW_10));
    assert_eq!(run(&mut book, &[Some(50), Some(5)]), [0, 1]);
    assert_eq!(book.len(), 1);
    assert!(book.get(1).is_some());
}

#[test]
fn policies_are_checked() {
    let p = |kind, attribute, crossing, bound, period_s| StatusPolicy {
        kind,
        attribute,
        crossing,
        bound,
        period_s,
    };
    assert_eq!(
        Policy::check(&p(PolicyKind::OnChange, None, None, None, None)),
        Ok(Policy::OnChange)
    );
    assert_eq!(
        Policy::check(&p(
            PolicyKind::Threshold,
            Some(Attribute::BatteryPct),
            Some(Crossing::Below),
            Some(10),
            None
        )),
        Ok(BELOW_10)
    );
    for bad in [
        p(
            PolicyKind::Threshold,
            None,
            Some(Crossing::Below),
            Some(10),
            None,
        ),
        p(
            PolicyKind::Threshold,
            Some(Attribute::BatteryPct),
            None,
            Some(10),
            None,
        ),
        p(
            PolicyKind::Threshold,
            Some(Attribute::BatteryPct),
            Some(Crossing::Below),
            None,
            None,
        ),
        p(
            PolicyKind::Threshold,
            Some(Attribute::Unknown(9)),
            Some(Crossing::Below),
            Some(1),
            None,
        ),
        p(
            PolicyKind::Threshold,
            Some(Attribute::BatteryPct),
            Some(Crossing::Unknown(9)),
            Some(1),
            None,
        ),
        p(PolicyKind::Periodic, None, None, None, None),
        p(PolicyKind::Periodic, None, None, None, Some(4)),
        p(PolicyKind::Periodic, None, None, None, Some(86_401)),
        p(PolicyKind::Unknown(7), None, None, None, None),
    ] {
        assert!(Policy::check(&bad).is_err(), "{bad:?}");
    }
    for ok in [5, 86_400] {
        assert_eq!(
            Policy::check(&p(PolicyKind::Periodic, None, None, None, Some(ok))),
            Ok(Policy::Periodic {
                period: Duration::from_secs(u64::from(ok))
            })
        );
    }
}

#[test]
fn each_subscribers_subscriptions_are_counted_as_they_come_and_go() {
    let now = t0();
    let mut book = StatusBook::new();
    book.add(now, sub(1, phone(), Policy::OnChange));
    book.add(now, sub(2, phone(), BELOW_10));
    let other = Subscription {
        subscriber: "other",
        ..sub(3, phone(), Policy::OnChange)
    };
    book.add(now, other);
    assert_eq!((book.count_of(&"app"), book.count_of(&"other")), (2, 1));
    assert_eq!(book.ids_of(&"app"), [1, 2]);
    // Replaced under the same id by another subscriber: moved, not counted twice.
    book.add(
        now,
        Subscription {
            subscriber: "other",
            ..sub(2, phone(), Policy::OnChange)
        },
    );
    assert_eq!((book.count_of(&"app"), book.count_of(&"other")), (1, 2));
    book.remove(1);
    book.remove(2);
    book.remove(3);
    assert_eq!((book.count_of(&"app"), book.count_of(&"other")), (0, 0));
    assert!(book.ids_of(&"app").is_empty());
}

#[test]
fn only_watched_entities_are_kept_and_a_new_subscription_starts_from_the_record() {
    let now = t0();
    let mut book: StatusBook<&'static str> = StatusBook::new();
    // Nobody watches: a report is neither decided on nor kept.
    assert!(
        book.observe(state("phone", "alice", Status::Busy, Some(5)))
            .is_empty()
    );
    assert_eq!(book.state(&eid("phone")), None);
    // Subscribed with the record's state: armed from it (5 % is below 10 already).
    let record = state("phone", "alice", Status::Busy, Some(5));
    book.add_with(
        now,
        sub(1, phone(), BELOW_10),
        vec![record.clone(), state("tv", "alice", Status::Online, None)],
    );
    assert_eq!(book.state(&eid("phone")), Some(&record));
    assert_eq!(
        book.state(&eid("tv")),
        None,
        "the tv is not watched: not kept"
    );
    assert_eq!(run(&mut book, &[Some(4), Some(50), Some(9)]), [0, 0, 1]);
    // The last subscription watching it goes: so does its state.
    book.remove(1);
    assert_eq!(book.state(&eid("phone")), None);
    // A user watch keeps that user's devices only, and lets them go with it.
    let alice = Watched::User(UserId::new("alice").unwrap());
    book.add_with(
        now,
        sub(2, alice.clone(), Policy::OnChange),
        vec![state("tv", "alice", Status::Online, None)],
    );
    assert_eq!(book.entries(&alice).len(), 1);
    assert_eq!(
        book.observe(state("phone", "alice", Status::Online, None))
            .len(),
        1
    );
    assert!(
        book.observe(state("watch", "bob", Status::Online, None))
            .is_empty()
    );
    assert_eq!(book.state(&eid("watch")), None);
    book.remove(2);
    assert_eq!(book.state(&eid("tv")), None);
    assert_eq!(book.state(&eid("phone")), None);
}

#[test]
fn removing_one_subscription_leaves_the_others_crossings_as_they_were() {
    let now = t0();
    let mut book = StatusBook::new();
    book.know(state("phone", "alice", Status::Online, Some(50)));
    book.add(now, sub(1, phone(), BELOW_10));
    book.add(now, sub(2, phone(), BELOW_10));
    assert_eq!((book.len(), book.is_empty()), (2, false));
    let fired = book.observe(state("phone", "alice", Status::Online, Some(9)));
    assert_eq!(fired.len(), 2);
    book.remove(1);
    assert_eq!((book.len(), book.is_empty()), (1, false));
    // Subscription 2 crossed already: still below, it does not fire again.
    assert!(
        book.observe(state("phone", "alice", Status::Online, Some(8)))
            .is_empty()
    );
    book.remove(2);
    assert_eq!((book.len(), book.is_empty()), (0, true));
}

/// A subscriber's snapshot, made from the store's records as the subscription is kept, is what
/// the book gives once it knows them: the entities named in their order (a name twice, twice;
/// one not enrolled, not at all), or every device of the user by id, no other user's.
#[test]
fn a_snapshot_is_what_the_book_gives_for_the_same_records() {
    let records = vec![
        state("tv", "alice", Status::Busy, Some(50)),
        state("phone", "alice", Status::Online, Some(20)),
        state("watch", "bob", Status::Offline, None),
    ];
    let cases = [
        Watched::Entities(vec![eid("tv"), eid("ghost"), eid("phone"), eid("tv")]),
        Watched::Entities(vec![eid("watch")]),
        Watched::Entities(Vec::new()),
        Watched::User(UserId::new("alice").unwrap()),
        Watched::User(UserId::new("carol").unwrap()),
    ];
    for (id, watched) in (1..).zip(cases) {
        let mut book = StatusBook::new();
        book.add_with(
            t0(),
            sub(id, watched.clone(), Policy::OnChange),
            records.clone(),
        );
        assert_eq!(
            snapshot(&watched, &records),
            book.entries(&watched),
            "{watched:?}"
        );
    }
    let named = snapshot(
        &Watched::Entities(vec![eid("tv"), eid("ghost"), eid("tv")]),
        &records,
    );
    let ids: Vec<&str> = named.iter().map(|e| e.entity.as_str()).collect();
    assert_eq!(ids, ["tv", "tv"]);
    let alice = snapshot(&Watched::User(UserId::new("alice").unwrap()), &records);
    let ids: Vec<&str> = alice.iter().map(|e| e.entity.as_str()).collect();
    assert_eq!(ids, ["phone", "tv"]);
    assert_eq!(alice[1].battery_pct, Some(50));
}
