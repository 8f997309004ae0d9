//! How the server's machine reaches the state of record: each [`Load`] and each [`ServerEffect`]
//! turned into one [`ServerStore`] call — one read snapshot per load, one transaction per
//! effect (docs/design.md §5). EUKeys and session keys are sealed at rest under the server's master
//! key, bound to what they belong to by the associated data of docs/security.md §4.7
//! (`cpns_crypto::at_rest_eukey_aad`, `cpns_crypto::at_rest_session_key_aad`). What fails — a
//! read, a seal that does not open — is the [`StoreFailure`] the machine ends one flow with.

use cpns_crypto::{
    EuKey, MasterKey, SessionKey, at_rest_eukey_aad, at_rest_session_key_aad, open_at_rest,
    seal_at_rest,
};
use cpns_proto::StoreFailure;
use cpns_proto::server::directory::{self, DirAsk, DirEntry, DirScope, DirViewer, DirectoryLoaded};
use cpns_proto::server::groups::{GroupInfo, GroupLoaded, MemberInfo, Reach};
use cpns_proto::server::{
    EntityRole, GroupKeyLoaded, InventoryLoaded, KnownEntity, KnownPn, Load, Loaded, Persisted,
    PnLoaded, ServerEffect, SessionLoaded, StatusesLoaded, UsageOwners,
};
use cpns_proto::status::{EntityState, Watched};
use cpns_store::{EntityKind, GroupEpoch, PnMember, PnRecord, PnState, ServerStore};

use crate::clock::unix_millis;
use crate::error::{NodeError, store_failure};
use crate::status_hub::StatusHub;
use cpns_wire::{EntityId, PnId, PnInventory};

/// How long kept answers of mutating requests stay (docs/design.md §3): far longer than any retry.
const ANSWERS_KEPT_MS: i64 = 24 * 60 * 60 * 1000;

/// A status record as the status machinery reads it.
pub fn state_of(
    r: cpns_store::StatusRecord,
    owner: Option<&cpns_wire::UserId>,
) -> Option<EntityState> {
    Some(EntityState {
        owner: r.owner.or_else(|| owner.cloned())?,
        entity: r.entity,
        status: r.status,
        label: r.label,
        since_ms: r.since.and_then(|t| u64::try_from(t).ok()),
        battery_pct: r.attributes.battery_pct,
        battery_minutes: r.attributes.battery_minutes,
        free_memory_mb: r.attributes.free_memory_mb,
    })
}

/// A PN of the store as a PN inventory.
pub fn inventory_of(pn: &PnRecord) -> PnInventory {
    PnInventory {
        pn_id: pn.pn_id,
        gateway: pn.gateway.clone(),
        members: pn.members.iter().map(|m| m.inventory_member()).collect(),
    }
}

/// PNEs with their EUKeys opened, kept once loaded: every PN flow loads its PNEs, and what
/// identifies an entity, its owner and its EUKey never change after enrolment (an id cannot be
/// enrolled twice), so a cached entry is never stale. Bounded: beyond `max` entries an arbitrary
/// one makes room. Only found PNEs are kept: an id not (yet) enrolled is asked of the store
/// every time, and a PN GW, loaded once per session at connection set-up, is not kept (an idle
/// session costs no cache entry; BENCHMARKS.md).
#[derive(Clone)]
pub struct KeyCache {
    inner: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<EntityId, KnownEntity>>>,
    max: usize,
}

impl core::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

impl KeyCache {
    /// An empty cache of at most `max` entities (0: nothing is kept).
    pub fn new(max: usize) -> Self {
        Self {
            inner: Default::default(),
            max,
        }
    }

    /// Entities cached now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<EntityId, KnownEntity>> {
        // A panic while holding this lock cannot leave the map half-changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &EntityId) -> Option<KnownEntity> {
        self.lock().get(id).cloned()
    }

    fn put(&self, e: &KnownEntity) {
        if self.max == 0 || !e.role.is_pne() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max
            && !map.contains_key(&e.id)
            && let Some(victim) = map.keys().next().cloned()
        {
            map.remove(&victim);
        }
        map.insert(e.id.clone(), e.clone());
    }
}

/// One enrolled entity with its EUKey opened from the at-rest seal under the master key; a
/// seal that does not open is [`StoreFailure::Sealed`].
fn open_entity(
    master: &MasterKey,
    e: cpns_store::EntityRecord,
) -> Result<KnownEntity, StoreFailure> {
    let sealed = |reason: String| {
        StoreFailure::Sealed(format!(
            "the EUKey of {} (under the master key): {reason}",
            e.id
        ))
    };
    let plain = open_at_rest(master, &at_rest_eukey_aad(e.id.as_str()), &e.sealed_eukey)
        .map_err(|err| sealed(err.to_string()))?;
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| sealed("not 32 bytes".into()))?;
    let role = match e.kind {
        EntityKind::Pne => EntityRole::Pne,
        EntityKind::Gateway => EntityRole::Gateway,
        EntityKind::Both => EntityRole::Both,
    };
    Ok(KnownEntity {
        id: e.id,
        role,
        owner: e.owner,
        eukey: EuKey::from_bytes(bytes),
    })
}

/// Whether `rec`'s lifetime is over now.
fn expired(rec: &PnRecord) -> bool {
    rec.expires_at.is_some_and(|at| at <= unix_millis())
}

/// A PN of the store as the machine reads it.
fn known_pn(rec: &PnRecord) -> KnownPn {
    KnownPn {
        max_members: rec.max_members,
        expired: expired(rec),
        gateway: rec.gateway.clone(),
        owner: rec.owner.clone(),
        inventory: inventory_of(rec),
        epoch: rec.group.as_ref().map_or(0, |g| g.epoch),
    }
}

/// The SK_PNE of `pne` in `rec`, opened, if it is a member with one.
fn member_key(
    master: &MasterKey,
    rec: &PnRecord,
    pne: &EntityId,
) -> Result<Option<SessionKey>, StoreFailure> {
    rec.members
        .iter()
        .find(|m| &m.pne_id == pne)
        .and_then(|m| m.sealed_session_key.as_deref())
        .map(|sealed| open_sk(master, &rec.pn_id, pne, sealed).map_err(sealed_failure))
        .transpose()
}

/// A secret that did not open, as the machine is told.
fn sealed_failure(e: NodeError) -> StoreFailure {
    match e {
        NodeError::Sealed { what, reason } => StoreFailure::Sealed(format!("{what}: {reason}")),
        other => StoreFailure::Failed(other.to_string()),
    }
}

/// Reads what `load` names, in one store call (one snapshot), and opens the keys it holds
/// under the master key. A read that fails, or a key that does not open, is the
/// [`StoreFailure`] the machine ends the asking flow with.
pub(crate) async fn load<S: ServerStore>(
    store: &S,
    master: &MasterKey,
    keys: &KeyCache,
    load: &Load,
) -> Result<Loaded, StoreFailure> {
    let err = |e: cpns_store::StoreError| store_failure(&e);
    Ok(match load {
        // 002 §B.1.1.2 step 8: a PN GW is loaded once per session, never kept.
        Load::Gateway { id } => Loaded::Gateway(
            store
                .entity(id)
                .await
                .map_err(err)?
                .map(|e| open_entity(master, e))
                .transpose()?,
        ),
        Load::Pn {
            pn,
            replay,
            entities,
            member_keys,
        } => {
            // Cached entities first; the rest read with the PN, then in the order asked for.
            let mut missing = Vec::new();
            let mut found = Vec::with_capacity(entities.len());
            for id in entities {
                match keys.get(id) {
                    Some(e) => found.push(e),
                    None => missing.push(id.clone()),
                }
            }
            let sender = replay.as_ref().map(|(s, id)| (s.to_string(), id.0));
            let view = store
                .pn_view(
                    pn,
                    sender.as_ref().map(|(s, id)| (s.as_str(), *id)),
                    &missing,
                )
                .await
                .map_err(err)?;
            for e in view.entities {
                let e = open_entity(master, e)?;
                keys.put(&e);
                found.push(e);
            }
            let mut loaded = PnLoaded::default();
            for id in entities {
                if let Some(at) = found.iter().position(|e| &e.id == id) {
                    loaded.entities.push(found.swap_remove(at));
                }
            }
            // A kept answer that no longer decodes (a future format) is as good as none.
            loaded.replay = view
                .answer
                .and_then(|bytes| cpns_wire::decode_envelope(&bytes).ok());
            if let Some(rec) = &view.pn {
                if *member_keys {
                    for m in &rec.members {
                        if let Some(sk) = member_key(master, rec, &m.pne_id)? {
                            loaded.member_keys.push((m.pne_id.clone(), sk));
                        }
                    }
                }
                loaded.pn = Some(known_pn(rec));
            }
            Loaded::Pn(Box::new(loaded))
        }
        Load::Session { pn, pne } => {
            let rec = store.pn(pn).await.map_err(err)?;
            let session_key = match &rec {
                Some(rec) => member_key(master, rec, pne)?,
                None => None,
            };
            let window = match session_key {
                Some(_) => store.secure_window(pn, pne).await.map_err(err)?,
                None => (0, 0),
            };
            Loaded::Session(SessionLoaded {
                gateway: rec.map(|r| r.gateway),
                session_key,
                window: cpns_proto::server::window::ReplayWindow {
                    top: window.0,
                    seen: window.1,
                },
            })
        }
        Load::GroupKey { pn, pne } => {
            let view = store.member_view(pn, pne).await.map_err(err)?;
            let mut loaded = GroupKeyLoaded::default();
            if let Some(rec) = &view.pn {
                loaded.session_key = member_key(master, rec, pne)?;
                if let Some(g) = &rec.group {
                    let gk = cpns_crypto::open_group_key_at_rest(
                        master,
                        pn.as_bytes(),
                        g.epoch,
                        &g.sealed_key,
                    )
                    .map_err(|e| StoreFailure::Sealed(format!("the group key of PN {pn}: {e}")))?;
                    loaded.group = Some((g.epoch, gk));
                }
                loaded.pn = Some(known_pn(rec));
            }
            // A PNE that is no member of that PN (any more): its membership that ended.
            if let Some(d) = view.departed {
                let sk = open_sk(master, pn, pne, &d.sealed_session_key).map_err(sealed_failure)?;
                let why = match d.why {
                    cpns_store::Departure::Removed => cpns_wire::EndReason::Removed,
                    cpns_store::Departure::Released => cpns_wire::EndReason::Released,
                };
                loaded.departed = Some((sk, why));
            }
            Loaded::GroupKey(Box::new(loaded))
        }
        Load::Inventory { asker, pn } => {
            let view = store
                .inventory_view(asker, pn.as_ref(), crate::clock::unix_millis())
                .await
                .map_err(err)?;
            // What is kept is a description the server wrote; one that is not is left out.
            let services = view
                .services
                .iter()
                .filter_map(|e| {
                    let (s, _) = cpns_proto::server::directory::summary(
                        e.dir_id,
                        &e.offerer,
                        &e.owner,
                        &e.description,
                    )?;
                    Some((e.offerer.clone(), s))
                })
                .collect();
            Loaded::Inventory(InventoryLoaded {
                asker_owner: view.owner,
                pns: view.pns.iter().map(known_pn).collect(),
                services,
            })
        }
        Load::UsageOwners { pne, pn } => {
            let owners = store.usage_owners(pne, pn).await.map_err(err)?;
            Loaded::UsageOwners(UsageOwners {
                owner: owners.entity,
                pn_owner: owners.pn,
            })
        }
        Load::Charging { pne, since_s } => Loaded::Charging(
            store
                .charging_records_of(pne, *since_s)
                .await
                .map_err(err)?,
        ),
        Load::Served {
            gateway,
            candidates,
        } => Loaded::Served(store.served_by(gateway, candidates).await.map_err(err)?),
        Load::Statuses {
            asker,
            named,
            whole_user,
            subscriptions,
        } => {
            let view = store
                .status_view(asker, named, *whole_user, *subscriptions)
                .await
                .map_err(err)?;
            let states = |recs: Vec<cpns_store::StatusRecord>| {
                recs.into_iter()
                    .filter_map(|r| state_of(r, None))
                    .collect::<Vec<_>>()
            };
            Loaded::Statuses(StatusesLoaded {
                statuses: states(view.statuses),
                owner_statuses: states(view.of_user),
                subscriptions: view.subscriptions,
            })
        }
        Load::Group {
            group,
            asker,
            also,
            now_ms,
        } => {
            let view = store
                .group_view(group, asker, also.as_ref(), *now_ms)
                .await
                .map_err(err)?;
            Loaded::Group(Box::new(group_loaded(master, group, view)?))
        }
        Load::UserReach { user, asker } => {
            let (asker_owner, found) = store.user_reach(user, asker).await.map_err(err)?;
            let mut reach = Vec::with_capacity(found.len());
            for r in found {
                let session_key = open_sk(master, &r.pn_id, &r.entity, &r.sealed_session_key)
                    .map_err(sealed_failure)?;
                reach.push(Reach {
                    entity: r.entity,
                    owner: r.owner,
                    pn_id: r.pn_id,
                    session_key,
                    gateway: r.gateway,
                });
            }
            Loaded::UserReach(cpns_proto::server::UserReachLoaded { asker_owner, reach })
        }
        Load::Directory { asker, ask } => {
            let view = store
                .directory_view(asker, &directory_ask(ask))
                .await
                .map_err(err)?;
            Loaded::Directory(Box::new(directory_loaded(view)))
        }
    })
}

/// A group's view as the machine reads it: its key and each member's SK_PNE opened.
fn group_loaded(
    master: &MasterKey,
    id: &cpns_wire::GroupId,
    view: cpns_store::GroupView,
) -> Result<GroupLoaded, StoreFailure> {
    let group = view
        .group
        .map(|g| {
            let key = cpns_crypto::open_service_group_key_at_rest(
                master,
                id.as_bytes(),
                g.epoch,
                &g.sealed_key,
            )
            .map_err(|e| StoreFailure::Sealed(format!("the key of group {id}: {e}")))?;
            Ok::<_, StoreFailure>(GroupInfo {
                name: g.name,
                owner: g.owner,
                creator: g.creator,
                open_to_user: g.open_to_user,
                epoch: g.epoch,
                key,
            })
        })
        .transpose()?;
    let reach =
        |entity: &EntityId, owner, pn: PnId, gateway: Option<EntityId>, sealed: Option<Vec<u8>>| {
            let (Some(gateway), Some(sealed)) = (gateway, sealed) else {
                return Ok(None);
            };
            let session_key = open_sk(master, &pn, entity, &sealed).map_err(sealed_failure)?;
            Ok::<_, StoreFailure>(Some(Reach {
                entity: entity.clone(),
                owner,
                pn_id: pn,
                session_key,
                gateway,
            }))
        };
    let mut members = Vec::with_capacity(view.members.len());
    for m in view.members {
        let r = reach(
            &m.member.entity,
            m.member.owner.clone(),
            m.member.pn_id,
            m.gateway,
            m.sealed_session_key,
        )?;
        members.push(MemberInfo {
            entity: m.member.entity,
            owner: m.member.owner,
            reach: r,
        });
    }
    let also = match view.also {
        Some(a) => reach(
            &a.entity,
            a.owner.clone(),
            a.pn_id,
            Some(a.gateway),
            Some(a.sealed_session_key),
        )?,
        None => None,
    };
    Ok(GroupLoaded {
        group,
        members,
        invitation: view.invitation.map(|(by, _)| by),
        asker_owner: view.asker_owner,
        asker_groups: view.asker_groups,
        also,
    })
}

/// A service group's key sealed at rest for `epoch`.
fn sealed_group_key(
    master: &MasterKey,
    id: &cpns_wire::GroupId,
    epoch: u64,
    key: &cpns_crypto::GroupKey,
) -> Result<Vec<u8>, StoreFailure> {
    cpns_crypto::seal_service_group_key_at_rest(master, id.as_bytes(), epoch, key)
        .map_err(|e| StoreFailure::Sealed(e.to_string()))
}

/// A directory request's ask as the store takes it.
fn directory_ask(ask: &DirAsk) -> cpns_store::DirectoryAsk {
    match ask {
        DirAsk::Watching => cpns_store::DirectoryAsk::Watching,
        DirAsk::Offered { service_id } => cpns_store::DirectoryAsk::Offered {
            service_id: service_id.clone(),
        },
        DirAsk::Discover {
            keywords,
            all,
            service_type,
            now_ms,
            limit,
            after,
        } => cpns_store::DirectoryAsk::Discover(cpns_store::ServiceSearch {
            keywords: keywords.clone(),
            all: *all,
            service_type: service_type.clone(),
            now: *now_ms,
            limit: *limit,
            after: *after,
        }),
        DirAsk::Retrieve { dir_id, now_ms } => cpns_store::DirectoryAsk::Retrieve {
            dir_id: *dir_id,
            now: *now_ms,
        },
    }
}

/// A directory view as the machine reads it.
fn directory_loaded(view: cpns_store::DirectoryView) -> DirectoryLoaded {
    DirectoryLoaded {
        viewer: view.viewer.map(|v| DirViewer {
            owner: v.user,
            pns: v.pns,
            groups: v.groups,
        }),
        capabilities: view.capabilities,
        entries: view
            .entries
            .into_iter()
            .map(|e| DirEntry {
                dir_id: e.dir_id,
                offerer: e.offerer,
                owner: e.owner,
                description: e.description,
                expires_at_ms: e.expires_at,
            })
            .collect(),
        offered: view.offered,
        watches: view.watches,
    }
}

/// What the directory keeps of a publish, as the store keeps it.
fn service_entry(
    offerer: EntityId,
    owner: cpns_wire::UserId,
    p: directory::Publish,
    now_ms: i64,
) -> cpns_store::ServiceEntry {
    cpns_store::ServiceEntry {
        dir_id: 0,
        offerer,
        owner,
        service_id: p.service_id,
        service_type: p.service_type,
        keywords: p.keywords,
        scope: match p.scope {
            DirScope::Pn(pn) => cpns_store::ServiceScope::Pn(pn),
            DirScope::User => cpns_store::ServiceScope::User,
            DirScope::Group(g) => cpns_store::ServiceScope::Group(g),
            DirScope::Public => cpns_store::ServiceScope::Public,
        },
        description: p.description,
        updated_at: now_ms,
        expires_at: p.expires_at_ms,
    }
}

/// Opens an SK_PNE sealed at rest (docs/security.md §4.7) under `master`: the server's master
/// key, or a device's own storage key (§4.9).
pub fn open_sk(
    master: &MasterKey,
    pn: &PnId,
    pne: &EntityId,
    sealed: &[u8],
) -> Result<SessionKey, NodeError> {
    let aad = at_rest_session_key_aad(pn.as_bytes(), pne.as_str());
    let sealed_error = |reason: String| NodeError::Sealed {
        what: format!("the SK_PNE of {pne} in PN {pn}"),
        reason,
    };
    let plain = open_at_rest(master, &aad, sealed).map_err(|e| sealed_error(e.to_string()))?;
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| sealed_error("not 32 bytes".into()))?;
    Ok(SessionKey::from_bytes(bytes))
}

/// Seals an SK_PNE at rest (docs/security.md §4.7, §4.9).
pub fn sealed_sk(
    master: &MasterKey,
    pn: &PnId,
    pne: &EntityId,
    sk: &SessionKey,
) -> Result<Vec<u8>, StoreFailure> {
    let aad = at_rest_session_key_aad(pn.as_bytes(), pne.as_str());
    seal_at_rest(master, &aad, sk.expose_secret()).map_err(|e| StoreFailure::Sealed(e.to_string()))
}

/// A PN's new group key epoch sealed at rest under `master` (docs/security.md §4.10).
fn sealed_group(
    master: &MasterKey,
    pn: &PnId,
    group: Option<cpns_proto::server::NewGroupEpoch>,
) -> Result<Option<GroupEpoch>, StoreFailure> {
    group
        .map(|g| {
            let sealed_key =
                cpns_crypto::seal_group_key_at_rest(master, pn.as_bytes(), g.epoch, &g.key)
                    .map_err(|e| StoreFailure::Sealed(e.to_string()))?;
            Ok(GroupEpoch {
                epoch: g.epoch,
                sealed_key,
            })
        })
        .transpose()
}

/// Makes `effect` durable in one store call (one transaction), sealing the keys it carries
/// under the master key; what the store holds now, for the machine.
pub(crate) async fn persist<S: ServerStore>(
    store: &S,
    master: &MasterKey,
    effect: ServerEffect,
) -> Result<Persisted, StoreFailure> {
    let now = unix_millis();
    let err = |e: cpns_store::StoreError| store_failure(&e);
    match effect {
        ServerEffect::EntityReport {
            id,
            capabilities,
            status,
        } => {
            let rec = store
                .record_report(&id, capabilities.as_deref(), status.map(|s| (s, now)))
                .await
                .map_err(err)?;
            Ok(Persisted::Recorded(states_of([rec])))
        }
        ServerEffect::RecordStatuses { changes } => {
            let changes: Vec<_> = changes
                .into_iter()
                .map(|c| cpns_store::StatusChange {
                    entity: c.entity,
                    status: c.status,
                    label: c.label,
                    since: now,
                    reported_by: c.reported_by,
                })
                .collect();
            let recs = store.record_statuses(&changes).await.map_err(err)?;
            Ok(Persisted::Recorded(states_of(recs)))
        }
        ServerEffect::AddSubscription {
            subscriber,
            owner,
            request_id,
            entities,
            policy,
        } => {
            let kept = store
                .add_subscription(&cpns_store::SubscriptionRecord {
                    id: 0,
                    subscriber,
                    owner,
                    request_id: request_id.0,
                    entities,
                    policy,
                    created_at: now,
                })
                .await
                .map_err(err)?;
            let sub = kept.subscription;
            Ok(Persisted::Subscribed {
                id: sub.id,
                watched: watched_of(sub.entities, sub.owner),
                policy: sub.policy,
                states: states_of(kept.states),
            })
        }
        ServerEffect::RemoveSubscription { subscriber, id } => {
            let removed = store
                .remove_subscription(&subscriber, id)
                .await
                .map_err(err)?;
            Ok(Persisted::Removed(removed))
        }
        ServerEffect::PublishService {
            offerer,
            owner,
            publish,
            now_ms,
        } => {
            let entry = service_entry(offerer, owner, *publish, now_ms);
            let dir_id = store.publish_service(&entry).await.map_err(err)?;
            // Read after the write: a watch made meanwhile may be told, or not.
            let candidates = store
                .watch_candidates(&entry.keywords, &entry.offerer, directory::MAX_TOLD)
                .await
                .map_err(err)?;
            let mut watchers = Vec::with_capacity(candidates.len());
            for c in candidates {
                let w = c.watch;
                let session_key = open_sk(master, &w.pn_id, &w.watcher, &c.sealed_session_key)
                    .map_err(sealed_failure)?;
                watchers.push(directory::Watcher {
                    watch_id: w.watch_id,
                    watcher: w.watcher,
                    owner: w.owner,
                    pn_id: w.pn_id,
                    session_key,
                    gateway: c.gateway,
                    keywords: w.keywords,
                    all: w.all,
                    service_type: w.service_type,
                    pns: c.pns,
                    groups: c.groups,
                });
            }
            Ok(Persisted::Published { dir_id, watchers })
        }
        ServerEffect::CreateGroup {
            group,
            name,
            owner,
            creator,
            creator_pn,
            open_to_user,
            key,
            now_ms,
        } => {
            let record = cpns_store::GroupRecord {
                group_id: group,
                name,
                owner: owner.clone(),
                creator: creator.clone(),
                open_to_user,
                epoch: 1,
                sealed_key: sealed_group_key(master, &group, 1, &key)?,
                created_at: now_ms,
            };
            let first = cpns_store::GroupMemberRecord {
                entity: creator,
                owner,
                pn_id: creator_pn,
                joined_at: now_ms,
            };
            store.create_group(&record, &first).await.map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::ChangeGroup {
            group,
            from_epoch,
            key,
            add,
            remove,
            now_ms,
        } => {
            let change = cpns_store::GroupChange {
                group_id: group,
                from_epoch,
                sealed_key: sealed_group_key(master, &group, from_epoch.saturating_add(1), &key)?,
                add: add.map(|(entity, owner, pn_id)| cpns_store::GroupMemberRecord {
                    entity,
                    owner,
                    pn_id,
                    joined_at: now_ms,
                }),
                remove,
            };
            store.change_group(&change).await.map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::OpenDelivery {
            session,
            items,
            source,
            pn_id,
            targets,
            now_ms,
            also,
        } => {
            let parts = std::iter::once((session, pn_id, targets))
                .chain(also.into_iter().map(|p| (p.session, p.pn_id, p.targets)));
            let mut records = Vec::new();
            for (session, pn_id, targets) in parts {
                for (target, charged) in targets {
                    for (item, it) in (0u32..).zip(&items) {
                        records.push(cpns_store::DeliveryRecord {
                            session,
                            target: target.clone(),
                            item,
                            service_id: it.service_id.clone(),
                            source: source.clone(),
                            pn_id,
                            charged: charged.clone(),
                            name: it.name.clone(),
                            size: it.size,
                            bytes: 0,
                            started_at: now_ms,
                            ended_at: None,
                            result: None,
                            per_mb: it.per_mb,
                        });
                    }
                }
            }
            store.open_delivery(&records).await.map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::SetContents { pne, contents } => {
            store.set_contents(&pne, &contents).await.map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::CloseDelivery {
            session,
            target,
            bytes,
            results,
            now_ms,
        } => {
            let closed = store
                .close_delivery(&session, &target, bytes, &results, now_ms)
                .await
                .map_err(err)?;
            Ok(Persisted::Removed(closed))
        }
        ServerEffect::InviteToGroup {
            group,
            invitee,
            inviter,
            expires_at_ms,
        } => {
            store
                .invite_to_group(&group, &invitee, &inviter, expires_at_ms)
                .await
                .map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::DropInvitation { group, invitee } => {
            let dropped = store.drop_invitation(&group, &invitee).await.map_err(err)?;
            Ok(Persisted::Removed(dropped))
        }
        ServerEffect::DeleteGroup { group } => {
            let deleted = store.delete_group(&group).await.map_err(err)?;
            Ok(Persisted::Removed(deleted))
        }
        ServerEffect::AddWatch {
            watcher,
            owner,
            pn_id,
            keywords,
            all,
            service_type,
            now_ms,
        } => {
            let watch = cpns_store::WatchRecord {
                watch_id: 0,
                watcher,
                owner,
                pn_id,
                keywords,
                all,
                service_type,
                created_at: now_ms,
            };
            let id = store.add_watch(&watch).await.map_err(err)?;
            Ok(Persisted::Watch(id))
        }
        ServerEffect::RemoveWatch { watcher, watch_id } => {
            let removed = store.remove_watch(&watcher, watch_id).await.map_err(err)?;
            Ok(Persisted::Removed(removed))
        }
        ServerEffect::UnpublishService {
            offerer,
            service_id,
        } => {
            let removed = store
                .unpublish_service(&offerer, &service_id)
                .await
                .map_err(err)?;
            Ok(Persisted::Removed(removed))
        }
        ServerEffect::StoreUsage {
            entity,
            owner,
            pn_id,
            pn_owner,
            records,
        } => {
            let rows: Vec<_> = records
                .into_iter()
                .map(|(record, units)| cpns_store::UsageRow {
                    entity: entity.clone(),
                    owner: owner.clone(),
                    pn_id: Some(pn_id),
                    pn_owner: pn_owner.clone(),
                    record,
                    units,
                    received_at: now,
                })
                .collect();
            let done = store.store_usage(&rows).await.map_err(err)?;
            Ok(Persisted::Usage(cpns_wire::UsageAccepted {
                stored: done.stored,
                duplicates: done.duplicates,
                charged: done.charged,
            }))
        }
        ServerEffect::RegisterPn {
            pn_id,
            gateway,
            owner,
            members,
            group,
            lifetime_s,
            max_members,
        } => {
            let group = sealed_group(master, &pn_id, group)?;
            let mut rec = PnRecord {
                pn_id,
                gateway,
                owner,
                // Until the PN GW's PN list confirms its store has it (ARCHITECTURE decision 8).
                state: PnState::Pending,
                created_at: now,
                members: Vec::new(),
                group,
                expires_at: lifetime_s.map(|s| now + i64::from(s) * 1000),
                max_members,
            };
            for m in members {
                rec.members.push(PnMember {
                    sealed_session_key: Some(sealed_sk(master, &pn_id, &m.pne_id, &m.session_key)?),
                    pne_id: m.pne_id,
                    initiator: m.initiator,
                    authenticated: true,
                    capabilities: Some(m.capabilities),
                    contents: m.contents,
                    joined_at: now,
                    owner: m.owner,
                });
            }
            store.register_pn(&rec).await.map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::UpdateMembers {
            pn_id,
            add,
            remove,
            group,
        } => {
            let group = sealed_group(master, &pn_id, group)?;
            let add: Vec<PnMember> = add
                .into_iter()
                .map(|m| PnMember {
                    pne_id: m.pne_id,
                    initiator: false,
                    authenticated: false,
                    capabilities: m.capabilities,
                    sealed_session_key: None,
                    contents: Vec::new(),
                    joined_at: now,
                    owner: None,
                })
                .collect();
            store
                .update_members(&pn_id, &add, &remove, group.as_ref())
                .await
                .map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::ReconcilePns {
            gateway,
            listed,
            drop_unlisted_pending,
        } => {
            let done = store
                .reconcile_gateway_pns(&gateway, &listed, drop_unlisted_pending)
                .await
                .map_err(err)?;
            Ok(Persisted::Reconciled {
                confirmed: done.confirmed,
                removed: done.removed,
            })
        }
        ServerEffect::ConfirmPns { gateway, pns } => {
            let confirmed = store.confirm_pns(&gateway, &pns).await.map_err(err)?;
            Ok(Persisted::Reconciled {
                confirmed,
                removed: Vec::new(),
            })
        }
        ServerEffect::SecureWindow { pn_id, pne, window } => store
            .set_secure_window(&pn_id, &pne, (window.top, window.seen))
            .await
            .map(|()| Persisted::Done)
            .map_err(err),
        ServerEffect::RememberAnswer {
            sender,
            request_id,
            answer,
        } => {
            let mut bytes = Vec::new();
            cpns_wire::codec::encode_envelope(&answer, &mut bytes);
            store
                .remember_answer(
                    &sender.to_string(),
                    request_id.0,
                    &bytes,
                    now,
                    ANSWERS_KEPT_MS,
                )
                .await
                .map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::DropPendingPn { pn_id } => {
            store.remove_pending_pn(&pn_id).await.map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::ReleasePn { gateway, pn_id } => {
            store.release_pn(&gateway, &pn_id).await.map_err(err)?;
            Ok(Persisted::Done)
        }
        ServerEffect::RegisterPne {
            pn_id,
            pne_id,
            capabilities,
            session_key,
            group,
        } => {
            let group = sealed_group(master, &pn_id, group)?;
            // An existing member keeps its initiator flag, its joining time and, with none
            // given, its capabilities: the store's upsert never downgrades (decision 12).
            let member = PnMember {
                sealed_session_key: Some(sealed_sk(master, &pn_id, &pne_id, &session_key)?),
                initiator: false,
                capabilities: capabilities.map(|c| *c),
                joined_at: now,
                owner: None,
                contents: Vec::new(),
                authenticated: true,
                pne_id,
            };
            let id = store
                .register_pne(&pn_id, &member, group.as_ref())
                .await
                .map_err(err)?;
            Ok(Persisted::CpnsId(id))
        }
    }
}

/// What a subscription watches: the listed entities, or every device of its owner.
pub fn watched_of(entities: Vec<EntityId>, owner: cpns_wire::UserId) -> Watched {
    if entities.is_empty() {
        Watched::User(owner)
    } else {
        Watched::Entities(entities)
    }
}

/// The status records of what `watched` covers, as the hub reads them.
pub async fn watched_states<S: ServerStore>(
    store: &S,
    watched: &Watched,
) -> Result<Vec<EntityState>, cpns_store::StoreError> {
    let recs = match watched {
        Watched::Entities(ids) => store.statuses(ids).await?,
        Watched::User(u) => store.statuses_of_owner(u).await?,
    };
    Ok(recs.into_iter().filter_map(|r| state_of(r, None)).collect())
}

/// Status records as the status machinery reads them.
pub fn states_of(records: impl IntoIterator<Item = cpns_store::StatusRecord>) -> Vec<EntityState> {
    records
        .into_iter()
        .filter_map(|r| state_of(r, None))
        .collect()
}

/// Hands records the store holds now to the hub (those the server's own end of a session
/// changed; what a session's effects change, its machine publishes).
pub fn publish(hub: &StatusHub, records: impl IntoIterator<Item = cpns_store::StatusRecord>) {
    for state in states_of(records) {
        hub.publish(state);
    }
}

#[cfg(test)]
mod tests {
    use cpns_store::{EntityRecord, SqliteStore};
    use cpns_wire::UserId;

    use super::*;

    async fn enrolled(
        dir: &std::path::Path,
        master: &MasterKey,
        ids: &[&str],
    ) -> (SqliteStore, Vec<EuKey>) {
        let store = SqliteStore::open(&dir.join("s.db")).await.unwrap();
        let owner = UserId::new("alice").unwrap();
        store.ensure_user(&owner).await.unwrap();
        let mut keys = Vec::new();
        for id in ids {
            keys.push(enroll(&store, master, id, EntityKind::Pne).await);
        }
        (store, keys)
    }

    /// Enrolls `id` of user alice (who exists) with a new EUKey sealed under `master`.
    async fn enroll(store: &SqliteStore, master: &MasterKey, id: &str, kind: EntityKind) -> EuKey {
        let key = EuKey::generate().unwrap();
        store
            .insert_entity(&EntityRecord {
                id: EntityId::new(id).unwrap(),
                kind,
                owner: UserId::new("alice").unwrap(),
                sealed_eukey: seal_at_rest(master, &at_rest_eukey_aad(id), key.expose_secret())
                    .unwrap(),
                capabilities: None,
                cpns_id: None,
                enrolled_at: 0,
            })
            .await
            .unwrap();
        key
    }

    /// A PN load naming `ids` (the PN itself is not in the store).
    fn ask(ids: &[&str]) -> Load {
        Load::Pn {
            pn: PnId::from_bytes([9; 16]),
            replay: None,
            entities: ids.iter().map(|i| EntityId::new(*i).unwrap()).collect(),
            member_keys: false,
        }
    }

    /// The entities of a PN load's answer.
    fn found(l: Result<Loaded, StoreFailure>) -> Vec<KnownEntity> {
        match l.unwrap() {
            Loaded::Pn(p) => p.entities,
            other => panic!("a {} answer", other.name()),
        }
    }

    fn names(l: &[KnownEntity]) -> Vec<String> {
        l.iter().map(|e| e.id.to_string()).collect()
    }

    #[tokio::test]
    async fn loads_keep_opened_keys_and_the_order_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().unwrap();
        let (store, keys) = enrolled(dir.path(), &master, &["a", "b", "c"]).await;
        let cache = KeyCache::new(10);
        let first = found(load(&store, &master, &cache, &ask(&["b"])).await);
        assert_eq!(names(&first), ["b"]);
        assert!(first[0].eukey == keys[1]);
        assert_eq!(cache.len(), 1);
        // Mixed: b from the cache, a and c from the store; the order is the request's, each
        // entity once, an unknown id left out and not cached.
        let mixed = found(
            load(
                &store,
                &master,
                &cache,
                &ask(&["c", "b", "nobody", "a", "c"]),
            )
            .await,
        );
        assert_eq!(names(&mixed), ["c", "b", "a"]);
        assert!(mixed[2].eukey == keys[0]);
        assert_eq!(cache.len(), 3);
        // Served from the cache: not opened again (under another master key, the store's
        // seals would not open).
        let other = MasterKey::generate().unwrap();
        let cached = found(load(&store, &other, &cache, &ask(&["a", "b"])).await);
        assert_eq!(names(&cached), ["a", "b"]);
        assert!(cached[0].eukey == keys[0]);
        store.close().await;
        assert!(
            load(&store, &master, &cache, &ask(&["nobody"]))
                .await
                .is_err()
        );
    }

    /// 000 §6.6.5 step 2 on SQLite: the PN GW's PN goes with its members; another PN GW's is a
    /// conflict and stays; a PN already gone is no error (a retry).
    #[tokio::test]
    async fn a_released_pn_leaves_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().unwrap();
        let (store, _) = enrolled(dir.path(), &master, &["a"]).await;
        let gw = |s: &str| EntityId::new(s).unwrap();
        let pn = PnId::from_bytes([5; 16]);
        let member = cpns_proto::server::RegisteredMember {
            owner: None,
            pne_id: gw("a"),
            initiator: true,
            capabilities: cpns_wire::DeviceCapabilities::default(),
            contents: Vec::new(),
            session_key: cpns_crypto::SessionKey::from_bytes([1; 32]),
        };
        let register = ServerEffect::RegisterPn {
            pn_id: pn,
            gateway: gw("gw-1"),
            owner: UserId::new("alice").unwrap(),
            members: vec![member],
            group: None,
            lifetime_s: None,
            max_members: None,
        };
        persist(&store, &master, register).await.unwrap();
        assert_eq!(store.pn(&pn).await.unwrap().unwrap().members.len(), 1);
        let theirs = ServerEffect::ReleasePn {
            gateway: gw("gw-2"),
            pn_id: pn,
        };
        let err = persist(&store, &master, theirs).await.unwrap_err();
        assert!(matches!(err, StoreFailure::Conflict(_)), "{err:?}");
        assert!(store.pn(&pn).await.unwrap().is_some());
        for _ in 0..2 {
            let release = ServerEffect::ReleasePn {
                gateway: gw("gw-1"),
                pn_id: pn,
            };
            assert_eq!(
                persist(&store, &master, release).await.unwrap(),
                Persisted::Done
            );
            assert_eq!(store.pn(&pn).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn a_gateway_is_loaded_but_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().unwrap();
        let (store, _) = enrolled(dir.path(), &master, &["a"]).await;
        let key = enroll(&store, &master, "gw", EntityKind::Gateway).await;
        let cache = KeyCache::new(10);
        let loaded = found(load(&store, &master, &cache, &ask(&["gw", "a"])).await);
        assert_eq!(names(&loaded), ["gw", "a"]);
        assert!(loaded[0].eukey == key);
        assert_eq!(loaded[0].role, EntityRole::Gateway);
        assert_eq!(cache.len(), 1, "only the PNE is kept");
        // At connection set-up: read and opened, never kept.
        let gw = Load::Gateway {
            id: EntityId::new("gw").unwrap(),
        };
        let Ok(Loaded::Gateway(Some(e))) = load(&store, &master, &cache, &gw).await else {
            panic!("the PN GW is enrolled");
        };
        assert!(e.eukey == key);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_a_wrong_master_key_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().unwrap();
        let (store, _) = enrolled(dir.path(), &master, &["a", "b", "c"]).await;
        let cache = KeyCache::new(2);
        load(&store, &master, &cache, &ask(&["a", "b", "c"]))
            .await
            .unwrap();
        assert_eq!(cache.len(), 2);
        let none = KeyCache::new(0);
        load(&store, &master, &none, &ask(&["a"])).await.unwrap();
        assert!(none.is_empty());
        let other = MasterKey::generate().unwrap();
        let err = load(&store, &other, &KeyCache::new(4), &ask(&["a"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreFailure::Sealed(ref m) if m.contains("EUKey of a")),
            "{err}"
        );
    }
}
