//! (b), (c), (d) Floods of connections and frames against both listeners (frames.rs,
//! admission.rs, pan_link.rs): length prefixes announcing huge frames, frames trickled a byte a
//! second, more idle links than the PAN allows, a link that floods requests and never reads.
//! Resident memory of the server and the PN GW stays within [`crate::harness::MAX_GROWTH_KIB`] of what it was
//! (VmHWM, the peak, against VmRSS before), and legitimate PN GWs and PNEs are served meanwhile.

use std::time::Duration;

use cpns_node::frames::PRE_AUTH_MAX_FRAME;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::common::names;
use crate::harness::{Memory, RawLink, assert_bounded, closed, discovery, within, world};

/// Connections trickling a frame into each listener.
const TRICKLING: usize = 300;
/// Connections announcing a 1 GiB frame to each listener.
const HUGE: usize = 100;
/// The frame they announce.
const HUGE_FRAME: u32 = 1 << 30;
/// What each of them then tries to send of it: without a limit checked before buffering, the
/// listener would hold `HUGE` times this, far more than [`crate::harness::MAX_GROWTH_KIB`].
const HUGE_SENT: usize = 2 << 20;

/// A stream an attacker writes to.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A listener under attack.
#[derive(Clone)]
enum Listener {
    /// A PN GW's PAN listener: plain TCP.
    Pan(String),
    /// The server's TLS listener: TCP, then a TLS 1.3 handshake as any client may do.
    Server(String, TlsConnector),
}

impl Listener {
    /// A connection as an unauthenticated peer opens it; `None` if the listener closed it first
    /// (a newer connection evicted it during the handshake).
    async fn open(&self) -> Option<Box<dyn Stream>> {
        match self {
            Listener::Pan(addr) => Some(Box::new(TcpStream::connect(addr).await.ok()?)),
            Listener::Server(addr, tls) => {
                let tcp = TcpStream::connect(addr).await.ok()?;
                let name = ServerName::try_from("localhost").unwrap();
                Some(Box::new(tls.connect(name, tcp).await.ok()?))
            }
        }
    }
}

/// Announces a 1 GiB frame and sends [`HUGE_SENT`] bytes of it, until the listener hangs up;
/// reports on `sent`, then holds the connection until `stop` (a listener that buffered the
/// bytes keeps them until the connection ends).
async fn announce_huge_frame(l: Listener, sent: mpsc::Sender<()>, mut stop: watch::Receiver<bool>) {
    let Some(mut s) = l.open().await else {
        let _ = sent.send(()).await;
        return;
    };
    let chunk = [0xa5u8; 16 * 1024];
    let mut refused = s.write_all(&HUGE_FRAME.to_be_bytes()).await.is_err();
    for _ in 0..HUGE_SENT / chunk.len() {
        if refused {
            break;
        }
        refused = s.write_all(&chunk).await.is_err();
    }
    let _ = s.flush().await;
    let _ = sent.send(()).await;
    let _ = stop.changed().await;
}

/// Announces a frame one byte under the pre-authentication limit, then sends it a byte a second
/// until `stop`. Reports on `ready` once the prefix is out (or the connection was refused).
async fn trickle(l: Listener, ready: mpsc::Sender<()>, mut stop: watch::Receiver<bool>) {
    let Some(mut s) = l.open().await else {
        let _ = ready.send(()).await;
        return;
    };
    let prefix = (PRE_AUTH_MAX_FRAME - 1).to_be_bytes();
    let sent = s.write_all(&prefix).await.is_ok() && s.flush().await.is_ok();
    let _ = ready.send(()).await;
    if !sent {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if s.write_all(&[0x42]).await.is_err() || s.flush().await.is_err() {
                    return; // the listener hung up: evicted, or timed out
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_trickled_frames_leave_memory_bounded_and_peers_served() {
    let mut w = world(&["phone"]).gateway("office-gw").start();
    let (pan, addr) = (w.pan().to_string(), w.server_addr().to_string());
    let server_before = Memory::of(w.server().pid());
    let gw_before = Memory::of(w.gw().pid());
    let tls = TlsConnector::from(cpns_node::pki::client_config(&w.ca_pem()).unwrap());
    let targets = [
        Listener::Pan(pan.clone()),
        Listener::Server(addr.clone(), tls),
    ];

    let started = std::time::Instant::now();
    let (stop, stopped) = watch::channel(false);
    let mut attackers = JoinSet::new();
    // First the huge frames, held open; then the trickling connections (which evict them where
    // the unauthenticated slots run out).
    let (sent_tx, mut sent) = mpsc::channel(2 * HUGE);
    for l in &targets {
        for _ in 0..HUGE {
            attackers.spawn(announce_huge_frame(
                l.clone(),
                sent_tx.clone(),
                stopped.clone(),
            ));
        }
    }
    within("the huge frames to be sent or refused", async {
        for _ in 0..2 * HUGE {
            sent.recv().await.unwrap();
        }
    })
    .await;
    let (ready_tx, mut ready) = mpsc::channel(2 * TRICKLING);
    for l in &targets {
        for _ in 0..TRICKLING {
            attackers.spawn(trickle(l.clone(), ready_tx.clone(), stopped.clone()));
        }
    }
    within("every trickling connection to announce its frame", async {
        for _ in 0..2 * TRICKLING {
            ready.recv().await.unwrap();
        }
    })
    .await;
    println!("attack landed in {:?}", started.elapsed());

    // While the trickling goes on: a second PN GW sets up its session, a PNE establishes a PN.
    let (office, _) = w.start_gateway("office-gw", &[]);
    let mut phone = w.pne("phone").setup("1-1").spawn();
    let joined = phone.expect_event("pn_joined");
    assert_eq!(names(&joined["members"]), ["phone"]);
    phone.succeeds();
    w.gw()
        .expect_event_where("pn_established", |v| v["pn_id"] == joined["pn_id"]);
    println!("legitimate peers served after {:?}", started.elapsed());

    assert!(w.server().alive() && w.gw().alive());
    assert_bounded("server", server_before, Memory::of(w.server().pid()));
    assert_bounded("PN GW", gw_before, Memory::of(w.gw().pid()));
    let _ = stop.send(true);
    within("the attacking connections to stop", async {
        while let Some(r) = attackers.join_next().await {
            r.unwrap();
        }
    })
    .await;
    let gw = w.gw();
    assert!(
        gw.seen("wan_failed").is_empty(),
        "the PN GW lost its session: {:?}",
        gw.seen("wan_failed")
    );
    drop(office);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_links_beyond_the_limit_do_not_keep_a_pne_out() {
    const IDLE: usize = 50;
    const SLOTS: usize = 8;
    let limits = [
        "--max-links",
        "8",
        "--max-unproven-links",
        "8",
        "--unproven-lifetime-ms",
        "6000",
    ];
    let mut w = world(&["phone"]).gateway_args(&limits).start();
    let pan = w.pan().to_string();

    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(&pan).await.unwrap());
    }
    // The PN GW took them in order, each newcomer evicting the oldest unproven link.
    for (i, s) in idle[..IDLE - SLOTS].iter_mut().enumerate() {
        within(&format!("idle link {i} to be evicted"), closed(s)).await;
    }

    // Every unproven slot is held by a live idle link: the PNE gets in by evicting the oldest.
    let mut phone = w.pne("phone").setup("1-1").spawn();
    let joined = phone.expect_event("pn_joined");
    assert_eq!(names(&joined["members"]), ["phone"]);
    w.gw()
        .expect_event_where("pn_established", |v| v["pn_id"] == joined["pn_id"]);
    let mut buf = [0u8; 1];
    for (i, s) in idle[IDLE - SLOTS + 1..].iter().enumerate() {
        assert!(
            matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "idle link {} was closed: not the oldest",
            IDLE - SLOTS + 1 + i
        );
    }
    within(
        "the oldest idle link to be evicted",
        closed(&mut idle[IDLE - SLOTS]),
    )
    .await;
    phone.succeeds();

    // The idle links left are closed once unproven for --unproven-lifetime-ms.
    for s in &mut idle[IDLE - SLOTS + 1..] {
        within("an unproven link to reach its lifetime", closed(s)).await;
    }
    assert!(w.gw().alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_floods_and_never_reads_is_cut_off() {
    /// Requests written per batch.
    const BATCH: usize = 1_000;
    /// The most requests sent before the link must have been cut off.
    const MOST: usize = 400_000;
    let mut w = world(&["phone"]).start();
    let pan = w.pan().to_string();
    let before = Memory::of(w.gw().pid());

    // A small receive buffer, never read: the PN GW's answers pile up on its side.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(pan.parse().unwrap()).await.unwrap();
    let mut flooder = RawLink::over(stream, "flooder", "home-gw");
    let me = flooder.me.clone();
    let (sent, cut) = within("the PN GW to cut the flooding link off", async {
        let mut sent = 0;
        while sent < MOST {
            let mut batch = Vec::new();
            for _ in 0..BATCH {
                batch.extend(flooder.request(discovery(&me)).1);
            }
            if flooder.wr.write_all(&batch).await.is_err() {
                return (sent, true);
            }
            sent += BATCH;
        }
        (sent, false)
    })
    .await;
    println!("flooding link: {sent} discovery requests written, cut off: {cut}");
    assert!(cut, "{sent} requests and the link is still open");

    assert!(w.gw().alive());
    assert_bounded("PN GW", before, Memory::of(w.gw().pid()));
    let mut phone = w.pne("phone").setup("1-1").spawn();
    let joined = phone.expect_event("pn_joined");
    assert_eq!(names(&joined["members"]), ["phone"]);
    phone.succeeds();
    let gw = w.gw();
    gw.expect_event_where("pn_established", |v| v["pn_id"] == joined["pn_id"]);
    assert!(gw.seen("wan_failed").is_empty());
}
