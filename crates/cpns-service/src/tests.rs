#![allow(clippy::unwrap_used)]

use cpns_wire::{DeviceCapabilities, Screen};
use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;

fn good() -> Value {
    json!({
        "service_id": "tv-renderer",
        "name": "Living room TV",
        "type": "media.renderer",
        "version": "1.0",
        "keywords": ["Video", " renderer ", "video"],
        "summary": "Plays video sent to it",
        "scope": {"kind": "pn", "pn_id": "3f2a8e0d5b7c4a19b6e2d0f1a9c3e7c1"},
        "requires": {"has_ui": true, "min_screen": {"width": 1280, "height": 720},
                     "software": ["h264/1.2"], "networks": ["wlan", "ethernet"]},
        "hosting": {"device_type": "tv", "has_ui": true},
        "delivery": ["push", "pull"],
        "lease_s": 3600
    })
}

fn with(key: &str, value: Value) -> Vec<u8> {
    let mut v = good();
    v[key] = value;
    serde_json::to_vec(&v).unwrap()
}

fn without(key: &str) -> Vec<u8> {
    let mut v = good();
    v.as_object_mut().unwrap().remove(key);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_good_description_reads_with_its_keywords_normalised_and_writes_back() {
    let d = parse(&serde_json::to_vec(&good()).unwrap()).unwrap();
    assert_eq!(d.keywords, ["video", "renderer"]);
    assert_eq!(d.service_type, "media.renderer");
    assert!(matches!(d.scope, Scope::Pn { .. }));
    assert_eq!(d.delivery, [Delivery::Push, Delivery::Pull]);
    // What the directory keeps reads back to the same description.
    assert_eq!(parse(&d.to_json()).unwrap(), d);
    // The least a description needs.
    let least = json!({"service_id": "s", "name": "n", "type": "t", "version": "1",
        "keywords": ["k"], "scope": {"kind": "public"}, "delivery": ["pull"], "lease_s": 5});
    let d = parse(&serde_json::to_vec(&least).unwrap()).unwrap();
    assert_eq!(d.requires, Requirements::default());
    assert!(d.hosting.is_none());
}

/// Each bad field is refused with its name in the words; nothing else is taken.
#[test]
fn each_bad_field_is_refused_by_name() {
    let long = |n: usize| Value::String("x".repeat(n));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with("service_id", json!("")), "service_id"),
        (with("service_id", json!("Has Space")), "service_id"),
        (with("service_id", long(65)), "service_id"),
        (with("name", long(129)), "name"),
        (with("name", json!("bell\u{7}")), "name"),
        (with("type", json!("Media")), "type"),
        (with("version", json!("")), "version"),
        (with("keywords", json!([])), "keywords"),
        (with("keywords", json!(["two words"])), "keywords"),
        (with("keywords", json!([" "])), "keywords"),
        (with("keywords", json!(["x".repeat(33)])), "keywords"),
        (
            with(
                "keywords",
                Value::Array((0..33).map(|i| json!(format!("k{i}"))).collect()),
            ),
            "keywords",
        ),
        (with("summary", long(257)), "summary"),
        (
            with("scope", json!({"kind": "group", "group_id": ""})),
            "scope.group_id",
        ),
        (with("delivery", json!([])), "delivery"),
        (with("delivery", json!(["push", "push"])), "delivery"),
        (with("lease_s", json!(4)), "lease_s"),
        (with("lease_s", json!(86_401)), "lease_s"),
        (
            with("requires", json!({"software": vec!["s"; 17]})),
            "requires.software",
        ),
        (with("hosting", json!({"cpu_class": 9})), "hosting"),
    ];
    for (doc, field) in cases {
        let e = parse(&doc).unwrap_err();
        assert!(
            e.to_string().contains(field) || matches!(&e, DescriptionError::Malformed(_)),
            "{field}: {e}"
        );
        assert!(
            matches!(&e, DescriptionError::Bounds { field: f, .. } if *f == field)
                || matches!(&e, DescriptionError::Malformed(m) if m.contains(field)),
            "{field}: {e:?}"
        );
    }
}

#[test]
fn malformed_unknown_and_oversized_documents_are_refused() {
    assert!(matches!(
        parse(b"not json"),
        Err(DescriptionError::Malformed(_))
    ));
    let e = parse(&with("colour", json!("blue"))).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    let e = parse(&without("lease_s")).unwrap_err();
    assert!(e.to_string().contains("lease_s"), "{e}");
    let e = parse(&with("scope", json!({"kind": "pn", "pn_id": "zz"}))).unwrap_err();
    assert!(e.to_string().contains("32 hex digits"), "{e}");
    let e = parse(&with("scope", json!({"kind": "planet"}))).unwrap_err();
    assert!(matches!(e, DescriptionError::Malformed(_)), "{e}");
    let big = vec![b' '; MAX_DESCRIPTION + 1];
    assert_eq!(
        parse(&big),
        Err(DescriptionError::TooLarge(MAX_DESCRIPTION + 1))
    );
    // At the bound, size is not what refuses it.
    let mut at = serde_json::to_vec(&good()).unwrap();
    at.resize(MAX_DESCRIPTION, b' ');
    assert!(parse(&at).is_ok());
}

#[test]
fn a_device_fits_when_it_meets_every_requirement() {
    let r = parse(&serde_json::to_vec(&good()).unwrap())
        .unwrap()
        .requires;
    let tv = DeviceCapabilities {
        device_type: "tv".into(),
        has_ui: true,
        screen: Some(Screen {
            width: 1920,
            height: 1080,
        }),
        software: vec!["h264/2.0".into(), "aac".into()],
        networks: vec!["ethernet".into()],
        ..DeviceCapabilities::default()
    };
    assert!(r.fits(&tv));
    let small = DeviceCapabilities {
        screen: Some(Screen {
            width: 1280,
            height: 700,
        }),
        ..tv.clone()
    };
    assert!(!r.fits(&small), "one side too small");
    let exact = DeviceCapabilities {
        screen: Some(Screen {
            width: 1280,
            height: 720,
        }),
        ..tv.clone()
    };
    assert!(r.fits(&exact), "the bound itself fits");
    for other in [
        DeviceCapabilities {
            has_ui: false,
            ..tv.clone()
        },
        DeviceCapabilities {
            screen: None,
            ..tv.clone()
        },
        DeviceCapabilities {
            software: vec!["h265".into()],
            ..tv.clone()
        },
        DeviceCapabilities {
            networks: vec!["bluetooth".into()],
            ..tv.clone()
        },
    ] {
        assert!(!r.fits(&other), "{other:?}");
    }
    let typed = Requirements {
        device_types: vec!["tv".into(), "projector".into()],
        min_memory_mb: Some(512),
        ..Requirements::default()
    };
    assert!(!typed.fits(&tv), "no memory said");
    let roomy = DeviceCapabilities {
        memory_mb: Some(512),
        ..tv.clone()
    };
    assert!(typed.fits(&roomy));
    assert!(!typed.fits(&DeviceCapabilities {
        device_type: "phone".into(),
        ..roomy.clone()
    }));
    assert!(!typed.fits(&DeviceCapabilities {
        memory_mb: Some(511),
        ..roomy
    }));
    assert!(Requirements::default().fits(&DeviceCapabilities::default()));
}

const SCHEMA: &str = include_str!("../../../docs/service.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).unwrap()
}

/// docs/service.schema.json is what the type reads: every example in it validates against it
/// and parses; every property it names is a field of the type and the other way round; a
/// description the type writes validates; documents the type refuses for their shape, the
/// schema refuses too.
#[test]
fn the_published_schema_and_the_type_agree() {
    let s = schema();
    let validator = jsonschema::validator_for(&s).unwrap();
    let examples = s["examples"].as_array().unwrap();
    assert!(examples.len() >= 2);
    for e in examples {
        assert!(validator.is_valid(e), "{e}");
        let d = parse(&serde_json::to_vec(e).unwrap()).unwrap();
        let written: Value = serde_json::from_slice(&d.to_json()).unwrap();
        assert!(validator.is_valid(&written), "{written}");
    }
    let written: Value = serde_json::from_slice(
        &parse(&serde_json::to_vec(&good()).unwrap())
            .unwrap()
            .to_json(),
    )
    .unwrap();
    assert!(validator.is_valid(&written), "{written}");
    // The same field names, both ways.
    let names =
        |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(names(&s["properties"]), names(&good()));
    let required: BTreeSet<String> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for key in names(&good()) {
        let doc = without(&key);
        assert_eq!(
            parse(&doc).is_err(),
            required.contains(&key),
            "{key}: the type and the schema disagree on whether it is required"
        );
    }
    let every_requirement = json!({"device_types": ["tv"], "has_ui": true,
        "min_screen": {"width": 1, "height": 1}, "software": ["a"], "networks": ["b"],
        "min_memory_mb": 1});
    assert_eq!(
        names(&s["properties"]["requires"]["properties"]),
        names(&every_requirement)
    );
    assert!(parse(&with("requires", every_requirement)).is_ok());
    // Shapes both refuse.
    for bad in [
        with("colour", json!("blue")),
        with("scope", json!({"kind": "planet"})),
        with("delivery", json!(["push", "push"])),
        with("lease_s", json!(4)),
        with("service_id", json!("Has Space")),
    ] {
        let v: Value = serde_json::from_slice(&bad).unwrap();
        assert!(!validator.is_valid(&v), "{v}");
        assert!(parse(&bad).is_err(), "{v}");
    }
}

/// Every field at its bound is taken (and a description of 16 KiB exactly); one past each is
/// refused (`each_bad_field_is_refused_by_name`).
#[test]
fn every_field_at_its_bound_is_taken() {
    let x = |n: usize| "x".repeat(n);
    let list = |n: usize, len: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("{i:02}{}", "y".repeat(len - 2)))
            .collect()
    };
    let mut v = good();
    v["service_id"] = json!(x(64));
    v["name"] = json!(x(128));
    v["type"] = json!(x(64));
    v["version"] = json!(x(32));
    v["summary"] = json!(x(256));
    v["keywords"] = json!(list(32, 32));
    v["scope"] = json!({"kind": "group", "group_id": x(64)});
    v["requires"] = json!({"device_types": list(16, 64), "software": list(16, 64),
        "networks": list(16, 64)});
    v["lease_s"] = json!(5);
    let d = parse(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(d.keywords.len(), 32);
    v["lease_s"] = json!(86_400);
    let mut doc = serde_json::to_vec(&v).unwrap();
    assert!(doc.len() < 16 * 1024, "{}", doc.len());
    doc.resize(16 * 1024, b' ');
    assert!(parse(&doc).is_ok(), "16 KiB exactly");
    doc.push(b' ');
    assert_eq!(parse(&doc), Err(DescriptionError::TooLarge(16 * 1024 + 1)));
    // A keyword with a quote or a control character is refused as one with a space is.
    for odd in ["a\"b", "a\u{1}b", "tab\there"] {
        let e = parse(&with("keywords", json!([odd]))).unwrap_err();
        assert!(
            matches!(
                &e,
                DescriptionError::Bounds {
                    field: "keywords",
                    ..
                }
            ),
            "{odd:?}: {e}"
        );
    }
}
