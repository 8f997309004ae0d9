//! The relay of PNE<->server traffic by the routing table (003 §1.4.1 step 3 and step 4, 002
//! §B.1.1.3 step 22): requests and responses crossing the PN GW keep their meaning but get the
//! message ids of the session they travel on, and the relay maps them back. Sealed payloads (a
//! Secure Request, a registration grant, a PN Key Response) pass through unread. Registration
//! itself is [`super::register`].

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_wire::{
    Address, Body, EntityId, Envelope, ErrorBody, ErrorCode, InventoryMember, MsgKind, PnId,
};

use super::register::{JoinStored, PendingRegistration};
use super::{Gateway, GatewayEvent, LinkId, Parked};

/// A PNE request forwarded to the server, awaiting the server's answer.
#[derive(Debug)]
struct Up {
    link: LinkId,
    pan_msg: u64,
    /// The PN and the member a registration adds once the server authenticated the PNE.
    joining: Option<(PnId, InventoryMember)>,
    deadline: Instant,
}

/// Correlation of relayed messages.
#[derive(Debug, Default)]
pub(super) struct Relays {
    /// WAN msg id of a forwarded PNE request → where its answer goes.
    up: BTreeMap<u64, Up>,
    /// (link, PAN msg id) of a forwarded server request → the server's msg id.
    down: BTreeMap<(LinkId, u64), u64>,
    /// WAN msg id of a PN Update Request → the registration waiting for it.
    pub(super) updates: BTreeMap<u64, PendingRegistration>,
}

impl Relays {
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.up
            .values()
            .map(|u| u.deadline)
            .chain(self.updates.values().map(|p| p.deadline))
    }

    /// Relayed requests in progress (requests relayed down are the server's flows, not ours).
    pub(super) fn len(&self) -> usize {
        self.up.len() + self.updates.len()
    }

    /// Relayed requests in progress that `link` started.
    pub(super) fn of_link(&self, link: LinkId) -> usize {
        self.up.values().filter(|u| u.link == link).count()
            + self.updates.values().filter(|p| p.link == link).count()
    }

    pub(super) fn forget_link(&mut self, link: LinkId) {
        self.up.retain(|_, u| u.link != link);
        self.down.retain(|(l, _), _| *l != link);
        self.updates.retain(|_, p| p.link != link);
    }
}

/// The answer to a PNE that asks for something in its name on a link that has not proved it.
pub(super) const PROVE_FIRST: &str =
    "prove who you are first (PN GW authentication with a LocalEUKey of this PNE)";

impl Gateway {
    /// A PNE's request for the server that the PN GW relays as it is, on a link that proved
    /// the PNE: a Secure Request (003 §1.4.1 step 4), sealed end to end, a PN Key Request (002
    /// §B.1.1.3 step 22), whose answer is sealed for the PNE alone, a status query or
    /// subscription (004 §5.5.3).
    pub(super) fn on_pne_request_for_server(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        body: impl Into<Body>,
    ) {
        let Address::Entity(pne) = env.from.clone() else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::BadRequest,
                "a request for the server names its PNE",
            );
        };
        // Nothing is relayed in a PNE's name from a link that has not proved that PNE, whatever
        // it carries (docs/security.md §6, "Identity on the PAN"): only a registration, which
        // is how a PNE comes to prove itself, goes up from an unproven link.
        if !self.link_proved(link, &pne) {
            return self.reject_pan(link, env, ErrorCode::Forbidden, PROVE_FIRST);
        }
        if self.admit_pne_request(link, env, &pne) {
            self.forward_up(now, link, env.msg_id, &pne, body.into(), None);
        }
    }

    /// Whether `link` proved it is `pne`.
    pub(super) fn link_proved(&self, link: LinkId, pne: &EntityId) -> bool {
        self.links
            .get(&link)
            .is_some_and(|l| l.proven && l.peer.as_ref() == Some(pne))
    }

    /// Whether a request `pne` sends on `link` for the server may go on: the link speaks as
    /// that PNE, the WAN is up, and the flow limits allow it. Refused requests are answered.
    pub(super) fn admit_pne_request(
        &mut self,
        link: LinkId,
        env: &Envelope,
        pne: &EntityId,
    ) -> bool {
        let refusal = if !self.identify(link, pne) {
            Some((ErrorCode::Forbidden, "a PNE speaks only for itself"))
        } else if !self.wan_ready() {
            Some((
                ErrorCode::Busy,
                "the PN GW has no connection to the CPNS Server",
            ))
        } else {
            self.over_limit(link).map(|r| (ErrorCode::Busy, r))
        };
        match refusal {
            Some((code, reason)) => {
                self.reject_pan(link, env, code, reason);
                false
            }
            None => true,
        }
    }

    /// §1.4.2 step 4 (answer) → 5: the server proposes the PNE as a member; register it on its
    pub(super) fn forward_up(
        &mut self,
        now: Instant,
        link: LinkId,
        pan_msg: u64,
        pne: &EntityId,
        body: impl Into<Body>,
        joining: Option<(PnId, InventoryMember)>,
    ) {
        let env = Envelope::request(
            self.ids.next(),
            Address::Entity(pne.clone()),
            Address::Server,
            body,
        );
        if !self.transmit_wan(&env) {
            let e = ErrorBody::new(
                ErrorCode::BadRequest,
                "the request is larger than the CPNS Server accepts",
            );
            return self.send_pan_response(link, pan_msg, e);
        }
        let deadline = now + self.cfg.timeouts.flow;
        self.relays.up.insert(
            env.msg_id,
            Up {
                link,
                pan_msg,
                joining,
                deadline,
            },
        );
    }

    /// Server traffic addressed to a PNE: relay it on the PNE's link (003 §1.4.1 step 4).
    pub(super) fn relay_down(&mut self, _now: Instant, env: Envelope) {
        let Address::Entity(pne) = env.to.clone() else {
            return;
        };
        let Some(&link) = self.routes.get(&pne) else {
            if env.kind == MsgKind::Request {
                let e = ErrorBody::new(ErrorCode::NotFound, format!("no route to {pne}"));
                self.send_wan_response(env.msg_id, e);
            }
            return;
        };
        let msg_id = self.ids.next();
        let relayed = match env.kind {
            MsgKind::Response => {
                let Some(up) = env.in_reply_to.and_then(|r| self.relays.up.remove(&r)) else {
                    return;
                };
                if up.link != link {
                    return;
                }
                let mut env = env;
                let mut epoch = None;
                let mut keys = Vec::new();
                let mut server_inventory = None;
                if let Body::MembershipEnded(m) = &env.body {
                    // The departed member hears the server's word: its kept key goes.
                    self.drop_departed(m.pn_id, &pne);
                }
                if let Body::GroupKeyResponse(r) = &env.body {
                    // Step 24: the membership and key go on to the PNE; the epoch is the one
                    // it will confirm (step 25).
                    let (pn_id, e) = (r.inventory.pn_id, r.epoch);
                    self.saw_epoch(&pn_id, e);
                }
                let registered = match &mut env.body {
                    Body::PneRegistrationResponse(r) => {
                        // The other members' copies, and the list they name, are for the PN GW
                        // to keep and hand on, not for the registering PNE.
                        epoch = r.epoch;
                        keys = std::mem::take(&mut r.keys);
                        server_inventory = r.inventory.take();
                        Some(r.cpns_id.clone())
                    }
                    _ => None,
                };
                let answer = Envelope {
                    msg_id,
                    in_reply_to: Some(up.pan_msg),
                    ..env
                };
                if let Some(cpns_id) = registered {
                    // The server authenticated the PNE by what this link relayed, which came
                    // only from a link that proved the PNE: a kept answer re-sent for a retry
                    // reaches no other link, and it changes nothing here.
                    if !self.link_proved(link, &pne) {
                        let e = ErrorBody::new(ErrorCode::Forbidden, PROVE_FIRST);
                        return self.send_pan_response(link, up.pan_msg, e);
                    }
                    self.event(GatewayEvent::PneRegistered {
                        pne: pne.clone(),
                        cpns_id,
                    });
                    let pn_id = match &answer.body {
                        Body::PneRegistrationResponse(r) => r.pn_id,
                        _ => return,
                    };
                    let rekeyed = self.keep_registration_key(link, &pn_id);
                    // §1.4.2 step 5: an authenticated joining PNE enters the local inventory
                    // before it is told; a member's new LocalEUKey is stored first too.
                    let joining = up.joining.filter(|(p, _)| *p == pn_id);
                    if (joining.is_some() || rekeyed)
                        && let Some(pn) = self.pns.get_mut(&pn_id)
                    {
                        let joined = joining.is_some();
                        if let Some((_, member)) = joining {
                            // The server's member list of the PN when it has one (it does
                            // for a join), else the member added to the local one.
                            match server_inventory.filter(|i| i.pn_id == pn_id) {
                                Some(inventory) => pn.state.inventory = inventory,
                                None if !pn.state.inventory.members.contains(&member) => {
                                    pn.state.inventory.members.push(member);
                                }
                                None => {}
                            }
                        }
                        let state = pn.state.clone();
                        let stored = JoinStored {
                            pn_id,
                            pne: pne.clone(),
                            link,
                            answer,
                            epoch,
                            keys,
                            joined,
                        };
                        return self.persist(Parked::MemberAdded(Box::new(stored)), state);
                    }
                }
                answer
            }
            MsgKind::Request => {
                let mut env = env;
                if let Body::AuthenticationRequest(m) = &mut env.body {
                    // A registration's challenge goes to the link that asked, proven or not
                    // (it is how a PNE comes to prove itself), with the PNE's LocalEUKey copy.
                    if let Err(e) = self.take_registration_key(link, &pne, m) {
                        return self.send_wan_response(env.msg_id, e);
                    }
                } else if !self.link_proved(link, &pne) {
                    let e = ErrorBody::new(
                        ErrorCode::NotFound,
                        format!("no link that proved it is {pne}"),
                    );
                    return self.send_wan_response(env.msg_id, e);
                }
                self.relays.down.insert((link, msg_id), env.msg_id);
                Envelope {
                    msg_id,
                    in_reply_to: None,
                    ..env
                }
            }
            // What the server tells a PNE reaches only a link that proved it.
            _ if !self.link_proved(link, &pne) => return,
            _ => Envelope {
                msg_id,
                in_reply_to: None,
                ..env
            },
        };
        self.transmit_pan(link, &relayed);
    }

    /// A PNE's answer to a relayed server request: relay it to the server, from a link that
    /// proved the PNE (a registering PNE proves itself before it answers the challenge).
    pub(super) fn relay_up_response(&mut self, _now: Instant, link: LinkId, env: &Envelope) {
        let proved = match &env.from {
            Address::Entity(pne) => self.link_proved(link, pne),
            Address::Server => false,
        };
        if !proved {
            return self.reject_pan(link, env, ErrorCode::Forbidden, PROVE_FIRST);
        }
        let Some(server_msg) = env
            .in_reply_to
            .and_then(|r| self.relays.down.remove(&(link, r)))
        else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "not an answer to a relayed request",
            );
        };
        let relayed = Envelope {
            msg_id: self.ids.next(),
            in_reply_to: Some(server_msg),
            ..env.clone()
        };
        if !self.transmit_wan(&relayed) {
            let e = ErrorBody::new(
                ErrorCode::BadRequest,
                "the PNE's answer is larger than the CPNS Server accepts",
            );
            self.send_wan_response(server_msg, e);
        }
    }

    /// An error from a PNE: it answers an invitation, an authentication or a relayed request.
    pub(super) fn on_pan_error(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        e: ErrorBody,
    ) {
        let Some(reply_to) = env.in_reply_to else {
            return;
        };
        if self.invite_refused(link, reply_to, &e) {
            return;
        }
        if self.relays.down.contains_key(&(link, reply_to)) {
            return self.relay_up_response(now, link, env);
        }
        // A PNE that answers its invitation or authentication with an error is left out;
        // an error answering anything else ends nothing.
        let answers_flow = self.forming_awaits(link, reply_to);
        if let Some(pne) = self
            .links
            .get(&link)
            .and_then(|l| l.peer.clone())
            .filter(|_| answers_flow)
        {
            self.pne_gone(now, &pne);
        }
    }

    /// The server refused a relayed request or a PN update: tell the PNE.
    pub(super) fn relay_wan_error(&mut self, _now: Instant, reply_to: u64, e: ErrorBody) {
        if let Some(up) = self.relays.up.remove(&reply_to) {
            self.send_pan_response(up.link, up.pan_msg, e);
        } else if let Some(p) = self.relays.updates.remove(&reply_to) {
            let err = ErrorBody::new(
                e.code,
                format!(
                    "the CPNS Server refused to add the PNE to the PN: {}",
                    e.reason
                ),
            );
            self.send_pan_response(p.link, p.pan_msg, err);
            self.invitee_refused(p.pn_id, &p.req.pne_id, e);
        }
    }

    pub(super) fn relays_wan_lost(&mut self, _now: Instant) {
        let up: Vec<Up> = std::mem::take(&mut self.relays.up).into_values().collect();
        let updates: Vec<PendingRegistration> = std::mem::take(&mut self.relays.updates)
            .into_values()
            .collect();
        self.relays.down.clear();
        let lost = || {
            ErrorBody::new(
                ErrorCode::Busy,
                "the PN GW lost its connection to the CPNS Server",
            )
        };
        for u in up {
            self.send_pan_response(u.link, u.pan_msg, lost());
        }
        for p in updates {
            self.send_pan_response(p.link, p.pan_msg, lost());
        }
    }

    pub(super) fn relay_timeouts(&mut self, now: Instant) {
        let timeout =
            || ErrorBody::new(ErrorCode::Timeout, "the CPNS Server did not answer in time");
        let ups = crate::util::take_expired(&mut self.relays.up, now, |u| u.deadline);
        let updates = crate::util::take_expired(&mut self.relays.updates, now, |p| p.deadline);
        let waiting = ups
            .into_iter()
            .map(|(_, u)| (u.link, u.pan_msg))
            .chain(updates.into_iter().map(|(_, p)| (p.link, p.pan_msg)));
        for (link, pan_msg) in waiting.collect::<Vec<_>>() {
            self.send_pan_response(link, pan_msg, timeout());
        }
    }
}
