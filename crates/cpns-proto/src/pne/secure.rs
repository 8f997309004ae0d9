//! The PNE's side of the secure PNE<->server session that registration sets up (003 §1.4.1
//! step 4): it keeps SK_PNE and its CPNS ID (stored by the driver, sealed at rest under the
//! PNE's EUKey), and calls server services end to end through the PN GW, which relays what it
//! cannot read (docs/security.md §4.8).

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_crypto::{
    E2eDirection, SecureBinding, SessionKey, open_secure_message, seal_secure_message,
};
use cpns_wire::{
    Address, CpnsId, Envelope, ErrorBody, PnId, RequestId, SecureCall, SecureRequest,
    SecureResponse,
};

use super::{PneEvent, PneOutput, PneSession};
use crate::{Failure, Flow, ProtoError};

/// What a registered PNE keeps of its secure session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureSession {
    /// The PNE's CPNS ID.
    pub cpns_id: CpnsId,
    /// The PN it registered in; its member record on the server holds the same SK_PNE.
    pub pn_id: PnId,
    /// SK_PNE of the registration.
    pub session_key: SessionKey,
    /// Seconds the session is valid for, from the grant.
    pub lifetime_s: u32,
}

/// A secure call waiting for its answer.
#[derive(Debug)]
pub(super) struct PendingCall {
    msg: u64,
    deadline: Instant,
}

/// Secure calls in progress, by request id.
pub(super) type PendingCalls = BTreeMap<RequestId, PendingCall>;

pub(super) fn deadlines(calls: &PendingCalls) -> impl Iterator<Item = Instant> + '_ {
    calls.values().map(|c| c.deadline)
}

impl PneSession {
    /// The secure session, once registered (or restored).
    pub fn secure_session(&self) -> Option<&SecureSession> {
        self.session.as_ref()
    }

    /// Takes back a secure session the driver kept (a restart).
    pub fn restore_session(&mut self, session: SecureSession) {
        self.cpns_id = Some(session.cpns_id.clone());
        self.session = Some(session);
    }

    /// 003 §1.4.1 step 4: the registration gave a session; the driver keeps it.
    pub(super) fn session_established(&mut self, session: SecureSession) {
        self.cpns_id = Some(session.cpns_id.clone());
        self.out.push_back(PneOutput::PersistSession {
            session: session.clone(),
        });
        self.session = Some(session);
    }

    /// Calls `service` on the server with `payload`, sealed end to end under SK_PNE.
    pub fn secure_call(
        &mut self,
        now: Instant,
        service: &str,
        payload: Vec<u8>,
    ) -> Result<RequestId, ProtoError> {
        let Some(session) = &self.session else {
            return Err(ProtoError::WrongState(
                "no secure session: the PNE must register first (003 §1.4)",
            ));
        };
        let request_id = RequestId(self.rng.u64());
        let call = SecureCall {
            service: service.into(),
            payload,
        };
        let plain = minicbor::to_vec(&call).unwrap_or_default();
        let binding = SecureBinding {
            pn_id: session.pn_id.as_bytes(),
            pne_id: self.cfg.id.as_str(),
            request_id: request_id.0,
        };
        let sealed = seal_secure_message(
            self.rng.get(),
            &session.session_key,
            E2eDirection::PneToServer,
            &binding,
            &plain,
        )?;
        let req = SecureRequest {
            request_id,
            pn_id: session.pn_id,
            sealed,
        };
        let msg = self.send_request_to(Address::Server, req);
        let deadline = now + self.cfg.timeouts.flow;
        self.secure_calls
            .insert(request_id, PendingCall { msg, deadline });
        Ok(request_id)
    }

    /// The server's answer: opened under SK_PNE, for the request it names.
    pub(super) fn on_secure_response(&mut self, env: &Envelope, m: SecureResponse) {
        let ours = self
            .secure_calls
            .get(&m.request_id)
            .is_some_and(|c| Some(c.msg) == env.in_reply_to);
        if !ours {
            return;
        }
        self.secure_calls.remove(&m.request_id);
        let Some(session) = &self.session else {
            return;
        };
        let binding = SecureBinding {
            pn_id: session.pn_id.as_bytes(),
            pne_id: self.cfg.id.as_str(),
            request_id: m.request_id.0,
        };
        let opened = open_secure_message(
            &session.session_key,
            E2eDirection::ServerToPne,
            &binding,
            &m.sealed,
        );
        let answer = opened
            .ok()
            .and_then(|plain| minicbor::decode::<SecureCall>(&plain).ok());
        match answer {
            Some(call) => self.event(PneEvent::SecureAnswer {
                request_id: m.request_id,
                service: call.service,
                payload: call.payload,
            }),
            None => self.event(PneEvent::FlowFailed {
                flow: Flow::SecureCall,
                reason: Failure::AnswerDidNotOpen,
            }),
        }
    }

    /// An error answering a secure call ends it; true if it was one.
    pub(super) fn secure_call_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(id) = self
            .secure_calls
            .iter()
            .find(|(_, c)| c.msg == reply_to)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        self.secure_calls.remove(&id);
        self.event(PneEvent::FlowFailed {
            flow: Flow::SecureCall,
            reason: Failure::Refused(e.clone()),
        });
        true
    }

    pub(super) fn secure_timeouts(&mut self, now: Instant) {
        let before = self.secure_calls.len();
        self.secure_calls.retain(|_, c| c.deadline > now);
        for _ in self.secure_calls.len()..before {
            self.event(PneEvent::FlowFailed {
                flow: Flow::SecureCall,
                reason: Failure::TimedOut,
            });
        }
    }
}
