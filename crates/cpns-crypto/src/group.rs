//! A PN's group key and its epochs (docs/pn-lifecycle.md, "Group key epochs"; docs/security.md
//! §4.10).
//!
//! At every membership change the server draws a new group key GK for the PN's next epoch and
//! seals one copy per current member, end to end under that member's K_dir(server → PNE) of
//! its SK_PNE for the PN, so the PN GW relays copies it cannot open and a member opens only its
//! own. Group content of an epoch is sealed under a key derived from that epoch's GK, so a
//! member that left or was expelled, which gets no copy of any later GK, cannot open content
//! sealed after its departure. A copy also names the PN's member list of its epoch, so a PNE
//! that opens it knows the list it came with is the server's, whoever relayed it:
//! ```text
//! copy    = nonce(12) ‖ ChaCha20-Poly1305(K(server → PNE, group key), nonce,
//!               T("cpns/v1/group-key") ‖ T(PN ID) ‖ T(u64be(epoch)) ‖ T(PNE ID)
//!               ‖ T(SHA-256(CBOR(inventory))) [‖ T(u64be(request id))], GK)
//! K_gc    = HKDF-SHA256(salt = none, IKM = GK, info = T("cpns/v1/group-content-key") ‖ T(PN ID) ‖ T(u64be(epoch)))
//! content = signed and sealed under K_gc, with its sender and content id (`crate::sign`)
//! at rest = nonce(12) ‖ ChaCha20-Poly1305(K_rest, nonce, T("cpns/v1/at-rest/group-key") ‖ T(PN ID) ‖ T(u64be(epoch)), GK)
//! ended   = nonce(12) ‖ ChaCha20-Poly1305(K(server → PNE, membership ended), nonce,
//!               T("cpns/v1/membership-ended") ‖ T(PN ID) ‖ T(PNE ID) ‖ T(u64be(request id))
//!               ‖ T(reason), reason)
//! ```
//! where `reason` is one byte, the `EndReason` code (1 removed, 2 released), and `request id`
//! the one of the PN Key Request the box answers: a copy answering a pull names it (a copy
//! pushed in an update names none), so a relay cannot answer a pull with an older recorded
//! answer (protocol version 2). Every box has a
//! `*_with_nonce` twin for the test vectors (docs/security-vectors.json, `group`); the sealing
//! functions draw the nonce and call it.

use zeroize::Zeroizing;

use crate::aead;
use crate::e2e::{E2eDirection, E2eKind, open_e2e, seal_e2e_with_nonce};

/// A copy's key: server to PNE, kind group key.
const COPY: (E2eDirection, E2eKind) = (E2eDirection::ServerToPne, E2eKind::GroupKey);
/// The membership-ended word's key.
const ENDED: (E2eDirection, E2eKind) = (E2eDirection::ServerToPne, E2eKind::MembershipEnded);
use crate::error::CryptoError;
use crate::kdf::{Transcript, derive_key};
use crate::keys::{GroupKey, KEY_LEN, MasterKey, SessionKey};
use crate::labels;
use crate::rng::CryptoRng;

/// What a sealed copy of a group key belongs to.
#[derive(Clone, Copy, Debug)]
pub struct GroupKeyBinding<'a> {
    /// The PN, 16 bytes.
    pub pn_id: &'a [u8; 16],
    /// The epoch the key is for.
    pub epoch: u64,
    /// The member the copy is sealed for.
    pub pne_id: &'a str,
    /// SHA-256 of the canonical CBOR of the PN's inventory of that epoch
    /// ([`crate::inventory_digest`]).
    pub inventory_digest: &'a [u8; 32],
    /// The request id of the PN Key Request the copy answers; `None` for a copy pushed in an
    /// update or an establishment.
    pub pull: Option<u64>,
}

pub(crate) fn copy_aad(b: &GroupKeyBinding<'_>) -> Vec<u8> {
    let mut t = Transcript::new(labels::GROUP_KEY_AAD);
    t.push(b.pn_id)
        .push(&b.epoch.to_be_bytes())
        .push(b.pne_id.as_bytes())
        .push(b.inventory_digest);
    if let Some(request) = b.pull {
        t.push(&request.to_be_bytes());
    }
    t.as_bytes().to_vec()
}

fn epoch_transcript(label: &'static str, pn_id: &[u8; 16], epoch: u64) -> Transcript {
    let mut t = Transcript::new(label);
    t.push(pn_id).push(&epoch.to_be_bytes());
    t
}

fn key_of(bytes: &[u8]) -> Result<GroupKey, CryptoError> {
    let arr: [u8; KEY_LEN] = bytes
        .try_into()
        .map_err(|_| CryptoError::Malformed("a group key is 32 bytes"))?;
    Ok(GroupKey::from_bytes(arr))
}

/// Seals `gk` for one member under K_dir(server → PNE) of its SK_PNE for the PN.
pub fn seal_group_key<R: CryptoRng + ?Sized>(
    rng: &mut R,
    sk_pne: &SessionKey,
    binding: &GroupKeyBinding<'_>,
    gk: &GroupKey,
) -> Vec<u8> {
    seal_group_key_with_nonce(sk_pne, binding, gk, nonce_from(rng))
}

/// [`seal_group_key`] with a caller-chosen nonce; deterministic, for test vectors. A nonce must
/// never repeat under one SK_PNE: production code calls [`seal_group_key`].
pub fn seal_group_key_with_nonce(
    sk_pne: &SessionKey,
    binding: &GroupKeyBinding<'_>,
    gk: &GroupKey,
    nonce: [u8; aead::NONCE_LEN],
) -> Vec<u8> {
    seal_e2e_with_nonce(sk_pne, COPY, &copy_aad(binding), gk.expose_secret(), nonce)
}

fn nonce_from<R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; aead::NONCE_LEN] {
    let mut nonce = [0u8; aead::NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    nonce
}

/// What the server's word that a membership ended belongs to.
#[derive(Clone, Copy, Debug)]
pub struct EndedBinding<'a> {
    /// The PN, 16 bytes.
    pub pn_id: &'a [u8; 16],
    /// The PNE whose membership ended.
    pub pne_id: &'a str,
    /// The request id of the PN Key Request it answers.
    pub request_id: u64,
    /// Why, the `EndReason` code (1 removed, 2 released).
    pub why: u8,
}

/// The server's word, sealed under the membership-ended key (server to PNE) of the SK_PNE a
/// PNE held in the PN, that its membership ended while it was away, answering its PN Key
/// Request: only that PNE opens it, for that PN, request and reason, so nobody else can make it
/// forget a PN, nor replay an older answer.
pub fn seal_membership_ended<R: CryptoRng + ?Sized>(
    rng: &mut R,
    sk_pne: &SessionKey,
    b: &EndedBinding<'_>,
) -> Vec<u8> {
    seal_membership_ended_with_nonce(sk_pne, b, nonce_from(rng))
}

/// [`seal_membership_ended`] with a caller-chosen nonce; deterministic, for test vectors. A nonce
/// must never repeat under one SK_PNE: production code calls [`seal_membership_ended`].
pub fn seal_membership_ended_with_nonce(
    sk_pne: &SessionKey,
    b: &EndedBinding<'_>,
    nonce: [u8; aead::NONCE_LEN],
) -> Vec<u8> {
    seal_e2e_with_nonce(sk_pne, ENDED, &ended_aad(b), &[b.why], nonce)
}

/// Checks [`seal_membership_ended`]'s box with the PNE's own SK_PNE for the PN.
///
/// # Errors
/// [`CryptoError::BadTag`] under another key, for another PN, PNE, request or reason, or
/// tampered.
pub fn open_membership_ended(
    sk_pne: &SessionKey,
    b: &EndedBinding<'_>,
    sealed: &[u8],
) -> Result<(), CryptoError> {
    let plain = open_e2e(sk_pne, ENDED, &ended_aad(b), sealed)?;
    if plain.as_slice() != [b.why] {
        return Err(CryptoError::Malformed("the box names another reason"));
    }
    Ok(())
}

pub(crate) fn ended_aad(b: &EndedBinding<'_>) -> Vec<u8> {
    let mut t = Transcript::new(labels::MEMBERSHIP_ENDED_AAD);
    t.push(b.pn_id)
        .push(b.pne_id.as_bytes())
        .push(&b.request_id.to_be_bytes())
        .push(&[b.why]);
    t.as_bytes().to_vec()
}

/// Opens a member's copy of a group key with its SK_PNE for the PN.
///
/// # Errors
/// [`CryptoError::BadTag`] for another member's copy, another PN or epoch, another SK_PNE or a
/// tampered byte; [`CryptoError::Malformed`] for a copy of the wrong length.
pub fn open_group_key(
    sk_pne: &SessionKey,
    binding: &GroupKeyBinding<'_>,
    sealed: &[u8],
) -> Result<GroupKey, CryptoError> {
    let plain = open_e2e(sk_pne, COPY, &copy_aad(binding), sealed)?;
    key_of(&plain)
}

pub(crate) fn content_key(gk: &GroupKey, pn_id: &[u8; 16], epoch: u64) -> Zeroizing<[u8; KEY_LEN]> {
    derive_key(
        gk.expose_secret(),
        &epoch_transcript(labels::GROUP_CONTENT_KEY, pn_id, epoch),
    )
}

/// The associated data of a PN's group key of `epoch` sealed at rest.
pub(crate) fn at_rest_aad(pn_id: &[u8; 16], epoch: u64) -> Vec<u8> {
    epoch_transcript(labels::AT_REST_GROUP_KEY_AAD, pn_id, epoch)
        .as_bytes()
        .to_vec()
}

/// Seals a PN's group key at rest in the server store under K_rest of the master key.
///
/// # Errors
/// [`CryptoError::Rng`] when the OS generator is unavailable for the nonce.
pub fn seal_group_key_at_rest(
    master: &MasterKey,
    pn_id: &[u8; 16],
    epoch: u64,
    gk: &GroupKey,
) -> Result<Vec<u8>, CryptoError> {
    let nonce = crate::random_array()?;
    Ok(seal_group_key_at_rest_with_nonce(
        master, pn_id, epoch, gk, nonce,
    ))
}

/// [`seal_group_key_at_rest`] with a caller-chosen nonce; deterministic, for test vectors. A
/// nonce must never repeat under one master key: production code calls
/// [`seal_group_key_at_rest`].
pub fn seal_group_key_at_rest_with_nonce(
    master: &MasterKey,
    pn_id: &[u8; 16],
    epoch: u64,
    gk: &GroupKey,
    nonce: [u8; aead::NONCE_LEN],
) -> Vec<u8> {
    crate::seal_at_rest_with_nonce(
        master,
        &at_rest_aad(pn_id, epoch),
        gk.expose_secret(),
        nonce,
    )
}

/// Opens a PN's group key sealed at rest.
///
/// # Errors
/// [`CryptoError::BadTag`] under another master key, for another PN or epoch, or tampered.
pub fn open_group_key_at_rest(
    master: &MasterKey,
    pn_id: &[u8; 16],
    epoch: u64,
    sealed: &[u8],
) -> Result<GroupKey, CryptoError> {
    let plain = crate::open_at_rest(master, &at_rest_aad(pn_id, epoch), sealed)?;
    key_of(&plain)
}

/// The associated data of a service group's key of `epoch` sealed at rest: its own label, so
/// a service group's key never opens as a PN's, nor a PN's as a group's, whatever the ids.
pub(crate) fn service_group_at_rest_aad(group_id: &[u8; 16], epoch: u64) -> Vec<u8> {
    epoch_transcript(labels::AT_REST_SERVICE_GROUP_KEY_AAD, group_id, epoch)
        .as_bytes()
        .to_vec()
}

/// Seals a service group's key of `epoch` at rest in the server store (004 §5.5.7.2).
///
/// # Errors
/// [`CryptoError::Rng`] when the OS generator is unavailable for the nonce.
pub fn seal_service_group_key_at_rest(
    master: &MasterKey,
    group_id: &[u8; 16],
    epoch: u64,
    gk: &GroupKey,
) -> Result<Vec<u8>, CryptoError> {
    let nonce = crate::random_array()?;
    Ok(seal_service_group_key_at_rest_with_nonce(
        master, group_id, epoch, gk, nonce,
    ))
}

/// [`seal_service_group_key_at_rest`] with a caller-chosen nonce; deterministic, for test
/// vectors only.
pub fn seal_service_group_key_at_rest_with_nonce(
    master: &MasterKey,
    group_id: &[u8; 16],
    epoch: u64,
    gk: &GroupKey,
    nonce: [u8; aead::NONCE_LEN],
) -> Vec<u8> {
    crate::seal_at_rest_with_nonce(
        master,
        &service_group_at_rest_aad(group_id, epoch),
        gk.expose_secret(),
        nonce,
    )
}

/// Opens a service group's key sealed at rest.
///
/// # Errors
/// [`CryptoError::BadTag`] under another master key, for another group or epoch, for a PN's
/// key, or tampered.
pub fn open_service_group_key_at_rest(
    master: &MasterKey,
    group_id: &[u8; 16],
    epoch: u64,
    sealed: &[u8],
) -> Result<GroupKey, CryptoError> {
    let plain = crate::open_at_rest(master, &service_group_at_rest_aad(group_id, epoch), sealed)?;
    key_of(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineRng;

    #[test]
    fn a_service_group_key_at_rest_opens_only_as_itself() {
        let master = MasterKey::from_bytes([0x41; 32]);
        let gk = GroupKey::from_bytes([0x42; 32]);
        let id = [0x61; 16];
        let sealed = seal_service_group_key_at_rest(&master, &id, 3, &gk).unwrap();
        let opened = open_service_group_key_at_rest(&master, &id, 3, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), gk.expose_secret());
        let other = MasterKey::from_bytes([0x43; 32]);
        assert!(open_service_group_key_at_rest(&other, &id, 3, &sealed).is_err());
        assert!(open_service_group_key_at_rest(&master, &[0x62; 16], 3, &sealed).is_err());
        assert!(open_service_group_key_at_rest(&master, &id, 4, &sealed).is_err());
        // Not a PN's key of the same id and epoch, either way.
        assert!(open_group_key_at_rest(&master, &id, 3, &sealed).is_err());
        let pns = seal_group_key_at_rest(&master, &id, 3, &gk).unwrap();
        assert!(open_service_group_key_at_rest(&master, &id, 3, &pns).is_err());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(
                open_service_group_key_at_rest(&master, &id, 3, &t).is_err(),
                "{i}"
            );
        }
    }

    const PN: [u8; 16] = [0x61; 16];

    fn sk(b: u8) -> SessionKey {
        SessionKey::from_bytes([b; 32])
    }

    fn gk(b: u8) -> GroupKey {
        GroupKey::from_bytes([b; 32])
    }

    const INVENTORY: [u8; 32] = [0x71; 32];

    fn ended(pne: &str, request_id: u64, why: u8) -> EndedBinding<'_> {
        EndedBinding {
            pn_id: &PN,
            pne_id: pne,
            request_id,
            why,
        }
    }

    /// The end of a membership opens only for its PNE, PN, request and reason, under its
    /// SK_PNE, and not once tampered: an answer to an earlier pull does not answer this one.
    #[test]
    fn a_membership_ended_box_opens_for_its_pne_pn_request_and_reason_only() {
        let mut rng = MachineRng::from_seed_u64(5);
        let sealed = seal_membership_ended(rng.get(), &sk(1), &ended("tv", 7, 2));
        assert!(open_membership_ended(&sk(1), &ended("tv", 7, 2), &sealed).is_ok());
        assert!(open_membership_ended(&sk(2), &ended("tv", 7, 2), &sealed).is_err());
        let other_pn = EndedBinding {
            pn_id: &[0x62; 16],
            ..ended("tv", 7, 2)
        };
        assert!(open_membership_ended(&sk(1), &other_pn, &sealed).is_err());
        assert!(open_membership_ended(&sk(1), &ended("phone", 7, 2), &sealed).is_err());
        assert!(open_membership_ended(&sk(1), &ended("tv", 8, 2), &sealed).is_err());
        assert!(open_membership_ended(&sk(1), &ended("tv", 7, 1), &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[14] ^= 1;
        assert!(open_membership_ended(&sk(1), &ended("tv", 7, 2), &tampered).is_err());
        assert!(open_membership_ended(&sk(1), &ended("tv", 7, 2), &sealed[..10]).is_err());
    }

    fn binding(epoch: u64, pne: &str) -> GroupKeyBinding<'_> {
        GroupKeyBinding {
            pn_id: &PN,
            epoch,
            pne_id: pne,
            inventory_digest: &INVENTORY,
            pull: None,
        }
    }

    #[test]
    fn a_member_opens_its_own_copy() {
        let mut rng = MachineRng::from_seed_u64(1);
        let sealed = seal_group_key(rng.get(), &sk(1), &binding(3, "pne-1"), &gk(9));
        assert_eq!(sealed.len(), 32 + aead::NONCE_LEN + 16);
        let opened = open_group_key(&sk(1), &binding(3, "pne-1"), &sealed).unwrap();
        assert!(opened == gk(9));
    }

    /// Another member's copy, another epoch, another PN, another member list, another SK_PNE
    /// (the PN GW has none) and a tampered byte each fail.
    #[test]
    fn a_copy_opens_only_for_its_member_epoch_pn_and_key() {
        let mut rng = MachineRng::from_seed_u64(2);
        let sealed = seal_group_key(rng.get(), &sk(1), &binding(3, "pne-1"), &gk(9));
        let other_pn = [0x62; 16];
        let other_inventory = [0x72; 32];
        let cases = [
            (
                sk(1),
                GroupKeyBinding {
                    inventory_digest: &other_inventory,
                    ..binding(3, "pne-1")
                },
            ),
            (sk(1), binding(3, "pne-2")),
            (sk(1), binding(4, "pne-1")),
            (
                sk(1),
                GroupKeyBinding {
                    pn_id: &other_pn,
                    ..binding(3, "pne-1")
                },
            ),
            (sk(2), binding(3, "pne-1")),
            // A pushed copy is no answer to a pull, and one pull's answer not another's.
            (
                sk(1),
                GroupKeyBinding {
                    pull: Some(5),
                    ..binding(3, "pne-1")
                },
            ),
        ];
        for (key, b) in cases {
            assert_eq!(
                open_group_key(&key, &b, &sealed).err(),
                Some(CryptoError::BadTag)
            );
        }
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(open_group_key(&sk(1), &binding(3, "pne-1"), &t).is_err());
        }
        assert!(matches!(
            open_group_key(&sk(1), &binding(3, "pne-1"), &sealed[..10]),
            Err(CryptoError::Malformed(_))
        ));
        let pulled = GroupKeyBinding {
            pull: Some(5),
            ..binding(3, "pne-1")
        };
        let answer = seal_group_key(rng.get(), &sk(1), &pulled, &gk(9));
        assert!(open_group_key(&sk(1), &pulled, &answer).unwrap() == gk(9));
        for other in [None, Some(6)] {
            let b = GroupKeyBinding {
                pull: other,
                ..pulled
            };
            assert_eq!(
                open_group_key(&sk(1), &b, &answer).err(),
                Some(CryptoError::BadTag)
            );
        }
    }

    #[test]
    fn at_rest_opens_only_for_its_pn_epoch_and_master_key() {
        let m = MasterKey::from_bytes([7; 32]);
        let sealed = seal_group_key_at_rest(&m, &PN, 5, &gk(3)).unwrap();
        assert!(open_group_key_at_rest(&m, &PN, 5, &sealed).unwrap() == gk(3));
        assert!(open_group_key_at_rest(&m, &PN, 6, &sealed).is_err());
        assert!(open_group_key_at_rest(&m, &[0x62; 16], 5, &sealed).is_err());
        assert!(open_group_key_at_rest(&MasterKey::from_bytes([8; 32]), &PN, 5, &sealed).is_err());
    }
}
