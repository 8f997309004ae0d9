//! The AEAD of bulk traffic: a PAN link's frames ([`crate::frame`]) and a delivery's chunks
//! ([`crate::delivery`]) (docs/security.md §4.13).
//!
//! Two suites, both mandatory to implement, as TLS 1.3 has them: ChaCha20-Poly1305 (RFC 8439),
//! fast in software everywhere, and AES-256-GCM, several times faster on a CPU with AES and
//! carry-less multiply instructions and slow without them. A PAN link takes AES-256-GCM only
//! when both its ends want it first ([`Suite::choose`]); a delivery's source picks its chunks'
//! suite, named in the session's invitations. The other boxes of the binding (keys, secure
//! payloads, secrets at rest) stay ChaCha20-Poly1305 ([`crate::aead`]).
//!
//! Both run on *ring*, the AEAD the project's TLS runs on: its AES-GCM uses the CPU's vector
//! AES where there is one (VAES with AVX2 included, which AWS-LC, used here before, leaves to
//! its older AES-NI code: sealing 64 KiB in place, AWS-LC runs at 0.56-0.57 of ring on the
//! AMD EPYC of BENCHMARKS.md, `cpns-bench aead`). *ring* does not wipe a key's schedule when
//! the key is dropped, so [`BulkKey`] does it ([`Wiped`]), as the rest of this crate wipes its
//! keys. (As everywhere in Rust, a copy the key made while it was built and moved into its box
//! is not reached by the wipe; the box's is.)

use core::mem::{ManuallyDrop, MaybeUninit, size_of};

use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::CryptoError;

/// The AEAD of a PAN link or a delivery session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suite {
    /// ChaCha20-Poly1305 (RFC 8439), wire code 1: the suite of a peer that names none.
    ChaCha20Poly1305,
    /// AES-256-GCM (NIST SP 800-38D), wire code 2.
    Aes256Gcm,
}

impl Suite {
    /// Every suite, by wire code.
    pub const ALL: [Suite; 2] = [Suite::ChaCha20Poly1305, Suite::Aes256Gcm];

    /// The suite's wire code.
    pub const fn code(self) -> u8 {
        match self {
            Suite::ChaCha20Poly1305 => 1,
            Suite::Aes256Gcm => 2,
        }
    }

    /// The suite of a wire code, if it is one.
    pub const fn from_code(code: u8) -> Option<Suite> {
        match code {
            1 => Some(Suite::ChaCha20Poly1305),
            2 => Some(Suite::Aes256Gcm),
            _ => None,
        }
    }

    /// The suite's name, as people read it.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::ChaCha20Poly1305 => "chacha20-poly1305",
            Suite::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// This machine's order of preference: AES-256-GCM first where the CPU seals it in
    /// hardware (AES and carry-less multiply instructions), else ChaCha20-Poly1305 first.
    pub fn local_preference() -> [Suite; 2] {
        if hardware_aes() {
            [Suite::Aes256Gcm, Suite::ChaCha20Poly1305]
        } else {
            [Suite::ChaCha20Poly1305, Suite::Aes256Gcm]
        }
    }

    /// The responder's pick from the wire codes an initiator `offered`, most wanted first,
    /// given its `own` order: the first of both when they agree on it; otherwise
    /// ChaCha20-Poly1305, fast on either side (one of them wants something else first, which
    /// says it has no AES hardware); otherwise the first of `own` that was offered. An empty
    /// offer is a peer that names no suite: ChaCha20-Poly1305. Codes this side does not know
    /// are passed over; `None` when nothing offered is one it takes.
    pub fn choose(offered: &[u8], own: &[Suite]) -> Option<Suite> {
        if offered.is_empty() {
            return own
                .contains(&Suite::ChaCha20Poly1305)
                .then_some(Suite::ChaCha20Poly1305);
        }
        let theirs: Vec<Suite> = offered
            .iter()
            .filter_map(|c| Suite::from_code(*c))
            .collect();
        match (theirs.first(), own.first()) {
            (Some(a), Some(b)) if a == b => return Some(*a),
            _ => {}
        }
        let both = |s: &Suite| theirs.contains(s) && own.contains(s);
        if both(&Suite::ChaCha20Poly1305) {
            return Some(Suite::ChaCha20Poly1305);
        }
        own.iter().copied().find(|s| both(s))
    }
}

impl core::fmt::Display for Suite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU has the instructions AES-GCM runs fast on.
fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Tag length of both suites.
pub(crate) const TAG_LEN: usize = 16;

/// A key of one suite, ready to seal and open in place; its schedule is wiped on drop.
///
/// The schedule is on the heap: *ring* keeps it inline (an AES-GCM key is over half a KiB),
/// and a PAN codec or a server session that holds no key yet should not carry its room.
pub(crate) struct BulkKey {
    key: Box<Wiped>,
    suite: Suite,
}

/// A *ring* key whose bytes (its AES or ChaCha20 key schedule, its GHASH table) are
/// overwritten with zeros when it is dropped. *ring* keeps a key inline, with no heap part and
/// no destructor of its own (checked below at compile time), so its bytes are all there is.
struct Wiped(ManuallyDrop<LessSafeKey>);

// Nothing of a `LessSafeKey` is elsewhere to wipe or would be skipped by not dropping it.
const _: () = assert!(!core::mem::needs_drop::<LessSafeKey>());

impl Drop for Wiped {
    fn drop(&mut self) {
        let bytes: *mut [MaybeUninit<u8>; size_of::<LessSafeKey>()] = (&raw mut *self.0).cast();
        // SAFETY: `bytes` is the key's own place, borrowed exclusively here, and exactly its
        // size; `MaybeUninit<u8>` holds no reference, is flat and may be all zeros, as
        // `zeroize_flat_type` asks (the key's padding included). The zeros are no valid
        // `LessSafeKey`, and none is read again: the key is in a `ManuallyDrop`, never dropped
        // (it needs no drop, asserted above), and `Wiped` is gone after this.
        #[allow(unsafe_code)]
        unsafe {
            zeroize::zeroize_flat_type(bytes);
        }
    }
}

impl BulkKey {
    /// `key` under `suite`.
    pub(crate) fn new(suite: Suite, key: &[u8; 32]) -> Self {
        let alg = match suite {
            Suite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Suite::Aes256Gcm => &AES_256_GCM,
        };
        let key = UnboundKey::new(alg, key).expect("a 32-byte key fits both suites");
        BulkKey {
            key: Box::new(Wiped(ManuallyDrop::new(LessSafeKey::new(key)))),
            suite,
        }
    }

    /// The key's suite.
    pub(crate) fn suite(&self) -> Suite {
        self.suite
    }

    /// Encrypts `body` in place; the tag.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] past the suite's length limit.
    pub(crate) fn seal_in_place(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .key
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| CryptoError::Malformed("too long for the suite"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `ct_tag` (ciphertext then tag) in place; the plaintext's length.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] shorter than a tag; [`CryptoError::BadTag`] under another
    /// key, suite, nonce or associated data, or any byte altered.
    pub(crate) fn open_in_place(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ct_tag: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if ct_tag.len() < TAG_LEN {
            return Err(CryptoError::Malformed("shorter than a tag (16 bytes)"));
        }
        self.key
            .0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), ct_tag)
            .map(|plain| plain.len())
            .map_err(|_| CryptoError::BadTag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Suite::{Aes256Gcm as Aes, ChaCha20Poly1305 as ChaCha};

    #[test]
    fn codes_go_both_ways_and_nothing_else_is_a_suite() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_code(s.code()), Some(s));
        }
        assert_eq!(Aes.code(), 2);
        assert_eq!(ChaCha.code(), 1);
        for c in [0, 3, 255] {
            assert_eq!(Suite::from_code(c), None);
        }
        assert_eq!(Aes.to_string(), "aes-256-gcm");
        assert_eq!(ChaCha.to_string(), "chacha20-poly1305");
    }

    /// The order follows this CPU: AES-256-GCM first exactly where it has AES and carry-less
    /// multiply instructions (checked here by the standard library's own detection).
    #[test]
    fn the_local_order_puts_aes_gcm_first_only_on_a_cpu_with_aes_instructions() {
        #[cfg(target_arch = "x86_64")]
        let hw = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq");
        #[cfg(target_arch = "aarch64")]
        let hw = std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let hw = false;
        let expect = if hw { [Aes, ChaCha] } else { [ChaCha, Aes] };
        assert_eq!(Suite::local_preference(), expect);
    }

    #[test]
    fn aes_gcm_is_taken_only_when_both_ends_want_it_first() {
        let hw = [Aes, ChaCha];
        let sw = [ChaCha, Aes];
        assert_eq!(Suite::choose(&[2, 1], &hw), Some(Aes));
        assert_eq!(Suite::choose(&[1, 2], &sw), Some(ChaCha));
        // One end without AES hardware: ChaCha20-Poly1305, whichever end it is.
        assert_eq!(Suite::choose(&[1, 2], &hw), Some(ChaCha));
        assert_eq!(Suite::choose(&[2, 1], &sw), Some(ChaCha));
        // A peer naming none; a peer naming only what it has.
        assert_eq!(Suite::choose(&[], &hw), Some(ChaCha));
        assert_eq!(Suite::choose(&[2], &sw), Some(Aes));
        assert_eq!(Suite::choose(&[2], &[ChaCha]), None);
        assert_eq!(Suite::choose(&[], &[Aes]), None);
        // Unknown codes are passed over, not chosen.
        assert_eq!(Suite::choose(&[9, 2], &hw), Some(Aes));
        assert_eq!(Suite::choose(&[9], &hw), None);
    }

    #[test]
    fn a_box_opens_only_under_its_suite_key_nonce_and_associated_data() {
        let key = [5u8; 32];
        for suite in Suite::ALL {
            let k = BulkKey::new(suite, &key);
            assert_eq!(k.suite(), suite);
            let mut body = b"a chunk of content".to_vec();
            let tag = k.seal_in_place([1; 12], b"aad", &mut body).unwrap();
            assert_ne!(&body[..], b"a chunk of content");
            let sealed = [&body[..], &tag[..]].concat();
            let open = |k: &BulkKey, nonce, aad: &[u8], mut b: Vec<u8>| {
                k.open_in_place(nonce, aad, &mut b).map(|n| b[..n].to_vec())
            };
            assert_eq!(
                open(&k, [1; 12], b"aad", sealed.clone()).unwrap(),
                b"a chunk of content"
            );
            let other = match suite {
                Aes => ChaCha,
                ChaCha => Aes,
            };
            let wrong = [
                open(&BulkKey::new(other, &key), [1; 12], b"aad", sealed.clone()),
                open(
                    &BulkKey::new(suite, &[6; 32]),
                    [1; 12],
                    b"aad",
                    sealed.clone(),
                ),
                open(&k, [2; 12], b"aad", sealed.clone()),
                open(&k, [1; 12], b"dad", sealed.clone()),
            ];
            for (n, w) in wrong.into_iter().enumerate() {
                assert_eq!(w, Err(CryptoError::BadTag), "{suite} case {n}");
            }
            for i in 0..sealed.len() {
                let mut t = sealed.clone();
                t[i] ^= 0x80;
                assert_eq!(open(&k, [1; 12], b"aad", t), Err(CryptoError::BadTag));
            }
            assert!(matches!(
                open(&k, [1; 12], b"aad", vec![0; 15]),
                Err(CryptoError::Malformed(_))
            ));
        }
    }

    /// A key's schedule does not outlive the key: every byte of its place is zero once it is
    /// dropped, in either suite.
    #[test]
    #[allow(unsafe_code)]
    fn a_dropped_key_leaves_only_zeros_where_its_schedule_was() {
        for suite in Suite::ALL {
            let mut slot = MaybeUninit::new(*BulkKey::new(suite, &[0x5a; 32]).key);
            // SAFETY: `slot` holds a key, dropped once here and not used as a key again.
            unsafe { slot.assume_init_drop() };
            // SAFETY: the drop wrote a zero to every byte of the key's place, padding included,
            // so each byte is an initialised `u8`.
            let bytes: [u8; size_of::<Wiped>()] =
                unsafe { slot.as_ptr().cast::<[u8; size_of::<Wiped>()]>().read() };
            assert!(bytes.len() >= 32, "{suite}: the key is inline");
            assert!(bytes.iter().all(|b| *b == 0), "{suite}: {bytes:02x?}");
        }
    }

    /// AES-256-GCM as NIST publishes it (the GCM specification's test case 16, a 256-bit key
    /// with associated data), so the suite is the standard one.
    #[test]
    fn aes_256_gcm_matches_the_gcm_specifications_test_case_16() {
        let key: [u8; 32] =
            hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 12] = hex::decode("cafebabefacedbaddecaf888")
            .unwrap()
            .try_into()
            .unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let mut pt = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let tag = BulkKey::new(Aes, &key)
            .seal_in_place(nonce, &aad, &mut pt)
            .unwrap();
        assert_eq!(
            hex::encode(&pt),
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        );
        assert_eq!(hex::encode(tag), "76fc6ece0f4e1768cddf8853bb2d551b");
    }
}
