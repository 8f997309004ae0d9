//! Storage for CPNS: the server's state of record (users, enrolled entities, the PN inventory)
//! and the local PN inventory a PN GW or PNE keeps (DESIGN §5).
//!
//! [`Store`] is one trait for every backend; [`SqliteStore`] is the embedded default (WAL,
//! migrations, one transaction per flow effect). Every method that changes state is one
//! transaction and is idempotent where the protocol retries.

#![warn(missing_docs)]

mod error;
pub mod model;
mod sqlite;

pub use error::StoreError;
pub use model::*;
pub use sqlite::SqliteStore;

use core::future::Future;

use cpns_wire::{CpnsId, EntityId, PnId, UserId};

/// Result of the store.
pub type Result<T, E = StoreError> = core::result::Result<T, E>;

/// The CPNS store. Server methods keep the inventory of record; `local_*` methods keep a
/// device's (PN GW's or PNE's) own local PN inventory.
pub trait Store: Send + Sync + 'static {
    /// Adds a user; does nothing if it exists.
    fn ensure_user(&self, user: &UserId) -> impl Future<Output = Result<()>> + Send;

    /// Enrolls an entity. Fails with [`StoreError::Conflict`] if the id is taken.
    fn insert_entity(&self, entity: &EntityRecord) -> impl Future<Output = Result<()>> + Send;

    /// Looks up one entity.
    fn entity(&self, id: &EntityId) -> impl Future<Output = Result<Option<EntityRecord>>> + Send;

    /// Looks up several entities in one query; absent ids are left out of the result.
    fn entities(&self, ids: &[EntityId])
    -> impl Future<Output = Result<Vec<EntityRecord>>> + Send;

    /// Records capabilities and/or status reported by an entity (002 §B.1.1.2 steps 12-17).
    fn update_entity_report(
        &self,
        id: &EntityId,
        capabilities: Option<&[u8]>,
        status: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Registers a PN with its members in one transaction (000 §6.6.1.1 step 11). Registering a
    /// PN id that exists with the same gateway replaces its member list (a retried
    /// registration); with another gateway it is a [`StoreError::Conflict`].
    fn register_pn(&self, pn: &PnRecord) -> impl Future<Output = Result<()>> + Send;

    /// Adds or updates one member of an existing PN (003 §1.4.2 step 4, 000 §6.6.2).
    /// [`StoreError::NotFound`] if the PN does not exist.
    fn upsert_member(
        &self,
        pn: &PnId,
        member: &PnMember,
    ) -> impl Future<Output = Result<()>> + Send;

    /// One PN with its members.
    fn pn(&self, id: &PnId) -> impl Future<Output = Result<Option<PnRecord>>> + Send;

    /// All PNs served by a gateway.
    fn pns_of_gateway(&self, gw: &EntityId)
    -> impl Future<Output = Result<Vec<PnRecord>>> + Send;

    /// All PNs, in creation order.
    fn all_pns(&self) -> impl Future<Output = Result<Vec<PnRecord>>> + Send;

    /// Allocates the CPNS ID of a PNE (003 §1.4.1 step 3), or returns the one it already has.
    fn allocate_cpns_id(&self, pne: &EntityId) -> impl Future<Output = Result<CpnsId>> + Send;

    /// Stores (or replaces) a PN in the device's local inventory, in one transaction.
    fn save_local_pn(&self, pn: &LocalPn) -> impl Future<Output = Result<()>> + Send;

    /// The device's local PNs, in the order first stored.
    fn local_pns(&self) -> impl Future<Output = Result<Vec<LocalPn>>> + Send;

    /// Removes a PN from the device's local inventory; true if it was there.
    fn remove_local_pn(&self, pn: &PnId) -> impl Future<Output = Result<bool>> + Send;
}
