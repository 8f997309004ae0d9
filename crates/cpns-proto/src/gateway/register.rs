//! PNE registration through the PN GW (003 §1.4.1, §1.4.2).
//!
//! A member PNE's PNE Registration Request is forwarded as is (§1.4.1 step 3); membership is
//! looked up in the local inventory, never inferred from the request. A PNE that is not a member
//! is first proposed to the server with a PN Update Request, then its request is forwarded on
//! its behalf (§1.4.2 steps 4-5); it enters the server's inventory and the local one only once
//! the server authenticated it, so a failed or timed-out registration changes neither. The
//! relay ([`super::relay`]) carries the request and its answer; the sealed registration grant
//! passes through unread.

use std::time::Instant;

use cpns_crypto::{KeyBinding, LocalEuKey, Recipient, stored_wrapped_key, unwrap_local_eukey};
use cpns_wire::{
    AuthenticationRequest, EntityId, Envelope, ErrorBody, ErrorCode, InventoryMember, NewMember,
    PnId, PnUpdateRequest, PnUpdateResponse, PneRegistrationRequest, RequestId, WrappedLocalKeys,
};

use super::{Gateway, GatewayEvent, LinkId};

/// A LocalEUKey the server issued in a registration (docs/security.md §4.2), held with the link
/// that runs it: the PNE proves itself with it (PN GW authentication, which seals the link)
/// before it answers the server's challenge, and the PN GW keeps it with the member once the
/// server authenticated the PNE.
pub(crate) struct RegKey {
    pn_id: PnId,
    pne: EntityId,
    key: LocalEuKey,
    /// Its stored form, rand_server ‖ wrapped.
    stored: Vec<u8>,
}

impl RegKey {
    /// The key, if it was issued for (`pn_id`, `pne`).
    pub(super) fn for_member(&self, pn_id: &PnId, pne: &EntityId) -> Option<&LocalEuKey> {
        (self.pn_id == *pn_id && self.pne == *pne).then_some(&self.key)
    }
}

impl core::fmt::Debug for RegKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegKey")
            .field("pn_id", &self.pn_id)
            .field("pne", &self.pne)
            .finish_non_exhaustive()
    }
}

/// A joining PNE's registration answer, waiting for the local inventory to store the member.
#[derive(Debug)]
pub(crate) struct JoinStored {
    pub(super) pn_id: PnId,
    pub(super) pne: EntityId,
    pub(super) link: LinkId,
    pub(super) answer: Envelope,
    /// The PN's new group key epoch and the other members' copies (000 §6.6.2.2).
    pub(super) epoch: Option<u64>,
    pub(super) keys: Vec<cpns_wire::SealedGroupKey>,
    /// Whether the registration made the PNE a member; else it was a member already and only
    /// its new LocalEUKey was stored.
    pub(super) joined: bool,
}

impl JoinStored {
    /// The joining PNE.
    pub(crate) fn pne(&self) -> &EntityId {
        &self.pne
    }
}

/// A non-member's registration waiting for its PN update (003 §1.4.2 step 4).
#[derive(Debug)]
pub(crate) struct PendingRegistration {
    pub(super) link: LinkId,
    pub(super) pan_msg: u64,
    pub(super) req: PneRegistrationRequest,
    pub(super) pn_id: PnId,
    pub(super) deadline: Instant,
}

impl Gateway {
    /// 003 §1.4.1 steps 1-3 / §1.4.2 steps 2-4: a PNE asks to be registered.
    pub(super) fn on_pne_registration(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: PneRegistrationRequest,
    ) {
        if !self.admit_pne_request(link, env, &m.pne_id) {
            return;
        }
        // Step 2: is the PNE a member of an established PN? Looked up, not inferred: a PNE
        // naming no PN registers in the PN with the lowest PN ID of those it belongs to.
        let is_member = |gw: &Self, pn: &PnId| {
            gw.pns.get(pn).is_some_and(|p| {
                p.state
                    .inventory
                    .members
                    .iter()
                    .any(|x| x.pne_id == m.pne_id)
            })
        };
        let member_of = match m.pn_id {
            Some(pn) => is_member(self, &pn).then_some(pn),
            None => self.pns.keys().find(|pn| is_member(self, pn)).copied(),
        };
        if let Some(pn_id) = member_of {
            // §1.4.1 step 3: forward to the server.
            let req = PneRegistrationRequest {
                pn_id: Some(pn_id),
                ..m
            };
            return self.forward_up(now, link, env.msg_id, &req.pne_id.clone(), req, None);
        }
        // §1.4.2 step 4: add it to the PN first.
        // §1.4.2: a non-member joins the PN it names, or, naming none, the PN with the lowest
        // PN ID this PN GW serves (docs/security.md §4.1); a PN it does not serve is no PN.
        let pn_id = match m.pn_id {
            Some(pn) if self.pns.contains_key(&pn) => pn,
            Some(pn) => {
                let reason = format!("no PN {pn} at this PN GW");
                return self.reject_pan(link, env, ErrorCode::NotFound, &reason);
            }
            None => match self.pns.keys().min() {
                Some(pn) => *pn,
                None => {
                    return self.reject_pan(
                        link,
                        env,
                        ErrorCode::NotFound,
                        "the PN GW serves no PN yet; establish one first",
                    );
                }
            },
        };
        // An invitee joining at a member's request (000 §6.6.2.1.2): the server decides
        // whether that member may invite.
        let asked_by = self.invited_by(&pn_id, &m.pne_id);
        let update = PnUpdateRequest {
            request_id: RequestId(self.rng.u64()),
            pn_id,
            add: vec![NewMember {
                pne_id: m.pne_id.clone(),
                capabilities: m.capabilities.clone(),
            }],
            remove: Vec::new(),
            asked_by,
        };
        let Some(msg) = self.send_wan_request(update) else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::BadRequest,
                "the request is larger than the CPNS Server accepts",
            );
        };
        let deadline = now + self.cfg.timeouts.flow;
        let pending = PendingRegistration {
            link,
            pan_msg: env.msg_id,
            req: m,
            pn_id,
            deadline,
        };
        self.relays.updates.insert(msg, pending);
    }

    /// behalf. The local inventory changes only once the server authenticated it.
    pub(super) fn on_update_response(
        &mut self,
        now: Instant,
        env: &Envelope,
        _m: PnUpdateResponse,
    ) {
        let Some(p) = env.in_reply_to.and_then(|r| self.relays.updates.remove(&r)) else {
            return;
        };
        let member = InventoryMember {
            pne_id: p.req.pne_id.clone(),
            capabilities: p.req.capabilities.clone(),
            contents: Vec::new(),
        };
        let req = PneRegistrationRequest {
            pn_id: Some(p.pn_id),
            ..p.req
        };
        let pne = req.pne_id.clone();
        self.forward_up(now, p.link, p.pan_msg, &pne, req, Some((p.pn_id, member)));
    }

    /// §1.4.2 step 5 (end): the joining PNE is stored locally; now it gets its answer.
    pub(super) fn member_add_persisted(
        &mut self,
        _now: Instant,
        j: JoinStored,
        result: Result<(), crate::StoreFailure>,
    ) {
        match result {
            Ok(()) if !j.joined => self.transmit_pan(j.link, &j.answer),
            Ok(()) => {
                self.report_stored(j.pn_id);
                self.transmit_pan(j.link, &j.answer);
                // 000 §6.6.2.2: the others learn of the new member and get the new epoch's key.
                let notified = match (j.epoch, self.pns.get(&j.pn_id)) {
                    (Some(epoch), Some(pn)) => {
                        let mut inventory = pn.state.inventory.clone();
                        inventory.members.retain(|m| m.pne_id != j.pne);
                        let others: Vec<EntityId> =
                            inventory.members.iter().map(|m| m.pne_id.clone()).collect();
                        let full = pn.state.inventory.clone();
                        self.notify_members_of(&full, &others, epoch, &j.keys)
                    }
                    _ => Vec::new(),
                };
                self.invitee_joined(j.pn_id, &j.pne);
                // A member again: a key kept from an earlier membership is no longer needed.
                self.drop_departed(j.pn_id, &j.pne);
                self.event(GatewayEvent::MemberJoined {
                    pn_id: j.pn_id,
                    pne: j.pne,
                    epoch: j.epoch,
                    notified,
                });
            }
            Err(e) => {
                let err = ErrorBody::new(
                    ErrorCode::Internal,
                    format!("the local PN inventory could not be stored: {e}"),
                );
                let reply_to = j.answer.in_reply_to.unwrap_or(0);
                self.send_pan_response(j.link, reply_to, err);
            }
        }
    }

    /// 003 §1.4.1 step 3, relayed down: the server's challenge to a registering PNE. A
    /// LocalEUKey it carries (docs/security.md §4.2) is unwrapped and held with the link for
    /// the PNE's proof; the PNE gets only its own copy. False, with the server answered, when
    /// the PN GW's copy does not unwrap.
    pub(super) fn take_registration_key(
        &mut self,
        link: LinkId,
        pne: &EntityId,
        m: &mut AuthenticationRequest,
    ) -> Result<(), ErrorBody> {
        let Some(w) = m.local_keys.iter().find(|w| &w.pne_id == pne) else {
            m.local_keys.clear();
            return Ok(());
        };
        let rand_server = crate::util::rand_of(&m.rand_server);
        let binding = KeyBinding {
            pn_id: m.pn_id.as_bytes(),
            pne_id: pne.as_str(),
            gw_id: self.cfg.id.as_str(),
            rand_server: &rand_server,
        };
        let key = unwrap_local_eukey(&self.cfg.eukey, Recipient::Gateway, &binding, &w.for_gw)
            .map_err(|e| {
                ErrorBody::new(
                    ErrorCode::Unauthenticated,
                    format!("the PN GW's LocalEUKey copy for {pne} did not unwrap: {e}"),
                )
            })?;
        let reg_key = RegKey {
            pn_id: m.pn_id,
            pne: pne.clone(),
            key,
            stored: stored_wrapped_key(&rand_server, &w.for_gw),
        };
        let mine = WrappedLocalKeys {
            pne_id: pne.clone(),
            for_pne: w.for_pne.clone(),
            for_gw: Vec::new(),
        };
        m.local_keys = vec![mine];
        if let Some(l) = self.links.get_mut(&link) {
            l.reg_key = Some(reg_key);
        }
        Ok(())
    }

    /// The registration on `link` succeeded: the member's new LocalEUKey, if it was issued
    /// one, joins the PN's keys (the stored copy replaces an older one).
    pub(super) fn keep_registration_key(&mut self, link: LinkId, pn_id: &PnId) -> bool {
        let Some(k) = self
            .links
            .get_mut(&link)
            .and_then(|l| l.reg_key.take_if(|k| k.pn_id == *pn_id))
        else {
            return false;
        };
        let Some(pn) = self.pns.get_mut(pn_id) else {
            return false;
        };
        pn.state.wrapped_keys.retain(|(p, _)| *p != k.pne);
        pn.state.wrapped_keys.push((k.pne.clone(), k.stored));
        pn.keys.insert(k.pne, k.key);
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use cpns_crypto::LocalEuKey;
    use cpns_wire::{EntityId, PnId};

    use super::RegKey;

    fn reg_key() -> RegKey {
        RegKey {
            pn_id: PnId::from_bytes([1; 16]),
            pne: EntityId::new("watch").unwrap(),
            key: LocalEuKey::from_bytes([0x5e; 32]),
            stored: vec![0x5e; 76],
        }
    }

    /// A key a registration issued proves only the PNE it was issued to, in its PN.
    #[test]
    fn a_registration_key_is_for_its_pn_and_pne_only() {
        let k = reg_key();
        let (pn, other_pn) = (PnId::from_bytes([1; 16]), PnId::from_bytes([2; 16]));
        let (pne, other) = (
            EntityId::new("watch").unwrap(),
            EntityId::new("phone").unwrap(),
        );
        assert!(k.for_member(&pn, &pne).is_some());
        assert!(k.for_member(&other_pn, &pne).is_none());
        assert!(k.for_member(&pn, &other).is_none());
        assert!(k.for_member(&other_pn, &other).is_none());
    }

    /// Its `Debug` names the PN and the PNE, never the key.
    #[test]
    fn a_registration_key_debug_shows_no_key() {
        let shown = format!("{:?}", reg_key());
        assert!(shown.starts_with("RegKey"), "{shown}");
        assert!(shown.contains("watch"), "{shown}");
        assert!(!shown.contains("94"), "{shown}"); // 0x5e
        assert!(!shown.to_lowercase().contains("5e5e"), "{shown}");
    }
}
