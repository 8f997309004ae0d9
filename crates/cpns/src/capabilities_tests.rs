//! Defaults, file and flags merge in that order; bad files and flags give errors that say where.

#![allow(clippy::unwrap_used)]

use std::io::Write;

use clap::Parser;

use super::*;

#[derive(Parser, Debug)]
struct Cmd {
    #[command(flatten)]
    caps: CapabilityArgs,
}

fn args(flags: &[&str]) -> CapabilityArgs {
    let mut argv = vec!["cmd"];
    argv.extend(flags);
    Cmd::try_parse_from(argv).unwrap().caps
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn pne_defaults() -> DeviceCapabilities {
    defaults("phone", true, false)
}

#[test]
fn without_file_or_flags_the_defaults_stand() {
    assert_eq!(args(&[]).resolve(pne_defaults()).unwrap(), pne_defaults());
}

#[test]
fn flags_set_every_field() {
    let c = args(&[
        "--device-type",
        "watch",
        "--no-ui",
        "--networks",
        "bluetooth,lte",
        "--software",
        "fitness/2.1,music",
        "--battery",
        "80",
        "--gateway-capable",
        "--cpu-class",
        "2",
        "--memory-class",
        "3",
    ])
    .resolve(pne_defaults())
    .unwrap();
    assert_eq!(
        c,
        DeviceCapabilities {
            device_type: "watch".into(),
            has_ui: false,
            networks: vec!["bluetooth".into(), "lte".into()],
            software: vec!["fitness/2.1".into(), "music".into()],
            battery_pct: Some(80),
            gateway_capable: true,
            cpu_class: Some(2),
            memory_class: Some(3),
            ..DeviceCapabilities::default()
        }
    );
}

#[test]
fn the_file_overrides_defaults_and_flags_override_the_file() {
    let f = file(
        r#"{
  "device_type": "watch",
  "has_ui": false,
  "networks": ["bluetooth"],
  "software": ["fitness/2.1"],
  "battery_pct": 80,
  "gateway_capable": true,
  "cpu_class": 1
}"#,
    );
    let path = f.path().to_str().unwrap();
    // The file alone.
    let c = args(&["--capabilities", path])
        .resolve(pne_defaults())
        .unwrap();
    assert_eq!(
        c,
        DeviceCapabilities {
            device_type: "watch".into(),
            has_ui: false,
            networks: vec!["bluetooth".into()],
            software: vec!["fitness/2.1".into()],
            battery_pct: Some(80),
            gateway_capable: true,
            cpu_class: Some(1),
            memory_class: None,
            ..DeviceCapabilities::default()
        }
    );
    // Flags win, field by field; what no flag sets comes from the file.
    let c = args(&[
        "--capabilities",
        path,
        "--ui",
        "--battery",
        "none",
        "--networks",
        "wlan",
        "--no-gateway-capable",
        "--cpu-class",
        "0",
    ])
    .resolve(pne_defaults())
    .unwrap();
    assert_eq!(
        c,
        DeviceCapabilities {
            device_type: "watch".into(),
            has_ui: true,
            networks: vec!["wlan".into()],
            software: vec!["fitness/2.1".into()],
            battery_pct: None,
            gateway_capable: false,
            cpu_class: Some(0),
            memory_class: None,
            ..DeviceCapabilities::default()
        }
    );
}

/// Every field of the wire's capabilities has a flag (the keys of a newer version, `unknown`,
/// come only from the file), and the file takes every field too.
#[test]
fn flags_and_file_cover_every_field() {
    let full = DeviceCapabilities {
        device_type: "tv".into(),
        has_ui: true,
        networks: vec!["wlan".into()],
        software: vec!["player/3".into()],
        battery_pct: Some(55),
        gateway_capable: true,
        cpu_class: Some(3),
        memory_class: Some(2),
        screen: Some(cpns_wire::Screen {
            width: 1920,
            height: 1080,
        }),
        battery_mah: Some(4000),
        processor: Some("arm64 cortex-a78".into()),
        memory_mb: Some(8192),
        chipsets: vec!["soc-1".into(), "npu-2".into()],
        drivers: vec!["hdmi/2".into()],
        free_memory_mb: Some(512),
        battery_minutes: Some(90),
        running: vec!["player".into()],
        active_drivers: vec!["hdmi".into()],
        unknown: Default::default(),
    };
    let by_flags = args(&[
        "--device-type",
        "tv",
        "--ui",
        "--networks",
        "wlan",
        "--software",
        "player/3",
        "--battery",
        "55",
        "--gateway-capable",
        "--cpu-class",
        "3",
        "--memory-class",
        "2",
        "--screen",
        "1920x1080",
        "--battery-mah",
        "4000",
        "--processor",
        "arm64 cortex-a78",
        "--memory-mb",
        "8192",
        "--chipsets",
        "soc-1,npu-2",
        "--drivers",
        "hdmi/2",
        "--free-memory-mb",
        "512",
        "--battery-minutes",
        "90",
        "--running",
        "player",
        "--active-drivers",
        "hdmi",
    ])
    .resolve(pne_defaults())
    .unwrap();
    assert_eq!(by_flags, full);
    // The file: the one mapping's JSON of the same capabilities, plus a key of a newer version.
    let mut with_unknown = full.clone();
    with_unknown.unknown.insert(40, vec![0x18, 0x2a]);
    let text = serde_json::to_string(&cpns_control::Capabilities::from(&with_unknown)).unwrap();
    for key in cpns_control::CAPABILITY_KEYS {
        assert!(
            text.contains(&format!("\"{key}\"")),
            "{key} missing from {text}"
        );
    }
    let f = file(&text);
    let by_file = args(&["--capabilities", f.path().to_str().unwrap()])
        .resolve(pne_defaults())
        .unwrap();
    assert_eq!(by_file, with_unknown);
    assert!(matches!(
        Cmd::try_parse_from(["cmd", "--screen", "wide"]),
        Err(e) if e.to_string().contains("is not a screen size")
    ));
}

#[test]
fn a_partial_file_keeps_the_other_defaults() {
    let f = file(r#"{"battery_pct": 41}"#);
    let c = args(&["--capabilities", f.path().to_str().unwrap()])
        .resolve(pne_defaults())
        .unwrap();
    assert_eq!(
        c,
        DeviceCapabilities {
            battery_pct: Some(41),
            ..pne_defaults()
        }
    );
}

#[test]
fn the_last_of_opposite_flags_wins() {
    let c = args(&["--no-ui", "--ui"]).resolve(pne_defaults()).unwrap();
    assert!(c.has_ui);
    let c = args(&["--ui", "--no-ui"]).resolve(pne_defaults()).unwrap();
    assert!(!c.has_ui);
    let c = args(&["--networks", ""]).resolve(pne_defaults()).unwrap();
    assert!(c.networks.is_empty());
}

fn resolve_error(text: &str) -> String {
    let f = file(text);
    let path = f.path().display().to_string();
    let e = args(&["--capabilities", &path])
        .resolve(pne_defaults())
        .unwrap_err();
    let msg = format!("{e:#}");
    let prefix = format!("capabilities file {path}: ");
    assert!(msg.starts_with(&prefix), "{msg}");
    msg[prefix.len()..].to_string()
}

#[test]
fn bad_files_say_where_and_what() {
    // Every key the one mapping knows, in the order of the wire map.
    let known: Vec<String> = cpns_control::CAPABILITY_KEYS
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect();
    assert_eq!(
        resolve_error("{\n  \"device_type\": \"watch\",\n  \"foo\": 1\n}"),
        format!(
            "line 3: unknown field \"foo\"; expected one of {}",
            known.join(", ")
        )
    );
    assert_eq!(
        resolve_error("{\"unknown\": {\"40\": \"zz\"}}"),
        "unknown key 40: not hex (Invalid character 'z' at position 0)"
    );
    assert_eq!(
        resolve_error("{\"memory_class\": 4}"),
        "line 1: a class is 0 to 3, not 4"
    );
    assert_eq!(
        resolve_error("{\n  \"has_ui\": \"yes\"\n}"),
        "line 2: invalid type: string \"yes\"; expected a boolean"
    );
    assert_eq!(
        resolve_error("{\"battery_pct\": 150}"),
        "line 1: battery_pct must be 0 to 100, not 150"
    );
    assert_eq!(
        resolve_error("{\"device_type\": \"\"}"),
        "line 1: device_type must not be empty"
    );
    assert_eq!(
        resolve_error("\n[\"watch\"]"),
        "line 2: expected a JSON object of device capabilities"
    );
    assert_eq!(
        resolve_error("3"),
        "line 1: expected a JSON object of device capabilities"
    );
    assert_eq!(
        resolve_error(" \n"),
        "the file is empty; expected a JSON object of device capabilities"
    );
    assert_eq!(
        resolve_error("{\n  \"has_ui\": true\n"),
        "line 3: EOF while parsing an object"
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = args(&["--capabilities", "/nonexistent/caps.json"])
        .resolve(pne_defaults())
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.starts_with("capabilities file /nonexistent/caps.json: "),
        "{msg}"
    );
}

#[test]
fn bad_flags_are_refused() {
    for bad in [["--battery", "101"], ["--battery", "full"]] {
        let mut argv = vec!["cmd"];
        argv.extend(bad);
        let e = Cmd::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("is not a percentage (0-100) or `none`"), "{e}");
    }
    for bad in [["--cpu-class", "4"], ["--memory-class", "x"]] {
        let mut argv = vec!["cmd"];
        argv.extend(bad);
        assert!(Cmd::try_parse_from(argv).is_err(), "{bad:?}");
    }
    let e = args(&["--device-type", " "])
        .resolve(pne_defaults())
        .unwrap_err();
    assert_eq!(e.to_string(), "--device-type must not be empty");
}
