//! Service and content delivery, 004 §5.5.8 (docs/services.md, "Delivery"). A delivery session
//! is set up by a secure call of its source (`cpns.delivery.offer`): the server checks who may
//! deliver to whom, draws the session's key, answers the source with it, tells each target
//! end to end (`cpns.delivery.offered`), and tells the PN GW that serves source and targets
//! what to relay (Delivery Route). The content then moves in chunks, each sealed under the
//! session's key (docs/security.md §4.12), from the source through its PN GW to the targets,
//! and cumulative acknowledgements flow back: they are the flow control (a source sends at most
//! a window past what every target has) and the resumption (after a dropped link a target says
//! again what it has). A target tells the server the end (`cpns.delivery.done`), which closes
//! the session's delivery record.

use minicbor::{Decode, Encode};

use crate::ids::{DeliveryId, EntityId, GroupId, PnId, UserId};
use crate::msg::common::{HashBytes, SignatureBytes, wire_enum};
use crate::msg::content::MemberCertificate;
use crate::msg::group::KeyBytes;

/// The secure call a source offers a delivery with: payload [`DeliveryOffer`], answered
/// [`DeliveryGrant`].
pub const DELIVERY_OFFER: &str = "cpns.delivery.offer";
/// The secure call a target ends its part with: payload [`DeliveryDone`], answered
/// [`DeliveryDone`] as recorded.
pub const DELIVERY_DONE: &str = "cpns.delivery.done";
/// The notice telling a target of a delivery for it: payload [`DeliveryInvite`].
pub const DELIVERY_OFFERED: &str = "cpns.delivery.offered";
/// The notice telling a source a target's end: payload [`DeliveryDone`].
pub const DELIVERY_ENDED: &str = "cpns.delivery.ended";
/// The secure call a consumer asks a member for content it holds with (pull): payload
/// [`DeliveryRequest`], answered the same once the member was asked.
pub const DELIVERY_REQUEST: &str = "cpns.delivery.request";
/// The notice telling a member a consumer asks it for content: payload [`DeliveryRequested`].
pub const DELIVERY_REQUESTED: &str = "cpns.delivery.requested";

/// The secure call a PNE sends a small payload in band to one PNE with: payload
/// [`DeliveryMessage`], answered the same once handed on.
pub const DELIVERY_MESSAGE: &str = "cpns.delivery.message";
/// The notice carrying a small payload to its PNE: payload [`DeliveryMessage`], `from` set.
pub const DELIVERY_MESSAGED: &str = "cpns.delivery.messaged";
/// The largest small payload carried in band.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Delivery Message: a small payload for one PNE, in band (004 §5.5.8; docs/services.md,
/// "Small payloads in band"): sealed under the sender's SK_PNE to the server, and under the
/// target's to it; no chunks, no session.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryMessage {
    /// The target (in the call); the sender (in the notice).
    #[n(0)]
    pub peer: EntityId,
    /// The service it is sent as.
    #[n(1)]
    pub service_id: String,
    /// Its media type.
    #[n(2)]
    pub media_type: String,
    /// The payload, at most [`MAX_MESSAGE`] bytes.
    #[n(3)]
    #[cbor(with = "minicbor::bytes")]
    pub payload: Vec<u8>,
    /// In the call: the target's PN when another than the call's (as forwarding reaches). In
    /// the notice: the sender's PN.
    #[n(4)]
    #[cbor(default)]
    pub pn_id: Option<PnId>,
    /// In the notice: the sender's user.
    #[n(5)]
    #[cbor(default)]
    pub owner: Option<UserId>,
}

/// Delivery Request: a consumer asks a member for content it declared it holds (004
/// §5.5.8.2, the pull mode); the member answers with a delivery to it (a push).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryRequest {
    /// The member asked: it holds the content.
    #[n(0)]
    pub source: EntityId,
    /// The content's name, as the member declared it (004 §5.5.10).
    #[n(1)]
    pub name: String,
    /// The service it is asked as (for the records and charging).
    #[n(2)]
    pub service_id: String,
    /// The member's PN when it is not the PN the request is made in (as forwarding reaches).
    #[n(3)]
    #[cbor(default)]
    pub to_pn: Option<PnId>,
}

/// Delivery Requested: the server's notice to the member asked, sealed to it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryRequested {
    /// Who asks: the target of the delivery that answers.
    #[n(0)]
    pub requester: EntityId,
    /// Its user.
    #[n(1)]
    pub owner: UserId,
    /// The content's name.
    #[n(2)]
    pub name: String,
    /// The service it is asked as.
    #[n(3)]
    pub service_id: String,
    /// The requester's PN: the delivery's `to_pn`.
    #[n(4)]
    pub pn_id: PnId,
}

/// Delivery Offer: what a source offers to push, and to whom.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryOffer {
    /// The source's service it is delivered as (its `service_id`, for the records and charging).
    #[n(0)]
    pub service_id: String,
    /// The targets: PNEs of a PN the source is a member of, or of `to_pn`, at most 16.
    #[n(1)]
    pub targets: Vec<EntityId>,
    /// The content's name, for people.
    #[n(2)]
    pub name: String,
    /// Its media type.
    #[n(3)]
    pub media_type: String,
    /// Its size in bytes.
    #[n(4)]
    pub size: u64,
    /// Its SHA-256, when the source read it before offering: then every item of `more` has
    /// one too, and the server hands them to each target in its invitation. Absent (none
    /// for any item): the source signs them once it has read every item and sends them with
    /// the last chunk ([`DeliveryChunk::digest`]; docs/security.md §4.12), so the content
    /// starts moving at once.
    #[n(5)]
    #[cbor(default)]
    pub sha256: Option<HashBytes>,
    /// The PN the targets are members of, when it is not the PN the offer is made in:
    /// forwarding between PNs, through the server (004 §5.5.8; docs/services.md, "Forwarding
    /// between PNs"). Absent: the offer's own PN.
    #[n(6)]
    #[cbor(default)]
    pub to_pn: Option<PnId>,
    /// Set up held: nothing moves until its source starts it (service control, `start`).
    #[n(7)]
    #[cbor(default)]
    pub held: bool,
    /// Invoked by device capability (004 §5.5.8.2): what the target must be able to do, as the
    /// `requires` of a service description (JSON, `cpns_service::Requirements`). The server
    /// picks **one** target, among `targets` or (none named) every other member of the PN,
    /// whose capabilities of record fit and whose status of record is online. Empty: none.
    #[n(8)]
    #[cbor(default, with = "minicbor::bytes")]
    pub requires: Vec<u8>,
    /// The AEAD the source seals the chunks in, as its suite code (docs/security.md §4.13):
    /// 1 ChaCha20-Poly1305, 2 AES-256-GCM; absent: ChaCha20-Poly1305. The PNE fills it in with
    /// the first of its own order.
    #[n(9)]
    #[cbor(default)]
    pub suite: Option<u8>,
    /// To a service group (004 §5.5.9, §5.5.8): every other member of the group the source is
    /// a member of, in whichever PN it is reachable now; one session for each such PN (docs/
    /// services.md, "To a service group"). With it, no `targets`, `to_pn` nor `requires`.
    #[n(10)]
    #[cbor(default)]
    pub group: Option<GroupId>,
    /// To a user (docs/services.md, "To a user"): every device of that user reachable from the
    /// source now: in the source's PN, and, when it is the source's own user, in whichever PN
    /// each is proven in; one session for each such PN. With it, no `targets`, `to_pn`,
    /// `requires` nor `group`.
    #[n(11)]
    #[cbor(default)]
    pub user: Option<UserId>,
    /// Several services in one session (004 §5.5.8.2, "Supporting single/multiple services";
    /// docs/services.md, "Several services in one session"): the items after the first (which
    /// `service_id`, `name`, `media_type`, `size` and `sha256` describe), each delivered as
    /// its own service, in this order, one after another in the session's content. Empty: one
    /// item.
    #[n(12)]
    #[cbor(default)]
    pub more: Vec<DeliveryItem>,
}

/// One more item of a delivery session ([`DeliveryOffer::more`], [`DeliveryInvite::more`]):
/// content delivered as a service of its own, with its own record and tariff.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryItem {
    /// The source's service it is delivered as.
    #[n(0)]
    pub service_id: String,
    /// Its name, for people.
    #[n(1)]
    pub name: String,
    /// Its media type.
    #[n(2)]
    pub media_type: String,
    /// Its size in bytes.
    #[n(3)]
    pub size: u64,
    /// Its SHA-256, which a target checks on its own; present exactly when the first item's
    /// is ([`DeliveryOffer::sha256`]).
    #[n(4)]
    #[cbor(default)]
    pub sha256: Option<HashBytes>,
}

/// A session's content size: the first item's `first` bytes, then each of `more`.
fn total_of(first: u64, more: &[DeliveryItem]) -> u64 {
    more.iter().fold(first, |t, i| t.saturating_add(i.size))
}

impl DeliveryOffer {
    /// The session's content size: every item's, one after another.
    pub fn total(&self) -> u64 {
        total_of(self.size, &self.more)
    }
}

/// The largest `requires` of an offer, in bytes.
pub const MAX_REQUIRES: usize = 4096;

/// Delivery Grant: the server's answer to an offer, inside the sealed answer to the source.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryGrant {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// Its key (docs/security.md §4.12).
    #[n(1)]
    pub key: KeyBytes,
    /// The PN whose PN GW relays it.
    #[n(2)]
    pub pn_id: PnId,
    /// The largest chunk's content, in bytes.
    #[n(3)]
    pub chunk: u32,
    /// How many bytes a source sends past what every target acknowledged.
    #[n(4)]
    pub window: u32,
    /// The session's content size, as offered: every item's, one after another.
    #[n(5)]
    pub size: u64,
    /// The targets, as offered.
    #[n(6)]
    pub targets: Vec<EntityId>,
    /// Set up held, as offered: nothing moves until the source starts it.
    #[n(7)]
    #[cbor(default)]
    pub held: bool,
    /// The chunks' suite, as offered.
    #[n(8)]
    #[cbor(default)]
    pub suite: Option<u8>,
    /// An offer to a service group whose members are in several PNs: the session of each
    /// other PN (this grant's own is the first), the source sending the content in each.
    #[n(9)]
    #[cbor(default)]
    pub also: Vec<DeliveryPart>,
    /// Offered without hashes: the targets were told none, and wait for the source's signed
    /// digest with the last chunk of each session ([`DeliveryChunk::digest`]).
    #[n(10)]
    #[cbor(default)]
    pub digest: bool,
}

/// One more session of a grant ([`DeliveryGrant::also`]): relayed, like the first, by the PN
/// GW of the grant's `pn_id`, with the grant's chunk, window, size, held and suite.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryPart {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// Its key (docs/security.md §4.12).
    #[n(1)]
    pub key: KeyBytes,
    /// Its targets.
    #[n(2)]
    pub targets: Vec<EntityId>,
}

/// Delivery Invite: a notice to a target, sealed to it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryInvite {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// The source.
    #[n(1)]
    pub source: EntityId,
    /// The source's user.
    #[n(2)]
    pub owner: UserId,
    /// The service it is delivered as.
    #[n(3)]
    pub service_id: String,
    /// The content's name.
    #[n(4)]
    pub name: String,
    /// Its media type.
    #[n(5)]
    pub media_type: String,
    /// Its size.
    #[n(6)]
    pub size: u64,
    /// Its SHA-256, as offered, which the target checks once it has every byte. Absent: the
    /// source's signed digest comes with the last chunk ([`DeliveryChunk::digest`]).
    #[n(7)]
    #[cbor(default)]
    pub sha256: Option<HashBytes>,
    /// The session's key.
    #[n(8)]
    pub key: KeyBytes,
    /// The PN whose PN GW relays it.
    #[n(9)]
    pub pn_id: PnId,
    /// The largest chunk's content.
    #[n(10)]
    pub chunk: u32,
    /// The part of the content for this target only (at most [`MAX_SPECIFIC`] bytes; empty:
    /// none), which the chunks of the common part do not carry (004 §5.5.8.2, "common and
    /// specific data"). It is sealed with the rest of the notice, to this target.
    #[n(11)]
    #[cbor(default, with = "minicbor::bytes")]
    pub specific: Vec<u8>,
    /// Set up held: nothing moves until its source starts it, and the target does not give up
    /// waiting meanwhile.
    #[n(12)]
    #[cbor(default)]
    pub held: bool,
    /// The suite the source seals the chunks in (docs/security.md §4.13; absent:
    /// ChaCha20-Poly1305).
    #[n(13)]
    #[cbor(default)]
    pub suite: Option<u8>,
    /// The items after the first, as offered ([`DeliveryOffer::more`]): the session's content
    /// is the first item's bytes (`size`) and then each of these, in order.
    #[n(14)]
    #[cbor(default)]
    pub more: Vec<DeliveryItem>,
}

impl DeliveryInvite {
    /// The session's content size: every item's, one after another.
    pub fn total(&self) -> u64 {
        total_of(self.size, &self.more)
    }
}

/// The largest part of a delivery for one target only.
pub const MAX_SPECIFIC: usize = 64 * 1024;

/// Delivery Route: the server tells the PN GW of a session it is to relay (on its own session;
/// nothing in it is secret).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryRoute {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// The PN it is delivered in.
    #[n(1)]
    pub pn_id: PnId,
    /// The source: the only sender of its chunks.
    #[n(2)]
    pub source: EntityId,
    /// The targets: the only senders of its acknowledgements, and whom chunks go to.
    #[n(3)]
    pub targets: Vec<EntityId>,
    /// The content's size: no chunk reaches past it.
    #[n(4)]
    pub size: u64,
    /// The largest chunk's content.
    #[n(5)]
    pub chunk: u32,
    /// The source is outside the PN, sending through the server (an external entity, 004
    /// §5.5.8.1): its chunks come on the PN GW's WAN session, once for every target, and what
    /// the targets have and their ends go back there.
    #[n(6)]
    #[cbor(default)]
    pub from_server: bool,
    /// The targets are members of this other PN, which this PN GW also serves (forwarding
    /// between two PNs of one PN GW): they acknowledge as members of it. Absent: `pn_id`.
    #[n(7)]
    #[cbor(default)]
    pub to_pn: Option<PnId>,
    /// The targets are behind another PN GW (forwarding between PNs through the server): the
    /// source's chunks go up the WAN session, once for every target, and what the targets have
    /// and their ends come back on it.
    #[n(8)]
    #[cbor(default)]
    pub to_server: bool,
}

/// Delivery Chunk: part of the content, sealed under the session's key; source to PN GW, PN GW
/// to each target.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryChunk {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// Its first byte's offset.
    #[n(1)]
    pub offset: u64,
    /// The content, sealed (docs/security.md §4.12).
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
    /// On the chunk that ends the content of a session offered without hashes: the source's
    /// signed digest of every item. Absent on every other chunk.
    #[n(3)]
    #[cbor(default)]
    pub digest: Option<Box<DeliveryDigest>>,
}

/// Delivery Digest: the SHA-256 of each item of a session, in order, signed by its source
/// with its member key (docs/security.md §4.11, §4.12), with the server's certificate of that
/// key. A target checks the certificate, that it names the session's source, and the
/// signature before it takes the hashes; a relay holds no member key and cannot forge one,
/// nor can another target, which holds the session's key but not the source's.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryDigest {
    /// Each item's SHA-256, in the session's order.
    #[n(0)]
    pub hashes: Vec<HashBytes>,
    /// The source's Ed25519 signature of them, with the session and its size.
    #[n(1)]
    pub signature: SignatureBytes,
    /// The source's certificate.
    #[n(2)]
    pub certificate: MemberCertificate,
}

/// Delivery Ack: how many bytes from the start a target has, stored; target to PN GW, and PN
/// GW to source as the least of every target's.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryAck {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// Bytes held from the start.
    #[n(1)]
    pub have: u64,
    /// The first acknowledgement of a target's link (an acceptance, or after a dropped link):
    /// the source sends again from `have`.
    #[n(2)]
    #[cbor(default)]
    pub resume: bool,
}

wire_enum!(
    /// How a target's part of a delivery ended.
    DeliveryResult {
        /// Every byte arrived and its SHA-256 is the one offered.
        Delivered = 1,
        /// The target declined it.
        Declined = 2,
        /// Every byte arrived, and its SHA-256 is not the one offered: nothing was kept.
        HashMismatch = 3,
        /// It stopped before the end (a store failure, the target or source gone).
        Failed = 4,
        /// Its source stopped it before the end (service control, `stop`): nothing was kept.
        Stopped = 5,
    }
);

wire_enum!(
    /// What service control asks of a delivery session (004 §5.5.8.2, "Service Control (e.g.
    /// start, stop)").
    ControlAction {
        /// Start a session set up held.
        Start = 1,
        /// End it for every target not ended: nothing more moves, nothing is kept.
        Stop = 2,
        /// Hold it where it is: nothing moves, no target gives up waiting.
        Pause = 3,
        /// Go on from where it was paused.
        Resume = 4,
    }
);

impl ControlAction {
    /// Its name in the control API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ControlAction::Start => "start",
            ControlAction::Stop => "stop",
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Unknown(_) => "unknown",
        }
    }
}

impl core::str::FromStr for ControlAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ControlAction::Start,
            ControlAction::Stop,
            ControlAction::Pause,
            ControlAction::Resume,
        ]
        .into_iter()
        .find(|a| a.name() == s)
        .ok_or_else(|| format!("`{s}` is not one of start, stop, pause, resume"))
    }
}

/// Delivery Control: the session's source controls it (service control); source to its PN GW,
/// which relays it to every target as it relays chunks (and, to targets behind another PN GW,
/// through the server). Each target tells its application (the session's notification) and
/// holds, goes on, or ends its part (`Stopped`).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryControl {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// What is asked.
    #[n(1)]
    pub action: ControlAction,
}

/// Delivery Done: a target's end of a session (secure call to the server), and the server's
/// word of it to the source (notice).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DeliveryDone {
    /// The session.
    #[n(0)]
    pub session: DeliveryId,
    /// The target.
    #[n(1)]
    pub target: EntityId,
    /// Bytes it received, from the session's start.
    #[n(2)]
    pub bytes: u64,
    /// How it ended: `Delivered` when every item was (a session of several items, docs/
    /// services.md, "Several services in one session").
    #[n(3)]
    pub result: DeliveryResult,
    /// A session of several items whose every byte arrived: how each item ended, in order
    /// (each is checked on its own). Empty: each ended as `result`.
    #[n(4)]
    #[cbor(default)]
    pub items: Vec<DeliveryResult>,
}
