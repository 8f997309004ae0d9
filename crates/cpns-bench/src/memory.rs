//! The ceiling of `cpns-bench establish`: the same establishment the networked bench runs (two
//! PNEs, LocalEUKey, PNE-initiated), driven entirely in memory through the machines — PNEs, PN GW
//! and a CPNS Server session — with a map for a store, on one thread. No TLS, no socket, no SQL,
//! no sealing at rest: what is left is the protocol's own cost, the most a server could do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cpns_crypto::MachineRng;
use cpns_proto::StoreFailure;
use cpns_proto::link::frame_body_mut;
use cpns_proto::server::{
    EntityRole, KnownEntity, KnownPn, Load, Loaded, Persisted, PnLoaded, ServerConfig,
    ServerEffect, ServerOutput, ServerSession, SessionLoaded, StatusesLoaded,
};
use cpns_wire::{CpnsId, EntityId, Envelope, InventoryMember, PnId, PnInventory, UserId};

use crate::sim::{Household, Outcome, SimGateway};
use crate::stats::{Latencies, Rate};

/// What the server keeps, in maps: only what the establishment reads and writes.
#[derive(Default)]
pub struct MemoryStore {
    entities: BTreeMap<EntityId, KnownEntity>,
    pns: BTreeMap<PnId, KnownPn>,
    pending: BTreeSet<PnId>,
    answers: BTreeMap<(String, u64), Envelope>,
    cpns_ids: u64,
    /// Members of each PN GW's PNs (what `served_by` reads, as the SQLite store's index does).
    served: BTreeMap<EntityId, BTreeSet<EntityId>>,
    /// Statuses reported.
    statuses: BTreeMap<EntityId, cpns_wire::Status>,
}

impl MemoryStore {
    /// A store with `households` enrolled for `owner`.
    pub fn enrolled(owner: &UserId, households: &[Household]) -> Self {
        let mut s = Self::default();
        for h in households {
            let all = [(&h.gateway, EntityRole::Gateway)]
                .into_iter()
                .chain(h.pnes.iter().map(|p| (p, EntityRole::Pne)));
            for (dev, role) in all {
                s.entities.insert(
                    dev.id.clone(),
                    KnownEntity {
                        id: dev.id.clone(),
                        role,
                        owner: owner.clone(),
                        eukey: dev.eukey.clone(),
                    },
                );
            }
        }
        s
    }

    /// How many PNs are registered.
    pub fn pn_count(&self) -> usize {
        self.pns.len()
    }

    /// Answers what the establishment reads; every other load reads as empty, as a store
    /// holding nothing of it would.
    fn load(&self, load: &Load) -> Result<Loaded, StoreFailure> {
        Ok(match load {
            Load::Gateway { id } => Loaded::Gateway(self.entities.get(id).cloned()),
            Load::Pn {
                pn,
                replay,
                entities,
                ..
            } => Loaded::Pn(Box::new(PnLoaded {
                pn: self.pns.get(pn).cloned(),
                replay: replay
                    .as_ref()
                    .and_then(|(s, id)| self.answers.get(&(s.to_string(), id.0)).cloned()),
                entities: entities
                    .iter()
                    .filter_map(|e| self.entities.get(e).cloned())
                    .collect(),
                member_keys: Vec::new(),
            })),
            // Presence reports: which PNEs are members of the PN GW's PNs.
            Load::Served {
                gateway,
                candidates,
            } => {
                let members = self.served.get(gateway);
                Loaded::Served(
                    candidates
                        .iter()
                        .filter(|c| members.is_some_and(|m| m.contains(*c)))
                        .cloned()
                        .collect(),
                )
            }
            Load::Session { .. } => Loaded::Session(SessionLoaded::default()),
            Load::Statuses { .. } => Loaded::Statuses(StatusesLoaded::default()),
            other => {
                return Err(StoreFailure::Failed(format!(
                    "the bench store reads no {} load",
                    other.name()
                )));
            }
        })
    }

    fn apply(&mut self, effect: ServerEffect) -> Result<Persisted, StoreFailure> {
        match effect {
            ServerEffect::RegisterPn {
                pn_id,
                gateway,
                owner,
                members,
                ..
            } => {
                let members = members
                    .into_iter()
                    .map(|m| InventoryMember {
                        pne_id: m.pne_id,
                        capabilities: Some(m.capabilities),
                        contents: m.contents,
                    })
                    .collect();
                let inventory = PnInventory {
                    pn_id,
                    gateway: gateway.clone(),
                    members,
                };
                self.served
                    .entry(gateway.clone())
                    .or_default()
                    .extend(inventory.members.iter().map(|m| m.pne_id.clone()));
                self.pns.insert(
                    pn_id,
                    KnownPn {
                        max_members: None,
                        expired: false,
                        gateway,
                        owner,
                        inventory,
                        epoch: 0,
                    },
                );
                self.pending.insert(pn_id);
                Ok(Persisted::Done)
            }
            ServerEffect::ReconcilePns { listed, .. } => {
                let confirmed = listed
                    .into_iter()
                    .filter(|p| self.pending.remove(p))
                    .collect();
                Ok(Persisted::Reconciled {
                    confirmed,
                    removed: Vec::new(),
                })
            }
            ServerEffect::ConfirmPns { pns, .. } => {
                let confirmed = pns.into_iter().filter(|p| self.pending.remove(p)).collect();
                Ok(Persisted::Reconciled {
                    confirmed,
                    removed: Vec::new(),
                })
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
            ServerEffect::RegisterPne { .. } => {
                self.cpns_ids += 1;
                CpnsId::new(format!("cpns-{:06}", self.cpns_ids))
                    .map(Persisted::CpnsId)
                    .map_err(|e| StoreFailure::Failed(e.to_string()))
            }
            ServerEffect::DropPendingPn { pn_id } => {
                if self.pending.remove(&pn_id) {
                    self.pns.remove(&pn_id);
                }
                Ok(Persisted::Done)
            }
            ServerEffect::ReleasePn { pn_id, .. } => {
                self.pending.remove(&pn_id);
                self.pns.remove(&pn_id);
                Ok(Persisted::Done)
            }
            ServerEffect::RecordStatuses { changes } => {
                for c in changes {
                    self.statuses.insert(c.entity, c.status);
                }
                Ok(Persisted::Done)
            }
            _ => Ok(Persisted::Done),
        }
    }
}

/// One PN GW's session with the server, both ends in memory.
pub(crate) struct Pair {
    pub(crate) sim: SimGateway,
    pub(crate) server: ServerSession,
}

impl Pair {
    /// Moves frames both ways, answering the server's loads and persists from `store` at once,
    /// until both ends are quiet.
    pub(crate) fn pump(&mut self, now: Instant, store: &mut MemoryStore) {
        loop {
            let up = self.sim.take_wan();
            let mut moved = !up.is_empty();
            for mut frame in up {
                if let Some(body) = frame_body_mut(&mut frame) {
                    let _ = self.server.handle_frame(now, body);
                }
            }
            let mut down = Vec::new();
            while let Some(out) = self.server.poll_output() {
                moved = true;
                match out {
                    ServerOutput::Transmit { frame, .. } => down.push(frame),
                    ServerOutput::Load { token, load } => {
                        let loaded = store.load(&load);
                        let _ = self.server.handle_loaded(now, token, loaded);
                    }
                    ServerOutput::Persist { token, effect } => {
                        let done = store.apply(effect);
                        let _ = self.server.handle_persisted(now, token, done);
                    }
                    // Every household is one user's: no PNE of another user asks its home
                    // PN GW (001 §5.2.1.1).
                    ServerOutput::AskGateway { ask, .. } => {
                        let e = cpns_wire::ErrorBody::new(
                            cpns_wire::ErrorCode::Timeout,
                            "no other PN GW in the ceiling run",
                        );
                        self.server.handle_gateway_answer(ask, Err(e));
                    }
                    // No status hub in the ceiling run: nobody subscribes, nobody watches;
                    // nothing is delivered from outside.
                    ServerOutput::Event(_)
                    | ServerOutput::DeliveryStarted { .. }
                    | ServerOutput::ReadContent { .. }
                    | ServerOutput::Notice { .. }
                    | ServerOutput::Forward { .. }
                    | ServerOutput::Relay { .. }
                    | ServerOutput::Publish(_)
                    | ServerOutput::Close { .. }
                    | ServerOutput::GatewayAnswer { .. }
                    | ServerOutput::CapabilitiesAnswered { .. } => {}
                }
            }
            for mut frame in down {
                if let Some(body) = frame_body_mut(&mut frame) {
                    let _ = self.sim.handle_wan_frame(now, body);
                }
            }
            if !moved {
                return;
            }
        }
    }
}

/// The ceiling: establishments one after another for `duration` on this thread, over the
/// households in turn, each PN GW connected once beforehand. Fails if one does not end in a
/// PN (the machines disagree: a bug, not a figure).
pub fn establishment_ceiling(
    owner: &UserId,
    households: &[Household],
    duration: Duration,
    seed: u64,
) -> anyhow::Result<(Rate, usize)> {
    anyhow::ensure!(!households.is_empty(), "no household to run");
    let mut rng = MachineRng::from_seed_u64(seed);
    let mut store = MemoryStore::enrolled(owner, households);
    let mut pairs = Vec::with_capacity(households.len());
    for h in households {
        let now = Instant::now();
        let exporter: [u8; 32] = rng.array();
        let mut pair = Pair {
            sim: SimGateway::new(h.clone(), rng.fork()),
            server: ServerSession::new(ServerConfig::default(), exporter, now, rng.fork()),
        };
        pair.sim.wan_connected(now, exporter)?;
        pair.pump(now, &mut store);
        anyhow::ensure!(
            pair.sim.ready(),
            "PN GW {} did not connect in memory: {}",
            h.gateway.id,
            pair.sim.failure().unwrap_or("no answer")
        );
        pairs.push(pair);
    }
    let mut lat = Latencies::default();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < duration {
        let pair = &mut pairs[i % households.len()];
        i += 1;
        let t0 = Instant::now();
        pair.sim.start_establishment(t0)?;
        pair.pump(t0, &mut store);
        match pair.sim.outcome() {
            Some(Outcome::Established(_)) => lat.record(t0.elapsed()),
            Some(other) => anyhow::bail!("an in-memory establishment {other}"),
            None => anyhow::bail!("an in-memory establishment did not end"),
        }
    }
    let wall = start.elapsed();
    Ok((Rate::new(lat, wall, None), store.pn_count()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use cpns_crypto::EuKey;

    use super::*;
    use crate::sim::Device;

    pub(crate) fn households(n: usize, rng: &mut MachineRng) -> Vec<Household> {
        let dev = |id: String, rng: &mut MachineRng| Device {
            id: EntityId::new(id).unwrap(),
            eukey: EuKey::random(rng.get()),
        };
        (0..n)
            .map(|i| Household {
                gateway: dev(format!("bench-gw-{i}"), rng),
                pnes: [
                    dev(format!("bench-gw-{i}-pne-a"), rng),
                    dev(format!("bench-gw-{i}-pne-b"), rng),
                ],
            })
            .collect()
    }

    #[test]
    fn every_establishment_of_the_ceiling_registers_one_pn() {
        let mut rng = MachineRng::from_seed_u64(7);
        let hs = households(3, &mut rng);
        let owner = UserId::new("bench").unwrap();
        let (rate, pns) =
            establishment_ceiling(&owner, &hs, Duration::from_millis(100), 1).unwrap();
        assert!(rate.ops >= 3, "only {} establishments", rate.ops);
        assert_eq!(pns as u64, rate.ops, "one PN per establishment");
        assert!(rate.p50_us > 0);
    }

    #[test]
    fn a_gateway_holding_another_eukey_than_the_server_does_not_connect() {
        let mut rng = MachineRng::from_seed_u64(7);
        let hs = households(1, &mut rng);
        let owner = UserId::new("bench").unwrap();
        let mut server_view = hs.clone();
        server_view[0].gateway.eukey = EuKey::random(rng.get());
        let mut store = MemoryStore::enrolled(&owner, &server_view);
        let now = Instant::now();
        let mut pair = Pair {
            sim: SimGateway::new(hs[0].clone(), rng.fork()),
            server: ServerSession::new(ServerConfig::default(), [1; 32], now, rng.fork()),
        };
        pair.sim.wan_connected(now, [1; 32]).unwrap();
        pair.pump(now, &mut store);
        assert!(!pair.sim.ready());
        assert!(pair.sim.failure().is_some(), "the refusal is reported");
        assert!(establishment_ceiling(&owner, &[], Duration::from_millis(10), 1).is_err());
    }
}
