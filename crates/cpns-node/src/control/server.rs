//! The CPNS Server's verbs on its control socket: the operator-local side of CPNS-4 (004
//! §5.3.2.4; docs/control-api.md, "CPNS Server") for local applications: an entity's
//! capabilities as recorded or asked of the device now (004 §5.5.1), status and status
//! subscriptions streamed as events (004 §5.5.3), usage users shared (004 §5.5.4), charging
//! records. What an external application sees of usage is what its users shared
//! (docs/ARCHITECTURE.md decision 38).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cpns_control::{ApiError, Capabilities, Charge, Entry, Request, Response, Role};
use cpns_proto::status::{Subscription, Watched};
use cpns_store::{ServerStore, StatusRecord};
use cpns_wire::{ErrorCode, StatusEntry};

use super::pne::{hello, usage_row};
use super::{Answer, api_error};
use crate::server::{DeliverFromOutside, ServerHandle};
use crate::status_hub::{Mailbox, Subscriber};

/// Numbers the external subscribers of one server.
static EXTERNAL: AtomicU64 = AtomicU64::new(1);

/// Subscription ids the server gives external applications (their own range: entities'
/// subscriptions are numbered by the store).
static EXTERNAL_SUB: AtomicU64 = AtomicU64::new(1 << 62);

/// Notifications buffered on their way to one subscriber's connection.
const SUBSCRIBER_QUEUE: usize = 16;

/// Answers the control verbs of a running server.
#[derive(Clone)]
pub struct ServerApi<S> {
    handle: ServerHandle<S>,
}

impl<S> core::fmt::Debug for ServerApi<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ServerApi")
    }
}

impl<S: ServerStore + Clone + Send + Sync + 'static> ServerApi<S> {
    /// The verbs of the server `handle` reaches.
    pub fn new(handle: ServerHandle<S>) -> Self {
        Self { handle }
    }

    /// Answers one request.
    pub async fn answer(&self, request: Request) -> Answer {
        let h = &self.handle;
        let store = h.store();
        let internal = ApiError::internal;
        let answered = match request {
            Request::Hello {} => Ok(hello(Role::Server, None)),
            Request::Caps { entity, live } => {
                let Some(entity) = entity else {
                    return ApiError::bad_request("caps names an \"entity\"").into();
                };
                if live {
                    h.ask_capabilities(&entity)
                        .await
                        .map(|c| Response::Caps {
                            entity,
                            live: true,
                            capabilities: Capabilities::from(&c),
                        })
                        .map_err(ApiError::from)
                } else {
                    match store.entity(&entity).await {
                        Ok(Some(rec)) => match rec.capabilities {
                            Some(c) => Ok(Response::Caps {
                                entity,
                                live: false,
                                capabilities: Capabilities::from(&c),
                            }),
                            None => Err(ApiError::new(
                                ErrorCode::NotFound,
                                format!("{entity} has reported no capabilities"),
                            )),
                        },
                        Ok(None) => Err(ApiError::new(
                            ErrorCode::NotFound,
                            format!("no entity {entity}"),
                        )),
                        Err(e) => Err(internal(e)),
                    }
                }
            }
            Request::Status { entities, user } => {
                let recs = match (user, entities.is_empty()) {
                    (Some(u), _) => store.statuses_of_owner(&u).await,
                    (None, false) => store.statuses(&entities).await,
                    (None, true) => store.all_statuses().await,
                };
                recs.map(|recs| Response::Status {
                    entries: recs.iter().map(record_entry).collect(),
                })
                .map_err(internal)
            }
            Request::Subscribe {
                entities,
                user,
                policy,
            } => return self.subscribe(entities, user, policy).await,
            Request::Usage { user } => store
                .usage_summary(user.as_ref(), true)
                .await
                .map(|rows| Response::Usage {
                    shared_only: true,
                    summary: rows.iter().map(usage_row).collect(),
                })
                .map_err(internal),
            Request::Charging { user, since_s } => {
                let Some(user) = user else {
                    return ApiError::bad_request("charging names a \"user\"").into();
                };
                store
                    .charging_records(&user, since_s)
                    .await
                    .map(|rows| Response::Charging {
                        records: rows.iter().map(Charge::from).collect(),
                    })
                    .map_err(internal)
            }
            Request::DirectoryMerge {
                start,
                steps,
                pages,
            } => {
                let steps = steps.unwrap_or(16);
                let pages = pages.unwrap_or(1_000);
                if !(1..=1_000).contains(&steps) || !(1..=100_000).contains(&pages) {
                    return ApiError::bad_request(
                        "directory_merge takes 1 to 1,000 steps of 1 to 100,000 pages",
                    )
                    .into();
                }
                merge_directory(store, start, steps, pages)
                    .await
                    .map_err(internal)
            }
            r @ (Request::Show {}
            | Request::Traffic {}
            | Request::ContentsSet { .. }
            | Request::Members { .. }
            | Request::Query { .. }
            | Request::Setup { .. }
            | Request::Register { .. }
            | Request::Join { .. }
            | Request::Leave { .. }
            | Request::Release { .. }
            | Request::Invite { .. }
            | Request::Expel { .. }
            | Request::Establish { .. }
            | Request::AnswerInvitation { .. }
            | Request::Events {}
            | Request::CapsSet { .. }
            | Request::StatusSet { .. }
            | Request::UsageRecord { .. }
            | Request::UsagePrefs {}
            | Request::UsagePrefSet { .. }
            | Request::UsageSummary {}
            | Request::UsageSend {}
            | Request::Send { .. }
            | Request::ServicePublish { .. }
            | Request::ServiceUnpublish { .. }
            | Request::ServiceDiscover { .. }
            | Request::ServiceRetrieve { .. }
            | Request::ServiceWatch { .. }
            | Request::ServiceUnwatch { .. }
            | Request::GroupCreate { .. }
            | Request::GroupInvite { .. }
            | Request::GroupAnswer { .. }
            | Request::GroupJoin { .. }
            | Request::GroupLeave { .. }
            | Request::GroupExpel { .. }
            | Request::GroupDelete { .. }
            | Request::GroupKey { .. }
            | Request::GroupMembers { .. }
            | Request::Groups {}
            | Request::GroupSend { .. }
            | Request::DeliveryControl { .. }
            | Request::DeliveryRequest { .. }
            | Request::MessageSend { .. }
            | Request::InventoryFollow { .. }) => Err(Role::Server.refusal(&r)),
            Request::InventorySubscribe { user } => return self.follow_inventory(user),
            Request::Deliver {
                file,
                to,
                service_id,
                name,
                media_type,
                pn_id,
                source,
                specific,
                wait,
                held,
                requires,
                group,
                user,
                more,
            } => {
                if held || requires.is_some() || group.is_some() || user.is_some() {
                    return ApiError::bad_request(
                        "a delivery from outside is neither held, by capability nor to a \
                         service group or a user: leave out \"held\", \"requires\", \"group\" \
                         and \"user\"",
                    )
                    .into();
                }
                let Some(pn_id) = pn_id else {
                    return ApiError::bad_request("deliver on the server names a \"pn_id\"").into();
                };
                let path = std::path::PathBuf::from(&file);
                let absolute = path.is_absolute()
                    && specific
                        .iter()
                        .all(|s| std::path::Path::new(&s.file).is_absolute());
                if !absolute {
                    return ApiError::bad_request(
                        "each file is an absolute path (the server reads it, from its own \
                         directory)",
                    )
                    .into();
                }
                let name = name.unwrap_or_else(|| crate::content_files::name_of(&path));
                let d = DeliverFromOutside {
                    file: path,
                    source: source.unwrap_or_else(operator_source),
                    pn_id,
                    to,
                    service_id: service_id.unwrap_or_else(|| "content".into()),
                    name,
                    media_type: media_type.unwrap_or_else(|| "application/octet-stream".into()),
                    specific: specific
                        .into_iter()
                        .map(|s| (s.to, s.file.into()))
                        .collect(),
                    more,
                };
                return match h.deliver(d, wait).await {
                    Ok(started) => {
                        let first = Response::Deliver {
                            session: started.session,
                            size: started.size,
                            sha256: Some(hex::encode(started.sha256)),
                            also: Vec::new(),
                        };
                        match started.events {
                            Some(rx) => Answer::Stream(first, rx),
                            None => Answer::One(Ok(first)),
                        }
                    }
                    Err(e) => Answer::One(Err(ApiError::from(e))),
                };
            }
        };
        answered.into()
    }

    /// A local application follows `user`'s inventory changes (004 §5.5.10): each one of the
    /// user's PNs streams as an `inventory_changed` event until it hangs up; one that falls
    /// behind is told how many it missed (`lagged`).
    fn follow_inventory(&self, user: cpns_wire::UserId) -> Answer {
        let mut changes = self.handle.inventory_changes();
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE);
        let first = Response::InventorySubscribe { user: user.clone() };
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let event = tokio::select! {
                    () = tx.closed() => return,
                    note = changes.recv() => match note {
                        Ok(n) if n.owner == user => cpns_control::Event::InventoryChanged {
                            pn_id: n.pn_id,
                            pne: n.pne,
                            change: n.change.name().into(),
                        },
                        Ok(_) => continue,
                        Err(RecvError::Lagged(missed)) => cpns_control::Event::Lagged { missed },
                        Err(RecvError::Closed) => return,
                    },
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Answer::Stream(first, rx)
    }

    /// An external application subscribes: its notifications stream on its connection, from a
    /// bounded mailbox of its own, until it hangs up.
    async fn subscribe(
        &self,
        entities: Vec<cpns_wire::EntityId>,
        user: Option<cpns_wire::UserId>,
        policy: cpns_control::Policy,
    ) -> Answer {
        let h = &self.handle;
        let checked = match policy
            .to_wire()
            .and_then(|p| cpns_proto::status::Policy::check(&p))
        {
            Ok(c) => c,
            Err(why) => return ApiError::bad_request(why).into(),
        };
        let watched = match (user, entities.is_empty()) {
            (Some(u), true) => Watched::User(u),
            (None, false) => Watched::Entities(entities),
            _ => {
                return ApiError::bad_request("subscribe names \"entities\" or a \"user\"").into();
            }
        };
        let states = match crate::server_store::watched_states(h.store(), &watched).await {
            Ok(s) => s,
            Err(e) => return api_error(e.into()).into(),
        };
        let who = Subscriber::External(EXTERNAL.fetch_add(1, Ordering::Relaxed));
        let id = EXTERNAL_SUB.fetch_add(1, Ordering::Relaxed);
        let hub = Arc::clone(h.hub());
        let mailbox = Mailbox::new(crate::status_hub::MAILBOX_LIMIT);
        hub.attach(who.clone(), &mailbox);
        let snapshot = hub.subscribe(
            Instant::now(),
            Subscription {
                id,
                subscriber: who.clone(),
                watched,
                policy: checked,
            },
            states,
        );
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE);
        tokio::spawn(async move {
            // Until the application hangs up (its receiver goes): then its subscription goes.
            while let Some(batch) = mailbox.take().await {
                for p in batch {
                    if tx
                        .send(super::events::status(&p.notification))
                        .await
                        .is_err()
                    {
                        hub.forget(&who);
                        return;
                    }
                }
            }
        });
        let first = Response::Subscribe {
            subscription: id,
            entries: snapshot.iter().map(Entry::from).collect(),
        };
        Answer::Stream(first, rx)
    }
}

/// A status record of the server's store as the API tells it: with the entity's user and the
/// PN GW that reported it.
pub fn record_entry(r: &StatusRecord) -> Entry {
    let entry = StatusEntry {
        entity: r.entity.clone(),
        status: r.status,
        label: r.label.clone(),
        since_ms: r.since.and_then(|t| u64::try_from(t).ok()),
        battery_pct: r.attributes.battery_pct,
        battery_minutes: r.attributes.battery_minutes,
        free_memory_mb: r.attributes.free_memory_mb,
    };
    Entry {
        owner: r.owner.clone(),
        reported_by: r.reported_by.clone(),
        ..Entry::from(&entry)
    }
}

/// The external entity a delivery from outside comes from when the request names none.
fn operator_source() -> cpns_wire::EntityId {
    cpns_wire::EntityId::new("operator").unwrap_or_else(|_| unreachable!("a valid entity id"))
}

/// At most `steps` steps of merging the directory's index (`start`: a merge of every segment
/// begins with the first): the steps that merged something, and whether more is left.
async fn merge_directory<S: cpns_store::ServerStore>(
    store: &S,
    start: bool,
    steps: u32,
    pages: u32,
) -> Result<Response, cpns_store::StoreError> {
    let mut done = 0;
    let mut first = start;
    while done < steps {
        if !store.merge_directory(pages, first).await? {
            return Ok(Response::DirectoryMerge {
                steps: done,
                more: false,
            });
        }
        first = false;
        done += 1;
    }
    Ok(Response::DirectoryMerge {
        steps: done,
        more: true,
    })
}
