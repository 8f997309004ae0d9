//! Server side of PNE registration (003 §1.4.1 step 3, §1.4.2 steps 4-5) and PN update.
//!
//! A PNE that is a member of an established PN registers to obtain its CPNS ID and a secure
//! session with the server. The server authenticates it with the same rand/hash exchange as PN
//! establishment (purpose `Registration`, fresh `rand_server`, so an old response cannot be
//! replayed), allocates the CPNS ID and keeps SK_PNE, and answers with `hash_server` (covering
//! the CPNS ID) and a grant sealed end to end under the server → PNE key derived from SK_PNE,
//! which the relaying PN GW can neither read nor alter (docs/design.md §4, docs/security.md §4.6).
//!
//! The PN of the transcript is the PN the PNE registers in: one it is a member of, or for a
//! non-member (003 §1.4.2) the PN it joins, as the PN GW named it in the forwarded request.

use std::time::Instant;

use cpns_crypto::{
    AuthHash, AuthPurpose, EuKey, GrantBinding, PneAuthInput, PneAuthKeys, Rand, ServerOutcome,
    seal_registration_grant,
};
use cpns_wire::{
    Address, AuthPurposeCode, AuthenticationRequest, AuthenticationResponse, EntityId, Envelope,
    ErrorCode, PnId, PnUpdateRequest, PnUpdateResponse, PneRegistrationRequest,
    PneRegistrationResponse, RandBytes, RegistrationGrant, RequestId,
};

use super::connect::Gw;
use super::{
    Load, NewGroupEpoch, Parked, Persisted, PnLoaded, ServerEffect, ServerEvent, ServerSession,
};
use crate::StoreFailure;
use crate::util::{hash_of, hash_wire, rand_of, rand_wire};
use crate::{Failure, Flow};

/// A PNE added by a PN Update Request, not in the inventory until it authenticates.
#[derive(Debug)]
pub(super) struct PendingMember {
    capabilities: Option<cpns_wire::DeviceCapabilities>,
    pub(super) deadline: Instant,
}

/// A registration waiting for the PNE's record and the PN.
#[derive(Debug)]
pub(super) struct RegLoad {
    req_msg: u64,
    req: PneRegistrationRequest,
}

impl RegLoad {
    /// The request and the PNE it answers.
    pub(super) fn asker(&self) -> (u64, Address) {
        (self.req_msg, Address::Entity(self.req.pne_id.clone()))
    }
}

/// One PNE registration in progress.
#[derive(Debug)]
pub(super) struct Registration {
    req_msg: u64,
    pn_id: PnId,
    eukey: EuKey,
    rand_pne: Rand,
    rand_server: Rand,
    /// The digest of the request as it reached the server, which the PNE's proof covers.
    said: [u8; 32],
    /// When the PNE joins the PN by this registration (a pending member): the PN's next group
    /// key epoch and what to seal it to.
    joining: Option<Box<Joining>>,
    phase: RegistrationPhase,
    pub(super) deadline: Instant,
}

/// A join's next group key epoch (docs/pn-lifecycle.md, "Group key epochs").
#[derive(Debug)]
pub(super) struct Joining {
    epoch: u64,
    key: cpns_crypto::GroupKey,
    /// The PN's inventory before the join.
    inventory: cpns_wire::PnInventory,
    /// The other members' SK_PNEs.
    member_keys: Vec<(EntityId, cpns_crypto::SessionKey)>,
}

/// Where a registration stands, with what only that phase has.
#[derive(Debug)]
enum RegistrationPhase {
    /// The Authentication Request awaits the PNE's response.
    AwaitAuth {
        /// Its message id.
        auth_msg: u64,
    },
    /// Authenticated: SK_PNE and the verified hash_PNE, while the CPNS ID is allocated
    /// (hash_server follows, over the CPNS ID it covers).
    Persisting(Box<(PneAuthKeys, AuthHash)>),
}

impl Registration {
    /// The Authentication Request awaiting its response, if the flow is at that step.
    pub(super) fn auth_msg(&self) -> Option<u64> {
        match self.phase {
            RegistrationPhase::AwaitAuth { auth_msg } => Some(auth_msg),
            RegistrationPhase::Persisting(_) => None,
        }
    }
}

impl ServerSession {
    /// 003 §1.4.1 step 3: a PNE Registration Request relayed by the PN GW.
    pub(super) fn on_pne_registration(
        &mut self,
        _now: Instant,
        _gw: &Gw,
        env: &Envelope,
        req: PneRegistrationRequest,
    ) {
        if env.from != Address::Entity(req.pne_id.clone()) {
            return self.reject(env, ErrorCode::Forbidden, "a PNE registers only itself");
        }
        if self.replay(&env.from, req.request_id, env) {
            return;
        }
        if self
            .registrations
            .contains_key(&(req.pne_id.clone(), req.request_id))
        {
            return; // retried while in progress: the answer will come
        }
        let Some(pn_id) = req.pn_id else {
            return self.reject(
                env,
                ErrorCode::BadRequest,
                "PNE registration needs the PN the PNE belongs to",
            );
        };
        if !self.admit(env) {
            return;
        }
        let load = Load::Pn {
            pn: pn_id,
            replay: Some((env.from.clone(), req.request_id)),
            entities: vec![req.pne_id.clone()],
            // A joining PNE moves the PN to its next group key epoch, sealed to every member.
            member_keys: true,
        };
        self.load(
            Parked::PneRegistrationLoad(RegLoad {
                req_msg: env.msg_id,
                req,
            }),
            load,
        );
    }

    /// Checks membership, then challenges the PNE through the PN GW.
    pub(super) fn pne_registration_loaded(
        &mut self,
        now: Instant,
        p: RegLoad,
        mut loaded: PnLoaded,
    ) {
        let Some(gw) = self.conn.gateway().cloned() else {
            return;
        };
        let RegLoad { req_msg, req } = p;
        if self.replay_loaded(&mut loaded, req_msg) {
            return;
        }
        let to = Address::Entity(req.pne_id.clone());
        let refuse = |s: &mut Self, code, reason: &str| {
            s.respond(req_msg, to.clone(), cpns_wire::ErrorBody::new(code, reason))
        };
        let Some(pn) = loaded.pn.take() else {
            refuse(self, ErrorCode::NotFound, "no such PN");
            return;
        };
        if pn.gateway != gw.id {
            refuse(
                self,
                ErrorCode::Forbidden,
                "the PN is served by another PN GW",
            );
            return;
        }
        let member = pn.inventory.members.iter().any(|m| m.pne_id == req.pne_id);
        let pending = self
            .pending_members
            .contains_key(&(pn.inventory.pn_id, req.pne_id.clone()));
        if !member && !pending {
            refuse(
                self,
                ErrorCode::Forbidden,
                "not a member of the PN; the PN GW adds it first (003 §1.4.2 step 4)",
            );
            return;
        }
        let Some(entity) = loaded.take_entity(&req.pne_id).filter(|e| e.role.is_pne()) else {
            refuse(self, ErrorCode::Unauthenticated, "not an enrolled PNE");
            return;
        };
        if let Some(why) = pn.full().filter(|_| !member) {
            refuse(self, ErrorCode::Conflict, &why);
            return;
        }
        let rand_server = self.rng.rand();
        let pn_id = pn.inventory.pn_id;
        let joining = (!member).then(|| {
            Box::new(Joining {
                epoch: pn.epoch + 1,
                key: cpns_crypto::GroupKey::random(self.rng.get()),
                inventory: pn.inventory.clone(),
                member_keys: std::mem::take(&mut loaded.member_keys),
            })
        });
        // Every member on a `cpns` PAN seals its link (docs/security.md §4.2): a PNE that holds
        // no LocalEUKey for the PN gets one, wrapped for it and for the PN GW as in step 5.
        let local_keys = if req.local_key {
            vec![super::establish::wrap_pair(
                &mut self.rng,
                &entity.eukey,
                &gw.eukey,
                &pn_id,
                &req.pne_id,
                &gw.id,
                &rand_server,
            )]
        } else {
            Vec::new()
        };
        let auth = AuthenticationRequest {
            pn_id,
            rand_server: rand_wire(&rand_server),
            local_keys,
            purpose: AuthPurposeCode::Registration,
            pnes: vec![req.pne_id.clone()],
            request_id: Some(req.request_id),
        };
        let auth_msg = self.send_request(to, auth);
        let flow = Registration {
            req_msg,
            pn_id,
            eukey: entity.eukey,
            rand_pne: rand_of(&req.rand_pne),
            rand_server,
            said: crate::util::registration_statement(&req),
            joining,
            phase: RegistrationPhase::AwaitAuth { auth_msg },
            deadline: now + self.cfg.timeouts.flow,
        };
        self.registrations
            .insert((req.pne_id, req.request_id), flow);
    }

    /// The PNE's Authentication Response: verify hash_PNE, then allocate the CPNS ID.
    pub(super) fn on_registration_auth(&mut self, env: &Envelope, resp: AuthenticationResponse) {
        let key = self
            .registrations
            .iter()
            .find(|(_, r)| r.auth_msg().is_some_and(|m| env.in_reply_to == Some(m)))
            .map(|(k, _)| k.clone());
        let Some(key) = key.filter(|(pne, _)| env.from == Address::Entity(pne.clone())) else {
            return self.reject(
                env,
                ErrorCode::WrongState,
                "no Authentication Request awaits this response",
            );
        };
        let Some(flow) = self.registrations.get_mut(&key) else {
            return;
        };
        let keys = PneAuthKeys::derive(
            &flow.eukey,
            &PneAuthInput {
                purpose: AuthPurpose::Registration,
                pn_id: flow.pn_id.as_bytes(),
                pne_id: key.0.as_str(),
                rand_pne: &flow.rand_pne,
                rand_server: &flow.rand_server,
                statement: &flow.said,
            },
        );
        let hash_pne = resp
            .hashes
            .iter()
            .find(|h| h.pne_id == key.0)
            .map(|h| hash_of(&h.hash));
        let Some(hash_pne) =
            hash_pne.filter(|h| resp.pn_id == flow.pn_id && keys.verify_hash_pne(h).is_ok())
        else {
            self.event(ServerEvent::AuthenticationFailed {
                entity: key.0.clone(),
                reason: Failure::HashPneMismatch,
            });
            return self.fail_registration(
                key,
                ErrorCode::Unauthenticated,
                Failure::HashPneMismatch,
            );
        };
        // A joining PNE enters the inventory only now, authenticated, in the same transaction
        // as its CPNS ID and SK_PNE.
        let capabilities = if flow.joining.is_some() {
            self.pending_members
                .get(&(flow.pn_id, key.0.clone()))
                .and_then(|p| p.capabilities.clone())
                .map(Box::new)
        } else {
            None
        };
        let group = flow.joining.as_ref().map(|j| NewGroupEpoch {
            epoch: j.epoch,
            key: j.key.clone(),
        });
        let effect = ServerEffect::RegisterPne {
            pn_id: flow.pn_id,
            pne_id: key.0.clone(),
            capabilities,
            session_key: keys.session_key().clone(),
            group,
        };
        flow.phase = RegistrationPhase::Persisting(Box::new((keys, hash_pne)));
        self.persist(Parked::PneRegistrationPersist(key), effect);
    }

    /// 003 §1.4.1 step 3 (end): the CPNS ID is allocated; answer with hash_server over it and the
    /// grant sealed under K_dir(server → PNE) of SK_PNE.
    pub(super) fn pne_registration_persisted(
        &mut self,
        _now: Instant,
        key: (EntityId, RequestId),
        result: Result<Persisted, StoreFailure>,
    ) {
        let Some(flow) = self.registrations.remove(&key) else {
            return;
        };
        let RegistrationPhase::Persisting(authenticated) = flow.phase else {
            return;
        };
        let (keys, hash_pne) = *authenticated;
        let (pne_id, request_id) = key;
        let pending = self.pending_members.remove(&(flow.pn_id, pne_id.clone()));
        let to = Address::Entity(pne_id.clone());
        let cpns_id = match result {
            Ok(Persisted::CpnsId(id)) => id,
            Ok(_) => {
                return self.respond_error_to(flow.req_msg, to, ErrorCode::Internal, "no CPNS ID");
            }
            Err(e) => {
                return self.respond_error_to(
                    flow.req_msg,
                    to,
                    ErrorCode::Internal,
                    &format!("store: {e}"),
                );
            }
        };
        let session_id = RandBytes(self.rng.array());
        // A join: the PN as it now is, its new epoch's key for the joiner (under the grant's
        // seal) and for every other member with an SK_PNE (for the PN GW to hand on).
        let joined = flow.joining.is_some();
        let (inventory, epoch, group_key, others) = match flow.joining.map(|j| *j) {
            Some(j) => {
                let mut inventory = j.inventory;
                if !inventory.members.iter().any(|m| m.pne_id == pne_id) {
                    inventory.members.push(cpns_wire::InventoryMember {
                        pne_id: pne_id.clone(),
                        capabilities: pending.and_then(|p| p.capabilities),
                        contents: Vec::new(),
                    });
                }
                let others = self.seal_to_members(
                    &inventory,
                    j.epoch,
                    &j.key,
                    &j.member_keys,
                    Some(&pne_id),
                );
                let key = j.key.expose_secret().to_vec();
                (Some(inventory), Some(j.epoch), Some(key), others)
            }
            None => (None, None, None, Vec::new()),
        };
        let for_gw = inventory.clone();
        let grant = RegistrationGrant {
            cpns_id: cpns_id.clone(),
            session_id,
            lifetime_s: self.cfg.session_lifetime_s,
            inventory,
            epoch,
            group_key,
        };
        let plain = minicbor::to_vec(&grant).unwrap_or_default();
        let binding = GrantBinding {
            pn_id: flow.pn_id.as_bytes(),
            pne_id: pne_id.as_str(),
            request_id: request_id.0,
            cpns_id: cpns_id.as_str(),
        };
        let sealed_grant =
            match seal_registration_grant(self.rng.get(), keys.session_key(), &binding, &plain) {
                Ok(s) => s,
                Err(e) => {
                    return self.respond_error_to(
                        flow.req_msg,
                        to,
                        ErrorCode::Internal,
                        &format!("seal: {e}"),
                    );
                }
            };
        let outcome = ServerOutcome::Registered {
            cpns_id: cpns_id.as_str(),
        };
        let hash_server = keys.hash_server(&hash_pne, &outcome);
        let body = PneRegistrationResponse {
            request_id,
            pne_id: pne_id.clone(),
            pn_id: flow.pn_id,
            cpns_id: cpns_id.clone(),
            hash_server: hash_wire(&hash_server),
            sealed_grant,
            epoch,
            keys: others,
            inventory: for_gw,
        };
        let env = self.respond(flow.req_msg, to.clone(), body);
        self.remember(to, request_id, env);
        if joined {
            let change = super::InventoryChange::Joined;
            self.inventory_changed(Some(flow.pn_id), Some(pne_id.clone()), change);
        }
        self.event(ServerEvent::PneRegistered { pne_id, cpns_id });
    }

    pub(super) fn registration_timeouts(&mut self, now: Instant) {
        // A PNE that did not authenticate in time never enters the inventory.
        self.pending_members.retain(|_, p| p.deadline > now);
        let expired: Vec<_> = self
            .registrations
            .iter()
            .filter(|(_, r)| r.auth_msg().is_some() && r.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.fail_registration(key, ErrorCode::Timeout, Failure::TimedOut);
        }
    }

    pub(super) fn fail_registration(
        &mut self,
        key: (EntityId, RequestId),
        code: ErrorCode,
        reason: Failure,
    ) {
        let Some(flow) = self.registrations.remove(&key) else {
            return;
        };
        self.respond_error_to(
            flow.req_msg,
            Address::Entity(key.0),
            code,
            &reason.to_string(),
        );
        self.event(ServerEvent::FlowFailed {
            flow: Flow::PneRegistration,
            reason,
        });
    }

    fn respond_error_to(&mut self, req_msg: u64, to: Address, code: ErrorCode, reason: &str) {
        self.respond(req_msg, to, cpns_wire::ErrorBody::new(code, reason));
    }

    /// 003 §1.4.2 step 4 / 000 §6.6.2: the PN GW adds or removes members of its PN.
    pub(super) fn on_pn_update(&mut self, gw: &Gw, env: &Envelope, req: PnUpdateRequest) {
        if self.replay(&env.from, req.request_id, env) {
            return;
        }
        if env.from != Address::Entity(gw.id.clone()) {
            return self.reject(env, ErrorCode::Forbidden, "only the PN GW updates its PN");
        }
        let mut ids: Vec<EntityId> = req.add.iter().map(|m| m.pne_id.clone()).collect();
        if ids.len() > super::establish::MAX_PNES_PER_PN {
            return self.reject(env, ErrorCode::BadRequest, "too many PNEs");
        }
        ids.extend(req.asked_by.clone());
        ids.sort();
        ids.dedup();
        if !self.admit(env) {
            return;
        }
        let load = Load::Pn {
            pn: req.pn_id,
            replay: Some((env.from.clone(), req.request_id)),
            entities: ids,
            // Removing members moves the PN to a new group key epoch, sealed to the others.
            member_keys: !req.remove.is_empty(),
        };
        self.load(
            Parked::UpdateLoad {
                req_msg: env.msg_id,
                req,
            },
            load,
        );
    }

    pub(super) fn pn_update_loaded(
        &mut self,
        now: Instant,
        req_msg: u64,
        req: PnUpdateRequest,
        mut loaded: PnLoaded,
    ) {
        let Some((gw, pn)) = self.own_pn(req_msg, &mut loaded) else {
            return;
        };
        // 004 §5.5.10: a member PNE may ask its PN GW to invite or expel, if it is an entity of
        // the PN's owner (another user's member may not).
        if let Some(asker) = &req.asked_by
            && let Err(reason) =
                super::membership::may_change(&pn, asker, &loaded.entities, "change its members")
        {
            return self.respond_error(req_msg, ErrorCode::Forbidden, reason);
        }
        for m in &req.add {
            let ok = loaded
                .take_entity(&m.pne_id)
                .is_some_and(|e| e.role.is_pne() && e.owner == gw.owner);
            if !ok {
                let reason = format!("{} is not an enrolled PNE of the PN GW's user", m.pne_id);
                return self.respond_error(req_msg, ErrorCode::Forbidden, reason);
            }
        }
        // A PN that expired, or would exceed its most members, takes no one (beyond the
        // documents).
        let adding = req
            .add
            .iter()
            .filter(|a| !pn.inventory.members.iter().any(|m| m.pne_id == a.pne_id))
            .count();
        if adding > 0 {
            let over = pn
                .max_members
                .is_some_and(|max| pn.inventory.members.len() + adding > max as usize);
            let why = if pn.expired || over {
                pn.full().or_else(|| {
                    pn.max_members
                        .map(|max| format!("PN {} takes at most {max} members", req.pn_id))
                })
            } else {
                None
            };
            if let Some(why) = why {
                return self.respond_error(req_msg, ErrorCode::Conflict, why);
            }
        }
        // Added PNEs wait to authenticate (003 §1.4.2 step 5) before they enter the inventory;
        // adding a PNE that already is a member changes nothing.
        let deadline = now + self.cfg.timeouts.flow;
        for a in &req.add {
            if !pn.inventory.members.iter().any(|m| m.pne_id == a.pne_id)
                && !req.remove.contains(&a.pne_id)
            {
                let pending = PendingMember {
                    capabilities: a.capabilities.clone(),
                    deadline,
                };
                self.pending_members
                    .insert((req.pn_id, a.pne_id.clone()), pending);
            }
        }
        if req.remove.is_empty() {
            let gw = self.peer();
            let answer = PnUpdateResponse {
                inventory: pn.inventory,
                epoch: None,
                keys: Vec::new(),
            };
            let env = self.respond(req_msg, gw.clone(), answer);
            return self.remember(gw, req.request_id, env);
        }
        // §6.6.3.2 steps 2-4: an expulsion; only members are removed.
        let removed: Vec<EntityId> = req
            .remove
            .iter()
            .filter(|p| pn.inventory.members.iter().any(|m| &m.pne_id == *p))
            .cloned()
            .collect();
        if removed.is_empty() {
            let reason = "none of the PNEs to remove is a member of the PN";
            return self.respond_error(req_msg, ErrorCode::NotFound, reason);
        }
        let keys = std::mem::take(&mut loaded.member_keys);
        self.remove_members(
            (req_msg, req.request_id, super::membership::Asked::Update),
            req.pn_id,
            pn,
            removed,
            keys,
        );
    }
}
