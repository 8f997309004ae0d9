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
    Address, CpnsId, Envelope, ErrorBody, INVENTORY_SERVICE, InventoryAnswer, InventoryQuery, PnId,
    RequestId, SecureCall, SecureRequest, SecureResponse,
};

use super::{Outcome, PneOutput, PneSession};
use crate::{CommandError, CommandId, Failure, Flow};

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
    /// Its message id, once sent (a numbered request waits for its number to be stored).
    msg: Option<u64>,
    deadline: Instant,
    /// The PN whose SK_PNE sealed the call, and that key: the answer opens under it.
    pn_id: PnId,
    key: SessionKey,
    /// The flow it runs ([`Flow::SecureCall`], or [`Flow::InventoryQuery`]).
    flow: Flow,
    /// The command that made it; `None` for a call the PNE made itself.
    cmd: Option<CommandId>,
    /// Whether it carries a usage report (004 §5.5.4), whose answer is the usage module's.
    pub(super) usage: bool,
}

/// Secure calls in progress, by request id.
pub(super) type PendingCalls = BTreeMap<RequestId, PendingCall>;

pub(super) fn deadlines(calls: &PendingCalls) -> impl Iterator<Item = Instant> + '_ {
    calls.values().map(|c| c.deadline)
}

/// Local inventory queries waiting for the PN GW, by message id, with their deadlines and
/// commands.
/// Local inventory queries by message id.
pub(super) type PendingQueries = BTreeMap<u64, PendingQuery>;

/// A local inventory query waiting for its answer.
#[derive(Debug)]
pub(super) struct PendingQuery {
    pub(super) deadline: Instant,
    /// The command it ends (none: this PNE following again after its link came back).
    pub(super) cmd: Option<CommandId>,
    /// The PN it starts (`true`) or stops (`false`) following, if it does.
    pub(super) follow: Option<(PnId, bool)>,
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
    /// Completes with [`Outcome::SecureAnswer`].
    pub fn secure_call(
        &mut self,
        now: Instant,
        service: &str,
        payload: Vec<u8>,
    ) -> Result<CommandId, CommandError> {
        let id = self.commands.next();
        self.call(now, service, payload, Flow::SecureCall, Some(id))?;
        Ok(id)
    }

    /// The key a secure call is sealed under: this PNE's SK_PNE in a PN of the PN GW on the
    /// link (the server checks the PN is served there), else its registration's.
    pub(super) fn call_keys(&self) -> Option<(PnId, SessionKey)> {
        let here = self.gateway.as_ref().and_then(|gw| {
            self.pns
                .values()
                .filter(|p| &p.state.inventory.gateway == gw)
                .find_map(|p| {
                    let own = p.state.own.as_ref()?;
                    Some((p.state.inventory.pn_id, own.session_key.clone()))
                })
        });
        here.or_else(|| {
            let s = self.session.as_ref()?;
            Some((s.pn_id, s.session_key.clone()))
        })
    }

    pub(super) fn call(
        &mut self,
        now: Instant,
        service: &str,
        payload: Vec<u8>,
        flow: Flow,
        cmd: Option<CommandId>,
    ) -> Result<RequestId, CommandError> {
        let Some((pn_id, key)) = self.call_keys() else {
            return Err(CommandError::NoSecureSession);
        };
        // Numbered 1, 2, 3, … under this SK_PNE (docs/security.md §4.8); the number is stored
        // before the request goes, so no number is ever given twice.
        let numbered = self.next_secure_number(&pn_id, &key);
        let request_id = RequestId(match numbered {
            Some(n) => n,
            None => self.rng.u64(),
        });
        self.now = Some(now);
        let call = SecureCall {
            service: service.into(),
            payload,
        };
        let plain = minicbor::to_vec(&call).unwrap_or_default();
        let binding = SecureBinding {
            pn_id: pn_id.as_bytes(),
            pne_id: self.cfg.id.as_str(),
            request_id: request_id.0,
        };
        let sealed = seal_secure_message(
            self.rng.get(),
            &key,
            E2eDirection::PneToServer,
            &binding,
            &plain,
        )?;
        let req = SecureRequest {
            request_id,
            pn_id,
            sealed,
        };
        let msg = match numbered {
            Some(_) => {
                let token = self.tokens.next();
                let state = self.pns.get(&pn_id).map(|p| p.state.clone());
                if let Some(state) = state {
                    self.parked
                        .insert(token, super::Parked::Numbered(Box::new(req)));
                    self.out.push_back(PneOutput::Persist { token, pn: state });
                }
                None
            }
            None => Some(self.send_proven(now, Some(pn_id), Address::Server, req)),
        };
        let deadline = now + self.cfg.timeouts.flow;
        let call = PendingCall {
            msg,
            deadline,
            pn_id,
            key,
            flow,
            cmd,
            usage: false,
        };
        self.secure_calls.insert(request_id, call);
        Ok(request_id)
    }

    /// 004 §5.5.10: reads a PN's inventory, or every PN this PNE may read. A PN of the PN GW
    /// on the link that this PNE is a member of is read from that PN GW, once it proved
    /// itself; any other from the server, end to end over the secure session (a remote PN of
    /// the same user). Completes with [`Outcome::Inventory`].
    pub fn query_inventory(
        &mut self,
        now: Instant,
        pn_id: Option<PnId>,
    ) -> Result<CommandId, CommandError> {
        let local = pn_id
            .and_then(|p| self.pns.get(&p))
            .map(|p| p.state.inventory.gateway.clone());
        match local {
            Some(gw) if self.gateway.as_ref() == Some(&gw) && self.gateway_proven(&gw) => {
                let id = self.commands.next();
                self.ask_gateway_inventory(now, gw, pn_id, Some(id), None);
                Ok(id)
            }
            _ => {
                let payload = minicbor::to_vec(InventoryQuery {
                    pn_id,
                    follow: None,
                })
                .unwrap_or_default();
                let id = self.commands.next();
                self.call(
                    now,
                    INVENTORY_SERVICE,
                    payload,
                    Flow::InventoryQuery,
                    Some(id),
                )?;
                Ok(id)
            }
        }
    }

    /// The PN GW's answer to a local inventory query.
    pub(super) fn on_inventory_answer(&mut self, env: &Envelope, m: InventoryAnswer) {
        let Some(reply_to) = env.in_reply_to else {
            return;
        };
        let from_gw = match (&env.from, &self.gateway) {
            (Address::Entity(from), Some(gw)) => from == gw && self.gateway_proven(gw),
            _ => false,
        };
        if !from_gw {
            return;
        }
        let Some(q) = self.inventory_queries.remove(&reply_to) else {
            return;
        };
        if let Some((pn_id, follow)) = q.follow {
            self.followed(pn_id, follow, q.cmd.is_none(), &m.pns);
        }
        let read = Outcome::Inventory {
            pns: m.pns,
            services: m.services,
        };
        if let Some(id) = q.cmd {
            self.complete(id, Flow::InventoryQuery, Ok(read));
        }
    }

    /// The PN GW refused a local inventory query: true if `reply_to` was one.
    pub(super) fn inventory_query_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(q) = self.inventory_queries.remove(&reply_to) else {
            return false;
        };
        if let Some(id) = q.cmd {
            self.complete(id, Flow::InventoryQuery, Err(Failure::Refused(e.clone())));
        }
        true
    }

    /// The server's answer: opened under SK_PNE, for the request it names.
    pub(super) fn on_secure_response(&mut self, env: &Envelope, m: SecureResponse) {
        let ours = self
            .secure_calls
            .get(&m.request_id)
            .is_some_and(|c| c.msg.is_some() && c.msg == env.in_reply_to);
        if !ours {
            return;
        }
        let Some(call) = self.secure_calls.remove(&m.request_id) else {
            return;
        };
        let binding = SecureBinding {
            pn_id: call.pn_id.as_bytes(),
            pne_id: self.cfg.id.as_str(),
            request_id: m.request_id.0,
        };
        let opened = open_secure_message(&call.key, E2eDirection::ServerToPne, &binding, &m.sealed);
        let answer = opened
            .ok()
            .and_then(|plain| minicbor::decode::<SecureCall>(&plain).ok());
        if call.usage {
            let payload = answer
                .filter(|a| a.service == cpns_wire::USAGE_SERVICE)
                .map(|a| a.payload)
                .ok_or(Failure::AnswerDidNotOpen);
            return self.usage_answered(call.cmd, payload);
        }
        let result = match (answer, call.flow) {
            (Some(a), Flow::InventoryQuery) => {
                match minicbor::decode::<InventoryAnswer>(&a.payload) {
                    Ok(read) if a.service == INVENTORY_SERVICE => Ok(Outcome::Inventory {
                        pns: read.pns,
                        services: read.services,
                    }),
                    _ => Err(Failure::AnswerDidNotOpen),
                }
            }
            (Some(a), Flow::ServiceDirectory) => super::services::answered(a),
            (Some(a), Flow::ServiceGroup) => self.group_answered(a),
            (Some(a), Flow::Delivery) => self.delivery_answered(a),
            (Some(a), _) if a.service == cpns_wire::CONTENTS_SERVICE => {
                minicbor::decode::<cpns_wire::ContentsDeclare>(&a.payload)
                    .map(|d| Outcome::ContentsDeclared {
                        count: u32::try_from(d.items.len()).unwrap_or(u32::MAX),
                    })
                    .map_err(|_| Failure::AnswerDidNotOpen)
            }
            (Some(a), _) => Ok(Outcome::SecureAnswer {
                service: a.service,
                payload: a.payload,
            }),
            (None, _) => Err(Failure::AnswerDidNotOpen),
        };
        self.end(call.cmd, call.flow, result);
    }

    /// Ends a secure call that failed: the usage report it carried, or its command.
    fn secure_failed(&mut self, call: &PendingCall, reason: Failure) {
        if call.usage {
            return self.usage_answered(call.cmd, Err(reason));
        }
        self.end(call.cmd, call.flow, Err(reason));
    }

    /// The next number of a secure request sealed under `key`, this PNE's SK_PNE of `pn_id`,
    /// taken in its keys (which the caller then stores); `None` for a key not kept with a PN.
    fn next_secure_number(&mut self, pn_id: &PnId, key: &SessionKey) -> Option<u64> {
        let own = self.pns.get_mut(pn_id)?.state.own.as_mut()?;
        if own.session_key != *key {
            return None;
        }
        own.secure_seq = own.secure_seq.checked_add(1)?;
        Some(own.secure_seq)
    }

    /// The number of a secure request is stored: it goes (000's relay; docs/security.md §4.8),
    /// or, if the store failed, the call ends without going.
    pub(super) fn numbered(&mut self, req: SecureRequest, result: Result<(), crate::StoreFailure>) {
        let request_id = req.request_id;
        if let Err(e) = result {
            if let Some(call) = self.secure_calls.remove(&request_id) {
                self.secure_failed(&call, Failure::Store(e));
            }
            return;
        }
        if !self.secure_calls.contains_key(&request_id) {
            return; // ended meanwhile (its deadline)
        }
        let Some(now) = self.now else {
            return;
        };
        let pn_id = req.pn_id;
        let msg = self.send_proven(now, Some(pn_id), Address::Server, req);
        if let Some(call) = self.secure_calls.get_mut(&request_id) {
            call.msg = Some(msg);
        }
    }

    /// An error answering a secure call ends it; true if it was one.
    pub(super) fn secure_call_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(id) = self
            .secure_calls
            .iter()
            .find(|(_, c)| c.msg == Some(reply_to))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        let Some(call) = self.secure_calls.remove(&id) else {
            return false;
        };
        let reason = Failure::Refused(e.clone());
        self.secure_failed(&call, reason);
        true
    }

    pub(super) fn secure_timeouts(&mut self, now: Instant) {
        let late = crate::util::take_expired(&mut self.secure_calls, now, |c| c.deadline);
        for (_, c) in late {
            self.secure_failed(&c, Failure::TimedOut);
        }
        let queries = crate::util::take_expired(&mut self.inventory_queries, now, |q| q.deadline);
        for id in queries.into_iter().filter_map(|(_, q)| q.cmd) {
            self.complete(id, Flow::InventoryQuery, Err(Failure::TimedOut));
        }
    }
}
