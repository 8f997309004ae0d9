//! A PNE's membership changes (docs/pn-lifecycle.md): leaving a PN (000 §6.6.3.1.1 steps 1 and
//! 6), being expelled (§6.6.3.2 step 1), and the PN Update Notification that brings the PN's
//! new member list and this PNE's copy of the new epoch's group key (§6.6.2.1.1 step 5).
//!
//! Like a release notification, an expulsion or an update is believed only from the PN's own
//! PN GW proven on this link. A group key copy opens only under this PNE's SK_PNE for the PN
//! (docs/security.md §4.10); an update for an epoch not newer than the one held is ignored, so
//! a replayed notification cannot take a PNE back to an older key.

use std::time::Instant;

use cpns_crypto::{GroupKey, GroupKeyBinding, LocalEuKey, SessionKey, open_group_key};
use cpns_wire::{
    Address, EntityId, Envelope, ErrorCode, GroupKeyRequest, GroupKeyResponse, MembershipConfirm,
    MembershipConfirmed, PnId, PnUpdateNotification, PneExpelNotification, PneInviteRequest,
    PneInviteResponse, PneLeaveRequest, PneLeaveResponse, RequestId,
};

use super::outcome::Waiting;
use super::{Gone, Outcome, Parked, PneEvent, PneOutput, PneSession};
use crate::{CommandError, CommandId, Failure, Flow, OwnKeys};

/// What a registration that made this PNE a member brought (003 §1.4.2; docs/security.md
/// §4.6): the PN and its group key under the grant's seal, the SK_PNE of the registration and
/// the LocalEUKey of its challenge.
pub(super) struct Grant<'a> {
    pub(super) inventory: cpns_wire::PnInventory,
    pub(super) epoch: u64,
    pub(super) group_key: &'a [u8],
    pub(super) session_key: &'a SessionKey,
    pub(super) local: Option<(LocalEuKey, Vec<u8>)>,
}

impl PneSession {
    /// This PNE's SK_PNE for `pn`, if it belongs to it and holds one.
    pub fn session_key_of(&self, pn: &PnId) -> Option<SessionKey> {
        let own = self.pns.get(pn)?.state.own.as_ref()?;
        Some(own.session_key.clone())
    }

    /// The group key epoch and key this PNE holds for `pn`, if any.
    pub fn group_key_of(&self, pn: &PnId) -> Option<(u64, GroupKey)> {
        self.pns.get(pn)?.state.own.as_ref()?.group.clone()
    }

    /// Keeps `sk` as this PNE's SK_PNE for `pn` (a registration in the PN replaced the one the
    /// server keeps for its membership).
    pub(super) fn set_own_session_key(&mut self, pn: PnId, sk: &SessionKey) {
        let Some(p) = self.pns.get_mut(&pn) else {
            return;
        };
        match &mut p.state.own {
            // A new SK_PNE numbers its secure requests from 1 again.
            Some(own) => {
                if own.session_key != *sk {
                    own.secure_seq = 0;
                }
                own.session_key = sk.clone();
            }
            None => {
                p.state.own = Some(OwnKeys {
                    session_key: sk.clone(),
                    group: None,
                    secure_seq: 0,
                });
            }
        }
        self.store_updated(pn);
    }

    /// Keeps a LocalEUKey a registration in `pn` issued, in place of the one this PNE held.
    pub(super) fn keep_local_key(&mut self, pn: PnId, key: LocalEuKey, stored: Vec<u8>) {
        let me = self.cfg.id.clone();
        if let Some(p) = self.pns.get_mut(&pn) {
            p.state.wrapped_keys.retain(|(e, _)| *e != me);
            p.state.wrapped_keys.push((me, stored));
            p.local = Some(key);
        }
        self.unprovable.remove(&pn);
    }

    /// 000 §6.6.2.2 steps 4-6: this PNE joined `pn_id` by registering in it; the server's
    /// sealed grant gave the PN's inventory and its new epoch's group key, and the challenge
    /// its LocalEUKey. `cmd`: the `join_pn` command, which ends once the PN is stored.
    pub(super) fn joined_by_registration(
        &mut self,
        pn_id: PnId,
        grant: Grant<'_>,
        cmd: Option<CommandId>,
    ) {
        let Grant {
            inventory,
            epoch,
            group_key: gk,
            session_key: sk,
            local,
        } = grant;
        let me = self.cfg.id.clone();
        let bytes: Option<[u8; 32]> = gk.try_into().ok();
        let (Some(bytes), true) = (
            bytes,
            inventory.pn_id == pn_id && inventory.members.iter().any(|m| m.pne_id == me),
        ) else {
            let flow = match cmd {
                Some(_) => Flow::PneRegistration,
                None => Flow::MembershipChange,
            };
            return self.fail(cmd, flow, Failure::GrantMalformed);
        };
        let own = OwnKeys {
            secure_seq: 0,
            session_key: sk.clone(),
            group: Some((epoch, GroupKey::from_bytes(bytes))),
        };
        let (local, wrapped_keys) = match local {
            Some((key, stored)) => (Some(key), vec![(me, stored)]),
            None => (None, Vec::new()),
        };
        let state = crate::LocalPnState {
            inventory,
            wrapped_keys,
            own: Some(own),
            expires_at: None,
        };
        self.pns.insert(
            pn_id,
            super::MemberOf {
                state: state.clone(),
                local,
            },
        );
        let token = self.tokens.next();
        self.parked.insert(
            token,
            Parked::Joined {
                pn_id,
                initiator: false,
                cmd,
            },
        );
        self.out.push_back(PneOutput::Persist { token, pn: state });
    }

    fn store_updated(&mut self, pn: PnId) {
        let Some(state) = self.pns.get(&pn).map(|p| p.state.clone()) else {
            return;
        };
        let token = self.tokens.next();
        self.parked.insert(token, Parked::Updated(pn));
        self.out.push_back(PneOutput::Persist { token, pn: state });
    }

    /// The local store answered the write of an updated PN.
    pub(super) fn updated(&mut self, _pn: PnId, result: Result<(), crate::StoreFailure>) {
        if let Err(e) = result {
            self.fail(None, Flow::MembershipChange, Failure::Store(e));
        }
    }

    /// 000 §6.6.2.2 step 1: asks to join `pn_id`, one of the PNs the PN GW serves (as its
    /// discovery answer listed them), by registering in it (003 §1.4.2): the server
    /// authenticates this PNE before it enters the PN. Completes with [`Outcome::PnJoined`]
    /// once the PN is stored.
    pub fn join_pn(&mut self, now: Instant, pn_id: PnId) -> Result<CommandId, CommandError> {
        if self.pns.contains_key(&pn_id) {
            return Err(CommandError::AlreadyMember {
                pn_id,
                pne: self.cfg.id.clone(),
            });
        }
        let id = self.commands.next();
        self.register(now, Some(pn_id), Some(id), true)?;
        Ok(id)
    }

    /// 000 §6.6.3.1.1 step 1: asks the PN GW to take this PNE out of `pn_id`. On an insecure
    /// PAN whose link is not sealed yet, the PNE first proves itself with the PN's LocalEUKey.
    /// Completes with [`Outcome::PnGone`] once the PN left the local store.
    pub fn leave_pn(&mut self, now: Instant, pn_id: PnId) -> Result<CommandId, CommandError> {
        if !self.pns.contains_key(&pn_id) {
            return Err(CommandError::NotAMember(pn_id));
        }
        if self.leaves.values().any(|w| w.pn_id == pn_id) {
            return Err(CommandError::ChangeRunning {
                flow: Flow::MembershipChange,
            });
        }
        let request_id = RequestId(self.rng.u64());
        let req = PneLeaveRequest {
            request_id,
            pn_id,
            pne: self.cfg.id.clone(),
        };
        let msg = self.ask_gateway(now, pn_id, req)?;
        let id = self.commands.next();
        let waiting = self.waiting(now, pn_id, 2, Some(id));
        self.leaves.insert(msg, waiting);
        Ok(id)
    }

    /// 004 §5.5.10: asks the PN GW to expel `pne` from `pn_id`, a PN this PNE is a member of.
    /// The server lets only a member of the PN's owner ask. Completes with
    /// [`Outcome::MemberExpelled`] (the PN Update Notification with the new epoch follows).
    pub fn expel_pne(
        &mut self,
        now: Instant,
        pn_id: PnId,
        pne: EntityId,
    ) -> Result<CommandId, CommandError> {
        let Some(p) = self.pns.get(&pn_id) else {
            return Err(CommandError::NotAMember(pn_id));
        };
        if pne == self.cfg.id {
            return Err(CommandError::NotAllowed(
                "a PNE does not expel itself: it leaves",
            ));
        }
        if !p.state.inventory.members.iter().any(|m| m.pne_id == pne) {
            return Err(CommandError::NotAMemberOf { pn_id, pne });
        }
        let request_id = RequestId(self.rng.u64());
        let req = PneLeaveRequest {
            request_id,
            pn_id,
            pne: pne.clone(),
        };
        let msg = self.ask_gateway(now, pn_id, req)?;
        let id = self.commands.next();
        let waiting = self.waiting(now, pn_id, 2, Some(id));
        self.expels.insert(msg, (waiting, pne));
        Ok(id)
    }

    /// A wait about `pn_id` of `flows` flow timeouts, for command `cmd`.
    pub(super) fn waiting(
        &self,
        now: Instant,
        pn_id: PnId,
        flows: u32,
        cmd: Option<CommandId>,
    ) -> Waiting {
        Waiting {
            pn_id,
            deadline: now + self.cfg.timeouts.flow * flows,
            cmd,
            request_id: None,
        }
    }

    /// Sends a request about `pn_id` to the PN GW; on an insecure PAN whose link is not sealed
    /// yet, the PNE first proves itself with the PN's LocalEUKey (the request follows the
    /// proof, [`PneSession::send_proven`]). Its message id.
    pub(super) fn ask_gateway(
        &mut self,
        now: Instant,
        pn_id: PnId,
        body: impl Into<cpns_wire::Body>,
    ) -> Result<u64, CommandError> {
        let to = self.peer();
        Ok(self.send_proven(now, Some(pn_id), to, body))
    }

    /// 000 §6.6.2.1.2 step 1: asks the PN GW to invite `invitee` into `pn_id`, which this PNE
    /// is a member of. Completes with [`Outcome::InviteAnswered`] once the invitee joined or
    /// declined.
    pub fn invite_pne(
        &mut self,
        now: Instant,
        pn_id: PnId,
        invitee: EntityId,
    ) -> Result<CommandId, CommandError> {
        let Some(p) = self.pns.get(&pn_id) else {
            return Err(CommandError::NotAMember(pn_id));
        };
        if p.state
            .inventory
            .members
            .iter()
            .any(|m| m.pne_id == invitee)
        {
            return Err(CommandError::AlreadyMember {
                pn_id,
                pne: invitee,
            });
        }
        let request_id = RequestId(self.rng.u64());
        let req = PneInviteRequest {
            request_id,
            pn_id,
            invitee: Some(invitee),
        };
        let msg = self.ask_gateway(now, pn_id, req)?;
        let id = self.commands.next();
        // The invitee's answer and its join.
        let mut waiting = self.waiting(now, pn_id, 3, Some(id));
        waiting.deadline += self.cfg.timeouts.invite;
        self.invites.insert(msg, waiting);
        Ok(id)
    }

    /// An invitation into an existing PN from the PN GW (§6.6.2.1.1 step 1, §6.6.2.1.2 step
    /// 2), answered as the PNE's invitation policy says, or held for its application.
    pub(super) fn on_invite(&mut self, now: Instant, env: &Envelope, m: PneInviteRequest) {
        if m.invitee.is_some() {
            return self.reject(
                env,
                ErrorCode::BadRequest,
                "a PNE invites through its PN GW",
            );
        }
        if self.pns.contains_key(&m.pn_id) {
            return self.reject(env, ErrorCode::Conflict, "a member of that PN already");
        }
        let from = self.gateway_for(env);
        let invitation = super::invite::Invitation::Existing { msg: env.msg_id };
        self.invited(now, m.pn_id, from, invitation);
    }

    /// §6.6.2.1.1 step 2: answers the invitation into an existing PN; an acceptance joins it
    /// (§6.6.2.2: the server authenticates this PNE by its registration).
    pub(super) fn answer_invite(&mut self, now: Instant, msg: u64, pn_id: PnId, accepted: bool) {
        // Joining registers (000 §6.6.2.2), one registration at a time: a PNE registering now
        // cannot join, so it declines rather than leave the invitation waiting for its end.
        let accepted = accepted && !self.registering();
        let answer = PneInviteResponse { pn_id, accepted };
        self.send_response(msg, answer);
        if !accepted {
            return self.event(PneEvent::InvitationDeclined(pn_id));
        }
        if let Err(e) = self.register(now, Some(pn_id), None, true) {
            self.fail(None, Flow::PneRegistration, Failure::Refused(e.to_error()));
        }
    }

    /// §6.6.2.1.2 step 6: the PN GW's answer to this PNE's invitation.
    pub(super) fn on_invite_response(&mut self, env: &Envelope, m: PneInviteResponse) {
        let Some(w) = env.in_reply_to.and_then(|r| self.invites.remove(&r)) else {
            return;
        };
        let answered = Outcome::InviteAnswered {
            pn_id: w.pn_id,
            accepted: m.accepted && m.pn_id == w.pn_id,
        };
        self.end(w.cmd, Flow::MembershipChange, Ok(answered));
    }

    /// §6.6.3.1.1 step 6: the PN GW took this PNE out.
    pub(super) fn on_leave_response(&mut self, env: &Envelope, m: PneLeaveResponse) {
        if let Some((w, pne)) = env.in_reply_to.and_then(|r| self.expels.remove(&r)) {
            let result = if m.pn_id == w.pn_id {
                Ok(Outcome::MemberExpelled {
                    pn_id: w.pn_id,
                    pne,
                })
            } else {
                Err(other_pn())
            };
            return self.end(w.cmd, Flow::MembershipChange, result);
        }
        let Some(w) = env.in_reply_to.and_then(|r| self.leaves.remove(&r)) else {
            return self.reject(env, ErrorCode::WrongState, "no leave in progress");
        };
        if m.pn_id != w.pn_id {
            return self.end(w.cmd, Flow::MembershipChange, Err(other_pn()));
        }
        // Back in `leaves` until the PN is forgotten, which ends it.
        let pn_id = w.pn_id;
        if let Some(reply_to) = env.in_reply_to {
            self.leaves.insert(reply_to, w);
        }
        self.forget(pn_id, Gone::Left);
    }

    /// Ends a request of this module: its command's completion; for one the PNE made by
    /// itself, a failure as [`PneEvent::FlowFailed`] (a success is told by what it did).
    pub(super) fn end(
        &mut self,
        cmd: Option<CommandId>,
        flow: Flow,
        result: Result<Outcome, Failure>,
    ) {
        match (cmd, result) {
            (Some(id), result) => self.complete(id, flow, result),
            (None, Err(reason)) => self.fail(None, flow, reason),
            (None, Ok(_)) => {}
        }
    }

    /// The PN GW refused a leave, an expulsion, an invitation, a key pull or a confirmation:
    /// true if `reply_to` was one.
    pub(super) fn leave_refused(&mut self, reply_to: u64, e: &cpns_wire::ErrorBody) -> bool {
        let waiting = self
            .leaves
            .remove(&reply_to)
            .or_else(|| self.invites.remove(&reply_to))
            .or_else(|| self.key_pulls.remove(&reply_to))
            .or_else(|| self.confirms.remove(&reply_to))
            .or_else(|| self.expels.remove(&reply_to).map(|(w, _)| w));
        let Some(w) = waiting else {
            return false;
        };
        self.end(
            w.cmd,
            Flow::MembershipChange,
            Err(Failure::Refused(e.clone())),
        );
        true
    }

    /// Leaves, expulsions, invitations, key pulls and confirmations whose deadline passed fail.
    pub(super) fn leave_timeouts(&mut self, now: Instant) {
        let by = |w: &Waiting| w.deadline;
        let mut late = crate::util::take_expired(&mut self.leaves, now, by);
        late.extend(crate::util::take_expired(&mut self.invites, now, by));
        // A key pull without an answer: this PNE may be kept behind, and says so.
        for (_, w) in crate::util::take_expired(&mut self.key_pulls, now, by) {
            let why = Failure::KeptBehind {
                pn_id: w.pn_id,
                why: "its key pull got no answer in time".into(),
            };
            self.end(w.cmd, Flow::MembershipChange, Err(why));
        }
        late.extend(crate::util::take_expired(&mut self.confirms, now, by));
        let expels = crate::util::take_expired(&mut self.expels, now, |(w, _)| w.deadline);
        late.extend(expels.into_iter().map(|(m, (w, _))| (m, w)));
        let mut own_told = false;
        for (_, w) in late {
            // The PNE's own requests that ran out at once are told once.
            if w.cmd.is_none() && std::mem::replace(&mut own_told, true) {
                continue;
            }
            self.end(w.cmd, Flow::MembershipChange, Err(Failure::TimedOut));
        }
    }

    /// §6.6.3.2 step 1: the PN GW expels this PNE.
    pub(super) fn on_expel_notification(&mut self, env: &Envelope, m: PneExpelNotification) {
        if self.sent_by_pns_gateway(env, &m.pn_id) {
            self.forget(m.pn_id, Gone::Expelled);
        }
    }

    /// §6.6.2.1.1 step 5: the PN's new member list and this PNE's copy of the new group key,
    /// taken as [`PneSession::apply_epoch`] says.
    ///
    /// A PN Update Notification is the PN's membership with group key (002 §B.1.1.3 step 24)
    /// pushed instead of pulled: a copy taken is confirmed as after a pull (step 25).
    pub(super) fn on_update_notification(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: PnUpdateNotification,
    ) {
        let from_gateway = self.sent_by_pns_gateway(env, &m.inventory.pn_id);
        let (pn_id, epoch) = (m.inventory.pn_id, m.epoch);
        let before = self.group_key_of(&pn_id).map(|(e, _)| e);
        let sealed = m.sealed_key.map(|k| (k, None));
        self.apply_epoch(m.inventory, m.epoch, sealed, from_gateway);
        if before != self.group_key_of(&pn_id).map(|(e, _)| e) {
            self.confirm_membership(now, pn_id, epoch);
        }
    }

    /// 002 §B.1.1.3 step 22: asks the server, through the PN GW, for this PNE's copy of
    /// `pn_id`'s current group key (after missing updates while away). Completes with
    /// [`Outcome::GroupKey`] (then a confirmation to the PN GW, step 25).
    pub fn request_group_key(
        &mut self,
        now: Instant,
        pn_id: PnId,
    ) -> Result<CommandId, CommandError> {
        if !self.pns.contains_key(&pn_id) {
            return Err(CommandError::NotAMember(pn_id));
        }
        let id = self.commands.next();
        self.pull_group_key(now, pn_id, Some(id));
        Ok(id)
    }

    /// Step 22 for command `cmd`, or for the PNE itself (the catching up after a reconnection).
    pub(super) fn pull_group_key(&mut self, now: Instant, pn_id: PnId, cmd: Option<CommandId>) {
        let request_id = RequestId(self.rng.u64());
        let req = GroupKeyRequest { request_id, pn_id };
        let msg = self.send_proven(now, Some(pn_id), cpns_wire::Address::Server, req);
        let waiting = Waiting {
            request_id: Some(request_id.0),
            ..self.waiting(now, pn_id, 2, cmd)
        };
        self.key_pulls.insert(msg, waiting);
    }

    /// Step 23: the server's answer; believed only if its copy opens.
    pub(super) fn on_group_key_response(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: GroupKeyResponse,
    ) {
        let Some(w) = env.in_reply_to.and_then(|r| self.key_pulls.remove(&r)) else {
            return;
        };
        let pn_id = w.pn_id;
        if m.inventory.pn_id != pn_id {
            let e = cpns_wire::ErrorBody::new(
                ErrorCode::Internal,
                "the answer names another PN than the one asked for",
            );
            self.end(w.cmd, Flow::MembershipChange, Err(Failure::Refused(e)));
            return;
        }
        let epoch = m.epoch;
        let behind = |why: String| Failure::KeptBehind { pn_id, why };
        // The copy names this pull: an older answer recorded and replayed does not open.
        let Some(request_id) = w.request_id.filter(|r| *r == m.request_id.0) else {
            let why = "the answer to its key pull names another pull".to_string();
            self.end(w.cmd, Flow::MembershipChange, Err(behind(why)));
            return;
        };
        let opened = self.apply_epoch(
            m.inventory,
            epoch,
            Some((m.sealed_key, Some(request_id))),
            false,
        );
        if opened == Some(false) {
            let why = "the answer to its key pull is not the server's answer to it".to_string();
            self.end(w.cmd, Flow::MembershipChange, Err(behind(why)));
            return;
        }
        // Answered with an epoch older than one this PNE holds or saw announced: the server
        // names the current one, so something on the way holds this PNE behind.
        if let Some(known) = self.known_epoch(&pn_id).filter(|k| epoch < *k) {
            let why = format!("its key pull was answered with epoch {epoch}, epoch {known} exists");
            self.end(w.cmd, Flow::MembershipChange, Err(behind(why)));
            return;
        }
        let has_key = self.group_key_of(&pn_id).is_some_and(|(e, _)| e == epoch);
        let got = Outcome::GroupKey {
            pn_id,
            epoch,
            has_key,
        };
        self.end(w.cmd, Flow::MembershipChange, Ok(got));
        self.confirm_membership(now, pn_id, epoch);
    }

    /// The server's answer to a pull of a PNE whose membership ended while it was away: taken
    /// only as the answer to this PNE's own pull for that PN, and only if it opens under the
    /// SK_PNE this PNE held there; then the PN is forgotten, as if it had been told at the time.
    pub(super) fn on_membership_ended(&mut self, env: &Envelope, m: cpns_wire::MembershipEnded) {
        let Some(w) = env.in_reply_to.and_then(|r| self.key_pulls.remove(&r)) else {
            return;
        };
        let pn_id = w.pn_id;
        let Some(own) = self.pns.get(&pn_id).and_then(|p| p.state.own.as_ref()) else {
            return;
        };
        let code = u8::try_from(m.reason.code()).unwrap_or(u8::MAX);
        let binding = cpns_crypto::EndedBinding {
            pn_id: pn_id.as_bytes(),
            pne_id: self.cfg.id.as_str(),
            request_id: w.request_id.unwrap_or_default(),
            why: code,
        };
        let opened = m.pn_id == pn_id
            && w.request_id.is_some()
            && cpns_crypto::open_membership_ended(&own.session_key, &binding, &m.sealed).is_ok();
        if !opened {
            self.end(
                w.cmd,
                Flow::MembershipChange,
                Err(Failure::AnswerDidNotOpen),
            );
            return;
        }
        // A pull this PNE asked for by command ends: the PN is gone, as the word says.
        if let Some(id) = w.cmd {
            let e = cpns_wire::ErrorBody::new(
                ErrorCode::NotFound,
                "this PNE's membership of the PN ended while it was away",
            );
            self.complete(id, Flow::MembershipChange, Err(Failure::Refused(e)));
        }
        // The word may overtake the PN GW's answer to this PNE's own release or leave.
        let asked =
            |m: &std::collections::BTreeMap<u64, Waiting>| m.values().any(|w| w.pn_id == pn_id);
        let why = match m.reason {
            cpns_wire::EndReason::Released => Gone::Released {
                by_me: asked(&self.releases),
            },
            _ if asked(&self.leaves) => Gone::Left,
            _ => Gone::Expelled,
        };
        self.forget(pn_id, why);
    }

    /// Step 25: tells the PN's PN GW that this PNE holds the key of `epoch`, the one the
    /// server just named (after a pull, even if it held that key already). Only to a PN GW that proved itself on this link (it answers only a
    /// PNE that proved itself too), and only with the key in hand.
    fn confirm_membership(&mut self, now: Instant, pn_id: PnId, epoch: u64) {
        let Some(p) = self.pns.get(&pn_id) else {
            return;
        };
        let holds = p
            .state
            .own
            .as_ref()
            .and_then(|o| o.group.as_ref())
            .is_some_and(|(e, _)| *e == epoch);
        let gw = p.state.inventory.gateway.clone();
        if !holds || !self.gateway_proven(&gw) {
            return;
        }
        let msg = self.send_request_to(Address::Entity(gw), MembershipConfirm { pn_id, epoch });
        let waiting = self.waiting(now, pn_id, 1, None);
        self.confirms.insert(msg, waiting);
    }

    /// Step 26: the PN GW confirmed the connection set-up in the PN.
    pub(super) fn on_membership_confirmed(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: MembershipConfirmed,
    ) {
        let Some(w) = env.in_reply_to.and_then(|r| self.confirms.remove(&r)) else {
            return;
        };
        let pn_id = w.pn_id;
        if m.pn_id == pn_id && self.sent_by_pns_gateway(env, &pn_id) {
            self.event(PneEvent::MembershipConfirmed {
                pn_id,
                epoch: m.epoch,
            });
            self.follow_again(now, pn_id);
        }
    }

    /// Takes a PN's new member list and epoch, with this PNE's copy of its key.
    ///
    /// A copy that opens under this PNE's SK_PNE is the server's word for the epoch, its key
    /// and the member list it names (docs/security.md §4.10), whoever relayed it: it is taken
    /// even from a PN GW that has not proved itself on this link (a member that joined without
    /// a LocalEUKey). Without such a copy, only the PN's own proven PN GW (`from_gateway`) is
    /// believed. An epoch not newer than the one held, or a list without this PNE, is ignored.
    ///
    /// `sealed_key`: the copy, and the request id of the pull it answers (`None` for a copy
    /// pushed in an update). Whether a copy given opened; `None` when none was tried.
    fn apply_epoch(
        &mut self,
        inventory: cpns_wire::PnInventory,
        epoch: u64,
        sealed_key: Option<(Vec<u8>, Option<u64>)>,
        from_gateway: bool,
    ) -> Option<bool> {
        let pn_id = inventory.pn_id;
        let me = self.cfg.id.clone();
        if !inventory.members.iter().any(|x| x.pne_id == me) {
            // An update that leaves this PNE out is no way to expel it.
            return None;
        }
        let p = self.pns.get(&pn_id)?;
        let held = p
            .state
            .own
            .as_ref()
            .and_then(|o| o.group.as_ref().map(|(e, _)| *e));
        let opened = match (&sealed_key, &p.state.own) {
            (Some((sealed, pull)), Some(own)) => {
                let digest =
                    cpns_crypto::inventory_digest(&crate::util::inventory_cbor(&inventory));
                let binding = GroupKeyBinding {
                    pn_id: pn_id.as_bytes(),
                    epoch,
                    pne_id: me.as_str(),
                    inventory_digest: &digest,
                    pull: *pull,
                };
                Some(open_group_key(&own.session_key, &binding, sealed))
            }
            _ => None,
        };
        let result = opened.as_ref().map(Result::is_ok);
        // An epoch announced, even one this PNE cannot open, is one it knows exists.
        if from_gateway || result == Some(true) {
            self.saw_announced(pn_id, epoch);
        }
        if held.is_some_and(|e| epoch <= e) {
            return result;
        }
        let (gk, failed) = match opened {
            Some(Ok(gk)) => (Some(gk), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        if gk.is_none() && !from_gateway {
            if let Some(e) = failed {
                let reason = Failure::GroupKeyDidNotOpen(e.to_string());
                self.fail(None, Flow::MembershipChange, reason);
            }
            return result;
        }
        let has_key = gk.is_some();
        if let Some(p) = self.pns.get_mut(&pn_id) {
            p.state.inventory = inventory.clone();
            if let (Some(gk), Some(own)) = (gk, &mut p.state.own) {
                own.group = Some((epoch, gk));
            }
        }
        self.store_updated(pn_id);
        if let Some(e) = failed {
            let reason = Failure::GroupKeyDidNotOpen(e.to_string());
            self.fail(None, Flow::MembershipChange, reason);
        }
        self.event(PneEvent::PnUpdated {
            inventory,
            epoch,
            has_key,
        });
        result
    }

    /// Notes that epoch `epoch` of `pn_id` exists (announced by the PN GW, or a copy opened).
    fn saw_announced(&mut self, pn_id: PnId, epoch: u64) {
        let seen = self.announced.entry(pn_id).or_insert(epoch);
        *seen = (*seen).max(epoch);
    }

    /// The newest epoch of `pn_id` this PNE holds a key of or saw announced.
    fn known_epoch(&self, pn_id: &PnId) -> Option<u64> {
        let held = self.group_key_of(pn_id).map(|(e, _)| e);
        held.max(self.announced.get(pn_id).copied())
    }
}

/// A PN GW answering for another PN than the one asked about.
fn other_pn() -> Failure {
    Failure::Refused(cpns_wire::ErrorBody::new(
        ErrorCode::Internal,
        "the PN GW answered for another PN",
    ))
}

#[cfg(test)]
mod tests {
    use cpns_crypto::{EuKey, MachineRng};
    use cpns_wire::{InventoryMember, PnInventory};

    use super::*;
    use crate::pne::PneConfig;

    fn id(s: &str) -> EntityId {
        EntityId::new(s).expect("a valid id")
    }

    fn session() -> PneSession {
        let cfg = PneConfig {
            security: crate::PanSecurity::Trusted,
            heartbeat: None,
            ..PneConfig::new(id("pne-1"), EuKey::from_bytes([1; 32]))
        };
        PneSession::new(cfg, MachineRng::from_seed_u64(1))
    }

    fn inventory(pn: PnId, members: &[&str]) -> PnInventory {
        PnInventory {
            pn_id: pn,
            gateway: id("gw-1"),
            members: members
                .iter()
                .map(|m| InventoryMember {
                    pne_id: id(m),
                    capabilities: None,
                    contents: Vec::new(),
                })
                .collect(),
        }
    }

    fn stored(s: &mut PneSession) -> bool {
        let mut persisted = false;
        while let Some(out) = s.poll_output() {
            persisted |= matches!(out, PneOutput::Persist { .. });
        }
        persisted
    }

    /// The grant of a join is stored only when it is for this PN, lists this PNE and holds a
    /// 32-byte key.
    #[test]
    fn only_a_grant_for_this_pn_and_pne_with_a_whole_key_is_stored() {
        let pn = PnId::from_bytes([3; 16]);
        let sk = SessionKey::from_bytes([4; 32]);
        let bad = [
            (
                inventory(PnId::from_bytes([5; 16]), &["pne-1"]),
                vec![7; 32],
            ),
            (inventory(pn, &["pne-2"]), vec![7; 32]),
            (inventory(pn, &["pne-1"]), vec![7; 31]),
        ];
        for (inv, gk) in bad {
            let mut s = session();
            let grant = Grant {
                inventory: inv,
                epoch: 1,
                group_key: &gk,
                session_key: &sk,
                local: None,
            };
            s.joined_by_registration(pn, grant, None);
            assert!(!stored(&mut s));
            assert!(s.group_key_of(&pn).is_none());
        }
        let mut s = session();
        let grant = Grant {
            inventory: inventory(pn, &["pne-2", "pne-1"]),
            epoch: 4,
            group_key: &[7; 32],
            session_key: &sk,
            local: None,
        };
        s.joined_by_registration(pn, grant, None);
        assert!(stored(&mut s));
        let (epoch, gk) = s.group_key_of(&pn).expect("kept");
        assert_eq!(epoch, 4);
        assert!(gk == GroupKey::from_bytes([7; 32]));
        assert!(s.session_key_of(&pn) == Some(sk));
    }
}
