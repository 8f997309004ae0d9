//! End-to-end sealing between a PNE and the CPNS Server under direction keys derived from SK_PNE.
//!
//! docs/design.md §4: "payloads the GW must not read (key deliveries, chargeable content) are sealed under
//! SK_PNE". The PN GW relays these boxes but holds only its own EUKey and the LocalEUKeys, none of
//! which derives SK_PNE (000 §6.6.1.1 step 12: "the same session key … if CPNS Server and PNE have
//! the same EUKey"), so it can neither read nor alter them. Each direction has its own key, so a
//! box the server sent cannot be reflected back to it as if the PNE had sent it
//! (docs/security.md §4.6):
//! ```text
//! K_dir,kind = HKDF-SHA256(salt = none, IKM = SK_PNE, info = T("cpns/v1/e2e-key") ‖ T(dir) ‖ T(kind))
//! sealed     = nonce(12, random) ‖ ChaCha20-Poly1305(K_dir,kind, nonce, aad, plaintext)
//! ```
//! with `dir` = `0x01` server -> PNE, `0x02` PNE -> server, and `kind` the [`E2eKind`] of the
//! box: one key per use (protocol version 2; version 1 had one key per direction for every
//! kind). Each kind also has its own associated-data transcript, with its own label, naming
//! what the box belongs to (docs/security.md §4.6).

use crate::aead;
use crate::error::CryptoError;
use crate::kdf::{Transcript, derive_key};
use crate::keys::SessionKey;
use crate::labels;
use crate::rng::CryptoRng;
use zeroize::Zeroizing;

/// The direction of an end-to-end box; each has its own key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum E2eDirection {
    /// Sealed by the server for the PNE. Encoded as the byte `0x01`.
    ServerToPne,
    /// Sealed by the PNE for the server. Encoded as the byte `0x02`.
    PneToServer,
}

impl E2eDirection {
    /// The one-byte transcript code of the direction.
    pub fn code(self) -> u8 {
        match self {
            E2eDirection::ServerToPne => 0x01,
            E2eDirection::PneToServer => 0x02,
        }
    }
}

/// What an end-to-end box carries; each kind has its own key (docs/security.md §4.6).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum E2eKind {
    /// The registration grant (003 §1.4.1 step 3). Encoded as `0x01`.
    Grant,
    /// A secure message, request or answer (003 §1.4.1 step 4). Encoded as `0x02`.
    Secure,
    /// A member's copy of a group key (docs/security.md §4.10). Encoded as `0x03`.
    GroupKey,
    /// The server's word that a membership ended. Encoded as `0x04`.
    MembershipEnded,
    /// A notice the server pushes to a PNE on its own (a service match; docs/security.md
    /// §4.8). Encoded as `0x05`.
    Notice,
}

impl E2eKind {
    /// The one-byte transcript code of the kind.
    pub fn code(self) -> u8 {
        match self {
            E2eKind::Grant => 0x01,
            E2eKind::Secure => 0x02,
            E2eKind::GroupKey => 0x03,
            E2eKind::MembershipEnded => 0x04,
            E2eKind::Notice => 0x05,
        }
    }
}

/// K_dir,kind, the key of one direction and kind, derived from SK_PNE.
pub(crate) fn e2e_key(sk: &SessionKey, dir: E2eDirection, kind: E2eKind) -> Zeroizing<[u8; 32]> {
    let mut info = Transcript::new(labels::E2E_KEY);
    info.push(&[dir.code()]).push(&[kind.code()]);
    derive_key(sk.expose_secret(), &info)
}

/// Seals a payload end to end under K_dir,kind of SK_PNE with a nonce drawn from `rng`.
///
/// # Errors
/// [`CryptoError::Malformed`] for a plaintext beyond the ChaCha20-Poly1305 limit.
pub fn seal_e2e<R: CryptoRng + ?Sized>(
    rng: &mut R,
    sk: &SessionKey,
    (dir, kind): (E2eDirection, E2eKind),
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; aead::NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    aead::seal_with_nonce(&e2e_key(sk, dir, kind), nonce, aad, plaintext)
}

/// Seals with a caller-chosen nonce; deterministic, for test vectors. A nonce must never repeat
/// under one SK_PNE and direction: production code calls [`seal_e2e`].
///
/// # Panics
/// If `plaintext` exceeds the ChaCha20-Poly1305 limit of 256 GiB.
pub fn seal_e2e_with_nonce(
    sk: &SessionKey,
    (dir, kind): (E2eDirection, E2eKind),
    aad: &[u8],
    plaintext: &[u8],
    nonce: [u8; 12],
) -> Vec<u8> {
    aead::seal_with_nonce(&e2e_key(sk, dir, kind), nonce, aad, plaintext)
        .expect("plaintext within the ChaCha20-Poly1305 length limit")
}

/// Opens an end-to-end box.
///
/// # Errors
/// [`CryptoError::Malformed`] for fewer than 28 bytes; [`CryptoError::BadTag`] on a wrong key
/// (e.g. a GW without SK_PNE), the wrong direction or kind, wrong `aad` or any tampered byte.
pub fn open_e2e(
    sk: &SessionKey,
    (dir, kind): (E2eDirection, E2eKind),
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    aead::open(&e2e_key(sk, dir, kind), aad, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EuKey, LocalEuKey, MachineRng};

    const S2P: E2eDirection = E2eDirection::ServerToPne;
    const P2S: E2eDirection = E2eDirection::PneToServer;
    const KINDS: [E2eKind; 4] = [
        E2eKind::Grant,
        E2eKind::Secure,
        E2eKind::GroupKey,
        E2eKind::MembershipEnded,
    ];

    fn sk() -> SessionKey {
        SessionKey::from_bytes([0x51; 32])
    }

    #[test]
    fn round_trip_both_directions() {
        for dir in [S2P, P2S] {
            let use_ = (dir, E2eKind::Secure);
            let s = seal_e2e(MachineRng::os().get(), &sk(), use_, b"msg 7", b"group key").unwrap();
            assert_eq!(
                &open_e2e(&sk(), use_, b"msg 7", &s).unwrap()[..],
                b"group key"
            );
        }
    }

    #[test]
    fn gw_without_sk_pne_cannot_open() {
        let use_ = (S2P, E2eKind::GroupKey);
        let s = seal_e2e(MachineRng::os().get(), &sk(), use_, b"", b"content key").unwrap();
        // What the GW holds: its EUKey and the LocalEUKey; neither byte string is SK_PNE.
        let gw_guesses = [
            SessionKey::from_bytes(*EuKey::from_bytes([0x52; 32]).expose_secret()),
            SessionKey::from_bytes(*LocalEuKey::from_bytes([0x53; 32]).expose_secret()),
        ];
        for g in &gw_guesses {
            assert_eq!(open_e2e(g, use_, b"", &s), Err(CryptoError::BadTag));
        }
    }

    #[test]
    fn direction_mix_up_fails() {
        let s = seal_e2e(
            MachineRng::os().get(),
            &sk(),
            (S2P, E2eKind::Secure),
            b"",
            b"x",
        )
        .unwrap();
        assert_eq!(
            open_e2e(&sk(), (P2S, E2eKind::Secure), b"", &s),
            Err(CryptoError::BadTag)
        );
        assert_ne!(
            *e2e_key(&sk(), S2P, E2eKind::Secure),
            *e2e_key(&sk(), P2S, E2eKind::Secure)
        );
    }

    /// One key, one use: a box of one kind does not open as another, even with the same
    /// associated data, and no two (direction, kind) share a key.
    #[test]
    fn kind_mix_up_fails() {
        for kind in KINDS {
            let s = seal_e2e_with_nonce(&sk(), (S2P, kind), b"a", b"x", [7; 12]);
            for other in KINDS.into_iter().filter(|k| *k != kind) {
                assert_eq!(
                    open_e2e(&sk(), (S2P, other), b"a", &s),
                    Err(CryptoError::BadTag),
                    "{kind:?} as {other:?}"
                );
            }
        }
        let mut keys: Vec<[u8; 32]> = Vec::new();
        for dir in [S2P, P2S] {
            for kind in KINDS {
                keys.push(*e2e_key(&sk(), dir, kind));
            }
        }
        for (i, a) in keys.iter().enumerate() {
            assert!(keys[i + 1..].iter().all(|b| a != b));
        }
        let codes: Vec<u8> = KINDS.iter().map(|k| k.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4]);
    }

    #[test]
    fn tamper_aad_and_truncation_fail() {
        let use_ = (P2S, E2eKind::Secure);
        let s = seal_e2e_with_nonce(&sk(), use_, b"a", b"usage report", [4; 12]);
        assert_eq!(
            s,
            seal_e2e_with_nonce(&sk(), use_, b"a", b"usage report", [4; 12])
        );
        assert_eq!(open_e2e(&sk(), use_, b"b", &s), Err(CryptoError::BadTag));
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x40;
            assert_eq!(open_e2e(&sk(), use_, b"a", &t), Err(CryptoError::BadTag));
        }
        assert!(matches!(
            open_e2e(&sk(), use_, b"a", &s[..27]),
            Err(CryptoError::Malformed(_))
        ));
        assert_eq!(
            open_e2e(&sk(), use_, b"a", &s[..s.len() - 1]),
            Err(CryptoError::BadTag)
        );
    }
}
