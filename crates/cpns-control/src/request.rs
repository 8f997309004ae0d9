//! What a client asks: one [`Request`] per line, tagged by its `verb`. Which role serves which
//! verb is [`crate::Role::verbs`]; docs/control-api.md has every verb with an example.

use cpns_wire::{EntityId, GroupId, PnId, SetupType, UserId};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::caps::Capabilities;
use crate::status::{OwnStatus, Policy, Preference};

/// A part of a delivery for one target only: the file holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecificFile {
    /// The target.
    #[serde(with = "crate::text")]
    pub to: EntityId,
    /// The file, an absolute path.
    pub file: String,
}

/// One more item of a delivery (several services in one session, docs/services.md): the file
/// holding it, and the service it is delivered as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverItem {
    /// The file, an absolute path.
    pub file: String,
    /// The service it is delivered as (default `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// Its name for the targets (default: the file's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its media type (default `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// A request, tagged by its `verb`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every role: who answers, and what it serves.
    Hello {},
    /// PNE, PN GW: the PNs the entity holds.
    Show {},
    /// PN GW: what its WAN sessions with the server carried since it started.
    Traffic {},
    /// Server: follow what changes in a user's PN inventories (004 §5.5.10): PNs set up and
    /// released, members joining and leaving, members declaring contents and publishing
    /// services, as `inventory_changed` events until the connection ends.
    InventorySubscribe {
        /// The user.
        #[serde(with = "crate::text")]
        user: UserId,
    },
    /// PNE: follow what changes in the inventory of a PN it is a member of, through its PN GW
    /// (004 §5.5.10): answered with the PN as its PN GW holds it, then `inventory_changed`
    /// events (and `inventory_followed` when its link came back) until the connection ends.
    InventoryFollow {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// PNE: declare the contents it holds now (004 §5.5.10), replacing what it announced in
    /// every PN it is a member of; `query` answers from the server list them.
    ContentsSet {
        /// The contents, at most 256.
        #[serde(default)]
        contents: Vec<crate::response::Content>,
    },
    /// PNE, PN GW: one PN it holds; on a PN GW with who confirmed its group key.
    Members {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// PNE: a PN's inventory from its PN GW or the server (004 §5.5.10); none: every PN of
    /// its user.
    Query {
        /// The PN.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        pn_id: Option<PnId>,
    },
    /// PNE: ask its PN GW for a PN (000 §6.6.1.1); answered once the PN is stored.
    Setup {
        /// `"1-1"`, `"all"`, or the PNEs to invite.
        with: Targets,
    },
    /// PNE: register with the server (003 §1.4), in a PN it is a member of (none: its
    /// first).
    Register {
        /// The PN.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        pn_id: Option<PnId>,
    },
    /// PNE: join a PN its PN GW serves (000 §6.6.2.2).
    Join {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// PNE: leave a PN (000 §6.6.3.1.1).
    Leave {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// PNE, PN GW: release a PN (000 §6.6.5, §6.6.5.1).
    Release {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
    },
    /// PNE, PN GW: invite a PNE into a PN (000 §6.6.2.1).
    Invite {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The PNE.
        #[serde(with = "crate::text")]
        pne: EntityId,
    },
    /// PNE, PN GW: expel a member (000 §6.6.3.2, 004 §5.5.10).
    Expel {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The member.
        #[serde(with = "crate::text")]
        pne: EntityId,
    },
    /// PN GW: start a PN GW-initiated establishment (000 §6.6.1.2); answered at once with
    /// the command and the PN; with `wait`, a `completed` event follows when it ends.
    Establish {
        /// `"all"`, or the PNEs to invite.
        with: Targets,
        /// Keep the connection until the establishment ends.
        #[serde(default, skip_serializing_if = "is_false")]
        wait: bool,
    },
    /// PNE: the application's answer to an invitation held for it (policy `ask`).
    AnswerInvitation {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// Whether to join.
        accept: bool,
    },
    /// PNE: follow what happens, as `event` lines, until either side closes.
    Events {},
    /// Every role: capabilities: on a PNE or PN GW its own; on the server an entity's as
    /// recorded, or asked of the device now (`live`).
    Caps {
        /// The entity (server).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        entity: Option<EntityId>,
        /// Ask the device now (server).
        #[serde(default, skip_serializing_if = "is_false")]
        live: bool,
    },
    /// PNE, PN GW: replace its own capabilities (a whole set; reported, 004 §5.5.1).
    CapsSet {
        /// The capabilities (boxed: the largest field of any request).
        capabilities: Box<Capabilities>,
    },
    /// PNE, server: the status of entities (none: every device of the user).
    Status {
        /// The entities.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            with = "crate::text::list"
        )]
        entities: Vec<EntityId>,
        /// Every device of this user (server).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        user: Option<UserId>,
    },
    /// PNE: set its own status (004 §5.5.3).
    StatusSet {
        /// The status.
        status: OwnStatus,
        /// With `custom`: its label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// PNE, server: subscribe to status notifications, streamed as `status` events.
    Subscribe {
        /// The entities watched.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            with = "crate::text::list"
        )]
        entities: Vec<EntityId>,
        /// Every device of this user (server; a PNE watches its own user's with none).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        user: Option<UserId>,
        /// When to notify (default: on every change).
        #[serde(default, skip_serializing_if = "on_change")]
        policy: Policy,
    },
    /// PNE: an application reports one use of a service (kept on the device, unsent).
    UsageRecord {
        /// The service.
        service: String,
        /// Start, seconds since the Unix epoch.
        start_s: u64,
        /// End.
        end_s: u64,
        /// Bytes moved.
        #[serde(default)]
        bytes: u64,
        /// Battery at the start, percent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        battery_start: Option<u8>,
    },
    /// PNE: its usage reporting preferences.
    UsagePrefs {},
    /// PNE: set one service's preference (`default`: back to the device's default).
    UsagePrefSet {
        /// The service.
        service: String,
        /// The preference.
        preference: Preference,
    },
    /// PNE: its own usage per service.
    UsageSummary {},
    /// PNE: send the usage records the preferences allow now (004 §5.5.4).
    UsageSend {},
    /// Server: usage per user and service, what its users shared.
    Usage {
        /// One user's.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        user: Option<UserId>,
    },
    /// PNE: send content to the other members of a PN, signed by this PNE and sealed under the
    /// PN's group key (docs/security.md §4.11): `text`, or bytes as `hex`.
    Send {
        /// The PN.
        #[serde(with = "crate::text")]
        pn_id: PnId,
        /// The content as UTF-8 text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The content as hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hex: Option<String>,
    },
    /// PNE: publish a service description (004 §5.5.5; docs/services.md), or update the one
    /// this PNE published with the same `service_id`, as this PNE.
    ServicePublish {
        /// The description (application/vnd.cpns.service+json, docs/service.schema.json).
        description: serde_json::Value,
    },
    /// PNE: take one of its services out of the directory.
    ServiceUnpublish {
        /// Its id for the service.
        service_id: String,
    },
    /// PNE: the directory's entries it may see that match: `keywords` (every one, or with
    /// `any` any one), of `type`, only those it can consume (`fits_me`), after directory id
    /// `after` (paging).
    ServiceDiscover {
        /// Keywords; none: any entry.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keywords: Vec<String>,
        /// Any keyword matches (else every one must).
        #[serde(default, skip_serializing_if = "is_false")]
        any: bool,
        /// Only this service type.
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        service_type: Option<String>,
        /// Only services this device can consume, by its capabilities of record.
        #[serde(default, skip_serializing_if = "is_false")]
        fits_me: bool,
        /// Entries after this directory id.
        #[serde(default, skip_serializing_if = "is_zero")]
        after: u64,
    },
    /// PNE: watch the directory: every entry published from now on that this PNE may see and
    /// that has every keyword (with `any`, one of them; none: any entry), of `type`, is told
    /// as a `service_match` event.
    ServiceWatch {
        /// Keywords; none: any entry.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keywords: Vec<String>,
        /// Any keyword matches (else every one must).
        #[serde(default, skip_serializing_if = "is_false")]
        any: bool,
        /// Only this service type.
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        service_type: Option<String>,
    },
    /// PNE: end one of its watches.
    ServiceUnwatch {
        /// The watch.
        watch_id: u64,
    },
    /// PNE: one whole description from the directory.
    ServiceRetrieve {
        /// Its directory id.
        dir_id: u64,
    },
    /// PNE, PN GW: make a service group (004 §5.5.9); with `open_to_user`, the other devices of
    /// its user may join without an invitation. A PNE is its owning member; a PN GW names the
    /// PNE of its owner that is (`owning`).
    GroupCreate {
        /// Its name, 1 to 64 characters.
        name: String,
        /// Whether the user's other devices may join.
        #[serde(default, skip_serializing_if = "is_false")]
        open_to_user: bool,
        /// PN GW: the owning PNE, a device of its owner.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        owning: Option<EntityId>,
    },
    /// PNE, PN GW: invite a PNE (of any user) into a group this PNE (this PN GW's user) owns.
    GroupInvite {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The PNE invited.
        #[serde(with = "crate::text")]
        pne: EntityId,
    },
    /// PNE: answer an invitation into a group: `accept` is the consent.
    GroupAnswer {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// Yes or no.
        accept: bool,
    },
    /// PNE: join a group open to its user's devices.
    GroupJoin {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
    },
    /// PNE: leave a group (its owner deletes it instead).
    GroupLeave {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
    },
    /// PNE, PN GW: expel a member from a group this PNE (this PN GW's user) owns.
    GroupExpel {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The member.
        #[serde(with = "crate::text")]
        pne: EntityId,
    },
    /// PNE, PN GW: delete a group this PNE (this PN GW's user) owns.
    GroupDelete {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
    },
    /// PNE: pull a group's current key from the server (after being away during a change).
    GroupKey {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
    },
    /// PNE, PN GW: a group's members, as the server has them (asked by a member, or by the
    /// PN GW of the group owner's user).
    GroupMembers {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
    },
    /// PNE: the groups whose key this PNE holds.
    Groups {},
    /// PNE: send content to a group's other members, signed by this PNE and sealed under the
    /// group's key (docs/security.md §4.11): `text`, or bytes as `hex`.
    GroupSend {
        /// The group.
        #[serde(with = "crate::text")]
        group_id: GroupId,
        /// The content as UTF-8 text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The content as hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hex: Option<String>,
    },
    /// PNE: push the content of `file` (an absolute path) to PNEs of one of its PNs (004
    /// §5.5.8): answered once the server set the session up; `delivery_*` events tell the rest.
    /// Server: deliver it as an external entity (`source`, default `operator`) to members of
    /// PN `pn_id` (004 §5.5.8.1), its common part once over the PN GW's WAN session, with a part
    /// of its own for some targets (`specific`); with `wait`, the answer is followed by the
    /// `delivery_ended` and `delivery_sent` events of the session, and ends with it.
    Deliver {
        /// The file, an absolute path.
        file: String,
        /// The targets, members of the PN this PNE's secure calls go through, or of `pn_id`.
        #[serde(with = "crate::text::list")]
        to: Vec<EntityId>,
        /// The service it is delivered as (default `content`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_id: Option<String>,
        /// Its name for the targets (default: the file's name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Its media type (default `application/octet-stream`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
        /// The PN whose members receive it: on the server, required; on a PNE, another PN
        /// than its own to forward to (docs/services.md, "Forwarding between PNs").
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        pn_id: Option<PnId>,
        /// Server: the external entity it comes from (default `operator`).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        source: Option<EntityId>,
        /// Server: parts for one target only, each a file (an absolute path, at most 64 KiB).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        specific: Vec<SpecificFile>,
        /// Server: follow the session to its end.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
        /// PNE: set it up held; it moves once started (`delivery_control`, `start`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        held: bool,
        /// PNE: by device capability, what the one target the server picks (among `to`, or
        /// every other member) must be able to do: a service description's `requires`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requires: Option<serde_json::Value>,
        /// PNE: to a service group it is a member of: every other member reachable now, one
        /// session for each PN they are in (`to` empty; docs/services.md, "To a service
        /// group").
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        group: Option<GroupId>,
        /// PNE: to a user: every device of that user reachable now, in this PNE's PN and, for
        /// its own user, in whichever PN each is proven in; one session for each PN (`to`
        /// empty; docs/services.md, "To a user").
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        user: Option<UserId>,
        /// Several services in one session: the items after the first (`file`), each its
        /// own service, delivered one after another (at most 7 more).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<DeliverItem>,
    },
    /// PNE: a small payload in band to one PNE (004 §5.5.8), sealed end to end through the
    /// server: at most 16 KiB, as `text` or `hex`.
    MessageSend {
        /// The PNE.
        #[serde(with = "crate::text")]
        to: EntityId,
        /// The payload as UTF-8 text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The payload as hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hex: Option<String>,
        /// The service it is sent as (default `message`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_id: Option<String>,
        /// Its media type (default `text/plain` for text, `application/octet-stream` for hex).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
        /// The PNE's PN, when another than this PNE's.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        pn_id: Option<PnId>,
    },
    /// PNE: ask a member for content it declared it holds (004 §5.5.8.2, pull); it answers
    /// with a delivery to this PNE.
    DeliveryRequest {
        /// The member.
        #[serde(with = "crate::text")]
        source: EntityId,
        /// The content's name, as the member declared it.
        name: String,
        /// The service it is asked as (default `content`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_id: Option<String>,
        /// The member's PN, when another than this PNE's.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        pn_id: Option<PnId>,
    },
    /// PNE: service control of a delivery it sends (004 §5.5.8.2): `start` (one set up held),
    /// `pause`, `resume` or `stop`; its targets are told.
    DeliveryControl {
        /// The session.
        #[serde(with = "crate::text")]
        session: cpns_wire::DeliveryId,
        /// `start`, `pause`, `resume` or `stop`.
        action: String,
    },
    /// PNE, server: charging records (CPNS-4): on a PNE its own user's, asked of the server.
    Charging {
        /// The user (server).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text::opt"
        )]
        user: Option<UserId>,
        /// Uses started at or after, seconds since the Unix epoch.
        #[serde(default, skip_serializing_if = "is_zero")]
        since_s: u64,
    },
    /// Server: merge the service directory's full-text index toward one segment, a step at a
    /// time (each step a write of its own; docs/services.md, "The directory's store"): at most
    /// `steps` steps of about `pages` pages each; `start` begins a merge of every segment,
    /// later calls go on with it. Answered with the steps that did work and whether more is
    /// left.
    DirectoryMerge {
        /// Begin a merge of every segment (the first call of a run).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        start: bool,
        /// Steps this call takes at most (default 16, at most 1,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u32>,
        /// Pages of merged index per step (default 1,000, at most 100,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pages: Option<u32>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn on_change(p: &Policy) -> bool {
    *p == Policy::OnChange
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Which roles serve a verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// A PNE (CPNS-5).
    pub pne: bool,
    /// A PN GW (its owner's).
    pub gateway: bool,
    /// The CPNS Server (CPNS-4, local).
    pub server: bool,
}

const fn served(pne: bool, gateway: bool, server: bool) -> Served {
    Served {
        pne,
        gateway,
        server,
    }
}
const ALL: Served = served(true, true, true);
const PNE: Served = served(true, false, false);
const GW: Served = served(false, true, false);
const SERVER: Served = served(false, false, true);
const PNE_GW: Served = served(true, true, false);
const PNE_SERVER: Served = served(true, false, true);

/// Every verb, as written on the socket, and the roles that serve it: the one table that
/// [`VERBS`] and [`crate::Role::verbs`] read.
pub const VERB_TABLE: [(&str, Served); 53] = [
    ("hello", ALL),
    ("show", PNE_GW),
    ("members", PNE_GW),
    ("query", PNE),
    ("setup", PNE),
    ("register", PNE),
    ("join", PNE),
    ("leave", PNE),
    ("release", PNE_GW),
    ("invite", PNE_GW),
    ("expel", PNE_GW),
    ("establish", GW),
    ("answer_invitation", PNE),
    ("events", PNE),
    ("caps", ALL),
    ("caps_set", PNE_GW),
    ("status", PNE_SERVER),
    ("status_set", PNE),
    ("subscribe", PNE_SERVER),
    ("usage_record", PNE),
    ("usage_prefs", PNE),
    ("usage_pref_set", PNE),
    ("usage_summary", PNE),
    ("usage_send", PNE),
    ("usage", SERVER),
    ("charging", PNE_SERVER),
    ("directory_merge", SERVER),
    ("send", PNE),
    ("service_publish", PNE),
    ("service_unpublish", PNE),
    ("service_discover", PNE),
    ("service_retrieve", PNE),
    ("service_watch", PNE),
    ("service_unwatch", PNE),
    ("group_create", PNE_GW),
    ("group_invite", PNE_GW),
    ("group_answer", PNE),
    ("group_join", PNE),
    ("group_leave", PNE),
    ("group_expel", PNE_GW),
    ("group_delete", PNE_GW),
    ("group_key", PNE),
    ("group_members", PNE_GW),
    ("groups", PNE),
    ("group_send", PNE),
    ("deliver", PNE_SERVER),
    ("delivery_control", PNE),
    ("delivery_request", PNE),
    ("message_send", PNE),
    ("inventory_follow", PNE),
    ("traffic", GW),
    ("contents_set", PNE),
    ("inventory_subscribe", SERVER),
];

/// Every verb, as written on the socket.
pub const VERBS: [&str; VERB_TABLE.len()] = {
    let mut verbs = [""; VERB_TABLE.len()];
    let mut i = 0;
    while i < verbs.len() {
        verbs[i] = VERB_TABLE[i].0;
        i += 1;
    }
    verbs
};

impl Request {
    /// The content of a `send`: its `text` or its `hex`, exactly one.
    ///
    /// # Errors
    /// The words for the asker when neither, both, or bad hex is given.
    pub fn content(text: Option<&str>, hex: Option<&str>) -> Result<Vec<u8>, String> {
        match (text, hex) {
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(h)) => hex::decode(h).map_err(|e| format!("`hex` is not hex: {e}")),
            _ => Err("give the content as `text` or as `hex`, one of them".into()),
        }
    }

    /// The verb, as written on the socket.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Hello {} => "hello",
            Request::Show {} => "show",
            Request::Members { .. } => "members",
            Request::Query { .. } => "query",
            Request::Setup { .. } => "setup",
            Request::Register { .. } => "register",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Release { .. } => "release",
            Request::Invite { .. } => "invite",
            Request::Expel { .. } => "expel",
            Request::Establish { .. } => "establish",
            Request::AnswerInvitation { .. } => "answer_invitation",
            Request::Events {} => "events",
            Request::Caps { .. } => "caps",
            Request::CapsSet { .. } => "caps_set",
            Request::Status { .. } => "status",
            Request::StatusSet { .. } => "status_set",
            Request::Subscribe { .. } => "subscribe",
            Request::UsageRecord { .. } => "usage_record",
            Request::UsagePrefs {} => "usage_prefs",
            Request::UsagePrefSet { .. } => "usage_pref_set",
            Request::UsageSummary {} => "usage_summary",
            Request::UsageSend {} => "usage_send",
            Request::Usage { .. } => "usage",
            Request::Charging { .. } => "charging",
            Request::DirectoryMerge { .. } => "directory_merge",
            Request::Send { .. } => "send",
            Request::ServicePublish { .. } => "service_publish",
            Request::ServiceUnpublish { .. } => "service_unpublish",
            Request::ServiceDiscover { .. } => "service_discover",
            Request::ServiceRetrieve { .. } => "service_retrieve",
            Request::ServiceWatch { .. } => "service_watch",
            Request::ServiceUnwatch { .. } => "service_unwatch",
            Request::GroupCreate { .. } => "group_create",
            Request::GroupInvite { .. } => "group_invite",
            Request::GroupAnswer { .. } => "group_answer",
            Request::GroupJoin { .. } => "group_join",
            Request::GroupLeave { .. } => "group_leave",
            Request::GroupExpel { .. } => "group_expel",
            Request::GroupDelete { .. } => "group_delete",
            Request::GroupKey { .. } => "group_key",
            Request::GroupMembers { .. } => "group_members",
            Request::Groups {} => "groups",
            Request::GroupSend { .. } => "group_send",
            Request::Deliver { .. } => "deliver",
            Request::DeliveryControl { .. } => "delivery_control",
            Request::DeliveryRequest { .. } => "delivery_request",
            Request::MessageSend { .. } => "message_send",
            Request::Traffic {} => "traffic",
            Request::ContentsSet { .. } => "contents_set",
            Request::InventorySubscribe { .. } => "inventory_subscribe",
            Request::InventoryFollow { .. } => "inventory_follow",
        }
    }
}

/// Whom a set-up or an establishment is with: `"1-1"` (a PNE's set-up only: it and its PN
/// GW), `"all"` (every PNE its PN GW knows), or a list of PNEs to invite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// `"1-1"`.
    OneToOne,
    /// `"all"`.
    All,
    /// These PNEs.
    List(Vec<EntityId>),
}

impl Targets {
    /// Parses the command line's form: `1-1`, `all`, or a comma list of PNEs.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "1-1" => Targets::OneToOne,
            "all" => Targets::All,
            list => Targets::List(
                list.split(',')
                    .map(|p| p.trim().parse().map_err(|e| format!("`{p}`: {e}")))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// As the wire's set-up type (000 §6.6.1.1 step 1).
    pub fn setup_type(&self) -> SetupType {
        match self {
            Targets::OneToOne => SetupType::OneToOne,
            Targets::All => SetupType::All,
            Targets::List(pnes) => SetupType::Invite(pnes.clone()),
        }
    }
}

impl Serialize for Targets {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Targets::OneToOne => s.serialize_str("1-1"),
            Targets::All => s.serialize_str("all"),
            Targets::List(pnes) => crate::text::list::serialize(pnes, s),
        }
    }
}

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Word(String),
            List(Vec<String>),
        }
        match Form::deserialize(d)
            .map_err(|_| D::Error::custom("expected \"1-1\", \"all\" or a list of PNEs"))?
        {
            Form::Word(w) if w == "1-1" => Ok(Targets::OneToOne),
            Form::Word(w) if w == "all" => Ok(Targets::All),
            Form::Word(w) => Err(D::Error::custom(format!(
                "`{w}`: expected \"1-1\", \"all\" or a list of PNEs"
            ))),
            Form::List(pnes) => pnes
                .iter()
                .map(|p| {
                    p.parse()
                        .map_err(|e| D::Error::custom(format!("`{p}`: {e}")))
                })
                .collect::<Result<_, _>>()
                .map(Targets::List),
        }
    }
}
