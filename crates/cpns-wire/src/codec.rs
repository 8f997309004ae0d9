//! Session framing and envelope encoding (docs/design.md §3): every frame is a big-endian `u32` length,
//! then one frame-kind byte, then the payload: a CBOR [`Envelope`] for [`FrameKind::Plain`], or
//! an AEAD record whose plaintext is a CBOR envelope for [`FrameKind::Sealed`] (PAN frames after
//! PN GW authentication, docs/security.md).

use crate::envelope::{Envelope, PROTOCOL_VERSION};

/// Default largest frame, in bytes (docs/design.md §3).
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why bytes are not a valid frame or envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// A frame has no kind byte.
    #[error("empty frame")]
    EmptyFrame,
    /// The frame-kind byte is not known.
    #[error("unknown frame kind {0}")]
    UnknownFrameKind(u8),
    /// The payload is not a valid envelope.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes follow the envelope inside the frame.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The envelope's version is not supported.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
}

/// What a frame's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A CBOR envelope in the clear (TLS-protected WAN, trusted PAN, or before PAN security).
    Plain = 0,
    /// An AEAD record of a CBOR envelope (PAN after PN GW authentication).
    Sealed = 1,
}

impl FrameKind {
    /// Reads a kind byte.
    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        match b {
            0 => Ok(FrameKind::Plain),
            1 => Ok(FrameKind::Sealed),
            other => Err(WireError::UnknownFrameKind(other)),
        }
    }
}

/// Checks a length prefix against the maximum frame size, before anything is buffered.
pub fn frame_len(prefix: [u8; LEN_PREFIX], max: u32) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    Ok(len as usize)
}

/// Splits a frame into its kind and payload.
pub fn split_frame(frame: &[u8]) -> Result<(FrameKind, &[u8]), WireError> {
    let (&kind, payload) = frame.split_first().ok_or(WireError::EmptyFrame)?;
    Ok((FrameKind::from_byte(kind)?, payload))
}

/// Appends the CBOR of `env` to `out`.
pub fn encode_envelope(env: &Envelope, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let Ok(()) = minicbor::encode(env, &mut *out) else {
        unreachable!("encoding into a Vec is infallible")
    };
}

/// Appends a whole plain frame (length prefix, kind byte, CBOR envelope) to `out`.
pub fn encode_plain_frame(env: &Envelope, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(FrameKind::Plain as u8);
    encode_envelope(env, out);
    patch_len(out, start);
}

/// Writes the length of the frame that starts at `start` into its prefix.
pub fn patch_len(out: &mut [u8], start: usize) {
    let len = (out.len() - start - LEN_PREFIX) as u32;
    out[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
}

/// Decodes one envelope from exactly `bytes`: trailing bytes and unsupported versions are
/// errors.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, WireError> {
    let mut d = minicbor::Decoder::new(bytes);
    let env: Envelope = d
        .decode()
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let rest = bytes.len() - d.position();
    if rest != 0 {
        return Err(WireError::TrailingBytes(rest));
    }
    if env.version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(env.version));
    }
    Ok(env)
}

/// The version and message id of a request envelope that [`decode_envelope`] refused, read
/// without understanding the rest (a newer peer's body may not decode here): enough to answer
/// it with `unsupported_version` instead of closing silently. `None` unless `bytes` is a CBOR
/// map whose key 0 is a version, key 1 a message id, and key 3 (kind) says request.
pub fn peek_request_header(bytes: &[u8]) -> Option<(u16, u64)> {
    let mut d = minicbor::Decoder::new(bytes);
    let entries = d.map().ok()??;
    let (mut version, mut msg_id, mut request) = (None, None, false);
    for _ in 0..entries {
        match d.u32().ok()? {
            0 => version = Some(d.u16().ok()?),
            1 => msg_id = Some(d.u64().ok()?),
            3 => request = d.u32().ok()? == crate::MsgKind::Request.code(),
            _ => d.skip().ok()?,
        }
    }
    request.then_some((version?, msg_id?))
}

#[cfg(test)]
mod peek_tests {
    use super::*;
    use crate::{Address, Envelope, MsgKind, StatusUpdateRequest};

    fn bytes(version: u16, kind: MsgKind) -> Vec<u8> {
        let mut env =
            Envelope::request(77, Address::Server, Address::Server, StatusUpdateRequest {});
        env.version = version;
        env.kind = kind;
        let mut out = Vec::new();
        encode_envelope(&env, &mut out);
        out
    }

    #[test]
    fn a_future_request_is_read_far_enough_to_answer() {
        let b = bytes(9, MsgKind::Request);
        assert!(matches!(
            decode_envelope(&b),
            Err(WireError::UnsupportedVersion(9))
        ));
        assert_eq!(peek_request_header(&b), Some((9, 77)));
        // An unknown body from the future is skipped too.
        let mut future = Vec::new();
        let mut e = minicbor::Encoder::new(&mut future);
        e.map(5).unwrap();
        e.u32(0).unwrap().u16(3).unwrap();
        e.u32(1).unwrap().u64(5).unwrap();
        e.u32(3).unwrap().u32(MsgKind::Request.code()).unwrap();
        e.u32(6)
            .unwrap()
            .array(2)
            .unwrap()
            .str("new")
            .unwrap()
            .bytes(&[1, 2])
            .unwrap();
        e.u32(42).unwrap().bool(true).unwrap();
        assert_eq!(peek_request_header(&future), Some((3, 5)));
    }

    #[test]
    fn responses_notifications_and_garbage_are_not_answered() {
        assert_eq!(peek_request_header(&bytes(9, MsgKind::Response)), None);
        assert_eq!(peek_request_header(&bytes(9, MsgKind::Notify)), None);
        assert_eq!(peek_request_header(&[0xff, 0x00]), None);
        assert_eq!(peek_request_header(&[]), None);
        // A map without a message id.
        let mut b = Vec::new();
        let mut e = minicbor::Encoder::new(&mut b);
        e.map(2).unwrap();
        e.u32(0).unwrap().u16(2).unwrap();
        e.u32(3).unwrap().u32(MsgKind::Request.code()).unwrap();
        assert_eq!(peek_request_header(&b), None);
    }
}
