//! [`DeviceStore`] on SQLite: a PN GW's or a PNE's own tables (`local_pns`, `local_members`,
//! `local_session`, `local_departed`, `local_service_groups`, `local_usage`, `usage_prefs`). Writes go through the writer, one
//! transaction each; reads run on a read connection, a read of several queries in one read
//! transaction.

use cpns_wire::{EntityId, GroupId, PnId, Preference};

use super::{SqliteStore, deliveries, local, usage};
use crate::{
    DepartedKey, DeviceStore, LocalPn, LocalServiceGroup, LocalSession, LocalUsage, Result,
    UsageSummary,
};

impl DeviceStore for SqliteStore {
    async fn save_local_pn(&self, p: &LocalPn) -> Result<()> {
        let p = p.clone();
        self.write(move |c| local::save_local_pn(c, &p)).await
    }

    async fn save_local_session(&self, session: &LocalSession) -> Result<()> {
        let session = session.clone();
        self.write(move |c| local::save_local_session(c, &session))
            .await
    }

    async fn local_session(&self) -> Result<Option<LocalSession>> {
        self.inner.readers.read(local::local_session)
    }

    async fn local_pns(&self) -> Result<Vec<LocalPn>> {
        self.inner.readers.snapshot(local::local_pns)
    }

    async fn remove_local_pn(&self, p: &PnId) -> Result<bool> {
        let p = *p;
        self.write(move |c| local::remove_local_pn(c, &p)).await
    }

    async fn save_departed(&self, key: &DepartedKey) -> Result<()> {
        let key = key.clone();
        self.write(move |c| local::save_departed(c, &key)).await
    }

    async fn remove_departed(&self, pn: &PnId, pne: &EntityId) -> Result<bool> {
        let (pn, pne) = (*pn, pne.clone());
        self.write(move |c| local::remove_departed(c, &pn, &pne))
            .await
    }

    async fn departed(&self) -> Result<Vec<DepartedKey>> {
        self.inner.readers.read(local::departed)
    }

    async fn save_local_group(&self, group: &LocalServiceGroup) -> Result<()> {
        let group = group.clone();
        self.write(move |c| local::save_local_group(c, &group))
            .await
    }

    async fn remove_local_group(&self, group: &GroupId) -> Result<bool> {
        let group = *group;
        self.write(move |c| local::remove_local_group(c, &group))
            .await
    }

    async fn local_groups(&self) -> Result<Vec<LocalServiceGroup>> {
        self.inner.readers.read(local::local_groups)
    }

    async fn save_local_delivery(&self, delivery: &crate::LocalDelivery) -> Result<()> {
        let delivery = delivery.clone();
        self.write(move |c| local::save_local_delivery(c, &delivery))
            .await
    }

    async fn remove_local_delivery(&self, session: &cpns_wire::DeliveryId) -> Result<bool> {
        let session = *session;
        self.write(move |c| local::remove_local_delivery(c, &session))
            .await
    }

    async fn local_deliveries(&self) -> Result<Vec<crate::LocalDelivery>> {
        self.inner.readers.read(local::local_deliveries)
    }

    async fn save_local_route(&self, route: &cpns_wire::DeliveryRoute) -> Result<()> {
        let route = route.clone();
        self.write(move |c| deliveries::save_route(c, &route)).await
    }

    async fn remove_local_route(&self, session: &cpns_wire::DeliveryId) -> Result<bool> {
        let session = *session;
        self.write(move |c| deliveries::remove_route(c, &session))
            .await
    }

    async fn local_routes(&self) -> Result<Vec<cpns_wire::DeliveryRoute>> {
        self.inner.readers.read(deliveries::routes)
    }

    async fn save_local_usage(&self, record: &cpns_wire::UsageRecord) -> Result<()> {
        let record = record.clone();
        self.write(move |c| usage::save_local_usage(c, &record))
            .await
    }

    async fn unsent_local_usage(&self, limit: u32) -> Result<Vec<LocalUsage>> {
        self.inner
            .readers
            .read(|c| usage::unsent_local_usage(c, limit))
    }

    async fn mark_local_usage_sent(&self, ids: &[u64]) -> Result<()> {
        let ids = ids.to_vec();
        self.write(move |c| usage::mark_local_usage_sent(c, &ids))
            .await
    }

    async fn local_usage_summary(&self) -> Result<Vec<UsageSummary>> {
        self.inner.readers.read(usage::local_usage_summary)
    }

    async fn set_usage_pref(&self, service: &str, preference: Option<Preference>) -> Result<()> {
        let service = service.to_owned();
        self.write(move |c| usage::set_usage_pref(c, &service, preference))
            .await
    }

    async fn usage_prefs(&self) -> Result<Vec<(String, Preference)>> {
        self.inner.readers.read(usage::usage_prefs)
    }
}
