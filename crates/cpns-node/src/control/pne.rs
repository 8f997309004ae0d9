//! The PNE's verbs on its control socket: CPNS-5, the local API of the applications on the
//! device (004 §5.3.2.5; docs/control-api.md, "PNE"). PN management (set up, register, join,
//! leave, release, invite, expel, read), the answer to an invitation held for the application,
//! a stream of what happens, device capabilities, status, usage and charging, and the service
//! directory (publish, unpublish, discover, retrieve, watch) and service groups. Each verb is a
//! command of the running PNE ([`PneHandle`]); the store serves the device's own usage records
//! and preferences.

use cpns_control::{
    ApiError, Capabilities, Charge, Entry, Event, HeldGroup, Pn, Preference as ApiPreference,
    Request, Response, Role, ServiceEntry, ServicePreference, UsageRow, VERSION,
};
use cpns_proto::pne::Outcome;
use cpns_proto::usage::Preference;
use cpns_store::DeviceStore;
use cpns_wire::{Audience, ErrorCode, PnId, ServiceDiscover, Status, UsageRecord};
use tokio::sync::{broadcast, mpsc};

use super::{Answer, api_error};
use crate::pne::{DirectoryAsk, GroupAsk, PneHandle, StatusAsk, StatusReply, unexpected};

/// Events buffered on their way to one follower's connection.
const FOLLOWER_QUEUE: usize = 64;

/// Answers the control verbs of a running PNE.
#[derive(Clone, Debug)]
pub struct PneApi<S> {
    handle: PneHandle,
    store: S,
    usage_default: Preference,
    /// How many connections follow each PN's inventory: the last to go stops the following.
    followers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<PnId, usize>>>,
}

impl<S: DeviceStore + Clone + Send + Sync + 'static> PneApi<S> {
    /// The verbs of the PNE `handle` runs, with its store and the usage reporting preference
    /// of a service with none of its own.
    pub fn new(handle: PneHandle, store: S, usage_default: Preference) -> Self {
        Self {
            handle,
            store,
            usage_default,
            followers: std::sync::Arc::default(),
        }
    }

    /// Answers one request.
    pub async fn answer(&self, request: Request) -> Answer {
        match self.respond(request).await {
            Ok(Reply::One(r)) => Answer::One(Ok(r)),
            Ok(Reply::Stream(first, rx)) => Answer::Stream(first, rx),
            Err(e) => Answer::One(Err(e)),
        }
    }

    async fn respond(&self, request: Request) -> Result<Reply, ApiError> {
        let h = &self.handle;
        let one = |r: Response| Ok(Reply::One(r));
        match request {
            Request::Hello {} => one(hello(Role::Pne, Some(h.id().clone()))),
            Request::Show {} => one(Response::Show {
                pns: pns(&h.inventory().await.map_err(api_error)?),
            }),
            Request::Members { pn_id } => {
                let held = h.inventory().await.map_err(api_error)?;
                one(Response::Members {
                    pns: vec![one_pn(&held, pn_id)?],
                })
            }
            Request::Query { pn_id } => {
                let (read, services) = h.query(pn_id).await.map_err(api_error)?;
                one(Response::Query {
                    holdings: holdings(&read, &services),
                    pns: pns(&read),
                })
            }
            Request::ContentsSet { contents } => {
                let items = contents
                    .into_iter()
                    .map(|c| cpns_wire::ContentItem {
                        name: c.name,
                        media_type: c.media_type,
                    })
                    .collect();
                let kept = h.declare_contents(items).await.map_err(api_error)?;
                one(Response::ContentsSet { kept })
            }
            Request::Setup { with } => {
                let inventory = h.setup(with.setup_type()).await.map_err(api_error)?;
                one(Response::Setup {
                    pn: (&inventory).into(),
                })
            }
            Request::Register { pn_id } => {
                let r = h.register(pn_id).await.map_err(api_error)?;
                one(Response::Register {
                    cpns_id: r.cpns_id,
                    pn_id: r.pn_id,
                    lifetime_s: r.lifetime_s,
                })
            }
            Request::Join { pn_id } => {
                let pn_id = h.join(pn_id).await.map_err(api_error)?;
                one(Response::Join { pn_id })
            }
            Request::Leave { pn_id } => {
                let pn_id = h.leave(pn_id).await.map_err(api_error)?;
                one(Response::Leave { pn_id })
            }
            Request::Release { pn_id } => {
                let pn_id = h.release(pn_id).await.map_err(api_error)?;
                one(Response::Release {
                    pn_id,
                    notified: None,
                })
            }
            Request::Invite { pn_id, pne } => {
                let accepted = h.invite(pn_id, pne.clone()).await.map_err(api_error)?;
                one(Response::Invite {
                    pn_id,
                    pne,
                    accepted,
                })
            }
            Request::Expel { pn_id, pne } => {
                let pn_id = h.expel(pn_id, pne.clone()).await.map_err(api_error)?;
                one(Response::Expel {
                    pn_id,
                    pne,
                    notified: None,
                    epoch: None,
                })
            }
            Request::AnswerInvitation { pn_id, accept } => {
                let accepted = h
                    .answer_invitation(pn_id, accept)
                    .await
                    .map_err(api_error)?;
                one(Response::AnswerInvitation { pn_id, accepted })
            }
            Request::Events {} => Ok(Reply::Stream(Response::Events {}, follow(h.events()))),
            Request::Caps { entity, live } => {
                if entity.as_ref().is_some_and(|e| e != h.id()) || live {
                    return Err(ApiError::bad_request(
                        "a PNE answers with its own capabilities: name no entity, ask no live",
                    ));
                }
                let c = h.capabilities(None).await.map_err(api_error)?;
                one(Response::Caps {
                    entity: h.id().clone(),
                    live: false,
                    capabilities: Capabilities::from(&c),
                })
            }
            Request::CapsSet { capabilities } => {
                let c = capabilities.to_device().map_err(ApiError::bad_request)?;
                let c = h.capabilities(Some(c)).await.map_err(api_error)?;
                one(Response::CapsSet {
                    entity: h.id().clone(),
                    capabilities: Capabilities::from(&c),
                })
            }
            Request::Status { entities, user } => {
                no_user(user.is_some())?;
                match h.status(StatusAsk::Query(entities)).await {
                    Ok(StatusReply::Entries(e)) => one(Response::Status {
                        entries: e.iter().map(Entry::from).collect(),
                    }),
                    Ok(other) => Err(ApiError::internal(format!(
                        "an unexpected answer: {other:?}"
                    ))),
                    Err(e) => Err(api_error(e)),
                }
            }
            Request::StatusSet { status, label } => {
                let status = Status::from(status);
                match (status, &label) {
                    (Status::Custom, None) => {
                        return Err(ApiError::bad_request("a custom status has a \"label\""));
                    }
                    (Status::Custom, Some(_)) | (_, None) => {}
                    (_, Some(_)) => {
                        return Err(ApiError::bad_request("only a custom status has a label"));
                    }
                }
                h.status(StatusAsk::Set(status, label))
                    .await
                    .map_err(api_error)?;
                one(Response::StatusSet {})
            }
            Request::Subscribe {
                entities,
                user,
                policy,
            } => {
                no_user(user.is_some())?;
                let policy = policy.to_wire().map_err(ApiError::bad_request)?;
                cpns_proto::status::Policy::check(&policy).map_err(ApiError::bad_request)?;
                let (tx, mut notes) = mpsc::channel(FOLLOWER_QUEUE);
                match h.status(StatusAsk::Subscribe(entities, policy, tx)).await {
                    Ok(StatusReply::Subscribed {
                        subscription,
                        entries,
                    }) => {
                        let (out, rx) = mpsc::channel(FOLLOWER_QUEUE);
                        tokio::spawn(async move {
                            while let Some(n) = notes.recv().await {
                                if out.send(super::events::status(&n)).await.is_err() {
                                    return;
                                }
                            }
                        });
                        let first = Response::Subscribe {
                            subscription,
                            entries: entries.iter().map(Entry::from).collect(),
                        };
                        Ok(Reply::Stream(first, rx))
                    }
                    Ok(other) => Err(ApiError::internal(format!(
                        "an unexpected answer: {other:?}"
                    ))),
                    Err(e) => Err(api_error(e)),
                }
            }
            Request::UsageRecord {
                service,
                start_s,
                end_s,
                bytes,
                battery_start,
            } => self
                .usage_record(service, start_s, end_s, bytes, battery_start)
                .await
                .map(Reply::One),
            Request::UsagePrefs {} => {
                let prefs = self.store.usage_prefs().await.map_err(ApiError::internal)?;
                one(Response::UsagePrefs {
                    default: api_preference(self.usage_default),
                    services: prefs
                        .into_iter()
                        .map(|(service, p)| ServicePreference {
                            service,
                            preference: api_preference(p),
                        })
                        .collect(),
                })
            }
            Request::UsagePrefSet {
                service,
                preference,
            } => {
                let stored = match preference {
                    ApiPreference::Private => Some(Preference::Private),
                    ApiPreference::Server => Some(Preference::Server),
                    ApiPreference::Shared => Some(Preference::Shared),
                    ApiPreference::Default => None,
                };
                check_service(&service)?;
                self.store
                    .set_usage_pref(&service, stored)
                    .await
                    .map_err(ApiError::internal)?;
                one(Response::UsagePrefSet {
                    service,
                    preference,
                })
            }
            Request::UsageSummary {} => {
                let rows = self
                    .store
                    .local_usage_summary()
                    .await
                    .map_err(ApiError::internal)?;
                one(Response::UsageSummary {
                    summary: rows.iter().map(usage_row).collect(),
                })
            }
            Request::UsageSend {} => {
                let prefs = crate::pne::usage_prefs(&self.store, self.usage_default)
                    .await
                    .map_err(ApiError::internal)?;
                let s = h.send_usage(prefs).await.map_err(api_error)?;
                one(Response::UsageSend {
                    sent: s.sent,
                    duplicates: s.duplicates,
                    charged: s.charged,
                    withheld: s.withheld,
                })
            }
            Request::Charging { user, since_s } => {
                no_user(user.is_some())?;
                let rows = h.charging(since_s).await.map_err(api_error)?;
                one(Response::Charging {
                    records: rows.iter().map(Charge::from).collect(),
                })
            }
            Request::Send { pn_id, text, hex } => {
                let content = Request::content(text.as_deref(), hex.as_deref())
                    .map_err(ApiError::bad_request)?;
                let delivered = h.send_content(pn_id, content).await.map_err(api_error)?;
                one(Response::Send { pn_id, delivered })
            }
            Request::ServicePublish { description } => {
                let bytes = serde_json::to_vec(&description).map_err(ApiError::internal)?;
                let published = match h.directory(DirectoryAsk::Publish(bytes)).await {
                    Ok(Outcome::ServicePublished(p)) => p,
                    Ok(other) => return Err(api_error(unexpected(&other))),
                    Err(e) => return Err(api_error(e)),
                };
                one(Response::ServicePublish {
                    dir_id: published.dir_id,
                    expires_at_ms: published.expires_at_ms,
                })
            }
            Request::ServiceUnpublish { service_id } => {
                let ask = DirectoryAsk::Unpublish(service_id.clone());
                match h.directory(ask).await.map_err(api_error)? {
                    Outcome::ServiceUnpublished { removed } => one(Response::ServiceUnpublish {
                        service_id,
                        removed,
                    }),
                    other => Err(api_error(unexpected(&other))),
                }
            }
            Request::ServiceDiscover {
                keywords,
                any,
                service_type,
                fits_me,
                after,
            } => {
                let ask = DirectoryAsk::Discover(ServiceDiscover {
                    keywords,
                    all: !any,
                    service_type,
                    fits_me,
                    after,
                });
                match h.directory(ask).await.map_err(api_error)? {
                    Outcome::ServicesFound(f) => one(Response::ServiceDiscover {
                        entries: f.entries.iter().map(ServiceEntry::from).collect(),
                        more: f.more,
                    }),
                    other => Err(api_error(unexpected(&other))),
                }
            }
            Request::ServiceRetrieve { dir_id } => {
                match h
                    .directory(DirectoryAsk::Retrieve(dir_id))
                    .await
                    .map_err(api_error)?
                {
                    Outcome::ServiceRetrieved(d) => {
                        let description = serde_json::from_slice(&d.description)
                            .map_err(|_| ApiError::internal("the description kept is no JSON"))?;
                        one(Response::ServiceRetrieve {
                            dir_id: d.dir_id,
                            offerer: d.offerer,
                            expires_at_ms: d.expires_at_ms,
                            description,
                        })
                    }
                    other => Err(api_error(unexpected(&other))),
                }
            }
            Request::ServiceWatch {
                keywords,
                any,
                service_type,
            } => {
                let ask = DirectoryAsk::Watch(cpns_wire::ServiceWatch {
                    keywords,
                    all: !any,
                    service_type,
                });
                match h.directory(ask).await.map_err(api_error)? {
                    Outcome::ServiceWatching { watch_id } => {
                        one(Response::ServiceWatch { watch_id })
                    }
                    other => Err(api_error(unexpected(&other))),
                }
            }
            Request::ServiceUnwatch { watch_id } => {
                match h
                    .directory(DirectoryAsk::Unwatch(watch_id))
                    .await
                    .map_err(api_error)?
                {
                    Outcome::ServiceUnwatched { removed } => {
                        one(Response::ServiceUnwatch { watch_id, removed })
                    }
                    other => Err(api_error(unexpected(&other))),
                }
            }
            Request::Deliver {
                file,
                to,
                service_id,
                name,
                media_type,
                pn_id,
                source: None,
                specific,
                wait: false,
                held,
                requires,
                group,
                user,
                more,
            } if specific.is_empty() => {
                let offer = Offered {
                    more,
                    service_id,
                    name,
                    media_type,
                    to_pn: pn_id,
                    group,
                    user,
                    held,
                    requires: requires
                        .map(|r| r.to_string().into_bytes())
                        .unwrap_or_default(),
                };
                one(self.deliver(file, to, offer).await?)
            }
            Request::MessageSend {
                to,
                text,
                hex,
                service_id,
                media_type,
                pn_id,
            } => {
                let payload = Request::content(text.as_deref(), hex.as_deref())
                    .map_err(ApiError::bad_request)?;
                let default_type = if text.is_some() {
                    "text/plain"
                } else {
                    "application/octet-stream"
                };
                let m = cpns_wire::DeliveryMessage {
                    peer: to.clone(),
                    service_id: service_id.unwrap_or_else(|| "message".into()),
                    media_type: media_type.unwrap_or_else(|| default_type.into()),
                    payload,
                    pn_id,
                    owner: None,
                };
                h.send_message(m).await.map_err(api_error)?;
                one(Response::MessageSend { to })
            }
            Request::DeliveryRequest {
                source,
                name,
                service_id,
                pn_id,
            } => {
                let req = cpns_wire::DeliveryRequest {
                    source: source.clone(),
                    name: name.clone(),
                    service_id: service_id.unwrap_or_else(|| "content".into()),
                    to_pn: pn_id,
                };
                h.request_delivery(req).await.map_err(api_error)?;
                one(Response::DeliveryRequest { source, name })
            }
            Request::DeliveryControl { session, action } => {
                let a: cpns_wire::ControlAction = action
                    .parse()
                    .map_err(|e: String| ApiError::bad_request(e))?;
                h.control_delivery(session, a).await.map_err(api_error)?;
                one(Response::DeliveryControl {
                    session,
                    action: a.name().into(),
                })
            }
            Request::Deliver { .. } => Err(ApiError::bad_request(
                "on a PNE, deliver takes no source, specific or wait (those are the server's; \
                 follow a PNE's delivery with its events)",
            )),
            Request::Groups {} => one(Response::Groups {
                groups: h
                    .groups()
                    .await
                    .map_err(api_error)?
                    .into_iter()
                    .map(|(group_id, name, epoch)| HeldGroup {
                        group_id,
                        name,
                        epoch,
                    })
                    .collect(),
            }),
            r @ (Request::GroupCreate { .. }
            | Request::GroupInvite { .. }
            | Request::GroupAnswer { .. }
            | Request::GroupJoin { .. }
            | Request::GroupLeave { .. }
            | Request::GroupExpel { .. }
            | Request::GroupDelete { .. }
            | Request::GroupKey { .. }
            | Request::GroupMembers { .. }
            | Request::GroupSend { .. }) => self.group(r).await.map(Reply::One),
            r @ (Request::Establish { .. }
            | Request::Usage { .. }
            | Request::DirectoryMerge { .. }
            | Request::Traffic {}
            | Request::InventorySubscribe { .. }) => Err(Role::Pne.refusal(&r)),
            Request::InventoryFollow { pn_id } => self.follow_inventory(pn_id).await,
        }
    }

    /// Pushes the content of `file`, and of each item's after it (004 §5.5.8): their sizes read
    /// here, then offered; answered once the server set the session up, with the session's size
    /// (every item's). A PNE with a member certificate offers no hashes: it hashes the content
    /// while it sends it, and signs the digest its last chunk carries (docs/security.md §4.12);
    /// one without hashes every file first, a block at a time, and offers them.
    async fn deliver(
        &self,
        file: String,
        to: Vec<cpns_wire::EntityId>,
        Offered {
            service_id,
            name,
            media_type,
            to_pn,
            group,
            user,
            held,
            requires,
            more,
        }: Offered,
    ) -> Result<Response, ApiError> {
        let path = std::path::PathBuf::from(&file);
        if !path.is_absolute() {
            return Err(ApiError::bad_request(
                "`file` is an absolute path (the PNE reads it, from its own directory)",
            ));
        }
        let signs = self.handle.signs();
        let (size, sha256) = if signs {
            (crate::content_files::measure(&path).await, None)
        } else {
            match crate::content_files::digest(&path).await {
                Ok((size, hash)) => (Ok(size), Some(hash)),
                Err(why) => (Err(why), None),
            }
        };
        let size = size.map_err(ApiError::bad_request)?;
        let name = name.unwrap_or_else(|| crate::content_files::name_of(&path));
        let (more, files) = crate::content_files::offered_items(more, !signs)
            .await
            .map_err(ApiError::bad_request)?;
        let offer = cpns_wire::DeliveryOffer {
            service_id: service_id.unwrap_or_else(|| "content".into()),
            targets: to,
            name,
            media_type: media_type.unwrap_or_else(|| "application/octet-stream".into()),
            size,
            sha256: sha256.map(cpns_wire::HashBytes),
            to_pn,
            held,
            requires,
            // The PNE's machine puts in the suite it wants first.
            suite: None,
            group,
            user,
            more,
        };
        let total = offer.total();
        let paths = std::iter::once(path)
            .chain(files.into_iter().map(|(p, _)| p))
            .collect();
        match self.handle.deliver(offer, paths).await.map_err(api_error)? {
            Outcome::DeliveryGranted { session, also, .. } => Ok(Response::Deliver {
                session,
                size: total,
                sha256: sha256.map(hex::encode),
                also,
            }),
            other => Err(api_error(unexpected(&other))),
        }
    }

    /// A service group verb (004 §5.5.9, §5.5.7.2; docs/services.md, "Service groups"), asked
    /// of the server end to end.
    async fn group(&self, request: Request) -> Result<Response, ApiError> {
        let ask = match &request {
            Request::GroupCreate {
                name,
                open_to_user,
                owning,
            } => {
                if owning.as_ref().is_some_and(|o| o != self.handle.id()) {
                    return Err(ApiError::bad_request(
                        "a PNE owns the groups it makes: leave out `owning`",
                    ));
                }
                GroupAsk::Create(name.clone(), *open_to_user)
            }
            Request::GroupInvite { group_id, pne } => GroupAsk::Invite(*group_id, pne.clone()),
            Request::GroupAnswer { group_id, accept } => GroupAsk::Answer(*group_id, *accept),
            Request::GroupJoin { group_id } => GroupAsk::Join(*group_id),
            Request::GroupLeave { group_id } => GroupAsk::Leave(*group_id),
            Request::GroupExpel { group_id, pne } => GroupAsk::Expel(*group_id, pne.clone()),
            Request::GroupDelete { group_id } => GroupAsk::Delete(*group_id),
            Request::GroupKey { group_id } => GroupAsk::Key(*group_id),
            Request::GroupMembers { group_id } => GroupAsk::Members(*group_id),
            Request::GroupSend {
                group_id,
                text,
                hex,
            } => {
                let content = Request::content(text.as_deref(), hex.as_deref())
                    .map_err(ApiError::bad_request)?;
                GroupAsk::Send(*group_id, content)
            }
            other => return Err(Role::Pne.refusal(other)),
        };
        let outcome = self.handle.group(ask).await.map_err(api_error)?;
        let response = match (request, outcome) {
            (Request::GroupCreate { .. }, Outcome::ServiceGroupKey { group_id, epoch }) => {
                Response::GroupCreate { group_id, epoch }
            }
            (Request::GroupInvite { pne, .. }, Outcome::ServiceGroupDone { group_id, .. }) => {
                Response::GroupInvite { group_id, pne }
            }
            (Request::GroupAnswer { .. }, Outcome::ServiceGroupKey { group_id, epoch }) => {
                Response::GroupAnswer {
                    group_id,
                    accepted: true,
                    epoch,
                }
            }
            (Request::GroupAnswer { .. }, Outcome::ServiceGroupDone { group_id, epoch }) => {
                Response::GroupAnswer {
                    group_id,
                    accepted: false,
                    epoch,
                }
            }
            (Request::GroupJoin { .. }, Outcome::ServiceGroupKey { group_id, epoch }) => {
                Response::GroupJoin { group_id, epoch }
            }
            (Request::GroupLeave { .. }, Outcome::ServiceGroupDone { group_id, .. }) => {
                Response::GroupLeave { group_id }
            }
            (Request::GroupExpel { pne, .. }, Outcome::ServiceGroupDone { group_id, epoch }) => {
                Response::GroupExpel {
                    group_id,
                    pne,
                    epoch,
                }
            }
            (Request::GroupDelete { .. }, Outcome::ServiceGroupDone { group_id, .. }) => {
                Response::GroupDelete { group_id }
            }
            (Request::GroupKey { .. }, Outcome::ServiceGroupKey { group_id, epoch }) => {
                Response::GroupKey { group_id, epoch }
            }
            (Request::GroupMembers { .. }, Outcome::ServiceGroupMembers(m)) => {
                Response::GroupMembers {
                    group_id: m.group_id,
                    name: m.name,
                    epoch: m.epoch,
                    members: m.members.into_iter().map(Into::into).collect(),
                }
            }
            (
                Request::GroupSend { .. },
                Outcome::ServiceGroupSent {
                    group_id,
                    epoch,
                    delivered,
                },
            ) => Response::GroupSend {
                group_id,
                epoch,
                delivered,
            },
            (_, other) => return Err(api_error(unexpected(&other))),
        };
        Ok(response)
    }

    /// An application on the device reports one use of a service (CPNS-5): kept with the
    /// device's status and battery, unsent.
    async fn usage_record(
        &self,
        service: String,
        start_s: u64,
        end_s: u64,
        bytes: u64,
        battery_start: Option<u8>,
    ) -> Result<Response, ApiError> {
        check_service(&service)?;
        if end_s < start_s {
            return Err(ApiError::bad_request("a use ends after it starts"));
        }
        let caps = self.handle.capabilities(None).await.ok();
        // A random id: the server counts a record once per device and id (a retried send).
        let id = cpns_crypto::MachineRng::os().u64() & (i64::MAX as u64);
        let record = UsageRecord {
            id,
            service,
            start_s,
            end_s,
            bytes,
            audience: Audience::Server,
            status: Some(Status::Online),
            battery_start,
            battery_end: caps.as_ref().and_then(|c| c.battery_pct),
            networks: caps.map(|c| c.networks).unwrap_or_default(),
        };
        self.store
            .save_local_usage(&record)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::UsageRecord {
            record_id: record.id,
        })
    }
}

/// One answer, or a first answer and the events that follow it.
enum Reply {
    One(Response),
    Stream(Response, mpsc::Receiver<Event>),
}

/// A service name as a usage record or preference takes it.
fn check_service(service: &str) -> Result<(), ApiError> {
    if service.is_empty() || service.len() > cpns_proto::usage::MAX_SERVICE {
        return Err(ApiError::bad_request("a service name is 1 to 128 bytes"));
    }
    Ok(())
}

fn no_user(named: bool) -> Result<(), ApiError> {
    if named {
        return Err(ApiError::bad_request(
            "a PNE answers for its own user: name no \"user\"",
        ));
    }
    Ok(())
}

/// `hello`'s answer for `role`.
pub(crate) fn hello(role: Role, entity: Option<cpns_wire::EntityId>) -> Response {
    Response::Hello {
        role,
        entity,
        versions: vec![VERSION],
        verbs: role.verbs().map(str::to_string).collect(),
    }
}

/// The PNs of an inventory as the API tells them.
pub(crate) fn pns(inventory: &[cpns_wire::PnInventory]) -> Vec<Pn> {
    inventory.iter().map(Pn::from).collect()
}

/// The one PN `pn_id` of an inventory: `not_found` if it is not there.
pub(crate) fn one_pn(inventory: &[cpns_wire::PnInventory], pn_id: PnId) -> Result<Pn, ApiError> {
    inventory
        .iter()
        .find(|i| i.pn_id == pn_id)
        .map(Pn::from)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no PN {pn_id} here")))
}

/// A usage summary row as the API tells it.
pub fn usage_row(r: &cpns_store::UsageSummary) -> UsageRow {
    UsageRow {
        user: r.user.clone(),
        service: r.service.clone(),
        uses: r.uses,
        seconds: r.seconds,
        bytes: r.bytes,
    }
}

fn api_preference(p: Preference) -> ApiPreference {
    match p {
        Preference::Private => ApiPreference::Private,
        Preference::Server => ApiPreference::Server,
        Preference::Shared => ApiPreference::Shared,
    }
}

/// Locks `m`; a panic elsewhere while it was held leaves a count, nothing half-done.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<S> PneApi<S> {
    /// `inventory_follow`: the PN as its PN GW holds it, then its changes, until the
    /// connection goes (the last connection following a PN stops the following) or the
    /// following ends (this PNE left the PN, or it was released: told, then the stream ends).
    async fn follow_inventory(&self, pn_id: PnId) -> Result<Reply, ApiError> {
        // Listening before asking: no change after the answer is missed.
        let mut events = self.handle.events();
        let pn = self
            .handle
            .follow_inventory(pn_id, true)
            .await
            .map_err(api_error)?;
        *lock(&self.followers).entry(pn_id).or_default() += 1;
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        let (handle, followers) = (self.handle.clone(), self.followers.clone());
        tokio::spawn(async move {
            use cpns_proto::pne::PneEvent;
            use tokio::sync::broadcast::error::RecvError;
            let me = handle.id().clone();
            loop {
                let event = tokio::select! {
                    () = tx.closed() => break,
                    e = events.recv() => e,
                };
                let (told, last) = match event {
                    Ok(PneEvent::InventoryChanged {
                        pn_id: p,
                        pne,
                        change,
                    }) if p == pn_id => {
                        let last = change == cpns_wire::InventoryChange::Released
                            || (change == cpns_wire::InventoryChange::Left
                                && pne.as_ref() == Some(&me));
                        let told = Event::InventoryChanged {
                            pn_id: Some(p),
                            pne,
                            change: change.name().into(),
                        };
                        (told, last)
                    }
                    Ok(PneEvent::InventoryFollowedAgain { inventory })
                        if inventory.pn_id == pn_id =>
                    {
                        let pn = (&inventory).into();
                        (Event::InventoryFollowed { pn }, false)
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => (Event::Lagged { missed }, false),
                    Err(RecvError::Closed) => break,
                };
                if tx.send(told).await.is_err() || last {
                    break;
                }
            }
            let left = {
                let mut f = lock(&followers);
                let n = f.entry(pn_id).or_default();
                *n = n.saturating_sub(1);
                let left = *n;
                if left == 0 {
                    f.remove(&pn_id);
                }
                left
            };
            if left == 0 {
                // A PN it is out of has nothing to stop.
                let _ = handle.follow_inventory(pn_id, false).await;
            }
        });
        Ok(Reply::Stream(
            Response::InventoryFollow { pn: (&pn).into() },
            rx,
        ))
    }
}

/// The events of a PNE from now on, as the control API's, until the follower's connection
/// goes (its receiver dropped) or the PNE stops. A follower that falls behind is told how many
/// events it missed.
fn follow(mut events: broadcast::Receiver<cpns_proto::pne::PneEvent>) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
    tokio::spawn(async move {
        loop {
            let told = match events.recv().await {
                Ok(e) => super::events::pne_events(&e, std::time::Instant::now()),
                Err(broadcast::error::RecvError::Lagged(missed)) => vec![Event::Lagged { missed }],
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for e in told {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// What the members of `pns` hold (the contents each announced or declared) and offer (the
/// services the server listed): a member with neither is left out.
fn holdings(
    pns: &[cpns_wire::PnInventory],
    services: &[cpns_wire::MemberServices],
) -> Vec<cpns_control::Holding> {
    let mut out: Vec<cpns_control::Holding> = Vec::new();
    for m in pns.iter().flat_map(|p| p.members.iter()) {
        if m.contents.is_empty() || out.iter().any(|h| h.pne == m.pne_id) {
            continue;
        }
        out.push(cpns_control::Holding {
            pne: m.pne_id.clone(),
            contents: m
                .contents
                .iter()
                .map(|c| cpns_control::Content {
                    name: c.name.clone(),
                    media_type: c.media_type.clone(),
                })
                .collect(),
            services: Vec::new(),
        });
    }
    for ms in services {
        let offered = ms.services.iter().map(|s| cpns_control::Offered {
            dir_id: s.dir_id,
            service_id: s.service_id.clone(),
            service_type: s.service_type.clone(),
            name: s.name.clone(),
        });
        match out.iter_mut().find(|h| h.pne == ms.pne) {
            Some(h) => h.services.extend(offered),
            None => out.push(cpns_control::Holding {
                pne: ms.pne.clone(),
                contents: Vec::new(),
                services: offered.collect(),
            }),
        }
    }
    out
}

/// What a PNE's `deliver` says of its offer beside the file and the targets.
struct Offered {
    service_id: Option<String>,
    name: Option<String>,
    media_type: Option<String>,
    /// Another PN whose members receive it (forwarding).
    to_pn: Option<cpns_wire::PnId>,
    /// A service group whose other members receive it.
    group: Option<cpns_wire::GroupId>,
    /// A user whose devices receive it.
    user: Option<cpns_wire::UserId>,
    /// Set up held: it moves once started.
    held: bool,
    /// By capability: the requirements, JSON (empty: none).
    requires: Vec<u8>,
    /// The items after the first (several services in one session).
    more: Vec<cpns_control::DeliverItem>,
}
