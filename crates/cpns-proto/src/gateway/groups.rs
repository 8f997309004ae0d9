//! Service groups asked by the PN GW's owner (004 §5.5.9: "enables PNE and PN GW to request";
//! docs/services.md, "Service groups"): make a group for a PNE of its user, invite, expel,
//! delete and list the members of the groups its user owns. Each is a Gateway Group Request on
//! the PN GW's own session; the server decides who may, and nothing it answers holds a key (a
//! group's key goes only to its members, sealed to each).

use std::time::Instant;

use cpns_wire::{
    EntityId, GROUP_CREATE, GROUP_DELETE, GROUP_EXPEL, GROUP_INVITE, GROUP_MEMBERS,
    GatewayGroupRequest, GroupCreate, GroupExpel, GroupId, GroupInvite, GroupRef, RequestId,
};

use super::Gateway;
use super::outcome::Asked;
use crate::{CommandError, CommandId};

impl Gateway {
    /// Makes a service group owned by `owning`, a PNE of this PN GW's user, which is pushed the
    /// key. Completes with [`super::Outcome::GroupDone`] (epoch 1).
    pub fn create_group(
        &mut self,
        now: Instant,
        name: String,
        open_to_user: bool,
        owning: EntityId,
    ) -> Result<CommandId, CommandError> {
        let m = GroupCreate {
            name,
            open_to_user,
            owning: Some(owning),
        };
        self.ask_group(now, GROUP_CREATE, &m)
    }

    /// Invites a PNE into a group this PN GW's user owns. Completes with
    /// [`super::Outcome::GroupDone`].
    pub fn invite_to_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
        invitee: EntityId,
    ) -> Result<CommandId, CommandError> {
        self.ask_group(now, GROUP_INVITE, &GroupInvite { group_id, invitee })
    }

    /// Expels a member of a group this PN GW's user owns. Completes with
    /// [`super::Outcome::GroupDone`] at the group's next epoch.
    pub fn expel_from_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
        member: EntityId,
    ) -> Result<CommandId, CommandError> {
        self.ask_group(now, GROUP_EXPEL, &GroupExpel { group_id, member })
    }

    /// Deletes a group this PN GW's user owns; every member is told. Completes with
    /// [`super::Outcome::GroupDone`] (epoch 0).
    pub fn delete_group(
        &mut self,
        now: Instant,
        group_id: GroupId,
    ) -> Result<CommandId, CommandError> {
        self.ask_group(now, GROUP_DELETE, &GroupRef { group_id })
    }

    /// The members of a group this PN GW's user owns. Completes with
    /// [`super::Outcome::GroupMembers`].
    pub fn group_members(
        &mut self,
        now: Instant,
        group_id: GroupId,
    ) -> Result<CommandId, CommandError> {
        self.ask_group(now, GROUP_MEMBERS, &GroupRef { group_id })
    }

    fn ask_group<T: minicbor::Encode<()>>(
        &mut self,
        now: Instant,
        service: &'static str,
        payload: &T,
    ) -> Result<CommandId, CommandError> {
        if self.flows_in_progress() >= self.cfg.limits.flows {
            return Err(CommandError::Busy);
        }
        if !self.wan_ready() {
            return Err(CommandError::NoServerSession);
        }
        let req = GatewayGroupRequest {
            request_id: RequestId(self.rng.u64()),
            service: service.into(),
            payload: minicbor::to_vec(payload).unwrap_or_default(),
        };
        let msg = self.send_wan_request(req).ok_or(CommandError::TooLarge)?;
        let id = self.commands.next();
        self.wait_owner(now, msg, Asked::Group, id);
        Ok(id)
    }
}
