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
    assert_eq!(
        resolve_error("{\n  \"device_type\": \"watch\",\n  \"foo\": 1\n}"),
        "line 3: unknown field \"foo\"; expected one of \"device_type\", \"has_ui\", \
         \"networks\", \"software\", \"battery_pct\", \"gateway_capable\", \"cpu_class\", \
         \"memory_class\""
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
