//! [`ServerStore`] on SQLite: the CPNS Server's tables. Each write is one job of the writer,
//! committed with the batch it shares and answered once committed; each read runs on a read
//! connection, a read of several queries in one read transaction (`Readers::snapshot`).

use cpns_wire::{CpnsId, DeviceCapabilities, EntityId, PnId, Status, UserId};

use super::{SqliteStore, deliveries, entity, groups, pn, replay, services, status, usage, views};
use crate::{
    DeliveryRecord, Departed, EntityRecord, GroupEpoch, InventoryView, MemberView, Owners,
    PnMember, PnRecord, PnView, Reconciled, Result, ServerStore, StatusChange, StatusRecord,
    StatusView, Subscribed, SubscriptionRecord, UnixMillis, UsageRow, UsageStored, UsageSummary,
};

impl ServerStore for SqliteStore {
    async fn ensure_user(&self, user: &UserId) -> Result<()> {
        let user = user.clone();
        self.write(move |c| entity::ensure_user(c, &user)).await
    }

    async fn insert_entity(&self, e: &EntityRecord) -> Result<()> {
        let e = e.clone();
        self.write(move |c| entity::insert_entity(c, &e)).await
    }

    async fn entity(&self, id: &EntityId) -> Result<Option<EntityRecord>> {
        self.inner.readers.read(|c| entity::entity(c, id))
    }

    async fn entities(&self, ids: &[EntityId]) -> Result<Vec<EntityRecord>> {
        self.inner.readers.read(|c| entity::entities(c, ids))
    }

    async fn record_report(
        &self,
        id: &EntityId,
        capabilities: Option<&DeviceCapabilities>,
        status: Option<(Status, UnixMillis)>,
    ) -> Result<StatusRecord> {
        let (id, caps) = (id.clone(), capabilities.cloned());
        self.write(move |c| status::record_report(c, &id, caps.as_ref(), status))
            .await
    }

    async fn register_pn(&self, p: &PnRecord) -> Result<()> {
        let p = p.clone();
        self.write(move |c| pn::register_pn(c, &p)).await
    }

    async fn upsert_member(&self, p: &PnId, member: &PnMember) -> Result<()> {
        let (p, member) = (*p, member.clone());
        self.write(move |c| pn::upsert_member(c, &p, &member)).await
    }

    async fn update_members(
        &self,
        p: &PnId,
        add: &[PnMember],
        remove: &[EntityId],
        group: Option<&GroupEpoch>,
    ) -> Result<()> {
        let (p, add, remove, group) = (*p, add.to_vec(), remove.to_vec(), group.cloned());
        self.write(move |c| pn::update_members(c, &p, &add, &remove, group.as_ref()))
            .await
    }

    async fn register_pne(
        &self,
        p: &PnId,
        member: &PnMember,
        group: Option<&GroupEpoch>,
    ) -> Result<CpnsId> {
        let group = group.cloned();
        let (p, member) = (*p, member.clone());
        self.write(move |c| pn::register_pne(c, &p, &member, group.as_ref()))
            .await
    }

    async fn reconcile_gateway_pns(
        &self,
        gw: &EntityId,
        listed: &[PnId],
        drop_unlisted_pending: bool,
    ) -> Result<Reconciled> {
        let (gw, listed) = (gw.clone(), listed.to_vec());
        self.write(move |c| pn::reconcile_gateway_pns(c, &gw, &listed, drop_unlisted_pending))
            .await
    }

    async fn confirm_pns(&self, gw: &EntityId, pns: &[PnId]) -> Result<Vec<PnId>> {
        let (gw, pns) = (gw.clone(), pns.to_vec());
        self.write(move |c| pn::confirm_pns(c, &gw, &pns)).await
    }

    async fn remove_pending_pn(&self, p: &PnId) -> Result<bool> {
        let p = *p;
        self.write(move |c| pn::remove_pending_pn(c, &p)).await
    }

    async fn release_pn(&self, gw: &EntityId, p: &PnId) -> Result<bool> {
        let (gw, p) = (gw.clone(), *p);
        self.write(move |c| pn::release_pn(c, &gw, &p)).await
    }

    async fn pn(&self, id: &PnId) -> Result<Option<PnRecord>> {
        self.inner.readers.snapshot(|c| pn::pn(c, id))
    }

    async fn pns_of_gateway(&self, gw: &EntityId) -> Result<Vec<PnRecord>> {
        self.inner.readers.snapshot(|c| pn::pns_of_gateway(c, gw))
    }

    async fn departed(&self, pn: &PnId, pne: &EntityId) -> Result<Option<Departed>> {
        self.inner.readers.read(|c| pn::departed(c, pn, pne))
    }

    async fn pns_of_owner(&self, owner: &UserId) -> Result<Vec<PnRecord>> {
        self.inner.readers.snapshot(|c| pn::pns_of_owner(c, owner))
    }

    async fn all_pns(&self) -> Result<Vec<PnRecord>> {
        self.inner.readers.snapshot(pn::all_pns)
    }

    async fn allocate_cpns_id(&self, pne: &EntityId) -> Result<CpnsId> {
        let pne = pne.clone();
        self.write(move |c| entity::allocate_cpns_id(c, &pne)).await
    }

    async fn secure_window(&self, pn: &PnId, pne: &EntityId) -> Result<(u64, u64)> {
        let (pn, pne) = (*pn, pne.clone());
        self.inner
            .readers
            .read(move |c| pn::secure_window(c, &pn, &pne))
    }

    async fn set_secure_window(&self, pn: &PnId, pne: &EntityId, window: (u64, u64)) -> Result<()> {
        let (pn, pne) = (*pn, pne.clone());
        self.write(move |c| pn::set_secure_window(c, &pn, &pne, window))
            .await
    }

    async fn remember_answer(
        &self,
        sender: &str,
        request_id: u64,
        answer: &[u8],
        now: UnixMillis,
        keep_ms: i64,
    ) -> Result<()> {
        let (sender, answer) = (sender.to_owned(), answer.to_vec());
        self.write(move |c| replay::remember_answer(c, &sender, request_id, &answer, now, keep_ms))
            .await
    }

    async fn answer_of(&self, sender: &str, request_id: u64) -> Result<Option<Vec<u8>>> {
        self.inner
            .readers
            .read(|c| replay::answer_of(c, sender, request_id))
    }

    async fn record_statuses(&self, changes: &[StatusChange]) -> Result<Vec<StatusRecord>> {
        let changes = changes.to_vec();
        self.write(move |c| status::record_statuses(c, &changes))
            .await
    }

    async fn offline_reported_by(
        &self,
        gateway: &EntityId,
        at: UnixMillis,
    ) -> Result<Vec<StatusRecord>> {
        let gateway = gateway.clone();
        self.write(move |c| status::offline_reported_by(c, &gateway, at))
            .await
    }

    async fn served_by(
        &self,
        gateway: &EntityId,
        candidates: &[EntityId],
    ) -> Result<Vec<EntityId>> {
        self.inner
            .readers
            .read(|c| status::served_by(c, gateway, candidates))
    }

    async fn statuses(&self, ids: &[EntityId]) -> Result<Vec<StatusRecord>> {
        self.inner.readers.read(|c| status::statuses(c, ids))
    }

    async fn statuses_of_owner(&self, owner: &UserId) -> Result<Vec<StatusRecord>> {
        self.inner
            .readers
            .read(|c| status::statuses_of_owner(c, owner))
    }

    async fn all_statuses(&self) -> Result<Vec<StatusRecord>> {
        self.inner.readers.read(status::all_statuses)
    }

    async fn add_subscription(&self, s: &SubscriptionRecord) -> Result<Subscribed> {
        let s = s.clone();
        self.write(move |c| status::add_subscription(c, &s)).await
    }

    async fn remove_subscription(&self, subscriber: &EntityId, id: u64) -> Result<bool> {
        let subscriber = subscriber.clone();
        self.write(move |c| status::remove_subscription(c, &subscriber, id))
            .await
    }

    async fn subscription_count(&self, subscriber: &EntityId) -> Result<usize> {
        self.inner
            .readers
            .read(|c| status::subscription_count(c, subscriber))
    }

    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        self.inner.readers.read(status::subscriptions)
    }

    async fn publish_service(&self, entry: &crate::ServiceEntry) -> Result<u64> {
        let entry = entry.clone();
        self.write(move |c| services::publish(c, &entry)).await
    }

    async fn unpublish_service(&self, offerer: &EntityId, service_id: &str) -> Result<bool> {
        let (offerer, service_id) = (offerer.clone(), service_id.to_string());
        self.write(move |c| services::unpublish(c, &offerer, &service_id))
            .await
    }

    async fn discover_services(
        &self,
        query: &crate::ServiceQuery,
    ) -> Result<Vec<crate::ServiceEntry>> {
        self.inner.readers.read(|c| services::discover(c, query))
    }

    async fn service(
        &self,
        dir_id: u64,
        viewer: &crate::ServiceViewer,
        now: crate::UnixMillis,
    ) -> Result<Option<crate::ServiceEntry>> {
        self.inner
            .readers
            .read(|c| services::one(c, dir_id, viewer, now))
    }

    async fn directory_view(
        &self,
        asker: &EntityId,
        ask: &crate::DirectoryAsk,
    ) -> Result<crate::DirectoryView> {
        self.inner
            .readers
            .snapshot(|c| services::view(c, asker, ask))
    }

    async fn add_watch(&self, watch: &crate::WatchRecord) -> Result<u64> {
        let watch = watch.clone();
        self.write(move |c| services::add_watch(c, &watch)).await
    }

    async fn remove_watch(&self, watcher: &EntityId, watch_id: u64) -> Result<bool> {
        let watcher = watcher.clone();
        self.write(move |c| services::remove_watch(c, &watcher, watch_id))
            .await
    }

    async fn watch_candidates(
        &self,
        keywords: &[String],
        offerer: &EntityId,
        limit: u32,
    ) -> Result<Vec<crate::WatchCandidate>> {
        self.inner
            .readers
            .snapshot(|c| services::watch_candidates(c, keywords, offerer, limit))
    }

    async fn create_group(
        &self,
        group: &crate::GroupRecord,
        creator: &crate::GroupMemberRecord,
    ) -> Result<()> {
        let (group, creator) = (group.clone(), creator.clone());
        self.write(move |c| groups::create(c, &group, &creator))
            .await
    }

    async fn group_view(
        &self,
        group_id: &cpns_wire::GroupId,
        asker: &EntityId,
        also: Option<&EntityId>,
        now: crate::UnixMillis,
    ) -> Result<crate::GroupView> {
        self.inner
            .readers
            .snapshot(|c| groups::view(c, group_id, asker, also, now))
    }

    async fn user_reach(
        &self,
        user: &UserId,
        asker: &EntityId,
    ) -> Result<(Option<UserId>, Vec<crate::Reach>)> {
        self.inner.readers.snapshot(|c| {
            Ok((
                super::entity::owner_of(c, asker)?,
                groups::user_reach(c, user)?,
            ))
        })
    }

    async fn change_group(&self, change: &crate::GroupChange) -> Result<()> {
        let change = change.clone();
        self.write(move |c| groups::change(c, &change)).await
    }

    async fn invite_to_group(
        &self,
        group_id: &cpns_wire::GroupId,
        invitee: &EntityId,
        inviter: &EntityId,
        expires_at: crate::UnixMillis,
    ) -> Result<()> {
        let (g, invitee, inviter) = (*group_id, invitee.clone(), inviter.clone());
        self.write(move |c| groups::invite(c, &g, &invitee, &inviter, expires_at))
            .await
    }

    async fn drop_invitation(
        &self,
        group_id: &cpns_wire::GroupId,
        invitee: &EntityId,
    ) -> Result<bool> {
        let (g, invitee) = (*group_id, invitee.clone());
        self.write(move |c| groups::drop_invitation(c, &g, &invitee))
            .await
    }

    async fn delete_group(&self, group_id: &cpns_wire::GroupId) -> Result<bool> {
        let g = *group_id;
        self.write(move |c| groups::delete(c, &g)).await
    }

    async fn open_delivery(&self, records: &[DeliveryRecord]) -> Result<()> {
        let records = records.to_vec();
        self.write(move |c| deliveries::open(c, &records)).await
    }

    async fn close_delivery(
        &self,
        session: &cpns_wire::DeliveryId,
        target: &EntityId,
        bytes: u64,
        results: &[u32],
        ended_at: UnixMillis,
    ) -> Result<bool> {
        let (session, target, results) = (*session, target.clone(), results.to_vec());
        self.write(move |c| deliveries::close(c, &session, &target, bytes, &results, ended_at))
            .await
    }

    async fn expire_deliveries(
        &self,
        started_before: UnixMillis,
        ended_at: UnixMillis,
    ) -> Result<u64> {
        self.write(move |c| deliveries::expire(c, started_before, ended_at))
            .await
    }

    async fn merge_directory(&self, pages: u32, start: bool) -> Result<bool> {
        self.write(move |c| services::merge_step(c, pages, start))
            .await
    }

    async fn deliveries(
        &self,
        session: Option<&cpns_wire::DeliveryId>,
        charged: Option<&UserId>,
    ) -> Result<Vec<DeliveryRecord>> {
        self.inner
            .readers
            .read(|c| deliveries::list(c, session, charged))
    }

    async fn store_usage(&self, rows: &[UsageRow]) -> Result<UsageStored> {
        let rows = rows.to_vec();
        self.write(move |c| usage::store_usage(c, &rows)).await
    }

    async fn usage_summary(
        &self,
        user: Option<&UserId>,
        shared_only: bool,
    ) -> Result<Vec<UsageSummary>> {
        self.inner
            .readers
            .read(|c| usage::usage_summary(c, user, shared_only))
    }

    async fn charging_records(
        &self,
        user: &UserId,
        since_s: u64,
    ) -> Result<Vec<cpns_wire::ChargingRecord>> {
        self.inner
            .readers
            .read(|c| usage::charging_records(c, user, since_s))
    }

    async fn pn_view(
        &self,
        id: &PnId,
        answer_of: Option<(&str, u64)>,
        entities: &[EntityId],
    ) -> Result<PnView> {
        self.inner
            .readers
            .snapshot(|c| views::pn_view(c, id, answer_of, entities))
    }

    async fn member_view(&self, id: &PnId, pne: &EntityId) -> Result<MemberView> {
        self.inner
            .readers
            .snapshot(|c| views::member_view(c, id, pne))
    }

    async fn set_contents(
        &self,
        pne: &EntityId,
        contents: &[cpns_wire::ContentItem],
    ) -> Result<u32> {
        let (pne, blob) = (pne.clone(), super::codec::contents_blob(contents));
        self.write(move |c| {
            let n = super::codec::exec(
                c,
                "UPDATE pn_members SET contents = ? WHERE pne_id = ?",
                rusqlite::params![blob, pne.as_str()],
            )?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn inventory_view(
        &self,
        asker: &EntityId,
        id: Option<&PnId>,
        now: UnixMillis,
    ) -> Result<InventoryView> {
        self.inner
            .readers
            .snapshot(|c| views::inventory_view(c, asker, id, now))
    }

    async fn usage_owners(&self, entity: &EntityId, id: &PnId) -> Result<Owners> {
        self.inner
            .readers
            .read(|c| views::usage_owners(c, entity, id))
    }

    async fn charging_records_of(
        &self,
        entity: &EntityId,
        since_s: u64,
    ) -> Result<Vec<cpns_wire::ChargingRecord>> {
        self.inner
            .readers
            .snapshot(|c| views::charging_records_of(c, entity, since_s))
    }

    async fn status_view(
        &self,
        asker: &EntityId,
        named: &[EntityId],
        of_user: bool,
        subscriptions: bool,
    ) -> Result<StatusView> {
        self.inner
            .readers
            .snapshot(|c| views::status_view(c, asker, named, of_user, subscriptions))
    }
}
