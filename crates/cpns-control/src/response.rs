//! What an entity answers: one [`Response`] per request, tagged by the request's `verb`, or an
//! [`ApiError`](crate::ApiError) (written by [`crate::encode_answer`]).

use cpns_wire::{CpnsId, EntityId, GroupId, PnId, PnInventory, UserId};
use serde::{Deserialize, Serialize};

use crate::Role;
use crate::caps::Capabilities;
use crate::status::{Charge, Entry, Preference, ServicePreference, UsageRow};

/// An answer, tagged by the `verb` it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Who answers, and what it serves.
    Hello {
        /// Its role.
        role: Role,
        /// Its entity id (none: the server).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        entity: Option<EntityId>,
        /// The versions of this API it speaks.
        versions: Vec<u32>,
        /// The verbs it serves.
        verbs: Vec<String>,
    },
    /// The PNs the entity holds.
    Show {
        /// The PNs.
        pns: Vec<Pn>,
    },
    /// One PN the entity holds.
    Members {
        /// The PN (one).
        pns: Vec<Pn>,
    },
    /// PNs as their PN GW or the server hold them.
    Query {
        /// The PNs.
        pns: Vec<Pn>,
        /// What their members hold and offer (004 §5.5.10), from the server: each member that
        /// declared contents or offers services the asker may see.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        holdings: Vec<Holding>,
    },
    /// The user's inventory changes follow, as `inventory_changed` events.
    InventorySubscribe {
        /// The user.
        #[serde(with = "crate::text")]
        user: cpns_wire::UserId,
    },
    /// The PN followed, as its PN GW holds it; its changes follow as `inventory_changed`
    /// events.
    InventoryFollow {
        /// The PN.
        pn: Pn,
    },
    /// The contents declared, as the server kept them.
    ContentsSet {
        /// How many.
        kept: u32,
    },
    /// The PN set up, as stored.
    Setup {
        /// The PN.
        pn: Pn,
    },
    /// Registered (003 §1.4.1 step 4).
    Register {
        /// The CPNS ID.
        #[serde(with = "crate::text")]
        cpns_id: CpnsId,
        /// The PN registered in.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The secure session's lifetime, seconds.
        lifetime_s: u32,
    },
    /// Joined.
    Join {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// Left.
    Leave {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// Released everywhere.
    Release {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// On a PN GW: the members told.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt_list"
        )]
        notified: Option<Vec<EntityId>>,
    },
    /// The invitee answered: joined, or declined.
    Invite {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The invitee.
        #[serde(with = "crate::text")]
        pne: EntityId,
        /// Whether it joined.
        accepted: bool,
    },
    /// The member is out.
    Expel {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The member expelled.
        #[serde(with = "crate::text")]
        pne: EntityId,
        /// On a PN GW: the remaining members told.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt_list"
        )]
        notified: Option<Vec<EntityId>>,
        /// On a PN GW: the PN's new group key epoch (none if the server had removed the
        /// member already).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    },
    /// The establishment started.
    Establish {
        /// Its command; the `completed` event of a `wait` carries it.
        command: u64,
        /// The PN being established.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// The invitation was answered.
    AnswerInvitation {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Whether it was accepted.
        accepted: bool,
    },
    /// Events follow, one per line.
    Events {},
    /// Capabilities.
    Caps {
        /// Whose.
        #[serde(with = "crate::text")]
        entity: EntityId,
        /// Whether the device was asked now.
        live: bool,
        /// The capabilities.
        capabilities: Capabilities,
    },
    /// The capabilities now.
    CapsSet {
        /// Whose.
        #[serde(with = "crate::text")]
        entity: EntityId,
        /// The capabilities.
        capabilities: Capabilities,
    },
    /// Status entries.
    Status {
        /// The entries.
        entries: Vec<Entry>,
    },
    /// The server recorded the status.
    StatusSet {},
    /// Subscribed; `status` events follow.
    Subscribe {
        /// The subscription.
        subscription: u64,
        /// The watched entities now.
        entries: Vec<Entry>,
    },
    /// The use was recorded.
    UsageRecord {
        /// The record's id.
        record_id: u64,
    },
    /// The usage reporting preferences.
    UsagePrefs {
        /// The default.
        default: Preference,
        /// Services with their own.
        services: Vec<ServicePreference>,
    },
    /// A service's preference is set.
    UsagePrefSet {
        /// The service.
        service: String,
        /// Its preference now.
        preference: Preference,
    },
    /// Usage per service.
    UsageSummary {
        /// The rows.
        summary: Vec<UsageRow>,
    },
    /// What sending did.
    UsageSend {
        /// Records sent and acknowledged.
        sent: u32,
        /// Of those, records the server had already.
        duplicates: u32,
        /// Charging records the server made.
        charged: u32,
        /// Records of private services, kept on the device.
        withheld: u32,
    },
    /// Usage per user and service, what users shared.
    Usage {
        /// Always true: only shared records are counted.
        shared_only: bool,
        /// The rows.
        summary: Vec<UsageRow>,
    },
    /// Charging records.
    Charging {
        /// The records.
        records: Vec<Charge>,
    },
    /// Steps of the directory index's merge taken.
    DirectoryMerge {
        /// Steps that merged something.
        steps: u32,
        /// Whether more is left to merge (ask again, without `start`).
        more: bool,
    },
    /// Content sent: the PN GW relayed it.
    Send {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Members linked to the PN GW it was relayed to.
        delivered: u32,
    },
    /// The service is in the directory.
    ServicePublish {
        /// Its directory id.
        dir_id: u64,
        /// When its lease ends unless published again (Unix milliseconds).
        expires_at_ms: u64,
    },
    /// Whether the service was in the directory.
    ServiceUnpublish {
        /// The service.
        service_id: String,
        /// Whether it was there.
        removed: bool,
    },
    /// The entries found, by directory id.
    ServiceDiscover {
        /// The entries.
        entries: Vec<ServiceEntry>,
        /// Whether more follow: ask again with `after` the last directory id.
        more: bool,
    },
    /// One whole description.
    ServiceRetrieve {
        /// Its directory id.
        dir_id: u64,
        /// Who offers it.
        #[serde(with = "crate::text")]
        offerer: EntityId,
        /// When its lease ends (Unix milliseconds).
        expires_at_ms: u64,
        /// The description, as the directory keeps it.
        description: serde_json::Value,
    },
    /// The watch is kept: its matches come as `service_match` events.
    ServiceWatch {
        /// Its id.
        watch_id: u64,
    },
    /// Whether the watch was kept.
    ServiceUnwatch {
        /// The watch.
        watch_id: u64,
        /// Whether it was kept.
        removed: bool,
    },
    /// The group is made, at epoch 1, its key held.
    GroupCreate {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The epoch whose key is held.
        epoch: u64,
    },
    /// The invitation is sent; it holds for 5 minutes.
    GroupInvite {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The PNE invited.
        #[serde(with = "crate::text")]
        pne: EntityId,
    },
    /// The invitation is answered: with a yes, the key of `epoch` is held.
    GroupAnswer {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// Whether this PNE is a member now.
        accepted: bool,
        /// The group's epoch now.
        epoch: u64,
    },
    /// This PNE is a member, the key of `epoch` held.
    GroupJoin {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The epoch whose key is held.
        epoch: u64,
    },
    /// This PNE left; its key of the group is forgotten.
    GroupLeave {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
    },
    /// The member is expelled; the group moved to `epoch`.
    GroupExpel {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The member expelled.
        #[serde(with = "crate::text")]
        pne: EntityId,
        /// The group's epoch now.
        epoch: u64,
    },
    /// The group is deleted.
    GroupDelete {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
    },
    /// The group's current key is held.
    GroupKey {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// Its epoch.
        epoch: u64,
    },
    /// A group's members, the owner first.
    GroupMembers {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// Its name.
        name: String,
        /// Its epoch.
        epoch: u64,
        /// Its members.
        members: Vec<GroupMember>,
    },
    /// The groups whose key this PNE holds.
    Groups {
        /// The groups.
        groups: Vec<HeldGroup>,
    },
    /// The content is sent: the server pushed it to `delivered` other members.
    GroupSend {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The epoch it was sealed under.
        epoch: u64,
        /// Other members it was pushed to.
        delivered: u32,
    },
    /// What the PN GW's WAN sessions carried since it started (length prefixes included).
    Traffic {
        /// Frames received from the server.
        wan_frames_in: u64,
        /// Bytes received from the server.
        wan_bytes_in: u64,
        /// Frames sent to the server.
        wan_frames_out: u64,
        /// Bytes sent to the server.
        wan_bytes_out: u64,
    },
    /// The delivery session is set up; its content moves as the targets accept.
    Deliver {
        /// The session.
        #[serde(with = "crate::text")]
        session: cpns_wire::DeliveryId,
        /// The content's size, in bytes.
        size: u64,
        /// Its SHA-256, as offered (hex), when it was hashed before the offer (a delivery from
        /// outside, or a PNE without a member certificate); absent, its source signs the
        /// digest its last chunk carries (docs/security.md §4.12).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// To a service group in several PNs: the session of each other PN.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            with = "crate::text::list"
        )]
        also: Vec<cpns_wire::DeliveryId>,
    },
    /// The payload was handed on to its PNE.
    MessageSend {
        /// The PNE.
        #[serde(with = "crate::text")]
        to: cpns_wire::EntityId,
    },
    /// The member was asked; its delivery follows.
    DeliveryRequest {
        /// The member.
        #[serde(with = "crate::text")]
        source: cpns_wire::EntityId,
        /// The content.
        name: String,
    },
    /// The control taken, and told to the targets.
    DeliveryControl {
        /// The session.
        #[serde(with = "crate::text")]
        session: cpns_wire::DeliveryId,
        /// What was done.
        action: String,
    },
}

/// A content a device holds (000 §6.6.1.1 step 1; 004 §5.5.10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Its name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
}

/// A service a member offers in the directory, as an inventory shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offered {
    /// Its directory id.
    pub dir_id: u64,
    /// The member's id for it.
    pub service_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Its name.
    pub name: String,
}

/// What one member of a PN holds and offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holding {
    /// The member.
    #[serde(with = "crate::text")]
    pub pne: EntityId,
    /// The contents it declared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contents: Vec<Content>,
    /// The services it offers that the asker may see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Offered>,
}

/// A member of a service group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    /// The PNE.
    #[serde(with = "crate::text")]
    pub pne: EntityId,
    /// Its user.
    #[serde(with = "crate::text")]
    pub owner: UserId,
    /// Whether it owns the group.
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_owner: bool,
}

impl From<cpns_wire::GroupMember> for GroupMember {
    fn from(m: cpns_wire::GroupMember) -> Self {
        Self {
            pne: m.entity,
            owner: m.owner,
            is_owner: m.is_owner,
        }
    }
}

/// A service group whose key a PNE holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldGroup {
    /// The group.
    #[serde(with = "crate::text")]
    pub group_id: GroupId,
    /// Its name.
    pub name: String,
    /// The epoch whose key is held.
    pub epoch: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A directory entry as discovery lists it (004 §5.5.5), or a watch's match tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Its directory id.
    pub dir_id: u64,
    /// Who offers it.
    #[serde(with = "crate::text")]
    pub offerer: EntityId,
    /// The offerer's user.
    #[serde(with = "crate::text")]
    pub owner: UserId,
    /// The offerer's id for it.
    pub service_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Its name.
    pub name: String,
    /// Its keywords.
    pub keywords: Vec<String>,
}

impl From<&cpns_wire::ServiceSummary> for ServiceEntry {
    fn from(s: &cpns_wire::ServiceSummary) -> Self {
        Self {
            dir_id: s.dir_id,
            offerer: s.offerer.clone(),
            owner: s.owner.clone(),
            service_id: s.service_id.clone(),
            service_type: s.service_type.clone(),
            name: s.name.clone(),
            keywords: s.keywords.clone(),
        }
    }
}

impl Response {
    /// The verb it answers.
    pub fn verb(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "hello",
            Response::Show { .. } => "show",
            Response::Members { .. } => "members",
            Response::Query { .. } => "query",
            Response::Setup { .. } => "setup",
            Response::Register { .. } => "register",
            Response::Join { .. } => "join",
            Response::Leave { .. } => "leave",
            Response::Release { .. } => "release",
            Response::Invite { .. } => "invite",
            Response::Expel { .. } => "expel",
            Response::Establish { .. } => "establish",
            Response::AnswerInvitation { .. } => "answer_invitation",
            Response::Events {} => "events",
            Response::Caps { .. } => "caps",
            Response::CapsSet { .. } => "caps_set",
            Response::Status { .. } => "status",
            Response::StatusSet {} => "status_set",
            Response::Subscribe { .. } => "subscribe",
            Response::UsageRecord { .. } => "usage_record",
            Response::UsagePrefs { .. } => "usage_prefs",
            Response::UsagePrefSet { .. } => "usage_pref_set",
            Response::UsageSummary { .. } => "usage_summary",
            Response::UsageSend { .. } => "usage_send",
            Response::Usage { .. } => "usage",
            Response::Charging { .. } => "charging",
            Response::DirectoryMerge { .. } => "directory_merge",
            Response::Send { .. } => "send",
            Response::ServicePublish { .. } => "service_publish",
            Response::ServiceUnpublish { .. } => "service_unpublish",
            Response::ServiceDiscover { .. } => "service_discover",
            Response::ServiceRetrieve { .. } => "service_retrieve",
            Response::ServiceWatch { .. } => "service_watch",
            Response::ServiceUnwatch { .. } => "service_unwatch",
            Response::GroupCreate { .. } => "group_create",
            Response::GroupInvite { .. } => "group_invite",
            Response::GroupAnswer { .. } => "group_answer",
            Response::GroupJoin { .. } => "group_join",
            Response::GroupLeave { .. } => "group_leave",
            Response::GroupExpel { .. } => "group_expel",
            Response::GroupDelete { .. } => "group_delete",
            Response::GroupKey { .. } => "group_key",
            Response::GroupMembers { .. } => "group_members",
            Response::Groups { .. } => "groups",
            Response::GroupSend { .. } => "group_send",
            Response::Deliver { .. } => "deliver",
            Response::DeliveryControl { .. } => "delivery_control",
            Response::DeliveryRequest { .. } => "delivery_request",
            Response::MessageSend { .. } => "message_send",
            Response::Traffic { .. } => "traffic",
            Response::ContentsSet { .. } => "contents_set",
            Response::InventorySubscribe { .. } => "inventory_subscribe",
            Response::InventoryFollow { .. } => "inventory_follow",
        }
    }
}

/// A PN as an entity holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pn {
    /// The PN.
    #[serde(with = "crate::text")]
    pub pn_id: PnId,
    /// Its PN GW.
    #[serde(with = "crate::text")]
    pub gateway: EntityId,
    /// Its members, in order.
    #[serde(with = "crate::text::list")]
    pub members: Vec<EntityId>,
    /// On a PN GW's `members`: the current group key epoch, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// On a PN GW's `members`: the members that confirmed holding that epoch's key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text::opt_list"
    )]
    pub confirmed: Option<Vec<EntityId>>,
}

impl From<&PnInventory> for Pn {
    fn from(inv: &PnInventory) -> Self {
        Self {
            pn_id: inv.pn_id,
            gateway: inv.gateway.clone(),
            members: inv.members.iter().map(|m| m.pne_id.clone()).collect(),
            epoch: None,
            confirmed: None,
        }
    }
}
