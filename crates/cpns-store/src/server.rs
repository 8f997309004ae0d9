//! The CPNS Server's store of record (docs/design.md §5): users and enrolled entities, the PN inventory
//! with its members, group key epochs and ended memberships, kept answers of mutating requests,
//! statuses of record, subscriptions, usage and charging records. The server's machine reaches
//! it through the node's adapter (`cpns_node::server_store`), one transaction per effect.

use core::future::Future;

use cpns_wire::{CpnsId, DeviceCapabilities, EntityId, PnId, Status, UserId};

#[cfg(doc)]
use crate::StoreError;
use crate::{
    DeliveryRecord, Departed, DirectoryAsk, DirectoryView, EntityRecord, GroupChange, GroupEpoch,
    GroupMemberRecord, GroupRecord, GroupView, InventoryView, MemberView, Owners, PnMember,
    PnRecord, PnView, Reconciled, Result, ServiceEntry, ServiceQuery, ServiceViewer, StatusChange,
    StatusRecord, StatusView, Subscribed, SubscriptionRecord, UnixMillis, UsageRow, UsageStored,
    UsageSummary, WatchCandidate, WatchRecord,
};

/// The CPNS Server's state of record. Every write is one transaction; every read that takes
/// several queries sees one snapshot: the last methods ([`ServerStore::pn_view`] and after)
/// give each of the server's flows what it reads, in one snapshot.
pub trait ServerStore: Send + Sync + 'static {
    /// Adds a user; does nothing if it exists.
    fn ensure_user(&self, user: &UserId) -> impl Future<Output = Result<()>> + Send;

    /// Enrolls an entity. Fails with [`StoreError::Conflict`] if the id is taken and with
    /// [`StoreError::NotFound`] if its owner is not a user.
    fn insert_entity(&self, entity: &EntityRecord) -> impl Future<Output = Result<()>> + Send;

    /// Looks up one entity.
    fn entity(&self, id: &EntityId) -> impl Future<Output = Result<Option<EntityRecord>>> + Send;

    /// Looks up several entities in one query; absent ids are left out of the result, the others
    /// come in the order of their first mention in `ids`.
    fn entities(&self, ids: &[EntityId]) -> impl Future<Output = Result<Vec<EntityRecord>>> + Send;

    /// Records what an entity reported of itself in one transaction (002 §B.1.1.2 steps
    /// 12-17, 004 §5.5.1, §5.5.3): its capabilities with the attributes they carry, and/or its
    /// status as of `status.1` (no label, reported by no PN GW); `None` keeps what is recorded.
    /// Its status record as now. [`StoreError::NotFound`] if it is not enrolled.
    fn record_report(
        &self,
        id: &EntityId,
        capabilities: Option<&DeviceCapabilities>,
        status: Option<(Status, UnixMillis)>,
    ) -> impl Future<Output = Result<StatusRecord>> + Send;

    /// Registers a PN with its members in one transaction (000 §6.6.1.1 step 11). Registering a
    /// PN id that exists with the same gateway replaces its member list (a retried
    /// registration: owner, state and members are replaced, `created_at` and the PN's place in
    /// creation order are kept); with another gateway it is a [`StoreError::Conflict`].
    fn register_pn(&self, pn: &PnRecord) -> impl Future<Output = Result<()>> + Send;

    /// Adds or updates one member of an existing PN (003 §1.4.2 step 4, 000 §6.6.2).
    /// [`StoreError::NotFound`] if the PN does not exist. A new member goes after the existing
    /// ones. An existing member keeps its `joined_at` and position and is never downgraded
    /// (issue 6, "Identity on the PAN"): `authenticated` and `initiator` only go from false to
    /// true, and a `None` capabilities or session key keeps the stored one; given values
    /// replace stored ones.
    fn upsert_member(
        &self,
        pn: &PnId,
        member: &PnMember,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Changes the member list of an existing PN in one transaction (000 §6.6.2, 003 §1.4.2
    /// step 4): first removes the members in `remove` (ids that are not members are ignored),
    /// then adds or updates each of `add` as [`ServerStore::upsert_member`] does (a new member goes
    /// after the existing ones; an existing one keeps its `joined_at` and position and is never
    /// downgraded). A PNE both
    /// removed and added is therefore re-added at the end. With `group`, the PN moves to that
    /// group key epoch in the same transaction (docs/pn-lifecycle.md, "Group key epochs").
    /// [`StoreError::NotFound`] if the PN does not exist; on any error nothing changes.
    fn update_members(
        &self,
        pn: &PnId,
        add: &[PnMember],
        remove: &[EntityId],
        group: Option<&GroupEpoch>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Registers a PNE with a PN in one transaction (003 §1.4.1 step 3): allocates the PNE's
    /// CPNS ID as [`ServerStore::allocate_cpns_id`] does (returning the one it already has, if any)
    /// and adds or updates `member` as [`ServerStore::upsert_member`] does, so the CPNS ID and the
    /// member's session key land together or not at all. [`StoreError::NotFound`] if the PN
    /// does not exist or `member.pne_id` is not an enrolled entity; on any error nothing
    /// changes and no CPNS ID number is used up. With `group`, the PN moves to that group key
    /// epoch in the same transaction (a PNE that joins by registering, 000 §6.6.2.2).
    fn register_pne(
        &self,
        pn: &PnId,
        member: &PnMember,
        group: Option<&GroupEpoch>,
    ) -> impl Future<Output = Result<CpnsId>> + Send;

    /// 002 §B.1.1.2 step 17: brings the inventory in line with the PN list a PN GW reports.
    /// In one transaction: listed pending PNs of `gw` become active; active PNs of `gw` that are
    /// not listed are removed with their members; unlisted pending PNs are removed only when
    /// `drop_unlisted_pending` (no registration of this PN GW can still be in flight). Listed
    /// PNs that are unknown or belong to another gateway change nothing and are reported.
    fn reconcile_gateway_pns(
        &self,
        gw: &EntityId,
        listed: &[PnId],
        drop_unlisted_pending: bool,
    ) -> impl Future<Output = Result<Reconciled>> + Send;

    /// Confirms PNs a PN GW reports it has stored since its last report (a partial status
    /// report, docs/ARCHITECTURE.md decision 8): each listed PN of `gw` that is pending becomes
    /// active; nothing is removed. Returns the PNs confirmed, in the order listed. PNs that are
    /// unknown, of another gateway or already active change nothing. Costs one lookup per
    /// listed PN, whatever the number of PNs `gw` holds.
    fn confirm_pns(
        &self,
        gw: &EntityId,
        pns: &[PnId],
    ) -> impl Future<Output = Result<Vec<PnId>>> + Send;

    /// Removes a PN that is still pending (its PN GW never confirmed it), with its members;
    /// true if it was there and pending. An active PN is left alone.
    fn remove_pending_pn(&self, pn: &PnId) -> impl Future<Output = Result<bool>> + Send;

    /// Releases PN `pn` of PN GW `gw` (000 §6.6.5 step 2): removes it with its members, in any
    /// state. True if it was there; false if there is no such PN (already released: a retry).
    /// [`StoreError::Conflict`] if the PN belongs to another PN GW, which is left alone.
    fn release_pn(&self, gw: &EntityId, pn: &PnId) -> impl Future<Output = Result<bool>> + Send;

    /// One PN with its members.
    fn pn(&self, id: &PnId) -> impl Future<Output = Result<Option<PnRecord>>> + Send;

    /// All PNs served by a gateway, in creation order.
    fn pns_of_gateway(&self, gw: &EntityId) -> impl Future<Output = Result<Vec<PnRecord>>> + Send;

    /// The membership of `pne` in `pn` that ended (it left or was removed, or the PN was
    /// released), if the server keeps it: the SK_PNE it held, to tell it so.
    fn departed(
        &self,
        pn: &PnId,
        pne: &EntityId,
    ) -> impl Future<Output = Result<Option<Departed>>> + Send;

    /// All PNs of a user (served by its PN GWs), in creation order.
    fn pns_of_owner(&self, owner: &UserId) -> impl Future<Output = Result<Vec<PnRecord>>> + Send;

    /// All PNs, in creation order.
    fn all_pns(&self) -> impl Future<Output = Result<Vec<PnRecord>>> + Send;

    /// Allocates the CPNS ID of a PNE (003 §1.4.1 step 3), or returns the one it already has.
    /// Ids are distinct and never reused. [`StoreError::NotFound`] if the entity is not enrolled.
    fn allocate_cpns_id(&self, pne: &EntityId) -> impl Future<Output = Result<CpnsId>> + Send;

    /// Keeps the answer to a mutating request of `sender` (docs/design.md §3 idempotency, §5), so that a
    /// retry with the same request id, after a reconnect or a restart, gets the same answer.
    /// Replaces an earlier answer of the same key; in the same transaction drops every record
    /// older than `keep_ms` before `now`.
    fn remember_answer(
        &self,
        sender: &str,
        request_id: u64,
        answer: &[u8],
        now: UnixMillis,
        keep_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The replay window of `pne`'s secure session in `pn` (docs/security.md §4.8): the
    /// highest Secure Request number taken and the map of the 64 ending at it; `(0, 0)` for a
    /// member that made no call since its SK_PNE was set, or no member.
    fn secure_window(
        &self,
        pn: &PnId,
        pne: &EntityId,
    ) -> impl Future<Output = Result<(u64, u64)>> + Send;

    /// Keeps the replay window of `pne`'s secure session in `pn`. A new SK_PNE for the member
    /// (`upsert_member`, `register_pne` with a session key) starts it again at `(0, 0)`.
    /// [`StoreError::NotFound`](crate::StoreError) if `pne` is no member of `pn`.
    fn set_secure_window(
        &self,
        pn: &PnId,
        pne: &EntityId,
        window: (u64, u64),
    ) -> impl Future<Output = Result<()>> + Send;

    /// The answer kept for `sender`'s request `request_id`, if any.
    fn answer_of(
        &self,
        sender: &str,
        request_id: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Records status changes in one transaction, keeping each entity's attributes
    /// (004 §5.5.3); the records as now, in the order of `changes`. [`StoreError::NotFound`],
    /// and nothing recorded, if one is not enrolled.
    fn record_statuses(
        &self,
        changes: &[StatusChange],
    ) -> impl Future<Output = Result<Vec<StatusRecord>>> + Send;

    /// Which of `candidates` are members of a PN `gateway` serves.
    fn served_by(
        &self,
        gateway: &EntityId,
        candidates: &[EntityId],
    ) -> impl Future<Output = Result<Vec<EntityId>>> + Send;

    /// Turns `gateway` and every entity its session reported offline as of `at`, in one
    /// transaction; the records that changed (a session that ended: docs/device-status.md).
    fn offline_reported_by(
        &self,
        gateway: &EntityId,
        at: UnixMillis,
    ) -> impl Future<Output = Result<Vec<StatusRecord>>> + Send;

    /// The status records of the enrolled entities among `ids`, in the order of `ids`.
    fn statuses(&self, ids: &[EntityId]) -> impl Future<Output = Result<Vec<StatusRecord>>> + Send;

    /// The status records of every entity of `owner`, by id.
    fn statuses_of_owner(
        &self,
        owner: &UserId,
    ) -> impl Future<Output = Result<Vec<StatusRecord>>> + Send;

    /// Every entity's status record, by id.
    fn all_statuses(&self) -> impl Future<Output = Result<Vec<StatusRecord>>> + Send;

    /// Keeps a status subscription (its `id` is ignored) and returns it with its id, and the
    /// status records of what it watches, in one transaction (004 §5.5.3.2: the snapshot the
    /// subscriber starts from). A retry (same subscriber and request id) returns the one kept
    /// first, unchanged. [`StoreError::NotFound`] if the subscriber is not enrolled.
    fn add_subscription(
        &self,
        subscription: &SubscriptionRecord,
    ) -> impl Future<Output = Result<Subscribed>> + Send;

    /// Removes `subscriber`'s subscription `id`; false if it has none such.
    fn remove_subscription(
        &self,
        subscriber: &EntityId,
        id: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// How many status subscriptions `subscriber` holds.
    fn subscription_count(
        &self,
        subscriber: &EntityId,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Every status subscription, oldest first.
    fn subscriptions(&self) -> impl Future<Output = Result<Vec<SubscriptionRecord>>> + Send;

    /// Publishes a service (its `dir_id` is ignored), or updates the one its offerer published
    /// with the same `service_id` (keeping its directory id); returns the directory id.
    /// [`StoreError::NotFound`] if the offerer is not enrolled.
    fn publish_service(&self, entry: &ServiceEntry) -> impl Future<Output = Result<u64>> + Send;

    /// Takes an offerer's service out of the directory; whether it was there.
    fn unpublish_service(
        &self,
        offerer: &EntityId,
        service_id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The entries `query.viewer` may see that match `query`, by directory id, whose lease has
    /// not ended.
    fn discover_services(
        &self,
        query: &ServiceQuery,
    ) -> impl Future<Output = Result<Vec<ServiceEntry>>> + Send;

    /// One entry, if `viewer` may see it and its lease has not ended by `now`.
    fn service(
        &self,
        dir_id: u64,
        viewer: &ServiceViewer,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<ServiceEntry>>> + Send;

    /// What `asker`'s directory request reads, in one snapshot (004 §5.5.5): the asker as a
    /// viewer (none if not enrolled), its capabilities of record, and what `ask` names as that
    /// viewer sees it.
    fn directory_view(
        &self,
        asker: &EntityId,
        ask: &DirectoryAsk,
    ) -> impl Future<Output = Result<DirectoryView>> + Send;

    /// Keeps a service watch (its `watch_id` is ignored); returns its id.
    /// [`StoreError::NotFound`] if the watcher is not enrolled.
    fn add_watch(&self, watch: &WatchRecord) -> impl Future<Output = Result<u64>> + Send;

    /// Ends `watcher`'s watch `watch_id`; whether it was kept.
    fn remove_watch(
        &self,
        watcher: &EntityId,
        watch_id: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The watches, other than `offerer`'s, that an entry with `keywords` may match: those with
    /// one of these keywords, and those of every entry; each with its watcher's key in the
    /// watch's PN (a watch whose watcher is no longer an authenticated member there is left
    /// out), by watch id, at most `limit`. Which of them match is the caller's to decide.
    fn watch_candidates(
        &self,
        keywords: &[String],
        offerer: &EntityId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<WatchCandidate>>> + Send;

    /// Makes a service group with its creator as its first member (004 §5.5.9).
    /// [`StoreError::Conflict`] if the id is taken; [`StoreError::NotFound`] if the creator is not
    /// enrolled.
    fn create_group(
        &self,
        group: &GroupRecord,
        creator: &GroupMemberRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// What a request of `asker` about group `group_id` reads, in one snapshot: the group, its
    /// members with their keys and PN GWs, `asker`'s invitation if one holds at `now`, `asker`'s
    /// user and how many groups it is in, and where pushing to `also` goes.
    fn group_view(
        &self,
        group_id: &cpns_wire::GroupId,
        asker: &EntityId,
        also: Option<&EntityId>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<GroupView>> + Send;

    /// Every PN where a device of `user` is an authenticated member with an SK_PNE, as where
    /// pushing to it there goes: by device id, then by the PN's creation (a delivery to a user,
    /// docs/services.md, "To a user"). The asker's user comes with them, if it is enrolled.
    fn user_reach(
        &self,
        user: &UserId,
        asker: &EntityId,
    ) -> impl Future<Output = Result<(Option<UserId>, Vec<crate::Reach>)>> + Send;

    /// Changes a group's members and moves it to the next epoch, in one transaction.
    /// [`StoreError::Conflict`] if it is not at `change.from_epoch` (or gone).
    fn change_group(&self, change: &GroupChange) -> impl Future<Output = Result<()>> + Send;

    /// Keeps an invitation of `invitee` to a group until `expires_at` (another replaces it).
    /// [`StoreError::NotFound`] if the group does not exist.
    fn invite_to_group(
        &self,
        group_id: &cpns_wire::GroupId,
        invitee: &EntityId,
        inviter: &EntityId,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Drops `invitee`'s invitation to a group (a decline); whether there was one.
    fn drop_invitation(
        &self,
        group_id: &cpns_wire::GroupId,
        invitee: &EntityId,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes a group, its members, invitations and key; whether it existed.
    fn delete_group(
        &self,
        group_id: &cpns_wire::GroupId,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Opens a delivery session's records, one per target and item, in one transaction (004
    /// §5.5.8). [`StoreError::Conflict`] if the session has records already.
    fn open_delivery(&self, records: &[DeliveryRecord]) -> impl Future<Output = Result<()>> + Send;

    /// Ends `target`'s part of `session`: the bytes it received from the session's start, and
    /// how each item ended (`results[i]` for item `i`; one result: every item's). Each item's
    /// record gets the bytes of it among those (items follow one another in order). False if
    /// the target has no open record (none, or ended already): nothing changes;
    /// [`StoreError::Conflict`] if `results` is empty, names another number of items, or is
    /// one `delivered` or `hash mismatch` for a session of several (each item's own). An
    /// item that ends delivered (result 1) with a tariff (`per_mb`) writes its charging record
    /// in the same transaction: to the user charged, with the PN's owner when that is another
    /// user, `cpns_wire::charge_units(per_mb, size)` units.
    fn close_delivery(
        &self,
        session: &cpns_wire::DeliveryId,
        target: &EntityId,
        bytes: u64,
        results: &[u32],
        ended_at: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Ends every delivery record still open that started before `started_before` (its
    /// target never ended it: gone for good, docs/services.md "A target gone for good"):
    /// result `failed` (4) at `ended_at`, its bytes as they were. How many it ended. A target
    /// that ends it later finds it ended ([`ServerStore::close_delivery`] gives false).
    fn expire_deliveries(
        &self,
        started_before: UnixMillis,
        ended_at: UnixMillis,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// One step of merging the service directory's full-text index into one segment, a
    /// write of its own so that other writes go between steps (docs/services.md, "The
    /// directory's store"): about `pages` pages of merged index; `start` begins a merge of
    /// every segment, later steps go on with it. Whether the step did work (false: the index
    /// is merged).
    fn merge_directory(&self, pages: u32, start: bool)
    -> impl Future<Output = Result<bool>> + Send;

    /// Delivery records, oldest first: of one session, or of what one user was charged, or
    /// every one.
    fn deliveries(
        &self,
        session: Option<&cpns_wire::DeliveryId>,
        charged: Option<&UserId>,
    ) -> impl Future<Output = Result<Vec<DeliveryRecord>>> + Send;

    /// Stores usage records with the charging records they make, in one transaction; a
    /// record stored before (same entity and record id) is a duplicate and charges nothing
    /// again (004 §5.5.4).
    fn store_usage(&self, rows: &[UsageRow]) -> impl Future<Output = Result<UsageStored>> + Send;

    /// Usage per user and service, of `user` or of every user; with `shared_only`, only what
    /// the users let go to external applications.
    fn usage_summary(
        &self,
        user: Option<&UserId>,
        shared_only: bool,
    ) -> impl Future<Output = Result<Vec<UsageSummary>>> + Send;

    /// The charging records of `user` for uses started at or after `since_s`, oldest first.
    fn charging_records(
        &self,
        user: &UserId,
        since_s: u64,
    ) -> impl Future<Output = Result<Vec<cpns_wire::ChargingRecord>>> + Send;

    /// What a flow that registers or changes PN `pn` reads, in one snapshot (000 §6.6.1.1 step
    /// 5, §6.6.2, §6.6.3, §6.6.5; 003 §1.4.1): the PN with its members, the answer kept for
    /// `answer_of` (sender, request id) as [`ServerStore::answer_of`] reads it, and the
    /// enrolled entities among `entities` as [`ServerStore::entities`] reads them.
    fn pn_view(
        &self,
        pn: &PnId,
        answer_of: Option<(&str, u64)>,
        entities: &[EntityId],
    ) -> impl Future<Output = Result<PnView>> + Send;

    /// What member `pne`'s request about PN `pn` reads, in one snapshot (002 §B.1.1.3 step
    /// 22): the PN with its members and, if `pne` is not one of them, its membership there
    /// that ended, as [`ServerStore::departed`] reads it.
    fn member_view(
        &self,
        pn: &PnId,
        pne: &EntityId,
    ) -> impl Future<Output = Result<MemberView>> + Send;

    /// What `asker`'s inventory query reads, in one snapshot (004 §5.5.10): its user, and PN
    /// `pn` if given, else every PN of that user (none if `asker` is not enrolled), and the
    /// directory entries of their members that `asker` may see at `now`.
    fn inventory_view(
        &self,
        asker: &EntityId,
        pn: Option<&PnId>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<InventoryView>> + Send;

    /// `pne` declares the contents it holds now (004 §5.5.10): they replace what it announced
    /// in every PN it is a member of. How many memberships changed.
    fn set_contents(
        &self,
        pne: &EntityId,
        contents: &[cpns_wire::ContentItem],
    ) -> impl Future<Output = Result<u32>> + Send;

    /// The user of `entity` and the owner of PN `pn`, in one snapshot (004 §5.5.4: whom a
    /// usage report is charged to).
    fn usage_owners(
        &self,
        entity: &EntityId,
        pn: &PnId,
    ) -> impl Future<Output = Result<Owners>> + Send;

    /// The charging records of the user owning `entity`, as
    /// [`ServerStore::charging_records`] reads them, in one snapshot; none if `entity` is not
    /// enrolled.
    fn charging_records_of(
        &self,
        entity: &EntityId,
        since_s: u64,
    ) -> impl Future<Output = Result<Vec<cpns_wire::ChargingRecord>>> + Send;

    /// What `asker`'s status query or subscription reads, in one snapshot (004 §5.5.3.2): the
    /// status records of `asker` and of `named`; with `of_user`, of every device of `asker`'s
    /// user; with `subscriptions`, how many subscriptions `asker` holds.
    fn status_view(
        &self,
        asker: &EntityId,
        named: &[EntityId],
        of_user: bool,
        subscriptions: bool,
    ) -> impl Future<Output = Result<StatusView>> + Send;
}
