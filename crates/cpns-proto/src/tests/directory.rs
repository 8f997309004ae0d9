//! The service directory through the machines (004 §5.5.5; docs/services.md): a PNE
//! publishes, discovers and retrieves over its secure session, end to end through the PN GW;
//! visibility follows scope, lease and the offerer's status; bad input is refused with its
//! reason and changes nothing.

use cpns_wire::{
    DeviceCapabilities, ErrorCode, PnId, SERVICE_PUBLISH, ServiceDiscover, ServicePublish,
    SetupType, Status, UserId,
};

use super::harness::{Harness, pne_id};
use super::store::PneSpec;
use crate::pne::Outcome;
use crate::server::ServerConfig;
use crate::{CommandError, CommandId, Failure};

/// A renderer's description in `scope`, with `lease_s`.
fn renderer(scope: &str, lease_s: u32) -> Vec<u8> {
    format!(
        r#"{{"service_id":"renderer","name":"Living room TV","type":"media.renderer",
            "version":"1","keywords":["Video","renderer"],"scope":{scope},
            "delivery":["push","pull"],"lease_s":{lease_s},"requires":{{"has_ui":true}}}}"#
    )
    .into_bytes()
}

const USER: &str = r#"{"kind":"user"}"#;

/// PNEs 0 and 1 are members of one PN and registered in it.
fn world() -> (Harness, PnId) {
    world_with(ServerConfig::default())
}

fn world_with(cfg: ServerConfig) -> (Harness, PnId) {
    let specs = [PneSpec::trusted(), PneSpec::trusted(), PneSpec::trusted()];
    let mut h = Harness::with_server(&specs, cfg);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).unwrap().pn_id;
    h.register(0, Some(pn));
    h.register(1, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    (h, pn)
}

fn discover(words: &[&str]) -> ServiceDiscover {
    ServiceDiscover {
        keywords: words.iter().map(|w| w.to_string()).collect(),
        all: true,
        service_type: None,
        fits_me: false,
        after: 0,
    }
}

fn publish(h: &mut Harness, i: usize, doc: Vec<u8>) -> CommandId {
    let now = h.now();
    let id = h.pnes[i].publish_service(now, doc).unwrap();
    h.pump();
    id
}

/// What PNE `i` finds, as `offerer/service_id`.
fn found(h: &mut Harness, i: usize, ask: ServiceDiscover) -> Vec<String> {
    let now = h.now();
    let id = h.pnes[i].discover_services(now, ask).unwrap();
    h.pump();
    match h.outcome(i, id) {
        Outcome::ServicesFound(f) => f
            .entries
            .iter()
            .map(|e| format!("{}/{}", e.offerer, e.service_id))
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// The error code PNE `i`'s command `id` was refused with.
fn refused(h: &Harness, i: usize, id: CommandId) -> (ErrorCode, String) {
    match h.completion(i, id) {
        Some(crate::Completed {
            result: Err(Failure::Refused(e)),
            ..
        }) => (e.code, e.reason.clone()),
        other => panic!("command {id} of PNE {i}: {other:?}"),
    }
}

#[test]
fn a_published_service_is_discovered_by_keyword_and_retrieved_whole_end_to_end() {
    let (mut h, _) = world();
    let id = publish(&mut h, 0, renderer(USER, 600));
    let Outcome::ServicePublished(p) = h.outcome(0, id).clone() else {
        panic!()
    };
    assert_eq!(
        p.expires_at_ms,
        u64::try_from(super::harness::WALL_AT_BASE).unwrap() + 600_000 + elapsed_ms(&h)
    );
    let offerer = pne_id(0);
    assert_eq!(
        found(&mut h, 1, discover(&["video"])),
        [format!("{offerer}/renderer")]
    );
    // Keywords are matched as normalised; all or any.
    assert_eq!(found(&mut h, 1, discover(&[" VIDEO "])).len(), 1);
    assert!(found(&mut h, 1, discover(&["video", "camera"])).is_empty());
    let mut any = discover(&["video", "camera"]);
    any.all = false;
    assert_eq!(found(&mut h, 1, any).len(), 1);
    let mut typed = discover(&[]);
    typed.service_type = Some("media.camera".into());
    assert!(found(&mut h, 1, typed).is_empty());
    // Retrieve: the whole description, as kept.
    let now = h.now();
    let r = h.pnes[1].retrieve_service(now, p.dir_id).unwrap();
    h.pump();
    let Outcome::ServiceRetrieved(d) = h.outcome(1, r).clone() else {
        panic!()
    };
    assert_eq!((d.dir_id, &d.offerer), (p.dir_id, &offerer));
    let kept = cpns_service::parse(&d.description).unwrap();
    assert_eq!(kept.name, "Living room TV");
    assert_eq!(kept.keywords, ["video", "renderer"]);
    // The PN GW relayed it all without reading it.
    assert!(
        h.log
            .iter()
            .all(|f| !f.body.windows(14).any(|w| w == b"Living room TV")),
        "the description crossed the PN GW in the clear"
    );
    // A second publish of the same service updates it under the same id.
    let again = publish(&mut h, 0, renderer(r#"{"kind":"public"}"#, 600));
    let Outcome::ServicePublished(q) = h.outcome(0, again).clone() else {
        panic!()
    };
    assert_eq!(q.dir_id, p.dir_id);
    assert_eq!(h.store.services.len(), 1);
}

fn elapsed_ms(h: &Harness) -> u64 {
    u64::try_from(h.now().duration_since(h.base).as_millis()).unwrap()
}

#[test]
fn scope_keeps_a_users_entries_from_another_user_and_a_pns_from_non_members() {
    let (mut h, pn) = world();
    publish(&mut h, 0, renderer(USER, 600));
    let in_pn = renderer(&format!(r#"{{"kind":"pn","pn_id":"{pn}"}}"#), 600)
        .into_iter()
        .collect::<Vec<u8>>();
    let in_pn = String::from_utf8(in_pn)
        .unwrap()
        .replace("\"renderer\",\"name\"", "\"in-pn\",\"name\"");
    let id = publish(&mut h, 1, in_pn.into_bytes());
    assert!(matches!(h.outcome(1, id), Outcome::ServicePublished(_)));
    let all = || discover(&["video"]);
    assert_eq!(found(&mut h, 1, all()).len(), 2);
    // PNE 1 now belongs to carol: alice's user-scoped entry is not hers; the PN's is, as a
    // member.
    h.store.entities.get_mut(&pne_id(1)).unwrap().owner = UserId::new("carol").unwrap();
    assert_eq!(found(&mut h, 1, all()), [format!("{}/in-pn", pne_id(1))]);
    // Retrieving alice's entry by its id is refused as not there.
    let hidden = *h
        .store
        .services
        .iter()
        .find(|(_, (o, _, _))| *o == pne_id(0))
        .unwrap()
        .0;
    let now = h.now();
    let r = h.pnes[1].retrieve_service(now, hidden).unwrap();
    h.pump();
    assert_eq!(refused(&h, 1, r).0, ErrorCode::NotFound);
    // Out of the PN, the PN's entry is gone from its view too.
    h.store
        .pns
        .get_mut(&pn)
        .unwrap()
        .members
        .retain(|m| m.pne_id != pne_id(0));
    assert!(
        found(&mut h, 0, all())
            .iter()
            .all(|e| !e.ends_with("/in-pn"))
    );
    // A PNE publishes in a PN only as a member.
    let other = PnId::from_bytes([9; 16]);
    let id = publish(
        &mut h,
        1,
        renderer(&format!(r#"{{"kind":"pn","pn_id":"{other}"}}"#), 600),
    );
    assert_eq!(refused(&h, 1, id).0, ErrorCode::Forbidden);
}

#[test]
fn an_ended_lease_or_an_offline_offerer_hides_the_entry() {
    let (mut h, _) = world();
    publish(&mut h, 0, renderer(USER, 60));
    assert_eq!(found(&mut h, 1, discover(&["video"])).len(), 1);
    h.store
        .statuses
        .insert(pne_id(0), (h.store.status_of(&pne_id(0)).unwrap(), None));
    assert!(found(&mut h, 1, discover(&["video"])).is_empty(), "offline");
    h.store.statuses.get_mut(&pne_id(0)).unwrap().0.status = Status::Online;
    assert_eq!(found(&mut h, 1, discover(&["video"])).len(), 1);
    // The server's clock a minute on (the links' clocks stay: no heartbeats are due).
    let now = h.now();
    h.server
        .set_wall_clock(now, super::harness::WALL_AT_BASE + 61_000);
    assert!(
        found(&mut h, 1, discover(&["video"])).is_empty(),
        "lease ended"
    );
    // Published again, it is back.
    publish(&mut h, 0, renderer(USER, 60));
    assert_eq!(found(&mut h, 1, discover(&["video"])).len(), 1);
}

#[test]
fn only_what_the_device_can_consume_when_it_asks_so() {
    let (mut h, _) = world();
    publish(&mut h, 0, renderer(USER, 600));
    let mut fits = discover(&["video"]);
    fits.fits_me = true;
    // PNE 1's capabilities of record have no UI: the renderer needs one.
    h.store
        .reports
        .insert(pne_id(1), (Some(DeviceCapabilities::default()), None));
    assert!(found(&mut h, 1, fits.clone()).is_empty());
    assert_eq!(
        found(&mut h, 1, discover(&["video"])).len(),
        1,
        "unfiltered"
    );
    let with_ui = DeviceCapabilities {
        has_ui: true,
        ..DeviceCapabilities::default()
    };
    h.store.reports.insert(pne_id(1), (Some(with_ui), None));
    assert_eq!(found(&mut h, 1, fits).len(), 1);
}

#[test]
fn a_pne_unpublishes_only_its_own() {
    let (mut h, _) = world();
    publish(&mut h, 0, renderer(USER, 600));
    let now = h.now();
    let id = h.pnes[1].unpublish_service(now, "renderer".into()).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(1, id),
        &Outcome::ServiceUnpublished { removed: false }
    );
    assert_eq!(h.store.services.len(), 1, "PNE 0's is still there");
    let now = h.now();
    let id = h.pnes[0].unpublish_service(now, "renderer".into()).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(0, id),
        &Outcome::ServiceUnpublished { removed: true }
    );
    assert!(h.store.services.is_empty());
    assert!(found(&mut h, 1, discover(&[])).is_empty());
}

#[test]
fn bad_descriptions_and_keyword_floods_are_refused_and_change_nothing() {
    let (mut h, _) = world();
    let now = h.now();
    // Checked on the device: nothing leaves it.
    let sent = h.log.len();
    for bad in [b"{}".to_vec(), b"not json".to_vec(), vec![b' '; 17 * 1024]] {
        assert!(matches!(
            h.pnes[0].publish_service(now, bad),
            Err(CommandError::InvalidDescription(_))
        ));
    }
    h.pump();
    assert_eq!(h.log.len(), sent);
    // A PNE that skips the check is refused by the server, with the reason.
    let raw = minicbor::to_vec(ServicePublish {
        description: b"{\"service_id\":1}".to_vec(),
    })
    .unwrap();
    let id = h.pnes[0].secure_call(now, SERVICE_PUBLISH, raw).unwrap();
    h.pump();
    let (code, _) = refused(&h, 0, id);
    assert_eq!(code, ErrorCode::BadRequest);
    let id = h.pnes[0]
        .secure_call(now, SERVICE_PUBLISH, b"\xff\x00".to_vec())
        .unwrap();
    h.pump();
    assert_eq!(refused(&h, 0, id).0, ErrorCode::BadRequest);
    // Too many keywords, or a keyword that is no word.
    let flood: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = flood.iter().map(String::as_str).collect();
    let now = h.now();
    let id = h.pnes[1].discover_services(now, discover(&refs)).unwrap();
    h.pump();
    assert_eq!(refused(&h, 1, id).0, ErrorCode::BadRequest);
    let id = h.pnes[1]
        .discover_services(now, discover(&["two words"]))
        .unwrap();
    h.pump();
    assert_eq!(refused(&h, 1, id).0, ErrorCode::BadRequest);
    assert!(h.store.services.is_empty());
    assert_eq!(h.store.effects.get("publish_service"), None);
}

#[test]
fn a_flood_of_directory_requests_is_rate_limited_per_pne() {
    let (mut h, _) = world();
    let now = h.now();
    let burst = crate::server::ReportLimits::default().directory_burst;
    // One at a time (the PN GW relays a few at once per PNE), all at the same instant.
    let ids: Vec<_> = (0..=burst)
        .map(|_| {
            let id = h.pnes[1].discover_services(now, discover(&[])).unwrap();
            h.pump();
            id
        })
        .collect();
    let limited: Vec<_> = ids
        .iter()
        .filter(|id| {
            matches!(
                h.completion(1, **id),
                Some(crate::Completed { result: Err(Failure::Refused(e)), .. })
                    if e.code == ErrorCode::RateLimited
            )
        })
        .collect();
    assert_eq!(limited.len(), 1, "one past the burst");
    // Another PNE's bucket is its own.
    assert!(found(&mut h, 0, discover(&[])).is_empty());
}

#[test]
fn an_offerer_keeps_a_bounded_number_of_services() {
    let mut cfg = ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    let (mut h, _) = world_with(cfg);
    let max = crate::server::directory::MAX_OFFERED;
    for n in 0..max {
        let doc = String::from_utf8(renderer(USER, 600))
            .unwrap()
            .replace("\"renderer\",\"name\"", &format!("\"s{n}\",\"name\""));
        let id = publish(&mut h, 0, doc.into_bytes());
        assert!(
            matches!(h.outcome(0, id), Outcome::ServicePublished(_)),
            "{n}"
        );
    }
    let id = publish(&mut h, 0, renderer(USER, 600));
    let (code, reason) = refused(&h, 0, id);
    assert_eq!(code, ErrorCode::Forbidden);
    assert!(reason.contains("unpublish one"), "{reason}");
    // Updating one it has is still fine.
    let doc = String::from_utf8(renderer(USER, 900))
        .unwrap()
        .replace("\"renderer\",\"name\"", "\"s0\",\"name\"");
    let id = publish(&mut h, 0, doc.into_bytes());
    assert!(matches!(h.outcome(0, id), Outcome::ServicePublished(_)));
    assert_eq!(h.store.services.len(), max as usize);
}

#[test]
fn a_service_of_no_name_the_server_knows_is_not_found() {
    let (mut h, _) = world();
    let now = h.now();
    let payload = minicbor::to_vec(cpns_wire::ServiceRetrieve { dir_id: 1 }).unwrap();
    let id = h.pnes[0]
        .secure_call(now, "cpns.service.nonsense", payload)
        .unwrap();
    h.pump();
    let (code, reason) = refused(&h, 0, id);
    assert_eq!(code, ErrorCode::NotFound);
    assert_eq!(reason, "no such service");
}

#[test]
fn a_discovery_answers_a_page_at_a_time() {
    let mut cfg = ServerConfig::default();
    cfg.report_limits.directory_burst = 1000;
    let (mut h, _) = world_with(cfg);
    let page = crate::server::directory::PAGE;
    for n in 0..=page {
        let doc = String::from_utf8(renderer(USER, 600))
            .unwrap()
            .replace("\"renderer\",\"name\"", &format!("\"s{n}\",\"name\""));
        publish(&mut h, 0, doc.into_bytes());
    }
    let ask = |h: &mut Harness, after: u64| {
        let now = h.now();
        let mut d = discover(&["video"]);
        d.after = after;
        let id = h.pnes[1].discover_services(now, d).unwrap();
        h.pump();
        match h.outcome(1, id) {
            Outcome::ServicesFound(f) => f.clone(),
            other => panic!("{other:?}"),
        }
    };
    let first = ask(&mut h, 0);
    assert_eq!(first.entries.len(), page as usize);
    assert!(first.more, "one more follows");
    let last = first.entries.last().unwrap().dir_id;
    let rest = ask(&mut h, last);
    assert_eq!(rest.entries.len(), 1);
    assert!(!rest.more);
    assert!(rest.entries[0].dir_id > last);
    // Exactly a page: nothing more.
    let now = h.now();
    let id = h.pnes[0].unpublish_service(now, "s0".into()).unwrap();
    h.pump();
    assert_eq!(
        h.outcome(0, id),
        &Outcome::ServiceUnpublished { removed: true }
    );
    let whole = ask(&mut h, 0);
    assert_eq!(whole.entries.len(), page as usize);
    assert!(!whole.more);
}
