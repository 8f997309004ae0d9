//! PN GW election (002 §B.1.1.1 steps 1-7): two PNEs that meet with no PN GW discover each
//! other, exchange device capabilities, and each computes which of them suits the PN GW role
//! best with the same rule ([`score`], [`elect`]); the winner switches to PN GW mode and
//! announces it (GatewayAnnouncement), the other follows it. The rule is in
//! docs/pn-lifecycle.md, "GW election".
//!
//! The machine runs on the one PAN link between the two devices, plain (002 §B.1.1 assumes
//! the devices paired; nothing here is secret and nothing here grants anything: the winner
//! still has to authenticate to the CPNS Server as a PN GW, and the other to it as a PNE).

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::time::Instant;

use cpns_wire::{
    Address, Body, DeviceCapabilities, DeviceCapabilitiesConfirm, DeviceCapabilitiesUpdate,
    EntityDiscoveryRequest, EntityDiscoveryResponse, EntityId, Envelope, ErrorBody, ErrorCode,
    GatewayAnnouncement, Mode, MsgKind,
};

use crate::link::LinkCodec;
use crate::util::MsgIds;
use crate::{Failure, ProtoError};

/// How suited a device is to the PN GW role (002 §B.1.1.1 step 5): its best WAN bearer first,
/// then mains power, then its battery, processor and memory.
///
/// `1000 × wan + 100 × mains + battery + 10 × cpu_class + 10 × memory_class`, where `wan` is
/// 3 for a wired network (`ethernet`, `wired`, `lan`, `fiber`), 2 for WLAN (`wlan`, `wifi`),
/// 1 for a cellular one (`lte`, `5g`, `nr`, `umts`, `gsm`, `cellular`) and 0 for none; a
/// device without `battery_pct` is on mains and counts a full battery. A device that is not
/// `gateway_capable` scores 0 and is never elected.
pub fn score(c: &DeviceCapabilities) -> u32 {
    if !c.gateway_capable {
        return 0;
    }
    let wan = c.networks.iter().map(|n| bearer(n)).max().unwrap_or(0);
    let (mains, battery) = match c.battery_pct {
        None => (1, 100),
        Some(p) => (0, u32::from(p.min(100))),
    };
    let class = |v: Option<u8>| u32::from(v.unwrap_or(0).min(3));
    1000 * wan + 100 * mains + battery + 10 * class(c.cpu_class) + 10 * class(c.memory_class)
}

/// A network name's WAN class: 3 wired, 2 WLAN, 1 cellular, 0 none (a PAN bearer).
fn bearer(name: &str) -> u32 {
    match name.to_ascii_lowercase().as_str() {
        "ethernet" | "wired" | "lan" | "fiber" => 3,
        "wlan" | "wifi" | "wi-fi" => 2,
        "lte" | "5g" | "nr" | "umts" | "gsm" | "cellular" | "3g" | "4g" => 1,
        _ => 0,
    }
}

/// The device to become PN GW among `candidates`: the highest [`score`]; a tie goes to the
/// smallest entity id in byte order, so every device names the same one. `None` when no
/// candidate is gateway capable.
pub fn elect<'a>(
    candidates: impl IntoIterator<Item = (&'a EntityId, &'a DeviceCapabilities)>,
) -> Option<&'a EntityId> {
    candidates
        .into_iter()
        .filter(|(_, c)| c.gateway_capable)
        .max_by_key(|(id, c)| (score(c), Reverse(id.as_str().as_bytes())))
        .map(|(id, _)| id)
}

/// How an election ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This device won (step 6): the driver starts the PN GW role; the other is told (step 7).
    BecomeGateway {
        /// The other device, which follows.
        peer: EntityId,
    },
    /// The peer is the PN GW, elected (step 7) or already one (discovery said so).
    Follow {
        /// The PN GW.
        gateway: EntityId,
        /// Where to reach it as a PN GW, as it said.
        pan_address: Option<String>,
    },
    /// Neither device can be a PN GW.
    NoGateway,
    /// The election did not end: the peer went silent or broke the rules.
    Failed(Failure),
}

/// What the machine asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionOutput {
    /// Send this frame to the peer.
    Transmit(Vec<u8>),
    /// The election ended.
    Done(Outcome),
}

/// This device's part in an election on one PAN link.
#[derive(Debug)]
pub struct Election {
    me: EntityId,
    caps: DeviceCapabilities,
    /// Where this device will take PNEs if it wins (the driver's PAN listener).
    pan_address: Option<String>,
    codec: LinkCodec,
    ids: MsgIds,
    peer: Option<EntityId>,
    peer_caps: Option<DeviceCapabilities>,
    /// The computed winner, once both sides are known.
    winner: Option<Option<EntityId>>,
    deadline: Option<Instant>,
    done: bool,
    out: VecDeque<ElectionOutput>,
}

impl Election {
    /// An election of `me` with capabilities `caps`; `pan_address` is announced if it wins.
    pub fn new(
        me: EntityId,
        caps: DeviceCapabilities,
        pan_address: Option<String>,
        max_frame: u32,
    ) -> Self {
        Self {
            me,
            caps,
            pan_address,
            codec: LinkCodec::new(max_frame),
            ids: MsgIds::default(),
            peer: None,
            peer_caps: None,
            winner: None,
            deadline: None,
            done: false,
            out: VecDeque::new(),
        }
    }

    /// This device.
    pub fn me(&self) -> &EntityId {
        &self.me
    }

    /// The other device, once it said who it is.
    pub fn peer(&self) -> Option<&EntityId> {
        self.peer.as_ref()
    }

    /// Steps 1 and 3: announce this device and its capabilities; the election must end within
    /// `wait`. Like a PNE's first discovery (000 §6.4 note 1), they go out before the peer's id
    /// is known, addressed as a PNE addresses its first request.
    pub fn start(&mut self, now: Instant, wait: std::time::Duration) -> Result<(), ProtoError> {
        self.deadline = Some(now + wait);
        let me = Address::Entity(self.me.clone());
        let discovery = EntityDiscoveryRequest {
            entity_id: self.me.clone(),
            mode: Mode::Pne,
        };
        let env = Envelope::request(self.ids.next(), me.clone(), Address::Server, discovery);
        self.transmit(&env)?;
        let caps = DeviceCapabilitiesUpdate {
            capabilities: self.caps.clone(),
            entity: None,
        };
        let env = Envelope::request(self.ids.next(), me, Address::Server, caps);
        self.transmit(&env)
    }

    /// A frame from the peer.
    pub fn handle_frame(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), ProtoError> {
        let _ = now;
        if self.done {
            return Ok(());
        }
        let env = self.codec.decode(frame)?;
        let Address::Entity(from) = env.from.clone() else {
            return self.fail("the peer does not say who it is");
        };
        if from == self.me {
            return self.fail("the peer claims this device's own id");
        }
        match &self.peer {
            Some(p) if *p != from => return self.fail("the peer changed its id"),
            Some(_) => {}
            None => self.peer = Some(from.clone()),
        }
        match env.body.clone() {
            // Step 2: discovery is mutual.
            Body::EntityDiscoveryRequest(m) => {
                if m.entity_id != from {
                    return self.fail("the peer's discovery names another id");
                }
                let answer = EntityDiscoveryResponse {
                    mode: Mode::Pne,
                    entity_id: self.me.clone(),
                    zone_support: false,
                    pns: Vec::new(),
                };
                self.answer(&env, from, answer)?;
                if m.mode == Mode::Gateway {
                    // A PN GW already: no election.
                    return self.finish(Outcome::Follow {
                        gateway: m.entity_id,
                        pan_address: None,
                    });
                }
            }
            // Step 4: the peer's capabilities.
            Body::DeviceCapabilitiesUpdate(m) => {
                self.peer_caps = Some(m.capabilities);
                self.answer(&env, from, DeviceCapabilitiesConfirm {})?;
            }
            // Step 7: the winner's new capabilities and mode.
            Body::GatewayAnnouncement(m) => return self.on_announcement(m, &from),
            Body::ErrorBody(e) => {
                self.done = true;
                self.out
                    .push_back(ElectionOutput::Done(Outcome::Failed(Failure::Refused(e))));
                return Ok(());
            }
            _ if env.kind == MsgKind::Request => {
                let e = ErrorBody::new(ErrorCode::WrongState, "an election is running");
                self.answer(&env, from, e)?;
            }
            _ => {}
        }
        self.decide()
    }

    /// Step 5, once both devices are known; step 6 for the winner.
    fn decide(&mut self) -> Result<(), ProtoError> {
        let (Some(peer), Some(peer_caps), None) = (&self.peer, &self.peer_caps, &self.winner)
        else {
            return Ok(());
        };
        let winner = elect([(&self.me, &self.caps), (peer, peer_caps)]).cloned();
        self.winner = Some(winner.clone());
        match winner {
            None => self.finish(Outcome::NoGateway),
            Some(w) if w == self.me => {
                let peer = peer.clone();
                let note = GatewayAnnouncement {
                    gateway: self.me.clone(),
                    mode: Mode::Gateway,
                    capabilities: self.caps.clone(),
                    pan_address: self.pan_address.clone(),
                };
                let env = Envelope::notify(
                    self.ids.next(),
                    Address::Entity(self.me.clone()),
                    Address::Entity(peer.clone()),
                    note,
                );
                self.transmit(&env)?;
                self.finish(Outcome::BecomeGateway { peer })
            }
            // The peer won: its announcement follows.
            Some(_) => Ok(()),
        }
    }

    /// Step 7 at the other device: followed only if it names the device this one elected.
    fn on_announcement(
        &mut self,
        m: GatewayAnnouncement,
        from: &EntityId,
    ) -> Result<(), ProtoError> {
        let expected = match &self.winner {
            Some(Some(w)) => w == from && m.gateway == *from,
            // Before this device could decide: the peer announces without having shown its
            // capabilities, or too early to check.
            _ => false,
        };
        if !expected || m.mode != Mode::Gateway {
            return self.fail("the peer announced itself PN GW against the election's rule");
        }
        self.finish(Outcome::Follow {
            gateway: m.gateway,
            pan_address: m.pan_address,
        })
    }

    /// The election's deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.done && self.deadline.is_some_and(|d| d <= now) {
            self.done = true;
            self.out
                .push_back(ElectionOutput::Done(Outcome::Failed(Failure::TimedOut)));
        }
    }

    /// The deadline, while the election runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| !self.done)
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<ElectionOutput> {
        self.out.pop_front()
    }

    fn answer(
        &mut self,
        env: &Envelope,
        to: EntityId,
        body: impl Into<Body>,
    ) -> Result<(), ProtoError> {
        let answer = Envelope::response(
            self.ids.next(),
            env.msg_id,
            Address::Entity(self.me.clone()),
            Address::Entity(to),
            body,
        );
        self.transmit(&answer)
    }

    fn transmit(&mut self, env: &Envelope) -> Result<(), ProtoError> {
        let frame = self.codec.encode(env)?;
        self.out.push_back(ElectionOutput::Transmit(frame));
        Ok(())
    }

    fn finish(&mut self, outcome: Outcome) -> Result<(), ProtoError> {
        self.done = true;
        self.out.push_back(ElectionOutput::Done(outcome));
        Ok(())
    }

    fn fail(&mut self, why: &str) -> Result<(), ProtoError> {
        let e = ErrorBody::new(ErrorCode::BadRequest, why);
        self.finish(Outcome::Failed(Failure::Refused(e)))
    }
}

#[cfg(test)]
#[path = "election_tests.rs"]
mod tests;
