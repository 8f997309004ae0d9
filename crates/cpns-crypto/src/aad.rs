//! The associated data of the scheme's AEADs: sealed PAN frames, the sealed registration grant
//! and secrets at rest (docs/security.md §4.5-§4.7). The wrapped LocalEUKey's is in
//! [`crate::local_key`].
//!
//! Every associated-data string is a transcript (docs/security.md §2): its own label from
//! [`crate::labels`] first, then each binding field, each length-prefixed. So two AADs built for
//! different purposes or from different field values never coincide, and a box moved to another
//! place (another PNE's link, another registration, another row) fails its tag. The protocol and
//! storage crates call these builders; none of them assembles associated data by hand.
//!
//! ```text
//! pan frame   T("cpns/v1/pan-frame")          ‖ T(direction) ‖ T(PN ID) ‖ T(PNE ID) ‖ T(GW ID)
//! grant       T("cpns/v1/registration-grant") ‖ T(PN ID) ‖ T(PNE ID) ‖ T(u64be(request id)) ‖ T(CPNS ID)
//! EUKey       T("cpns/v1/at-rest/eukey")      ‖ T(entity id)
//! SK_PNE      T("cpns/v1/at-rest/sk-pne")     ‖ T(PN ID) ‖ T(PNE ID)
//! ```

use crate::kdf::Transcript;
use crate::labels;

/// The direction of a sealed PAN frame; each has its own key and its own associated data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PanDirection {
    /// Sealed by the PN GW for the PNE. Encoded as the byte `0x01`.
    GwToPne,
    /// Sealed by the PNE for the PN GW. Encoded as the byte `0x02`.
    PneToGw,
}

impl PanDirection {
    /// The one-byte transcript code of the direction.
    pub fn code(self) -> u8 {
        match self {
            PanDirection::GwToPne => 0x01,
            PanDirection::PneToGw => 0x02,
        }
    }
}

/// Associated data of every sealed PAN frame of one direction of one PAN session
/// (docs/security.md §4.5). The sequence number is not part of it: it is the AEAD nonce.
pub fn pan_frame_aad(
    direction: PanDirection,
    pn_id: &[u8; 16],
    pne_id: &str,
    gw_id: &str,
) -> Vec<u8> {
    let mut t = Transcript::new(labels::PAN_FRAME_AAD);
    t.push(&[direction.code()])
        .push(pn_id)
        .push(pne_id.as_bytes())
        .push(gw_id.as_bytes());
    t.as_bytes().to_vec()
}

/// What a sealed registration grant belongs to (003 §1.4.1 step 3): authenticated as its
/// associated data, so a grant cannot be presented for another PN, PNE, request or CPNS ID.
#[derive(Clone, Copy, Debug)]
pub struct GrantBinding<'a> {
    /// The PN the PNE registers in (for a non-member, the PN it joins), 16 bytes.
    pub pn_id: &'a [u8; 16],
    /// The registering PNE.
    pub pne_id: &'a str,
    /// The `request_id` of its PNE Registration Request.
    pub request_id: u64,
    /// The CPNS ID the server allocated, as in the PNE Registration Response.
    pub cpns_id: &'a str,
}

/// Associated data of the sealed registration grant (docs/security.md §4.6).
pub fn registration_grant_aad(binding: &GrantBinding<'_>) -> Vec<u8> {
    let mut t = Transcript::new(labels::REGISTRATION_GRANT_AAD);
    t.push(binding.pn_id)
        .push(binding.pne_id.as_bytes())
        .push(&binding.request_id.to_be_bytes())
        .push(binding.cpns_id.as_bytes());
    t.as_bytes().to_vec()
}

/// Associated data of an entity's EUKey sealed at rest in the server store (docs/security.md
/// §4.7): the entity id (PNE ID or PN GW ID).
pub fn at_rest_eukey_aad(entity_id: &str) -> Vec<u8> {
    let mut t = Transcript::new(labels::AT_REST_EUKEY_AAD);
    t.push(entity_id.as_bytes());
    t.as_bytes().to_vec()
}

/// Associated data of a PNE's SK_PNE sealed at rest in the server store (docs/security.md
/// §4.7): the PN and the PNE it was agreed for.
pub fn at_rest_session_key_aad(pn_id: &[u8; 16], pne_id: &str) -> Vec<u8> {
    let mut t = Transcript::new(labels::AT_REST_SK_PNE_AAD);
    t.push(pn_id).push(pne_id.as_bytes());
    t.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PN: [u8; 16] = [0xa0; 16];

    #[test]
    fn pan_frame_aad_layout() {
        let aad = pan_frame_aad(PanDirection::PneToGw, &PN, "p", "g");
        let mut want = vec![0, 17];
        want.extend_from_slice(b"cpns/v1/pan-frame");
        want.extend_from_slice(&[0, 1, 2, 0, 16]);
        want.extend_from_slice(&PN);
        want.extend_from_slice(&[0, 1, b'p', 0, 1, b'g']);
        assert_eq!(aad, want);
    }

    #[test]
    fn every_field_changes_the_pan_frame_aad() {
        let base = pan_frame_aad(PanDirection::GwToPne, &PN, "pne-1", "gw-1");
        for other in [
            pan_frame_aad(PanDirection::PneToGw, &PN, "pne-1", "gw-1"),
            pan_frame_aad(PanDirection::GwToPne, &[0xa1; 16], "pne-1", "gw-1"),
            pan_frame_aad(PanDirection::GwToPne, &PN, "pne-2", "gw-1"),
            pan_frame_aad(PanDirection::GwToPne, &PN, "pne-1", "gw-2"),
            pan_frame_aad(PanDirection::GwToPne, &PN, "pne-1g", "w-1"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn grant_aad_layout_and_fields() {
        let b = GrantBinding {
            pn_id: &PN,
            pne_id: "pne-1",
            request_id: 0x0102,
            cpns_id: "cpns-1",
        };
        let aad = registration_grant_aad(&b);
        let mut want = vec![0, 26];
        want.extend_from_slice(b"cpns/v1/registration-grant");
        want.extend_from_slice(&[0, 16]);
        want.extend_from_slice(&PN);
        want.extend_from_slice(&[0, 5]);
        want.extend_from_slice(b"pne-1");
        want.extend_from_slice(&[0, 8, 0, 0, 0, 0, 0, 0, 1, 2, 0, 6]);
        want.extend_from_slice(b"cpns-1");
        assert_eq!(aad, want);
        for other in [
            GrantBinding {
                pn_id: &[0xa1; 16],
                ..b
            },
            GrantBinding {
                pne_id: "pne-2",
                ..b
            },
            GrantBinding {
                request_id: 0x0103,
                ..b
            },
            GrantBinding {
                cpns_id: "cpns-2",
                ..b
            },
        ] {
            assert_ne!(registration_grant_aad(&other), aad);
        }
    }

    #[test]
    fn at_rest_aads_are_transcripts_and_separated() {
        assert_eq!(
            at_rest_eukey_aad("e"),
            [&[0, 21][..], b"cpns/v1/at-rest/eukey", &[0, 1, b'e']].concat()
        );
        assert_ne!(at_rest_eukey_aad("pne-1"), at_rest_eukey_aad("pne-2"));
        let sk = at_rest_session_key_aad(&PN, "pne-1");
        assert_eq!(
            sk,
            [
                &[0, 22][..],
                b"cpns/v1/at-rest/sk-pne",
                &[0, 16],
                &PN,
                &[0, 5],
                b"pne-1"
            ]
            .concat()
        );
        assert_ne!(sk, at_rest_session_key_aad(&[0xa1; 16], "pne-1"));
        assert_ne!(sk, at_rest_session_key_aad(&PN, "pne-2"));
    }
}
