//! LocalEUKey wrapping: the server's two sealed copies of each PNE <-> PN GW key.
//!
//! 000 §6.6.1.1 step 5 (§6.6.1.2 step 6): the CPNS Server creates one LocalEUKey per (PN, PNE)
//! and makes two copies, "one encrypted by PNE's EUKey and the other encrypted by PN GW's EUKey".
//! Steps 6-7: the PN GW unwraps its copy, relays the other to the PNE, which unwraps it. Here each
//! copy is ChaCha20-Poly1305 under a KEK derived from the recipient's EUKey, with associated data
//! naming the recipient role, the PN ID, PNE ID and GW ID and the establishment's rand_server, so
//! a copy cannot be unwrapped by the wrong party, presented as a key for another PN, PNE or GW,
//! nor substituted for the copy of a later establishment (docs/security.md §4.2):
//! ```text
//! KEK_r   = HKDF-SHA256(salt = none, IKM = EUKey_r, info = T("cpns/v1/kek-local-eukey") ‖ T(r))
//! AAD_r   = T("cpns/v1/wrap-local-eukey") ‖ T(r) ‖ T(PN ID) ‖ T(PNE ID) ‖ T(GW ID) ‖ T(rand_server)
//! wrapped = nonce(12) ‖ ChaCha20-Poly1305(KEK_r, nonce, AAD_r, LocalEUKey)   -- 60 bytes
//! stored  = rand_server(16) ‖ wrapped(60)                                     -- 76 bytes
//! ```
//! where `r` is the one-byte recipient code (PNE `0x01`, GW `0x02`). A PN GW or PNE keeps its copy
//! in the stored form, still wrapped, and unwraps it again after a restart with the rand_server
//! kept in front of it ([`stored_wrapped_key`], [`split_stored_wrapped_key`]).

use crate::aead;
use crate::error::CryptoError;
use crate::kdf::{Transcript, derive_key};
use crate::keys::{EuKey, LocalEuKey, RAND_LEN, Rand};
use crate::labels;
use crate::rng::CryptoRng;
use zeroize::Zeroizing;

/// Length of one wrapped LocalEUKey copy: nonce 12 ‖ ciphertext 32 ‖ tag 16.
pub const WRAPPED_KEY_LEN: usize = 60;

/// Length of a wrapped copy in its stored form: rand_server 16 ‖ wrapped 60.
pub const STORED_WRAPPED_KEY_LEN: usize = RAND_LEN + WRAPPED_KEY_LEN;

/// Who a wrapped LocalEUKey copy is for; bound into both the KEK and the associated data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Recipient {
    /// The PNE's copy, wrapped under EUKey_PNE. Encoded as the byte `0x01`.
    Pne,
    /// The PN GW's copy, wrapped under EUKey_GW. Encoded as the byte `0x02`.
    Gateway,
}

impl Recipient {
    /// The one-byte transcript code of the recipient.
    pub fn code(self) -> u8 {
        match self {
            Recipient::Pne => 0x01,
            Recipient::Gateway => 0x02,
        }
    }
}

/// The identities and the establishment a LocalEUKey belongs to; authenticated as associated
/// data of both copies.
#[derive(Clone, Copy, Debug)]
pub struct KeyBinding<'a> {
    /// The PN ID (16 bytes).
    pub pn_id: &'a [u8; 16],
    /// The PNE the key is shared with.
    pub pne_id: &'a str,
    /// The PN GW the key is shared with.
    pub gw_id: &'a str,
    /// rand_server of the establishment that made the key (000 §6.6.1.1 step 5), sent next to
    /// the copies in the same Authentication Request: fresh per establishment, so a copy
    /// from an earlier one does not unwrap in a later one.
    pub rand_server: &'a Rand,
}

/// KEK_r for one recipient (000 §6.6.1.1 step 5).
pub(crate) fn kek(recipient_eukey: &EuKey, recipient: Recipient) -> Zeroizing<[u8; 32]> {
    let mut info = Transcript::new(labels::LOCAL_EUKEY_KEK);
    info.push(&[recipient.code()]);
    derive_key(recipient_eukey.expose_secret(), &info)
}

/// AAD_r for one recipient and binding.
pub(crate) fn wrap_aad(recipient: Recipient, binding: &KeyBinding<'_>) -> Transcript {
    let mut aad = Transcript::new(labels::LOCAL_EUKEY_AAD);
    aad.push(&[recipient.code()])
        .push(binding.pn_id)
        .push(binding.pne_id.as_bytes())
        .push(binding.gw_id.as_bytes())
        .push(&binding.rand_server.0);
    aad
}

/// The stored form of a wrapped copy: `rand_server ‖ wrapped`, what a PN GW or PNE keeps so it
/// can unwrap the copy again after a restart (docs/security.md §4.2).
pub fn stored_wrapped_key(rand_server: &Rand, wrapped: &[u8]) -> Vec<u8> {
    [&rand_server.0[..], wrapped].concat()
}

/// Splits a stored copy into the rand_server it is bound to and the wrapped copy.
///
/// # Errors
/// [`CryptoError::Malformed`] unless `stored` is exactly [`STORED_WRAPPED_KEY_LEN`] bytes.
pub fn split_stored_wrapped_key(stored: &[u8]) -> Result<(Rand, &[u8]), CryptoError> {
    if stored.len() != STORED_WRAPPED_KEY_LEN {
        return Err(CryptoError::Malformed(
            "a stored LocalEUKey copy must be 76 bytes (rand_server 16, wrapped 60)",
        ));
    }
    let (rand, wrapped) = stored.split_at(RAND_LEN);
    let mut r = [0u8; RAND_LEN];
    r.copy_from_slice(rand);
    Ok((Rand(r), wrapped))
}

/// Wraps one copy of a LocalEUKey for `recipient` under a nonce drawn from `rng`
/// (000 §6.6.1.1 step 5, run twice: once per recipient).
pub fn wrap_local_eukey<R: CryptoRng + ?Sized>(
    rng: &mut R,
    recipient_eukey: &EuKey,
    recipient: Recipient,
    binding: &KeyBinding<'_>,
    key: &LocalEuKey,
) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    wrap_local_eukey_with_nonce(recipient_eukey, recipient, binding, key, nonce)
}

/// Wraps one copy with a caller-chosen nonce; deterministic, for test vectors. A nonce must never
/// be reused under the same EUKey and recipient: production code calls [`wrap_local_eukey`].
pub fn wrap_local_eukey_with_nonce(
    recipient_eukey: &EuKey,
    recipient: Recipient,
    binding: &KeyBinding<'_>,
    key: &LocalEuKey,
    nonce: [u8; 12],
) -> Vec<u8> {
    let kek = kek(recipient_eukey, recipient);
    let aad = wrap_aad(recipient, binding);
    // A 32-byte plaintext is far below the AEAD length limit, so this cannot fail.
    aead::seal_with_nonce(&kek, nonce, aad.as_bytes(), key.expose_secret())
        .expect("a 32-byte key is within the ChaCha20-Poly1305 length limit")
}

/// Unwraps a LocalEUKey copy (000 §6.6.1.1 step 6 on the PN GW, step 7 on the PNE).
///
/// # Errors
/// [`CryptoError::Malformed`] unless `wrapped` is exactly [`WRAPPED_KEY_LEN`] bytes;
/// [`CryptoError::BadTag`] on a wrong EUKey, wrong recipient, wrong PN/PNE/GW/rand_server
/// binding or any tampered byte.
pub fn unwrap_local_eukey(
    recipient_eukey: &EuKey,
    recipient: Recipient,
    binding: &KeyBinding<'_>,
    wrapped: &[u8],
) -> Result<LocalEuKey, CryptoError> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::Malformed(
            "wrapped LocalEUKey must be 60 bytes (nonce 12, ciphertext 32, tag 16)",
        ));
    }
    let kek = kek(recipient_eukey, recipient);
    let aad = wrap_aad(recipient, binding);
    let plain = aead::open(&kek, aad.as_bytes(), wrapped)?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    bytes.copy_from_slice(&plain);
    Ok(LocalEuKey::from_bytes(*bytes))
}

/// Unwraps a copy in its stored form, `rand_server ‖ wrapped` ([`stored_wrapped_key`]), for
/// `recipient` with its EUKey and the PN, PNE and PN GW ids it is bound to (docs/security.md
/// §4.2, "Stored form").
///
/// # Errors
/// [`CryptoError::Malformed`] for a stored value of another length than 76 bytes;
/// [`CryptoError::BadTag`] as [`unwrap_local_eukey`].
pub fn unwrap_stored_local_eukey(
    recipient_eukey: &EuKey,
    recipient: Recipient,
    (pn_id, pne_id, gw_id): (&[u8; 16], &str, &str),
    stored: &[u8],
) -> Result<LocalEuKey, CryptoError> {
    let (rand_server, wrapped) = split_stored_wrapped_key(stored)?;
    let binding = KeyBinding {
        pn_id,
        pne_id,
        gw_id,
        rand_server: &rand_server,
    };
    unwrap_local_eukey(recipient_eukey, recipient, &binding, wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineRng;

    const PN: [u8; 16] = [0x11; 16];
    const RAND_SERVER: Rand = Rand([0x22; 16]);

    fn binding() -> KeyBinding<'static> {
        KeyBinding {
            pn_id: &PN,
            pne_id: "pne-1",
            gw_id: "gw-1",
            rand_server: &RAND_SERVER,
        }
    }

    /// One copy of `local` for `r` under `key`, bound to [`binding`], with a fresh nonce.
    fn wrap(key: &EuKey, r: Recipient, local: &LocalEuKey) -> Vec<u8> {
        wrap_local_eukey(MachineRng::os().get(), key, r, &binding(), local)
    }

    fn setup() -> (EuKey, EuKey, LocalEuKey) {
        (
            EuKey::from_bytes([1; 32]),
            EuKey::from_bytes([2; 32]),
            LocalEuKey::from_bytes([3; 32]),
        )
    }

    #[test]
    fn both_copies_round_trip() {
        let (pne, gw, local) = setup();
        let for_pne = wrap(&pne, Recipient::Pne, &local);
        let for_gw = wrap(&gw, Recipient::Gateway, &local);
        assert_eq!(for_pne.len(), WRAPPED_KEY_LEN);
        assert_eq!(for_gw.len(), WRAPPED_KEY_LEN);
        let a = unwrap_local_eukey(&pne, Recipient::Pne, &binding(), &for_pne).unwrap();
        let b = unwrap_local_eukey(&gw, Recipient::Gateway, &binding(), &for_gw).unwrap();
        assert_eq!(a, local);
        assert_eq!(b, local);
        // Random nonces: two wraps of the same key differ.
        let again = wrap(&pne, Recipient::Pne, &local);
        assert_ne!(again, for_pne);
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let (pne, _, local) = setup();
        let w = wrap(&pne, Recipient::Pne, &local);
        for i in 0..w.len() {
            for bit in [0x01, 0x80] {
                let mut t = w.clone();
                t[i] ^= bit;
                assert_eq!(
                    unwrap_local_eukey(&pne, Recipient::Pne, &binding(), &t),
                    Err(CryptoError::BadTag),
                    "byte {i}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_or_recipient_is_rejected() {
        let (pne, gw, local) = setup();
        let for_pne = wrap(&pne, Recipient::Pne, &local);
        let for_gw = wrap(&gw, Recipient::Gateway, &local);
        // The GW cannot open the PNE's copy, with its own key or with the PNE role.
        for (key, r, w) in [
            (&gw, Recipient::Gateway, &for_pne),
            (&gw, Recipient::Pne, &for_pne),
            (&pne, Recipient::Gateway, &for_pne),
            (&pne, Recipient::Pne, &for_gw),
            (&pne, Recipient::Gateway, &for_gw),
        ] {
            assert_eq!(
                unwrap_local_eukey(key, r, &binding(), w),
                Err(CryptoError::BadTag)
            );
        }
    }

    #[test]
    fn wrong_binding_is_rejected() {
        let (pne, _, local) = setup();
        let w = wrap(&pne, Recipient::Pne, &local);
        let other_pn = [0x12; 16];
        let earlier = Rand([0x21; 16]);
        let bad = [
            KeyBinding {
                pn_id: &other_pn,
                ..binding()
            },
            KeyBinding {
                pne_id: "pne-2",
                ..binding()
            },
            KeyBinding {
                gw_id: "gw-2",
                ..binding()
            },
            // A copy made in another establishment (another rand_server) is refused.
            KeyBinding {
                rand_server: &earlier,
                ..binding()
            },
            // Shifting a character between ids must not verify either.
            KeyBinding {
                pne_id: "pne-1g",
                gw_id: "w-1",
                ..binding()
            },
        ];
        for b in &bad {
            assert_eq!(
                unwrap_local_eukey(&pne, Recipient::Pne, b, &w),
                Err(CryptoError::BadTag)
            );
        }
    }

    #[test]
    fn wrong_lengths_are_malformed() {
        let (pne, _, local) = setup();
        let w = wrap(&pne, Recipient::Pne, &local);
        for len in [0, 12, 28, 44, 59] {
            assert!(matches!(
                unwrap_local_eukey(&pne, Recipient::Pne, &binding(), &w[..len]),
                Err(CryptoError::Malformed(_))
            ));
        }
        let mut long = w.clone();
        long.push(0);
        assert!(matches!(
            unwrap_local_eukey(&pne, Recipient::Pne, &binding(), &long),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn stored_form_round_trips_and_checks_its_length() {
        let (pne, _, local) = setup();
        let w = wrap(&pne, Recipient::Pne, &local);
        let stored = stored_wrapped_key(&RAND_SERVER, &w);
        assert_eq!(stored.len(), STORED_WRAPPED_KEY_LEN);
        assert_eq!(&stored[..16], &RAND_SERVER.0);
        let (rand, wrapped) = split_stored_wrapped_key(&stored).unwrap();
        assert_eq!((rand, wrapped), (RAND_SERVER, &w[..]));
        let b = KeyBinding {
            rand_server: &rand,
            ..binding()
        };
        assert_eq!(
            unwrap_local_eukey(&pne, Recipient::Pne, &b, wrapped).unwrap(),
            local
        );
        // Another rand_server in front of the same copy does not unwrap it.
        let mut swapped = stored.clone();
        swapped[0] ^= 1;
        let (rand, wrapped) = split_stored_wrapped_key(&swapped).unwrap();
        let b = KeyBinding {
            rand_server: &rand,
            ..binding()
        };
        assert_eq!(
            unwrap_local_eukey(&pne, Recipient::Pne, &b, wrapped),
            Err(CryptoError::BadTag)
        );
        for len in [0, 60, 75, 77] {
            assert!(matches!(
                split_stored_wrapped_key(&vec![0; len]),
                Err(CryptoError::Malformed(_))
            ));
        }
    }

    #[test]
    fn keks_are_separated_by_recipient() {
        let k = EuKey::from_bytes([5; 32]);
        assert_ne!(*kek(&k, Recipient::Pne), *kek(&k, Recipient::Gateway));
        assert_ne!(*kek(&k, Recipient::Pne), *k.expose_secret());
    }

    /// A stored copy unwraps for its recipient, PN, PNE and PN GW only; its rand_server is the
    /// one it was made with; any other length is malformed.
    #[test]
    fn a_stored_copy_unwraps_only_as_it_was_bound() {
        let (pne_key, gw_key, local) = setup();
        let stored = stored_wrapped_key(&RAND_SERVER, &wrap(&gw_key, Recipient::Gateway, &local));
        let ids = (&PN, "pne-1", "gw-1");
        let got = unwrap_stored_local_eukey(&gw_key, Recipient::Gateway, ids, &stored).unwrap();
        assert_eq!(got, local);
        for (key, r, ids) in [
            (&pne_key, Recipient::Gateway, ids),
            (&gw_key, Recipient::Pne, ids),
            (&gw_key, Recipient::Gateway, (&[0x12; 16], "pne-1", "gw-1")),
            (&gw_key, Recipient::Gateway, (&PN, "pne-2", "gw-1")),
            (&gw_key, Recipient::Gateway, (&PN, "pne-1", "gw-2")),
        ] {
            assert_eq!(
                unwrap_stored_local_eukey(key, r, ids, &stored),
                Err(CryptoError::BadTag)
            );
        }
        let mut other_rand = stored.clone();
        other_rand[0] ^= 1;
        assert_eq!(
            unwrap_stored_local_eukey(&gw_key, Recipient::Gateway, ids, &other_rand),
            Err(CryptoError::BadTag)
        );
        assert!(matches!(
            unwrap_stored_local_eukey(&gw_key, Recipient::Gateway, ids, &stored[1..]),
            Err(CryptoError::Malformed(_))
        ));
    }
}
