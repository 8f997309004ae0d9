//! The harness's test store: the CPNS Server's state of record (entities with EUKeys, PNs, the
//! CPNS ID counter `cpns-000001`, ...) answering the server's `Load`/`Persist`, and the local PN
//! inventories the PN GW and the PNEs persist. A fake, kept simple; faults are switched on by
//! hand (a failed persist, a failed load), and loads can be held to answer them later. [`PneSpec`] says how each PNE is enrolled and set up.

use std::collections::BTreeMap;

use cpns_crypto::SessionKey;
use cpns_wire::{CpnsId, DeviceCapabilities, EntityId, InventoryMember, PnId, PnInventory, Status};

use crate::pne::InvitationPolicy;
use crate::server::{
    GroupKeyLoaded, InventoryLoaded, KnownEntity, KnownPn, Load, Loaded, Persisted, PnLoaded,
    ServerEffect, SessionLoaded, StatusesLoaded, UsageOwners,
};
use crate::{LocalPnState, PanSecurity};

/// The tiny store: the server's state of record and every device's local PN inventory.
#[derive(Debug, Default)]
pub(super) struct Store {
    pub entities: BTreeMap<EntityId, KnownEntity>,
    pub pns: BTreeMap<PnId, PnInventory>,
    pub pn_gateway: BTreeMap<PnId, EntityId>,
    /// PNs registered and not yet confirmed by the PN GW's PN list.
    pub pending: std::collections::BTreeSet<PnId>,
    pub reports: BTreeMap<EntityId, (Option<DeviceCapabilities>, Option<Status>)>,
    pub cpns_ids: BTreeMap<EntityId, CpnsId>,
    pub session_keys: BTreeMap<(PnId, EntityId), SessionKey>,
    /// Each member's secure session replay window, kept with its SK_PNE (a new one starts it
    /// again).
    pub windows: BTreeMap<(PnId, EntityId), crate::server::window::ReplayWindow>,
    /// Each PN's current group key epoch and key (a real store seals the key at rest).
    pub epochs: BTreeMap<PnId, (u64, cpns_crypto::GroupKey)>,
    /// Memberships that ended, with the SK_PNE held and why.
    pub departed: BTreeMap<(PnId, EntityId), (SessionKey, cpns_wire::EndReason)>,
    /// The user each registered member was recorded with (`None`: the PN owner's).
    pub member_owners: BTreeMap<(PnId, EntityId), Option<cpns_wire::UserId>>,
    /// Each PN's most members, as registered.
    pub max_members: BTreeMap<PnId, u32>,
    /// PNs whose lifetime is over (a test says when).
    pub expired: std::collections::BTreeSet<PnId>,
    /// Each PN's lifetime in seconds, as registered.
    pub lifetimes: BTreeMap<PnId, u32>,
    next_cpns: u32,
    pub gw_local: BTreeMap<PnId, LocalPnState>,
    /// The PN GW's departed members' keys, in the order kept.
    pub gw_departed: Vec<(PnId, EntityId, Vec<u8>)>,
    /// The PN GW's store writes, in the order made: `save`, `forget`, `keep_departed`,
    /// `drop_departed`.
    pub gw_writes: Vec<&'static str>,
    pub pne_local: Vec<BTreeMap<PnId, LocalPnState>>,
    /// Make the next persists of the server, the PN GW or the PNEs fail.
    pub fail_server: bool,
    pub fail_gw: bool,
    pub fail_pne: bool,
    /// Secure sessions the PNEs kept (PneOutput::PersistSession), by PNE index.
    pub pne_sessions: BTreeMap<usize, crate::pne::SecureSession>,
    /// What each PNE sends as a delivery's content (its driver's file).
    pub pne_outbox: BTreeMap<usize, Vec<u8>>,
    /// The delivery sessions each PNE kept (PneOutput::KeepDelivery), by PNE and session.
    pub pne_deliveries: BTreeMap<(usize, cpns_wire::DeliveryId), crate::pne::KeptSession>,
    /// Every session a PNE was asked to keep, in order, forgotten or not.
    pub pne_kept_log: Vec<(usize, crate::pne::KeptSession)>,
    /// How each PNE's content splits into items, when it is several (its driver's files).
    pub pne_outbox_items: BTreeMap<usize, Vec<u64>>,
    /// When set, the next PNE's hashing of its content for a digest fails with this reason.
    pub hash_fault: Option<String>,
    /// When set, a PNE's HashContent is held here (PNE, session) until the test answers it
    /// (`Harness::hash_content`), as hashing a large file takes a while.
    pub held_hashes: Option<Vec<(usize, cpns_wire::DeliveryId)>>,
    /// What each PNE received, by session: kept once its hash matched.
    pub pne_inbox: BTreeMap<(usize, cpns_wire::DeliveryId), Vec<u8>>,
    /// Received content whose hash matched, by PNE and session (of several items, those
    /// whose hash matched, one after another).
    pub pne_received: BTreeMap<(usize, cpns_wire::DeliveryId), Vec<u8>>,
    /// The part of a delivery for one PNE only, by PNE and session, as the PNE handed it on
    /// with its content.
    pub pne_specific: BTreeMap<(usize, cpns_wire::DeliveryId), Vec<u8>>,
    /// The content the server sends for an external entity.
    pub server_outbox: Vec<u8>,
    /// When set, a PNE's reads come back this many bytes long whatever was asked (a driver
    /// at fault).
    pub read_fault: Option<usize>,
    /// When set, a PNE's FinishReceive is held here (PNE, session, hash) until the test
    /// finishes it, as a long hash of a large file would be.
    pub held_finishes: Option<Vec<HeldFinish>>,
    /// The sizes of each received session's items, by PNE and session, as opened.
    pub pne_items: BTreeMap<(usize, cpns_wire::DeliveryId), Vec<u64>>,
    /// The PN GW's kept delivery routes.
    pub gw_routes: BTreeMap<cpns_wire::DeliveryId, cpns_wire::DeliveryRoute>,
    /// Delivery records, by session and target.
    pub deliveries: BTreeMap<(cpns_wire::DeliveryId, EntityId), SDelivery>,
    /// Each PNE's kept service group keys, as `KeepGroup` and `ForgetGroup` left them.
    pub pne_groups: BTreeMap<usize, BTreeMap<cpns_wire::GroupId, crate::pne::HeldGroup>>,
    /// Each PNE's usage records not marked done yet, and its reporting preferences.
    pub pne_usage: BTreeMap<usize, (Vec<cpns_wire::UsageRecord>, crate::usage::Preferences)>,
    /// How many times each PNE asked its store for its usage records.
    pub usage_loads: BTreeMap<usize, usize>,
    /// How many loads the server asked for.
    pub loads: std::cell::Cell<usize>,
    /// Fails the loads it gives a failure for (a read error, a key that does not open).
    pub fail_load: Option<fn(&Load) -> Option<crate::StoreFailure>>,
    /// While set, the harness holds the server's loads in [`Store::held`] instead of answering
    /// them at once (to answer them later, in any order: flows in progress together).
    pub hold_loads: bool,
    /// Loads held, with the token to answer them with.
    pub held: Vec<(crate::Token, Load)>,
    /// Kept answers of mutating requests, by (sender, request id).
    pub answers: BTreeMap<(String, u64), cpns_wire::Envelope>,
    /// How many effects the server persisted, by kind (to see that a replay changed nothing).
    pub effects: BTreeMap<&'static str, usize>,
    /// The members each registered PN was recorded with as its initiator.
    pub initiators: BTreeMap<PnId, Vec<EntityId>>,
    /// Status records (004 §5.5.3), with who reported them.
    pub statuses: BTreeMap<EntityId, (crate::status::EntityState, Option<EntityId>)>,
    /// Status subscriptions by id: subscriber, request id, watched, policy.
    pub subscriptions: BTreeMap<u64, Subscription>,
    /// Usage records kept, by (PNE, record id): record, units charged, owner, PN owner.
    pub usage: BTreeMap<(EntityId, u64), UsageKept>,
    /// The clock the test store stamps statuses with, ms.
    pub clock_ms: u64,
    /// Service groups: the group, its members (PNE, user, PN) in the order they joined, and
    /// invitations (group, invitee) with their inviter and deadline.
    pub groups: BTreeMap<cpns_wire::GroupId, SGroup>,
    pub group_invites: BTreeMap<(cpns_wire::GroupId, EntityId), (EntityId, i64)>,
    /// Service watches by id: the watch as kept.
    pub watches: BTreeMap<u64, Watch>,
    /// The service directory, by directory id: offerer, its user, what is kept.
    pub services: BTreeMap<
        u64,
        (
            EntityId,
            cpns_wire::UserId,
            crate::server::directory::Publish,
        ),
    >,
}

/// A status subscription the test store keeps.
#[derive(Clone, Debug)]
pub(super) struct Subscription {
    pub subscriber: EntityId,
    pub request_id: cpns_wire::RequestId,
    pub entities: Vec<EntityId>,
    pub policy: cpns_wire::StatusPolicy,
}

/// A service group the test store keeps.
#[derive(Clone, Debug)]
pub(super) struct SGroup {
    pub name: String,
    pub owner: cpns_wire::UserId,
    pub creator: EntityId,
    pub open_to_user: bool,
    pub epoch: u64,
    pub key: cpns_crypto::GroupKey,
    pub members: Vec<(EntityId, cpns_wire::UserId, PnId)>,
}

/// A service watch the test store keeps.
#[derive(Clone, Debug)]
pub(super) struct Watch {
    pub watcher: EntityId,
    pub owner: cpns_wire::UserId,
    pub pn_id: PnId,
    pub keywords: Vec<String>,
    pub all: bool,
    pub service_type: Option<String>,
}

/// A usage record the test store keeps.
#[derive(Clone, Debug)]
pub(super) struct UsageKept {
    pub record: cpns_wire::UsageRecord,
    pub units: Option<u64>,
    pub owner: cpns_wire::UserId,
    pub pn_id: PnId,
    pub pn_owner: Option<cpns_wire::UserId>,
}

impl Store {
    fn drop_pn(&mut self, pn: PnId) {
        self.pending.remove(&pn);
        self.pns.remove(&pn);
        self.pn_gateway.remove(&pn);
        let held: Vec<_> = self
            .session_keys
            .iter()
            .filter(|((p, _), _)| *p == pn)
            .map(|(k, sk)| (k.clone(), sk.clone()))
            .collect();
        for (k, sk) in held {
            self.departed
                .insert(k, (sk, cpns_wire::EndReason::Released));
        }
        self.session_keys.retain(|(p, _), _| *p != pn);
        self.epochs.remove(&pn);
    }

    /// The user owning the PN GW `gw` (a PN GW these tests never enrolled: another user).
    fn owner_of(&self, gw: &EntityId) -> cpns_wire::UserId {
        match self.entities.get(gw) {
            Some(e) => e.owner.clone(),
            None => cpns_wire::UserId::new("someone-else").unwrap(),
        }
    }

    /// An entity's status record: as recorded, or offline if never reported.
    pub(super) fn status_of(&self, id: &EntityId) -> Option<crate::status::EntityState> {
        if let Some((s, _)) = self.statuses.get(id) {
            return Some(s.clone());
        }
        let e = self.entities.get(id)?;
        Some(crate::status::EntityState {
            entity: id.clone(),
            owner: e.owner.clone(),
            status: Status::Offline,
            label: None,
            since_ms: None,
            battery_pct: None,
            battery_minutes: None,
            free_memory_mb: None,
        })
    }

    /// A PN of the inventory as the server's machine reads it.
    fn known_pn(&self, p: &PnId) -> Option<KnownPn> {
        let gateway = self.pn_gateway.get(p)?;
        Some(KnownPn {
            max_members: self.max_members.get(p).copied(),
            expired: self.expired.contains(p),
            gateway: gateway.clone(),
            owner: self.owner_of(gateway),
            inventory: self.pns.get(p)?.clone(),
            epoch: self.epochs.get(p).map_or(0, |(e, _)| *e),
        })
    }

    /// A directory request's view, as the real store's (`cpns_store::ServerStore::directory_view`):
    /// visibility by scope, lease, and an offerer recorded offline.
    fn directory(
        &self,
        asker: &EntityId,
        ask: &crate::server::directory::DirAsk,
    ) -> crate::server::directory::DirectoryLoaded {
        use crate::server::directory::{DirAsk, DirEntry, DirScope, DirViewer, DirectoryLoaded};
        let Some(known) = self.entities.get(asker) else {
            return DirectoryLoaded::default();
        };
        let viewer = DirViewer {
            owner: known.owner.clone(),
            pns: self
                .pns
                .iter()
                .filter(|(_, i)| i.members.iter().any(|m| &m.pne_id == asker))
                .map(|(p, _)| *p)
                .collect(),
            groups: self
                .groups
                .iter()
                .filter(|(_, g)| g.members.iter().any(|(e, _, _)| e == asker))
                .map(|(id, _)| id.to_string())
                .collect(),
        };
        let visible = |(offerer, owner, p): &(
            EntityId,
            cpns_wire::UserId,
            crate::server::directory::Publish,
        ),
                       now_ms: i64| {
            let offline = self
                .statuses
                .get(offerer)
                .is_some_and(|(s, _)| s.status == Status::Offline);
            let scoped = match &p.scope {
                DirScope::Public => true,
                DirScope::User => *owner == viewer.owner,
                DirScope::Pn(pn) => viewer.pns.contains(pn),
                DirScope::Group(g) => viewer.groups.contains(g),
            };
            scoped && !offline && p.expires_at_ms > now_ms
        };
        let entry = |id: u64,
                     (offerer, owner, p): &(
            EntityId,
            cpns_wire::UserId,
            crate::server::directory::Publish,
        )| DirEntry {
            dir_id: id,
            offerer: offerer.clone(),
            owner: owner.clone(),
            description: p.description.clone(),
            expires_at_ms: p.expires_at_ms,
        };
        let mut offered = 0;
        let mut watches = 0;
        let entries = match ask {
            DirAsk::Watching => {
                watches = self
                    .watches
                    .values()
                    .filter(|w| &w.watcher == asker)
                    .count() as u32;
                Vec::new()
            }
            DirAsk::Offered { service_id } => {
                offered = self
                    .services
                    .values()
                    .filter(|(o, _, p)| o == asker && &p.service_id != service_id)
                    .count() as u32;
                Vec::new()
            }
            DirAsk::Discover {
                keywords,
                all,
                service_type,
                now_ms,
                limit,
                after,
            } => self
                .services
                .range(after + 1..)
                .filter(|(_, e)| visible(e, *now_ms))
                .filter(|(_, (_, _, p))| service_type.as_ref().is_none_or(|t| *t == p.service_type))
                .filter(|(_, (_, _, p))| {
                    let has = |k: &String| p.keywords.contains(k);
                    keywords.is_empty()
                        || if *all {
                            keywords.iter().all(has)
                        } else {
                            keywords.iter().any(has)
                        }
                })
                .take(*limit as usize)
                .map(|(id, e)| entry(*id, e))
                .collect(),
            DirAsk::Retrieve { dir_id, now_ms } => self
                .services
                .get(dir_id)
                .filter(|e| visible(e, *now_ms))
                .map(|e| entry(*dir_id, e))
                .into_iter()
                .collect(),
        };
        DirectoryLoaded {
            viewer: Some(viewer),
            capabilities: self.reports.get(asker).and_then(|(c, _)| c.clone()),
            entries,
            offered,
            watches,
        }
    }

    /// The watches a publish of `offerer` with `keywords` may match, as the real store's
    /// `watch_candidates`: each with its watcher's key in the watch's PN and its PNs.
    fn watchers(
        &self,
        keywords: &[String],
        offerer: &EntityId,
    ) -> Vec<crate::server::directory::Watcher> {
        self.watches
            .iter()
            .filter(|(_, w)| &w.watcher != offerer)
            .filter(|(_, w)| {
                w.keywords.is_empty() || w.keywords.iter().any(|k| keywords.contains(k))
            })
            .filter_map(|(id, w)| {
                let session_key = self
                    .session_keys
                    .get(&(w.pn_id, w.watcher.clone()))?
                    .clone();
                Some(crate::server::directory::Watcher {
                    watch_id: *id,
                    watcher: w.watcher.clone(),
                    owner: w.owner.clone(),
                    pn_id: w.pn_id,
                    session_key,
                    gateway: self.pn_gateway.get(&w.pn_id)?.clone(),
                    keywords: w.keywords.clone(),
                    all: w.all,
                    service_type: w.service_type.clone(),
                    pns: self
                        .pns
                        .iter()
                        .filter(|(_, i)| i.members.iter().any(|m| m.pne_id == w.watcher))
                        .map(|(p, _)| *p)
                        .collect(),
                    groups: self
                        .groups
                        .iter()
                        .filter(|(_, g)| g.members.iter().any(|(e, _, _)| *e == w.watcher))
                        .map(|(id, _)| id.to_string())
                        .collect(),
                })
            })
            .collect()
    }

    /// Where pushes to `pne` in `pn` go, if it holds a key there.
    fn reach_in(&self, pne: &EntityId, pn: PnId) -> Option<crate::server::groups::Reach> {
        Some(crate::server::groups::Reach {
            entity: pne.clone(),
            owner: self.entities.get(pne)?.owner.clone(),
            pn_id: pn,
            session_key: self.session_keys.get(&(pn, pne.clone()))?.clone(),
            gateway: self.pn_gateway.get(&pn)?.clone(),
        })
    }

    /// A group request's view, as the real store's `group_view`.
    fn group(
        &self,
        id: &cpns_wire::GroupId,
        asker: &EntityId,
        also: Option<&EntityId>,
        now_ms: i64,
    ) -> crate::server::groups::GroupLoaded {
        use crate::server::groups::{GroupInfo, GroupLoaded, MemberInfo};
        let g = self.groups.get(id);
        GroupLoaded {
            group: g.map(|g| GroupInfo {
                name: g.name.clone(),
                owner: g.owner.clone(),
                creator: g.creator.clone(),
                open_to_user: g.open_to_user,
                epoch: g.epoch,
                key: g.key.clone(),
            }),
            members: g
                .map(|g| {
                    g.members
                        .iter()
                        .map(|(e, o, pn)| MemberInfo {
                            entity: e.clone(),
                            owner: o.clone(),
                            reach: self.reach_in(e, *pn),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            invitation: self
                .group_invites
                .get(&(*id, asker.clone()))
                .filter(|(_, until)| *until > now_ms)
                .map(|(by, _)| by.clone()),
            asker_owner: self.entities.get(asker).map(|e| e.owner.clone()),
            asker_groups: self
                .groups
                .values()
                .filter(|g| g.members.iter().any(|(e, _, _)| e == asker))
                .count() as u32,
            also: also.and_then(|e| {
                let pn = self
                    .pns
                    .iter()
                    .find(|(p, _)| self.session_keys.contains_key(&(**p, e.clone())))
                    .map(|(p, _)| *p)?;
                self.reach_in(e, pn)
            }),
        }
    }

    /// Answers the server's load, or fails it as [`Store::fail_load`] says.
    pub(super) fn load(&self, load: &Load) -> Result<Loaded, crate::StoreFailure> {
        self.loads.set(self.loads.get() + 1);
        if let Some(failure) = self.fail_load.and_then(|f| f(load)) {
            return Err(failure);
        }
        let owner_of_entity = |e: &EntityId| self.entities.get(e).map(|k| k.owner.clone());
        let member_of = |p: &PnId, pne: &EntityId| {
            self.pns
                .get(p)
                .is_some_and(|i| i.members.iter().any(|m| &m.pne_id == pne))
        };
        Ok(match load {
            Load::Gateway { id } => Loaded::Gateway(self.entities.get(id).cloned()),
            Load::Pn {
                pn,
                replay,
                entities,
                member_keys,
            } => Loaded::Pn(Box::new(PnLoaded {
                pn: self.known_pn(pn),
                replay: replay.as_ref().and_then(|(sender, id)| {
                    self.answers.get(&(sender.to_string(), id.0)).cloned()
                }),
                entities: entities
                    .iter()
                    .filter_map(|e| self.entities.get(e).cloned())
                    .collect(),
                member_keys: if *member_keys {
                    self.session_keys
                        .iter()
                        .filter(|((p, _), _)| p == pn)
                        .map(|((_, pne), sk)| (pne.clone(), sk.clone()))
                        .collect()
                } else {
                    Vec::new()
                },
            })),
            Load::Session { pn, pne } => Loaded::Session(SessionLoaded {
                gateway: self.pn_gateway.get(pn).cloned(),
                session_key: self.session_keys.get(&(*pn, pne.clone())).cloned(),
                window: self
                    .windows
                    .get(&(*pn, pne.clone()))
                    .copied()
                    .unwrap_or_default(),
            }),
            Load::GroupKey { pn, pne } => Loaded::GroupKey(Box::new(GroupKeyLoaded {
                pn: self.known_pn(pn),
                session_key: self.session_keys.get(&(*pn, pne.clone())).cloned(),
                group: self.epochs.get(pn).cloned(),
                departed: (!member_of(pn, pne))
                    .then(|| self.departed.get(&(*pn, pne.clone())).cloned())
                    .flatten(),
            })),
            Load::Inventory { asker, pn } => {
                let asker_owner = owner_of_entity(asker);
                let pns = match (pn, &asker_owner) {
                    (Some(p), _) => self.known_pn(p).into_iter().collect(),
                    (None, Some(owner)) => self
                        .pn_gateway
                        .iter()
                        .filter(|(_, gw)| self.entities.get(*gw).is_some_and(|g| &g.owner == owner))
                        .filter_map(|(p, _)| self.known_pn(p))
                        .collect(),
                    (None, None) => Vec::new(),
                };
                // Each member's entries the asker may see, by the directory's scope.
                let members: Vec<&EntityId> = pns
                    .iter()
                    .flat_map(|p: &KnownPn| p.inventory.members.iter().map(|m| &m.pne_id))
                    .collect();
                let asker_pns: Vec<PnId> = self
                    .pns
                    .iter()
                    .filter(|(_, inv)| inv.members.iter().any(|m| &m.pne_id == asker))
                    .map(|(p, _)| *p)
                    .collect();
                let services = self
                    .services
                    .iter()
                    .filter(|(_, (offerer, owner, publish))| {
                        members.contains(&offerer)
                            && match &publish.scope {
                                crate::server::directory::DirScope::Public => true,
                                crate::server::directory::DirScope::User => {
                                    asker_owner.as_ref() == Some(owner)
                                }
                                crate::server::directory::DirScope::Pn(p) => asker_pns.contains(p),
                                crate::server::directory::DirScope::Group(_) => false,
                            }
                    })
                    .filter_map(|(id, (offerer, owner, publish))| {
                        let (s, _) = crate::server::directory::summary(
                            *id,
                            offerer,
                            owner,
                            &publish.description,
                        )?;
                        Some((offerer.clone(), s))
                    })
                    .collect();
                Loaded::Inventory(InventoryLoaded {
                    asker_owner,
                    pns,
                    services,
                })
            }
            Load::UsageOwners { pne, pn } => Loaded::UsageOwners(UsageOwners {
                owner: self.status_of(pne).map(|s| s.owner),
                pn_owner: self.known_pn(pn).map(|p| p.owner),
            }),
            Load::Charging { pne, since_s } => Loaded::Charging(
                owner_of_entity(pne)
                    .map(|owner| {
                        self.usage
                            .iter()
                            .filter(|(_, u)| u.owner == owner && u.record.start_s >= *since_s)
                            .filter_map(|((entity, _), u)| {
                                Some(cpns_wire::ChargingRecord {
                                    user: u.owner.clone(),
                                    entity: entity.clone(),
                                    pn_id: Some(u.pn_id),
                                    pn_owner: u.pn_owner.clone(),
                                    service: u.record.service.clone(),
                                    start_s: u.record.start_s,
                                    end_s: u.record.end_s,
                                    bytes: u.record.bytes,
                                    units: u.units?,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Load::Served {
                gateway,
                candidates,
            } => Loaded::Served(
                candidates
                    .iter()
                    .filter(|c| {
                        self.pns.iter().any(|(p, inv)| {
                            self.pn_gateway.get(p) == Some(gateway)
                                && inv.members.iter().any(|m| &m.pne_id == *c)
                        })
                    })
                    .cloned()
                    .collect(),
            ),
            Load::Group {
                group,
                asker,
                also,
                now_ms,
            } => Loaded::Group(Box::new(self.group(group, asker, also.as_ref(), *now_ms))),
            Load::Directory { asker, ask } => {
                Loaded::Directory(Box::new(self.directory(asker, ask)))
            }
            Load::UserReach { user, asker } => {
                let mut devices: Vec<&EntityId> = self
                    .entities
                    .values()
                    .filter(|e| e.owner == *user)
                    .map(|e| &e.id)
                    .collect();
                devices.sort();
                let reach = devices
                    .into_iter()
                    .flat_map(|d| self.pns.keys().filter_map(move |pn| self.reach_in(d, *pn)))
                    .collect();
                Loaded::UserReach(crate::server::UserReachLoaded {
                    asker_owner: self.entities.get(asker).map(|e| e.owner.clone()),
                    reach,
                })
            }
            Load::Statuses {
                asker,
                named,
                whole_user,
                subscriptions,
            } => Loaded::Statuses(StatusesLoaded {
                statuses: std::iter::once(asker)
                    .chain(named)
                    .filter_map(|e| self.status_of(e))
                    .collect(),
                owner_statuses: owner_of_entity(asker)
                    .filter(|_| *whole_user)
                    .map(|owner| {
                        self.entities
                            .values()
                            .filter(|e| e.owner == owner)
                            .filter_map(|e| self.status_of(&e.id))
                            .collect()
                    })
                    .unwrap_or_default(),
                subscriptions: if *subscriptions {
                    self.subscriptions
                        .values()
                        .filter(|s| &s.subscriber == asker)
                        .count()
                } else {
                    0
                },
            }),
        })
    }

    pub(super) fn apply(&mut self, effect: ServerEffect) -> Result<Persisted, crate::StoreFailure> {
        if self.fail_server {
            return Err(crate::StoreFailure::Failed("disk full".into()));
        }
        let kind = match &effect {
            ServerEffect::EntityReport { .. } => "report",
            ServerEffect::RegisterPn { .. } => "register_pn",
            ServerEffect::ReconcilePns { .. } => "reconcile",
            ServerEffect::ConfirmPns { .. } => "confirm",
            ServerEffect::DropPendingPn { .. } => "drop_pending",
            ServerEffect::ReleasePn { .. } => "release",
            ServerEffect::UpdateMembers { .. } => "update_members",
            ServerEffect::RegisterPne { .. } => "register_pne",
            ServerEffect::RememberAnswer { .. } => "remember",
            ServerEffect::RecordStatuses { .. } => "record_statuses",
            ServerEffect::AddSubscription { .. } => "add_subscription",
            ServerEffect::RemoveSubscription { .. } => "remove_subscription",
            ServerEffect::StoreUsage { .. } => "store_usage",
            ServerEffect::SecureWindow { .. } => "secure_window",
            ServerEffect::PublishService { .. } => "publish_service",
            ServerEffect::UnpublishService { .. } => "unpublish_service",
            ServerEffect::AddWatch { .. } => "add_watch",
            ServerEffect::CreateGroup { .. } => "create_group",
            ServerEffect::ChangeGroup { .. } => "change_group",
            ServerEffect::InviteToGroup { .. } => "invite_to_group",
            ServerEffect::OpenDelivery { .. } => "open_delivery",
            ServerEffect::CloseDelivery { .. } => "close_delivery",
            ServerEffect::SetContents { .. } => "set_contents",
            ServerEffect::DropInvitation { .. } => "drop_invitation",
            ServerEffect::DeleteGroup { .. } => "delete_group",
            ServerEffect::RemoveWatch { .. } => "remove_watch",
        };
        *self.effects.entry(kind).or_default() += 1;
        match effect {
            ServerEffect::PublishService {
                offerer,
                owner,
                publish,
                now_ms: _,
            } => {
                let kept = self
                    .services
                    .iter()
                    .find(|(_, (o, _, p))| *o == offerer && p.service_id == publish.service_id)
                    .map(|(id, _)| *id);
                let dir_id =
                    kept.unwrap_or_else(|| self.services.keys().last().map_or(1, |l| l + 1));
                let watchers = self.watchers(&publish.keywords, &offerer);
                self.services.insert(dir_id, (offerer, owner, *publish));
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
                now_ms: _,
            } => {
                let g = SGroup {
                    name,
                    owner: owner.clone(),
                    creator: creator.clone(),
                    open_to_user,
                    epoch: 1,
                    key,
                    members: vec![(creator, owner, creator_pn)],
                };
                self.groups.insert(group, g);
                Ok(Persisted::Done)
            }
            ServerEffect::ChangeGroup {
                group,
                from_epoch,
                key,
                add,
                remove,
                now_ms: _,
            } => {
                let Some(g) = self
                    .groups
                    .get_mut(&group)
                    .filter(|g| g.epoch == from_epoch)
                else {
                    return Err(crate::StoreFailure::Conflict(format!(
                        "group {group} is not at epoch {from_epoch}"
                    )));
                };
                g.epoch += 1;
                g.key = key;
                g.members.retain(|(e, _, _)| !remove.contains(e));
                if let Some((e, o, pn)) = add {
                    self.group_invites.remove(&(group, e.clone()));
                    g.members.push((e, o, pn));
                }
                Ok(Persisted::Done)
            }
            ServerEffect::OpenDelivery {
                session,
                items,
                source,
                targets,
                pn_id,
                also,
                ..
            } => {
                let parts = std::iter::once(crate::server::OpenPart {
                    session,
                    pn_id,
                    targets,
                })
                .chain(also);
                let parts: Vec<_> = parts.collect();
                for p in &parts {
                    if self.deliveries.keys().any(|(s, _)| *s == p.session) {
                        let why = format!("{} is open", p.session);
                        return Err(crate::StoreFailure::Conflict(why));
                    }
                }
                for p in parts {
                    for (t, charged) in p.targets {
                        let row = SDelivery {
                            service_id: items[0].service_id.clone(),
                            source: source.clone(),
                            charged,
                            pn_id: p.pn_id,
                            size: items[0].size,
                            per_mb: items[0].per_mb,
                            ended: None,
                            items: items.clone(),
                            results: Vec::new(),
                        };
                        self.deliveries.insert((p.session, t), row);
                    }
                }
                Ok(Persisted::Done)
            }
            ServerEffect::SetContents { pne, contents } => {
                for inv in self.pns.values_mut() {
                    for m in inv.members.iter_mut().filter(|m| m.pne_id == pne) {
                        m.contents = contents.clone();
                    }
                }
                Ok(Persisted::Done)
            }
            ServerEffect::CloseDelivery {
                session,
                target,
                bytes,
                results,
                ..
            } => {
                let row = self
                    .deliveries
                    .get_mut(&(session, target))
                    .filter(|r| r.ended.is_none());
                let Some(r) = row else {
                    return Ok(Persisted::Removed(false));
                };
                let single_checked =
                    r.items.len() > 1 && results.len() == 1 && matches!(results[0], 1 | 3);
                if results.is_empty()
                    || single_checked
                    || (results.len() > 1 && results.len() != r.items.len())
                {
                    let why = format!("{} results for {} items", results.len(), r.items.len());
                    return Err(crate::StoreFailure::Conflict(why));
                }
                r.ended = Some((bytes, results[0]));
                r.results = results;
                Ok(Persisted::Removed(true))
            }
            ServerEffect::InviteToGroup {
                group,
                invitee,
                inviter,
                expires_at_ms,
            } => {
                if !self.groups.contains_key(&group) {
                    return Err(crate::StoreFailure::NotFound(group.to_string()));
                }
                self.group_invites
                    .insert((group, invitee), (inviter, expires_at_ms));
                Ok(Persisted::Done)
            }
            ServerEffect::DropInvitation { group, invitee } => Ok(Persisted::Removed(
                self.group_invites.remove(&(group, invitee)).is_some(),
            )),
            ServerEffect::DeleteGroup { group } => {
                self.group_invites.retain(|(g, _), _| *g != group);
                Ok(Persisted::Removed(self.groups.remove(&group).is_some()))
            }
            ServerEffect::AddWatch {
                watcher,
                owner,
                pn_id,
                keywords,
                all,
                service_type,
                now_ms: _,
            } => {
                let id = self.watches.keys().last().map_or(1, |l| l + 1);
                let w = Watch {
                    watcher,
                    owner,
                    pn_id,
                    keywords,
                    all,
                    service_type,
                };
                self.watches.insert(id, w);
                Ok(Persisted::Watch(id))
            }
            ServerEffect::RemoveWatch { watcher, watch_id } => {
                let mine = self
                    .watches
                    .get(&watch_id)
                    .is_some_and(|w| w.watcher == watcher);
                if mine {
                    self.watches.remove(&watch_id);
                }
                Ok(Persisted::Removed(mine))
            }
            ServerEffect::UnpublishService {
                offerer,
                service_id,
            } => {
                let before = self.services.len();
                self.services
                    .retain(|_, (o, _, p)| !(*o == offerer && p.service_id == service_id));
                Ok(Persisted::Removed(self.services.len() < before))
            }
            ServerEffect::SecureWindow { pn_id, pne, window } => {
                if !self.session_keys.contains_key(&(pn_id, pne.clone())) {
                    return Err(crate::StoreFailure::NotFound(pne.to_string()));
                }
                self.windows.insert((pn_id, pne), window);
                Ok(Persisted::Done)
            }
            ServerEffect::RecordStatuses { changes } => {
                if let Some(c) = changes
                    .iter()
                    .find(|c| !self.entities.contains_key(&c.entity))
                {
                    return Err(crate::StoreFailure::NotFound(c.entity.to_string()));
                }
                self.clock_ms += 1;
                let mut now = Vec::new();
                for c in changes {
                    let mut state = self.status_of(&c.entity).expect("enrolled");
                    state.status = c.status;
                    state.label = c.label;
                    state.since_ms = Some(self.clock_ms);
                    now.push(state.clone());
                    self.statuses.insert(c.entity, (state, c.reported_by));
                }
                Ok(Persisted::Recorded(now))
            }
            ServerEffect::AddSubscription {
                subscriber,
                owner,
                request_id,
                entities,
                policy,
            } => {
                let kept = self
                    .subscriptions
                    .iter()
                    .find(|(_, s)| s.subscriber == subscriber && s.request_id == request_id)
                    .map(|(id, _)| *id);
                let id = kept.unwrap_or_else(|| self.subscriptions.len() as u64 + 1);
                let kept = self
                    .subscriptions
                    .entry(id)
                    .or_insert(Subscription {
                        subscriber,
                        request_id,
                        entities,
                        policy,
                    })
                    .clone();
                let (watched, states) = if kept.entities.is_empty() {
                    let states = self
                        .entities
                        .values()
                        .filter(|e| e.owner == owner)
                        .filter_map(|e| self.status_of(&e.id))
                        .collect();
                    (crate::status::Watched::User(owner), states)
                } else {
                    let states = kept
                        .entities
                        .iter()
                        .filter_map(|e| self.status_of(e))
                        .collect();
                    (crate::status::Watched::Entities(kept.entities), states)
                };
                Ok(Persisted::Subscribed {
                    id,
                    watched,
                    policy: kept.policy,
                    states,
                })
            }
            ServerEffect::RemoveSubscription { subscriber, id } => {
                let mine = self
                    .subscriptions
                    .get(&id)
                    .is_some_and(|s| s.subscriber == subscriber);
                if mine {
                    self.subscriptions.remove(&id);
                }
                Ok(Persisted::Removed(mine))
            }
            ServerEffect::StoreUsage {
                entity,
                owner,
                pn_id,
                pn_owner,
                records,
            } => {
                let mut accepted = cpns_wire::UsageAccepted::default();
                for (record, units) in records {
                    let key = (entity.clone(), record.id);
                    if self.usage.contains_key(&key) {
                        accepted.duplicates += 1;
                        continue;
                    }
                    accepted.stored += 1;
                    accepted.charged += u32::from(units.is_some());
                    self.usage.insert(
                        key,
                        UsageKept {
                            record,
                            units,
                            owner: owner.clone(),
                            pn_id,
                            pn_owner: pn_owner.clone(),
                        },
                    );
                }
                Ok(Persisted::Usage(accepted))
            }
            ServerEffect::RememberAnswer {
                sender,
                request_id,
                answer,
            } => {
                self.answers
                    .insert((sender.to_string(), request_id.0), *answer);
                Ok(Persisted::Done)
            }
            ServerEffect::EntityReport {
                id,
                capabilities,
                status,
            } => {
                let r = self.reports.entry(id.clone()).or_default();
                r.0 = capabilities.map(|c| *c).or(r.0.take());
                r.1 = status.or(r.1);
                let (caps, status) = r.clone();
                // Its record as now: the status it reported, the attributes it carries.
                let mut state = self
                    .status_of(&id)
                    .ok_or_else(|| crate::StoreFailure::NotFound(id.to_string()))?;
                if let Some(s) = status {
                    state.status = s;
                }
                if let Some(c) = caps {
                    state.battery_pct = c.battery_pct;
                    state.battery_minutes = c.battery_minutes;
                    state.free_memory_mb = c.free_memory_mb;
                }
                Ok(Persisted::Recorded(vec![state]))
            }
            ServerEffect::RegisterPn {
                pn_id,
                gateway,
                members,
                group,
                lifetime_s,
                max_members,
                ..
            } => {
                if let Some(max) = max_members {
                    self.max_members.insert(pn_id, max);
                }
                if let Some(l) = lifetime_s {
                    self.lifetimes.insert(pn_id, l);
                }
                if let Some(g) = group {
                    self.epochs.insert(pn_id, (g.epoch, g.key));
                }
                let mut inv = PnInventory {
                    pn_id,
                    gateway: gateway.clone(),
                    members: Vec::new(),
                };
                let initiators = members
                    .iter()
                    .filter(|m| m.initiator)
                    .map(|m| m.pne_id.clone());
                self.initiators.insert(pn_id, initiators.collect());
                for m in members {
                    inv.members.push(InventoryMember {
                        pne_id: m.pne_id.clone(),
                        capabilities: Some(m.capabilities),
                        contents: m.contents,
                    });
                    self.member_owners
                        .insert((pn_id, m.pne_id.clone()), m.owner);
                    self.windows.remove(&(pn_id, m.pne_id.clone()));
                    self.session_keys.insert((pn_id, m.pne_id), m.session_key);
                }
                self.pns.insert(pn_id, inv);
                self.pn_gateway.insert(pn_id, gateway);
                self.pending.insert(pn_id);
                Ok(Persisted::Done)
            }
            ServerEffect::ReconcilePns {
                gateway,
                listed,
                drop_unlisted_pending,
            } => {
                let mut confirmed = Vec::new();
                let mut removed = Vec::new();
                let theirs: Vec<PnId> = self
                    .pn_gateway
                    .iter()
                    .filter(|(_, g)| **g == gateway)
                    .map(|(p, _)| *p)
                    .collect();
                for pn in theirs {
                    let pending = self.pending.contains(&pn);
                    if listed.contains(&pn) {
                        if self.pending.remove(&pn) {
                            confirmed.push(pn);
                        }
                    } else if !pending || drop_unlisted_pending {
                        self.drop_pn(pn);
                        removed.push(pn);
                    }
                }
                Ok(Persisted::Reconciled { confirmed, removed })
            }
            ServerEffect::ConfirmPns { gateway, pns } => {
                let mut confirmed = Vec::new();
                for pn in pns {
                    if self.pn_gateway.get(&pn) == Some(&gateway) && self.pending.remove(&pn) {
                        confirmed.push(pn);
                    }
                }
                Ok(Persisted::Reconciled {
                    confirmed,
                    removed: Vec::new(),
                })
            }
            ServerEffect::DropPendingPn { pn_id } => {
                if self.pending.contains(&pn_id) {
                    self.drop_pn(pn_id);
                }
                Ok(Persisted::Done)
            }
            ServerEffect::ReleasePn { gateway, pn_id } => {
                match self.pn_gateway.get(&pn_id) {
                    Some(g) if *g != gateway => {
                        return Err(crate::StoreFailure::Conflict("another PN GW's PN".into()));
                    }
                    Some(_) => self.drop_pn(pn_id),
                    None => {}
                }
                Ok(Persisted::Done)
            }
            ServerEffect::UpdateMembers {
                pn_id,
                add,
                remove,
                group,
            } => {
                let pn = self
                    .pns
                    .get_mut(&pn_id)
                    .ok_or_else(|| crate::StoreFailure::NotFound("no such PN".into()))?;
                if let Some(g) = group {
                    self.epochs.insert(pn_id, (g.epoch, g.key));
                }
                for pne in &remove {
                    if let Some(sk) = self.session_keys.get(&(pn_id, pne.clone())) {
                        self.departed.insert(
                            (pn_id, pne.clone()),
                            (sk.clone(), cpns_wire::EndReason::Removed),
                        );
                    }
                }
                self.session_keys
                    .retain(|(p, pne), _| *p != pn_id || !remove.contains(pne));
                pn.members.retain(|m| {
                    !remove.contains(&m.pne_id) && !add.iter().any(|a| a.pne_id == m.pne_id)
                });
                pn.members.extend(add.into_iter().map(|a| InventoryMember {
                    pne_id: a.pne_id,
                    capabilities: a.capabilities,
                    contents: Vec::new(),
                }));
                Ok(Persisted::Done)
            }
            ServerEffect::RegisterPne {
                pn_id,
                pne_id,
                capabilities,
                session_key,
                group,
            } => {
                let capabilities = capabilities.map(|c| *c);
                self.departed.remove(&(pn_id, pne_id.clone()));
                if let Some(g) = group {
                    self.epochs.insert(pn_id, (g.epoch, g.key));
                }
                let pn = self
                    .pns
                    .get_mut(&pn_id)
                    .ok_or_else(|| crate::StoreFailure::NotFound("no such PN".into()))?;
                match pn.members.iter_mut().find(|m| m.pne_id == pne_id) {
                    Some(m) => m.capabilities = capabilities.or(m.capabilities.take()),
                    None => pn.members.push(InventoryMember {
                        pne_id: pne_id.clone(),
                        capabilities,
                        contents: Vec::new(),
                    }),
                }
                self.next_cpns += 1;
                let cpns = CpnsId::new(format!("cpns-{:06}", self.next_cpns)).unwrap();
                self.cpns_ids.insert(pne_id.clone(), cpns.clone());
                self.windows.remove(&(pn_id, pne_id.clone()));
                self.session_keys.insert((pn_id, pne_id), session_key);
                Ok(Persisted::CpnsId(cpns))
            }
        }
    }
}

/// How one PNE of the harness is set up.
#[derive(Clone, Copy, Debug)]
pub(super) struct PneSpec {
    pub security: PanSecurity,
    pub has_ui: bool,
    pub invitations: InvitationPolicy,
    /// How it answers deliveries offered to it.
    pub deliveries: InvitationPolicy,
    /// The PNE holds another EUKey than the server's record of it.
    pub wrong_key: bool,
    /// Not a PNE at all: an attacker on the PAN claiming to be PNE `i`, without its EUKey.
    pub impersonates: Option<usize>,
}

impl PneSpec {
    pub fn cpns() -> Self {
        Self {
            security: PanSecurity::Cpns,
            has_ui: true,
            invitations: InvitationPolicy::Accept,
            deliveries: InvitationPolicy::Accept,
            wrong_key: false,
            impersonates: None,
        }
    }
    pub fn trusted() -> Self {
        Self {
            security: PanSecurity::Trusted,
            ..Self::cpns()
        }
    }
    pub fn declining(self) -> Self {
        Self {
            invitations: InvitationPolicy::Decline,
            ..self
        }
    }
    /// Holds invitations for its application, which has `within` to answer.
    pub fn asking(self, within: std::time::Duration) -> Self {
        Self {
            invitations: InvitationPolicy::Ask { within },
            ..self
        }
    }
    pub fn no_ui(self) -> Self {
        Self {
            has_ui: false,
            ..self
        }
    }
    pub fn impersonating(self, i: usize) -> Self {
        Self {
            impersonates: Some(i),
            ..self
        }
    }
    pub fn wrong_key(self) -> Self {
        Self {
            wrong_key: true,
            ..self
        }
    }
}

/// A PNE's FinishReceive held by the test: the PNE, the session, each item's hash offered.
pub type HeldFinish = (usize, cpns_wire::DeliveryId, Vec<[u8; 32]>);

/// A delivery record as the double keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SDelivery {
    pub service_id: String,
    pub source: EntityId,
    pub charged: cpns_wire::UserId,
    /// The PN recorded: the targets'.
    pub pn_id: cpns_wire::PnId,
    pub size: u64,
    /// The tariff the session was set up at.
    pub per_mb: Option<u64>,
    /// Once ended: the bytes received and the (first item's) result's code.
    pub ended: Option<(u64, u32)>,
    /// Every item of the session, as opened (the first is the fields above).
    pub items: Vec<crate::server::RecordItem>,
    /// Once ended: each item's result code (one: every item's).
    pub results: Vec<u32>,
}
