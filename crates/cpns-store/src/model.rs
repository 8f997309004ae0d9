//! The records the store keeps: users, enrolled entities, the server's PN inventory of record,
//! and the local PN inventory a PN GW or PNE keeps for itself (000 §6.6.1.1 step 13, step 15).
//!
//! Values cross the store's traits as their types (capabilities, contents, statuses, usage
//! preferences); each backend encodes them as it keeps them. Secrets never appear here in the
//! clear: EUKeys, session keys and LocalEUKeys are sealed by the caller (cpns-crypto's at-rest
//! sealing) before they reach the store.

use cpns_wire::{ContentItem, CpnsId, DeviceCapabilities, EntityId, InventoryMember, PnId, UserId};

/// Milliseconds since the Unix epoch, as stored.
pub type UnixMillis = i64;

/// Which CPNS role an enrolled entity takes (004 §5.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A Personal Network Element.
    Pne,
    /// A PN Gateway.
    Gateway,
    /// A device able to serve either role: a PNE, or a PN GW once elected (002 §B.1.1.1).
    Both,
}

impl EntityKind {
    /// Whether the entity may serve as a PN GW.
    pub fn is_gateway(self) -> bool {
        matches!(self, EntityKind::Gateway | EntityKind::Both)
    }

    /// The stored name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Pne => "pne",
            EntityKind::Gateway => "gateway",
            EntityKind::Both => "both",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pne" => Some(EntityKind::Pne),
            "gateway" => Some(EntityKind::Gateway),
            "both" => Some(EntityKind::Both),
            _ => None,
        }
    }
}

/// An entity enrolled with the server (`cpns enroll`): one PNE or PN GW of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityRecord {
    /// PNE ID or PN GW ID.
    pub id: EntityId,
    /// Role of the entity.
    pub kind: EntityKind,
    /// The user owning the entity.
    pub owner: UserId,
    /// The EUKey, sealed under the server master key with the entity id as associated data.
    pub sealed_eukey: Vec<u8>,
    /// Last reported device capabilities, if any (its status of record is a
    /// [`StatusRecord`]).
    pub capabilities: Option<DeviceCapabilities>,
    /// CPNS ID allocated at PNE registration (003 §1.4.1 step 3), if any.
    pub cpns_id: Option<CpnsId>,
    /// When the entity was enrolled.
    pub enrolled_at: UnixMillis,
}

/// State of a PN in the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PnState {
    /// Registered by the server, not yet confirmed by the PN GW's own store (its next PN list
    /// report, 002 §B.1.1.2 step 16, lists it). Removed if never confirmed.
    Pending,
    /// Registered and usable.
    Active,
    /// Released (000 §6.6.5); kept for the record.
    Released,
}

impl PnState {
    /// The stored name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            PnState::Pending => "pending",
            PnState::Active => "active",
            PnState::Released => "released",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(PnState::Pending),
            "active" => Some(PnState::Active),
            "released" => Some(PnState::Released),
            _ => None,
        }
    }
}

/// One PNE's membership of a PN in the server's inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PnMember {
    /// PNE ID of the member.
    pub pne_id: EntityId,
    /// Whether this PNE initiated the PN establishment.
    pub initiator: bool,
    /// Whether the member was authenticated by hash_PNE (000 §6.6.1.1 step 11). Members added by a
    /// PN update before registration (003 §1.4.2 step 4) start unauthenticated.
    pub authenticated: bool,
    /// Device capabilities, if any. Written: those it joined with; read: those of record, the
    /// latest the device reported ([`crate::ServerStore::record_report`]) if it did, else those
    /// it joined with.
    pub capabilities: Option<DeviceCapabilities>,
    /// SK_PNE sealed under the server master key, for the PNE<->server secure session.
    pub sealed_session_key: Option<Vec<u8>>,
    /// Contents the PNE announced (000 §6.6.1.1 step 1). Like capabilities, none in an upsert
    /// keeps the stored ones.
    pub contents: Vec<ContentItem>,
    /// When the member joined.
    pub joined_at: UnixMillis,
    /// The member's own user when it is not the PN owner's (a multi-user PN, 001 §5.2.1.1
    /// step 10): confirmed by that user's PN GW, and charged for the member's use. `None` for
    /// the owner's own PNEs; `None` in an upsert keeps the stored value.
    pub owner: Option<UserId>,
}

/// A PN's current group key epoch as kept at rest (docs/pn-lifecycle.md, "Group key epochs"):
/// the server's copy sealed under K_rest, a PNE's under its own storage key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEpoch {
    /// The epoch: 1 for the first group key, one more at every membership change.
    pub epoch: u64,
    /// That epoch's group key, sealed.
    pub sealed_key: Vec<u8>,
}

/// Why a PNE is no longer a member of a PN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// It left, or was expelled.
    Removed,
    /// The PN was released.
    Released,
}

impl Departure {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Departure::Removed => "removed",
            Departure::Released => "released",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "removed" => Some(Departure::Removed),
            "released" => Some(Departure::Released),
            _ => None,
        }
    }
}

/// A PNE's membership that ended, as the server keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departed {
    /// The SK_PNE it held in the PN, sealed at rest as in [`PnMember::sealed_session_key`].
    pub sealed_session_key: Vec<u8>,
    /// Why it ended.
    pub why: Departure,
}

/// A PN in the server's inventory of record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PnRecord {
    /// The PN id.
    pub pn_id: PnId,
    /// The PN GW that built and serves the PN.
    pub gateway: EntityId,
    /// The user owning the PN GW, hence the PN.
    pub owner: UserId,
    /// State of the PN.
    pub state: PnState,
    /// When the PN was registered.
    pub created_at: UnixMillis,
    /// Its members, in the order they were added.
    pub members: Vec<PnMember>,
    /// Its current group key epoch, once it has one.
    pub group: Option<GroupEpoch>,
    /// When it expires and is released, if it has a lifetime (beyond the documents).
    pub expires_at: Option<UnixMillis>,
    /// The most members it may have, if limited.
    pub max_members: Option<u32>,
}

/// What reconciling a PN GW's PN list with the inventory did (002 §B.1.1.2 step 17).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Pending PNs the list confirmed: now active.
    pub confirmed: Vec<PnId>,
    /// PNs of the PN GW the list does not hold: removed from the inventory.
    pub removed: Vec<PnId>,
    /// Listed PNs the inventory does not hold (or holds for another PN GW).
    pub unknown: Vec<PnId>,
}

impl PnMember {
    /// As a PN inventory lists it (000 §6.6.1.1 step 12).
    pub fn inventory_member(&self) -> InventoryMember {
        InventoryMember {
            pne_id: self.pne_id.clone(),
            capabilities: self.capabilities.clone(),
            contents: self.contents.clone(),
        }
    }
}

/// One member as the PN GW keeps it locally, with its LocalEUKey and route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMember {
    /// PNE ID of the member.
    pub pne_id: EntityId,
    /// The member's device capabilities, as the PN inventory holds them.
    pub capabilities: Option<DeviceCapabilities>,
    /// LocalEUKey shared with this PNE, sealed under the device's own storage key, if assigned.
    pub sealed_local_key: Option<Vec<u8>>,
    /// Route to the PNE in the PAN (e.g. its PAN session address), as the routing table holds it.
    pub route: Option<String>,
    /// Contents the PNE announced.
    pub contents: Vec<ContentItem>,
}

impl LocalMember {
    /// As a PN inventory lists it.
    pub fn inventory_member(&self) -> InventoryMember {
        InventoryMember {
            pne_id: self.pne_id.clone(),
            capabilities: self.capabilities.clone(),
            contents: self.contents.clone(),
        }
    }
}

/// A PNE's secure session with the server, as it keeps it (003 §1.4.1 step 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSession {
    /// The PNE's CPNS ID.
    pub cpns_id: CpnsId,
    /// The PN it registered in.
    pub pn_id: PnId,
    /// SK_PNE sealed under the device's own storage key.
    pub sealed_session_key: Vec<u8>,
    /// Seconds the session is valid for.
    pub lifetime_s: i64,
    /// When it was stored.
    pub stored_at: UnixMillis,
}

/// A delivery record (table `delivery_records`; 004 §5.5.8): one target's part of a delivery
/// session, the operator's charging basis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The session.
    pub session: cpns_wire::DeliveryId,
    /// The target.
    pub target: EntityId,
    /// The item's place in its session (0 the first): a session carries one or more items,
    /// each delivered as its own service (004 §5.5.8.2, "Supporting single/multiple
    /// services").
    pub item: u32,
    /// The service it was delivered as.
    pub service_id: String,
    /// The source.
    pub source: EntityId,
    /// The targets' PN (whose PN GW relayed it to them; forwarded, not the source's).
    pub pn_id: PnId,
    /// The user charged: the target's.
    pub charged: UserId,
    /// The item's name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Bytes of it the target said it received (0 while open).
    pub bytes: u64,
    /// When the session was set up.
    pub started_at: UnixMillis,
    /// When the target ended it, once it did.
    pub ended_at: Option<UnixMillis>,
    /// How it ended (`cpns_wire::DeliveryResult` code), once it did.
    pub result: Option<u32>,
    /// The service's tariff when the session was set up, units per started MB; none: not
    /// chargeable. A target's part that ends delivered is charged by it, in the same
    /// transaction ([`crate::ServerStore::close_delivery`]).
    pub per_mb: Option<u64>,
}

/// A PNE's key of a service group it is a member of (table `local_service_groups`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalServiceGroup {
    /// The group.
    pub group_id: cpns_wire::GroupId,
    /// Its name.
    pub name: String,
    /// The epoch of the key kept.
    pub epoch: u64,
    /// That epoch's key, sealed under the device's storage key (docs/security.md §4.10).
    pub sealed_key: Vec<u8>,
    /// When it was stored.
    pub stored_at: UnixMillis,
}

/// A delivery session a PNE keeps across a restart (table `local_deliveries`), as its source or
/// one of its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalDelivery {
    /// The session.
    pub session: cpns_wire::DeliveryId,
    /// Kept by its source (else by a target).
    pub as_source: bool,
    /// The session's key, sealed under the device's storage key (docs/security.md §4.9).
    pub sealed_key: Vec<u8>,
    /// What the session is, in CBOR: a source's grant, a target's invitation, without the key.
    pub description: Vec<u8>,
    /// A source's files, each with its size as offered, in the session's order; none for a
    /// target.
    pub files: Vec<(String, u64)>,
    /// When it was stored.
    pub stored_at: UnixMillis,
}

/// A PN GW's LocalEUKey copy of a member whose membership ended while it was away (table
/// `local_departed`): kept so the PNE can prove itself and hear the server's word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepartedKey {
    /// The PN the PNE was a member of.
    pub pn_id: PnId,
    /// The PNE.
    pub pne_id: EntityId,
    /// The PN GW's copy in its stored form, rand_server ‖ wrapped (docs/security.md §4.2).
    pub sealed_local_key: Vec<u8>,
    /// When the membership ended, Unix milliseconds.
    pub departed_at: i64,
}

/// A PN as a PN GW or PNE stores it locally (000 §6.6.1.1 steps 13-15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPn {
    /// The PN id.
    pub pn_id: PnId,
    /// The PN GW serving the PN.
    pub gateway: EntityId,
    /// Members of the PN (for a PNE: as the inventory it received lists them).
    pub members: Vec<LocalMember>,
    /// When it was stored.
    pub stored_at: UnixMillis,
    /// A PNE's own SK_PNE for this PN, sealed under its storage key: it opens the group key
    /// copies the server seals for it. `None` on a PN GW.
    pub sealed_session_key: Option<Vec<u8>>,
    /// A PNE's current group key epoch of this PN. `None` on a PN GW.
    pub group: Option<GroupEpoch>,
    /// On a PN GW: when the PN's lifetime ends and the PN GW releases it, if it has one.
    pub expires_at: Option<UnixMillis>,
    /// On a PNE: the last number it gave a Secure Request under its SK_PNE of this PN
    /// (docs/security.md §4.8); 0 on a PN GW.
    pub secure_seq: u64,
}

/// An entity's status of record (004 §5.5.3; status columns of `entities`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRecord {
    /// The entity.
    pub entity: EntityId,
    /// Its owner (read from its enrolment; ignored when writing).
    pub owner: Option<UserId>,
    /// Its status: `Offline` if it was never reported.
    pub status: cpns_wire::Status,
    /// The label of a custom status.
    pub label: Option<String>,
    /// When it took this status; `None` if it was never reported.
    pub since: Option<UnixMillis>,
    /// The PN GW whose session reported it (for a PNE: turned offline when that session ends).
    pub reported_by: Option<EntityId>,
    /// Numeric attributes policies look at, from its capabilities.
    pub attributes: Attributes,
}

/// A status to record for an entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The entity.
    pub entity: EntityId,
    /// Its new status.
    pub status: cpns_wire::Status,
    /// The label of a custom status.
    pub label: Option<String>,
    /// When it took it.
    pub since: UnixMillis,
    /// The PN GW whose session reports it, for a PNE.
    pub reported_by: Option<EntityId>,
}

/// The numeric attributes of an entity that status policies look at (docs/device-status.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Remaining battery, percent.
    pub battery_pct: Option<u8>,
    /// Remaining battery time, minutes.
    pub battery_minutes: Option<u32>,
    /// Memory available, MiB.
    pub free_memory_mb: Option<u32>,
}

impl Attributes {
    /// The attributes carried by these capabilities.
    pub fn of(caps: &cpns_wire::DeviceCapabilities) -> Self {
        Self {
            battery_pct: caps.battery_pct,
            battery_minutes: caps.battery_minutes,
            free_memory_mb: caps.free_memory_mb,
        }
    }
}

/// A status subscription as kept, with the states of what it watches as of the same
/// transaction (the subscriber's snapshot, 004 §5.5.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// The subscription kept (the one kept first, for a retry).
    pub subscription: SubscriptionRecord,
    /// The status records of the enrolled entities it watches: in the order it names them, or
    /// every device of its user by id.
    pub states: Vec<StatusRecord>,
}

/// A status subscription of an entity (table `status_subscriptions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// Its id, given by the store.
    pub id: u64,
    /// The subscribing entity.
    pub subscriber: EntityId,
    /// The subscriber's user: `entities` empty watches every device of this user.
    pub owner: UserId,
    /// The subscriber's request id (a retry finds the same subscription).
    pub request_id: u64,
    /// The watched entities; empty: every device of `owner`.
    pub entities: Vec<EntityId>,
    /// The policy.
    pub policy: cpns_wire::StatusPolicy,
    /// When it was made.
    pub created_at: UnixMillis,
}

/// A usage record as the server keeps it (004 §5.5.4; table `usage_records`), with the
/// charge it makes, if its service is chargeable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The reporting entity.
    pub entity: EntityId,
    /// Its owner.
    pub owner: UserId,
    /// The PN it reported in.
    pub pn_id: Option<PnId>,
    /// That PN's owner, when another user's.
    pub pn_owner: Option<UserId>,
    /// The record.
    pub record: cpns_wire::UsageRecord,
    /// Units to charge for it, if its service is chargeable.
    pub units: Option<u64>,
    /// When the server received it.
    pub received_at: UnixMillis,
}

/// What storing a batch of usage records did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageStored {
    /// New records stored.
    pub stored: u32,
    /// Records already stored (a retried report).
    pub duplicates: u32,
    /// Charging records made.
    pub charged: u32,
}

/// A summary of usage per user and service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageSummary {
    /// The user (the server's summaries; `None` in a device's own).
    pub user: Option<UserId>,
    /// The service.
    pub service: String,
    /// Uses.
    pub uses: u64,
    /// Total time, seconds.
    pub seconds: u64,
    /// Total volume, bytes.
    pub bytes: u64,
}

/// A usage record a PNE collected (table `local_usage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalUsage {
    /// The record, its audience not yet decided (preferences decide it when it is sent).
    pub record: cpns_wire::UsageRecord,
    /// Whether the server acknowledged it.
    pub sent: bool,
}

/// What a flow that registers or changes a PN reads, in one snapshot
/// ([`crate::ServerStore::pn_view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PnView {
    /// The PN, if the inventory holds it.
    pub pn: Option<PnRecord>,
    /// The answer kept for the sender's request, if asked for and kept.
    pub answer: Option<Vec<u8>>,
    /// The enrolled entities among those asked for, in the order of their first mention.
    pub entities: Vec<EntityRecord>,
}

/// What a member's request about its PN reads, in one snapshot
/// ([`crate::ServerStore::member_view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberView {
    /// The PN, if the inventory holds it.
    pub pn: Option<PnRecord>,
    /// If the PNE is no member of it: the membership it had there that ended, if kept.
    pub departed: Option<Departed>,
}

/// What a PNE's inventory query reads, in one snapshot
/// ([`crate::ServerStore::inventory_view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryView {
    /// The asker's user; `None` if it is not enrolled.
    pub owner: Option<UserId>,
    /// The PN named, if held; without one, every PN of the asker's user, in creation order.
    pub pns: Vec<PnRecord>,
    /// The directory entries the members of those PNs publish that the asker may see now (the
    /// directory's own scope rules), by offerer.
    pub services: Vec<ServiceEntry>,
}

/// The users a usage report is charged by, in one snapshot
/// ([`crate::ServerStore::usage_owners`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    /// The reporting entity's user; `None` if it is not enrolled.
    pub entity: Option<UserId>,
    /// The owner of the PN it reports in, if the inventory holds the PN.
    pub pn: Option<UserId>,
}

/// What a status query or subscription reads, in one snapshot
/// ([`crate::ServerStore::status_view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusView {
    /// The records of the asker and of the entities named that are enrolled, in the order of
    /// their first mention (the asker first).
    pub statuses: Vec<StatusRecord>,
    /// If asked for: every device of the asker's user, by id.
    pub of_user: Vec<StatusRecord>,
    /// If asked for: how many subscriptions the asker holds.
    pub subscriptions: usize,
}

/// Who may see a service of the directory (docs/services.md, "Scope").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceScope {
    /// The members of one PN.
    Pn(PnId),
    /// Every device of the offerer's user.
    User,
    /// The members of a service group.
    Group(String),
    /// Every authenticated device.
    Public,
}

/// A service in the directory (table `services`; 004 §5.5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Its id in the directory, given by the store (kept across updates).
    pub dir_id: u64,
    /// The entity that published it.
    pub offerer: EntityId,
    /// The offerer's user.
    pub owner: UserId,
    /// The offerer's id for it.
    pub service_id: String,
    /// Its type, e.g. `media.renderer`.
    pub service_type: String,
    /// Its keywords, normalised (`cpns_service::normalised_keywords`).
    pub keywords: Vec<String>,
    /// Who may see it.
    pub scope: ServiceScope,
    /// The canonical JSON of its description.
    pub description: Vec<u8>,
    /// When it was last published.
    pub updated_at: UnixMillis,
    /// When its lease ends.
    pub expires_at: UnixMillis,
}

/// Who looks at the directory: what decides which entries it may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceViewer {
    /// Its user: sees that user's `User`-scoped entries.
    pub user: UserId,
    /// The PNs it is a member of: sees their `Pn`-scoped entries.
    pub pns: Vec<PnId>,
    /// The service groups it is a member of.
    pub groups: Vec<String>,
}

/// What a directory request asks of the store besides its asker's view (004 §5.5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryAsk {
    /// Who the asker is and how many watches it keeps (a watch).
    Watching,
    /// Who the asker is and how many services it offers besides `service_id` (a publish).
    Offered {
        /// The service being published.
        service_id: String,
    },
    /// The entries a discovery finds, as the asker sees them.
    Discover(ServiceSearch),
    /// One entry, if the asker may see it and its lease has not ended by `now`.
    Retrieve {
        /// Its directory id.
        dir_id: u64,
        /// Entries whose lease ended by now are not shown.
        now: UnixMillis,
    },
}

/// A service group as the store keeps it (table `service_groups`; 004 §5.5.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    /// Its id, chosen by the server.
    pub group_id: cpns_wire::GroupId,
    /// For people.
    pub name: String,
    /// The owning user: its creator's.
    pub owner: UserId,
    /// The PNE that made it, its owning member.
    pub creator: EntityId,
    /// Any device of the owner's user may join without an invitation.
    pub open_to_user: bool,
    /// The current key epoch, from 1.
    pub epoch: u64,
    /// That epoch's key, sealed at rest under the master key.
    pub sealed_key: Vec<u8>,
    /// When it was made.
    pub created_at: UnixMillis,
}

/// A member of a service group (table `service_group_members`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMemberRecord {
    /// The PNE.
    pub entity: EntityId,
    /// Its user.
    pub owner: UserId,
    /// The PN whose SK_PNE seals what it is pushed.
    pub pn_id: PnId,
    /// When it joined.
    pub joined_at: UnixMillis,
}

/// A member as a group flow reads it: with what pushing to it needs, if it still has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMemberView {
    /// The member.
    pub member: GroupMemberRecord,
    /// Its SK_PNE in `member.pn_id`, sealed at rest; `None` once it is no longer an
    /// authenticated member of that PN.
    pub sealed_session_key: Option<Vec<u8>>,
    /// The PN GW serving that PN, if the PN exists.
    pub gateway: Option<EntityId>,
}

/// What a group flow reads, in one snapshot ([`crate::ServerStore::group_view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The group, if it exists.
    pub group: Option<GroupRecord>,
    /// Its members, the creator first, then by when they joined.
    pub members: Vec<GroupMemberView>,
    /// The asker's invitation to it, if one holds: the inviter and until when.
    pub invitation: Option<(EntityId, UnixMillis)>,
    /// The asker's user, if it is enrolled.
    pub asker_owner: Option<UserId>,
    /// How many groups the asker is a member of.
    pub asker_groups: u32,
    /// The other entity the request names (an invitee), where pushing to it goes, if it can be
    /// reached: enrolled, and an authenticated member of a PN with a key.
    pub also: Option<Reach>,
}

/// Where pushing to a PNE goes: its first PN (by creation) where it is an authenticated member
/// with an SK_PNE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The PNE.
    pub entity: EntityId,
    /// Its user.
    pub owner: UserId,
    /// That PN.
    pub pn_id: PnId,
    /// The PN GW serving it.
    pub gateway: EntityId,
    /// Its SK_PNE there, sealed at rest.
    pub sealed_session_key: Vec<u8>,
}

/// A change of a group's members, with its next epoch ([`crate::ServerStore::change_group`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChange {
    /// The group.
    pub group_id: cpns_wire::GroupId,
    /// The epoch the change moves from: the write fails with a conflict if the group is no
    /// longer there (another change came first).
    pub from_epoch: u64,
    /// The new epoch's key, sealed at rest.
    pub sealed_key: Vec<u8>,
    /// A member that joins (its invitation, if any, is used up).
    pub add: Option<GroupMemberRecord>,
    /// Members that leave or are expelled.
    pub remove: Vec<EntityId>,
}

/// A service watch (table `service_watches`; 004 §5.5.5 "advertise").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRecord {
    /// Its id, given by the store.
    pub watch_id: u64,
    /// The watching PNE.
    pub watcher: EntityId,
    /// Its user.
    pub owner: UserId,
    /// The PN whose SK_PNE sealed the watch, and seals its matches.
    pub pn_id: PnId,
    /// Normalised keywords; none: every entry.
    pub keywords: Vec<String>,
    /// Every keyword must match (else any one).
    pub all: bool,
    /// Only this type.
    pub service_type: Option<String>,
    /// When it was made.
    pub created_at: UnixMillis,
}

/// A watch that an entry's keywords may match, with what telling its watcher needs
/// ([`crate::ServerStore::watch_candidates`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchCandidate {
    /// The watch.
    pub watch: WatchRecord,
    /// The PN GW serving the watch's PN: the matches go through it.
    pub gateway: EntityId,
    /// The watcher's SK_PNE in the watch's PN, sealed at rest.
    pub sealed_session_key: Vec<u8>,
    /// The PNs the watcher is an authenticated member of (what it may see of PN-scoped
    /// entries).
    pub pns: Vec<PnId>,
    /// The service groups it is a member of, as their ids' text.
    pub groups: Vec<String>,
}

/// A discovery's terms, without its viewer (see [`ServiceQuery`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSearch {
    /// Normalised keywords; none: any entry.
    pub keywords: Vec<String>,
    /// Every keyword must match (else any one).
    pub all: bool,
    /// Only this type.
    pub service_type: Option<String>,
    /// Entries whose lease ended by now are not shown.
    pub now: UnixMillis,
    /// At most this many, by directory id from `after` on (paging).
    pub limit: u32,
    /// Only entries with a greater directory id.
    pub after: u64,
}

impl ServiceSearch {
    /// The query of `viewer` with these terms.
    pub fn as_viewer(&self, viewer: ServiceViewer) -> ServiceQuery {
        ServiceQuery {
            keywords: self.keywords.clone(),
            all: self.all,
            service_type: self.service_type.clone(),
            viewer,
            now: self.now,
            limit: self.limit,
            after: self.after,
        }
    }
}

/// What a directory request reads, in one snapshot ([`crate::ServerStore::directory_view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryView {
    /// The asker as a viewer: its user, the PNs it is an authenticated member of, its groups;
    /// `None` if it is not enrolled.
    pub viewer: Option<ServiceViewer>,
    /// The asker's capabilities of record.
    pub capabilities: Option<DeviceCapabilities>,
    /// The entries asked for that the asker may see.
    pub entries: Vec<ServiceEntry>,
    /// With [`DirectoryAsk::Offered`]: how many entries the asker offers besides that one
    /// (leases ended included, until purged).
    pub offered: u32,
    /// With [`DirectoryAsk::Watching`]: how many watches the asker keeps.
    pub watches: u32,
}

/// A directory search (004 §5.5.5, "discover").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceQuery {
    /// Normalised keywords; none: any entry.
    pub keywords: Vec<String>,
    /// Every keyword must match (else any one).
    pub all: bool,
    /// Only this type.
    pub service_type: Option<String>,
    /// Who asks.
    pub viewer: ServiceViewer,
    /// Entries whose lease ended by now are not shown.
    pub now: UnixMillis,
    /// At most this many, by directory id from `after` on (paging).
    pub limit: u32,
    /// Only entries with a greater directory id.
    pub after: u64,
}
