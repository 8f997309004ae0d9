//! Transcript encoding, HKDF-SHA256 and HMAC-SHA256: the building blocks of the key schedule.
//!
//! Every derivation in this crate is `HKDF-SHA256` (RFC 5869) or `HMAC-SHA256` (RFC 2104) over a
//! [`Transcript`]: a label followed by fields, *each* field (the label too) encoded as its length
//! then its bytes. Length-prefixing every field makes concatenation unambiguous: `("ab", "c")`
//! and `("a", "bc")` encode differently, so no choice of identifiers lets one transcript pass for
//! another. The length is a u16 big-endian; a field of 65,535 bytes or more (never produced by
//! CPNS, whose identifiers are at most 128 bytes) is encoded as `ff ff` followed by a u64
//! big-endian length, which keeps the encoding injective for every input and every function in
//! this crate total. docs/security.md §2 states the same rules for a second implementation.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// A length-prefixed transcript: `len(label) ‖ label ‖ len(f1) ‖ f1 ‖ …`.
///
/// Holds only public values (labels, identifiers, rands, hashes), never keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript(Vec<u8>);

impl Transcript {
    /// Starts a transcript with its domain-separation label (one of [`crate::labels`]).
    pub fn new(label: &str) -> Self {
        let mut t = Transcript(Vec::with_capacity(128));
        t.push(label.as_bytes());
        t
    }

    /// Starts an unlabelled field list, to be appended to labelled transcripts with
    /// [`Transcript::extend`] (used for context shared by several derivations).
    pub(crate) fn fields() -> Self {
        Transcript(Vec::with_capacity(128))
    }

    /// Appends one field: its length (u16 BE, or `ffff` ‖ u64 BE when ≥ 65,535) then its bytes.
    pub fn push(&mut self, field: &[u8]) -> &mut Self {
        match u16::try_from(field.len()) {
            Ok(n) if n < u16::MAX => self.0.extend_from_slice(&n.to_be_bytes()),
            _ => {
                self.0.extend_from_slice(&u16::MAX.to_be_bytes());
                let n = u64::try_from(field.len()).unwrap_or(u64::MAX);
                self.0.extend_from_slice(&n.to_be_bytes());
            }
        }
        self.0.extend_from_slice(field);
        self
    }

    /// Appends an already-encoded field list verbatim.
    pub(crate) fn extend(&mut self, fields: &Transcript) -> &mut Self {
        self.0.extend_from_slice(&fields.0);
        self
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An HKDF-SHA256 pseudorandom key: the result of HKDF-Extract, ready to expand several keys.
pub(crate) struct Prk(Hkdf<Sha256>);

impl Prk {
    /// HKDF-Extract(salt, ikm). `None` salt means 32 zero bytes (RFC 5869 §2.2).
    pub(crate) fn extract(salt: Option<&[u8]>, ikm: &[u8; 32]) -> Self {
        Prk(Hkdf::<Sha256>::new(salt, ikm))
    }

    /// HKDF-Expand(prk, info, 32).
    pub(crate) fn expand(&self, info: &Transcript) -> Zeroizing<[u8; 32]> {
        let mut okm = Zeroizing::new([0u8; 32]);
        self.0
            .expand(info.as_bytes(), okm.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }
}

/// HKDF-Extract then Expand with no salt: derives one 32-byte key from a 32-byte key and `info`.
pub(crate) fn derive_key(ikm: &[u8; 32], info: &Transcript) -> Zeroizing<[u8; 32]> {
    Prk::extract(None, ikm).expand(info)
}

/// HKDF-Extract(salt, ikm), returned as bytes; only for exposing the PRK in test vectors.
pub(crate) fn extract_prk(salt: Option<&[u8]>, ikm: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let (prk, _) = Hkdf::<Sha256>::extract(salt, ikm);
    Zeroizing::new(prk.into())
}

/// HMAC-SHA256(key, transcript).
pub(crate) fn hmac(key: &[u8; 32], msg: &Transcript) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(msg.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        let mut t = Transcript::new("L");
        t.push(b"ab").push(b"").push(&[7]);
        assert_eq!(t.as_bytes(), &[0, 1, b'L', 0, 2, b'a', b'b', 0, 0, 0, 1, 7]);
    }

    #[test]
    fn concatenation_is_unambiguous() {
        let mut a = Transcript::new("x");
        a.push(b"ab").push(b"c");
        let mut b = Transcript::new("x");
        b.push(b"a").push(b"bc");
        assert_ne!(a, b);
    }

    #[test]
    fn long_fields_use_the_escape() {
        let big = vec![1u8; 70_000];
        let mut t = Transcript::fields();
        t.push(&big);
        assert_eq!(
            &t.as_bytes()[..10],
            &[0xff, 0xff, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
        assert_eq!(t.as_bytes().len(), 10 + 70_000);
        let edge = vec![0u8; 65_535];
        let mut e = Transcript::fields();
        e.push(&edge);
        assert_eq!(
            &e.as_bytes()[..10],
            &[0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
        let below = vec![0u8; 65_534];
        let mut b = Transcript::fields();
        b.push(&below);
        assert_eq!(&b.as_bytes()[..2], &[0xff, 0xfe]);
    }

    // RFC 5869 appendix A.3 (zero-length salt and info) cross-checks the HKDF wiring.
    #[test]
    fn hkdf_matches_rfc5869_a3() {
        let ikm = [0x0bu8; 22];
        let hk = Hkdf::<Sha256>::new(None, &ikm);
        let mut okm = [0u8; 42];
        hk.expand(&[], &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d\
             9d201395faa4b61a96c8"
        );
    }

    // hmac() is exactly HMAC-SHA256 over the encoded transcript bytes.
    #[test]
    fn hmac_is_hmac_sha256() {
        let key = [0x42u8; 32];
        let t = Transcript::new("m");
        let ours = hmac(&key, &t);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(&[0, 1, b'm']);
        let theirs: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn derive_key_depends_on_info_and_ikm() {
        let a = derive_key(&[1; 32], &Transcript::new("a"));
        let b = derive_key(&[1; 32], &Transcript::new("b"));
        let c = derive_key(&[2; 32], &Transcript::new("a"));
        assert_ne!(*a, *b);
        assert_ne!(*a, *c);
        assert_eq!(
            *a,
            *Prk::extract(None, &[1; 32]).expand(&Transcript::new("a"))
        );
    }
}
