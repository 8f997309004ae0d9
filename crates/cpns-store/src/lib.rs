//! Storage for CPNS, in two contracts: the CPNS Server's state of record ([`ServerStore`]:
//! users, enrolled entities, the PN inventory, group key epochs, kept answers, statuses,
//! subscriptions, usage and charging records) and the local state a PN GW or a PNE keeps of
//! itself ([`DeviceStore`]: its local PNs, its secure session, its usage records and reporting
//! preferences) (docs/design.md §5). A server and a device never share a database; each user of the
//! store names the contract it needs.
//!
//! Values cross both traits as their types (capabilities, contents, statuses, preferences);
//! failures as a [`StoreError`] with a typed reason. [`SqliteStore`] implements both: SQLite in
//! WAL mode through rusqlite, migrations at open, one writer thread that commits the writes of
//! many flows together (group commit) and answers each only once it is committed, and reads on
//! the calling thread. Every method that changes state is one transaction (all of it or none of
//! it lands) and is idempotent where the protocol retries; every read that takes several
//! queries runs in one read transaction, so it sees one snapshot.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod device;
mod error;
pub mod model;
pub mod private;
mod server;
mod sqlite;

pub use device::DeviceStore;
pub use error::{DatabaseError, StoreError};
pub use model::*;
pub use server::ServerStore;
pub use sqlite::{Durability, SqliteStore};

/// Result of the store.
pub type Result<T, E = StoreError> = core::result::Result<T, E>;
