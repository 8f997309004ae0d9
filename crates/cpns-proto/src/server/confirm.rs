//! PNE Confirm on the home PN GW's session (001 §5.2.1.1 steps 8-9): another session, whose PN
//! GW is forming a PN with a PNE of this PN GW's user, asks through the driver
//! ([`ServerOutput::AskGateway`]); this session asks its own PN GW and hands the answer back
//! ([`ServerOutput::GatewayAnswer`]). The question and its answer never cross PN GWs: each PN
//! GW speaks only on its own authenticated session.

use std::time::Instant;

use cpns_wire::{
    Address, Envelope, ErrorBody, ErrorCode, PneConfirmRequest, PneConfirmResponse, RequestId,
};

use super::{ServerOutput, ServerSession};

/// A question this session's PN GW has not answered yet.
#[derive(Debug)]
pub(super) struct Asked {
    /// The asking session's name for it.
    ask: u64,
    request_id: RequestId,
    pub(super) deadline: Instant,
}

impl ServerSession {
    /// Step 8, on the home PN GW's session: ask this session's PN GW whether `request.pne` is
    /// its user's and chargeable to it. The answer comes as [`ServerOutput::GatewayAnswer`]
    /// with `ask`: the PN GW's, or an error if this session is not ready or its PN GW does not
    /// answer within a third of a flow's time (the asking establishment waits half of one).
    pub fn confirm_for_other(&mut self, now: Instant, ask: u64, request: PneConfirmRequest) {
        let Some(gw) = self.conn.gateway().map(|g| g.id.clone()) else {
            let e = ErrorBody::new(ErrorCode::Busy, "the home PN GW's session is not ready");
            return self.gateway_answer(ask, Err(e));
        };
        if self.asked.len() >= self.cfg.max_flows {
            let e = ErrorBody::new(
                ErrorCode::Busy,
                "the home PN GW has too many questions open",
            );
            return self.gateway_answer(ask, Err(e));
        }
        let request_id = request.request_id;
        let msg = self.send_request(Address::Entity(gw), request);
        // Within the asking establishment's own wait (half a flow), so its answer says why.
        let deadline = now + self.cfg.timeouts.flow / 3;
        self.asked.insert(
            msg,
            Asked {
                ask,
                request_id,
                deadline,
            },
        );
    }

    /// Step 9: the PN GW answered.
    pub(super) fn on_confirm_response(&mut self, env: &Envelope, m: PneConfirmResponse) {
        let Some(asked) = env.in_reply_to.and_then(|r| self.asked.remove(&r)) else {
            return self.reject(
                env,
                ErrorCode::WrongState,
                "no PNE Confirm Request awaits this",
            );
        };
        if m.request_id != asked.request_id {
            let e = ErrorBody::new(ErrorCode::BadRequest, "the answer names another request");
            return self.gateway_answer(asked.ask, Err(e));
        }
        self.gateway_answer(asked.ask, Ok(m));
    }

    /// The PN GW refused the question: true if `reply_to` was one.
    pub(super) fn confirm_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(asked) = self.asked.remove(&reply_to) else {
            return false;
        };
        self.gateway_answer(asked.ask, Err(e.clone()));
        true
    }

    /// Questions the PN GW did not answer in time.
    pub(super) fn pne_confirm_timeouts(&mut self, now: Instant) {
        let late = crate::util::take_expired(&mut self.asked, now, |a| a.deadline);
        for (_, asked) in late {
            let e = ErrorBody::new(ErrorCode::Timeout, "the home PN GW did not answer in time");
            self.gateway_answer(asked.ask, Err(e));
        }
    }

    fn gateway_answer(&mut self, ask: u64, answer: Result<PneConfirmResponse, ErrorBody>) {
        self.out
            .push_back(ServerOutput::GatewayAnswer { ask, answer });
    }
}
