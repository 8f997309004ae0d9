//! Lines and JSON objects of every event variant: the text a person reads and the fields a
//! program parses.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, FixedOffset};
use cpns_proto::gateway::{GatewayEvent, LinkId};
use cpns_proto::pne::{Gone, Outcome, PneEvent};
use cpns_proto::server::ServerEvent;
use cpns_wire::{CpnsId, DeviceCapabilities, EntityId, InventoryMember, PnId, PnInventory};
use serde_json::{Value, json};

use super::*;
use cpns_proto::{CommandId, Completed, Failure, Flow};

fn ts() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2025-06-01T14:02:11.042+02:00").unwrap()
}

fn id(s: &str) -> EntityId {
    s.parse().unwrap()
}

/// `3f2a0000…00c1`.
fn pn() -> PnId {
    let mut b = [0u8; 16];
    b[0] = 0x3f;
    b[1] = 0x2a;
    b[15] = 0xc1;
    PnId::from_bytes(b)
}

const PN_HEX: &str = "3f2a00000000000000000000000000c1";

fn pn2() -> PnId {
    PnId::from_bytes([0xab; 16])
}

fn cpns_id() -> CpnsId {
    "cpns:0007".parse().unwrap()
}

fn inventory() -> PnInventory {
    let member = |pne: &str| InventoryMember {
        pne_id: id(pne),
        capabilities: Some(DeviceCapabilities::default()),
        contents: Vec::new(),
    };
    PnInventory {
        pn_id: pn(),
        gateway: id("home-gw"),
        members: vec![member("phone"), member("watch")],
    }
}

/// Parses a JSON line and checks the envelope fields.
fn parsed(text: &str, role: &str, event: &str) -> Value {
    assert!(!text.contains('\n'), "one line: {text}");
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["ts"], "2025-06-01T14:02:11.042+02:00");
    assert_eq!(v["role"], role);
    assert_eq!(v["event"], event);
    v
}

/// The JSON object without its envelope.
fn fields(v: &Value) -> Value {
    let mut v = v.clone();
    let obj = v.as_object_mut().unwrap();
    for k in ["ts", "role", "event"] {
        obj.remove(k);
    }
    v
}

#[test]
fn json_keys_come_in_order() {
    let text = gateway_json(&ts(), &GatewayEvent::WanReady);
    assert_eq!(
        text,
        r#"{"ts":"2025-06-01T14:02:11.042+02:00","role":"gateway","event":"wan_ready"}"#
    );
}

#[test]
fn gateway_events() {
    let cases: Vec<(GatewayEvent, &str, &str, Value)> = vec![
        (
            GatewayEvent::WanReady,
            "14:02:11 wan ready",
            "wan_ready",
            json!({}),
        ),
        (
            GatewayEvent::WanFailed("server closed the connection".into()),
            r#"14:02:11 wan failed  reason="server closed the connection""#,
            "wan_failed",
            json!({"reason": "server closed the connection"}),
        ),
        (
            GatewayEvent::PneDiscovered {
                link: LinkId(3),
                pne: id("watch"),
            },
            "14:02:11 pne discovered  pne=watch link=3",
            "pne_discovered",
            json!({"pne": "watch", "link": 3}),
        ),
        (
            GatewayEvent::PanAuthenticated {
                pne: id("phone"),
                pn_id: pn(),
                suite: cpns_crypto::Suite::Aes256Gcm,
            },
            "14:02:11 pan authenticated  pne=phone pn=3f2a…c1 suite=aes-256-gcm",
            "pan_authenticated",
            json!({"pne": "phone", "pn_id": PN_HEX, "suite": "aes-256-gcm"}),
        ),
        (
            GatewayEvent::PnEstablished {
                inventory: inventory(),
                initiator: Some(id("phone")),
            },
            "14:02:11 pn established  pn=3f2a…c1 gateway=home-gw members=phone,watch initiator=phone",
            "pn_established",
            json!({"pn_id": PN_HEX, "gateway": "home-gw", "members": ["phone", "watch"],
                   "initiator": "phone"}),
        ),
        (
            GatewayEvent::PnEstablished {
                inventory: inventory(),
                initiator: None,
            },
            "14:02:11 pn established  pn=3f2a…c1 gateway=home-gw members=phone,watch initiator=home-gw",
            "pn_established",
            json!({"pn_id": PN_HEX, "gateway": "home-gw", "members": ["phone", "watch"],
                   "initiator": "home-gw"}),
        ),
        (
            GatewayEvent::EstablishmentFailed {
                pn_id: pn(),
                reason: Failure::NoPneAuthenticated,
            },
            r#"14:02:11 establishment failed  pn=3f2a…c1 reason="no PNE authenticated""#,
            "establishment_failed",
            json!({"pn_id": PN_HEX, "reason": "no PNE authenticated"}),
        ),
        (
            GatewayEvent::PneRegistered {
                pne: id("watch"),
                cpns_id: cpns_id(),
            },
            "14:02:11 pne registered  pne=watch cpns_id=cpns:0007",
            "pne_registered",
            json!({"pne": "watch", "cpns_id": "cpns:0007"}),
        ),
        (
            GatewayEvent::LinkRejected {
                link: LinkId(9),
                reason: "frame too large".into(),
            },
            r#"14:02:11 link rejected  link=9 reason="frame too large""#,
            "link_rejected",
            json!({"link": 9, "reason": "frame too large"}),
        ),
        (
            GatewayEvent::PnReleased {
                pn_id: pn(),
                by: None,
                notified: vec![id("phone"), id("watch")],
            },
            "14:02:11 pn released  pn=3f2a…c1 by=owner notified=phone,watch",
            "pn_released",
            json!({"pn_id": PN_HEX, "by": "owner", "notified": ["phone", "watch"]}),
        ),
        (
            GatewayEvent::PnReleased {
                pn_id: pn(),
                by: Some(id("watch")),
                notified: Vec::new(),
            },
            "14:02:11 pn released  pn=3f2a…c1 by=watch notified=none",
            "pn_released",
            json!({"pn_id": PN_HEX, "by": "watch", "notified": []}),
        ),
        (
            GatewayEvent::DepartedKeyNotStored {
                pn_id: pn(),
                pne: id("watch"),
                reason: cpns_proto::StoreFailure::Failed("disk full".into()),
            },
            r#"14:02:11 departed key not stored  pn=3f2a…c1 pne=watch reason="the store failed: disk full""#,
            "departed_key_not_stored",
            json!({"pn_id": PN_HEX, "pne": "watch", "reason": "the store failed: disk full"}),
        ),
        (
            GatewayEvent::PnEmptied { pn_id: pn() },
            "14:02:11 pn emptied  pn=3f2a…c1",
            "pn_emptied",
            json!({"pn_id": PN_HEX}),
        ),
        (
            GatewayEvent::MemberRemoved {
                pn_id: pn(),
                pne: id("watch"),
                left: false,
                epoch: Some(3),
                notified: vec![id("phone")],
            },
            "14:02:11 member expelled  pn=3f2a…c1 pne=watch epoch=3 notified=phone",
            "member_expelled",
            json!({"pn_id": PN_HEX, "pne": "watch", "epoch": 3, "notified": ["phone"]}),
        ),
        (
            GatewayEvent::MemberRemoved {
                pn_id: pn(),
                pne: id("watch"),
                left: true,
                epoch: None,
                notified: Vec::new(),
            },
            "14:02:11 member left  pn=3f2a…c1 pne=watch notified=none",
            "member_left",
            json!({"pn_id": PN_HEX, "pne": "watch", "notified": []}),
        ),
        (
            GatewayEvent::MemberJoined {
                pn_id: pn(),
                pne: id("tv"),
                epoch: Some(4),
                notified: vec![id("phone"), id("watch")],
            },
            "14:02:11 member joined  pn=3f2a…c1 pne=tv epoch=4 notified=phone,watch",
            "member_joined",
            json!({"pn_id": PN_HEX, "pne": "tv", "epoch": 4, "notified": ["phone", "watch"]}),
        ),
        (
            GatewayEvent::PnExpired { pn_id: pn() },
            "14:02:11 pn expired  pn=3f2a…c1",
            "pn_expired",
            json!({"pn_id": PN_HEX}),
        ),
        (
            GatewayEvent::PneConfirmAsked {
                pne: id("phone"),
                pn_id: pn(),
                requesting_gw: id("bob-gw"),
                confirmed: true,
            },
            "14:02:11 pne confirm asked  pne=phone pn=3f2a…c1 requesting_gw=bob-gw confirmed=yes",
            "pne_confirm_asked",
            json!({"pne": "phone", "pn_id": PN_HEX, "requesting_gw": "bob-gw", "confirmed": true}),
        ),
        (
            GatewayEvent::MemberConfirmed {
                pn_id: pn(),
                pne: id("tv"),
                epoch: 4,
            },
            "14:02:11 member confirmed  pn=3f2a…c1 pne=tv epoch=4",
            "member_confirmed",
            json!({"pn_id": PN_HEX, "pne": "tv", "epoch": 4}),
        ),
        (
            GatewayEvent::InviteEnded {
                pn_id: pn(),
                invitee: id("tv"),
                reason: None,
            },
            "14:02:11 invite ended  pn=3f2a…c1 invitee=tv reason=declined",
            "invite_ended",
            json!({"pn_id": PN_HEX, "invitee": "tv", "reason": "declined"}),
        ),
        (
            GatewayEvent::MembershipChangeFailed {
                pn_id: pn(),
                pne: id("watch"),
                reason: Failure::WanLost,
            },
            r#"14:02:11 membership change failed  pn=3f2a…c1 pne=watch reason="the connection to the CPNS Server closed""#,
            "membership_change_failed",
            json!({"pn_id": PN_HEX, "pne": "watch", "reason": "the connection to the CPNS Server closed"}),
        ),
        (
            GatewayEvent::Completed(Completed {
                id: CommandId(3),
                flow: Flow::PnRelease,
                result: Ok(cpns_proto::gateway::Outcome::Released {
                    pn_id: pn(),
                    notified: vec![id("phone")],
                }),
            }),
            "14:02:11 pn released  pn=3f2a…c1 by=owner notified=phone",
            "pn_released",
            json!({"pn_id": PN_HEX, "by": "owner", "notified": ["phone"], "command": 3}),
        ),
        (
            GatewayEvent::Completed(Completed {
                id: CommandId(4),
                flow: Flow::MembershipChange,
                result: Ok(cpns_proto::gateway::Outcome::Invited {
                    pn_id: pn(),
                    pne: id("tv"),
                    joined: true,
                }),
            }),
            "14:02:11 invited  pn=3f2a…c1 invitee=tv joined=yes",
            "invited",
            json!({"pn_id": PN_HEX, "invitee": "tv", "joined": true, "command": 4}),
        ),
        (
            GatewayEvent::Completed(Completed {
                id: CommandId(5),
                flow: Flow::PnEstablishment,
                result: Err(Failure::NoPneAccepted),
            }),
            r#"14:02:11 establishment failed  reason="no PNE accepted the invitation""#,
            "establishment_failed",
            json!({"reason": "no PNE accepted the invitation", "command": 5}),
        ),
        (
            GatewayEvent::ReleaseFailed {
                pn_id: pn(),
                reason: Failure::TimedOut,
            },
            r#"14:02:11 release failed  pn=3f2a…c1 reason="timed out""#,
            "release_failed",
            json!({"pn_id": PN_HEX, "reason": "timed out"}),
        ),
    ];
    for (event, want_line, name, want_fields) in cases {
        assert_eq!(gateway_line(&ts(), &event), want_line);
        let v = parsed(&gateway_json(&ts(), &event), "gateway", name);
        assert_eq!(fields(&v), want_fields, "{name}");
    }
}

#[test]
fn pne_events() {
    let cases: Vec<(PneEvent, &str, &str, Value)> = vec![
        (
            done(
                1,
                Flow::EntityDiscovery,
                Outcome::Discovered {
                    gateway: id("home-gw"),
                    zone_support: false,
                    pns: vec![pn(), pn2()],
                },
            ),
            "14:02:11 discovered  gateway=home-gw zone_support=no pns=3f2a…c1,abab…ab",
            "discovered",
            json!({"gateway": "home-gw", "zone_support": false,
                   "pns": [PN_HEX, "abababababababababababababababab"], "command": 1}),
        ),
        (
            done(
                2,
                Flow::EntityDiscovery,
                Outcome::Discovered {
                    gateway: id("home-gw"),
                    zone_support: true,
                    pns: Vec::new(),
                },
            ),
            "14:02:11 discovered  gateway=home-gw zone_support=yes pns=none",
            "discovered",
            json!({"gateway": "home-gw", "zone_support": true, "pns": [], "command": 2}),
        ),
        (
            done(
                3,
                Flow::PnEstablishment,
                Outcome::PnJoined {
                    inventory: inventory(),
                    initiator: true,
                },
            ),
            "14:02:11 pn joined  pn=3f2a…c1 gateway=home-gw members=phone,watch initiator=yes",
            "pn_joined",
            json!({"pn_id": PN_HEX, "gateway": "home-gw", "members": ["phone", "watch"],
                   "initiator": true, "command": 3}),
        ),
        (
            PneEvent::Completed(Completed {
                id: CommandId(4),
                flow: Flow::PnRelease,
                result: Err(Failure::TimedOut),
            }),
            r#"14:02:11 flow failed  flow="PN release" reason="timed out""#,
            "flow_failed",
            json!({"flow": "PN release", "reason": "timed out", "command": 4}),
        ),
        (
            done(
                5,
                Flow::SecureCall,
                Outcome::SecureAnswer {
                    service: cpns_wire::ECHO_SERVICE.into(),
                    payload: b"hello".to_vec(),
                },
            ),
            "14:02:11 secure answer  service=cpns.echo payload=hello",
            "secure_answer",
            json!({"service": "cpns.echo", "payload": "hello", "command": 5}),
        ),
        (
            done(
                6,
                Flow::PnConnectionSetup,
                Outcome::Rejoined { pns: vec![pn()] },
            ),
            "14:02:11 rejoined  pns=3f2a…c1",
            "rejoined",
            json!({"pns": [PN_HEX], "command": 6}),
        ),
        (
            PneEvent::InvitationDeclined(pn()),
            "14:02:11 invitation declined  pn=3f2a…c1",
            "invitation_declined",
            json!({"pn_id": PN_HEX}),
        ),
        (
            PneEvent::Invited {
                pn_id: pn(),
                from: id("phone"),
                deadline: std::time::Instant::now(),
            },
            "14:02:11 invited  pn=3f2a…c1 from=phone",
            "invited",
            json!({"pn_id": PN_HEX, "from": "phone"}),
        ),
        (
            done(
                7,
                Flow::PnEstablishment,
                Outcome::InvitationAnswered {
                    pn_id: pn(),
                    accepted: true,
                },
            ),
            "14:02:11 invitation answered  pn=3f2a…c1 accepted=yes",
            "invitation_answered",
            json!({"pn_id": PN_HEX, "accepted": true, "command": 7}),
        ),
        (
            PneEvent::PanAuthenticated {
                pn_id: pn(),
                suite: cpns_crypto::Suite::ChaCha20Poly1305,
            },
            "14:02:11 pan authenticated  pn=3f2a…c1 suite=chacha20-poly1305",
            "pan_authenticated",
            json!({"pn_id": PN_HEX, "suite": "chacha20-poly1305"}),
        ),
        (
            PneEvent::PnJoined {
                inventory: inventory(),
                initiator: true,
            },
            "14:02:11 pn joined  pn=3f2a…c1 gateway=home-gw members=phone,watch initiator=yes",
            "pn_joined",
            json!({"pn_id": PN_HEX, "gateway": "home-gw", "members": ["phone", "watch"],
                   "initiator": true}),
        ),
        (
            PneEvent::PnRefused {
                pn_id: pn(),
                reason: Failure::ServerNotAuthenticated,
            },
            r#"14:02:11 pn refused  pn=3f2a…c1 reason="hash_server did not verify: the server is not authenticated""#,
            "pn_refused",
            json!({"pn_id": PN_HEX, "reason": "hash_server did not verify: the server is not authenticated"}),
        ),
        (
            PneEvent::Registered {
                cpns_id: cpns_id(),
                pn_id: pn(),
                lifetime_s: 3600,
            },
            "14:02:11 registered  cpns_id=cpns:0007 pn=3f2a…c1 lifetime_s=3600",
            "registered",
            json!({"cpns_id": "cpns:0007", "pn_id": PN_HEX, "lifetime_s": 3600}),
        ),
        (
            PneEvent::FlowFailed {
                flow: Flow::PnEstablishment,
                reason: Failure::TimedOut,
            },
            r#"14:02:11 flow failed  flow="PN establishment" reason="timed out""#,
            "flow_failed",
            json!({"flow": "PN establishment", "reason": "timed out"}),
        ),
        (
            done(
                7,
                Flow::MembershipChange,
                Outcome::InviteAnswered {
                    pn_id: pn(),
                    accepted: true,
                },
            ),
            "14:02:11 invite answered  pn=3f2a…c1 accepted=yes",
            "invite_answered",
            json!({"pn_id": PN_HEX, "accepted": true, "command": 7}),
        ),
        (
            done(
                8,
                Flow::MembershipChange,
                Outcome::PnGone {
                    pn_id: pn(),
                    why: Gone::Left,
                },
            ),
            "14:02:11 pn left  pn=3f2a…c1",
            "pn_left",
            json!({"pn_id": PN_HEX, "command": 8}),
        ),
        (
            done(
                9,
                Flow::PnRelease,
                Outcome::PnGone {
                    pn_id: pn(),
                    why: Gone::Released { by_me: true },
                },
            ),
            "14:02:11 pn released  pn=3f2a…c1 by_me=yes",
            "pn_released",
            json!({"pn_id": PN_HEX, "by_me": true, "command": 9}),
        ),
        (
            PneEvent::Expelled(pn()),
            "14:02:11 expelled  pn=3f2a…c1",
            "expelled",
            json!({"pn_id": PN_HEX}),
        ),
        (
            PneEvent::PnUpdated {
                inventory: inventory(),
                epoch: 2,
                has_key: true,
            },
            "14:02:11 pn updated  pn=3f2a…c1 gateway=home-gw members=phone,watch epoch=2 has_key=yes",
            "pn_updated",
            json!({"pn_id": PN_HEX, "gateway": "home-gw", "members": ["phone", "watch"], "epoch": 2, "has_key": true}),
        ),
        (
            done(
                10,
                Flow::MembershipChange,
                Outcome::MemberExpelled {
                    pn_id: pn(),
                    pne: id("tv"),
                },
            ),
            "14:02:11 member expelled  pn=3f2a…c1 pne=tv",
            "member_expelled",
            json!({"pn_id": PN_HEX, "pne": "tv", "command": 10}),
        ),
        (
            done(
                11,
                Flow::InventoryQuery,
                Outcome::Inventory {
                    pns: vec![],
                    services: vec![],
                },
            ),
            "14:02:11 inventory read  pns=none",
            "inventory_read",
            json!({"pns": [], "command": 11}),
        ),
        (
            PneEvent::MembershipConfirmed {
                pn_id: pn(),
                epoch: 4,
            },
            "14:02:11 membership confirmed  pn=3f2a…c1 epoch=4",
            "membership_confirmed",
            json!({"pn_id": PN_HEX, "epoch": 4}),
        ),
        (
            PneEvent::UsageSent {
                sent: 3,
                duplicates: 1,
                charged: 2,
                withheld: 4,
            },
            "14:02:11 usage sent  sent=3 duplicates=1 charged=2 withheld=4",
            "usage_sent",
            json!({"sent": 3, "duplicates": 1, "charged": 2, "withheld": 4}),
        ),
        (
            PneEvent::PnReleased(pn()),
            "14:02:11 pn released  pn=3f2a…c1 by_me=no",
            "pn_released",
            json!({"pn_id": PN_HEX, "by_me": false}),
        ),
    ];
    for (event, want_line, name, want_fields) in cases {
        assert_eq!(pne_line(&ts(), &event), want_line);
        let v = parsed(&pne_json(&ts(), &event), "pne", name);
        assert_eq!(fields(&v), want_fields, "{name}");
    }
}

#[test]
fn server_events() {
    let cases: Vec<(ServerEvent, &str, &str, Value)> = vec![
        (
            ServerEvent::GatewayAuthenticated(id("home-gw")),
            "14:02:11 gateway authenticated  gateway=home-gw",
            "gateway_authenticated",
            json!({"gateway": "home-gw"}),
        ),
        (
            ServerEvent::PnReleased {
                pn_id: pn(),
                gateway: id("home-gw"),
            },
            "14:02:11 pn released  pn=3f2a…c1 gateway=home-gw",
            "pn_released",
            json!({"pn_id": PN_HEX, "gateway": "home-gw"}),
        ),
        (
            ServerEvent::MembersRemoved {
                pn_id: pn(),
                removed: vec![id("watch")],
                epoch: 2,
            },
            "14:02:11 members removed  pn=3f2a…c1 removed=watch epoch=2",
            "members_removed",
            json!({"pn_id": PN_HEX, "removed": ["watch"], "epoch": 2}),
        ),
        (
            ServerEvent::GatewayReady(id("home-gw")),
            "14:02:11 gateway ready  gateway=home-gw",
            "gateway_ready",
            json!({"gateway": "home-gw"}),
        ),
        (
            ServerEvent::PnRegistered {
                pn_id: pn(),
                members: vec![id("phone"), id("watch")],
            },
            "14:02:11 pn registered  pn=3f2a…c1 members=phone,watch",
            "pn_registered",
            json!({"pn_id": PN_HEX, "members": ["phone", "watch"]}),
        ),
        (
            ServerEvent::PnRegistered {
                pn_id: pn(),
                members: Vec::new(),
            },
            "14:02:11 pn registered  pn=3f2a…c1 members=none",
            "pn_registered",
            json!({"pn_id": PN_HEX, "members": []}),
        ),
        (
            ServerEvent::PneRegistered {
                pne_id: id("watch"),
                cpns_id: cpns_id(),
            },
            "14:02:11 pne registered  pne_id=watch cpns_id=cpns:0007",
            "pne_registered",
            json!({"pne_id": "watch", "cpns_id": "cpns:0007"}),
        ),
        (
            ServerEvent::AuthenticationFailed {
                entity: id("tv"),
                reason: Failure::GatewayResponseMismatch,
            },
            r#"14:02:11 authentication failed  entity=tv reason="authentication response did not verify""#,
            "authentication_failed",
            json!({"entity": "tv", "reason": "authentication response did not verify"}),
        ),
        (
            ServerEvent::FlowFailed {
                flow: Flow::PnEstablishment,
                reason: Failure::Store(cpns_proto::StoreFailure::Failed("disk full".into())),
            },
            r#"14:02:11 flow failed  flow="PN establishment" reason="store: the store failed: disk full""#,
            "flow_failed",
            json!({"flow": "PN establishment", "reason": "store: the store failed: disk full"}),
        ),
    ];
    for (event, want_line, name, want_fields) in cases {
        assert_eq!(server_line(&ts(), &event), want_line);
        let v = parsed(&server_json(&ts(), &event), "server", name);
        assert_eq!(fields(&v), want_fields, "{name}");
    }
}

#[test]
fn run_events() {
    let cases: Vec<(RunEvent, Role, &str, &str, Value)> = vec![
        (
            RunEvent::Listening("127.0.0.1:7400".into()),
            Role::Server,
            "14:02:11 listening  addr=127.0.0.1:7400",
            "listening",
            json!({"addr": "127.0.0.1:7400"}),
        ),
        (
            RunEvent::PanListening("127.0.0.1:7401".into()),
            Role::Gateway,
            "14:02:11 pan listening  addr=127.0.0.1:7401",
            "pan_listening",
            json!({"addr": "127.0.0.1:7401"}),
        ),
        (
            RunEvent::ElectionListening("127.0.0.1:7500".into()),
            Role::Pne,
            "14:02:11 election listening  addr=127.0.0.1:7500",
            "election_listening",
            json!({"addr": "127.0.0.1:7500"}),
        ),
        (
            RunEvent::Elected {
                gateway: id("phone"),
                me: true,
                pan_address: Some("127.0.0.1:7401".into()),
            },
            Role::Pne,
            "14:02:11 elected  gateway=phone me=yes pan_address=127.0.0.1:7401",
            "elected",
            json!({"gateway": "phone", "me": true, "pan_address": "127.0.0.1:7401"}),
        ),
        (
            RunEvent::Elected {
                gateway: id("hub"),
                me: false,
                pan_address: None,
            },
            Role::Pne,
            "14:02:11 elected  gateway=hub me=no",
            "elected",
            json!({"gateway": "hub", "me": false}),
        ),
        (
            RunEvent::ControlListening("gw.db.sock".into()),
            Role::Gateway,
            "14:02:11 control listening  path=gw.db.sock",
            "control_listening",
            json!({"path": "gw.db.sock"}),
        ),
        (
            RunEvent::Establishing(pn()),
            Role::Gateway,
            "14:02:11 establishing  pn=3f2a…c1",
            "establishing",
            json!({"pn_id": PN_HEX}),
        ),
        (
            RunEvent::EstablishFailed("no PNE known".into()),
            Role::Gateway,
            r#"14:02:11 establish failed  reason="no PNE known""#,
            "establish_failed",
            json!({"reason": "no PNE known"}),
        ),
    ];
    for (event, role, want_line, name, want_fields) in cases {
        let d = describe_run(&event);
        assert_eq!(line(&ts(), &d), want_line);
        let v = parsed(&json(&ts(), role, &d), role.as_str(), name);
        assert_eq!(fields(&v), want_fields, "{name}");
    }
}

/// A PNE command's completion, succeeded.
fn done(id: u64, flow: Flow, outcome: Outcome) -> PneEvent {
    PneEvent::Completed(Completed {
        id: CommandId(id),
        flow,
        result: Ok(outcome),
    })
}

#[test]
fn reasons_cannot_break_the_line_or_reach_the_terminal() {
    let event = GatewayEvent::WanFailed("bad \"frame\"\n\u{1b}[2Jgone\\".into());
    assert_eq!(
        gateway_line(&ts(), &event),
        r#"14:02:11 wan failed  reason="bad \"frame\"\n\u{1b}[2Jgone\\""#
    );
    let v = parsed(&gateway_json(&ts(), &event), "gateway", "wan_failed");
    assert_eq!(v["reason"], "bad \"frame\"\n\u{1b}[2Jgone\\");
    // Plain words stay unquoted; empty text is visible.
    assert_eq!(quoted("timeout"), "timeout");
    assert_eq!(quoted(""), r#""""#);
    assert_eq!(quoted("a=b"), r#""a=b""#);
}

#[test]
fn pn_ids_are_shortened_in_lines_only() {
    assert_eq!(short_pn(&pn()), "3f2a…c1");
    assert_eq!(PN_HEX, pn().to_string());
}
