//! A PNE's connection set-up in its PNs after a (re)connection to their PN GW (002 §B.1.1.3
//! steps 18-26), as one command, `rejoin`, run in phases:
//!
//! 1. [`Phase::Proving`] (step 18): on an insecure PAN whose link is not sealed, PN GW
//!    authentication with the LocalEUKey of a PN it shares with this PN GW, so the PN GW
//!    believes what it says and tells it what changes. A proof that fails ends nothing but
//!    itself (the link is closed if the proof did not verify).
//! 2. [`Phase::Pulling`] (steps 22-26): a PN Key Request for each of its PNs there, to catch up
//!    with the epochs it missed while away; each copy taken is confirmed to the PN GW.
//!    Membership that ended while away ends here too (the server's sealed word).
//! 3. [`Phase::Reporting`] (004 §5.5.1): its capabilities, once, so the server knows what the
//!    device is now, also what changed while it was away.
//!
//! It completes with [`Outcome::Rejoined`] once each phase's requests are answered or timed
//! out; what failed on the way is told as events ([`super::PneEvent::FlowFailed`]).

use std::time::Instant;

use cpns_wire::PnId;

use super::{Outcome, PneSession};
use crate::{CommandError, CommandId, Flow, PanSecurity};

/// The connection set-up in progress.
#[derive(Debug)]
pub(super) struct Rejoin {
    cmd: CommandId,
    phase: Phase,
    /// The PNs of this PN GW this PNE is a member of, in id order.
    pns: Vec<PnId>,
}

/// Where the connection set-up stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Step 18: PN GW authentication with a LocalEUKey.
    Proving,
    /// Steps 22-26: key pulls and confirmations.
    Pulling,
    /// The capabilities report.
    Reporting,
}

impl PneSession {
    /// 002 §B.1.1.3 steps 18-26: this PNE's connection set-up in each of its PNs served by the
    /// PN GW on the link (discovered first). Completes with [`Outcome::Rejoined`].
    pub fn rejoin(&mut self, now: Instant) -> Result<CommandId, CommandError> {
        if self.rejoin.is_some() {
            return Err(CommandError::ChangeRunning {
                flow: Flow::PnConnectionSetup,
            });
        }
        if self.gateway.is_none() {
            return Err(CommandError::NotAllowed(
                "discover the PN GW on the link first",
            ));
        }
        self.now = Some(now);
        let cmd = self.commands.next();
        let pns = self.pns_here();
        // A proof already running (a request in this PNE's name started it) is the step's.
        let proving = self.pan.is_some()
            || match self.provable_pn() {
                Some(pn) => {
                    let local = self.pns.get(&pn).and_then(|p| p.local.clone());
                    local.is_some_and(|local| {
                        self.begin_pan_auth(now, pn, local, Vec::new(), None)
                            .is_ok()
                    })
                }
                None => false,
            };
        self.rejoin = Some(Rejoin {
            cmd,
            phase: if proving {
                Phase::Proving
            } else {
                Phase::Pulling
            },
            pns,
        });
        if !proving {
            self.start_pulls();
        }
        self.rejoin_step();
        Ok(cmd)
    }

    /// The phase the connection set-up is in, if it runs.
    pub fn rejoin_phase(&self) -> Option<Phase> {
        self.rejoin.as_ref().map(|r| r.phase)
    }

    /// Moves the connection set-up on once its phase's requests are all answered. Called after
    /// every input.
    pub(super) fn rejoin_step(&mut self) {
        loop {
            let Some(r) = &self.rejoin else {
                return;
            };
            let (phase, no_pns) = (r.phase, r.pns.is_empty());
            match phase {
                Phase::Proving if self.pan.is_none() => {
                    self.set_rejoin_phase(Phase::Pulling);
                    self.start_pulls();
                }
                Phase::Pulling if !self.own_pulls_waiting() => {
                    self.set_rejoin_phase(Phase::Reporting);
                    if let (false, Some(now)) = (no_pns, self.now) {
                        self.report_capabilities(now);
                    }
                }
                Phase::Reporting if !self.own_report_waiting() => {
                    let Some(r) = self.rejoin.take() else {
                        return;
                    };
                    let done = Outcome::Rejoined { pns: r.pns };
                    self.complete(r.cmd, Flow::PnConnectionSetup, Ok(done));
                    self.resume_deliveries();
                    return;
                }
                _ => return,
            }
        }
    }

    fn set_rejoin_phase(&mut self, phase: Phase) {
        if let Some(r) = &mut self.rejoin {
            r.phase = phase;
        }
    }

    /// Steps 22-26 for each PN of the PN GW on the link.
    fn start_pulls(&mut self) {
        let Some(now) = self.now else {
            return;
        };
        for pn in self.pns_here() {
            self.pull_group_key(now, pn, None);
        }
    }

    /// Whether a key pull or confirmation this PNE made by itself waits for its answer.
    fn own_pulls_waiting(&self) -> bool {
        let own = |w: &super::Waiting| w.cmd.is_none();
        self.key_pulls.values().any(own) || self.confirms.values().any(own)
    }

    /// The PNs this PNE belongs to whose PN GW is the one on this link, in id order.
    pub(super) fn pns_here(&self) -> Vec<PnId> {
        let Some(gw) = &self.gateway else {
            return Vec::new();
        };
        self.pns
            .values()
            .filter(|p| &p.state.inventory.gateway == gw)
            .map(|p| p.state.inventory.pn_id)
            .collect()
    }

    /// A PN whose PN GW is the one on this link and whose LocalEUKey this PNE holds, when the
    /// link is not sealed yet on an insecure PAN.
    fn provable_pn(&self) -> Option<PnId> {
        if self.cfg.security != PanSecurity::Cpns || self.codec.rx_sealed() {
            return None;
        }
        let gw = self.gateway.as_ref()?;
        self.pns
            .values()
            .find(|p| {
                &p.state.inventory.gateway == gw
                    && p.local.is_some()
                    && !self.unprovable.contains(&p.state.inventory.pn_id)
            })
            .map(|p| p.state.inventory.pn_id)
    }
}
