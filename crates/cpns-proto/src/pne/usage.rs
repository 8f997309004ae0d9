//! A PNE's usage reporting (004 §5.5.4; docs/device-status.md): what its preferences allow of
//! the records its device keeps goes to the server end to end, as a `send_usage` command or,
//! with [`super::PneConfig::usage_every`], every so often by itself. The records live in the
//! device's store: the machine asks for them ([`PneOutput::LoadUsage`]) and says which are done
//! ([`PneOutput::MarkUsage`]): those sent and acknowledged, and those of private services,
//! which are never sent (004 §5.5.4.2).

use std::time::Instant;

use cpns_wire::{USAGE_SERVICE, UsageAccepted, UsageRecord};

use super::{Outcome, PneOutput, PneSession};
use crate::usage::{Preferences, outgoing};
use crate::{CommandError, CommandId, Failure, Flow, StoreFailure, Token};

/// The reporting state.
#[derive(Debug, Default)]
pub(super) struct UsageReporting {
    /// When the PNE sends by itself next.
    next: Option<Instant>,
    /// Its own load, waiting for the driver.
    loading: Option<Token>,
    /// The ids of the records in the report waiting for the server, its own or a command's.
    in_flight: Option<Vec<u64>>,
    /// The records of private services that report left out.
    withheld: Vec<u64>,
}

impl PneSession {
    /// Sends what `prefs` allow of `unsent` (the device's records not sent yet), end to end
    /// (004 §5.5.4). Records of private services are marked done at once and never sent.
    /// Completes with [`Outcome::UsageSent`] once the server acknowledged the report (at once
    /// when there is nothing to send).
    pub fn send_usage(
        &mut self,
        now: Instant,
        unsent: &[UsageRecord],
        prefs: &Preferences,
    ) -> Result<CommandId, CommandError> {
        if self.usage.in_flight.is_some() {
            return Err(CommandError::ChangeRunning {
                flow: Flow::SecureCall,
            });
        }
        if self.call_keys().is_none() {
            return Err(CommandError::NoSecureSession);
        }
        let id = self.commands.next();
        self.send_report(now, unsent, prefs, Some(id))?;
        Ok(id)
    }

    /// The driver loaded the records and preferences the PNE asked for by itself.
    pub fn handle_usage_loaded(
        &mut self,
        now: Instant,
        token: Token,
        loaded: Result<(Vec<UsageRecord>, Preferences), StoreFailure>,
    ) -> Result<(), crate::ProtoError> {
        if self.usage.loading != Some(token) {
            return Err(crate::ProtoError::UnknownToken);
        }
        self.usage.loading = None;
        match loaded {
            Ok((unsent, prefs)) if self.usage.in_flight.is_none() => {
                if let Err(e) = self.send_report(now, &unsent, &prefs, None) {
                    self.fail(None, Flow::SecureCall, Failure::Refused(e.to_error()));
                }
            }
            // A command's report went meanwhile: this turn is skipped.
            Ok(_) => {}
            Err(e) => self.fail(None, Flow::SecureCall, Failure::Store(e)),
        }
        Ok(())
    }

    fn send_report(
        &mut self,
        now: Instant,
        unsent: &[UsageRecord],
        prefs: &Preferences,
        cmd: Option<CommandId>,
    ) -> Result<(), CommandError> {
        let out = outgoing(unsent, prefs);
        if !out.withheld.is_empty() {
            self.out.push_back(PneOutput::MarkUsage {
                ids: out.withheld.clone(),
            });
        }
        if out.report.records.is_empty() {
            if let Some(id) = cmd {
                let sent = Outcome::UsageSent {
                    ids: Vec::new(),
                    stored: 0,
                    duplicates: 0,
                    charged: 0,
                    withheld: out.withheld,
                };
                self.complete(id, Flow::SecureCall, Ok(sent));
            }
            return Ok(());
        }
        let ids = out.report.records.iter().map(|r| r.id).collect();
        let payload = minicbor::to_vec(&out.report).unwrap_or_default();
        let request = self.call(now, USAGE_SERVICE, payload, Flow::SecureCall, cmd)?;
        if let Some(call) = self.secure_calls.get_mut(&request) {
            call.usage = true;
        }
        self.usage.in_flight = Some(ids);
        self.usage.withheld = out.withheld;
        Ok(())
    }

    /// The server's answer to a usage report (`result` opened), or why there is none.
    pub(super) fn usage_answered(
        &mut self,
        cmd: Option<CommandId>,
        result: Result<Vec<u8>, Failure>,
    ) {
        let ids = self.usage.in_flight.take().unwrap_or_default();
        let withheld = std::mem::take(&mut self.usage.withheld);
        let result = result.and_then(|payload| {
            minicbor::decode::<UsageAccepted>(&payload)
                .map_err(|_| Failure::Unexpected("an undecodable usage answer"))
        });
        let result = match result {
            Ok(a) => {
                self.out
                    .push_back(PneOutput::MarkUsage { ids: ids.clone() });
                Ok(Outcome::UsageSent {
                    ids,
                    stored: a.stored,
                    duplicates: a.duplicates,
                    charged: a.charged,
                    withheld,
                })
            }
            Err(e) => Err(e),
        };
        match (cmd, result) {
            (Some(id), result) => self.complete(id, Flow::SecureCall, result),
            (None, Err(reason)) => self.fail(None, Flow::SecureCall, reason),
            (
                None,
                Ok(Outcome::UsageSent {
                    ids,
                    duplicates,
                    charged,
                    withheld,
                    ..
                }),
            ) => {
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                self.event(super::PneEvent::UsageSent {
                    sent: count(ids.len()),
                    duplicates,
                    charged,
                    withheld: count(withheld.len()),
                });
            }
            (None, Ok(_)) => {}
        }
    }

    /// Starts the PNE's own turns once the link is in use.
    pub(super) fn usage_clock(&mut self, now: Instant) {
        if let (Some(every), None) = (self.cfg.usage_every, self.usage.next) {
            self.usage.next = Some(now + every);
        }
    }

    /// The PNE's own turn: the driver loads what there is to send.
    pub(super) fn usage_timeouts(&mut self, now: Instant) {
        let (Some(every), Some(next)) = (self.cfg.usage_every, self.usage.next) else {
            return;
        };
        if next > now {
            return;
        }
        self.usage.next = Some(now + every);
        // Only with a secure session, and nothing of its own or a command's under way.
        if self.session.is_none() || self.usage.loading.is_some() || self.usage.in_flight.is_some()
        {
            return;
        }
        let token = self.tokens.next();
        self.usage.loading = Some(token);
        self.out.push_back(PneOutput::LoadUsage { token });
    }

    /// When the PNE's own turn comes.
    pub(super) fn usage_deadline(&self) -> Option<Instant> {
        self.usage.next
    }
}
