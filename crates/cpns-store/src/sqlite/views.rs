//! The reads of the server's flows, each made of several queries and run by the caller inside
//! one read transaction (`Readers::snapshot`), so each sees one state of the store: the PN
//! with the entities and the kept answer a PN flow needs, a member's PN with its ended
//! membership, an inventory query's PNs, a usage report's owners, a user's charging records,
//! a status query's records.

use cpns_wire::{ChargingRecord, EntityId, PnId};
use rusqlite::{Connection, params};

use super::{codec, entity, pn, replay, status, usage};
use crate::{InventoryView, MemberView, Owners, PnView, Result, StatusView, UnixMillis};

/// PN `id`, the answer kept for `answer_of` and the enrolled `entities`.
pub(super) fn pn_view(
    conn: &Connection,
    id: &PnId,
    answer_of: Option<(&str, u64)>,
    entities: &[EntityId],
) -> Result<PnView> {
    Ok(PnView {
        pn: pn::pn(conn, id)?,
        answer: match answer_of {
            Some((sender, request_id)) => replay::answer_of(conn, sender, request_id)?,
            None => None,
        },
        entities: entity::entities(conn, entities)?,
    })
}

/// PN `id` and, if `pne` is not a member of it, `pne`'s ended membership there.
pub(super) fn member_view(conn: &Connection, id: &PnId, pne: &EntityId) -> Result<MemberView> {
    let pn = pn::pn(conn, id)?;
    let member = pn
        .as_ref()
        .is_some_and(|p| p.members.iter().any(|m| &m.pne_id == pne));
    let departed = if member {
        None
    } else {
        pn::departed(conn, id, pne)?
    };
    Ok(MemberView { pn, departed })
}

/// `asker`'s user, and PN `id` if given, else that user's PNs.
pub(super) fn inventory_view(
    conn: &Connection,
    asker: &EntityId,
    id: Option<&PnId>,
    now: UnixMillis,
) -> Result<InventoryView> {
    let owner = entity::owner_of(conn, asker)?;
    let pns: Vec<_> = match (id, &owner) {
        (Some(id), _) => pn::pn(conn, id)?.into_iter().collect(),
        (None, Some(owner)) => pn::pns_of_owner(conn, owner)?,
        (None, None) => Vec::new(),
    };
    let mut members: Vec<EntityId> = pns
        .iter()
        .flat_map(|p| p.members.iter().map(|m| m.pne_id.clone()))
        .collect();
    members.sort();
    members.dedup();
    let services = super::services::offered_to(conn, asker, &members, now)?;
    Ok(InventoryView {
        owner,
        pns,
        services,
    })
}

/// The users of `entity` and of PN `id`, in one statement.
pub(super) fn usage_owners(conn: &Connection, entity: &EntityId, id: &PnId) -> Result<Owners> {
    codec::optional(
        conn,
        "SELECT (SELECT owner FROM entities WHERE id = ?) AS entity_owner, \
         (SELECT owner FROM pns WHERE pn_id = ?) AS pn_owner",
        params![entity.as_str(), id.as_bytes().as_slice()],
        |row| {
            Ok(Owners {
                entity: codec::opt_id(row, "entity_owner")?,
                pn: codec::opt_id(row, "pn_owner")?,
            })
        },
    )
    .map(Option::unwrap_or_default)
}

/// The charging records of `entity`'s user since `since_s`; none if it is not enrolled.
pub(super) fn charging_records_of(
    conn: &Connection,
    entity: &EntityId,
    since_s: u64,
) -> Result<Vec<ChargingRecord>> {
    match entity::owner_of(conn, entity)? {
        Some(owner) => usage::charging_records(conn, &owner, since_s),
        None => Ok(Vec::new()),
    }
}

/// The status records of `asker` and `named`, of `asker`'s user's devices with `of_user`,
/// and `asker`'s subscription count with `subscriptions`.
pub(super) fn status_view(
    conn: &Connection,
    asker: &EntityId,
    named: &[EntityId],
    of_user: bool,
    subscriptions: bool,
) -> Result<StatusView> {
    let ids: Vec<EntityId> = std::iter::once(asker).chain(named).cloned().collect();
    let statuses = status::statuses(conn, &ids)?;
    let of_user = match (of_user, entity::owner_of(conn, asker)?) {
        (true, Some(owner)) => status::statuses_of_owner(conn, &owner)?,
        _ => Vec::new(),
    };
    let subscriptions = if subscriptions {
        status::subscription_count(conn, asker)?
    } else {
        0
    };
    Ok(StatusView {
        statuses,
        of_user,
        subscriptions,
    })
}
