//! `cpns-bench establish` as a user runs it, made small: every figure of the table is measured
//! (Mosquitto when it is installed), the JSON holds them, and the store's PN count equals the
//! establishments acknowledged (the bench itself fails otherwise); bad settings and a missing
//! `cpns` binary are refused with a clear error. Also `cpns-bench fanout`, made small, with its
//! helper processes.

#![allow(clippy::unwrap_used)]

use std::process::Command;

mod common;

use common::{BENCH, bench, bench_json};

#[test]
fn a_small_bench_measures_every_figure_and_counts_what_it_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("bench");
    let v = bench_json(&[
        "establish",
        "--secs",
        "0.3",
        "--concurrency",
        "2",
        "--idle-sessions",
        "40",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    for rate in [
        "setups",
        "establishments",
        "establishments_half_rate",
        "ceiling",
    ] {
        assert!(v[rate]["ops"].as_u64().unwrap() > 0, "{rate}: {}", v[rate]);
        assert!(v[rate]["p50_us"].as_u64().unwrap() > 0, "{rate}");
    }
    assert!(v["rustls_ceiling"]["ops"].as_u64().unwrap() > 0);
    for rate in ["setups", "establishments"] {
        assert!(
            v[rate]["cpu_us_per_op"].as_f64().is_some(),
            "{rate}: server CPU"
        );
    }
    let acked = v["acknowledged"].as_u64().unwrap();
    assert_eq!(
        acked,
        v["establishments"]["ops"].as_u64().unwrap()
            + v["establishments_half_rate"]["ops"].as_u64().unwrap()
            + v["establishments_quarter_rate"]["ops"].as_u64().unwrap()
    );
    assert_eq!(v["stored_pns"].as_u64().unwrap(), acked);
    assert_eq!(v["idle"]["sessions"], 40);
    assert!(v["idle"]["server_rss_after"].as_u64().unwrap() > 0);
    assert!(v["ratios"]["establishments_vs_ceiling"].as_f64().unwrap() > 0.0);
    if Command::new("mosquitto").arg("-h").output().is_ok() {
        assert!(v["mosquitto"]["ops"].as_u64().unwrap() > 0);
        assert!(v["ratios"]["setups_vs_mosquitto"].as_f64().unwrap() > 0.0);
    } else {
        println!("mosquitto is not installed: its figure is not checked");
    }
    // --keep leaves the data directory for inspection.
    assert!(keep.join("cpns.db").exists());
    assert!(keep.join("bench-households.json").exists());
}

#[test]
fn bad_bench_settings_are_refused_with_a_clear_error() {
    for (args, says) in [
        (vec!["--secs", "0"], "above zero"),
        (vec!["--concurrency", "0"], "above zero"),
        (vec!["--idle-sessions", "25000"], "at most 19000"),
    ] {
        let out = bench(&[&["establish"], &args[..]].concat());
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A data directory is never reused: --keep must name a new one.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let made = prepare(dir, "1");
    assert!(made.status.success());
    let out = bench(&["establish", "--keep", dir]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds a data directory"), "{err}");
    let out = prepare(dir, "2");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not exceed --gateways"));
}

/// `cpns-bench prepare` of one PN GW with `pnes` of them given PNEs, in `dir`.
fn prepare(dir: &str, pnes: &str) -> std::process::Output {
    bench(&[
        "prepare",
        "--data-dir",
        dir,
        "--gateways",
        "1",
        "--with-pnes",
        pnes,
    ])
}

#[test]
fn a_missing_cpns_binary_is_named_with_how_to_build_it() {
    let out = bench(&["establish", "--cpns-bin", "/nonexistent/cpns"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cpns-bin /nonexistent/cpns: no such file"),
        "{err}"
    );

    // By default the bench looks beside itself: a cpns-bench alone in a directory says so.
    let alone = tempfile::tempdir_in(std::path::Path::new(BENCH).parent().unwrap()).unwrap();
    let copy = alone.path().join("cpns-bench");
    std::fs::hard_link(BENCH, &copy)
        .or_else(|_| std::fs::copy(BENCH, &copy).map(drop))
        .unwrap();
    for sub in ["establish", "fanout"] {
        let out = Command::new(&copy)
            .arg(sub)
            .env_remove("CPNS_BIN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no cpns binary at"), "{sub}: {err}");
        assert!(
            err.contains("cargo build --release -p cpns"),
            "{sub}: {err}"
        );
    }
}

#[test]
fn a_small_fanout_reaches_every_subscriber_and_the_floor_too() {
    let v = bench_json(&[
        "fanout",
        "--subscribers",
        "6",
        "--changes",
        "2",
        "--helpers",
        "2",
        "--floor",
    ]);
    for run in ["cpns", "floor"] {
        assert_eq!(v[run]["delivered"], 12, "{run}: {}", v[run]);
        assert!(v[run]["p99_ms"].as_f64().unwrap() > 0.0, "{run}");
    }
}
