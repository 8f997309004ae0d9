//! Server side of PN establishment, for both initiators (000 §6.6.1.1 steps 4-12 and §6.6.1.2
//! steps 5-13): take the PN GW's PN Registration Request, challenge every PNE through the PN GW
//! with `rand_server` and (where asked) wrapped LocalEUKeys, verify each `hash_PNE`, register the
//! PN when at least one PNE authenticated, and answer with `hash_server_PNE` per member, each
//! covering the inventory the PN GW relays to that member.

use std::time::Instant;

use cpns_crypto::{
    AuthHash, AuthPurpose, EuKey, KeyBinding, LocalEuKey, MachineRng, PneAuthInput, PneAuthKeys,
    Rand, Recipient, ServerOutcome, wrap_local_eukey,
};
use std::collections::BTreeMap;

use cpns_wire::{
    Address, AuthPurposeCode, AuthenticationRequest, AuthenticationResponse, EntityId, Envelope,
    ErrorBody, ErrorCode, InventoryMember, JoinInfo, MemberVerdict, PnId, PnInventory,
    PnRegistrationRequest, PnRegistrationResponse, PneConfirmRequest, PneConfirmResponse,
    RequestId, UserId, WrappedLocalKeys,
};

use super::connect::Gw;
use super::{
    KnownEntity, Load, Parked, Persisted, PnLoaded, RegisteredMember, ServerEffect, ServerEvent,
    ServerOutput, ServerSession,
};
use crate::util::{hash_of, hash_wire, inventory_cbor, rand_of, rand_wire};
use crate::{Failure, Flow, StoreFailure};

/// Most PNEs one PN Registration Request may name.
pub(super) const MAX_PNES_PER_PN: usize = 256;

/// A PNE named in the registration that the server can authenticate.
#[derive(Debug)]
struct Candidate {
    join: JoinInfo,
    eukey: EuKey,
    /// Another user's PNE (001 §5.2.1.1): its user, and the home PN GW that must confirm it.
    foreign: Option<(UserId, EntityId)>,
}

/// An authenticated candidate: its verdict's index, its keys and its hash_PNE.
#[derive(Debug)]
struct Authed {
    candidate: usize,
    verdict: usize,
    keys: PneAuthKeys,
    hash_pne: AuthHash,
}

/// One PN establishment in progress on this session.
#[derive(Debug)]
pub(super) struct Establishment {
    req_msg: u64,
    request_id: RequestId,
    owner: UserId,
    initiator: Option<EntityId>,
    /// The PN's lifetime and most members, as the PN GW asked.
    lifetime_s: Option<u32>,
    max_members: Option<u32>,
    rand_server: Rand,
    candidates: Vec<Candidate>,
    /// PNEs named in the request that may not take part: not enrolled PNEs, or another
    /// user's without a valid home PN GW (with why).
    refused: Vec<(EntityId, Option<ErrorBody>)>,
    pub(super) phase: EstablishmentPhase,
    pub(super) deadline: Instant,
}

/// Where an establishment stands, with what only that phase has.
#[derive(Debug)]
pub(super) enum EstablishmentPhase {
    /// The Authentication Request (step 6) awaits the PNEs' responses.
    AwaitAuth {
        /// Its message id.
        auth_msg: u64,
    },
    /// Another user's authenticated PNEs wait for their home PN GWs to confirm them
    /// (001 §5.2.1.1 steps 8-9) before the PN is registered (step 10).
    AwaitConfirm(Box<Confirming>),
    /// The PN is being made durable (step 11); then this answer goes out (step 12).
    Persisting(Box<PnRegistrationResponse>),
}

/// What an establishment keeps while home PN GWs confirm its foreign members.
#[derive(Debug)]
pub(super) struct Confirming {
    verdicts: Vec<MemberVerdict>,
    authed: Vec<Authed>,
    /// Questions out, by ask id: the candidate each is about.
    waiting: BTreeMap<u64, usize>,
}

impl Establishment {
    /// The Authentication Request awaiting its response, if the flow is at that step.
    pub(super) fn auth_msg(&self) -> Option<u64> {
        match self.phase {
            EstablishmentPhase::AwaitAuth { auth_msg } => Some(auth_msg),
            _ => None,
        }
    }

    /// Whether the flow waits for its members' authentication or home PN GWs (its deadline
    /// counts); once persisting, the store's answer ends it.
    pub(super) fn waiting(&self) -> bool {
        !matches!(self.phase, EstablishmentPhase::Persisting(_))
    }
}

impl ServerSession {
    /// 000 §6.6.1.1 step 4 / §6.6.1.2 step 5: PN Registration Request from the PN GW.
    pub(super) fn on_pn_registration(
        &mut self,
        _now: Instant,
        gw: &Gw,
        env: &Envelope,
        req: PnRegistrationRequest,
    ) {
        if self.replay(&env.from, req.request_id, env) {
            return;
        }
        if let Some(flow) = self.establishments.get(&req.pn_id) {
            if flow.request_id != req.request_id {
                self.reject(
                    env,
                    ErrorCode::Conflict,
                    "an establishment of this PN is in progress",
                );
            }
            // The same request retried while in progress: the answer will come.
            return;
        }
        if req.gateway.gw_id != gw.id {
            return self.reject(
                env,
                ErrorCode::Forbidden,
                "a PN GW registers only its own PNs",
            );
        }
        if req.pnes.is_empty() || req.pnes.len() > MAX_PNES_PER_PN {
            return self.reject(env, ErrorCode::BadRequest, "a PN needs 1 to 256 PNEs");
        }
        let mut ids: Vec<EntityId> = req.pnes.iter().map(|p| p.pne_id.clone()).collect();
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return self.reject(env, ErrorCode::BadRequest, "a PNE is named twice");
        }
        if !self.admit(env) {
            return;
        }
        // 001 §5.2.1.1 step 3: the home PN GWs another user's PNEs name, to check they are
        // their users'.
        ids.extend(req.pnes.iter().filter_map(|p| p.home_gateway.clone()));
        ids.sort();
        ids.dedup();
        let load = Load::Pn {
            pn: req.pn_id,
            replay: Some((env.from.clone(), req.request_id)),
            entities: ids,
            member_keys: false,
        };
        self.load(
            Parked::PnRegistrationLoad {
                req_msg: env.msg_id,
                req,
            },
            load,
        );
    }

    /// 000 §6.6.1.1 step 5 / §6.6.1.2 step 6: make rand_server and the LocalEUKeys, and send the
    /// Authentication Request for the PNEs to the PN GW.
    pub(super) fn pn_registration_loaded(
        &mut self,
        now: Instant,
        req_msg: u64,
        req: PnRegistrationRequest,
        mut loaded: PnLoaded,
    ) {
        let Some(gw) = self.conn.gateway().cloned() else {
            return;
        };
        if self.replay_loaded(&mut loaded, req_msg) {
            return;
        }
        if loaded.pn.as_ref().is_some_and(|pn| pn.gateway != gw.id) {
            return self.respond_error(
                req_msg,
                ErrorCode::Conflict,
                "the PN belongs to another PN GW",
            );
        }
        let rand_server = self.rng.rand();
        let mut candidates = Vec::new();
        let mut refused = Vec::new();
        let mut local_keys = Vec::new();
        for join in req.pnes {
            // An enrolled PNE of the PN GW's own user, or of another user whose home PN GW
            // will be asked to confirm it (001 §5.2.1.1 step 8).
            let entity = loaded.take_entity(&join.pne_id);
            let Some(entity) = entity.filter(|e| e.role.is_pne()) else {
                refused.push((join.pne_id, None));
                continue;
            };
            let foreign = if entity.owner == gw.owner {
                None
            } else {
                match foreign_member(&loaded.entities, &entity.owner, join.home_gateway.as_ref()) {
                    Ok(home) => Some((entity.owner.clone(), home)),
                    Err(e) => {
                        refused.push((join.pne_id, Some(e)));
                        continue;
                    }
                }
            };
            if join.local_key {
                local_keys.push(wrap_pair(
                    &mut self.rng,
                    &entity.eukey,
                    &gw.eukey,
                    &req.pn_id,
                    &join.pne_id,
                    &gw.id,
                    &rand_server,
                ));
            }
            candidates.push(Candidate {
                join,
                eukey: entity.eukey,
                foreign,
            });
        }
        if candidates.is_empty() {
            let reason = Failure::NoEnrolledPne;
            // Another user's PNE that may not take part hears why (001 §5.2.1.1).
            match refused.iter().find_map(|(_, why)| why.clone()) {
                Some(e) => self.respond_error(req_msg, e.code, e.reason),
                None => self.respond_error(req_msg, ErrorCode::Unauthenticated, reason.to_string()),
            }
            return self.event(ServerEvent::FlowFailed {
                flow: Flow::PnEstablishment,
                reason,
            });
        }
        let auth = AuthenticationRequest {
            pn_id: req.pn_id,
            rand_server: rand_wire(&rand_server),
            local_keys,
            purpose: AuthPurposeCode::Establishment,
            pnes: candidates.iter().map(|c| c.join.pne_id.clone()).collect(),
            request_id: Some(req.request_id),
        };
        let auth_msg = self.send_request(Address::Entity(gw.id.clone()), auth);
        let flow = Establishment {
            req_msg,
            request_id: req.request_id,
            owner: gw.owner.clone(),
            initiator: req.initiator,
            lifetime_s: req.lifetime_s,
            max_members: req.max_members,
            rand_server,
            candidates,
            refused,
            phase: EstablishmentPhase::AwaitAuth { auth_msg },
            deadline: now + self.cfg.timeouts.flow,
        };
        self.establishments.insert(req.pn_id, flow);
    }

    /// 000 §6.6.1.1 steps 10-12 / §6.6.1.2 steps 11-13: verify every hash_PNE, register the PN
    /// when at least one PNE is authenticated, compute hash_server_PNE per member.
    pub(super) fn on_establishment_auth(
        &mut self,
        now: Instant,
        gw: &Gw,
        env: &Envelope,
        resp: AuthenticationResponse,
    ) {
        let pn_id = resp.pn_id;
        let matches = self
            .establishments
            .get(&pn_id)
            .is_some_and(|f| f.auth_msg().is_some() && f.auth_msg() == env.in_reply_to);
        if !matches {
            return self.reject(
                env,
                ErrorCode::WrongState,
                "no Authentication Request awaits this response",
            );
        }
        let Some(mut flow) = self.establishments.remove(&pn_id) else {
            return;
        };
        let mut verdicts = Vec::new();
        let mut authed = Vec::new();
        for (at, c) in flow.candidates.iter().enumerate() {
            let keys = PneAuthKeys::derive(
                &c.eukey,
                &PneAuthInput {
                    purpose: AuthPurpose::Establishment,
                    pn_id: pn_id.as_bytes(),
                    pne_id: c.join.pne_id.as_str(),
                    rand_pne: &rand_of(&c.join.rand_pne),
                    rand_server: &flow.rand_server,
                    // What it said in its join information, as it reached the server.
                    statement: &crate::util::join_statement(&c.join),
                },
            );
            let hash_pne = resp
                .hashes
                .iter()
                .find(|h| h.pne_id == c.join.pne_id)
                .map(|h| hash_of(&h.hash));
            // Step 11: authenticate the PNE by its hash_PNE.
            let authenticated = hash_pne.is_some_and(|h| keys.verify_hash_pne(&h).is_ok());
            verdicts.push(MemberVerdict {
                pne_id: c.join.pne_id.clone(),
                authenticated,
                hash_server: None,
                sealed_key: None,
                refused: None,
            });
            match hash_pne.filter(|_| authenticated) {
                Some(hash_pne) => authed.push(Authed {
                    candidate: at,
                    verdict: verdicts.len() - 1,
                    keys,
                    hash_pne,
                }),
                None => self.event(ServerEvent::AuthenticationFailed {
                    entity: c.join.pne_id.clone(),
                    reason: if hash_pne.is_some() {
                        Failure::HashPneMismatch
                    } else {
                        Failure::NoHashPne
                    },
                }),
            }
        }
        // 001 §5.2.1.1 step 8: another user's authenticated PNE enters only once its home PN
        // GW confirmed it; each is asked over that PN GW's own session.
        let mut waiting = BTreeMap::new();
        for a in &authed {
            let c = &flow.candidates[a.candidate];
            if let Some((_, home)) = &c.foreign {
                let ask = self.rng.u64();
                let request = PneConfirmRequest {
                    request_id: RequestId(self.rng.u64()),
                    pn_id,
                    pne: c.join.pne_id.clone(),
                    requesting_gw: gw.id.clone(),
                };
                self.out.push_back(ServerOutput::AskGateway {
                    gateway: home.clone(),
                    ask,
                    request,
                });
                waiting.insert(ask, a.candidate);
            }
        }
        if waiting.is_empty() {
            return self.conclude(gw, pn_id, flow, verdicts, authed);
        }
        // Half a flow's time: the PN GW waits a whole one for this answer, so a silent home PN
        // GW leaves its PNE out without sinking the PN.
        flow.deadline = now + self.cfg.timeouts.flow / 2;
        flow.phase = EstablishmentPhase::AwaitConfirm(Box::new(Confirming {
            verdicts,
            authed,
            waiting,
        }));
        self.establishments.insert(pn_id, flow);
    }

    /// 001 §5.2.1.1 step 9 (origin side): a home PN GW's answer, or why there is none. A PNE
    /// its home PN GW does not confirm as its user's and chargeable is left out (`declined`;
    /// the error otherwise, e.g. `timeout`); once every answer is in, the PN is registered
    /// with the others (step 10).
    pub fn handle_gateway_answer(
        &mut self,
        ask: u64,
        answer: Result<PneConfirmResponse, ErrorBody>,
    ) {
        let found = self
            .establishments
            .iter()
            .find_map(|(pn, f)| match &f.phase {
                EstablishmentPhase::AwaitConfirm(c) => c.waiting.get(&ask).map(|at| (*pn, *at)),
                _ => None,
            });
        let Some((pn_id, at)) = found else {
            return;
        };
        let refusal = match answer {
            Ok(r) if r.confirmed && r.chargeable => None,
            Ok(r) if r.confirmed => Some(ErrorBody::new(
                ErrorCode::Declined,
                "its home PN GW confirmed it but will not be charged for it",
            )),
            Ok(_) => Some(ErrorBody::new(
                ErrorCode::Declined,
                "its home PN GW did not confirm it as its user's",
            )),
            Err(e) => Some(e),
        };
        let Some(flow) = self.establishments.get_mut(&pn_id) else {
            return;
        };
        let EstablishmentPhase::AwaitConfirm(c) = &mut flow.phase else {
            return;
        };
        c.waiting.remove(&ask);
        if let Some(e) = refusal {
            leave_out(c, at, e);
        }
        if c.waiting.is_empty() {
            self.confirmed(pn_id);
        }
    }

    /// Every home PN GW answered (or the deadline passed): register the PN.
    fn confirmed(&mut self, pn_id: PnId) {
        let Some(gw) = self.conn.gateway().cloned() else {
            return;
        };
        let Some(mut flow) = self.establishments.remove(&pn_id) else {
            return;
        };
        let phase = std::mem::replace(
            &mut flow.phase,
            EstablishmentPhase::AwaitAuth { auth_msg: 0 },
        );
        let EstablishmentPhase::AwaitConfirm(c) = phase else {
            return;
        };
        let Confirming {
            verdicts, authed, ..
        } = *c;
        self.conclude(&gw, pn_id, flow, verdicts, authed);
    }

    /// Steps 11-12: register the PN with its authenticated (and, for another user's PNEs,
    /// confirmed) members, and compute hash_server_PNE per member over the inventory.
    fn conclude(
        &mut self,
        gw: &Gw,
        pn_id: PnId,
        mut flow: Establishment,
        mut verdicts: Vec<MemberVerdict>,
        authed: Vec<Authed>,
    ) {
        let mut members = Vec::new();
        let mut inventory = PnInventory {
            pn_id,
            gateway: gw.id.clone(),
            members: Vec::new(),
        };
        for a in &authed {
            let c = &flow.candidates[a.candidate];
            inventory.members.push(InventoryMember {
                pne_id: c.join.pne_id.clone(),
                capabilities: Some(c.join.capabilities.clone()),
                contents: c.join.contents.clone(),
            });
            members.push(RegisteredMember {
                pne_id: c.join.pne_id.clone(),
                initiator: flow.initiator.as_ref() == Some(&c.join.pne_id),
                capabilities: c.join.capabilities.clone(),
                contents: c.join.contents.clone(),
                session_key: a.keys.session_key().clone(),
                owner: c.foreign.as_ref().map(|(user, _)| user.clone()),
            });
        }
        // Step 12: hash_server_PNE covers hash_PNE and the inventory the member will store, as
        // sent in this response (docs/security.md §4.1): a relaying PN GW cannot alter it.
        let canonical = inventory_cbor(&inventory);
        let outcome = ServerOutcome::Established {
            inventory_cbor: &canonical,
        };
        // 002 §B.1.1.3 steps 22-24: the PN's first group key, one copy per authenticated
        // member under its SK_PNE, naming this inventory (docs/security.md §4.10).
        let group_key = cpns_crypto::GroupKey::random(self.rng.get());
        let digest = cpns_crypto::inventory_digest(&canonical);
        for a in authed {
            if let Some(v) = verdicts.get_mut(a.verdict) {
                v.hash_server = Some(hash_wire(&a.keys.hash_server(&a.hash_pne, &outcome)));
                let binding = cpns_crypto::GroupKeyBinding {
                    pn_id: pn_id.as_bytes(),
                    epoch: 1,
                    pne_id: v.pne_id.as_str(),
                    inventory_digest: &digest,
                    pull: None,
                };
                v.sealed_key = Some(cpns_crypto::seal_group_key(
                    self.rng.get(),
                    a.keys.session_key(),
                    &binding,
                    &group_key,
                ));
            }
        }
        verdicts.extend(flow.refused.iter().map(|(id, why)| MemberVerdict {
            pne_id: id.clone(),
            authenticated: false,
            hash_server: None,
            sealed_key: None,
            refused: why.clone(),
        }));
        // A PN a PNE asked for is registered only if that PNE proved it is who it claimed to be
        // (docs/ARCHITECTURE.md, "Identity on the PAN"): nobody starts a PN in another's name.
        let initiator_failed = flow
            .initiator
            .as_ref()
            .is_some_and(|i| !members.iter().any(|m| &m.pne_id == i));
        // Beyond the documents: a PN that would start with more members than its limit.
        if let Some(max) = flow.max_members.filter(|m| members.len() > *m as usize) {
            let why = format!(
                "the PN would have {} members; its maximum is {max}",
                members.len()
            );
            self.respond_error(flow.req_msg, ErrorCode::Conflict, why.clone());
            let e = cpns_wire::ErrorBody::new(ErrorCode::Conflict, why);
            return self.event(ServerEvent::FlowFailed {
                flow: Flow::PnEstablishment,
                reason: Failure::Refused(e),
            });
        }
        if members.is_empty() || initiator_failed {
            // Step 11: the PN is registered only when at least one PNE is authenticated (and
            // confirmed); an initiator left out for its home PN GW's answer hears why.
            let why = flow.initiator.as_ref().and_then(|i| {
                verdicts
                    .iter()
                    .find(|v| &v.pne_id == i)
                    .and_then(|v| v.refused.clone())
            });
            let why = why.or_else(|| {
                (members.is_empty() && verdicts.iter().all(|v| v.refused.is_some()))
                    .then(|| verdicts.iter().find_map(|v| v.refused.clone()))
                    .flatten()
            });
            let reason = if members.is_empty() {
                Failure::NoPneAuthenticated
            } else {
                Failure::InitiatorNotAuthenticated
            };
            match why {
                Some(e) => self.respond_error(flow.req_msg, e.code, e.reason),
                None => {
                    self.respond_error(flow.req_msg, ErrorCode::Unauthenticated, reason.to_string())
                }
            }
            return self.event(ServerEvent::FlowFailed {
                flow: Flow::PnEstablishment,
                reason,
            });
        }
        let effect = ServerEffect::RegisterPn {
            pn_id,
            gateway: gw.id.clone(),
            owner: flow.owner.clone(),
            members,
            group: Some(super::NewGroupEpoch {
                epoch: 1,
                key: group_key,
            }),
            lifetime_s: flow.lifetime_s,
            max_members: flow.max_members,
        };
        flow.phase = EstablishmentPhase::Persisting(Box::new(PnRegistrationResponse {
            pn_id,
            verdicts,
            inventory,
            epoch: Some(1),
        }));
        self.establishments.insert(pn_id, flow);
        self.persist(Parked::PnRegistrationPersist(pn_id), effect);
    }

    /// Step 12 (sent): the PN is durable, answer the PN GW.
    pub(super) fn pn_registration_persisted(
        &mut self,
        now: Instant,
        pn: PnId,
        result: Result<Persisted, StoreFailure>,
    ) {
        let Some(flow) = self.establishments.remove(&pn) else {
            return;
        };
        let EstablishmentPhase::Persisting(answer) = flow.phase else {
            return;
        };
        let answer = *answer;
        match result {
            Ok(_) => {
                let members = answer
                    .verdicts
                    .iter()
                    .filter(|v| v.authenticated)
                    .map(|v| v.pne_id.clone())
                    .collect();
                let gw = self.peer();
                let env = self.respond(flow.req_msg, gw.clone(), answer);
                self.remember(gw, flow.request_id, env);
                // Pending until the PN GW's store has it (its next PN list).
                self.unconfirmed.insert(pn, now + self.cfg.timeouts.flow);
                self.event(ServerEvent::PnRegistered { pn_id: pn, members });
            }
            Err(e) => self.respond_error(flow.req_msg, ErrorCode::Internal, format!("store: {e}")),
        }
    }

    /// Ends the establishments whose PNEs did not answer in time.
    pub(super) fn establishment_timeouts(&mut self, now: Instant) {
        let expired: Vec<PnId> = self
            .establishments
            .iter()
            .filter(|(_, f)| f.waiting() && f.deadline <= now)
            .map(|(pn, _)| *pn)
            .collect();
        for pn in expired {
            let confirming = self
                .establishments
                .get_mut(&pn)
                .and_then(|f| match &mut f.phase {
                    EstablishmentPhase::AwaitConfirm(c) => Some(c),
                    _ => None,
                });
            match confirming {
                // Home PN GWs that did not answer leave their PNEs out; the others go on.
                Some(c) => {
                    for (_, at) in std::mem::take(&mut c.waiting) {
                        let e = ErrorBody::new(
                            ErrorCode::Timeout,
                            "its home PN GW did not answer in time",
                        );
                        leave_out(c, at, e);
                    }
                    self.confirmed(pn);
                }
                None => self.fail_establishment(pn, ErrorCode::Timeout, Failure::TimedOut),
            }
        }
    }

    pub(super) fn fail_establishment(&mut self, pn: PnId, code: ErrorCode, reason: Failure) {
        let Some(flow) = self.establishments.remove(&pn) else {
            return;
        };
        self.respond_error(flow.req_msg, code, reason.to_string());
        self.event(ServerEvent::FlowFailed {
            flow: Flow::PnEstablishment,
            reason,
        });
    }
}

/// 000 §6.6.1.1 step 5: one LocalEUKey for (PN, PNE), wrapped once for the PNE and once for the
/// PN GW, each under its own EUKey and bound to the PN, PNE and PN GW ids and to this
/// establishment's `rand_server`, so a copy from an earlier establishment cannot be substituted.
/// A registration that asks for one (`local_key`) gets one the same way, bound to the
/// registration's `rand_server` (docs/security.md §4.2).
pub(super) fn wrap_pair(
    rng: &mut MachineRng,
    pne_eukey: &EuKey,
    gw_eukey: &EuKey,
    pn_id: &PnId,
    pne_id: &EntityId,
    gw_id: &EntityId,
    rand_server: &Rand,
) -> WrappedLocalKeys {
    let key = LocalEuKey::random(rng.get());
    let binding = KeyBinding {
        pn_id: pn_id.as_bytes(),
        pne_id: pne_id.as_str(),
        gw_id: gw_id.as_str(),
        rand_server,
    };
    let for_pne = wrap_local_eukey(rng.get(), pne_eukey, Recipient::Pne, &binding, &key);
    let for_gw = wrap_local_eukey(rng.get(), gw_eukey, Recipient::Gateway, &binding, &key);
    WrappedLocalKeys {
        pne_id: pne_id.clone(),
        for_pne,
        for_gw,
    }
}

/// Leaves candidate `at` out of the PN being confirmed, saying why in its verdict.
fn leave_out(c: &mut Confirming, at: usize, why: ErrorBody) {
    if let Some(i) = c.authed.iter().position(|a| a.candidate == at) {
        let a = c.authed.remove(i);
        if let Some(v) = c.verdicts.get_mut(a.verdict) {
            v.authenticated = false;
            v.refused = Some(why);
        }
    }
}

/// 001 §5.2.1.1 steps 2-3: another user's PNE takes part only through its home PN GW, which
/// must be an enrolled PN GW of that same user. The home PN GW, or why not.
fn foreign_member(
    loaded: &[KnownEntity],
    owner: &UserId,
    home: Option<&EntityId>,
) -> Result<EntityId, ErrorBody> {
    let Some(home) = home else {
        return Err(ErrorBody::new(
            ErrorCode::Forbidden,
            "another user's PNE takes part only with its home PN GW named to confirm it",
        ));
    };
    let ok = loaded
        .iter()
        .any(|e| &e.id == home && e.role.is_gateway() && &e.owner == owner);
    if !ok {
        return Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!("{home} is not a PN GW of the PNE's own user"),
        ));
    }
    Ok(home.clone())
}
