//! Group content at the PNE (docs/security.md §4.11): a member signs what it says with its own
//! key, seals it under its PN's group key of the epoch it holds, and sends it to its PN GW,
//! which relays it to the other members linked to it. A member that receives it believes it
//! only once the server's certificate of the sender's key verifies, the sender is a member of
//! the PN, the box opens under the epoch's key and the signature is the sender's, and it has
//! not seen that content before.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use cpns_crypto::{AuthorityKey, ContentBinding, MemberKey};
use cpns_wire::{
    Address, EntityId, Envelope, ErrorBody, GroupContent, GroupContentSent, MemberCertificate,
    PnId, PublicKeyBytes, SignatureBytes, UserId,
};

use super::{Outcome, PneEvent, PneSession};
use crate::{CommandError, CommandId, Failure, Flow};

/// The largest content one Group Content carries, in bytes (the frame holds the rest).
pub const MAX_GROUP_CONTENT: usize = 256 * 1024;

/// Content ids remembered per PN to refuse a replay: the oldest is forgotten first.
const SEEN_PER_PN: usize = 4096;

/// What a PNE needs to sign group content and check another member's: its certificate and the
/// key of the authority that certifies members, both from its credential (docs/security.md
/// §4.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signing {
    /// The server's certificate of this PNE's signing key.
    pub certificate: MemberCertificate,
    /// The server's certification key, which every member certificate must verify under.
    pub authority: AuthorityKey,
}

impl Signing {
    /// What PNE `pne_id` of `owner` holding `eukey` signs with, given the server's signature of
    /// its key and the server's certification key (both from its credential file).
    pub fn new(
        pne_id: EntityId,
        owner: UserId,
        eukey: &cpns_crypto::EuKey,
        signature: [u8; cpns_crypto::SIGNATURE_LEN],
        authority: AuthorityKey,
    ) -> Self {
        let key = cpns_crypto::MemberSigningKey::derive(eukey, pne_id.as_str()).public();
        Self {
            certificate: MemberCertificate {
                pne_id,
                owner,
                key: PublicKeyBytes(key.0),
                signature: SignatureBytes(signature),
            },
            authority,
        }
    }

    /// The certificate as the crypto checks it.
    pub(super) fn crypto(cert: &MemberCertificate) -> cpns_crypto::MemberCertificate {
        cpns_crypto::MemberCertificate {
            pne_id: cert.pne_id.to_string(),
            owner: cert.owner.to_string(),
            key: MemberKey(cert.key.0),
            signature: cert.signature.0,
        }
    }
}

/// Group content sends waiting for the PN GW's answer, by message id.
pub(super) type PendingSends = BTreeMap<u64, (Instant, CommandId, PnId)>;

/// A sender and its content id.
type SeenId = (EntityId, u64);

/// Certificates that verified, by sender, so each is checked once, not with every message
/// (an Ed25519 verification each). At most this many are kept; past it the cache starts again.
const CERTIFIED_KEPT: usize = 1024;

/// Senders whose certificate verified: the certificate as it came, and what it certified.
#[derive(Debug, Default)]
pub(super) struct CertCache(BTreeMap<EntityId, (MemberCertificate, cpns_crypto::Certified)>);

impl CertCache {
    /// `cert` verified under `authority`, from the cache if this very certificate did before.
    pub(super) fn verify(
        &mut self,
        cert: &MemberCertificate,
        authority: &AuthorityKey,
    ) -> Result<cpns_crypto::Certified, cpns_crypto::CryptoError> {
        if let Some((kept, certified)) = self.0.get(&cert.pne_id)
            && kept == cert
        {
            return Ok(certified.clone());
        }
        let certified = Signing::crypto(cert).verify(authority)?;
        if self.0.len() >= CERTIFIED_KEPT {
            self.0.clear();
        }
        self.0
            .insert(cert.pne_id.clone(), (cert.clone(), certified.clone()));
        Ok(certified)
    }
}

/// The content ids seen, per PN (or per service group): in arrival order (to forget the
/// oldest) and as a set.
#[derive(Debug)]
pub(super) struct Seen<K = PnId>(BTreeMap<K, (VecDeque<SeenId>, BTreeSet<SeenId>)>);

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord> Seen<K> {
    /// Records `(sender, id)` in `pn_id`; false if it was seen already.
    pub(super) fn first_time(&mut self, pn_id: K, sender: &EntityId, id: u64) -> bool {
        let (order, set) = self.0.entry(pn_id).or_default();
        let key = (sender.clone(), id);
        if !set.insert(key.clone()) {
            return false;
        }
        order.push_back(key);
        if order.len() > SEEN_PER_PN
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }

    pub(super) fn forget(&mut self, pn_id: &K) {
        self.0.remove(pn_id);
    }
}

impl PneSession {
    /// Sends `content` to the other members of `pn_id` linked to its PN GW: signed by this PNE
    /// and sealed under the PN's group key of the epoch it holds (docs/security.md §4.11).
    /// Completes with [`Outcome::ContentSent`] once the PN GW relayed it.
    pub fn send_group_content(
        &mut self,
        now: Instant,
        pn_id: PnId,
        content: Vec<u8>,
    ) -> Result<CommandId, CommandError> {
        let Some(signing) = self.cfg.signing.clone() else {
            return Err(CommandError::NoCertificate);
        };
        let Some(pn) = self.pns.get(&pn_id) else {
            return Err(CommandError::NotAMember(pn_id));
        };
        let Some((epoch, gk)) = pn.state.own.as_ref().and_then(|o| o.group.clone()) else {
            return Err(CommandError::NoGroupKey(pn_id));
        };
        let gw = pn.state.inventory.gateway.clone();
        if self.gateway.as_ref() != Some(&gw) || !self.gateway_proven(&gw) {
            return Err(CommandError::GatewayNotLinked(gw));
        }
        let limit = MAX_GROUP_CONTENT.min((self.cfg.max_frame as usize).saturating_sub(1024));
        if content.len() > limit {
            return Err(CommandError::TooLarge);
        }
        let content_id = self.rng.u64();
        let binding = ContentBinding {
            pn_id: pn_id.as_bytes(),
            epoch,
            sender: self.cfg.id.as_str(),
            content_id,
        };
        let sealed = cpns_crypto::seal_group_content(
            self.rng.get(),
            &gk,
            self.signer.as_ref().ok_or(CommandError::NoCertificate)?,
            &binding,
            &content,
        )?;
        let msg = self.send_request_to(
            Address::Entity(gw),
            GroupContent {
                pn_id,
                epoch,
                sender: self.cfg.id.clone(),
                content_id,
                sealed,
                certificate: signing.certificate,
            },
        );
        let id = self.commands.next();
        self.content_sends
            .insert(msg, (now + self.cfg.timeouts.flow, id, pn_id));
        Ok(id)
    }

    /// The PN GW's answer to a send.
    pub(super) fn on_content_sent(&mut self, env: &Envelope, m: GroupContentSent) {
        let Some(reply_to) = env.in_reply_to else {
            return;
        };
        let ours = self
            .content_sends
            .get(&reply_to)
            .is_some_and(|(_, _, pn)| *pn == m.pn_id && self.sent_by_pns_gateway(env, pn));
        if !ours {
            return;
        }
        if let Some((_, id, pn_id)) = self.content_sends.remove(&reply_to) {
            let sent = Outcome::ContentSent {
                pn_id,
                delivered: m.delivered,
            };
            self.complete(id, Flow::GroupContent, Ok(sent));
        }
    }

    /// The PN GW refused a send: true if `reply_to` was one.
    pub(super) fn content_send_refused(&mut self, reply_to: u64, e: &ErrorBody) -> bool {
        let Some((_, id, _)) = self.content_sends.remove(&reply_to) else {
            return false;
        };
        self.complete(id, Flow::GroupContent, Err(Failure::Refused(e.clone())));
        true
    }

    pub(super) fn content_timeouts(&mut self, now: Instant) {
        let late = crate::util::take_expired(&mut self.content_sends, now, |(d, _, _)| *d);
        for (_, (_, id, _)) in late {
            self.complete(id, Flow::GroupContent, Err(Failure::TimedOut));
        }
    }

    /// Content another member sent, relayed by the PN GW: told as
    /// [`PneEvent::GroupContent`] once every check passed, else as
    /// [`PneEvent::ContentRefused`] with the check that failed.
    pub(super) fn on_group_content(&mut self, m: GroupContent) {
        match self.accept_content(&m) {
            Ok((owner, content)) => self.event(PneEvent::GroupContent {
                pn_id: m.pn_id,
                epoch: m.epoch,
                from: m.sender,
                owner,
                content,
            }),
            Err(why) => self.event(PneEvent::ContentRefused {
                pn_id: m.pn_id,
                from: m.sender,
                reason: Failure::ContentRefused(why),
            }),
        }
    }

    fn accept_content(&mut self, m: &GroupContent) -> Result<(UserId, Vec<u8>), String> {
        let Some(signing) = self.cfg.signing.as_ref() else {
            return Err("this PNE has no authority key to check who sent it".into());
        };
        let Some(pn) = self.pns.get(&m.pn_id) else {
            return Err("this PNE is not a member of the PN".into());
        };
        if m.sender == self.cfg.id {
            return Err("it names this PNE as its sender".into());
        }
        if !pn
            .state
            .inventory
            .members
            .iter()
            .any(|x| x.pne_id == m.sender)
        {
            return Err("its sender is not a member of the PN".into());
        }
        let Some((epoch, gk)) = pn.state.own.as_ref().and_then(|o| o.group.as_ref()) else {
            return Err("this PNE holds no group key of the PN yet".into());
        };
        if *epoch != m.epoch {
            return Err(format!(
                "it is sealed under epoch {}, and this PNE holds epoch {epoch}",
                m.epoch
            ));
        }
        let binding = ContentBinding {
            pn_id: m.pn_id.as_bytes(),
            epoch: m.epoch,
            sender: m.sender.as_str(),
            content_id: m.content_id,
        };
        let plain = open_member_content(
            &mut self.certified,
            &signing.authority,
            gk,
            &binding,
            &m.certificate,
            &m.sealed,
        )?;
        if !self
            .content_seen
            .first_time(m.pn_id, &m.sender, m.content_id)
        {
            return Err("it was received before (a replay)".into());
        }
        Ok((m.certificate.owner.clone(), plain))
    }
}

/// The checks a member's content passes once its group (a PN, a service group) and epoch are
/// the receiver's: the certificate names the sender and is the server's, the box opens under
/// `key`, and the sender signed it. The content, or the check that failed.
pub(super) fn open_member_content(
    certified: &mut CertCache,
    authority: &AuthorityKey,
    key: &cpns_crypto::GroupKey,
    binding: &ContentBinding<'_>,
    certificate: &MemberCertificate,
    sealed: &[u8],
) -> Result<Vec<u8>, String> {
    if certificate.pne_id.as_str() != binding.sender {
        return Err("its certificate is another member's".into());
    }
    let certified = certified
        .verify(certificate, authority)
        .map_err(|_| "its certificate is not the server's".to_string())?;
    let plain =
        cpns_crypto::open_group_content(key, &certified, binding, sealed).map_err(|e| match e {
            cpns_crypto::CryptoError::BadSignature => {
                "its sender did not sign it (content passed off as another member's)".to_string()
            }
            _ => "it does not open under the group's key".to_string(),
        })?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pne(s: &str) -> EntityId {
        EntityId::new(s).unwrap()
    }

    fn certificate(ca: &cpns_crypto::CertificationKey, id: &str) -> MemberCertificate {
        let eukey = cpns_crypto::EuKey::from_bytes([7; 32]);
        let owner: UserId = "alice".parse().unwrap();
        let key = cpns_crypto::MemberSigningKey::derive(&eukey, id).public();
        let sig = ca.certify(id, owner.as_str(), &key).signature;
        Signing::new(pne(id), owner, &eukey, sig, ca.public()).certificate
    }

    /// A certificate that verified is taken from the cache only as the very same certificate:
    /// another one for the same sender is checked (and refused if bad), and the cache is
    /// bounded.
    #[test]
    fn a_cached_certificate_serves_only_itself() {
        let ca = cpns_crypto::CertificationKey::from_master(&cpns_crypto::MasterKey::from_bytes(
            [3; 32],
        ));
        let mut cache = CertCache::default();
        let good = certificate(&ca, "tv");
        assert_eq!(cache.verify(&good, &ca.public()).unwrap().pne_id(), "tv");
        let mut forged = good.clone();
        forged.signature.0[0] ^= 1;
        assert!(cache.verify(&forged, &ca.public()).is_err());
        let mut other_key = good.clone();
        other_key.key = PublicKeyBytes([9; 32]);
        assert!(cache.verify(&other_key, &ca.public()).is_err());
        assert!(cache.verify(&good, &ca.public()).is_ok());
        // Under another authority, even a cached certificate's sender... is checked anew.
        let other = cpns_crypto::CertificationKey::from_master(
            &cpns_crypto::MasterKey::from_bytes([4; 32]),
        );
        let theirs = certificate(&other, "tv");
        assert!(cache.verify(&theirs, &ca.public()).is_err());
        // Full: the next new certificate starts the cache again.
        let entry = cache.0.get(&pne("tv")).cloned().unwrap();
        for n in 0..CERTIFIED_KEPT - 1 {
            cache.0.insert(pne(&format!("pne-{n}")), entry.clone());
        }
        assert_eq!(cache.0.len(), CERTIFIED_KEPT);
        cache
            .verify(&certificate(&ca, "watch"), &ca.public())
            .unwrap();
        assert_eq!(cache.0.len(), 1);
    }

    /// The last SEEN_PER_PN ids of a PN are remembered; the one before them is forgotten
    /// first; another PN's are apart, and a forgotten PN's go.
    #[test]
    fn the_newest_ids_are_remembered_per_pn() {
        let (a, b) = (PnId::from_bytes([1; 16]), PnId::from_bytes([2; 16]));
        let mut seen = Seen::default();
        let tv = pne("tv");
        for id in 0..SEEN_PER_PN as u64 {
            assert!(seen.first_time(a, &tv, id));
        }
        // All SEEN_PER_PN are remembered, the oldest too.
        assert!(!seen.first_time(a, &tv, 0));
        assert!(!seen.first_time(a, &tv, SEEN_PER_PN as u64 - 1));
        // One more: the oldest is forgotten, the next oldest not.
        assert!(seen.first_time(a, &tv, SEEN_PER_PN as u64));
        assert!(!seen.first_time(a, &tv, 1));
        assert!(seen.first_time(a, &tv, 0), "forgotten");
        // The same id from another sender, or in another PN, is another content.
        assert!(seen.first_time(a, &pne("phone"), 5));
        assert!(seen.first_time(b, &tv, 5));
        seen.forget(&a);
        assert!(
            seen.first_time(a, &tv, 5),
            "a forgotten PN's ids go with it"
        );
        assert!(!seen.first_time(b, &tv, 5));
    }
}
