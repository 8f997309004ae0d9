//! PN GW authentication towards the CPNS Server on the WAN, bound to the TLS 1.3 session.
//!
//! 002 §B.1.1.2 steps 8-11: the GW sends a Connection setup request carrying rand_GW (step 8),
//! the server answers an Authentication request carrying rand_server (step 9), the GW answers
//! with a response computed from its EUKey (step 10), and the server confirms the connection only
//! if the response verifies (step 11). TLS 1.3 already authenticated the server to the GW; this
//! exchange authenticates the GW to the server. The response covers the TLS exporter value
//! (RFC 8446 §7.5 / RFC 5705, as channel binding per RFC 9266) of *this* connection, so a response
//! relayed by a man in the middle into a different TLS session does not verify
//! (docs/security.md §4.3):
//! ```text
//! exporter = TLS-Exporter(label = "EXPORTER-cpns-gw-auth", context = empty, length = 32)
//! K_gw     = HKDF-SHA256(salt = none, IKM = EUKey_GW, info = T("cpns/v1/gw-auth-key"))
//! response = HMAC-SHA256(K_gw, T("cpns/v1/gw-auth-response") ‖ T(GW ID) ‖ T(rand_GW)
//!                               ‖ T(rand_server) ‖ T(exporter))
//! ```

use crate::error::CryptoError;
use crate::kdf::{Transcript, derive_key, hmac};
use crate::keys::{AuthHash, EuKey, Rand};
use crate::labels;
use zeroize::Zeroizing;

/// The TLS exporter label both sides pass to the TLS stack (rustls
/// `export_keying_material(out, TLS_EXPORTER_LABEL, None)`), with an empty context.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-cpns-gw-auth";

/// Number of exporter bytes both sides request.
pub const TLS_EXPORTER_LEN: usize = 32;

/// K_gw, the GW's authentication key, derived so that EUKey_GW itself never keys a MAC.
pub(crate) fn gw_auth_key(eukey: &EuKey) -> Zeroizing<[u8; 32]> {
    derive_key(eukey.expose_secret(), &Transcript::new(labels::GW_AUTH_KEY))
}

/// The HMAC input of the GW auth response.
pub(crate) fn gw_auth_transcript(
    gw_id: &str,
    rand_gw: &Rand,
    rand_server: &Rand,
    exporter: &[u8; TLS_EXPORTER_LEN],
) -> Transcript {
    let mut t = Transcript::new(labels::GW_AUTH_RESPONSE);
    t.push(gw_id.as_bytes())
        .push(&rand_gw.0)
        .push(&rand_server.0)
        .push(exporter);
    t
}

/// The GW's Authentication and Authorization response (002 §B.1.1.2 step 10).
pub fn gw_auth_response(
    eukey: &EuKey,
    gw_id: &str,
    rand_gw: &Rand,
    rand_server: &Rand,
    exporter: &[u8; 32],
) -> AuthHash {
    let key = gw_auth_key(eukey);
    AuthHash(hmac(
        &key,
        &gw_auth_transcript(gw_id, rand_gw, rand_server, exporter),
    ))
}

/// The server's check of the GW's response before it confirms the connection
/// (002 §B.1.1.2 steps 10-11), in constant time.
///
/// # Errors
/// [`CryptoError::BadHash`] on a wrong EUKey, another GW ID, other rands, or an exporter from
/// another TLS session.
pub fn verify_gw_auth_response(
    eukey: &EuKey,
    gw_id: &str,
    rand_gw: &Rand,
    rand_server: &Rand,
    exporter: &[u8; 32],
    claimed: &AuthHash,
) -> Result<(), CryptoError> {
    if gw_auth_response(eukey, gw_id, rand_gw, rand_server, exporter).ct_eq(claimed) {
        Ok(())
    } else {
        Err(CryptoError::BadHash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R_GW: Rand = Rand([0x21; 16]);
    const R_SRV: Rand = Rand([0x22; 16]);
    const EXP: [u8; 32] = [0x33; 32];

    fn key() -> EuKey {
        EuKey::from_bytes([0x44; 32])
    }

    #[test]
    fn round_trip() {
        let r = gw_auth_response(&key(), "gw-1", &R_GW, &R_SRV, &EXP);
        verify_gw_auth_response(&key(), "gw-1", &R_GW, &R_SRV, &EXP, &r).unwrap();
    }

    #[test]
    fn another_tls_session_fails() {
        let r = gw_auth_response(&key(), "gw-1", &R_GW, &R_SRV, &EXP);
        let mut other = EXP;
        other[31] ^= 1;
        assert_eq!(
            verify_gw_auth_response(&key(), "gw-1", &R_GW, &R_SRV, &other, &r),
            Err(CryptoError::BadHash)
        );
    }

    #[test]
    fn wrong_key_id_or_rand_fails() {
        let r = gw_auth_response(&key(), "gw-1", &R_GW, &R_SRV, &EXP);
        let wrong = EuKey::from_bytes([0x45; 32]);
        let bad = [
            verify_gw_auth_response(&wrong, "gw-1", &R_GW, &R_SRV, &EXP, &r),
            verify_gw_auth_response(&key(), "gw-2", &R_GW, &R_SRV, &EXP, &r),
            verify_gw_auth_response(&key(), "gw-1", &Rand([0; 16]), &R_SRV, &EXP, &r),
            // A response recorded for an earlier rand_server does not answer this challenge.
            verify_gw_auth_response(&key(), "gw-1", &R_GW, &Rand([0; 16]), &EXP, &r),
            // Swapping the two rands does not verify either.
            verify_gw_auth_response(&key(), "gw-1", &R_SRV, &R_GW, &EXP, &r),
        ];
        for b in bad {
            assert_eq!(b, Err(CryptoError::BadHash));
        }
    }

    #[test]
    fn tampered_response_fails_at_every_byte() {
        let r = gw_auth_response(&key(), "gw-1", &R_GW, &R_SRV, &EXP);
        for i in 0..32 {
            let mut t = r;
            t.0[i] ^= 0x04;
            assert_eq!(
                verify_gw_auth_response(&key(), "gw-1", &R_GW, &R_SRV, &EXP, &t),
                Err(CryptoError::BadHash)
            );
        }
    }

    #[test]
    fn gw_auth_key_is_separated_from_eukey_and_kek() {
        let k = key();
        let g = gw_auth_key(&k);
        assert_ne!(*g, *k.expose_secret());
        assert_ne!(*g, *crate::local_key::kek(&k, crate::Recipient::Gateway));
    }
}
