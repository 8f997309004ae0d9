//! Service watches (004 §5.5.5 "advertise"; docs/services.md, "Watches"): a PNE watches the
//! directory, and each entry published later that matches and that it may see is pushed to it
//! by a secure notice, end to end through the PN GW (docs/security.md §4.8, "Notices"). A
//! replayed, renumbered or tampered notice is not told.

use cpns_wire::{
    Body, ErrorCode, PnId, SecureNotice, ServiceMatch, ServiceWatch, SetupType, UserId,
};

use super::harness::{Harness, Party, pne_id, rewrite};
use super::store::PneSpec;
use crate::pne::{Outcome, PneEvent};
use crate::{CommandId, Failure};

fn doc(id: &str, keywords: &str, scope: &str) -> Vec<u8> {
    format!(
        r#"{{"service_id":"{id}","name":"Living room TV","type":"media.renderer","version":"1",
            "keywords":[{keywords}],"scope":{scope},"delivery":["push"],"lease_s":600}}"#
    )
    .into_bytes()
}

const USER: &str = r#"{"kind":"user"}"#;
const PUBLIC: &str = r#"{"kind":"public"}"#;

/// PNEs 0, 1 and 2 are members of one PN; 0 and 1 registered.
fn world() -> (Harness, PnId) {
    let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::ready(&specs);
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    h.register(1, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    (h, pn)
}

fn watch(words: &[&str], all: bool) -> ServiceWatch {
    ServiceWatch {
        keywords: words.iter().map(|w| w.to_string()).collect(),
        all,
        service_type: None,
    }
}

/// PNE `i` watches; the watch id.
fn watching(h: &mut Harness, i: usize, w: ServiceWatch) -> u64 {
    let now = h.now();
    let id = h.pnes[i].watch_services(now, w).unwrap();
    h.pump();
    match h.outcome(i, id) {
        Outcome::ServiceWatching { watch_id } => *watch_id,
        other => panic!("{other:?}"),
    }
}

fn publish(h: &mut Harness, i: usize, d: Vec<u8>) {
    let now = h.now();
    let id = h.pnes[i].publish_service(now, d).unwrap();
    h.pump();
    assert!(matches!(h.outcome(i, id), Outcome::ServicePublished(_)));
}

/// The matches PNE `i` was told.
fn matches(h: &Harness, i: usize) -> Vec<ServiceMatch> {
    h.pne_events(i)
        .into_iter()
        .filter_map(|e| match e {
            PneEvent::ServiceMatched(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn refused(h: &Harness, i: usize, id: CommandId) -> ErrorCode {
    match h.completion(i, id) {
        Some(crate::Completed {
            result: Err(Failure::Refused(e)),
            ..
        }) => e.code,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_watcher_is_told_of_a_new_match_end_to_end_and_of_nothing_else() {
    let (mut h, _) = world();
    let w = watching(&mut h, 1, watch(&["Video"], true));
    // Another keyword, another type: not told.
    publish(&mut h, 0, doc("radio", r#""audio""#, USER));
    let mut typed = watch(&["video"], true);
    typed.service_type = Some("media.camera".into());
    let camera_watch = watching(&mut h, 1, typed);
    assert!(matches(&h, 1).is_empty());
    publish(&mut h, 0, doc("tv", r#""video","renderer""#, USER));
    let told = matches(&h, 1);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].watch_id, w);
    assert_ne!(told[0].watch_id, camera_watch);
    assert_eq!(
        (told[0].entry.service_id.as_str(), &told[0].entry.offerer),
        ("tv", &pne_id(0))
    );
    assert_eq!(told[0].entry.keywords, ["video", "renderer"]);
    // The offerer is not told of its own publish, and the PN GW relayed it unread.
    assert!(matches(&h, 0).is_empty());
    assert!(
        h.log
            .iter()
            .all(|f| !f.body.windows(14).any(|x| x == b"Living room TV")),
        "a match crossed the PN GW in the clear"
    );
    // An update of a matching entry is told again.
    publish(&mut h, 0, doc("tv", r#""video""#, USER));
    assert_eq!(matches(&h, 1).len(), 2);
}

#[test]
fn all_or_any_keywords_and_a_watch_of_everything() {
    let (mut h, _) = world();
    let both = watching(&mut h, 1, watch(&["video", "camera"], true));
    let either = watching(&mut h, 1, watch(&["video", "camera"], false));
    let everything = watching(&mut h, 1, watch(&[], true));
    publish(&mut h, 0, doc("tv", r#""video""#, USER));
    let told: Vec<u64> = matches(&h, 1).iter().map(|m| m.watch_id).collect();
    assert!(
        told.contains(&either) && told.contains(&everything),
        "{told:?}"
    );
    assert!(!told.contains(&both));
    publish(&mut h, 0, doc("cam", r#""video","camera""#, USER));
    let told: Vec<u64> = matches(&h, 1).iter().map(|m| m.watch_id).collect();
    assert!(told.contains(&both));
    assert_eq!(told.len(), 5, "{told:?}");
}

#[test]
fn a_watcher_is_told_only_of_what_it_may_see() {
    let (mut h, _) = world();
    h.store.entities.get_mut(&pne_id(1)).unwrap().owner = UserId::new("carol").unwrap();
    watching(&mut h, 1, watch(&["video"], true));
    publish(&mut h, 0, doc("mine", r#""video""#, USER));
    assert!(
        matches(&h, 1).is_empty(),
        "alice's user-scoped entry is not carol's"
    );
    publish(&mut h, 0, doc("all", r#""video""#, PUBLIC));
    let told = matches(&h, 1);
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].entry.service_id, "all");
}

#[test]
fn a_replayed_renumbered_or_tampered_notice_is_not_told() {
    let (mut h, _) = world();
    watching(&mut h, 1, watch(&["video"], true));
    publish(&mut h, 0, doc("tv", r#""video""#, USER));
    assert_eq!(matches(&h, 1).len(), 1);
    let sent = h
        .log
        .iter()
        .rev()
        .find(|f| {
            f.to == Party::Pne(1)
                && f.env()
                    .is_some_and(|e| matches!(e.body, Body::SecureNotice(_)))
        })
        .unwrap()
        .body
        .clone();
    // The same frame again.
    h.inject(Party::Gw, Party::Pne(1), sent.clone());
    h.pump();
    assert_eq!(matches(&h, 1).len(), 1, "a replay is not told");
    // Renumbered past the last (so not a replay by number): it does not open.
    let bump = |f: fn(&mut SecureNotice)| {
        rewrite(&sent, |env| {
            if let Body::SecureNotice(n) = &mut env.body {
                f(n);
            }
        })
    };
    h.inject(Party::Gw, Party::Pne(1), bump(|n| n.notice_id += 1));
    h.inject(Party::Gw, Party::Pne(1), bump(|n| n.notice_id = u64::MAX));
    h.inject(
        Party::Gw,
        Party::Pne(1),
        bump(|n| {
            let last = n.sealed.len() - 1;
            n.sealed[last] ^= 1;
            n.notice_id += 7;
        }),
    );
    h.inject(
        Party::Gw,
        Party::Pne(1),
        bump(|n| n.pn_id = PnId::from_bytes([9; 16])),
    );
    h.pump();
    assert_eq!(matches(&h, 1).len(), 1);
    // None of that stopped the next real one.
    publish(&mut h, 0, doc("tv2", r#""video""#, USER));
    assert_eq!(matches(&h, 1).len(), 2);
    // A notice for PNE 1 handed to PNE 2 does not open there.
    let for_one = h
        .log
        .iter()
        .rev()
        .find(|f| {
            f.to == Party::Pne(1)
                && f.env()
                    .is_some_and(|e| matches!(e.body, Body::SecureNotice(_)))
        })
        .unwrap()
        .body
        .clone();
    let to_two = rewrite(&for_one, |env| {
        env.to = cpns_wire::Address::Entity(pne_id(2))
    });
    h.inject(Party::Gw, Party::Pne(2), to_two);
    h.pump();
    assert!(matches(&h, 2).is_empty());
}

#[test]
fn unwatching_stops_the_matches_and_is_only_the_watchers() {
    let (mut h, _) = world();
    let w = watching(&mut h, 1, watch(&["video"], true));
    let now = h.now();
    let theirs = h.pnes[0].unwatch_services(now, w).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(0, theirs),
        &Outcome::ServiceUnwatched { removed: false }
    );
    publish(&mut h, 0, doc("tv", r#""video""#, USER));
    assert_eq!(matches(&h, 1).len(), 1, "still PNE 1's");
    let now = h.now();
    let mine = h.pnes[1].unwatch_services(now, w).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(1, mine),
        &Outcome::ServiceUnwatched { removed: true }
    );
    publish(&mut h, 0, doc("tv2", r#""video""#, USER));
    assert_eq!(matches(&h, 1).len(), 1, "no more after unwatching");
    assert!(h.store.watches.is_empty());
}

#[test]
fn a_pne_keeps_a_bounded_number_of_watches_of_a_few_keywords() {
    let (mut h, _) = world();
    for n in 0..crate::server::directory::MAX_WATCHES {
        watching(&mut h, 1, watch(&[&format!("k{n}")], true));
    }
    let now = h.now();
    let id = h.pnes[1]
        .watch_services(now, watch(&["one-more"], true))
        .unwrap();
    h.pump();
    assert_eq!(refused(&h, 1, id), ErrorCode::Forbidden);
    let flood: Vec<String> = (0..9).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = flood.iter().map(String::as_str).collect();
    let id = h.pnes[0].watch_services(now, watch(&refs, false)).unwrap();
    h.pump();
    assert_eq!(refused(&h, 0, id), ErrorCode::BadRequest);
    assert_eq!(
        h.store.watches.len(),
        crate::server::directory::MAX_WATCHES as usize
    );
}

#[test]
fn a_pne_takes_no_notice_of_a_pn_it_left() {
    let (mut h, pn) = world();
    let sk = h.store.session_keys[&(pn, pne_id(1))].clone();
    let notice = |id: u64| {
        let call = cpns_wire::SecureCall {
            service: cpns_wire::SERVICE_MATCH.into(),
            payload: minicbor::to_vec(ServiceMatch {
                watch_id: 1,
                entry: cpns_wire::ServiceSummary {
                    dir_id: 1,
                    offerer: pne_id(0),
                    owner: UserId::new("alice").unwrap(),
                    service_id: "tv".into(),
                    service_type: "media.renderer".into(),
                    name: "TV".into(),
                    keywords: vec!["video".into()],
                },
            })
            .unwrap(),
        };
        let me = pne_id(1);
        let binding = cpns_crypto::NoticeBinding {
            pn_id: pn.as_bytes(),
            pne_id: me.as_str(),
            notice_id: id,
        };
        let mut rng = cpns_crypto::MachineRng::from_seed_u64(id);
        let sealed = cpns_crypto::seal_secure_notice(
            rng.get(),
            &sk,
            &binding,
            &minicbor::to_vec(&call).unwrap(),
        )
        .unwrap();
        let env = cpns_wire::Envelope::notify(
            900 + id,
            cpns_wire::Address::Server,
            cpns_wire::Address::Entity(pne_id(1)),
            SecureNotice {
                pn_id: pn,
                notice_id: id,
                sealed,
            },
        );
        super::harness::plain(&env)
    };
    // A member takes it (the server's seal, made here with the member's key).
    h.inject(Party::Gw, Party::Pne(1), notice(10));
    h.pump();
    assert_eq!(matches(&h, 1).len(), 1);
    // Once out of the PN, a notice of that PN is not taken, though it opens under the key the
    // PNE registered with there.
    let now = h.now();
    h.pnes[1].leave_pn(now, pn).unwrap();
    h.pump();
    assert!(h.pnes[1].inventory().iter().all(|i| i.pn_id != pn));
    h.inject(Party::Gw, Party::Pne(1), notice(11));
    h.pump();
    assert_eq!(matches(&h, 1).len(), 1);
}
