//! The load generator's PN GWs and PNEs: the project's own machines (`cpns-proto`), a PN GW with
//! its PAN in memory. [`SimGateway`] runs PNE-initiated establishments of two PNEs on an
//! insecure (`cpns`) PAN, so every establishment assigns LocalEUKeys (000 §6.6.1.1 steps 1-15);
//! its WAN side is left to the caller: frames out in [`SimGateway::take_wan`], frames in through
//! [`SimGateway::handle_wan_frame`]. The networked bench puts TLS to the real server there; the
//! in-memory ceiling ([`crate::memory`]) puts a `ServerSession` there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpns_crypto::{EuKey, MachineRng};
use cpns_proto::gateway::{Gateway, GatewayConfig, GatewayEvent, GatewayOutput, LinkId};
use cpns_proto::link::frame_body_mut;
use cpns_proto::pne::{PneConfig, PneEvent, PneOutput, PneSession};
use cpns_proto::{PanSecurity, ProtoError, Timeouts};
use cpns_wire::{DeviceCapabilities, EntityId, PnId, SetupType};

/// One enrolled entity the bench drives: its id and EUKey.
#[derive(Clone)]
pub struct Device {
    /// The entity id.
    pub id: EntityId,
    /// Its EUKey.
    pub eukey: EuKey,
}

/// A PN GW of the bench and the two PNEs it establishes PNs with.
#[derive(Clone)]
pub struct Household {
    /// The PN GW.
    pub gateway: Device,
    /// The initiating PNE and the invited one.
    pub pnes: [Device; 2],
}

/// How an establishment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The PN was established and stored by the PN GW.
    Established(PnId),
    /// It failed; why.
    Failed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Established(pn) => write!(f, "PN {pn} established"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

const TIMEOUTS: Timeouts = Timeouts {
    invite: Duration::from_secs(10),
    flow: Duration::from_secs(30),
};

fn caps(device: &str, gateway_capable: bool) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device.into(),
        has_ui: !gateway_capable,
        gateway_capable,
        cpu_class: None,
        memory_class: None,
        networks: vec!["wlan".into()],
        ..DeviceCapabilities::default()
    }
}

/// A PN GW machine with a PAN of PNE machines in memory.
pub struct SimGateway {
    gw: Gateway,
    household: Household,
    rng: MachineRng,
    pnes: BTreeMap<u64, PneSession>,
    next_link: u64,
    wan_out: Vec<Vec<u8>>,
    ready: bool,
    outcome: Option<Outcome>,
    failure: Option<String>,
    /// The subscription the server kept for this PN GW, once it answered.
    subscribed: Option<u64>,
    /// Status notifications received, with when (Unix ns), not yet taken.
    notes: Vec<(cpns_wire::StatusNotification, u128)>,
    /// Each PNE's member certificate, when the bench sends group content.
    signing: Vec<Option<cpns_proto::pne::Signing>>,
    /// The links of the last establishment, the initiator's first.
    links: Vec<u64>,
    /// Group content the PNEs took (every check passed), and refused.
    content_taken: u64,
    content_refused: u64,
}

impl SimGateway {
    /// The PN GW of `household`, not connected.
    pub fn new(household: Household, rng: MachineRng) -> Self {
        Self::with_limits(
            household,
            rng,
            cpns_proto::gateway::GatewayLimits::default(),
        )
    }

    /// [`SimGateway::new`] with the PN GW's limits given.
    pub fn with_limits(
        household: Household,
        mut rng: MachineRng,
        limits: cpns_proto::gateway::GatewayLimits,
    ) -> Self {
        let cfg = GatewayConfig {
            capabilities: caps("home-hub", true),
            timeouts: TIMEOUTS,
            limits,
            ..GatewayConfig::new(
                household.gateway.id.clone(),
                household.gateway.eukey.clone(),
            )
        };
        Self {
            gw: Gateway::new(cfg, rng.fork()),
            household,
            rng,
            pnes: BTreeMap::new(),
            next_link: 0,
            wan_out: Vec::new(),
            ready: false,
            outcome: None,
            failure: None,
            subscribed: None,
            notes: Vec::new(),
            signing: Vec::new(),
            links: Vec::new(),
            content_taken: 0,
            content_refused: 0,
        }
    }

    /// Gives the PNEs member certificates of `ca` (as `cpns enroll` does), so they sign and
    /// check group content (docs/security.md §4.11).
    pub fn with_signing(
        mut self,
        ca: &cpns_crypto::CertificationKey,
        owner: &cpns_wire::UserId,
    ) -> Self {
        self.signing = self
            .household
            .pnes
            .iter()
            .map(|d| {
                let key = cpns_crypto::MemberSigningKey::derive(&d.eukey, d.id.as_str());
                let cert = ca.certify(d.id.as_str(), owner.as_str(), &key.public());
                Some(cpns_proto::pne::Signing::new(
                    d.id.clone(),
                    owner.clone(),
                    &d.eukey,
                    cert.signature,
                    ca.public(),
                ))
            })
            .collect();
        self
    }

    /// The initiating PNE of the last establishment sends `content` to its PN (the other PNE);
    /// the content the PNEs took and refused so far.
    pub fn send_content(
        &mut self,
        now: Instant,
        pn: PnId,
        content: Vec<u8>,
    ) -> Result<(u64, u64), ProtoError> {
        let first = self
            .links
            .first()
            .and_then(|l| self.pnes.get_mut(l))
            .ok_or(ProtoError::WrongState("no PNE to send from"))?;
        first
            .send_group_content(now, pn, content)
            .map_err(|_| ProtoError::WrongState("the send was refused"))?;
        self.pump(now);
        Ok((self.content_taken, self.content_refused))
    }

    /// Subscribes this PN GW to `entity`'s status changes (004 §5.5.3.2).
    pub fn subscribe(&mut self, now: Instant, entity: cpns_wire::EntityId) {
        let policy = cpns_wire::StatusPolicy {
            kind: cpns_wire::PolicyKind::OnChange,
            attribute: None,
            crossing: None,
            bound: None,
            period_s: None,
        };
        // Without a session there is nothing to subscribe on: `subscribed` stays `None`.
        let _ = self.gw.subscribe_status(now, vec![entity], policy);
        self.pump(now);
    }

    /// The subscription, once the server kept it.
    pub fn subscribed(&self) -> Option<u64> {
        self.subscribed
    }

    /// Reports this PN GW's own custom status `label`.
    pub fn set_status(&mut self, now: Instant, label: String) {
        let _ = self
            .gw
            .set_status(now, cpns_wire::Status::Custom, Some(label));
        self.pump(now);
    }

    /// The notifications received since the last call, with when (Unix ns).
    pub fn take_notes(&mut self) -> Vec<(cpns_wire::StatusNotification, u128)> {
        std::mem::take(&mut self.notes)
    }

    /// The WAN's TLS session is up (002 §B.1.1.2 step 8).
    pub fn wan_connected(&mut self, now: Instant, exporter: [u8; 32]) -> Result<(), ProtoError> {
        self.gw.wan_connected(now, exporter)?;
        self.pump(now);
        Ok(())
    }

    /// Whether the connection set-up ended (step 17 sent).
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Why the WAN session failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Frames for the server, length prefixes included, in order.
    pub fn take_wan(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.wan_out)
    }

    /// A frame body from the server.
    pub fn handle_wan_frame(&mut self, now: Instant, body: &mut [u8]) -> Result<(), ProtoError> {
        let r = self.gw.handle_wan_frame(now, body);
        self.pump(now);
        r
    }

    /// Lets every machine see the time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.gw.handle_timeout(now);
        for p in self.pnes.values_mut() {
            p.handle_timeout(now);
        }
        self.pump(now);
    }

    /// The earliest deadline of any machine.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pnes = self.pnes.values().filter_map(PneSession::poll_timeout);
        self.gw.poll_timeout().into_iter().chain(pnes).min()
    }

    /// Starts one establishment: both PNEs come onto fresh PAN links, discover the PN GW, and
    /// the first asks for a PN inviting the second (000 §6.6.1.1 step 1).
    pub fn start_establishment(&mut self, now: Instant) -> Result<(), ProtoError> {
        self.end_links(now);
        self.outcome = None;
        let mut links = Vec::new();
        for (i, dev) in self.household.pnes.clone().into_iter().enumerate() {
            let cfg = PneConfig {
                capabilities: caps("phone", false),
                timeouts: TIMEOUTS,
                signing: self.signing.get(i).cloned().flatten(),
                ..PneConfig::new(dev.id.clone(), dev.eukey.clone())
            };
            let link = self.next_link;
            self.next_link += 1;
            self.gw.link_opened(LinkId(link), PanSecurity::Cpns);
            let mut pne = PneSession::new(cfg, self.rng.fork());
            pne.start_discovery(now)
                .map_err(|_| ProtoError::WrongState("discovery could not start"))?;
            self.pnes.insert(link, pne);
            links.push(link);
        }
        self.pump(now);
        self.links = links.clone();
        let invited = self.household.pnes[1].id.clone();
        let first = self
            .pnes
            .get_mut(&links[0])
            .ok_or(ProtoError::WrongState("the initiating PNE's link closed"))?;
        first
            .start_setup(now, SetupType::Invite(vec![invited]))
            .map_err(|_| ProtoError::WrongState("the set-up could not start"))?;
        self.pump(now);
        Ok(())
    }

    /// How the establishment in progress ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Closes the PAN links of the last establishment.
    fn end_links(&mut self, now: Instant) {
        for (link, _) in std::mem::take(&mut self.pnes) {
            self.gw.link_closed(now, LinkId(link));
        }
        self.pump(now);
    }

    /// Moves frames between the machines until they are quiet; every local persist succeeds at
    /// once (the PN GW's and the PNEs' own stores are not what the bench measures).
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(out) = self.gw.poll_output() {
                progressed = true;
                match out {
                    GatewayOutput::TransmitWan { frame, .. } => self.wan_out.push(frame),
                    GatewayOutput::TransmitPan {
                        link, mut frame, ..
                    } => {
                        if let (Some(p), Some(body)) =
                            (self.pnes.get_mut(&link.0), frame_body_mut(&mut frame))
                        {
                            let _ = p.handle_frame(now, body);
                        }
                    }
                    GatewayOutput::Persist { token, .. }
                    | GatewayOutput::Forget { token, .. }
                    | GatewayOutput::KeepDeparted { token, .. }
                    | GatewayOutput::DropDeparted { token, .. } => {
                        let _ = self.gw.handle_persisted(now, token, Ok(()));
                    }
                    GatewayOutput::CloseLink { link, .. } => {
                        self.pnes.remove(&link.0);
                        self.gw.link_closed(now, link);
                    }
                    GatewayOutput::CloseWan { reason } => self.failure = Some(reason),
                    GatewayOutput::KeepRoute(_) | GatewayOutput::ForgetRoute(_) => {}
                    GatewayOutput::Event(e) => self.gateway_event(e),
                }
            }
            let links: Vec<u64> = self.pnes.keys().copied().collect();
            for link in links {
                while let Some(out) = self.pnes.get_mut(&link).and_then(PneSession::poll_output) {
                    progressed = true;
                    match out {
                        PneOutput::Transmit { mut frame, .. } => {
                            if let Some(body) = frame_body_mut(&mut frame) {
                                let _ = self.gw.handle_pan_frame(now, LinkId(link), body);
                            }
                        }
                        PneOutput::Persist { token, .. } | PneOutput::Forget { token, .. } => {
                            if let Some(p) = self.pnes.get_mut(&link) {
                                let _ = p.handle_persisted(token, Ok(()));
                            }
                        }
                        PneOutput::KeepGroup { .. }
                        | PneOutput::ForgetGroup { .. }
                        | PneOutput::HashContent { .. }
                        | PneOutput::KeepDelivery(_)
                        | PneOutput::ForgetDelivery { .. }
                        | PneOutput::ReadChunk { .. }
                        | PneOutput::OpenReceive { .. }
                        | PneOutput::WriteChunk { .. }
                        | PneOutput::FinishReceive { .. }
                        | PneOutput::DiscardReceive { .. } => {}
                        PneOutput::Close { .. } => {
                            self.pnes.remove(&link);
                            self.gw.link_closed(now, LinkId(link));
                        }
                        PneOutput::Event(
                            PneEvent::PnRefused { .. }
                            | PneEvent::Completed(cpns_proto::Completed { result: Err(_), .. }),
                        ) if self.outcome.is_none() => {
                            self.outcome = Some(Outcome::Failed("a PNE was refused".into()));
                        }
                        PneOutput::Event(PneEvent::GroupContent { .. }) => {
                            self.content_taken += 1;
                        }
                        PneOutput::Event(PneEvent::ContentRefused { .. }) => {
                            self.content_refused += 1;
                        }
                        PneOutput::PersistSession { .. }
                        | PneOutput::LoadUsage { .. }
                        | PneOutput::MarkUsage { .. }
                        | PneOutput::Event(_) => {}
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn gateway_event(&mut self, e: GatewayEvent) {
        match e {
            GatewayEvent::WanReady => self.ready = true,
            GatewayEvent::WanFailed(why) => self.failure = Some(why),
            GatewayEvent::WanRefused(err) => {
                self.failure = Some(format!("refused: {}", err.reason));
            }
            GatewayEvent::PnEstablished { inventory, .. } => {
                self.outcome = Some(Outcome::Established(inventory.pn_id));
            }
            GatewayEvent::EstablishmentFailed { reason, .. } => {
                self.outcome = Some(Outcome::Failed(reason.to_string()));
            }
            GatewayEvent::Subscribed { subscription, .. }
            | GatewayEvent::Completed(cpns_proto::Completed {
                result: Ok(cpns_proto::gateway::Outcome::Subscribed { subscription, .. }),
                ..
            }) => self.subscribed = Some(subscription),
            GatewayEvent::StatusNotified(n) => {
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                self.notes.push((n, at));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_sentences() {
        let pn = PnId::from_bytes([1; 16]);
        assert_eq!(
            Outcome::Established(pn).to_string(),
            format!("PN {pn} established")
        );
        assert_eq!(
            Outcome::Failed("refused".into()).to_string(),
            "failed: refused"
        );
    }
}
