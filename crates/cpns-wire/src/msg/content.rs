//! Group content: what a member sends the other members of a PN, signed by it and sealed under
//! the PN's group key of an epoch (docs/security.md §4.10, §4.11). The PN GW relays it to the
//! members linked to it and can neither read it nor pass it off as another member's.

use minicbor::{Decode, Encode};

use super::common::{PublicKeyBytes, SignatureBytes};
use crate::ids::{EntityId, PnId, UserId};

/// The server's word that `key` is the signing key of PNE `pne_id` of user `owner`
/// (docs/security.md §4.11): a device checks it with the authority key of its credential.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MemberCertificate {
    /// The PNE.
    #[n(0)]
    pub pne_id: EntityId,
    /// Its user.
    #[n(1)]
    pub owner: UserId,
    /// Its Ed25519 signing key, vk_m.
    #[n(2)]
    pub key: PublicKeyBytes,
    /// The server's Ed25519 signature.
    #[n(3)]
    pub signature: SignatureBytes,
}

/// Group Content: a request from a member to its PN GW (`sender` is that member), which
/// relays the same message, unchanged, as a notification to each other member of the PN linked
/// to it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupContent {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// The group key epoch it is sealed under.
    #[n(1)]
    pub epoch: u64,
    /// The member that signed it.
    #[n(2)]
    pub sender: EntityId,
    /// The sender's random id for it: a receiver refuses an id it saw.
    #[n(3)]
    pub content_id: u64,
    /// `cpns_crypto::seal_group_content`: the signature and the plaintext.
    #[n(4)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
    /// The sender's certificate.
    #[n(5)]
    pub certificate: MemberCertificate,
}

/// The PN GW's answer to a [`GroupContent`] request: to how many members it relayed it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct GroupContentSent {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// Members linked to the PN GW that were sent it.
    #[n(1)]
    pub delivered: u32,
}
