//! The PN GW's side of a PAN link: CPNS entity discovery (000 §6.4) and PN GW authentication
//! with LocalEUKey on an insecure PAN (000 §6.6.1.1 steps 6-7, "PN GW Authentication"), after
//! which every frame of the link is sealed (docs/design.md §4).

use cpns_crypto::{AuthHash, FrameOpener, LocalEuKey, PanAuthInput, PanKeys, Suite};
use cpns_wire::{
    EntityDiscoveryRequest, EntityDiscoveryResponse, Envelope, ErrorCode, Mode, PanAuthChallenge,
    PanAuthConfirm, PanAuthInit, PnId,
};

use super::{Gateway, GatewayEvent, LinkId};
use crate::PanSecurity;
use crate::util::{hash_of, hash_wire, rand_of, rand_wire};

/// PN GW authentication waiting for the PNE's confirmation.
pub(super) struct PendingPanAuth {
    pn_id: PnId,
    expected_proof: AuthHash,
    opener: FrameOpener,
    suite: Suite,
}

impl core::fmt::Debug for PendingPanAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingPanAuth")
            .field("pn_id", &self.pn_id)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// 000 §6.4 step 1, sent by the PN GW: asks the device on `link` who it is.
    pub fn discover(&mut self, link: LinkId) {
        let req = EntityDiscoveryRequest {
            entity_id: self.cfg.id.clone(),
            mode: Mode::Gateway,
        };
        self.send_pan_request(link, req);
    }

    /// 000 §6.4 step 2: answer with the mode, the entity id, zone support, and, to a link that
    /// proved its PNE, the PNs that PNE is a member of here.
    pub(super) fn on_discovery_request(
        &mut self,
        link: LinkId,
        env: &Envelope,
        m: EntityDiscoveryRequest,
    ) {
        // A PNE named by a link that only claims it may still come and prove itself: it is
        // answered, and may then only prove the id (PN GW authentication), which takes the
        // route from the claim. A PNE held by a link that proved it is refused.
        if m.mode == Mode::Pne && !self.identify(link, &m.entity_id) {
            if self.held_by_proof(&m.entity_id) {
                let reason = format!(
                    "{} is connected already, on a link that proved it",
                    m.entity_id
                );
                return self.reject_pan(link, env, ErrorCode::Forbidden, &reason);
            }
            if !self.claim_for_proof(link, &m.entity_id) {
                return self.reject_pan(
                    link,
                    env,
                    ErrorCode::Forbidden,
                    "the link already belongs to another PNE",
                );
            }
        }
        // Less said to strangers (docs/security.md §4.4, "What a PNE learns before its
        // proof"): a link that has not proved its PNE learns no PN id; one that has learns the
        // PNs that PNE is a member of. (000 §6.4 asks only for the mode and the entity id.)
        let pns: Vec<PnId> = match self.links.get(&link).filter(|l| l.proven) {
            Some(l) => self
                .pns
                .iter()
                .filter(|(_, pn)| {
                    pn.state
                        .inventory
                        .members
                        .iter()
                        .any(|m| Some(&m.pne_id) == l.peer.as_ref())
                })
                .map(|(id, _)| *id)
                .collect(),
            None => Vec::new(),
        };
        let resp = EntityDiscoveryResponse {
            mode: Mode::Gateway,
            entity_id: self.cfg.id.clone(),
            zone_support: self.cfg.zone_support,
            pns,
        };
        self.send_pan_response(link, env.msg_id, resp);
    }

    pub(super) fn on_discovery_response(&mut self, link: LinkId, m: EntityDiscoveryResponse) {
        if m.mode == Mode::Pne {
            self.identify(link, &m.entity_id);
        }
    }

    /// PN GW authentication, PN GW side: prove knowledge of the LocalEUKey of (PN, PNE) and
    /// start sealing what the PN GW sends.
    pub(super) fn on_pan_auth_init(&mut self, link: LinkId, env: &Envelope, m: PanAuthInit) {
        let insecure = self
            .links
            .get(&link)
            .is_some_and(|l| l.security == PanSecurity::Cpns && !l.codec.tx_sealed());
        if !insecure {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "the link needs no PN GW authentication",
            );
        }
        if !self.claim_for_proof(link, &m.pne_id) {
            return self.reject_pan(
                link,
                env,
                ErrorCode::Forbidden,
                "the link already belongs to another PNE",
            );
        }
        // The frames' AEAD (docs/security.md §4.13): from a short offer, one both sides take.
        let suite = if m.suites.len() > cpns_wire::MAX_SUITES {
            None
        } else {
            Suite::choose(&m.suites, &self.cfg.suites)
        };
        let Some(suite) = suite else {
            let why = format!(
                "no AEAD suite in common: the PN GW takes {} (codes {}), at most {} offered",
                names(&self.cfg.suites),
                codes(&self.cfg.suites),
                cpns_wire::MAX_SUITES
            );
            return self.reject_pan(link, env, ErrorCode::BadRequest, &why);
        };
        // The key a registration on this link just issued comes first: the PNE proves itself
        // with it (docs/security.md §4.2); then the PN's, one being formed, a departed one.
        let local = self
            .links
            .get(&link)
            .and_then(|l| l.reg_key.as_ref())
            .and_then(|k| k.for_member(&m.pn_id, &m.pne_id))
            .or_else(|| self.pns.get(&m.pn_id).and_then(|pn| pn.keys.get(&m.pne_id)))
            .or_else(|| {
                self.forming
                    .get(&m.pn_id)
                    .and_then(|f| f.local_key(&m.pne_id))
            })
            // A member that left while away proves itself with the key it held.
            .or_else(|| self.departed.key(&m.pn_id, &m.pne_id));
        // Less said to strangers (docs/security.md §4.4): a pair the PN GW holds no key for is
        // answered like any other, with a challenge under a decoy key drawn now that no PNE can
        // verify, so the answer does not tell who holds a key in which PN. The exchange then
        // fails at the PNE's check of gw_proof, or here at pne_proof, as with a wrong key.
        let decoy;
        let local = match local {
            Some(k) => k,
            None => {
                decoy = LocalEuKey::random(self.rng.get());
                &decoy
            }
        };
        let rand_gw = self.rng.rand();
        let keys = PanKeys::derive(
            local,
            &PanAuthInput {
                pn_id: m.pn_id.as_bytes(),
                pne_id: m.pne_id.as_str(),
                gw_id: self.cfg.id.as_str(),
                rand_pne: &rand_of(&m.rand_pne),
                rand_gw: &rand_gw,
                offered: &m.suites,
                suite,
            },
        );
        let proof = keys.gw_proof();
        let expected_proof = keys.pne_proof();
        let (sealer, opener) = keys.into_gw_side();
        self.send_pan_response(
            link,
            env.msg_id,
            PanAuthChallenge {
                rand_gw: rand_wire(&rand_gw),
                proof: hash_wire(&proof),
                suite: Some(suite.code()),
            },
        );
        if let Some(l) = self.links.get_mut(&link) {
            l.codec.seal_tx(sealer);
            l.pan_auth = Some(PendingPanAuth {
                pn_id: m.pn_id,
                expected_proof,
                opener,
                suite,
            });
        }
    }

    /// The PNE's proof: on success every frame it sends from now on must be sealed.
    pub(super) fn on_pan_auth_confirm(&mut self, link: LinkId, env: &Envelope, m: PanAuthConfirm) {
        let pending = self.links.get_mut(&link).and_then(|l| l.pan_auth.take());
        let Some(pending) = pending else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "no PN GW authentication in progress",
            );
        };
        if !pending.expected_proof.ct_eq(&hash_of(&m.proof)) {
            return self.reject_link(
                link,
                "PN GW authentication failed: the PNE's proof did not verify",
            );
        }
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.codec.seal_rx(pending.opener);
        let peer = l.peer.clone();
        self.prove(link);
        if let Some(pne) = peer {
            self.event(GatewayEvent::PanAuthenticated {
                pne,
                pn_id: pending.pn_id,
                suite: pending.suite,
            });
        }
    }

    /// Whether messages of `link` are protected enough to carry an Authentication Response for
    /// a PNE holding a LocalEUKey.
    pub(super) fn link_secure(&self, link: LinkId) -> bool {
        self.links
            .get(&link)
            .is_some_and(|l| l.security == PanSecurity::Trusted || l.codec.rx_sealed())
    }
}

/// The suites' names, for people: `aes-256-gcm, chacha20-poly1305`.
fn names(suites: &[Suite]) -> String {
    suites
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The suites' codes: `2, 1`.
fn codes(suites: &[Suite]) -> String {
    suites
        .iter()
        .map(|s| s.code().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
