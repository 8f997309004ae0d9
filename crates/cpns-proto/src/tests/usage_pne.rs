//! A PNE's usage reporting in the machine (004 §5.5.4; docs/device-status.md): `send_usage`
//! and the PNE's own cadence (`PneConfig::usage_every`). What its preferences allow goes end to
//! end; records of private services are marked done and never leave; the device's store is
//! asked for records (`LoadUsage`) and told which are done (`MarkUsage`), only once the server
//! acknowledged them.

use std::collections::BTreeMap;
use std::time::Duration;

use cpns_wire::{Audience, SetupType, Status, UsageRecord};

use super::harness::{FLOW, Harness, WALL_AT_BASE};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};
use crate::usage::{Preference, Preferences};
use crate::{CommandError, Failure, Flow};

const EVERY: Duration = Duration::from_secs(60);

fn record(id: u64, service: &str) -> UsageRecord {
    let now_s = (WALL_AT_BASE / 1000) as u64;
    UsageRecord {
        id,
        service: service.into(),
        start_s: now_s - 600,
        end_s: now_s - 60,
        bytes: 10 * id,
        audience: Audience::Server,
        status: Some(Status::Online),
        battery_start: None,
        battery_end: None,
        networks: Vec::new(),
    }
}

/// `diary` is private; everything else goes to the server.
fn prefs() -> Preferences {
    Preferences {
        default: Preference::Server,
        services: BTreeMap::from([("diary".to_string(), Preference::Private)]),
    }
}

/// PNE 0 in a PN and registered (a secure session), its own turns every `every`, with records
/// 1 (maps), 2 (diary, private) and 3 (music) in its store.
fn registered(every: Option<Duration>) -> Harness {
    let specs = [PneSpec::cpns(), PneSpec::trusted()];
    let mut h = Harness::new(&specs);
    h.pne_cfgs[0].usage_every = every;
    // New machines with that setting; the PN GW connects again.
    h.restart_from_stores(&specs);
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    let records = vec![record(1, "maps"), record(2, "diary"), record(3, "music")];
    h.store.pne_usage.insert(0, (records, prefs()));
    h
}

/// The record ids still unsent in PNE 0's store.
fn unsent(h: &Harness) -> Vec<u64> {
    h.store.pne_usage[&0].0.iter().map(|r| r.id).collect()
}

/// The services of the records the server keeps.
fn at_server(h: &Harness) -> Vec<String> {
    h.store
        .usage
        .values()
        .map(|u| u.record.service.clone())
        .collect()
}

#[test]
fn a_send_goes_end_to_end_and_the_private_record_never_leaves() {
    let mut h = registered(None);
    let (records, p) = h.store.pne_usage[&0].clone();
    let now = h.now();
    let id = h.pnes[0].send_usage(now, &records, &p).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(0, id),
        &Outcome::UsageSent {
            ids: vec![1, 3],
            stored: 2,
            duplicates: 0,
            charged: 0,
            withheld: vec![2],
        }
    );
    assert_eq!(unsent(&h), Vec::<u64>::new());
    let mut kept = at_server(&h);
    kept.sort();
    assert_eq!(kept, ["maps", "music"]);
    // The diary never crossed the PAN or the WAN, sealed or not.
    assert!(
        h.log
            .iter()
            .all(|f| !f.body.windows(5).any(|w| w == b"diary"))
    );
    // Sending the same records again: the server has them (duplicates), nothing new stored.
    let again = h.pnes[0].send_usage(now, &records, &p).unwrap();
    h.pump();
    assert!(matches!(
        h.outcome(0, again),
        Outcome::UsageSent {
            stored: 0,
            duplicates: 2,
            ..
        }
    ));
    // Nothing to send but a private record: done at once, nothing sent.
    let sent = h.log.len();
    let only_private = h.pnes[0]
        .send_usage(now, &[record(4, "diary")], &p)
        .unwrap();
    h.pump();
    assert_eq!(
        h.outcome(0, only_private),
        &Outcome::UsageSent {
            ids: vec![],
            stored: 0,
            duplicates: 0,
            charged: 0,
            withheld: vec![4],
        }
    );
    assert_eq!(h.log.len(), sent);
}

#[test]
fn one_report_at_a_time_and_none_without_a_session() {
    let mut h = registered(None);
    let (records, p) = h.store.pne_usage[&0].clone();
    let now = h.now();
    h.pnes[0].send_usage(now, &records, &p).unwrap();
    assert_eq!(
        h.pnes[0].send_usage(now, &records, &p),
        Err(CommandError::ChangeRunning {
            flow: Flow::SecureCall
        })
    );
    // A PNE in no PN and never registered holds no key to seal with.
    let mut lone = Harness::ready(&[PneSpec::trusted()]);
    let now = lone.now();
    assert_eq!(
        lone.pnes[0].send_usage(now, &records, &p),
        Err(CommandError::NoSecureSession)
    );
}

#[test]
fn a_refused_report_marks_nothing_and_says_why() {
    let mut h = registered(None);
    h.drop_message("SecureResponse");
    let (records, p) = h.store.pne_usage[&0].clone();
    let now = h.now();
    let id = h.pnes[0].send_usage(now, &records, &p).unwrap();
    h.pump();
    h.advance(FLOW);
    assert_eq!(
        h.completion(0, id).map(|c| &c.result),
        Some(&Err(Failure::TimedOut))
    );
    // The private one is done (it never goes); the others wait for the next turn.
    assert_eq!(unsent(&h), [1, 3]);
    // A new report may go now.
    h.clear_hook();
    let now = h.now();
    let next = h.pnes[0].send_usage(now, &records, &p).unwrap();
    h.pump();
    assert!(matches!(h.outcome(0, next), Outcome::UsageSent { .. }));
}

#[test]
fn its_own_turns_come_every_interval_with_a_session_only() {
    let mut h = registered(Some(EVERY));
    // The clock started with the link: the first turn is due one interval after discovery.
    let due = h.pnes[0].poll_timeout().unwrap();
    assert!(due <= h.now() + EVERY, "{due:?}");
    h.advance(due - h.now() - Duration::from_millis(1));
    assert!(at_server(&h).is_empty());
    h.advance(Duration::from_millis(1));
    let mut kept = at_server(&h);
    kept.sort();
    assert_eq!(kept, ["maps", "music"]);
    assert_eq!(unsent(&h), Vec::<u64>::new());
    assert!(h.pne_events(0).contains(&&PneEvent::UsageSent {
        sent: 2,
        duplicates: 0,
        charged: 0,
        withheld: 1,
    }));
    // The next turn, one interval later, finds nothing to send: nothing goes.
    h.store
        .pne_usage
        .insert(0, (vec![record(5, "maps")], prefs()));
    h.advance(EVERY - Duration::from_millis(1));
    assert_eq!(at_server(&h).len(), 2);
    assert_eq!(unsent(&h), [5]);
    h.advance(Duration::from_millis(1));
    assert_eq!(unsent(&h), Vec::<u64>::new());
    assert_eq!(at_server(&h).len(), 3);
    assert_eq!(h.store.usage_loads.get(&0), Some(&2));
}

/// Without a secure session of its own (never registered), a PNE's turns ask its store for
/// nothing.
#[test]
fn a_pne_without_a_session_has_no_turns() {
    let specs = [PneSpec::cpns(), PneSpec::trusted()];
    let mut h = Harness::new(&specs);
    h.pne_cfgs[1].usage_every = Some(EVERY);
    h.restart_from_stores(&specs);
    h.discover_all();
    h.setup(0, SetupType::All);
    assert!(h.pnes[1].secure_session().is_none());
    h.advance(EVERY * 3);
    assert_eq!(h.store.usage_loads.get(&1), None);
}

#[test]
fn a_turn_whose_store_fails_is_told_and_the_next_one_comes() {
    let mut h = registered(Some(EVERY));
    h.store.fail_pne = true;
    let due = h.pnes[0].poll_timeout().unwrap();
    h.advance(due - h.now());
    assert!(h.pne_failed_flows(0).iter().any(|e| matches!(
        e,
        PneEvent::FlowFailed {
            flow: Flow::SecureCall,
            reason: Failure::Store(_)
        }
    )));
    assert!(at_server(&h).is_empty());
    h.store.fail_pne = false;
    h.advance(EVERY);
    assert_eq!(at_server(&h).len(), 2);
}

#[test]
fn a_load_answer_it_did_not_ask_for_is_refused() {
    let mut h = registered(Some(EVERY));
    let now = h.now();
    assert_eq!(
        h.pnes[0].handle_usage_loaded(now, crate::Token(99), Ok((Vec::new(), prefs()))),
        Err(crate::ProtoError::UnknownToken)
    );
}

/// A command's report in flight when the PNE's own turn comes: the turn is skipped, so no
/// record goes twice at once.
#[test]
fn a_turn_while_a_command_report_waits_is_skipped() {
    let mut h = registered(Some(EVERY));
    h.drop_message("SecureResponse");
    let due = h.pnes[0].poll_timeout().unwrap();
    h.advance(due - h.now() - Duration::from_secs(1));
    let (records, p) = h.store.pne_usage[&0].clone();
    let now = h.now();
    let id = h.pnes[0].send_usage(now, &records, &p).unwrap();
    h.pump();
    h.advance(Duration::from_secs(1));
    let requests = |h: &Harness| {
        h.log
            .iter()
            .filter(|f| f.message == "SecureRequest" && f.from == super::harness::Party::Pne(0))
            .count()
    };
    assert_eq!(requests(&h), 1, "the turn sent nothing of its own");
    assert_eq!(h.store.usage_loads.get(&0), None, "nor asked its store");
    assert!(
        h.completion(0, id).is_none(),
        "the command's report still waits"
    );
    // Once it ended, the next turn goes.
    h.clear_hook();
    h.advance(EVERY);
    assert_eq!(requests(&h), 2);
    assert_eq!(at_server(&h).len(), 2);
}
