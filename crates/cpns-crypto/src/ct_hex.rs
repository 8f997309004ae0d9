//! Constant-time hex encoding for secret keys.
//!
//! Keys travel through hex in credential files and operator tooling (`cpns enroll`), so their
//! hex form is as secret as the key. A table lookup or a `match` on each nibble would make the
//! running time (and cache footprint) depend on the secret; these routines instead compute each
//! character with branch-free integer arithmetic, in the manner of RFC 4648 codecs such as
//! RustCrypto's `base16ct`. Encoding is lowercase; decoding accepts either case. This is plain
//! data formatting, not a cryptographic primitive.

use crate::error::CryptoError;
use zeroize::Zeroizing;

/// Encodes one nibble (0..=15) as a lowercase hex digit without branching on its value.
fn encode_nibble(n: u8) -> u8 {
    let n = i16::from(n);
    // '0' + n, plus ('a' - '0' - 10) = 0x27 when n > 9. (9 - n) >> 8 is all ones iff n > 9.
    let c = n + 0x30 + (((9 - n) >> 8) & 0x27);
    // c is always in 0x30..=0x66, so the low byte is the whole value.
    c.to_le_bytes()[0]
}

/// Decodes one hex digit; returns the value (0..=15) or a value with the high bits set when the
/// character is not a hex digit. Branch-free in the character.
fn decode_nibble(c: u8) -> u16 {
    let b = i16::from(c);
    let mut ret: i16 = -1;
    // '0'..='9' (0x30..=0x39): ret += b - 0x30 + 1
    ret += (((0x2f - b) & (b - 0x3a)) >> 8) & (b - 47);
    // 'A'..='F' (0x41..=0x46): ret += b - 0x41 + 10 + 1
    ret += (((0x40 - b) & (b - 0x47)) >> 8) & (b - 54);
    // 'a'..='f' (0x61..=0x66): ret += b - 0x61 + 10 + 1
    ret += (((0x60 - b) & (b - 0x67)) >> 8) & (b - 86);
    u16::from_le_bytes(ret.to_le_bytes())
}

/// Encodes a 32-byte secret as 64 lowercase hex characters in a zeroizing string.
pub(crate) fn encode_key(bytes: &[u8; 32]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(64));
    for b in bytes {
        out.push(char::from(encode_nibble(b >> 4)));
        out.push(char::from(encode_nibble(b & 0x0f)));
    }
    out
}

/// Decodes exactly 64 hex characters (either case) into a 32-byte secret.
///
/// The length check depends only on the public length; the digit checks are accumulated and
/// tested once at the end, so the time taken does not depend on where a bad digit sits.
pub(crate) fn decode_key(s: &str) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let src = s.as_bytes();
    if src.len() != 64 {
        return Err(CryptoError::BadHex);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    let mut err: u16 = 0;
    for (dst, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let hi = decode_nibble(pair[0]);
        let lo = decode_nibble(pair[1]);
        err |= (hi | lo) >> 8;
        *dst = (((hi << 4) | lo) & 0xff).to_le_bytes()[0];
    }
    if err == 0 {
        Ok(out)
    } else {
        Err(CryptoError::BadHex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_round_trip_every_value() {
        for n in 0u8..16 {
            let c = encode_nibble(n);
            assert_eq!(c, b"0123456789abcdef"[usize::from(n)]);
            assert_eq!(decode_nibble(c), u16::from(n));
            assert_eq!(decode_nibble(c.to_ascii_uppercase()), u16::from(n));
        }
    }

    #[test]
    fn every_non_hex_byte_is_rejected() {
        for c in 0u8..=255 {
            let valid = c.is_ascii_hexdigit();
            assert_eq!(decode_nibble(c) >> 8 == 0, valid, "byte {c:#04x}");
        }
    }

    #[test]
    fn key_round_trip_matches_hex_crate() {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::try_from(i * 37 % 256).unwrap();
        }
        let enc = encode_key(&key);
        assert_eq!(enc.as_str(), hex::encode(key));
        assert_eq!(*decode_key(&enc).unwrap(), key);
        assert_eq!(*decode_key(&enc.to_uppercase()).unwrap(), key);
    }

    #[test]
    fn bad_hex_is_rejected() {
        let good = "00".repeat(32);
        assert!(decode_key(&good).is_ok());
        assert_eq!(decode_key(&good[..62]), Err(CryptoError::BadHex));
        assert_eq!(decode_key(&format!("{good}00")), Err(CryptoError::BadHex));
        let mut bad = good.clone();
        bad.replace_range(63..64, "g");
        assert_eq!(decode_key(&bad), Err(CryptoError::BadHex));
        // Both digits of one byte bad, at the start, in the middle and at the end.
        for at in [0, 30, 62] {
            let mut bad = good.clone();
            bad.replace_range(at..at + 2, "zg");
            assert_eq!(decode_key(&bad), Err(CryptoError::BadHex), "at {at}");
        }
        // A multi-byte UTF-8 character of the right byte length is still rejected.
        let utf8 = format!("é{}", "0".repeat(62));
        assert_eq!(utf8.len(), 64);
        assert_eq!(decode_key(&utf8), Err(CryptoError::BadHex));
    }
}
