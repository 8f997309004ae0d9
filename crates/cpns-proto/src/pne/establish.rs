//! PN establishment at the PNE, as initiator (000 §6.6.1.1 steps 1, 6-8, 14) or invitee
//! (steps 2-3, 7, 9, 15; §6.6.1.2 steps 3-4, 7-10, 15-16), and the bookkeeping of the PNE's
//! flows with the server ([`Flows`]: its own set-up, the PNs it is joining, its registration,
//! [`super::register`]).

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_crypto::{
    AuthHash, AuthPurpose, LocalEuKey, PneAuthInput, PneAuthKeys, Rand, ServerOutcome,
    stored_wrapped_key,
};
use cpns_wire::{
    AuthPurposeCode, AuthenticationRequest, AuthenticationResponse, Envelope, ErrorBody, ErrorCode,
    HashBytes, JoinInfo, PnEstablishmentNotify, PnId, PnInventory, PnSetupRequest, PnSetupResponse,
    PneHash, RequestId, SetupType,
};

use super::register::Registering;
use super::{MemberOf, PneEvent, PneSession};
use crate::util::{hash_of, hash_wire, inventory_cbor, rand_of, rand_wire};
use crate::{CommandError, CommandId, Failure, Flow, LocalPnState};

/// The PNE's own PN Setup Request, waiting for its PN (step 1).
#[derive(Debug)]
struct OwnSetup {
    msg: u64,
    request_id: RequestId,
    rand_pne: Rand,
    /// The digest of the join information it sent (docs/security.md §4.1).
    said: [u8; 32],
    deadline: Instant,
    cmd: CommandId,
}

/// A PN this PNE is joining: waiting for authentication and then for the server's hash.
#[derive(Debug)]
struct Joining {
    rand_pne: Rand,
    /// The digest of the join information it sent, which its proof covers.
    said: [u8; 32],
    initiator: bool,
    phase: JoinPhase,
    deadline: Instant,
    /// The `start_setup` command of an initiator; `None` for an invitation.
    cmd: Option<CommandId>,
}

/// Where joining a PN stands, with what only that phase has.
#[derive(Debug)]
enum JoinPhase {
    /// Accepted (or asked for) the PN; waiting for the server's Authentication Request.
    AwaitAuth,
    /// Answered the Authentication Request (step 8); waiting for hash_server (steps 14-15).
    Authenticated {
        /// SK_PNE and hash_PNE.
        keys: Box<(PneAuthKeys, AuthHash)>,
        /// This PNE's LocalEUKey copy in its stored form, rand_server ‖ wrapped.
        wrapped: Option<Vec<u8>>,
    },
}

/// Flows in progress.
#[derive(Debug, Default)]
pub(super) struct Flows {
    setup: Option<OwnSetup>,
    joining: BTreeMap<PnId, Joining>,
    pub(super) registration: Option<Registering>,
}

impl Flows {
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        let s = self.setup.as_ref().map(|s| s.deadline);
        let r = self.registration.as_ref().map(|r| r.deadline);
        s.into_iter()
            .chain(r)
            .chain(self.joining.values().map(|j| j.deadline))
    }
}

impl PneSession {
    fn join_info(&self, rand_pne: &Rand) -> JoinInfo {
        JoinInfo {
            pne_id: self.cfg.id.clone(),
            capabilities: self.cfg.capabilities.clone(),
            contents: self.cfg.contents.clone(),
            rand_pne: rand_wire(rand_pne),
            local_key: self.cfg.wants_local_key(),
            home_gateway: self.cfg.home_gateway.clone(),
        }
    }

    /// Whether a registration runs (one at a time).
    pub(super) fn registering(&self) -> bool {
        self.flows.registration.is_some()
    }

    fn establishment_wait(&self) -> std::time::Duration {
        self.cfg.timeouts.invite * 2 + self.cfg.timeouts.flow * 2
    }

    /// 000 §6.6.1.1 step 1: ask the PN GW for a PN of the given type. Completes with
    /// [`Outcome::PnJoined`] once the server is authenticated and the PN stored (step 15).
    pub fn start_setup(
        &mut self,
        now: Instant,
        setup: SetupType,
    ) -> Result<CommandId, CommandError> {
        if self.flows.setup.is_some() {
            return Err(CommandError::ChangeRunning {
                flow: Flow::PnEstablishment,
            });
        }
        let rand_pne = self.rng.rand();
        let request_id = RequestId(self.rng.u64());
        let join = self.join_info(&rand_pne);
        let said = crate::util::join_statement(&join);
        let req = PnSetupRequest {
            request_id,
            setup: Some(setup),
            join: Some(join),
            pn_id: None,
            initiator: None,
        };
        let msg = self.send_request(req);
        let deadline = now + self.establishment_wait();
        let cmd = self.commands.next();
        self.flows.setup = Some(OwnSetup {
            msg,
            request_id,
            rand_pne,
            said,
            deadline,
            cmd,
        });
        Ok(cmd)
    }

    /// 000 §6.6.1.1 steps 2-3 / §6.6.1.2 steps 3-4: an invitation to a PN being set up,
    /// accepted or declined as the PNE's [`InvitationPolicy`](super::InvitationPolicy) says,
    /// or held for its application.
    pub(super) fn on_invitation(&mut self, now: Instant, env: &Envelope, m: PnSetupRequest) {
        let Some(pn_id) = m.pn_id else {
            return self.reject(env, ErrorCode::BadRequest, "an invitation names its PN");
        };
        let from = m.initiator.unwrap_or_else(|| self.gateway_for(env));
        let invitation = super::invite::Invitation::Setup { msg: env.msg_id };
        self.invited(now, pn_id, from, invitation);
    }

    /// 000 §6.6.1.1 step 3: declines the invitation to a PN being set up.
    pub(super) fn decline_setup(&mut self, msg: u64, pn_id: PnId) {
        let resp = PnSetupResponse {
            pn_id,
            accept: false,
            join: None,
            inventory: None,
            hash_server: None,
            epoch: None,
            sealed_key: None,
        };
        self.send_response(msg, resp);
        self.event(PneEvent::InvitationDeclined(pn_id));
    }

    /// 000 §6.6.1.1 step 3: accepts the invitation to a PN being set up, with this PNE's
    /// join information, and waits for the server's Authentication Request (step 6).
    pub(super) fn accept_setup(&mut self, now: Instant, msg: u64, pn_id: PnId) {
        let rand_pne = self.rng.rand();
        let join = self.join_info(&rand_pne);
        let said = crate::util::join_statement(&join);
        let resp = PnSetupResponse {
            pn_id,
            accept: true,
            join: Some(join),
            inventory: None,
            hash_server: None,
            epoch: None,
            sealed_key: None,
        };
        self.send_response(msg, resp);
        let deadline = now + self.establishment_wait();
        self.flows.joining.insert(
            pn_id,
            Joining {
                rand_pne,
                said,
                initiator: false,
                phase: JoinPhase::AwaitAuth,
                deadline,
                cmd: None,
            },
        );
    }

    /// 000 §6.6.1.1 steps 6-9: take rand_server and the LocalEUKey, authenticate the PN GW on
    /// an insecure PAN, answer with hash_PNE.
    pub(super) fn on_auth_request(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: AuthenticationRequest,
    ) {
        if m.purpose == AuthPurposeCode::Registration {
            return self.on_registration_auth(now, env, m);
        }
        let own = self
            .flows
            .setup
            .as_ref()
            .filter(|s| m.request_id == Some(s.request_id));
        if let Some(s) = own {
            let joining = Joining {
                rand_pne: s.rand_pne,
                said: s.said,
                initiator: true,
                phase: JoinPhase::AwaitAuth,
                deadline: s.deadline,
                cmd: Some(s.cmd),
            };
            self.flows.joining.insert(m.pn_id, joining);
        }
        let Some(j) = self
            .flows
            .joining
            .get(&m.pn_id)
            .filter(|j| matches!(j.phase, JoinPhase::AwaitAuth))
        else {
            return self.reject(
                env,
                ErrorCode::WrongState,
                "this PNE is not joining this PN",
            );
        };
        let (rand_pne, said) = (j.rand_pne, j.said);
        let gw = self.gateway_for(env);
        let rand_server = rand_of(&m.rand_server);
        // Step 7: the copy is bound to this establishment's rand_server; it is kept with it.
        let wrapped = m
            .local_keys
            .iter()
            .find(|w| w.pne_id == self.cfg.id)
            .map(|w| stored_wrapped_key(&rand_server, &w.for_pne));
        let local: Option<LocalEuKey> = match (&wrapped, self.cfg.wants_local_key()) {
            (Some(w), _) => match self.unwrap_stored_key(&m.pn_id, &gw, w) {
                Ok(k) => Some(k),
                Err(_) => return self.abandon(env, m.pn_id, Failure::LocalKeyDidNotUnwrap),
            },
            (None, true) => {
                return self.abandon(env, m.pn_id, Failure::LocalKeyNotAssigned);
            }
            (None, false) => None,
        };
        // Step 8: SK_PNE and hash_PNE.
        let keys = PneAuthKeys::derive(
            &self.cfg.eukey,
            &PneAuthInput {
                purpose: AuthPurpose::Establishment,
                pn_id: m.pn_id.as_bytes(),
                pne_id: self.cfg.id.as_str(),
                rand_pne: &rand_pne,
                rand_server: &rand_server,
                statement: &said,
            },
        );
        let hash = keys.hash_pne();
        if let Some(j) = self.flows.joining.get_mut(&m.pn_id) {
            j.phase = JoinPhase::Authenticated {
                keys: Box::new((keys, hash)),
                wrapped,
            };
        }
        let resp = AuthenticationResponse {
            pn_id: m.pn_id,
            hashes: vec![PneHash {
                pne_id: self.cfg.id.clone(),
                hash: hash_wire(&hash),
            }],
            purpose: AuthPurposeCode::Establishment,
            request_id: m.request_id,
        };
        let resp = self.response(env.msg_id, self.peer(), resp);
        match local {
            // Step 6: on an insecure PAN, PN GW authentication first; the response follows sealed.
            Some(local)
                if !self.codec.rx_sealed() && self.cfg.security == crate::PanSecurity::Cpns =>
            {
                if self
                    .begin_pan_auth(now, m.pn_id, local, vec![resp], None)
                    .is_err()
                {
                    self.abandon(env, m.pn_id, Failure::LinkBusy);
                }
            }
            _ => self.transmit(&resp),
        }
    }

    fn abandon(&mut self, env: &Envelope, pn_id: PnId, reason: Failure) {
        let cmd = self.flows.joining.remove(&pn_id).and_then(|j| {
            if j.initiator {
                self.flows.setup = None;
            }
            j.cmd
        });
        self.reject(env, ErrorCode::Unauthenticated, &reason.to_string());
        self.fail(cmd, Flow::PnEstablishment, reason);
    }

    /// 000 §6.6.1.1 step 14: the initiator's PN Setup Response.
    pub(super) fn on_setup_response(&mut self, env: &Envelope, m: PnSetupResponse) {
        let Some(setup) = self.flows.setup.take_if(|s| Some(s.msg) == env.in_reply_to) else {
            return;
        };
        match (m.accept, m.inventory, m.hash_server) {
            (true, Some(inventory), Some(h)) => {
                let group = m.epoch.zip(m.sealed_key);
                self.finish(m.pn_id, inventory, h, group, Some(setup.cmd));
            }
            _ => {
                self.flows.joining.remove(&m.pn_id);
                let reason = Failure::NotEstablished(None);
                self.fail(Some(setup.cmd), Flow::PnEstablishment, reason);
            }
        }
    }

    /// 000 §6.6.1.1 step 15 / §6.6.1.2 steps 15-16: PN Establishment Notify.
    pub(super) fn on_establishment_notify(&mut self, m: PnEstablishmentNotify) {
        if !self.flows.joining.contains_key(&m.pn_id) {
            return;
        }
        match (m.inventory, m.hash_server) {
            (Some(inventory), Some(h)) => {
                let group = m.epoch.zip(m.sealed_key);
                self.finish(m.pn_id, inventory, h, group, None);
            }
            _ => {
                let cmd = self.flows.joining.remove(&m.pn_id).and_then(|j| {
                    if j.initiator {
                        self.flows.setup = None;
                    }
                    j.cmd
                });
                self.fail(
                    cmd,
                    Flow::PnEstablishment,
                    Failure::NotEstablished(m.reason),
                );
            }
        }
    }

    /// Verify hash_server_PNE over the inventory as received; only then store the PN (step 15).
    /// A PN GW that altered the inventory it relays fails the check (docs/security.md §4.1).
    ///
    /// With the server authenticated, this PNE's copy of the PN's first group key is opened
    /// under its SK_PNE (docs/security.md §4.10): kept if it opens, reported if not (the PN is
    /// kept either way: its inventory is the server's, by hash_server).
    ///
    /// `setup` is the initiator's command when its own PN Setup Response brought the PN: it
    /// ends even if no establishment of that PN was under way here.
    fn finish(
        &mut self,
        pn_id: PnId,
        inventory: PnInventory,
        claimed: HashBytes,
        group: Option<(u64, Vec<u8>)>,
        setup: Option<CommandId>,
    ) {
        let Some(j) = self.flows.joining.remove(&pn_id) else {
            if let Some(id) = setup {
                let reason = Failure::PnBeforeAuthentication;
                self.complete(id, Flow::PnEstablishment, Err(reason));
            }
            return;
        };
        if j.initiator {
            // The set-up ends here, whichever answer brought the PN.
            self.flows.setup = None;
        }
        let refused = |s: &mut Self, reason: Failure| match j.cmd {
            Some(id) => s.complete(id, Flow::PnEstablishment, Err(reason)),
            None => s.event(PneEvent::PnRefused { pn_id, reason }),
        };
        let JoinPhase::Authenticated { keys, wrapped } = j.phase else {
            return refused(self, Failure::PnBeforeAuthentication);
        };
        let (keys, hash_pne) = *keys;
        let outcome = ServerOutcome::Established {
            inventory_cbor: &inventory_cbor(&inventory),
        };
        if keys
            .verify_hash_server(&hash_pne, &outcome, &hash_of(&claimed))
            .is_err()
            || inventory.pn_id != pn_id
        {
            // 000 §6.6.1.1 step 15: the PN is not stored.
            return refused(self, Failure::ServerNotAuthenticated);
        }
        let local = match &wrapped {
            Some(w) => self.unwrap_stored_key(&pn_id, &inventory.gateway, w).ok(),
            None => None,
        };
        let wrapped_keys = wrapped
            .map(|w| vec![(self.cfg.id.clone(), w)])
            .unwrap_or_default();
        let group = group.and_then(|(epoch, sealed)| {
            let digest = cpns_crypto::inventory_digest(&inventory_cbor(&inventory));
            let binding = cpns_crypto::GroupKeyBinding {
                pn_id: pn_id.as_bytes(),
                epoch,
                pne_id: self.cfg.id.as_str(),
                inventory_digest: &digest,
                pull: None,
            };
            match cpns_crypto::open_group_key(keys.session_key(), &binding, &sealed) {
                Ok(gk) => Some((epoch, gk)),
                Err(e) => {
                    self.event(PneEvent::FlowFailed {
                        flow: Flow::PnEstablishment,
                        reason: Failure::GroupKeyDidNotOpen(e.to_string()),
                    });
                    None
                }
            }
        });
        let state = LocalPnState {
            inventory,
            wrapped_keys,
            own: Some(crate::OwnKeys {
                secure_seq: 0,
                session_key: keys.session_key().clone(),
                group,
            }),
            expires_at: None,
        };
        self.pns.insert(
            pn_id,
            MemberOf {
                state: state.clone(),
                local,
            },
        );
        let token = self.tokens.next();
        self.parked.insert(
            token,
            super::Parked::Joined {
                pn_id,
                initiator: j.initiator,
                cmd: j.cmd,
            },
        );
        self.out
            .push_back(super::PneOutput::Persist { token, pn: state });
    }

    /// An error answering one of the PNE's requests ends its flow.
    pub(super) fn on_error(&mut self, env: &Envelope, e: ErrorBody) {
        let Some(reply_to) = env.in_reply_to else {
            return;
        };
        if self.status_refused(reply_to, &e)
            || self.secure_call_refused(reply_to, &e)
            || self.inventory_query_refused(reply_to, &e)
            || self.content_send_refused(reply_to, &e)
            || self.release_refused(reply_to, &e)
            || self.leave_refused(reply_to, &e)
        {
            return;
        }
        let (cmd, flow) = if let Some(s) = self.flows.setup.take_if(|s| s.msg == reply_to) {
            (Some(s.cmd), Flow::PnEstablishment)
        } else if let Some(r) = self.flows.registration.take_if(|r| r.msg == reply_to) {
            (r.cmd, Flow::PneRegistration)
        } else if let Some(p) = self.pan.take_if(|p| p.init_msg == reply_to) {
            (p.cmd, Flow::PanAuthentication)
        } else if let Some((_, _, cmd)) = self.discovery.take_if(|(m, _, _)| *m == reply_to) {
            (cmd, Flow::EntityDiscovery)
        } else {
            return;
        };
        self.fail(cmd, flow, Failure::Refused(e));
    }

    /// Ends the flows whose deadline passed, each once: an initiator's set-up and the joining
    /// it became share their command; the invitations joining at once are told as one.
    pub(super) fn flow_timeouts(&mut self, now: Instant) {
        let mut failed: Vec<(Option<CommandId>, Flow)> = Vec::new();
        if let Some(s) = self.flows.setup.take_if(|s| s.deadline <= now) {
            failed.push((Some(s.cmd), Flow::PnEstablishment));
        }
        if let Some(r) = self.flows.registration.take_if(|r| r.deadline <= now) {
            failed.push((r.cmd, Flow::PneRegistration));
        }
        let late = crate::util::take_expired(&mut self.flows.joining, now, |j| j.deadline);
        for (_, j) in late {
            if j.initiator {
                self.flows.setup = None;
            }
            let ended = (j.cmd, Flow::PnEstablishment);
            if !failed.contains(&ended) {
                failed.push(ended);
            }
        }
        for (cmd, flow) in failed {
            self.fail(cmd, flow, Failure::TimedOut);
        }
    }
}
