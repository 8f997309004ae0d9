//! The sending end of a delivery session (004 §5.5.8; docs/services.md, "Delivery"), shared by
//! a PNE that pushes content ([`crate::pne`]) and the server sending for an external entity
//! ([`crate::server`]): which chunk to read next, sealing it, the window of what may be in
//! flight past what every target acknowledged, going back on a resume, and which targets ended.
//! It does no I/O: its owner asks its driver for each read and sends each sealed chunk.
//!
//! A session offered without hashes sends its source's signed digest with the last chunk
//! (docs/security.md §4.12): that chunk is not read before the digest is given
//! ([`Source::set_digest`]), so the content moves while its owner's driver hashes it.

use cpns_crypto::{ChunkBinding, ChunkPlain, ChunkSealer, CryptoRng, DeliveryKey};
use cpns_wire::{
    ControlAction, DeliveryChunk, DeliveryDigest, DeliveryId, DeliveryResult, EntityId,
};

/// The sending end of one session.
#[derive(Debug)]
pub(crate) struct Source {
    session: DeliveryId,
    sealer: ChunkSealer,
    size: u64,
    chunk: u64,
    window: u64,
    /// The next offset to read and send.
    next: u64,
    /// What every target has, once each acknowledged.
    acked: Option<u64>,
    /// A read asked of the driver and not answered yet: its offset.
    reading: Option<u64>,
    /// The targets whose part has not ended.
    open: Vec<EntityId>,
    /// The targets that have it, hash checked.
    delivered: Vec<EntityId>,
    /// Where service control left it.
    control: Control,
    /// The digest the last chunk carries, for a session offered without hashes.
    digest: Digest,
}

/// The digest of a session's content, as its last chunk carries it.
#[derive(Debug)]
enum Digest {
    /// Its hashes went with the offer: the last chunk carries none.
    Offered,
    /// Offered without hashes: the last chunk waits for the source's signed digest.
    Awaited,
    /// The source's signed digest, sent with the last chunk (each time it is sent).
    Signed(Box<DeliveryDigest>),
}

/// Where service control left a session's sending end (004 §5.5.8.2, "Service Control").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Set up held: nothing goes until it is started.
    Held,
    /// Sending as the window allows.
    Moving,
    /// Paused: nothing goes until it resumes.
    Paused,
    /// Stopped: nothing more goes; the targets end their parts.
    Stopped,
}

/// What a read the driver answered comes to.
#[derive(Debug)]
pub(crate) enum Read {
    /// Not the read asked for (an old link's, or one already answered): nothing.
    Stale,
    /// The session cannot go on: the reason. The owner ends it.
    Failed(String),
    /// The chunk, sealed; `None` when a resume moved the next offset meanwhile (it is read
    /// again later).
    Sealed(Option<DeliveryChunk>),
}

impl Source {
    /// The sending end of `session` under `key`: `size` bytes in chunks of at most `chunk`,
    /// at most `window` past what every target has, to `targets`, sealed in `suite`.
    pub(crate) fn new(
        session: DeliveryId,
        key: &DeliveryKey,
        size: u64,
        chunk: u32,
        window: u32,
        targets: Vec<EntityId>,
        suite: cpns_crypto::Suite,
    ) -> Self {
        Self {
            session,
            sealer: ChunkSealer::new(key, session.as_bytes(), suite),
            size,
            chunk: u64::from(chunk.max(1)),
            window: u64::from(window.max(chunk).max(1)),
            next: 0,
            acked: None,
            reading: None,
            open: targets,
            delivered: Vec::new(),
            control: Control::Moving,
            digest: Digest::Offered,
        }
    }

    /// The same, offered without hashes: its last chunk is not read before
    /// [`Source::set_digest`] gives the digest it carries.
    pub(crate) fn awaiting_digest(mut self) -> Self {
        self.digest = Digest::Awaited;
        self
    }

    /// Whether it waits for its digest.
    pub(crate) fn awaits_digest(&self) -> bool {
        matches!(self.digest, Digest::Awaited)
    }

    /// The source's signed digest, for the last chunk; ignored for a session that does not
    /// wait for one.
    pub(crate) fn set_digest(&mut self, digest: Box<DeliveryDigest>) {
        if self.awaits_digest() {
            self.digest = Digest::Signed(digest);
        }
    }

    /// The session's id and content size: what its digest is signed over.
    pub(crate) fn signed_over(&self) -> (DeliveryId, u64) {
        (self.session, self.size)
    }

    /// The same, set up held: nothing goes until [`ControlAction::Start`].
    pub(crate) fn held(mut self) -> Self {
        self.control = Control::Held;
        self
    }

    /// Service control: `action` taken, or why not in the state it is in (start only a held
    /// session, pause only a moving one, resume only a paused one, nothing once stopped).
    pub(crate) fn control(&mut self, action: ControlAction) -> Result<(), String> {
        let next = match (self.control, action) {
            (Control::Held, ControlAction::Start) | (Control::Paused, ControlAction::Resume) => {
                Control::Moving
            }
            (Control::Moving, ControlAction::Pause) => Control::Paused,
            (Control::Held | Control::Moving | Control::Paused, ControlAction::Stop) => {
                Control::Stopped
            }
            (state, action) => {
                return Err(format!(
                    "a session {} cannot {}",
                    state.name(),
                    action.name()
                ));
            }
        };
        self.control = next;
        Ok(())
    }

    /// The read to ask of the driver next, if the window has room and none is being read:
    /// its offset and length. Nothing goes before every target said what it has.
    pub(crate) fn next_read(&mut self) -> Option<(u64, u64)> {
        if self.control != Control::Moving {
            return None;
        }
        let acked = self.acked?;
        if self.reading.is_some() || self.next >= self.size || self.next >= acked + self.window {
            return None;
        }
        let len = self.chunk.min(self.size - self.next);
        if self.next + len == self.size && self.awaits_digest() {
            return None;
        }
        self.reading = Some(self.next);
        Some((self.next, len))
    }

    /// The driver read `read` at `offset`: exactly what was asked, sealed, or why the session
    /// cannot go on (the file changed, or could not be read).
    pub(crate) fn read<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        offset: u64,
        read: Result<ChunkPlain, String>,
    ) -> Read {
        if self.reading != Some(offset) {
            return Read::Stale;
        }
        self.reading = None;
        // Exactly what was asked: the file is as long as offered (a read asks for no more).
        let asked = self.chunk.min(self.size.saturating_sub(offset));
        let bytes = match read {
            Ok(b) if b.content().len() as u64 == asked => b,
            Ok(b) => {
                return Read::Failed(format!(
                    "the content is not as offered: {} bytes read at {offset} where {asked} were \
                     asked (the file changed?)",
                    b.content().len()
                ));
            }
            Err(why) => return Read::Failed(why),
        };
        // Only the next in line goes: a resume may have moved `next` back meanwhile.
        if offset != self.next {
            return Read::Sealed(None);
        }
        let b = ChunkBinding {
            session: self.session.as_bytes(),
            part: "",
            offset,
            total: self.size,
        };
        match self.sealer.seal_owned(rng, &b, bytes) {
            Ok(sealed) => Read::Sealed(Some(DeliveryChunk {
                session: self.session,
                offset,
                sealed,
                digest: match &self.digest {
                    Digest::Signed(d) if offset + asked == self.size => Some(d.clone()),
                    _ => None,
                },
            })),
            Err(_) => Read::Failed("a chunk could not be sealed".into()),
        }
    }

    /// The chunk `c` (from [`Source::read`]) went: the next read is past it.
    pub(crate) fn sent(&mut self, c: &DeliveryChunk, len: u64) {
        if c.offset == self.next {
            self.next = c.offset + len;
        }
    }

    /// An acknowledgement of what every target has; one past the content is ignored. With
    /// `resume`, a target starts again from `have`: so does the source.
    pub(crate) fn acknowledged(&mut self, have: u64, resume: bool) {
        if have > self.size {
            return;
        }
        self.acked = Some(self.acked.map_or(have, |a| a.max(have)));
        if resume {
            self.acked = Some(have);
            self.next = have;
        }
    }

    /// Its link is back: what was in flight on the old one may be lost, so it goes on from
    /// what every target was last known to have (a target that has more says so, and takes
    /// only what it lacks), and a read the old link's driver was answering is forgotten.
    pub(crate) fn rewind(&mut self) {
        if let Some(acked) = self.acked {
            self.next = acked;
        }
        self.reading = None;
    }

    /// Target `target`'s part ended with `result`: `None` if it is not one whose part is open,
    /// else whether every target's part has ended.
    pub(crate) fn ended(&mut self, target: &EntityId, result: DeliveryResult) -> Option<bool> {
        let i = self.open.iter().position(|t| t == target)?;
        let t = self.open.swap_remove(i);
        if result == DeliveryResult::Delivered {
            self.delivered.push(t);
        }
        Some(self.open.is_empty())
    }

    /// Whether every target acknowledged something (the content was moving).
    pub(crate) fn moving(&self) -> bool {
        self.acked.is_some()
    }

    /// Whether it waits on its targets to go on: moving (every target acknowledged), neither
    /// held, paused nor stopped, and not every byte acknowledged yet (once every byte is, the
    /// targets check their hashes, which takes as long as their content is large).
    pub(crate) fn awaits_targets(&self) -> bool {
        self.control == Control::Moving && self.acked.is_some_and(|a| a < self.size)
    }

    /// The targets whose part has not ended.
    pub(crate) fn open_targets(&self) -> &[EntityId] {
        &self.open
    }

    /// The targets that have it, hash checked.
    pub(crate) fn delivered(self) -> Vec<EntityId> {
        self.delivered
    }

    /// `plain` sealed as the chunk at `offset`: what a source that breaks the rules could send
    /// (tests of the targets' checks).
    #[cfg(test)]
    pub(crate) fn seal_any<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        offset: u64,
        plain: &[u8],
    ) -> Option<Vec<u8>> {
        let b = ChunkBinding {
            session: self.session.as_bytes(),
            part: "",
            offset,
            total: self.size,
        };
        self.sealer.seal(rng, &b, plain).ok()
    }
}

impl Control {
    /// How a person reads it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Control::Held => "held",
            Control::Moving => "moving",
            Control::Paused => "paused",
            Control::Stopped => "stopped",
        }
    }
}
