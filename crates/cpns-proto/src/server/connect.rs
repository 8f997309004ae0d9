//! Server side of the PN GW connection set-up (002 §B.1.1.2 steps 8-17): authenticate the PN GW
//! by its EUKey, bound to the TLS session, then take its capabilities and status.

use std::time::Instant;

use cpns_crypto::{EuKey, Rand, verify_gw_auth_response};
use cpns_wire::{
    Address, AuthChallenge, AuthResponse, Body, ConnectionSetupConfirm, ConnectionSetupRequest,
    DeviceCapabilities, DeviceCapabilitiesConfirm, EntityId, Envelope, ErrorCode, MsgKind, PnId,
    StatusUpdateRequest, StatusUpdateResponse, UserId,
};

use super::{
    KnownEntity, Load, Parked, Persisted, Publish, ServerEffect, ServerEvent, ServerOutput,
    ServerSession,
};
use crate::StoreFailure;
use crate::util::{hash_of, rand_of, rand_wire};
use crate::{Failure, Flow};

/// The authenticated PN GW of a session.
#[derive(Clone, Debug)]
pub(super) struct Gw {
    pub(super) id: EntityId,
    pub(super) owner: UserId,
    pub(super) eukey: EuKey,
}

/// Where the connection set-up stands.
#[derive(Debug)]
pub(super) enum Conn {
    /// Waiting for `ConnectionSetupRequest` (step 8).
    AwaitSetup { deadline: Instant },
    /// Loading the PN GW's record.
    Loading { deadline: Instant },
    /// Challenge sent (step 9), waiting for the response (step 10).
    AwaitAuth {
        gw: Gw,
        rand_gw: Rand,
        rand_server: Rand,
        challenge_msg: u64,
        setup_msg: u64,
        deadline: Instant,
    },
    /// Authenticated (step 11 sent).
    Connected(Gw),
    /// The session is over.
    Closed,
}

impl Conn {
    pub(super) fn gateway(&self) -> Option<&Gw> {
        match self {
            Conn::Connected(gw) => Some(gw),
            _ => None,
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Conn::AwaitSetup { deadline }
            | Conn::Loading { deadline }
            | Conn::AwaitAuth { deadline, .. } => Some(*deadline),
            Conn::Connected(_) | Conn::Closed => None,
        }
    }
}

/// A connection set-up waiting for the PN GW's record.
#[derive(Debug)]
pub(super) struct SetupLoad {
    req_msg: u64,
    req: ConnectionSetupRequest,
}

impl ServerSession {
    /// Messages before the PN GW is authenticated: only the set-up exchange is allowed.
    pub(super) fn handle_unauthenticated(&mut self, _now: Instant, env: Envelope) {
        match (&self.conn, env.body.clone()) {
            (Conn::AwaitSetup { deadline }, Body::ConnectionSetupRequest(req))
                if env.kind == MsgKind::Request =>
            {
                // Step 8: look the PN GW up before challenging it.
                self.conn = Conn::Loading {
                    deadline: *deadline,
                };
                let load = Load::Gateway {
                    id: req.gw_id.clone(),
                };
                self.load(
                    Parked::SetupLoad(SetupLoad {
                        req_msg: env.msg_id,
                        req,
                    }),
                    load,
                );
            }
            (Conn::AwaitAuth { challenge_msg, .. }, Body::AuthResponse(resp))
                if env.in_reply_to == Some(*challenge_msg) =>
            {
                self.on_auth_response(resp);
            }
            _ => self.reject(
                &env,
                ErrorCode::Unauthenticated,
                "the PN GW must set up and authenticate its connection first",
            ),
        }
    }

    /// Step 9: challenge an enrolled PN GW; refuse anyone else.
    pub(super) fn setup_loaded(
        &mut self,
        _now: Instant,
        p: SetupLoad,
        loaded: Option<KnownEntity>,
    ) {
        let Conn::Loading { deadline } = self.conn else {
            return;
        };
        let gw = match loaded.filter(|e| e.id == p.req.gw_id) {
            Some(e) if e.role.is_gateway() => Gw {
                id: e.id,
                owner: e.owner,
                eukey: e.eukey,
            },
            Some(_) => {
                return self.refuse_gateway(p.req_msg, &p.req.gw_id, Failure::NotAGateway);
            }
            None => return self.refuse_gateway(p.req_msg, &p.req.gw_id, Failure::UnknownGateway),
        };
        let rand_server = self.rng.rand();
        // Step 9: Authentication and Authorization request.
        let challenge_msg = self.send_request(
            Address::Entity(gw.id.clone()),
            AuthChallenge {
                rand_server: rand_wire(&rand_server),
            },
        );
        self.conn = Conn::AwaitAuth {
            gw,
            rand_gw: rand_of(&p.req.rand_gw),
            rand_server,
            challenge_msg,
            setup_msg: p.req_msg,
            deadline,
        };
    }

    /// The PN GW's record could not be read (or its EUKey opened): the set-up is answered
    /// `internal` and may be asked again on this connection, within the set-up deadline. The
    /// PN GW is not refused: nothing says it is not who it claims.
    pub(super) fn setup_load_failed(&mut self, p: SetupLoad, e: StoreFailure) {
        if let Conn::Loading { deadline } = self.conn {
            self.conn = Conn::AwaitSetup { deadline };
        }
        self.load_failed(
            p.req_msg,
            Address::Entity(p.req.gw_id),
            Flow::ConnectionSetup,
            e,
        );
    }

    /// Step 10: verify the PN GW's response; step 11: confirm the connection.
    fn on_auth_response(&mut self, resp: AuthResponse) {
        let Conn::AwaitAuth {
            gw,
            rand_gw,
            rand_server,
            setup_msg,
            ..
        } = std::mem::replace(&mut self.conn, Conn::Closed)
        else {
            return;
        };
        let verdict = verify_gw_auth_response(
            &gw.eukey,
            gw.id.as_str(),
            &rand_gw,
            &rand_server,
            &self.tls_exporter,
            &hash_of(&resp.hash),
        );
        if verdict.is_err() {
            let id = gw.id.clone();
            return self.refuse_gateway(setup_msg, &id, Failure::GatewayResponseMismatch);
        }
        let id = gw.id.clone();
        self.conn = Conn::Connected(gw);
        self.event(ServerEvent::GatewayAuthenticated(id.clone()));
        let confirm = ConnectionSetupConfirm {
            server: self.cfg.name.clone(),
            max_frame: self.cfg.max_frame,
        };
        self.respond(setup_msg, Address::Entity(id), confirm);
    }

    fn refuse_gateway(&mut self, setup_msg: u64, gw_id: &EntityId, failure: Failure) {
        let reason = failure.to_string();
        self.conn = Conn::Closed;
        self.event(ServerEvent::AuthenticationFailed {
            entity: gw_id.clone(),
            reason: failure,
        });
        self.respond(
            setup_msg,
            Address::Entity(gw_id.clone()),
            cpns_wire::ErrorBody::new(ErrorCode::Unauthenticated, reason.clone()),
        );
        self.out.push_back(ServerOutput::Close {
            reason: format!("PN GW {gw_id}: {reason}"),
        });
    }

    /// Step 12: Device Capabilities Update (checked and rate-limited by
    /// `on_capabilities_update`).
    pub(super) fn on_capabilities(&mut self, gw: &Gw, env: &Envelope, caps: DeviceCapabilities) {
        let effect = ServerEffect::EntityReport {
            id: gw.id.clone(),
            capabilities: Some(Box::new(caps)),
            status: None,
        };
        self.persist(
            Parked::Report {
                req: Some(env.msg_id),
                first_status: false,
            },
            effect,
        );
    }

    /// Step 16: Status Management response, after the PN GW's lookup (step 15); the PN GW also
    /// sends it as a notification whenever its local inventory changed. Step 17: the status and
    /// the PN list update the inventory (docs/ARCHITECTURE.md, "Which side wins").
    pub(super) fn on_status(&mut self, now: Instant, gw: &Gw, m: StatusUpdateResponse) {
        let first = !std::mem::replace(&mut self.reported, true);
        if first {
            // The PN GW is ready: what it was sent from outside before goes on.
            self.resume_outbound(now);
        }
        // An unchanged status is not written again (the first one always is: it makes the
        // session ready).
        if first || self.last_status != Some(m.status) {
            self.last_status = Some(m.status);
            let effect = ServerEffect::EntityReport {
                id: gw.id.clone(),
                capabilities: None,
                status: Some(m.status),
            };
            self.persist(
                Parked::Report {
                    req: None,
                    first_status: first,
                },
                effect,
            );
        }
        if m.partial {
            // PNs just stored: confirm them, remove nothing (docs/ARCHITECTURE.md decision 8).
            if !m.pns.is_empty() {
                let effect = ServerEffect::ConfirmPns {
                    gateway: gw.id.clone(),
                    pns: m.pns,
                };
                self.persist(Parked::Reconcile, effect);
            }
            return;
        }
        let reconcile = ServerEffect::ReconcilePns {
            gateway: gw.id.clone(),
            listed: m.pns,
            // The first report of a session comes before any registration on it: every pending
            // PN of this PN GW then is a leftover of an earlier session. Later, a PN registered
            // on this session may still be on its way to the PN GW's store.
            drop_unlisted_pending: first,
        };
        self.persist(Parked::Reconcile, reconcile);
    }

    /// The inventory follows the PN GW's list; confirmed PNs need no deadline any more.
    pub(super) fn reconcile_persisted(&mut self, result: Result<Persisted, StoreFailure>) {
        match result {
            Ok(Persisted::Reconciled { confirmed, removed }) => {
                for pn in &confirmed {
                    self.unconfirmed.remove(pn);
                }
                if !confirmed.is_empty() || !removed.is_empty() {
                    self.event(ServerEvent::InventoryReconciled { confirmed, removed });
                }
            }
            Ok(_) => {}
            Err(e) => self.event(ServerEvent::FlowFailed {
                flow: Flow::InventoryReconciliation,
                reason: Failure::Store(e),
            }),
        }
    }

    /// A PN the PN GW did not confirm in time is removed (docs/ARCHITECTURE.md decision 8).
    pub(super) fn confirmation_timeouts(&mut self, now: Instant) {
        for (pn_id, _) in crate::util::take_expired(&mut self.unconfirmed, now, |d| *d) {
            self.persist(
                Parked::DropPending(pn_id),
                ServerEffect::DropPendingPn { pn_id },
            );
        }
    }

    pub(super) fn drop_pending_persisted(
        &mut self,
        pn: PnId,
        result: Result<Persisted, StoreFailure>,
    ) {
        let reason = match result {
            Ok(_) => Failure::NotConfirmed,
            Err(e) => Failure::Store(e),
        };
        debug_assert!(!pn.as_bytes().is_empty());
        self.event(ServerEvent::FlowFailed {
            flow: Flow::PnRegistration,
            reason,
        });
    }

    pub(super) fn report_persisted(
        &mut self,
        req: Option<u64>,
        first_status: bool,
        result: Result<Persisted, StoreFailure>,
    ) {
        let Some(gw) = self.conn.gateway().map(|g| g.id.clone()) else {
            return;
        };
        // Its record as now goes to the status hub before anyone is answered.
        let result = result.map(|p| {
            if let Persisted::Recorded(states) = p {
                self.publish(Publish::Changed(states));
            }
        });
        match (result, req) {
            (Ok(_), Some(req)) => {
                // Step 13: confirmation; step 14: Status Management update request.
                self.respond(
                    req,
                    Address::Entity(gw.clone()),
                    DeviceCapabilitiesConfirm {},
                );
                self.send_request(Address::Entity(gw), StatusUpdateRequest {});
            }
            // Step 17: the PN GW's entry in the inventory is up to date.
            (Ok(_), None) if first_status => self.event(ServerEvent::GatewayReady(gw)),
            (Ok(_), None) => {}
            (Err(e), Some(req)) => {
                self.respond_error(req, ErrorCode::Internal, format!("store: {e}"))
            }
            (Err(e), None) => self.event(ServerEvent::FlowFailed {
                flow: Flow::StatusUpdate,
                reason: Failure::Store(e),
            }),
        }
    }

    pub(super) fn connect_timeout(&mut self, now: Instant) {
        if self.conn.deadline().is_some_and(|d| d <= now) {
            self.conn = Conn::Closed;
            self.out.push_back(ServerOutput::Close {
                reason: "connection set-up timed out".into(),
            });
        }
    }
}
