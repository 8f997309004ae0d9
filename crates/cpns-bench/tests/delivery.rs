//! `cpns-bench delivery` as a user runs it, made small: a delivery through a PN GW and its two
//! peers (plain TLS, a plain TLS relay) each measured, on either PAN security, the copies
//! checked by the bench itself (it fails on a hash that differs); a PAN security it does not
//! know is refused with a clear error.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BENCH, bench_json};

#[test]
fn a_small_delivery_bench_measures_each_path_on_a_trusted_pan() {
    let v = bench_json(&[
        "delivery",
        "--mib",
        "1",
        "--rounds",
        "1",
        "--pan-security",
        "trusted",
    ]);
    assert_eq!(v["pan_security"], "trusted");
    assert_eq!(v["bytes"], 1024 * 1024);
    for path in ["tls_cpu_s", "relay_cpu_s"] {
        assert_eq!(v[path].as_array().map(Vec::len), Some(1), "{path}");
    }
    for path in ["delivery_mib_s", "tls_mib_s", "relay_mib_s"] {
        let rates = v[path].as_array().unwrap();
        assert_eq!(rates.len(), 1, "{path}: one round");
        assert!(rates[0].as_f64().unwrap() > 0.0, "{path}");
    }
    assert!(v["delivery_of_tls"].as_f64().unwrap() > 0.0);
    // What the push cost each of its processes, and how busy that kept the machine (counted
    // in ticks of 10 ms, so a push this small is measured only roughly).
    let cpu = &v["delivery_cpu"][0];
    let busy = cpu["busy"].as_f64().unwrap();
    assert!(busy.is_finite() && busy >= 0.0, "{cpu}");
    for who in ["source_s", "gateway_s", "target_s"] {
        assert!(cpu[who].as_f64().unwrap() >= 0.0, "{who}: {cpu}");
    }
    assert!(v["gateway_peak_mib"].as_f64().unwrap() > 0.0);
}

#[test]
fn an_unknown_pan_security_is_refused_naming_the_choices() {
    let out = std::process::Command::new(BENCH)
        .args(["delivery", "--pan-security", "bluetooth"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpns") && err.contains("trusted"), "{err}");
}
