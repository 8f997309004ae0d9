//! Who sent group content (docs/security.md §4.11): every member signs what it seals under a
//! group key with its own Ed25519 key, and the server certifies which key is whose.
//!
//! A group key is shared by every member of its epoch, so the AEAD of group content proves only
//! "a member sealed this". The signature inside the box names one member; the certificate
//! beside it is the server's word that the signing key is that member's. A member cannot forge
//! content for another: it holds neither the other's signing key (derived from the other's
//! EUKey, which only that device and the server hold) nor the server's certification key.
//! ```text
//! seed_ca = HKDF-SHA256(salt = none, IKM = master key, info = T("cpns/v1/certification-key"))
//! seed_m  = HKDF-SHA256(salt = none, IKM = EUKey,      info = T("cpns/v1/member-signing-key") ‖ T(PNE ID))
//! CA, (sk_m, vk_m) = the Ed25519 key pairs of those seeds (RFC 8032 §5.1.5)
//! cert    = Ed25519-Sign(CA, T("cpns/v1/member-certificate") ‖ T(PNE ID) ‖ T(user ID) ‖ T(vk_m))
//! signed  = T("cpns/v1/group-content-signature") ‖ T(PN ID) ‖ T(u64be(epoch)) ‖ T(sender PNE ID)
//!           ‖ T(u64be(content id)) ‖ T(plaintext)
//! content = nonce(12) ‖ ChaCha20-Poly1305(K_gc, nonce,
//!               T("cpns/v1/group-content") ‖ T(PN ID) ‖ T(u64be(epoch)) ‖ T(sender PNE ID)
//!               ‖ T(u64be(content id)),
//!               Ed25519-Sign(sk_m, signed)(64) ‖ plaintext)
//! ```
//! with K_gc the epoch's group content key (`crate::group`). The signature travels inside the
//! box, so a relay learns nothing from it; the sender and content id travel beside it and are
//! bound by both the AEAD and the signature. Signatures are verified strictly (`verify_strict`:
//! no small-order keys, canonical encodings only).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::aead;
use crate::error::CryptoError;
use crate::group::content_key;
use crate::kdf::{Transcript, derive_key};
use crate::keys::{EuKey, GroupKey, MasterKey};
use crate::labels;
use crate::rng::CryptoRng;

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The server's certification key (docs/security.md §4.11): derived from its master key, so a
/// server needs nothing more to keep, and every node with the master key certifies alike.
pub struct CertificationKey(SigningKey);

impl core::fmt::Debug for CertificationKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("CertificationKey")
            .field(&self.public())
            .finish()
    }
}

impl CertificationKey {
    /// The certification key of the server holding `master`.
    pub fn from_master(master: &MasterKey) -> Self {
        let seed = derive_key(
            master.expose_secret(),
            &Transcript::new(labels::CERTIFICATION_KEY),
        );
        Self(SigningKey::from_bytes(&seed))
    }

    /// Its public half, which devices are given with their credential to check certificates.
    pub fn public(&self) -> AuthorityKey {
        AuthorityKey(self.0.verifying_key().to_bytes())
    }

    /// Certifies that `key` is the signing key of PNE `pne_id` of user `owner`.
    pub fn certify(&self, pne_id: &str, owner: &str, key: &MemberKey) -> MemberCertificate {
        let signature = self
            .0
            .sign(&certificate_message(pne_id, owner, key))
            .to_bytes();
        MemberCertificate {
            pne_id: pne_id.to_owned(),
            owner: owner.to_owned(),
            key: *key,
            signature,
        }
    }
}

/// The public half of the server's [`CertificationKey`]: what a device trusts certificates by.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthorityKey(pub [u8; PUBLIC_KEY_LEN]);

impl core::fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AuthorityKey({})", hex_of(&self.0))
    }
}

impl AuthorityKey {
    /// The key as lowercase hex, as a credential file holds it.
    pub fn to_hex(&self) -> String {
        hex_of(&self.0)
    }

    /// Parses [`AuthorityKey::to_hex`].
    ///
    /// # Errors
    /// [`CryptoError::BadHex`] unless 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        Ok(Self(*crate::ct_hex::decode_key(s.trim())?))
    }
}

/// A member's public signing key, vk_m.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MemberKey(pub [u8; PUBLIC_KEY_LEN]);

impl core::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MemberKey({})", hex_of(&self.0))
    }
}

/// A PNE's own signing key, derived from its EUKey for its PNE ID; wiped when dropped.
pub struct MemberSigningKey(SigningKey);

impl core::fmt::Debug for MemberSigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("MemberSigningKey")
            .field(&self.public())
            .finish()
    }
}

impl MemberSigningKey {
    /// The signing key of PNE `pne_id` holding `eukey`; the server derives the same to certify
    /// its public half.
    pub fn derive(eukey: &EuKey, pne_id: &str) -> Self {
        let mut t = Transcript::new(labels::MEMBER_SIGNING_KEY);
        t.push(pne_id.as_bytes());
        let seed = derive_key(eukey.expose_secret(), &t);
        Self(SigningKey::from_bytes(&seed))
    }

    /// vk_m.
    pub fn public(&self) -> MemberKey {
        MemberKey(self.0.verifying_key().to_bytes())
    }
}

/// The server's word that [`MemberCertificate::key`] is the signing key of a PNE of a user.
/// Not trusted until [`MemberCertificate::verify`] turns it into a [`Certified`] sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCertificate {
    /// The PNE.
    pub pne_id: String,
    /// Its user.
    pub owner: String,
    /// Its signing key, vk_m.
    pub key: MemberKey,
    /// The server's signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// A sender whose certificate verified under the trusted [`AuthorityKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certified {
    pne_id: String,
    owner: String,
    key: VerifyingKey,
}

impl Certified {
    /// The certified PNE.
    pub fn pne_id(&self) -> &str {
        &self.pne_id
    }

    /// Its user.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

impl MemberCertificate {
    /// Checks the server's signature with the authority key the device trusts.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] for a certificate another authority signed, or any of its
    /// fields altered; [`CryptoError::Malformed`] for a key that is no Ed25519 point.
    pub fn verify(&self, authority: &AuthorityKey) -> Result<Certified, CryptoError> {
        let ca = VerifyingKey::from_bytes(&authority.0)
            .map_err(|_| CryptoError::Malformed("the authority key is no Ed25519 public key"))?;
        let message = certificate_message(&self.pne_id, &self.owner, &self.key);
        ca.verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| CryptoError::BadSignature)?;
        let key = VerifyingKey::from_bytes(&self.key.0)
            .map_err(|_| CryptoError::Malformed("a member key is no Ed25519 public key"))?;
        Ok(Certified {
            pne_id: self.pne_id.clone(),
            owner: self.owner.clone(),
            key,
        })
    }
}

pub(crate) fn certificate_message(pne_id: &str, owner: &str, key: &MemberKey) -> Vec<u8> {
    let mut t = Transcript::new(labels::MEMBER_CERTIFICATE);
    t.push(pne_id.as_bytes())
        .push(owner.as_bytes())
        .push(&key.0);
    t.as_bytes().to_vec()
}

/// What a piece of group content belongs to.
#[derive(Clone, Copy, Debug)]
pub struct ContentBinding<'a> {
    /// The PN, 16 bytes.
    pub pn_id: &'a [u8; 16],
    /// The group key epoch it is sealed under.
    pub epoch: u64,
    /// The member that sealed and signed it.
    pub sender: &'a str,
    /// The sender's id for it, drawn at random: receivers refuse an id they saw (a replay).
    pub content_id: u64,
}

pub(crate) fn content_aad(b: &ContentBinding<'_>) -> Vec<u8> {
    binding_transcript(labels::GROUP_CONTENT_AAD, b)
        .as_bytes()
        .to_vec()
}

pub(crate) fn signed_message(b: &ContentBinding<'_>, plaintext: &[u8]) -> Vec<u8> {
    let mut t = binding_transcript(labels::GROUP_CONTENT_SIGNATURE, b);
    t.push(plaintext);
    t.as_bytes().to_vec()
}

fn binding_transcript(label: &'static str, b: &ContentBinding<'_>) -> Transcript {
    let mut t = Transcript::new(label);
    t.push(b.pn_id)
        .push(&b.epoch.to_be_bytes())
        .push(b.sender.as_bytes())
        .push(&b.content_id.to_be_bytes());
    t
}

/// Signs `plaintext` as `b.sender` and seals it under the content key of `b.epoch`'s GK.
///
/// # Errors
/// [`CryptoError::Malformed`] for a plaintext beyond the ChaCha20-Poly1305 limit.
pub fn seal_group_content<R: CryptoRng + ?Sized>(
    rng: &mut R,
    gk: &GroupKey,
    signer: &MemberSigningKey,
    b: &ContentBinding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; aead::NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    content_with_nonce(gk, signer, b, plaintext, nonce)
}

/// [`seal_group_content`] with a caller-chosen nonce; deterministic, for test vectors. A nonce
/// must never repeat under one epoch's GK: production code calls [`seal_group_content`].
///
/// # Errors
/// As [`seal_group_content`].
pub fn seal_group_content_with_nonce(
    gk: &GroupKey,
    signer: &MemberSigningKey,
    b: &ContentBinding<'_>,
    plaintext: &[u8],
    nonce: [u8; aead::NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    content_with_nonce(gk, signer, b, plaintext, nonce)
}

fn content_with_nonce(
    gk: &GroupKey,
    signer: &MemberSigningKey,
    b: &ContentBinding<'_>,
    plaintext: &[u8],
    nonce: [u8; aead::NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let signature = signer.0.sign(&signed_message(b, plaintext)).to_bytes();
    let mut inner = Zeroizing::new(Vec::with_capacity(SIGNATURE_LEN + plaintext.len()));
    inner.extend_from_slice(&signature);
    inner.extend_from_slice(plaintext);
    aead::seal_with_nonce(
        &content_key(gk, b.pn_id, b.epoch),
        nonce,
        &content_aad(b),
        &inner,
    )
}

/// Opens group content and checks that `sender` signed it, returning the plaintext.
///
/// # Errors
/// [`CryptoError::BadTag`] under another epoch's GK (a member that left), for another PN,
/// epoch, sender or content id, or tampered; [`CryptoError::BadSignature`] when the certified
/// sender is not the one the binding names, or its key did not sign this content (a member
/// passing off its content as another's); [`CryptoError::Malformed`] for a box too short to
/// hold a signature.
pub fn open_group_content(
    gk: &GroupKey,
    sender: &Certified,
    b: &ContentBinding<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut inner = aead::open(&content_key(gk, b.pn_id, b.epoch), &content_aad(b), sealed)?;
    if inner.len() < SIGNATURE_LEN {
        return Err(CryptoError::Malformed(
            "group content too short for its signature",
        ));
    }
    if sender.pne_id != b.sender {
        return Err(CryptoError::BadSignature);
    }
    let (sig, plaintext) = inner.split_at(SIGNATURE_LEN);
    let sig: [u8; SIGNATURE_LEN] = sig
        .try_into()
        .map_err(|_| CryptoError::Malformed("a signature is 64 bytes"))?;
    sender
        .key
        .verify_strict(&signed_message(b, plaintext), &Signature::from_bytes(&sig))
        .map_err(|_| CryptoError::BadSignature)?;
    inner.drain(..SIGNATURE_LEN);
    Ok(inner)
}

/// `T("cpns/v1/delivery-digest") ‖ T(session ID) ‖ T(u64be(total)) ‖ T(SHA-256 of item 1) ‖ …`:
/// what a delivery's source signs once it has read every item (docs/security.md §4.12).
pub(crate) fn delivery_digest_message(
    session: &[u8; 16],
    total: u64,
    hashes: &[[u8; 32]],
) -> Vec<u8> {
    let mut t = Transcript::new(labels::DELIVERY_DIGEST);
    t.push(session).push(&total.to_be_bytes());
    for h in hashes {
        t.push(h);
    }
    t.as_bytes().to_vec()
}

impl MemberSigningKey {
    /// Signs the SHA-256 of each item of delivery session `session`, `total` bytes in all, in
    /// order: the digest its source sends with the last chunk, which each target checks before
    /// it keeps anything (docs/security.md §4.12).
    pub fn sign_delivery_digest(
        &self,
        session: &[u8; 16],
        total: u64,
        hashes: &[[u8; 32]],
    ) -> [u8; SIGNATURE_LEN] {
        self.0
            .sign(&delivery_digest_message(session, total, hashes))
            .to_bytes()
    }
}

impl Certified {
    /// Checks that this sender signed `hashes` as the items of session `session`, `total`
    /// bytes in all ([`MemberSigningKey::sign_delivery_digest`]).
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] for another signer, session, total, any hash changed,
    /// added, dropped or moved, or any signature byte altered.
    pub fn verify_delivery_digest(
        &self,
        session: &[u8; 16],
        total: u64,
        hashes: &[[u8; 32]],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), CryptoError> {
        self.key
            .verify_strict(
                &delivery_digest_message(session, total, hashes),
                &Signature::from_bytes(signature),
            )
            .map_err(|_| CryptoError::BadSignature)
    }
}

fn hex_of(bytes: &[u8; PUBLIC_KEY_LEN]) -> String {
    crate::ct_hex::encode_key(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineRng;

    const PN: [u8; 16] = [0x61; 16];

    fn eukey(b: u8) -> EuKey {
        EuKey::from_bytes([b; 32])
    }

    fn ca() -> CertificationKey {
        CertificationKey::from_master(&MasterKey::from_bytes([7; 32]))
    }

    fn member(b: u8, id: &str) -> (MemberSigningKey, Certified) {
        let sk = MemberSigningKey::derive(&eukey(b), id);
        let cert = ca().certify(id, "alice", &sk.public());
        let certified = cert.verify(&ca().public()).unwrap();
        (sk, certified)
    }

    fn binding(sender: &str, content_id: u64) -> ContentBinding<'_> {
        ContentBinding {
            pn_id: &PN,
            epoch: 2,
            sender,
            content_id,
        }
    }

    fn gk(b: u8) -> GroupKey {
        GroupKey::from_bytes([b; 32])
    }

    #[test]
    fn keys_are_derived_from_their_secret_and_name() {
        assert_eq!(ca().public(), ca().public());
        let other = CertificationKey::from_master(&MasterKey::from_bytes([8; 32]));
        assert_ne!(ca().public(), other.public());
        let phone = MemberSigningKey::derive(&eukey(1), "phone");
        assert_eq!(
            phone.public(),
            MemberSigningKey::derive(&eukey(1), "phone").public()
        );
        assert_ne!(
            phone.public(),
            MemberSigningKey::derive(&eukey(2), "phone").public()
        );
        assert_ne!(
            phone.public(),
            MemberSigningKey::derive(&eukey(1), "tv").public()
        );
        // Nothing secret in what Debug prints: the public halves, as hex.
        let shown = format!("{:?} {:?} {:?}", ca(), phone, phone.public());
        assert!(shown.contains(&ca().public().to_hex()), "{shown}");
        let member_hex = crate::ct_hex::encode_key(&phone.public().0);
        assert_eq!(shown.matches(member_hex.as_str()).count(), 2, "{shown}");
        let seed = crate::ct_hex::encode_key(&phone.0.to_bytes());
        assert!(!shown.contains(seed.as_str()), "{shown}");
    }

    #[test]
    fn a_certificate_verifies_under_its_authority_only_and_unaltered() {
        let key = MemberSigningKey::derive(&eukey(1), "phone").public();
        let cert = ca().certify("phone", "alice", &key);
        let ok = cert.verify(&ca().public()).unwrap();
        assert_eq!((ok.pne_id(), ok.owner()), ("phone", "alice"));
        let other = CertificationKey::from_master(&MasterKey::from_bytes([8; 32])).public();
        assert_eq!(cert.verify(&other), Err(CryptoError::BadSignature));
        let mut c = cert.clone();
        c.pne_id = "tv".into();
        assert_eq!(c.verify(&ca().public()), Err(CryptoError::BadSignature));
        let mut c = cert.clone();
        c.owner = "bob".into();
        assert_eq!(c.verify(&ca().public()), Err(CryptoError::BadSignature));
        let mut c = cert.clone();
        c.key = MemberSigningKey::derive(&eukey(2), "phone").public();
        assert_eq!(c.verify(&ca().public()), Err(CryptoError::BadSignature));
        for i in 0..SIGNATURE_LEN {
            let mut c = cert.clone();
            c.signature[i] ^= 1;
            assert_eq!(c.verify(&ca().public()), Err(CryptoError::BadSignature));
        }
        assert!(matches!(
            cert.verify(&AuthorityKey([0xff; 32])),
            Err(CryptoError::Malformed(_) | CryptoError::BadSignature)
        ));
    }

    #[test]
    fn content_opens_with_its_key_binding_and_signer() {
        let mut rng = MachineRng::from_seed_u64(3);
        let (sk, phone) = member(1, "phone");
        let sealed =
            seal_group_content(rng.get(), &gk(2), &sk, &binding("phone", 9), b"photo").unwrap();
        assert_eq!(sealed.len(), aead::NONCE_LEN + SIGNATURE_LEN + 5 + 16);
        let opened = open_group_content(&gk(2), &phone, &binding("phone", 9), &sealed).unwrap();
        assert_eq!(&opened[..], b"photo");
        // Another epoch's key (a member that left), another PN, epoch or content id.
        assert_eq!(
            open_group_content(&gk(1), &phone, &binding("phone", 9), &sealed),
            Err(CryptoError::BadTag)
        );
        let other_pn = ContentBinding {
            pn_id: &[0x62; 16],
            ..binding("phone", 9)
        };
        let other_epoch = ContentBinding {
            epoch: 3,
            ..binding("phone", 9)
        };
        for b in [other_pn, other_epoch, binding("phone", 10)] {
            assert_eq!(
                open_group_content(&gk(2), &phone, &b, &sealed),
                Err(CryptoError::BadTag)
            );
        }
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(open_group_content(&gk(2), &phone, &binding("phone", 9), &t).is_err());
        }
        assert!(open_group_content(&gk(2), &phone, &binding("phone", 9), &sealed[..8]).is_err());
    }

    /// The tv, a member holding the group key, seals content naming the phone as its sender:
    /// it opens (the key is shared), but the signature is the tv's, not the phone's.
    #[test]
    fn a_member_cannot_pass_its_content_off_as_anothers() {
        let mut rng = MachineRng::from_seed_u64(4);
        let (tv_key, tv) = member(2, "tv");
        let (_, phone) = member(1, "phone");
        let forged =
            seal_group_content(rng.get(), &gk(2), &tv_key, &binding("phone", 1), b"hi").unwrap();
        assert_eq!(
            open_group_content(&gk(2), &phone, &binding("phone", 1), &forged),
            Err(CryptoError::BadSignature)
        );
        // Nor with its own certificate beside a binding naming the phone.
        assert_eq!(
            open_group_content(&gk(2), &tv, &binding("phone", 1), &forged),
            Err(CryptoError::BadSignature)
        );
        // What the tv says as itself opens.
        let own = seal_group_content(rng.get(), &gk(2), &tv_key, &binding("tv", 1), b"hi").unwrap();
        assert!(open_group_content(&gk(2), &tv, &binding("tv", 1), &own).is_ok());
        // A box with no room for a signature.
        let short = aead::seal_with_nonce(
            &content_key(&gk(2), &PN, 2),
            [0; 12],
            &content_aad(&binding("tv", 1)),
            b"x",
        )
        .unwrap();
        assert!(matches!(
            open_group_content(&gk(2), &tv, &binding("tv", 1), &short),
            Err(CryptoError::Malformed(_))
        ));
    }

    /// Empty content is content: the box holds the signature alone, and opens.
    #[test]
    fn empty_content_is_signed_and_opens() {
        let mut rng = MachineRng::from_seed_u64(6);
        let (sk, phone) = member(1, "phone");
        let sealed = seal_group_content(rng.get(), &gk(2), &sk, &binding("phone", 3), b"").unwrap();
        assert_eq!(sealed.len(), aead::NONCE_LEN + SIGNATURE_LEN + 16);
        let opened = open_group_content(&gk(2), &phone, &binding("phone", 3), &sealed).unwrap();
        assert!(opened.is_empty());
    }

    #[test]
    fn an_authority_key_reads_back_from_hex() {
        let k = ca().public();
        assert_eq!(AuthorityKey::from_hex(&k.to_hex()), Ok(k));
        assert_eq!(AuthorityKey::from_hex("00"), Err(CryptoError::BadHex));
        assert_eq!(
            AuthorityKey::from_hex(&"zz".repeat(32)),
            Err(CryptoError::BadHex)
        );
    }

    /// A source's digest verifies as signed only: under its own key, for its session and
    /// total, with every hash in its place; anything else is `BadSignature`.
    #[test]
    fn a_delivery_digest_verifies_only_as_its_source_signed_it() {
        let (tv, tv_cert) = member(1, "tv");
        let (_, phone_cert) = member(2, "phone");
        let session = [9; 16];
        let hashes = [[1; 32], [2; 32]];
        let sig = tv.sign_delivery_digest(&session, 100, &hashes);
        assert_eq!(
            tv_cert.verify_delivery_digest(&session, 100, &hashes, &sig),
            Ok(())
        );
        let bad = |r: Result<(), CryptoError>| assert_eq!(r, Err(CryptoError::BadSignature));
        bad(phone_cert.verify_delivery_digest(&session, 100, &hashes, &sig));
        bad(tv_cert.verify_delivery_digest(&[8; 16], 100, &hashes, &sig));
        bad(tv_cert.verify_delivery_digest(&session, 101, &hashes, &sig));
        bad(tv_cert.verify_delivery_digest(&session, 100, &[[2; 32], [1; 32]], &sig));
        bad(tv_cert.verify_delivery_digest(&session, 100, &hashes[..1], &sig));
        bad(tv_cert.verify_delivery_digest(&session, 100, &[[1; 32], [2; 32], [3; 32]], &sig));
        for n in 0..SIGNATURE_LEN {
            let mut s = sig;
            s[n] ^= 0x40;
            bad(tv_cert.verify_delivery_digest(&session, 100, &hashes, &s));
        }
    }
}
