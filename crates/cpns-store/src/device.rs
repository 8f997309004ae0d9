//! The store of a device (a PN GW or a PNE): its own local PN inventory (000 §6.6.1.1 steps
//! 13-15), a PNE's secure session with the server (003 §1.4.1 step 4), and a PNE's usage
//! records and reporting preferences (004 §5.5.4.2). Nothing here is the server's: a device's
//! database holds only what it keeps of itself.

use core::future::Future;

use cpns_wire::{EntityId, GroupId, PnId, Preference, UsageRecord};

use crate::{
    DepartedKey, LocalDelivery, LocalPn, LocalServiceGroup, LocalSession, LocalUsage, Result,
    UsageSummary,
};

/// What a PN GW or a PNE keeps of itself, across restarts.
pub trait DeviceStore: Send + Sync + 'static {
    /// Stores (or replaces) a PN in the device's local inventory, in one transaction
    /// (000 §6.6.1.1 steps 13-15).
    fn save_local_pn(&self, pn: &LocalPn) -> impl Future<Output = Result<()>> + Send;

    /// The device's local PNs, in the order first stored.
    fn local_pns(&self) -> impl Future<Output = Result<Vec<LocalPn>>> + Send;

    /// Removes a PN from the device's local inventory; true if it was there.
    fn remove_local_pn(&self, pn: &PnId) -> impl Future<Output = Result<bool>> + Send;

    /// Keeps a PN GW's copy of a departed member's LocalEUKey, replacing one kept for the same
    /// PN and PNE.
    fn save_departed(&self, key: &DepartedKey) -> impl Future<Output = Result<()>> + Send;

    /// Removes the departed key of (`pn`, `pne`); true if it was there.
    fn remove_departed(
        &self,
        pn: &PnId,
        pne: &EntityId,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Every departed key kept, oldest first.
    fn departed(&self) -> impl Future<Output = Result<Vec<DepartedKey>>> + Send;

    /// Keeps a PNE's secure session (003 §1.4.1 step 4), replacing the one kept before.
    fn save_local_session(&self, session: &LocalSession)
    -> impl Future<Output = Result<()>> + Send;

    /// The PNE's secure session, if it kept one.
    fn local_session(&self) -> impl Future<Output = Result<Option<LocalSession>>> + Send;

    /// Keeps a PNE's key of a service group, replacing the one kept for the group.
    fn save_local_group(
        &self,
        group: &LocalServiceGroup,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes the key kept for a service group; true if one was.
    fn remove_local_group(&self, group: &GroupId) -> impl Future<Output = Result<bool>> + Send;

    /// Every service group key kept, in the order of the group ids.
    fn local_groups(&self) -> impl Future<Output = Result<Vec<LocalServiceGroup>>> + Send;

    /// Keeps a PNE's delivery session, replacing the one kept of the same session.
    fn save_local_delivery(
        &self,
        delivery: &LocalDelivery,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes a kept delivery session; true if it was kept.
    fn remove_local_delivery(
        &self,
        session: &cpns_wire::DeliveryId,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Every delivery session kept, by session.
    fn local_deliveries(&self) -> impl Future<Output = Result<Vec<LocalDelivery>>> + Send;

    /// Keeps a PN GW's delivery route, replacing the one of the same session.
    fn save_local_route(
        &self,
        route: &cpns_wire::DeliveryRoute,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes a delivery route; true if it was kept.
    fn remove_local_route(
        &self,
        session: &cpns_wire::DeliveryId,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Every delivery route kept, by session.
    fn local_routes(&self) -> impl Future<Output = Result<Vec<cpns_wire::DeliveryRoute>>> + Send;

    /// Keeps a usage record the PNE collected, unsent (004 §5.5.4.2).
    /// [`StoreError::Conflict`](crate::StoreError) if its id is kept already.
    fn save_local_usage(&self, record: &UsageRecord) -> impl Future<Output = Result<()>> + Send;

    /// The PNE's unsent usage records, oldest first, at most `limit`.
    fn unsent_local_usage(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<LocalUsage>>> + Send;

    /// Marks the PNE's records sent (acknowledged, or never to be sent); unknown ids are
    /// ignored.
    fn mark_local_usage_sent(&self, ids: &[u64]) -> impl Future<Output = Result<()>> + Send;

    /// The PNE's own usage per service, every record counted.
    fn local_usage_summary(&self) -> impl Future<Output = Result<Vec<UsageSummary>>> + Send;

    /// Sets, or with `None` clears, the user's reporting preference of a service
    /// (004 §5.5.4.2).
    fn set_usage_pref(
        &self,
        service: &str,
        preference: Option<Preference>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every reporting preference, by service. A stored preference this build does not know (a
    /// newer build's) is left out, as if the service had none.
    fn usage_prefs(&self) -> impl Future<Output = Result<Vec<(String, Preference)>>> + Send;
}
