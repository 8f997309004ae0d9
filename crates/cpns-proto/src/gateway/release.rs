//! PN release at the PN GW: asked by its owner (000 §6.6.5) or by a member PNE (§6.6.5.1),
//! agreed with the server, then removed from the local inventory and told to the members
//! (docs/pn-lifecycle.md, "One model for every membership change").
//!
//! 1. Asked: the PN must be in the local inventory; a PNE must have proven on its link that it
//!    is a member of it (§6.6.5.1 step 1). One release per PN at a time.
//! 2. Agreed: PN Release Request to the server (§6.6.5 step 1, §6.6.5.1 step 2), naming the
//!    member that asked. The server is the authority (only an entity of the PN's owner releases
//!    it): it refusing ends the flow with no change. It answering `not_found` means
//!    the PN is gone there already (an earlier attempt whose answer was lost), so the PN GW
//!    follows it.
//! 3. Stored: the PN, its members and their LocalEUKeys leave the local store in one write
//!    ([`GatewayOutput::Forget`]); only then does it leave memory.
//! 4. Told: the asking PNE gets PN Release Response (§6.6.5.1 step 5), every other member on a
//!    proven link gets PN Release Notification (§6.6.5 steps 3-4, §6.6.5.1 step 6). A member
//!    that is not connected is not told now: at its next PN GW authentication for the PN it
//!    is answered `not_found`.

use std::time::Instant;

use cpns_wire::{
    Envelope, ErrorBody, ErrorCode, PnId, PnReleaseNotification, PnReleaseRequest,
    PnReleaseResponse, RequestId,
};

use super::pn_flows::{Asker, PnFlow, PnFlows};
use super::{Gateway, GatewayEvent, GatewayOutput, LinkId, Outcome, Parked};
use crate::{CommandError, CommandId, Failure, Flow};

/// A release waiting for the server (step 2) or the local store (step 3).
#[derive(Debug)]
pub(crate) struct Releasing {
    pn_id: PnId,
    asker: Asker,
    deadline: Instant,
}

impl PnFlow for Releasing {
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

/// Releases in progress.
pub(super) type Releases = PnFlows<Releasing>;

impl Gateway {
    /// 000 §6.6.5 step 1: the PN GW's owner releases `pn_id`. Completes with
    /// [`Outcome::Released`]; a request refused at once (unknown PN, a release of it already
    /// running, no session with the server) is the `Err`, with nothing changed.
    pub fn release_pn(&mut self, now: Instant, pn_id: PnId) -> Result<CommandId, CommandError> {
        if self.flows_in_progress() >= self.cfg.limits.flows {
            return Err(CommandError::Busy);
        }
        let id = self.commands.next();
        self.begin_release(now, pn_id, Asker::Owner(Some(id)))?;
        Ok(id)
    }

    /// A PN whose lifetime ended: the PN GW releases it by itself, as its owner would.
    pub(super) fn release_expired(
        &mut self,
        now: Instant,
        pn_id: PnId,
    ) -> Result<(), CommandError> {
        self.begin_release(now, pn_id, Asker::Owner(None))
    }

    /// §6.6.5.1 step 1: a PNE asks its PN GW to release a PN it is a member of.
    pub(super) fn on_pne_release_request(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: PnReleaseRequest,
    ) {
        let pne = match self.member_asking(link, &m.pn_id, "release its PN") {
            Ok(pne) => pne,
            Err(e) => return self.send_pan_response(link, env.msg_id, e),
        };
        let asker = Asker::Pne {
            link,
            pan_msg: env.msg_id,
            pne,
        };
        if let Err(e) = self.begin_release(now, m.pn_id, asker) {
            self.send_pan_response(link, env.msg_id, e.to_error());
        }
    }

    fn begin_release(
        &mut self,
        now: Instant,
        pn_id: PnId,
        asker: Asker,
    ) -> Result<(), CommandError> {
        if !self.pns.contains_key(&pn_id) {
            return Err(CommandError::UnknownPn(pn_id));
        }
        if self.releases.running(&pn_id) || self.changes.running(&pn_id) {
            return Err(CommandError::ChangeRunning {
                flow: Flow::PnRelease,
            });
        }
        if !self.wan_ready() {
            return Err(CommandError::NoServerSession);
        }
        // §6.6.5.1 step 2: the server decides whether the member that asked may.
        let asked_by = match &asker {
            Asker::Pne { pne, .. } => Some(pne.clone()),
            Asker::Owner(_) => None,
        };
        let req = PnReleaseRequest {
            request_id: RequestId(self.rng.u64()),
            pn_id,
            asked_by,
        };
        let Some(msg) = self.send_wan_request(req) else {
            return Err(CommandError::TooLarge);
        };
        let deadline = now + self.cfg.timeouts.flow;
        self.releases.by_msg.insert(
            msg,
            Releasing {
                pn_id,
                asker,
                deadline,
            },
        );
        Ok(())
    }

    /// Step 2: the server released the PN; now the local store (step 3).
    pub(super) fn on_release_response(&mut self, env: &Envelope, m: PnReleaseResponse) {
        let Some(r) = env.in_reply_to.and_then(|id| self.releases.answered(id)) else {
            return;
        };
        if m.pn_id != r.pn_id {
            self.releases.stored(&r.pn_id);
            let e = ErrorBody::new(ErrorCode::Internal, "the server released another PN");
            return self.release_failed(r, Failure::Refused(e));
        }
        self.forget_locally(r);
    }

    /// The server refused a release: true if `reply_to` was one. `not_found` means the PN is
    /// gone there already, and it goes here too.
    pub(super) fn release_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(r) = self.releases.take(reply_to) else {
            return false;
        };
        if e.code == ErrorCode::NotFound {
            self.releases.storing.push(r.pn_id);
            self.forget_locally(r);
        } else {
            self.release_failed(r, Failure::Refused(e.clone()));
        }
        true
    }

    fn forget_locally(&mut self, r: Releasing) {
        // Members away keep a way to prove themselves and hear the server's word; their keys
        // are written before the PN goes, so a release done is never one whose away members
        // lost them (the store writes in order).
        self.keep_away_members(&r);
        let token = self.tokens.next();
        let pn_id = r.pn_id;
        self.parked.insert(token, Parked::Released(Box::new(r)));
        self.out.push_back(GatewayOutput::Forget { token, pn_id });
    }

    /// Step 3 done (or failed): step 4, tell the members.
    pub(super) fn release_stored(&mut self, r: Releasing, result: Result<(), crate::StoreFailure>) {
        self.releases.stored(&r.pn_id);
        if let Err(e) = result {
            return self.release_failed(r, Failure::Store(e));
        }
        let Some(pn) = self.pns.remove(&r.pn_id) else {
            return;
        };
        let asker_pne = match &r.asker {
            Asker::Pne {
                link, pan_msg, pne, ..
            } => {
                let answer = PnReleaseResponse { pn_id: r.pn_id };
                self.send_pan_response(*link, *pan_msg, answer);
                Some(pne.clone())
            }
            Asker::Owner(_) => None,
        };
        let mut notified = Vec::new();
        for member in &pn.state.inventory.members {
            if Some(&member.pne_id) == asker_pne.as_ref() {
                continue;
            }
            let Some(&link) = self.routes.get(&member.pne_id) else {
                continue;
            };
            if !self.links.get(&link).is_some_and(|l| l.proven) {
                continue;
            }
            self.send_pan_notify(link, PnReleaseNotification { pn_id: r.pn_id });
            notified.push(member.pne_id.clone());
        }
        if let Asker::Owner(Some(id)) = r.asker {
            let released = Outcome::Released {
                pn_id: r.pn_id,
                notified,
            };
            return self.complete(id, Flow::PnRelease, Ok(released));
        }
        self.event(GatewayEvent::PnReleased {
            pn_id: r.pn_id,
            by: asker_pne,
            notified,
        });
    }

    /// The keys of the PN's members that no proven link would tell of the release.
    fn keep_away_members(&mut self, r: &Releasing) {
        let Some(pn) = self.pns.get(&r.pn_id) else {
            return;
        };
        let asker = match &r.asker {
            Asker::Pne { pne, .. } => Some(pne.clone()),
            Asker::Owner(_) => None,
        };
        let away: Vec<(cpns_wire::EntityId, cpns_crypto::LocalEuKey)> = pn
            .keys
            .iter()
            .filter(|(pne, _)| Some(*pne) != asker.as_ref() && self.proven_link_of(pne).is_none())
            .map(|(pne, k)| (pne.clone(), k.clone()))
            .collect();
        let stored = pn.state.wrapped_keys.clone();
        for (pne, key) in away {
            if let Some((_, s)) = stored.iter().find(|(p, _)| *p == pne) {
                self.keep_departed(r.pn_id, pne, key, s.clone());
            }
        }
    }

    fn release_failed(&mut self, r: Releasing, reason: Failure) {
        match &r.asker {
            Asker::Pne { link, pan_msg, .. } => {
                let e = reason.to_error();
                self.send_pan_response(*link, *pan_msg, e);
            }
            Asker::Owner(Some(id)) => return self.complete(*id, Flow::PnRelease, Err(reason)),
            Asker::Owner(None) => {}
        }
        self.event(GatewayEvent::ReleaseFailed {
            pn_id: r.pn_id,
            reason,
        });
    }

    pub(super) fn release_timeouts(&mut self, now: Instant) {
        for r in self.releases.expired(now) {
            self.release_failed(r, Failure::TimedOut);
        }
    }

    pub(super) fn releases_wan_lost(&mut self) {
        for r in self.releases.drain() {
            self.release_failed(r, Failure::WanLost);
        }
    }
}
