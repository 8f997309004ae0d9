//! The PNE's side of service groups (004 §5.5.9, §5.5.7.2; docs/services.md, "Service
//! groups"): its requests, each a secure call to the server ([`super::secure`]); the keys of its
//! groups, as its answers and the server's pushes give them; and the pushes (a new epoch's key,
//! an invitation, the end of a membership) told as events. A key is taken only from a payload
//! sealed end to end to this PNE, and only if its epoch is newer than the one held.

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_crypto::{ContentBinding, GroupKey};
use cpns_wire::{
    EntityId, GROUP_ANSWER, GROUP_CONTENT, GROUP_CREATE, GROUP_DELETE, GROUP_ENDED, GROUP_EXPEL,
    GROUP_INVITE, GROUP_INVITED, GROUP_JOIN, GROUP_KEY, GROUP_KEY_PUSH, GROUP_LEAVE, GROUP_MEMBERS,
    GROUP_SEND, GroupAnswer, GroupContentBox, GroupCreate, GroupDone, GroupEnded, GroupExpel,
    GroupId, GroupInvitation, GroupInvite, GroupKeyCopy, GroupMembers, GroupRef, SecureCall,
    UserId,
};

use super::content::open_member_content;
use super::{Outcome, PneEvent, PneOutput, PneSession};
use crate::{CommandError, CommandId, Failure, Flow};

/// The largest content one send to a service group carries: the sealed box (its signature,
/// nonce and tag added) stays within the 256 KiB the server relays.
pub const MAX_SERVICE_GROUP_CONTENT: usize = 256 * 1024 - 256;

/// A group's key as this PNE holds it.
#[derive(Clone, Debug)]
pub struct HeldGroup {
    /// The group's name.
    pub name: String,
    /// The epoch held.
    pub epoch: u64,
    /// Its key.
    pub key: GroupKey,
}

/// The keys of this PNE's groups.
pub(super) type HeldGroups = BTreeMap<GroupId, HeldGroup>;

impl PneSession {
    /// Makes a service group with this PNE as its owning member. Completes with
    /// [`Outcome::ServiceGroupKey`] (epoch 1), the key kept.
    pub fn create_group(
        &mut self,
        now: Instant,
        name: String,
        open_to_user: bool,
    ) -> Result<CommandId, CommandError> {
        let m = GroupCreate {
            name,
            open_to_user,
            owning: None,
        };
        self.group_call(now, GROUP_CREATE, &m)
    }

    /// Invites a PNE into a group this PNE owns. Completes with [`Outcome::ServiceGroupDone`].
    pub fn invite_to_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
        invitee: EntityId,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_INVITE, &GroupInvite { group_id, invitee })
    }

    /// Answers an invitation (the consent, or a refusal). Completes with [`Outcome::ServiceGroupKey`]
    /// once a member, or [`Outcome::ServiceGroupDone`] for a refusal.
    pub fn answer_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
        accept: bool,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_ANSWER, &GroupAnswer { group_id, accept })
    }

    /// Joins a group open to its owner's devices. Completes with [`Outcome::ServiceGroupKey`].
    pub fn join_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_JOIN, &GroupRef { group_id })
    }

    /// Leaves a group; its key is forgotten. Completes with [`Outcome::ServiceGroupDone`].
    pub fn leave_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_LEAVE, &GroupRef { group_id })
    }

    /// Expels a member of a group this PNE owns. Completes with [`Outcome::ServiceGroupDone`].
    pub fn expel_from_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
        member: EntityId,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_EXPEL, &GroupExpel { group_id, member })
    }

    /// Deletes a group this PNE owns; its key is forgotten. Completes with
    /// [`Outcome::ServiceGroupDone`].
    pub fn delete_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_DELETE, &GroupRef { group_id })
    }

    /// Pulls a group's current key (a member away during a change). Completes with
    /// [`Outcome::ServiceGroupKey`], the key kept.
    pub fn pull_service_group_key(
        &mut self,
        now: Instant,
        group_id: GroupId,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_KEY, &GroupRef { group_id })
    }

    /// Reads a group's members. Completes with [`Outcome::ServiceGroupMembers`].
    pub fn group_members(
        &mut self,
        now: Instant,
        group_id: GroupId,
    ) -> Result<CommandId, CommandError> {
        self.group_call(now, GROUP_MEMBERS, &GroupRef { group_id })
    }

    /// Sends `content` to the other members of a service group: signed by this PNE and sealed
    /// under the group's key of the epoch it holds (docs/security.md §4.11, the group id in the
    /// binding's place of a PN's), so the PN GWs and the server relay what they cannot read.
    /// Completes with [`Outcome::ServiceGroupSent`]; a group that moved to a newer epoch
    /// refuses it (`conflict`): pull the key and send again.
    pub fn send_to_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
        content: &[u8],
    ) -> Result<CommandId, CommandError> {
        let Some(signing) = self.cfg.signing.clone() else {
            return Err(CommandError::NoCertificate);
        };
        let Some(signer) = self.signer.as_ref() else {
            return Err(CommandError::NoCertificate);
        };
        let Some(held) = self.groups.get(&group_id) else {
            return Err(CommandError::NoServiceGroupKey(group_id));
        };
        let limit =
            MAX_SERVICE_GROUP_CONTENT.min((self.cfg.max_frame as usize).saturating_sub(2048));
        if content.len() > limit {
            return Err(CommandError::TooLarge);
        }
        let content_id = self.rng.u64();
        let binding = ContentBinding {
            pn_id: group_id.as_bytes(),
            epoch: held.epoch,
            sender: self.cfg.id.as_str(),
            content_id,
        };
        let sealed =
            cpns_crypto::seal_group_content(self.rng.get(), &held.key, signer, &binding, content)?;
        let b = GroupContentBox {
            group_id,
            epoch: held.epoch,
            sender: self.cfg.id.clone(),
            content_id,
            sealed,
            certificate: signing.certificate,
        };
        self.group_call(now, GROUP_SEND, &b)
    }

    /// Takes the service group keys the device's store kept (before any link): each is
    /// held as if pulled, so content of the group opens before the server is asked again.
    pub fn restore_groups(&mut self, kept: impl IntoIterator<Item = (GroupId, HeldGroup)>) {
        for (group_id, held) in kept {
            self.groups.insert(group_id, held);
        }
    }

    /// The groups whose key this PNE holds, with their epochs.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupId, &HeldGroup)> {
        self.groups.iter()
    }

    fn group_call<T: minicbor::Encode<()>>(
        &mut self,
        now: Instant,
        service: &str,
        payload: &T,
    ) -> Result<CommandId, CommandError> {
        self.typed_call(now, service, payload, Flow::ServiceGroup)
    }

    /// The server's answer to a group call: a key is kept, a group left or deleted forgotten.
    pub(super) fn group_answered(&mut self, a: SecureCall) -> Result<Outcome, Failure> {
        let bad = |_| Failure::AnswerDidNotOpen;
        let key_answer = matches!(
            a.service.as_str(),
            GROUP_CREATE | GROUP_JOIN | GROUP_KEY | GROUP_ANSWER
        );
        if key_answer && let Ok(copy) = minicbor::decode::<GroupKeyCopy>(&a.payload) {
            let epoch = copy.epoch;
            let group_id = copy.group_id;
            self.keep_group_key(copy);
            return Ok(Outcome::ServiceGroupKey { group_id, epoch });
        }
        match a.service.as_str() {
            GROUP_SEND => minicbor::decode::<GroupDone>(&a.payload)
                .map(|d| Outcome::ServiceGroupSent {
                    group_id: d.group_id,
                    epoch: d.epoch,
                    delivered: d.delivered,
                })
                .map_err(bad),
            GROUP_MEMBERS => minicbor::decode::<GroupMembers>(&a.payload)
                .map(|m| Outcome::ServiceGroupMembers(Box::new(m)))
                .map_err(bad),
            GROUP_INVITE | GROUP_ANSWER | GROUP_LEAVE | GROUP_EXPEL | GROUP_DELETE => {
                let done = minicbor::decode::<GroupDone>(&a.payload).map_err(bad)?;
                if matches!(a.service.as_str(), GROUP_LEAVE | GROUP_DELETE) {
                    self.forget_group(&done.group_id);
                }
                Ok(Outcome::ServiceGroupDone {
                    group_id: done.group_id,
                    epoch: done.epoch,
                })
            }
            _ => Err(Failure::AnswerDidNotOpen),
        }
    }

    /// Keeps a group's key if its epoch is newer than the one held; whether it was.
    fn keep_group_key(&mut self, copy: GroupKeyCopy) -> bool {
        if self
            .groups
            .get(&copy.group_id)
            .is_some_and(|held| held.epoch >= copy.epoch)
        {
            return false;
        }
        let held = HeldGroup {
            name: copy.name.clone(),
            epoch: copy.epoch,
            key: GroupKey::from_bytes(copy.key.0),
        };
        self.out.push_back(PneOutput::KeepGroup {
            group_id: copy.group_id,
            group: held.clone(),
        });
        self.groups.insert(copy.group_id, held);
        true
    }

    /// A group push, opened: told as an event (a key only when it is newer).
    pub(super) fn on_group_notice(&mut self, call: SecureCall) {
        match call.service.as_str() {
            GROUP_KEY_PUSH => {
                let Ok(copy) = minicbor::decode::<GroupKeyCopy>(&call.payload) else {
                    return;
                };
                let (group_id, epoch) = (copy.group_id, copy.epoch);
                if self.keep_group_key(copy) {
                    self.event(PneEvent::ServiceGroupKey { group_id, epoch });
                }
            }
            GROUP_INVITED => {
                if let Ok(m) = minicbor::decode::<GroupInvitation>(&call.payload) {
                    self.event(PneEvent::ServiceGroupInvited(m));
                }
            }
            GROUP_CONTENT => {
                if let Ok(m) = minicbor::decode::<GroupContentBox>(&call.payload) {
                    self.on_service_group_content(m);
                }
            }
            GROUP_ENDED => {
                if let Ok(m) = minicbor::decode::<GroupEnded>(&call.payload) {
                    self.forget_group(&m.group_id);
                    self.event(PneEvent::ServiceGroupEnded {
                        group_id: m.group_id,
                        why: m.why,
                    });
                }
            }
            _ => {}
        }
    }

    /// A group this PNE is no longer in: its key and the content ids seen go.
    fn forget_group(&mut self, group_id: &GroupId) {
        if self.groups.remove(group_id).is_some() {
            self.out.push_back(PneOutput::ForgetGroup {
                group_id: *group_id,
            });
        }
        self.group_content_seen.forget(group_id);
    }

    /// Content another member sent, pushed by the server: told as
    /// [`PneEvent::ServiceGroupContent`] once every check passed, else as
    /// [`PneEvent::ServiceGroupContentRefused`] with the check that failed.
    fn on_service_group_content(&mut self, m: GroupContentBox) {
        let (group_id, from) = (m.group_id, m.sender.clone());
        let event = match self.accept_group_content(&m) {
            Ok((owner, content)) => PneEvent::ServiceGroupContent {
                group_id,
                epoch: m.epoch,
                from,
                owner,
                content,
            },
            Err(why) => PneEvent::ServiceGroupContentRefused {
                group_id,
                from,
                reason: Failure::ContentRefused(why),
            },
        };
        self.event(event);
    }

    fn accept_group_content(&mut self, m: &GroupContentBox) -> Result<(UserId, Vec<u8>), String> {
        let Some(signing) = self.cfg.signing.as_ref() else {
            return Err("this PNE has no authority key to check who sent it".into());
        };
        if m.sender == self.cfg.id {
            return Err("it names this PNE as its sender".into());
        }
        let Some(held) = self.groups.get(&m.group_id) else {
            return Err("this PNE holds no key of the group".into());
        };
        if held.epoch != m.epoch {
            return Err(format!(
                "it is sealed under epoch {}, and this PNE holds epoch {}",
                m.epoch, held.epoch
            ));
        }
        let binding = ContentBinding {
            pn_id: m.group_id.as_bytes(),
            epoch: m.epoch,
            sender: m.sender.as_str(),
            content_id: m.content_id,
        };
        let plain = open_member_content(
            &mut self.certified,
            &signing.authority,
            &held.key,
            &binding,
            &m.certificate,
            &m.sealed,
        )?;
        if !self
            .group_content_seen
            .first_time(m.group_id, &m.sender, m.content_id)
        {
            return Err("it was received before (a replay)".into());
        }
        Ok((m.certificate.owner.clone(), plain))
    }
}
