//! Writes docs/security-vectors.json: fixed inputs and every intermediate of the key schedule.
//!
//! Run from the workspace root:
//! `cargo run -p cpns-crypto --example gen_vectors > docs/security-vectors.json`.
//! The inputs are fixed byte patterns (not random), so the output is reproducible; the test
//! `tests/vectors.rs` recomputes every value from the inputs, both through the crate's API and
//! through an independent re-implementation of docs/security.md. Messages (envelopes, the PN
//! inventory, the registration grant) are real cpns-wire encodings, given as hex and in CBOR
//! diagnostic notation (RFC 8949 §8).

use cpns_crypto::vectors as v;
use cpns_crypto::*;
use cpns_wire::{
    Address, AuthPurposeCode, AuthenticationResponse, ContentItem, CpnsId, DeviceCapabilities,
    EntityId, Envelope, HashBytes, InventoryMember, JoinInfo, PnId, PnInventory, PnSetupResponse,
    PneHash, PneRegistrationRequest, PneRegistrationResponse, RandBytes, RegistrationGrant,
    RequestId, SecureCall,
};
use serde_json::{Value, json};

/// An N-byte pattern `start, start+1, …` (wrapping).
fn pattern<const N: usize>(start: u8) -> [u8; N] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn hx(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

/// CBOR diagnostic notation of an encoded item.
fn diag(cbor: &[u8]) -> String {
    minicbor::display(cbor).to_string()
}

fn eid(s: &str) -> EntityId {
    EntityId::new(s).expect("a valid entity id")
}

const PN_ID: [u8; 16] = [
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
];
const PNE_ID: &str = "pne-1.alice@cpns.example";
const PNE2_ID: &str = "pne-2.alice@cpns.example";
const GW_ID: &str = "gw-1.alice@cpns.example";
/// The user owning PNE 1.
const OWNER: &str = "alice";
const CPNS_ID: &str = "cpns-000001";
/// The request id of the PN establishment (PnSetupRequest) and of the PNE registration.
const SETUP_REQUEST_ID: u64 = 0x0011_2233_4455_6677;
const REGISTRATION_REQUEST_ID: u64 = 0x0001_0203_0405_0607;

/// The PN inventory of the establishment vector: what the server sends in the PN Registration
/// Response and the PNE stores.
/// The capabilities of PNE 1 in every vector.
fn capabilities() -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: "phone".into(),
        has_ui: true,
        networks: vec!["wlan".into()],
        ..DeviceCapabilities::default()
    }
}

fn inventory() -> PnInventory {
    PnInventory {
        pn_id: PnId::from_bytes(PN_ID),
        gateway: eid(GW_ID),
        members: vec![
            InventoryMember {
                pne_id: eid(PNE_ID),
                capabilities: Some(capabilities()),
                contents: Vec::new(),
            },
            InventoryMember {
                pne_id: eid(PNE2_ID),
                capabilities: None,
                contents: vec![ContentItem {
                    name: "song.mp3".into(),
                    media_type: "audio/mpeg".into(),
                }],
            },
        ],
    }
}

fn cbor<T: minicbor::Encode<()>>(value: &T) -> Vec<u8> {
    minicbor::to_vec(value).expect("encoding to a Vec cannot fail")
}

struct PneAuthCase {
    value: Value,
    sk: SessionKey,
    hash_pne: AuthHash,
    hash_server: AuthHash,
}

fn pne_auth_case(name: &str, purpose: AuthPurpose) -> PneAuthCase {
    let eukey = EuKey::from_bytes(pattern(0x00));
    let rand_pne = Rand(pattern(0x10));
    let rand_server = Rand(pattern(0x20));
    // What the PNE said before sealing (docs/security.md §4.1): its join information in an
    // establishment, its PNE Registration Request without `pn_id` in a registration.
    let (statement_cbor, statement_kind) = match purpose {
        AuthPurpose::Establishment => (
            cbor(&JoinInfo {
                pne_id: eid(PNE_ID),
                capabilities: capabilities(),
                contents: Vec::new(),
                rand_pne: RandBytes(rand_pne.0),
                local_key: true,
                home_gateway: None,
            }),
            "join_info",
        ),
        AuthPurpose::Registration => (
            cbor(&PneRegistrationRequest {
                request_id: RequestId(0x1122_3344_5566_7788),
                pne_id: eid(PNE_ID),
                pn_id: None,
                rand_pne: RandBytes(rand_pne.0),
                capabilities: Some(capabilities()),
                local_key: true,
            }),
            "pne_registration_request",
        ),
    };
    let statement = statement_digest(&statement_cbor);
    let input = PneAuthInput {
        purpose,
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        rand_pne: &rand_pne,
        rand_server: &rand_server,
        statement: &statement,
    };
    let keys = PneAuthKeys::derive(&eukey, &input);
    let mut salt = rand_pne.0.to_vec();
    salt.extend_from_slice(&rand_server.0);
    let code = [match purpose {
        AuthPurpose::Establishment => 1u8,
        AuthPurpose::Registration => 2,
    }];
    let ctx: [&[u8]; 3] = [&code, PNE_ID.as_bytes(), &PN_ID];
    let hash_pne = keys.hash_pne();
    let inventory_cbor = cbor(&inventory());
    let (outcome, outcome_json) = match purpose {
        AuthPurpose::Establishment => (
            ServerOutcome::Established {
                inventory_cbor: &inventory_cbor,
            },
            json!({
                "kind": "established",
                "verdict": hx([VERDICT_AUTHENTICATED]),
                "inventory_diagnostic": diag(&inventory_cbor),
                "inventory_cbor": hx(&inventory_cbor),
                "inventory_digest": hx(inventory_digest(&inventory_cbor)),
            }),
        ),
        AuthPurpose::Registration => (
            ServerOutcome::Registered { cpns_id: CPNS_ID },
            json!({
                "kind": "registered",
                "verdict": hx([VERDICT_AUTHENTICATED]),
                "cpns_id": CPNS_ID,
            }),
        ),
    };
    let hash_server = keys.hash_server(&hash_pne, &outcome);
    let hash_fields: [&[u8]; 6] = [
        &code,
        &rand_pne.0,
        &rand_server.0,
        PNE_ID.as_bytes(),
        &PN_ID,
        &statement,
    ];
    let hash_pne_msg = v::transcript(labels::HASH_PNE, &hash_fields);
    let hash_server_msg = v::hash_server_transcript(&keys, &hash_pne, &outcome);
    let pn_id_note = match purpose {
        AuthPurpose::Establishment => "the PN being established (PN Registration Request)",
        AuthPurpose::Registration => {
            "the PN named by the Authentication Request: the PN the PNE is a member of, or for a non-member (003 §1.4.2) the PN it joins"
        }
    };
    let value = json!({
        "name": name,
        "inputs": {
            "eukey_pne": eukey.to_hex().as_str(),
            "purpose": name,
            "purpose_code": hx(code),
            "pn_id": hx(PN_ID),
            "pn_id_note": pn_id_note,
            "pne_id": PNE_ID,
            "rand_pne": hx(rand_pne.0),
            "rand_server": hx(rand_server.0),
            "statement": {
                "kind": statement_kind,
                "cbor": hx(&statement_cbor),
                "diagnostic": diag(&statement_cbor),
                "digest": hx(statement),
            },
            "outcome": outcome_json,
        },
        "intermediates": {
            "salt": hx(&salt),
            "prk": hx(v::hkdf_prk(Some(&salt), eukey.expose_secret())),
            "sk_pne_info": hx(v::transcript(labels::SK_PNE, &ctx)),
            "confirm_info": hx(v::transcript(labels::PNE_CONFIRM, &ctx)),
            "confirm_key": hx(v::pne_confirm_key(&keys)),
            "hash_pne_message": hx(&hash_pne_msg),
            "hash_server_message": hx(&hash_server_msg),
        },
        "outputs": {
            "sk_pne": keys.session_key().to_hex().as_str(),
            "hash_pne": hx(hash_pne.0),
            "hash_server": hx(hash_server.0),
        },
    });
    PneAuthCase {
        value,
        sk: keys.session_key().clone(),
        hash_pne,
        hash_server,
    }
}

fn wrap_copy(
    eukey: &EuKey,
    recipient: Recipient,
    local: &LocalEuKey,
    rand_server: &Rand,
    nonce: [u8; 12],
) -> Value {
    let binding = KeyBinding {
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        gw_id: GW_ID,
        rand_server,
    };
    let code = [match recipient {
        Recipient::Pne => 1u8,
        Recipient::Gateway => 2,
    }];
    let wrapped = wrap_local_eukey_with_nonce(eukey, recipient, &binding, local, nonce);
    json!({
        "recipient_code": hx(code),
        "recipient_eukey": eukey.to_hex().as_str(),
        "kek_prk": hx(v::hkdf_prk(None, eukey.expose_secret())),
        "kek_info": hx(v::transcript(labels::LOCAL_EUKEY_KEK, &[&code])),
        "kek": hx(v::local_eukey_kek(eukey, recipient)),
        "aad": hx(v::local_eukey_aad(recipient, &binding)),
        "nonce": hx(nonce),
        "wrapped": hx(&wrapped),
        "stored": hx(stored_wrapped_key(rand_server, &wrapped)),
    })
}

fn local_eukey_wrap() -> Value {
    let eukey_pne = EuKey::from_bytes(pattern(0x00));
    let eukey_gw = EuKey::from_bytes(pattern(0x40));
    let local = LocalEuKey::from_bytes(pattern(0x60));
    let rand_server = Rand(pattern(0x20));
    json!({
        "inputs": {
            "local_eukey": local.to_hex().as_str(),
            "pn_id": hx(PN_ID),
            "pne_id": PNE_ID,
            "gw_id": GW_ID,
            "rand_server": hx(rand_server.0),
        },
        "pne_copy": wrap_copy(&eukey_pne, Recipient::Pne, &local, &rand_server, pattern(0x80)),
        "gateway_copy": wrap_copy(&eukey_gw, Recipient::Gateway, &local, &rand_server, pattern(0x90)),
    })
}

fn gw_auth() -> Value {
    let eukey = EuKey::from_bytes(pattern(0x40));
    let rand_gw = Rand(pattern(0x30));
    let rand_server = Rand(pattern(0x20));
    let exporter: [u8; 32] = pattern(0xc0);
    let response = gw_auth_response(&eukey, GW_ID, &rand_gw, &rand_server, &exporter);
    json!({
        "inputs": {
            "eukey_gw": eukey.to_hex().as_str(),
            "gw_id": GW_ID,
            "rand_gw": hx(rand_gw.0),
            "rand_server": hx(rand_server.0),
            "tls_exporter_label": String::from_utf8_lossy(TLS_EXPORTER_LABEL),
            "tls_exporter_context": "",
            "tls_exporter": hx(exporter),
        },
        "intermediates": {
            "prk": hx(v::hkdf_prk(None, eukey.expose_secret())),
            "gw_auth_key_info": hx(v::transcript(labels::GW_AUTH_KEY, &[])),
            "gw_auth_key": hx(v::gw_auth_key(&eukey)),
            "response_message": hx(v::gw_auth_transcript(GW_ID, &rand_gw, &rand_server, &exporter)),
        },
        "outputs": { "response": hx(response.0) },
    })
}

/// Seals whole envelopes, as the PAN link codec does, and lists every step.
fn records(sealer: &mut FrameSealer, envelopes: &[Envelope]) -> Value {
    let out: Vec<Value> = envelopes
        .iter()
        .map(|env| {
            let mut plaintext = Vec::new();
            cpns_wire::codec::encode_envelope(env, &mut plaintext);
            let seq = sealer.next_sequence();
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&seq.to_be_bytes());
            let aad = sealer.aad().to_vec();
            let record = sealer.seal(&plaintext).expect("sealing a short frame");
            let len = u32::try_from(1 + record.len()).expect("a short frame");
            let mut frame = len.to_be_bytes().to_vec();
            frame.push(1);
            frame.extend_from_slice(&record);
            json!({
                "seq": seq,
                "message": env.body.name(),
                "envelope_diagnostic": diag(&plaintext),
                "plaintext": hx(&plaintext),
                "aad": hx(aad),
                "nonce": hx(nonce),
                "record": hx(record),
                "frame": hx(frame),
            })
        })
        .collect();
    Value::Array(out)
}

/// The suites the PNE of the PAN vector offers, most wanted first: AES-256-GCM, then
/// ChaCha20-Poly1305 (docs/security.md §4.13).
const OFFERED: [u8; 2] = [2, 1];

fn pan(establishment: &PneAuthCase, registration: &PneAuthCase, grant_box: &[u8]) -> Value {
    let local = LocalEuKey::from_bytes(pattern(0x60));
    let rand_pne = Rand(pattern(0x50));
    let rand_gw = Rand(pattern(0x30));
    let input = PanAuthInput {
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        gw_id: GW_ID,
        rand_pne: &rand_pne,
        rand_gw: &rand_gw,
        offered: &OFFERED,
        suite: Suite::Aes256Gcm,
    };
    let keys = PanKeys::derive(&local, &input);
    let [confirm, gw_to_pne, pne_to_gw] = v::pan_keys(&keys);
    let mut salt = rand_pne.0.to_vec();
    salt.extend_from_slice(&rand_gw.0);
    let ctx: [&[u8]; 3] = [&PN_ID, PNE_ID.as_bytes(), GW_ID.as_bytes()];
    let suite = [Suite::Aes256Gcm.code()];
    let frame_ctx: [&[u8]; 4] = [&PN_ID, PNE_ID.as_bytes(), GW_ID.as_bytes(), &suite];
    let proof_fields: [&[u8]; 7] = [
        &rand_pne.0,
        &rand_gw.0,
        &PN_ID,
        PNE_ID.as_bytes(),
        GW_ID.as_bytes(),
        &OFFERED,
        &suite,
    ];
    let gw_proof = keys.gw_proof();
    let pne_proof = keys.pne_proof();
    let mut pne_fields = proof_fields.to_vec();
    pne_fields.push(&gw_proof.0);
    let gw_proof_message = v::transcript(labels::PAN_GW_PROOF, &proof_fields);
    let pne_proof_message = v::transcript(labels::PAN_PNE_PROOF, &pne_fields);
    let pne_keys = PanKeys::derive(&local, &input);
    let (mut pne_tx, _) = pne_keys.into_pne_side();
    let (mut gw_tx, _) = keys.into_gw_side();
    let (pne, gw, pn) = (
        Address::Entity(eid(PNE_ID)),
        Address::Entity(eid(GW_ID)),
        PnId::from_bytes(PN_ID),
    );
    // PNE -> PN GW: the Authentication Response that waited for PN GW authentication
    // (000 §6.6.1.1 step 8), then a PNE Registration Request to the server (003 §1.4.1 step 1).
    let up = [
        Envelope::response(
            4,
            2,
            pne.clone(),
            gw.clone(),
            AuthenticationResponse {
                pn_id: pn,
                hashes: vec![PneHash {
                    pne_id: eid(PNE_ID),
                    hash: HashBytes(establishment.hash_pne.0),
                }],
                purpose: AuthPurposeCode::Establishment,
                request_id: Some(RequestId(SETUP_REQUEST_ID)),
            },
        ),
        Envelope::request(
            5,
            pne.clone(),
            Address::Server,
            PneRegistrationRequest {
                request_id: RequestId(REGISTRATION_REQUEST_ID),
                pne_id: eid(PNE_ID),
                pn_id: Some(pn),
                rand_pne: RandBytes(pattern(0x10)),
                capabilities: None,
                local_key: false,
            },
        ),
    ];
    // PN GW -> PNE: the initiator's PN Setup Response with the inventory and hash_server_PNE
    // (step 14), then the relayed PNE Registration Response with the sealed grant.
    let down = [
        Envelope::response(
            7,
            1,
            gw.clone(),
            pne.clone(),
            PnSetupResponse {
                pn_id: pn,
                accept: true,
                join: None,
                inventory: Some(inventory()),
                hash_server: Some(HashBytes(establishment.hash_server.0)),
                epoch: None,
                sealed_key: None,
            },
        ),
        Envelope::response(
            9,
            5,
            Address::Server,
            pne,
            PneRegistrationResponse {
                request_id: RequestId(REGISTRATION_REQUEST_ID),
                pne_id: eid(PNE_ID),
                pn_id: pn,
                cpns_id: CpnsId::new(CPNS_ID).expect("a valid CPNS ID"),
                hash_server: HashBytes(registration.hash_server.0),
                sealed_grant: grant_box.to_vec(),
                epoch: None,
                keys: Vec::new(),
                inventory: None,
            },
        ),
    ];
    json!({
        "inputs": {
            "local_eukey": local.to_hex().as_str(),
            "pn_id": hx(PN_ID),
            "pne_id": PNE_ID,
            "gw_id": GW_ID,
            "rand_pne": hx(rand_pne.0),
            "rand_gw": hx(rand_gw.0),
            "offered": hx(OFFERED),
            "suite_code": hx(suite),
        },
        "intermediates": {
            "salt": hx(&salt),
            "prk": hx(v::hkdf_prk(Some(&salt), local.expose_secret())),
            "confirm_info": hx(v::transcript(labels::PAN_CONFIRM, &ctx)),
            "confirm_key": hx(confirm),
            "gw_to_pne_info": hx(v::transcript(labels::PAN_GW_TO_PNE, &frame_ctx)),
            "gw_to_pne_key": hx(gw_to_pne),
            "pne_to_gw_info": hx(v::transcript(labels::PAN_PNE_TO_GW, &frame_ctx)),
            "pne_to_gw_key": hx(pne_to_gw),
            "gw_proof_message": hx(gw_proof_message),
            "pne_proof_message": hx(pne_proof_message),
            "gw_to_pne_direction_code": hx([PanDirection::GwToPne.code()]),
            "gw_to_pne_aad": hx(pan_frame_aad(PanDirection::GwToPne, &PN_ID, PNE_ID, GW_ID)),
            "pne_to_gw_direction_code": hx([PanDirection::PneToGw.code()]),
            "pne_to_gw_aad": hx(pan_frame_aad(PanDirection::PneToGw, &PN_ID, PNE_ID, GW_ID)),
        },
        "outputs": {
            "gw_proof": hx(gw_proof.0),
            "pne_proof": hx(pne_proof.0),
            "records_pne_to_gw": records(&mut pne_tx, &up),
            "records_gw_to_pne": records(&mut gw_tx, &down),
        },
    })
}

fn e2e(sk: &SessionKey) -> Value {
    let (s2p, p2s) = (E2eDirection::ServerToPne, E2eDirection::PneToServer);
    let cases: Vec<Value> = [
        (s2p, "server_to_pne", E2eKind::Grant, "grant"),
        (s2p, "server_to_pne", E2eKind::Secure, "secure"),
        (p2s, "pne_to_server", E2eKind::Secure, "secure"),
        (s2p, "server_to_pne", E2eKind::GroupKey, "group_key"),
        (
            s2p,
            "server_to_pne",
            E2eKind::MembershipEnded,
            "membership_ended",
        ),
    ]
    .iter()
    .map(|(dir, name, kind, kind_name)| {
        json!({
            "direction": name,
            "direction_code": hx([dir.code()]),
            "kind": kind_name,
            "kind_code": hx([kind.code()]),
            "sk_pne": sk.to_hex().as_str(),
            "prk": hx(v::hkdf_prk(None, sk.expose_secret())),
            "key_info": hx(v::transcript(labels::E2E_KEY, &[&[dir.code()], &[kind.code()]])),
            "key": hx(v::e2e_key(sk, *dir, *kind)),
        })
    })
    .collect();
    Value::Array(cases)
}

/// The registration grant of the registration vector, and its sealed box.
fn registration_grant(sk: &SessionKey) -> (Value, Vec<u8>) {
    let grant = RegistrationGrant {
        cpns_id: CpnsId::new(CPNS_ID).expect("a valid CPNS ID"),
        session_id: RandBytes(pattern(0x70)),
        lifetime_s: 3600,
        inventory: None,
        epoch: None,
        group_key: None,
    };
    let grant_cbor = cbor(&grant);
    let binding = GrantBinding {
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        request_id: REGISTRATION_REQUEST_ID,
        cpns_id: CPNS_ID,
    };
    let nonce: [u8; 12] = pattern(0xa0);
    let sealed = seal_registration_grant_with_nonce(sk, &binding, &grant_cbor, nonce);
    let value = json!({
        "inputs": {
            "sk_pne": sk.to_hex().as_str(),
            "pn_id": hx(PN_ID),
            "pne_id": PNE_ID,
            "request_id": REGISTRATION_REQUEST_ID,
            "request_id_u64be": hx(REGISTRATION_REQUEST_ID.to_be_bytes()),
            "cpns_id": CPNS_ID,
            "grant": {
                "cpns_id": CPNS_ID,
                "session_id": hx(grant.session_id.0),
                "lifetime_s": grant.lifetime_s,
            },
        },
        "intermediates": {
            "grant_diagnostic": diag(&grant_cbor),
            "grant_cbor": hx(&grant_cbor),
            "direction_code": hx([E2eDirection::ServerToPne.code()]),
            "kind_code": hx([E2eKind::Grant.code()]),
            "key_info": hx(v::transcript(
                labels::E2E_KEY,
                &[&[E2eDirection::ServerToPne.code()], &[E2eKind::Grant.code()]],
            )),
            "key": hx(v::e2e_key(sk, E2eDirection::ServerToPne, E2eKind::Grant)),
            "aad": hx(registration_grant_aad(&binding)),
            "nonce": hx(nonce),
        },
        "outputs": { "sealed_grant": hx(&sealed) },
    });
    (value, sealed)
}

/// A secure request and its answer on the registration's session (docs/security.md §4.8).
fn secure_session(sk: &SessionKey) -> Value {
    let request_id = 0x0102_0304_0506_0708_u64;
    let binding = SecureBinding {
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        request_id,
    };
    let call = SecureCall {
        service: "cpns.echo".into(),
        payload: b"hello".to_vec(),
    };
    let call_cbor = cbor(&call);
    let cases: Vec<Value> = [
        (E2eDirection::PneToServer, pattern::<12>(0xb0)),
        (E2eDirection::ServerToPne, pattern::<12>(0xc0)),
    ]
    .iter()
    .map(|(dir, nonce)| {
        json!({
            "direction_code": hx([dir.code()]),
            "key": hx(v::e2e_key(sk, *dir, E2eKind::Secure)),
            "aad": hx(secure_message_aad(*dir, &binding)),
            "nonce": hx(nonce),
            "sealed": hx(seal_secure_message_with_nonce(sk, *dir, &binding, &call_cbor, *nonce)),
        })
    })
    .collect();
    // A notice the server pushes (a service match), under its own key and associated data.
    let notice_id = 0x0000_0191_0000_0001_u64;
    let notice_binding = NoticeBinding {
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        notice_id,
    };
    let notice_call = SecureCall {
        service: "cpns.service.match".into(),
        payload: b"match".to_vec(),
    };
    let notice_cbor = cbor(&notice_call);
    let nonce = pattern::<12>(0xd0);
    json!({
        "sk_pne": sk.to_hex().as_str(),
        "pn_id": hx(PN_ID),
        "pne_id": PNE_ID,
        "request_id": request_id,
        "call_diagnostic": diag(&call_cbor),
        "call_cbor": hx(&call_cbor),
        "messages": cases,
        "notice": {
            "notice_id": notice_id,
            "kind_code": hx([E2eKind::Notice.code()]),
            "key": hx(v::e2e_key(sk, E2eDirection::ServerToPne, E2eKind::Notice)),
            "aad": hx(secure_notice_aad(&notice_binding)),
            "call_diagnostic": diag(&notice_cbor),
            "call_cbor": hx(&notice_cbor),
            "nonce": hx(nonce),
            "sealed": hx(seal_secure_notice_with_nonce(sk, &notice_binding, &notice_cbor, nonce)),
        },
    })
}

/// A device's storage key from its EUKey, and its SK_PNE sealed at rest under it (§4.9).
fn device_storage(sk_pne: &SessionKey) -> Value {
    let eukey = EuKey::from_bytes(pattern(0x00));
    let key = device_storage_key(&eukey);
    let aad = at_rest_session_key_aad(&PN_ID, PNE_ID);
    let nonce = pattern::<12>(0xf0);
    json!({
        "eukey": eukey.to_hex().as_str(),
        "key_info": hx(v::transcript(labels::DEVICE_STORAGE_KEY, &[])),
        "key": key.to_hex().as_str(),
        "at_rest_key": hx(v::at_rest_key(&key)),
        "aad": hx(&aad),
        "plaintext": hx(sk_pne.expose_secret()),
        "nonce": hx(nonce),
        "sealed": hx(seal_at_rest_with_nonce(&key, &aad, sk_pne.expose_secret(), nonce)),
    })
}

fn at_rest(sk_pne: &SessionKey) -> Value {
    let master = MasterKey::from_bytes(pattern(0xe0));
    let eukey = EuKey::from_bytes(pattern(0x00));
    let samples: Vec<Value> = [
        (
            "eukey",
            labels::AT_REST_EUKEY_AAD,
            at_rest_eukey_aad(PNE_ID),
            eukey.expose_secret(),
            pattern::<12>(0xd0),
        ),
        (
            "sk_pne",
            labels::AT_REST_SK_PNE_AAD,
            at_rest_session_key_aad(&PN_ID, PNE_ID),
            sk_pne.expose_secret(),
            pattern::<12>(0xd8),
        ),
    ]
    .iter()
    .map(|(name, label, aad, secret, nonce)| {
        json!({
            "name": name,
            "aad_label": label,
            "aad": hx(aad),
            "plaintext": hx(secret),
            "nonce": hx(nonce),
            "sealed": hx(seal_at_rest_with_nonce(&master, aad, &secret[..], *nonce)),
        })
    })
    .collect();
    json!({
        "master_key": master.to_hex().as_str(),
        "prk": hx(v::hkdf_prk(None, master.expose_secret())),
        "key_info": hx(v::transcript(labels::AT_REST_KEY, &[])),
        "key": hx(v::at_rest_key(&master)),
        "entity_id": PNE_ID,
        "pn_id": hx(PN_ID),
        "pne_id": PNE_ID,
        "samples": samples,
    })
}

/// The server's certification key (from the `at_rest` master key), the signing key of PNE 1
/// (from its EUKey of `pne_auth`) and the server's certificate of it (docs/security.md §4.11).
fn signing() -> Value {
    let master = MasterKey::from_bytes(pattern(0xe0));
    let eukey = EuKey::from_bytes(pattern(0x00));
    let ca = CertificationKey::from_master(&master);
    let member = MemberSigningKey::derive(&eukey, PNE_ID);
    let cert = ca.certify(PNE_ID, OWNER, &member.public());
    json!({
        "inputs": {
            "master_key": master.to_hex().as_str(),
            "eukey": eukey.to_hex().as_str(),
            "pne_id": PNE_ID,
            "owner": OWNER,
        },
        "certification_seed_info": hx(v::transcript(labels::CERTIFICATION_KEY, &[])),
        "certification_seed": hx(v::certification_seed(&master)),
        "authority_key": ca.public().to_hex(),
        "member_seed_info": hx(v::transcript(labels::MEMBER_SIGNING_KEY, &[PNE_ID.as_bytes()])),
        "member_seed": hx(v::member_signing_seed(&eukey, PNE_ID)),
        "member_key": hx(member.public().0),
        "certificate_message": hx(v::member_certificate_message(PNE_ID, OWNER, &member.public())),
        "certificate_signature": hx(cert.signature),
    })
}

/// Group content of `epoch`, signed by PNE 1 (the `signing` vector) and sealed under K_gc.
fn group_content(gk: &GroupKey, epoch: u64) -> Value {
    let member = MemberSigningKey::derive(&EuKey::from_bytes(pattern(0x00)), PNE_ID);
    let plaintext = b"family photo";
    let nonce = pattern::<12>(0x28);
    let content_id = 0x1112_1314_1516_1718_u64;
    let b = ContentBinding {
        pn_id: &PN_ID,
        epoch,
        sender: PNE_ID,
        content_id,
    };
    let epoch_fields: [&[u8]; 2] = [&PN_ID, &epoch.to_be_bytes()];
    let sealed = seal_group_content_with_nonce(gk, &member, &b, plaintext, nonce)
        .expect("a short plaintext seals");
    let key = v::group_content_key(gk, &PN_ID, epoch);
    let aad = v::group_content_aad(&b);
    let inner = v::open_raw(&key, &aad, &sealed).expect("the box opens");
    json!({
        "prk": hx(v::hkdf_prk(None, gk.expose_secret())),
        "key_info": hx(v::transcript(labels::GROUP_CONTENT_KEY, &epoch_fields)),
        "key": hx(key),
        "sender": PNE_ID,
        "content_id": content_id,
        "content_id_u64be": hx(content_id.to_be_bytes()),
        "aad": hx(aad),
        "plaintext": hx(plaintext),
        "signed_message": hx(v::group_content_signed(&b, plaintext)),
        "signature": hx(&inner[..SIGNATURE_LEN]),
        "inner": hx(&inner[..]),
        "nonce": hx(nonce),
        "sealed": hx(sealed),
    })
}

/// A PN's group key of one epoch and its boxes (docs/security.md §4.10): the member's copy
/// under K(server → PNE, group key) of the SK_PNE of `pne_auth[0]`, bound to the inventory of
/// that vector, pushed and answering a pull; group content under K_gc; the GK at rest under
/// K_rest of the `at_rest` master key; and the server's word that the membership ended,
/// answering the same pull, once per reason.
/// The service group of the vectors.
const SERVICE_GROUP_ID: [u8; 16] = [
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f,
];

fn group(sk_pne: &SessionKey) -> Value {
    let epoch = 1u64;
    let gk = GroupKey::from_bytes(pattern(0x08));
    let master = MasterKey::from_bytes(pattern(0xe0));
    let digest = inventory_digest(&cbor(&inventory()));
    let binding = GroupKeyBinding {
        pn_id: &PN_ID,
        epoch,
        pne_id: PNE_ID,
        inventory_digest: &digest,
        pull: None,
    };
    // The pull a copy or the ended word answers (docs/security.md §4.10).
    let request_id = 0x0102_0304_0506_0708_u64;
    let pulled = GroupKeyBinding {
        pull: Some(request_id),
        ..binding
    };
    let pulled_nonce = pattern::<12>(0x68);
    let s2p = E2eDirection::ServerToPne;
    let s2p_info = v::transcript(
        labels::E2E_KEY,
        &[&[s2p.code()], &[E2eKind::GroupKey.code()]],
    );
    let copy_nonce = pattern::<12>(0x18);
    let content = group_content(&gk, epoch);
    let rest_nonce = pattern::<12>(0x38);
    let ended: Vec<Value> = [
        ("removed", 1u8, pattern::<12>(0x48)),
        ("released", 2, pattern(0x58)),
    ]
    .iter()
    .map(|(name, why, nonce)| {
        let b = EndedBinding {
            pn_id: &PN_ID,
            pne_id: PNE_ID,
            request_id,
            why: *why,
        };
        json!({
            "reason": name,
            "reason_code": hx([*why]),
            "kind_code": hx([E2eKind::MembershipEnded.code()]),
            "key": hx(v::e2e_key(sk_pne, s2p, E2eKind::MembershipEnded)),
            "aad": hx(v::membership_ended_aad(&b)),
            "plaintext": hx([*why]),
            "nonce": hx(nonce),
            "sealed": hx(seal_membership_ended_with_nonce(sk_pne, &b, *nonce)),
        })
    })
    .collect();
    json!({
        "inputs": {
            "sk_pne": sk_pne.to_hex().as_str(),
            "pn_id": hx(PN_ID),
            "pne_id": PNE_ID,
            "epoch": epoch,
            "epoch_u64be": hx(epoch.to_be_bytes()),
            "inventory_digest": hx(digest),
            "gk": gk.to_hex().as_str(),
            "master_key": master.to_hex().as_str(),
            "request_id": request_id,
            "request_id_u64be": hx(request_id.to_be_bytes()),
        },
        "copy": {
            "direction_code": hx([s2p.code()]),
            "kind_code": hx([E2eKind::GroupKey.code()]),
            "key_info": hx(&s2p_info),
            "key": hx(v::e2e_key(sk_pne, s2p, E2eKind::GroupKey)),
            "aad": hx(v::group_key_aad(&binding)),
            "plaintext": gk.to_hex().as_str(),
            "nonce": hx(copy_nonce),
            "sealed": hx(seal_group_key_with_nonce(sk_pne, &binding, &gk, copy_nonce)),
        },
        "pulled_copy": {
            "aad": hx(v::group_key_aad(&pulled)),
            "nonce": hx(pulled_nonce),
            "sealed": hx(seal_group_key_with_nonce(sk_pne, &pulled, &gk, pulled_nonce)),
        },
        "content": content,
        "at_rest": {
            "key_info": hx(v::transcript(labels::AT_REST_KEY, &[])),
            "key": hx(v::at_rest_key(&master)),
            "aad": hx(v::group_key_at_rest_aad(&PN_ID, epoch)),
            "plaintext": gk.to_hex().as_str(),
            "nonce": hx(rest_nonce),
            "sealed": hx(seal_group_key_at_rest_with_nonce(&master, &PN_ID, epoch, &gk, rest_nonce)),
        },
        // A service group's key at rest: its own label; the group id stands where the PN id is.
        "service_group_at_rest": {
            "group_id": hx(SERVICE_GROUP_ID),
            "aad": hx(v::service_group_key_at_rest_aad(&SERVICE_GROUP_ID, epoch)),
            "nonce": hx(pattern::<12>(0xe8)),
            "sealed": hx(seal_service_group_key_at_rest_with_nonce(
                &master,
                &SERVICE_GROUP_ID,
                epoch,
                &gk,
                pattern::<12>(0xe8),
            )),
        },
        "ended": ended,
    })
}

/// A delivery session's chunks (docs/security.md §4.12): the chunk key, one chunk of the common
/// part and one of a target's specific part.
fn delivery() -> Value {
    let key = DeliveryKey::from_bytes(pattern::<32>(0x71));
    let session: [u8; 16] = pattern::<16>(0x91);
    let suite = Suite::Aes256Gcm;
    let sealer = ChunkSealer::new(&key, &session, suite);
    let chunk = |part: &str, offset: u64, nonce: u8| {
        let b = ChunkBinding {
            session: &session,
            part,
            offset,
            total: 1_048_576,
        };
        let plain = b"sixteen bytes of";
        json!({
            "part": part,
            "offset": offset,
            "total": 1_048_576,
            "aad": hx(v::delivery_chunk_aad(&b)),
            "nonce": hx(pattern::<12>(nonce)),
            "plaintext": hx(plain),
            "sealed": hx(sealer.seal_with_nonce(&b, plain, pattern::<12>(nonce)).expect("seals")),
        })
    };
    // The source's digest of two items, 1 MiB in all, signed by PNE 1 (the `signing` vector).
    let member = MemberSigningKey::derive(&EuKey::from_bytes(pattern(0x00)), PNE_ID);
    let hashes = [pattern::<32>(0xa1), pattern::<32>(0xb1)];
    json!({
        "delivery_key": hx(key.expose_secret()),
        "session": hx(session),
        "suite_code": hx([suite.code()]),
        "chunk_key": hx(v::delivery_chunk_key(&key, &session, suite)),
        "chunks": [chunk("", 65_536, 0xc1), chunk("tv-1", 0, 0xc2)],
        // The session's key as a target keeps it at rest, under its device's storage key.
        "at_rest": {
            "storage_key": hx(pattern::<32>(0x3d)),
            "kept_as": "target",
            "aad": hx(v::delivery_key_at_rest_aad(&session, KeptAs::Target)),
            "nonce": hx(pattern::<12>(0xd1)),
            "sealed": hx(seal_delivery_key_at_rest_with_nonce(
                &MasterKey::from_bytes(pattern::<32>(0x3d)),
                &session,
                KeptAs::Target,
                &key,
                pattern::<12>(0xd1),
            )),
        },
        "digest": {
            "signer": PNE_ID,
            "total": 1_048_576,
            "hashes": hashes.iter().map(hx).collect::<Vec<_>>(),
            "message": hx(v::delivery_digest_message(&session, 1_048_576, &hashes)),
            "signature": hx(member.sign_delivery_digest(&session, 1_048_576, &hashes)),
        },
    })
}

fn main() {
    let establishment = pne_auth_case("establishment", AuthPurpose::Establishment);
    let registration = pne_auth_case("registration", AuthPurpose::Registration);
    let (grant, grant_box) = registration_grant(&registration.sk);
    let labels: serde_json::Map<String, Value> = labels::ALL
        .iter()
        .map(|l| (l.to_string(), Value::String(hx(l.as_bytes()))))
        .collect();
    let doc = json!({
        "about": "CPNS key schedule test vectors (labels cpns/v1, protocol version 2); see docs/security.md. All byte strings are lowercase hex; ids are UTF-8 strings; *_diagnostic values are CBOR diagnostic notation (RFC 8949 §8) of the hex next to them. Generated by crates/cpns-crypto/examples/gen_vectors.rs and checked by crates/cpns-crypto/tests/vectors.rs.",
        "version": "cpns/v1",
        "protocol_version": cpns_wire::PROTOCOL_VERSION,
        "encoding": "T(x) = len(x) as u16 big-endian || x (len >= 65535: ffff || u64 BE); a *_info / *_message / aad value is the concatenation of T() of the label and each field; HKDF and HMAC are SHA-256; AEAD is ChaCha20-Poly1305 (RFC 8439), but PAN frames and delivery chunks are under the suite named with them (here AES-256-GCM, NIST SP 800-38D, suite code 2); signatures are Ed25519 (RFC 8032) from 32-byte seeds",
        "labels": labels,
        "pne_auth": [establishment.value, registration.value],
        "local_eukey_wrap": local_eukey_wrap(),
        "gw_auth": gw_auth(),
        "pan": pan(&establishment, &registration, &grant_box),
        "e2e": e2e(&establishment.sk),
        "registration_grant": grant,
        "at_rest": at_rest(&establishment.sk),
        "secure_session": secure_session(&registration.sk),
        "device_storage": device_storage(&registration.sk),
        "group": group(&establishment.sk),
        "delivery": delivery(),
        "signing": signing(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("a JSON value always serializes")
    );
}
