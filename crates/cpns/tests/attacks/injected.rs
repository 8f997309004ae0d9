//! (C) A member without a UI that joined by registering keeps a sealed link: a man in the middle
//! on the PAN, between the watch and its PN GW, forwards every frame and, once the watch is a
//! member, appends plain frames in its name (a status report, a capabilities update, a release
//! of its PN). The PN GW refuses the first at the frame and closes the link: no status or
//! capabilities reach the server, and the PN is not released for anyone.

use cpns_wire::{
    Address, DeviceCapabilitiesUpdate, EntityId, Envelope, PnId, PnReleaseRequest, RequestId,
    Status, StatusEntry, StatusReport, encode_plain_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::harness::{capabilities, id, world};

/// A PAN relay in the middle: it forwards whole frames both ways and appends frames of its own
/// between them, towards the PN GW.
struct Mitm {
    addr: String,
    inject: mpsc::Sender<Vec<u8>>,
}

impl Mitm {
    async fn start(gw_pan: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (inject, mut towards_gw) = mpsc::channel::<Vec<u8>>(16);
        let frames = inject.clone();
        let gw_pan = gw_pan.to_string();
        tokio::spawn(async move {
            let (device, _) = listener.accept().await.unwrap();
            let gw = TcpStream::connect(&gw_pan).await.unwrap();
            let (mut from_device, mut to_device) = device.into_split();
            let (mut from_gw, mut to_gw) = gw.into_split();
            // PN GW → device, as it comes.
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_gw, &mut to_device).await;
            });
            // Device → PN GW, a whole frame at a time, so an injected frame falls between two.
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if from_device.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut frame = len.to_vec();
                    frame.resize(4 + u32::from_be_bytes(len) as usize, 0);
                    if from_device.read_exact(&mut frame[4..]).await.is_err() {
                        return;
                    }
                    if frames.send(frame).await.is_err() {
                        return;
                    }
                }
            });
            while let Some(frame) = towards_gw.recv().await {
                if to_gw.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        Self { addr, inject }
    }

    /// Appends a plain frame from `from` to the PN GW `gw`.
    async fn send_as(&self, msg_id: u64, from: &EntityId, gw: &EntityId, body: cpns_wire::Body) {
        let env = Envelope::request(
            msg_id,
            Address::Entity(from.clone()),
            Address::Entity(gw.clone()),
            body,
        );
        let mut frame = Vec::new();
        encode_plain_frame(&env, &mut frame);
        self.inject.send(frame).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_injected_on_a_joiners_link_are_refused() {
    let mut w = world(&["phone", "watch"]).start();
    let mut phone = w.pne("phone").setup("1-1").stay().spawn();
    w.gw().expect_event("pn_established");
    phone.expect_event("rejoined");
    // The watch, without a UI, joins the phone's PN by registering, through the relay.
    let mitm = Mitm::start(w.pan()).await;
    let mut watch = w
        .pne("watch")
        .no_ui()
        .register()
        .stay()
        .at(&mitm.addr)
        .spawn();
    let joined = w
        .gw()
        .expect_event_where("member_joined", |v| v["pne"] == "watch");
    let pn: PnId = joined["pn_id"].as_str().unwrap().parse().unwrap();
    watch.expect_event("pn_joined");
    let before = w.stores().await;
    assert!(
        before.local["watch"][0]
            .members
            .iter()
            .any(|m| { m.pne_id.as_str() == "watch" && m.sealed_local_key.is_some() })
    );

    // The relay speaks as the watch, plain, after the watch's own (sealed) frames.
    let (watch_id, gw_id) = (id("watch"), id("home-gw"));
    let forged_status = StatusReport {
        entries: vec![StatusEntry::new(watch_id.clone(), Status::Busy)],
    };
    let forged_caps = DeviceCapabilitiesUpdate {
        capabilities: capabilities("forged", 0),
        entity: None,
    };
    let forged_release = PnReleaseRequest {
        request_id: RequestId(99),
        pn_id: pn,
        asked_by: None,
    };
    mitm.send_as(9_001, &watch_id, &gw_id, forged_status.into())
        .await;
    mitm.send_as(9_002, &watch_id, &gw_id, forged_caps.into())
        .await;
    mitm.send_as(9_003, &watch_id, &gw_id, forged_release.into())
        .await;
    let rejected = w.gw().expect_event("link_rejected");
    assert!(
        rejected["reason"].as_str().unwrap().contains("plain"),
        "{rejected}"
    );

    // The PN stands for both members, everywhere; the server holds no forged capabilities.
    let after = w.stores().await;
    after.agree();
    assert_eq!(after.server, before.server);
    assert_eq!(after.local["phone"], before.local["phone"]);
    let watch_record = after.server[0]
        .members
        .iter()
        .find(|m| m.pne_id.as_str() == "watch")
        .unwrap();
    assert_ne!(
        watch_record
            .capabilities
            .as_ref()
            .map(|c| c.device_type.as_str()),
        Some("forged")
    );
    drop(watch);
    drop(phone);
}
