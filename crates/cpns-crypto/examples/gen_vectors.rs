//! Writes docs/security-vectors.json: fixed inputs and every intermediate of the key schedule.
//!
//! Run from the workspace root:
//! `cargo run -p cpns-crypto --example gen_vectors > docs/security-vectors.json`.
//! The inputs are fixed byte patterns (not random), so the output is reproducible; the test
//! `tests/vectors.rs` recomputes every value from the inputs, both through the crate's API and
//! through an independent re-implementation of docs/security.md.

use cpns_crypto::vectors as v;
use cpns_crypto::*;
use serde_json::{Value, json};

/// An N-byte pattern `start, start+1, …` (wrapping).
fn pattern<const N: usize>(start: u8) -> [u8; N] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn hx(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

const PN_ID: [u8; 16] = [
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
];
const PNE_ID: &str = "pne-1.alice@cpns.example";
const GW_ID: &str = "gw-1.alice@cpns.example";

fn pne_auth_case(name: &str, purpose: AuthPurpose) -> (Value, SessionKey) {
    let eukey = EuKey::from_bytes(pattern(0x00));
    let rand_pne = Rand(pattern(0x10));
    let rand_server = Rand(pattern(0x20));
    let input = PneAuthInput {
        purpose,
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        rand_pne: &rand_pne,
        rand_server: &rand_server,
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
    let hash_server = keys.hash_server(&hash_pne);
    let hash_fields: [&[u8]; 5] = [
        &code,
        &rand_pne.0,
        &rand_server.0,
        PNE_ID.as_bytes(),
        &PN_ID,
    ];
    let hash_pne_msg = v::transcript(labels::HASH_PNE, &hash_fields);
    let mut server_fields = hash_fields.to_vec();
    server_fields.push(&hash_pne.0);
    let hash_server_msg = v::transcript(labels::HASH_SERVER, &server_fields);
    let value = json!({
        "name": name,
        "inputs": {
            "eukey_pne": eukey.to_hex().as_str(),
            "purpose": name,
            "purpose_code": hx(code),
            "pn_id": hx(PN_ID),
            "pne_id": PNE_ID,
            "rand_pne": hx(rand_pne.0),
            "rand_server": hx(rand_server.0),
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
    (value, keys.session_key().clone())
}

fn wrap_copy(eukey: &EuKey, recipient: Recipient, local: &LocalEuKey, nonce: [u8; 12]) -> Value {
    let binding = KeyBinding {
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        gw_id: GW_ID,
    };
    let code = [match recipient {
        Recipient::Pne => 1u8,
        Recipient::Gateway => 2,
    }];
    json!({
        "recipient_code": hx(code),
        "recipient_eukey": eukey.to_hex().as_str(),
        "kek_prk": hx(v::hkdf_prk(None, eukey.expose_secret())),
        "kek_info": hx(v::transcript(labels::LOCAL_EUKEY_KEK, &[&code])),
        "kek": hx(v::local_eukey_kek(eukey, recipient)),
        "aad": hx(v::local_eukey_aad(recipient, &binding)),
        "nonce": hx(nonce),
        "wrapped": hx(wrap_local_eukey_with_nonce(eukey, recipient, &binding, local, nonce)),
    })
}

fn local_eukey_wrap() -> Value {
    let eukey_pne = EuKey::from_bytes(pattern(0x00));
    let eukey_gw = EuKey::from_bytes(pattern(0x40));
    let local = LocalEuKey::from_bytes(pattern(0x60));
    json!({
        "inputs": {
            "local_eukey": local.to_hex().as_str(),
            "pn_id": hx(PN_ID),
            "pne_id": PNE_ID,
            "gw_id": GW_ID,
        },
        "pne_copy": wrap_copy(&eukey_pne, Recipient::Pne, &local, pattern(0x80)),
        "gateway_copy": wrap_copy(&eukey_gw, Recipient::Gateway, &local, pattern(0x90)),
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

fn records(sealer: &mut FrameSealer, frames: &[(&[u8], &[u8])]) -> Value {
    let out: Vec<Value> = frames
        .iter()
        .map(|(aad, pt)| {
            let seq = sealer.next_sequence();
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&seq.to_be_bytes());
            let record = sealer.seal(aad, pt).expect("sealing a short frame");
            json!({ "seq": seq, "aad": hx(aad), "plaintext": hx(pt), "nonce": hx(nonce), "record": hx(record) })
        })
        .collect();
    Value::Array(out)
}

fn pan() -> Value {
    let local = LocalEuKey::from_bytes(pattern(0x60));
    let rand_pne = Rand(pattern(0x50));
    let rand_gw = Rand(pattern(0x30));
    let input = PanAuthInput {
        pn_id: &PN_ID,
        pne_id: PNE_ID,
        gw_id: GW_ID,
        rand_pne: &rand_pne,
        rand_gw: &rand_gw,
    };
    let keys = PanKeys::derive(&local, &input);
    let [confirm, gw_to_pne, pne_to_gw] = v::pan_keys(&keys);
    let mut salt = rand_pne.0.to_vec();
    salt.extend_from_slice(&rand_gw.0);
    let ctx: [&[u8]; 3] = [&PN_ID, PNE_ID.as_bytes(), GW_ID.as_bytes()];
    let proof_fields: [&[u8]; 5] = [
        &rand_pne.0,
        &rand_gw.0,
        &PN_ID,
        PNE_ID.as_bytes(),
        GW_ID.as_bytes(),
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
    json!({
        "inputs": {
            "local_eukey": local.to_hex().as_str(),
            "pn_id": hx(PN_ID),
            "pne_id": PNE_ID,
            "gw_id": GW_ID,
            "rand_pne": hx(rand_pne.0),
            "rand_gw": hx(rand_gw.0),
        },
        "intermediates": {
            "salt": hx(&salt),
            "prk": hx(v::hkdf_prk(Some(&salt), local.expose_secret())),
            "confirm_info": hx(v::transcript(labels::PAN_CONFIRM, &ctx)),
            "confirm_key": hx(confirm),
            "gw_to_pne_info": hx(v::transcript(labels::PAN_GW_TO_PNE, &ctx)),
            "gw_to_pne_key": hx(gw_to_pne),
            "pne_to_gw_info": hx(v::transcript(labels::PAN_PNE_TO_GW, &ctx)),
            "pne_to_gw_key": hx(pne_to_gw),
            "gw_proof_message": hx(gw_proof_message),
            "pne_proof_message": hx(pne_proof_message),
        },
        "outputs": {
            "gw_proof": hx(gw_proof.0),
            "pne_proof": hx(pne_proof.0),
            "records_pne_to_gw": records(&mut pne_tx, &[(b"", b"PnSetupRequest frame 0"), (b"hdr-1", b"frame 1")]),
            "records_gw_to_pne": records(&mut gw_tx, &[(b"", b"PnSetupResponse frame 0"), (b"hdr-1", b"")]),
        },
    })
}

fn e2e(sk: &SessionKey) -> Value {
    let cases: Vec<Value> = [
        (
            E2eDirection::ServerToPne,
            "server_to_pne",
            1u8,
            &b"msg_id=42"[..],
            &b"group key epoch 3"[..],
            pattern::<12>(0xa0),
        ),
        (
            E2eDirection::PneToServer,
            "pne_to_server",
            2u8,
            &b"msg_id=43"[..],
            &b"usage record"[..],
            pattern::<12>(0xb0),
        ),
    ]
    .iter()
    .map(|(dir, name, code, aad, pt, nonce)| {
        json!({
            "direction": name,
            "direction_code": hx([*code]),
            "sk_pne": sk.to_hex().as_str(),
            "prk": hx(v::hkdf_prk(None, sk.expose_secret())),
            "key_info": hx(v::transcript(labels::E2E_KEY, &[&[*code]])),
            "key": hx(v::e2e_key(sk, *dir)),
            "aad": hx(aad),
            "plaintext": hx(pt),
            "nonce": hx(nonce),
            "sealed": hx(seal_e2e_with_nonce(sk, *dir, aad, pt, *nonce)),
        })
    })
    .collect();
    Value::Array(cases)
}

fn at_rest() -> Value {
    let master = MasterKey::from_bytes(pattern(0xe0));
    let eukey = EuKey::from_bytes(pattern(0x00));
    let aad = format!("entity-eukey:{PNE_ID}");
    let nonce: [u8; 12] = pattern(0xd0);
    json!({
        "master_key": master.to_hex().as_str(),
        "prk": hx(v::hkdf_prk(None, master.expose_secret())),
        "key_info": hx(v::transcript(labels::AT_REST_KEY, &[])),
        "key": hx(v::at_rest_key(&master)),
        "aad": hx(aad.as_bytes()),
        "plaintext": hx(eukey.expose_secret()),
        "nonce": hx(nonce),
        "sealed": hx(seal_at_rest_with_nonce(&master, aad.as_bytes(), eukey.expose_secret(), nonce)),
    })
}

fn main() {
    let (establishment, sk) = pne_auth_case("establishment", AuthPurpose::Establishment);
    let (registration, _) = pne_auth_case("registration", AuthPurpose::Registration);
    let labels: serde_json::Map<String, Value> = labels::ALL
        .iter()
        .map(|l| (l.to_string(), Value::String(hx(l.as_bytes()))))
        .collect();
    let doc = json!({
        "about": "CPNS v1 key schedule test vectors; see docs/security.md. All byte strings are lowercase hex; ids are UTF-8 strings. Generated by crates/cpns-crypto/examples/gen_vectors.rs and checked by crates/cpns-crypto/tests/vectors.rs.",
        "version": "cpns/v1",
        "encoding": "T(x) = len(x) as u16 big-endian || x (len >= 65535: ffff || u64 BE); a *_info / *_message / aad value is the concatenation of T() of the label and each field; HKDF and HMAC are SHA-256; AEAD is ChaCha20-Poly1305 (RFC 8439)",
        "labels": labels,
        "pne_auth": [establishment, registration],
        "local_eukey_wrap": local_eukey_wrap(),
        "gw_auth": gw_auth(),
        "pan": pan(),
        "e2e": e2e(&sk),
        "at_rest": at_rest(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("a JSON value always serializes")
    );
}
