//! Bad input on real sockets: what the CPNS Server's TLS listener and the PN GW's PAN listener do
//! with bytes that are not TLS, not frames, frames of unknown types, requests out of order and
//! impostors, and proof that none of it disturbs a healthy PN GW and PNE establishing a PN at
//! the same time (docs/design.md §3: oversize input refused before it is buffered; STYLE habit 5: peer
//! input never panics).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{
    Device, Harness, RunningServer, expect_closed, joined, pne_config, read_envelope, run_pne,
    unknown_type_frame, within,
};
use cpns_node::pne::PneStep;
use cpns_proto::gateway::GatewayEvent;
use cpns_proto::server::ServerEvent;
use cpns_store::{EntityKind, ServerStore};
use cpns_wire::{
    Address, Body, ConnectionSetupRequest, EntityDiscoveryRequest, EntityId, Envelope, ErrorCode,
    GatewayInfo, Mode, PnId, PnRegistrationRequest, PnSetupRequest, RandBytes, RequestId,
    SetupType,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A server with one honest PN GW, one PNE and one PN GW nobody but an impostor will use.
struct World {
    h: Harness,
    server: RunningServer,
    gw: Device,
    pne: Device,
    victim: Device,
}

impl World {
    async fn new() -> Self {
        let h = Harness::new().await;
        let gw = h.enroll(EntityKind::Gateway, "home-gw").await;
        let pne = h.enroll(EntityKind::Pne, "phone").await;
        let victim = h.enroll(EntityKind::Gateway, "office-gw").await;
        let server = h.start_server().await;
        Self {
            h,
            server,
            gw,
            pne,
            victim,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
        self.h.store.close().await;
    }
}

fn id(s: &str) -> EntityId {
    s.parse().unwrap()
}

fn error_code(env: &Envelope) -> ErrorCode {
    match &env.body {
        Body::ErrorBody(e) => e.code,
        other => panic!("expected an error response, got {}", other.name()),
    }
}

// ---- the server's TLS listener ----

/// (a) Bytes that are not a TLS ClientHello: the server closes the connection.
async fn server_garbage_instead_of_tls(server: SocketAddr) {
    let mut tcp = TcpStream::connect(server).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: cpns\r\n\r\n\x00\xff\xfe garbage")
        .await
        .unwrap();
    expect_closed(&mut tcp).await;

    // A TLS record header announcing a handshake record far larger than TLS allows.
    let mut tcp = TcpStream::connect(server).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x02])
        .await
        .unwrap();
    expect_closed(&mut tcp).await;
}

/// (b) After a real TLS handshake, bytes that are not a valid frame: the session is closed.
async fn server_bad_frames(h: &Harness, server: SocketAddr) {
    let cases: [(&str, Vec<u8>); 4] = [
        ("unknown frame kind", common::raw_frame(7, b"junk")),
        (
            "plain frame that is not CBOR",
            common::raw_frame(0, &[0xff, 0xff, 0x00, 0x13, 0x37]),
        ),
        ("oversize length prefix", vec![0xff, 0xff, 0xff, 0xff, 0x00]),
        ("zero length prefix", vec![0, 0, 0, 0]),
    ];
    for (what, bytes) in cases {
        let mut tls = h.tls_connect(server).await;
        tls.write_all(&bytes).await.unwrap();
        tls.flush().await.unwrap();
        let seen = expect_closed(&mut tls).await;
        assert!(seen.is_empty(), "{what}: the server answered {seen:?}");
    }

    // A truncated frame, then EOF.
    let mut tls = h.tls_connect(server).await;
    tls.write_all(&[0, 0, 0, 100, 0, 1, 2, 3]).await.unwrap();
    tls.shutdown().await.unwrap();
    let seen = expect_closed(&mut tls).await;
    assert!(seen.is_empty(), "truncated frame: the server answered");
}

/// (c) A valid frame of a message type the server does not know: an UnsupportedMessage error,
/// and the session goes on.
async fn server_unknown_message_type(h: &Harness, server: SocketAddr) {
    let mut tls = h.tls_connect(server).await;
    let frame = unknown_type_frame(999, 7, &id("future-gw"), &Address::Server);
    tls.write_all(&frame).await.unwrap();
    let resp = read_envelope(&mut tls).await;
    assert_eq!(resp.in_reply_to, Some(7));
    assert_eq!(error_code(&resp), ErrorCode::UnsupportedMessage);

    // Still serving: a request out of order gets its own error.
    tls.write_all(&common::plain_frame(&registration_request(8)))
        .await
        .unwrap();
    let resp = read_envelope(&mut tls).await;
    assert_eq!(resp.in_reply_to, Some(8));
    assert_eq!(error_code(&resp), ErrorCode::Unauthenticated);
}

fn registration_request(msg_id: u64) -> Envelope {
    let req = PnRegistrationRequest {
        request_id: RequestId(1),
        pn_id: PnId::from_bytes([7; 16]),
        gateway: GatewayInfo {
            gw_id: id("home-gw"),
            capabilities: common::capabilities("home-hub", true, true),
            subscription: None,
        },
        pnes: Vec::new(),
        initiator: None,
        lifetime_s: None,
        max_members: None,
    };
    Envelope::request(msg_id, Address::Entity(id("home-gw")), Address::Server, req)
}

/// (d) A PN Registration Request before connection set-up: Unauthenticated, nothing stored.
async fn server_unauthenticated_request(h: &Harness, server: SocketAddr) {
    let mut tls = h.tls_connect(server).await;
    tls.write_all(&common::plain_frame(&registration_request(1)))
        .await
        .unwrap();
    let resp = read_envelope(&mut tls).await;
    assert_eq!(resp.in_reply_to, Some(1));
    assert_eq!(error_code(&resp), ErrorCode::Unauthenticated);
    assert!(
        h.store
            .pn(&PnId::from_bytes([7; 16]))
            .await
            .unwrap()
            .is_none()
    );
}

/// (e) Connection set-up for a PN GW that is not enrolled: Unauthenticated, then the server
/// closes the session.
async fn server_unknown_gateway(h: &Harness, server: SocketAddr) {
    let mut tls = h.tls_connect(server).await;
    let req = ConnectionSetupRequest {
        gw_id: id("nobody-gw"),
        rand_gw: RandBytes([3; 16]),
        software: "test".into(),
    };
    let env = Envelope::request(1, Address::Entity(id("nobody-gw")), Address::Server, req);
    tls.write_all(&common::plain_frame(&env)).await.unwrap();
    let resp = read_envelope(&mut tls).await;
    assert_eq!(resp.in_reply_to, Some(1));
    assert_eq!(error_code(&resp), ErrorCode::Unauthenticated);
    let seen = expect_closed(&mut tls).await;
    assert!(seen.is_empty(), "the server sent more after refusing");
}

/// (f) A PN GW answering the challenge with the wrong EUKey: refused, and the server store
/// keeps nothing from it.
async fn server_wrong_eukey(h: &Harness, server: SocketAddr, victim: &Device) {
    let before = h.store.entity(&victim.id).await.unwrap();
    let wrong = cpns_crypto::EuKey::generate().unwrap();
    let store = h.local_store(&id("impostor")).await;
    let mut g = h.start_gateway(victim, &wrong, server, store.clone()).await;
    let failed = g
        .wait_for("the server to refuse the impostor", |e| {
            matches!(e, GatewayEvent::WanFailed(_))
        })
        .await;
    let GatewayEvent::WanFailed(reason) = failed else {
        unreachable!()
    };
    assert!(reason.contains("unauthenticated"), "{reason}");
    // The PN GW stops, typed: retrying with this credential would not help.
    assert!(matches!(
        g.ended().await,
        Err(cpns_node::NodeError::Refused(e)) if e.code == ErrorCode::Unauthenticated
    ));
    store.close().await;
    assert_eq!(h.store.entity(&victim.id).await.unwrap(), before);
    assert!(h.store.pns_of_gateway(&victim.id).await.unwrap().is_empty());
}

/// (g) A healthy PN GW: connection set-up, then a PNE-initiated PN with LocalEUKey, registered
/// with the server and stored by every party.
async fn healthy_gateway_and_pn(h: &Harness, server: SocketAddr, gw: &Device, pne: &Device) {
    let gw_store = h.local_store(&gw.id).await;
    let mut g = h
        .start_gateway(gw, &gw.eukey, server, gw_store.clone())
        .await;
    g.wait_ready().await;
    let pne_store = h.local_store(&pne.id).await;
    let report = run_pne(
        pne_config(pne, true),
        pne_store.clone(),
        &g.pan_addr,
        vec![PneStep::Setup(SetupType::OneToOne)],
    )
    .await;
    let inv = joined(&report);
    g.wait_for("the PN to be established", |e| {
        matches!(e, GatewayEvent::PnEstablished { inventory, .. } if inventory.pn_id == inv.pn_id)
    })
    .await;
    let rec = h.store.pn(&inv.pn_id).await.unwrap().unwrap();
    assert_eq!(rec.gateway, gw.id);
    assert_eq!(rec.members.len(), 1);
    assert_eq!(rec.members[0].pne_id, pne.id);
    assert!(rec.members[0].authenticated && rec.members[0].initiator);
    g.stop().await.unwrap();
    gw_store.close().await;
    pne_store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_closes_on_garbage_instead_of_tls() {
    let w = World::new().await;
    server_garbage_instead_of_tls(w.server.addr).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_closes_on_bad_frames() {
    let w = World::new().await;
    server_bad_frames(&w.h, w.server.addr).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_answers_unknown_message_type() {
    let w = World::new().await;
    server_unknown_message_type(&w.h, w.server.addr).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_refuses_requests_before_connection_setup() {
    let w = World::new().await;
    server_unauthenticated_request(&w.h, w.server.addr).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_refuses_unknown_gateway() {
    let mut w = World::new().await;
    server_unknown_gateway(&w.h, w.server.addr).await;
    let e = w
        .server
        .wait_for("AuthenticationFailed", |e| {
            matches!(e, ServerEvent::AuthenticationFailed { .. })
        })
        .await;
    assert!(
        matches!(e, ServerEvent::AuthenticationFailed { entity, .. } if entity.as_str() == "nobody-gw")
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_refuses_gateway_with_wrong_eukey() {
    let mut w = World::new().await;
    server_wrong_eukey(&w.h, w.server.addr, &w.victim).await;
    let e = w
        .server
        .wait_for("AuthenticationFailed", |e| {
            matches!(e, ServerEvent::AuthenticationFailed { .. })
        })
        .await;
    assert!(matches!(e, ServerEvent::AuthenticationFailed { entity, .. } if entity == w.victim.id));
    w.stop().await;
}

/// Every bad input at once, with connections left hanging mid-handshake and mid-frame, while a
/// healthy PN GW sets up its connection and a PNE establishes a PN through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_bad_input_does_not_disturb_a_healthy_gateway() {
    let w = World::new().await;
    let addr = w.server.addr;

    // Left hanging for the whole test: half a ClientHello, and a TLS session inside a frame.
    let mut half_hello = TcpStream::connect(addr).await.unwrap();
    half_hello.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut half_frame = w.h.tls_connect(addr).await;
    half_frame.write_all(&[0, 0, 0, 64, 0, 0xa1]).await.unwrap();
    half_frame.flush().await.unwrap();

    within("every flow", async {
        tokio::join!(
            healthy_gateway_and_pn(&w.h, addr, &w.gw, &w.pne),
            server_garbage_instead_of_tls(addr),
            server_bad_frames(&w.h, addr),
            server_unknown_message_type(&w.h, addr),
            server_unauthenticated_request(&w.h, addr),
            server_unknown_gateway(&w.h, addr),
            server_wrong_eukey(&w.h, addr, &w.victim),
        )
    })
    .await;

    // The hanging session was still being served: its truncated frame ends it.
    half_frame.shutdown().await.unwrap();
    expect_closed(&mut half_frame).await;
    drop(half_hello);
    assert_eq!(w.h.store.all_pns().await.unwrap().len(), 1);
    w.stop().await;
}

// ---- the PN GW's PAN listener ----

/// A server with a running, connected PN GW.
struct PanWorld {
    w: World,
    g: common::RunningGateway,
    gw_store: cpns_store::SqliteStore,
}

impl PanWorld {
    async fn new() -> Self {
        let w = World::new().await;
        let gw_store = w.h.local_store(&w.gw.id).await;
        let mut g =
            w.h.start_gateway(&w.gw, &w.gw.eukey, w.server.addr, gw_store.clone())
                .await;
        g.wait_ready().await;
        Self { w, g, gw_store }
    }

    async fn stop(self) {
        self.g.stop().await.unwrap();
        self.gw_store.close().await;
        self.w.stop().await;
    }
}

/// Bytes that are not frames, an oversize length prefix, a frame that is not CBOR: the PN GW
/// closes the link.
async fn pan_garbage(pan: &str) {
    let cases: [(&str, Vec<u8>); 4] = [
        ("text", b"this is not a CPNS frame at all".to_vec()),
        ("oversize length prefix", vec![0xff, 0xff, 0xff, 0xff, 0, 1]),
        ("zero length prefix", vec![0, 0, 0, 0]),
        (
            "plain frame that is not CBOR",
            common::raw_frame(0, &[0xff, 0x00, 0xfe]),
        ),
    ];
    for (what, bytes) in cases {
        let mut tcp = TcpStream::connect(pan).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let seen = expect_closed(&mut tcp).await;
        assert!(seen.is_empty(), "{what}: the PN GW answered {seen:?}");
    }
}

/// A sealed frame (kind byte 1) before PN GW authentication gave the link keys: closed.
async fn pan_sealed_before_keys(pan: &str) {
    let mut tcp = TcpStream::connect(pan).await.unwrap();
    tcp.write_all(&common::raw_frame(1, &[0x5a; 48]))
        .await
        .unwrap();
    let seen = expect_closed(&mut tcp).await;
    assert!(seen.is_empty(), "the PN GW answered {seen:?}");
}

/// A message type the PN GW does not know: UnsupportedMessage, and the link goes on (discovery
/// is still answered).
async fn pan_unknown_message_type(pan: &str, gw: &EntityId) {
    let mut tcp = TcpStream::connect(pan).await.unwrap();
    let me = id("future-pne");
    tcp.write_all(&unknown_type_frame(
        4242,
        1,
        &me,
        &Address::Entity(gw.clone()),
    ))
    .await
    .unwrap();
    let resp = read_envelope(&mut tcp).await;
    assert_eq!(resp.in_reply_to, Some(1));
    assert_eq!(error_code(&resp), ErrorCode::UnsupportedMessage);

    let discover = EntityDiscoveryRequest {
        entity_id: me.clone(),
        mode: Mode::Pne,
    };
    let env = Envelope::request(2, Address::Entity(me), Address::Server, discover);
    tcp.write_all(&common::plain_frame(&env)).await.unwrap();
    let resp = read_envelope(&mut tcp).await;
    assert_eq!(resp.in_reply_to, Some(2));
    assert!(
        matches!(&resp.body, Body::EntityDiscoveryResponse(r) if r.entity_id == *gw && r.mode == Mode::Gateway),
        "{resp:?}"
    );
}

/// A PN Setup Request without the initiator's join information: BadRequest.
async fn pan_setup_without_join(pan: &str, gw: &EntityId) {
    let mut tcp = TcpStream::connect(pan).await.unwrap();
    let req = PnSetupRequest {
        request_id: RequestId(1),
        setup: Some(SetupType::OneToOne),
        join: None,
        pn_id: None,
        initiator: None,
    };
    let env = Envelope::request(
        1,
        Address::Entity(id("sloppy-pne")),
        Address::Entity(gw.clone()),
        req,
    );
    tcp.write_all(&common::plain_frame(&env)).await.unwrap();
    let resp = read_envelope(&mut tcp).await;
    assert_eq!(resp.in_reply_to, Some(1));
    assert_eq!(error_code(&resp), ErrorCode::BadRequest);
}

/// A PNE establishing a PN through the PN GW; the server registers it.
async fn pan_healthy_pne(h: &Harness, pan: &str, gw: &Device, pne: &Device) -> PnId {
    let store = h.local_store(&pne.id).await;
    let report = run_pne(
        pne_config(pne, true),
        store.clone(),
        pan,
        vec![PneStep::Setup(SetupType::OneToOne)],
    )
    .await;
    store.close().await;
    let inv = joined(&report);
    let rec = h.store.pn(&inv.pn_id).await.unwrap().unwrap();
    assert_eq!(rec.gateway, gw.id);
    assert_eq!(
        rec.members.iter().map(|m| &m.pne_id).collect::<Vec<_>>(),
        [&pne.id]
    );
    inv.pn_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pan_closes_on_garbage() {
    let p = PanWorld::new().await;
    pan_garbage(&p.g.pan_addr).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pan_closes_on_sealed_frame_before_keys() {
    let mut p = PanWorld::new().await;
    pan_sealed_before_keys(&p.g.pan_addr).await;
    let e =
        p.g.wait_for("LinkRejected", |e| {
            matches!(e, GatewayEvent::LinkRejected { .. })
        })
        .await;
    assert!(
        matches!(&e, GatewayEvent::LinkRejected { reason, .. } if reason.contains("sealed")),
        "{e:?}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pan_answers_unknown_message_type() {
    let p = PanWorld::new().await;
    pan_unknown_message_type(&p.g.pan_addr, &p.w.gw.id).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pan_refuses_setup_without_join_info() {
    let p = PanWorld::new().await;
    pan_setup_without_join(&p.g.pan_addr, &p.w.gw.id).await;
    p.stop().await;
}

/// Every bad PAN input at once, with a link left hanging mid-frame, while a healthy PNE
/// establishes a PN through the same PN GW.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pan_bad_input_does_not_disturb_a_healthy_pne() {
    let p = PanWorld::new().await;
    let pan = p.g.pan_addr.clone();
    let gw = p.w.gw.id.clone();

    let mut half_frame = TcpStream::connect(&pan).await.unwrap();
    half_frame.write_all(&[0, 0, 0, 32, 0, 0xa1]).await.unwrap();

    let (pn, ..) = within("every flow", async {
        tokio::join!(
            pan_healthy_pne(&p.w.h, &pan, &p.w.gw, &p.w.pne),
            pan_garbage(&pan),
            pan_sealed_before_keys(&pan),
            pan_unknown_message_type(&pan, &gw),
            pan_setup_without_join(&pan, &gw),
        )
    })
    .await;

    // The hanging link was still being served: its truncated frame ends it.
    half_frame.shutdown().await.unwrap();
    expect_closed(&mut half_frame).await;

    let inventory = p.g.handle.inventory().await.unwrap();
    assert_eq!(inventory.iter().map(|i| i.pn_id).collect::<Vec<_>>(), [pn]);
    p.stop().await;
}
