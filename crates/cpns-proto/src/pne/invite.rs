//! Invitations as the PNE's [`InvitationPolicy`] answers them: at once (accept or decline), or
//! held for the application on the device (`Ask`), which answers with
//! [`PneSession::answer_invitation`] before a deadline; past it the PNE declines. Both kinds
//! of invitation are held alike: to a PN being set up (PN Setup Request, 000 §6.6.1.1 steps
//! 2-3, §6.6.1.2 steps 3-4) and into an existing PN (PNE Invite Request, §6.6.2.1.1 step 1,
//! §6.6.2.1.2 step 2).

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_wire::{EntityId, PnId};

use super::{InvitationPolicy, Outcome, PneEvent, PneSession};
use crate::{CommandError, CommandId, Flow};

/// The request an invitation came in, to be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Invitation {
    /// A PN Setup Request for a PN being set up; its message id.
    Setup {
        /// The request's message id.
        msg: u64,
    },
    /// A PNE Invite Request into an existing PN; its message id.
    Existing {
        /// The request's message id.
        msg: u64,
    },
}

/// An invitation held for the application.
#[derive(Debug)]
pub(super) struct Held {
    invitation: Invitation,
    /// When it is declined if not answered.
    deadline: Instant,
}

/// The invitations held, by PN.
pub(super) type HeldInvitations = BTreeMap<PnId, Held>;

impl PneSession {
    /// An invitation came in: answered now by the policy, or held and told to the application
    /// ([`PneEvent::Invited`]). A second invitation to a PN already held replaces the request
    /// to answer and keeps the deadline.
    pub(super) fn invited(
        &mut self,
        now: Instant,
        pn_id: PnId,
        from: EntityId,
        invitation: Invitation,
    ) {
        match self.cfg.invitations {
            InvitationPolicy::Accept => self.answer(now, pn_id, invitation, true),
            InvitationPolicy::Decline => self.answer(now, pn_id, invitation, false),
            InvitationPolicy::Ask { within } => {
                if let Some(held) = self.held.get_mut(&pn_id) {
                    held.invitation = invitation;
                    return;
                }
                let deadline = now + within;
                self.held.insert(
                    pn_id,
                    Held {
                        invitation,
                        deadline,
                    },
                );
                self.event(PneEvent::Invited {
                    pn_id,
                    from,
                    deadline,
                });
            }
        }
    }

    /// Answers an invitation held for the application (policy `Ask`): accepts (the PNE joins
    /// the PN, told by [`PneEvent::PnJoined`]) or declines. Completes at once with
    /// [`Outcome::InvitationAnswered`], the answer sent. Refused with
    /// [`CommandError::NoInvitation`] when no invitation to `pn_id` is held (never came,
    /// answered, or declined at its deadline), and while a registration runs when accepting
    /// an invitation into an existing PN (joining registers, 000 §6.6.2.2).
    pub fn answer_invitation(
        &mut self,
        now: Instant,
        pn_id: PnId,
        accept: bool,
    ) -> Result<CommandId, CommandError> {
        let Some(held) = self.held.get(&pn_id) else {
            return Err(CommandError::NoInvitation(pn_id));
        };
        let flow = match held.invitation {
            Invitation::Setup { .. } => Flow::PnEstablishment,
            Invitation::Existing { .. } if accept && self.registering() => {
                return Err(CommandError::ChangeRunning {
                    flow: Flow::PneRegistration,
                });
            }
            Invitation::Existing { .. } => Flow::MembershipChange,
        };
        let Some(held) = self.held.remove(&pn_id) else {
            return Err(CommandError::NoInvitation(pn_id));
        };
        self.now = Some(now);
        self.answer(now, pn_id, held.invitation, accept);
        let id = self.commands.next();
        let answered = Outcome::InvitationAnswered {
            pn_id,
            accepted: accept,
        };
        self.complete(id, flow, Ok(answered));
        Ok(id)
    }

    /// The invitations held for the application, with their deadlines, in PN order.
    pub fn held_invitations(&self) -> Vec<(PnId, Instant)> {
        self.held.iter().map(|(p, h)| (*p, h.deadline)).collect()
    }

    fn answer(&mut self, now: Instant, pn_id: PnId, invitation: Invitation, accept: bool) {
        match (invitation, accept) {
            (Invitation::Setup { msg }, true) => self.accept_setup(now, msg, pn_id),
            (Invitation::Setup { msg }, false) => self.decline_setup(msg, pn_id),
            (Invitation::Existing { msg }, accepted) => {
                self.answer_invite(now, msg, pn_id, accepted);
            }
        }
    }

    /// Declines the invitations whose application did not answer in time.
    pub(super) fn invitation_timeouts(&mut self, now: Instant) {
        let late = crate::util::take_expired(&mut self.held, now, |h| h.deadline);
        for (pn_id, held) in late {
            self.answer(now, pn_id, held.invitation, false);
        }
    }

    /// The earliest deadline of an invitation held.
    pub(super) fn invitation_deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.deadline).min()
    }
}
