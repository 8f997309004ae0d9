//! Whole flows across the three roles, as the protocol crate will drive them: PN establishment
//! with two PNEs (000 §6.6.1.1 steps 5-15), the PAN session that follows on an insecure PAN, the
//! GW's WAN authentication (002 §B.1.1.2 steps 8-11), and what a curious or hostile PN GW can and
//! cannot do with what it relays.

#![allow(clippy::unwrap_used)]

use cpns_crypto::*;

/// What the CPNS Server stores: every entity's EUKey (here in memory, at rest sealed).
struct Server {
    master: MasterKey,
    sealed_eukeys: Vec<(String, Vec<u8>)>,
}

impl Server {
    fn enroll(&mut self, id: &str, key: &EuKey) {
        let aad = at_rest_eukey_aad(id);
        let sealed = seal_at_rest(&self.master, &aad, key.expose_secret()).unwrap();
        self.sealed_eukeys.push((id.to_owned(), sealed));
    }

    fn eukey(&self, id: &str) -> EuKey {
        let (_, sealed) = self.sealed_eukeys.iter().find(|(i, _)| i == id).unwrap();
        let aad = at_rest_eukey_aad(id);
        let plain = open_at_rest(&self.master, &aad, sealed).unwrap();
        EuKey::from_bytes(plain[..].try_into().unwrap())
    }
}

const PN_ID: [u8; 16] = [0x42; 16];
const GW: &str = "gw@alice";
const PNES: [&str; 2] = ["pne-1@alice", "pne-2@alice"];

/// What each PNE said before sealing, as its digest (docs/security.md §4.1).
const SAID: [u8; 32] = [0x5a; 32];
#[test]
fn pn_establishment_with_two_pnes_and_pan_sessions() {
    let gw_eukey = EuKey::generate().unwrap();
    let pne_eukeys = [EuKey::generate().unwrap(), EuKey::generate().unwrap()];
    let mut server = Server {
        master: MasterKey::generate().unwrap(),
        sealed_eukeys: Vec::new(),
    };
    server.enroll(GW, &gw_eukey);
    for (id, k) in PNES.iter().zip(&pne_eukeys) {
        server.enroll(id, k);
    }

    // Steps 1-3: each PNE picks rand_PNE. Step 5: the server picks rand_server and one
    // LocalEUKey per PNE, wrapped twice.
    let rand_pne = [Rand::generate().unwrap(), Rand::generate().unwrap()];
    let rand_server = Rand::generate().unwrap();
    let mut deliveries = Vec::new();
    let mut server_locals = Vec::new();
    for id in PNES {
        let binding = KeyBinding {
            pn_id: &PN_ID,
            pne_id: id,
            gw_id: GW,
            rand_server: &rand_server,
        };
        let local = LocalEuKey::generate().unwrap();
        let for_pne = wrap_local_eukey(
            MachineRng::os().get(),
            &server.eukey(id),
            Recipient::Pne,
            &binding,
            &local,
        );
        let for_gw = wrap_local_eukey(
            MachineRng::os().get(),
            &server.eukey(GW),
            Recipient::Gateway,
            &binding,
            &local,
        );
        deliveries.push((for_pne, for_gw));
        server_locals.push(local);
    }

    // The inventory the server registers and the PNEs will store, as canonical CBOR (here an
    // opaque stand-in: this crate only hashes it).
    let inventory = b"\xa3\x00\x50 inventory of both PNEs";
    let outcome = ServerOutcome::Established {
        inventory_cbor: inventory,
    };
    for (n, id) in PNES.iter().enumerate() {
        let binding = KeyBinding {
            pn_id: &PN_ID,
            pne_id: id,
            gw_id: GW,
            rand_server: &rand_server,
        };
        let (for_pne, for_gw) = &deliveries[n];
        // Step 6: the GW unwraps its copy; it cannot unwrap the PNE's.
        let gw_local = unwrap_local_eukey(&gw_eukey, Recipient::Gateway, &binding, for_gw).unwrap();
        assert_eq!(
            unwrap_local_eukey(&gw_eukey, Recipient::Pne, &binding, for_pne),
            Err(CryptoError::BadTag)
        );
        // Steps 6-7: the PNE unwraps its copy.
        let pne_local =
            unwrap_local_eukey(&pne_eukeys[n], Recipient::Pne, &binding, for_pne).unwrap();
        assert_eq!(pne_local, gw_local);
        assert_eq!(pne_local, server_locals[n]);

        // PN GW authentication on the PAN, then sealed frames.
        let (r_pne, r_gw) = (Rand::generate().unwrap(), Rand::generate().unwrap());
        let pan_input = PanAuthInput {
            pn_id: &PN_ID,
            pne_id: id,
            gw_id: GW,
            rand_pne: &r_pne,
            rand_gw: &r_gw,
            offered: &[2, 1],
            suite: Suite::choose(&[2, 1], &Suite::local_preference()).unwrap(),
        };
        let pne_pan = PanKeys::derive(&pne_local, &pan_input);
        let gw_pan = PanKeys::derive(&gw_local, &pan_input);
        pne_pan.verify_gw_proof(&gw_pan.gw_proof()).unwrap();
        gw_pan.verify_pne_proof(&pne_pan.pne_proof()).unwrap();
        let (mut pne_tx, mut pne_rx) = pne_pan.into_pne_side();
        let (mut gw_tx, mut gw_rx) = gw_pan.into_gw_side();

        // Steps 8-9: the PNE computes SK_PNE and hash_PNE, and sends hash_PNE over the PAN.
        let input = PneAuthInput {
            purpose: AuthPurpose::Establishment,
            pn_id: &PN_ID,
            pne_id: id,
            rand_pne: &rand_pne[n],
            rand_server: &rand_server,
            statement: &SAID,
        };
        let pne_auth = PneAuthKeys::derive(&pne_eukeys[n], &input);
        let hash_pne = pne_auth.hash_pne();
        let frame = pne_tx.seal(&hash_pne.0).unwrap();
        let relayed = gw_rx.open(&frame).unwrap();
        let relayed = AuthHash(relayed.try_into().unwrap());

        // Steps 11-12: the server verifies and answers hash_server_PNE.
        let server_auth = PneAuthKeys::derive(&server.eukey(id), &input);
        server_auth.verify_hash_pne(&relayed).unwrap();
        let hash_server = server_auth.hash_server(&relayed, &outcome);
        assert_eq!(pne_auth.session_key(), server_auth.session_key());

        // Steps 14-15: the GW relays hash_server_PNE with the inventory; the PNE verifies both.
        let frame = gw_tx.seal(&hash_server.0).unwrap();
        let got = AuthHash(pne_rx.open(&frame).unwrap().try_into().unwrap());
        pne_auth
            .verify_hash_server(&hash_pne, &outcome, &got)
            .unwrap();
        // A GW relaying an altered inventory (say, one PNE left out) is caught.
        let altered = ServerOutcome::Established {
            inventory_cbor: b"\xa3\x00\x50 inventory of one PNE",
        };
        assert_eq!(
            pne_auth.verify_hash_server(&hash_pne, &altered, &got),
            Err(CryptoError::BadHash)
        );

        // End to end: the server seals a grant for the PNE; the GW relays but cannot read it.
        let sk = server_auth.session_key();
        let grant = GrantBinding {
            pn_id: &PN_ID,
            pne_id: id,
            request_id: 9,
            cpns_id: "cpns-000009",
        };
        let boxed =
            seal_registration_grant(MachineRng::os().get(), sk, &grant, b"content key").unwrap();
        for gw_guess in [gw_eukey.expose_secret(), gw_local.expose_secret()] {
            let guess = SessionKey::from_bytes(*gw_guess);
            assert_eq!(
                open_registration_grant(&guess, &grant, &boxed),
                Err(CryptoError::BadTag)
            );
        }
        let frame = gw_tx.seal(&boxed).unwrap();
        let at_pne = pne_rx.open(&frame).unwrap();
        let opened = open_registration_grant(pne_auth.session_key(), &grant, &at_pne).unwrap();
        assert_eq!(&opened[..], b"content key");
    }
}

#[test]
fn pne_from_one_pn_cannot_answer_for_another_pne() {
    // A hash_PNE from PNE 1 relayed (by a hostile GW) as PNE 2's answer fails: different EUKey
    // and different PNE ID.
    let keys = [EuKey::generate().unwrap(), EuKey::generate().unwrap()];
    let (rp, rs) = (Rand::generate().unwrap(), Rand::generate().unwrap());
    let input = |id| PneAuthInput {
        purpose: AuthPurpose::Establishment,
        pn_id: &PN_ID,
        pne_id: id,
        rand_pne: &rp,
        rand_server: &rs,
        statement: &SAID,
    };
    let h1 = PneAuthKeys::derive(&keys[0], &input(PNES[0])).hash_pne();
    let server_for_2 = PneAuthKeys::derive(&keys[1], &input(PNES[1]));
    assert_eq!(server_for_2.verify_hash_pne(&h1), Err(CryptoError::BadHash));
    // A response from a registration flow is no good for establishment either.
    let reg = PneAuthInput {
        purpose: AuthPurpose::Registration,
        ..input(PNES[0])
    };
    let h_reg = PneAuthKeys::derive(&keys[0], &reg).hash_pne();
    let server_for_1 = PneAuthKeys::derive(&keys[0], &input(PNES[0]));
    assert_eq!(
        server_for_1.verify_hash_pne(&h_reg),
        Err(CryptoError::BadHash)
    );
}

#[test]
fn gw_wan_auth_is_bound_to_the_tls_session() {
    let eukey = EuKey::generate().unwrap();
    // Steps 8-9: rand_GW in the connection setup, rand_server in the challenge.
    let (rand_gw, rand_server) = (Rand::generate().unwrap(), Rand::generate().unwrap());
    // Both sides export keying material from their TLS 1.3 session.
    let exporter_gw_session: [u8; TLS_EXPORTER_LEN] = random_array().unwrap();
    let exporter_mitm_session: [u8; TLS_EXPORTER_LEN] = random_array().unwrap();
    // Step 10: the GW answers.
    let resp = gw_auth_response(&eukey, GW, &rand_gw, &rand_server, &exporter_gw_session);
    // Step 11: the server, on the same TLS session, accepts.
    verify_gw_auth_response(
        &eukey,
        GW,
        &rand_gw,
        &rand_server,
        &exporter_gw_session,
        &resp,
    )
    .unwrap();
    // A man in the middle relaying the response into its own TLS session to the server fails.
    assert_eq!(
        verify_gw_auth_response(
            &eukey,
            GW,
            &rand_gw,
            &rand_server,
            &exporter_mitm_session,
            &resp
        ),
        Err(CryptoError::BadHash)
    );
    // A recorded response does not answer a fresh challenge.
    let fresh = Rand::generate().unwrap();
    assert_eq!(
        verify_gw_auth_response(&eukey, GW, &rand_gw, &fresh, &exporter_gw_session, &resp),
        Err(CryptoError::BadHash)
    );
}
