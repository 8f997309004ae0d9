//! docs/control-api.md is checked against these types: every example line is a line of this
//! version in its canonical form (decoded and encoded again, the same text), every answer
//! answers its request's verb, a refusal the decoder or the role gives is documented word for
//! word, every verb of every role has an example, and the tables name every event, error code
//! and capability key. The examples also run against running entities:
//! `cargo test -p cpns --test control_api`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use super::*;

const DOC: &str = include_str!("../../../docs/control-api.md");

/// One fenced example: its info words after `json`, and its lines.
struct Example {
    info: Vec<String>,
    lines: Vec<String>,
}

impl Example {
    fn role(&self) -> Option<Role> {
        match self.info.first().map(String::as_str) {
            Some("pne") => Some(Role::Pne),
            Some("gateway") => Some(Role::Gateway),
            Some("server") => Some(Role::Server),
            _ => None,
        }
    }
}

/// Every ```json block of the document.
fn examples() -> Vec<Example> {
    let mut out = Vec::new();
    let mut current: Option<Example> = None;
    for line in DOC.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) if info.starts_with("json") => {
                let info = info["json".len()..]
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                current = Some(Example {
                    info,
                    lines: Vec::new(),
                });
            }
            (Some(_), Some("")) => out.extend(current.take()),
            (Some(e), _) => e.lines.push(line.to_string()),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an example block is not closed");
    out
}

fn encoded(line: &Line) -> String {
    match line {
        Line::Answer(a) => encode_answer(a),
        Line::Event(e) => encode_event(e),
    }
}

#[test]
fn every_example_is_a_canonical_line_answering_its_request() {
    let all = examples();
    assert!(all.len() > 40, "{} examples", all.len());
    for ex in &all {
        let [request, answer, events @ ..] = ex.lines.as_slice() else {
            panic!("an example is a request and its answer: {:?}", ex.lines);
        };
        let answer_line =
            decode_line(answer.as_bytes()).unwrap_or_else(|e| panic!("{answer}: {e}"));
        assert_eq!(&encoded(&answer_line), answer, "not in canonical form");
        let Line::Answer(answered) = answer_line else {
            panic!("an event where the answer goes: {answer}");
        };
        match decode_request(request.as_bytes()) {
            Ok(r) => {
                assert_eq!(&encode_request(&r), request, "not in canonical form");
                match (&answered, ex.role()) {
                    (Ok(resp), role) => {
                        assert_eq!(resp.verb(), r.verb(), "{answer} answers {request}");
                        if let Some(role) = role {
                            assert!(role.serves(&r), "{request} to a {}", role.name());
                        }
                    }
                    // A refusal by role is the role's, word for word.
                    (Err(e), Some(role)) if !role.serves(&r) => {
                        assert_eq!(e, &role.refusal(&r), "{answer}");
                    }
                    (Err(_), _) => {}
                }
            }
            // A request the decoder refuses is documented with the decoder's own words.
            Err(refused) => assert_eq!(answered, Err(refused), "{request}"),
        }
        for e in events {
            let line = decode_line(e.as_bytes()).unwrap_or_else(|why| panic!("{e}: {why}"));
            assert!(matches!(line, Line::Event(_)), "{e}");
            assert_eq!(&encoded(&line), e, "not in canonical form");
        }
        if !events.is_empty() {
            let r = decode_request(request.as_bytes()).unwrap();
            let streams = matches!(
                r,
                Request::Events {}
                    | Request::Subscribe { .. }
                    | Request::Establish { wait: true, .. }
                    | Request::Deliver { wait: true, .. }
                    | Request::InventorySubscribe { .. }
                    | Request::InventoryFollow { .. }
            );
            assert!(
                streams,
                "events after the answer of a verb that does not stream: {request}"
            );
        }
    }
}

#[test]
fn every_verb_of_every_role_has_an_example() {
    let all = examples();
    for role in [Role::Pne, Role::Gateway, Role::Server] {
        let shown: BTreeSet<&str> = all
            .iter()
            .filter(|ex| ex.role() == Some(role))
            .filter(|ex| matches!(decode_line(ex.lines[1].as_bytes()), Ok(Line::Answer(Ok(_)))))
            .map(|ex| decode_request(ex.lines[0].as_bytes()).unwrap().verb())
            .collect();
        let verbs: BTreeSet<&str> = role.verbs().collect();
        assert_eq!(shown, verbs, "{}: verbs without an example", role.name());
        let refusals = all
            .iter()
            .filter(|ex| ex.role() == Some(role))
            .filter(|ex| {
                matches!(
                    decode_line(ex.lines[1].as_bytes()),
                    Ok(Line::Answer(Err(_)))
                )
            })
            .count();
        assert!(refusals > 0, "{}: no refusal shown", role.name());
        // A PNE's examples say which PNE of the world they go to.
        if role == Role::Pne {
            for ex in all.iter().filter(|ex| ex.role() == Some(role)) {
                assert!(
                    ex.info.len() >= 2,
                    "a PNE example names its PNE: {:?}",
                    ex.lines
                );
            }
        }
    }
}

/// One event of every kind.
fn every_event() -> Vec<Event> {
    let pn: cpns_wire::PnId = "3f2a8e0d5b7c4a19b6e2d0f1a9c3e7c1".parse().unwrap();
    let id: cpns_wire::EntityId = "phone".parse().unwrap();
    let p = Pn {
        pn_id: pn,
        gateway: id.clone(),
        members: Vec::new(),
        epoch: None,
        confirmed: None,
    };
    let err = ApiError::bad_request("x");
    vec![
        Event::PnJoined {
            pn: p.clone(),
            initiator: true,
        },
        Event::PnUpdated {
            pn: p,
            epoch: 1,
            has_key: true,
        },
        Event::PnReleased {
            pn_id: pn,
            by_me: true,
        },
        Event::PnExpelled { pn_id: pn },
        Event::PnLeft { pn_id: pn },
        Event::PnRefused {
            pn_id: pn,
            error: err.clone(),
        },
        Event::Invited {
            pn_id: pn,
            from: id,
            within_ms: 1,
        },
        Event::InvitationDeclined { pn_id: pn },
        Event::GroupKey {
            pn_id: pn,
            epoch: 1,
            has_key: true,
        },
        Event::Registered {
            cpns_id: "cpns-000001".parse().unwrap(),
            pn_id: pn,
            lifetime_s: 1,
        },
        Event::PanAuthenticated {
            pn_id: pn,
            suite: "aes-256-gcm".into(),
        },
        Event::CapabilitiesReported {},
        Event::UsageSent {
            sent: 1,
            duplicates: 0,
            charged: 0,
            withheld: 0,
        },
        Event::Status {
            subscription: 1,
            reason: "change".into(),
            entries: Vec::new(),
            lagged: None,
        },
        Event::Completed {
            command: 1,
            flow: "pn_release".into(),
            outcome: None,
            error: Some(err.clone()),
        },
        Event::FlowFailed {
            flow: "pn_release".into(),
            error: err,
        },
        Event::Lagged { missed: 1 },
    ]
}

#[test]
fn the_tables_name_every_event_error_code_and_capability_key() {
    for e in every_event() {
        let line = encode_event(&e);
        assert_eq!(decode_line(line.as_bytes()), Ok(Line::Event(e.clone())));
        let row = format!("\n| `{}` |", e.name());
        assert!(DOC.contains(&row), "no row for event {}", e.name());
    }
    for code in CODES {
        let row = format!("\n| `{}` |", code.name());
        assert!(DOC.contains(&row), "no row for error code {}", code.name());
    }
    for key in CAPABILITY_KEYS {
        assert!(
            DOC.contains(&format!("`{key}`")),
            "capability key {key} not in the table"
        );
    }
}
