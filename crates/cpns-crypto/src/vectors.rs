//! Intermediate values of the key schedule, exposed only to produce and check test vectors.
//!
//! docs/security-vectors.json lists, for fixed inputs, every intermediate key and transcript of
//! every construction, so that a second implementation can find exactly where it diverges. The
//! example `gen_vectors` writes that file with these accessors and `tests/vectors.rs` checks it.
//! The module is `#[doc(hidden)]`: nothing in the protocol stack should call it, and the values
//! it returns are plain arrays that are *not* zeroized.

use crate::kdf::{self, Transcript};
use crate::{
    AuthHash, E2eDirection, EuKey, GroupKey, GroupKeyBinding, KeyBinding, MasterKey, PanKeys,
    PneAuthKeys, Rand, Recipient, ServerOutcome, SessionKey,
};

/// Encodes a transcript: `label` then every field, each as u16 BE length ‖ bytes.
pub fn transcript(label: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut t = Transcript::new(label);
    for f in fields {
        t.push(f);
    }
    t.as_bytes().to_vec()
}

/// HKDF-SHA256 Extract: the PRK for `salt` (None = 32 zero bytes) and `ikm`.
pub fn hkdf_prk(salt: Option<&[u8]>, ikm: &[u8; 32]) -> [u8; 32] {
    *kdf::extract_prk(salt, ikm)
}

/// The PNE <-> server confirmation key (K_confirm).
pub fn pne_confirm_key(keys: &PneAuthKeys) -> [u8; 32] {
    *keys.confirm_key()
}

/// The HMAC input of hash_server_PNE.
pub fn hash_server_transcript(
    keys: &PneAuthKeys,
    hash_pne: &AuthHash,
    outcome: &ServerOutcome<'_>,
) -> Vec<u8> {
    keys.hash_server_transcript(hash_pne, outcome)
        .as_bytes()
        .to_vec()
}

/// KEK_r for a LocalEUKey copy.
pub fn local_eukey_kek(eukey: &EuKey, recipient: Recipient) -> [u8; 32] {
    *crate::local_key::kek(eukey, recipient)
}

/// AAD_r for a LocalEUKey copy.
pub fn local_eukey_aad(recipient: Recipient, binding: &KeyBinding<'_>) -> Vec<u8> {
    crate::local_key::wrap_aad(recipient, binding)
        .as_bytes()
        .to_vec()
}

/// K_gw, the GW's WAN authentication key.
pub fn gw_auth_key(eukey: &EuKey) -> [u8; 32] {
    *crate::gw_auth::gw_auth_key(eukey)
}

/// The HMAC input of the GW's WAN authentication response.
pub fn gw_auth_transcript(
    gw_id: &str,
    rand_gw: &Rand,
    rand_server: &Rand,
    exporter: &[u8; 32],
) -> Vec<u8> {
    crate::gw_auth::gw_auth_transcript(gw_id, rand_gw, rand_server, exporter)
        .as_bytes()
        .to_vec()
}

/// (K_confirm, K_gw→pne, K_pne→gw) of a PAN session.
pub fn pan_keys(keys: &PanKeys) -> [[u8; 32]; 3] {
    let (c, g, p) = keys.keys();
    [*c, *g, *p]
}

/// K_dir,kind, the end-to-end key of one direction and kind.
pub fn e2e_key(sk: &SessionKey, dir: E2eDirection, kind: crate::E2eKind) -> [u8; 32] {
    *crate::e2e::e2e_key(sk, dir, kind)
}

/// K_rest, the at-rest sealing key.
pub fn at_rest_key(master: &MasterKey) -> [u8; 32] {
    *crate::at_rest::at_rest_key(master)
}

/// The associated data of a member's copy of a group key (docs/security.md §4.10).
pub fn group_key_aad(binding: &GroupKeyBinding<'_>) -> Vec<u8> {
    crate::group::copy_aad(binding)
}

/// K_gc, the group content key of one epoch, derived from its GK.
pub fn group_content_key(gk: &GroupKey, pn_id: &[u8; 16], epoch: u64) -> [u8; 32] {
    *crate::group::content_key(gk, pn_id, epoch)
}

/// The associated data of group content.
pub fn group_content_aad(b: &crate::ContentBinding<'_>) -> Vec<u8> {
    crate::sign::content_aad(b)
}

/// What a member signs of the group content it sends.
pub fn group_content_signed(b: &crate::ContentBinding<'_>, plaintext: &[u8]) -> Vec<u8> {
    crate::sign::signed_message(b, plaintext)
}

/// The seed of the server's certification key.
pub fn certification_seed(master: &MasterKey) -> [u8; 32] {
    *crate::kdf::derive_key(
        master.expose_secret(),
        &Transcript::new(crate::labels::CERTIFICATION_KEY),
    )
}

/// The seed of a member's signing key.
pub fn member_signing_seed(eukey: &crate::EuKey, pne_id: &str) -> [u8; 32] {
    let mut t = Transcript::new(crate::labels::MEMBER_SIGNING_KEY);
    t.push(pne_id.as_bytes());
    *crate::kdf::derive_key(eukey.expose_secret(), &t)
}

/// What the server signs to certify a member's key.
pub fn member_certificate_message(pne_id: &str, owner: &str, key: &crate::MemberKey) -> Vec<u8> {
    crate::sign::certificate_message(pne_id, owner, key)
}

/// The associated data of a PN's group key sealed at rest.
pub fn group_key_at_rest_aad(pn_id: &[u8; 16], epoch: u64) -> Vec<u8> {
    crate::group::at_rest_aad(pn_id, epoch)
}

/// The associated data of a service group's key of `epoch` sealed at rest.
pub fn service_group_key_at_rest_aad(group_id: &[u8; 16], epoch: u64) -> Vec<u8> {
    crate::group::service_group_at_rest_aad(group_id, epoch)
}

/// A delivery session's chunk key, from its DeliveryKey and id (docs/security.md §4.12).
pub fn delivery_chunk_key(
    key: &crate::DeliveryKey,
    session: &[u8; 16],
    suite: crate::Suite,
) -> [u8; 32] {
    let mut t = Transcript::new(crate::labels::DELIVERY_CHUNK_KEY);
    t.push(session).push(&[suite.code()]);
    *crate::kdf::derive_key(key.expose_secret(), &t)
}

/// The AAD of a delivery session's key kept at rest on a device (docs/security.md §4.12).
pub fn delivery_key_at_rest_aad(session: &[u8; 16], kept_as: crate::KeptAs) -> Vec<u8> {
    crate::delivery::key_at_rest_aad(session, kept_as)
}

/// What a delivery's source signs: its items' SHA-256 (docs/security.md §4.12).
pub fn delivery_digest_message(session: &[u8; 16], total: u64, hashes: &[[u8; 32]]) -> Vec<u8> {
    crate::sign::delivery_digest_message(session, total, hashes)
}

/// The associated data of a delivery chunk.
pub fn delivery_chunk_aad(b: &crate::ChunkBinding<'_>) -> Vec<u8> {
    crate::delivery::chunk_aad(b)
}

/// The associated data of the server's word that a membership ended (`why`: the reason code).
pub fn membership_ended_aad(b: &crate::EndedBinding<'_>) -> Vec<u8> {
    crate::group::ended_aad(b)
}

/// Opens a ChaCha20-Poly1305 box `nonce ‖ ciphertext` under `key`: the inner bytes of a vector.
///
/// # Errors
/// As the crate's AEAD.
pub fn open_raw(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, crate::CryptoError> {
    crate::aead::open(key, aad, sealed).map(|z| z.to_vec())
}
