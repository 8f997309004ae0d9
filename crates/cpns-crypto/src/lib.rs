//! cpns-crypto: the security binding of CPNS (docs/design.md §4), as plain functions and types.
//!
//! This crate holds every key and every cryptographic computation of the CPNS flows, and nothing
//! else: no I/O, no clock, no protocol state. The protocol crate calls it at the spec steps that
//! name a key or a hash; the exact byte layouts are specified in docs/security.md and pinned by
//! docs/security-vectors.json. Primitives all come from RustCrypto: HKDF-SHA256 and HMAC-SHA256
//! for derivation and authentication, ChaCha20-Poly1305 for every AEAD, Ed25519 (`ed25519-dalek`) for the signatures of group content, `getrandom` for keys and
//! nonces (through the [`MachineRng`] each protocol machine is given), `subtle` for constant-time comparison, `zeroize` for wiping.
//!
//! | flow (spec) | module | keys |
//! |---|---|---|
//! | PNE <-> server mutual auth, SK_PNE (000 §6.6.1.1 steps 8-15; 003 §1.4) | [`pne_auth`](PneAuthKeys) | EUKey_PNE → SK_PNE, K_confirm |
//! | LocalEUKey delivery (000 §6.6.1.1 steps 5-7) | [`wrap_local_eukey`] | EUKey_r → KEK_r |
//! | GW auth on the WAN, TLS-bound (002 §B.1.1.2 steps 8-11) | [`gw_auth_response`] | EUKey_GW → K_gw |
//! | PN GW auth on an insecure PAN, sealed frames (docs/design.md §4) | [`PanKeys`], [`FrameSealer`] | LocalEUKey → K_confirm, K_gw→pne, K_pne→gw |
//! | PNE <-> server end-to-end payloads | [`seal_e2e`] | SK_PNE → K_dir |
//! | the registration grant (003 §1.4.1 steps 3-4) | [`seal_registration_grant`] | SK_PNE → K_dir(server→PNE) |
//! | secrets at rest in the server store | [`seal_at_rest`] | MasterKey → K_rest |
//! | group content: who sent it (docs/security.md §4.11) | [`seal_group_content`], [`MemberCertificate`] | MasterKey → CA, EUKey_PNE → sk_m; GK → K_gc |
//!
//! Every AEAD's associated data is a length-prefixed transcript with its own label, built here
//! ([`pan_frame_aad`], [`registration_grant_aad`], [`at_rest_eukey_aad`],
//! [`at_rest_session_key_aad`], and the LocalEUKey wrap's inside [`wrap_local_eukey`]).
//!
//! A typical PN establishment, as seen from this crate:
//! ```
//! use cpns_crypto::*;
//! # fn main() -> Result<(), CryptoError> {
//! let (eukey_pne, eukey_gw) = (EuKey::generate()?, EuKey::generate()?);
//! let pn_id = [7u8; 16];
//! let (rand_pne, rand_server) = (Rand::generate()?, Rand::generate()?);
//! // Step 5: the server makes a LocalEUKey and wraps one copy per recipient.
//! let local = LocalEuKey::generate()?;
//! let binding = KeyBinding { pn_id: &pn_id, pne_id: "pne-1", gw_id: "gw-1", rand_server: &rand_server };
//! let mut rng = MachineRng::os();
//! let for_pne = wrap_local_eukey(rng.get(), &eukey_pne, Recipient::Pne, &binding, &local);
//! let for_gw = wrap_local_eukey(rng.get(), &eukey_gw, Recipient::Gateway, &binding, &local);
//! // Steps 6-7: each recipient unwraps its own copy.
//! assert_eq!(unwrap_local_eukey(&eukey_gw, Recipient::Gateway, &binding, &for_gw)?, local);
//! assert_eq!(unwrap_local_eukey(&eukey_pne, Recipient::Pne, &binding, &for_pne)?, local);
//! // Steps 8-15: mutual authentication and SK_PNE, bound to what the PNE said (its join
//! // information's canonical CBOR, as both sides encode it).
//! let said = statement_digest(b"\xa1\x00...");
//! let input = PneAuthInput {
//!     purpose: AuthPurpose::Establishment, pn_id: &pn_id, pne_id: "pne-1",
//!     rand_pne: &rand_pne, rand_server: &rand_server, statement: &said,
//! };
//! let pne = PneAuthKeys::derive(&eukey_pne, &input);
//! let server = PneAuthKeys::derive(&eukey_pne, &input); // the server's stored copy of EUKey_PNE
//! let hash_pne = pne.hash_pne();
//! server.verify_hash_pne(&hash_pne)?;
//! // Step 12: hash_server also covers the inventory the PNE will store (its canonical CBOR).
//! let outcome = ServerOutcome::Established { inventory_cbor: b"\xa2\x00..." };
//! pne.verify_hash_server(&hash_pne, &outcome, &server.hash_server(&hash_pne, &outcome))?;
//! let aad = at_rest_session_key_aad(&pn_id, "pne-1");
//! let master = MasterKey::generate()?;
//! let stored = seal_at_rest(&master, &aad, server.session_key().expose_secret())?;
//! assert_eq!(&open_at_rest(&master, &aad, &stored)?[..], pne.session_key().expose_secret());
//! # Ok(())
//! # }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod aad;
mod aead;
mod at_rest;
mod ct_hex;
mod delivery;
mod e2e;
mod error;
mod frame;
mod grant;
mod group;
mod gw_auth;
mod kdf;
mod keys;
pub mod labels;
mod local_key;
mod pan;
mod pne_auth;
mod rng;
mod secure;
mod sign;
mod suite;
#[doc(hidden)]
pub mod vectors;

pub use aad::{
    GrantBinding, PanDirection, at_rest_eukey_aad, at_rest_session_key_aad, pan_frame_aad,
    registration_grant_aad,
};
pub use at_rest::{open_at_rest, seal_at_rest, seal_at_rest_with_nonce};
pub use delivery::{
    CHUNK_OVERHEAD, ChunkBinding, ChunkPlain, ChunkSealer, KeptAs, OpenedChunk,
    open_delivery_key_at_rest, seal_delivery_key_at_rest, seal_delivery_key_at_rest_with_nonce,
};
pub use e2e::{E2eDirection, E2eKind, open_e2e, seal_e2e, seal_e2e_with_nonce};
pub use error::CryptoError;
pub use frame::{FrameOpener, FrameSealer, SEAL_OVERHEAD};
pub use grant::{
    open_registration_grant, seal_registration_grant, seal_registration_grant_with_nonce,
};
pub use group::{
    EndedBinding, GroupKeyBinding, open_group_key, open_group_key_at_rest, open_membership_ended,
    open_service_group_key_at_rest, seal_group_key, seal_group_key_at_rest,
    seal_group_key_at_rest_with_nonce, seal_group_key_with_nonce, seal_membership_ended,
    seal_membership_ended_with_nonce, seal_service_group_key_at_rest,
    seal_service_group_key_at_rest_with_nonce,
};
pub use gw_auth::{
    TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN, gw_auth_response, verify_gw_auth_response,
};
pub use keys::{
    AuthHash, DeliveryKey, EuKey, GroupKey, KEY_LEN, LocalEuKey, MasterKey, RAND_LEN, Rand,
    SessionKey, ct_eq, random_array,
};
pub use local_key::{
    KeyBinding, Recipient, STORED_WRAPPED_KEY_LEN, WRAPPED_KEY_LEN, split_stored_wrapped_key,
    stored_wrapped_key, unwrap_local_eukey, unwrap_stored_local_eukey, wrap_local_eukey,
    wrap_local_eukey_with_nonce,
};
pub use pan::{PanAuthInput, PanKeys};
pub use pne_auth::{
    AuthPurpose, PneAuthInput, PneAuthKeys, ServerOutcome, VERDICT_AUTHENTICATED, inventory_digest,
    statement_digest,
};
pub use rng::{CryptoRng, MachineRng, Rng};
pub use secure::{
    NoticeBinding, SecureBinding, device_storage_key, open_secure_message, open_secure_notice,
    seal_secure_message, seal_secure_message_with_nonce, seal_secure_notice,
    seal_secure_notice_with_nonce, secure_message_aad, secure_notice_aad,
};
pub use sign::{
    AuthorityKey, CertificationKey, Certified, ContentBinding, MemberCertificate, MemberKey,
    MemberSigningKey, PUBLIC_KEY_LEN, SIGNATURE_LEN, open_group_content, seal_group_content,
    seal_group_content_with_nonce,
};
pub use suite::Suite;
