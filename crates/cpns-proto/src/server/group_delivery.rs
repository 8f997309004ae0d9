//! Delivery to a service group or a user (004 §5.5.8: sessions "to a PNE, a list, a PN, a service group";
//! §5.5.9; docs/services.md, "To a service group"). A member of a group offers content to the
//! group (`DeliveryOffer.group`): the server reads the group, and every other member reachable
//! now (an authenticated member, with a secure session, of the PN it joined the group from) is a
//! target. The members are grouped by their PN, and each PN gets a session of its own, set up
//! exactly as a push within the source's PN or a forward to another PN (the same key drawn per
//! session, records per target charged to the target's user, the route to its PN GW, each
//! target told end to end): the group is the consent, so a member in another user's PN is
//! reached as a forward's target would be by its own user. The source is granted every
//! session at once (the first, and `also`), and sends the content in each.

use cpns_wire::{DeliveryGrant, DeliveryPart, EntityId, ErrorCode, KeyBytes, PnId};

use super::delivery::{DeliveryLoad, DeliveryOpened, MAX_TARGETS, SetUp, Targets, WINDOW};
use super::groups::{GroupLoaded, Reach};
use super::secure::Call;
use super::{Parked, ServerSession, UserReachLoaded};

impl ServerSession {
    /// An offer to a service group, its group read.
    pub(super) fn group_delivery_loaded(&mut self, p: DeliveryLoad, g: GroupLoaded) {
        let (call, offer, now_ms) = p.into_parts();
        let Some(here) = self.conn.gateway().map(|g| g.id.clone()) else {
            return self.refuse_call(&call, ErrorCode::WrongState, "no PN GW on this session");
        };
        let Some(group_id) = offer.group else {
            return;
        };
        if g.group.is_none() {
            let why = format!("no service group {group_id}");
            return self.refuse_call(&call, ErrorCode::NotFound, &why);
        }
        let Some(owner) = g
            .members
            .iter()
            .find(|m| m.entity == call.pne)
            .map(|m| m.owner.clone())
        else {
            let why = "only a member of the group delivers to it";
            return self.refuse_call(&call, ErrorCode::Forbidden, why);
        };
        let reached: Vec<Reach> = g
            .members
            .iter()
            .filter(|m| m.entity != call.pne)
            .filter_map(|m| m.reach.clone())
            .collect();
        if reached.is_empty() {
            let why = "no other member of the group can be reached now";
            return self.refuse_call(&call, ErrorCode::NotFound, why);
        }
        self.open_audience(
            (call, offer, now_ms),
            &owner,
            &here,
            reached,
            "the group has",
        );
    }

    /// An offer to a user, where its devices are reached read: each device in the source's
    /// PN if it is there, else (the source's own user's devices only) in the first PN it is
    /// proven in.
    pub(super) fn user_delivery_loaded(&mut self, p: DeliveryLoad, l: UserReachLoaded) {
        let (call, offer, now_ms) = p.into_parts();
        let Some(here) = self.conn.gateway().map(|g| g.id.clone()) else {
            return self.refuse_call(&call, ErrorCode::WrongState, "no PN GW on this session");
        };
        let (Some(user), Some(owner)) = (offer.user.clone(), l.asker_owner) else {
            return self.refuse_call(&call, ErrorCode::Forbidden, "the source is not enrolled");
        };
        let own = user == owner;
        let mut reached: Vec<Reach> = Vec::new();
        for r in l.reach.into_iter().filter(|r| r.entity != call.pne) {
            let here_too = r.pn_id == call.pn_id;
            match reached.iter_mut().find(|x| x.entity == r.entity) {
                // In the source's PN too: reached there, where no forward is needed.
                Some(x) if here_too => *x = r,
                Some(_) => {}
                None if here_too || own => reached.push(r),
                None => {}
            }
        }
        if reached.is_empty() {
            let why = if own {
                format!("no other device of {user} can be reached now")
            } else {
                format!(
                    "no device of {user} can be reached in this PN now (another user's devices \
                     are reached only in the source's PN)"
                )
            };
            return self.refuse_call(&call, ErrorCode::NotFound, &why);
        }
        self.open_audience(
            (call, offer, now_ms),
            &owner,
            &here,
            reached,
            "the user has",
        );
    }

    /// Sets up one session for each PN the `reached` targets are in (the source's own PN
    /// first: its session is the grant's own), opens every record in one transaction, and
    /// grants them at once. `whose` starts the refusal of too many targets.
    fn open_audience(
        &mut self,
        (call, offer, now_ms): (Call, cpns_wire::DeliveryOffer, i64),
        owner: &cpns_wire::UserId,
        here: &EntityId,
        reached: Vec<Reach>,
        whose: &str,
    ) {
        let count = reached.len();
        if count > MAX_TARGETS {
            let why = format!(
                "{whose} {count} devices to reach, past the {MAX_TARGETS} a delivery takes: \
                 deliver to them by name"
            );
            return self.refuse_call(&call, ErrorCode::BadRequest, &why);
        }
        let mut by_pn: Vec<((PnId, EntityId), Vec<Reach>)> = Vec::new();
        for r in reached {
            let at = (r.pn_id, r.gateway.clone());
            match by_pn.iter_mut().find(|(k, _)| *k == at) {
                Some((_, rs)) => rs.push(r),
                None => by_pn.push((at, vec![r])),
            }
        }
        by_pn.sort_by_key(|((pn, _), _)| *pn != call.pn_id);
        let mut set_ups: Vec<SetUp> = Vec::new();
        for ((pn, gw), reached) in by_pn {
            let where_ = if pn == call.pn_id {
                Targets::Here { from_server: false }
            } else {
                Targets::Forwarded {
                    source_pn: call.pn_id,
                }
            };
            // The session's targets are `reached`'s (the offer names none).
            let s = self.set_up_reached(
                &call.pne,
                owner,
                &offer,
                &[],
                where_,
                here,
                (pn, gw),
                reached,
            );
            set_ups.push(s);
        }
        let first = set_ups.remove(0);
        let also: Vec<DeliveryPart> = set_ups
            .iter()
            .map(|s| DeliveryPart {
                session: s.session,
                key: KeyBytes(*s.key.expose_secret()),
                targets: s.targets().collect(),
            })
            .collect();
        let grant = DeliveryGrant {
            session: first.session,
            key: KeyBytes(*first.key.expose_secret()),
            pn_id: first.route.pn_id,
            chunk: super::delivery::CHUNK,
            window: WINDOW,
            size: offer.total(),
            targets: first.targets().collect(),
            held: offer.held,
            suite: offer.suite,
            also,
            digest: offer.sha256.is_none(),
        };
        let mut effect = first.effect(&call.pne, offer, &self.cfg.tariff, now_ms);
        if let super::ServerEffect::OpenDelivery { also, .. } = &mut effect {
            also.extend(set_ups.iter().map(SetUp::part));
        }
        let opened = DeliveryOpened::new(call, now_ms, first, set_ups, grant);
        self.persist(Parked::DeliveryOpened(Box::new(opened)), effect);
    }
}
