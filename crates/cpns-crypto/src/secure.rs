//! The secure PNE<->server session (003 §1.4.1 step 4), and a device's own secrets at rest.
//!
//! After registration the PNE and the server share SK_PNE. Each Secure Request and Secure
//! Response is an end-to-end box under the direction key K_dir derived from it
//! (docs/security.md §4.6), with associated data binding the direction, the PN the PNE
//! registered in, the PNE and the request id, so the relaying PN GW can neither read, alter,
//! redirect to another PNE nor pair an answer with another request (docs/security.md §4.8):
//! ```text
//! aad    = T("cpns/v1/secure-message") ‖ T(dir) ‖ T(PN ID) ‖ T(PNE ID) ‖ T(u64be(request id))
//! sealed = nonce(12, random) ‖ ChaCha20-Poly1305(K_dir, nonce, aad, CBOR(SecureCall))
//! ```
//! A device keeps SK_PNE sealed at rest under a key derived from its own EUKey, with the at-rest
//! AAD of an SK_PNE (docs/security.md §4.9):
//! ```text
//! K_device = HKDF-SHA256(salt = none, IKM = EUKey, info = T("cpns/v1/device-storage-key"))
//! ```
//! and then the same at-rest box as the server's ([`crate::seal_at_rest`], K_device as its
//! master key).

use crate::e2e::{E2eDirection, E2eKind, open_e2e, seal_e2e, seal_e2e_with_nonce};
use crate::error::CryptoError;
use crate::kdf::{Transcript, derive_key};
use crate::keys::{EuKey, MasterKey, SessionKey};
use crate::labels;
use crate::rng::CryptoRng;
use zeroize::Zeroizing;

/// What a secure message belongs to; authenticated as its associated data.
#[derive(Clone, Copy, Debug)]
pub struct SecureBinding<'a> {
    /// The PN the PNE registered in, 16 bytes.
    pub pn_id: &'a [u8; 16],
    /// The PNE.
    pub pne_id: &'a str,
    /// The request id (of the request, or of the request a response answers).
    pub request_id: u64,
}

/// The associated data of a secure message in direction `dir`.
pub fn secure_message_aad(dir: E2eDirection, b: &SecureBinding<'_>) -> Vec<u8> {
    let mut t = Transcript::new(labels::SECURE_MESSAGE_AAD);
    t.push(&[dir.code()])
        .push(b.pn_id)
        .push(b.pne_id.as_bytes())
        .push(&b.request_id.to_be_bytes());
    t.as_bytes().to_vec()
}

/// Seals a secure message (the CBOR of a `SecureCall`) in direction `dir`.
///
/// # Errors
/// [`CryptoError::Malformed`] for a plaintext beyond the ChaCha20-Poly1305 limit.
pub fn seal_secure_message<R: CryptoRng + ?Sized>(
    rng: &mut R,
    sk_pne: &SessionKey,
    dir: E2eDirection,
    binding: &SecureBinding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_e2e(
        rng,
        sk_pne,
        (dir, E2eKind::Secure),
        &secure_message_aad(dir, binding),
        plaintext,
    )
}

/// Seals with a caller-chosen nonce; deterministic, for test vectors only.
pub fn seal_secure_message_with_nonce(
    sk_pne: &SessionKey,
    dir: E2eDirection,
    binding: &SecureBinding<'_>,
    plaintext: &[u8],
    nonce: [u8; 12],
) -> Vec<u8> {
    seal_e2e_with_nonce(
        sk_pne,
        (dir, E2eKind::Secure),
        &secure_message_aad(dir, binding),
        plaintext,
        nonce,
    )
}

/// Opens a secure message.
///
/// # Errors
/// [`CryptoError::Malformed`] for fewer than 28 bytes; [`CryptoError::BadTag`] on another SK_PNE
/// (a PN GW has none), the other direction, another PN, PNE or request id, or a tampered byte.
pub fn open_secure_message(
    sk_pne: &SessionKey,
    dir: E2eDirection,
    binding: &SecureBinding<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_e2e(
        sk_pne,
        (dir, E2eKind::Secure),
        &secure_message_aad(dir, binding),
        sealed,
    )
}

/// What a secure notice belongs to; authenticated as its associated data.
#[derive(Clone, Copy, Debug)]
pub struct NoticeBinding<'a> {
    /// The PN whose SK_PNE seals it, 16 bytes.
    pub pn_id: &'a [u8; 16],
    /// The PNE it is for.
    pub pne_id: &'a str,
    /// Its number: each notice to a PNE has a greater one than the last.
    pub notice_id: u64,
}

/// The associated data of a secure notice.
pub fn secure_notice_aad(b: &NoticeBinding<'_>) -> Vec<u8> {
    let mut t = Transcript::new(labels::SECURE_NOTICE_AAD);
    t.push(b.pn_id)
        .push(b.pne_id.as_bytes())
        .push(&b.notice_id.to_be_bytes());
    t.as_bytes().to_vec()
}

/// The key a notice is sealed under: server to PNE, of its own kind, so a notice never opens
/// as an answer, nor an answer as a notice.
const NOTICE: (E2eDirection, E2eKind) = (E2eDirection::ServerToPne, E2eKind::Notice);

/// Seals a secure notice (the CBOR of a `SecureCall`) the server pushes to a PNE.
///
/// # Errors
/// [`CryptoError::Malformed`] for a plaintext beyond the ChaCha20-Poly1305 limit.
pub fn seal_secure_notice<R: CryptoRng + ?Sized>(
    rng: &mut R,
    sk_pne: &SessionKey,
    binding: &NoticeBinding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_e2e(rng, sk_pne, NOTICE, &secure_notice_aad(binding), plaintext)
}

/// Seals with a caller-chosen nonce; deterministic, for test vectors only.
pub fn seal_secure_notice_with_nonce(
    sk_pne: &SessionKey,
    binding: &NoticeBinding<'_>,
    plaintext: &[u8],
    nonce: [u8; 12],
) -> Vec<u8> {
    seal_e2e_with_nonce(
        sk_pne,
        NOTICE,
        &secure_notice_aad(binding),
        plaintext,
        nonce,
    )
}

/// Opens a secure notice.
///
/// # Errors
/// [`CryptoError::Malformed`] for fewer than 28 bytes; [`CryptoError::BadTag`] on another SK_PNE,
/// another PN, PNE or notice number, a secure message passed off as a notice, or a tampered
/// byte.
pub fn open_secure_notice(
    sk_pne: &SessionKey,
    binding: &NoticeBinding<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_e2e(sk_pne, NOTICE, &secure_notice_aad(binding), sealed)
}

/// K_device: the key a device seals its own secrets at rest under, derived from its EUKey.
pub fn device_storage_key(eukey: &EuKey) -> MasterKey {
    let k = derive_key(
        eukey.expose_secret(),
        &Transcript::new(labels::DEVICE_STORAGE_KEY),
    );
    MasterKey::from_bytes(*k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MachineRng, open_at_rest, seal_at_rest};

    const PN: [u8; 16] = [7; 16];

    fn b(pne: &str, request_id: u64) -> SecureBinding<'_> {
        SecureBinding {
            pn_id: &PN,
            pne_id: pne,
            request_id,
        }
    }

    #[test]
    fn a_notice_opens_only_where_it_belongs_and_never_as_an_answer() {
        let sk = SessionKey::from_bytes([0x51; 32]);
        let mut rng = MachineRng::from_seed_u64(2);
        let n = |pne, notice_id| NoticeBinding {
            pn_id: &PN,
            pne_id: pne,
            notice_id,
        };
        let sealed = seal_secure_notice(rng.get(), &sk, &n("phone", 5), b"match").unwrap();
        assert_eq!(
            &open_secure_notice(&sk, &n("phone", 5), &sealed).unwrap()[..],
            b"match"
        );
        let other = SessionKey::from_bytes([0x52; 32]);
        assert!(open_secure_notice(&other, &n("phone", 5), &sealed).is_err());
        assert!(open_secure_notice(&sk, &n("tv", 5), &sealed).is_err());
        assert!(open_secure_notice(&sk, &n("phone", 6), &sealed).is_err());
        let other_pn = [8u8; 16];
        let moved = NoticeBinding {
            pn_id: &other_pn,
            ..n("phone", 5)
        };
        assert!(open_secure_notice(&sk, &moved, &sealed).is_err());
        // Not an answer: same key material, same numbers, another kind.
        let down = E2eDirection::ServerToPne;
        assert!(open_secure_message(&sk, down, &b("phone", 5), &sealed).is_err());
        let answer = seal_secure_message(rng.get(), &sk, down, &b("phone", 5), b"x").unwrap();
        assert!(open_secure_notice(&sk, &n("phone", 5), &answer).is_err());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(
                open_secure_notice(&sk, &n("phone", 5), &t).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_secure_message_opens_only_where_it_belongs() {
        let sk = SessionKey::from_bytes([0x51; 32]);
        let mut rng = MachineRng::from_seed_u64(1);
        let up = E2eDirection::PneToServer;
        let sealed = seal_secure_message(rng.get(), &sk, up, &b("phone", 9), b"call").unwrap();
        assert_eq!(
            &open_secure_message(&sk, up, &b("phone", 9), &sealed).unwrap()[..],
            b"call"
        );
        let other = SessionKey::from_bytes([0x52; 32]);
        let other_pn = [8u8; 16];
        let wrong = [
            open_secure_message(&other, up, &b("phone", 9), &sealed),
            open_secure_message(&sk, E2eDirection::ServerToPne, &b("phone", 9), &sealed),
            open_secure_message(&sk, up, &b("watch", 9), &sealed),
            open_secure_message(&sk, up, &b("phone", 10), &sealed),
            open_secure_message(
                &sk,
                up,
                &SecureBinding {
                    pn_id: &other_pn,
                    ..b("phone", 9)
                },
                &sealed,
            ),
        ];
        for w in wrong {
            assert_eq!(w.unwrap_err(), CryptoError::BadTag);
        }
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(open_secure_message(&sk, up, &b("phone", 9), &tampered).is_err());
    }

    #[test]
    fn the_aad_is_the_documented_transcript() {
        let aad = secure_message_aad(E2eDirection::ServerToPne, &b("pne", 0x0102));
        let mut expected = Vec::new();
        for field in [
            labels::SECURE_MESSAGE_AAD.as_bytes(),
            &[1u8][..],
            &PN[..],
            b"pne",
            &0x0102u64.to_be_bytes()[..],
        ] {
            expected.extend_from_slice(&(field.len() as u16).to_be_bytes());
            expected.extend_from_slice(field);
        }
        assert_eq!(aad, expected);
    }

    #[test]
    fn device_storage_key_is_separated_and_seals_at_rest() {
        let eukey = EuKey::from_bytes([3; 32]);
        let k = device_storage_key(&eukey);
        assert_ne!(k.expose_secret(), eukey.expose_secret());
        assert_eq!(device_storage_key(&eukey), k);
        assert_ne!(device_storage_key(&EuKey::from_bytes([4; 32])), k);
        let boxed = seal_at_rest(&k, b"row", b"sk").unwrap();
        assert_eq!(&open_at_rest(&k, b"row", &boxed).unwrap()[..], b"sk");
        let other = device_storage_key(&EuKey::from_bytes([4; 32]));
        assert!(open_at_rest(&other, b"row", &boxed).is_err());
    }
}
