//! Why a flow ended without success, as values drivers and tests match on ([`Flow`],
//! [`Failure`]); their `Display` is the sentence a person reads (events, error answers).

use core::fmt;

use cpns_wire::ErrorBody;

use crate::StoreFailure;

/// A flow of a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Flow {
    /// A PN GW's connection set-up with the server (002 §B.1.1.2 steps 8-11).
    ConnectionSetup,
    /// CPNS entity discovery (000 §6.4).
    EntityDiscovery,
    /// PN GW authentication with LocalEUKey on an insecure PAN.
    PanAuthentication,
    /// PN establishment (000 §6.6.1).
    PnEstablishment,
    /// A registered PN waiting for its PN GW's confirmation (docs/ARCHITECTURE.md decision 8).
    PnRegistration,
    /// PNE registration (003 §1.4).
    PneRegistration,
    /// A call on the secure PNE<->server session (003 §1.4.1 step 4).
    SecureCall,
    /// The PN GW's status report (002 §B.1.1.2 steps 14-16).
    StatusUpdate,
    /// Bringing the inventory in line with the PN GW's PN list (002 §B.1.1.2 step 17).
    InventoryReconciliation,
    /// Keeping an answer for retries (docs/design.md §3).
    KeepingAnswer,
    /// PN release (000 §6.6.5, §6.6.5.1).
    PnRelease,
    /// A member leaving or being expelled (000 §6.6.3), and the group key epoch it moves to.
    MembershipChange,
    /// A read of a PN's inventory (004 §5.5.10).
    InventoryQuery,
    /// A member's request for its copy of its PN's group key (002 §B.1.1.3 steps 22-23).
    GroupKey,
    /// A capabilities or status report, query or subscription (004 §5.5.1, §5.5.3).
    StatusManagement,
    /// A PNE's connection set-up in its PNs after a (re)connection: proof, key pulls,
    /// confirmations, a capabilities report (002 §B.1.1.3 steps 18-26).
    PnConnectionSetup,
    /// Group content sent to a PN's members (docs/security.md §4.11).
    GroupContent,
    /// A request to the service directory (004 §5.5.5).
    ServiceDirectory,
    /// A service group request (004 §5.5.9).
    ServiceGroup,
    /// A delivery session (004 §5.5.8).
    Delivery,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flow::ConnectionSetup => "connection set-up",
            Flow::EntityDiscovery => "entity discovery",
            Flow::PanAuthentication => "PN GW authentication",
            Flow::PnEstablishment => "PN establishment",
            Flow::PnRegistration => "PN registration",
            Flow::PneRegistration => "PNE registration",
            Flow::SecureCall => "secure call",
            Flow::StatusUpdate => "status update",
            Flow::InventoryReconciliation => "inventory reconciliation",
            Flow::KeepingAnswer => "keeping an answer for retries",
            Flow::PnRelease => "PN release",
            Flow::MembershipChange => "membership change",
            Flow::InventoryQuery => "inventory query",
            Flow::GroupKey => "group key request",
            Flow::StatusManagement => "status management",
            Flow::PnConnectionSetup => "connection set-up in the PNs",
            Flow::GroupContent => "group content",
            Flow::ServiceDirectory => "service directory request",
            Flow::ServiceGroup => "service group request",
            Flow::Delivery => "delivery",
        })
    }
}

/// Why a flow ended without success.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// A wait passed its deadline.
    TimedOut,
    /// The peer answered with this error.
    Refused(ErrorBody),
    /// The store could not keep or give what the flow needed.
    Store(StoreFailure),
    /// A PNE's hash_PNE did not verify (000 §6.6.1.1 step 11).
    HashPneMismatch,
    /// No hash_PNE came for a PNE that was challenged.
    NoHashPne,
    /// No PNE authenticated: no PN is registered (step 11).
    NoPneAuthenticated,
    /// The PNE that asked for the PN did not authenticate (docs/ARCHITECTURE.md decision 11).
    InitiatorNotAuthenticated,
    /// None of the PNEs named is an enrolled PNE of the PN GW's user.
    NoEnrolledPne,
    /// No PNE accepted the invitation.
    NoPneAccepted,
    /// The server did not authenticate this PNE (a verdict without the PN).
    NotAuthenticatedByServer,
    /// hash_server did not verify: the server is not authenticated (step 15; 003 §1.4.1).
    ServerNotAuthenticated,
    /// The PN came before this PNE was authenticated.
    PnBeforeAuthentication,
    /// The PN GW answered without a PN, or said the PN was not established (with its words).
    NotEstablished(Option<String>),
    /// A proof of PN GW authentication did not verify.
    ProofMismatch,
    /// The PNE's LocalEUKey copy did not unwrap.
    LocalKeyDidNotUnwrap,
    /// A LocalEUKey was asked for and not assigned.
    LocalKeyNotAssigned,
    /// The registration answer came before the authentication.
    AnswerBeforeAuthentication,
    /// The sealed registration grant did not open under SK_PNE.
    GrantDidNotOpen,
    /// The registration grant is malformed.
    GrantMalformed,
    /// The sealed grant names another CPNS ID than the answer.
    GrantMismatch,
    /// A secure answer did not open under SK_PNE: it is not the server's.
    AnswerDidNotOpen,
    /// The PN GW never confirmed a registered PN, which was removed.
    NotConfirmed,
    /// Discovery got no answer.
    NoAnswer,
    /// PN GW authentication could not start: the link is sealed or being sealed.
    LinkBusy,
    /// The PN GW is not enrolled.
    UnknownGateway,
    /// The entity is enrolled, but not as a PN GW.
    NotAGateway,
    /// The PN GW's authentication response did not verify (002 §B.1.1.2 step 10).
    GatewayResponseMismatch,
    /// The PN GW lost its session with the CPNS Server.
    WanLost,
    /// What the flow would send is larger than the CPNS Server accepts.
    TooLarge,
    /// This PNE's copy of a group key did not open under its SK_PNE (docs/security.md §4.10).
    GroupKeyDidNotOpen(String),
    /// A PN Key Request of this PNE got no answer of the server's for it: none in time, one
    /// that is not the server's answer to this pull (an older one replayed, or altered), or
    /// one naming an epoch older than one this PNE holds or saw announced. Something between
    /// it and the server may keep it behind (docs/security.md §4.10).
    KeptBehind {
        /// The PN.
        pn_id: cpns_wire::PnId,
        /// What the pull got.
        why: String,
    },
    /// The PN GW on the link did not prove it holds this PNE's LocalEUKey for the PN: it lost
    /// the key (the PN may be gone), answered with a decoy, or is not the PN GW it claims
    /// (docs/security.md §4.4, "Not provable here").
    GatewayNotProven(cpns_wire::PnId),
    /// The PN GW chose an AEAD suite for the link's frames that this PNE did not offer (the
    /// code it named; docs/security.md §4.13).
    SuiteNotOffered(u8),
    /// Group content relayed to this PNE failed a check (docs/security.md §4.11): the words
    /// say which.
    ContentRefused(String),
    /// The peer answered with a message the flow does not expect (its name).
    Unexpected(&'static str),
    /// A flow this entity starts by itself (no command asked for it) could not start; the
    /// words are what a command would have been refused with.
    NotStarted(crate::CommandError),
}

impl Failure {
    /// The failure as the error answer its asker reads: a peer's refusal as it came, a
    /// timeout as `timeout`, a lost server session as `busy`, content that failed its checks
    /// as `unauthenticated`, anything else as `internal`.
    pub fn to_error(&self) -> ErrorBody {
        use cpns_wire::ErrorCode;
        match self {
            Failure::Refused(e) => e.clone(),
            Failure::TimedOut => ErrorBody::new(ErrorCode::Timeout, "no answer in time"),
            Failure::WanLost => ErrorBody::new(
                ErrorCode::Busy,
                "the PN GW lost its connection to the CPNS Server",
            ),
            Failure::ContentRefused(_) => {
                ErrorBody::new(ErrorCode::Unauthenticated, self.to_string())
            }
            other => ErrorBody::new(ErrorCode::Internal, other.to_string()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("timed out"),
            Failure::Refused(e) => write!(f, "{e}"),
            Failure::Store(e) => write!(f, "store: {e}"),
            Failure::HashPneMismatch => f.write_str("hash_PNE did not verify"),
            Failure::NoHashPne => f.write_str("no hash_PNE"),
            Failure::NoPneAuthenticated => f.write_str("no PNE authenticated"),
            Failure::InitiatorNotAuthenticated => {
                f.write_str("the initiating PNE was not authenticated")
            }
            Failure::NoEnrolledPne => {
                f.write_str("none of the PNEs is an enrolled PNE of the PN GW's user")
            }
            Failure::NoPneAccepted => f.write_str("no PNE accepted the invitation"),
            Failure::NotAuthenticatedByServer => {
                f.write_str("the CPNS Server did not authenticate this PNE")
            }
            Failure::ServerNotAuthenticated => {
                f.write_str("hash_server did not verify: the server is not authenticated")
            }
            Failure::PnBeforeAuthentication => {
                f.write_str("the PN came before this PNE was authenticated")
            }
            Failure::NotEstablished(None) => f.write_str("the PN was not established"),
            Failure::NotEstablished(Some(why)) => write!(f, "the PN was not established: {why}"),
            Failure::ProofMismatch => f.write_str("the peer's proof did not verify"),
            Failure::LocalKeyDidNotUnwrap => f.write_str("the LocalEUKey did not unwrap"),
            Failure::LocalKeyNotAssigned => {
                f.write_str("the LocalEUKey asked for was not assigned")
            }
            Failure::AnswerBeforeAuthentication => {
                f.write_str("the registration answer came before authentication")
            }
            Failure::GrantDidNotOpen => {
                f.write_str("the registration grant did not open under SK_PNE")
            }
            Failure::GrantMalformed => f.write_str("the registration grant is malformed"),
            Failure::GrantMismatch => f.write_str("the sealed grant names another CPNS ID"),
            Failure::AnswerDidNotOpen => {
                f.write_str("the answer did not open under SK_PNE: it is not the server's")
            }
            Failure::NotConfirmed => {
                f.write_str("the PN GW did not confirm the PN; it was removed")
            }
            Failure::NoAnswer => f.write_str("no answer"),
            Failure::LinkBusy => f.write_str("the link is sealed or being sealed"),
            Failure::UnknownGateway => f.write_str("unknown PN GW"),
            Failure::NotAGateway => f.write_str("the entity is not enrolled as a PN GW"),
            Failure::GatewayResponseMismatch => {
                f.write_str("authentication response did not verify")
            }
            Failure::WanLost => f.write_str("the connection to the CPNS Server closed"),
            Failure::TooLarge => {
                f.write_str("the PN's set-up information is larger than the CPNS Server accepts")
            }
            Failure::ContentRefused(why) => write!(f, "content refused: {why}"),
            Failure::SuiteNotOffered(code) => write!(
                f,
                "the PN GW chose an AEAD suite this PNE did not offer (code {code}): it is not \
                 a PN GW of this version, or something on the PAN altered its answer"
            ),
            Failure::GatewayNotProven(pn) => write!(
                f,
                "the PN GW did not prove it holds this PNE's LocalEUKey for PN {pn}: it lost the \
                 key (the PN may be gone) or is not the PN GW it claims; this PNE does not try \
                 that key on it again (register in the PN again, or leave it)"
            ),
            Failure::Unexpected(what) => write!(f, "an unexpected answer: {what}"),
            Failure::NotStarted(why) => write!(f, "could not start: {why}"),
            Failure::GroupKeyDidNotOpen(why) => {
                write!(f, "this PNE's copy of the group key did not open: {why}")
            }
            Failure::KeptBehind { pn_id, why } => write!(
                f,
                "possibly kept behind in PN {pn_id}: {why}; the PN GW on this link may be \
                 holding this PNE back"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpns_wire::ErrorCode;

    #[test]
    fn every_flow_and_failure_reads_as_a_sentence() {
        assert_eq!(Flow::PnEstablishment.to_string(), "PN establishment");
        assert_eq!(
            Flow::KeepingAnswer.to_string(),
            "keeping an answer for retries"
        );
        assert_eq!(
            Failure::Refused(ErrorBody::new(ErrorCode::Busy, "later")).to_string(),
            "busy: later"
        );
        assert_eq!(
            Failure::NotEstablished(Some("declined".into())).to_string(),
            "the PN was not established: declined"
        );
        assert_eq!(
            Failure::Store(StoreFailure::Overloaded).to_string(),
            "store: the store is overloaded"
        );
    }
}
