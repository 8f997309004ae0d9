//! The sealed registration grant: 003 §1.4.1 step 3's "security related information", sealed by
//! the CPNS Server for the registering PNE so that the relaying PN GW can neither read nor alter
//! it (docs/security.md §4.6).
//!
//! The grant is an end-to-end box in the server → PNE direction: its key is not SK_PNE itself but
//! the direction key derived from it, and its associated data names the PN, the PNE, the request
//! and the CPNS ID:
//! ```text
//! K_s2p  = HKDF-SHA256(salt = none, IKM = SK_PNE, info = T("cpns/v1/e2e-key") ‖ T(01) ‖ T(01))
//! aad    = T("cpns/v1/registration-grant") ‖ T(PN ID) ‖ T(PNE ID) ‖ T(u64be(request id)) ‖ T(CPNS ID)
//! sealed = nonce(12, random) ‖ ChaCha20-Poly1305(K_s2p, nonce, aad, CBOR(RegistrationGrant))
//! ```
//! The plaintext is the CBOR encoding of `cpns_wire::RegistrationGrant` (docs/wire.cddl,
//! `registration-grant`); this crate treats it as bytes.

use crate::aad::{GrantBinding, registration_grant_aad};
use crate::e2e::{E2eDirection, E2eKind, open_e2e, seal_e2e, seal_e2e_with_nonce};

/// The grant's key: server to PNE, kind grant.
const GRANT: (E2eDirection, E2eKind) = (E2eDirection::ServerToPne, E2eKind::Grant);
use crate::error::CryptoError;
use crate::keys::SessionKey;
use crate::rng::CryptoRng;
use zeroize::Zeroizing;

/// Seals a registration grant (003 §1.4.1 step 3) for the PNE under K_dir(server → PNE) of its
/// SK_PNE, with a nonce drawn from `rng`.
///
/// # Errors
/// [`CryptoError::Malformed`] for a plaintext beyond the ChaCha20-Poly1305 limit.
pub fn seal_registration_grant<R: CryptoRng + ?Sized>(
    rng: &mut R,
    sk_pne: &SessionKey,
    binding: &GrantBinding<'_>,
    grant_cbor: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_e2e(
        rng,
        sk_pne,
        GRANT,
        &registration_grant_aad(binding),
        grant_cbor,
    )
}

/// Seals a grant with a caller-chosen nonce; deterministic, for test vectors only.
pub fn seal_registration_grant_with_nonce(
    sk_pne: &SessionKey,
    binding: &GrantBinding<'_>,
    grant_cbor: &[u8],
    nonce: [u8; 12],
) -> Vec<u8> {
    seal_e2e_with_nonce(
        sk_pne,
        GRANT,
        &registration_grant_aad(binding),
        grant_cbor,
        nonce,
    )
}

/// Opens a registration grant on the PNE (003 §1.4.1 step 4), with the PN it registered in, its
/// own PNE ID and request id, and the CPNS ID of the response.
///
/// # Errors
/// [`CryptoError::Malformed`] for fewer than 28 bytes; [`CryptoError::BadTag`] on another
/// SK_PNE (a PN GW has none), another PN, PNE, request id or CPNS ID, or any tampered byte.
pub fn open_registration_grant(
    sk_pne: &SessionKey,
    binding: &GrantBinding<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_e2e(sk_pne, GRANT, &registration_grant_aad(binding), sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineRng;

    const PN: [u8; 16] = [0x31; 16];

    fn sk() -> SessionKey {
        SessionKey::from_bytes([0x32; 32])
    }

    fn binding() -> GrantBinding<'static> {
        GrantBinding {
            pn_id: &PN,
            pne_id: "pne-1",
            request_id: 7,
            cpns_id: "cpns-000001",
        }
    }

    #[test]
    fn round_trip() {
        let s =
            seal_registration_grant(MachineRng::os().get(), &sk(), &binding(), b"grant").unwrap();
        assert_eq!(s.len(), 5 + 28);
        assert_eq!(
            &open_registration_grant(&sk(), &binding(), &s).unwrap()[..],
            b"grant"
        );
    }

    /// Each field of the associated data matters: a grant for another PN, PNE, request or
    /// CPNS ID does not open.
    #[test]
    fn a_grant_for_another_binding_does_not_open() {
        let s = seal_registration_grant_with_nonce(&sk(), &binding(), b"grant", [1; 12]);
        let other_pn = [0x30; 16];
        for b in [
            GrantBinding {
                pn_id: &other_pn,
                ..binding()
            },
            GrantBinding {
                pne_id: "pne-2",
                ..binding()
            },
            GrantBinding {
                request_id: 8,
                ..binding()
            },
            GrantBinding {
                cpns_id: "cpns-000002",
                ..binding()
            },
        ] {
            assert_eq!(
                open_registration_grant(&sk(), &b, &s),
                Err(CryptoError::BadTag)
            );
        }
    }

    #[test]
    fn wrong_key_direction_or_bytes_fail() {
        let s = seal_registration_grant_with_nonce(&sk(), &binding(), b"grant", [1; 12]);
        let other = SessionKey::from_bytes([0x33; 32]);
        assert_eq!(
            open_registration_grant(&other, &binding(), &s),
            Err(CryptoError::BadTag)
        );
        // Sealed under SK_PNE itself, the PNE → server key or another kind's key, it does not
        // open either.
        let aad = registration_grant_aad(&binding());
        for use_ in [
            (E2eDirection::PneToServer, E2eKind::Grant),
            (E2eDirection::ServerToPne, E2eKind::Secure),
            (E2eDirection::ServerToPne, E2eKind::GroupKey),
        ] {
            let up = seal_e2e_with_nonce(&sk(), use_, &aad, b"grant", [1; 12]);
            assert_eq!(
                open_registration_grant(&sk(), &binding(), &up),
                Err(CryptoError::BadTag)
            );
        }
        let raw =
            crate::aead::seal_with_nonce(sk().expose_secret(), [1; 12], &aad, b"grant").unwrap();
        assert_eq!(
            open_registration_grant(&sk(), &binding(), &raw),
            Err(CryptoError::BadTag)
        );
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x08;
            assert_eq!(
                open_registration_grant(&sk(), &binding(), &t),
                Err(CryptoError::BadTag)
            );
        }
    }
}
