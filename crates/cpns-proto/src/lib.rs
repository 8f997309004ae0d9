//! The CPNS protocol as deterministic, sans-IO state machines, one per role: [`server`] (one
//! machine per PN GW session), [`gateway`] (the PN GW: its WAN session and every PAN link) and
//! [`pne`] (a PNE on its PAN link).
//!
//! No machine touches a socket, a clock or a store. The driver feeds them bytes and time and
//! carries out what they ask, in this loop:
//!
//! ```text
//! loop {
//!     feed one input:   handle_*_frame(now, bytes) | handle_loaded(..) | handle_persisted(..)
//!                       | handle_timeout(now) | a command (returns its CommandId)
//!     drain outputs:    while let Some(out) = machine.poll_output() { carry it out }
//!     sleep until:      machine.poll_timeout(), or the next input
//! }
//! ```
//!
//! Outputs are frames to send, store work to do (load records, persist an effect) and events to
//! report; every command ends in exactly one completion event carrying its id ([`command`]). A
//! machine asking for store work parks the flow until the driver answers with the token it was
//! given, so a response is sent only after its effect is durable (docs/design.md §5).

#![warn(missing_docs)]

pub mod command;
pub mod election;
pub mod error;
pub mod failure;
pub mod gateway;
pub mod link;
pub mod pne;
pub mod rate;
pub mod server;
mod source;
pub mod status;
pub mod usage;
mod util;

#[cfg(test)]
mod tests;

pub use command::{CommandError, CommandId, Completed};
pub use error::{ProtoError, StoreFailure};
pub use failure::{Failure, Flow};
pub use link::{LinkCodec, PanSecurity};

use cpns_wire::{EntityId, PnInventory};

use std::time::Duration;

/// Identifies one store request of a machine; the driver answers with the same token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// How long each wait of a flow may last before the flow ends with a timeout error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for invited PNEs to answer a PN Setup Request (000 §6.6.1.1 step 3).
    pub invite: Duration,
    /// Waiting for any other step of a flow (authentication, registration, responses).
    pub flow: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            invite: Duration::from_secs(10),
            flow: Duration::from_secs(30),
        }
    }
}

/// One message sent or received, for traces and the demo's sequence diagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Message name.
    pub message: &'static str,
    /// Whether it travelled AEAD-sealed on the PAN.
    pub sealed: bool,
}

/// One PN of a device's local inventory (000 §6.6.1.1 steps 13 and 15): the inventory, and the
/// device's copies of LocalEUKeys, still wrapped under the device's own EUKey so they can be
/// stored as they are. A PN GW keeps one copy per member; a PNE keeps its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPnState {
    /// The PN inventory.
    pub inventory: PnInventory,
    /// Wrapped LocalEUKey copies, per PNE, each in its stored form `rand_server(16) ‖
    /// wrapped(60)` (docs/security.md §4.2, `cpns_crypto::stored_wrapped_key`): the copy is bound
    /// to the rand_server of the establishment that made it, so unwrapping it again after a
    /// restart needs that rand_server too.
    pub wrapped_keys: Vec<(EntityId, Vec<u8>)>,
    /// A PNE's own keys of the PN (its driver seals them at rest under the device's storage
    /// key, docs/security.md §4.9); `None` on a PN GW, which holds neither.
    pub own: Option<OwnKeys>,
    /// On a PN GW: when the PN's lifetime ends (Unix milliseconds) and the PN GW releases it
    /// (beyond the documents; docs/pn-lifecycle.md, "Lifetime and member limit").
    pub expires_at: Option<i64>,
}

/// A PNE's own keys of a PN it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnKeys {
    /// Its SK_PNE for the PN, agreed with the server at establishment (000 §6.6.1.1 steps 8-12)
    /// or at its latest registration in the PN (003 §1.4.1 step 3): it opens the group key
    /// copies the server seals for this PNE.
    pub session_key: cpns_crypto::SessionKey,
    /// The PN's current group key epoch and key, once the PNE was given one.
    pub group: Option<(u64, cpns_crypto::GroupKey)>,
    /// The last number this PNE gave a Secure Request under this SK_PNE (docs/security.md
    /// §4.8): the next is one more, and it is stored before the request goes.
    pub secure_seq: u64,
}
