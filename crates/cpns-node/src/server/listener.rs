//! The server's listener: accepts PN GW connections within the admission bounds (a slot
//! before accepting, the oldest unauthenticated connection evicted for a newcomer), runs the
//! TLS handshake within its deadline, and hands each connection to its session; at shutdown it
//! tells every session to stop and waits for them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpns_store::ServerStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{ServerNode, SessionEnd, Signal};
use crate::admission::{Admission, Unauthenticated};
use crate::error::NodeError;
use crate::frames::{FramedConn, PRE_AUTH_MAX_FRAME};
use crate::status_hub::{StatusHub, Subscriber};
use crate::{clock, pki, server_store};

impl<S: ServerStore + Clone> ServerNode<S> {
    /// Serves PN GWs on `listener` until `shutdown` completes, then ends every session and
    /// returns once they have ended.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        if let Err(e) = self.load_hub().await {
            return Err(std::io::Error::other(format!(
                "loading status subscriptions: {e}"
            )));
        }
        let ticker = tokio::spawn(tick(self.hub()));
        let sweeper = tokio::spawn(sweep_deliveries(
            self.store.clone(),
            self.cfg.open_delivery_max,
        ));
        let admission = Admission::new(self.cfg.max_unauthenticated, self.cfg.max_sessions);
        let stop_rx = self.office.signal.subscribe();
        let mut sessions = JoinSet::new();
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        info!(addr = %listener.local_addr()?, "CPNS Server listening");
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Its slot; when every unauthenticated slot is taken, the oldest unauthenticated
            // session is evicted for it, only once a newcomer is here (never ahead of one).
            let slot = tokio::select! {
                slot = admission.admit() => slot,
                () = &mut shutdown => break,
            };
            while sessions.try_join_next().is_some() {}
            let this = this.clone();
            let stop = stop_rx.clone();
            let span = info_span!("session", %peer);
            sessions.spawn(
                async move {
                    if let Err(e) = this.serve(stream, slot, stop).await {
                        debug!(error = %e, "session ended");
                    }
                }
                .instrument(span),
            );
        }
        info!("CPNS Server shutting down");
        this.office.signal.send_modify(|s| s.stop = true);
        while sessions.join_next().await.is_some() {}
        ticker.abort();
        sweeper.abort();
        Ok(())
    }

    /// One PN GW session: TLS, then the session machine, reading frames in this task. Before
    /// the PN GW authenticated, frames are small and the whole set-up has a short deadline;
    /// after, the session trades its slot for an authenticated one.
    ///
    /// What a session costs (docs/ARCHITECTURE.md decision 22): the handshake runs in a future
    /// of its own on the heap, dropped once done, and the TLS stream moves straight into the
    /// connection, so the session's task holds one copy of what an idle session needs.
    async fn serve(
        &self,
        stream: TcpStream,
        slot: Unauthenticated,
        stop: watch::Receiver<Signal>,
    ) -> Result<(), NodeError> {
        stream
            .set_nodelay(true)
            .map_err(|e| NodeError::Tls(e.to_string()))?;
        let (tls, exporter) = Box::pin(self.handshake(stream, &slot)).await?;
        let conn = Box::new(FramedConn::new(
            tls,
            PRE_AUTH_MAX_FRAME,
            self.cfg.max_queued,
        ));
        let mut end = SessionEnd::default();
        let result = self.run_session(conn, exporter, slot, stop, &mut end).await;
        self.end_session(end).await;
        result
    }

    /// A session ended: the hub stops delivering to its mailbox, and its PN GW and every PNE
    /// it reported turn offline (docs/device-status.md, "Reports"), their subscribers told.
    async fn end_session(&self, end: SessionEnd) {
        let Some(gw) = end.gateway else { return };
        if let Some(mailbox) = &end.mailbox {
            mailbox.close();
            self.hub.detach(&Subscriber::Entity(gw.clone()), mailbox);
            for e in &end.attached {
                self.hub.detach(&Subscriber::Entity(e.clone()), mailbox);
            }
        }
        match self
            .store
            .offline_reported_by(&gw, clock::unix_millis())
            .await
        {
            Ok(changed) => server_store::publish(&self.hub, changed),
            Err(e) => warn!(%gw, error = %e, "could not record the PN GW offline"),
        }
    }

    /// The TLS handshake, within its deadline and until the slot is evicted.
    async fn handshake(
        &self,
        stream: TcpStream,
        slot: &Unauthenticated,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, [u8; 32]), NodeError> {
        let handshake = tokio::select! {
            r = tokio::time::timeout(self.cfg.handshake_timeout, self.tls.accept(stream)) => r,
            () = slot.evicted().cancelled() => {
                return Err(NodeError::Ended("evicted before the TLS handshake ended".into()));
            }
        };
        let tls = handshake
            .map_err(|_| NodeError::Tls("the handshake timed out".into()))?
            .map_err(|e| NodeError::Tls(format!("handshake: {e}")))?;
        let exporter = pki::exporter(tls.get_ref().1)?;
        Ok((tls, exporter))
    }
}

/// Ends the delivery records still open after `max` (their targets never ended them: gone for
/// good), at once and then every eighth of `max` (between a second and an hour), so that every
/// delivery's record ends (docs/services.md, "A target gone for good"). A store that fails is
/// tried again at the next turn.
async fn sweep_deliveries<S: ServerStore>(store: S, max: Duration) {
    let every = sweep_every(max);
    loop {
        match expire_deliveries(&store, max, clock::unix_millis()).await {
            Ok(0) => {}
            Ok(ended) => info!(
                ended,
                "delivery records ended failed: their targets never ended them"
            ),
            Err(e) => warn!(error = %e, "delivery records could not be swept"),
        }
        tokio::time::sleep(every).await;
    }
}

/// How often records open more than `max` are swept: an eighth of it, between a second and an
/// hour.
fn sweep_every(max: Duration) -> Duration {
    (max / 8).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// One sweep at `now_ms`: the records opened more than `max` before it ended `failed`.
async fn expire_deliveries<S: ServerStore>(
    store: &S,
    max: Duration,
    now_ms: i64,
) -> Result<u64, cpns_store::StoreError> {
    let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
    store
        .expire_deliveries(now_ms.saturating_sub(max_ms), now_ms)
        .await
}

/// Delivers periodic notifications when they are due.
async fn tick(hub: Arc<StatusHub>) {
    loop {
        let now = Instant::now();
        let next = hub
            .next_tick()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        hub.tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use cpns_crypto::MasterKey;

    use super::*;
    use crate::server::ServerNodeConfig;

    /// A server node on `store`, with a fresh certificate and master key.
    fn node(
        cfg: ServerNodeConfig,
        store: cpns_store::SqliteStore,
    ) -> ServerNode<cpns_store::SqliteStore> {
        let p = pki::generate(&["localhost".into()]).unwrap();
        ServerNode::new(
            cfg,
            store,
            MasterKey::generate().unwrap(),
            &p.server_cert_pem,
            &p.server_key_pem,
        )
        .unwrap()
    }

    /// What an idle session's task holds is a measured cost (docs/ARCHITECTURE.md decision 22):
    /// the session future stays small — the handshake lives in its own short-lived box, the
    /// connection in one box, the session machine in one box, and nothing is copied twice by
    /// moves. A regression (a large future awaited inline, a connection moved into a future, a
    /// machine grown) fails here.
    #[tokio::test]
    async fn a_session_future_holds_one_small_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = cpns_store::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        let node = node(ServerNodeConfig::default(), store);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let admission = Admission::new(1, 1);
        let slot = admission.admit().await;
        let (_stop_tx, stop) = watch::channel(Signal::default());
        let serve = node.serve(tcp, slot, stop);
        let size = std::mem::size_of_val(&serve);
        assert!(size <= 1536, "a session future of {size} bytes");
        let machine = std::mem::size_of::<cpns_proto::server::ServerSession>();
        assert!(machine <= 832, "a session machine of {machine} bytes");
        drop(serve);
        node.store.close().await;
    }

    /// A record opened at `started_at` of session `[n; 16]` for `target`.
    fn record(n: u8, target: &str, started_at: i64) -> cpns_store::DeliveryRecord {
        cpns_store::DeliveryRecord {
            session: cpns_wire::DeliveryId::from_bytes([n; 16]),
            target: cpns_wire::EntityId::new(target).unwrap(),
            item: 0,
            service_id: "video".into(),
            source: cpns_wire::EntityId::new("phone").unwrap(),
            pn_id: cpns_wire::PnId::from_bytes([1; 16]),
            charged: cpns_wire::UserId::new("alice").unwrap(),
            name: "a.mp4".into(),
            size: 10,
            bytes: 0,
            started_at,
            ended_at: None,
            result: None,
            per_mb: None,
        }
    }

    /// A running server ends the records its targets never ended once they are older than its
    /// bound, at once and then at each turn, and leaves younger ones open.
    #[tokio::test]
    async fn a_running_server_ends_the_records_its_targets_never_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = cpns_store::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        let now = clock::unix_millis();
        let (old, young) = (record(1, "tv", now - 120_000), record(2, "tv", now));
        store
            .open_delivery(std::slice::from_ref(&old))
            .await
            .unwrap();
        store
            .open_delivery(std::slice::from_ref(&young))
            .await
            .unwrap();
        let cfg = ServerNodeConfig {
            open_delivery_max: Duration::from_secs(60),
            ..ServerNodeConfig::default()
        };
        let node = node(cfg, store.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(node.run(listener, async move {
            let _ = stop_rx.await;
        }));
        let ended = async {
            loop {
                let all = store.deliveries(None, None).await.unwrap();
                if all.iter().any(|r| r.ended_at.is_some()) {
                    return all;
                }
                tokio::task::yield_now().await;
            }
        };
        let all = tokio::time::timeout(Duration::from_secs(20), ended)
            .await
            .expect("the old record is ended");
        let swept = all.iter().find(|r| r.session == old.session).unwrap();
        assert_eq!(swept.result, Some(4), "ended failed");
        assert!(swept.ended_at.unwrap() >= now);
        assert_eq!(
            all.iter().find(|r| r.session == young.session),
            Some(&young)
        );
        stop_tx.send(()).unwrap();
        running.await.unwrap().unwrap();
        store.close().await;
    }

    /// One sweep ends exactly the open records opened more than its bound before `now`.
    #[tokio::test]
    async fn a_sweep_ends_only_what_is_older_than_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = cpns_store::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        let now = 1_000_000;
        store
            .open_delivery(&[record(1, "tv", now - 60_001)])
            .await
            .unwrap();
        store
            .open_delivery(&[record(2, "tv", now - 60_000)])
            .await
            .unwrap();
        let max = Duration::from_secs(60);
        assert_eq!(expire_deliveries(&store, max, now).await.unwrap(), 1);
        assert_eq!(expire_deliveries(&store, max, now).await.unwrap(), 0);
        assert_eq!(expire_deliveries(&store, max, now + 1).await.unwrap(), 1);
        assert_eq!(sweep_every(max), Duration::from_millis(7_500));
        assert_eq!(sweep_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            sweep_every(crate::server::OPEN_DELIVERY_MAX),
            Duration::from_secs(3600)
        );
        // A bound past what milliseconds hold ends nothing.
        store.open_delivery(&[record(3, "tv", 0)]).await.unwrap();
        assert_eq!(
            expire_deliveries(&store, Duration::MAX, now).await.unwrap(),
            0
        );
        store.close().await;
    }
}
