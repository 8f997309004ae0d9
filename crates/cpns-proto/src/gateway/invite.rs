//! Invitations into an existing PN (000 §6.6.2.1): by the PN GW's owner (§6.6.2.1.1) or asked
//! for by a member PNE (§6.6.2.1.2).
//!
//! 1. The PN GW sends PNE Request (Invite) to the invitee on its link (step 1 / step 2).
//! 2. The invitee answers (step 2 / step 3). One that declines ends the invitation; one that
//!    accepts joins the PN as 000 §6.6.2.2 has it (a registration in the PN, 003 §1.4.2), so the
//!    server authenticates it before it enters the inventory: that join is the PN Update
//!    Request and Response of steps 3-4 / 4-5, and its PN Update Notifications are step 5 /
//!    steps 7-8 ([`super::register`]).
//! 3. The invitation ends when the invitee is a member, declines, or the flow's deadline
//!    passes; a member that asked is answered then (§6.6.2.1.2 step 6).
//!
//! An invitee that is a member already, or not connected, is refused at once; one invitation
//! per (PN, invitee) at a time, so a retried invite adds the PNE once. The join of an invitee
//! a member asked for names that member to the server, which refuses it unless the member is
//! an entity of the PN's owner; the invitation then ends with that refusal.

use std::time::Instant;

use cpns_wire::{
    EntityId, Envelope, ErrorBody, ErrorCode, PnId, PneInviteRequest, PneInviteResponse, RequestId,
};

use super::pn_flows::Asker;
use super::{Gateway, GatewayEvent, LinkId, Outcome};
use crate::{CommandError, CommandId, Failure, Flow};

/// An invitation waiting for the invitee's answer, then for it to join.
#[derive(Debug)]
pub(crate) struct Invite {
    pn_id: PnId,
    invitee: EntityId,
    link: LinkId,
    /// The invitation's message id on the invitee's link, until it answers.
    msg: Option<u64>,
    asker: Asker,
    deadline: Instant,
}

impl Gateway {
    /// 000 §6.6.2.1.1 step 1: the PN GW's owner invites `invitee` into `pn_id`. Completes
    /// with [`Outcome::Invited`] once it joined or declined; a request refused at once is the
    /// `Err`, with nothing sent.
    pub fn invite(
        &mut self,
        now: Instant,
        pn_id: PnId,
        invitee: EntityId,
    ) -> Result<CommandId, CommandError> {
        if self.flows_in_progress() >= self.cfg.limits.flows {
            return Err(CommandError::Busy);
        }
        let id = self.commands.next();
        self.begin_invite(now, pn_id, invitee, Asker::Owner(Some(id)))?;
        Ok(id)
    }

    /// §6.6.2.1.2 step 1: a member asks its PN GW to invite another PNE.
    pub(super) fn on_member_invite(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: PneInviteRequest,
    ) {
        let Some(invitee) = m.invitee else {
            return self.reject_pan(link, env, ErrorCode::BadRequest, "name the PNE to invite");
        };
        let member = match self.member_asking(link, &m.pn_id, "invite into its PN") {
            Ok(pne) => pne,
            Err(e) => return self.send_pan_response(link, env.msg_id, e),
        };
        let asker = Asker::Pne {
            link,
            pan_msg: env.msg_id,
            pne: member,
        };
        let result = self.begin_invite(now, m.pn_id, invitee, asker);
        if let Err(e) = result {
            self.send_pan_response(link, env.msg_id, e.to_error());
        }
    }

    fn begin_invite(
        &mut self,
        now: Instant,
        pn_id: PnId,
        invitee: EntityId,
        asker: Asker,
    ) -> Result<(), CommandError> {
        let Some(pn) = self.pns.get(&pn_id) else {
            return Err(CommandError::UnknownPn(pn_id));
        };
        if pn
            .state
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
        if self
            .invites
            .iter()
            .any(|i| i.pn_id == pn_id && i.invitee == invitee)
        {
            return Err(CommandError::ChangeRunning {
                flow: Flow::MembershipChange,
            });
        }
        let Some(&link) = self.routes.get(&invitee) else {
            return Err(CommandError::NotConnected(invitee));
        };
        if !self.wan_ready() {
            return Err(CommandError::NoServerSession);
        }
        let req = PneInviteRequest {
            request_id: RequestId(self.rng.u64()),
            pn_id,
            invitee: None,
        };
        let msg = self.send_pan_request(link, req);
        // The answer, then the join's authentication by the server.
        let deadline = now + self.cfg.timeouts.invite + self.cfg.timeouts.flow * 2;
        self.invites.push(Invite {
            pn_id,
            invitee,
            link,
            msg: Some(msg),
            asker,
            deadline,
        });
        Ok(())
    }

    /// §6.6.2.1.1 step 2, §6.6.2.1.2 step 3: the invitee answers. True if `env` answers an
    /// invitation.
    pub(super) fn on_invite_answer(
        &mut self,
        link: LinkId,
        env: &Envelope,
        m: &PneInviteResponse,
    ) -> bool {
        let Some(at) = self
            .invites
            .iter()
            .position(|i| i.link == link && i.msg.is_some() && i.msg == env.in_reply_to)
        else {
            return false;
        };
        if m.accepted && m.pn_id == self.invites[at].pn_id {
            // It joins next (§6.6.2.2): the invitation ends when it is a member.
            self.invites[at].msg = None;
        } else {
            let invite = self.invites.swap_remove(at);
            self.invite_ended(invite, None);
        }
        true
    }

    /// An invitee answered with an error: the invitation ends. True if `reply_to` was one.
    pub(super) fn invite_refused(&mut self, link: LinkId, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(at) = self
            .invites
            .iter()
            .position(|i| i.link == link && i.msg == Some(reply_to))
        else {
            return false;
        };
        let invite = self.invites.swap_remove(at);
        self.invite_ended(invite, Some(Failure::Refused(e.clone())));
        true
    }

    /// A PNE joined `pn_id`: the invitations of it into that PN are done (§6.6.2.1.2 step 6).
    pub(super) fn invitee_joined(&mut self, pn_id: PnId, pne: &EntityId) {
        let done: Vec<Invite> = {
            let (done, keep) = std::mem::take(&mut self.invites)
                .into_iter()
                .partition(|i| i.pn_id == pn_id && &i.invitee == pne);
            self.invites = keep;
            done
        };
        for i in done {
            match &i.asker {
                Asker::Pne { link, pan_msg, .. } => {
                    let answer = PneInviteResponse {
                        pn_id,
                        accepted: true,
                    };
                    self.send_pan_response(*link, *pan_msg, answer);
                }
                Asker::Owner(Some(id)) => {
                    let joined = Outcome::Invited {
                        pn_id,
                        pne: pne.clone(),
                        joined: true,
                    };
                    self.complete(*id, Flow::MembershipChange, Ok(joined));
                }
                Asker::Owner(None) => {}
            }
        }
    }

    /// The member whose invitation `pne` accepted and is joining `pn_id` on, if a member asked
    /// for it (§6.6.2.1.2): named to the server, which decides whether that member may invite.
    pub(super) fn invited_by(&self, pn_id: &PnId, pne: &EntityId) -> Option<EntityId> {
        self.invites
            .iter()
            .find(|i| i.pn_id == *pn_id && i.invitee == *pne && i.msg.is_none())
            .and_then(|i| match &i.asker {
                Asker::Pne { pne, .. } => Some(pne.clone()),
                Asker::Owner(_) => None,
            })
    }

    /// The server refused the join of an invitee that accepted: its invitations into `pn_id`
    /// end with that refusal.
    pub(super) fn invitee_refused(&mut self, pn_id: PnId, pne: &EntityId, e: ErrorBody) {
        let (refused, keep) = std::mem::take(&mut self.invites)
            .into_iter()
            .partition(|i| i.pn_id == pn_id && &i.invitee == pne && i.msg.is_none());
        self.invites = keep;
        for i in refused {
            self.invite_ended(i, Some(Failure::Refused(e.clone())));
        }
    }

    /// The invitee declined (`reason` `None`) or the invitation failed.
    fn invite_ended(&mut self, i: Invite, reason: Option<Failure>) {
        if let Asker::Owner(Some(id)) = i.asker {
            let result = match reason {
                None => Ok(Outcome::Invited {
                    pn_id: i.pn_id,
                    pne: i.invitee,
                    joined: false,
                }),
                Some(f) => Err(f),
            };
            return self.complete(id, Flow::MembershipChange, result);
        }
        if let Asker::Pne { link, pan_msg, .. } = &i.asker {
            match &reason {
                None => {
                    let answer = PneInviteResponse {
                        pn_id: i.pn_id,
                        accepted: false,
                    };
                    self.send_pan_response(*link, *pan_msg, answer);
                }
                Some(r) => self.send_pan_response(*link, *pan_msg, r.to_error()),
            }
        }
        self.event(GatewayEvent::InviteEnded {
            pn_id: i.pn_id,
            invitee: i.invitee,
            reason,
        });
    }

    pub(super) fn invite_timeouts(&mut self, now: Instant) {
        let (late, keep) = std::mem::take(&mut self.invites)
            .into_iter()
            .partition(|i| i.deadline <= now);
        self.invites = keep;
        for i in late {
            self.invite_ended(i, Some(Failure::TimedOut));
        }
    }

    /// The invitee's link closed before it answered: the invitation ends.
    pub(super) fn invites_link_closed(&mut self, link: LinkId) {
        let (gone, keep) = std::mem::take(&mut self.invites)
            .into_iter()
            .partition(|i| i.link == link && i.msg.is_some());
        self.invites = keep;
        for i in gone {
            let e = ErrorBody::new(ErrorCode::NotFound, "the invitee disconnected");
            self.invite_ended(i, Some(Failure::Refused(e)));
        }
    }

    pub(super) fn invite_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.invites.iter().map(|i| i.deadline)
    }

    pub(super) fn invites_of_link(&self, link: LinkId) -> usize {
        self.invites
            .iter()
            .filter(|i| matches!(i.asker, Asker::Pne { link: l, .. } if l == link))
            .count()
    }
}
