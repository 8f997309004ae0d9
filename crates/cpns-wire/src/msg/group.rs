//! Service groups (004 §5.5.9, §5.5.7.2; docs/services.md, "Service groups"): a group of PNEs,
//! across PNs and users, with a key of its own moved to a new epoch on every membership change.
//! Every request is a secure call of a PNE and every push a secure notice (docs/security.md
//! §4.8), so the PN GWs and the network relay what they cannot read; these are the payloads.
//! The key travels only inside such a sealed payload, to the member it is sealed for.

use minicbor::{Decode, Encode};

use crate::ids::{EntityId, GroupId, UserId};
use crate::msg::content::MemberCertificate;

/// The secure call that makes a group: payload [`GroupCreate`], answer [`GroupKeyCopy`] (the
/// creator is its first member, and holds epoch 1).
pub const GROUP_CREATE: &str = "cpns.group.create";
/// Deletes a group (its owner only): payload [`GroupRef`], answer [`GroupDone`].
pub const GROUP_DELETE: &str = "cpns.group.delete";
/// Invites a PNE (its owner only): payload [`GroupInvite`], answer [`GroupDone`].
pub const GROUP_INVITE: &str = "cpns.group.invite";
/// Answers an invitation: payload [`GroupAnswer`], answer [`GroupKeyCopy`] once joined, or
/// [`GroupDone`] for a decline.
pub const GROUP_ANSWER: &str = "cpns.group.answer";
/// Joins a group open to its owner's devices: payload [`GroupRef`], answer [`GroupKeyCopy`].
pub const GROUP_JOIN: &str = "cpns.group.join";
/// Leaves a group: payload [`GroupRef`], answer [`GroupDone`].
pub const GROUP_LEAVE: &str = "cpns.group.leave";
/// Expels a member (the owner only): payload [`GroupExpel`], answer [`GroupDone`].
pub const GROUP_EXPEL: &str = "cpns.group.expel";
/// Pulls the current key (a member only): payload [`GroupRef`], answer [`GroupKeyCopy`].
pub const GROUP_KEY: &str = "cpns.group.key";
/// Reads the members (a member only): payload [`GroupRef`], answer [`GroupMembers`].
pub const GROUP_MEMBERS: &str = "cpns.group.members";
/// Sends content to the other members: payload [`GroupContentBox`], answer [`GroupDone`]
/// (`delivered`: members told).
pub const GROUP_SEND: &str = "cpns.group.send";
/// The notice of a new epoch's key, pushed to each member: payload [`GroupKeyCopy`].
pub const GROUP_KEY_PUSH: &str = "cpns.group.key-push";
/// The notice of an invitation: payload [`GroupInvitation`].
pub const GROUP_INVITED: &str = "cpns.group.invited";
/// The notice that a membership ended: payload [`GroupEnded`].
pub const GROUP_ENDED: &str = "cpns.group.ended";
/// The notice of content from another member: payload [`GroupContentBox`].
pub const GROUP_CONTENT: &str = "cpns.group.content";

/// A group's key bytes, 32, as they travel inside a sealed payload: shown as `[redacted]`, and
/// overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes(pub [u8; 32]);

impl core::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyBytes([redacted])")
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl<C> Encode<C> for KeyBytes {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
        _: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.bytes(&self.0)?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for KeyBytes {
    fn decode(d: &mut minicbor::Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        let p = d.position();
        let b: [u8; 32] = d
            .bytes()?
            .try_into()
            .map_err(|_| minicbor::decode::Error::message("a group key is 32 bytes").at(p))?;
        Ok(Self(b))
    }
}

/// Group Create.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupCreate {
    /// For people, 1 to 64 characters.
    #[n(0)]
    pub name: String,
    /// Any device of the owner's user may join without an invitation.
    #[n(1)]
    #[cbor(default)]
    pub open_to_user: bool,
    /// When a PN GW asks for its owner: the PNE of that user that owns the group, its owning
    /// member (pushed the first key). Absent when a PNE asks: it owns the group itself.
    #[n(2)]
    pub owning: Option<EntityId>,
}

/// Names a group.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupRef {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
}

/// Group Invite.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupInvite {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// The PNE invited.
    #[n(1)]
    pub invitee: EntityId,
}

/// Group Answer: the invitee's consent, or its refusal.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupAnswer {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// Whether it joins.
    #[n(1)]
    pub accept: bool,
}

/// Group Expel.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupExpel {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// The member expelled.
    #[n(1)]
    pub member: EntityId,
}

/// What a group request did that has no other answer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupDone {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// Its epoch now (0: deleted).
    #[n(1)]
    pub epoch: u64,
    /// For a send: members told.
    #[n(2)]
    #[cbor(default)]
    pub delivered: u32,
}

/// A member's copy of a group's key of one epoch, inside a sealed answer or notice.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupKeyCopy {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// Its name.
    #[n(1)]
    pub name: String,
    /// The epoch.
    #[n(2)]
    pub epoch: u64,
    /// The key of that epoch.
    #[n(3)]
    pub key: KeyBytes,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupMember {
    /// The PNE.
    #[n(0)]
    pub entity: EntityId,
    /// Its user.
    #[n(1)]
    pub owner: UserId,
    /// Whether it owns the group.
    #[n(2)]
    #[cbor(default)]
    pub is_owner: bool,
}

/// Group Members.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupMembers {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// Its name.
    #[n(1)]
    pub name: String,
    /// Its epoch now.
    #[n(2)]
    pub epoch: u64,
    /// Its members, the owner first.
    #[n(3)]
    #[cbor(default)]
    pub members: Vec<GroupMember>,
}

/// Group Invitation: a notice to the invitee.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupInvitation {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// Its name.
    #[n(1)]
    pub name: String,
    /// Who invited.
    #[n(2)]
    pub inviter: EntityId,
    /// The group's owner (a user).
    #[n(3)]
    pub owner: UserId,
    /// Until when the invitation holds (Unix milliseconds).
    #[n(4)]
    pub expires_at_ms: u64,
}

/// Why a membership ended, as [`GroupEnded`] tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(index_only)]
pub enum GroupEndReason {
    /// The owner deleted the group.
    #[n(1)]
    Deleted,
    /// The owner expelled this member.
    #[n(2)]
    Expelled,
}

/// Group Ended: a notice to a member whose membership ended by another's act.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupEnded {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// Why.
    #[n(1)]
    pub why: GroupEndReason,
}

/// Gateway Group Request: a PN GW asks, for its owner, what the owner of a service group may
/// (004 §5.5.9: "enables PNE and PN GW to request"): `create` (for a PNE of its user, named in
/// [`GroupCreate::owning`]), `invite`, `expel`, `delete`, `members`, of groups its user owns.
/// Not sealed end to end: the PN GW's own authenticated session carries it, and nothing it asks
/// or is answered holds a key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GatewayGroupRequest {
    /// Chosen by the PN GW; a retry carries the same one.
    #[n(0)]
    pub request_id: crate::RequestId,
    /// The group service (`cpns.group.create`, …).
    #[n(1)]
    pub service: String,
    /// Its payload, as a PNE's secure call of the same service carries it.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub payload: Vec<u8>,
}

/// Gateway Group Response: the server's answer to a [`GatewayGroupRequest`] (a
/// [`GroupDone`] or [`GroupMembers`], encoded).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GatewayGroupResponse {
    /// The request's id.
    #[n(0)]
    pub request_id: crate::RequestId,
    /// The service answered.
    #[n(1)]
    pub service: String,
    /// The answer.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub payload: Vec<u8>,
}

/// Content for a group's members: sealed under the group key of `epoch` and signed by its
/// sender (`cpns_crypto::seal_group_content`, the group id in the binding's place of a PN's),
/// with the sender's certificate; the server relays it as it came.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupContentBox {
    /// The group.
    #[n(0)]
    pub group_id: GroupId,
    /// The key epoch it is sealed under.
    #[n(1)]
    pub epoch: u64,
    /// The member that signed it.
    #[n(2)]
    pub sender: EntityId,
    /// The sender's random id for it: a receiver refuses an id it saw.
    #[n(3)]
    pub content_id: u64,
    /// The signature and the plaintext, sealed.
    #[n(4)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
    /// The sender's certificate.
    #[n(5)]
    pub certificate: MemberCertificate,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_key_copy_never_shows_its_key_and_reads_back_whole() {
        let copy = GroupKeyCopy {
            group_id: GroupId::from_bytes([7; 16]),
            name: "album".into(),
            epoch: 2,
            key: KeyBytes([0xab; 32]),
        };
        let shown = format!("{copy:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.contains("ab, ab"),
            "{shown}"
        );
        let bytes = minicbor::to_vec(&copy).unwrap();
        assert_eq!(minicbor::decode::<GroupKeyCopy>(&bytes).unwrap(), copy);
        // A key of another length is no key.
        let short = minicbor::to_vec(GroupRef {
            group_id: GroupId::from_bytes([1; 16]),
        })
        .unwrap();
        assert!(minicbor::decode::<KeyBytes>(&short).is_err());
    }

    #[test]
    fn a_group_id_is_32_hex_digits() {
        let id = GroupId::from_bytes([0x0f; 16]);
        assert_eq!(id.to_string(), "0f".repeat(16));
        assert_eq!(id.to_string().parse::<GroupId>(), Ok(id));
        assert!("0f".repeat(15).parse::<GroupId>().is_err());
        assert!("zz".repeat(16).parse::<GroupId>().is_err());
    }
}
