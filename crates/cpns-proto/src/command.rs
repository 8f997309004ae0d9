//! Commands and their completions, as quinn has streams: a command a driver gives a machine
//! (`PneSession::leave_pn`, `Gateway::expel`, …) either is refused at once with a
//! [`CommandError`], nothing sent and nothing changed, or returns a [`CommandId`]; every flow
//! it starts then ends in exactly one [`Completed`] carrying that id, with the role's typed
//! outcome or the [`Failure`] that ended it. A driver keeps one map from id to whoever waits
//! and never reconstructs from other events what the machine knows.
//!
//! Flows a machine starts by itself (an invitation it answers, the catching up after a
//! reconnection it runs as a phase) have no id; what they do is told by the role's events.

use core::fmt;

use cpns_wire::{EntityId, ErrorBody, ErrorCode, PnId};

use crate::{Failure, Flow};

/// Names one command given to a machine; its [`Completed`] carries the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The end of the flow a command started: its outcome, or why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Completed<O> {
    /// The command's id.
    pub id: CommandId,
    /// The flow it ran.
    pub flow: Flow,
    /// What it achieved, or why it did not.
    pub result: Result<O, Failure>,
}

/// Why a command was refused at once. Nothing was sent and nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The machine runs as many flows as it takes.
    #[error("as many flows are running as this entity takes; try again later")]
    Busy,
    /// The command names a PN this entity does not hold.
    #[error("no PN {0} here")]
    UnknownPn(PnId),
    /// This PNE is not a member of the PN the command names.
    #[error("this PNE is not a member of PN {0}")]
    NotAMember(PnId),
    /// The PNE the command names is not a member of the PN.
    #[error("{pne} is not a member of PN {pn_id}")]
    NotAMemberOf {
        /// The PN.
        pn_id: PnId,
        /// The PNE.
        pne: EntityId,
    },
    /// The PNE the command would add is a member already.
    #[error("{pne} is a member of PN {pn_id} already")]
    AlreadyMember {
        /// The PN.
        pn_id: PnId,
        /// The PNE.
        pne: EntityId,
    },
    /// A flow of this kind, for the same PN or PNE, is running; one at a time.
    #[error("a {flow} of this kind is running already; try again once it ended")]
    ChangeRunning {
        /// The flow running.
        flow: Flow,
    },
    /// The PNE the command names has no link to this PN GW.
    #[error("{0} is not connected to this PN GW")]
    NotConnected(EntityId),
    /// No invitation to this PN waits for an answer.
    #[error("no invitation to PN {0} waits for an answer")]
    NoInvitation(PnId),
    /// The PN GW has no session with the CPNS Server.
    #[error("no connection to the CPNS Server; try again once there is one")]
    NoServerSession,
    /// The PNE has no secure session with the CPNS Server (003 §1.4).
    #[error("no secure session with the CPNS Server: register first (003 §1.4)")]
    NoSecureSession,
    /// The PNE holds no LocalEUKey for the PN, so it cannot prove itself with one.
    #[error("no LocalEUKey for PN {0}")]
    NoLocalKey(PnId),
    /// The device's credential holds no member certificate (docs/security.md §4.11).
    #[error(
        "this device's credential holds no member certificate: enroll it again to send group content"
    )]
    NoCertificate,
    /// This PNE holds no group key of the PN yet.
    #[error("no group key of PN {0} yet: wait for the connection set-up in the PN")]
    NoGroupKey(PnId),
    /// This PNE holds no key of the service group (004 §5.5.7.2).
    #[error("no key of service group {0} here: join the group, or pull its key")]
    NoServiceGroupKey(cpns_wire::GroupId),
    /// The delivery offer given is not one (docs/services.md, "Delivery").
    #[error("delivery offer: {0}")]
    InvalidDelivery(String),
    /// The contents declared are not a valid list (004 §5.5.10).
    #[error("contents: {0}")]
    InvalidContents(String),
    /// No delivery offered to this PNE waits for an answer under this id.
    #[error("no delivery {0} waits for an answer here")]
    NoDelivery(cpns_wire::DeliveryId),
    /// This PNE sends no delivery under this id: only a session's source controls it.
    #[error("this PNE sends no delivery {0}: only a session's source controls it")]
    NotSending(cpns_wire::DeliveryId),
    /// The delivery is in a state the service control asked does not fit.
    #[error("delivery: {0}")]
    DeliveryState(String),
    /// The PN's PN GW is not on the link, or has not proved itself on it.
    #[error("PN GW {0} is not on the link or has not proved itself; connect to it first")]
    GatewayNotLinked(EntityId),
    /// The link is sealed already, or being sealed.
    #[error("the link is sealed or being sealed")]
    LinkBusy,
    /// What the command would send is larger than the peer accepts.
    #[error("the request is larger than the CPNS Server accepts")]
    TooLarge,
    /// The capabilities given are over their bounds.
    #[error("capabilities: {0}")]
    InvalidCapabilities(String),
    /// The status given cannot be reported.
    #[error("status: {0}")]
    InvalidStatus(String),
    /// The service description given is not one (docs/services.md).
    #[error("service description: {0}")]
    InvalidDescription(String),
    /// The command asks for something the protocol does not allow (its words).
    #[error("{0}")]
    NotAllowed(&'static str),
    /// Sealing the request failed.
    #[error("sealing failed: {0}")]
    Crypto(#[from] cpns_crypto::CryptoError),
}

impl CommandError {
    /// The wire error code an asker on another link reads.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Busy | CommandError::NoServerSession => ErrorCode::Busy,
            CommandError::UnknownPn(_)
            | CommandError::NotAMember(_)
            | CommandError::NotAMemberOf { .. }
            | CommandError::NotConnected(_)
            | CommandError::NoInvitation(_)
            | CommandError::NoDelivery(_)
            | CommandError::NotSending(_)
            | CommandError::NoLocalKey(_) => ErrorCode::NotFound,
            CommandError::DeliveryState(_) => ErrorCode::WrongState,
            CommandError::AlreadyMember { .. } | CommandError::ChangeRunning { .. } => {
                ErrorCode::Conflict
            }
            CommandError::NoSecureSession
            | CommandError::LinkBusy
            | CommandError::NoCertificate
            | CommandError::NoGroupKey(_)
            | CommandError::NoServiceGroupKey(_)
            | CommandError::GatewayNotLinked(_) => ErrorCode::WrongState,
            CommandError::TooLarge
            | CommandError::InvalidCapabilities(_)
            | CommandError::InvalidStatus(_)
            | CommandError::InvalidDescription(_)
            | CommandError::InvalidDelivery(_)
            | CommandError::InvalidContents(_)
            | CommandError::NotAllowed(_) => ErrorCode::BadRequest,
            CommandError::Crypto(_) => ErrorCode::Internal,
        }
    }

    /// The error as an answer on the wire.
    pub fn to_error(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

/// Hands out a machine's command ids, in order from 1.
#[derive(Debug, Default)]
pub(crate) struct CommandIds(u64);

impl CommandIds {
    pub(crate) fn next(&mut self) -> CommandId {
        self.0 += 1;
        CommandId(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_from_one_and_never_repeat() {
        let mut ids = CommandIds::default();
        let taken: Vec<CommandId> = (0..3).map(|_| ids.next()).collect();
        assert_eq!(taken, [CommandId(1), CommandId(2), CommandId(3)]);
        assert_eq!(CommandId(7).to_string(), "#7");
    }

    #[test]
    fn each_refusal_has_the_code_an_asker_reads() {
        let pn = PnId::from_bytes([1; 16]);
        let pne = EntityId::new("tv").unwrap_or_else(|_| unreachable!());
        let cases = [
            (CommandError::Busy, ErrorCode::Busy),
            (CommandError::NoServerSession, ErrorCode::Busy),
            (CommandError::UnknownPn(pn), ErrorCode::NotFound),
            (CommandError::NotAMember(pn), ErrorCode::NotFound),
            (
                CommandError::NotAMemberOf {
                    pn_id: pn,
                    pne: pne.clone(),
                },
                ErrorCode::NotFound,
            ),
            (CommandError::NotConnected(pne.clone()), ErrorCode::NotFound),
            (CommandError::NoLocalKey(pn), ErrorCode::NotFound),
            (CommandError::NoInvitation(pn), ErrorCode::NotFound),
            (
                CommandError::AlreadyMember {
                    pn_id: pn,
                    pne: pne.clone(),
                },
                ErrorCode::Conflict,
            ),
            (
                CommandError::ChangeRunning {
                    flow: Flow::PnRelease,
                },
                ErrorCode::Conflict,
            ),
            (CommandError::NoSecureSession, ErrorCode::WrongState),
            (CommandError::LinkBusy, ErrorCode::WrongState),
            (CommandError::NoCertificate, ErrorCode::WrongState),
            (CommandError::NoGroupKey(pn), ErrorCode::WrongState),
            (
                CommandError::NoServiceGroupKey(cpns_wire::GroupId::from_bytes([2; 16])),
                ErrorCode::WrongState,
            ),
            (
                CommandError::GatewayNotLinked(pne.clone()),
                ErrorCode::WrongState,
            ),
            (CommandError::TooLarge, ErrorCode::BadRequest),
            (
                CommandError::InvalidCapabilities("x".into()),
                ErrorCode::BadRequest,
            ),
            (
                CommandError::InvalidStatus("x".into()),
                ErrorCode::BadRequest,
            ),
            (CommandError::NotAllowed("x"), ErrorCode::BadRequest),
            (
                CommandError::InvalidDelivery("x".into()),
                ErrorCode::BadRequest,
            ),
            (
                CommandError::NoDelivery(cpns_wire::DeliveryId::from_bytes([3; 16])),
                ErrorCode::NotFound,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
            let body = e.to_error();
            assert_eq!((body.code, body.reason), (code, e.to_string()));
        }
    }
}
