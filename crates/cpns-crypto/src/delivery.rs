//! Delivery sessions (004 §5.5.8; docs/security.md §4.12, docs/services.md, "Delivery"): the
//! server draws a [`DeliveryKey`] for each session and gives it, sealed end to end, to the
//! session's source and to each target. Content moves in chunks, each sealed under a key
//! derived from the session key and the session id, with a random nonce in front and
//! associated data naming the session, the part (the common part, or one target's specific
//! part), the chunk's offset and the part's total size: a PN GW or the server relaying it can
//! neither read it, alter it, nor pass it off at another offset, in another part or session.
//! The AEAD is the session's [`Suite`], picked by its source and named in its invitations; the
//! chunk key is that suite's own (docs/security.md §4.12, §4.13).

use zeroize::Zeroizing;

use crate::kdf::{Transcript, derive_key};
use crate::keys::{DeliveryKey, KEY_LEN, MasterKey};
use crate::suite::{BulkKey, Suite};
use crate::{CryptoError, aead, labels};

/// What a chunk belongs to: its associated data.
#[derive(Clone, Copy, Debug)]
pub struct ChunkBinding<'a> {
    /// The session, 16 bytes.
    pub session: &'a [u8; 16],
    /// The part: empty for the common part, else the PNE whose specific part it is.
    pub part: &'a str,
    /// The chunk's first byte's offset in its part.
    pub offset: u64,
    /// The part's whole size, in bytes.
    pub total: u64,
}

/// Which end of a delivery session a device keeps its key as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptAs {
    /// It sends the session.
    Source,
    /// It receives it.
    Target,
}

impl KeptAs {
    fn name(self) -> &'static [u8] {
        match self {
            KeptAs::Source => b"source",
            KeptAs::Target => b"target",
        }
    }
}

/// `T("cpns/v1/at-rest/delivery-key") ‖ T(session ID) ‖ T("source" | "target")`: the AAD of a
/// delivery session's key kept at rest.
pub(crate) fn key_at_rest_aad(session: &[u8; 16], kept_as: KeptAs) -> Vec<u8> {
    let mut t = Transcript::new(labels::AT_REST_DELIVERY_KEY_AAD);
    t.push(session).push(kept_as.name());
    t.as_bytes().to_vec()
}

/// Seals delivery session `session`'s key at rest in a device's own store, under its storage
/// key, as its source or a target keeps it (so that the device, restarted midway, goes on;
/// docs/security.md §4.9, §4.12).
///
/// # Errors
/// [`CryptoError::Rng`] when the OS generator is unavailable for the nonce.
pub fn seal_delivery_key_at_rest(
    storage: &MasterKey,
    session: &[u8; 16],
    kept_as: KeptAs,
    key: &DeliveryKey,
) -> Result<Vec<u8>, CryptoError> {
    crate::seal_at_rest(
        storage,
        &key_at_rest_aad(session, kept_as),
        key.expose_secret(),
    )
}

/// [`seal_delivery_key_at_rest`] with a caller-chosen nonce; deterministic, for test vectors
/// only.
pub fn seal_delivery_key_at_rest_with_nonce(
    storage: &MasterKey,
    session: &[u8; 16],
    kept_as: KeptAs,
    key: &DeliveryKey,
    nonce: [u8; aead::NONCE_LEN],
) -> Vec<u8> {
    crate::seal_at_rest_with_nonce(
        storage,
        &key_at_rest_aad(session, kept_as),
        key.expose_secret(),
        nonce,
    )
}

/// Opens a delivery session's key kept at rest.
///
/// # Errors
/// [`CryptoError::BadTag`] under another storage key, for another session, kept as the other
/// end, or tampered; [`CryptoError::Malformed`] when what opened is not a key.
pub fn open_delivery_key_at_rest(
    storage: &MasterKey,
    session: &[u8; 16],
    kept_as: KeptAs,
    sealed: &[u8],
) -> Result<DeliveryKey, CryptoError> {
    let plain = crate::open_at_rest(storage, &key_at_rest_aad(session, kept_as), sealed)?;
    let bytes: [u8; KEY_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Malformed("a delivery key is 32 bytes"))?;
    Ok(DeliveryKey::from_bytes(bytes))
}

/// The bytes a sealed chunk adds to its content: nonce and tag.
pub const CHUNK_OVERHEAD: usize = aead::BOX_OVERHEAD;

/// Content to seal as a chunk, in a buffer that keeps room for the nonce in front of it and the
/// tag behind it ([`ChunkSealer::seal_owned`]), so that sealing moves none of it: a driver reads
/// a chunk straight into [`ChunkPlain::content_mut`].
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkPlain {
    /// Room for the nonce, then the content.
    buf: Vec<u8>,
}

impl ChunkPlain {
    /// `len` bytes of content, zeroed, to be read into; nothing is reallocated to seal them.
    pub fn zeroed(len: usize) -> Self {
        let mut buf = Vec::with_capacity(len + CHUNK_OVERHEAD);
        buf.resize(aead::NONCE_LEN + len, 0);
        Self { buf }
    }

    /// A copy of `content`.
    pub fn copy_of(content: &[u8]) -> Self {
        let mut p = Self::zeroed(content.len());
        p.content_mut().copy_from_slice(content);
        p
    }

    /// The content.
    pub fn content(&self) -> &[u8] {
        &self.buf[aead::NONCE_LEN..]
    }

    /// The content, to read into.
    pub fn content_mut(&mut self) -> &mut [u8] {
        &mut self.buf[aead::NONCE_LEN..]
    }
}

impl core::fmt::Debug for ChunkPlain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ChunkPlain({} bytes)", self.content().len())
    }
}

/// A chunk opened in the buffer it came in ([`ChunkSealer::open_owned`]): the content lies
/// behind the nonce, where it was opened, so that opening moves none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedChunk {
    /// The nonce, then the content.
    buf: Vec<u8>,
}

impl OpenedChunk {
    /// The content.
    pub fn content(&self) -> &[u8] {
        &self.buf[aead::NONCE_LEN..]
    }

    /// The buffer and where the content lies in it: to hand the content on without copying it.
    pub fn into_parts(self) -> (Vec<u8>, core::ops::Range<usize>) {
        let range = aead::NONCE_LEN..self.buf.len();
        (self.buf, range)
    }
}

impl core::fmt::Debug for OpenedChunk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "OpenedChunk({} bytes)", self.content().len())
    }
}

/// Seals and opens the chunks of one session's part: its chunk key derived once.
pub struct ChunkSealer {
    key: BulkKey,
}

impl core::fmt::Debug for ChunkSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ChunkSealer(<redacted>)")
    }
}

/// `T("cpns/v1/delivery-chunk-key") ‖ T(session) ‖ T(suite)`: the chunk key's HKDF info.
fn key_info(session: &[u8; 16], suite: Suite) -> Transcript {
    let mut t = Transcript::new(labels::DELIVERY_CHUNK_KEY);
    t.push(session).push(&[suite.code()]);
    t
}

/// The associated data of a chunk.
pub(crate) fn chunk_aad(b: &ChunkBinding<'_>) -> Vec<u8> {
    let mut t = Transcript::new(labels::DELIVERY_CHUNK_AAD);
    t.push(b.session)
        .push(b.part.as_bytes())
        .push(&b.offset.to_be_bytes())
        .push(&b.total.to_be_bytes());
    t.as_bytes().to_vec()
}

impl ChunkSealer {
    /// The sealer of session `session`'s chunks under `key`, in `suite`.
    pub fn new(key: &DeliveryKey, session: &[u8; 16], suite: Suite) -> Self {
        let chunk_key: Zeroizing<[u8; 32]> =
            derive_key(key.expose_secret(), &key_info(session, suite));
        Self {
            key: BulkKey::new(suite, &chunk_key),
        }
    }

    /// The suite the chunks are sealed in.
    pub fn suite(&self) -> Suite {
        self.key.suite()
    }

    /// Seals one chunk under a fresh random nonce.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] when the OS generator is unavailable for the nonce.
    pub fn seal<R: crate::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        b: &ChunkBinding<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.seal_with_nonce(b, plaintext, nonce)
    }

    /// [`ChunkSealer::seal`] with a caller-chosen nonce; deterministic, for test vectors.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] on a chunk past the AEAD's limit.
    pub fn seal_with_nonce(
        &self,
        b: &ChunkBinding<'_>,
        plaintext: &[u8],
        nonce: [u8; 12],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(CHUNK_OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place(nonce, &chunk_aad(b), &mut out[aead::NONCE_LEN..])?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// [`ChunkSealer::seal`] in `plain`'s own buffer: the nonce goes in the room in front, the
    /// tag behind; nothing is moved, copied or (from [`ChunkPlain::zeroed`]) reallocated.
    ///
    /// # Errors
    /// As [`ChunkSealer::seal`].
    pub fn seal_owned<R: crate::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        b: &ChunkBinding<'_>,
        plain: ChunkPlain,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut buf = plain.buf;
        buf[..aead::NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .key
            .seal_in_place(nonce, &chunk_aad(b), &mut buf[aead::NONCE_LEN..])?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    /// [`ChunkSealer::open`] in `sealed`'s own buffer, where the content stays, behind the
    /// nonce: nothing is moved or copied. Content is not key material: it goes to a file in
    /// the clear, so the buffer is not wiped.
    ///
    /// # Errors
    /// As [`ChunkSealer::open`].
    pub fn open_owned(
        &self,
        b: &ChunkBinding<'_>,
        mut sealed: Vec<u8>,
    ) -> Result<OpenedChunk, CryptoError> {
        if sealed.len() < CHUNK_OVERHEAD {
            return Err(CryptoError::Malformed(
                "a sealed chunk shorter than nonce and tag (28 bytes)",
            ));
        }
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce.copy_from_slice(&sealed[..aead::NONCE_LEN]);
        let len = self
            .key
            .open_in_place(nonce, &chunk_aad(b), &mut sealed[aead::NONCE_LEN..])?;
        sealed.truncate(aead::NONCE_LEN + len);
        Ok(OpenedChunk { buf: sealed })
    }

    /// Opens one chunk.
    ///
    /// # Errors
    /// [`CryptoError::BadTag`] under another key or session, for another part, offset or total,
    /// or tampered; [`CryptoError::Malformed`] when too short.
    pub fn open(
        &self,
        b: &ChunkBinding<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < CHUNK_OVERHEAD {
            return Err(CryptoError::Malformed(
                "a sealed chunk shorter than nonce and tag (28 bytes)",
            ));
        }
        let (nonce, rest) = sealed.split_at(aead::NONCE_LEN);
        let mut n = [0u8; aead::NONCE_LEN];
        n.copy_from_slice(nonce);
        let mut buf = Zeroizing::new(rest.to_vec());
        let len = self.key.open_in_place(n, &chunk_aad(b), &mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A chunk opens only as itself: under its session's key and id, in its part, at its offset
    /// of its total, every byte as sealed.
    #[test]
    fn a_chunk_opens_only_where_it_was_sealed() {
        let key = DeliveryKey::from_bytes([1; 32]);
        let session = [2; 16];
        let b = ChunkBinding {
            session: &session,
            part: "",
            offset: 65_536,
            total: 1 << 20,
        };
        let sealer = ChunkSealer::new(&key, &session, Suite::Aes256Gcm);
        let sealed = sealer
            .seal_with_nonce(&b, b"frame of video", [3; 12])
            .unwrap();
        assert_eq!(sealed.len(), 14 + CHUNK_OVERHEAD);
        assert_eq!(&sealer.open(&b, &sealed).unwrap()[..], b"frame of video");
        let other_key = ChunkSealer::new(
            &DeliveryKey::from_bytes([9; 32]),
            &session,
            Suite::Aes256Gcm,
        );
        assert!(other_key.open(&b, &sealed).is_err());
        // Under the other suite the key is another: nothing opens.
        let other_suite = ChunkSealer::new(&key, &session, Suite::ChaCha20Poly1305);
        assert_eq!(other_suite.open(&b, &sealed), Err(CryptoError::BadTag));
        assert_eq!(other_suite.suite(), Suite::ChaCha20Poly1305);
        let other_session = [4; 16];
        let moved = ChunkSealer::new(&key, &other_session, Suite::Aes256Gcm);
        let b2 = ChunkBinding {
            session: &other_session,
            ..b
        };
        assert!(moved.open(&b2, &sealed).is_err());
        for wrong in [
            ChunkBinding { part: "tv", ..b },
            ChunkBinding { offset: 0, ..b },
            ChunkBinding {
                total: 1 << 21,
                ..b
            },
        ] {
            assert!(sealer.open(&wrong, &sealed).is_err(), "{wrong:?}");
        }
        // The same session's chunks in another session's binding, keyed rightly, do not open.
        let b3 = ChunkBinding {
            session: &other_session,
            ..b
        };
        assert!(sealer.open(&b3, &sealed).is_err());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(sealer.open(&b, &t).is_err(), "byte {i}");
        }
        assert!(matches!(
            sealer.open(&b, &sealed[..27]),
            Err(CryptoError::Malformed(_))
        ));
        assert!(format!("{sealer:?}").contains("redacted"));
        // In its own buffer, the same: sealed as `seal` seals, opened only where it was.
        let mut rng = crate::MachineRng::from_seed_u64(3);
        let plain = ChunkPlain::copy_of(b"frame of video");
        assert_eq!(format!("{plain:?}"), "ChunkPlain(14 bytes)");
        let at = plain.content().as_ptr();
        let owned = sealer.seal_owned(rng.get(), &b, plain).unwrap();
        assert_eq!(owned[12..].as_ptr(), at, "sealed where it lay, not moved");
        assert_eq!(owned.len(), 14 + CHUNK_OVERHEAD);
        let nonce: [u8; 12] = owned[..12].try_into().unwrap();
        assert_eq!(
            owned,
            sealer
                .seal_with_nonce(&b, b"frame of video", nonce)
                .unwrap()
        );
        let opened = sealer.open_owned(&b, owned.clone()).unwrap();
        assert_eq!(opened.content(), b"frame of video");
        assert_eq!(format!("{opened:?}"), "OpenedChunk(14 bytes)");
        // Opened where it lay, behind its nonce: handed on as it is.
        let (buf, range) = opened.into_parts();
        assert_eq!(range, 12..26);
        assert_eq!(&buf[range], b"frame of video");
        assert_eq!(
            sealer.open_owned(&b, sealed.clone()).unwrap().content(),
            b"frame of video"
        );
        let wrong = ChunkBinding { offset: 0, ..b };
        assert_eq!(
            sealer.open_owned(&wrong, owned.clone()),
            Err(CryptoError::BadTag)
        );
        let mut t = owned.clone();
        t[20] ^= 4;
        assert_eq!(sealer.open_owned(&b, t), Err(CryptoError::BadTag));
        assert!(matches!(
            sealer.open_owned(&b, owned[..27].to_vec()),
            Err(CryptoError::Malformed(_))
        ));
        // Shorter than a nonce: refused, not read past its end; nonce and tag alone (no
        // content) open to nothing.
        for short in [&owned[..5], &[][..]] {
            assert!(matches!(
                sealer.open(&b, short),
                Err(CryptoError::Malformed(_))
            ));
            assert!(matches!(
                sealer.open_owned(&b, short.to_vec()),
                Err(CryptoError::Malformed(_))
            ));
        }
        let empty = sealer.seal_with_nonce(&b, b"", [7; 12]).unwrap();
        assert_eq!(empty.len(), CHUNK_OVERHEAD);
        assert!(sealer.open(&b, &empty).unwrap().is_empty());
        assert!(sealer.open_owned(&b, empty).unwrap().content().is_empty());
    }

    /// A delivery key kept at rest opens only as itself: under its storage key, for its
    /// session, kept as the same end, every byte as sealed.
    #[test]
    fn a_delivery_key_at_rest_opens_only_as_itself() {
        let storage = MasterKey::from_bytes([0x51; 32]);
        let key = DeliveryKey::from_bytes([0x52; 32]);
        let session = [0x53; 16];
        let sealed = seal_delivery_key_at_rest(&storage, &session, KeptAs::Target, &key).unwrap();
        let opened = open_delivery_key_at_rest(&storage, &session, KeptAs::Target, &sealed);
        assert_eq!(opened.unwrap().expose_secret(), key.expose_secret());
        let other = MasterKey::from_bytes([0x54; 32]);
        for wrong in [
            open_delivery_key_at_rest(&other, &session, KeptAs::Target, &sealed),
            open_delivery_key_at_rest(&storage, &[0; 16], KeptAs::Target, &sealed),
            open_delivery_key_at_rest(&storage, &session, KeptAs::Source, &sealed),
        ] {
            assert_eq!(wrong.err(), Some(CryptoError::BadTag));
        }
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(
                open_delivery_key_at_rest(&storage, &session, KeptAs::Target, &t).is_err(),
                "byte {i}"
            );
        }
        // Two seals of one key differ (a fresh nonce each).
        let again = seal_delivery_key_at_rest(&storage, &session, KeptAs::Target, &key).unwrap();
        assert_ne!(again, sealed);
    }
}
