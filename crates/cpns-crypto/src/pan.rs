//! PN GW authentication on an insecure PAN, keyed by LocalEUKey, and its frame keys.
//!
//! 000 §6.6.1.1 steps 6-7: "if PAN between PNE and PN GW does not provide sufficient security
//! mechanism …, PNE and PN GW perform mutual authentication and session key sharing by using
//! LocalEUKey" ("PN GW Authentication"). docs/design.md §4 fixes how: the same challenge-response pattern
//! as PNE <-> server, keyed by the LocalEUKey both sides just unwrapped. The PNE sends rand_PNE,
//! the GW answers rand_GW and its proof, the PNE checks it and answers its own proof, which covers
//! the GW's; from then on both sides seal every frame ([`crate::frame`]) with one key per
//! direction, under the suite the PNE offered (`offered`, its wire codes, most wanted first)
//! and the GW chose (`suite`, [`Suite::choose`]) (docs/security.md §4.4, §4.13):
//! ```text
//! PRK       = HKDF-Extract(salt = rand_PNE ‖ rand_GW, IKM = LocalEUKey)
//! ctx       = T(PN ID) ‖ T(PNE ID) ‖ T(GW ID)
//! K_confirm = HKDF-Expand(PRK, T("cpns/v1/pan-confirm")   ‖ ctx, 32)
//! K_gw→pne  = HKDF-Expand(PRK, T("cpns/v1/pan-gw-to-pne") ‖ ctx ‖ T(suite), 32)
//! K_pne→gw  = HKDF-Expand(PRK, T("cpns/v1/pan-pne-to-gw") ‖ ctx ‖ T(suite), 32)
//! proof_ctx = T(rand_PNE) ‖ T(rand_GW) ‖ T(PN ID) ‖ T(PNE ID) ‖ T(GW ID) ‖ T(offered) ‖ T(suite)
//! gw_proof  = HMAC(K_confirm, T("cpns/v1/pan-gw-proof")  ‖ proof_ctx)
//! pne_proof = HMAC(K_confirm, T("cpns/v1/pan-pne-proof") ‖ proof_ctx ‖ T(gw_proof))
//! aad_dir   = T("cpns/v1/pan-frame") ‖ T(dir) ‖ T(PN ID) ‖ T(PNE ID) ‖ T(GW ID)   (dir: GW→PNE 01, PNE→GW 02)
//! ```
//! Both proofs cover the offer and the choice, so a PAN attacker who strips the offer or
//! changes the choice fails the exchange. The sealer and opener [`PanKeys::into_pne_side`] /
//! [`PanKeys::into_gw_side`] return carry the suite, the frame key and the associated data of
//! their direction, so the session layer never picks any of them.

use crate::aad::{PanDirection, pan_frame_aad};
use crate::error::CryptoError;
use crate::frame::{FrameOpener, FrameSealer};
use crate::kdf::{Prk, Transcript, hmac};
use crate::keys::{AuthHash, LocalEuKey, Rand};
use crate::labels;
use crate::suite::Suite;
use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The public inputs of PN GW authentication on the PAN.
#[derive(Clone, Copy, Debug)]
pub struct PanAuthInput<'a> {
    /// The PN ID (16 bytes).
    pub pn_id: &'a [u8; 16],
    /// The PNE's ID.
    pub pne_id: &'a str,
    /// The PN GW's ID.
    pub gw_id: &'a str,
    /// rand_PNE, the PNE's fresh challenge.
    pub rand_pne: &'a Rand,
    /// rand_GW, the GW's fresh challenge.
    pub rand_gw: &'a Rand,
    /// The suites the PNE offered, as their wire codes, most wanted first (empty: it named
    /// none).
    pub offered: &'a [u8],
    /// The suite the GW chose for the link's frames.
    pub suite: Suite,
}

/// The PAN confirmation key and the two frame keys of one PAN session; zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PanKeys {
    confirm: Zeroizing<[u8; 32]>,
    gw_to_pne: Zeroizing<[u8; 32]>,
    pne_to_gw: Zeroizing<[u8; 32]>,
    #[zeroize(skip)]
    proof_context: Transcript,
    #[zeroize(skip)]
    suite: Suite,
    /// Associated data of the GW -> PNE frames.
    #[zeroize(skip)]
    aad_gw_to_pne: Vec<u8>,
    /// Associated data of the PNE -> GW frames.
    #[zeroize(skip)]
    aad_pne_to_gw: Vec<u8>,
}

impl PanKeys {
    /// Derives the PAN keys from the LocalEUKey (000 §6.6.1.1 steps 6-7, "PN GW
    /// Authentication"). Both the PNE and the GW call this with the same inputs.
    pub fn derive(local: &LocalEuKey, input: &PanAuthInput<'_>) -> PanKeys {
        let mut salt = [0u8; 32];
        salt[..16].copy_from_slice(&input.rand_pne.0);
        salt[16..].copy_from_slice(&input.rand_gw.0);
        let prk = Prk::extract(Some(&salt), local.expose_secret());
        let mut ctx = Transcript::fields();
        ctx.push(input.pn_id)
            .push(input.pne_id.as_bytes())
            .push(input.gw_id.as_bytes());
        let suite = [input.suite.code()];
        let expand = |label: &str| prk.expand(Transcript::new(label).extend(&ctx));
        let expand_frame =
            |label: &str| prk.expand(Transcript::new(label).extend(&ctx).push(&suite));
        let mut proof_context = Transcript::fields();
        proof_context
            .push(&input.rand_pne.0)
            .push(&input.rand_gw.0)
            .extend(&ctx)
            .push(input.offered)
            .push(&suite);
        PanKeys {
            confirm: expand(labels::PAN_CONFIRM),
            gw_to_pne: expand_frame(labels::PAN_GW_TO_PNE),
            pne_to_gw: expand_frame(labels::PAN_PNE_TO_GW),
            proof_context,
            suite: input.suite,
            aad_gw_to_pne: pan_frame_aad(
                PanDirection::GwToPne,
                input.pn_id,
                input.pne_id,
                input.gw_id,
            ),
            aad_pne_to_gw: pan_frame_aad(
                PanDirection::PneToGw,
                input.pn_id,
                input.pne_id,
                input.gw_id,
            ),
        }
    }

    /// The GW's proof of LocalEUKey possession, sent with rand_GW.
    pub fn gw_proof(&self) -> AuthHash {
        let mut t = Transcript::new(labels::PAN_GW_PROOF);
        t.extend(&self.proof_context);
        AuthHash(hmac(&self.confirm, &t))
    }

    /// The PNE's proof, sent after it verified the GW's; covers the GW's proof.
    pub fn pne_proof(&self) -> AuthHash {
        let mut t = Transcript::new(labels::PAN_PNE_PROOF);
        t.extend(&self.proof_context).push(&self.gw_proof().0);
        AuthHash(hmac(&self.confirm, &t))
    }

    /// The PNE's check of the GW's proof, in constant time.
    ///
    /// # Errors
    /// [`CryptoError::BadHash`] when the GW does not hold the same LocalEUKey or any input differs.
    pub fn verify_gw_proof(&self, claimed: &AuthHash) -> Result<(), CryptoError> {
        if self.gw_proof().ct_eq(claimed) {
            Ok(())
        } else {
            Err(CryptoError::BadHash)
        }
    }

    /// The GW's check of the PNE's proof, in constant time.
    ///
    /// # Errors
    /// [`CryptoError::BadHash`] when the PNE does not hold the same LocalEUKey or any input
    /// differs.
    pub fn verify_pne_proof(&self, claimed: &AuthHash) -> Result<(), CryptoError> {
        if self.pne_proof().ct_eq(claimed) {
            Ok(())
        } else {
            Err(CryptoError::BadHash)
        }
    }

    /// The PNE's frame sealer (K_pne→gw, PNE -> GW associated data) and opener (K_gw→pne,
    /// GW -> PNE associated data), both bound to this session's PN, PNE and GW ids.
    pub fn into_pne_side(self) -> (FrameSealer, FrameOpener) {
        (
            FrameSealer::new(self.suite, *self.pne_to_gw, self.aad_pne_to_gw.clone()),
            FrameOpener::new(self.suite, *self.gw_to_pne, self.aad_gw_to_pne.clone()),
        )
    }

    /// The GW's frame sealer (K_gw→pne, GW -> PNE associated data) and opener (K_pne→gw,
    /// PNE -> GW associated data), both bound to this session's PN, PNE and GW ids.
    pub fn into_gw_side(self) -> (FrameSealer, FrameOpener) {
        (
            FrameSealer::new(self.suite, *self.gw_to_pne, self.aad_gw_to_pne.clone()),
            FrameOpener::new(self.suite, *self.pne_to_gw, self.aad_pne_to_gw.clone()),
        )
    }

    /// (K_confirm, K_gw→pne, K_pne→gw), for docs/security-vectors.json only.
    pub(crate) fn keys(&self) -> (&[u8; 32], &[u8; 32], &[u8; 32]) {
        (&self.confirm, &self.gw_to_pne, &self.pne_to_gw)
    }
}

impl fmt::Debug for PanKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PanKeys(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PN: [u8; 16] = [0x77; 16];
    const R_PNE: Rand = Rand([0x61; 16]);
    const R_GW: Rand = Rand([0x62; 16]);

    fn input() -> PanAuthInput<'static> {
        PanAuthInput {
            pn_id: &PN,
            pne_id: "pne-1",
            gw_id: "gw-1",
            rand_pne: &R_PNE,
            rand_gw: &R_GW,
            offered: &[2, 1],
            suite: Suite::Aes256Gcm,
        }
    }

    fn local(b: u8) -> LocalEuKey {
        LocalEuKey::from_bytes([b; 32])
    }

    #[test]
    fn handshake_then_frames_both_ways() {
        let pne = PanKeys::derive(&local(1), &input());
        let gw = PanKeys::derive(&local(1), &input());
        pne.verify_gw_proof(&gw.gw_proof()).unwrap();
        gw.verify_pne_proof(&pne.pne_proof()).unwrap();
        assert_ne!(gw.gw_proof(), gw.pne_proof());
        let (mut pne_tx, mut pne_rx) = pne.into_pne_side();
        let (mut gw_tx, mut gw_rx) = gw.into_gw_side();
        assert_eq!(
            pne_tx.aad(),
            &pan_frame_aad(PanDirection::PneToGw, &PN, "pne-1", "gw-1")[..]
        );
        assert_eq!(gw_rx.aad(), pne_tx.aad());
        assert_eq!(
            gw_tx.aad(),
            &pan_frame_aad(PanDirection::GwToPne, &PN, "pne-1", "gw-1")[..]
        );
        assert_eq!(pne_rx.aad(), gw_tx.aad());
        let up = pne_tx.seal(b"to gw").unwrap();
        assert_eq!(gw_rx.open(&up).unwrap(), b"to gw");
        let down = gw_tx.seal(b"to pne").unwrap();
        assert_eq!(pne_rx.open(&down).unwrap(), b"to pne");
        // A frame cannot be reflected back to its sender: the directions have different keys.
        let up2 = pne_tx.seal(b"reflect me").unwrap();
        assert_eq!(pne_rx.open(&up2), Err(CryptoError::BadTag));
    }

    #[test]
    fn wrong_local_eukey_fails_both_proofs() {
        let pne = PanKeys::derive(&local(1), &input());
        let fake_gw = PanKeys::derive(&local(2), &input());
        assert_eq!(
            pne.verify_gw_proof(&fake_gw.gw_proof()),
            Err(CryptoError::BadHash)
        );
        assert_eq!(
            fake_gw.verify_pne_proof(&pne.pne_proof()),
            Err(CryptoError::BadHash)
        );
        let (mut tx, _) = pne.into_pne_side();
        let (_, mut rx) = fake_gw.into_gw_side();
        let r = tx.seal(b"secret").unwrap();
        assert_eq!(rx.open(&r), Err(CryptoError::BadTag));
    }

    #[test]
    fn proofs_are_distinct_and_not_interchangeable() {
        let k = PanKeys::derive(&local(1), &input());
        assert_eq!(k.verify_gw_proof(&k.pne_proof()), Err(CryptoError::BadHash));
        assert_eq!(k.verify_pne_proof(&k.gw_proof()), Err(CryptoError::BadHash));
        for i in 0..32 {
            let mut t = k.gw_proof();
            t.0[i] ^= 2;
            assert_eq!(k.verify_gw_proof(&t), Err(CryptoError::BadHash));
            let mut t = k.pne_proof();
            t.0[i] ^= 2;
            assert_eq!(k.verify_pne_proof(&t), Err(CryptoError::BadHash));
        }
    }

    #[test]
    fn other_rands_or_ids_fail() {
        let k = PanKeys::derive(&local(1), &input());
        let r = Rand([0; 16]);
        let variants = [
            PanAuthInput {
                rand_pne: &r,
                ..input()
            },
            PanAuthInput {
                rand_gw: &r,
                ..input()
            },
            PanAuthInput {
                gw_id: "gw-2",
                ..input()
            },
            PanAuthInput {
                pne_id: "pne-2",
                ..input()
            },
            // The offer stripped or changed, or another choice: a downgrade fails the proofs.
            PanAuthInput {
                offered: &[],
                ..input()
            },
            PanAuthInput {
                offered: &[1, 2],
                ..input()
            },
            PanAuthInput {
                suite: Suite::ChaCha20Poly1305,
                ..input()
            },
        ];
        for v in &variants {
            let other = PanKeys::derive(&local(1), v);
            assert_eq!(
                k.verify_gw_proof(&other.gw_proof()),
                Err(CryptoError::BadHash)
            );
        }
    }

    /// A frame sealed under the right keys but bound to another PN, PNE or GW id (or the
    /// other direction) does not open: the associated data alone rejects it.
    #[test]
    fn frames_bound_to_other_ids_or_direction_do_not_open() {
        let keys = PanKeys::derive(&local(1), &input());
        let (g2p, p2g) = (*keys.gw_to_pne, *keys.pne_to_gw);
        let (_, mut gw_rx) = PanKeys::derive(&local(1), &input()).into_gw_side();
        let (_, mut pne_rx) = keys.into_pne_side();
        let other_pn = [0x78; 16];
        for aad in [
            pan_frame_aad(PanDirection::PneToGw, &PN, "pne-2", "gw-1"),
            pan_frame_aad(PanDirection::PneToGw, &PN, "pne-1", "gw-2"),
            pan_frame_aad(PanDirection::PneToGw, &other_pn, "pne-1", "gw-1"),
            pan_frame_aad(PanDirection::GwToPne, &PN, "pne-1", "gw-1"),
        ] {
            let r = FrameSealer::new(Suite::Aes256Gcm, p2g, aad)
                .seal(b"for another PNE")
                .unwrap();
            assert_eq!(gw_rx.open(&r), Err(CryptoError::BadTag));
        }
        for aad in [
            pan_frame_aad(PanDirection::GwToPne, &PN, "pne-2", "gw-1"),
            pan_frame_aad(PanDirection::PneToGw, &PN, "pne-1", "gw-1"),
        ] {
            let r = FrameSealer::new(Suite::Aes256Gcm, g2p, aad)
                .seal(b"x")
                .unwrap();
            assert_eq!(pne_rx.open(&r), Err(CryptoError::BadTag));
        }
        // The right associated data still opens, at seq 0: nothing advanced.
        let right = pan_frame_aad(PanDirection::PneToGw, &PN, "pne-1", "gw-1");
        let r = FrameSealer::new(Suite::Aes256Gcm, p2g, right)
            .seal(b"ok")
            .unwrap();
        assert_eq!(gw_rx.open(&r).unwrap(), b"ok");
    }

    /// Each suite has frame keys of its own; the sides' sealers take the chosen one.
    #[test]
    fn frame_keys_are_of_the_chosen_suite_only() {
        let aes = PanKeys::derive(&local(1), &input());
        let chacha_input = PanAuthInput {
            suite: Suite::ChaCha20Poly1305,
            ..input()
        };
        let chacha = PanKeys::derive(&local(1), &chacha_input);
        let ((c1, g1, p1), (c2, g2, p2)) = (aes.keys(), chacha.keys());
        assert_eq!(
            c1, c2,
            "the confirmation key is the suite's own only through the proofs"
        );
        assert!(g1 != g2 && p1 != p2);
        let (tx, _) = aes.into_pne_side();
        let (_, rx) = chacha.into_gw_side();
        assert_eq!(
            (tx.suite(), rx.suite()),
            (Suite::Aes256Gcm, Suite::ChaCha20Poly1305)
        );
    }

    #[test]
    fn keys_are_separated_and_debug_redacted() {
        let mut k = PanKeys::derive(&local(1), &input());
        let (c, a, b) = k.keys();
        assert!(c != a && a != b && c != b);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex::encode(a)));
        assert_eq!(dbg, "PanKeys(<redacted>)");
        k.zeroize();
        let (c, a, b) = k.keys();
        assert_eq!((c, a, b), (&[0; 32], &[0; 32], &[0; 32]));
    }
}
