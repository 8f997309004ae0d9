//! Service groups at the server (tables `service_groups`, `service_group_members`,
//! `service_group_invites`; migration 18, docs/services.md "Service groups"). A change of the
//! members moves the group to its next epoch in the same transaction, and only from the epoch
//! its flow read, so two changes never make one epoch twice.

use cpns_wire::{EntityId, GroupId, UserId};
use rusqlite::{Connection, Row, params};

use super::codec;
use crate::{
    GroupChange, GroupMemberRecord, GroupMemberView, GroupRecord, GroupView, Reach, Result,
    StoreError, UnixMillis,
};

fn group_id(row: &Row<'_>, column: &str) -> Result<GroupId> {
    let b: Vec<u8> = row.get(column)?;
    let arr: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::corrupt(column, "not 16 bytes"))?;
    Ok(GroupId::from_bytes(arr))
}

fn epoch(row: &Row<'_>) -> Result<u64> {
    let e: i64 = row.get("epoch")?;
    u64::try_from(e).map_err(|_| StoreError::corrupt("epoch", "negative"))
}

fn to_i64(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::conflict(format!("{what} {n} is too large")))
}

fn add_member(conn: &Connection, g: &GroupId, m: &GroupMemberRecord) -> Result<()> {
    codec::exec(
        conn,
        "INSERT INTO service_group_members (group_id, entity, owner, pn_id, joined_at) \
         VALUES (?, ?, ?, ?, ?)",
        params![
            g.as_bytes().as_slice(),
            m.entity.as_str(),
            m.owner.as_str(),
            m.pn_id.as_bytes().as_slice(),
            m.joined_at
        ],
    )?;
    Ok(())
}

pub(super) fn create(
    conn: &Connection,
    g: &GroupRecord,
    creator: &GroupMemberRecord,
) -> Result<()> {
    let known = codec::optional(
        conn,
        "SELECT 1 FROM entities WHERE id = ?",
        [g.creator.as_str()],
        |_| Ok(()),
    )?;
    known.ok_or_else(|| StoreError::not_found(format!("entity {}", g.creator)))?;
    let taken = codec::optional(
        conn,
        "SELECT 1 FROM service_groups WHERE group_id = ?",
        [g.group_id.as_bytes().as_slice()],
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(StoreError::conflict(format!("group {} exists", g.group_id)));
    }
    codec::exec(
        conn,
        "INSERT INTO service_groups (group_id, name, owner, creator, open_to_user, epoch, \
         sealed_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            g.group_id.as_bytes().as_slice(),
            g.name,
            g.owner.as_str(),
            g.creator.as_str(),
            i64::from(g.open_to_user),
            to_i64(g.epoch, "epoch")?,
            g.sealed_key,
            g.created_at
        ],
    )?;
    add_member(conn, &g.group_id, creator)
}

pub(super) fn view(
    conn: &Connection,
    g: &GroupId,
    asker: &EntityId,
    also: Option<&EntityId>,
    now: UnixMillis,
) -> Result<GroupView> {
    let id = g.as_bytes().as_slice();
    let group = codec::optional(
        conn,
        "SELECT group_id, name, owner, creator, open_to_user, epoch, sealed_key, created_at \
         FROM service_groups WHERE group_id = ?",
        [id],
        |row| {
            let open: i64 = row.get("open_to_user")?;
            Ok(GroupRecord {
                group_id: group_id(row, "group_id")?,
                name: row.get("name")?,
                owner: codec::id(row, "owner")?,
                creator: codec::id(row, "creator")?,
                open_to_user: open != 0,
                epoch: epoch(row)?,
                sealed_key: row.get("sealed_key")?,
                created_at: row.get("created_at")?,
            })
        },
    )?;
    let mut members = codec::all(
        conn,
        "SELECT g.entity, g.owner, g.pn_id, g.joined_at, p.gateway, \
         CASE WHEN m.authenticated = 1 THEN m.sealed_session_key END AS sealed_session_key \
         FROM service_group_members AS g \
         LEFT JOIN pns AS p ON p.pn_id = g.pn_id \
         LEFT JOIN pn_members AS m ON m.pn_seq = p.seq AND m.pne_id = g.entity \
         WHERE g.group_id = ? ORDER BY g.joined_at, g.entity",
        [id],
        |row| {
            Ok(GroupMemberView {
                member: GroupMemberRecord {
                    entity: codec::id(row, "entity")?,
                    owner: codec::id(row, "owner")?,
                    pn_id: codec::pn_id(row, "pn_id")?,
                    joined_at: row.get("joined_at")?,
                },
                sealed_session_key: row.get("sealed_session_key")?,
                gateway: codec::opt_id(row, "gateway")?,
            })
        },
    )?;
    // The creator first.
    if let Some(g) = &group
        && let Some(i) = members.iter().position(|m| m.member.entity == g.creator)
    {
        let creator = members.remove(i);
        members.insert(0, creator);
    }
    let invitation = codec::optional(
        conn,
        "SELECT inviter, expires_at FROM service_group_invites \
         WHERE group_id = ? AND invitee = ? AND expires_at > ?",
        params![id, asker.as_str(), now],
        |row| Ok((codec::id(row, "inviter")?, row.get("expires_at")?)),
    )?;
    let asker_owner = super::entity::owner_of(conn, asker)?;
    let asker_groups: i64 = conn
        .prepare_cached("SELECT count(*) FROM service_group_members WHERE entity = ?")?
        .query_row([asker.as_str()], |r| r.get(0))?;
    let also = match also {
        Some(e) => reach(conn, e)?,
        None => None,
    };
    Ok(GroupView {
        group,
        members,
        invitation,
        asker_owner,
        asker_groups: u32::try_from(asker_groups).unwrap_or(u32::MAX),
        also,
    })
}

/// Every PN where a device of `user` is an authenticated member with a key, by device, then PN.
pub(super) fn user_reach(conn: &Connection, user: &UserId) -> Result<Vec<Reach>> {
    codec::all(
        conn,
        "SELECT m.pne_id, e.owner, p.pn_id, p.gateway, m.sealed_session_key \
         FROM entities AS e JOIN pn_members AS m ON m.pne_id = e.id \
         JOIN pns AS p ON p.seq = m.pn_seq \
         WHERE e.owner = ? AND m.authenticated = 1 AND m.sealed_session_key IS NOT NULL \
         ORDER BY e.id, p.seq",
        [user.as_str()],
        |row| {
            Ok(Reach {
                entity: codec::id(row, "pne_id")?,
                owner: codec::id(row, "owner")?,
                pn_id: codec::pn_id(row, "pn_id")?,
                gateway: codec::id(row, "gateway")?,
                sealed_session_key: row.get("sealed_session_key")?,
            })
        },
    )
}

/// Where pushing to `entity` goes: its first PN where it is an authenticated member with a key.
fn reach(conn: &Connection, entity: &EntityId) -> Result<Option<Reach>> {
    codec::optional(
        conn,
        "SELECT e.owner, p.pn_id, p.gateway, m.sealed_session_key \
         FROM pn_members AS m JOIN pns AS p ON p.seq = m.pn_seq \
         JOIN entities AS e ON e.id = m.pne_id \
         WHERE m.pne_id = ? AND m.authenticated = 1 AND m.sealed_session_key IS NOT NULL \
         ORDER BY p.seq LIMIT 1",
        [entity.as_str()],
        |row| {
            Ok(Reach {
                entity: entity.clone(),
                owner: codec::id(row, "owner")?,
                pn_id: codec::pn_id(row, "pn_id")?,
                gateway: codec::id(row, "gateway")?,
                sealed_session_key: row.get("sealed_session_key")?,
            })
        },
    )
}

pub(super) fn change(conn: &Connection, c: &GroupChange) -> Result<()> {
    let id = c.group_id.as_bytes().as_slice();
    let next = c
        .from_epoch
        .checked_add(1)
        .ok_or_else(|| StoreError::conflict("the group's epochs ran out"))?;
    let moved = codec::exec(
        conn,
        "UPDATE service_groups SET epoch = ?, sealed_key = ? WHERE group_id = ? AND epoch = ?",
        params![
            to_i64(next, "epoch")?,
            c.sealed_key,
            id,
            to_i64(c.from_epoch, "epoch")?
        ],
    )?;
    if moved == 0 {
        return Err(StoreError::conflict(format!(
            "group {} is not at epoch {} (gone, or changed meanwhile)",
            c.group_id, c.from_epoch
        )));
    }
    for gone in &c.remove {
        codec::exec(
            conn,
            "DELETE FROM service_group_members WHERE group_id = ? AND entity = ?",
            params![id, gone.as_str()],
        )?;
    }
    if let Some(m) = &c.add {
        add_member(conn, &c.group_id, m)?;
        codec::exec(
            conn,
            "DELETE FROM service_group_invites WHERE group_id = ? AND invitee = ?",
            params![id, m.entity.as_str()],
        )?;
    }
    Ok(())
}

pub(super) fn invite(
    conn: &Connection,
    g: &GroupId,
    invitee: &EntityId,
    inviter: &EntityId,
    expires_at: UnixMillis,
) -> Result<()> {
    let id = g.as_bytes().as_slice();
    let exists = codec::optional(
        conn,
        "SELECT 1 FROM service_groups WHERE group_id = ?",
        [id],
        |_| Ok(()),
    )?;
    exists.ok_or_else(|| StoreError::not_found(format!("group {g}")))?;
    codec::exec(
        conn,
        "INSERT INTO service_group_invites (group_id, invitee, inviter, expires_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (group_id, invitee) DO UPDATE SET \
         inviter = excluded.inviter, expires_at = excluded.expires_at",
        params![id, invitee.as_str(), inviter.as_str(), expires_at],
    )?;
    Ok(())
}

pub(super) fn drop_invitation(conn: &Connection, g: &GroupId, invitee: &EntityId) -> Result<bool> {
    let n = codec::exec(
        conn,
        "DELETE FROM service_group_invites WHERE group_id = ? AND invitee = ?",
        params![g.as_bytes().as_slice(), invitee.as_str()],
    )?;
    Ok(n > 0)
}

pub(super) fn delete(conn: &Connection, g: &GroupId) -> Result<bool> {
    let n = codec::exec(
        conn,
        "DELETE FROM service_groups WHERE group_id = ?",
        [g.as_bytes().as_slice()],
    )?;
    Ok(n > 0)
}

/// The groups `entity` is a member of (what it may see of group-scoped directory entries).
pub(super) fn groups_of(conn: &Connection, entity: &EntityId) -> Result<Vec<GroupId>> {
    codec::all(
        conn,
        "SELECT group_id FROM service_group_members WHERE entity = ? ORDER BY group_id",
        [entity.as_str()],
        |row| group_id(row, "group_id"),
    )
}
