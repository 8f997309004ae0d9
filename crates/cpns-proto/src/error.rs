//! Errors of the protocol machines: what a driver is told when it feeds something that cannot
//! be taken. Peer misbehaviour on a link is answered on the wire and reported here.

use cpns_crypto::CryptoError;
use cpns_wire::{ErrorBody, ErrorCode, WireError};

/// Why the driver's store could not carry out what a machine asked (a load or a persist). The
/// machine ends the flow that waited for it with an error; nothing else is disturbed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreFailure {
    /// The store takes no more work for now (its queue is full).
    #[error("the store is overloaded")]
    Overloaded,
    /// A record the effect needs does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The effect conflicts with what is stored.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored secret does not open (another key, or a tampered row).
    #[error("a stored secret does not open: {0}")]
    Sealed(String),
    /// The store failed (I/O, corruption, a lost connection).
    #[error("the store failed: {0}")]
    Failed(String),
}

/// Why a machine refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A frame could not be decoded; the link must be closed.
    #[error("bad frame: {0}")]
    Wire(#[from] WireError),
    /// The peer spoke another protocol version. A request was answered `unsupported_version`
    /// (its message id is given) and the session goes on; the driver need not close it.
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The version the peer used.
        version: u16,
        /// The request's message id, if the frame was a request that was answered.
        request: Option<u64>,
    },
    /// A plain frame arrived on a link whose frames must be sealed.
    #[error("plain frame on a sealed PAN link")]
    PlainOnSealedLink,
    /// A sealed frame arrived before PN GW authentication gave keys.
    #[error("sealed frame before PN GW authentication")]
    SealedBeforeKeys,
    /// A cryptographic check failed (tampered or replayed frame, wrong key, bad proof).
    #[error("security check failed: {0}")]
    Crypto(#[from] CryptoError),
    /// The peer broke the protocol badly enough that its session ends.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(String),
    /// The peer answered with an error.
    #[error("peer answered {0}")]
    Remote(ErrorBody),
    /// A command is not possible in the machine's current state.
    #[error("not possible now: {0}")]
    WrongState(&'static str),
    /// A token the machine does not know.
    #[error("unknown store token")]
    UnknownToken,
}

impl ProtoError {
    /// The wire error code that best describes this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::Wire(_) => ErrorCode::BadRequest,
            ProtoError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtoError::PlainOnSealedLink | ProtoError::SealedBeforeKeys => {
                ErrorCode::Unauthenticated
            }
            ProtoError::Crypto(_) => ErrorCode::Unauthenticated,
            ProtoError::PeerMisbehaved(_) => ErrorCode::BadRequest,
            ProtoError::Remote(e) => e.code,
            ProtoError::WrongState(_) => ErrorCode::WrongState,
            ProtoError::UnknownToken => ErrorCode::Internal,
        }
    }
}
