//! Secrets at rest: EUKeys and session keys sealed under the CPNS Server's MasterKey.
//!
//! docs/design.md §4-5: the server store keeps each entity's EUKey (and any persisted session key)
//! "encrypted at rest under a server master key". The store passes a row-identifying `aad`
//! transcript ([`crate::at_rest_eukey_aad`] for an EUKey, [`crate::at_rest_session_key_aad`] for
//! an SK_PNE), so a sealed value copied into another row or column does not open
//! (docs/security.md §4.7):
//! ```text
//! K_rest = HKDF-SHA256(salt = none, IKM = MasterKey, info = T("cpns/v1/at-rest-key"))
//! sealed = nonce(12, random) ‖ ChaCha20-Poly1305(K_rest, nonce, aad, plaintext)
//! ```
//! The MasterKey itself never keys the AEAD, so later uses of it (another table format, a key
//! check value) can get their own labels without sharing a key with this one.

use crate::aead;
use crate::error::CryptoError;
use crate::kdf::{Transcript, derive_key};
use crate::keys::MasterKey;
use crate::labels;
use zeroize::Zeroizing;

/// K_rest, the sealing key derived from the MasterKey.
pub(crate) fn at_rest_key(master: &MasterKey) -> Zeroizing<[u8; 32]> {
    derive_key(
        master.expose_secret(),
        &Transcript::new(labels::AT_REST_KEY),
    )
}

/// Seals a secret for storage under a random nonce.
///
/// # Errors
/// [`CryptoError::Rng`] if no nonce can be drawn; [`CryptoError::Malformed`] for a plaintext
/// beyond the ChaCha20-Poly1305 limit.
pub fn seal_at_rest(
    master: &MasterKey,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    aead::seal(&at_rest_key(master), aad, plaintext)
}

/// Seals with a caller-chosen nonce; deterministic, for test vectors. A nonce must never repeat
/// under one MasterKey: production code calls [`seal_at_rest`].
///
/// # Panics
/// If `plaintext` exceeds the ChaCha20-Poly1305 limit of 256 GiB.
pub fn seal_at_rest_with_nonce(
    master: &MasterKey,
    aad: &[u8],
    plaintext: &[u8],
    nonce: [u8; 12],
) -> Vec<u8> {
    aead::seal_with_nonce(&at_rest_key(master), nonce, aad, plaintext)
        .expect("plaintext within the ChaCha20-Poly1305 length limit")
}

/// Opens a sealed secret into a zeroizing buffer.
///
/// # Errors
/// [`CryptoError::Malformed`] for fewer than 28 bytes; [`CryptoError::BadTag`] on a wrong
/// MasterKey, a different `aad` (another row) or any tampered byte.
pub fn open_at_rest(
    master: &MasterKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    aead::open(&at_rest_key(master), aad, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EuKey;

    fn master() -> MasterKey {
        MasterKey::from_bytes([0x6d; 32])
    }

    #[test]
    fn eukey_round_trip() {
        let eukey = EuKey::from_bytes([0x0e; 32]);
        let aad = crate::at_rest_eukey_aad("pne-1");
        let s = seal_at_rest(&master(), &aad, eukey.expose_secret()).unwrap();
        assert_eq!(s.len(), 32 + 28);
        let back = open_at_rest(&master(), &aad, &s).unwrap();
        let mut arr = [0u8; 32];
        arr.copy_from_slice(&back);
        assert_eq!(EuKey::from_bytes(arr), eukey);
    }

    /// A sealed value moved to another row does not open: another entity's EUKey row, another
    /// PN or PNE's session-key row, or the other column.
    #[test]
    fn sealed_values_do_not_open_in_another_row() {
        let pn = [0x0a; 16];
        let eukey = seal_at_rest(&master(), &crate::at_rest_eukey_aad("pne-1"), b"k").unwrap();
        let sk_aad = crate::at_rest_session_key_aad(&pn, "pne-1");
        let sk = seal_at_rest(&master(), &sk_aad, b"s").unwrap();
        for (aad, sealed) in [
            (crate::at_rest_eukey_aad("pne-2"), &eukey),
            (crate::at_rest_session_key_aad(&pn, "pne-1"), &eukey),
            (crate::at_rest_session_key_aad(&[0x0b; 16], "pne-1"), &sk),
            (crate::at_rest_session_key_aad(&pn, "pne-2"), &sk),
            (crate::at_rest_eukey_aad("pne-1"), &sk),
        ] {
            assert_eq!(
                open_at_rest(&master(), &aad, sealed),
                Err(CryptoError::BadTag)
            );
        }
    }

    #[test]
    fn wrong_aad_key_or_bytes_fail() {
        let s = seal_at_rest(&master(), b"row-1", b"secret").unwrap();
        assert_eq!(
            open_at_rest(&master(), b"row-2", &s),
            Err(CryptoError::BadTag)
        );
        let other = MasterKey::from_bytes([0x6e; 32]);
        assert_eq!(open_at_rest(&other, b"row-1", &s), Err(CryptoError::BadTag));
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert_eq!(
                open_at_rest(&master(), b"row-1", &t),
                Err(CryptoError::BadTag)
            );
        }
        assert!(matches!(
            open_at_rest(&master(), b"row-1", &[0; 10]),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn deterministic_variant_and_key_separation() {
        let a = seal_at_rest_with_nonce(&master(), b"x", b"y", [1; 12]);
        assert_eq!(a, seal_at_rest_with_nonce(&master(), b"x", b"y", [1; 12]));
        assert_ne!(*at_rest_key(&master()), *master().expose_secret());
        // The same bytes used as an SK_PNE give a different key: labels separate the uses.
        let sk = crate::SessionKey::from_bytes(*master().expose_secret());
        let e2e = crate::e2e::e2e_key(&sk, crate::E2eDirection::ServerToPne, crate::E2eKind::Grant);
        assert_ne!(*at_rest_key(&master()), *e2e);
    }
}
