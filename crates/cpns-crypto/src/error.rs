//! The error type of the crypto layer.
//!
//! One small `#[non_exhaustive]` enum, [`CryptoError`], covers every failure the crate can
//! report. The variants are deliberately coarse: a verifier learns *that* a check failed
//! ([`CryptoError::BadTag`], [`CryptoError::BadHash`]) but never *why* (wrong key, wrong binding,
//! tampered byte), so an attacker probing with forged messages learns nothing from the error
//! either. Protocol crates map these to their own errors (usually `unauthenticated`).

/// Every failure the crypto layer reports.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The operating system's random number generator could not produce bytes.
    #[error("the operating system random number generator failed")]
    Rng,
    /// An AEAD tag did not verify: wrong key, wrong associated data (binding) or tampered bytes.
    #[error("authentication tag check failed (wrong key, wrong binding or tampered data)")]
    BadTag,
    /// An authentication hash (hash_PNE, hash_server, GW response, PAN proof) did not match.
    #[error("authentication hash does not match")]
    BadHash,
    /// A sealed frame arrived with a sequence number other than the next expected one
    /// (a replayed, reordered or deleted frame).
    #[error("frame sequence number {got} is out of order (expected {expected})")]
    Replay {
        /// The sequence number the opener expected next.
        expected: u64,
        /// The sequence number the record carried.
        got: u64,
    },
    /// Input has the wrong shape (length) to be parsed at all; the text says what was expected.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// An Ed25519 signature did not verify: a certificate another authority signed or altered,
    /// or group content its named sender did not sign.
    #[error("signature check failed (another signer, or altered data)")]
    BadSignature,
    /// A frame sealer has used every sequence number; the session must be re-keyed.
    #[error("frame sequence numbers exhausted; the session must be re-keyed")]
    SequenceExhausted,
    /// A hex string had an odd length, the wrong length or a non-hex character.
    #[error("invalid hex encoding of a key")]
    BadHex,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_clear() {
        assert_eq!(
            CryptoError::Replay {
                expected: 3,
                got: 1
            }
            .to_string(),
            "frame sequence number 1 is out of order (expected 3)"
        );
        assert_eq!(
            CryptoError::Malformed("too short").to_string(),
            "malformed input: too short"
        );
    }
}
