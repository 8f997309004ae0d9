//! Checks docs/security-vectors.json two ways: through the crate's API, and through an
//! independent re-implementation of docs/security.md written here from the document alone
//! (raw HKDF/HMAC/ChaCha20-Poly1305 calls and a separate transcript encoder). If the crate, the
//! document's byte layouts or the vectors file drift apart, one of these assertions fails.
//! Messages inside the vectors (envelopes, the PN inventory, the registration grant) are also
//! decoded with cpns-wire and re-encoded, so they are real, canonical encodings.

#![allow(clippy::unwrap_used)]

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use cpns_crypto::vectors as v;
use cpns_crypto::*;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/security-vectors.json"
));

fn doc() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

/// The hex field `key` of `obj`, decoded.
fn hx(obj: &Value, key: &str) -> Vec<u8> {
    let s = obj[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing field {key}"));
    hex::decode(s).unwrap()
}

fn arr<const N: usize>(obj: &Value, key: &str) -> [u8; N] {
    hx(obj, key).try_into().unwrap()
}

fn text<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj[key].as_str().unwrap()
}

// ---- the independent implementation of docs/security.md §2 ----

/// T(label) ‖ T(field)…, each T(x) = u16 BE length ‖ x.
fn t(label: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in std::iter::once(label.as_bytes()).chain(fields.iter().copied()) {
        let len = u16::try_from(f.len()).unwrap();
        assert!(len < 0xffff);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn hkdf_prk(salt: Option<&[u8]>, ikm: &[u8]) -> [u8; 32] {
    Hkdf::<Sha256>::extract(salt, ikm).0.into()
}

fn hkdf(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, &mut okm)
        .unwrap();
    okm
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// ChaCha20-Poly1305 ciphertext ‖ tag.
fn chacha(key: &[u8], nonce: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let key: [u8; 32] = key.try_into().unwrap();
    let nonce: [u8; 12] = nonce.try_into().unwrap();
    ChaCha20Poly1305::new(&Key::from(key))
        .encrypt(&Nonce::from(nonce), Payload { msg: pt, aad })
        .unwrap()
}

/// Each `(nonce, sealed)` is `nonce ‖ ChaCha20-Poly1305(key, nonce, aad, plain)`.
fn assert_sealed_under<const N: usize>(
    key: &[u8],
    aad: &[u8],
    plain: &[u8],
    boxes: [(&[u8], &[u8]); N],
) {
    for (nonce, sealed) in boxes {
        assert_eq!(sealed, cat(nonce, &chacha(key, nonce, aad, plain)));
    }
}

/// AES-256-GCM from another implementation (AWS-LC's), to check what the crate seals with
/// *ring*'s: `ct ‖ tag`.
fn aes_gcm(key: &[u8], nonce: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as LcNonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let nonce = LcNonce::try_assume_unique_for_key(nonce).unwrap();
    let mut out = pt.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut out)
        .unwrap();
    out
}

fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Checks the diagnostic notation and that `cbor` decodes to a `T` that re-encodes to `cbor`.
fn canonical<T>(obj: &Value, cbor_key: &str, diag_key: &str) -> (T, Vec<u8>)
where
    T: for<'b> minicbor::Decode<'b, ()> + minicbor::Encode<()>,
{
    let bytes = hx(obj, cbor_key);
    assert_eq!(text(obj, diag_key), minicbor::display(&bytes).to_string());
    let value: T = minicbor::decode(&bytes).unwrap();
    assert_eq!(
        minicbor::to_vec(&value).unwrap(),
        bytes,
        "{cbor_key} is canonical"
    );
    (value, bytes)
}

// ---- the checks ----

#[test]
fn labels_match() {
    let d = doc();
    // The vectors are those of the protocol version this build speaks.
    assert_eq!(
        d["protocol_version"].as_u64(),
        Some(u64::from(cpns_wire::PROTOCOL_VERSION))
    );
    let map = d["labels"].as_object().unwrap();
    assert_eq!(map.len(), labels::ALL.len());
    for l in labels::ALL {
        assert_eq!(hex::decode(text(&d["labels"], l)).unwrap(), l.as_bytes());
    }
}

#[test]
fn pne_auth_vectors() {
    let d = doc();
    let cases = d["pne_auth"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let (i, m, o) = (&case["inputs"], &case["intermediates"], &case["outputs"]);
        let eukey = EuKey::from_hex(text(i, "eukey_pne")).unwrap();
        let pn_id: [u8; 16] = arr(i, "pn_id");
        let pne_id = text(i, "pne_id");
        let rand_pne = Rand(arr(i, "rand_pne"));
        let rand_server = Rand(arr(i, "rand_server"));
        let purpose = match text(i, "purpose") {
            "establishment" => AuthPurpose::Establishment,
            "registration" => AuthPurpose::Registration,
            other => panic!("unknown purpose {other}"),
        };
        let code = hx(i, "purpose_code");
        assert_eq!(code, [purpose.code()]);

        // What the PNE said, re-encoded canonically: its join information or its registration
        // request without pn_id, with the vector's rand_PNE.
        let st = &i["statement"];
        let statement: [u8; 32] = arr(st, "digest");
        let st_cbor = hx(st, "cbor");
        assert_eq!(sha256(&st_cbor), statement);
        assert_eq!(statement_digest(&st_cbor), statement);
        match (purpose, text(st, "kind")) {
            (AuthPurpose::Establishment, "join_info") => {
                let (j, _): (cpns_wire::JoinInfo, _) = canonical(st, "cbor", "diagnostic");
                assert_eq!((j.pne_id.as_str(), j.rand_pne.0), (pne_id, rand_pne.0));
            }
            (AuthPurpose::Registration, "pne_registration_request") => {
                let (r, _): (cpns_wire::PneRegistrationRequest, _) =
                    canonical(st, "cbor", "diagnostic");
                assert_eq!((r.pne_id.as_str(), r.rand_pne.0), (pne_id, rand_pne.0));
                assert_eq!(r.pn_id, None);
            }
            other => panic!("unexpected statement {other:?}"),
        }
        // Through the crate.
        let input = PneAuthInput {
            purpose,
            pn_id: &pn_id,
            pne_id,
            rand_pne: &rand_pne,
            rand_server: &rand_server,
            statement: &statement,
        };
        let keys = PneAuthKeys::derive(&eukey, &input);
        let hash_pne = AuthHash(arr(o, "hash_pne"));
        let hash_server = AuthHash(arr(o, "hash_server"));
        let out = &i["outcome"];
        assert_eq!(hx(out, "verdict"), [VERDICT_AUTHENTICATED]);
        // The outcome field of hash_server: the inventory digest or the CPNS ID.
        let inventory_cbor = match (purpose, text(out, "kind")) {
            (AuthPurpose::Establishment, "established") => {
                let (inv, cbor): (cpns_wire::PnInventory, _) =
                    canonical(out, "inventory_cbor", "inventory_diagnostic");
                assert_eq!(inv.pn_id.as_bytes(), &pn_id);
                let digest = hx(out, "inventory_digest");
                assert_eq!(digest, sha256(&cbor));
                assert_eq!(inventory_digest(&cbor)[..], digest[..]);
                cbor
            }
            (AuthPurpose::Registration, "registered") => Vec::new(),
            other => panic!("unexpected outcome {other:?}"),
        };
        let outcome = match purpose {
            AuthPurpose::Establishment => ServerOutcome::Established {
                inventory_cbor: &inventory_cbor,
            },
            AuthPurpose::Registration => ServerOutcome::Registered {
                cpns_id: text(out, "cpns_id"),
            },
        };
        assert_eq!(keys.session_key().expose_secret()[..], hx(o, "sk_pne"));
        assert_eq!(v::pne_confirm_key(&keys)[..], hx(m, "confirm_key"));
        assert_eq!(keys.hash_pne(), hash_pne);
        assert_eq!(keys.hash_server(&hash_pne, &outcome), hash_server);
        assert_eq!(
            v::hash_server_transcript(&keys, &hash_pne, &outcome),
            hx(m, "hash_server_message")
        );
        keys.verify_hash_pne(&hash_pne).unwrap();
        keys.verify_hash_server(&hash_pne, &outcome, &hash_server)
            .unwrap();

        // Independently, from docs/security.md §4.1.
        let salt = cat(&rand_pne.0, &rand_server.0);
        assert_eq!(hx(m, "salt"), salt);
        assert_eq!(hx(m, "prk"), hkdf_prk(Some(&salt), eukey.expose_secret()));
        assert_eq!(
            v::hkdf_prk(Some(&salt), eukey.expose_secret())[..],
            hx(m, "prk")
        );
        let ctx: [&[u8]; 3] = [&code, pne_id.as_bytes(), &pn_id];
        let sk_info = t(labels::SK_PNE, &ctx);
        let confirm_info = t(labels::PNE_CONFIRM, &ctx);
        assert_eq!(hx(m, "sk_pne_info"), sk_info);
        assert_eq!(hx(m, "confirm_info"), confirm_info);
        let sk = hkdf(Some(&salt), eukey.expose_secret(), &sk_info);
        let confirm = hkdf(Some(&salt), eukey.expose_secret(), &confirm_info);
        assert_eq!(hx(o, "sk_pne"), sk);
        assert_eq!(hx(m, "confirm_key"), confirm);
        let fields: [&[u8]; 6] = [
            &code,
            &rand_pne.0,
            &rand_server.0,
            pne_id.as_bytes(),
            &pn_id,
            &statement,
        ];
        let hp_msg = t(labels::HASH_PNE, &fields);
        assert_eq!(hx(m, "hash_pne_message"), hp_msg);
        assert_eq!(hmac(&confirm, &hp_msg), hash_pne.0);
        let outcome_bytes = match purpose {
            AuthPurpose::Establishment => sha256(&inventory_cbor).to_vec(),
            AuthPurpose::Registration => text(out, "cpns_id").as_bytes().to_vec(),
        };
        let mut sfields = fields.to_vec();
        sfields.push(&hash_pne.0);
        sfields.push(&[0x01]);
        sfields.push(&outcome_bytes);
        let hs_msg = t(labels::HASH_SERVER, &sfields);
        assert_eq!(hx(m, "hash_server_message"), hs_msg);
        assert_eq!(hmac(&confirm, &hs_msg), hash_server.0);
    }
    assert_ne!(
        cases[0]["outputs"]["sk_pne"], cases[1]["outputs"]["sk_pne"],
        "purpose separates the keys"
    );
}

#[test]
fn local_eukey_wrap_vectors() {
    let d = doc();
    let w = &d["local_eukey_wrap"];
    let i = &w["inputs"];
    let local = LocalEuKey::from_hex(text(i, "local_eukey")).unwrap();
    let pn_id: [u8; 16] = arr(i, "pn_id");
    let rand_server = Rand(arr(i, "rand_server"));
    let binding = KeyBinding {
        pn_id: &pn_id,
        pne_id: text(i, "pne_id"),
        gw_id: text(i, "gw_id"),
        rand_server: &rand_server,
    };
    for (name, recipient) in [
        ("pne_copy", Recipient::Pne),
        ("gateway_copy", Recipient::Gateway),
    ] {
        let c = &w[name];
        let eukey = EuKey::from_hex(text(c, "recipient_eukey")).unwrap();
        let nonce: [u8; 12] = arr(c, "nonce");
        let wrapped = hx(c, "wrapped");
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        // Through the crate.
        assert_eq!(hx(c, "recipient_code"), [recipient.code()]);
        assert_eq!(v::local_eukey_kek(&eukey, recipient)[..], hx(c, "kek"));
        assert_eq!(v::local_eukey_aad(recipient, &binding), hx(c, "aad"));
        assert_eq!(
            wrap_local_eukey_with_nonce(&eukey, recipient, &binding, &local, nonce),
            wrapped
        );
        assert_eq!(
            unwrap_local_eukey(&eukey, recipient, &binding, &wrapped).unwrap(),
            local
        );
        let stored = hx(c, "stored");
        assert_eq!(stored_wrapped_key(&rand_server, &wrapped), stored);
        assert_eq!(
            split_stored_wrapped_key(&stored).unwrap(),
            (rand_server, &wrapped[..])
        );
        // A copy presented in another establishment (another rand_server) does not unwrap.
        let later = Rand([0xee; 16]);
        let moved = KeyBinding {
            rand_server: &later,
            ..binding
        };
        assert_eq!(
            unwrap_local_eukey(&eukey, recipient, &moved, &wrapped),
            Err(CryptoError::BadTag)
        );
        // Independently, from docs/security.md §4.2.
        let code = [recipient.code()];
        let kek_info = t(labels::LOCAL_EUKEY_KEK, &[&code]);
        assert_eq!(hx(c, "kek_info"), kek_info);
        assert_eq!(hx(c, "kek_prk"), hkdf_prk(None, eukey.expose_secret()));
        let kek = hkdf(None, eukey.expose_secret(), &kek_info);
        assert_eq!(hx(c, "kek"), kek);
        let aad = t(
            labels::LOCAL_EUKEY_AAD,
            &[
                &code,
                &pn_id,
                binding.pne_id.as_bytes(),
                binding.gw_id.as_bytes(),
                &rand_server.0,
            ],
        );
        assert_eq!(hx(c, "aad"), aad);
        let ct = chacha(&kek, &nonce, &aad, local.expose_secret());
        assert_eq!(wrapped, cat(&nonce, &ct));
        assert_eq!(stored, cat(&rand_server.0, &wrapped));
    }
    // The two copies are for different recipients and cannot be swapped.
    let pne_eukey = EuKey::from_hex(text(&w["pne_copy"], "recipient_eukey")).unwrap();
    let gw_wrapped = hx(&w["gateway_copy"], "wrapped");
    assert_eq!(
        unwrap_local_eukey(&pne_eukey, Recipient::Pne, &binding, &gw_wrapped),
        Err(CryptoError::BadTag)
    );
}

#[test]
fn gw_auth_vectors() {
    let d = doc();
    let g = &d["gw_auth"];
    let (i, m, o) = (&g["inputs"], &g["intermediates"], &g["outputs"]);
    assert_eq!(text(i, "tls_exporter_label").as_bytes(), TLS_EXPORTER_LABEL);
    assert_eq!(text(i, "tls_exporter_context"), "");
    let eukey = EuKey::from_hex(text(i, "eukey_gw")).unwrap();
    let gw_id = text(i, "gw_id");
    let rand_gw = Rand(arr(i, "rand_gw"));
    let rand_server = Rand(arr(i, "rand_server"));
    let exporter: [u8; TLS_EXPORTER_LEN] = arr(i, "tls_exporter");
    let response = AuthHash(arr(o, "response"));
    // Through the crate.
    assert_eq!(
        gw_auth_response(&eukey, gw_id, &rand_gw, &rand_server, &exporter),
        response
    );
    verify_gw_auth_response(&eukey, gw_id, &rand_gw, &rand_server, &exporter, &response).unwrap();
    assert_eq!(v::gw_auth_key(&eukey)[..], hx(m, "gw_auth_key"));
    assert_eq!(
        v::gw_auth_transcript(gw_id, &rand_gw, &rand_server, &exporter),
        hx(m, "response_message")
    );
    // Independently, from docs/security.md §4.3.
    let key_info = t(labels::GW_AUTH_KEY, &[]);
    assert_eq!(hx(m, "gw_auth_key_info"), key_info);
    assert_eq!(hx(m, "prk"), hkdf_prk(None, eukey.expose_secret()));
    let key = hkdf(None, eukey.expose_secret(), &key_info);
    assert_eq!(hx(m, "gw_auth_key"), key);
    let msg = t(
        labels::GW_AUTH_RESPONSE,
        &[gw_id.as_bytes(), &rand_gw.0, &rand_server.0, &exporter],
    );
    assert_eq!(hx(m, "response_message"), msg);
    assert_eq!(hmac(&key, &msg), response.0);
    // The transcript encoder examples/gen_vectors.rs writes the file with gives the same bytes.
    assert_eq!(
        v::transcript(labels::GW_AUTH_KEY, &[]),
        hx(m, "gw_auth_key_info")
    );
    assert_eq!(
        v::transcript(
            labels::GW_AUTH_RESPONSE,
            &[gw_id.as_bytes(), &rand_gw.0, &rand_server.0, &exporter],
        ),
        hx(m, "response_message")
    );
}

/// Checks a list of sealed records against a sealer, an opener and the raw construction: each
/// plaintext is a whole cpns-wire envelope, each frame is `u32be(len) ‖ 01 ‖ record`, the
/// record sealed in AES-256-GCM, the suite of the vector's link.
fn check_records(
    list: &Value,
    key: &[u8],
    aad: &[u8],
    sealer: &mut FrameSealer,
    opener: &mut FrameOpener,
) {
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(sealer.aad(), aad);
    assert_eq!(opener.aad(), aad);
    for (n, r) in list.iter().enumerate() {
        let seq = r["seq"].as_u64().unwrap();
        assert_eq!(seq, u64::try_from(n).unwrap());
        let (pt, record, frame) = (hx(r, "plaintext"), hx(r, "record"), hx(r, "frame"));
        assert_eq!(hx(r, "aad"), aad);
        // The plaintext is one envelope, canonically encoded.
        assert_eq!(
            text(r, "envelope_diagnostic"),
            minicbor::display(&pt).to_string()
        );
        let env = cpns_wire::decode_envelope(&pt).unwrap();
        assert_eq!(env.body.name(), text(r, "message"));
        let mut again = Vec::new();
        cpns_wire::codec::encode_envelope(&env, &mut again);
        assert_eq!(again, pt);
        // Through the crate.
        assert_eq!(sealer.seal(&pt).unwrap(), record);
        assert_eq!(opener.open(&record).unwrap(), pt);
        // Independently, from docs/security.md §4.5 and docs/wire.md (framing).
        let nonce = cat(&[0; 4], &seq.to_be_bytes());
        assert_eq!(hx(r, "nonce"), nonce);
        assert_eq!(
            record,
            cat(&seq.to_be_bytes(), &aes_gcm(key, &nonce, aad, &pt))
        );
        assert_eq!(record.len(), pt.len() + SEAL_OVERHEAD);
        let len = u32::try_from(record.len() + 1).unwrap();
        assert_eq!(frame, [&len.to_be_bytes()[..], &[1], &record].concat());
    }
}

#[test]
fn pan_vectors() {
    let d = doc();
    let p = &d["pan"];
    let (i, m, o) = (&p["inputs"], &p["intermediates"], &p["outputs"]);
    let local = LocalEuKey::from_hex(text(i, "local_eukey")).unwrap();
    let pn_id: [u8; 16] = arr(i, "pn_id");
    let (pne_id, gw_id) = (text(i, "pne_id"), text(i, "gw_id"));
    let rand_pne = Rand(arr(i, "rand_pne"));
    let rand_gw = Rand(arr(i, "rand_gw"));
    let input = PanAuthInput {
        pn_id: &pn_id,
        pne_id,
        gw_id,
        rand_pne: &rand_pne,
        rand_gw: &rand_gw,
        offered: &hx(i, "offered"),
        suite: Suite::from_code(hx(i, "suite_code")[0]).unwrap(),
    };
    assert_eq!(
        hx(i, "offered"),
        [2, 1],
        "AES-256-GCM, then ChaCha20-Poly1305"
    );
    assert_eq!(input.suite, Suite::Aes256Gcm);
    let gw_proof = AuthHash(arr(o, "gw_proof"));
    let pne_proof = AuthHash(arr(o, "pne_proof"));
    // Through the crate.
    let pne = PanKeys::derive(&local, &input);
    let gw = PanKeys::derive(&local, &input);
    let [confirm, g2p, p2g] = v::pan_keys(&pne);
    assert_eq!(confirm[..], hx(m, "confirm_key"));
    assert_eq!(g2p[..], hx(m, "gw_to_pne_key"));
    assert_eq!(p2g[..], hx(m, "pne_to_gw_key"));
    assert_eq!(pne.gw_proof(), gw_proof);
    assert_eq!(pne.pne_proof(), pne_proof);
    pne.verify_gw_proof(&gw_proof).unwrap();
    gw.verify_pne_proof(&pne_proof).unwrap();
    let (mut pne_tx, mut pne_rx) = pne.into_pne_side();
    let (mut gw_tx, mut gw_rx) = gw.into_gw_side();
    // Independently, from docs/security.md §4.5: the associated data of each direction.
    let aad_p2g = t(
        labels::PAN_FRAME_AAD,
        &[&[0x02], &pn_id, pne_id.as_bytes(), gw_id.as_bytes()],
    );
    let aad_g2p = t(
        labels::PAN_FRAME_AAD,
        &[&[0x01], &pn_id, pne_id.as_bytes(), gw_id.as_bytes()],
    );
    assert_eq!(hx(m, "pne_to_gw_aad"), aad_p2g);
    assert_eq!(hx(m, "gw_to_pne_aad"), aad_g2p);
    assert_eq!(
        hx(m, "pne_to_gw_direction_code"),
        [PanDirection::PneToGw.code()]
    );
    assert_eq!(
        hx(m, "gw_to_pne_direction_code"),
        [PanDirection::GwToPne.code()]
    );
    assert_eq!(
        pan_frame_aad(PanDirection::PneToGw, &pn_id, pne_id, gw_id),
        aad_p2g
    );
    let records_up = &o["records_pne_to_gw"];
    check_records(records_up, &p2g, &aad_p2g, &mut pne_tx, &mut gw_rx);
    check_records(
        &o["records_gw_to_pne"],
        &g2p,
        &aad_g2p,
        &mut gw_tx,
        &mut pne_rx,
    );
    // A record sealed for another PNE on this PN GW does not open here.
    let first = hx(&records_up[0], "record");
    let (_, mut other_rx) = PanKeys::derive(&local, &input).into_gw_side();
    let other_aad = pan_frame_aad(PanDirection::PneToGw, &pn_id, "pne-9", gw_id);
    let forged = FrameSealer::new(Suite::Aes256Gcm, p2g, other_aad)
        .seal(&hx(&records_up[0], "plaintext"))
        .unwrap();
    assert_ne!(forged, first);
    assert_eq!(other_rx.open(&forged), Err(CryptoError::BadTag));
    assert_eq!(
        other_rx.open(&first).unwrap(),
        hx(&records_up[0], "plaintext")
    );
    // Independently, from docs/security.md §4.4.
    let salt = cat(&rand_pne.0, &rand_gw.0);
    assert_eq!(hx(m, "salt"), salt);
    assert_eq!(hx(m, "prk"), hkdf_prk(Some(&salt), local.expose_secret()));
    let ctx: [&[u8]; 3] = [&pn_id, pne_id.as_bytes(), gw_id.as_bytes()];
    let frame_ctx: [&[u8]; 4] = [&pn_id, pne_id.as_bytes(), gw_id.as_bytes(), &[2]];
    for (label, info_name, key_name, ctx) in [
        (labels::PAN_CONFIRM, "confirm_info", "confirm_key", &ctx[..]),
        (
            labels::PAN_GW_TO_PNE,
            "gw_to_pne_info",
            "gw_to_pne_key",
            &frame_ctx[..],
        ),
        (
            labels::PAN_PNE_TO_GW,
            "pne_to_gw_info",
            "pne_to_gw_key",
            &frame_ctx[..],
        ),
    ] {
        let info = t(label, ctx);
        assert_eq!(hx(m, info_name), info);
        assert_eq!(
            hx(m, key_name),
            hkdf(Some(&salt), local.expose_secret(), &info)
        );
    }
    let fields: [&[u8]; 7] = [
        &rand_pne.0,
        &rand_gw.0,
        &pn_id,
        pne_id.as_bytes(),
        gw_id.as_bytes(),
        &[2, 1],
        &[2],
    ];
    let gw_msg = t(labels::PAN_GW_PROOF, &fields);
    assert_eq!(hx(m, "gw_proof_message"), gw_msg);
    assert_eq!(hmac(&confirm, &gw_msg), gw_proof.0);
    let mut pfields = fields.to_vec();
    pfields.push(&gw_proof.0);
    let pne_msg = t(labels::PAN_PNE_PROOF, &pfields);
    assert_eq!(hx(m, "pne_proof_message"), pne_msg);
    assert_eq!(hmac(&confirm, &pne_msg), pne_proof.0);
}

#[test]
fn e2e_vectors() {
    let d = doc();
    let cases = d["e2e"].as_array().unwrap();
    // One key per direction and kind (docs/security.md §4.6): the grant, a copy and the ended
    // word go server to PNE only, secure messages both ways.
    assert_eq!(cases.len(), 5);
    let mut keys = Vec::new();
    for c in cases {
        // The keys are derived from the SK_PNE of the establishment vector.
        assert_eq!(c["sk_pne"], d["pne_auth"][0]["outputs"]["sk_pne"]);
        let sk = SessionKey::from_hex(text(c, "sk_pne")).unwrap();
        let dir = match text(c, "direction") {
            "server_to_pne" => E2eDirection::ServerToPne,
            "pne_to_server" => E2eDirection::PneToServer,
            other => panic!("unknown direction {other}"),
        };
        let kind = match text(c, "kind") {
            "grant" => E2eKind::Grant,
            "secure" => E2eKind::Secure,
            "group_key" => E2eKind::GroupKey,
            "membership_ended" => E2eKind::MembershipEnded,
            other => panic!("unknown kind {other}"),
        };
        // Through the crate.
        assert_eq!(hx(c, "direction_code"), [dir.code()]);
        assert_eq!(hx(c, "kind_code"), [kind.code()]);
        assert_eq!(v::e2e_key(&sk, dir, kind)[..], hx(c, "key"));
        // Independently, from docs/security.md §4.6.
        let info = t(labels::E2E_KEY, &[&[dir.code()], &[kind.code()]]);
        assert_eq!(hx(c, "key_info"), info);
        assert_eq!(hx(c, "prk"), hkdf_prk(None, sk.expose_secret()));
        assert_eq!(hx(c, "key"), hkdf(None, sk.expose_secret(), &info));
        keys.push(hx(c, "key"));
    }
    // No two uses share a key.
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn registration_grant_vectors() {
    let d = doc();
    let g = &d["registration_grant"];
    let (i, m, o) = (&g["inputs"], &g["intermediates"], &g["outputs"]);
    // Sealed under the SK_PNE of the registration vector, for its CPNS ID.
    assert_eq!(i["sk_pne"], d["pne_auth"][1]["outputs"]["sk_pne"]);
    assert_eq!(
        i["cpns_id"],
        d["pne_auth"][1]["inputs"]["outcome"]["cpns_id"]
    );
    let sk = SessionKey::from_hex(text(i, "sk_pne")).unwrap();
    let pn_id: [u8; 16] = arr(i, "pn_id");
    let request_id = i["request_id"].as_u64().unwrap();
    assert_eq!(hx(i, "request_id_u64be"), request_id.to_be_bytes());
    let binding = GrantBinding {
        pn_id: &pn_id,
        pne_id: text(i, "pne_id"),
        request_id,
        cpns_id: text(i, "cpns_id"),
    };
    let (grant, grant_cbor): (cpns_wire::RegistrationGrant, _) =
        canonical(m, "grant_cbor", "grant_diagnostic");
    assert_eq!(grant.cpns_id.as_str(), text(&i["grant"], "cpns_id"));
    assert_eq!(hx(&i["grant"], "session_id"), grant.session_id.0);
    assert_eq!(
        i["grant"]["lifetime_s"].as_u64(),
        Some(u64::from(grant.lifetime_s))
    );
    let nonce: [u8; 12] = arr(m, "nonce");
    let sealed = hx(o, "sealed_grant");
    // Through the crate.
    assert_eq!(registration_grant_aad(&binding), hx(m, "aad"));
    assert_eq!(
        v::e2e_key(&sk, E2eDirection::ServerToPne, E2eKind::Grant)[..],
        hx(m, "key")
    );
    assert_eq!(
        seal_registration_grant_with_nonce(&sk, &binding, &grant_cbor, nonce),
        sealed
    );
    assert_eq!(
        &open_registration_grant(&sk, &binding, &sealed).unwrap()[..],
        &grant_cbor[..]
    );
    // Each field of the associated data matters (docs/security.md §4.6).
    let other_pn = [0u8; 16];
    for other in [
        GrantBinding {
            pn_id: &other_pn,
            ..binding
        },
        GrantBinding {
            pne_id: "pne-9",
            ..binding
        },
        GrantBinding {
            request_id: request_id + 1,
            ..binding
        },
        GrantBinding {
            cpns_id: "cpns-999999",
            ..binding
        },
    ] {
        assert_eq!(
            open_registration_grant(&sk, &other, &sealed),
            Err(CryptoError::BadTag)
        );
    }
    // Independently, from docs/security.md §4.6: K(server → PNE, grant), then the box.
    assert_eq!(hx(m, "direction_code"), [0x01]);
    assert_eq!(hx(m, "kind_code"), [0x01]);
    let info = t(labels::E2E_KEY, &[&[0x01], &[0x01]]);
    assert_eq!(hx(m, "key_info"), info);
    let key = hkdf(None, sk.expose_secret(), &info);
    assert_eq!(hx(m, "key"), key);
    let aad = t(
        labels::REGISTRATION_GRANT_AAD,
        &[
            &pn_id,
            binding.pne_id.as_bytes(),
            &request_id.to_be_bytes(),
            binding.cpns_id.as_bytes(),
        ],
    );
    assert_eq!(hx(m, "aad"), aad);
    assert_eq!(
        sealed,
        cat(&nonce, &chacha(&key, &nonce, &aad, &grant_cbor))
    );
    // The same box travels in the relayed PNE Registration Response of the PAN vector.
    let relayed = &d["pan"]["outputs"]["records_gw_to_pne"][1];
    let env = cpns_wire::decode_envelope(&hx(relayed, "plaintext")).unwrap();
    let cpns_wire::Body::PneRegistrationResponse(resp) = env.body else {
        panic!("not a PNE Registration Response")
    };
    assert_eq!(resp.sealed_grant, sealed);
    assert_eq!(resp.request_id.0, request_id);
    assert_eq!(resp.cpns_id.as_str(), binding.cpns_id);
}

#[test]
fn at_rest_vectors() {
    let d = doc();
    let a = &d["at_rest"];
    let master = MasterKey::from_hex(text(a, "master_key")).unwrap();
    let pn_id: [u8; 16] = arr(a, "pn_id");
    // Through the crate, then independently, from docs/security.md §4.7.
    assert_eq!(v::at_rest_key(&master)[..], hx(a, "key"));
    let info = t(labels::AT_REST_KEY, &[]);
    assert_eq!(hx(a, "key_info"), info);
    assert_eq!(hx(a, "prk"), hkdf_prk(None, master.expose_secret()));
    let key = hkdf(None, master.expose_secret(), &info);
    assert_eq!(hx(a, "key"), key);
    let samples = a["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        let (aad, pt, sealed) = (hx(s, "aad"), hx(s, "plaintext"), hx(s, "sealed"));
        let nonce: [u8; 12] = arr(s, "nonce");
        let (api_aad, raw_aad) = match text(s, "name") {
            "eukey" => {
                assert_eq!(text(s, "aad_label"), labels::AT_REST_EUKEY_AAD);
                let id = text(a, "entity_id");
                (
                    at_rest_eukey_aad(id),
                    t(labels::AT_REST_EUKEY_AAD, &[id.as_bytes()]),
                )
            }
            "sk_pne" => {
                assert_eq!(text(s, "aad_label"), labels::AT_REST_SK_PNE_AAD);
                assert_eq!(pt, hx(&d["pne_auth"][0]["outputs"], "sk_pne"));
                let pne = text(a, "pne_id");
                (
                    at_rest_session_key_aad(&pn_id, pne),
                    t(labels::AT_REST_SK_PNE_AAD, &[&pn_id, pne.as_bytes()]),
                )
            }
            other => panic!("unknown sample {other}"),
        };
        assert_eq!(api_aad, aad);
        assert_eq!(raw_aad, aad);
        assert_eq!(seal_at_rest_with_nonce(&master, &aad, &pt, nonce), sealed);
        assert_eq!(&open_at_rest(&master, &aad, &sealed).unwrap()[..], &pt[..]);
        assert_eq!(
            open_at_rest(&master, &at_rest_eukey_aad("another-row"), &sealed),
            Err(CryptoError::BadTag)
        );
        assert_eq!(sealed, cat(&nonce, &chacha(&key, &nonce, &aad, &pt)));
    }
}

#[test]
fn secure_session_vectors() {
    let d = doc();
    let s = &d["secure_session"];
    // On the registration's session.
    assert_eq!(s["sk_pne"], d["pne_auth"][1]["outputs"]["sk_pne"]);
    let sk = SessionKey::from_hex(text(s, "sk_pne")).unwrap();
    let pn_id: [u8; 16] = arr(s, "pn_id");
    let request_id = s["request_id"].as_u64().unwrap();
    let binding = SecureBinding {
        pn_id: &pn_id,
        pne_id: text(s, "pne_id"),
        request_id,
    };
    let (call, call_cbor): (cpns_wire::SecureCall, _) =
        canonical(s, "call_cbor", "call_diagnostic");
    assert_eq!(call.service, "cpns.echo");
    let messages = s["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    for (m, dir) in messages
        .iter()
        .zip([E2eDirection::PneToServer, E2eDirection::ServerToPne])
    {
        let nonce: [u8; 12] = arr(m, "nonce");
        let sealed = hx(m, "sealed");
        // Through the crate.
        assert_eq!(secure_message_aad(dir, &binding), hx(m, "aad"));
        assert_eq!(
            seal_secure_message_with_nonce(&sk, dir, &binding, &call_cbor, nonce),
            sealed
        );
        assert_eq!(
            &open_secure_message(&sk, dir, &binding, &sealed).unwrap()[..],
            &call_cbor[..]
        );
        // Independently, from docs/security.md §4.8.
        assert_eq!(hx(m, "direction_code"), [dir.code()]);
        let key = hkdf(
            None,
            sk.expose_secret(),
            &t(labels::E2E_KEY, &[&[dir.code()], &[0x02]]),
        );
        assert_eq!(hx(m, "key"), key);
        let aad = t(
            labels::SECURE_MESSAGE_AAD,
            &[
                &[dir.code()],
                &pn_id,
                binding.pne_id.as_bytes(),
                &request_id.to_be_bytes(),
            ],
        );
        assert_eq!(hx(m, "aad"), aad);
        assert_eq!(sealed, cat(&nonce, &chacha(&key, &nonce, &aad, &call_cbor)));
        // Another request id, PNE or direction does not open it.
        let other = SecureBinding {
            request_id: request_id + 1,
            ..binding
        };
        assert_eq!(
            open_secure_message(&sk, dir, &other, &sealed),
            Err(CryptoError::BadTag)
        );
    }
    // A notice: server to PNE, kind 0x05, its own associated data.
    let n = &s["notice"];
    let notice_id = n["notice_id"].as_u64().unwrap();
    let nb = NoticeBinding {
        pn_id: &pn_id,
        pne_id: text(s, "pne_id"),
        notice_id,
    };
    let (notice, notice_cbor): (cpns_wire::SecureCall, _) =
        canonical(n, "call_cbor", "call_diagnostic");
    assert_eq!(notice.service, "cpns.service.match");
    let nonce: [u8; 12] = arr(n, "nonce");
    let sealed = hx(n, "sealed");
    assert_eq!(secure_notice_aad(&nb), hx(n, "aad"));
    assert_eq!(
        seal_secure_notice_with_nonce(&sk, &nb, &notice_cbor, nonce),
        sealed
    );
    assert_eq!(
        &open_secure_notice(&sk, &nb, &sealed).unwrap()[..],
        &notice_cbor[..]
    );
    assert_eq!(hx(n, "kind_code"), [0x05]);
    let key = hkdf(
        None,
        sk.expose_secret(),
        &t(labels::E2E_KEY, &[&[0x01], &[0x05]]),
    );
    assert_eq!(hx(n, "key"), key);
    let aad = t(
        labels::SECURE_NOTICE_AAD,
        &[&pn_id, nb.pne_id.as_bytes(), &notice_id.to_be_bytes()],
    );
    assert_eq!(hx(n, "aad"), aad);
    assert_eq!(
        sealed,
        cat(&nonce, &chacha(&key, &nonce, &aad, &notice_cbor))
    );
    // Another number, or read as an answer to a request of that number, does not open.
    let later = NoticeBinding {
        notice_id: notice_id + 1,
        ..nb
    };
    assert_eq!(
        open_secure_notice(&sk, &later, &sealed),
        Err(CryptoError::BadTag)
    );
    let as_answer = SecureBinding {
        request_id: notice_id,
        ..binding
    };
    assert_eq!(
        open_secure_message(&sk, E2eDirection::ServerToPne, &as_answer, &sealed),
        Err(CryptoError::BadTag)
    );
}

#[test]
fn device_storage_vectors() {
    let d = doc();
    let s = &d["device_storage"];
    let eukey = EuKey::from_hex(text(s, "eukey")).unwrap();
    let key = device_storage_key(&eukey);
    assert_eq!(key.to_hex().as_str(), text(s, "key"));
    // Independently, from docs/security.md §4.9: K_device, then the at-rest box under it.
    let info = t(labels::DEVICE_STORAGE_KEY, &[]);
    assert_eq!(hx(s, "key_info"), info);
    let k_device = hkdf(None, eukey.expose_secret(), &info);
    assert_eq!(hex::encode(k_device), text(s, "key"));
    let k_rest = hkdf(None, &k_device, &t(labels::AT_REST_KEY, &[]));
    assert_eq!(hx(s, "at_rest_key"), k_rest);
    let nonce: [u8; 12] = arr(s, "nonce");
    let aad = hx(s, "aad");
    let plain = hx(s, "plaintext");
    assert_eq!(
        hx(s, "sealed"),
        cat(&nonce, &chacha(&k_rest, &nonce, &aad, &plain))
    );
    assert_eq!(
        &open_at_rest(&key, &aad, &hx(s, "sealed")).unwrap()[..],
        &plain[..]
    );
    // Another device's EUKey does not open it.
    let other = device_storage_key(&EuKey::from_bytes([0xee; 32]));
    assert!(open_at_rest(&other, &aad, &hx(s, "sealed")).is_err());
}

// ---- docs/security.md §4.10: a PN's group key and its boxes ----

/// The shared inputs of the `group` section.
struct GroupInputs {
    sk: SessionKey,
    pn_id: [u8; 16],
    pne_id: String,
    epoch: u64,
    digest: [u8; 32],
    gk: GroupKey,
    master: MasterKey,
    /// The PN Key Request a pulled copy and the ended word answer.
    request_id: u64,
}

fn group_inputs(d: &Value) -> GroupInputs {
    let i = &d["group"]["inputs"];
    // The copy is the one of the establishment: sealed under its SK_PNE, bound to its inventory.
    assert_eq!(i["sk_pne"], d["pne_auth"][0]["outputs"]["sk_pne"]);
    let inventory = &d["pne_auth"][0]["inputs"]["outcome"];
    let digest: [u8; 32] = arr(i, "inventory_digest");
    assert_eq!(digest, sha256(&hx(inventory, "inventory_cbor")));
    // At rest under the server MasterKey of the `at_rest` vector.
    assert_eq!(i["master_key"], d["at_rest"]["master_key"]);
    let epoch = i["epoch"].as_u64().unwrap();
    assert_eq!(hx(i, "epoch_u64be"), epoch.to_be_bytes());
    let request_id = i["request_id"].as_u64().unwrap();
    assert_eq!(hx(i, "request_id_u64be"), request_id.to_be_bytes());
    GroupInputs {
        request_id,
        sk: SessionKey::from_hex(text(i, "sk_pne")).unwrap(),
        pn_id: arr(i, "pn_id"),
        pne_id: text(i, "pne_id").to_owned(),
        epoch,
        digest,
        gk: GroupKey::from_hex(text(i, "gk")).unwrap(),
        master: MasterKey::from_hex(text(i, "master_key")).unwrap(),
    }
}

/// Flipping any one byte of `sealed` makes `open` fail with a bad tag.
fn every_flipped_byte_fails<T>(sealed: &[u8], open: impl Fn(&[u8]) -> Result<T, CryptoError>) {
    for n in 0..sealed.len() {
        let mut t = sealed.to_vec();
        t[n] ^= 0x01;
        assert_eq!(open(&t).err(), Some(CryptoError::BadTag), "byte {n}");
    }
    assert!(matches!(
        open(&sealed[..27]).err(),
        Some(CryptoError::Malformed(_))
    ));
}

/// Independently: K(server → PNE, `kind`) of SK_PNE (docs/security.md §4.6), the key of the
/// copy and of the `ended` box.
fn k_s2p(sk: &SessionKey, kind: u8) -> [u8; 32] {
    hkdf(
        None,
        sk.expose_secret(),
        &t("cpns/v1/e2e-key", &[&[0x01], &[kind]]),
    )
}

#[test]
fn group_key_copy_vectors() {
    let d = doc();
    let g = group_inputs(&d);
    let c = &d["group"]["copy"];
    let binding = GroupKeyBinding {
        pn_id: &g.pn_id,
        epoch: g.epoch,
        pne_id: &g.pne_id,
        inventory_digest: &g.digest,
        pull: None,
    };
    let nonce: [u8; 12] = arr(c, "nonce");
    let sealed = hx(c, "sealed");
    assert_eq!(hx(c, "plaintext"), g.gk.expose_secret());
    // Through the crate.
    assert_eq!(
        v::e2e_key(&g.sk, E2eDirection::ServerToPne, E2eKind::GroupKey)[..],
        hx(c, "key")
    );
    assert_eq!(v::group_key_aad(&binding), hx(c, "aad"));
    assert_eq!(
        seal_group_key_with_nonce(&g.sk, &binding, &g.gk, nonce),
        sealed
    );
    let opened = open_group_key(&g.sk, &binding, &sealed).unwrap();
    assert_eq!(opened.expose_secret(), g.gk.expose_secret());
    // The sealing the server runs lays the box out the same way, under a drawn nonce.
    let drawn = seal_group_key(MachineRng::from_seed_u64(1).get(), &g.sk, &binding, &g.gk);
    let drawn_nonce: [u8; 12] = drawn[..12].try_into().unwrap();
    assert_eq!(
        seal_group_key_with_nonce(&g.sk, &binding, &g.gk, drawn_nonce),
        drawn
    );
    // Independently, from docs/security.md §4.6 and §4.10.
    assert_eq!(hx(c, "direction_code"), [0x01]);
    assert_eq!(hx(c, "kind_code"), [0x03]);
    let info = t("cpns/v1/e2e-key", &[&[0x01], &[0x03]]);
    assert_eq!(hx(c, "key_info"), info);
    let key = k_s2p(&g.sk, 0x03);
    assert_eq!(hx(c, "key"), key);
    let aad = t(
        "cpns/v1/group-key",
        &[
            &g.pn_id,
            &g.epoch.to_be_bytes(),
            g.pne_id.as_bytes(),
            &g.digest,
        ],
    );
    assert_eq!(hx(c, "aad"), aad);
    assert_sealed_under(
        &key,
        &aad,
        g.gk.expose_secret(),
        [(&nonce, &sealed), (&drawn_nonce, &drawn)],
    );
    // It opens for nobody else: another SK_PNE (the registration's; the PN GW holds none),
    // another epoch, PN, member or member list.
    let other_sk = SessionKey::from_hex(text(&d["pne_auth"][1]["outputs"], "sk_pne")).unwrap();
    let (other_pn, other_digest) = ([0u8; 16], sha256(b"another member list"));
    for (sk, b) in [
        (&other_sk, binding),
        (
            &g.sk,
            GroupKeyBinding {
                epoch: g.epoch + 1,
                ..binding
            },
        ),
        (
            &g.sk,
            GroupKeyBinding {
                pn_id: &other_pn,
                ..binding
            },
        ),
        (
            &g.sk,
            GroupKeyBinding {
                pne_id: "pne-2.alice@cpns.example",
                ..binding
            },
        ),
        (
            &g.sk,
            GroupKeyBinding {
                inventory_digest: &other_digest,
                ..binding
            },
        ),
    ] {
        assert_eq!(
            open_group_key(sk, &b, &sealed).err(),
            Some(CryptoError::BadTag)
        );
    }
    // Nor reflected as a PNE → server box, nor opened as another kind's.
    for use_ in [
        (E2eDirection::PneToServer, E2eKind::GroupKey),
        (E2eDirection::ServerToPne, E2eKind::Secure),
        (E2eDirection::ServerToPne, E2eKind::MembershipEnded),
    ] {
        assert_eq!(
            open_e2e(&g.sk, use_, &aad, &sealed),
            Err(CryptoError::BadTag)
        );
    }
    every_flipped_byte_fails(&sealed, |s| open_group_key(&g.sk, &binding, s));
    // A box that opens but holds no 32-byte key is refused.
    let short = cat(&nonce, &chacha(&key, &nonce, &aad, &[0x08; 31]));
    assert!(matches!(
        open_group_key(&g.sk, &binding, &short).err(),
        Some(CryptoError::Malformed(_))
    ));
    // The copy answering a pull names the pull's request id last: it opens for that pull only,
    // and the pushed copy answers no pull.
    let p = &d["group"]["pulled_copy"];
    let pulled = GroupKeyBinding {
        pull: Some(g.request_id),
        ..binding
    };
    let (p_nonce, p_sealed): ([u8; 12], _) = (arr(p, "nonce"), hx(p, "sealed"));
    let p_aad = t(
        "cpns/v1/group-key",
        &[
            &g.pn_id,
            &g.epoch.to_be_bytes(),
            g.pne_id.as_bytes(),
            &g.digest,
            &g.request_id.to_be_bytes(),
        ],
    );
    assert_eq!(hx(p, "aad"), p_aad);
    assert_eq!(v::group_key_aad(&pulled), p_aad);
    assert_eq!(
        p_sealed,
        cat(
            &p_nonce,
            &chacha(&key, &p_nonce, &p_aad, g.gk.expose_secret())
        )
    );
    assert_eq!(
        seal_group_key_with_nonce(&g.sk, &pulled, &g.gk, p_nonce),
        p_sealed
    );
    let opened = open_group_key(&g.sk, &pulled, &p_sealed).unwrap();
    assert_eq!(opened.expose_secret(), g.gk.expose_secret());
    for other in [None, Some(g.request_id + 1)] {
        let b = GroupKeyBinding {
            pull: other,
            ..binding
        };
        assert_eq!(
            open_group_key(&g.sk, &b, &p_sealed).err(),
            Some(CryptoError::BadTag)
        );
    }
    assert_eq!(
        open_group_key(&g.sk, &pulled, &sealed).err(),
        Some(CryptoError::BadTag)
    );
    every_flipped_byte_fails(&p_sealed, |s| open_group_key(&g.sk, &pulled, s));
}

/// Ed25519 with ring, an implementation the crate does not use: the public key of a seed, and
/// a signature (deterministic, RFC 8032), so every signature vector is re-derived independently.
fn ring_sign(seed: &[u8], message: &[u8]) -> ([u8; 32], [u8; 64]) {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).unwrap();
    let public = pair.public_key().as_ref().try_into().unwrap();
    let sig = pair.sign(message).as_ref().try_into().unwrap();
    (public, sig)
}

fn ring_verifies(public: &[u8], message: &[u8], sig: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(message, sig)
        .is_ok()
}

struct Signer {
    member: MemberSigningKey,
    cert: MemberCertificate,
    authority: AuthorityKey,
}

fn signer(d: &Value) -> Signer {
    let s = &d["signing"];
    let i = &s["inputs"];
    // PNE 1 of `pne_auth`, certified by the server of `at_rest`.
    assert_eq!(i["eukey"], d["pne_auth"][0]["inputs"]["eukey_pne"]);
    assert_eq!(i["pne_id"], d["pne_auth"][0]["inputs"]["pne_id"]);
    assert_eq!(i["master_key"], d["at_rest"]["master_key"]);
    let eukey = EuKey::from_hex(text(i, "eukey")).unwrap();
    let member = MemberSigningKey::derive(&eukey, text(i, "pne_id"));
    let cert = MemberCertificate {
        pne_id: text(i, "pne_id").into(),
        owner: text(i, "owner").into(),
        key: MemberKey(arr(s, "member_key")),
        signature: arr(s, "certificate_signature"),
    };
    Signer {
        member,
        cert,
        authority: AuthorityKey(arr(s, "authority_key")),
    }
}

#[test]
fn signing_vectors() {
    let d = doc();
    let s = &d["signing"];
    let i = &s["inputs"];
    let master = MasterKey::from_hex(text(i, "master_key")).unwrap();
    let eukey = EuKey::from_hex(text(i, "eukey")).unwrap();
    let (pne, owner) = (text(i, "pne_id"), text(i, "owner"));
    // Through the crate.
    let ca = CertificationKey::from_master(&master);
    assert_eq!(ca.public().0[..], hx(s, "authority_key"));
    assert_eq!(
        v::certification_seed(&master)[..],
        hx(s, "certification_seed")
    );
    let member = MemberSigningKey::derive(&eukey, pne);
    assert_eq!(member.public().0[..], hx(s, "member_key"));
    assert_eq!(
        v::member_signing_seed(&eukey, pne)[..],
        hx(s, "member_seed")
    );
    let cert = ca.certify(pne, owner, &member.public());
    assert_eq!(cert.signature[..], hx(s, "certificate_signature"));
    assert_eq!(
        v::member_certificate_message(pne, owner, &member.public()),
        hx(s, "certificate_message")
    );
    let certified = signer(&d).cert.verify(&ca.public()).unwrap();
    assert_eq!((certified.pne_id(), certified.owner()), (pne, owner));
    // Independently, from docs/security.md §4.11: the seeds by HKDF, the keys and signatures
    // by another Ed25519.
    let ca_info = t("cpns/v1/certification-key", &[]);
    assert_eq!(hx(s, "certification_seed_info"), ca_info);
    let ca_seed = hkdf(None, master.expose_secret(), &ca_info);
    assert_eq!(hx(s, "certification_seed"), ca_seed);
    let m_info = t("cpns/v1/member-signing-key", &[pne.as_bytes()]);
    assert_eq!(hx(s, "member_seed_info"), m_info);
    let m_seed = hkdf(None, eukey.expose_secret(), &m_info);
    assert_eq!(hx(s, "member_seed"), m_seed);
    let message = t(
        "cpns/v1/member-certificate",
        &[pne.as_bytes(), owner.as_bytes(), &hx(s, "member_key")],
    );
    assert_eq!(hx(s, "certificate_message"), message);
    let (ca_public, cert_sig) = ring_sign(&ca_seed, &message);
    assert_eq!(hx(s, "authority_key"), ca_public);
    assert_eq!(hx(s, "certificate_signature"), cert_sig);
    assert_eq!(hx(s, "member_key"), ring_sign(&m_seed, b"").0);
    // Negative: another authority, or a certificate with any field changed, fails.
    let other = CertificationKey::from_master(&MasterKey::from_bytes([0xee; 32])).public();
    assert_eq!(
        signer(&d).cert.verify(&other).err(),
        Some(CryptoError::BadSignature)
    );
    let mut c = signer(&d).cert;
    c.pne_id = "pne-2.alice@cpns.example".into();
    assert_eq!(
        c.verify(&ca.public()).err(),
        Some(CryptoError::BadSignature)
    );
    let mut c = signer(&d).cert;
    c.owner = "bob".into();
    assert_eq!(
        c.verify(&ca.public()).err(),
        Some(CryptoError::BadSignature)
    );
    let mut c = signer(&d).cert;
    c.key = MemberSigningKey::derive(&eukey, "pne-2.alice@cpns.example").public();
    assert_eq!(
        c.verify(&ca.public()).err(),
        Some(CryptoError::BadSignature)
    );
    for n in 0..SIGNATURE_LEN {
        let mut c = signer(&d).cert;
        c.signature[n] ^= 1;
        assert_eq!(
            c.verify(&ca.public()).err(),
            Some(CryptoError::BadSignature),
            "{n}"
        );
    }
}

#[test]
fn group_content_vectors() {
    let d = doc();
    let g = group_inputs(&d);
    let sg = signer(&d);
    let sender = sg.cert.verify(&sg.authority).unwrap();
    let c = &d["group"]["content"];
    assert_eq!(text(c, "sender"), g.pne_id);
    let content_id = c["content_id"].as_u64().unwrap();
    assert_eq!(hx(c, "content_id_u64be"), content_id.to_be_bytes());
    let b = ContentBinding {
        pn_id: &g.pn_id,
        epoch: g.epoch,
        sender: &g.pne_id,
        content_id,
    };
    let nonce: [u8; 12] = arr(c, "nonce");
    let (plain, sealed) = (hx(c, "plaintext"), hx(c, "sealed"));
    // Through the crate.
    assert_eq!(
        v::group_content_key(&g.gk, &g.pn_id, g.epoch)[..],
        hx(c, "key")
    );
    assert_eq!(v::group_content_aad(&b), hx(c, "aad"));
    assert_eq!(v::group_content_signed(&b, &plain), hx(c, "signed_message"));
    assert_eq!(v::hkdf_prk(None, g.gk.expose_secret())[..], hx(c, "prk"));
    assert_eq!(
        seal_group_content_with_nonce(&g.gk, &sg.member, &b, &plain, nonce).unwrap(),
        sealed
    );
    assert_eq!(
        &open_group_content(&g.gk, &sender, &b, &sealed).unwrap()[..],
        &plain[..]
    );
    let drawn = seal_group_content(
        MachineRng::from_seed_u64(2).get(),
        &g.gk,
        &sg.member,
        &b,
        &plain,
    )
    .unwrap();
    let drawn_nonce: [u8; 12] = drawn[..12].try_into().unwrap();
    assert_eq!(
        seal_group_content_with_nonce(&g.gk, &sg.member, &b, &plain, drawn_nonce).unwrap(),
        drawn
    );
    // Independently, from docs/security.md §4.10 and §4.11: K_gc = HKDF(salt absent, GK,
    // info); the inner bytes are the sender's Ed25519 signature of the signed message, then the
    // plaintext.
    let epoch = g.epoch.to_be_bytes();
    let id = content_id.to_be_bytes();
    let info = t("cpns/v1/group-content-key", &[&g.pn_id, &epoch]);
    assert_eq!(hx(c, "key_info"), info);
    assert_eq!(hx(c, "prk"), hkdf_prk(None, g.gk.expose_secret()));
    let key = hkdf(None, g.gk.expose_secret(), &info);
    assert_eq!(hx(c, "key"), key);
    let fields: [&[u8]; 4] = [&g.pn_id, &epoch, g.pne_id.as_bytes(), &id];
    let aad = t("cpns/v1/group-content", &fields);
    assert_eq!(hx(c, "aad"), aad);
    let signed = t(
        "cpns/v1/group-content-signature",
        &[&g.pn_id, &epoch, g.pne_id.as_bytes(), &id, &plain],
    );
    assert_eq!(hx(c, "signed_message"), signed);
    let m_seed = hx(&d["signing"], "member_seed");
    let (public, sig) = ring_sign(&m_seed, &signed);
    assert_eq!(public[..], sg.cert.key.0);
    assert_eq!(hx(c, "signature"), sig);
    let inner = cat(&sig, &plain);
    assert_eq!(hx(c, "inner"), inner);
    assert_eq!(v::open_raw(&arr(c, "key"), &aad, &sealed).unwrap(), inner);
    assert!(v::open_raw(&[0; 32], &aad, &sealed).is_err());
    assert_eq!(sealed, cat(&nonce, &chacha(&key, &nonce, &aad, &inner)));
    let drawn_inner = cat(&sig, &plain);
    assert_eq!(
        drawn,
        cat(
            &drawn_nonce,
            &chacha(&key, &drawn_nonce, &aad, &drawn_inner)
        )
    );
    // Not under another GK (a member that left holds only an earlier epoch's), nor as another
    // epoch, PN, sender or content id.
    let earlier = GroupKey::from_bytes([0xee; 32]);
    assert_eq!(
        open_group_content(&earlier, &sender, &b, &sealed).err(),
        Some(CryptoError::BadTag)
    );
    let other_pn = [0u8; 16];
    for other in [
        ContentBinding {
            epoch: g.epoch + 1,
            ..b
        },
        ContentBinding {
            epoch: g.epoch - 1,
            ..b
        },
        ContentBinding {
            pn_id: &other_pn,
            ..b
        },
        ContentBinding {
            content_id: content_id + 1,
            ..b
        },
        ContentBinding {
            sender: "pne-2.alice@cpns.example",
            ..b
        },
    ] {
        assert_eq!(
            open_group_content(&g.gk, &sender, &other, &sealed).err(),
            Some(CryptoError::BadTag)
        );
    }
    // The associated data binds the PN and epoch on its own, not only through K_gc.
    for (pn, epoch) in [([0u8; 16], g.epoch), (g.pn_id, g.epoch + 1)] {
        let info = t("cpns/v1/group-content-key", &[&pn, &epoch.to_be_bytes()]);
        let their_key = hkdf(None, g.gk.expose_secret(), &info);
        let moved = cat(&nonce, &chacha(&their_key, &nonce, &aad, &inner));
        let their = ContentBinding {
            pn_id: &pn,
            epoch,
            ..b
        };
        assert_eq!(
            open_group_content(&g.gk, &sender, &their, &moved).err(),
            Some(CryptoError::BadTag)
        );
    }
    every_flipped_byte_fails(&sealed, |s| open_group_content(&g.gk, &sender, &b, s));
    // Who sent it. PNE 2, a member holding GK, seals its own words naming PNE 1: the box opens,
    // the signature is not PNE 1's. A signature of other words, or another signer's, or PNE 1's
    // certificate under a binding naming PNE 2, fails too; ring agrees on each.
    let pne2 = "pne-2.alice@cpns.example";
    let pne2_seed = hkdf(
        None,
        &[0x42; 32],
        &t("cpns/v1/member-signing-key", &[pne2.as_bytes()]),
    );
    let (_, forged_sig) = ring_sign(&pne2_seed, &signed);
    let forged = cat(
        &nonce,
        &chacha(&key, &nonce, &aad, &cat(&forged_sig, &plain)),
    );
    assert_eq!(
        open_group_content(&g.gk, &sender, &b, &forged).err(),
        Some(CryptoError::BadSignature)
    );
    assert!(!ring_verifies(&sg.cert.key.0, &signed, &forged_sig));
    let (_, other_words) = ring_sign(&m_seed, &t("cpns/v1/group-content-signature", &[b"x"]));
    let moved = cat(
        &nonce,
        &chacha(&key, &nonce, &aad, &cat(&other_words, &plain)),
    );
    assert_eq!(
        open_group_content(&g.gk, &sender, &b, &moved).err(),
        Some(CryptoError::BadSignature)
    );
    let as_pne2 = ContentBinding { sender: pne2, ..b };
    let aad2 = v::group_content_aad(&as_pne2);
    let relabelled = cat(&nonce, &chacha(&key, &nonce, &aad2, &inner));
    assert_eq!(
        open_group_content(&g.gk, &sender, &as_pne2, &relabelled).err(),
        Some(CryptoError::BadSignature)
    );
    assert!(ring_verifies(&sg.cert.key.0, &signed, &sig));
}

#[test]
fn service_group_key_at_rest_vectors() {
    let d = doc();
    let g = group_inputs(&d);
    let a = &d["group"]["service_group_at_rest"];
    let id: [u8; 16] = arr(a, "group_id");
    let nonce: [u8; 12] = arr(a, "nonce");
    let sealed = hx(a, "sealed");
    assert_eq!(v::service_group_key_at_rest_aad(&id, g.epoch), hx(a, "aad"));
    assert_eq!(
        seal_service_group_key_at_rest_with_nonce(&g.master, &id, g.epoch, &g.gk, nonce),
        sealed
    );
    let opened = open_service_group_key_at_rest(&g.master, &id, g.epoch, &sealed).unwrap();
    assert_eq!(opened.expose_secret(), g.gk.expose_secret());
    // Independently, from docs/security.md §4.7 and §4.10.
    let key = hkdf(
        None,
        g.master.expose_secret(),
        &t("cpns/v1/at-rest-key", &[]),
    );
    let aad = t(
        "cpns/v1/at-rest/service-group-key",
        &[&id, &g.epoch.to_be_bytes()],
    );
    assert_eq!(hx(a, "aad"), aad);
    assert_eq!(
        sealed,
        cat(&nonce, &chacha(&key, &nonce, &aad, g.gk.expose_secret()))
    );
    // Not another group's or epoch's, nor a PN's key of the same id.
    let other = [0u8; 16];
    assert_eq!(
        open_service_group_key_at_rest(&g.master, &other, g.epoch, &sealed).err(),
        Some(CryptoError::BadTag)
    );
    assert_eq!(
        open_service_group_key_at_rest(&g.master, &id, g.epoch + 1, &sealed).err(),
        Some(CryptoError::BadTag)
    );
    assert_eq!(
        open_group_key_at_rest(&g.master, &id, g.epoch, &sealed).err(),
        Some(CryptoError::BadTag)
    );
}

#[test]
fn group_key_at_rest_vectors() {
    let d = doc();
    let g = group_inputs(&d);
    let a = &d["group"]["at_rest"];
    let nonce: [u8; 12] = arr(a, "nonce");
    let sealed = hx(a, "sealed");
    assert_eq!(hx(a, "plaintext"), g.gk.expose_secret());
    // Through the crate.
    assert_eq!(v::at_rest_key(&g.master)[..], hx(a, "key"));
    assert_eq!(v::group_key_at_rest_aad(&g.pn_id, g.epoch), hx(a, "aad"));
    assert_eq!(
        seal_group_key_at_rest_with_nonce(&g.master, &g.pn_id, g.epoch, &g.gk, nonce),
        sealed
    );
    let opened = open_group_key_at_rest(&g.master, &g.pn_id, g.epoch, &sealed).unwrap();
    assert_eq!(opened.expose_secret(), g.gk.expose_secret());
    // It is a plain §4.7 box: the generic at-rest API opens it with the same AAD.
    assert_eq!(
        &open_at_rest(&g.master, &hx(a, "aad"), &sealed).unwrap()[..],
        g.gk.expose_secret()
    );
    let drawn = seal_group_key_at_rest(&g.master, &g.pn_id, g.epoch, &g.gk).unwrap();
    let drawn_nonce: [u8; 12] = drawn[..12].try_into().unwrap();
    assert_eq!(
        seal_group_key_at_rest_with_nonce(&g.master, &g.pn_id, g.epoch, &g.gk, drawn_nonce),
        drawn
    );
    // Independently, from docs/security.md §4.7 and §4.10.
    let info = t("cpns/v1/at-rest-key", &[]);
    assert_eq!(hx(a, "key_info"), info);
    let key = hkdf(None, g.master.expose_secret(), &info);
    assert_eq!(hx(a, "key"), key);
    let aad = t(
        "cpns/v1/at-rest/group-key",
        &[&g.pn_id, &g.epoch.to_be_bytes()],
    );
    assert_eq!(hx(a, "aad"), aad);
    assert_sealed_under(
        &key,
        &aad,
        g.gk.expose_secret(),
        [(&nonce, &sealed), (&drawn_nonce, &drawn)],
    );
    // Not under another master key, nor for another PN or epoch, nor in an SK_PNE row.
    let other_master = MasterKey::from_bytes([0xee; 32]);
    for (master, pn, epoch) in [
        (&other_master, &g.pn_id, g.epoch),
        (&g.master, &[0u8; 16], g.epoch),
        (&g.master, &g.pn_id, g.epoch + 1),
    ] {
        assert_eq!(
            open_group_key_at_rest(master, pn, epoch, &sealed).err(),
            Some(CryptoError::BadTag)
        );
    }
    assert_eq!(
        open_at_rest(
            &g.master,
            &at_rest_session_key_aad(&g.pn_id, &g.pne_id),
            &sealed
        ),
        Err(CryptoError::BadTag)
    );
    every_flipped_byte_fails(&sealed, |s| {
        open_group_key_at_rest(&g.master, &g.pn_id, g.epoch, s)
    });
}

#[test]
fn membership_ended_vectors() {
    let d = doc();
    let g = group_inputs(&d);
    let cases = d["group"]["ended"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let key = k_s2p(&g.sk, 0x04);
    for (e, (name, reason)) in cases.iter().zip([
        ("removed", cpns_wire::EndReason::Removed),
        ("released", cpns_wire::EndReason::Released),
    ]) {
        // The reason is one byte, the wire's EndReason code.
        assert_eq!(text(e, "reason"), name);
        let why = u8::try_from(reason.code()).unwrap();
        assert_eq!(hx(e, "reason_code"), [why]);
        assert_eq!(hx(e, "plaintext"), [why]);
        let nonce: [u8; 12] = arr(e, "nonce");
        let sealed = hx(e, "sealed");
        let b = EndedBinding {
            pn_id: &g.pn_id,
            pne_id: &g.pne_id,
            request_id: g.request_id,
            why,
        };
        // Through the crate.
        assert_eq!(
            v::e2e_key(&g.sk, E2eDirection::ServerToPne, E2eKind::MembershipEnded)[..],
            hx(e, "key")
        );
        assert_eq!(v::membership_ended_aad(&b), hx(e, "aad"));
        assert_eq!(seal_membership_ended_with_nonce(&g.sk, &b, nonce), sealed);
        assert_eq!(open_membership_ended(&g.sk, &b, &sealed), Ok(()));
        let drawn = seal_membership_ended(MachineRng::from_seed_u64(3).get(), &g.sk, &b);
        let drawn_nonce: [u8; 12] = drawn[..12].try_into().unwrap();
        assert_eq!(
            seal_membership_ended_with_nonce(&g.sk, &b, drawn_nonce),
            drawn
        );
        // Independently, from docs/security.md §4.6 and §4.10.
        assert_eq!(hx(e, "kind_code"), [0x04]);
        assert_eq!(hx(e, "key"), key);
        let aad = t(
            "cpns/v1/membership-ended",
            &[
                &g.pn_id,
                g.pne_id.as_bytes(),
                &g.request_id.to_be_bytes(),
                &[why],
            ],
        );
        assert_eq!(hx(e, "aad"), aad);
        assert_eq!(sealed, cat(&nonce, &chacha(&key, &nonce, &aad, &[why])));
        assert_eq!(
            drawn,
            cat(&drawn_nonce, &chacha(&key, &drawn_nonce, &aad, &[why]))
        );
        // Only that PNE, for that PN, pull and reason, under the SK_PNE it held.
        let other_sk = SessionKey::from_hex(text(&d["pne_auth"][1]["outputs"], "sk_pne")).unwrap();
        let other_why = 3 - why;
        let other_pn = [0u8; 16];
        for (sk, other) in [
            (&other_sk, b),
            (
                &g.sk,
                EndedBinding {
                    pn_id: &other_pn,
                    ..b
                },
            ),
            (
                &g.sk,
                EndedBinding {
                    pne_id: "pne-2.alice@cpns.example",
                    ..b
                },
            ),
            (
                &g.sk,
                EndedBinding {
                    request_id: g.request_id + 1,
                    ..b
                },
            ),
            (
                &g.sk,
                EndedBinding {
                    why: other_why,
                    ..b
                },
            ),
        ] {
            assert_eq!(
                open_membership_ended(sk, &other, &sealed),
                Err(CryptoError::BadTag)
            );
        }
        every_flipped_byte_fails(&sealed, |s| open_membership_ended(&g.sk, &b, s));
        // A box whose associated data names this reason but whose plaintext names the other is
        // refused.
        let mismatched = cat(&nonce, &chacha(&key, &nonce, &aad, &[other_why]));
        assert!(matches!(
            open_membership_ended(&g.sk, &b, &mismatched),
            Err(CryptoError::Malformed(_))
        ));
    }
}

#[test]
fn delivery_chunk_vectors() {
    let d = doc();
    let a = &d["delivery"];
    let key = DeliveryKey::from_bytes(arr(a, "delivery_key"));
    let session: [u8; 16] = arr(a, "session");
    // The chunk key, through the crate and from docs/security.md §4.12.
    assert_eq!(
        v::delivery_chunk_key(&key, &session, Suite::Aes256Gcm)[..],
        hx(a, "chunk_key")
    );
    assert_eq!(hx(a, "suite_code"), [Suite::Aes256Gcm.code()]);
    let chunk_key = hkdf(
        None,
        key.expose_secret(),
        &t("cpns/v1/delivery-chunk-key", &[&session, &[2]]),
    );
    assert_eq!(chunk_key[..], hx(a, "chunk_key"));
    let sealer = ChunkSealer::new(&key, &session, Suite::Aes256Gcm);
    for c in a["chunks"].as_array().unwrap() {
        let part = text(c, "part");
        let offset = c["offset"].as_u64().unwrap();
        let total = c["total"].as_u64().unwrap();
        let nonce: [u8; 12] = arr(c, "nonce");
        let b = ChunkBinding {
            session: &session,
            part,
            offset,
            total,
        };
        let aad = t(
            "cpns/v1/delivery-chunk",
            &[
                &session,
                part.as_bytes(),
                &offset.to_be_bytes(),
                &total.to_be_bytes(),
            ],
        );
        assert_eq!(v::delivery_chunk_aad(&b), aad);
        assert_eq!(hx(c, "aad"), aad);
        let plain = hx(c, "plaintext");
        let sealed = hx(c, "sealed");
        assert_eq!(sealer.seal_with_nonce(&b, &plain, nonce).unwrap(), sealed);
        assert_eq!(
            sealed,
            cat(&nonce, &aes_gcm(&chunk_key, &nonce, &aad, &plain))
        );
        assert_eq!(&sealer.open(&b, &sealed).unwrap()[..], &plain[..]);
        // Not under another key, suite or session, in another part, at another offset or
        // total.
        let other_key = ChunkSealer::new(
            &DeliveryKey::from_bytes([0; 32]),
            &session,
            Suite::Aes256Gcm,
        );
        assert_eq!(other_key.open(&b, &sealed).err(), Some(CryptoError::BadTag));
        let other_suite = ChunkSealer::new(&key, &session, Suite::ChaCha20Poly1305);
        assert_eq!(
            other_suite.open(&b, &sealed).err(),
            Some(CryptoError::BadTag)
        );
        let other_session = [0u8; 16];
        let moved = ChunkSealer::new(&key, &other_session, Suite::Aes256Gcm);
        let b2 = ChunkBinding {
            session: &other_session,
            ..b
        };
        assert_eq!(moved.open(&b2, &sealed).err(), Some(CryptoError::BadTag));
        for wrong in [
            ChunkBinding {
                part: "another",
                ..b
            },
            ChunkBinding {
                offset: offset + 1,
                ..b
            },
            ChunkBinding {
                total: total + 1,
                ..b
            },
        ] {
            assert_eq!(
                sealer.open(&wrong, &sealed).err(),
                Some(CryptoError::BadTag)
            );
        }
    }
    delivery_digest_vector(&d, &session);
    delivery_key_at_rest_vector(&d, &key, &session);
}

/// The session's key as a target keeps it at rest (docs/security.md §4.12): through the crate,
/// and independently (the at-rest key by HKDF, the box by ChaCha20-Poly1305); then every change
/// that must not open.
fn delivery_key_at_rest_vector(d: &serde_json::Value, key: &DeliveryKey, session: &[u8; 16]) {
    let a = &d["delivery"]["at_rest"];
    assert_eq!(text(a, "kept_as"), "target");
    let storage = MasterKey::from_bytes(arr(a, "storage_key"));
    let nonce: [u8; 12] = arr(a, "nonce");
    let sealed = hx(a, "sealed");
    let aad = t("cpns/v1/at-rest/delivery-key", &[session, b"target"]);
    assert_eq!(hx(a, "aad"), aad);
    assert_eq!(v::delivery_key_at_rest_aad(session, KeptAs::Target), aad);
    assert_eq!(
        seal_delivery_key_at_rest_with_nonce(&storage, session, KeptAs::Target, key, nonce),
        sealed
    );
    let at_rest_key = hkdf(
        None,
        storage.expose_secret(),
        &t("cpns/v1/at-rest-key", &[]),
    );
    assert_eq!(
        sealed,
        cat(
            &nonce,
            &chacha(&at_rest_key, &nonce, &aad, key.expose_secret())
        )
    );
    let opened = open_delivery_key_at_rest(&storage, session, KeptAs::Target, &sealed).unwrap();
    assert_eq!(opened.expose_secret(), key.expose_secret());
    // Negative: another storage key, session or end, every flipped byte.
    let bad = Some(CryptoError::BadTag);
    let other = MasterKey::from_bytes([0; 32]);
    assert_eq!(
        open_delivery_key_at_rest(&other, session, KeptAs::Target, &sealed).err(),
        bad
    );
    assert_eq!(
        open_delivery_key_at_rest(&storage, &[0; 16], KeptAs::Target, &sealed).err(),
        bad
    );
    assert_eq!(
        open_delivery_key_at_rest(&storage, session, KeptAs::Source, &sealed).err(),
        bad
    );
    for i in 0..sealed.len() {
        let mut s = sealed.clone();
        s[i] ^= 1;
        assert!(
            open_delivery_key_at_rest(&storage, session, KeptAs::Target, &s).is_err(),
            "{i}"
        );
    }
}

/// The source's signed digest (docs/security.md §4.12): through the crate, and independently
/// (the message from the document, the signature by another Ed25519); then every change that
/// must not verify.
fn delivery_digest_vector(d: &serde_json::Value, session: &[u8; 16]) {
    let g = &d["delivery"]["digest"];
    let total = g["total"].as_u64().unwrap();
    let hashes: Vec<[u8; 32]> = g["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let total_be = total.to_be_bytes();
    let mut fields: Vec<&[u8]> = vec![session, &total_be];
    fields.extend(hashes.iter().map(|h| &h[..]));
    let message = t("cpns/v1/delivery-digest", &fields);
    assert_eq!(hx(g, "message"), message);
    assert_eq!(v::delivery_digest_message(session, total, &hashes), message);
    let s = signer(d);
    assert_eq!(text(g, "signer"), s.cert.pne_id);
    let sig: [u8; 64] = arr(g, "signature");
    assert_eq!(s.member.sign_delivery_digest(session, total, &hashes), sig);
    let seed = hx(&d["signing"], "member_seed");
    assert_eq!(ring_sign(&seed, &message).1, sig);
    let certified = s.cert.verify(&s.authority).unwrap();
    assert_eq!(
        certified.verify_delivery_digest(session, total, &hashes, &sig),
        Ok(())
    );
    // Negative: another session, total, order, a hash dropped or changed, another signer, a
    // flipped signature byte.
    let bad = Err(CryptoError::BadSignature);
    assert_eq!(
        certified.verify_delivery_digest(&[0; 16], total, &hashes, &sig),
        bad
    );
    assert_eq!(
        certified.verify_delivery_digest(session, total - 1, &hashes, &sig),
        bad
    );
    let swapped = [hashes[1], hashes[0]];
    assert_eq!(
        certified.verify_delivery_digest(session, total, &swapped, &sig),
        bad
    );
    assert_eq!(
        certified.verify_delivery_digest(session, total, &hashes[..1], &sig),
        bad
    );
    let mut changed = hashes.clone();
    changed[1][31] ^= 1;
    assert_eq!(
        certified.verify_delivery_digest(session, total, &changed, &sig),
        bad
    );
    let eukey = EuKey::from_hex(text(&d["signing"]["inputs"], "eukey")).unwrap();
    let other = MemberSigningKey::derive(&eukey, "pne-2.alice@cpns.example");
    let ca = CertificationKey::from_master(
        &MasterKey::from_hex(text(&d["signing"]["inputs"], "master_key")).unwrap(),
    );
    let other_cert = ca
        .certify("pne-2.alice@cpns.example", "alice", &other.public())
        .verify(&ca.public())
        .unwrap();
    assert_eq!(
        other_cert.verify_delivery_digest(session, total, &hashes, &sig),
        bad
    );
    for n in 0..64 {
        let mut s = sig;
        s[n] ^= 1;
        assert_eq!(
            certified.verify_delivery_digest(session, total, &hashes, &s),
            bad,
            "{n}"
        );
    }
    assert!(!ring_verifies(
        &hx(&d["signing"], "member_key"),
        &message[1..],
        &sig
    ));
}
