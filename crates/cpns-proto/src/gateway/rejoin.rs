//! A member's connection set-up in its PN (002 §B.1.1.3 steps 18-26): the PNE pulls its copy
//! of the PN's group key through this PN GW (steps 22-24, [`super::relay`]), then confirms it
//! holds that epoch's key (step 25), and this PN GW confirms the set-up (step 26). The PN GW
//! keeps, per member, the last epoch it confirmed, so its owner sees who holds the current key
//! (`cpns pn members`). A member also reads its PN's inventory here (004 §5.5.10).

use cpns_wire::{
    Envelope, ErrorBody, ErrorCode, InventoryAnswer, InventoryQuery, MembershipConfirm,
    MembershipConfirmed, PnId,
};

use super::{Gateway, GatewayEvent, LinkId};

impl Gateway {
    /// Notes `epoch` as `pn_id`'s current one, as the server's answers relayed or received by
    /// this PN GW name it; an older epoch (a late answer) changes nothing.
    pub(super) fn saw_epoch(&mut self, pn_id: &PnId, epoch: u64) {
        if let Some(pn) = self.pns.get_mut(pn_id) {
            pn.epoch = Some(pn.epoch.map_or(epoch, |e| e.max(epoch)));
        }
    }

    /// Step 25: a member on its proven link says it holds the key of `epoch`; step 26 answers.
    /// Only the PN's current epoch is confirmed; an older one is refused with `conflict` (the
    /// PNE pulls again), and before this PN GW learned the epoch with `wrong_state`.
    pub(super) fn on_membership_confirm(
        &mut self,
        link: LinkId,
        env: &Envelope,
        m: MembershipConfirm,
    ) {
        let pne = match self.member_asking(link, &m.pn_id, "confirm its membership") {
            Ok(pne) => pne,
            Err(e) => return self.send_pan_response(link, env.msg_id, e),
        };
        let Some(pn) = self.pns.get_mut(&m.pn_id) else {
            return;
        };
        let refusal = match pn.epoch {
            None => Some(ErrorBody::new(
                ErrorCode::WrongState,
                "this PN GW does not know the PN's epoch yet: pull the group key first",
            )),
            Some(current) if current != m.epoch => Some(ErrorBody::new(
                ErrorCode::Conflict,
                format!(
                    "epoch {} is not the PN's current epoch {current}: pull the group key again",
                    m.epoch
                ),
            )),
            Some(_) => None,
        };
        if let Some(e) = refusal {
            return self.send_pan_response(link, env.msg_id, e);
        }
        pn.confirmed.insert(pne.clone(), m.epoch);
        let answer = MembershipConfirmed {
            pn_id: m.pn_id,
            epoch: m.epoch,
        };
        self.send_pan_response(link, env.msg_id, answer);
        // Its connection set-up done, a source is told again where its targets are: one that
        // restarted knew nothing of it when its link was proven.
        self.delivery_source_linked(&pne);
        self.event(GatewayEvent::MemberConfirmed {
            pn_id: m.pn_id,
            pne,
            epoch: m.epoch,
        });
    }

    /// 004 §5.5.10: a member on its proven link reads a PN it belongs to, or (no PN named)
    /// every PN of this PN GW it belongs to. A PN it is not in is `forbidden` to it, one this
    /// PN GW does not serve `not_found` (a remote PN is read from the server, end to end).
    pub(super) fn on_inventory_query(&mut self, link: LinkId, env: &Envelope, m: InventoryQuery) {
        let answer = match m.pn_id {
            Some(pn_id) => self
                .member_asking(link, &pn_id, "read the PN's inventory")
                .map(|_| vec![self.pns[&pn_id].state.inventory.clone()]),
            None => match self.links.get(&link).filter(|l| l.proven) {
                Some(l) => {
                    let pne = l.peer.clone();
                    Ok(self
                        .pns
                        .values()
                        .map(|pn| &pn.state.inventory)
                        .filter(|inv| inv.members.iter().any(|x| Some(&x.pne_id) == pne.as_ref()))
                        .cloned()
                        .collect())
                }
                None => Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    "prove who you are first (PN GW authentication with the PN's LocalEUKey)",
                )),
            },
        };
        if let (Ok(pns), Some(follow)) = (&answer, m.follow) {
            let ids: Vec<PnId> = pns.iter().map(|p| p.pn_id).collect();
            self.set_follows(link, &ids, follow);
        }
        match answer {
            // The local answer: members and what they announced; services are the server's.
            Ok(pns) => self.send_pan_response(
                link,
                env.msg_id,
                InventoryAnswer {
                    pns,
                    services: Vec::new(),
                },
            ),
            Err(e) => self.send_pan_response(link, env.msg_id, e),
        }
    }

    /// The members of `pn_id` that confirmed its current epoch (step 25), in member order;
    /// `None` for a PN this PN GW does not serve.
    pub fn confirmed_members(&self, pn_id: &PnId) -> Option<Vec<cpns_wire::EntityId>> {
        let pn = self.pns.get(pn_id)?;
        let current = pn.epoch?;
        let members = &pn.state.inventory.members;
        Some(
            members
                .iter()
                .filter(|m| pn.confirmed.get(&m.pne_id) == Some(&current))
                .map(|m| m.pne_id.clone())
                .collect(),
        )
    }

    /// `pn_id`'s current group key epoch, once this PN GW learned it.
    pub fn epoch(&self, pn_id: &PnId) -> Option<u64> {
        self.pns.get(pn_id).and_then(|pn| pn.epoch)
    }
}
