//! PNE <-> CPNS Server mutual authentication and the session key SK_PNE.
//!
//! 000 §6.6.1.1 steps 8-15 (and §6.6.1.2 steps 9-16, 003 §1.4 for PNE registration): the PNE
//! and the server each hold EUKey_PNE; the PNE contributed rand_PNE (step 1 or 3) and the server
//! rand_server (step 5). Both sides run [`PneAuthKeys::derive`] on the same inputs and get the same
//! SK_PNE and confirmation key. The PNE sends hash_PNE (steps 8-9), the server verifies it (step
//! 11) and answers hash_server_PNE, which also covers hash_PNE (step 12), and the PNE verifies
//! that (steps 14-15). The PN GW relays all of this and learns nothing that lets it derive SK_PNE.
//!
//! Key schedule (docs/security.md §4.1):
//! ```text
//! PRK       = HKDF-Extract(salt = rand_PNE ‖ rand_server, IKM = EUKey_PNE)
//! ctx       = T(purpose) ‖ T(PNE ID) ‖ T(PN ID)
//! SK_PNE    = HKDF-Expand(PRK, T("cpns/v1/sk-pne") ‖ ctx, 32)
//! K_confirm = HKDF-Expand(PRK, T("cpns/v1/pne-confirm") ‖ ctx, 32)
//! hash_PNE    = HMAC(K_confirm, T("cpns/v1/hash-pne") ‖ T(purpose) ‖ T(rand_PNE) ‖ T(rand_server) ‖ T(PNE ID) ‖ T(PN ID) ‖ T(statement))
//! hash_server = HMAC(K_confirm, T("cpns/v1/hash-server") ‖ …same fields… ‖ T(hash_PNE)
//!                               ‖ T(verdict = 01) ‖ T(outcome))
//! outcome     = SHA-256(canonical CBOR of the PN inventory)   establishment (purpose 01)
//!             = CPNS ID                                        registration  (purpose 02)
//! ```
//! `statement` is the SHA-256 of what the PNE said before any of this could be sealed (its join
//! information, or its PNE Registration Request), as both sides encode it ([`statement_digest`]):
//! a device on the path that changes it (a LocalEUKey asked for, capabilities, contents, a home PN
//! GW) makes the proof fail (protocol version 2; docs/security.md §4.1).
//! The outcome is what the PNE acts on once it accepts hash_server: the inventory it stores, or
//! the CPNS ID it is known by. Both reach it through the PN GW, so the server's hash covers them
//! and a relaying PN GW cannot alter them ([`ServerOutcome`]).

use crate::error::CryptoError;
use crate::kdf::{Prk, Transcript, hmac};
use crate::keys::{AuthHash, EuKey, Rand, SessionKey};
use crate::labels;
use core::fmt;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The verdict byte of hash_server_PNE: `0x01`, the PNE is authenticated. hash_server_PNE is
/// only ever computed for an authenticated PNE; the byte keeps the transcript unambiguous should a
/// later version confirm other verdicts too.
pub const VERDICT_AUTHENTICATED: u8 = 0x01;

/// What hash_server_PNE confirms besides the exchange itself: the result the PNE will act on,
/// relayed to it by the PN GW (docs/security.md §4.1).
#[derive(Clone, Copy, Debug)]
pub enum ServerOutcome<'a> {
    /// PN establishment (purpose `Establishment`): the PNE is a member of the PN whose
    /// inventory, as the PNE will store it, has this canonical CBOR encoding (docs/wire.md,
    /// "Canonical PN inventory"). The transcript carries its SHA-256 digest.
    Established {
        /// The canonical CBOR bytes of the `PnInventory`.
        inventory_cbor: &'a [u8],
    },
    /// PNE registration (purpose `Registration`): the PNE is registered under this CPNS ID, in
    /// the PN of the transcript.
    Registered {
        /// The CPNS ID as sent in the PNE Registration Response.
        cpns_id: &'a str,
    },
}

impl ServerOutcome<'_> {
    /// The purpose this outcome belongs to.
    fn purpose(&self) -> AuthPurpose {
        match self {
            ServerOutcome::Established { .. } => AuthPurpose::Establishment,
            ServerOutcome::Registered { .. } => AuthPurpose::Registration,
        }
    }

    /// The outcome field of the transcript.
    fn field(&self) -> Vec<u8> {
        match self {
            ServerOutcome::Established { inventory_cbor } => {
                inventory_digest(inventory_cbor).to_vec()
            }
            ServerOutcome::Registered { cpns_id } => cpns_id.as_bytes().to_vec(),
        }
    }
}

/// SHA-256 of the canonical CBOR of a PN inventory: the outcome field of an establishment's
/// hash_server_PNE.
pub fn inventory_digest(inventory_cbor: &[u8]) -> [u8; 32] {
    Sha256::digest(inventory_cbor).into()
}

/// SHA-256 of the canonical CBOR of what a PNE said before it could seal anything: its
/// `join-info` in an establishment, its PNE Registration Request without `pn_id` in a
/// registration (docs/security.md §4.1, "What the PNE said"). The `statement` of
/// [`PneAuthInput`].
pub fn statement_digest(statement_cbor: &[u8]) -> [u8; 32] {
    Sha256::digest(statement_cbor).into()
}

/// Which flow the PNE authentication belongs to; bound into every key and hash so that an
/// exchange from one flow cannot be replayed into the other.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuthPurpose {
    /// PN establishment (000 §6.6.1.1 / §6.6.1.2). Encoded as the byte `0x01`.
    Establishment,
    /// PNE registration (003 §1.4). Encoded as the byte `0x02`.
    Registration,
}

impl AuthPurpose {
    /// The one-byte wire/transcript code of the purpose.
    pub fn code(self) -> u8 {
        match self {
            AuthPurpose::Establishment => 0x01,
            AuthPurpose::Registration => 0x02,
        }
    }
}

/// The public inputs of PNE <-> server authentication (000 §6.6.1.1 steps 1-5).
#[derive(Clone, Copy, Debug)]
pub struct PneAuthInput<'a> {
    /// The flow this authentication belongs to.
    pub purpose: AuthPurpose,
    /// The PN ID (16 bytes).
    pub pn_id: &'a [u8; 16],
    /// The PNE ID as carried on the wire.
    pub pne_id: &'a str,
    /// rand_PNE, chosen by the PNE (step 1 or 3).
    pub rand_pne: &'a Rand,
    /// rand_server, chosen by the CPNS Server (step 5).
    pub rand_server: &'a Rand,
    /// What the PNE said before sealing, as [`statement_digest`] hashes it.
    pub statement: &'a [u8; 32],
}

impl PneAuthInput<'_> {
    /// `T(purpose) ‖ T(PNE ID) ‖ T(PN ID)`: the HKDF info context.
    fn key_context(&self) -> Transcript {
        let mut t = Transcript::fields();
        t.push(&[self.purpose.code()])
            .push(self.pne_id.as_bytes())
            .push(self.pn_id);
        t
    }

    /// `T(purpose) ‖ T(rand_PNE) ‖ T(rand_server) ‖ T(PNE ID) ‖ T(PN ID) ‖ T(statement)`: the
    /// hash context.
    fn hash_context(&self) -> Transcript {
        let mut t = Transcript::fields();
        t.push(&[self.purpose.code()])
            .push(&self.rand_pne.0)
            .push(&self.rand_server.0)
            .push(self.pne_id.as_bytes())
            .push(self.pn_id)
            .push(self.statement);
        t
    }
}

/// SK_PNE and the confirmation key of one PNE authentication, plus its transcript.
///
/// Both keys are zeroized on drop; `Debug` is redacted.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PneAuthKeys {
    session: SessionKey,
    confirm: Zeroizing<[u8; 32]>,
    #[zeroize(skip)]
    hash_context: Transcript,
    #[zeroize(skip)]
    purpose: AuthPurpose,
}

impl PneAuthKeys {
    /// Derives SK_PNE and the confirmation key (000 §6.6.1.1 steps 8-9 on the PNE, step 12 on
    /// the server; 003 §1.4 for registration).
    pub fn derive(eukey: &EuKey, input: &PneAuthInput<'_>) -> PneAuthKeys {
        let mut salt = [0u8; 32];
        salt[..16].copy_from_slice(&input.rand_pne.0);
        salt[16..].copy_from_slice(&input.rand_server.0);
        let prk = Prk::extract(Some(&salt), eukey.expose_secret());
        let ctx = input.key_context();
        let sk = prk.expand(Transcript::new(labels::SK_PNE).extend(&ctx));
        let confirm = prk.expand(Transcript::new(labels::PNE_CONFIRM).extend(&ctx));
        PneAuthKeys {
            session: SessionKey::from_bytes(*sk),
            confirm,
            hash_context: input.hash_context(),
            purpose: input.purpose,
        }
    }

    /// SK_PNE, the PNE <-> server session key (000 §6.6.1.1 steps 8 and 12).
    pub fn session_key(&self) -> &SessionKey {
        &self.session
    }

    /// SK_PNE by value, consuming the derivation.
    pub fn into_session_key(self) -> SessionKey {
        self.session.clone()
    }

    /// hash_PNE, computed by the PNE and sent in the Authentication response
    /// (000 §6.6.1.1 steps 8-9).
    pub fn hash_pne(&self) -> AuthHash {
        let mut t = Transcript::new(labels::HASH_PNE);
        t.extend(&self.hash_context);
        AuthHash(hmac(&self.confirm, &t))
    }

    /// The HMAC input of hash_server_PNE.
    pub(crate) fn hash_server_transcript(
        &self,
        hash_pne: &AuthHash,
        outcome: &ServerOutcome<'_>,
    ) -> Transcript {
        debug_assert_eq!(
            outcome.purpose(),
            self.purpose,
            "an establishment confirms an inventory, a registration a CPNS ID"
        );
        let mut t = Transcript::new(labels::HASH_SERVER);
        t.extend(&self.hash_context)
            .push(&hash_pne.0)
            .push(&[VERDICT_AUTHENTICATED])
            .push(&outcome.field());
        t
    }

    /// hash_server_PNE, computed by the server after it verified hash_PNE; covers hash_PNE
    /// (000 §6.6.1.1 step 12) and the outcome the PNE will act on: the PN inventory it stores
    /// (steps 14-15) or the CPNS ID it is registered under (003 §1.4.1 step 4).
    pub fn hash_server(&self, hash_pne: &AuthHash, outcome: &ServerOutcome<'_>) -> AuthHash {
        AuthHash(hmac(
            &self.confirm,
            &self.hash_server_transcript(hash_pne, outcome),
        ))
    }

    /// The server's check of a received hash_PNE (000 §6.6.1.1 step 11), in constant time.
    ///
    /// # Errors
    /// [`CryptoError::BadHash`] when the PNE does not hold the same EUKey or any input differs.
    pub fn verify_hash_pne(&self, claimed: &AuthHash) -> Result<(), CryptoError> {
        if self.hash_pne().ct_eq(claimed) {
            Ok(())
        } else {
            Err(CryptoError::BadHash)
        }
    }

    /// The PNE's check of a received hash_server_PNE (000 §6.6.1.1 steps 14-15), in constant
    /// time. `hash_pne` is the value this PNE sent; `outcome` is what it received: the inventory
    /// it is about to store, or the CPNS ID.
    ///
    /// # Errors
    /// [`CryptoError::BadHash`] when the server does not hold the same EUKey, any input differs,
    /// the server answered a different hash_PNE, or the outcome was altered on the way.
    pub fn verify_hash_server(
        &self,
        hash_pne: &AuthHash,
        outcome: &ServerOutcome<'_>,
        claimed: &AuthHash,
    ) -> Result<(), CryptoError> {
        if self.hash_server(hash_pne, outcome).ct_eq(claimed) {
            Ok(())
        } else {
            Err(CryptoError::BadHash)
        }
    }

    /// The confirmation key, for docs/security-vectors.json only.
    pub(crate) fn confirm_key(&self) -> &[u8; 32] {
        &self.confirm
    }
}

impl fmt::Debug for PneAuthKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PneAuthKeys(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PN: [u8; 16] = [0xa5; 16];
    const R_PNE: Rand = Rand([1; 16]);
    const R_SRV: Rand = Rand([2; 16]);

    const SAID: [u8; 32] = [0x3c; 32];

    fn input<'a>(pne_id: &'a str, rand_server: &'a Rand) -> PneAuthInput<'a> {
        PneAuthInput {
            purpose: AuthPurpose::Establishment,
            pn_id: &PN,
            pne_id,
            rand_pne: &R_PNE,
            rand_server,
            statement: &SAID,
        }
    }

    fn eukey(b: u8) -> EuKey {
        EuKey::from_bytes([b; 32])
    }

    const INVENTORY: &[u8] = b"\xa3\x00inventory";

    fn member() -> ServerOutcome<'static> {
        ServerOutcome::Established {
            inventory_cbor: INVENTORY,
        }
    }

    #[test]
    fn both_sides_agree_and_verify() {
        let pne = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let server = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let h = pne.hash_pne();
        server.verify_hash_pne(&h).unwrap();
        let hs = server.hash_server(&h, &member());
        pne.verify_hash_server(&h, &member(), &hs).unwrap();
        assert_eq!(pne.session_key(), server.session_key());
        assert_ne!(pne.session_key().expose_secret(), pne.confirm_key());
        assert_ne!(h, hs);
    }

    #[test]
    fn wrong_eukey_fails_both_ways() {
        let pne = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let server = PneAuthKeys::derive(&eukey(8), &input("pne-1", &R_SRV));
        assert_eq!(
            server.verify_hash_pne(&pne.hash_pne()),
            Err(CryptoError::BadHash)
        );
        let forged = server.hash_server(&pne.hash_pne(), &member());
        assert_eq!(
            pne.verify_hash_server(&pne.hash_pne(), &member(), &forged),
            Err(CryptoError::BadHash)
        );
        assert_ne!(pne.session_key(), server.session_key());
    }

    #[test]
    fn tampered_hashes_fail_at_every_byte() {
        let k = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let h = k.hash_pne();
        let hs = k.hash_server(&h, &member());
        for i in 0..32 {
            let mut t = h;
            t.0[i] ^= 0x80;
            assert_eq!(k.verify_hash_pne(&t), Err(CryptoError::BadHash));
            let mut ts = hs;
            ts.0[i] ^= 0x80;
            assert_eq!(
                k.verify_hash_server(&h, &member(), &ts),
                Err(CryptoError::BadHash)
            );
        }
    }

    #[test]
    fn hash_server_is_bound_to_hash_pne() {
        let k = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let h = k.hash_pne();
        let hs = k.hash_server(&h, &member());
        let other = AuthHash([0x33; 32]);
        assert_eq!(
            k.verify_hash_server(&other, &member(), &hs),
            Err(CryptoError::BadHash)
        );
    }

    /// A PN GW that changes the inventory it relays (a member added, removed or altered: any
    /// byte) makes hash_server fail at the PNE.
    #[test]
    fn hash_server_is_bound_to_the_inventory() {
        let k = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let h = k.hash_pne();
        let hs = k.hash_server(&h, &member());
        for i in 0..INVENTORY.len() {
            let mut altered = INVENTORY.to_vec();
            altered[i] ^= 0x01;
            let outcome = ServerOutcome::Established {
                inventory_cbor: &altered,
            };
            assert_eq!(
                k.verify_hash_server(&h, &outcome, &hs),
                Err(CryptoError::BadHash)
            );
        }
        let longer = [INVENTORY, b"\x00"].concat();
        let outcome = ServerOutcome::Established {
            inventory_cbor: &longer,
        };
        assert_eq!(
            k.verify_hash_server(&h, &outcome, &hs),
            Err(CryptoError::BadHash)
        );
    }

    /// A registration's hash_server is bound to the CPNS ID (and, through the transcript, to
    /// the PN): a PN GW cannot hand the PNE another CPNS ID.
    #[test]
    fn registration_hash_server_is_bound_to_the_cpns_id_and_pn() {
        let mut reg = input("pne-1", &R_SRV);
        reg.purpose = AuthPurpose::Registration;
        let k = PneAuthKeys::derive(&eukey(7), &reg);
        let h = k.hash_pne();
        let outcome = ServerOutcome::Registered {
            cpns_id: "cpns-000001",
        };
        let hs = k.hash_server(&h, &outcome);
        k.verify_hash_server(&h, &outcome, &hs).unwrap();
        let other = ServerOutcome::Registered {
            cpns_id: "cpns-000002",
        };
        assert_eq!(
            k.verify_hash_server(&h, &other, &hs),
            Err(CryptoError::BadHash)
        );
        let other_pn = [0x5b; 16];
        let mut moved = reg;
        moved.pn_id = &other_pn;
        let m = PneAuthKeys::derive(&eukey(7), &moved);
        assert_eq!(
            m.verify_hash_server(&h, &outcome, &hs),
            Err(CryptoError::BadHash)
        );
    }

    #[test]
    fn response_for_another_rand_server_is_rejected() {
        let old = PneAuthKeys::derive(&eukey(7), &input("pne-1", &Rand([3; 16])));
        let now = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        assert_eq!(
            now.verify_hash_pne(&old.hash_pne()),
            Err(CryptoError::BadHash)
        );
        let h = now.hash_pne();
        assert_eq!(
            now.verify_hash_server(&h, &member(), &old.hash_server(&h, &member())),
            Err(CryptoError::BadHash)
        );
        assert_ne!(old.session_key(), now.session_key());
    }

    #[test]
    fn every_input_changes_the_keys() {
        let base = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let mut reg = input("pne-1", &R_SRV);
        reg.purpose = AuthPurpose::Registration;
        let other_pn = [0x5a; 16];
        let mut pn = input("pne-1", &R_SRV);
        pn.pn_id = &other_pn;
        let other_rand = Rand([9; 16]);
        let mut rp = input("pne-1", &R_SRV);
        rp.rand_pne = &other_rand;
        for variant in [reg, pn, rp, input("pne-2", &R_SRV)] {
            let k = PneAuthKeys::derive(&eukey(7), &variant);
            assert_ne!(k.session_key(), base.session_key());
            assert_eq!(
                k.verify_hash_pne(&base.hash_pne()),
                Err(CryptoError::BadHash)
            );
        }
    }

    /// What the PNE said before sealing is in the proof, not in the keys: a statement changed
    /// on the way (a LocalEUKey request cleared, capabilities altered) fails hash_PNE and
    /// hash_server, while SK_PNE stays the same.
    #[test]
    fn the_statement_binds_the_hashes_not_the_keys() {
        let base = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let altered = [0x3d; 32];
        let other = PneAuthKeys::derive(
            &eukey(7),
            &PneAuthInput {
                statement: &altered,
                ..input("pne-1", &R_SRV)
            },
        );
        assert_eq!(other.session_key(), base.session_key());
        assert_eq!(
            other.verify_hash_pne(&base.hash_pne()),
            Err(CryptoError::BadHash)
        );
        let h = base.hash_pne();
        assert_eq!(
            base.verify_hash_server(&h, &member(), &other.hash_server(&h, &member())),
            Err(CryptoError::BadHash)
        );
        assert_eq!(statement_digest(b"said"), inventory_digest(b"said"));
    }

    #[test]
    fn debug_is_redacted_and_zeroize_clears() {
        let mut k = PneAuthKeys::derive(&eukey(7), &input("pne-1", &R_SRV));
        let sk_hex = hex::encode(k.session_key().expose_secret());
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&sk_hex) && !dbg.contains(&hex::encode(k.confirm_key())));
        assert_eq!(dbg, "PneAuthKeys(<redacted>)");
        k.zeroize();
        assert_eq!(k.session_key().expose_secret(), &[0; 32]);
        assert_eq!(k.confirm_key(), &[0; 32]);
        assert_eq!(k.into_session_key().expose_secret(), &[0; 32]);
    }
}
