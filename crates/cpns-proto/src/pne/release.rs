//! PN release at a PNE: asking its PN GW to release a PN it is a member of (000 §6.6.5.1 steps
//! 1 and 5), and being told that a PN was released (§6.6.5 steps 3-4, §6.6.5.1 step 6).
//!
//! Either way the PN leaves the local store with its LocalEUKey ([`PneOutput::Forget`]) and
//! then memory. A notification is believed only from the PN's own PN GW over a link that PN GW
//! proved itself on (PN GW authentication with a LocalEUKey it was given for this PNE, or a
//! trusted bearer): anyone else on the PAN could otherwise make a PNE drop its PN.

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_wire::{
    Address, Envelope, ErrorCode, PnId, PnReleaseNotification, PnReleaseRequest, PnReleaseResponse,
    RequestId,
};

use super::{Gone, Parked, PneEvent, PneOutput, PneSession};
use crate::{Failure, Flow, PanSecurity, ProtoError};

/// Release requests waiting for the PN GW's answer, by message id: the PN and the deadline.
pub(super) type PendingReleases = BTreeMap<u64, (PnId, Instant)>;

impl PneSession {
    /// §6.6.5.1 step 1: asks the PN GW to release `pn_id`, which this PNE is a member of. On
    /// an insecure PAN whose link is not sealed yet, the PNE first proves itself with the PN's
    /// LocalEUKey. The result comes as [`PneEvent::PnReleased`] or a failed
    /// [`Flow::PnRelease`].
    pub fn release_pn(&mut self, now: Instant, pn_id: PnId) -> Result<RequestId, ProtoError> {
        if !self.pns.contains_key(&pn_id) {
            return Err(ProtoError::WrongState(
                "this PNE is not a member of that PN",
            ));
        }
        if self.releases.values().any(|(p, _)| *p == pn_id) {
            return Err(ProtoError::WrongState("the PN is being released already"));
        }
        let request_id = RequestId(self.rng.u64());
        // The link names the asker; the PN GW names it to the server.
        let req = PnReleaseRequest {
            request_id,
            pn_id,
            asked_by: None,
        };
        let msg = self.ask_gateway(now, pn_id, req)?;
        let deadline = now + self.cfg.timeouts.flow * 2;
        self.releases.insert(msg, (pn_id, deadline));
        Ok(request_id)
    }

    /// §6.6.5.1 step 5: the PN GW released the PN this PNE asked it to.
    pub(super) fn on_release_response(&mut self, env: &Envelope, m: PnReleaseResponse) {
        let Some((pn_id, _)) = env.in_reply_to.and_then(|r| self.releases.remove(&r)) else {
            return self.reject(env, ErrorCode::WrongState, "no PN release in progress");
        };
        if m.pn_id != pn_id {
            return self.event(PneEvent::FlowFailed {
                flow: Flow::PnRelease,
                reason: Failure::Refused(cpns_wire::ErrorBody::new(
                    ErrorCode::Internal,
                    "the PN GW released another PN",
                )),
            });
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

    /// Removes a PN this PNE is out of from the local store, then from memory.
    pub(super) fn forget(&mut self, pn_id: PnId, why: Gone) {
        if !self.pns.contains_key(&pn_id) {
            return;
        }
        let token = self.tokens.next();
        self.parked.insert(token, Parked::Forgotten { pn_id, why });
        self.out.push_back(PneOutput::Forget { token, pn_id });
    }

    /// The local store answered a [`PneOutput::Forget`].
    pub(super) fn forgotten(
        &mut self,
        pn_id: PnId,
        why: Gone,
        result: Result<(), crate::StoreFailure>,
    ) {
        match result {
            Ok(()) => {
                // Dropping the entry zeroizes its LocalEUKey, SK_PNE and group key.
                self.pns.remove(&pn_id);
                self.event(match why {
                    Gone::Released { by_me } => PneEvent::PnReleased { pn_id, by_me },
                    Gone::Left => PneEvent::PnLeft(pn_id),
                    Gone::Expelled => PneEvent::Expelled(pn_id),
                });
            }
            Err(e) => self.event(PneEvent::FlowFailed {
                flow: match why {
                    Gone::Released { .. } => Flow::PnRelease,
                    Gone::Left | Gone::Expelled => Flow::MembershipChange,
                },
                reason: Failure::Store(e),
            }),
        }
    }

    /// The PN GW refused a release: true if `reply_to` was one.
    pub(super) fn release_refused(&mut self, reply_to: u64, e: &cpns_wire::ErrorBody) -> bool {
        if self.releases.remove(&reply_to).is_none() {
            return false;
        }
        self.event(PneEvent::FlowFailed {
            flow: Flow::PnRelease,
            reason: Failure::Refused(e.clone()),
        });
        true
    }

    pub(super) fn release_timeouts(&mut self, now: Instant) {
        for _ in crate::util::take_expired(&mut self.releases, now, |(_, d)| *d) {
            self.event(PneEvent::FlowFailed {
                flow: Flow::PnRelease,
                reason: Failure::TimedOut,
            });
        }
    }
}
