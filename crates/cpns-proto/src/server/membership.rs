//! Leave and expulsion at the server (000 §6.6.3.1.1 steps 2-4: PNE Request (Leave) relayed by
//! the PN GW; §6.6.3.2 steps 2-4: PN Update Request removing members): the PN GW asks for its
//! own PN, the server removes the members from its inventory of record and moves the PN to its
//! next group key epoch in the same write, with a fresh group key sealed to each remaining
//! member that has an SK_PNE (docs/pn-lifecycle.md, "Group key epochs"; docs/security.md
//! §4.10). A member that left gets no copy. The answer is kept for retries: a retried leave
//! removes nothing more and hands out the same keys.

use cpns_crypto::{GroupKey, GroupKeyBinding, SessionKey, seal_group_key};
use cpns_wire::{
    Address, EntityId, Envelope, ErrorCode, GroupKeyRequest, GroupKeyResponse, PnId, PnInventory,
    PnUpdateResponse, PneLeaveRequest, PneLeaveResponse, RequestId, SealedGroupKey,
};

use super::connect::Gw;
use super::{
    GroupKeyLoaded, KnownEntity, KnownPn, Load, NewGroupEpoch, Parked, Persisted, PnLoaded,
    ServerEffect, ServerEvent, ServerSession,
};
use crate::StoreFailure;

/// Which request a removal answers.
#[derive(Debug)]
pub(super) enum Asked {
    /// PN Update Request removing members (an expulsion, §6.6.3.2).
    Update,
    /// PNE Request (Leave) (§6.6.3.1.1).
    Leave,
}

/// A removal waiting for its write.
#[derive(Debug)]
pub(super) struct Removal {
    req_msg: u64,
    request_id: RequestId,
    asked: Asked,
    removed: Vec<EntityId>,
    inventory: PnInventory,
    epoch: u64,
    keys: Vec<SealedGroupKey>,
}

impl ServerSession {
    /// 000 §6.6.3.1.1 step 2: the PN GW relays a member's leave.
    pub(super) fn on_pne_leave(&mut self, gw: &Gw, env: &Envelope, req: PneLeaveRequest) {
        let Some(load) = self.pn_change_request(gw, env, req.request_id, req.pn_id, true) else {
            return;
        };
        self.load(
            Parked::LeaveLoad {
                req_msg: env.msg_id,
                req,
            },
            load,
        );
    }

    /// 002 §B.1.1.3 step 22: a member PNE asks, through its PN GW, for its copy of its PN's
    /// current group key.
    pub(super) fn on_group_key_request(&mut self, env: &Envelope, req: GroupKeyRequest) {
        let Address::Entity(pne) = env.from.clone() else {
            return self.reject(env, ErrorCode::BadRequest, "a PN Key Request names its PNE");
        };
        if !self.admit(env) {
            return;
        }
        let load = Load::GroupKey {
            pn: req.pn_id,
            pne: pne.clone(),
        };
        let req_msg = env.msg_id;
        self.load(Parked::GroupKeyLoad { req_msg, pne, req }, load);
    }

    /// Step 23: the PN is this PN GW's, the PNE a member with an SK_PNE, the PN has a group
    /// key: seal it again for the PNE, naming the current member list.
    pub(super) fn group_key_loaded(
        &mut self,
        req_msg: u64,
        pne: &EntityId,
        req: GroupKeyRequest,
        mut loaded: GroupKeyLoaded,
    ) {
        let to = Address::Entity(pne.clone());
        let refuse = |s: &mut Self, code, reason: &str| {
            s.respond(req_msg, to.clone(), cpns_wire::ErrorBody::new(code, reason));
        };
        let gw = self.conn.gateway().map(|g| g.id.clone());
        let member = loaded
            .pn
            .as_ref()
            .is_some_and(|p| p.inventory.members.iter().any(|m| &m.pne_id == pne));
        // Its membership ended while it was away: tell it so, sealed under the SK_PNE it held,
        // so it forgets the PN (docs/pn-lifecycle.md, "Membership that ended while away").
        if !member && let Some((sk, why)) = loaded.departed.take() {
            let code = u8::try_from(why.code()).unwrap_or(u8::MAX);
            let binding = cpns_crypto::EndedBinding {
                pn_id: req.pn_id.as_bytes(),
                pne_id: pne.as_str(),
                request_id: req.request_id.0,
                why: code,
            };
            let sealed = cpns_crypto::seal_membership_ended(self.rng.get(), &sk, &binding);
            let ended = cpns_wire::MembershipEnded {
                pn_id: req.pn_id,
                reason: why,
                sealed,
            };
            self.respond(req_msg, to, ended);
            return;
        }
        let Some(pn) = loaded.pn.take().filter(|p| Some(&p.gateway) == gw.as_ref()) else {
            return refuse(self, ErrorCode::NotFound, "no such PN at this PN GW");
        };
        if !pn.inventory.members.iter().any(|m| &m.pne_id == pne) {
            return refuse(
                self,
                ErrorCode::Forbidden,
                "only a member gets the PN's group key",
            );
        }
        let (Some(sk), Some((epoch, key))) = (loaded.session_key.take(), loaded.group.take())
        else {
            return refuse(
                self,
                ErrorCode::NotFound,
                "no group key for this PNE yet: the server holds no SK_PNE for it or the PN has no key",
            );
        };
        // The copy names this pull (docs/security.md §4.10): no older answer answers it.
        let digest = cpns_crypto::inventory_digest(&crate::util::inventory_cbor(&pn.inventory));
        let binding = GroupKeyBinding {
            pn_id: pn.inventory.pn_id.as_bytes(),
            epoch,
            pne_id: pne.as_str(),
            inventory_digest: &digest,
            pull: Some(req.request_id.0),
        };
        let copy = SealedGroupKey {
            pne_id: pne.clone(),
            sealed: seal_group_key(self.rng.get(), &sk, &binding, &key),
        };
        let answer = GroupKeyResponse {
            request_id: req.request_id,
            inventory: pn.inventory,
            epoch,
            sealed_key: copy.sealed,
        };
        self.respond(req_msg, to, answer);
    }

    /// The checks every request of the PN GW that changes one of its PNs passes before its PN
    /// is loaded (leave, release): a retry gets the kept answer; only the PN GW asks, in its
    /// own name; not while the PN's establishment runs (it would register the PN again once it
    /// ends); within the session's budget. The load to ask for, or `None` when answered.
    pub(super) fn pn_change_request(
        &mut self,
        gw: &Gw,
        env: &Envelope,
        request_id: cpns_wire::RequestId,
        pn_id: PnId,
        member_keys: bool,
    ) -> Option<Load> {
        if self.replay(&env.from, request_id, env) {
            return None;
        }
        if env.from != Address::Entity(gw.id.clone()) {
            self.reject(env, ErrorCode::Forbidden, "only the PN GW changes its PN");
            return None;
        }
        if self.establishments.contains_key(&pn_id) {
            let reason = "an establishment of this PN is in progress";
            self.reject(env, ErrorCode::Conflict, reason);
            return None;
        }
        if !self.admit(env) {
            return None;
        }
        Some(Load::Pn {
            pn: pn_id,
            replay: Some((env.from.clone(), request_id)),
            entities: Vec::new(),
            member_keys,
        })
    }

    /// The PN is loaded: its own PN GW asks, for a member.
    pub(super) fn pne_leave_loaded(
        &mut self,
        req_msg: u64,
        req: PneLeaveRequest,
        mut loaded: PnLoaded,
    ) {
        let Some((_, pn)) = self.own_pn(req_msg, &mut loaded) else {
            return;
        };
        if !pn.inventory.members.iter().any(|m| m.pne_id == req.pne) {
            let reason = format!("{} is not a member of the PN", req.pne);
            return self.respond_error(req_msg, ErrorCode::NotFound, reason);
        }
        let (request_id, pn_id) = (req.request_id, req.pn_id);
        self.remove_members(
            (req_msg, request_id, Asked::Leave),
            pn_id,
            pn,
            vec![req.pne],
            std::mem::take(&mut loaded.member_keys),
        );
    }

    /// Removes `removed` from `pn` and moves it to its next group key epoch, sealing the new key
    /// to every remaining member whose SK_PNE is in `member_keys`.
    pub(super) fn remove_members(
        &mut self,
        (req_msg, request_id, asked): (u64, RequestId, Asked),
        pn_id: PnId,
        pn: KnownPn,
        removed: Vec<EntityId>,
        member_keys: Vec<(EntityId, SessionKey)>,
    ) {
        let epoch = pn.epoch + 1;
        let key = GroupKey::random(self.rng.get());
        let mut inventory = pn.inventory;
        inventory.members.retain(|m| !removed.contains(&m.pne_id));
        let keys = self.seal_to_members(&inventory, epoch, &key, &member_keys, None);
        // A PN is a PN GW with at least one authenticated PNE (000 §6.6.1.1 step 12): the change
        // that takes its last member out releases it, in the same transaction
        // (docs/pn-lifecycle.md, "A PN without members"). Its PN GW does the same on the answer.
        let effect = match (inventory.members.is_empty(), self.conn.gateway()) {
            (true, Some(gw)) => ServerEffect::ReleasePn {
                gateway: gw.id.clone(),
                pn_id,
            },
            _ => ServerEffect::UpdateMembers {
                pn_id,
                add: Vec::new(),
                remove: removed.clone(),
                group: Some(NewGroupEpoch { epoch, key }),
            },
        };
        let removal = Removal {
            req_msg,
            request_id,
            asked,
            removed,
            inventory,
            epoch,
            keys,
        };
        self.persist(Parked::RemovalPersist(Box::new(removal)), effect);
    }

    /// `key` of `epoch` sealed to each member of `inventory` whose SK_PNE is in `member_keys`,
    /// but `except` (a joiner, whose copy travels in its sealed grant).
    pub(super) fn seal_to_members(
        &mut self,
        inventory: &PnInventory,
        epoch: u64,
        key: &GroupKey,
        member_keys: &[(EntityId, SessionKey)],
        except: Option<&EntityId>,
    ) -> Vec<SealedGroupKey> {
        let digest = cpns_crypto::inventory_digest(&crate::util::inventory_cbor(inventory));
        inventory
            .members
            .iter()
            .filter(|m| Some(&m.pne_id) != except)
            .filter_map(|m| {
                let (_, sk) = member_keys.iter().find(|(p, _)| *p == m.pne_id)?;
                let binding = GroupKeyBinding {
                    pn_id: inventory.pn_id.as_bytes(),
                    epoch,
                    pne_id: m.pne_id.as_str(),
                    inventory_digest: &digest,
                    pull: None,
                };
                Some(SealedGroupKey {
                    pne_id: m.pne_id.clone(),
                    sealed: seal_group_key(self.rng.get(), sk, &binding, key),
                })
            })
            .collect()
    }

    /// §6.6.3.1.1 step 4, §6.6.3.2 step 4: the removal is durable; answer and keep the answer.
    pub(super) fn removal_persisted(
        &mut self,
        r: Removal,
        result: Result<Persisted, StoreFailure>,
    ) {
        if let Err(e) = result {
            return self.respond_error(r.req_msg, ErrorCode::Internal, format!("store: {e}"));
        }
        // Who this PN GW serves changed: read it again when next needed.
        self.reporting().forget_served();
        let pn_id = r.inventory.pn_id;
        let emptied = r.inventory.members.is_empty();
        let gw = self.peer();
        let env = match r.asked {
            Asked::Update => {
                let answer = PnUpdateResponse {
                    inventory: r.inventory,
                    epoch: Some(r.epoch),
                    keys: r.keys,
                };
                self.respond(r.req_msg, gw.clone(), answer)
            }
            Asked::Leave => {
                let answer = PneLeaveResponse {
                    pn_id,
                    inventory: Some(r.inventory),
                    epoch: Some(r.epoch),
                    keys: r.keys,
                };
                self.respond(r.req_msg, gw.clone(), answer)
            }
        };
        self.remember(gw, r.request_id, env);
        self.event(ServerEvent::MembersRemoved {
            pn_id,
            removed: r.removed,
            epoch: r.epoch,
        });
        if emptied && let Some(gateway) = self.conn.gateway().map(|g| g.id.clone()) {
            self.event(ServerEvent::PnReleased { pn_id, gateway });
        }
    }
}

/// Who may change a PN through its PN GW (docs/pn-lifecycle.md, "Who may change a PN"): a
/// member PNE of the PN's owner may release it, invite into it and expel from it; a member of
/// another user (a multi-user PN, 001) may only read its inventory and leave. `Err` is the
/// reason `asker` may not `what`.
pub(super) fn may_change(
    pn: &KnownPn,
    asker: &EntityId,
    loaded: &[KnownEntity],
    what: &str,
) -> Result<(), String> {
    let owners = loaded
        .iter()
        .any(|e| &e.id == asker && e.role.is_pne() && e.owner == pn.owner);
    let member = pn.inventory.members.iter().any(|m| &m.pne_id == asker);
    match (member, owners) {
        (false, _) => Err(format!("{asker} is not a member of the PN")),
        (true, false) => Err(format!(
            "{asker} is not an entity of the PN's owner: only the owner's members may {what}; \
             another user's member may read the PN and leave it"
        )),
        (true, true) => Ok(()),
    }
}
