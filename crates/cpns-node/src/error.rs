//! Errors of the runtimes: one enum callers can match on, and the mapping of store errors into
//! the [`StoreFailure`] a protocol machine is told about.

use cpns_proto::{ProtoError, StoreFailure};
use cpns_store::StoreError;
use cpns_wire::ErrorBody;

use crate::frames::FrameError;
use crate::pki::PkiError;

/// Why a runtime could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The local store or the server store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A secret kept in a store does not open (another key, or a tampered row).
    #[error("{what} does not open: {reason}")]
    Sealed {
        /// What it was.
        what: String,
        /// Why.
        reason: String,
    },
    /// Connecting to a peer failed.
    #[error("connect {addr}: {source}")]
    Connect {
        /// The peer's address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS session could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// Certificates or keys could not be read or made.
    #[error("{0}")]
    Pki(#[from] PkiError),
    /// A connection failed or the peer broke the framing.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// A protocol machine refused an input or a command.
    #[error("{0}")]
    Proto(#[from] ProtoError),
    /// The machine ended the session, for this reason.
    #[error("{0}")]
    Ended(String),
    /// The CPNS Server refused this PN GW's credential: retrying will not help.
    #[error("the CPNS Server refused this PN GW: {0}")]
    Refused(ErrorBody),
    /// A command was carried out as far as it could go and refused, for this reason (a PN
    /// release the server refused, an unknown PN): nothing changed.
    #[error("{0}")]
    Rejected(ErrorBody),
    /// The peer closed the connection.
    #[error("{0} closed the connection")]
    Closed(&'static str),
    /// The runtime has stopped; the command was not carried out.
    #[error("the {0} has stopped")]
    Stopped(&'static str),
}

/// How a machine is told that its store work failed: the one place a [`StoreError`] becomes a
/// [`StoreFailure`] (a missing record, a conflict and an overloaded store keep their kind;
/// anything else — a corrupt column, a failed database — is a failure, with its message).
pub fn store_failure(e: &StoreError) -> StoreFailure {
    match e {
        StoreError::Conflict { what } => StoreFailure::Conflict(what.clone()),
        StoreError::NotFound { what } => StoreFailure::NotFound(what.clone()),
        StoreError::Overloaded => StoreFailure::Overloaded,
        other => StoreFailure::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_their_kind_for_the_machine() {
        assert_eq!(
            store_failure(&StoreError::conflict("pn")),
            StoreFailure::Conflict("pn".into())
        );
        assert_eq!(
            store_failure(&StoreError::not_found("pn")),
            StoreFailure::NotFound("pn".into())
        );
        assert_eq!(
            store_failure(&StoreError::Overloaded),
            StoreFailure::Overloaded
        );
        assert_eq!(
            store_failure(&StoreError::corrupt("pns.state", "row 3")),
            StoreFailure::Failed("corrupt pns.state: row 3".into())
        );
    }
}
