//! ChaCha20-Poly1305 (RFC 8439) with the nonce carried in front: `nonce(12) ‖ ciphertext ‖ tag(16)`.
//!
//! The one AEAD layout shared by wrapped LocalEUKeys ([`crate::local_key`]), end-to-end payloads
//! ([`crate::e2e`]) and secrets at rest ([`crate::at_rest`]). Each caller first derives its own
//! key with its own label, so one of these boxes can never be opened as another kind. Random
//! nonces are 96 bits from the OS CSPRNG; under one key that stays safe for well over 2^32
//! messages, far beyond any single SK_PNE, KEK or MasterKey lifetime here. PAN frames use a
//! counter nonce instead and live in [`crate::frame`].

use crate::error::CryptoError;
use crate::keys::random_array;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use zeroize::Zeroizing;

/// Nonce length of ChaCha20-Poly1305.
pub(crate) const NONCE_LEN: usize = 12;
/// Tag length of ChaCha20-Poly1305.
pub(crate) const TAG_LEN: usize = 16;
/// Overhead of a nonce-prefixed box.
pub(crate) const BOX_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Builds a cipher instance; the instance zeroizes its key copy on drop.
pub(crate) fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&Key::from(*key))
}

/// Seals with a caller-chosen nonce: `nonce ‖ ct ‖ tag`.
///
/// # Errors
/// [`CryptoError::Malformed`] if the plaintext exceeds the ChaCha20-Poly1305 limit (256 GiB).
pub(crate) fn seal_with_nonce(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(BOX_OVERHEAD + plaintext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher(key)
        .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut out[NONCE_LEN..]).into())
        .map_err(|_| CryptoError::Malformed("plaintext too long for ChaCha20-Poly1305"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Seals under a fresh random nonce.
///
/// # Errors
/// [`CryptoError::Rng`] if no nonce can be drawn; [`CryptoError::Malformed`] on oversize input.
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal_with_nonce(key, random_array()?, aad, plaintext)
}

/// Opens `nonce ‖ ct ‖ tag` into a zeroizing buffer.
///
/// # Errors
/// [`CryptoError::Malformed`] when shorter than nonce + tag; [`CryptoError::BadTag`] when the
/// key, the associated data or any byte is wrong.
pub(crate) fn open(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < BOX_OVERHEAD {
        return Err(CryptoError::Malformed(
            "sealed box shorter than nonce and tag (28 bytes)",
        ));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Malformed("nonce length"))?;
    let tag = Tag::try_from(tag).map_err(|_| CryptoError::Malformed("tag length"))?;
    let mut buf = Zeroizing::new(ct.to_vec());
    cipher(key)
        .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
        .map_err(|_| CryptoError::BadTag)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8439 §2.8.2 AEAD test vector: checks the layout is plain ChaCha20-Poly1305.
    #[test]
    fn matches_rfc8439_section_2_8_2() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + u8::try_from(i).unwrap());
        let nonce = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let sealed = seal_with_nonce(&key, nonce, &aad, pt).unwrap();
        assert_eq!(&sealed[..12], &nonce);
        assert_eq!(
            hex::encode(&sealed[sealed.len() - 16..]),
            "1ae10b594f09e26a7e902ecbd0600691"
        );
        assert_eq!(hex::encode(&sealed[12..20]), "d31a8d34648e60db");
        assert_eq!(&open(&key, &aad, &sealed).unwrap()[..], &pt[..]);
    }

    #[test]
    fn short_and_tampered_boxes_are_rejected() {
        let key = [9u8; 32];
        let sealed = seal(&key, b"a", b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + BOX_OVERHEAD);
        assert!(matches!(
            open(&key, b"a", &sealed[..27]),
            Err(CryptoError::Malformed(_))
        ));
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert_eq!(open(&key, b"a", &t), Err(CryptoError::BadTag), "byte {i}");
        }
        assert_eq!(open(&key, b"b", &sealed), Err(CryptoError::BadTag));
        assert_eq!(open(&[8u8; 32], b"a", &sealed), Err(CryptoError::BadTag));
        let empty = seal(&key, b"", b"").unwrap();
        assert!(open(&key, b"", &empty).unwrap().is_empty());
    }
}
