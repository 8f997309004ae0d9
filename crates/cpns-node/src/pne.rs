//! The PNE runtime: one PAN connection to a PN GW (CPNS-6) driving a [`PneSession`], the PNE's
//! local PN inventory in a [`DeviceStore`], and a short script of what the PNE should do (discover,
//! set up a PN, wait to be invited, register, release). [`run`] does the script and returns;
//! [`serve`] then stays, reconnecting with backoff, and takes commands.
//!
//! The driver makes no protocol decision: every step and every command is a command of the
//! machine, which returns its [`CommandId`] and ends in one [`PneEvent::Completed`]; the driver
//! keeps one map from id to whoever waits ([`Link::waiters`]), carries out the store work the
//! machine asks for, and reports events: to its consumer, and to every follower of a running
//! PNE ([`PneHandle::events`], the `events` stream of its control socket). The connection set-up
//! after each (re)connection is the machine's `rejoin` command.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpns_crypto::{
    MasterKey, open_group_key_at_rest, open_service_group_key_at_rest, seal_group_key_at_rest,
    seal_service_group_key_at_rest,
};
use cpns_proto::pne::{
    HeldGroup, Outcome, PneConfig, PneEvent, PneOutput, PneSession, SecureSession,
};
use cpns_proto::usage::{Preference, Preferences};
use cpns_proto::{CommandError, CommandId, Completed, Flow, LocalPnState, OwnKeys, StoreFailure};
use cpns_store::{DeviceStore, GroupEpoch, LocalPn, LocalServiceGroup, LocalSession};
use cpns_wire::{
    CHARGING_SERVICE, ChargingList, ChargingQuery, ChargingRecord, CpnsId, DeliveryId,
    DeviceCapabilities, EntityId, ErrorBody, ErrorCode, GroupId, PnId, PnInventory, SetupType,
    Status, StatusEntry, StatusNotification, StatusPolicy,
};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::clock::{sleep_until, unix_millis};
use crate::error::{NodeError, store_failure};
use crate::frames::{DEFAULT_MAX_QUEUED, FrameError, FramedConn};
use crate::gateway::{local_pn_record, local_pn_state};
use crate::server_store::{open_sk, sealed_sk};
use crate::trace::{TraceSink, report};

/// One step of what a PNE does once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PneStep {
    /// 000 §6.6.1.1 step 1: ask for a PN of this type, until joined or failed.
    Setup(SetupType),
    /// Wait until this PNE joins a PN it is invited to (or declines, or fails).
    AwaitInvitation,
    /// 003 §1.4: register, in this PN or (with `None`) in the PN this PNE belongs to.
    Register(Option<PnId>),
    /// 003 §1.4.1 step 4: call `service` on the server over the secure session (registered
    /// now or before: the session is kept in the local store), until it answers.
    SecureCall {
        /// The service, e.g. [`cpns_wire::ECHO_SERVICE`].
        service: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// 000 §6.6.5.1: ask the PN GW to release this PN, until it is released.
    Release(PnId),
    /// 000 §6.6.3.1.1: ask the PN GW to take this PNE out of this PN, until it is out.
    Leave(PnId),
}

/// What the PNE did.
#[derive(Clone, Debug, Default)]
pub struct PneReport {
    /// Every event, in order.
    pub events: Vec<PneEvent>,
}

impl PneReport {
    /// The flows that failed, its commands' and its own, each as a line.
    pub fn failures(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                PneEvent::FlowFailed { flow, reason }
                | PneEvent::Completed(Completed {
                    flow,
                    result: Err(reason),
                    ..
                }) => Some(format!("{flow}: {reason}")),
                PneEvent::PnRefused { reason, .. } => Some(reason.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The PN this PNE joined first, by its own set-up or join, or by an invitation.
    pub fn joined(&self) -> Option<&PnInventory> {
        self.events.iter().find_map(|e| match e {
            PneEvent::PnJoined { inventory, .. }
            | PneEvent::Completed(Completed {
                result: Ok(Outcome::PnJoined { inventory, .. }),
                ..
            }) => Some(inventory),
            _ => None,
        })
    }
}

/// Runs a PNE against the PN GW at `gw_addr`: discovery, then `steps` in order. Returns when
/// every step has ended (or at `stop`, or when the link closes).
pub async fn run<S: DeviceStore>(
    cfg: PneConfig,
    store: S,
    gw_addr: &str,
    steps: Vec<PneStep>,
    events: Option<mpsc::Sender<PneEvent>>,
    trace: TraceSink,
    mut stop: oneshot::Receiver<()>,
) -> Result<PneReport, NodeError> {
    let outlets = Outlets {
        events,
        fanout: None,
        inbox: None,
        share: None,
    };
    let mut link = Link::open(cfg, store, gw_addr, outlets, trace, Preference::Server).await?;
    let mut steps = Steps::new(steps);
    loop {
        link.drain().await?;
        if link.discovered {
            match steps.next(&mut link)? {
                // What the step queued goes out first.
                StepsDone::Started => continue,
                StepsDone::Running => {}
                // A step that failed ends the script; the report tells how.
                StepsDone::Done | StepsDone::Failed(_) => {
                    link.conn.close().await;
                    return Ok(link.report);
                }
            }
        }
        tokio::select! {
            r = link.next() => r?,
            _ = &mut stop => return Ok(link.report),
        }
    }
}

/// A session's content hashed for its digest, or why not.
type Hashed = (DeliveryId, Result<Vec<[u8; 32]>, String>);

/// Which end a delivery session is kept as (its key's binding at rest, docs/security.md §4.9).
fn kept_as(as_source: bool) -> cpns_crypto::KeptAs {
    if as_source {
        cpns_crypto::KeptAs::Source
    } else {
        cpns_crypto::KeptAs::Target
    }
}

/// Whom a command's completion is for.
enum Waiter {
    /// A caller of the [`PneHandle`].
    Caller(Reply),
    /// A subscription's caller, whose notifications then go to `notes`.
    Subscriber(Reply, mpsc::Sender<StatusNotification>),
    /// A step of the script.
    Step,
}

/// Where a command's outcome goes.
type Reply = oneshot::Sender<Result<Outcome, ErrorBody>>;

/// A command of the machine, as the [`PneHandle`] asks it.
#[derive(Debug)]
enum Ask {
    Setup(SetupType),
    Register(Option<PnId>),
    AnswerInvitation(PnId, bool),
    Release(PnId),
    Leave(PnId),
    Join(PnId),
    Invite(PnId, EntityId),
    Expel(PnId, EntityId),
    Query(Option<PnId>),
    Follow(PnId, bool),
    SetCapabilities(Box<DeviceCapabilities>),
    SetStatus(Status, Option<String>),
    QueryStatus(Vec<EntityId>),
    Subscribe(
        Vec<EntityId>,
        StatusPolicy,
        mpsc::Sender<StatusNotification>,
    ),
    SecureCall(&'static str, Vec<u8>),
    SendUsage(Preferences),
    SendContent(PnId, Vec<u8>),
    Directory(DirectoryAsk),
    Group(GroupAsk),
    Deliver(Box<cpns_wire::DeliveryOffer>, Vec<std::path::PathBuf>),
    /// Declare the contents held now.
    Contents(Vec<cpns_wire::ContentItem>),
    /// Ask a member for content (pull).
    Request(Box<cpns_wire::DeliveryRequest>),
    /// A small payload in band to one PNE.
    Message(Box<cpns_wire::DeliveryMessage>),
}

/// A service group request of a running PNE (004 §5.5.9, §5.5.7.2), end to end.
#[derive(Debug)]
pub enum GroupAsk {
    /// Make a group, named, open to the user's devices or not.
    Create(String, bool),
    /// Invite a PNE into a group this PNE owns.
    Invite(GroupId, EntityId),
    /// Answer an invitation.
    Answer(GroupId, bool),
    /// Join a group open to the user's devices.
    Join(GroupId),
    /// Leave.
    Leave(GroupId),
    /// Expel a member.
    Expel(GroupId, EntityId),
    /// Delete a group this PNE owns.
    Delete(GroupId),
    /// Pull the current key.
    Key(GroupId),
    /// The members.
    Members(GroupId),
    /// Send content to the other members.
    Send(GroupId, Vec<u8>),
}

/// A request of a running PNE to the service directory (004 §5.5.5).
#[derive(Debug)]
pub enum DirectoryAsk {
    /// Publish (or update) a description, JSON.
    Publish(Vec<u8>),
    /// Take a service of this PNE's out.
    Unpublish(String),
    /// Discover.
    Discover(cpns_wire::ServiceDiscover),
    /// Retrieve one.
    Retrieve(u64),
    /// Watch.
    Watch(cpns_wire::ServiceWatch),
    /// End a watch.
    Unwatch(u64),
}

/// Commands to a PNE that [`serve`] runs.
#[derive(Debug)]
enum Command {
    /// The PNs it belongs to, as it holds them.
    Inventory(oneshot::Sender<Vec<PnInventory>>),
    /// The device's capabilities, as it holds them.
    Capabilities(oneshot::Sender<DeviceCapabilities>),
    /// The service groups whose key it holds: id, name, epoch.
    Groups(oneshot::Sender<Vec<(GroupId, String, u64)>>),
    /// Service control of a delivery it sends (004 §5.5.8.2).
    Control(
        DeliveryId,
        cpns_wire::ControlAction,
        oneshot::Sender<Result<(), ErrorBody>>,
    ),
    /// A command of the machine.
    Machine(Ask, Reply),
}

/// A status request of a running PNE.
#[derive(Debug)]
pub enum StatusAsk {
    /// Set this PNE's own status.
    Set(Status, Option<String>),
    /// The server's record of these entities (none: every device of this PNE's user).
    Query(Vec<EntityId>),
    /// Subscribe; the notifications go to the sender until it closes.
    Subscribe(
        Vec<EntityId>,
        StatusPolicy,
        mpsc::Sender<StatusNotification>,
    ),
}

/// The answer to a [`StatusAsk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusReply {
    /// The server recorded the status.
    Reported,
    /// The entities, as the server holds them.
    Entries(Vec<StatusEntry>),
    /// The subscription, with the watched entities now.
    Subscribed {
        /// Its id.
        subscription: u64,
        /// The snapshot.
        entries: Vec<StatusEntry>,
    },
}

/// What sending usage did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageSent {
    /// Records sent and acknowledged.
    pub sent: u32,
    /// Of those, records the server had already (a retry).
    pub duplicates: u32,
    /// Charging records the server made.
    pub charged: u32,
    /// Records of private services, kept on the device and never sent.
    pub withheld: u32,
}

/// What a registration gave (003 §1.4.1 step 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The CPNS ID.
    pub cpns_id: CpnsId,
    /// The PN registered in.
    pub pn_id: PnId,
    /// The secure session's lifetime, seconds.
    pub lifetime_s: u32,
}

/// Events kept for a follower that reads slowly before it misses some ([`PneHandle::events`]).
pub const EVENT_FOLLOWER_CAPACITY: usize = 256;

/// Acts on a PNE that [`serve`] runs.
#[derive(Clone, Debug)]
pub struct PneHandle {
    tx: mpsc::Sender<Command>,
    id: EntityId,
    fanout: broadcast::Sender<PneEvent>,
    signs: bool,
}

impl PneHandle {
    /// The PNE's entity id.
    pub fn id(&self) -> &EntityId {
        &self.id
    }

    /// Whether the PNE holds a member certificate, and so offers its deliveries without
    /// hashes: it signs their digest for the last chunk instead (docs/security.md §4.12).
    pub fn signs(&self) -> bool {
        self.signs
    }

    /// Follows the PNE: every event of its machine from now on, across reconnections, until
    /// the receiver is dropped. A follower more than [`EVENT_FOLLOWER_CAPACITY`] events behind
    /// misses the oldest and is told how many (`RecvError::Lagged`); it never slows the PNE.
    pub fn events(&self) -> broadcast::Receiver<PneEvent> {
        self.fanout.subscribe()
    }

    /// 000 §6.6.1.1: asks the PN GW for a PN of this type; `Ok` once the server is
    /// authenticated and the PN stored (step 15).
    pub async fn setup(&self, setup: SetupType) -> Result<PnInventory, NodeError> {
        match self.run(Ask::Setup(setup)).await? {
            Outcome::PnJoined { inventory, .. } => Ok(inventory),
            other => Err(unexpected(&other)),
        }
    }

    /// 003 §1.4: registers with the server, in `pn_id` (none: the first PN it is a member of,
    /// or none at all).
    pub async fn register(&self, pn_id: Option<PnId>) -> Result<Registration, NodeError> {
        match self.run(Ask::Register(pn_id)).await? {
            Outcome::Registered {
                cpns_id,
                pn_id,
                lifetime_s,
            } => Ok(Registration {
                cpns_id,
                pn_id,
                lifetime_s,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Answers an invitation held for the application (`InvitationPolicy::Ask`): accepted (the
    /// join follows as the PNE's own flow, told by its events) or declined.
    pub async fn answer_invitation(&self, pn_id: PnId, accept: bool) -> Result<bool, NodeError> {
        match self.run(Ask::AnswerInvitation(pn_id, accept)).await? {
            Outcome::InvitationAnswered { accepted, .. } => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    /// The PNs the PNE belongs to.
    pub async fn inventory(&self) -> Result<Vec<PnInventory>, NodeError> {
        self.ask(Command::Inventory).await
    }

    /// 000 §6.6.5.1: asks the PN GW to release a PN the PNE is a member of; `Ok` once the PN is
    /// gone from the server, the PN GW and this PNE.
    pub async fn release(&self, pn_id: PnId) -> Result<PnId, NodeError> {
        self.run(Ask::Release(pn_id)).await.map(|_| pn_id)
    }

    /// 000 §6.6.3.1.1: asks the PN GW to take this PNE out of a PN; `Ok` once it is out of the
    /// server's inventory, the PN GW's and its own.
    pub async fn leave(&self, pn_id: PnId) -> Result<PnId, NodeError> {
        self.run(Ask::Leave(pn_id)).await.map(|_| pn_id)
    }

    /// 000 §6.6.2.2: asks to join a PN the PN GW serves; `Ok` once the server authenticated
    /// this PNE and it is a member everywhere, holding the PN's new group key.
    pub async fn join(&self, pn_id: PnId) -> Result<PnId, NodeError> {
        self.run(Ask::Join(pn_id)).await.map(|_| pn_id)
    }

    /// 000 §6.6.2.1.2: asks the PN GW to invite `invitee` into a PN this PNE is a member of;
    /// `Ok(true)` once it joined, `Ok(false)` if it declined.
    pub async fn invite(&self, pn_id: PnId, invitee: EntityId) -> Result<bool, NodeError> {
        match self.run(Ask::Invite(pn_id, invitee)).await? {
            Outcome::InviteAnswered { accepted, .. } => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    /// 004 §5.5.10: asks the PN GW to expel `pne` from a PN this PNE is a member of; `Ok` once
    /// the server agreed and the PN GW removed it (the server lets only a member of the PN's
    /// owner ask).
    pub async fn expel(&self, pn_id: PnId, pne: EntityId) -> Result<PnId, NodeError> {
        self.run(Ask::Expel(pn_id, pne)).await.map(|_| pn_id)
    }

    /// 004 §5.5.10: reads a PN's inventory (its own from its PN GW, another of its user's from
    /// the server, end to end), or with `None` every PN of its user.
    pub async fn query(
        &self,
        pn_id: Option<PnId>,
    ) -> Result<(Vec<PnInventory>, Vec<cpns_wire::MemberServices>), NodeError> {
        match self.run(Ask::Query(pn_id)).await? {
            Outcome::Inventory { pns, services } => Ok((pns, services)),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts (`follow`) or stops following what changes in `pn_id`'s inventory, through its
    /// PN GW (docs/services.md, "Following the changes"): the PN's inventory as its PN GW holds
    /// it. The changes come as [`PneEvent::InventoryChanged`] on [`Self::events`], across the
    /// PNE's links, until it stops, leaves the PN or the PN is released.
    pub async fn follow_inventory(
        &self,
        pn_id: PnId,
        follow: bool,
    ) -> Result<PnInventory, NodeError> {
        match self.run(Ask::Follow(pn_id, follow)).await? {
            Outcome::Inventory { pns, .. } => pns
                .into_iter()
                .find(|p| p.pn_id == pn_id)
                .ok_or_else(|| NodeError::Ended(format!("PN {pn_id} was not in the answer"))),
            other => Err(unexpected(&other)),
        }
    }

    /// The device's capabilities; with `set`, changed first (reported to the server at once,
    /// or coalesced for dynamic-only changes: docs/device-status.md).
    pub async fn capabilities(
        &self,
        set: Option<DeviceCapabilities>,
    ) -> Result<DeviceCapabilities, NodeError> {
        if let Some(caps) = set {
            self.run(Ask::SetCapabilities(Box::new(caps))).await?;
        }
        self.ask(Command::Capabilities).await
    }

    /// A status request: set this PNE's own status, query, or subscribe (004 §5.5.3).
    pub async fn status(&self, ask: StatusAsk) -> Result<StatusReply, NodeError> {
        let ask = match ask {
            StatusAsk::Set(status, label) => Ask::SetStatus(status, label),
            StatusAsk::Query(entities) => Ask::QueryStatus(entities),
            StatusAsk::Subscribe(entities, policy, notes) => {
                Ask::Subscribe(entities, policy, notes)
            }
        };
        match self.run(ask).await? {
            Outcome::StatusReported => Ok(StatusReply::Reported),
            Outcome::Statuses(entries) => Ok(StatusReply::Entries(entries)),
            Outcome::Subscribed {
                subscription,
                entries,
            } => Ok(StatusReply::Subscribed {
                subscription,
                entries,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends the usage records `prefs` allow (004 §5.5.4), end to end; private ones are
    /// marked withheld and never sent. Needs the secure session a registration gives.
    pub async fn send_usage(&self, prefs: Preferences) -> Result<UsageSent, NodeError> {
        match self.run(Ask::SendUsage(prefs)).await? {
            Outcome::UsageSent {
                ids,
                stored,
                duplicates,
                charged,
                withheld,
            } => Ok(UsageSent {
                sent: if ids.is_empty() {
                    0
                } else {
                    stored + duplicates
                },
                duplicates,
                charged,
                withheld: u32::try_from(withheld.len()).unwrap_or(u32::MAX),
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `content` to the other members of a PN linked to its PN GW, signed by this PNE
    /// and sealed under the PN's group key (docs/security.md §4.11); `Ok` with how many members
    /// the PN GW relayed it to.
    pub async fn send_content(&self, pn_id: PnId, content: Vec<u8>) -> Result<u32, NodeError> {
        match self.run(Ask::SendContent(pn_id, content)).await? {
            Outcome::ContentSent { delivered, .. } => Ok(delivered),
            other => Err(unexpected(&other)),
        }
    }

    /// A request to the service directory (004 §5.5.5), end to end: its outcome
    /// ([`Outcome::ServicePublished`], [`Outcome::ServiceUnpublished`],
    /// [`Outcome::ServicesFound`] or [`Outcome::ServiceRetrieved`]).
    pub async fn directory(&self, ask: DirectoryAsk) -> Result<Outcome, NodeError> {
        self.run(Ask::Directory(ask)).await
    }

    /// A service group request (004 §5.5.9), end to end: its outcome
    /// ([`Outcome::ServiceGroupKey`], [`Outcome::ServiceGroupDone`],
    /// [`Outcome::ServiceGroupMembers`] or [`Outcome::ServiceGroupSent`]).
    pub async fn group(&self, ask: GroupAsk) -> Result<Outcome, NodeError> {
        self.run(Ask::Group(ask)).await
    }

    /// Offers the content of `paths` as `offer` (004 §5.5.8): one file for each item, in
    /// order (the first, then each of `offer.more`). `Ok` with [`Outcome::DeliveryGranted`]
    /// once the server set the session up; the content then moves as the targets accept, told
    /// by the delivery events.
    pub async fn deliver(
        &self,
        offer: cpns_wire::DeliveryOffer,
        paths: Vec<std::path::PathBuf>,
    ) -> Result<Outcome, NodeError> {
        if paths.len() != 1 + offer.more.len() {
            let why = format!(
                "{} files for an offer of {} items",
                paths.len(),
                1 + offer.more.len()
            );
            return Err(NodeError::Rejected(cpns_wire::ErrorBody::new(
                cpns_wire::ErrorCode::BadRequest,
                why,
            )));
        }
        self.run(Ask::Deliver(Box::new(offer), paths)).await
    }

    /// Asks a member for content it declared it holds (004 §5.5.8.2, pull), end to end: `Ok`
    /// once the member was asked; its delivery follows as an offer to this PNE.
    pub async fn request_delivery(&self, req: cpns_wire::DeliveryRequest) -> Result<(), NodeError> {
        match self.run(Ask::Request(Box::new(req))).await? {
            Outcome::DeliveryRequested { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a small payload in band to one PNE (004 §5.5.8), end to end: `Ok` once handed on.
    pub async fn send_message(&self, m: cpns_wire::DeliveryMessage) -> Result<(), NodeError> {
        match self.run(Ask::Message(Box::new(m))).await? {
            Outcome::MessageSent { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Service control of a delivery this PNE sends (004 §5.5.8.2): taken, and told to its
    /// targets through the PN GW; refused for a session it does not send, in a state the
    /// action does not fit, or without a link.
    pub async fn control_delivery(
        &self,
        session: DeliveryId,
        action: cpns_wire::ControlAction,
    ) -> Result<(), NodeError> {
        self.ask(|reply| Command::Control(session, action, reply))
            .await?
            .map_err(NodeError::Rejected)
    }

    /// Declares the contents this PNE holds now (004 §5.5.10), end to end: how many the server
    /// kept.
    pub async fn declare_contents(
        &self,
        contents: Vec<cpns_wire::ContentItem>,
    ) -> Result<u32, NodeError> {
        match self.run(Ask::Contents(contents)).await? {
            Outcome::ContentsDeclared { count } => Ok(count),
            other => Err(unexpected(&other)),
        }
    }

    /// The service groups whose key this PNE holds (id, name, epoch), with or without a link.
    pub async fn groups(&self) -> Result<Vec<(GroupId, String, u64)>, NodeError> {
        self.ask(Command::Groups).await
    }

    /// This PNE's user's charging records of uses since `since_s` (CPNS-4), end to end.
    pub async fn charging(&self, since_s: u64) -> Result<Vec<ChargingRecord>, NodeError> {
        let query = ChargingQuery {
            since_s: Some(since_s),
        };
        let payload = minicbor::to_vec(&query).unwrap_or_default();
        match self.run(Ask::SecureCall(CHARGING_SERVICE, payload)).await? {
            Outcome::SecureAnswer { payload, .. } => minicbor::decode::<ChargingList>(&payload)
                .map(|l| l.records)
                .map_err(|_| {
                    NodeError::Rejected(ErrorBody::new(
                        ErrorCode::Internal,
                        "the server's answer did not decode",
                    ))
                }),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a command of the machine; its outcome, or why it did not succeed.
    async fn run(&self, ask: Ask) -> Result<Outcome, NodeError> {
        self.ask(|reply| Command::Machine(ask, reply))
            .await?
            .map_err(NodeError::Rejected)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(command(tx))
            .await
            .map_err(|_| NodeError::Stopped("PNE"))?;
        rx.await.map_err(|_| NodeError::Stopped("PNE"))
    }
}

/// An outcome another command has: a driver that mixed up its waiters.
pub(crate) fn unexpected(o: &Outcome) -> NodeError {
    NodeError::Rejected(ErrorBody::new(
        ErrorCode::Internal,
        format!("an unexpected outcome: {o:?}"),
    ))
}

/// Settings of a long-running PNE ([`serve`]).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The PN GW's PAN address.
    pub gateway: String,
    /// Delay before the first reconnection to the PN GW (doubling, with jitter).
    pub reconnect_initial: Duration,
    /// Longest delay between reconnections.
    pub reconnect_max: Duration,
    /// The reporting preference of a service with none of its own (004 §5.5.4).
    pub usage_default: Preference,
    /// Where deliveries this PNE receives are kept (docs/services.md, "Delivery"); none: it
    /// takes none.
    pub inbox: Option<std::path::PathBuf>,
    /// Where the content it lets others pull is (docs/services.md, "Pull"): a request for a
    /// name it declared is answered with a delivery of the file of that name here; none: the
    /// requests are only told, for its application to answer.
    pub share: Option<std::path::PathBuf>,
}

impl ServeConfig {
    /// Reconnecting to the PN GW at `gateway` after 250 ms, doubling up to 15 s.
    pub fn new(gateway: String) -> Self {
        Self {
            gateway,
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(15),
            usage_default: Preference::Server,
            inbox: None,
            share: None,
        }
    }
}

/// Runs a PNE that stays (docs/pn-lifecycle.md, "Long-running entities"): it runs `steps` once,
/// then stays connected to its PN GW, runs the machine's connection set-up (`rejoin`: proof,
/// key pulls, confirmations, a capabilities report) after each connection, keeps its local
/// inventory current, and acts on the commands of its [`PneHandle`]. A lost link is opened
/// again with backoff. Ends at `stop`, or with an error when a step fails.
pub fn serve<S: DeviceStore + Clone>(
    cfg: PneConfig,
    serve: ServeConfig,
    store: S,
    steps: Vec<PneStep>,
    events: Option<mpsc::Sender<PneEvent>>,
    trace: TraceSink,
    stop: oneshot::Receiver<()>,
) -> (PneHandle, tokio::task::JoinHandle<Result<(), NodeError>>) {
    let (tx, commands) = mpsc::channel(16);
    let (fanout, _) = broadcast::channel(EVENT_FOLLOWER_CAPACITY);
    let handle = PneHandle {
        tx,
        id: cfg.id.clone(),
        fanout: fanout.clone(),
        signs: cfg.signing.is_some(),
    };
    let outlets = Outlets {
        events,
        fanout: Some(fanout),
        inbox: serve.inbox.clone(),
        share: serve.share.clone(),
    };
    let task = tokio::spawn(serve_loop(
        cfg, serve, store, steps, outlets, trace, commands, stop,
    ));
    (handle, task)
}

/// Where a PNE's events go: the driver's consumer (bounded; what it cannot take is dropped),
/// and its followers ([`PneHandle::events`]).
#[derive(Clone, Debug, Default)]
struct Outlets {
    events: Option<mpsc::Sender<PneEvent>>,
    fanout: Option<broadcast::Sender<PneEvent>>,
    /// Where received deliveries are kept; none: this PNE takes none.
    inbox: Option<std::path::PathBuf>,
    /// Where the content others may pull is; none: requests are only told.
    share: Option<std::path::PathBuf>,
}

#[allow(clippy::too_many_arguments)]
async fn serve_loop<S: DeviceStore + Clone>(
    cfg: PneConfig,
    serve: ServeConfig,
    store: S,
    steps: Vec<PneStep>,
    outlets: Outlets,
    trace: TraceSink,
    mut commands: mpsc::Receiver<Command>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), NodeError> {
    let mut cfg = cfg;
    let mut backoff = Backoff::new(
        serve.reconnect_initial,
        serve.reconnect_max,
        cpns_crypto::MachineRng::os(),
    );
    let mut steps = Some(steps);
    // PNs whose key a PN GW did not prove it holds: not tried again on the next links
    // (docs/security.md §4.4, "Not provable here").
    let mut unprovable = std::collections::BTreeSet::new();
    // Delivery sessions and their files outlive a link: the next one resumes them.
    let mut carried = None;
    let mut restored = false;
    loop {
        let opened = tokio::select! {
            l = Link::open(cfg.clone(), store.clone(), &serve.gateway, outlets.clone(), trace.clone(), serve.usage_default) => l,
            _ = &mut stop => return Ok(()),
        };
        let lost = match opened {
            Ok(mut link) => {
                link.session.skip_proofs(&unprovable);
                if let Some((kept, files, following)) = carried.take() {
                    link.session.restore_deliveries(kept);
                    link.session.restore_following(following);
                    link.files = files;
                } else if !restored {
                    // The first link after a start: what the store kept goes on.
                    restored = true;
                    link.restore_kept_deliveries().await;
                }
                let steps = steps.take().unwrap_or_default();
                let stayed = link
                    .stay(steps, &mut backoff, &mut commands, &mut stop)
                    .await;
                // What the device is now outlives the link, and so does what its PN GW
                // could not prove.
                cfg.capabilities = link.session.capabilities().clone();
                unprovable = link.session.unprovable().clone();
                carried = Some((
                    link.session.take_deliveries(),
                    std::mem::take(&mut link.files),
                    link.session.following(),
                ));
                link.abandon_waiters();
                match stayed {
                    Ok(()) => return Ok(()),
                    Err(e @ NodeError::Ended(_)) if link.steps_failed => return Err(e),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        warn!(error = %lost, ?delay, "no link to the PN GW; reconnecting");
        let wake = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                c = commands.recv() => match c {
                    Some(c) => offline(&store, &cfg.capabilities, c).await,
                    None => return Ok(()),
                },
                _ = &mut stop => return Ok(()),
            }
        }
    }
}

/// Answers a command while there is no link to the PN GW.
async fn offline<S: DeviceStore>(store: &S, caps: &DeviceCapabilities, c: Command) {
    match c {
        Command::Inventory(reply) => {
            let pns = store.local_pns().await.unwrap_or_default();
            let _ = reply.send(pns.iter().map(|p| local_pn_state(p).inventory).collect());
        }
        Command::Capabilities(reply) => {
            let _ = reply.send(caps.clone());
        }
        Command::Groups(reply) => {
            let groups = store.local_groups().await.unwrap_or_default();
            let _ = reply.send(
                groups
                    .into_iter()
                    .map(|g| (g.group_id, g.name, g.epoch))
                    .collect(),
            );
        }
        Command::Machine(_, reply) => {
            let _ = reply.send(Err(no_link()));
        }
        Command::Control(_, _, reply) => {
            let _ = reply.send(Err(no_link()));
        }
    }
}

/// The reporting preferences kept in a PNE's store, `default` for services with none.
pub async fn usage_prefs<S: DeviceStore>(
    store: &S,
    default: Preference,
) -> Result<Preferences, cpns_store::StoreError> {
    let mut prefs = Preferences {
        default,
        ..Preferences::default()
    };
    prefs.services.extend(store.usage_prefs().await?);
    Ok(prefs)
}

/// Why a command that needs the PN GW fails while the PNE reconnects.
fn no_link() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Busy,
        "the PNE has no link to its PN GW; it is reconnecting, try again shortly",
    )
}

/// How far the script of steps has got.
struct Steps {
    left: std::vec::IntoIter<PneStep>,
    /// The step running: its command, or `None` for [`PneStep::AwaitInvitation`].
    current: Option<Option<CommandId>>,
}

/// Where the script is.
enum StepsDone {
    /// A step started now: what it queued is to be sent.
    Started,
    /// A step runs.
    Running,
    /// Every step ended.
    Done,
    /// A step failed, for this reason; the steps after it do not run.
    Failed(String),
}

impl Steps {
    fn new(steps: Vec<PneStep>) -> Self {
        Self {
            left: steps.into_iter(),
            current: None,
        }
    }

    /// Starts the next step once the current one ended; `Err` when a step failed.
    fn next<S: DeviceStore>(&mut self, link: &mut Link<S>) -> Result<StepsDone, NodeError> {
        if let Some(current) = self.current {
            match link.step_ended(current) {
                None => return Ok(StepsDone::Running),
                Some(Ok(())) => self.current = None,
                Some(Err(why)) => {
                    link.steps_failed = true;
                    return Ok(StepsDone::Failed(why));
                }
            }
        }
        let Some(step) = self.left.next() else {
            return Ok(StepsDone::Done);
        };
        let started = link.start(&step).map_err(|e| {
            link.steps_failed = true;
            NodeError::Rejected(e.to_error())
        })?;
        self.current = Some(started);
        Ok(StepsDone::Started)
    }
}

/// One PAN link to the PN GW and the machine on it.
struct Link<S> {
    session: PneSession,
    conn: FramedConn<TcpStream>,
    store: S,
    cfg: PneConfig,
    storage_key: MasterKey,
    outlets: Outlets,
    trace: TraceSink,
    report: PneReport,
    /// The preference of a service with none of its own, for the PNE's own usage reports.
    usage_default: Preference,
    /// Whom each command's completion is for.
    waiters: BTreeMap<CommandId, Waiter>,
    /// The steps' completions, until the script looks at them.
    step_ends: BTreeMap<CommandId, Result<(), String>>,
    /// How the invitation a [`PneStep::AwaitInvitation`] waits for ended, once it did.
    invitation: Option<Result<(), String>>,
    /// Where each subscription's notifications go.
    watchers: BTreeMap<u64, mpsc::Sender<StatusNotification>>,
    discovered: bool,
    /// Set when a step failed: a long-running PNE stops rather than retry it.
    steps_failed: bool,
    /// The files of its deliveries.
    files: crate::content_files::ContentFiles,
    /// The file each delivery offer waiting for its grant sends.
    /// The files of each offer not answered yet, each with its size as offered.
    offer_paths: BTreeMap<CommandId, Vec<(std::path::PathBuf, u64)>>,
    /// The content of sessions offered without hashes, being hashed for their digest.
    hashing: tokio::task::JoinSet<Hashed>,
    /// The session each task of `hashing` hashes, to end it if the task fails.
    hashing_for: std::collections::HashMap<tokio::task::Id, DeliveryId>,
    /// Sessions whose content is to be hashed once their files are known (the machine asks
    /// as the grant comes, before its completion names the files).
    hash_wanted: std::collections::BTreeSet<DeliveryId>,
    /// Sessions sent from here to keep once their files are known (as `hash_wanted`).
    keep_wanted: BTreeMap<DeliveryId, cpns_proto::pne::KeptSession>,
    /// Sessions whose files are known now, to keep at the next turn.
    keep_later: Vec<cpns_proto::pne::KeptSession>,
    /// Requests for content (pull) to answer from the shared directory.
    pulls: Vec<Pull>,
}

/// A request for content to answer from the shared directory.
#[derive(Debug)]
struct Pull {
    requester: EntityId,
    name: String,
    service_id: String,
    pn_id: PnId,
}

impl<S: DeviceStore> Link<S> {
    /// Reloads the local inventory and secure session, connects, and starts discovery.
    async fn open(
        cfg: PneConfig,
        store: S,
        gw_addr: &str,
        outlets: Outlets,
        trace: TraceSink,
        usage_default: Preference,
    ) -> Result<Self, NodeError> {
        let inbox = outlets.inbox.clone();
        let mut session = PneSession::new(cfg.clone(), cpns_crypto::MachineRng::os());
        let stored = store.local_pns().await?;
        let storage_key = cpns_crypto::device_storage_key(&cfg.eukey);
        let states = stored
            .iter()
            .map(|p| pne_state(p, &storage_key, &cfg.id))
            .collect::<Result<_, _>>()?;
        session.restore(states)?;
        session.restore_groups(kept_groups(&store, &storage_key).await?);
        if let Some(kept) = store.local_session().await? {
            let session_key =
                open_sk(&storage_key, &kept.pn_id, &cfg.id, &kept.sealed_session_key)?;
            session.restore_session(SecureSession {
                cpns_id: kept.cpns_id,
                pn_id: kept.pn_id,
                session_key,
                lifetime_s: u32::try_from(kept.lifetime_s).unwrap_or(u32::MAX),
            });
        }
        let connect = |source| NodeError::Connect {
            addr: gw_addr.to_string(),
            source,
        };
        let stream = TcpStream::connect(gw_addr).await.map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        // The PN GW is the peer this PNE chose to connect to: its frames get the full limit.
        let conn = FramedConn::new(stream, cfg.max_frame, DEFAULT_MAX_QUEUED);
        let discovery = session
            .start_discovery(Instant::now())
            .map_err(|e| NodeError::Rejected(e.to_error()))?;
        let mut waiters = BTreeMap::new();
        waiters.insert(discovery, Waiter::Step);
        Ok(Self {
            session,
            conn,
            store,
            cfg,
            storage_key,
            outlets,
            trace,
            report: PneReport::default(),
            usage_default,
            waiters,
            step_ends: BTreeMap::new(),
            invitation: None,
            watchers: BTreeMap::new(),
            discovered: false,
            steps_failed: false,
            files: crate::content_files::ContentFiles::new(inbox),
            offer_paths: BTreeMap::new(),
            hashing: tokio::task::JoinSet::new(),
            hashing_for: std::collections::HashMap::new(),
            hash_wanted: std::collections::BTreeSet::new(),
            keep_wanted: BTreeMap::new(),
            keep_later: Vec::new(),
            pulls: Vec::new(),
        })
    }

    /// Carries out the machine's outputs.
    /// Answers a request for content from the shared directory: the file of that name there
    /// (a plain name, no path; a regular file inside the directory) goes as a delivery to
    /// whoever asked. One that cannot be answered is told, and nothing is sent.
    async fn answer_pull(&mut self, p: Pull) {
        let Some(share) = self.outlets.share.clone() else {
            return;
        };
        let plain = !p.name.is_empty()
            && p.name != "."
            && p.name != ".."
            && !p.name.contains(['/', '\\', '\0']);
        let path = share.join(&p.name);
        let inside = match (
            tokio::fs::canonicalize(&share).await,
            tokio::fs::canonicalize(&path).await,
        ) {
            (Ok(root), Ok(file)) => file.starts_with(&root) && file.is_file(),
            _ => false,
        };
        // Hashed first only by a PNE that cannot sign the digest for the last chunk.
        let measured = if !(plain && inside) {
            Err(format!(
                "no file \"{}\" is shared here",
                p.name.escape_debug()
            ))
        } else if self.cfg.signing.is_some() {
            crate::content_files::measure(&path)
                .await
                .map(|s| (s, None))
        } else {
            crate::content_files::digest(&path)
                .await
                .map(|(s, h)| (s, Some(cpns_wire::HashBytes(h))))
        };
        let (size, sha256) = match measured {
            Ok(d) => d,
            Err(why) => {
                warn!(requester = %p.requester, name = %p.name.escape_debug(), %why, "a pull not answered");
                return;
            }
        };
        let offer = cpns_wire::DeliveryOffer {
            service_id: p.service_id,
            targets: vec![p.requester],
            name: p.name,
            media_type: "application/octet-stream".into(),
            size,
            sha256,
            to_pn: Some(p.pn_id),
            held: false,
            requires: Vec::new(),
            suite: None,
            group: None,
            user: None,
            more: Vec::new(),
        };
        match self.session.offer_delivery(Instant::now(), &offer) {
            Ok(id) => {
                self.offer_paths.insert(id, vec![(path, offer.size)]);
            }
            Err(e) => warn!(error = %e, "a pull not answered"),
        }
    }

    async fn drain(&mut self) -> Result<(), NodeError> {
        loop {
            self.drain_outputs().await?;
            for kept in std::mem::take(&mut self.keep_later) {
                self.keep_delivery(kept).await;
            }
            if self.pulls.is_empty() {
                return Ok(());
            }
            for p in std::mem::take(&mut self.pulls) {
                self.answer_pull(p).await;
            }
        }
    }

    async fn drain_outputs(&mut self) -> Result<(), NodeError> {
        let me = self.cfg.id.to_string();
        while let Some(out) = self.session.poll_output() {
            match out {
                PneOutput::Transmit {
                    frame,
                    trace: record,
                } => {
                    let gw = self
                        .session
                        .gateway()
                        .map_or_else(|| "gateway".to_string(), |g| g.to_string());
                    report(&self.trace, &me, &gw, &record);
                    self.conn.queue(&frame)?;
                }
                PneOutput::Persist { token, pn } => {
                    let result = match pne_record(&pn, &self.storage_key, &self.cfg.id) {
                        Ok(record) => self
                            .store
                            .save_local_pn(&record)
                            .await
                            .map_err(|e| store_failure(&e)),
                        Err(e) => Err(e),
                    };
                    self.session.handle_persisted(token, result)?;
                }
                PneOutput::Forget { token, pn_id } => {
                    // A PN already gone is what was asked for.
                    let result = self
                        .store
                        .remove_local_pn(&pn_id)
                        .await
                        .map(drop)
                        .map_err(|e| store_failure(&e));
                    self.session.handle_persisted(token, result)?;
                }
                PneOutput::PersistSession { session: s } => {
                    let sealed =
                        sealed_sk(&self.storage_key, &s.pn_id, &self.cfg.id, &s.session_key)
                            .map_err(|e| NodeError::Sealed {
                                what: "the secure session's key".into(),
                                reason: e.to_string(),
                            })?;
                    let record = LocalSession {
                        cpns_id: s.cpns_id,
                        pn_id: s.pn_id,
                        sealed_session_key: sealed,
                        lifetime_s: i64::from(s.lifetime_s),
                        stored_at: unix_millis(),
                    };
                    self.store.save_local_session(&record).await?;
                }
                PneOutput::LoadUsage { token } => {
                    let loaded = self.unsent_usage().await;
                    self.session
                        .handle_usage_loaded(Instant::now(), token, loaded)?;
                }
                PneOutput::MarkUsage { ids } => {
                    // Not marked: sent again next time, and the server keeps each once.
                    if let Err(e) = self.store.mark_local_usage_sent(&ids).await {
                        warn!(error = %e, "usage records could not be marked done");
                    }
                }
                PneOutput::HashContent { session } => self.hash_content(session),
                PneOutput::KeepDelivery(kept) => self.keep_delivery(kept).await,
                PneOutput::ForgetDelivery { session } => {
                    // Not removed: taken back after a restart, it ends when no target answers.
                    if let Err(e) = self.store.remove_local_delivery(&session).await {
                        warn!(%session, error = %e, "a delivery session could not be forgotten");
                    }
                }
                PneOutput::ReadChunk {
                    session,
                    offset,
                    len,
                } => {
                    // What waits for the PN GW goes out first: the socket paces the reads.
                    if self.conn.queued() > DEFAULT_MAX_QUEUED / 2 {
                        self.conn.flush().await?;
                    }
                    let read = self.files.read(session, offset, len).await;
                    let hashed = match &read {
                        Ok(plain) => {
                            self.files
                                .hashed_as_read(session, offset, plain.content())
                                .await
                        }
                        Err(_) => None,
                    };
                    self.session.handle_chunk_read(session, offset, read);
                    if let Some(hashed) = hashed {
                        self.as_sent(session, hashed);
                    }
                }
                PneOutput::OpenReceive { session, items, .. } => {
                    let opened = self.files.open_receive(session, items).await;
                    self.session
                        .handle_receive_opened(Instant::now(), session, opened);
                }
                PneOutput::WriteChunk {
                    session,
                    offset,
                    bytes,
                } => {
                    let (buf, within) = bytes.into_parts();
                    let written = self.files.write_in(session, offset, buf, within).await;
                    self.session
                        .handle_chunk_written(Instant::now(), session, written);
                }
                PneOutput::FinishReceive {
                    session,
                    sha256,
                    specific,
                } => {
                    let finished = self.files.finish(session, &sha256, &specific).await;
                    for path in finished.iter().flatten().flatten() {
                        tracing::info!(%session, path = %path.display(), "delivery kept");
                    }
                    self.session.handle_receive_finished(
                        Instant::now(),
                        session,
                        finished.map(|kept| kept.iter().map(Option::is_some).collect()),
                    );
                }
                PneOutput::DiscardReceive { session } => self.files.discard(session).await,
                PneOutput::KeepGroup { group_id, group } => {
                    // Not kept: the key is held in memory still, and pulled again after a
                    // restart.
                    let kept = keep_group(&self.store, &self.storage_key, group_id, &group);
                    if let Err(e) = kept.await {
                        warn!(group = %group_id, error = %e, "a service group key could not be kept");
                    }
                }
                PneOutput::ForgetGroup { group_id } => {
                    // Not removed: the server gives no later key, and a left group's stale key
                    // opens nothing new.
                    if let Err(e) = self.store.remove_local_group(&group_id).await {
                        warn!(group = %group_id, error = %e, "a service group key could not be removed");
                    }
                }
                PneOutput::Event(e) => self.on_event(e),
                PneOutput::Close { reason } => {
                    self.conn.close().await;
                    return Err(NodeError::Ended(reason));
                }
            }
        }
        Ok(())
    }

    /// Reports an event, and hands a completion to whoever waits for it.
    fn on_event(&mut self, e: PneEvent) {
        // The driver reports events (the CLI prints them); the Debug form is for debugging.
        debug!(event = ?e, "pne");
        if let Some(tx) = &self.outlets.events
            && tx.try_send(e.clone()).is_err()
        {
            debug!("PNE event dropped: the consumer is not keeping up");
        }
        if let Some(fanout) = &self.outlets.fanout {
            // No follower is not an error: nobody listens now.
            let _ = fanout.send(e.clone());
        }
        self.report.events.push(e.clone());
        match e {
            PneEvent::Completed(c) => self.completed(c),
            PneEvent::DeliveryRequested {
                requester,
                name,
                service_id,
                pn_id,
                ..
            } if self.outlets.share.is_some() => self.pulls.push(Pull {
                requester,
                name,
                service_id,
                pn_id,
            }),
            PneEvent::StatusNotified(n) => self.notify(n),
            PneEvent::PnJoined { .. } => self.invitation = Some(Ok(())),
            PneEvent::InvitationDeclined(pn) => {
                self.invitation = Some(Err(format!("declined the invitation to PN {pn}")));
            }
            PneEvent::PnRefused { reason, .. } => self.invitation = Some(Err(reason.to_string())),
            PneEvent::FlowFailed {
                flow: flow @ (Flow::PnEstablishment | Flow::PneRegistration),
                reason,
            } => self.invitation = Some(Err(format!("{flow}: {reason}"))),
            PneEvent::FlowFailed { .. }
            | PneEvent::InventoryChanged { .. }
            | PneEvent::InventoryFollowedAgain { .. }
            | PneEvent::Invited { .. }
            | PneEvent::PanAuthenticated { .. }
            | PneEvent::Registered { .. }
            | PneEvent::PnReleased(_)
            | PneEvent::Expelled(_)
            | PneEvent::PnUpdated { .. }
            | PneEvent::MembershipConfirmed { .. }
            | PneEvent::CapabilitiesReported
            | PneEvent::UsageSent { .. }
            | PneEvent::GroupContent { .. }
            | PneEvent::ContentRefused { .. }
            | PneEvent::ServiceMatched(_)
            | PneEvent::ServiceGroupKey { .. }
            | PneEvent::ServiceGroupInvited(_)
            | PneEvent::ServiceGroupEnded { .. }
            | PneEvent::ServiceGroupContent { .. }
            | PneEvent::ServiceGroupContentRefused { .. }
            | PneEvent::DeliveryOffered { .. }
            | PneEvent::DeliveryReceived { .. }
            | PneEvent::DeliverySent { .. }
            | PneEvent::DeliveryEnded { .. }
            | PneEvent::DeliveryRequested { .. }
            | PneEvent::MessageReceived { .. }
            | PneEvent::DeliveryControlled { .. } => {}
        }
    }

    /// Takes back the delivery sessions the store kept (a restart midway): each key opened
    /// under the device's storage key, a source's files sent from again, each handed to the
    /// machine. One that cannot be taken back (its key does not open, its description does
    /// not decode) is said so and forgotten.
    async fn restore_kept_deliveries(&mut self) {
        let kept = match self.store.local_deliveries().await {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "the kept delivery sessions could not be read");
                return;
            }
        };
        for d in kept {
            let session = d.session;
            let key = cpns_crypto::open_delivery_key_at_rest(
                &self.storage_key,
                session.as_bytes(),
                kept_as(d.as_source),
                &d.sealed_key,
            );
            let taken = match key {
                Ok(key) => {
                    if d.as_source {
                        let files = d
                            .files
                            .into_iter()
                            .map(|(p, n)| (std::path::PathBuf::from(p), n))
                            .collect();
                        self.files.send_from(session, files);
                    }
                    self.session.restore_delivery(cpns_proto::pne::KeptSession {
                        session,
                        as_source: d.as_source,
                        key,
                        description: d.description,
                    })
                }
                Err(e) => Err(format!("its key does not open: {e}")),
            };
            match taken {
                Ok(()) => {
                    tracing::info!(%session, source = d.as_source, "a delivery session goes on after the restart")
                }
                Err(why) => {
                    warn!(%session, %why, "a kept delivery session is given up");
                    self.files.forget(session);
                    if let Err(e) = self.store.remove_local_delivery(&session).await {
                        warn!(%session, error = %e, "a delivery session could not be forgotten");
                    }
                }
            }
        }
    }

    /// Keeps a delivery session in the store, its key sealed under the device's storage key
    /// (docs/security.md §4.9), a source's with its files (once the grant's completion named
    /// them). Not kept (the store failed): it is lost with a restart, as before, and said so.
    async fn keep_delivery(&mut self, kept: cpns_proto::pne::KeptSession) {
        let session = kept.session;
        let files = if kept.as_source {
            match self.files.sent_files(session) {
                Some(f) => f,
                None => {
                    self.keep_wanted.insert(session, kept);
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let sealed = match cpns_crypto::seal_delivery_key_at_rest(
            &self.storage_key,
            session.as_bytes(),
            kept_as(kept.as_source),
            &kept.key,
        ) {
            Ok(s) => s,
            Err(e) => {
                warn!(%session, error = %e, "a delivery session could not be kept");
                return;
            }
        };
        let record = cpns_store::LocalDelivery {
            session,
            as_source: kept.as_source,
            sealed_key: sealed,
            description: kept.description,
            files: files
                .into_iter()
                .map(|(p, n)| (p.to_string_lossy().into_owned(), n))
                .collect(),
            stored_at: unix_millis(),
        };
        if let Err(e) = self.store.save_local_delivery(&record).await {
            warn!(%session, error = %e, "a delivery session could not be kept");
        }
    }

    /// Hashes the content session `session` sends, for the digest its last chunk carries, once
    /// its files are known: from its chunks as they are read to send
    /// ([`crate::content_files::ContentFiles::hash_as_sent`]), or, for content no larger than
    /// a chunk, its files whole on the blocking pool.
    fn hash_content(&mut self, session: DeliveryId) {
        match self.files.hash_as_sent(session) {
            Some(true) => {}
            Some(false) => self.hash_files(session),
            None => {
                self.hash_wanted.insert(session);
            }
        }
    }

    /// Hashes the files session `session` sends whole, on the blocking pool.
    fn hash_files(&mut self, session: DeliveryId) {
        let Some(files) = self.files.sent_files(session) else {
            return;
        };
        let task = self
            .hashing
            .spawn(async move { (session, crate::content_files::hash_items(files).await) });
        self.hashing_for.insert(task.id(), session);
    }

    /// Where session `session`'s hash of what it sends stands after a read.
    fn as_sent(&mut self, session: DeliveryId, hashed: crate::content_files::AsSent) {
        use crate::content_files::AsSent;
        match hashed {
            AsSent::Going => {}
            AsSent::Done(hashes) => self.session.handle_content_hashed(session, Ok(hashes)),
            AsSent::Lost => self.hash_files(session),
            AsSent::Failed(why) => self.session.handle_content_hashed(session, Err(why)),
        }
    }

    /// Hands a command's completion to its waiter.
    fn completed(&mut self, c: Completed<Outcome>) {
        if let Ok(Outcome::Discovered { .. }) = &c.result {
            self.discovered = true;
        }
        if let Some(path) = self.offer_paths.remove(&c.id)
            && let Ok(Outcome::DeliveryGranted { session, also, .. }) = &c.result
        {
            // A delivery to a group in several PNs: the content is sent in each session.
            for s in also {
                self.files.send_from(*s, path.clone());
            }
            self.files.send_from(*session, path);
            for s in std::iter::once(session).chain(also) {
                if self.hash_wanted.remove(s) {
                    self.hash_content(*s);
                }
                if let Some(kept) = self.keep_wanted.remove(s) {
                    self.keep_later.push(kept);
                }
            }
        }
        match self.waiters.remove(&c.id) {
            Some(Waiter::Caller(reply)) => {
                let _ = reply.send(c.result.map_err(|f| f.to_error()));
            }
            Some(Waiter::Subscriber(reply, notes)) => {
                if let Ok(Outcome::Subscribed { subscription, .. }) = &c.result {
                    self.watchers.insert(*subscription, notes);
                }
                let _ = reply.send(c.result.map_err(|f| f.to_error()));
            }
            Some(Waiter::Step) => {
                let ended = c.result.map(drop).map_err(|f| format!("{}: {f}", c.flow));
                self.step_ends.insert(c.id, ended);
            }
            // The PNE's own turns (the connection set-up, the usage cadence) and commands whose
            // caller went away: nothing waits.
            None => {}
        }
    }

    /// Hands a notification to its subscriber; a subscriber gone ends its subscription.
    fn notify(&mut self, n: StatusNotification) {
        let id = n.subscription;
        let gone = match self.watchers.get(&id) {
            // A subscriber that does not read misses notifications, never blocks this PNE.
            Some(tx) => matches!(tx.try_send(n), Err(mpsc::error::TrySendError::Closed(_))),
            None => true,
        };
        if gone {
            self.watchers.remove(&id);
            self.session.unsubscribe_status(Instant::now(), id);
        }
    }

    /// How step `current` ended, once it did.
    fn step_ended(&mut self, current: Option<CommandId>) -> Option<Result<(), String>> {
        match current {
            Some(id) => self.step_ends.remove(&id),
            None => self.invitation.take(),
        }
    }

    /// Starts a step: its command, or `None` for [`PneStep::AwaitInvitation`].
    fn start(&mut self, step: &PneStep) -> Result<Option<CommandId>, CommandError> {
        let now = Instant::now();
        let s = &mut self.session;
        let id = match step {
            PneStep::Setup(t) => s.start_setup(now, t.clone())?,
            PneStep::AwaitInvitation => {
                self.invitation = None;
                return Ok(None);
            }
            PneStep::Register(pn) => s.start_registration(now, *pn)?,
            PneStep::SecureCall { service, payload } => {
                s.secure_call(now, service, payload.clone())?
            }
            PneStep::Release(pn) => s.release_pn(now, *pn)?,
            PneStep::Leave(pn) => s.leave_pn(now, *pn)?,
        };
        self.waiters.insert(id, Waiter::Step);
        Ok(Some(id))
    }

    /// Starts a command of the [`PneHandle`]; a refusal is answered at once.
    async fn start_ask(&mut self, ask: Ask, reply: Reply) {
        let now = Instant::now();
        let s = &mut self.session;
        let mut notes = None;
        let started = match ask {
            Ask::Setup(setup) => s.start_setup(now, setup),
            Ask::Register(pn) => s.start_registration(now, pn),
            Ask::AnswerInvitation(pn, accept) => s.answer_invitation(now, pn, accept),
            Ask::Release(pn) => s.release_pn(now, pn),
            Ask::Leave(pn) => s.leave_pn(now, pn),
            Ask::Join(pn) => s.join_pn(now, pn),
            Ask::Invite(pn, invitee) => s.invite_pne(now, pn, invitee),
            Ask::Expel(pn, pne) => s.expel_pne(now, pn, pne),
            Ask::Query(pn) => s.query_inventory(now, pn),
            Ask::Follow(pn, on) => s.follow_inventory(now, pn, on),
            Ask::SetCapabilities(caps) => s.set_capabilities(now, *caps),
            Ask::SetStatus(status, label) => s.set_status(now, status, label),
            Ask::QueryStatus(entities) => Ok(s.query_status(now, entities)),
            Ask::Subscribe(entities, policy, tx) => {
                notes = Some(tx);
                Ok(s.subscribe_status(now, entities, policy))
            }
            Ask::SecureCall(service, payload) => s.secure_call(now, service, payload),
            Ask::SendContent(pn, content) => s.send_group_content(now, pn, content),
            Ask::Directory(DirectoryAsk::Publish(d)) => s.publish_service(now, d),
            Ask::Directory(DirectoryAsk::Unpublish(id)) => s.unpublish_service(now, id),
            Ask::Directory(DirectoryAsk::Discover(q)) => s.discover_services(now, q),
            Ask::Directory(DirectoryAsk::Retrieve(id)) => s.retrieve_service(now, id),
            Ask::Directory(DirectoryAsk::Watch(w)) => s.watch_services(now, w),
            Ask::Directory(DirectoryAsk::Unwatch(id)) => s.unwatch_services(now, id),
            Ask::Contents(items) => s.declare_contents(now, items),
            Ask::Request(req) => s.request_delivery(now, &req),
            Ask::Message(m) => s.send_message(now, &m),
            Ask::Deliver(offer, paths) => {
                let started = s.offer_delivery(now, &offer);
                if let Ok(id) = &started {
                    let sizes =
                        std::iter::once(offer.size).chain(offer.more.iter().map(|i| i.size));
                    self.offer_paths
                        .insert(*id, paths.into_iter().zip(sizes).collect());
                }
                started
            }
            Ask::Group(GroupAsk::Create(name, open)) => s.create_group(now, name, open),
            Ask::Group(GroupAsk::Invite(g, pne)) => s.invite_to_group(now, g, pne),
            Ask::Group(GroupAsk::Answer(g, accept)) => s.answer_group(now, g, accept),
            Ask::Group(GroupAsk::Join(g)) => s.join_group(now, g),
            Ask::Group(GroupAsk::Leave(g)) => s.leave_group(now, g),
            Ask::Group(GroupAsk::Expel(g, pne)) => s.expel_from_group(now, g, pne),
            Ask::Group(GroupAsk::Delete(g)) => s.delete_group(now, g),
            Ask::Group(GroupAsk::Key(g)) => s.pull_service_group_key(now, g),
            Ask::Group(GroupAsk::Members(g)) => s.group_members(now, g),
            Ask::Group(GroupAsk::Send(g, content)) => s.send_to_group(now, g, &content),
            Ask::SendUsage(prefs) => match self.store.unsent_local_usage(256).await {
                Ok(unsent) => {
                    let records: Vec<_> = unsent.into_iter().map(|u| u.record).collect();
                    self.session.send_usage(now, &records, &prefs)
                }
                Err(e) => {
                    let _ = reply.send(Err(ErrorBody::new(ErrorCode::Internal, e.to_string())));
                    return;
                }
            },
        };
        match started {
            Ok(id) => {
                let waiter = match notes {
                    Some(notes) => Waiter::Subscriber(reply, notes),
                    None => Waiter::Caller(reply),
                };
                self.waiters.insert(id, waiter);
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_error()));
            }
        }
    }

    /// The link is gone: whoever waits is told so (the commands ended with it).
    fn abandon_waiters(&mut self) {
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            if let Waiter::Caller(reply) | Waiter::Subscriber(reply, _) = waiter {
                let _ = reply.send(Err(no_link()));
            }
        }
    }

    /// The records not sent yet and the reporting preferences, for the PNE's own report.
    async fn unsent_usage(
        &mut self,
    ) -> Result<(Vec<cpns_wire::UsageRecord>, Preferences), StoreFailure> {
        let unsent = self
            .store
            .unsent_local_usage(256)
            .await
            .map_err(|e| store_failure(&e))?;
        let prefs = usage_prefs(&self.store, self.usage_default)
            .await
            .map_err(|e| store_failure(&e))?;
        Ok((unsent.into_iter().map(|u| u.record).collect(), prefs))
    }

    /// Waits for the next frame or deadline and hands it to the machine.
    async fn next(&mut self) -> Result<(), NodeError> {
        let deadline = self
            .session
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            frame = self.conn.next_frame() => self.on_frame(frame)?,
            () = sleep_until(deadline) => self.session.handle_timeout(Instant::now()),
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Result<bytes::BytesMut, FrameError>) -> Result<(), NodeError> {
        match frame {
            Ok(mut frame) => match self.session.handle_frame(Instant::now(), &mut frame) {
                Ok(()) => Ok(()),
                Err(e @ cpns_proto::ProtoError::UnsupportedVersion { .. }) => {
                    debug!(error = %e, "dropped a frame of another protocol version");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            },
            Err(FrameError::Closed) => Err(NodeError::Closed("the PN GW")),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `steps`, then the connection set-up, then stays on the link serving commands
    /// until `stop` (`Ok`) or the link is lost (`Err`).
    async fn stay(
        &mut self,
        steps: Vec<PneStep>,
        backoff: &mut Backoff,
        commands: &mut mpsc::Receiver<Command>,
        stop: &mut oneshot::Receiver<()>,
    ) -> Result<(), NodeError> {
        let mut steps = Steps::new(steps);
        let mut steps_done = false;
        let mut rejoined = false;
        loop {
            self.drain().await?;
            if self.discovered {
                backoff.reset();
                if !steps_done {
                    match steps.next(self)? {
                        StepsDone::Started => continue,
                        StepsDone::Running => {}
                        StepsDone::Done => steps_done = true,
                        // A long-running PNE stops rather than retry a step that failed.
                        StepsDone::Failed(why) => return Err(NodeError::Ended(why)),
                    }
                }
                if steps_done && !rejoined {
                    rejoined = true;
                    // 002 §B.1.1.3 steps 18-26, the machine's: nothing waits for its end.
                    if let Err(e) = self.session.rejoin(Instant::now()) {
                        warn!(error = %e, "no connection set-up in the PNs");
                    }
                    continue;
                }
            }
            tokio::select! {
                frame = self.conn.next_frame() => self.on_frame(frame)?,
                Some(hashed) = self.hashing.join_next_with_id(), if !self.hashing.is_empty() => {
                    let (session, hashes) = match hashed {
                        Ok((id, (session, hashes))) => {
                            self.hashing_for.remove(&id);
                            (Some(session), hashes)
                        }
                        // The task itself failed: its session ends, saying so.
                        Err(e) => (
                            self.hashing_for.remove(&e.id()),
                            Err(format!("its hashing stopped: {e}")),
                        ),
                    };
                    if let Some(session) = session {
                        self.session.handle_content_hashed(session, hashes);
                    }
                }
                () = sleep_until(self.session.poll_timeout().map(tokio::time::Instant::from_std)) => {
                    self.session.handle_timeout(Instant::now());
                }
                c = commands.recv() => match c {
                    None => return Ok(()),
                    Some(Command::Inventory(reply)) => {
                        let pns = self.session.inventory().into_iter().cloned().collect();
                        let _ = reply.send(pns);
                    }
                    Some(Command::Capabilities(reply)) => {
                        let _ = reply.send(self.session.capabilities().clone());
                    }
                    Some(Command::Groups(reply)) => {
                        let groups = self
                            .session
                            .groups()
                            .map(|(id, g)| (*id, g.name.clone(), g.epoch))
                            .collect();
                        let _ = reply.send(groups);
                    }
                    Some(Command::Machine(ask, reply)) => self.start_ask(ask, reply).await,
                    Some(Command::Control(session, action, reply)) => {
                        let done = self
                            .session
                            .control_delivery(session, action)
                            .map_err(|e| ErrorBody::new(e.code(), e.to_string()));
                        let _ = reply.send(done);
                    }
                },
                _ = &mut *stop => {
                    self.conn.close().await;
                    return Ok(());
                }
            }
        }
    }
}

/// Keeps a service group's key in the store, sealed under the device's storage key.
async fn keep_group<S: DeviceStore>(
    store: &S,
    storage_key: &MasterKey,
    group_id: GroupId,
    group: &HeldGroup,
) -> Result<(), NodeError> {
    let sealed =
        seal_service_group_key_at_rest(storage_key, group_id.as_bytes(), group.epoch, &group.key)
            .map_err(|e| NodeError::Sealed {
            what: format!("the key of service group {group_id}"),
            reason: e.to_string(),
        })?;
    let record = LocalServiceGroup {
        group_id,
        name: group.name.clone(),
        epoch: group.epoch,
        sealed_key: sealed,
        stored_at: unix_millis(),
    };
    store.save_local_group(&record).await?;
    Ok(())
}

/// The service group keys the store kept, opened with the device's storage key.
async fn kept_groups<S: DeviceStore>(
    store: &S,
    storage_key: &MasterKey,
) -> Result<Vec<(GroupId, HeldGroup)>, NodeError> {
    store
        .local_groups()
        .await?
        .into_iter()
        .map(|g| {
            let key = open_service_group_key_at_rest(
                storage_key,
                g.group_id.as_bytes(),
                g.epoch,
                &g.sealed_key,
            )
            .map_err(|e| NodeError::Sealed {
                what: format!("the key of service group {}", g.group_id),
                reason: e.to_string(),
            })?;
            let held = HeldGroup {
                name: g.name,
                epoch: g.epoch,
                key,
            };
            Ok((g.group_id, held))
        })
        .collect()
}

/// A PNE's local PN as the store keeps it: its own SK_PNE and group key sealed under the
/// device's storage key (docs/security.md §4.9, §4.10).
fn pne_record(
    state: &LocalPnState,
    storage_key: &MasterKey,
    me: &EntityId,
) -> Result<LocalPn, StoreFailure> {
    let mut record = local_pn_record(state);
    if let Some(own) = &state.own {
        let pn = &state.inventory.pn_id;
        record.sealed_session_key = Some(sealed_sk(storage_key, pn, me, &own.session_key)?);
        record.secure_seq = own.secure_seq;
        record.group = own
            .group
            .as_ref()
            .map(|(epoch, gk)| {
                let sealed_key = seal_group_key_at_rest(storage_key, pn.as_bytes(), *epoch, gk)
                    .map_err(|e| StoreFailure::Sealed(e.to_string()))?;
                Ok::<_, StoreFailure>(GroupEpoch {
                    epoch: *epoch,
                    sealed_key,
                })
            })
            .transpose()?;
    }
    Ok(record)
}

/// A PNE's local PN from the store, its own keys opened with the device's storage key.
fn pne_state(
    pn: &LocalPn,
    storage_key: &MasterKey,
    me: &EntityId,
) -> Result<LocalPnState, NodeError> {
    let mut state = local_pn_state(pn);
    if let Some(sealed) = &pn.sealed_session_key {
        let session_key = open_sk(storage_key, &pn.pn_id, me, sealed)?;
        let group = pn
            .group
            .as_ref()
            .map(|g| {
                open_group_key_at_rest(storage_key, pn.pn_id.as_bytes(), g.epoch, &g.sealed_key)
                    .map(|gk| (g.epoch, gk))
                    .map_err(|e| NodeError::Sealed {
                        what: format!("the group key of PN {}", pn.pn_id),
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        state.own = Some(OwnKeys {
            session_key,
            group,
            secure_seq: pn.secure_seq,
        });
    }
    Ok(state)
}
