//! PNE registration at the PNE (003 §1.4.1 steps 1-4; as the join after an accepted
//! invitation, 000 §6.6.2.2 and 003 §1.4.2): ask, answer the server's challenge for the PN,
//! open the registration grant (SK_PNE and the CPNS ID) and, for a join, store the PN it makes
//! this PNE a member of.

use std::time::Instant;

use cpns_crypto::{
    AuthHash, AuthPurpose, GrantBinding, LocalEuKey, PneAuthInput, PneAuthKeys, Rand,
    ServerOutcome, open_registration_grant, stored_wrapped_key,
};
use cpns_wire::{
    AuthPurposeCode, AuthenticationRequest, AuthenticationResponse, Envelope, ErrorCode, PnId,
    PneHash, PneRegistrationRequest, PneRegistrationResponse, RegistrationGrant, RequestId,
};

use super::{Outcome, PneEvent, PneSession};
use crate::util::{hash_of, hash_wire, rand_of, rand_wire};
use crate::{CommandError, CommandId, Failure, Flow, PanSecurity};

/// A PNE registration in progress.
#[derive(Debug)]
pub(super) struct Registering {
    pub(super) msg: u64,
    pub(super) request_id: RequestId,
    pub(super) rand_pne: Rand,
    /// The digest of the request it sent, which its proof covers (docs/security.md §4.1).
    pub(super) said: [u8; 32],
    pub(super) phase: RegistrationPhase,
    pub(super) deadline: Instant,
    /// The command that asked for it; `None` for a join after an invitation.
    pub(super) cmd: Option<CommandId>,
    /// Whether it is a join (000 §6.6.2.2): done once the PN it makes this PNE a member of is
    /// stored, not at the registration's answer.
    pub(super) joins: bool,
    /// Whether it asked for a LocalEUKey (`local_key`): then the challenge must bring one.
    pub(super) asked_key: bool,
}

/// Where a registration stands, with what only that phase has.
#[derive(Debug)]
pub(super) enum RegistrationPhase {
    /// Asked; waiting for the server's challenge.
    AwaitAuth,
    /// Answered the challenge for this PN; waiting for the answer with hash_server.
    Authenticated(Box<Answered>),
}

/// What a registration keeps once it answered the server's challenge.
#[derive(Debug)]
pub(super) struct Answered {
    pn_id: PnId,
    keys: PneAuthKeys,
    hash_pne: AuthHash,
    /// The LocalEUKey the challenge brought, and its stored form, kept once the server is
    /// authenticated.
    issued: Option<(LocalEuKey, Vec<u8>)>,
}

impl PneSession {
    /// 003 §1.4.1 step 1: ask to be registered, in `pn_id` if the PNE is a member of it.
    /// Completes with [`Outcome::Registered`].
    pub fn start_registration(
        &mut self,
        now: Instant,
        pn_id: Option<PnId>,
    ) -> Result<CommandId, CommandError> {
        let id = self.commands.next();
        self.register(now, pn_id, Some(id), false)?;
        Ok(id)
    }

    /// A registration for command `cmd` (or for this PNE itself), joining `pn_id` if `joins`.
    pub(super) fn register(
        &mut self,
        now: Instant,
        pn_id: Option<PnId>,
        cmd: Option<CommandId>,
        joins: bool,
    ) -> Result<(), CommandError> {
        if self.flows.registration.is_some() {
            return Err(CommandError::ChangeRunning {
                flow: Flow::PneRegistration,
            });
        }
        let rand_pne = self.rng.rand();
        let request_id = RequestId(self.rng.u64());
        // On a `cpns` PAN every member seals its link (docs/security.md §4.2): a PNE that
        // holds no LocalEUKey for the PN it registers in asks for one (naming none, it asks
        // when it holds none of this PN GW's PNs: then it joins one).
        let asked_key = self.cfg.security == PanSecurity::Cpns
            && match pn_id {
                Some(pn) => !self.holds_local_key(&pn),
                None => self.proof_key(None).is_none(),
            };
        let req = PneRegistrationRequest {
            request_id,
            pne_id: self.cfg.id.clone(),
            pn_id,
            rand_pne: rand_wire(&rand_pne),
            capabilities: Some(self.cfg.capabilities.clone()),
            local_key: asked_key,
        };
        let said = crate::util::registration_statement(&req);
        let msg = self.send_request_to(cpns_wire::Address::Server, req);
        let deadline = now + self.cfg.timeouts.flow * 3;
        self.flows.registration = Some(Registering {
            msg,
            request_id,
            rand_pne,
            said,
            phase: RegistrationPhase::AwaitAuth,
            deadline,
            cmd,
            joins,
            asked_key,
        });
        Ok(())
    }

    /// The server's challenge for the registration, relayed by the PN GW. On a `cpns` PAN the
    /// PNE first proves itself to the PN GW with the LocalEUKey the challenge brought (or the
    /// one it holds for the PN), so its answer is the link's first sealed frame, as in an
    /// establishment (docs/security.md §4.4).
    pub(super) fn on_registration_auth(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: AuthenticationRequest,
    ) {
        let Some((rand_pne, said, asked_key)) = self
            .flows
            .registration
            .as_ref()
            .filter(|r| matches!(r.phase, RegistrationPhase::AwaitAuth))
            .map(|r| (r.rand_pne, r.said, r.asked_key))
        else {
            return self.reject(env, ErrorCode::WrongState, "no registration in progress");
        };
        let rand_server = rand_of(&m.rand_server);
        let gw = self.gateway_for(env);
        let copy = m.local_keys.iter().find(|w| w.pne_id == self.cfg.id);
        let issued = match copy {
            Some(w) => {
                let stored = stored_wrapped_key(&rand_server, &w.for_pne);
                match self.unwrap_stored_key(&m.pn_id, &gw, &stored) {
                    Ok(k) => Some((k, stored)),
                    Err(_) => return self.abandon_registration(env, Failure::LocalKeyDidNotUnwrap),
                }
            }
            // Asked for a key and none came: a device on the path took it out.
            None if asked_key => {
                return self.abandon_registration(env, Failure::LocalKeyNotAssigned);
            }
            None => None,
        };
        let must_seal = self.cfg.security == PanSecurity::Cpns && !self.codec.rx_sealed();
        let seal_with = match &issued {
            Some((k, _)) => Some(k.clone()),
            None => self.pns.get(&m.pn_id).and_then(|p| p.local.clone()),
        };
        if must_seal && seal_with.is_none() {
            return self.abandon_registration(env, Failure::LocalKeyNotAssigned);
        }
        let keys = PneAuthKeys::derive(
            &self.cfg.eukey,
            &PneAuthInput {
                purpose: AuthPurpose::Registration,
                pn_id: m.pn_id.as_bytes(),
                pne_id: self.cfg.id.as_str(),
                rand_pne: &rand_pne,
                rand_server: &rand_server,
                statement: &said,
            },
        );
        let hash_pne = keys.hash_pne();
        let resp = AuthenticationResponse {
            pn_id: m.pn_id,
            hashes: vec![PneHash {
                pne_id: self.cfg.id.clone(),
                hash: hash_wire(&hash_pne),
            }],
            purpose: AuthPurposeCode::Registration,
            request_id: m.request_id,
        };
        if let Some(r) = self.flows.registration.as_mut() {
            r.phase = RegistrationPhase::Authenticated(Box::new(Answered {
                pn_id: m.pn_id,
                keys,
                hash_pne,
                issued,
            }));
        }
        let resp = self.response(env.msg_id, env.from.clone(), resp);
        match seal_with.filter(|_| must_seal) {
            Some(local) => {
                if self
                    .begin_pan_auth(now, m.pn_id, local, vec![resp], None)
                    .is_err()
                {
                    self.abandon_registration(env, Failure::LinkBusy);
                }
            }
            None => self.transmit(&resp),
        }
    }

    /// The registration cannot answer the server's challenge: it ends, and the challenge is
    /// refused.
    fn abandon_registration(&mut self, env: &Envelope, reason: Failure) {
        if let Some(r) = self.flows.registration.take() {
            self.fail(r.cmd, Flow::PneRegistration, reason.clone());
        }
        self.reject(env, ErrorCode::Unauthenticated, &reason.to_string());
    }

    /// 003 §1.4.1 step 4: authenticate the server (hash_server covers the CPNS ID), open the grant
    /// sealed under K_dir(server → PNE) of SK_PNE and bound to this PN, PNE, request and CPNS ID.
    pub(super) fn on_registration_response(&mut self, env: &Envelope, m: PneRegistrationResponse) {
        if self
            .flows
            .registration
            .as_ref()
            .is_none_or(|r| Some(r.msg) != env.in_reply_to)
        {
            return;
        }
        let Some(r) = self.flows.registration.take() else {
            return;
        };
        let (request_id, cmd, joins) = (r.request_id, r.cmd, r.joins);
        let RegistrationPhase::Authenticated(authenticated) = r.phase else {
            let reason = Failure::AnswerBeforeAuthentication;
            return self.fail(cmd, Flow::PneRegistration, reason);
        };
        let Answered {
            pn_id,
            keys,
            hash_pne,
            issued,
        } = *authenticated;
        let fail = |s: &mut Self, reason: Failure| s.fail(cmd, Flow::PneRegistration, reason);
        // hash_server covers the CPNS ID (and the PN, through the transcript).
        let outcome = ServerOutcome::Registered {
            cpns_id: m.cpns_id.as_str(),
        };
        if m.pn_id != pn_id
            || keys
                .verify_hash_server(&hash_pne, &outcome, &hash_of(&m.hash_server))
                .is_err()
        {
            return fail(self, Failure::ServerNotAuthenticated);
        }
        let binding = GrantBinding {
            pn_id: pn_id.as_bytes(),
            pne_id: self.cfg.id.as_str(),
            request_id: request_id.0,
            cpns_id: m.cpns_id.as_str(),
        };
        let Ok(plain) = open_registration_grant(keys.session_key(), &binding, &m.sealed_grant)
        else {
            return fail(self, Failure::GrantDidNotOpen);
        };
        let Ok(grant) = minicbor::decode::<RegistrationGrant>(&plain) else {
            return fail(self, Failure::GrantMalformed);
        };
        if grant.cpns_id != m.cpns_id {
            return fail(self, Failure::GrantMismatch);
        }
        // The server now keeps this SK_PNE for the PNE's membership: group keys come under it;
        // a member's new LocalEUKey replaces its older one (a joiner's is stored with the PN).
        let issued = match issued {
            Some((key, stored)) if self.pns.contains_key(&pn_id) => {
                self.keep_local_key(pn_id, key, stored);
                None
            }
            other => other,
        };
        self.set_own_session_key(pn_id, keys.session_key());
        // 003 §1.4.1 step 4: the PNE keeps its CPNS ID and SK_PNE for the secure session.
        self.session_established(super::SecureSession {
            cpns_id: grant.cpns_id.clone(),
            pn_id,
            session_key: keys.session_key().clone(),
            lifetime_s: grant.lifetime_s,
        });
        let (cpns_id, lifetime_s) = (grant.cpns_id.clone(), grant.lifetime_s);
        match (cmd, joins) {
            (Some(id), false) => {
                let registered = Outcome::Registered {
                    cpns_id,
                    pn_id,
                    lifetime_s,
                };
                self.complete(id, Flow::PneRegistration, Ok(registered));
            }
            _ => self.event(PneEvent::Registered {
                cpns_id,
                pn_id,
                lifetime_s,
            }),
        }
        // 000 §6.6.2.2: a registration that made this PNE a member brings the PN, as the server
        // records it, and its group key, under the grant's seal; a join ends once it is stored.
        let join_cmd = cmd.filter(|_| joins);
        match (grant.inventory, grant.epoch, grant.group_key.as_deref()) {
            (Some(inventory), Some(epoch), Some(gk)) => {
                self.joined_by_registration(
                    pn_id,
                    super::membership::Grant {
                        inventory,
                        epoch,
                        group_key: gk,
                        session_key: keys.session_key(),
                        local: issued,
                    },
                    join_cmd,
                );
            }
            _ if joins => {
                let reason = Failure::NotEstablished(Some(
                    "registered, but the server did not make this PNE a member of the PN".into(),
                ));
                self.fail(join_cmd, Flow::PneRegistration, reason);
            }
            _ => {}
        }
    }
}
