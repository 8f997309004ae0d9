//! The CPNS wire: identifiers, every message, the envelope and the frame codec (docs/design.md §3).
//!
//! No tokio, no I/O: this crate turns typed messages into length-prefixed CBOR frames and back.
//! Messages are CBOR maps with stable integer keys, so fields can be renamed in Rust without
//! breaking the wire and unknown fields are skipped; docs/wire.cddl describes every message.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod codec;
pub mod envelope;
pub mod ids;
pub mod msg;

pub use codec::{DEFAULT_MAX_FRAME, FrameKind, WireError, decode_envelope, encode_plain_frame};
pub use envelope::{Address, Envelope, MsgKind, PROTOCOL_VERSION};
pub use ids::*;
pub use msg::*;
