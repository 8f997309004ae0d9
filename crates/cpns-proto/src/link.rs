//! Framing of one session, and PAN link security: before PN GW authentication every frame is
//! plain; after it, every frame is AEAD-sealed with per-direction keys and sequence numbers, so
//! tampered, replayed and reordered frames are rejected (docs/design.md §4, docs/security.md).
//!
//! The switch is deterministic on both ends of an in-order stream (docs/security.md §4.4): the
//! PN GW seals everything it sends after its `PanAuthChallenge` and requires sealed frames after
//! the PNE's `PanAuthConfirm`; the PNE requires sealed frames after the challenge and seals
//! everything it sends after its confirmation. The sealer and opener come from
//! `cpns_crypto::PanKeys` with the associated data of their direction, PN, PNE and PN GW already
//! bound (docs/security.md §4.5), so this codec never chooses associated data itself.

use cpns_crypto::{FrameOpener, FrameSealer, SEAL_OVERHEAD};
use cpns_wire::codec::{self, FrameKind, LEN_PREFIX, split_frame};
use cpns_wire::{DEFAULT_MAX_FRAME, Envelope, decode_envelope};

use crate::ProtoError;

/// Whether a PAN link needs CPNS's own security (000 §6.6.1.1 step 1: "PAN ... does not provide
/// sufficient security mechanism").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanSecurity {
    /// The bearer protects the link (e.g. paired Bluetooth): frames stay plain.
    Trusted,
    /// The bearer does not: PN GW authentication with LocalEUKey, then sealed frames.
    Cpns,
}

impl PanSecurity {
    /// Parses `trusted` or `cpns`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "trusted" => Some(PanSecurity::Trusted),
            "cpns" => Some(PanSecurity::Cpns),
            _ => None,
        }
    }
}

/// Encodes and decodes the frames of one session, sealing them once keys are installed.
pub struct LinkCodec {
    tx: Option<FrameSealer>,
    rx: Option<FrameOpener>,
    max_frame: u32,
}

impl core::fmt::Debug for LinkCodec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LinkCodec")
            .field("tx_sealed", &self.tx.is_some())
            .field("rx_sealed", &self.rx.is_some())
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl Default for LinkCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl LinkCodec {
    /// A plain codec accepting frames up to `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        Self {
            tx: None,
            rx: None,
            max_frame,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Whether outgoing frames are sealed.
    pub fn tx_sealed(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether incoming frames must be sealed.
    pub fn rx_sealed(&self) -> bool {
        self.rx.is_some()
    }

    /// Whether frames are sealed both ways: what a PAN session authenticated in both
    /// directions looks like.
    pub fn fully_sealed(&self) -> bool {
        self.tx_sealed() && self.rx_sealed()
    }

    /// From now on, seal every outgoing frame.
    pub fn seal_tx(&mut self, sealer: FrameSealer) {
        self.tx = Some(sealer);
    }

    /// From now on, require every incoming frame to be sealed.
    pub fn seal_rx(&mut self, opener: FrameOpener) {
        self.rx = Some(opener);
    }

    /// Encodes `env` as one whole frame: length prefix, kind byte, payload.
    pub fn encode(&mut self, env: &Envelope) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::with_capacity(env.size_hint() + LEN_PREFIX + 1 + SEAL_OVERHEAD);
        match &mut self.tx {
            None => codec::encode_plain_frame(env, &mut out),
            Some(sealer) => {
                out.extend_from_slice(&[0; LEN_PREFIX]);
                out.push(FrameKind::Sealed as u8);
                // Encoded where it is sealed: a chunk's bytes are copied once here, not twice.
                sealer.seal_written(&mut out, |out| codec::encode_envelope(env, out))?;
                codec::patch_len(&mut out, 0);
            }
        }
        Ok(out)
    }

    /// Decodes one frame (without its length prefix). A sealed frame is opened where it lies
    /// (what `frame` holds afterwards is unspecified). A failed open leaves the codec unchanged.
    pub fn decode(&mut self, frame: &mut [u8]) -> Result<Envelope, ProtoError> {
        let kind = split_frame(frame)?.0;
        let payload = &mut frame[1..];
        match (kind, &mut self.rx) {
            (FrameKind::Plain, None) => decode_checked(payload),
            (FrameKind::Plain, Some(_)) => Err(ProtoError::PlainOnSealedLink),
            (FrameKind::Sealed, None) => Err(ProtoError::SealedBeforeKeys),
            (FrameKind::Sealed, Some(opener)) => decode_checked(opener.open_in_place(payload)?),
        }
    }
}

/// Decodes an envelope; a request of another protocol version becomes
/// [`ProtoError::UnsupportedVersion`] with what is needed to answer it.
fn decode_checked(payload: &[u8]) -> Result<Envelope, ProtoError> {
    decode_envelope(payload).map_err(|e| match e {
        cpns_wire::WireError::UnsupportedVersion(version) => ProtoError::UnsupportedVersion {
            version,
            request: cpns_wire::codec::peek_request_header(payload).map(|(_, id)| id),
        },
        other => ProtoError::Wire(other),
    })
}

/// For a frame [`LinkCodec::decode`] refused: the request to answer (its message id) and the
/// answer, when it was a request of another protocol version; `Err` with the refusal otherwise.
pub(crate) fn version_answer(e: ProtoError) -> Result<(u64, cpns_wire::ErrorBody), ProtoError> {
    match e {
        ProtoError::UnsupportedVersion {
            version,
            request: Some(msg_id),
        } => Ok((
            msg_id,
            cpns_wire::ErrorBody::new(
                cpns_wire::ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {version} is not supported; this peer speaks version {}",
                    cpns_wire::PROTOCOL_VERSION
                ),
            ),
        )),
        other => Err(other),
    }
}

/// Whether the body of a whole `frame` (length prefix included) is at most `max` bytes: what a
/// peer that announced `max` accepts.
pub(crate) fn body_fits(frame: &[u8], max: usize) -> bool {
    frame.len().saturating_sub(LEN_PREFIX) <= max
}

/// Strips the length prefix of a whole frame as produced by [`LinkCodec::encode`], checking it.
pub fn frame_body(frame: &[u8]) -> Option<&[u8]> {
    let prefix: [u8; LEN_PREFIX] = frame.get(..LEN_PREFIX)?.try_into().ok()?;
    let len = u32::from_be_bytes(prefix) as usize;
    let body = frame.get(LEN_PREFIX..)?;
    (body.len() == len).then_some(body)
}

/// [`frame_body`], for a frame a machine takes to open where it lies.
pub fn frame_body_mut(frame: &mut [u8]) -> Option<&mut [u8]> {
    let len = frame_body(frame)?.len();
    frame.get_mut(LEN_PREFIX..LEN_PREFIX + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_fits_up_to_the_limit_exactly() {
        let frame = [0u8; LEN_PREFIX + 10];
        assert!(body_fits(&frame, 10));
        assert!(body_fits(&frame, 11));
        assert!(!body_fits(&frame, 9));
        assert!(body_fits(&[], 0));
    }

    /// A whole frame's body, mutable, is exactly the bytes its prefix counts (the bytes a
    /// machine then opens where they lie); a frame whose prefix says otherwise has none.
    #[test]
    fn a_frame_body_is_the_bytes_its_prefix_counts() {
        let mut frame = vec![0, 0, 0, 3, 7, 8, 9];
        let body = frame_body_mut(&mut frame).expect("a whole frame");
        assert_eq!(body, &[7, 8, 9]);
        body[0] = 1;
        assert_eq!(frame, [0, 0, 0, 3, 1, 8, 9]);
        assert_eq!(frame_body_mut(&mut [0, 0, 0, 0]), Some(&mut [][..]));
        assert!(frame_body_mut(&mut [0, 0, 0, 4, 1, 2, 3]).is_none());
        assert!(frame_body_mut(&mut [0, 0, 0, 2, 1, 2, 3]).is_none());
        assert!(frame_body_mut(&mut [0, 0, 3]).is_none());
    }

    #[test]
    fn pan_security_parses_its_two_names_only() {
        assert_eq!(PanSecurity::parse("trusted"), Some(PanSecurity::Trusted));
        assert_eq!(PanSecurity::parse("cpns"), Some(PanSecurity::Cpns));
        assert_eq!(PanSecurity::parse("Trusted"), None);
        assert_eq!(PanSecurity::parse(""), None);
    }

    #[test]
    fn a_codec_knows_its_limit_and_says_whether_it_seals() {
        let codec = LinkCodec::new(777);
        assert_eq!(codec.max_frame(), 777);
        assert_eq!(LinkCodec::default().max_frame(), DEFAULT_MAX_FRAME);
        assert_eq!(
            format!("{codec:?}"),
            "LinkCodec { tx_sealed: false, rx_sealed: false, max_frame: 777 }"
        );
    }

    fn pan_keys() -> cpns_crypto::PanKeys {
        let local = cpns_crypto::LocalEuKey::from_bytes([7; 32]);
        let input = cpns_crypto::PanAuthInput {
            pn_id: &[1; 16],
            pne_id: "pne-1",
            gw_id: "gw-1",
            rand_pne: &cpns_crypto::Rand([2; 16]),
            rand_gw: &cpns_crypto::Rand([3; 16]),
            offered: &[2, 1],
            suite: cpns_crypto::Suite::Aes256Gcm,
        };
        cpns_crypto::PanKeys::derive(&local, &input)
    }

    #[test]
    fn a_codec_is_fully_sealed_only_once_both_directions_are() {
        let (sealer, opener) = pan_keys().into_pne_side();
        let mut tx_only = LinkCodec::default();
        tx_only.seal_tx(sealer);
        assert!(tx_only.tx_sealed() && !tx_only.rx_sealed());
        assert!(!tx_only.fully_sealed());

        let mut rx_only = LinkCodec::default();
        rx_only.seal_rx(opener);
        assert!(!rx_only.fully_sealed());

        let (sealer, opener) = pan_keys().into_pne_side();
        let mut both = LinkCodec::default();
        both.seal_rx(opener);
        both.seal_tx(sealer);
        assert!(both.fully_sealed());
        assert!(!LinkCodec::default().fully_sealed());
    }
}
