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
use cpns_wire::{
    Address, AuthPurposeCode, AuthenticationRequest, AuthenticationResponse, EntityId, Envelope,
    ErrorCode, InventoryMember, JoinInfo, MemberVerdict, PnId, PnInventory, PnRegistrationRequest,
    PnRegistrationResponse, RequestId, UserId, WrappedLocalKeys,
};

use super::connect::Gw;
use super::{
    EntityRole, LoadRequest, Loaded, Parked, Persisted, RegisteredMember, ServerEffect,
    ServerEvent, ServerSession,
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
}

/// One PN establishment in progress on this session.
#[derive(Debug)]
pub(super) struct Establishment {
    req_msg: u64,
    request_id: RequestId,
    owner: UserId,
    initiator: Option<EntityId>,
    rand_server: Rand,
    candidates: Vec<Candidate>,
    /// PNEs named in the request that are not enrolled PNEs of the PN GW's user.
    refused: Vec<EntityId>,
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
    /// The PN is being made durable (step 11); then this answer goes out (step 12).
    Persisting(Box<PnRegistrationResponse>),
}

impl Establishment {
    /// The Authentication Request awaiting its response, if the flow is at that step.
    pub(super) fn auth_msg(&self) -> Option<u64> {
        match self.phase {
            EstablishmentPhase::AwaitAuth { auth_msg } => Some(auth_msg),
            EstablishmentPhase::Persisting(_) => None,
        }
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
        let request = LoadRequest {
            entities: ids,
            pn: Some(req.pn_id),
            replay: Some((env.from.clone(), req.request_id)),
            session: None,
            member_keys: false,
            group_key: false,
            owner_pns: None,
        };
        self.load(
            Parked::PnRegistrationLoad {
                req_msg: env.msg_id,
                req,
            },
            request,
        );
    }

    /// 000 §6.6.1.1 step 5 / §6.6.1.2 step 6: make rand_server and the LocalEUKeys, and send the
    /// Authentication Request for the PNEs to the PN GW.
    pub(super) fn pn_registration_loaded(
        &mut self,
        now: Instant,
        req_msg: u64,
        req: PnRegistrationRequest,
        mut loaded: Loaded,
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
            // Multi-user PNs (001, PNE Confirm) are not served yet: a PNE must be an enrolled
            // PNE of the PN GW's own user to be authenticated.
            let entity = loaded.take_entity(&join.pne_id);
            let Some(entity) = entity.filter(|e| e.role == EntityRole::Pne && e.owner == gw.owner)
            else {
                refused.push(join.pne_id);
                continue;
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
            });
        }
        if candidates.is_empty() {
            let reason = Failure::NoEnrolledPne;
            self.respond_error(req_msg, ErrorCode::Unauthenticated, reason.to_string());
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
        // Authenticated members: their verdict's index, keys and hash_PNE. hash_server_PNE is
        // computed once the inventory it covers is complete.
        let mut confirmed: Vec<(usize, PneAuthKeys, AuthHash)> = Vec::new();
        let mut members = Vec::new();
        let mut inventory = PnInventory {
            pn_id,
            gateway: gw.id.clone(),
            members: Vec::new(),
        };
        for c in &flow.candidates {
            let keys = PneAuthKeys::derive(
                &c.eukey,
                &PneAuthInput {
                    purpose: AuthPurpose::Establishment,
                    pn_id: pn_id.as_bytes(),
                    pne_id: c.join.pne_id.as_str(),
                    rand_pne: &rand_of(&c.join.rand_pne),
                    rand_server: &flow.rand_server,
                },
            );
            let hash_pne = resp
                .hashes
                .iter()
                .find(|h| h.pne_id == c.join.pne_id)
                .map(|h| hash_of(&h.hash));
            // Step 11: authenticate the PNE by its hash_PNE.
            let authenticated = hash_pne.is_some_and(|h| keys.verify_hash_pne(&h).is_ok());
            if !authenticated {
                let reason = if hash_pne.is_some() {
                    Failure::HashPneMismatch
                } else {
                    Failure::NoHashPne
                };
                self.event(ServerEvent::AuthenticationFailed {
                    entity: c.join.pne_id.clone(),
                    reason,
                });
                verdicts.push(MemberVerdict {
                    pne_id: c.join.pne_id.clone(),
                    authenticated: false,
                    hash_server: None,
                    sealed_key: None,
                    refused: None,
                });
                continue;
            }
            let Some(hash_pne) = hash_pne else { continue };
            verdicts.push(MemberVerdict {
                pne_id: c.join.pne_id.clone(),
                authenticated: true,
                hash_server: None,
                sealed_key: None,
                refused: None,
            });
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
                session_key: keys.session_key().clone(),
            });
            confirmed.push((verdicts.len() - 1, keys, hash_pne));
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
        for (at, keys, hash_pne) in confirmed {
            if let Some(v) = verdicts.get_mut(at) {
                v.hash_server = Some(hash_wire(&keys.hash_server(&hash_pne, &outcome)));
                let binding = cpns_crypto::GroupKeyBinding {
                    pn_id: pn_id.as_bytes(),
                    epoch: 1,
                    pne_id: v.pne_id.as_str(),
                    inventory_digest: &digest,
                };
                v.sealed_key = Some(cpns_crypto::seal_group_key(
                    self.rng.get(),
                    keys.session_key(),
                    &binding,
                    &group_key,
                ));
            }
        }
        verdicts.extend(flow.refused.iter().map(|id| MemberVerdict {
            pne_id: id.clone(),
            authenticated: false,
            hash_server: None,
            sealed_key: None,
            refused: None,
        }));
        // A PN a PNE asked for is registered only if that PNE proved it is who it claimed to be
        // (docs/ARCHITECTURE.md, "Identity on the PAN"): nobody starts a PN in another's name.
        let initiator_failed = flow
            .initiator
            .as_ref()
            .is_some_and(|i| !members.iter().any(|m| &m.pne_id == i));
        if members.is_empty() || initiator_failed {
            // Step 11: the PN is registered only when at least one PNE is authenticated.
            let reason = if members.is_empty() {
                Failure::NoPneAuthenticated
            } else {
                Failure::InitiatorNotAuthenticated
            };
            self.respond_error(flow.req_msg, ErrorCode::Unauthenticated, reason.to_string());
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
            .filter(|(_, f)| f.auth_msg().is_some() && f.deadline <= now)
            .map(|(pn, _)| *pn)
            .collect();
        for pn in expired {
            self.fail_establishment(pn, ErrorCode::Timeout, Failure::TimedOut);
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
fn wrap_pair(
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
