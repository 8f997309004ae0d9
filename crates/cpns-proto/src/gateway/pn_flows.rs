//! What the PN GW's membership flows share (release, leave, expulsion; docs/pn-lifecycle.md,
//! "One model for every membership change"): who asked, and the flows waiting for the server's
//! answer (step 2) or the local store (step 3), one per PN at a time.

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_wire::{EntityId, PnId};

use cpns_wire::{ErrorBody, ErrorCode};

use super::{Gateway, LinkId};

impl Gateway {
    /// Who asks, when a PNE on `link` asks for something about `pn_id` only a member may ask
    /// for (`what`, e.g. "release its PN"): the PNE, if it proved itself on the link, is a
    /// member, and may start another flow; else the error to answer it with.
    pub(super) fn member_asking(
        &self,
        link: LinkId,
        pn_id: &PnId,
        what: &str,
    ) -> Result<EntityId, ErrorBody> {
        let pne = self.proven_member_of(link, pn_id, what)?;
        if let Some(r) = self.over_limit(link) {
            return Err(ErrorBody::new(ErrorCode::Busy, r));
        }
        Ok(pne)
    }

    /// The member of `pn_id` the link proved it is; else the refusal to `what`.
    pub(super) fn proven_member_of(
        &self,
        link: LinkId,
        pn_id: &PnId,
        what: &str,
    ) -> Result<EntityId, ErrorBody> {
        let proven = self.links.get(&link).filter(|l| l.proven);
        let Some(pne) = proven.and_then(|l| l.peer.clone()) else {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "prove who you are first (PN GW authentication with the PN's LocalEUKey)",
            ));
        };
        let Some(pn) = self.pns.get(pn_id) else {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("this PN GW serves no PN {pn_id}"),
            ));
        };
        if !pn.state.inventory.members.iter().any(|x| x.pne_id == pne) {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("only a member may {what}"),
            ));
        }
        Ok(pne)
    }
}

/// Who asked for a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Asker {
    /// The PN GW's owner, through its driver (its command), or the PN GW by itself (`None`:
    /// a PN whose lifetime ended).
    Owner(Option<crate::CommandId>),
    /// A member PNE on a link: it is answered on that link.
    Pne {
        link: LinkId,
        pan_msg: u64,
        pne: EntityId,
    },
}

/// A flow on one PN that waits for the server.
pub(crate) trait PnFlow {
    fn pn(&self) -> PnId;
    fn asker(&self) -> &Asker;
    fn deadline(&self) -> Instant;
}

/// Flows waiting for the server's answer, by the WAN message id of their request, and the PNs
/// whose flow is past the server and waits for the local store.
#[derive(Debug)]
pub(crate) struct PnFlows<T> {
    pub(super) by_msg: BTreeMap<u64, T>,
    pub(super) storing: Vec<PnId>,
}

impl<T> Default for PnFlows<T> {
    fn default() -> Self {
        Self {
            by_msg: BTreeMap::new(),
            storing: Vec::new(),
        }
    }
}

impl<T: PnFlow> PnFlows<T> {
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.by_msg.values().map(PnFlow::deadline)
    }

    /// Flows in progress, at either stage.
    pub(super) fn len(&self) -> usize {
        self.by_msg.len() + self.storing.len()
    }

    /// Flows in progress that a PNE on `link` asked for.
    pub(super) fn of_link(&self, link: LinkId) -> usize {
        self.by_msg
            .values()
            .filter(|r| matches!(r.asker(), Asker::Pne { link: l, .. } if *l == link))
            .count()
    }

    /// Whether a flow on `pn` is in progress.
    pub(super) fn running(&self, pn: &PnId) -> bool {
        self.storing.contains(pn) || self.by_msg.values().any(|r| r.pn() == *pn)
    }

    /// The flow whose request `msg` the server answers, now waiting for the store.
    pub(super) fn answered(&mut self, msg: u64) -> Option<T> {
        let flow = self.by_msg.remove(&msg)?;
        self.storing.push(flow.pn());
        Some(flow)
    }

    /// The flow whose request `msg` the server refused or did not answer.
    pub(super) fn take(&mut self, msg: u64) -> Option<T> {
        self.by_msg.remove(&msg)
    }

    /// The store answered for `pn`.
    pub(super) fn stored(&mut self, pn: &PnId) {
        self.storing.retain(|p| p != pn);
    }

    pub(super) fn expired(&mut self, now: Instant) -> Vec<T> {
        crate::util::take_expired(&mut self.by_msg, now, PnFlow::deadline)
            .into_iter()
            .map(|(_, f)| f)
            .collect()
    }

    pub(super) fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.by_msg).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct F(PnId, Asker, Instant);

    impl PnFlow for F {
        fn pn(&self) -> PnId {
            self.0
        }
        fn asker(&self) -> &Asker {
            &self.1
        }
        fn deadline(&self) -> Instant {
            self.2
        }
    }

    /// Both stages count as flows in progress, per PN and per asking link.
    #[test]
    fn a_flow_counts_while_it_waits_for_the_server_or_the_store() {
        #[allow(clippy::disallowed_methods)] // only offsets from it matter
        let now = Instant::now();
        let (a, b) = (PnId::from_bytes([1; 16]), PnId::from_bytes([2; 16]));
        let pne = Asker::Pne {
            link: LinkId(3),
            pan_msg: 1,
            pne: EntityId::new("pne-1").expect("a valid id"),
        };
        let mut f = PnFlows::default();
        f.by_msg.insert(9, F(a, pne, now));
        f.by_msg.insert(10, F(b, Asker::Owner(None), now));
        assert_eq!(
            (f.len(), f.of_link(LinkId(3)), f.of_link(LinkId(4))),
            (2, 1, 0)
        );
        assert!(f.answered(9).is_some());
        assert_eq!(f.len(), 2, "waiting for the store still counts");
        assert!(f.running(&a) && f.running(&b));
        assert_eq!(f.of_link(LinkId(3)), 0);
        f.stored(&a);
        assert_eq!(f.len(), 1);
        assert!(!f.running(&a));
        assert!(f.take(10).is_some());
        assert_eq!(f.len(), 0);
    }
}
