//! What sits between a PNE and the server replays what it saw (docs/security.md §4.8, §4.10). On
//! a `trusted` PAN frames are plain, so a man in the middle between the PNE and its PN GW sees,
//! drops, rewrites and replays whole messages, as a relaying PN GW could; both moves here go
//! through the real PN GW and server processes:
//! - a Secure Request recorded and sent again after the server restarted (its kept answers
//!   gone, its replay window not): refused `conflict`, the service does not run again, the
//!   window in the server's store unchanged (item 5);
//! - a PN Setup Request whose join information (sent plain, before the link is sealed) the
//!   relay alters on a `cpns` PAN: the server's proof check fails, no PN is made, the forged
//!   capabilities are recorded nowhere (item 3);
//! - a PN Key Response recorded at epoch 1 and given, with the PN Update Notification of epoch
//!   2 dropped, as the answer to the next pull: the PNE takes nothing and says it may be kept
//!   behind (item 1).
//! - a Secure Notice of a service match recorded and given again in place of a later one
//!   (docs/security.md §4.8, "Notices"): the PNE tells nothing of it, and the next real match
//!   is told.

use std::sync::{Arc, Mutex};

use cpns_wire::codec::split_frame;
use cpns_wire::{Body, Envelope, FrameKind, PnId, decode_envelope, encode_plain_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::common::{World, cpns, s};
use crate::harness::{read_whole, within, world};

/// Which way a frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToGw,
    ToDevice,
}

/// What the relay does with a plain frame towards the device: `None` forwards it as it came.
type Rewrite = Box<dyn FnMut(&Envelope) -> Option<Option<Envelope>> + Send>;

/// A PAN relay that takes one device connection after another (a PNE that reconnects): whole
/// frames both ways, every plain one shown to the test, those towards the device through an
/// optional rewrite (drop, or replace), and frames of the test's written towards the PN GW.
struct Relay {
    addr: String,
    seen: mpsc::UnboundedReceiver<(Dir, Envelope, Vec<u8>)>,
    to_gw: Arc<Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    rewrite_up: Arc<Mutex<Option<Rewrite>>>,
}

/// A plain frame through `rules`: as it came, rewritten, or dropped (`None`).
fn through(
    rules: &Mutex<Option<Rewrite>>,
    frame: Vec<u8>,
    env: Option<&Envelope>,
) -> Option<Vec<u8>> {
    let Some(env) = env else {
        return Some(frame);
    };
    match rules.lock().unwrap().as_mut().and_then(|rule| rule(env)) {
        None => Some(frame),
        Some(replaced) => replaced.as_ref().map(frame_of),
    }
}

fn plain(frame: &[u8]) -> Option<Envelope> {
    match split_frame(&frame[4..]) {
        Ok((FrameKind::Plain, payload)) => decode_envelope(payload).ok(),
        _ => None,
    }
}

fn frame_of(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_plain_frame(env, &mut out);
    out
}

impl Relay {
    async fn start(gw_pan: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let to_gw: Arc<Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>> = Arc::default();
        let rewrite: Arc<Mutex<Option<Rewrite>>> = Arc::default();
        let rewrite_up: Arc<Mutex<Option<Rewrite>>> = Arc::default();
        let (gw_pan, inject, rules) = (gw_pan.to_string(), to_gw.clone(), rewrite.clone());
        let rules_up = rewrite_up.clone();
        tokio::spawn(async move {
            while let Ok((device, _)) = listener.accept().await {
                let gw = TcpStream::connect(&gw_pan).await.unwrap();
                let (mut from_dev, mut to_dev) = device.into_split();
                let (mut from_gw, mut to_gw_w) = gw.into_split();
                let (up_tx, mut up_rx) = mpsc::unbounded_channel::<Vec<u8>>();
                *inject.lock().unwrap() = Some(up_tx.clone());
                let (seen_up, mine, up_rules) = (seen_tx.clone(), inject.clone(), rules_up.clone());
                // Device → PN GW, and what the test writes there. When the device goes, so
                // does this connection to the PN GW (every sender gone, the writer ends).
                tokio::spawn(async move {
                    while let Some(frame) = read_whole(&mut from_dev).await {
                        let env = plain(&frame);
                        let out = through(&up_rules, frame.clone(), env.as_ref());
                        if let Some(env) = &env {
                            let _ = seen_up.send((Dir::ToGw, env.clone(), frame));
                        }
                        let Some(out) = out else {
                            continue;
                        };
                        if up_tx.send(out).is_err() {
                            break;
                        }
                    }
                    let mut slot = mine.lock().unwrap();
                    if slot.as_ref().is_some_and(|s| s.same_channel(&up_tx)) {
                        *slot = None;
                    }
                });
                tokio::spawn(async move {
                    while let Some(frame) = up_rx.recv().await {
                        if to_gw_w.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                });
                // PN GW → device, through the rewrite.
                let (seen_down, rules) = (seen_tx.clone(), rules.clone());
                tokio::spawn(async move {
                    while let Some(frame) = read_whole(&mut from_gw).await {
                        let env = plain(&frame);
                        // Told once the rule in force has been applied to it, so a test that
                        // changes the rule after seeing a message never races that message.
                        let out = through(&rules, frame.clone(), env.as_ref());
                        if let Some(env) = &env {
                            let _ = seen_down.send((Dir::ToDevice, env.clone(), frame));
                        }
                        if let Some(f) = out
                            && to_dev.write_all(&f).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            to_gw,
            rewrite,
            rewrite_up,
        }
    }

    /// The next plain message going `dir` that `f` picks.
    async fn next(&mut self, dir: Dir, f: impl Fn(&Envelope) -> bool) -> (Envelope, Vec<u8>) {
        within("a message through the relay", async {
            loop {
                let (d, env, frame) = self.seen.recv().await.expect("the relay runs");
                if d == dir && f(&env) {
                    return (env, frame);
                }
            }
        })
        .await
    }

    fn send_to_gw(&self, frame: Vec<u8>) {
        let tx = self
            .to_gw
            .lock()
            .unwrap()
            .clone()
            .expect("a device is connected");
        tx.send(frame).unwrap();
    }

    fn set_rewrite(
        &self,
        rule: impl FnMut(&Envelope) -> Option<Option<Envelope>> + Send + 'static,
    ) {
        *self.rewrite.lock().unwrap() = Some(Box::new(rule));
    }

    fn set_rewrite_up(
        &self,
        rule: impl FnMut(&Envelope) -> Option<Option<Envelope>> + Send + 'static,
    ) {
        *self.rewrite_up.lock().unwrap() = Some(Box::new(rule));
    }
}

/// The phone's replay window as the server stores it.
fn window(w: &World) -> (i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(
        w.server_db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT secure_top, secure_seen FROM pn_members WHERE pne_id = 'phone'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

const TRUSTED: [&str; 2] = ["--pan-security", "trusted"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_request_replayed_after_a_server_restart_is_refused() {
    let mut w = world(&["phone"]).gateway_args(&TRUSTED).start();
    let mut relay = Relay::start(w.pan()).await;
    let mut phone = w
        .pne("phone")
        .setup("1-1")
        .register()
        .stay()
        .at(&relay.addr)
        .args(&TRUSTED)
        .args(&["--echo", "once"])
        .spawn();
    phone.expect_event("registered");
    let (request, frame) = relay
        .next(Dir::ToGw, |e| matches!(e.body, Body::SecureRequest(_)))
        .await;
    let (answer, _) = relay
        .next(Dir::ToDevice, |e| matches!(e.body, Body::SecureResponse(_)))
        .await;
    assert_eq!(answer.in_reply_to, Some(request.msg_id));
    let before = window(&w);
    assert!(before.0 >= 1, "the call's number is stored: {before:?}");

    // The server restarts: its kept answers are gone, its window is in the store.
    let addr = w.server_addr().to_string();
    w.server().kill();
    w.gw().expect_event("wan_failed");
    w.start_server(&addr);
    w.gw().expect_event("wan_ready");
    relay.send_to_gw(frame);
    let (refused, _) = relay
        .next(Dir::ToDevice, |e| e.in_reply_to == Some(request.msg_id))
        .await;
    let e = refused.error().expect("an error answer");
    assert_eq!(e.code.name(), "conflict", "{refused:?}");
    assert!(e.reason.contains("taken already"), "{}", e.reason);
    assert_eq!(window(&w), before, "the window did not move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_key_answer_given_for_a_new_pull_is_refused_and_the_pne_says_it_is_kept_behind() {
    let w = world(&["phone", "tv", "watch"])
        .gateway_args(&TRUSTED)
        .start();
    let mut relay = Relay::start(w.pan()).await;
    let mut phone = w.pne("phone").setup("1-1").stay().args(&TRUSTED).spawn();
    let made = phone.expect_event("pn_joined");
    let pn: PnId = made["pn_id"].as_str().unwrap().parse().unwrap();
    // The tv joins through the relay (epoch 2), then comes back: its connection set-up pulls
    // epoch 2's key, and the relay records the answer.
    let at = relay.addr.clone();
    let tv_run = |w: &World| w.pne("tv").stay().at(&at).args(&TRUSTED).spawn();
    let mut tv = tv_run(&w);
    tv.expect_event("rejoined");
    let line = cpns(&["pn", "join", &pn.to_string(), "--store", s(&w.store("tv"))]);
    assert_eq!(line, format!("joined PN {pn}\n"));
    tv.kill();
    let mut tv = tv_run(&w);
    let (_, _) = relay
        .next(Dir::ToGw, |e| matches!(e.body, Body::GroupKeyRequest(_)))
        .await;
    let (old, _) = relay
        .next(Dir::ToDevice, |e| {
            matches!(e.body, Body::GroupKeyResponse(_))
        })
        .await;
    tv.expect_event("rejoined");

    // The relay hides epoch 3 from the tv: it drops the PN Update Notification, and gives the
    // recorded answer to the next pull, as the answer to that pull.
    let old_body = old.body.clone();
    relay.set_rewrite(move |e| match &e.body {
        Body::PnUpdateNotification(_) => Some(None),
        Body::GroupKeyResponse(_) => Some(Some(Envelope {
            body: old_body.clone(),
            ..e.clone()
        })),
        _ => None,
    });
    // The watch joins (epoch 3); the phone hears of it, the tv does not.
    let mut watch = w.pne("watch").register().stay().args(&TRUSTED).spawn();
    watch.expect_event("registered");
    phone.expect_event_where("pn_updated", |v| v["epoch"] == 3);
    tv.kill();
    let mut tv = tv_run(&w);
    let behind = tv.expect_event_where("flow_failed", |v| {
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("kept behind"))
    });
    assert!(
        behind["reason"].as_str().unwrap().contains(&pn.to_string()),
        "{behind}"
    );
}

/// Item 3 at the socket, on a `cpns` PAN: the phone's PN Setup Request travels plain (the link
/// is sealed only once the server's Authentication Request brings the LocalEUKey), and the
/// relay changes its join information (the device type) on the way. hash_PNE covers what the
/// phone said, so the server does not authenticate it: no PN is made, and "forged" is recorded
/// nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_information_altered_on_the_pan_fails_the_proof() {
    let mut w = world(&["phone"]).start();
    let relay = Relay::start(w.pan()).await;
    relay.set_rewrite_up(|e| match &e.body {
        Body::PnSetupRequest(m) if m.join.is_some() => {
            let mut m = m.clone();
            if let Some(j) = m.join.as_mut() {
                j.capabilities.device_type = "forged".into();
            }
            Some(Some(Envelope {
                body: Body::PnSetupRequest(m),
                ..e.clone()
            }))
        }
        _ => None,
    });
    let mut phone = w.pne("phone").setup("1-1").at(&relay.addr).spawn();
    let failed = w
        .gw()
        .expect_any(&["establishment_failed", "pn_established"]);
    assert_eq!(failed["event"], "establishment_failed", "{failed}");
    phone.expect_any(&["flow_failed", "pn_refused"]);
    let stores = w.stores().await;
    assert!(stores.server.is_empty(), "{stores:?}");
    let db = crate::harness::dump(&w.server_db()).await;
    assert!(
        db.values().flatten().all(|row| !row.contains("forged")),
        "the forged capabilities are stored: {db:?}"
    );
}

/// A relaying PN GW replays a service match to the watcher in place of a newer notice: the PNE
/// takes no notice whose number is not greater than the last one's, so nothing is told twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_match_replayed_by_the_relay_is_not_told_again() {
    let w = world(&["phone", "tv"]).gateway_args(&TRUSTED).start();
    let mut relay = Relay::start(w.pan()).await;
    let mut phone = w
        .pne("phone")
        .setup("1-1")
        .register()
        .stay()
        .at(&relay.addr.clone())
        .args(&TRUSTED)
        .spawn();
    phone.expect_event("registered");
    let mut tv = w
        .pne("tv")
        .setup("1-1")
        .register()
        .stay()
        .args(&TRUSTED)
        .spawn();
    tv.expect_event("registered");
    let phone_db = w.store("phone");
    let watching = cpns(&["service", "watch", "video", "--store", s(&phone_db)]);
    assert!(watching.starts_with("watching (watch "), "{watching}");
    let publish = |id: &str| {
        let path = w.path(&format!("{id}.json"));
        let doc = format!(
            r#"{{"service_id":"{id}","name":"{id}","type":"media.renderer","version":"1",
                "keywords":["video"],"scope":{{"kind":"user"}},"delivery":["push"],
                "lease_s":600}}"#
        );
        std::fs::write(&path, doc).unwrap();
        cpns(&["service", "publish", s(&path), "--store", s(&w.store("tv"))]);
    };
    publish("first");
    let (old, _) = relay
        .next(Dir::ToDevice, |e| matches!(e.body, Body::SecureNotice(_)))
        .await;
    phone.expect_event_where("service_match", |v| v["service_id"] == "first");
    // The next notice is replaced by the recorded one.
    let old_body = old.body.clone();
    relay.set_rewrite(move |e| match &e.body {
        Body::SecureNotice(_) => Some(Some(Envelope {
            body: old_body.clone(),
            ..e.clone()
        })),
        _ => None,
    });
    publish("second");
    let (replayed, _) = relay
        .next(Dir::ToDevice, |e| matches!(e.body, Body::SecureNotice(_)))
        .await;
    assert!(matches!(replayed.body, Body::SecureNotice(_)));
    // Then the relay lets notices through again: the third is told, and nothing between.
    relay.set_rewrite(|_| None);
    publish("third");
    phone.expect_event_where("service_match", |v| v["service_id"] == "third");
    let told: Vec<_> = phone
        .seen
        .iter()
        .filter(|v| v["event"] == "service_match")
        .map(|v| v["service_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(told, ["first", "third"]);
}
