//! Sealed PAN frames: a per-direction key of the link's suite, counter nonces, strict ordering.
//!
//! docs/design.md §4: on a PAN in `cpns` security mode, after PN GW authentication ([`crate::pan`]) every
//! frame is AEAD-sealed "with per-direction keys and counters (replays and reordering rejected)".
//! Each direction has its own key, so the two sides' counters never share a nonce space. A record
//! is (docs/security.md §4.5):
//! ```text
//! record = seq (u64 BE, 8) ‖ AEAD(K_dir, nonce = 00000000 ‖ seq (u64 BE), aad, pt)
//! ```
//! The AEAD is the link's [`Suite`], agreed in PN GW authentication ([`crate::PanKeys`]).
//! The associated data is fixed for the life of a sealer or opener and given when it is made:
//! for PAN frames it is [`crate::pan_frame_aad`] of its direction, PN, PNE and PN GW, bound by
//! [`crate::PanKeys::into_pne_side`] / [`crate::PanKeys::into_gw_side`]. The sequence number
//! is authenticated as the nonce and is not repeated in the associated data.
//! The first record in each direction has seq 0. The PAN session runs over an ordered transport
//! (TCP), so the opener accepts only the exact next sequence number: a lower one is a replay, a
//! higher one means a frame was deleted or reordered; both fail with [`CryptoError::Replay`]. A
//! record that fails in any way leaves the opener's counter unchanged, so an attacker's junk cannot
//! desynchronise a live session. The sealer refuses to use seq `u64::MAX`
//! ([`CryptoError::SequenceExhausted`]): the session must be re-keyed long before that.

use crate::error::CryptoError;
use crate::suite::{BulkKey, Suite};
use core::fmt;
use zeroize::Zeroize;

/// Bytes a sealed record adds to its plaintext: the 8-byte sequence number and the 16-byte tag.
pub const SEAL_OVERHEAD: usize = SEQ_LEN + crate::suite::TAG_LEN;

const SEQ_LEN: usize = 8;

/// The nonce of record `seq`: four zero bytes then `seq` as u64 BE.
fn nonce_for(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Builds a cipher from a key and wipes the caller's copy.
fn cipher_from(suite: Suite, mut key: [u8; 32]) -> BulkKey {
    let c = BulkKey::new(suite, &key);
    key.zeroize();
    c
}

/// Seals outgoing PAN frames for one direction (docs/design.md §4, PAN security mode `cpns`).
///
/// The cipher's key copy is zeroized on drop.
pub struct FrameSealer {
    cipher: BulkKey,
    aad: Vec<u8>,
    next_seq: u64,
}

impl FrameSealer {
    /// A sealer whose first record will carry seq 0, authenticating `aad` with every record.
    /// Prefer [`crate::PanKeys::into_pne_side`] / [`crate::PanKeys::into_gw_side`], which pick
    /// the right direction key and bind the session's associated data.
    pub fn new(suite: Suite, key: [u8; 32], aad: Vec<u8>) -> Self {
        FrameSealer {
            cipher: cipher_from(suite, key),
            aad,
            next_seq: 0,
        }
    }

    /// The associated data every record of this sealer authenticates.
    pub fn aad(&self) -> &[u8] {
        &self.aad
    }

    /// The sequence number the next record will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// The suite this sealer seals under.
    pub fn suite(&self) -> Suite {
        self.cipher.suite()
    }

    /// Seals one frame into a new record of `plaintext.len() + SEAL_OVERHEAD` bytes.
    ///
    /// # Errors
    /// [`CryptoError::SequenceExhausted`] after 2^64 - 1 records; [`CryptoError::Malformed`] for
    /// a plaintext beyond the suite's limit (64 GiB for AES-256-GCM).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// Appends one sealed record to `out`, encrypting in place in `out` (one copy of the
    /// plaintext, no temporary buffers). On error `out` is left as it was.
    ///
    /// # Errors
    /// As [`FrameSealer::seal`].
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        self.seal_written(out, |out| out.extend_from_slice(plaintext))
    }

    /// Appends one sealed record to `out` whose plaintext is what `write` appends to `out`:
    /// the plaintext is written once, where it is sealed, with no copy of its own (a frame's
    /// envelope encoded straight into the record). On error `out` is left as it was.
    ///
    /// # Errors
    /// As [`FrameSealer::seal`].
    pub fn seal_written(
        &mut self,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CryptoError> {
        let seq = self.next_seq;
        if seq == u64::MAX {
            return Err(CryptoError::SequenceExhausted);
        }
        let start = out.len();
        out.extend_from_slice(&seq.to_be_bytes());
        write(out);
        let body = &mut out[start + SEQ_LEN..];
        match self.cipher.seal_in_place(nonce_for(seq), &self.aad, body) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                self.next_seq = seq + 1;
                Ok(())
            }
            Err(_) => {
                out[start..].zeroize();
                out.truncate(start);
                Err(CryptoError::Malformed("frame too long for the suite"))
            }
        }
    }
}

impl fmt::Debug for FrameSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSealer")
            .field("suite", &self.cipher.suite())
            .field("key", &"<redacted>")
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

/// Opens incoming PAN frames for one direction, accepting only the next sequence number.
///
/// The cipher's key copy is zeroized on drop.
pub struct FrameOpener {
    cipher: BulkKey,
    aad: Vec<u8>,
    next_seq: u64,
}

impl FrameOpener {
    /// An opener that expects seq 0 first and requires every record to authenticate `aad`.
    pub fn new(suite: Suite, key: [u8; 32], aad: Vec<u8>) -> Self {
        FrameOpener {
            cipher: cipher_from(suite, key),
            aad,
            next_seq: 0,
        }
    }

    /// The associated data every record must authenticate.
    pub fn aad(&self) -> &[u8] {
        &self.aad
    }

    /// The sequence number the next record must carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// The suite this opener opens under.
    pub fn suite(&self) -> Suite {
        self.cipher.suite()
    }

    /// Opens one record and advances the expected sequence number; on any error the expected
    /// sequence number is unchanged.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for a record shorter than [`SEAL_OVERHEAD`];
    /// [`CryptoError::Replay`] when its seq is not the next expected one (replayed, reordered or
    /// after a deleted frame); [`CryptoError::BadTag`] on a wrong key, wrong `aad` or any tampered
    /// byte (including a record sealed with other associated data: another direction, PN, PNE
    /// or PN GW); [`CryptoError::SequenceExhausted`] once seq `u64::MAX` would be next.
    pub fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = record.to_vec();
        let len = self.open_in_place(&mut buf)?.len();
        buf.copy_within(SEQ_LEN..SEQ_LEN + len, 0);
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens one record where it lies and advances the expected sequence number; the
    /// plaintext, within `record` (no copy of it is made). On any error the expected sequence
    /// number is unchanged, and what `record` holds is unspecified (it is not to be used).
    ///
    /// # Errors
    /// As [`FrameOpener::open`].
    pub fn open_in_place<'r>(&mut self, record: &'r mut [u8]) -> Result<&'r [u8], CryptoError> {
        if record.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Malformed(
                "sealed frame shorter than sequence number and tag (24 bytes)",
            ));
        }
        let (seq_bytes, rest) = record.split_at_mut(SEQ_LEN);
        let mut seq_arr = [0u8; SEQ_LEN];
        seq_arr.copy_from_slice(seq_bytes);
        let seq = u64::from_be_bytes(seq_arr);
        if self.next_seq == u64::MAX {
            return Err(CryptoError::SequenceExhausted);
        }
        if seq != self.next_seq {
            return Err(CryptoError::Replay {
                expected: self.next_seq,
                got: seq,
            });
        }
        let len = self.cipher.open_in_place(nonce_for(seq), &self.aad, rest)?;
        self.next_seq = seq + 1;
        Ok(&rest[..len])
    }
}

impl fmt::Debug for FrameOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameOpener")
            .field("suite", &self.cipher.suite())
            .field("key", &"<redacted>")
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x5c; 32];
    const SUITE: Suite = Suite::Aes256Gcm;

    fn pair_with(aad: &[u8]) -> (FrameSealer, FrameOpener) {
        (
            FrameSealer::new(SUITE, KEY, aad.to_vec()),
            FrameOpener::new(SUITE, KEY, aad.to_vec()),
        )
    }

    fn pair() -> (FrameSealer, FrameOpener) {
        pair_with(b"a")
    }

    #[test]
    fn round_trip_in_order() {
        let (mut s, mut o) = pair_with(b"hdr");
        for i in 0..5u8 {
            let msg = vec![i; usize::from(i) * 10];
            let r = s.seal(&msg).unwrap();
            assert_eq!(r.len(), msg.len() + SEAL_OVERHEAD);
            assert_eq!(&r[..8], &u64::from(i).to_be_bytes());
            assert_eq!(o.open(&r).unwrap(), msg);
        }
        assert_eq!(s.next_sequence(), 5);
        assert_eq!(o.next_sequence(), 5);
        assert_eq!((s.aad(), o.aad()), (&b"hdr"[..], &b"hdr"[..]));
    }

    #[test]
    fn seal_into_appends_and_matches_seal() {
        let (mut a, _) = pair();
        let (mut b, _) = pair();
        let mut out = b"prefix".to_vec();
        a.seal_into(b"payload", &mut out).unwrap();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &b.seal(b"payload").unwrap()[..]);
    }

    /// A record whose plaintext the caller writes in place is the record of that plaintext;
    /// refused, it leaves `out` as it was and the sequence where it was.
    #[test]
    fn a_plaintext_written_in_place_seals_as_a_copied_one() {
        let (mut a, mut opener) = pair();
        let (mut b, _) = pair();
        let mut out = b"prefix".to_vec();
        a.seal_written(&mut out, |o| o.extend_from_slice(b"pay-load"))
            .unwrap();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &b.seal(b"pay-load").unwrap()[..]);
        assert_eq!(opener.open(&out[6..]).unwrap(), b"pay-load");
        assert_eq!(a.next_sequence(), 1);

        let mut spent = FrameSealer::new(Suite::Aes256Gcm, KEY, Vec::new());
        spent.next_seq = u64::MAX;
        let mut out = b"kept".to_vec();
        let mut wrote = false;
        assert_eq!(
            spent.seal_written(&mut out, |o| {
                wrote = true;
                o.extend_from_slice(b"x");
            }),
            Err(CryptoError::SequenceExhausted)
        );
        assert!(
            !wrote,
            "nothing is written for a record that cannot be sealed"
        );
        assert_eq!(out, b"kept");
        assert_eq!(spent.next_sequence(), u64::MAX);
    }

    /// Opened where it lies: the plaintext is the record's own bytes, after the sequence
    /// number; a replay or a flipped byte is refused and the next record still opens.
    #[test]
    fn a_record_opens_in_place_within_itself() {
        let (mut s, mut o) = pair();
        let mut first = s.seal(b"in place").unwrap();
        let copy = first.clone();
        let start = first.as_ptr() as usize;
        let plain = o.open_in_place(&mut first).unwrap();
        assert_eq!(plain, b"in place");
        assert_eq!(plain.as_ptr() as usize, start + 8);
        let mut replayed = copy.clone();
        assert!(matches!(
            o.open_in_place(&mut replayed),
            Err(CryptoError::Replay {
                expected: 1,
                got: 0
            })
        ));
        let mut second = s.seal(b"next").unwrap();
        let mut flipped = second.clone();
        flipped[9] ^= 1;
        assert_eq!(o.open_in_place(&mut flipped), Err(CryptoError::BadTag));
        assert_eq!(o.next_sequence(), 1);
        assert_eq!(o.open_in_place(&mut second).unwrap(), b"next");
        assert!(matches!(
            o.open_in_place(&mut [0; 23]),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn record_uses_counter_nonce_and_the_bound_aad() {
        let mut s = FrameSealer::new(Suite::ChaCha20Poly1305, KEY, b"aad".to_vec());
        let r = s.seal(b"hi").unwrap();
        let expect = crate::aead::seal_with_nonce(&KEY, [0; 12], b"aad", b"hi").unwrap();
        assert_eq!(&r[8..], &expect[12..]);
        assert_eq!(s.suite(), Suite::ChaCha20Poly1305);
    }

    #[test]
    fn a_record_opens_only_under_its_own_suite() {
        for (a, b) in [
            (Suite::Aes256Gcm, Suite::ChaCha20Poly1305),
            (Suite::ChaCha20Poly1305, Suite::Aes256Gcm),
        ] {
            let r = FrameSealer::new(a, KEY, b"aad".to_vec())
                .seal(b"hi")
                .unwrap();
            let mut other = FrameOpener::new(b, KEY, b"aad".to_vec());
            assert_eq!(other.open(&r), Err(CryptoError::BadTag));
            assert_eq!(other.next_sequence(), 0);
            let mut same = FrameOpener::new(a, KEY, b"aad".to_vec());
            assert_eq!(same.open(&r).unwrap(), b"hi");
            assert!(format!("{same:?}").contains(&format!("{a:?}")));
        }
    }

    #[test]
    fn tampered_records_fail_and_do_not_advance() {
        let (mut s, mut o) = pair();
        let r = s.seal(b"hello world").unwrap();
        for i in 8..r.len() {
            let mut t = r.clone();
            t[i] ^= 0x10;
            assert_eq!(o.open(&t), Err(CryptoError::BadTag), "byte {i}");
        }
        // Tampering the seq field is a sequence error, not a crash.
        let mut t = r.clone();
        t[7] ^= 1;
        assert_eq!(
            o.open(&t),
            Err(CryptoError::Replay {
                expected: 0,
                got: 1
            })
        );
        assert!(matches!(o.open(&r[..23]), Err(CryptoError::Malformed(_))));
        assert_eq!(o.next_sequence(), 0);
        assert_eq!(o.open(&r).unwrap(), b"hello world");
    }

    #[test]
    fn other_associated_data_fails_and_does_not_advance() {
        let (mut s, _) = pair_with(b"a");
        let (_, mut o) = pair_with(b"b");
        let r = s.seal(b"x").unwrap();
        assert_eq!(o.open(&r), Err(CryptoError::BadTag));
        assert_eq!(o.next_sequence(), 0);
    }

    #[test]
    fn replay_and_reordering_are_rejected() {
        let (mut s, mut o) = pair();
        let r0 = s.seal(b"zero").unwrap();
        let r1 = s.seal(b"one").unwrap();
        let r2 = s.seal(b"two").unwrap();
        // Reordered: r1 before r0.
        assert_eq!(
            o.open(&r1),
            Err(CryptoError::Replay {
                expected: 0,
                got: 1
            })
        );
        o.open(&r0).unwrap();
        // Replayed r0.
        assert_eq!(
            o.open(&r0),
            Err(CryptoError::Replay {
                expected: 1,
                got: 0
            })
        );
        // Deleted r1: r2 is out of order.
        assert_eq!(
            o.open(&r2),
            Err(CryptoError::Replay {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(o.open(&r1).unwrap(), b"one");
        assert_eq!(o.open(&r2).unwrap(), b"two");
    }

    #[test]
    fn wrong_key_fails() {
        let mut s = FrameSealer::new(SUITE, KEY, Vec::new());
        let mut o = FrameOpener::new(SUITE, [0x5d; 32], Vec::new());
        let r = s.seal(b"x").unwrap();
        assert_eq!(o.open(&r), Err(CryptoError::BadTag));
    }

    #[test]
    fn sequence_exhaustion() {
        let (mut s, mut o) = pair();
        s.next_seq = u64::MAX - 1;
        o.next_seq = u64::MAX - 1;
        let last = s.seal(b"last").unwrap();
        let mut out = vec![1, 2, 3];
        assert_eq!(
            s.seal_into(b"more", &mut out),
            Err(CryptoError::SequenceExhausted)
        );
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(o.open(&last).unwrap(), b"last");
        assert_eq!(o.open(&last), Err(CryptoError::SequenceExhausted));
    }

    #[test]
    fn debug_is_redacted() {
        let (mut s, o) = pair();
        let text = format!("{s:?} {o:?}");
        assert!(!text.contains("5c5c") && !text.contains("92, 92"));
        assert!(text.contains("next_seq: 0"));
        // Each names itself, its suite and its next sequence number, and nothing else.
        s.seal(b"x").unwrap();
        assert_eq!(
            format!("{s:?}"),
            r#"FrameSealer { suite: Aes256Gcm, key: "<redacted>", next_seq: 1 }"#
        );
        assert_eq!(
            format!("{o:?}"),
            r#"FrameOpener { suite: Aes256Gcm, key: "<redacted>", next_seq: 0 }"#
        );
    }
}
