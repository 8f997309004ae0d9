//! What tests ask the harness: events per party, delivered envelopes, traces per link, and
//! whether the server, the PN GW and the PNEs agree on a PN.

use std::collections::BTreeMap;

use cpns_wire::{CpnsId, EntityId, Envelope, PnId, PnInventory};

use super::harness::{Ev, Flight, Harness, Party, pne_id};
use crate::CommandId;
use crate::gateway::GatewayEvent;
use crate::pne::{Outcome, PneEvent};
use crate::server::ServerEvent;
use crate::{LocalPnState, TraceRecord};

/// A copy of every inventory, to assert that a refused flow changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    server: BTreeMap<PnId, PnInventory>,
    cpns_ids: BTreeMap<EntityId, CpnsId>,
    reports: usize,
    gw_local: BTreeMap<PnId, LocalPnState>,
    pne_local: Vec<BTreeMap<PnId, LocalPnState>>,
    gw_mem: Vec<PnInventory>,
    pne_mem: Vec<Vec<PnInventory>>,
}

impl Snapshot {
    /// The same snapshot without the CPNS IDs and the PNEs' own keys (a registration allocates
    /// a CPNS ID and gives the PNE a new SK_PNE for its PN, and changes nothing else).
    pub fn without_cpns_ids(mut self) -> Self {
        self.cpns_ids.clear();
        for local in &mut self.pne_local {
            for pn in local.values_mut() {
                pn.own = None;
            }
        }
        self
    }
}

impl Harness {
    // ---- queries ----

    pub fn server_events(&self) -> Vec<&ServerEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Ev::Server(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    pub fn gw_events(&self) -> Vec<&GatewayEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Ev::Gw(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The parts of delivery `session` that ended otherwise than delivered, as PNE `i` (the
    /// source, or a target) was told: each target with its result.
    pub fn delivery_ends(
        &self,
        i: usize,
        session: cpns_wire::DeliveryId,
    ) -> Vec<(EntityId, cpns_wire::DeliveryResult)> {
        self.pne_events(i)
            .into_iter()
            .filter_map(|e| match e {
                PneEvent::DeliveryEnded {
                    session: s,
                    target,
                    result,
                    ..
                } if *s == session => Some((target.clone(), *result)),
                _ => None,
            })
            .collect()
    }

    /// Who has delivery `session`, as its source PNE `i` was told once every target's part
    /// ended; `None` before.
    pub fn delivery_sent(&self, i: usize, session: cpns_wire::DeliveryId) -> Option<Vec<EntityId>> {
        self.pne_events(i).into_iter().find_map(|e| match e {
            PneEvent::DeliverySent {
                session: s,
                delivered,
            } if *s == session => Some(delivered.clone()),
            _ => None,
        })
    }

    pub fn pne_events(&self, i: usize) -> Vec<&PneEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Ev::Pne(j, e) if *j == i => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The inventory of the PN PNE `i` joined, if it joined one.
    pub fn joined(&self, i: usize) -> Option<PnInventory> {
        self.pne_events(i).into_iter().find_map(|e| match e {
            PneEvent::PnJoined { inventory, .. }
            | PneEvent::Completed(crate::Completed {
                result: Ok(Outcome::PnJoined { inventory, .. }),
                ..
            }) => Some(inventory.clone()),
            _ => None,
        })
    }

    /// The reasons of PNE `i`'s failed flows, its commands' and its own.
    pub fn pne_failures(&self, i: usize) -> Vec<crate::Failure> {
        self.pne_events(i)
            .into_iter()
            .filter_map(|e| match e {
                PneEvent::FlowFailed { reason, .. }
                | PneEvent::PnRefused { reason, .. }
                | PneEvent::Completed(crate::Completed {
                    result: Err(reason),
                    ..
                }) => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every flow of PNE `i` that failed, its commands' (their completions) and its own, as
    /// [`PneEvent::FlowFailed`], in order.
    pub fn pne_failed_flows(&self, i: usize) -> Vec<PneEvent> {
        self.pne_events(i)
            .into_iter()
            .filter_map(|e| match e {
                PneEvent::FlowFailed { .. } => Some(e.clone()),
                PneEvent::Completed(crate::Completed {
                    flow,
                    result: Err(reason),
                    ..
                }) => Some(PneEvent::FlowFailed {
                    flow: *flow,
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Why PNE `i` refused the PN its last event is about: an invitee's
    /// [`PneEvent::PnRefused`], or the initiator's set-up that completed with the refusal.
    pub fn refused_pn(&self, i: usize) -> Option<&crate::Failure> {
        match self.pne_events(i).last()? {
            PneEvent::PnRefused { reason, .. }
            | PneEvent::Completed(crate::Completed {
                flow: crate::Flow::PnEstablishment,
                result: Err(reason),
                ..
            }) => Some(reason),
            _ => None,
        }
    }

    /// The completion of the PN GW's command `id` (of its machine since the latest restart):
    /// `None` while it runs. Panics if it completed twice.
    pub fn gw_completion(
        &self,
        id: CommandId,
    ) -> Option<&crate::Completed<crate::gateway::Outcome>> {
        let ends: Vec<_> = self.events[self.restarted_at..]
            .iter()
            .filter_map(|e| match e {
                Ev::Gw(GatewayEvent::Completed(c)) if c.id == id => Some(c),
                _ => None,
            })
            .collect();
        assert!(
            ends.len() <= 1,
            "PN GW command {id} completed twice: {ends:?}"
        );
        ends.into_iter().next()
    }

    /// The completions of the PN GW's commands, in order.
    pub fn gw_completions(&self) -> Vec<&crate::Completed<crate::gateway::Outcome>> {
        self.gw_events()
            .into_iter()
            .filter_map(|e| match e {
                GatewayEvent::Completed(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The outcome of the PN GW's command `id`, which must have succeeded.
    pub fn gw_outcome(&self, id: CommandId) -> &crate::gateway::Outcome {
        match self.gw_completion(id) {
            Some(crate::Completed { result: Ok(o), .. }) => o,
            other => panic!("PN GW command {id}: {other:?}"),
        }
    }

    /// The failure of the PN GW's command `id`, which must have failed.
    pub fn gw_failure(&self, id: CommandId) -> &crate::Failure {
        match self.gw_completion(id) {
            Some(crate::Completed { result: Err(f), .. }) => f,
            other => panic!("PN GW command {id}: {other:?}"),
        }
    }

    /// The outcomes of PNE `i`'s commands that succeeded, in order.
    pub fn pne_outcomes(&self, i: usize) -> Vec<&Outcome> {
        self.pne_events(i)
            .into_iter()
            .filter_map(|e| match e {
                PneEvent::Completed(crate::Completed { result: Ok(o), .. }) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// The completion of PNE `i`'s command `id` (of its machine since the latest restart):
    /// `None` while it runs. Panics if it completed twice.
    pub fn completion(&self, i: usize, id: CommandId) -> Option<&crate::Completed<Outcome>> {
        let ends: Vec<_> = self.events[self.restarted_at..]
            .iter()
            .filter_map(|e| match e {
                Ev::Pne(j, PneEvent::Completed(c)) if *j == i && c.id == id => Some(c),
                _ => None,
            })
            .collect();
        assert!(
            ends.len() <= 1,
            "command {id} of PNE {i} completed twice: {ends:?}"
        );
        ends.into_iter().next()
    }

    /// The outcome of PNE `i`'s command `id`, which must have succeeded.
    pub fn outcome(&self, i: usize, id: CommandId) -> &Outcome {
        match self.completion(i, id) {
            Some(crate::Completed { result: Ok(o), .. }) => o,
            other => panic!("command {id} of PNE {i}: {other:?}"),
        }
    }

    /// Whether a flow of PNE `i` failed because its peer answered with an error of `code`.
    pub fn pne_refused(&self, i: usize, code: cpns_wire::ErrorCode) -> bool {
        self.pne_failures(i)
            .iter()
            .any(|f| matches!(f, crate::Failure::Refused(e) if e.code == code))
    }

    /// PNE `i` holds a LocalEUKey of `pn`, authenticated the PN GW with it, and every PAN frame
    /// after its confirmation is sealed, on the trace and on the wire.
    pub fn assert_sealed_member(&self, pn: PnId, i: usize) {
        assert!(self.pnes[i].link_sealed(), "pne {i} link not sealed");
        let t = self.pan_traces(i);
        let confirm = t
            .iter()
            .position(|r| r.message == "PanAuthConfirm")
            .expect("PN GW authentication ran");
        assert!(
            !t[confirm].sealed,
            "the confirmation itself travels before the switch"
        );
        assert!(t.len() > confirm + 1, "something travelled after PAN auth");
        assert!(
            t[confirm + 1..].iter().all(|r| r.sealed),
            "plain after PAN auth: {t:?}"
        );
        // On the wire too: every frame of the link after the confirmation has the sealed kind.
        let link: Vec<_> = self
            .log
            .iter()
            .filter(|f| f.from == Party::Pne(i) || f.to == Party::Pne(i))
            .collect();
        let at = link
            .iter()
            .position(|f| f.message == "PanAuthConfirm")
            .unwrap();
        assert!(
            link[at + 1..]
                .iter()
                .all(|f| f.body[0] == 1 && f.env().is_none())
        );
        let own = &self.store.pne_local[i][&pn].wrapped_keys;
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].0, pne_id(i));
        assert!(
            self.store.gw_local[&pn]
                .wrapped_keys
                .iter()
                .any(|(p, _)| *p == pne_id(i))
        );
        let offered: Vec<u8> = self.pne_cfgs[i].suites.iter().map(|s| s.code()).collect();
        let suite = cpns_crypto::Suite::choose(&offered, &self.gw_cfg.suites).unwrap();
        // Both ends tell the suite the link took.
        assert!(
            self.pne_events(i)
                .contains(&&PneEvent::PanAuthenticated { pn_id: pn, suite })
        );
        assert!(self.gw_events().contains(&&GatewayEvent::PanAuthenticated {
            pne: pne_id(i),
            pn_id: pn,
            suite,
        }));
    }

    /// Envelopes delivered from `from` to `to` (plain frames only).
    pub fn delivered(&self, from: Party, to: Party) -> Vec<Envelope> {
        self.log
            .iter()
            .filter(|f| f.from == from && f.to == to)
            .filter_map(Flight::env)
            .collect()
    }

    /// Message names that travelled between the PN GW and the server, in order.
    pub fn wan_messages(&self) -> Vec<&'static str> {
        self.traces
            .iter()
            .filter(|(a, b, _)| {
                matches!(
                    (a, b),
                    (Party::Gw, Party::Server) | (Party::Server, Party::Gw)
                )
            })
            .map(|(_, _, t)| t.message)
            .collect()
    }

    /// Trace records of PAN link `i`, both directions, in order.
    pub fn pan_traces(&self, i: usize) -> Vec<&TraceRecord> {
        self.traces
            .iter()
            .filter(|(a, b, _)| *a == Party::Pne(i) || *b == Party::Pne(i))
            .map(|(_, _, t)| t)
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            server: self.store.pns.clone(),
            cpns_ids: self.store.cpns_ids.clone(),
            reports: self.store.reports.len(),
            gw_local: self.store.gw_local.clone(),
            pne_local: self.store.pne_local.clone(),
            gw_mem: self.gw.inventory().into_iter().cloned().collect(),
            pne_mem: self
                .pnes
                .iter()
                .map(|p| p.inventory().into_iter().cloned().collect())
                .collect(),
        }
    }

    /// The server's record, the PN GW's local inventory (in memory and stored) and every PNE
    /// holding the PN (in memory and stored) agree on it.
    pub fn assert_agree(&self, pn: PnId) -> PnInventory {
        let record = self
            .store
            .pns
            .get(&pn)
            .expect("the server registered the PN")
            .clone();
        assert_eq!(self.store.pn_gateway.get(&pn), Some(&self.gw_cfg.id));
        let gw_mem = self.gw.inventory().into_iter().find(|i| i.pn_id == pn);
        assert_eq!(gw_mem, Some(&record), "PN GW in memory");
        assert_eq!(
            self.store.gw_local.get(&pn).map(|s| &s.inventory),
            Some(&record),
            "PN GW stored"
        );
        for (i, p) in self.pnes.iter().enumerate() {
            let mem = p.inventory().into_iter().find(|x| x.pn_id == pn);
            let stored = self.store.pne_local[i].get(&pn).map(|s| &s.inventory);
            assert_eq!(mem, stored, "pne {i}: memory and store differ");
            if let Some(inv) = mem {
                assert_eq!(inv, &record, "pne {i} holds another inventory");
            }
        }
        record
    }

    /// Member ids of a PN in the server's record.
    /// The server's answer to its message `msg`, still in flight to the PN GW.
    pub fn server_answer(&self, msg: u64) -> cpns_wire::Body {
        self.queue
            .iter()
            .filter(|f| f.from == Party::Server)
            .filter_map(|f| f.env())
            .find(|e| e.in_reply_to == Some(msg))
            .map(|e| e.body)
            .expect("the server answered")
    }

    /// The members of `pn` in the server's store, if it holds the PN.
    pub fn members_or_none(&self, pn: PnId) -> Option<Vec<EntityId>> {
        self.store.pns.contains_key(&pn).then(|| self.members(pn))
    }

    pub fn members(&self, pn: PnId) -> Vec<EntityId> {
        self.store.pns.get(&pn).map_or(Vec::new(), |inv| {
            inv.members.iter().map(|m| m.pne_id.clone()).collect()
        })
    }
}
