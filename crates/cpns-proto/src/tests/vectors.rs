//! The protocol crate's own encodings against docs/security-vectors.json: the sealed PAN frames
//! as [`LinkCodec`] emits and opens them (with the associated data `PanKeys` binds), and the
//! canonical PN inventory that hash_server_PNE covers. cpns-crypto's vector test checks the
//! cryptography; this one checks that the protocol stack feeds it the documented bytes.

use cpns_crypto::{LocalEuKey, PanAuthInput, PanKeys, Rand};
use cpns_wire::{PnInventory, decode_envelope};
use serde_json::Value;

use crate::link::{LinkCodec, frame_body};
use crate::util::inventory_cbor;

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/security-vectors.json"
));

fn hx(obj: &Value, key: &str) -> Vec<u8> {
    hex::decode(obj[key].as_str().unwrap()).unwrap()
}

fn text<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj[key].as_str().unwrap()
}

/// Both ends of a PAN link after PN GW authentication with the vector's inputs.
fn sealed_codecs(p: &Value) -> (LinkCodec, LinkCodec) {
    let i = &p["inputs"];
    let local = LocalEuKey::from_hex(text(i, "local_eukey")).unwrap();
    let pn_id: [u8; 16] = hx(i, "pn_id").try_into().unwrap();
    let rand_pne = Rand(hx(i, "rand_pne").try_into().unwrap());
    let rand_gw = Rand(hx(i, "rand_gw").try_into().unwrap());
    let offered = hx(i, "offered");
    let input = PanAuthInput {
        pn_id: &pn_id,
        pne_id: text(i, "pne_id"),
        gw_id: text(i, "gw_id"),
        rand_pne: &rand_pne,
        rand_gw: &rand_gw,
        offered: &offered,
        suite: cpns_crypto::Suite::from_code(hx(i, "suite_code")[0]).unwrap(),
    };
    let (pne_tx, pne_rx) = PanKeys::derive(&local, &input).into_pne_side();
    let (gw_tx, gw_rx) = PanKeys::derive(&local, &input).into_gw_side();
    let (mut pne, mut gw) = (LinkCodec::default(), LinkCodec::default());
    pne.seal_tx(pne_tx);
    pne.seal_rx(pne_rx);
    gw.seal_tx(gw_tx);
    gw.seal_rx(gw_rx);
    (pne, gw)
}

/// Each record of `list`, encoded by `tx` from its envelope, is the vector's frame, and `rx`
/// opens it back into the envelope.
fn check(list: &Value, tx: &mut LinkCodec, rx: &mut LinkCodec) {
    for r in list.as_array().unwrap() {
        let env = decode_envelope(&hx(r, "plaintext")).unwrap();
        let frame = tx.encode(&env).unwrap();
        assert_eq!(frame, hx(r, "frame"), "seq {}", r["seq"]);
        assert_eq!(
            rx.decode(&mut frame_body(&frame).unwrap().to_vec())
                .unwrap(),
            env
        );
    }
}

#[test]
fn link_codec_emits_the_sealed_frames_of_the_vectors() {
    let d: Value = serde_json::from_str(VECTORS).unwrap();
    let p = &d["pan"];
    let (mut pne, mut gw) = sealed_codecs(p);
    check(&p["outputs"]["records_pne_to_gw"], &mut pne, &mut gw);
    check(&p["outputs"]["records_gw_to_pne"], &mut gw, &mut pne);
}

#[test]
fn a_frame_for_another_pne_does_not_open_on_this_link() {
    let d: Value = serde_json::from_str(VECTORS).unwrap();
    let mut p = d["pan"].clone();
    // The same LocalEUKey and rands, but the PN GW believes it talks to another PNE.
    p["inputs"]["pne_id"] = Value::String("pne-9.alice@cpns.example".into());
    let (_, mut other_gw) = sealed_codecs(&p);
    let first = &d["pan"]["outputs"]["records_pne_to_gw"][0];
    let frame = hx(first, "frame");
    assert!(
        other_gw
            .decode(&mut frame_body(&frame).unwrap().to_vec())
            .is_err()
    );
}

#[test]
fn the_canonical_inventory_is_the_one_the_vectors_hash() {
    let d: Value = serde_json::from_str(VECTORS).unwrap();
    let out = &d["pne_auth"][0]["inputs"]["outcome"];
    let cbor = hx(out, "inventory_cbor");
    let inv: PnInventory = minicbor::decode(&cbor).unwrap();
    assert_eq!(inventory_cbor(&inv), cbor);
    // The PN Setup Response of the PAN vector carries the same inventory and hash_server.
    let setup = &d["pan"]["outputs"]["records_gw_to_pne"][0];
    let env = decode_envelope(&hx(setup, "plaintext")).unwrap();
    let cpns_wire::Body::PnSetupResponse(r) = env.body else {
        panic!("not a PN Setup Response")
    };
    assert_eq!(r.inventory, Some(inv));
    let hash_server = hx(&d["pne_auth"][0]["outputs"], "hash_server");
    assert_eq!(r.hash_server.map(|h| h.0.to_vec()), Some(hash_server));
}
