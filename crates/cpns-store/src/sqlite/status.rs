//! Status of record (columns of `entities`) and status subscriptions (table
//! `status_subscriptions`); 004 §5.5.3, docs/device-status.md.

use cpns_wire::{DeviceCapabilities, EntityId, Status, StatusPolicy, UserId};
use rusqlite::{Connection, Row, params};

use super::codec;
use crate::{
    Attributes, Result, StatusChange, StatusRecord, StoreError, Subscribed, SubscriptionRecord,
};

/// The `SELECT` of an enrolled entity's status, aliased `e`.
macro_rules! select_status {
    () => {
        "SELECT e.id, e.owner, e.status_code AS status, e.label, e.status_since AS since, \
         e.reported_by, e.battery_pct, e.battery_minutes, e.free_memory_mb FROM entities AS e"
    };
}

fn decode_status(row: &Row<'_>) -> Result<StatusRecord> {
    let code: Option<i64> = row.get("status")?;
    let status = match code {
        None => Status::Offline,
        Some(c) => Status::from_code(
            u32::try_from(c).map_err(|_| StoreError::corrupt("status_code", format!("{c}")))?,
        ),
    };
    Ok(StatusRecord {
        entity: codec::id(row, "id")?,
        owner: Some(codec::id(row, "owner")?),
        status,
        label: row.get("label")?,
        since: row.get("since")?,
        reported_by: codec::opt_id(row, "reported_by")?,
        attributes: Attributes {
            battery_pct: small(row, "battery_pct")?,
            battery_minutes: small(row, "battery_minutes")?,
            free_memory_mb: small(row, "free_memory_mb")?,
        },
    })
}

/// An optional unsigned column that must fit `T`.
fn small<T: TryFrom<i64>>(row: &Row<'_>, column: &str) -> Result<Option<T>> {
    let v: Option<i64> = row.get(column)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::corrupt(column, format!("holds {v}"))))
        .transpose()
}

fn require_entity(conn: &Connection, id: &EntityId) -> Result<()> {
    let known = codec::optional(
        conn,
        "SELECT 1 FROM entities WHERE id = ?",
        [id.as_str()],
        |_| Ok(()),
    )?;
    known.ok_or_else(|| StoreError::not_found(format!("entity {id}")))
}

/// Records each change, keeping the attributes; [`StoreError::NotFound`] (and nothing
/// written, the writer rolls the write back) if an entity is not enrolled.
pub(super) fn record_statuses(
    conn: &Connection,
    changes: &[StatusChange],
) -> Result<Vec<StatusRecord>> {
    for c in changes {
        if set_status(conn, c)? == 0 {
            return Err(StoreError::not_found(format!("entity {}", c.entity)));
        }
    }
    let ids: Vec<EntityId> = changes.iter().map(|c| c.entity.clone()).collect();
    statuses(conn, &ids)
}

/// Writes one status change into its entity's row; how many rows it changed (0: not
/// enrolled).
fn set_status(conn: &Connection, c: &StatusChange) -> Result<usize> {
    codec::exec(
        conn,
        "UPDATE entities SET status_code = ?, label = ?, status_since = ?, reported_by = ? \
         WHERE id = ?",
        params![
            c.status.code(),
            c.label,
            c.since,
            c.reported_by.as_ref().map(EntityId::as_str),
            c.entity.as_str()
        ],
    )
}

/// Records what `id` reported of itself in one write: its capabilities with the attributes
/// they carry (004 §5.5.1), and/or its own status at the time given (004 §5.5.3: no label, no
/// PN GW reporting it); its status record as now. [`StoreError::NotFound`] if it is not
/// enrolled.
pub(super) fn record_report(
    conn: &Connection,
    id: &EntityId,
    capabilities: Option<&DeviceCapabilities>,
    status: Option<(Status, i64)>,
) -> Result<StatusRecord> {
    require_entity(conn, id)?;
    if let Some(caps) = capabilities {
        let a = Attributes::of(caps);
        codec::exec(
            conn,
            "UPDATE entities SET capabilities = ?, battery_pct = ?, battery_minutes = ?, \
             free_memory_mb = ? WHERE id = ?",
            params![
                codec::capabilities_blob(Some(caps)),
                a.battery_pct,
                a.battery_minutes,
                a.free_memory_mb,
                id.as_str()
            ],
        )?;
    }
    if let Some((status, since)) = status {
        let change = StatusChange {
            entity: id.clone(),
            status,
            label: None,
            since,
            reported_by: None,
        };
        set_status(conn, &change)?;
    }
    statuses(conn, std::slice::from_ref(id))?
        .pop()
        .ok_or_else(|| StoreError::not_found(format!("entity {id}")))
}

/// Which of `candidates` are members of a PN `gateway` serves.
pub(super) fn served_by(
    conn: &Connection,
    gateway: &EntityId,
    candidates: &[EntityId],
) -> Result<Vec<EntityId>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let list = codec::json_string_array(candidates.iter().map(EntityId::as_str));
    codec::all(
        conn,
        "SELECT DISTINCT m.pne_id FROM pn_members AS m JOIN pns AS p ON p.seq = m.pn_seq \
         WHERE p.gateway = ? AND m.pne_id IN (SELECT value FROM json_each(?)) ORDER BY m.pne_id",
        params![gateway.as_str(), list],
        |row| codec::id(row, "pne_id"),
    )
}

/// Turns every entity `gateway`'s session reported, and `gateway` itself, offline at `at`;
/// the records that changed, as now.
pub(super) fn offline_reported_by(
    conn: &Connection,
    gateway: &EntityId,
    at: i64,
) -> Result<Vec<StatusRecord>> {
    let changed = codec::all(
        conn,
        "UPDATE entities SET status_code = ?1, label = NULL, status_since = ?2, \
         reported_by = NULL WHERE (reported_by = ?3 OR (id = ?3 AND status_code IS NOT NULL)) \
         AND status_code IS NOT ?1 RETURNING id",
        params![Status::Offline.code(), at, gateway.as_str()],
        |row| codec::id::<EntityId>(row, "id"),
    )?;
    statuses(conn, &changed)
}

/// The status records of the enrolled entities among `ids`, in the order of `ids`.
pub(super) fn statuses(conn: &Connection, ids: &[EntityId]) -> Result<Vec<StatusRecord>> {
    codec::by_ids(
        conn,
        concat!(select_status!(), codec::in_order_of_ids!()),
        ids,
        decode_status,
    )
}

/// The status records of every entity of `owner`, by id.
pub(super) fn statuses_of_owner(conn: &Connection, owner: &UserId) -> Result<Vec<StatusRecord>> {
    codec::all(
        conn,
        concat!(select_status!(), " WHERE e.owner = ? ORDER BY e.id"),
        [owner.as_str()],
        decode_status,
    )
}

/// Every entity's status record, by id.
pub(super) fn all_statuses(conn: &Connection) -> Result<Vec<StatusRecord>> {
    codec::all(
        conn,
        concat!(select_status!(), " ORDER BY e.id"),
        [],
        decode_status,
    )
}

fn decode_subscription(row: &Row<'_>) -> Result<SubscriptionRecord> {
    let entities: String = row.get("entities")?;
    let policy: Vec<u8> = row.get("policy")?;
    let id: i64 = row.get("id")?;
    let request_id: i64 = row.get("request_id")?;
    Ok(SubscriptionRecord {
        id: u64::try_from(id)
            .map_err(|_| StoreError::corrupt("status_subscriptions.id", format!("{id}")))?,
        subscriber: codec::id(row, "subscriber")?,
        owner: codec::id(row, "owner")?,
        request_id: request_id as u64,
        entities: entities
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|e| {
                    StoreError::corrupt("status_subscriptions.entities", format!("{s:?}: {e}"))
                })
            })
            .collect::<Result<_>>()?,
        policy: minicbor::decode::<StatusPolicy>(&policy)
            .map_err(|e| StoreError::corrupt("status_subscriptions.policy", e.to_string()))?,
        created_at: row.get("created_at")?,
    })
}

const SELECT_SUBSCRIPTION: &str = "SELECT id, subscriber, owner, request_id, entities, policy, \
     created_at FROM status_subscriptions";

/// Keeps `s` (its `id` is ignored) and returns it with its id and the status records of what
/// it watches, in one write; a retry (same subscriber and request id) returns the subscription
/// kept the first time, unchanged.
pub(super) fn add_subscription(conn: &Connection, s: &SubscriptionRecord) -> Result<Subscribed> {
    require_entity(conn, &s.subscriber)?;
    let entities = s
        .entities
        .iter()
        .map(EntityId::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let policy = minicbor::to_vec(&s.policy)
        .map_err(|e| StoreError::conflict(format!("policy does not encode: {e}")))?;
    codec::exec(
        conn,
        "INSERT INTO status_subscriptions \
         (subscriber, owner, request_id, entities, policy, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (subscriber, request_id) DO NOTHING",
        params![
            s.subscriber.as_str(),
            s.owner.as_str(),
            s.request_id as i64,
            entities,
            policy,
            s.created_at
        ],
    )?;
    let sql = format!("{SELECT_SUBSCRIPTION} WHERE subscriber = ? AND request_id = ?");
    let subscription = codec::optional(
        conn,
        &sql,
        params![s.subscriber.as_str(), s.request_id as i64],
        decode_subscription,
    )?
    .ok_or_else(|| StoreError::not_found("the subscription just kept"))?;
    let states = if subscription.entities.is_empty() {
        statuses_of_owner(conn, &subscription.owner)?
    } else {
        statuses(conn, &subscription.entities)?
    };
    Ok(Subscribed {
        subscription,
        states,
    })
}

/// Removes `subscriber`'s subscription `id`; false if it has none such.
pub(super) fn remove_subscription(
    conn: &Connection,
    subscriber: &EntityId,
    id: u64,
) -> Result<bool> {
    let Ok(id) = i64::try_from(id) else {
        return Ok(false);
    };
    let n = codec::exec(
        conn,
        "DELETE FROM status_subscriptions WHERE id = ? AND subscriber = ?",
        params![id, subscriber.as_str()],
    )?;
    Ok(n > 0)
}

/// How many subscriptions `subscriber` holds.
pub(super) fn subscription_count(conn: &Connection, subscriber: &EntityId) -> Result<usize> {
    let n: i64 = codec::optional(
        conn,
        "SELECT COUNT(*) AS n FROM status_subscriptions WHERE subscriber = ?",
        [subscriber.as_str()],
        |row| Ok(row.get("n")?),
    )?
    .unwrap_or(0);
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Every subscription, oldest first.
pub(super) fn subscriptions(conn: &Connection) -> Result<Vec<SubscriptionRecord>> {
    let sql = format!("{SELECT_SUBSCRIPTION} ORDER BY id");
    codec::all(conn, &sql, [], decode_subscription)
}
