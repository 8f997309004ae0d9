//! Following a PN's inventory (004 §5.5.10; docs/services.md, "Following the changes"): this
//! PNE asks its PN's PN GW, on its proven link, for the PN's inventory with `follow`, and is
//! told each change after it ([`PneEvent::InventoryChanged`]). It names what changed, not the
//! change; the application reads the inventory again for that (from the server, for what
//! members offer). A following is this PNE's until it stops it, leaves the PN or the PN is
//! released (told as a last change, as it forgets the PN); each time its link to the PN GW
//! comes back (its connection set-up in the PN done), it asks again, and is given the
//! inventory as it is then ([`PneEvent::InventoryFollowedAgain`]), since the changes while it
//! was away were not told.

use std::time::Instant;

use cpns_wire::{Address, EntityId, Envelope, InventoryChanged, InventoryQuery, PnId, PnInventory};

use super::secure::PendingQuery;
use super::{PneEvent, PneSession};
use crate::command::{CommandError, CommandId};

impl PneSession {
    /// Starts (`follow`) or stops following what changes in `pn_id`'s inventory, through the
    /// PN's PN GW on the link. Completes with [`crate::pne::Outcome::Inventory`]: the PN's
    /// inventory as its PN GW holds it.
    ///
    /// # Errors
    /// [`CommandError::NotAMember`] for a PN this PNE is not a member of;
    /// [`CommandError::GatewayNotLinked`] when the PN's PN GW is not on the link, proven.
    pub fn follow_inventory(
        &mut self,
        now: Instant,
        pn_id: PnId,
        follow: bool,
    ) -> Result<CommandId, CommandError> {
        let gw = self
            .pns
            .get(&pn_id)
            .map(|p| p.state.inventory.gateway.clone())
            .ok_or(CommandError::NotAMember(pn_id))?;
        if self.gateway.as_ref() != Some(&gw) || !self.gateway_proven(&gw) {
            return Err(CommandError::GatewayNotLinked(gw));
        }
        let id = self.commands.next();
        self.ask_gateway_inventory(now, gw, Some(pn_id), Some(id), Some((pn_id, follow)));
        Ok(id)
    }

    /// The PNs this PNE follows, for the next link's machine ([`Self::restore_following`]).
    pub fn following(&self) -> Vec<PnId> {
        self.following.iter().copied().collect()
    }

    /// Takes the PNs a previous link's machine followed: each is followed again once its
    /// connection set-up in that PN is done.
    pub fn restore_following(&mut self, pns: impl IntoIterator<Item = PnId>) {
        self.following.extend(pns);
    }

    /// Sends a local inventory query to `gw` (ending `cmd`, and following or not).
    pub(super) fn ask_gateway_inventory(
        &mut self,
        now: Instant,
        gw: EntityId,
        pn_id: Option<PnId>,
        cmd: Option<CommandId>,
        follow: Option<(PnId, bool)>,
    ) {
        let query = InventoryQuery {
            pn_id,
            follow: follow.map(|(_, f)| f),
        };
        let msg = self.send_request_to(Address::Entity(gw), query);
        let pending = PendingQuery {
            deadline: now + self.cfg.timeouts.flow,
            cmd,
            follow,
        };
        self.inventory_queries.insert(msg, pending);
    }

    /// Its connection set-up in `pn_id` is done on a new link: it follows the PN again if it
    /// did.
    pub(super) fn follow_again(&mut self, now: Instant, pn_id: PnId) {
        if !self.following.contains(&pn_id) {
            return;
        }
        if let Some(gw) = self
            .pns
            .get(&pn_id)
            .map(|p| p.state.inventory.gateway.clone())
        {
            self.ask_gateway_inventory(now, gw, Some(pn_id), None, Some((pn_id, true)));
        }
    }

    /// The PN GW answered a query that follows or stops: `again` for one this PNE made by
    /// itself when its link came back.
    pub(super) fn followed(&mut self, pn_id: PnId, follow: bool, again: bool, pns: &[PnInventory]) {
        let answered = pns.iter().find(|p| p.pn_id == pn_id);
        if !follow {
            self.following.remove(&pn_id);
            return;
        }
        let Some(inventory) = answered else {
            return;
        };
        self.following.insert(pn_id);
        if again {
            self.event(PneEvent::InventoryFollowedAgain {
                inventory: inventory.clone(),
            });
        }
    }

    /// A change of a PN this PNE follows, from that PN's PN GW (proven on the link); anything
    /// else is dropped. Being told it left, or that the PN was released, ends its following.
    pub(super) fn on_inventory_changed(&mut self, env: &Envelope, m: InventoryChanged) {
        let Some(pn_id) = m.pn_id else {
            return;
        };
        if !self.following.contains(&pn_id) || !self.sent_by_pns_gateway(env, &pn_id) {
            return;
        }
        let me_gone =
            m.change == cpns_wire::InventoryChange::Left && m.pne.as_ref() == Some(&self.cfg.id);
        if me_gone || m.change == cpns_wire::InventoryChange::Released {
            self.following.remove(&pn_id);
        }
        self.event(PneEvent::InventoryChanged {
            pn_id,
            pne: m.pne,
            change: m.change,
        });
    }
}
