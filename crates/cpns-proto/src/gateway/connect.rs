//! The PN GW's connection set-up towards the CPNS Server (002 §B.1.1.2 steps 8-17): request the
//! connection, answer the server's challenge with the EUKey bound to the TLS session, report
//! device capabilities, then answer the status query.

use std::time::Instant;

use cpns_crypto::{Rand, gw_auth_response};
use cpns_wire::{
    Body, ConnectionSetupRequest, DeviceCapabilitiesUpdate, Envelope, ErrorBody, MsgKind, PnId,
    Status, StatusUpdateResponse,
};

use super::{Gateway, GatewayEvent, GatewayOutput};
use crate::ProtoError;
use crate::util::{hash_wire, rand_of, rand_wire};

/// Where the WAN session stands.
#[derive(Debug)]
pub(super) enum Wan {
    /// No session.
    Down,
    /// Step 8 sent; waiting for the challenge (step 9).
    AwaitChallenge {
        rand_gw: Rand,
        setup_msg: u64,
        exporter: [u8; 32],
        deadline: Instant,
    },
    /// Step 10 sent; waiting for the confirmation (step 11).
    AwaitConfirm { setup_msg: u64, deadline: Instant },
    /// Step 12 sent; waiting for the confirmation (13) and the status query (14).
    Reporting { deadline: Instant },
    /// Step 16 sent: set up.
    Ready,
}

impl Wan {
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Wan::AwaitChallenge { deadline, .. }
            | Wan::AwaitConfirm { deadline, .. }
            | Wan::Reporting { deadline } => Some(*deadline),
            Wan::Down | Wan::Ready => None,
        }
    }
}

impl Gateway {
    /// The TLS session to the server is up; `tls_exporter` is its RFC 5705 exporter value with
    /// label [`cpns_crypto::TLS_EXPORTER_LABEL`]. Step 8: Connection Setup Request.
    pub fn wan_connected(
        &mut self,
        now: Instant,
        tls_exporter: [u8; 32],
    ) -> Result<(), ProtoError> {
        let rand_gw = self.rng.rand();
        self.wan_codec = crate::LinkCodec::new(self.cfg.max_frame);
        let req = ConnectionSetupRequest {
            gw_id: self.cfg.id.clone(),
            rand_gw: rand_wire(&rand_gw),
            software: concat!("cpns/", env!("CARGO_PKG_VERSION")).into(),
        };
        let setup_msg = self.send_wan_request(req).unwrap_or_default();
        let deadline = now + self.cfg.timeouts.flow;
        self.next_heartbeat = self.cfg.heartbeat.map(|every| now + every);
        self.wan = Wan::AwaitChallenge {
            rand_gw,
            setup_msg,
            exporter: tls_exporter,
            deadline,
        };
        Ok(())
    }

    /// The WAN session ended; flows waiting on the server fail.
    pub fn wan_closed(&mut self, now: Instant) {
        self.wan = Wan::Down;
        self.presence.wan_lost();
        self.next_heartbeat = None;
        self.fail_all_forming(now, crate::Failure::WanLost);
        self.relays_wan_lost(now);
        self.releases_wan_lost();
        self.changes_wan_lost();
        self.owner_wan_lost();
        self.delivery_wan_lost(now);
    }

    pub(super) fn on_wan_setup(&mut self, _now: Instant, env: Envelope) {
        let state = std::mem::replace(&mut self.wan, Wan::Down);
        match (state, env.body.clone()) {
            // Step 9 → 10: prove the EUKey, bound to this TLS session.
            (
                Wan::AwaitChallenge {
                    rand_gw,
                    setup_msg,
                    exporter,
                    deadline,
                },
                Body::AuthChallenge(c),
            ) if env.kind == MsgKind::Request => {
                let hash = gw_auth_response(
                    &self.cfg.eukey,
                    self.cfg.id.as_str(),
                    &rand_gw,
                    &rand_of(&c.rand_server),
                    &exporter,
                );
                self.send_wan_response(
                    env.msg_id,
                    cpns_wire::AuthResponse {
                        hash: hash_wire(&hash),
                    },
                );
                self.wan = Wan::AwaitConfirm {
                    setup_msg,
                    deadline,
                };
            }
            // Step 11 → 12: report device capabilities.
            (
                Wan::AwaitConfirm {
                    setup_msg,
                    deadline,
                },
                Body::ConnectionSetupConfirm(c),
            ) if env.in_reply_to == Some(setup_msg) => {
                // What the PN GW sends from now on must fit the server's limit.
                self.server_max_frame = c.max_frame as usize;
                let caps = DeviceCapabilitiesUpdate {
                    capabilities: self.cfg.capabilities.clone(),
                    entity: None,
                };
                let _ = self.send_wan_request(caps);
                self.wan = Wan::Reporting { deadline };
            }
            (state @ Wan::Reporting { .. }, Body::DeviceCapabilitiesConfirm(_)) => self.wan = state,
            // Steps 14-16: the status lookup, answered with the PN GW's status and PNs.
            (Wan::Reporting { .. }, Body::StatusUpdateRequest(_))
                if env.kind == MsgKind::Request =>
            {
                self.wan = Wan::Ready;
                self.on_status_request(&env);
                self.event(GatewayEvent::WanReady);
                self.presence_wan_ready();
            }
            (_, Body::ErrorBody(e)) => {
                self.event(GatewayEvent::WanRefused(e.clone()));
                self.wan_failed(format!("the server refused the connection: {e}"))
            }
            (_, body) => self.wan_failed(format!(
                "unexpected {} during connection set-up",
                body.name()
            )),
        }
    }

    /// Step 15-16: the PN GW looks up its status and the PNs its local inventory holds.
    fn status_report(&self) -> StatusUpdateResponse {
        StatusUpdateResponse {
            status: self.status(),
            pns: self.pns.keys().copied().collect(),
            partial: false,
        }
    }

    /// The PN GW's status (004 §5.5.3.2): busy while it takes no new flow, online otherwise.
    pub(super) fn status(&self) -> Status {
        if self.flows_in_progress() >= self.cfg.limits.flows {
            Status::Busy
        } else {
            Status::Online
        }
    }

    /// Step 15-16: the PN GW's status and the PNs it serves.
    pub(super) fn on_status_request(&mut self, env: &Envelope) {
        let report = self.status_report();
        self.send_wan_response(env.msg_id, report);
    }

    /// Reports `pn`, just stored, to the server (a partial status report, docs/ARCHITECTURE.md
    /// decision 8): the server confirms it; its cost does not grow with the PNs held.
    pub(super) fn report_stored(&mut self, pn: PnId) {
        self.send_report(StatusUpdateResponse {
            status: self.status(),
            pns: vec![pn],
            partial: true,
        });
    }

    /// Reports every PN of the local inventory to the server, so its inventory follows this
    /// one (step 17): for a PN that left the local inventory.
    #[allow(dead_code)] // PN release (the PN lifecycle) reports through it.
    pub(super) fn report_pns(&mut self) {
        self.send_report(self.status_report());
    }

    fn send_report(&mut self, report: StatusUpdateResponse) {
        if self.wan_ready() {
            let env = Envelope::notify(
                self.ids.next(),
                self.me(),
                cpns_wire::Address::Server,
                report,
            );
            let _ = self.transmit_wan(&env);
        }
    }

    /// A Heartbeat to the server when one is due (only once set up; before, the set-up's own
    /// messages and deadline stand for it).
    pub(super) fn heartbeat_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_heartbeat.filter(|d| *d <= now) else {
            return;
        };
        if matches!(self.wan, Wan::Ready) {
            let env = Envelope::notify(
                self.ids.next(),
                self.me(),
                cpns_wire::Address::Server,
                cpns_wire::Heartbeat {},
            );
            let _ = self.transmit_wan(&env);
        }
        let Some(every) = self.cfg.heartbeat else {
            self.next_heartbeat = None;
            return;
        };
        let every = every.max(std::time::Duration::from_millis(100));
        let mut next = due + every;
        if next <= now {
            next = now + every;
        }
        self.next_heartbeat = Some(next);
    }

    fn wan_failed(&mut self, reason: String) {
        self.wan = Wan::Down;
        self.presence.wan_lost();
        self.next_heartbeat = None;
        self.event(GatewayEvent::WanFailed(reason.clone()));
        self.out.push_back(GatewayOutput::CloseWan { reason });
    }

    pub(super) fn wan_timeout(&mut self, now: Instant) {
        if self.wan.deadline().is_some_and(|d| d <= now) {
            self.wan_failed("connection set-up with the server timed out".into());
        }
    }

    /// An error from the server answering one of our requests.
    pub(super) fn on_wan_error(&mut self, now: Instant, env: &Envelope, e: ErrorBody) {
        let Some(reply_to) = env.in_reply_to else {
            return;
        };
        if self.fail_forming_by_msg(now, reply_to, &e)
            || self.release_refused(reply_to, &e)
            || self.change_refused(reply_to, &e)
        {
            return;
        }
        self.relay_wan_error(now, reply_to, e);
    }
}
