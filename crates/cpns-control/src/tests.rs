//! Lines round-trip with the version first, every verb is served by a role, errors carry the
//! code a client decides on, what is not a request of this version is refused with its code,
//! and the one mapping of capabilities carries every field of the wire's, unknown keys too.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use cpns_wire::{DeviceCapabilities, EntityId, PnId, Screen};

use super::*;

fn pn() -> PnId {
    "3f2a8e0d5b7c4a19b6e2d0f1a9c3e7c1".parse().unwrap()
}

fn group() -> cpns_wire::GroupId {
    "5d0c1e2f3a4b5c6d7e8f90a1b2c3d4e5".parse().unwrap()
}

fn id(s: &str) -> EntityId {
    s.parse().unwrap()
}

/// One request of every verb.
fn every_request() -> Vec<Request> {
    vec![
        Request::Hello {},
        Request::Show {},
        Request::Members { pn_id: pn() },
        Request::Query { pn_id: None },
        Request::Setup {
            with: Targets::List(vec![id("watch")]),
        },
        Request::Register { pn_id: Some(pn()) },
        Request::Join { pn_id: pn() },
        Request::Leave { pn_id: pn() },
        Request::Release { pn_id: pn() },
        Request::Invite {
            pn_id: pn(),
            pne: id("tv"),
        },
        Request::Expel {
            pn_id: pn(),
            pne: id("tv"),
        },
        Request::Establish {
            with: Targets::All,
            wait: true,
        },
        Request::AnswerInvitation {
            pn_id: pn(),
            accept: true,
        },
        Request::Events {},
        Request::Caps {
            entity: Some(id("phone")),
            live: true,
        },
        Request::CapsSet {
            capabilities: Box::new(Capabilities {
                device_type: Some("watch".into()),
                ..Capabilities::default()
            }),
        },
        Request::Status {
            entities: vec![id("phone")],
            user: None,
        },
        Request::StatusSet {
            status: OwnStatus::Custom,
            label: Some("driving".into()),
        },
        Request::Subscribe {
            entities: Vec::new(),
            user: Some("alice".parse().unwrap()),
            policy: Policy::Threshold {
                attribute: PolicyAttribute::BatteryPct,
                below: Some(10),
                above: None,
            },
        },
        Request::UsageRecord {
            service: "game".into(),
            start_s: 1,
            end_s: 2,
            bytes: 3,
            battery_start: Some(50),
        },
        Request::UsagePrefs {},
        Request::UsagePrefSet {
            service: "game".into(),
            preference: Preference::Private,
        },
        Request::UsageSummary {},
        Request::UsageSend {},
        Request::Usage { user: None },
        Request::Charging {
            user: Some("alice".parse().unwrap()),
            since_s: 7,
        },
        Request::DirectoryMerge {
            start: true,
            steps: Some(4),
            pages: None,
        },
        Request::Send {
            pn_id: PnId::from_bytes([3; 16]),
            text: Some("dinner".into()),
            hex: None,
        },
        Request::ServicePublish {
            description: serde_json::json!({"service_id": "album", "lease_s": 60}),
        },
        Request::ServiceUnpublish {
            service_id: "album".into(),
        },
        Request::ServiceDiscover {
            keywords: vec!["photo".into()],
            any: true,
            service_type: Some("media.album".into()),
            fits_me: true,
            after: 4,
        },
        Request::ServiceRetrieve { dir_id: 4 },
        Request::ServiceWatch {
            keywords: vec!["photo".into()],
            any: false,
            service_type: None,
        },
        Request::ServiceUnwatch { watch_id: 2 },
        Request::GroupCreate {
            name: "Album".into(),
            open_to_user: true,
            owning: Some(EntityId::new("phone").unwrap()),
        },
        Request::GroupInvite {
            group_id: group(),
            pne: EntityId::new("tv").unwrap(),
        },
        Request::GroupAnswer {
            group_id: group(),
            accept: false,
        },
        Request::GroupJoin { group_id: group() },
        Request::GroupLeave { group_id: group() },
        Request::GroupExpel {
            group_id: group(),
            pne: EntityId::new("tv").unwrap(),
        },
        Request::GroupDelete { group_id: group() },
        Request::GroupKey { group_id: group() },
        Request::GroupMembers { group_id: group() },
        Request::Groups {},
        Request::Deliver {
            file: "/home/alice/holiday.mp4".into(),
            to: vec![EntityId::new("tv").unwrap()],
            service_id: Some("video".into()),
            name: None,
            media_type: None,
            pn_id: None,
            source: None,
            specific: vec![],
            wait: false,
            held: true,
            requires: Some(serde_json::json!({"has_ui": true})),
            group: None,
            user: None,
            more: vec![],
        },
        Request::Deliver {
            file: "/home/alice/film.mp4".into(),
            to: vec![EntityId::new("tv").unwrap()],
            service_id: Some("video".into()),
            name: None,
            media_type: Some("video/mp4".into()),
            pn_id: None,
            source: None,
            specific: vec![],
            wait: false,
            held: false,
            requires: None,
            group: None,
            user: None,
            more: vec![crate::DeliverItem {
                file: "/home/alice/film.srt".into(),
                service_id: Some("subtitles".into()),
                name: None,
                media_type: Some("application/x-subrip".into()),
            }],
        },
        Request::Deliver {
            file: "/home/alice/holiday.mp4".into(),
            to: vec![],
            service_id: None,
            name: None,
            media_type: None,
            pn_id: None,
            source: None,
            specific: vec![],
            wait: false,
            held: false,
            requires: None,
            group: Some(group()),
            user: None,
            more: vec![],
        },
        Request::Deliver {
            file: "/home/alice/holiday.mp4".into(),
            to: vec![],
            service_id: None,
            name: None,
            media_type: None,
            pn_id: None,
            source: None,
            specific: vec![],
            wait: false,
            held: false,
            requires: None,
            group: None,
            user: Some(cpns_wire::UserId::new("alice").unwrap()),
            more: vec![],
        },
        Request::MessageSend {
            to: EntityId::new("tv").unwrap(),
            text: Some("https://example.org/film".into()),
            hex: None,
            service_id: None,
            media_type: None,
            pn_id: None,
        },
        Request::DeliveryRequest {
            source: EntityId::new("phone").unwrap(),
            name: "film.mp4".into(),
            service_id: None,
            pn_id: None,
        },
        Request::DeliveryControl {
            session: cpns_wire::DeliveryId::from_bytes([7; 16]),
            action: "pause".into(),
        },
        Request::Traffic {},
        Request::InventoryFollow {
            pn_id: PnId::from_bytes([7; 16]),
        },
        Request::InventorySubscribe {
            user: cpns_wire::UserId::new("alice").unwrap(),
        },
        Request::ContentsSet {
            contents: vec![crate::Content {
                name: "holiday.mp4".into(),
                media_type: "video/mp4".into(),
            }],
        },
        Request::GroupSend {
            group_id: group(),
            text: None,
            hex: Some("00ff".into()),
        },
    ]
}

#[test]
fn every_verb_round_trips_with_the_version_first() {
    let requests = every_request();
    let verbs: BTreeSet<&str> = requests.iter().map(Request::verb).collect();
    assert_eq!(verbs, VERBS.into_iter().collect(), "one request per verb");
    for r in requests {
        let line = encode_request(&r);
        let prefix = format!("{{\"v\":1,\"verb\":\"{}\"", r.verb());
        assert!(line.starts_with(&prefix), "{line}");
        assert_eq!(decode_request(line.as_bytes()), Ok(r), "{line}");
    }
}

#[test]
fn every_verb_is_served_by_a_role_and_each_role_says_which() {
    let mut served = BTreeSet::new();
    for role in [Role::Pne, Role::Gateway, Role::Server] {
        for verb in role.verbs() {
            assert!(VERBS.contains(&verb), "{verb}");
            served.insert(verb);
        }
        assert!(role.verbs().any(|v| v == "hello"));
    }
    assert_eq!(served, VERBS.into_iter().collect());
    let refused = Role::Server.refusal(&Request::Show {});
    assert_eq!(refused.code, ErrorCode::UnsupportedMessage);
    assert!(
        refused
            .reason
            .starts_with("`show` is not a verb of a CPNS Server; it serves: hello")
    );
    assert!(Role::Pne.serves(&Request::Events {}));
    assert!(!Role::Gateway.serves(&Request::Events {}));
}

#[test]
fn answers_and_events_are_lines_with_the_version_first() {
    let ok = encode_answer(&Ok(Response::Show { pns: Vec::new() }));
    assert_eq!(ok, r#"{"v":1,"ok":true,"verb":"show","pns":[]}"#);
    let empty = encode_answer(&Ok(Response::StatusSet {}));
    assert_eq!(empty, r#"{"v":1,"ok":true,"verb":"status_set"}"#);
    let err = encode_answer(&Err(ApiError::new(ErrorCode::Forbidden, "no")));
    assert_eq!(
        err,
        r#"{"v":1,"ok":false,"error":{"code":"forbidden","reason":"no"}}"#
    );
    let event = encode_event(&Event::PnLeft { pn_id: pn() });
    assert_eq!(
        event,
        r#"{"v":1,"event":"pn_left","pn_id":"3f2a8e0d5b7c4a19b6e2d0f1a9c3e7c1"}"#
    );
    let unit = encode_event(&Event::CapabilitiesReported {});
    assert_eq!(unit, r#"{"v":1,"event":"capabilities_reported"}"#);
    for line in [&ok, &empty, &err, &event, &unit] {
        let decoded = decode_line(line.as_bytes()).unwrap();
        let again = match &decoded {
            Line::Answer(a) => encode_answer(a),
            Line::Event(e) => encode_event(e),
        };
        assert_eq!(&again, line);
    }
}

#[test]
fn what_is_not_a_request_of_this_version_is_refused_with_its_code() {
    let code = |line: &str| decode_request(line.as_bytes()).unwrap_err().code;
    assert_eq!(code("not json"), ErrorCode::BadRequest);
    assert_eq!(code("[1]"), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"verb":"show"}"#), ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"v":"1","verb":"show"}"#),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        code(r#"{"v":2,"verb":"show"}"#),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(code(r#"{"v":1}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"v":1,"verb":7}"#), ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"v":1,"verb":"fly"}"#),
        ErrorCode::UnsupportedMessage
    );
    // Fields: missing, malformed, unknown (to unit and struct verbs alike), of the wrong type.
    assert_eq!(code(r#"{"v":1,"verb":"members"}"#), ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"v":1,"verb":"members","pn_id":"zz"}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"v":1,"verb":"show","x":1}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"v":1,"verb":"release","pn_id":"3f2a8e0d5b7c4a19b6e2d0f1a9c3e7c1","x":1}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"v":1,"verb":"setup","with":"some"}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"v":1,"verb":"setup","with":["no such pne!"]}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"v":1,"verb":"status_set","status":"offline"}"#),
        ErrorCode::BadRequest
    );
    let e = decode_request(br#"{"v":1,"verb":"members"}"#).unwrap_err();
    assert!(
        e.reason.starts_with("members: missing field `pn_id`"),
        "{e}"
    );
    // Defaults: a subscription notifies on change; a charging query starts at 0.
    assert_eq!(
        decode_request(br#"{"v":1,"verb":"subscribe"}"#),
        Ok(Request::Subscribe {
            entities: Vec::new(),
            user: None,
            policy: Policy::OnChange
        })
    );
}

#[test]
fn a_client_refuses_what_is_not_a_line_of_this_version() {
    for bad in [
        "{}",
        r#"{"ok":true,"verb":"show","pns":[]}"#,
        r#"{"v":1,"ok":true,"verb":"show"}"#,
        r#"{"v":1,"ok":"yes","verb":"show","pns":[]}"#,
        r#"{"v":1,"ok":false,"error":{"code":"nope","reason":"x"}}"#,
        r#"{"v":1,"ok":false,"error":{"code":"busy","reason":"x"},"extra":1}"#,
        r#"{"v":1,"event":"nothing"}"#,
        r#"{"v":2,"event":"pn_left","pn_id":"3f2a8e0d5b7c4a19b6e2d0f1a9c3e7c1"}"#,
    ] {
        assert!(decode_line(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn every_error_code_has_its_registry_name() {
    for code in CODES {
        assert_eq!(code_named(code.name()), Some(code));
        let line = encode_answer(&Err(ApiError::new(code, "why")));
        assert!(
            line.contains(&format!("\"code\":\"{}\"", code.name())),
            "{line}"
        );
        assert_eq!(
            decode_line(line.as_bytes()),
            Ok(Line::Answer(Err(ApiError::new(code, "why"))))
        );
    }
    assert_eq!(code_named("unknown"), None);
}

fn full_caps() -> DeviceCapabilities {
    let mut unknown = std::collections::BTreeMap::new();
    unknown.insert(40, vec![0x18, 0x2a]);
    DeviceCapabilities {
        device_type: "tv".into(),
        has_ui: true,
        networks: vec!["wlan".into()],
        software: vec!["player/3".into()],
        battery_pct: Some(55),
        gateway_capable: true,
        cpu_class: Some(3),
        memory_class: Some(2),
        screen: Some(Screen {
            width: 1920,
            height: 1080,
        }),
        battery_mah: Some(4000),
        processor: Some("arm64".into()),
        memory_mb: Some(8192),
        chipsets: vec!["soc".into()],
        drivers: vec!["hdmi/2".into()],
        free_memory_mb: Some(512),
        battery_minutes: Some(90),
        running: vec!["player".into()],
        active_drivers: vec!["hdmi".into()],
        unknown,
    }
}

#[test]
fn capabilities_carry_every_field_and_unknown_keys_unchanged() {
    let c = full_caps();
    let json = serde_json::to_value(Capabilities::from(&c)).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut all = CAPABILITY_KEYS.to_vec();
    all.sort_unstable();
    assert_eq!(keys, all, "every key, each once");
    assert_eq!(json["unknown"]["40"], "182a");
    let back: Capabilities = serde_json::from_value(json).unwrap();
    assert_eq!(back.to_device().unwrap(), c);
    // A whole set names its device type; what it leaves out is empty.
    assert!(Capabilities::default().to_device().is_err());
    let minimal: Capabilities = serde_json::from_str(r#"{"device_type":"watch"}"#).unwrap();
    assert_eq!(
        minimal.to_device().unwrap(),
        DeviceCapabilities {
            device_type: "watch".into(),
            ..DeviceCapabilities::default()
        }
    );
    // Merged over other capabilities, what is left out keeps theirs.
    let mut merged = c.clone();
    let patch: Capabilities = serde_json::from_str(r#"{"battery_pct":9}"#).unwrap();
    patch.apply(&mut merged).unwrap();
    assert_eq!(
        merged,
        DeviceCapabilities {
            battery_pct: Some(9),
            ..c.clone()
        }
    );
    // Over the bounds a device may report: refused as a whole set.
    let long = Capabilities {
        device_type: Some("x".repeat(200)),
        ..Capabilities::default()
    };
    assert!(long.to_device().unwrap_err().contains("over 128 bytes"));
}

#[test]
fn capability_text_errors_say_where_and_what() {
    assert_eq!(
        Capabilities::parse("{\n\"cpu_class\": 4}").unwrap_err(),
        "line 2: a class is 0 to 3, not 4"
    );
    assert_eq!(
        Capabilities::parse("{\"battery_pct\": 101}").unwrap_err(),
        "line 1: battery_pct must be 0 to 100, not 101"
    );
    assert_eq!(
        Capabilities::parse("{\"device_type\": \" \"}").unwrap_err(),
        "line 1: device_type must not be empty"
    );
    assert!(
        Capabilities::parse("{\"screen\": {\"width\": 1}}")
            .unwrap_err()
            .contains("missing field \"height\"")
    );
}

#[test]
fn policies_name_one_bound_and_targets_read_their_three_forms() {
    let both = Policy::Threshold {
        attribute: PolicyAttribute::BatteryPct,
        below: Some(1),
        above: Some(2),
    };
    assert!(both.to_wire().is_err());
    let periodic = Policy::Periodic { period_s: 60 }.to_wire().unwrap();
    assert_eq!(periodic.period_s, Some(60));
    assert_eq!(Targets::parse("1-1"), Ok(Targets::OneToOne));
    assert_eq!(Targets::parse("all"), Ok(Targets::All));
    assert_eq!(
        Targets::parse("watch, tv"),
        Ok(Targets::List(vec![id("watch"), id("tv")]))
    );
    assert!(Targets::parse("a b").is_err());
    for (t, json) in [
        (Targets::OneToOne, "\"1-1\""),
        (Targets::All, "\"all\""),
        (Targets::List(vec![id("tv")]), "[\"tv\"]"),
    ] {
        assert_eq!(serde_json::to_string(&t).unwrap(), json);
        assert_eq!(serde_json::from_str::<Targets>(json).unwrap(), t);
    }
}

#[test]
fn statuses_go_by_their_names() {
    use cpns_wire::Status;
    for s in [
        Status::Online,
        Status::Offline,
        Status::Busy,
        Status::Custom,
        Status::Unknown(9),
    ] {
        assert_eq!(status_named(&status_name(s)), Some(s));
    }
    assert_eq!(status_name(Status::Unknown(9)), "status-9");
    assert_eq!(status_named("sleepy"), None);
}
