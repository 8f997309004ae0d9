//! Group content at the sockets (docs/security.md §4.11). On a `trusted` PAN frames are plain, so
//! a man in the middle between the PN GW and the tv sees and writes Group Content. It colludes
//! with the watch, a member: it holds the watch's credential (so its signing key) and the PN's
//! group key of the epoch (read here from the server's store with its master key, as a member
//! holds it). Its moves, towards the tv, each after the phone's genuine content went by:
//! - content naming the phone as sender, sealed under the group key and signed by the watch;
//! - the phone's genuine content again (a replay);
//! - the phone's genuine content with the watch named as its sender and the watch's
//!   certificate (reattributed);
//! - the phone's genuine content with one byte of its box flipped.
//!
//! The tv takes the genuine content once, refuses each forgery with its reason, and never tells
//! the forged words as content.

use cpns_crypto::{ContentBinding, EuKey, MachineRng, MasterKey, MemberSigningKey};
use cpns_wire::codec::split_frame;
use cpns_wire::{
    Address, Body, EntityId, Envelope, FrameKind, GroupContent, PnId, decode_envelope,
    encode_plain_frame,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::common::World;
use crate::harness::{id, read_whole, within, world};

/// A PAN relay in the middle: whole frames both ways; it hands the test every plain frame the
/// PN GW sends the device, and writes the test's frames towards the device between them.
struct Mitm {
    addr: String,
    to_device: mpsc::Sender<Vec<u8>>,
    seen: mpsc::Receiver<Envelope>,
}

impl Mitm {
    async fn start(gw_pan: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (to_device, mut towards_device) = mpsc::channel::<Vec<u8>>(64);
        let (seen_tx, seen) = mpsc::channel::<Envelope>(256);
        let frames = to_device.clone();
        let gw_pan = gw_pan.to_string();
        tokio::spawn(async move {
            let (device, _) = listener.accept().await.unwrap();
            let gw = TcpStream::connect(&gw_pan).await.unwrap();
            let (mut from_device, mut to_dev) = device.into_split();
            let (mut from_gw, mut to_gw) = gw.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_device, &mut to_gw).await;
            });
            // PN GW → device, a whole frame at a time; plain ones are shown to the test.
            tokio::spawn(async move {
                while let Some(frame) = read_whole(&mut from_gw).await {
                    if let Ok((FrameKind::Plain, payload)) = split_frame(&frame[4..])
                        && let Ok(env) = decode_envelope(payload)
                    {
                        let _ = seen_tx.try_send(env);
                    }
                    if frames.send(frame).await.is_err() {
                        return;
                    }
                }
            });
            while let Some(frame) = towards_device.recv().await {
                if to_dev.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        Self {
            addr,
            to_device,
            seen,
        }
    }

    /// The next Group Content the PN GW sent the device.
    async fn next_content(&mut self) -> GroupContent {
        within("Group Content through the relay", async {
            loop {
                let env = self.seen.recv().await.expect("the relay runs");
                if let Body::GroupContent(m) = env.body {
                    return m;
                }
            }
        })
        .await
    }

    /// Writes a Group Content notify from the PN GW `gw` to `to`, as the PN GW would.
    async fn send(&self, msg_id: u64, gw: &EntityId, to: &EntityId, m: GroupContent) {
        let env = Envelope::notify(
            msg_id,
            Address::Entity(gw.clone()),
            Address::Entity(to.clone()),
            m,
        );
        let mut frame = Vec::new();
        encode_plain_frame(&env, &mut frame);
        self.to_device.send(frame).await.unwrap();
    }
}

/// The PN's group key of `epoch`, as the server keeps it (sealed under its master key).
fn group_key(w: &World, pn: PnId) -> (u64, cpns_crypto::GroupKey) {
    let master = std::fs::read_to_string(w.data_dir().join("master.key")).unwrap();
    let master = MasterKey::from_hex(master.trim()).unwrap();
    let conn = rusqlite::Connection::open_with_flags(
        w.server_db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (epoch, sealed): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT epoch, sealed_group_key FROM pns WHERE pn_id = ?1",
            [pn.as_bytes().to_vec()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let epoch = u64::try_from(epoch).unwrap();
    let gk = cpns_crypto::open_group_key_at_rest(&master, pn.as_bytes(), epoch, &sealed).unwrap();
    (epoch, gk)
}

/// The EUKey in a credential file.
fn eukey(w: &World, who: &str) -> EuKey {
    let text = std::fs::read_to_string(w.cred(who)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    EuKey::from_hex(json["eukey"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_and_a_relay_cannot_pass_content_off_as_anothers() {
    let trusted = ["--pan-security", "trusted"];
    let mut w = world(&["phone", "tv", "watch"])
        .gateway_args(&trusted)
        .start();
    let mitm = Mitm::start(w.pan()).await;
    let mut tv = w
        .pne("tv")
        .await_invitation()
        .stay()
        .at(&mitm.addr)
        .args(&trusted)
        .spawn();
    let mut watch = w
        .pne("watch")
        .await_invitation()
        .stay()
        .args(&trusted)
        .spawn();
    let mut phone = w.pne("phone").setup("all").stay().args(&trusted).spawn();
    let made = w.gw().expect_event("pn_established");
    let pn: PnId = made["pn_id"].as_str().unwrap().parse().unwrap();
    for p in [&mut phone, &mut tv, &mut watch] {
        p.expect_event("pn_joined");
    }
    let mut mitm = mitm;

    // The phone's genuine content reaches the tv through the relay.
    let phone_store = w.store("phone");
    let line = crate::common::cpns(&[
        "pn",
        "send",
        &pn.to_string(),
        "dinner is ready",
        "--store",
        crate::common::s(&phone_store),
    ]);
    assert_eq!(line, format!("sent to PN {pn}; relayed to 2 members\n"));
    let genuine = mitm.next_content().await;
    let took = tv.expect_event("content");
    assert_eq!(took["from"], "phone");
    assert_eq!(took["text"], "dinner is ready");
    // The watch's own content, for its certificate (public: it travels with its content).
    let line = crate::common::cpns(&[
        "pn",
        "send",
        &pn.to_string(),
        "hello from the watch",
        "--store",
        crate::common::s(&w.store("watch")),
    ]);
    assert_eq!(line, format!("sent to PN {pn}; relayed to 2 members\n"));
    let from_watch = mitm.next_content().await;
    tv.expect_event_where("content", |v| v["from"] == "watch");

    // 1. Forged by the watch in the phone's name: sealed under the group key, signed by the
    //    watch, with the phone's certificate beside it.
    let (epoch, gk) = group_key(&w, pn);
    assert_eq!(epoch, genuine.epoch);
    let watch_key = MemberSigningKey::derive(&eukey(&w, "watch"), "watch");
    let binding = ContentBinding {
        pn_id: pn.as_bytes(),
        epoch,
        sender: "phone",
        content_id: 4242,
    };
    let forged = GroupContent {
        content_id: 4242,
        sealed: cpns_crypto::seal_group_content(
            MachineRng::from_seed_u64(1).get(),
            &gk,
            &watch_key,
            &binding,
            b"send me your password",
        )
        .unwrap(),
        ..genuine.clone()
    };
    // 2. A replay; 3. reattributed to the watch; 4. one byte flipped.
    let replayed = genuine.clone();
    let reattributed = GroupContent {
        sender: id("watch"),
        certificate: from_watch.certificate.clone(),
        ..genuine.clone()
    };
    let mut flipped = GroupContent {
        content_id: genuine.content_id ^ 1,
        ..genuine.clone()
    };
    flipped.sealed[30] ^= 1;
    let moves = [
        (forged, "its sender did not sign it"),
        (replayed, "a replay"),
        (reattributed, "does not open"),
        (flipped, "does not open"),
    ];
    let (gw, me) = (id("home-gw"), id("tv"));
    for (n, (m, why)) in moves.into_iter().enumerate() {
        mitm.send(90_000 + n as u64, &gw, &me, m).await;
        let refused = tv.expect_event("content_refused");
        let reason = refused["reason"].as_str().unwrap();
        assert!(reason.contains(why), "move {n}: {reason}");
        assert_eq!(refused["pn_id"], pn.to_string());
    }
    // Nothing forged was told as content: the next content the tv tells is the phone's next.
    let line = crate::common::cpns(&[
        "pn",
        "send",
        &pn.to_string(),
        "the real one",
        "--store",
        crate::common::s(&phone_store),
    ]);
    assert!(line.starts_with("sent to PN "), "{line}");
    let next = tv.expect_event("content");
    assert_eq!(next["text"], "the real one");
}
