//! The server's side of the secure PNE<->server session (003 §1.4.1 step 4): a Secure Request
//! relayed by the PN GW is opened under the SK_PNE the server kept for that member at
//! registration, the service is called, and its answer is sealed back (docs/security.md §4.8).
//! A request that does not open is answered `unauthenticated` without saying more.

use cpns_crypto::{E2eDirection, SecureBinding, open_secure_message, seal_secure_message};
use cpns_wire::{
    Address, ECHO_SERVICE, EntityId, Envelope, ErrorCode, SecureCall, SecureRequest, SecureResponse,
};

use super::connect::Gw;
use super::{LoadRequest, Loaded, Parked, ServerSession};

/// A secure request waiting for its member's SK_PNE.
#[derive(Debug)]
pub(super) struct SecureLoad {
    req_msg: u64,
    pne: EntityId,
    req: SecureRequest,
}

impl ServerSession {
    /// A Secure Request relayed by the PN GW for one of its PNEs.
    pub(super) fn on_secure_request(&mut self, _gw: &Gw, env: &Envelope, req: SecureRequest) {
        let Address::Entity(pne) = env.from.clone() else {
            return self.reject(
                env,
                ErrorCode::BadRequest,
                "a secure request comes from a PNE",
            );
        };
        if !self.admit(env) {
            return;
        }
        let request = LoadRequest {
            entities: Vec::new(),
            pn: Some(req.pn_id),
            replay: None,
            session: Some((req.pn_id, pne.clone())),
            member_keys: false,
            group_key: false,
        };
        let load = SecureLoad {
            req_msg: env.msg_id,
            pne,
            req,
        };
        self.load(Parked::SecureLoad(load), request);
    }

    /// Opens the request under the member's SK_PNE, calls the service, seals the answer.
    pub(super) fn secure_loaded(&mut self, p: SecureLoad, mut loaded: Loaded) {
        let Some(gw) = self.conn.gateway().cloned() else {
            return;
        };
        let to = Address::Entity(p.pne.clone());
        let refuse = |s: &mut Self, code, reason: &str| {
            s.respond(
                p.req_msg,
                to.clone(),
                cpns_wire::ErrorBody::new(code, reason),
            );
        };
        let served_here = loaded.pn.as_ref().is_some_and(|pn| pn.gateway == gw.id);
        let (Some(sk), true) = (loaded.session_key.take(), served_here) else {
            return refuse(
                self,
                ErrorCode::Unauthenticated,
                "no secure session for this PNE in this PN: register first (003 §1.4)",
            );
        };
        let binding = SecureBinding {
            pn_id: p.req.pn_id.as_bytes(),
            pne_id: p.pne.as_str(),
            request_id: p.req.request_id.0,
        };
        let call = open_secure_message(&sk, E2eDirection::PneToServer, &binding, &p.req.sealed)
            .ok()
            .and_then(|plain| minicbor::decode::<SecureCall>(&plain).ok());
        let Some(call) = call else {
            return refuse(
                self,
                ErrorCode::Unauthenticated,
                "the request did not open under the secure session",
            );
        };
        let answer = match call.service.as_str() {
            ECHO_SERVICE => SecureCall {
                service: call.service,
                payload: call.payload,
            },
            _ => return refuse(self, ErrorCode::NotFound, "no such service"),
        };
        let plain = minicbor::to_vec(&answer).unwrap_or_default();
        let sealed = match seal_secure_message(
            self.rng.get(),
            &sk,
            E2eDirection::ServerToPne,
            &binding,
            &plain,
        ) {
            Ok(s) => s,
            Err(_) => return refuse(self, ErrorCode::Internal, "the answer could not be sealed"),
        };
        let resp = SecureResponse {
            request_id: p.req.request_id,
            sealed,
        };
        self.respond(p.req_msg, to, resp);
    }
}
