//! PN release at the server (000 §6.6.5 steps 1-2; §6.6.5.1 steps 2-4): the PN GW asks, the
//! server removes the PN from its inventory of record with its members, answers, and keeps the
//! answer for a retry (docs/pn-lifecycle.md, "One model for every membership change").

use cpns_wire::{Envelope, ErrorCode, PnId, PnReleaseRequest, PnReleaseResponse, RequestId};

use super::connect::Gw;
use super::membership::may_change;
use super::{Load, Parked, Persisted, PnLoaded, ServerEffect, ServerEvent, ServerSession};
use crate::StoreFailure;

impl ServerSession {
    /// 000 §6.6.5 step 1: PN Release Request from the PN GW.
    pub(super) fn on_pn_release(&mut self, gw: &Gw, env: &Envelope, req: PnReleaseRequest) {
        // A PNE asks its PN GW (§6.6.5.1 step 1), which asks in its own name (step 2).
        let Some(mut load) = self.pn_change_request(gw, env, req.request_id, req.pn_id, false)
        else {
            return;
        };
        // The member that asked, to check it may (§6.6.5.1 step 2).
        if let Load::Pn { entities, .. } = &mut load {
            entities.extend(req.asked_by.clone());
        }
        self.load(
            Parked::ReleaseLoad {
                req_msg: env.msg_id,
                req,
            },
            load,
        );
    }

    /// The PN is loaded: only its own PN GW may release it, for its owner or a member PNE of
    /// the PN's owner.
    pub(super) fn pn_release_loaded(
        &mut self,
        req_msg: u64,
        req: PnReleaseRequest,
        mut loaded: PnLoaded,
    ) {
        let Some((gw, pn)) = self.own_pn(req_msg, &mut loaded) else {
            return;
        };
        if let Some(asker) = &req.asked_by
            && let Err(reason) = may_change(&pn, asker, &loaded.entities, "release it")
        {
            return self.respond_error(req_msg, ErrorCode::Forbidden, reason);
        }
        let effect = ServerEffect::ReleasePn {
            gateway: gw.id.clone(),
            pn_id: req.pn_id,
        };
        self.persist(
            Parked::ReleasePersist {
                req_msg,
                request_id: req.request_id,
                pn_id: req.pn_id,
            },
            effect,
        );
    }

    /// 000 §6.6.5 step 2: the PN is gone from the inventory of record; answer and keep it.
    pub(super) fn pn_release_persisted(
        &mut self,
        req_msg: u64,
        request_id: RequestId,
        pn_id: PnId,
        result: Result<Persisted, StoreFailure>,
    ) {
        match result {
            Ok(_) => {
                self.reporting().forget_served();
                let gw = self.peer();
                let env = self.respond(req_msg, gw.clone(), PnReleaseResponse { pn_id });
                self.remember(gw, request_id, env);
                if let Some(gateway) = self.conn.gateway().map(|g| g.id.clone()) {
                    self.event(ServerEvent::PnReleased { pn_id, gateway });
                }
            }
            Err(e) => self.respond_error(req_msg, ErrorCode::Internal, format!("store: {e}")),
        }
    }
}
