//! Service groups at the server (004 §5.5.9, §5.5.7.2; docs/services.md, "Service groups"):
//! create and delete, invite and expel, answer, join and leave, pull the key, read the members,
//! send content. Each request is a secure call of a PNE (docs/security.md §4.8), so the asker
//! is the PNE whose SK_PNE the call opened under; each push (a new epoch's key, an invitation,
//! the end of a membership, content) is a secure notice sealed to its member, relayed by the PN
//! GW of that member's PN whichever session the request came on. Every change of the members
//! moves the group to its next epoch with a fresh key, written from the epoch the flow read
//! (`cpns_store::ServerStore::change_group`), and the new key goes to the members that remain
//! or join, never to one that left.

use std::time::Instant;

use cpns_crypto::{GroupKey, NoticeBinding, SessionKey, seal_secure_notice};
use cpns_wire::{
    Address, EntityId, Envelope, ErrorCode, GROUP_ANSWER, GROUP_CONTENT, GROUP_CREATE,
    GROUP_DELETE, GROUP_ENDED, GROUP_EXPEL, GROUP_INVITE, GROUP_INVITED, GROUP_JOIN, GROUP_KEY,
    GROUP_KEY_PUSH, GROUP_LEAVE, GROUP_MEMBERS, GROUP_SEND, GatewayGroupRequest, GroupAnswer,
    GroupContentBox, GroupCreate, GroupDone, GroupEndReason, GroupEnded, GroupExpel, GroupId,
    GroupInvitation, GroupInvite, GroupKeyCopy, GroupMember, GroupMembers, GroupRef, KeyBytes,
    PnId, SecureCall, SecureNotice, UserId,
};

use super::connect::Gw;
use super::secure::Call;
use super::{Load, Parked, Persisted, ServerEffect, ServerSession};

/// Most groups one PNE is a member of.
pub const MAX_GROUPS: u32 = 32;
/// Most members of one group.
pub const MAX_MEMBERS: usize = 64;
/// How long an invitation holds (milliseconds).
pub const INVITATION_MS: i64 = 5 * 60 * 1000;
/// Largest content box a member sends, as group content of a PN (docs/security.md §4.11).
pub const MAX_CONTENT: usize = 256 * 1024;

/// Whether `service` is one of the group's secure calls.
pub(super) fn is_group(service: &str) -> bool {
    [
        GROUP_CREATE,
        GROUP_DELETE,
        GROUP_INVITE,
        GROUP_ANSWER,
        GROUP_JOIN,
        GROUP_LEAVE,
        GROUP_EXPEL,
        GROUP_KEY,
        GROUP_MEMBERS,
        GROUP_SEND,
    ]
    .contains(&service)
}

/// Where a push to a PNE goes: the PN whose SK_PNE seals it, and the PN GW serving that PN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The PNE.
    pub entity: EntityId,
    /// Its user.
    pub owner: UserId,
    /// The PN.
    pub pn_id: PnId,
    /// Its SK_PNE there.
    pub session_key: SessionKey,
    /// The PN GW.
    pub gateway: EntityId,
}

/// A group as its flows read it, its key opened.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// The owning user.
    pub owner: UserId,
    /// Its owning member.
    pub creator: EntityId,
    /// Any device of the owner's user may join without an invitation.
    pub open_to_user: bool,
    /// The current epoch.
    pub epoch: u64,
    /// Its key.
    pub key: GroupKey,
}

/// A member as the flows read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The PNE.
    pub entity: EntityId,
    /// Its user.
    pub owner: UserId,
    /// Where pushes to it go; `None` once it is no longer an authenticated member of the PN
    /// it joined from.
    pub reach: Option<Reach>,
}

/// The answer to [`Load::Group`].
#[derive(Clone, Debug, Default)]
pub struct GroupLoaded {
    /// The group, if it exists.
    pub group: Option<GroupInfo>,
    /// Its members, the owning one first.
    pub members: Vec<MemberInfo>,
    /// The asker's invitation, if one holds: who invited.
    pub invitation: Option<EntityId>,
    /// The asker's user, if it is enrolled.
    pub asker_owner: Option<UserId>,
    /// How many groups the asker is a member of.
    pub asker_groups: u32,
    /// Where pushing to the entity the load named as `also` goes, if it can be reached.
    pub also: Option<Reach>,
}

/// What a group request does, decoded.
#[derive(Debug)]
pub(super) enum GroupOp {
    Create(GroupCreate),
    Delete,
    Invite(EntityId),
    Answer(bool),
    Join,
    Leave,
    Expel(EntityId),
    Key,
    Members,
    Send(Box<GroupContentBox>),
}

/// A group request waiting for its group.
#[derive(Debug)]
pub(super) struct GroupLoad {
    call: Call,
    group_id: GroupId,
    op: GroupOp,
    now_ms: i64,
}

impl GroupLoad {
    /// The request and the PNE it answers.
    pub(super) fn asker(&self) -> (u64, cpns_wire::Address) {
        self.call.asker()
    }
}

/// What to do once a group change is stored.
#[derive(Debug)]
pub(super) struct GroupWrite {
    call: Call,
    /// The call's service, which its answer names.
    service: &'static str,
    group_id: GroupId,
    name: String,
    now_ms: i64,
    then: Then,
}

/// What follows a stored group change.
#[derive(Debug)]
enum Then {
    /// The asker gets the key of `epoch` (a create, a join).
    AnswerKey { epoch: u64, key: GroupKey },
    /// The asker is told `GroupDone` at `epoch`.
    Done { epoch: u64 },
}

/// The pushes a stored change makes, with its answer.
#[derive(Debug, Default)]
pub(super) struct Pushes {
    /// The new epoch's key, to these members.
    key: Option<(u64, GroupKey, Vec<Reach>)>,
    /// The end of a membership, to this one.
    ended: Option<(Reach, GroupEndReason)>,
    /// An invitation, to this one.
    invited: Option<(Reach, GroupInvitation)>,
}

impl ServerSession {
    /// A PN GW asks for its owner (004 §5.5.9: "enables PNE and PN GW to request"): only the
    /// PN GW itself, in its session's budget, each request id answered once (a retry gets the
    /// same answer).
    pub(super) fn on_gateway_group(
        &mut self,
        now: Instant,
        gw: &Gw,
        env: &Envelope,
        m: GatewayGroupRequest,
    ) {
        if self.replay(&env.from, m.request_id, env) {
            return;
        }
        if env.from != Address::Entity(gw.id.clone()) {
            return self.reject(
                env,
                ErrorCode::Forbidden,
                "only the PN GW asks for its owner",
            );
        }
        if !is_group(&m.service) {
            let why = format!("{} is not a group service", m.service.escape_debug());
            return self.reject(env, ErrorCode::NotFound, &why);
        }
        if !self.admit(env) {
            return;
        }
        let call = Call::gateway(env.msg_id, gw.id.clone(), gw.owner.clone(), m.request_id);
        self.group_call(now, call, &m.service, &m.payload);
    }

    /// A group request, opened and its number taken.
    pub(super) fn group_call(&mut self, now: Instant, c: Call, service: &str, payload: &[u8]) {
        let Some(now_ms) = self.unix_ms(now) else {
            return self.refuse_call(&c, ErrorCode::Internal, "the server has no wall clock");
        };
        let limits = self.cfg.report_limits;
        if let Err(wait) = self.reporting().take_directory(now, &c.pne, limits) {
            let why = crate::rate::retry_in("group requests", wait);
            return self.refuse_call(&c, ErrorCode::RateLimited, &why);
        }
        let bad = || format!("the {service} request did not decode");
        let decoded = match service {
            GROUP_CREATE => minicbor::decode::<GroupCreate>(payload).map(|m| {
                let id = GroupId::from_bytes(self.rng.array());
                (id, GroupOp::Create(m))
            }),
            GROUP_INVITE => minicbor::decode::<GroupInvite>(payload)
                .map(|m| (m.group_id, GroupOp::Invite(m.invitee))),
            GROUP_ANSWER => minicbor::decode::<GroupAnswer>(payload)
                .map(|m| (m.group_id, GroupOp::Answer(m.accept))),
            GROUP_EXPEL => minicbor::decode::<GroupExpel>(payload)
                .map(|m| (m.group_id, GroupOp::Expel(m.member))),
            GROUP_SEND => minicbor::decode::<GroupContentBox>(payload)
                .map(|m| (m.group_id, GroupOp::Send(Box::new(m)))),
            _ => minicbor::decode::<GroupRef>(payload).map(|m| {
                let op = match service {
                    GROUP_DELETE => GroupOp::Delete,
                    GROUP_JOIN => GroupOp::Join,
                    GROUP_LEAVE => GroupOp::Leave,
                    GROUP_KEY => GroupOp::Key,
                    _ => GroupOp::Members,
                };
                (m.group_id, op)
            }),
        };
        let Ok((group_id, op)) = decoded else {
            return self.refuse_call(&c, ErrorCode::BadRequest, &bad());
        };
        if let GroupOp::Create(m) = &op
            && let Err(why) = check_name(&m.name)
        {
            return self.refuse_call(&c, ErrorCode::BadRequest, &why);
        }
        // A PN GW asks for its owner what a group's owner may; joining, leaving and answering
        // are a member's own acts, and keys and content are the members' only.
        let by_gateway = c.gateway_owner().is_some();
        if by_gateway
            && !matches!(
                op,
                GroupOp::Create(_)
                    | GroupOp::Invite(_)
                    | GroupOp::Expel(_)
                    | GroupOp::Delete
                    | GroupOp::Members
            )
        {
            let why = "a PN GW asks to create, invite, expel, delete or list members; the rest \
                       is a member's own to ask";
            return self.refuse_call(&c, ErrorCode::Forbidden, why);
        }
        let owning = match &op {
            GroupOp::Create(m) => match (&m.owning, by_gateway) {
                (None, true) => {
                    let why = "a PN GW names the PNE of its user that owns the group (`owning`)";
                    return self.refuse_call(&c, ErrorCode::BadRequest, why);
                }
                (Some(o), false) if *o != c.pne => {
                    let why = "a PNE makes a group it owns itself";
                    return self.refuse_call(&c, ErrorCode::Forbidden, why);
                }
                (o, _) => o.clone(),
            },
            _ => None,
        };
        if let GroupOp::Send(b) = &op
            && b.sealed.len() > MAX_CONTENT
        {
            let why = format!("group content is at most {} KiB", MAX_CONTENT / 1024);
            return self.refuse_call(&c, ErrorCode::BadRequest, &why);
        }
        let also = match &op {
            GroupOp::Invite(e) => Some(e.clone()),
            _ => owning.clone().filter(|_| by_gateway),
        };
        // A PN GW's creation is read as its owning PNE's: its user, its groups, its reach.
        let asker = match (&owning, by_gateway) {
            (Some(o), true) => o.clone(),
            _ => c.pne.clone(),
        };
        let load = Load::Group {
            group: group_id,
            asker,
            also,
            now_ms,
        };
        let parked = GroupLoad {
            call: c,
            group_id,
            op,
            now_ms,
        };
        self.load(Parked::GroupLoad(Box::new(parked)), load);
    }

    /// The group is read: the request is decided.
    pub(super) fn group_loaded(&mut self, p: GroupLoad, l: GroupLoaded) {
        let GroupLoad {
            call,
            group_id,
            op,
            now_ms,
        } = p;
        let Some(owner) = l.asker_owner.clone() else {
            return self.refuse_call(&call, ErrorCode::Forbidden, "the asker is not enrolled");
        };
        let gateway_owner = call.gateway_owner().cloned();
        if let GroupOp::Create(m) = op {
            if l.asker_groups >= MAX_GROUPS {
                let why = format!("a PNE is in at most {MAX_GROUPS} groups: leave one first");
                return self.refuse_call(&call, ErrorCode::Forbidden, &why);
            }
            let key = GroupKey::random(self.rng.get());
            // A PNE makes a group it owns, answered with its key; a PN GW makes one for a PNE
            // of its own user, which is pushed the key, and is answered without it.
            let (creator, creator_pn, then, pushes) = match (gateway_owner, m.owning) {
                (Some(gw_owner), Some(owning)) => {
                    if gw_owner != owner {
                        let why = format!("{owning} is not a device of this PN GW's owner");
                        return self.refuse_call(&call, ErrorCode::Forbidden, &why);
                    }
                    let Some(reach) = l.also.clone().filter(|r| r.entity == owning) else {
                        let why = format!("{owning} cannot be reached: it is in no PN with a key");
                        return self.refuse_call(&call, ErrorCode::NotFound, &why);
                    };
                    let pushes = Pushes {
                        key: Some((1, key.clone(), vec![reach.clone()])),
                        ..Pushes::default()
                    };
                    (owning, reach.pn_id, Then::Done { epoch: 1 }, pushes)
                }
                _ => (
                    call.pne.clone(),
                    call.pn_id,
                    Then::AnswerKey {
                        epoch: 1,
                        key: key.clone(),
                    },
                    Pushes::default(),
                ),
            };
            let effect = ServerEffect::CreateGroup {
                group: group_id,
                name: m.name.clone(),
                owner,
                creator,
                creator_pn,
                open_to_user: m.open_to_user,
                key,
                now_ms,
            };
            let write = GroupWrite {
                call,
                service: GROUP_CREATE,
                group_id,
                name: m.name,
                now_ms,
                then,
            };
            return self.persist(Parked::GroupWrite(Box::new((write, pushes))), effect);
        }
        let Some(g) = l.group.clone() else {
            let why = format!("no group {group_id}");
            return self.refuse_call(&call, ErrorCode::NotFound, &why);
        };
        let me = l.members.iter().find(|m| m.entity == call.pne);
        // The owning member, or a PN GW asking for the user that owns the group.
        let is_owner = match &gateway_owner {
            Some(u) => *u == g.owner,
            None => g.creator == call.pne,
        };
        let others = |except: &[&EntityId]| -> Vec<Reach> {
            l.members
                .iter()
                .filter(|m| !except.contains(&&m.entity))
                .filter_map(|m| m.reach.clone())
                .collect()
        };
        let done = |epoch| Then::Done { epoch };
        match op {
            GroupOp::Create(_) => {}
            GroupOp::Members if gateway_owner.is_some() && !is_owner => self.refuse_call(
                &call,
                ErrorCode::Forbidden,
                "only the PN GW of the group owner's user",
            ),
            GroupOp::Key | GroupOp::Members | GroupOp::Send(_)
                if me.is_none() && gateway_owner.is_none() =>
            {
                self.refuse_call(&call, ErrorCode::Forbidden, "only a member of the group")
            }
            GroupOp::Key => {
                let copy = key_copy(group_id, &g.name, g.epoch, &g.key);
                self.answer_service(&call, GROUP_KEY, &copy);
            }
            GroupOp::Members => {
                let members = GroupMembers {
                    group_id,
                    name: g.name.clone(),
                    epoch: g.epoch,
                    members: l
                        .members
                        .iter()
                        .map(|m| GroupMember {
                            entity: m.entity.clone(),
                            owner: m.owner.clone(),
                            is_owner: m.entity == g.creator,
                        })
                        .collect(),
                };
                self.answer_service(&call, GROUP_MEMBERS, &members);
            }
            GroupOp::Send(b) => {
                if b.sender != call.pne || b.certificate.pne_id != call.pne {
                    let why = "a PNE sends group content only as itself";
                    return self.refuse_call(&call, ErrorCode::Forbidden, why);
                }
                if b.epoch != g.epoch {
                    let why = format!(
                        "the group is at epoch {}, not {}: pull its key and seal again",
                        g.epoch, b.epoch
                    );
                    return self.refuse_call(&call, ErrorCode::Conflict, &why);
                }
                let to = others(&[&call.pne]);
                let delivered = u32::try_from(to.len()).unwrap_or(u32::MAX);
                for r in &to {
                    self.push(r, GROUP_CONTENT, b.as_ref(), now_ms);
                }
                let answer = GroupDone {
                    group_id,
                    epoch: g.epoch,
                    delivered,
                };
                self.answer_service(&call, GROUP_SEND, &answer);
            }
            GroupOp::Invite(invitee) => {
                if !is_owner {
                    return self.refuse_call(&call, ErrorCode::Forbidden, "only its owner invites");
                }
                if l.members.iter().any(|m| m.entity == invitee) {
                    let why = format!("{invitee} is a member already");
                    return self.refuse_call(&call, ErrorCode::Conflict, &why);
                }
                let Some(reach) = l.also.clone().filter(|r| r.entity == invitee) else {
                    let why = format!("{invitee} cannot be reached: it is in no PN with a key");
                    return self.refuse_call(&call, ErrorCode::NotFound, &why);
                };
                let expires = now_ms.saturating_add(INVITATION_MS);
                let invitation = GroupInvitation {
                    group_id,
                    name: g.name.clone(),
                    inviter: call.pne.clone(),
                    owner: g.owner.clone(),
                    expires_at_ms: u64::try_from(expires).unwrap_or(0),
                };
                let effect = ServerEffect::InviteToGroup {
                    group: group_id,
                    invitee,
                    inviter: call.pne.clone(),
                    expires_at_ms: expires,
                };
                let pushes = Pushes {
                    invited: Some((reach, invitation)),
                    ..Pushes::default()
                };
                let write = GroupWrite {
                    call,
                    service: GROUP_INVITE,
                    group_id,
                    name: g.name,
                    now_ms,
                    then: done(g.epoch),
                };
                self.persist(Parked::GroupWrite(Box::new((write, pushes))), effect);
            }
            GroupOp::Answer(false) => {
                if l.invitation.is_none() {
                    let why = format!("no invitation to group {group_id} holds");
                    return self.refuse_call(&call, ErrorCode::NotFound, &why);
                }
                let effect = ServerEffect::DropInvitation {
                    group: group_id,
                    invitee: call.pne.clone(),
                };
                let write = GroupWrite {
                    call,
                    service: GROUP_ANSWER,
                    group_id,
                    name: g.name,
                    now_ms,
                    then: done(g.epoch),
                };
                self.persist(
                    Parked::GroupWrite(Box::new((write, Pushes::default()))),
                    effect,
                );
            }
            GroupOp::Answer(true) | GroupOp::Join => {
                if me.is_some() {
                    return self.refuse_call(&call, ErrorCode::Conflict, "a member already");
                }
                let invited = l.invitation.is_some();
                let open = g.open_to_user && owner == g.owner;
                let by_invitation = matches!(op, GroupOp::Answer(true));
                if (by_invitation && !invited) || (!by_invitation && !open) {
                    let why = if by_invitation {
                        format!("no invitation to group {group_id} holds")
                    } else {
                        format!("group {group_id} takes members by invitation only")
                    };
                    let code = if by_invitation {
                        ErrorCode::NotFound
                    } else {
                        ErrorCode::Forbidden
                    };
                    return self.refuse_call(&call, code, &why);
                }
                if l.asker_groups >= MAX_GROUPS {
                    let why = format!("a PNE is in at most {MAX_GROUPS} groups: leave one first");
                    return self.refuse_call(&call, ErrorCode::Forbidden, &why);
                }
                if l.members.len() >= MAX_MEMBERS {
                    let why = format!("group {group_id} has its most members, {MAX_MEMBERS}");
                    return self.refuse_call(&call, ErrorCode::Forbidden, &why);
                }
                let key = GroupKey::random(self.rng.get());
                let epoch = g.epoch.saturating_add(1);
                let effect = ServerEffect::ChangeGroup {
                    group: group_id,
                    from_epoch: g.epoch,
                    key: key.clone(),
                    add: Some((call.pne.clone(), owner, call.pn_id)),
                    remove: Vec::new(),
                    now_ms,
                };
                let pushes = Pushes {
                    key: Some((epoch, key.clone(), others(&[]))),
                    ..Pushes::default()
                };
                let write = GroupWrite {
                    call,
                    service: if by_invitation {
                        GROUP_ANSWER
                    } else {
                        GROUP_JOIN
                    },
                    group_id,
                    name: g.name,
                    now_ms,
                    then: Then::AnswerKey { epoch, key },
                };
                self.persist(Parked::GroupWrite(Box::new((write, pushes))), effect);
            }
            GroupOp::Leave | GroupOp::Expel(_) | GroupOp::Delete => {
                let leaving = match &op {
                    GroupOp::Leave => Some(call.pne.clone()),
                    GroupOp::Expel(m) => Some(m.clone()),
                    _ => None,
                };
                let refusal = match (&op, &leaving) {
                    (GroupOp::Leave, _) if me.is_none() => {
                        Some((ErrorCode::NotFound, "not a member of the group".to_string()))
                    }
                    (GroupOp::Leave, _) if is_owner => Some((
                        ErrorCode::Conflict,
                        "its owner deletes the group instead of leaving it".to_string(),
                    )),
                    (GroupOp::Expel(_) | GroupOp::Delete, _) if !is_owner => Some((
                        ErrorCode::Forbidden,
                        "only its owner expels or deletes".to_string(),
                    )),
                    (GroupOp::Expel(m), _) if *m == g.creator => Some((
                        ErrorCode::Conflict,
                        "its owner cannot be expelled: delete the group".to_string(),
                    )),
                    (GroupOp::Expel(m), _) if !l.members.iter().any(|x| x.entity == *m) => {
                        Some((ErrorCode::NotFound, format!("{m} is not a member")))
                    }
                    _ => None,
                };
                if let Some((code, why)) = refusal {
                    return self.refuse_call(&call, code, &why);
                }
                let Some(gone) = leaving else {
                    // A deletion: every other member is told, then the group is no more.
                    let effect = ServerEffect::DeleteGroup { group: group_id };
                    // Every member but the one that asked (a PN GW asking is none of them).
                    let ends: Vec<Reach> = l
                        .members
                        .iter()
                        .filter(|m| m.entity != call.pne)
                        .filter_map(|m| m.reach.clone())
                        .collect();
                    let write = GroupWrite {
                        call,
                        service: GROUP_DELETE,
                        group_id,
                        name: g.name,
                        now_ms,
                        then: done(0),
                    };
                    return self.persist(Parked::GroupDelete(Box::new((write, ends))), effect);
                };
                let key = GroupKey::random(self.rng.get());
                let epoch = g.epoch.saturating_add(1);
                let expelled = matches!(op, GroupOp::Expel(_));
                let ended = l
                    .members
                    .iter()
                    .find(|m| m.entity == gone)
                    .and_then(|m| m.reach.clone())
                    .filter(|_| expelled)
                    .map(|r| (r, GroupEndReason::Expelled));
                let effect = ServerEffect::ChangeGroup {
                    group: group_id,
                    from_epoch: g.epoch,
                    key: key.clone(),
                    add: None,
                    remove: vec![gone.clone()],
                    now_ms,
                };
                let pushes = Pushes {
                    key: Some((epoch, key, others(&[&gone]))),
                    ended,
                    invited: None,
                };
                let write = GroupWrite {
                    call,
                    service: if expelled { GROUP_EXPEL } else { GROUP_LEAVE },
                    group_id,
                    name: g.name,
                    now_ms,
                    then: done(epoch),
                };
                self.persist(Parked::GroupWrite(Box::new((write, pushes))), effect);
            }
        }
    }

    /// A group change is stored: the pushes go, and the asker is answered.
    pub(super) fn group_written(
        &mut self,
        w: GroupWrite,
        pushes: Pushes,
        result: Result<Persisted, crate::StoreFailure>,
    ) {
        let service = w.service;
        match result {
            Ok(Persisted::Done | Persisted::Removed(_)) => {}
            Ok(_) => {
                return self.refuse_call(&w.call, ErrorCode::Internal, "the store said nothing");
            }
            Err(crate::StoreFailure::Conflict(why)) => {
                return self.refuse_call(&w.call, ErrorCode::Conflict, &why);
            }
            Err(e) => {
                return self.refuse_call(&w.call, ErrorCode::Internal, &format!("store: {e}"));
            }
        }
        if let Some((epoch, key, to)) = &pushes.key {
            let copy = key_copy(w.group_id, &w.name, *epoch, key);
            for r in to {
                self.push(r, GROUP_KEY_PUSH, &copy, w.now_ms);
            }
        }
        if let Some((r, why)) = &pushes.ended {
            let ended = GroupEnded {
                group_id: w.group_id,
                why: *why,
            };
            self.push(r, GROUP_ENDED, &ended, w.now_ms);
        }
        if let Some((r, invitation)) = &pushes.invited {
            self.push(r, GROUP_INVITED, invitation, w.now_ms);
        }
        match w.then {
            Then::AnswerKey { epoch, key } => {
                let copy = key_copy(w.group_id, &w.name, epoch, &key);
                self.answer_service(&w.call, service, &copy);
            }
            Then::Done { epoch } => {
                let done = GroupDone {
                    group_id: w.group_id,
                    epoch,
                    delivered: 0,
                };
                self.answer_service(&w.call, service, &done);
            }
        }
    }

    /// A group is deleted (or the store failed): its other members are told it ended.
    pub(super) fn group_deleted(
        &mut self,
        w: GroupWrite,
        ends: Vec<Reach>,
        result: Result<Persisted, crate::StoreFailure>,
    ) {
        match result {
            Ok(Persisted::Removed(true)) => {
                let ended = GroupEnded {
                    group_id: w.group_id,
                    why: GroupEndReason::Deleted,
                };
                for r in &ends {
                    self.push(r, GROUP_ENDED, &ended, w.now_ms);
                }
                let done = GroupDone {
                    group_id: w.group_id,
                    epoch: 0,
                    delivered: 0,
                };
                self.answer_service(&w.call, GROUP_DELETE, &done);
            }
            Ok(_) => {
                let why = format!("no group {}", w.group_id);
                self.refuse_call(&w.call, ErrorCode::NotFound, &why);
            }
            Err(e) => self.refuse_call(&w.call, ErrorCode::Internal, &format!("store: {e}")),
        }
    }

    /// Seals `payload` as the notice `service` to the PNE `r` reaches, through its PN GW
    /// (docs/security.md §4.8, "Notices"): group pushes and service matches alike.
    pub(super) fn push<T: minicbor::Encode<()>>(
        &mut self,
        r: &Reach,
        service: &str,
        payload: &T,
        now_ms: i64,
    ) {
        let plain = SecureCall {
            service: service.into(),
            payload: minicbor::to_vec(payload).unwrap_or_default(),
        };
        let notice_id = self.cfg.notices.next(now_ms);
        let binding = NoticeBinding {
            pn_id: r.pn_id.as_bytes(),
            pne_id: r.entity.as_str(),
            notice_id,
        };
        let plain = minicbor::to_vec(&plain).unwrap_or_default();
        let Ok(sealed) = seal_secure_notice(self.rng.get(), &r.session_key, &binding, &plain)
        else {
            return;
        };
        self.out.push_back(super::ServerOutput::Notice {
            gateway: r.gateway.clone(),
            to: r.entity.clone(),
            notice: SecureNotice {
                pn_id: r.pn_id,
                notice_id,
                sealed,
            },
        });
    }
}

/// A member's copy of the key of `epoch`.
fn key_copy(group_id: GroupId, name: &str, epoch: u64, key: &GroupKey) -> GroupKeyCopy {
    GroupKeyCopy {
        group_id,
        name: name.to_string(),
        epoch,
        key: KeyBytes(*key.expose_secret()),
    }
}

/// A group's name: 1 to 64 characters, no control character.
fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 64 || name.chars().any(char::is_control) {
        return Err("a group's name is 1 to 64 characters, none a control character".into());
    }
    Ok(())
}
