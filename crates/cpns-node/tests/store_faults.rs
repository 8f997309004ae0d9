//! A store that fails a read ends one flow, on real sockets (docs/ARCHITECTURE.md, "A load can
//! fail"): a PNE's secure call whose PN row is corrupt, or whose SK_PNE does not open under the
//! master key, is answered `internal` and reported as a failed flow, while another PNE's call
//! through the same PN GW, at the same time and after, is answered over the same PN GW
//! session — the server never closes it, and the PN GW never has to reconnect.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Device, Harness, Home, RunningGateway, RunningServer, pne_config, run_pne, within};
use cpns_node::pne::{self, PneReport, PneStep};
use cpns_proto::server::ServerEvent;
use cpns_proto::{Failure, Flow, StoreFailure};
use cpns_store::{PnMember, ServerStore, SqliteStore};
use cpns_wire::{ECHO_SERVICE, PnId, SetupType};
use tokio::sync::oneshot;

/// A server, a connected PN GW, and two PNEs each in a PN of its own, registered (a secure
/// session each).
struct World {
    h: Harness,
    server: RunningServer,
    g: RunningGateway,
    gw_store: SqliteStore,
    phone: Device,
    watch: Device,
    watch_pn: PnId,
    /// Every server event seen so far.
    seen: Vec<ServerEvent>,
}

impl World {
    async fn new() -> Self {
        let h = Harness::new().await;
        let Home {
            gw: _,
            phone,
            watch,
            server,
            gw_store,
            running: g,
        } = h.home().await;
        let mut pns = Vec::new();
        for d in [&phone, &watch] {
            let store = h.local_store(&d.id).await;
            let report = run_pne(
                pne_config(d, true),
                store.clone(),
                &g.pan_addr,
                vec![PneStep::Setup(SetupType::OneToOne), PneStep::Register(None)],
            )
            .await;
            store.close().await;
            pns.push(common::joined(&report).pn_id);
        }
        assert_ne!(pns[0], pns[1]);
        Self {
            watch_pn: pns[1],
            h,
            server,
            g,
            gw_store,
            phone,
            watch,
            seen: Vec::new(),
        }
    }

    /// `d` calls the echo service once, through the PN GW; what it reported.
    async fn echo(&self, d: &Device) -> PneReport {
        let store = self.h.local_store(&d.id).await;
        let (_stop, stop) = oneshot::channel();
        let steps = vec![PneStep::SecureCall {
            service: ECHO_SERVICE.into(),
            payload: b"ping".to_vec(),
        }];
        let run = pne::run(
            pne_config(d, true),
            store.clone(),
            &self.g.pan_addr,
            steps,
            None,
            None,
            stop,
        );
        let report = within(&format!("{}'s call", d.id), run).await.unwrap();
        store.close().await;
        report
    }

    /// Waits for the server to report a failed flow, keeping every event seen on the way.
    async fn failed_flow(&mut self) -> (Flow, Failure) {
        let seen = &mut self.seen;
        let events = &mut self.server.events;
        within("a failed flow", async {
            loop {
                let e = events.recv().await.expect("the server runs");
                seen.push(e.clone());
                if let ServerEvent::FlowFailed { flow, reason } = e {
                    return (flow, reason);
                }
            }
        })
        .await
    }

    /// How many times a PN GW authenticated, over every server event so far.
    fn authentications(&mut self) -> usize {
        while let Ok(e) = self.server.events.try_recv() {
            self.seen.push(e);
        }
        self.seen
            .iter()
            .filter(|e| matches!(e, ServerEvent::GatewayAuthenticated(_)))
            .count()
    }

    /// The watch's call fails, the phone's, at the same time and after, is answered, and the
    /// PN GW kept its one session throughout; the failure the server reported.
    async fn one_flow_fails(&mut self) -> Failure {
        let (failed, answered) = tokio::join!(self.echo(&self.watch), self.echo(&self.phone));
        assert!(answered.failures().is_empty(), "{:?}", answered.failures());
        assert_eq!(echoes(&answered), 1);
        assert_eq!(echoes(&failed), 0);
        let refusals = failed.failures();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals[0].contains("internal"), "{refusals:?}");
        let (flow, reason) = self.failed_flow().await;
        assert_eq!(flow, Flow::SecureCall);
        // After the failure, the same session answers.
        let after = self.echo(&self.phone).await;
        assert_eq!(echoes(&after), 1, "{:?}", after.failures());
        assert_eq!(self.authentications(), 1, "the PN GW never reconnected");
        reason
    }

    async fn stop(self) {
        self.g.stop().await.unwrap();
        self.gw_store.close().await;
        self.server.stop().await;
        self.h.store.close().await;
    }
}

fn echoes(r: &PneReport) -> usize {
    r.events
        .iter()
        .filter(|e| {
            matches!(
                e,
                cpns_proto::pne::PneEvent::Completed(cpns_proto::Completed {
                    result: Ok(cpns_proto::pne::Outcome::SecureAnswer { .. }),
                    ..
                })
            )
        })
        .count()
}

/// A corrupt row (an unknown PN state, as a bad disk or a newer build could leave): the read
/// of the watch's PN fails; its call ends, the phone's calls and the session go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_read_ends_one_flow_and_the_session_goes_on() {
    let mut w = World::new().await;
    let db = rusqlite::Connection::open(w.h.server_db()).unwrap();
    let corrupted = db
        .execute(
            "UPDATE pns SET state = 'bogus' WHERE pn_id = ?",
            [w.watch_pn.as_bytes().as_slice()],
        )
        .unwrap();
    assert_eq!(corrupted, 1);
    drop(db);
    let reason = w.one_flow_fails().await;
    assert!(
        matches!(&reason, Failure::Store(StoreFailure::Failed(m)) if m.contains("bogus")),
        "{reason:?}"
    );
    w.stop().await;
}

/// An SK_PNE that does not open under the master key (a tampered row): the watch's call ends,
/// the phone's calls and the session go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_does_not_open_ends_one_flow_and_the_session_goes_on() {
    let mut w = World::new().await;
    let tampered = PnMember {
        pne_id: w.watch.id.clone(),
        initiator: false,
        authenticated: false,
        capabilities: None,
        sealed_session_key: Some(vec![0x5e; 60]),
        joined_at: 0,
        owner: None,
        contents: Vec::new(),
    };
    w.h.store
        .upsert_member(&w.watch_pn, &tampered)
        .await
        .unwrap();
    let reason = w.one_flow_fails().await;
    assert!(
        matches!(&reason, Failure::Store(StoreFailure::Sealed(m)) if m.contains("SK_PNE of watch")),
        "{reason:?}"
    );
    w.stop().await;
}
