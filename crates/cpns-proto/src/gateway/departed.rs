//! Members whose membership ended while they were away (docs/security.md §4.4, "A member that
//! was away"). The PN GW relays nothing in a PNE's name from a link that has not proved that
//! PNE, and a PNE proves itself with a LocalEUKey the PN GW holds for it. A member expelled, or
//! whose PN was released, while no proven link of its was up would then have no key left to
//! prove itself with, and could never hear the server's sealed word that its membership ended
//! (`MembershipEnded`, the answer to its PN Key Request). So the PN GW keeps such a member's
//! copy, wrapped as received, until the word was relayed to it, it is a member of the PN again,
//! or more than [`MAX_DEPARTED`] are kept (the oldest goes). A key kept here proves the PNE's
//! identity and nothing more: it is a member of nothing through it.

use std::collections::BTreeMap;

use cpns_crypto::LocalEuKey;
use cpns_wire::{EntityId, PnId};

use super::{Gateway, GatewayEvent, GatewayOutput, Parked};
use crate::ProtoError;

/// The most departed members' keys a PN GW keeps.
pub const MAX_DEPARTED: usize = 1024;

/// One departed member's key.
struct Kept {
    key: LocalEuKey,
    /// In the order kept: the lowest goes first.
    order: u64,
}

/// The departed members' keys, by (PN, PNE).
#[derive(Default)]
pub(super) struct Departed {
    keys: BTreeMap<(PnId, EntityId), Kept>,
    next: u64,
}

impl core::fmt::Debug for Departed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Departed")
            .field("kept", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Departed {
    /// The key of (`pn_id`, `pne`), if kept.
    pub(super) fn key(&self, pn_id: &PnId, pne: &EntityId) -> Option<&LocalEuKey> {
        self.keys.get(&(*pn_id, pne.clone())).map(|k| &k.key)
    }

    /// How many are kept.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    fn insert(&mut self, pn_id: PnId, pne: EntityId, key: LocalEuKey) {
        let order = self.next;
        self.next += 1;
        self.keys.insert((pn_id, pne), Kept { key, order });
    }

    /// The oldest kept, while more than the most are.
    fn over(&self) -> Option<(PnId, EntityId)> {
        (self.keys.len() > MAX_DEPARTED)
            .then(|| self.keys.iter().min_by_key(|(_, k)| k.order))
            .flatten()
            .map(|(at, _)| at.clone())
    }
}

impl Gateway {
    /// Reloads the departed members' keys kept in the store (a restart), oldest first. A copy
    /// that does not unwrap under this PN GW's EUKey for its PN and PNE is refused.
    pub fn restore_departed(
        &mut self,
        kept: Vec<(PnId, EntityId, Vec<u8>)>,
    ) -> Result<(), ProtoError> {
        for (pn_id, pne, stored) in kept {
            let key = self.unwrap_stored(&pn_id, &pne, &stored)?;
            self.departed.insert(pn_id, pne, key);
        }
        Ok(())
    }

    /// How many departed members' keys are kept (at most [`MAX_DEPARTED`]).
    pub fn departed_count(&self) -> usize {
        self.departed.len()
    }

    /// `pne`'s membership of `pn_id` ended and no proven link of its was told: keep its key
    /// (the one `keys` held, in its stored form `stored`).
    pub(super) fn keep_departed(
        &mut self,
        pn_id: PnId,
        pne: EntityId,
        key: LocalEuKey,
        stored: Vec<u8>,
    ) {
        self.departed.insert(pn_id, pne.clone(), key);
        let token = self.tokens.next();
        self.parked
            .insert(token, Parked::Departed(pn_id, pne.clone()));
        self.out.push_back(GatewayOutput::KeepDeparted {
            token,
            pn_id,
            pne,
            stored,
        });
        while let Some((pn_id, pne)) = self.departed.over() {
            self.drop_departed(pn_id, &pne);
        }
    }

    /// The departed key of (`pn_id`, `pne`) is no longer needed: the PNE heard the server's
    /// word, or is a member again.
    pub(super) fn drop_departed(&mut self, pn_id: PnId, pne: &EntityId) {
        if self.departed.keys.remove(&(pn_id, pne.clone())).is_none() {
            return;
        }
        let token = self.tokens.next();
        self.parked
            .insert(token, Parked::Departed(pn_id, pne.clone()));
        self.out.push_back(GatewayOutput::DropDeparted {
            token,
            pn_id,
            pne: pne.clone(),
        });
    }

    /// A write of a departed key ended; a failure is told (the key is kept in memory until
    /// the PN GW restarts).
    pub(super) fn departed_stored(
        &mut self,
        pn_id: PnId,
        pne: EntityId,
        result: Result<(), crate::StoreFailure>,
    ) {
        if let Err(reason) = result {
            self.event(GatewayEvent::DepartedKeyNotStored { pn_id, pne, reason });
        }
    }
}

impl Gateway {
    /// Unwraps this PN GW's copy of (`pn_id`, `pne`)'s LocalEUKey in its stored form
    /// (docs/security.md §4.2).
    pub(super) fn unwrap_stored(
        &self,
        pn_id: &PnId,
        pne: &EntityId,
        stored: &[u8],
    ) -> Result<LocalEuKey, ProtoError> {
        Ok(cpns_crypto::unwrap_stored_local_eukey(
            &self.cfg.eukey,
            cpns_crypto::Recipient::Gateway,
            (pn_id.as_bytes(), pne.as_str(), self.cfg.id.as_str()),
            stored,
        )?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use cpns_crypto::{EuKey, LocalEuKey, MachineRng};
    use cpns_wire::{EntityId, PnId};

    use super::MAX_DEPARTED;
    use crate::gateway::{Gateway, GatewayConfig, GatewayOutput};

    fn gateway() -> Gateway {
        let cfg = GatewayConfig::new(EntityId::new("gw-1").unwrap(), EuKey::from_bytes([1; 32]));
        Gateway::new(cfg, MachineRng::seeded([2; 32]))
    }

    fn pne(n: usize) -> EntityId {
        EntityId::new(format!("pne-{n}")).unwrap()
    }

    /// Kept up to the most, in order; one more drops the oldest (in memory and in the store),
    /// not the lowest id; dropping one not kept writes nothing.
    #[test]
    fn the_oldest_goes_beyond_the_most() {
        let mut gw = gateway();
        let pn = PnId::from_bytes([3; 16]);
        // Kept in an order unlike the ids' (the highest first).
        let first = MAX_DEPARTED + 5;
        let order: Vec<usize> = std::iter::once(first).chain(0..MAX_DEPARTED).collect();
        for &n in &order[..MAX_DEPARTED] {
            gw.keep_departed(pn, pne(n), LocalEuKey::from_bytes([4; 32]), vec![5; 76]);
        }
        assert_eq!(gw.departed_count(), MAX_DEPARTED);
        let outputs: Vec<GatewayOutput> = std::iter::from_fn(|| gw.poll_output()).collect();
        assert_eq!(outputs.len(), MAX_DEPARTED);
        assert!(
            outputs
                .iter()
                .all(|o| matches!(o, GatewayOutput::KeepDeparted { .. }))
        );
        let last = pne(order[MAX_DEPARTED]);
        gw.keep_departed(
            pn,
            last.clone(),
            LocalEuKey::from_bytes([4; 32]),
            vec![5; 76],
        );
        assert_eq!(gw.departed_count(), MAX_DEPARTED);
        let outputs: Vec<GatewayOutput> = std::iter::from_fn(|| gw.poll_output()).collect();
        match &outputs[..] {
            [
                GatewayOutput::KeepDeparted { pne: kept, .. },
                GatewayOutput::DropDeparted { pne: dropped, .. },
            ] => {
                assert_eq!(kept, &last);
                assert_eq!(dropped, &pne(first));
            }
            other => panic!("{other:?}"),
        }
        assert!(gw.departed.key(&pn, &pne(first)).is_none());
        assert!(gw.departed.key(&pn, &last).is_some());
        gw.drop_departed(pn, &pne(first));
        assert!(gw.poll_output().is_none());
    }

    /// A write of a departed key that fails is told; `Debug` says how many are kept, no key.
    #[test]
    fn a_failed_write_is_told_and_debug_shows_no_key() {
        let mut gw = gateway();
        let pn = PnId::from_bytes([3; 16]);
        gw.keep_departed(pn, pne(1), LocalEuKey::from_bytes([4; 32]), vec![5; 76]);
        let token = match gw.poll_output() {
            Some(GatewayOutput::KeepDeparted { token, .. }) => token,
            other => panic!("{other:?}"),
        };
        #[allow(clippy::disallowed_methods)] // only handed back to the machine
        let now = std::time::Instant::now();
        let failure = crate::StoreFailure::Failed("disk full".into());
        gw.handle_persisted(now, token, Err(failure.clone()))
            .unwrap();
        let told = std::iter::from_fn(|| gw.poll_output()).any(|o| {
            matches!(
                o,
                GatewayOutput::Event(crate::gateway::GatewayEvent::DepartedKeyNotStored {
                    pn_id, ref pne, ref reason
                }) if pn_id == pn && *pne == super::tests::pne(1) && *reason == failure
            )
        });
        assert!(told);
        // Kept in memory all the same.
        assert_eq!(gw.departed_count(), 1);
        let shown = format!("{:?}", gw.departed);
        assert!(shown.contains("kept: 1"), "{shown}");
    }

    /// A stored copy that does not unwrap for its PN and PNE is refused at restore.
    #[test]
    fn a_copy_that_does_not_unwrap_is_refused_at_restore() {
        let mut gw = gateway();
        let pn = PnId::from_bytes([3; 16]);
        assert!(
            gw.restore_departed(vec![(pn, pne(1), vec![5; 76])])
                .is_err()
        );
        assert!(
            gw.restore_departed(vec![(pn, pne(1), vec![5; 10])])
                .is_err()
        );
        assert_eq!(gw.departed_count(), 0);
    }
}
