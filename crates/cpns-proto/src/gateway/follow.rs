//! Following a PN's inventory (004 §5.5.10: "Manage and store PN Inventory of PN that belongs
//! to itself"; docs/services.md, "Following the changes"). A member on its proven link asks
//! its PN GW for the inventory with `follow` ([`cpns_wire::InventoryQuery`]); from then on the
//! PN GW tells it, on that link, each change of the PNs answered ([`InventoryChanged`]): what
//! it sees itself (members joining and leaving, the PN released), and what the
//! server tells it of its members' contents and services (sealed calls it relays and cannot
//! read). A following ends with the link, with a query that says `follow: false`, when the
//! follower leaves the PN (after being told), or when the PN is released.

use cpns_wire::{EntityId, InventoryChange, InventoryChanged, PnId};

use super::{Gateway, GatewayEvent, LinkId};

impl Gateway {
    /// The link follows (or stops following) `pns`.
    pub(super) fn set_follows(&mut self, link: LinkId, pns: &[PnId], follow: bool) {
        if let Some(l) = self.links.get_mut(&link) {
            for pn in pns {
                if follow {
                    l.follows.insert(*pn);
                } else {
                    l.follows.remove(pn);
                }
            }
        }
    }

    /// The inventory changes a PN GW event is, told to the followers.
    pub(super) fn follow_event(&mut self, e: &GatewayEvent) {
        match e {
            GatewayEvent::MemberJoined { pn_id, pne, .. } => {
                self.tell_followers(*pn_id, Some(pne), InventoryChange::Joined);
            }
            GatewayEvent::MemberRemoved { pn_id, pne, .. } => {
                self.tell_followers(*pn_id, Some(pne), InventoryChange::Left);
                let gone: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.peer.as_ref() == Some(pne))
                    .map(|(id, _)| *id)
                    .collect();
                for link in gone {
                    self.set_follows(link, &[*pn_id], false);
                }
            }
            GatewayEvent::PnReleased { pn_id, .. } | GatewayEvent::PnEmptied { pn_id } => {
                self.tell_followers(*pn_id, None, InventoryChange::Released);
                for l in self.links.values_mut() {
                    l.follows.remove(pn_id);
                }
            }
            _ => {}
        }
    }

    /// The server told what changed of a member's (its contents or services): every PN of
    /// this PN GW that member is in. A change of no member, or of one in none, is dropped.
    pub(super) fn on_server_inventory_changed(&mut self, m: InventoryChanged) {
        let Some(pne) = m.pne else {
            return;
        };
        let pns: Vec<PnId> = self
            .pns
            .iter()
            .filter(|(_, pn)| pn.state.inventory.members.iter().any(|x| x.pne_id == pne))
            .map(|(id, _)| *id)
            .collect();
        for pn in pns {
            self.tell_followers(pn, Some(&pne), m.change);
        }
    }

    /// Tells every proven link following `pn` that `change` happened (of `pne`).
    fn tell_followers(&mut self, pn: PnId, pne: Option<&EntityId>, change: InventoryChange) {
        let following: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.proven && l.follows.contains(&pn))
            .map(|(id, _)| *id)
            .collect();
        for link in following {
            let note = InventoryChanged {
                pn_id: Some(pn),
                pne: pne.cloned(),
                change,
            };
            self.send_pan_notify(link, note);
        }
    }
}
