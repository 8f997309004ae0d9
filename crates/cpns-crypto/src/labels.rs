//! The domain-separation labels of the CPNS v1 key schedule (docs/security.md §3).
//!
//! Every HKDF `info`, every HMAC transcript and every AEAD associated-data string starts with one
//! of these ASCII labels, encoded as the first length-prefixed field (docs/security.md §2). The
//! associated-data strings are built by the functions of [`crate::aad`] and
//! [`crate::local_key`], never by hand.
//! Because each label is used for exactly one purpose, a value
//! computed for one purpose (a KEK, a proof, a direction key) can never be replayed as another,
//! even when the same input key material is involved. The `v1` lets a later key schedule coexist.

/// HKDF info label of SK_PNE, the PNE<->server session key (000 §6.6.1.1 step 8).
pub const SK_PNE: &str = "cpns/v1/sk-pne";
/// HKDF info label of the PNE<->server confirmation key that keys hash_PNE / hash_server.
pub const PNE_CONFIRM: &str = "cpns/v1/pne-confirm";
/// HMAC transcript label of hash_PNE (000 §6.6.1.1 step 8).
pub const HASH_PNE: &str = "cpns/v1/hash-pne";
/// HMAC transcript label of hash_server_PNE (000 §6.6.1.1 step 12).
pub const HASH_SERVER: &str = "cpns/v1/hash-server";

/// HKDF info label of the KEK that wraps a LocalEUKey copy (000 §6.6.1.1 step 5).
pub const LOCAL_EUKEY_KEK: &str = "cpns/v1/kek-local-eukey";
/// AEAD associated-data label of a wrapped LocalEUKey copy.
pub const LOCAL_EUKEY_AAD: &str = "cpns/v1/wrap-local-eukey";

/// HKDF info label of the GW's WAN authentication key, derived from EUKey_GW.
pub const GW_AUTH_KEY: &str = "cpns/v1/gw-auth-key";
/// HMAC transcript label of the GW's WAN authentication response (002 §B.1.1.2 step 10).
pub const GW_AUTH_RESPONSE: &str = "cpns/v1/gw-auth-response";

/// HKDF info label of the PAN confirmation key (PN GW authentication on the PAN).
pub const PAN_CONFIRM: &str = "cpns/v1/pan-confirm";
/// HKDF info label of the PAN frame key for the GW -> PNE direction.
pub const PAN_GW_TO_PNE: &str = "cpns/v1/pan-gw-to-pne";
/// HKDF info label of the PAN frame key for the PNE -> GW direction.
pub const PAN_PNE_TO_GW: &str = "cpns/v1/pan-pne-to-gw";
/// HMAC transcript label of the GW's PAN proof.
pub const PAN_GW_PROOF: &str = "cpns/v1/pan-gw-proof";
/// HMAC transcript label of the PNE's PAN proof.
pub const PAN_PNE_PROOF: &str = "cpns/v1/pan-pne-proof";

/// AEAD associated-data label of a sealed PAN frame (docs/security.md §4.5).
pub const PAN_FRAME_AAD: &str = "cpns/v1/pan-frame";

/// HKDF info label of an end-to-end (SK_PNE) direction key.
pub const E2E_KEY: &str = "cpns/v1/e2e-key";
/// AEAD associated-data label of the sealed registration grant (003 §1.4.1 step 3).
pub const REGISTRATION_GRANT_AAD: &str = "cpns/v1/registration-grant";

/// HKDF info label of the at-rest sealing key derived from the server MasterKey.
pub const AT_REST_KEY: &str = "cpns/v1/at-rest-key";
/// AEAD associated-data label of an entity's EUKey sealed at rest.
pub const AT_REST_EUKEY_AAD: &str = "cpns/v1/at-rest/eukey";
/// AEAD associated-data label of a PNE's SK_PNE sealed at rest.
pub const AT_REST_SK_PNE_AAD: &str = "cpns/v1/at-rest/sk-pne";

/// AEAD associated data of a secure PNE<->server message (docs/security.md §4.8).
pub const SECURE_MESSAGE_AAD: &str = "cpns/v1/secure-message";
/// Associated data of a secure notice, server to PNE (docs/security.md §4.8).
pub const SECURE_NOTICE_AAD: &str = "cpns/v1/secure-notice";
/// HKDF info of a device's own storage key, from its EUKey (docs/security.md §4.9).
pub const DEVICE_STORAGE_KEY: &str = "cpns/v1/device-storage-key";

/// AEAD associated data of a PN's group key sealed for one member (docs/security.md §4.10).
pub const GROUP_KEY_AAD: &str = "cpns/v1/group-key";
/// HKDF info of the group content key of one epoch (docs/security.md §4.10).
pub const GROUP_CONTENT_KEY: &str = "cpns/v1/group-content-key";
/// AEAD associated data of group content (docs/security.md §4.10).
pub const GROUP_CONTENT_AAD: &str = "cpns/v1/group-content";
/// AEAD associated data of a PN's group key sealed at rest (docs/security.md §4.10).
pub const AT_REST_GROUP_KEY_AAD: &str = "cpns/v1/at-rest/group-key";
/// Associated data of a service group's key sealed at rest (docs/security.md §4.10).
pub const AT_REST_SERVICE_GROUP_KEY_AAD: &str = "cpns/v1/at-rest/service-group-key";
/// AEAD associated data of the server's word that a PNE is no longer a member of a PN
/// (docs/security.md §4.10).
pub const MEMBERSHIP_ENDED_AAD: &str = "cpns/v1/membership-ended";

/// HKDF info of the server's certification key, from its master key (docs/security.md §4.11).
pub const CERTIFICATION_KEY: &str = "cpns/v1/certification-key";
/// HKDF info of a member's signing key, from its EUKey (docs/security.md §4.11).
pub const MEMBER_SIGNING_KEY: &str = "cpns/v1/member-signing-key";
/// What the server signs to certify a member's signing key (docs/security.md §4.11).
pub const MEMBER_CERTIFICATE: &str = "cpns/v1/member-certificate";
/// What a member signs of the group content it sends (docs/security.md §4.11).
pub const GROUP_CONTENT_SIGNATURE: &str = "cpns/v1/group-content-signature";
/// HKDF info of a delivery session's chunk key, from its DeliveryKey (docs/security.md §4.12).
pub const DELIVERY_CHUNK_KEY: &str = "cpns/v1/delivery-chunk-key";
/// AEAD associated data of a delivery chunk (docs/security.md §4.12).
pub const DELIVERY_CHUNK_AAD: &str = "cpns/v1/delivery-chunk";
/// The message a delivery's source signs its items' SHA-256 with (docs/security.md §4.12).
pub const DELIVERY_DIGEST: &str = "cpns/v1/delivery-digest";
/// AEAD associated data of a delivery session's key kept at rest on a device, by its source or
/// a target (docs/security.md §4.9, §4.12).
pub const AT_REST_DELIVERY_KEY_AAD: &str = "cpns/v1/at-rest/delivery-key";

/// Every label, for the uniqueness test and for docs/security-vectors.json.
pub const ALL: [&str; 36] = [
    SK_PNE,
    PNE_CONFIRM,
    HASH_PNE,
    HASH_SERVER,
    LOCAL_EUKEY_KEK,
    LOCAL_EUKEY_AAD,
    GW_AUTH_KEY,
    GW_AUTH_RESPONSE,
    PAN_CONFIRM,
    PAN_GW_TO_PNE,
    PAN_PNE_TO_GW,
    PAN_GW_PROOF,
    PAN_PNE_PROOF,
    PAN_FRAME_AAD,
    E2E_KEY,
    REGISTRATION_GRANT_AAD,
    AT_REST_KEY,
    AT_REST_EUKEY_AAD,
    AT_REST_SK_PNE_AAD,
    SECURE_MESSAGE_AAD,
    SECURE_NOTICE_AAD,
    DEVICE_STORAGE_KEY,
    GROUP_KEY_AAD,
    GROUP_CONTENT_KEY,
    GROUP_CONTENT_AAD,
    AT_REST_GROUP_KEY_AAD,
    AT_REST_SERVICE_GROUP_KEY_AAD,
    MEMBERSHIP_ENDED_AAD,
    CERTIFICATION_KEY,
    MEMBER_SIGNING_KEY,
    MEMBER_CERTIFICATE,
    GROUP_CONTENT_SIGNATURE,
    DELIVERY_CHUNK_KEY,
    DELIVERY_CHUNK_AAD,
    DELIVERY_DIGEST,
    AT_REST_DELIVERY_KEY_AAD,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_ascii_and_versioned() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.is_ascii() && a.starts_with("cpns/v1/"), "{a}");
            for b in &ALL[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
