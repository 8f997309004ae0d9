//! Shared test harness: a populated sample envelope for every message type, with optional
//! fields both present and absent, used by the CDDL check (tests/cddl.rs) and the codec tests
//! (tests/codec.rs).

#![allow(dead_code, clippy::unwrap_used)]

use cpns_wire::*;

/// An entity id from a literal.
pub fn eid(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

/// A PN id whose bytes are all `b`.
pub fn pn(b: u8) -> PnId {
    PnId::from_bytes([b; 16])
}

pub fn gid(b: u8) -> GroupId {
    GroupId::from_bytes([b; 16])
}

fn caps_full() -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: "handset".into(),
        has_ui: true,
        networks: vec!["wifi".into(), "bluetooth".into()],
        software: vec!["cpns-0.1".into()],
        battery_pct: Some(87),
        gateway_capable: true,
        cpu_class: Some(2),
        memory_class: Some(1),
        ..DeviceCapabilities::default()
    }
}

fn caps_min() -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: "watch".into(),
        ..DeviceCapabilities::default()
    }
}

fn join_full() -> JoinInfo {
    JoinInfo {
        pne_id: eid("alice-phone"),
        capabilities: caps_full(),
        contents: vec![ContentItem {
            name: "song.mp3".into(),
            media_type: "audio/mpeg".into(),
        }],
        rand_pne: RandBytes([1; 16]),
        local_key: true,
        home_gateway: Some(eid("alice-home-gw")),
    }
}

fn join_min() -> JoinInfo {
    JoinInfo {
        pne_id: eid("bob.watch@home"),
        capabilities: caps_min(),
        contents: vec![],
        rand_pne: RandBytes([2; 16]),
        local_key: false,
        home_gateway: None,
    }
}

fn inventory_full() -> PnInventory {
    PnInventory {
        pn_id: pn(7),
        gateway: eid("gw-1"),
        members: vec![
            InventoryMember {
                pne_id: eid("alice-phone"),
                capabilities: Some(caps_full()),
                contents: vec![ContentItem {
                    name: "photo".into(),
                    media_type: "image/jpeg".into(),
                }],
            },
            InventoryMember {
                pne_id: eid("bob.watch@home"),
                capabilities: None,
                contents: vec![],
            },
        ],
    }
}

fn inventory_min() -> PnInventory {
    PnInventory {
        pn_id: pn(8),
        gateway: eid("gw-2"),
        members: vec![],
    }
}

/// Every message type at least once, most twice (optional fields present / absent).
pub fn bodies() -> Vec<(&'static str, Body)> {
    vec![
        (
            "error",
            ErrorBody::new(ErrorCode::NotFound, "no such PN").into(),
        ),
        (
            "error unknown code",
            ErrorBody::new(ErrorCode::Unknown(999), "").into(),
        ),
        (
            "discovery request",
            EntityDiscoveryRequest {
                entity_id: eid("alice-phone"),
                mode: Mode::Pne,
            }
            .into(),
        ),
        (
            "discovery response full",
            EntityDiscoveryResponse {
                mode: Mode::Gateway,
                entity_id: eid("gw-1"),
                zone_support: true,
                pns: vec![pn(1), pn(2)],
            }
            .into(),
        ),
        (
            "discovery response min",
            EntityDiscoveryResponse {
                mode: Mode::Pne,
                entity_id: eid("alice-phone"),
                zone_support: false,
                pns: vec![],
            }
            .into(),
        ),
        (
            "connection setup request",
            ConnectionSetupRequest {
                gw_id: eid("gw-1"),
                rand_gw: RandBytes([3; 16]),
                software: "cpns 0.1.0".into(),
            }
            .into(),
        ),
        (
            "auth challenge",
            AuthChallenge {
                rand_server: RandBytes([4; 16]),
            }
            .into(),
        ),
        (
            "auth response",
            AuthResponse {
                hash: HashBytes([5; 32]),
            }
            .into(),
        ),
        (
            "connection setup confirm",
            ConnectionSetupConfirm {
                server: "cpns-server".into(),
                max_frame: DEFAULT_MAX_FRAME,
            }
            .into(),
        ),
        (
            "capabilities update full",
            DeviceCapabilitiesUpdate {
                capabilities: caps_full(),
                entity: None,
            }
            .into(),
        ),
        (
            "capabilities update min",
            DeviceCapabilitiesUpdate {
                capabilities: caps_min(),
                entity: None,
            }
            .into(),
        ),
        ("capabilities confirm", DeviceCapabilitiesConfirm {}.into()),
        ("status update request", StatusUpdateRequest {}.into()),
        (
            "status update response full",
            StatusUpdateResponse {
                status: Status::Busy,
                pns: vec![pn(9)],
                partial: false,
            }
            .into(),
        ),
        (
            "status update response partial",
            StatusUpdateResponse {
                status: Status::Online,
                pns: vec![pn(3)],
                partial: true,
            }
            .into(),
        ),
        (
            "status update response unknown status",
            StatusUpdateResponse {
                status: Status::Unknown(77),
                pns: vec![],
                partial: false,
            }
            .into(),
        ),
        (
            "pn setup request pne->gw invite",
            PnSetupRequest {
                request_id: RequestId(1),
                setup: Some(SetupType::Invite(vec![eid("bob.watch@home"), eid("tv")])),
                join: Some(join_full()),
                pn_id: None,
                initiator: None,
            }
            .into(),
        ),
        (
            "pn setup request 1-1",
            PnSetupRequest {
                request_id: RequestId(2),
                setup: Some(SetupType::OneToOne),
                join: Some(join_min()),
                pn_id: None,
                initiator: None,
            }
            .into(),
        ),
        (
            "pn setup request gw->pne",
            PnSetupRequest {
                request_id: RequestId(u64::MAX),
                setup: Some(SetupType::All),
                join: None,
                pn_id: Some(pn(7)),
                initiator: Some(eid("alice-phone")),
            }
            .into(),
        ),
        (
            "pn setup request min",
            PnSetupRequest {
                request_id: RequestId(0),
                setup: None,
                join: None,
                pn_id: None,
                initiator: None,
            }
            .into(),
        ),
        (
            "pn setup response full",
            PnSetupResponse {
                pn_id: pn(7),
                accept: true,
                join: Some(join_full()),
                inventory: Some(inventory_full()),
                hash_server: Some(HashBytes([6; 32])),
                epoch: None,
                sealed_key: None,
            }
            .into(),
        ),
        (
            "pn setup response min",
            PnSetupResponse {
                pn_id: pn(7),
                accept: false,
                join: None,
                inventory: None,
                hash_server: None,
                epoch: None,
                sealed_key: None,
            }
            .into(),
        ),
        (
            "pn registration request full",
            PnRegistrationRequest {
                request_id: RequestId(42),
                pn_id: pn(7),
                gateway: GatewayInfo {
                    gw_id: eid("gw-1"),
                    capabilities: caps_full(),
                    subscription: Some("gold".into()),
                },
                pnes: vec![join_full(), join_min()],
                initiator: Some(eid("alice-phone")),
                lifetime_s: Some(86_400),
                max_members: Some(8),
            }
            .into(),
        ),
        (
            "pn registration request min",
            PnRegistrationRequest {
                request_id: RequestId(43),
                pn_id: pn(7),
                gateway: GatewayInfo {
                    gw_id: eid("gw-1"),
                    capabilities: caps_min(),
                    subscription: None,
                },
                pnes: vec![],
                initiator: None,
                lifetime_s: None,
                max_members: None,
            }
            .into(),
        ),
        (
            "authentication request full",
            AuthenticationRequest {
                pn_id: pn(7),
                rand_server: RandBytes([9; 16]),
                local_keys: vec![
                    WrappedLocalKeys {
                        pne_id: eid("alice-phone"),
                        for_pne: vec![0xaa; 40],
                        for_gw: vec![0xbb; 40],
                    },
                    WrappedLocalKeys {
                        pne_id: eid("bob.watch@home"),
                        for_pne: vec![0xcc; 40],
                        for_gw: vec![],
                    },
                ],
                purpose: AuthPurposeCode::Registration,
                pnes: vec![eid("alice-phone"), eid("bob.watch@home")],
                request_id: Some(RequestId(5)),
            }
            .into(),
        ),
        (
            "authentication request min",
            AuthenticationRequest {
                pn_id: pn(7),
                rand_server: RandBytes([9; 16]),
                local_keys: vec![],
                purpose: AuthPurposeCode::Establishment,
                pnes: vec![],
                request_id: None,
            }
            .into(),
        ),
        (
            "authentication response full",
            AuthenticationResponse {
                pn_id: pn(7),
                hashes: vec![PneHash {
                    pne_id: eid("alice-phone"),
                    hash: HashBytes([0x11; 32]),
                }],
                purpose: AuthPurposeCode::Unknown(3),
                request_id: Some(RequestId(5)),
            }
            .into(),
        ),
        (
            "authentication response min",
            AuthenticationResponse {
                pn_id: pn(7),
                hashes: vec![],
                purpose: AuthPurposeCode::Establishment,
                request_id: None,
            }
            .into(),
        ),
        (
            "pn registration response",
            PnRegistrationResponse {
                pn_id: pn(7),
                verdicts: vec![
                    MemberVerdict {
                        pne_id: eid("alice-phone"),
                        authenticated: true,
                        hash_server: Some(HashBytes([0x22; 32])),
                        sealed_key: None,
                        refused: None,
                    },
                    MemberVerdict {
                        pne_id: eid("bob.watch@home"),
                        authenticated: false,
                        hash_server: None,
                        sealed_key: None,
                        refused: Some(ErrorBody::new(
                            ErrorCode::Declined,
                            "its home PN GW declined it",
                        )),
                    },
                ],
                inventory: inventory_full(),
                epoch: None,
            }
            .into(),
        ),
        (
            "pn establishment notify full",
            PnEstablishmentNotify {
                pn_id: pn(7),
                inventory: Some(inventory_min()),
                hash_server: Some(HashBytes([0x33; 32])),
                reason: None,
                epoch: None,
                sealed_key: None,
            }
            .into(),
        ),
        (
            "pn establishment notify left out",
            PnEstablishmentNotify {
                pn_id: pn(7),
                inventory: None,
                hash_server: None,
                reason: Some("authentication failed".into()),
                epoch: None,
                sealed_key: None,
            }
            .into(),
        ),
        (
            "pan auth init",
            PanAuthInit {
                pn_id: pn(7),
                pne_id: eid("alice-phone"),
                rand_pne: RandBytes([0x44; 16]),
                suites: vec![2, 1],
            }
            .into(),
        ),
        (
            "pan auth challenge",
            PanAuthChallenge {
                rand_gw: RandBytes([0x55; 16]),
                proof: HashBytes([0x66; 32]),
                suite: Some(2),
            }
            .into(),
        ),
        (
            "pan auth confirm",
            PanAuthConfirm {
                proof: HashBytes([0x77; 32]),
            }
            .into(),
        ),
        (
            "pne registration request full",
            PneRegistrationRequest {
                request_id: RequestId(8),
                pne_id: eid("tv"),
                pn_id: Some(pn(7)),
                rand_pne: RandBytes([0x88; 16]),
                capabilities: Some(caps_full()),
                local_key: false,
            }
            .into(),
        ),
        (
            "pne registration request non-member",
            PneRegistrationRequest {
                request_id: RequestId(9),
                pne_id: eid("tv"),
                pn_id: None,
                rand_pne: RandBytes([0x88; 16]),
                capabilities: None,
                local_key: false,
            }
            .into(),
        ),
        (
            "pne registration response",
            PneRegistrationResponse {
                request_id: RequestId(8),
                pne_id: eid("tv"),
                pn_id: pn(7),
                cpns_id: CpnsId::new("cpns:0001").unwrap(),
                hash_server: HashBytes([0x99; 32]),
                sealed_grant: vec![0xde, 0xad, 0xbe, 0xef],
                epoch: None,
                keys: Vec::new(),
                inventory: None,
            }
            .into(),
        ),
        (
            "pn update request full",
            PnUpdateRequest {
                request_id: RequestId(10),
                pn_id: pn(7),
                add: vec![
                    NewMember {
                        pne_id: eid("tv"),
                        capabilities: Some(caps_min()),
                    },
                    NewMember {
                        pne_id: eid("radio"),
                        capabilities: None,
                    },
                ],
                remove: vec![eid("bob.watch@home")],
                asked_by: Some(eid("tv")),
            }
            .into(),
        ),
        (
            "pn update request min",
            PnUpdateRequest {
                request_id: RequestId(11),
                pn_id: pn(7),
                add: vec![],
                remove: vec![],
                asked_by: None,
            }
            .into(),
        ),
        (
            "pn update response",
            PnUpdateResponse {
                inventory: inventory_full(),
                epoch: None,
                keys: vec![],
            }
            .into(),
        ),
        (
            "pn update response with an epoch",
            PnUpdateResponse {
                inventory: inventory_full(),
                epoch: Some(u64::MAX),
                keys: vec![SealedGroupKey {
                    pne_id: eid("bob.watch@home"),
                    sealed: vec![0x5e; 60],
                }],
            }
            .into(),
        ),
        (
            "pne invite request from a member",
            PneInviteRequest {
                request_id: RequestId(14),
                pn_id: pn(7),
                invitee: Some(eid("bob.watch@home")),
            }
            .into(),
        ),
        (
            "pne invite request to the invitee",
            PneInviteRequest {
                request_id: RequestId(15),
                pn_id: pn(7),
                invitee: None,
            }
            .into(),
        ),
        (
            "pne invite response",
            PneInviteResponse {
                pn_id: pn(7),
                accepted: true,
            }
            .into(),
        ),
        (
            "group key request",
            GroupKeyRequest {
                request_id: RequestId(16),
                pn_id: pn(7),
            }
            .into(),
        ),
        (
            "group key response",
            GroupKeyResponse {
                request_id: RequestId(16),
                inventory: inventory_full(),
                epoch: 4,
                sealed_key: vec![0x5e; 60],
            }
            .into(),
        ),
        (
            "membership confirm",
            MembershipConfirm {
                pn_id: pn(7),
                epoch: 4,
            }
            .into(),
        ),
        (
            "membership confirmed",
            MembershipConfirmed {
                pn_id: pn(7),
                epoch: 4,
            }
            .into(),
        ),
        (
            "inventory query",
            InventoryQuery {
                pn_id: Some(pn(7)),
                follow: None,
            }
            .into(),
        ),
        (
            "inventory query for all",
            InventoryQuery {
                pn_id: None,
                follow: None,
            }
            .into(),
        ),
        (
            "inventory query, following",
            InventoryQuery {
                pn_id: Some(pn(7)),
                follow: Some(true),
            }
            .into(),
        ),
        (
            "inventory changed",
            InventoryChanged {
                pn_id: Some(pn(7)),
                pne: Some(eid("tv-1")),
                change: InventoryChange::Contents,
            }
            .into(),
        ),
        (
            "inventory changed, from the server",
            InventoryChanged {
                pn_id: None,
                pne: Some(eid("tv-1")),
                change: InventoryChange::Services,
            }
            .into(),
        ),
        (
            "inventory answer",
            InventoryAnswer {
                pns: vec![inventory_full()],
                services: vec![MemberServices {
                    pne: eid("tv-1"),
                    services: vec![ServiceSummary {
                        dir_id: 7,
                        offerer: eid("tv-1"),
                        owner: "alice".parse().unwrap(),
                        service_id: "renderer".into(),
                        service_type: "media.renderer".into(),
                        name: "Living room TV".into(),
                        keywords: vec!["video".into()],
                    }],
                }],
            }
            .into(),
        ),
        (
            "contents declare",
            ContentsDeclare {
                items: vec![ContentItem {
                    name: "holiday.mp4".into(),
                    media_type: "video/mp4".into(),
                }],
            }
            .into(),
        ),
        (
            "pne confirm request",
            PneConfirmRequest {
                request_id: RequestId(17),
                pn_id: pn(7),
                pne: eid("phone"),
                requesting_gw: eid("bob-gw"),
            }
            .into(),
        ),
        (
            "pne confirm response",
            PneConfirmResponse {
                request_id: RequestId(17),
                confirmed: true,
                chargeable: true,
            }
            .into(),
        ),
        (
            "gateway announcement",
            GatewayAnnouncement {
                gateway: eid("phone"),
                mode: Mode::Gateway,
                capabilities: caps_full(),
                pan_address: Some("127.0.0.1:7401".into()),
            }
            .into(),
        ),
        (
            "membership ended",
            MembershipEnded {
                pn_id: pn(7),
                reason: EndReason::Released,
                sealed: vec![0x5d; 29],
            }
            .into(),
        ),
        (
            "pne leave request",
            PneLeaveRequest {
                request_id: RequestId(13),
                pn_id: pn(7),
                pne: eid("bob.watch@home"),
            }
            .into(),
        ),
        (
            "pne leave response full",
            PneLeaveResponse {
                pn_id: pn(7),
                inventory: Some(inventory_full()),
                epoch: Some(2),
                keys: vec![SealedGroupKey {
                    pne_id: eid("alice.phone@home"),
                    sealed: vec![0x5e; 60],
                }],
            }
            .into(),
        ),
        (
            "pne leave response min",
            PneLeaveResponse {
                pn_id: pn(7),
                inventory: None,
                epoch: None,
                keys: vec![],
            }
            .into(),
        ),
        (
            "pne expel notification",
            PneExpelNotification { pn_id: pn(7) }.into(),
        ),
        (
            "pn update notification",
            PnUpdateNotification {
                inventory: inventory_full(),
                epoch: 3,
                sealed_key: Some(vec![0x5e; 60]),
            }
            .into(),
        ),
        (
            "pn update notification without a key",
            PnUpdateNotification {
                inventory: inventory_full(),
                epoch: 3,
                sealed_key: None,
            }
            .into(),
        ),
        (
            "secure request",
            SecureRequest {
                request_id: RequestId(12),
                pn_id: pn(7),
                sealed: vec![0xca, 0xfe],
            }
            .into(),
        ),
        (
            "secure response",
            SecureResponse {
                request_id: RequestId(12),
                sealed: vec![0xbe, 0xef],
            }
            .into(),
        ),
        (
            "secure notice",
            SecureNotice {
                pn_id: pn(0x62),
                notice_id: 1_843_200_000_000_001,
                sealed: vec![0xca, 0xfe],
            }
            .into(),
        ),
        (
            "pn release request",
            PnReleaseRequest {
                request_id: RequestId(u64::MAX),
                pn_id: pn(7),
                asked_by: Some(eid("phone")),
            }
            .into(),
        ),
        (
            "pn release response",
            PnReleaseResponse { pn_id: pn(7) }.into(),
        ),
        (
            "pn release notification",
            PnReleaseNotification { pn_id: pn(7) }.into(),
        ),
        (
            "capabilities update of a pne, every field",
            DeviceCapabilitiesUpdate {
                capabilities: caps_every_field(),
                entity: Some(eid("alice-phone")),
            }
            .into(),
        ),
        (
            "capabilities query",
            CapabilitiesQuery {
                entity: eid("alice-phone"),
            }
            .into(),
        ),
        (
            "capabilities answer",
            CapabilitiesAnswer {
                entity: eid("alice-phone"),
                capabilities: caps_every_field(),
            }
            .into(),
        ),
        (
            "status report",
            StatusReport {
                entries: vec![status_full(), StatusEntry::new(eid("gw-1"), Status::Online)],
            }
            .into(),
        ),
        (
            "status report empty",
            StatusReport { entries: vec![] }.into(),
        ),
        ("status ack", StatusAck {}.into()),
        ("heartbeat", Heartbeat {}.into()),
        (
            "status query",
            StatusQuery {
                entities: vec![eid("alice-phone")],
            }
            .into(),
        ),
        ("status query min", StatusQuery::default().into()),
        (
            "status answer",
            StatusAnswer {
                entries: vec![status_full()],
            }
            .into(),
        ),
        (
            "status subscribe threshold",
            StatusSubscribe {
                request_id: RequestId(21),
                entities: vec![eid("alice-phone")],
                policy: StatusPolicy {
                    kind: PolicyKind::Threshold,
                    attribute: Some(Attribute::BatteryPct),
                    crossing: Some(Crossing::Below),
                    bound: Some(10),
                    period_s: None,
                },
            }
            .into(),
        ),
        (
            "status subscribe periodic",
            StatusSubscribe {
                request_id: RequestId(22),
                entities: vec![],
                policy: StatusPolicy {
                    kind: PolicyKind::Periodic,
                    attribute: None,
                    crossing: None,
                    bound: None,
                    period_s: Some(60),
                },
            }
            .into(),
        ),
        (
            "status subscribed",
            StatusSubscribed {
                subscription: 7,
                entries: vec![status_full()],
            }
            .into(),
        ),
        (
            "status unsubscribe",
            StatusUnsubscribe { subscription: 7 }.into(),
        ),
        (
            "status notification",
            StatusNotification {
                subscription: 7,
                reason: NotifyReason::Threshold,
                entries: vec![status_full()],
                lagged: Some(3),
            }
            .into(),
        ),
        (
            "group content",
            GroupContent {
                pn_id: pn(0x61),
                epoch: 3,
                sender: eid("phone-1"),
                content_id: u64::MAX,
                sealed: vec![0x5a; 12 + 64 + 5 + 16],
                certificate: MemberCertificate {
                    pne_id: eid("phone-1"),
                    owner: "alice".parse().unwrap(),
                    key: PublicKeyBytes([0x11; 32]),
                    signature: SignatureBytes([0x22; 64]),
                },
            }
            .into(),
        ),
        (
            "group create",
            GroupCreate {
                name: "Holiday album".into(),
                open_to_user: true,
                owning: None,
            }
            .into(),
        ),
        (
            "group create for a PN GW's owner",
            GroupCreate {
                name: "Holiday album".into(),
                open_to_user: false,
                owning: Some(eid("phone-1")),
            }
            .into(),
        ),
        (
            "group ref",
            GroupRef {
                group_id: gid(0x71),
            }
            .into(),
        ),
        (
            "group invite",
            GroupInvite {
                group_id: gid(0x71),
                invitee: eid("tablet-1"),
            }
            .into(),
        ),
        (
            "group answer",
            GroupAnswer {
                group_id: gid(0x71),
                accept: true,
            }
            .into(),
        ),
        (
            "group expel",
            GroupExpel {
                group_id: gid(0x71),
                member: eid("tablet-1"),
            }
            .into(),
        ),
        (
            "group done",
            GroupDone {
                group_id: gid(0x71),
                epoch: 4,
                delivered: 2,
            }
            .into(),
        ),
        (
            "group key copy",
            GroupKeyCopy {
                group_id: gid(0x71),
                name: "Holiday album".into(),
                epoch: 4,
                key: KeyBytes([0x33; 32]),
            }
            .into(),
        ),
        (
            "group members",
            GroupMembers {
                group_id: gid(0x71),
                name: "Holiday album".into(),
                epoch: 4,
                members: vec![
                    GroupMember {
                        entity: eid("phone-1"),
                        owner: "alice".parse().unwrap(),
                        is_owner: true,
                    },
                    GroupMember {
                        entity: eid("tablet-9"),
                        owner: "bob".parse().unwrap(),
                        is_owner: false,
                    },
                ],
            }
            .into(),
        ),
        (
            "group invitation",
            GroupInvitation {
                group_id: gid(0x71),
                name: "Holiday album".into(),
                inviter: eid("phone-1"),
                owner: "alice".parse().unwrap(),
                expires_at_ms: 1_800_000_060_000,
            }
            .into(),
        ),
        (
            "group ended",
            GroupEnded {
                group_id: gid(0x71),
                why: GroupEndReason::Expelled,
            }
            .into(),
        ),
        (
            "group content box",
            GroupContentBox {
                group_id: gid(0x71),
                epoch: 4,
                sender: eid("phone-1"),
                content_id: 9,
                sealed: vec![0x5b; 12 + 64 + 3 + 16],
                certificate: MemberCertificate {
                    pne_id: eid("phone-1"),
                    owner: "alice".parse().unwrap(),
                    key: PublicKeyBytes([0x11; 32]),
                    signature: SignatureBytes([0x22; 64]),
                },
            }
            .into(),
        ),
        (
            "gateway group request",
            GatewayGroupRequest {
                request_id: RequestId(0x6d),
                service: "cpns.group.expel".into(),
                payload: vec![0xa2, 0x00, 0x50],
            }
            .into(),
        ),
        (
            "gateway group response",
            GatewayGroupResponse {
                request_id: RequestId(0x6d),
                service: "cpns.group.expel".into(),
                payload: vec![0xa2, 0x01, 0x05],
            }
            .into(),
        ),
        (
            "delivery offer",
            DeliveryOffer {
                service_id: "video".into(),
                targets: vec![eid("tv-1"), eid("tablet-1")],
                name: "holiday.mp4".into(),
                media_type: "video/mp4".into(),
                size: 104_857_600,
                sha256: Some(HashBytes([0x44; 32])),
                to_pn: Some(pn(8)),
                held: true,
                requires: br#"{"has_ui":true}"#.to_vec(),
                suite: Some(2),
                group: None,
                user: None,
                more: Vec::new(),
            }
            .into(),
        ),
        (
            "delivery offer of several services",
            DeliveryOffer {
                service_id: "video".into(),
                targets: vec![eid("tv-1")],
                name: "film.mp4".into(),
                media_type: "video/mp4".into(),
                size: 50_000_000,
                sha256: None,
                to_pn: None,
                held: false,
                requires: vec![],
                suite: Some(1),
                group: None,
                user: None,
                more: vec![
                    DeliveryItem {
                        service_id: "subtitles".into(),
                        name: "film.srt".into(),
                        media_type: "application/x-subrip".into(),
                        size: 40_000,
                        sha256: None,
                    },
                    DeliveryItem {
                        service_id: "poster".into(),
                        name: "film.jpg".into(),
                        media_type: "image/jpeg".into(),
                        size: 300_000,
                        sha256: None,
                    },
                ],
            }
            .into(),
        ),
        (
            "delivery grant",
            DeliveryGrant {
                session: DeliveryId::from_bytes([0x81; 16]),
                key: KeyBytes([0x55; 32]),
                pn_id: pn(7),
                chunk: 65_536,
                window: 1_048_576,
                size: 104_857_600,
                targets: vec![eid("tv-1")],
                held: true,
                suite: Some(2),
                also: Vec::new(),
                digest: false,
            }
            .into(),
        ),
        (
            "delivery offer to a service group",
            DeliveryOffer {
                service_id: "album".into(),
                targets: vec![],
                name: "album.zip".into(),
                media_type: "application/zip".into(),
                size: 300_000,
                sha256: Some(HashBytes([0x45; 32])),
                to_pn: None,
                held: false,
                requires: vec![],
                suite: Some(2),
                group: Some(GroupId::from_bytes([0x61; 16])),
                user: None,
                more: Vec::new(),
            }
            .into(),
        ),
        (
            "delivery offer to a user",
            DeliveryOffer {
                service_id: "note".into(),
                targets: vec![],
                name: "note.txt".into(),
                media_type: "text/plain".into(),
                size: 11,
                sha256: Some(HashBytes([0x46; 32])),
                to_pn: None,
                held: false,
                requires: vec![],
                suite: None,
                group: None,
                user: Some("alice".parse().unwrap()),
                more: Vec::new(),
            }
            .into(),
        ),
        (
            "delivery grant in two PNs",
            DeliveryGrant {
                session: DeliveryId::from_bytes([0x82; 16]),
                key: KeyBytes([0x56; 32]),
                pn_id: pn(7),
                chunk: 65_536,
                window: 196_608,
                size: 300_000,
                targets: vec![eid("tv-1")],
                held: false,
                suite: Some(2),
                also: vec![DeliveryPart {
                    session: DeliveryId::from_bytes([0x83; 16]),
                    key: KeyBytes([0x57; 32]),
                    targets: vec![eid("bobs-phone-1")],
                }],
                digest: true,
            }
            .into(),
        ),
        (
            "delivery invite",
            DeliveryInvite {
                session: DeliveryId::from_bytes([0x81; 16]),
                source: eid("phone-1"),
                owner: "alice".parse().unwrap(),
                service_id: "video".into(),
                name: "holiday.mp4".into(),
                media_type: "video/mp4".into(),
                size: 104_857_600,
                sha256: Some(HashBytes([0x44; 32])),
                key: KeyBytes([0x55; 32]),
                pn_id: pn(7),
                chunk: 65_536,
                specific: b"licence: tv-1 until 2027-01-01".to_vec(),
                held: false,
                suite: Some(2),
                more: Vec::new(),
            }
            .into(),
        ),
        (
            "delivery invite of several services",
            DeliveryInvite {
                session: DeliveryId::from_bytes([0x84; 16]),
                source: eid("phone-1"),
                owner: "alice".parse().unwrap(),
                service_id: "video".into(),
                name: "film.mp4".into(),
                media_type: "video/mp4".into(),
                size: 50_000_000,
                sha256: Some(HashBytes([0x47; 32])),
                key: KeyBytes([0x58; 32]),
                pn_id: pn(7),
                chunk: 65_536,
                specific: vec![],
                held: false,
                suite: Some(1),
                more: vec![DeliveryItem {
                    service_id: "subtitles".into(),
                    name: "film.srt".into(),
                    media_type: "application/x-subrip".into(),
                    size: 40_000,
                    sha256: Some(HashBytes([0x48; 32])),
                }],
            }
            .into(),
        ),
        (
            "delivery route",
            DeliveryRoute {
                session: DeliveryId::from_bytes([0x81; 16]),
                pn_id: pn(7),
                source: eid("phone-1"),
                targets: vec![eid("tv-1")],
                size: 104_857_600,
                chunk: 65_536,
                from_server: false,
                to_pn: None,
                to_server: true,
            }
            .into(),
        ),
        (
            "delivery chunk",
            DeliveryChunk {
                session: DeliveryId::from_bytes([0x81; 16]),
                offset: 65_536,
                sealed: vec![0x5c; 12 + 40 + 16],
                digest: None,
            }
            .into(),
        ),
        (
            "delivery chunk, the last, with the source's digest",
            DeliveryChunk {
                session: DeliveryId::from_bytes([0x81; 16]),
                offset: 196_608,
                sealed: vec![0x5d; 12 + 40 + 16],
                digest: Some(Box::new(DeliveryDigest {
                    hashes: vec![HashBytes([0x47; 32]), HashBytes([0x48; 32])],
                    signature: SignatureBytes([0x23; 64]),
                    certificate: MemberCertificate {
                        pne_id: eid("phone-1"),
                        owner: "alice".parse().unwrap(),
                        key: PublicKeyBytes([0x11; 32]),
                        signature: SignatureBytes([0x22; 64]),
                    },
                })),
            }
            .into(),
        ),
        (
            "delivery control",
            DeliveryControl {
                session: DeliveryId::from_bytes([0x81; 16]),
                action: ControlAction::Pause,
            }
            .into(),
        ),
        (
            "delivery message",
            DeliveryMessage {
                peer: eid("phone-1"),
                service_id: "cast".into(),
                media_type: "text/uri-list".into(),
                payload: b"https://example.org/film".to_vec(),
                pn_id: Some(pn(7)),
                owner: Some("alice".parse().unwrap()),
            }
            .into(),
        ),
        (
            "delivery request",
            DeliveryRequest {
                source: eid("phone-1"),
                name: "holiday.mp4".into(),
                service_id: "album".into(),
                to_pn: None,
            }
            .into(),
        ),
        (
            "delivery requested",
            DeliveryRequested {
                requester: eid("tv-1"),
                owner: "alice".parse().unwrap(),
                name: "holiday.mp4".into(),
                service_id: "album".into(),
                pn_id: pn(7),
            }
            .into(),
        ),
        (
            "delivery ack",
            DeliveryAck {
                session: DeliveryId::from_bytes([0x81; 16]),
                have: 131_072,
                resume: true,
            }
            .into(),
        ),
        (
            "delivery done",
            DeliveryDone {
                session: DeliveryId::from_bytes([0x81; 16]),
                target: eid("tv-1"),
                bytes: 104_857_600,
                result: DeliveryResult::Delivered,
                items: Vec::new(),
            }
            .into(),
        ),
        (
            "delivery done of several items",
            DeliveryDone {
                session: DeliveryId::from_bytes([0x84; 16]),
                target: eid("tv-1"),
                bytes: 50_040_000,
                result: DeliveryResult::HashMismatch,
                items: vec![DeliveryResult::Delivered, DeliveryResult::HashMismatch],
            }
            .into(),
        ),
        (
            "service publish",
            ServicePublish {
                description: br#"{"service_id":"renderer"}"#.to_vec(),
            }
            .into(),
        ),
        (
            "service published",
            ServicePublished {
                dir_id: 7,
                expires_at_ms: 1_800_000_000_000,
            }
            .into(),
        ),
        (
            "service unpublish",
            ServiceUnpublish {
                service_id: "renderer".into(),
            }
            .into(),
        ),
        (
            "service unpublished",
            ServiceUnpublished { removed: true }.into(),
        ),
        (
            "service discover full",
            ServiceDiscover {
                keywords: vec!["video".into(), "renderer".into()],
                all: true,
                service_type: Some("media.renderer".into()),
                fits_me: true,
                after: 7,
            }
            .into(),
        ),
        (
            "service discover min",
            ServiceDiscover {
                keywords: Vec::new(),
                all: false,
                service_type: None,
                fits_me: false,
                after: 0,
            }
            .into(),
        ),
        (
            "service found",
            ServiceFound {
                entries: vec![ServiceSummary {
                    dir_id: 7,
                    offerer: eid("tv-1"),
                    owner: "alice".parse().unwrap(),
                    service_id: "renderer".into(),
                    service_type: "media.renderer".into(),
                    name: "Living room TV".into(),
                    keywords: vec!["video".into()],
                }],
                more: true,
            }
            .into(),
        ),
        ("service retrieve", ServiceRetrieve { dir_id: 7 }.into()),
        (
            "service description",
            ServiceDescriptionAnswer {
                dir_id: 7,
                offerer: eid("tv-1"),
                description: br#"{"service_id":"renderer"}"#.to_vec(),
                expires_at_ms: 1_800_000_000_000,
            }
            .into(),
        ),
        (
            "service watch",
            ServiceWatch {
                keywords: vec!["video".into()],
                all: true,
                service_type: Some("media.renderer".into()),
            }
            .into(),
        ),
        ("service watching", ServiceWatching { watch_id: 3 }.into()),
        ("service unwatch", ServiceUnwatch { watch_id: 3 }.into()),
        (
            "service unwatched",
            ServiceUnwatched { removed: true }.into(),
        ),
        (
            "service match",
            ServiceMatch {
                watch_id: 3,
                entry: ServiceSummary {
                    dir_id: 8,
                    offerer: eid("tv-1"),
                    owner: "alice".parse().unwrap(),
                    service_id: "renderer".into(),
                    service_type: "media.renderer".into(),
                    name: "Living room TV".into(),
                    keywords: vec!["video".into()],
                },
            }
            .into(),
        ),
        (
            "group content sent",
            GroupContentSent {
                pn_id: pn(0x61),
                delivered: 2,
            }
            .into(),
        ),
        (
            "status notification min",
            StatusNotification {
                subscription: 7,
                reason: NotifyReason::Change,
                entries: vec![StatusEntry::new(eid("gw-1"), Status::Offline)],
                lagged: None,
            }
            .into(),
        ),
    ]
}

fn caps_every_field() -> DeviceCapabilities {
    DeviceCapabilities {
        screen: Some(Screen {
            width: 1080,
            height: 2400,
        }),
        battery_mah: Some(4500),
        processor: Some("arm64 cortex-a78".into()),
        memory_mb: Some(8192),
        chipsets: vec!["main-x1".into(), "wifi6".into()],
        drivers: vec!["gpu/2.1".into()],
        free_memory_mb: Some(1500),
        battery_minutes: Some(320),
        running: vec!["maps".into()],
        active_drivers: vec!["gps".into()],
        unknown: [(40, minicbor::to_vec("from a newer version").unwrap())].into(),
        ..caps_full()
    }
}

fn status_full() -> StatusEntry {
    StatusEntry {
        entity: eid("alice-phone"),
        status: Status::Custom,
        label: Some("driving".into()),
        since_ms: Some(1_790_000_000_000),
        battery_pct: Some(9),
        battery_minutes: Some(25),
        free_memory_mb: Some(700),
    }
}

/// Every sample body in an envelope, cycling through the envelope shapes: request from an entity
/// to the server, response from the server (with `in_reply_to`), notification between entities.
pub fn samples() -> Vec<(&'static str, Envelope)> {
    bodies()
        .into_iter()
        .enumerate()
        .map(|(i, (name, body))| {
            let id = i as u64;
            let env = match i % 3 {
                0 => Envelope::request(id, Address::Entity(eid("gw-1")), Address::Server, body),
                1 => Envelope::response(
                    id + 1000,
                    id,
                    Address::Server,
                    Address::Entity(eid("gw-1")),
                    body,
                ),
                _ => Envelope::notify(
                    u64::MAX - id,
                    Address::Entity(eid("gw-1")),
                    Address::Entity(eid("alice-phone")),
                    body,
                ),
            };
            (name, env)
        })
        .collect()
}

/// The CBOR of an envelope.
pub fn cbor(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    cpns_wire::codec::encode_envelope(env, &mut out);
    out
}

/// A whole plain frame, length prefix included.
pub fn frame(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_plain_frame(env, &mut out);
    out
}

/// Hand-written CBOR of an envelope (request from `gw-1` to the server, msg_id 1) with the given
/// version, extra top-level keys `extra` (each with the value 0), and the body written by `body`,
/// so tests can build what the typed encoder never would.
pub fn raw_envelope(
    version: u64,
    extra: &[u64],
    body: impl FnOnce(&mut minicbor::Encoder<Vec<u8>>),
) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(6 + extra.len() as u64).unwrap();
    e.u8(0).unwrap().u64(version).unwrap();
    e.u8(1).unwrap().u64(1).unwrap();
    e.u8(3).unwrap().u32(1).unwrap();
    e.u8(4).unwrap().str("gw-1").unwrap();
    e.u8(5).unwrap().u8(0).unwrap();
    for k in extra {
        e.u64(*k).unwrap().u8(0).unwrap();
    }
    e.u8(6).unwrap();
    body(&mut e);
    e.into_writer()
}
