//! PN release at a PNE: asking its PN GW to release a PN it is a member of (000 §6.6.5.1 steps
//! 1 and 5), and being told that a PN was released (§6.6.5 steps 3-4, §6.6.5.1 step 6).
//!
//! Either way the PN leaves the local store with its LocalEUKey ([`PneOutput::Forget`]) and
//! then memory. A notification is believed only from the PN's own PN GW over a link that PN GW
//! proved itself on (PN GW authentication with a LocalEUKey it was given for this PNE, or a
//! trusted bearer): anyone else on the PAN could otherwise make a PNE drop its PN.

use std::time::Instant;

use cpns_wire::{
    Address, Envelope, ErrorBody, ErrorCode, PnId, PnReleaseNotification, PnReleaseRequest,
    PnReleaseResponse, RequestId,
};

use super::{Gone, Outcome, Parked, PneEvent, PneOutput, PneSession};
use crate::{CommandError, CommandId, Failure, Flow, PanSecurity};

impl PneSession {
    /// §6.6.5.1 step 1: asks the PN GW to release `pn_id`, which this PNE is a member of. On
    /// an insecure PAN whose link is not sealed yet, the PNE first proves itself with the PN's
    /// LocalEUKey. Completes with [`Outcome::PnGone`] once the PN left the local store (the
    /// server's word that it is gone may come first: the PNE is out either way).
    pub fn release_pn(&mut self, now: Instant, pn_id: PnId) -> Result<CommandId, CommandError> {
        if !self.pns.contains_key(&pn_id) {
            return Err(CommandError::NotAMember(pn_id));
        }
        if self.releases.values().any(|w| w.pn_id == pn_id) {
            return Err(CommandError::ChangeRunning {
                flow: Flow::PnRelease,
            });
        }
        let request_id = RequestId(self.rng.u64());
        // The link names the asker; the PN GW names it to the server.
        let req = PnReleaseRequest {
            request_id,
            pn_id,
            asked_by: None,
        };
        let msg = self.ask_gateway(now, pn_id, req)?;
        let id = self.commands.next();
        let waiting = self.waiting(now, pn_id, 2, Some(id));
        self.releases.insert(msg, waiting);
        Ok(id)
    }

    /// §6.6.5.1 step 5: the PN GW released the PN this PNE asked it to. The request stays
    /// waiting until the PN left the local store, which ends it.
    pub(super) fn on_release_response(&mut self, env: &Envelope, m: PnReleaseResponse) {
        let Some(reply_to) = env.in_reply_to else {
            return;
        };
        let Some(pn_id) = self.releases.get(&reply_to).map(|w| w.pn_id) else {
            return self.reject(env, ErrorCode::WrongState, "no PN release in progress");
        };
        if m.pn_id != pn_id {
            let e = ErrorBody::new(ErrorCode::Internal, "the PN GW released another PN");
            if let Some(w) = self.releases.remove(&reply_to) {
                self.end(w.cmd, Flow::PnRelease, Err(Failure::Refused(e)));
            }
            return;
        }
        self.forget(pn_id, Gone::Released { by_me: true });
    }

    /// §6.6.5 steps 3-4, §6.6.5.1 step 6: the PN GW says a PN was released.
    pub(super) fn on_release_notification(&mut self, env: &Envelope, m: PnReleaseNotification) {
        let from_its_gateway = self.sent_by_pns_gateway(env, &m.pn_id);
        if from_its_gateway {
            self.forget(m.pn_id, Gone::Released { by_me: false });
        }
    }

    /// Whether `env` comes from `pn`'s own PN GW, proven on this link.
    pub(super) fn sent_by_pns_gateway(&self, env: &Envelope, pn: &PnId) -> bool {
        self.pns.get(pn).is_some_and(|p| {
            env.from == Address::Entity(p.state.inventory.gateway.clone())
                && self.gateway_proven(&p.state.inventory.gateway)
        })
    }

    /// Whether the peer on the link proved it is `gw`.
    pub(super) fn gateway_proven(&self, gw: &cpns_wire::EntityId) -> bool {
        match self.cfg.security {
            PanSecurity::Trusted => self.gateway.as_ref() == Some(gw),
            PanSecurity::Cpns => self.proven_gateway.as_ref() == Some(gw),
        }
    }

    /// Removes a PN this PNE is out of from the local store, then from memory (once, however
    /// many words say it is gone).
    pub(super) fn forget(&mut self, pn_id: PnId, why: Gone) {
        if !self.pns.contains_key(&pn_id) {
            return;
        }
        // A follower is told its following ended, and why (the PN GW's own word of it comes,
        // if at all, after the PN is gone here).
        if self.following.remove(&pn_id) {
            let (pne, change) = match why {
                Gone::Released { .. } => (None, cpns_wire::InventoryChange::Released),
                Gone::Left | Gone::Expelled => {
                    (Some(self.cfg.id.clone()), cpns_wire::InventoryChange::Left)
                }
            };
            self.event(PneEvent::InventoryChanged { pn_id, pne, change });
        }
        let forgetting = self
            .parked
            .values()
            .any(|p| matches!(p, Parked::Forgotten { pn_id: p, .. } if *p == pn_id));
        if forgetting {
            return;
        }
        let token = self.tokens.next();
        self.parked.insert(token, Parked::Forgotten { pn_id, why });
        self.out.push_back(PneOutput::Forget { token, pn_id });
    }

    /// The local store answered a [`PneOutput::Forget`]: every request about the PN ends. A
    /// release or leave of this PNE is done, whatever took it out; anything else asked of the
    /// PN fails, there being no PN. The PN GW's word that took it out is told as an event.
    pub(super) fn forgotten(
        &mut self,
        pn_id: PnId,
        why: Gone,
        result: Result<(), crate::StoreFailure>,
    ) {
        let of_pn = |m: &mut std::collections::BTreeMap<u64, super::Waiting>| {
            let ids: Vec<u64> = m
                .iter()
                .filter(|(_, w)| w.pn_id == pn_id)
                .map(|(k, _)| *k)
                .collect();
            ids.into_iter()
                .filter_map(|k| m.remove(&k))
                .collect::<Vec<_>>()
        };
        let outs: Vec<(super::Waiting, Flow)> = of_pn(&mut self.releases)
            .into_iter()
            .map(|w| (w, Flow::PnRelease))
            .chain(
                of_pn(&mut self.leaves)
                    .into_iter()
                    .map(|w| (w, Flow::MembershipChange)),
            )
            .collect();
        match result {
            Ok(()) => {
                // Dropping the entry zeroizes its LocalEUKey, SK_PNE and group key; the epochs
                // it saw announced go with it.
                self.pns.remove(&pn_id);
                self.announced.remove(&pn_id);
                self.content_seen.forget(&pn_id);
                for (w, flow) in outs {
                    self.end(w.cmd, flow, Ok(Outcome::PnGone { pn_id, why }));
                }
                let others: Vec<super::Waiting> = of_pn(&mut self.invites)
                    .into_iter()
                    .chain(of_pn(&mut self.key_pulls))
                    .chain(of_pn(&mut self.confirms))
                    .chain({
                        let ids: Vec<u64> = self
                            .expels
                            .iter()
                            .filter(|(_, (w, _))| w.pn_id == pn_id)
                            .map(|(k, _)| *k)
                            .collect();
                        ids.into_iter()
                            .filter_map(|k| self.expels.remove(&k).map(|(w, _)| w))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for w in others {
                    let e = ErrorBody::new(ErrorCode::NotFound, "this PNE is out of the PN now");
                    self.end(w.cmd, Flow::MembershipChange, Err(Failure::Refused(e)));
                }
                match why {
                    Gone::Released { by_me: false } => self.event(PneEvent::PnReleased(pn_id)),
                    Gone::Expelled => self.event(PneEvent::Expelled(pn_id)),
                    Gone::Released { by_me: true } | Gone::Left => {}
                }
            }
            Err(e) => {
                let flow = match why {
                    Gone::Released { .. } => Flow::PnRelease,
                    Gone::Left | Gone::Expelled => Flow::MembershipChange,
                };
                if outs.is_empty() {
                    self.fail(None, flow, Failure::Store(e));
                } else {
                    for (w, flow) in outs {
                        self.end(w.cmd, flow, Err(Failure::Store(e.clone())));
                    }
                }
            }
        }
    }

    /// The PN GW refused a release: true if `reply_to` was one.
    pub(super) fn release_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some(w) = self.releases.remove(&reply_to) else {
            return false;
        };
        self.end(w.cmd, Flow::PnRelease, Err(Failure::Refused(e.clone())));
        true
    }

    pub(super) fn release_timeouts(&mut self, now: Instant) {
        for (_, w) in crate::util::take_expired(&mut self.releases, now, |w| w.deadline) {
            self.end(w.cmd, Flow::PnRelease, Err(Failure::TimedOut));
        }
    }
}
