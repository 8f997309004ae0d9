//! Leave (000 §6.6.3.1.1) and expulsion (§6.6.3.2) at the PN GW, with the PN's next group key
//! epoch (docs/pn-lifecycle.md, "One model for every membership change", "Group key epochs"):
//!
//! 1. Asked: a member PNE on its proven link asks to leave (step 1); the owner, or a member of
//!    the PN's owner, expels a member. One change per PN at a time.
//! 2. Agreed: PNE Request (Leave) or PN Update Request to the server (step 2), which removes the
//!    member and answers with the new epoch and each remaining member's sealed copy of its
//!    group key (step 4). `not_found` for the member means it is out there already.
//! 3. Stored: the member and its LocalEUKey leave the local inventory in one write (step 5).
//! 4. Told: the leaver gets PNE Response (Leave) (step 6), an expelled PNE PNE Notification
//!    (Expel) (§6.6.3.2 step 1, sent only now: told before the server agreed, it would forget a
//!    PN that both inventories still list it in, should the server refuse); every remaining
//!    member on a proven link gets PN Update Notification with its own copy, which this PN GW
//!    cannot open.

use std::time::Instant;

use cpns_wire::{
    EntityId, Envelope, ErrorBody, ErrorCode, PnId, PnInventory, PnUpdateNotification,
    PnUpdateRequest, PnUpdateResponse, PneExpelNotification, PneLeaveRequest, PneLeaveResponse,
    RequestId, SealedGroupKey,
};

use super::pn_flows::{Asker, PnFlow, PnFlows};
use super::{Gateway, GatewayEvent, LinkId, Outcome, Parked};
use crate::{CommandError, CommandId, Failure, Flow};

/// A member leaving or being expelled, waiting for the server or the local store.
#[derive(Debug)]
pub(crate) struct Changing {
    pn_id: PnId,
    pne: EntityId,
    /// The PNE asked to leave (else the owner expels it).
    asker: Asker,
    deadline: Instant,
}

impl PnFlow for Changing {
    fn pn(&self) -> PnId {
        self.pn_id
    }
    fn asker(&self) -> &Asker {
        &self.asker
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Membership changes in progress.
pub(super) type Changes = PnFlows<Changing>;

/// A change the server agreed to, waiting for the local store.
#[derive(Debug)]
pub(crate) struct Agreed {
    change: Changing,
    epoch: Option<u64>,
    keys: Vec<SealedGroupKey>,
    /// The PN as it is stored: the server's inventory after the change.
    state: crate::LocalPnState,
}

impl Changing {
    /// The member asked to leave (else it is expelled, by the owner or at another member's
    /// request).
    fn left(&self) -> bool {
        matches!(&self.asker, Asker::Pne { pne, .. } if *pne == self.pne)
    }
}

impl Gateway {
    /// 000 §6.6.3.2: the PN GW's owner expels `pne` from `pn_id`. The PNE is told (step 1) once
    /// the server agreed and the change is stored, so a refusal leaves it a member everywhere.
    /// Completes with [`Outcome::Expelled`]. A request refused at once (unknown PN, not a
    /// member, a change of the PN already running, no session with the server) is the `Err`,
    /// with nothing changed and no one told.
    pub fn expel(
        &mut self,
        now: Instant,
        pn_id: PnId,
        pne: EntityId,
    ) -> Result<CommandId, CommandError> {
        if self.flows_in_progress() >= self.cfg.limits.flows {
            return Err(CommandError::Busy);
        }
        self.check_change(&pn_id, &pne)?;
        // Step 1's PNE Notification (Expel) waits until the change is stored (step 5): a PNE
        // told before the server agreed would forget a PN it is still a member of, should the
        // server refuse or not answer.
        let req = PnUpdateRequest {
            request_id: RequestId(self.rng.u64()),
            pn_id,
            add: Vec::new(),
            remove: vec![pne.clone()],
            asked_by: None,
        };
        let id = self.commands.next();
        self.ask_server(now, req, pn_id, pne, Asker::Owner(Some(id)))?;
        Ok(id)
    }

    /// §6.6.3.1.1 step 1: a member asks to leave, or (naming another member, 004 §5.5.10) asks
    /// this PN GW to expel that one.
    pub(super) fn on_pne_leave_request(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: PneLeaveRequest,
    ) {
        let proven = self.links.get(&link).filter(|l| l.proven);
        let Some(asker) = proven.and_then(|l| l.peer.clone()) else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::Forbidden,
                "a PNE leaves, or asks to expel another, once it proved who it is (PN GW authentication)",
            );
        };
        if asker != m.pne {
            return self.on_member_expel_request(now, link, env, asker, m);
        }
        let refusal = self
            .check_change(&m.pn_id, &m.pne)
            .err()
            .map(|e| e.to_error())
            .or_else(|| {
                self.over_limit(link)
                    .map(|r| ErrorBody::new(ErrorCode::Busy, r))
            });
        if let Some(e) = refusal {
            return self.send_pan_response(link, env.msg_id, e);
        }
        let asker = Asker::Pne {
            link,
            pan_msg: env.msg_id,
            pne: m.pne.clone(),
        };
        let req = PneLeaveRequest {
            request_id: RequestId(self.rng.u64()),
            ..m.clone()
        };
        if let Err(e) = self.ask_server(now, req, m.pn_id, m.pne, asker) {
            self.send_pan_response(link, env.msg_id, e.to_error());
        }
    }

    /// 004 §5.5.10: member `asker` asks to expel `m.pne`. The server decides whether it may
    /// (a member of the PN GW's own user); the expelled PNE is told once it agreed.
    fn on_member_expel_request(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        asker: EntityId,
        m: PneLeaveRequest,
    ) {
        let refusal = match self.member_asking(link, &m.pn_id, "ask to expel a member") {
            Ok(_) => self
                .check_change(&m.pn_id, &m.pne)
                .err()
                .map(|e| e.to_error()),
            Err(e) => Some(e),
        };
        if let Some(e) = refusal {
            return self.send_pan_response(link, env.msg_id, e);
        }
        let req = PnUpdateRequest {
            request_id: RequestId(self.rng.u64()),
            pn_id: m.pn_id,
            add: Vec::new(),
            remove: vec![m.pne.clone()],
            asked_by: Some(asker.clone()),
        };
        let by = Asker::Pne {
            link,
            pan_msg: env.msg_id,
            pne: asker,
        };
        if let Err(e) = self.ask_server(now, req, m.pn_id, m.pne, by) {
            self.send_pan_response(link, env.msg_id, e.to_error());
        }
    }

    /// The checks both changes make before anything is sent.
    fn check_change(&self, pn_id: &PnId, pne: &EntityId) -> Result<(), CommandError> {
        let Some(pn) = self.pns.get(pn_id) else {
            return Err(CommandError::UnknownPn(*pn_id));
        };
        if !pn.state.inventory.members.iter().any(|m| &m.pne_id == pne) {
            return Err(CommandError::NotAMemberOf {
                pn_id: *pn_id,
                pne: pne.clone(),
            });
        }
        if self.changes.running(pn_id) || self.releases.running(pn_id) {
            return Err(CommandError::ChangeRunning {
                flow: Flow::MembershipChange,
            });
        }
        if !self.wan_ready() {
            return Err(CommandError::NoServerSession);
        }
        Ok(())
    }

    pub(super) fn proven_link_of(&self, pne: &EntityId) -> Option<LinkId> {
        let link = *self.routes.get(pne)?;
        self.links.get(&link).filter(|l| l.proven).map(|_| link)
    }

    fn ask_server(
        &mut self,
        now: Instant,
        body: impl Into<cpns_wire::Body>,
        pn_id: PnId,
        pne: EntityId,
        asker: Asker,
    ) -> Result<(), CommandError> {
        let Some(msg) = self.send_wan_request(body) else {
            return Err(CommandError::TooLarge);
        };
        let deadline = now + self.cfg.timeouts.flow;
        self.changes.by_msg.insert(
            msg,
            Changing {
                pn_id,
                pne,
                asker,
                deadline,
            },
        );
        Ok(())
    }

    /// §6.6.3.2 step 4: the server answered an expulsion. False if `reply_to` is not one.
    pub(super) fn on_expel_answer(&mut self, reply_to: u64, m: &PnUpdateResponse) -> bool {
        let Some(change) = self.changes.answered(reply_to) else {
            return false;
        };
        self.store_change(change, m.epoch, m.keys.clone(), Some(m.inventory.clone()));
        true
    }

    /// §6.6.3.1.1 step 4: the server answered a leave.
    pub(super) fn on_leave_answer(&mut self, env: &Envelope, m: PneLeaveResponse) {
        let Some(change) = env.in_reply_to.and_then(|r| self.changes.answered(r)) else {
            return;
        };
        self.store_change(change, m.epoch, m.keys, m.inventory);
    }

    /// The server refused a change: true if `reply_to` was one. `not_found` means the member is
    /// out there already, and it goes here too (with no new epoch to hand on).
    pub(super) fn change_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(change) = self.changes.take(reply_to) else {
            return false;
        };
        if e.code == ErrorCode::NotFound {
            self.changes.storing.push(change.pn_id);
            self.store_change(change, None, Vec::new(), None);
        } else {
            self.change_failed(change, Failure::Refused(e.clone()));
        }
        true
    }

    /// Step 5: the member and its LocalEUKey leave the local inventory, which takes the server's
    /// member list (the one the new epoch's copies name) when it came with the answer.
    fn store_change(
        &mut self,
        change: Changing,
        epoch: Option<u64>,
        keys: Vec<SealedGroupKey>,
        server_inventory: Option<PnInventory>,
    ) {
        let Some(pn) = self.pns.get(&change.pn_id) else {
            self.changes.stored(&change.pn_id);
            return self.change_failed(change, Failure::NotEstablished(None));
        };
        let mut state = pn.state.clone();
        if let Some(inventory) = server_inventory.filter(|i| i.pn_id == change.pn_id) {
            state.inventory = inventory;
        }
        state.inventory.members.retain(|m| m.pne_id != change.pne);
        state.wrapped_keys.retain(|(p, _)| *p != change.pne);
        let emptied = state.inventory.members.is_empty();
        let pn_id = change.pn_id;
        // An expelled member away keeps a way to prove itself and hear the server's word; its
        // key is written before the change, so a change done never lost it (the store writes in
        // order).
        if !change.left()
            && self.proven_link_of(&change.pne).is_none()
            && let (Some(key), Some(stored)) = (
                pn.keys.get(&change.pne).cloned(),
                stored_copy(&pn.state, &change.pne),
            )
        {
            self.keep_departed(pn_id, change.pne.clone(), key, stored);
        }
        let agreed = Agreed {
            change,
            epoch,
            keys,
            state: state.clone(),
        };
        if emptied {
            // Its last member is out: the server released the PN with the change, and so does
            // this PN GW (docs/pn-lifecycle.md, "A PN without members").
            let token = self.tokens.next();
            self.parked
                .insert(token, Parked::MemberRemoved(Box::new(agreed)));
            self.out
                .push_back(super::GatewayOutput::Forget { token, pn_id });
            return;
        }
        self.persist(Parked::MemberRemoved(Box::new(agreed)), state);
    }

    /// Step 5 done (or failed): step 6 and the notifications.
    pub(super) fn change_stored(&mut self, a: Agreed, result: Result<(), crate::StoreFailure>) {
        let Agreed {
            change,
            epoch,
            keys,
            state,
        } = a;
        self.changes.stored(&change.pn_id);
        if let Err(e) = result {
            return self.change_failed(change, Failure::Store(e));
        }
        let emptied = state.inventory.members.is_empty();
        let inventory = if emptied {
            // Dropping the PN drops (and zeroizes) every LocalEUKey it held.
            let Some(pn) = self.pns.remove(&change.pn_id) else {
                return;
            };
            let mut inventory = pn.state.inventory;
            inventory.members.clear();
            inventory
        } else {
            let Some(pn) = self.pns.get_mut(&change.pn_id) else {
                return;
            };
            pn.state = state;
            // Dropping the removed member's LocalEUKey zeroizes it.
            pn.keys.remove(&change.pne);
            pn.state.inventory.clone()
        };
        if !change.left()
            && let Some(target) = self.proven_link_of(&change.pne)
        {
            // §6.6.3.2 step 1, told once the server agreed and the change is stored.
            let pn_id = change.pn_id;
            self.send_pan_notify(target, PneExpelNotification { pn_id });
        }
        if let Asker::Pne { link, pan_msg, .. } = &change.asker {
            let answer = PneLeaveResponse {
                pn_id: change.pn_id,
                inventory: None,
                epoch: None,
                keys: Vec::new(),
            };
            self.send_pan_response(*link, *pan_msg, answer);
        }
        let notified = match epoch {
            Some(epoch) => {
                let all: Vec<EntityId> =
                    inventory.members.iter().map(|m| m.pne_id.clone()).collect();
                self.notify_members_of(&inventory, &all, epoch, &keys)
            }
            None => Vec::new(),
        };
        let pn_id = change.pn_id;
        if let Asker::Owner(Some(id)) = change.asker {
            let expelled = Outcome::Expelled {
                pn_id,
                pne: change.pne,
                epoch,
                notified,
            };
            self.complete(id, Flow::MembershipChange, Ok(expelled));
        } else {
            self.event(GatewayEvent::MemberRemoved {
                pn_id,
                pne: change.pne.clone(),
                left: change.left(),
                epoch,
                notified,
            });
        }
        if emptied {
            self.event(GatewayEvent::PnEmptied { pn_id });
        }
    }

    /// PN Update Notification with `inventory` to each of `members` on a proven link, each with
    /// its own sealed copy of the epoch's group key; the members told.
    pub(super) fn notify_members_of(
        &mut self,
        inventory: &PnInventory,
        members: &[EntityId],
        epoch: u64,
        keys: &[SealedGroupKey],
    ) -> Vec<EntityId> {
        self.saw_epoch(&inventory.pn_id, epoch);
        let mut told = Vec::new();
        for m in members {
            let Some(link) = self.proven_link_of(m) else {
                continue;
            };
            let sealed_key = keys
                .iter()
                .find(|k| &k.pne_id == m)
                .map(|k| k.sealed.clone());
            let note = PnUpdateNotification {
                inventory: inventory.clone(),
                epoch,
                sealed_key,
            };
            self.send_pan_notify(link, note);
            told.push(m.clone());
        }
        told
    }

    fn change_failed(&mut self, change: Changing, reason: Failure) {
        match &change.asker {
            Asker::Pne { link, pan_msg, .. } => {
                self.send_pan_response(*link, *pan_msg, reason.to_error());
            }
            Asker::Owner(Some(id)) => {
                return self.complete(*id, Flow::MembershipChange, Err(reason));
            }
            Asker::Owner(None) => {}
        }
        self.event(GatewayEvent::MembershipChangeFailed {
            pn_id: change.pn_id,
            pne: change.pne,
            reason,
        });
    }

    pub(super) fn change_timeouts(&mut self, now: Instant) {
        for c in self.changes.expired(now) {
            self.change_failed(c, Failure::TimedOut);
        }
    }

    pub(super) fn changes_wan_lost(&mut self) {
        for c in self.changes.drain() {
            self.change_failed(c, Failure::WanLost);
        }
    }
}

/// The stored form of `pne`'s LocalEUKey copy in `state`, if it holds one.
fn stored_copy(state: &crate::LocalPnState, pne: &EntityId) -> Option<Vec<u8>> {
    state
        .wrapped_keys
        .iter()
        .find(|(p, _)| p == pne)
        .map(|(_, s)| s.clone())
}
