//! A PNE's capabilities and status (004 §5.5.1, §5.5.3; docs/device-status.md): it reports
//! its capabilities when they change (a static change or a battery crossing its alert level at
//! once, dynamic-only changes at most once per `dynamic_interval`, the latest values), sets its
//! own status, answers its PN GW's capability queries, asks the server for statuses and
//! subscribes through its PN GW, and sends Heartbeats so its PN GW knows it is there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpns_wire::{
    Address, CapabilitiesAnswer, CapabilitiesQuery, DeviceCapabilities, DeviceCapabilitiesUpdate,
    EntityId, Envelope, ErrorBody, Heartbeat, RequestId, Status, StatusEntry, StatusPolicy,
    StatusQuery, StatusReport, StatusSubscribe, StatusUnsubscribe,
};

use super::{Outcome, PneEvent, PneSession};
use crate::{CommandError, CommandId, Failure, Flow};

/// What a request of this module waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    Capabilities,
    Status,
    Query,
    Subscribe,
    Unsubscribe(u64),
}

/// The PNE's reporting state.
#[derive(Debug, Default)]
pub(super) struct Reporting {
    next_heartbeat: Option<Instant>,
    /// The capabilities last sent, and when.
    sent: Option<(DeviceCapabilities, Instant)>,
    /// When the coalesced dynamic report is due.
    due: Option<Instant>,
    /// Requests waiting for their answer, by message id, with their deadline and command
    /// (`None` for a report the PNE made by itself).
    waits: BTreeMap<u64, (Asked, Instant, Option<CommandId>)>,
}

impl PneSession {
    /// Starts the heartbeat clock once the link is in use.
    pub(super) fn link_in_use(&mut self, now: Instant) {
        self.usage_clock(now);
        if self.reporting.next_heartbeat.is_none() {
            self.reporting.next_heartbeat = self.cfg.heartbeat.map(|every| now + every);
        }
    }

    /// The device's capabilities changed: reported now, or coalesced (see the module docs).
    /// Refused, and nothing changes, if they are over their bounds. Completes with
    /// [`Outcome::Capabilities`]: once the PN GW confirmed the report carrying them, or at once
    /// when they go with a later report.
    pub fn set_capabilities(
        &mut self,
        now: Instant,
        caps: DeviceCapabilities,
    ) -> Result<CommandId, CommandError> {
        caps.check().map_err(CommandError::InvalidCapabilities)?;
        let id = self.commands.next();
        self.cfg.capabilities = caps;
        let at_once = match &self.reporting.sent {
            None => true,
            Some((sent, at)) => {
                sent.static_differs(&self.cfg.capabilities)
                    || self.battery_alert(sent)
                    || *at + self.cfg.dynamic_interval <= now
            }
        };
        let unchanged = self
            .reporting
            .sent
            .as_ref()
            .is_some_and(|(sent, _)| *sent == self.cfg.capabilities);
        if unchanged {
            self.reporting.due = None;
        } else if at_once {
            self.send_capabilities(now, Some(id));
            return Ok(id);
        } else if self.reporting.due.is_none() {
            let at = self.reporting.sent.as_ref().map_or(now, |(_, at)| *at);
            self.reporting.due = Some(at + self.cfg.dynamic_interval);
        }
        let kept = Outcome::Capabilities { reported: false };
        self.complete(id, Flow::StatusManagement, Ok(kept));
        Ok(id)
    }

    /// Whether the battery went below the alert level since `sent` (a threshold crossed is
    /// reported at once, 004 §5.5.3.2).
    fn battery_alert(&self, sent: &DeviceCapabilities) -> bool {
        let Some(alert) = self.cfg.battery_alert else {
            return false;
        };
        let was = sent.battery_pct.is_none_or(|b| b >= alert);
        let now = self.cfg.capabilities.battery_pct.is_some_and(|b| b < alert);
        was && now
    }

    /// Sends the current capabilities to the PN GW, by itself.
    pub(super) fn report_capabilities(&mut self, now: Instant) {
        self.send_capabilities(now, None);
    }

    /// Sends the current capabilities to the PN GW, for command `cmd` or by itself.
    fn send_capabilities(&mut self, now: Instant, cmd: Option<CommandId>) {
        self.link_in_use(now);
        let update = DeviceCapabilitiesUpdate {
            capabilities: self.cfg.capabilities.clone(),
            entity: None,
        };
        let to = self.peer();
        let msg = self.send_proven(now, None, to, update);
        self.reporting.sent = Some((self.cfg.capabilities.clone(), now));
        self.reporting.due = None;
        self.wait(now, msg, Asked::Capabilities, cmd);
    }

    /// Sets this PNE's own status (busy, online, or a custom one with `label`). Completes with
    /// [`Outcome::StatusReported`] once the server recorded it.
    pub fn set_status(
        &mut self,
        now: Instant,
        status: Status,
        label: Option<String>,
    ) -> Result<CommandId, CommandError> {
        let invalid = |why: &str| Err(CommandError::InvalidStatus(why.into()));
        match (status, &label) {
            (Status::Offline, _) => return invalid("a PNE that speaks is not offline"),
            (Status::Custom, None) => return invalid("a custom status has a label"),
            (Status::Custom, Some(l)) if l.is_empty() || l.len() > 64 => {
                return invalid("a custom status's label is 1 to 64 bytes");
            }
            (s, Some(_)) if s != Status::Custom => {
                return invalid("only a custom status has a label");
            }
            _ => {}
        }
        self.link_in_use(now);
        let mut entry = StatusEntry::new(self.cfg.id.clone(), status);
        entry.label = label;
        let to = self.peer();
        let report = StatusReport {
            entries: vec![entry],
        };
        let msg = self.send_proven(now, None, to, report);
        Ok(self.wait_command(now, msg, Asked::Status))
    }

    /// Asks the server for the status of `entities` (none: every device of this PNE's user).
    /// Completes with [`Outcome::Statuses`].
    pub fn query_status(&mut self, now: Instant, entities: Vec<EntityId>) -> CommandId {
        self.link_in_use(now);
        let msg = self.send_proven(now, None, Address::Server, StatusQuery { entities });
        self.wait_command(now, msg, Asked::Query)
    }

    /// Subscribes to the status of `entities` (none: every device of this PNE's user).
    /// Completes with [`Outcome::Subscribed`]; the notifications come as
    /// [`PneEvent::StatusNotified`].
    pub fn subscribe_status(
        &mut self,
        now: Instant,
        entities: Vec<EntityId>,
        policy: StatusPolicy,
    ) -> CommandId {
        self.link_in_use(now);
        let req = StatusSubscribe {
            request_id: RequestId(self.rng.u64()),
            entities,
            policy,
        };
        let msg = self.send_proven(now, None, Address::Server, req);
        self.wait_command(now, msg, Asked::Subscribe)
    }

    /// Ends a subscription. Completes with [`Outcome::Unsubscribed`].
    pub fn unsubscribe_status(&mut self, now: Instant, subscription: u64) -> CommandId {
        self.link_in_use(now);
        let msg = self.send_proven(
            now,
            None,
            Address::Server,
            StatusUnsubscribe { subscription },
        );
        self.wait_command(now, msg, Asked::Unsubscribe(subscription))
    }

    fn wait(&mut self, now: Instant, msg: u64, asked: Asked, cmd: Option<CommandId>) {
        let deadline = now + self.cfg.timeouts.flow;
        self.reporting.waits.insert(msg, (asked, deadline, cmd));
    }

    /// Waits for `msg`'s answer as a new command's flow; the command's id.
    fn wait_command(&mut self, now: Instant, msg: u64, asked: Asked) -> CommandId {
        let id = self.commands.next();
        self.wait(now, msg, asked, Some(id));
        id
    }

    /// An answer to one of this module's requests; false if it answers none.
    pub(super) fn on_status_answer(&mut self, env: &Envelope) -> bool {
        let Some((asked, _, cmd)) = env
            .in_reply_to
            .and_then(|r| self.reporting.waits.remove(&r))
        else {
            return false;
        };
        let result = match (&env.body, asked) {
            (cpns_wire::Body::DeviceCapabilitiesConfirm(_), Asked::Capabilities) => {
                Ok(Outcome::Capabilities { reported: true })
            }
            (cpns_wire::Body::StatusAck(_), Asked::Status) => Ok(Outcome::StatusReported),
            (cpns_wire::Body::StatusAnswer(a), Asked::Query) => {
                Ok(Outcome::Statuses(a.entries.clone()))
            }
            (cpns_wire::Body::StatusSubscribed(s), Asked::Subscribe) => Ok(Outcome::Subscribed {
                subscription: s.subscription,
                entries: s.entries.clone(),
            }),
            (cpns_wire::Body::StatusAck(_), Asked::Unsubscribe(id)) => {
                Ok(Outcome::Unsubscribed(id))
            }
            _ => Err(Failure::Unexpected(env.body.name())),
        };
        match (cmd, result) {
            (Some(id), result) => self.complete(id, Flow::StatusManagement, result),
            (None, Ok(_)) => self.event(PneEvent::CapabilitiesReported),
            (None, Err(reason)) => self.fail(None, Flow::StatusManagement, reason),
        }
        true
    }

    /// An error answering one of this module's requests; false if it answers none.
    pub(super) fn status_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some((asked, _, cmd)) = self.reporting.waits.remove(&reply_to) else {
            return false;
        };
        if asked == Asked::Capabilities {
            // Not taken: the next change reports again.
            self.reporting.sent = None;
        }
        self.fail(cmd, Flow::StatusManagement, Failure::Refused(e.clone()));
        true
    }

    /// The PN GW relays the server's Capabilities Query: this PNE answers for itself.
    pub(super) fn on_capabilities_query(&mut self, env: &Envelope, q: CapabilitiesQuery) {
        if q.entity != self.cfg.id {
            return self.reject(env, cpns_wire::ErrorCode::NotFound, "not this PNE");
        }
        let answer = CapabilitiesAnswer {
            entity: self.cfg.id.clone(),
            capabilities: self.cfg.capabilities.clone(),
        };
        let resp = self.response(env.msg_id, env.from.clone(), answer);
        self.transmit(&resp);
    }

    /// Heartbeats, the coalesced capabilities report and request deadlines.
    pub(super) fn status_timeouts(&mut self, now: Instant) {
        if let Some(due) = self.reporting.next_heartbeat.filter(|d| *d <= now) {
            self.send_notify(Heartbeat {});
            let every = self
                .cfg
                .heartbeat
                .unwrap_or(Duration::from_secs(10))
                .max(Duration::from_millis(100));
            let mut next = due + every;
            if next <= now {
                next = now + every;
            }
            self.reporting.next_heartbeat = Some(next);
        }
        if self.reporting.due.is_some_and(|d| d <= now) {
            self.report_capabilities(now);
        }
        let late = crate::util::take_expired(&mut self.reporting.waits, now, |(_, d, _)| *d);
        for (_, (_, _, cmd)) in late {
            self.fail(cmd, Flow::StatusManagement, Failure::TimedOut);
        }
    }

    /// Whether a capabilities report the PNE made by itself waits for its answer.
    pub(super) fn own_report_waiting(&self) -> bool {
        self.reporting
            .waits
            .values()
            .any(|(a, _, cmd)| *a == Asked::Capabilities && cmd.is_none())
    }

    /// The earliest deadline of this module.
    pub(super) fn status_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.reporting
            .next_heartbeat
            .into_iter()
            .chain(self.reporting.due)
            .chain(self.reporting.waits.values().map(|(_, d, _)| *d))
    }
}
