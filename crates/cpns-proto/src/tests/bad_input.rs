//! Bad input at machine level (docs/design.md §3): garbage, truncated frames, unknown message types,
//! valid messages in the wrong state or from the wrong sender. Each gets an error answer or an
//! `Err`, never a panic, and another party's flow goes on undisturbed.

use cpns_wire::{
    Address, AuthPurposeCode, AuthenticationRequest, AuthenticationResponse, Body, EntityId,
    Envelope, ErrorBody, ErrorCode, PROTOCOL_VERSION, PnId, PnSetupRequest, RandBytes, RequestId,
    SetupType, decode_envelope,
};

use super::harness::{Harness, Party, id, plain, pne_id};
use super::store::PneSpec;
use crate::gateway::LinkId;
use crate::{ProtoError, StoreFailure, Token};

const MSG: u64 = 9_000;

fn gw() -> Address {
    Address::Entity(id("gw-1"))
}

fn pne(i: usize) -> Address {
    Address::Entity(pne_id(i))
}

/// Hands `env` to `to` as if `from` sent it and returns the error answering it. The answer is
/// taken out of flight (the real `from` never sent the forged request); the rest is pumped.
fn answer(h: &mut Harness, from: Party, to: Party, env: &Envelope) -> Option<ErrorBody> {
    h.deliver_direct(from, to, &plain(env)).unwrap();
    let answers = take_answers(h, from, to, env.msg_id);
    h.pump();
    answers.into_iter().find_map(|e| e.error().cloned())
}

fn take_answers(h: &mut Harness, from: Party, to: Party, msg_id: u64) -> Vec<Envelope> {
    let mut found = Vec::new();
    h.queue.retain(|f| {
        let env = f
            .env()
            .filter(|e| f.from == to && f.to == from && e.in_reply_to == Some(msg_id));
        found.extend(env.clone());
        env.is_none()
    });
    found
}

/// An envelope whose body is the raw CBOR `[999, {}]`: a type this version does not know.
fn unknown_type(from: Address, to: Address) -> Vec<u8> {
    let mut body = plain(&Envelope::request(MSG, from, to, Body::Unknown(999)));
    // Body::Unknown encodes as [999, null]; the body is the last field, so null is the last byte.
    assert_eq!(body.pop(), Some(0xf6));
    body.push(0xa0);
    assert_eq!(
        decode_envelope(&body[1..]).unwrap().body,
        Body::Unknown(999)
    );
    body
}

fn auth_response(
    pn: PnId,
    purpose: AuthPurposeCode,
    kind_request: bool,
    from: Address,
    to: Address,
) -> Envelope {
    let body = AuthenticationResponse {
        pn_id: pn,
        hashes: Vec::new(),
        purpose,
        request_id: None,
    };
    if kind_request {
        Envelope::request(MSG, from, to, body)
    } else {
        Envelope::response(MSG, 4_242, from, to, body)
    }
}

/// PNE `i` can still establish a PN: whatever came before disturbed nothing.
fn still_works(h: &mut Harness, i: usize) {
    h.setup(i, SetupType::OneToOne);
    let inv = h.joined(i).expect("the other flow completed");
    h.assert_agree(inv.pn_id);
}

#[test]
fn garbage_and_truncated_frames_are_errors_at_every_machine() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::cpns()]);
    let real = h
        .log
        .iter()
        .find(|f| f.message == "EntityDiscoveryRequest")
        .unwrap()
        .body
        .clone();
    let junk: [&[u8]; 5] = [
        &[],
        &[0xff, 1, 2],
        &[0, 0xff, 0xff],
        &[1, 0, 0],
        &real[..real.len() / 2],
    ];
    for bytes in junk {
        for (from, to) in [
            (Party::Gw, Party::Server),
            (Party::Server, Party::Gw),
            (Party::Pne(0), Party::Gw),
            (Party::Gw, Party::Pne(0)),
        ] {
            let r = h.deliver_direct(from, to, bytes);
            assert!(
                matches!(r, Err(ProtoError::Wire(_) | ProtoError::SealedBeforeKeys)),
                "{from:?}->{to:?} {bytes:?}: {r:?}"
            );
        }
    }
    // A truncated whole frame is caught at the length prefix already.
    let mut whole = (real.len() as u32).to_be_bytes().to_vec();
    whole.extend_from_slice(&real[..real.len() - 1]);
    assert_eq!(crate::link::frame_body(&whole), None);
    // PNE 0's link is closed; PNE 1's flow and the server session go on.
    assert!(
        h.closes
            .iter()
            .any(|(p, l, _)| *p == Party::Gw && *l == Some(0))
    );
    still_works(&mut h, 1);
    assert!(h.pnes[1].link_sealed());
}

#[test]
fn unknown_message_type_is_answered_unsupported_everywhere() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    let cases = [
        (Party::Gw, Party::Server, gw(), Address::Server),
        (Party::Server, Party::Gw, Address::Server, gw()),
        (Party::Pne(0), Party::Gw, pne(0), gw()),
        (Party::Gw, Party::Pne(0), gw(), pne(0)),
    ];
    for (from, to, a, b) in cases {
        h.deliver_direct(from, to, &unknown_type(a, b)).unwrap();
        let err = take_answers(&mut h, from, to, MSG)
            .into_iter()
            .find_map(|e| e.error().cloned());
        h.pump();
        assert_eq!(
            err.map(|e| e.code),
            Some(ErrorCode::UnsupportedMessage),
            "{from:?}->{to:?}"
        );
    }
    assert!(h.errors.is_empty());
    still_works(&mut h, 1);
}

#[test]
fn requests_before_gateway_authentication_are_unauthenticated() {
    let mut h = Harness::new(&[PneSpec::trusted()]);
    let reg = cpns_wire::PnUpdateRequest {
        request_id: RequestId(1),
        pn_id: PnId::from_bytes([1; 16]),
        add: Vec::new(),
        remove: Vec::new(),
        asked_by: None,
    };
    let env = Envelope::request(MSG, gw(), Address::Server, reg);
    let err = answer(&mut h, Party::Gw, Party::Server, &env).unwrap();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert_eq!(h.server.gateway(), None);
    // The set-up that follows is not disturbed.
    h.connect_gw();
    h.discover_all();
    still_works(&mut h, 0);
}

#[test]
fn authentication_response_with_nothing_pending_is_refused() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let before = h.snapshot();
    let pn = PnId::from_bytes([3; 16]);
    for purpose in [
        AuthPurposeCode::Establishment,
        AuthPurposeCode::Registration,
    ] {
        let env = auth_response(pn, purpose, true, gw(), Address::Server);
        let err = answer(&mut h, Party::Gw, Party::Server, &env).unwrap();
        assert_eq!(err.code, ErrorCode::WrongState);
        // As a response to nothing, it is dropped without an answer.
        let env = auth_response(pn, purpose, false, gw(), Address::Server);
        assert_eq!(answer(&mut h, Party::Gw, Party::Server, &env), None);
        // At the PN GW, from a PNE: nothing awaits it either.
        let env = auth_response(pn, purpose, true, pne(0), gw());
        let err = answer(&mut h, Party::Pne(0), Party::Gw, &env).unwrap();
        assert_eq!(err.code, ErrorCode::WrongState);
    }
    assert_eq!(h.snapshot(), before);
    still_works(&mut h, 0);
}

#[test]
fn misplaced_messages_at_the_gateway_are_refused() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::cpns()]);
    let before = h.snapshot();
    let rand = RandBytes([5; 16]);
    let pn = PnId::from_bytes([4; 16]);
    let setup = |from: EntityId, setup: Option<SetupType>| PnSetupRequest {
        request_id: RequestId(1),
        setup,
        join: Some(cpns_wire::JoinInfo {
            pne_id: from,
            capabilities: Default::default(),
            contents: Vec::new(),
            rand_pne: rand,
            local_key: false,
            home_gateway: None,
        }),
        pn_id: None,
        initiator: None,
    };
    let init = cpns_wire::PanAuthInit {
        pn_id: pn,
        pne_id: pne_id(0),
        rand_pne: rand,
        suites: Vec::new(),
    };
    let confirm = cpns_wire::PanAuthConfirm {
        proof: cpns_wire::HashBytes([0; 32]),
    };
    let cases: Vec<(Envelope, ErrorCode)> = vec![
        // PNE 0 speaking for PNE 1.
        (
            Envelope::request(MSG, pne(1), gw(), setup(pne_id(1), Some(SetupType::All))),
            ErrorCode::Forbidden,
        ),
        // No setup type.
        (
            Envelope::request(MSG, pne(0), gw(), setup(pne_id(0), None)),
            ErrorCode::BadRequest,
        ),
        // Addressed to someone the PN GW does not route to.
        (
            Envelope::request(MSG, pne(0), Address::Entity(id("tv-9")), confirm.clone()),
            ErrorCode::NotFound,
        ),
        // PN GW authentication on a trusted link, and a confirmation without a challenge.
        (
            Envelope::request(MSG, pne(0), gw(), init),
            ErrorCode::WrongState,
        ),
        (
            Envelope::request(MSG, pne(0), gw(), confirm),
            ErrorCode::WrongState,
        ),
        // A server-side message on the PAN.
        (
            Envelope::request(MSG, pne(0), gw(), cpns_wire::StatusUpdateRequest {}),
            ErrorCode::WrongState,
        ),
    ];
    for (env, code) in cases {
        let err = answer(&mut h, Party::Pne(0), Party::Gw, &env);
        assert_eq!(err.map(|e| e.code), Some(code), "{:?}", env.body);
    }
    assert!(h.errors.is_empty());
    assert_eq!(h.snapshot(), before);
    // PNE 1, really itself, is not affected by PNE 0 using its name.
    still_works(&mut h, 1);
    assert!(h.pnes[1].link_sealed());
}

#[test]
fn misplaced_messages_at_the_pne_and_server_are_refused() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    let pn = PnId::from_bytes([6; 16]);
    let auth = AuthenticationRequest {
        pn_id: pn,
        rand_server: RandBytes([0; 16]),
        local_keys: Vec::new(),
        purpose: AuthPurposeCode::Establishment,
        pnes: vec![pne_id(0)],
        request_id: None,
    };
    let env = Envelope::request(MSG, gw(), pne(0), auth.clone());
    assert_eq!(
        answer(&mut h, Party::Gw, Party::Pne(0), &env).map(|e| e.code),
        Some(ErrorCode::WrongState)
    );
    // Not addressed to this PNE.
    let env = Envelope::request(MSG + 1, gw(), pne(1), auth.clone());
    assert_eq!(
        answer(&mut h, Party::Gw, Party::Pne(0), &env).map(|e| e.code),
        Some(ErrorCode::NotFound)
    );
    // The PN GW, asked by the server for a PN it is not forming.
    let env = Envelope::request(MSG + 2, Address::Server, gw(), auth);
    assert_eq!(
        answer(&mut h, Party::Server, Party::Gw, &env).map(|e| e.code),
        Some(ErrorCode::WrongState)
    );
    // The server: a PNE registering another PNE, and a PN update not from the PN GW.
    let reg = cpns_wire::PneRegistrationRequest {
        request_id: RequestId(3),
        pne_id: pne_id(1),
        pn_id: Some(pn),
        rand_pne: RandBytes([0; 16]),
        capabilities: None,
        local_key: false,
    };
    let env = Envelope::request(MSG + 3, pne(0), Address::Server, reg);
    assert_eq!(
        answer(&mut h, Party::Gw, Party::Server, &env).map(|e| e.code),
        Some(ErrorCode::Forbidden)
    );
    let upd = cpns_wire::PnUpdateRequest {
        request_id: RequestId(4),
        pn_id: pn,
        add: Vec::new(),
        remove: Vec::new(),
        asked_by: None,
    };
    let env = Envelope::request(MSG + 4, pne(0), Address::Server, upd);
    assert_eq!(
        answer(&mut h, Party::Gw, Party::Server, &env).map(|e| e.code),
        Some(ErrorCode::Forbidden)
    );
    assert!(h.store.pns.is_empty());
    still_works(&mut h, 1);
}

#[test]
fn unknown_tokens_and_links_are_errors() {
    let mut h = Harness::ready(&[PneSpec::trusted()]);
    let now = h.now();
    let t = Token(4_711);
    assert_eq!(
        h.server
            .handle_loaded(now, t, Ok(crate::server::Loaded::Served(Vec::new()))),
        Err(ProtoError::UnknownToken)
    );
    assert_eq!(
        h.server
            .handle_persisted(now, t, Err(StoreFailure::Overloaded)),
        Err(ProtoError::UnknownToken)
    );
    assert_eq!(
        h.gw.handle_persisted(now, t, Ok(())),
        Err(ProtoError::UnknownToken)
    );
    assert_eq!(
        h.pnes[0].handle_persisted(t, Ok(())),
        Err(ProtoError::UnknownToken)
    );
    assert!(h.gw.handle_pan_frame(now, LinkId(99), &mut [0]).is_err());
    still_works(&mut h, 0);
}

#[test]
fn every_truncation_and_bit_flip_of_real_frames_is_handled_without_panic() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    h.setup(0, SetupType::All);
    let frames: Vec<_> = h
        .log
        .iter()
        .filter(|f| f.env().is_some())
        .cloned()
        .collect();
    for f in frames.iter().step_by(3) {
        for cut in 0..f.body.len() {
            let _ = h.deliver_direct(f.from, f.to, &f.body[..cut]);
        }
        for at in 0..f.body.len() {
            let mut b = f.body.clone();
            b[at] ^= 0x41;
            let _ = h.deliver_direct(f.from, f.to, &b);
        }
        h.pump();
    }
    // The server's record is still the one PN, and nobody registered anything more.
    assert_eq!(h.store.pns.len(), 1);
}

/// A request in protocol version 2 from `from` to `to`.
/// A request of protocol `version`, not this build's.
fn request_of(version: u16, from: Address, to: Address) -> Envelope {
    let mut env = Envelope::request(MSG, from, to, cpns_wire::StatusUpdateRequest {});
    env.version = version;
    env
}

#[test]
fn every_machine_answers_another_protocol_version_and_goes_on() {
    let mut h = Harness::ready(&[PneSpec::trusted(), PneSpec::trusted()]);
    // An older peer (version 1, before the changes of docs/security.md §4.2, §4.6 and §4.10)
    // and a newer one.
    for version in [1, PROTOCOL_VERSION + 1] {
        let cases = [
            (
                Party::Gw,
                Party::Server,
                request_of(version, gw(), Address::Server),
            ),
            (
                Party::Server,
                Party::Gw,
                request_of(version, Address::Server, gw()),
            ),
            (Party::Pne(0), Party::Gw, request_of(version, pne(0), gw())),
            (Party::Gw, Party::Pne(1), request_of(version, gw(), pne(1))),
        ];
        for (from, to, env) in cases {
            let e = answer(&mut h, from, to, &env).expect("answered");
            assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{from:?} -> {to:?}");
            assert!(
                e.reason
                    .contains(&format!("version {version} is not supported")),
                "{}",
                e.reason
            );
            assert!(
                e.reason
                    .contains(&format!("speaks version {PROTOCOL_VERSION}"))
            );
        }
    }
    assert!(h.closes.is_empty(), "nothing was closed: {:?}", h.closes);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    // A response or notification of another version is not answered: the machine reports it
    // and the driver drops it, keeping the session.
    let mut resp = Envelope::response(
        MSG + 1,
        1,
        gw(),
        Address::Server,
        ErrorBody::new(ErrorCode::Busy, "x"),
    );
    resp.version = 1;
    let r = h.deliver_direct(Party::Gw, Party::Server, &plain(&resp));
    assert!(matches!(
        r,
        Err(ProtoError::UnsupportedVersion {
            version: 1,
            request: None
        })
    ));
    // Everything still works.
    h.setup(0, SetupType::All);
    let inv = h.joined(0).expect("established after the bad versions");
    h.assert_agree(inv.pn_id);
}
