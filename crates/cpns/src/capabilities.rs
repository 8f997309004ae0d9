//! The device capabilities (004 §5.5.1.2) a PNE or PN GW reports, set on the command line:
//! defaults for the role, then a JSON file (`--capabilities FILE`), then one flag per field.
//!
//! The file is a JSON object whose keys are the fields of [`DeviceCapabilities`]; every key is
//! optional, unknown keys are errors (a misspelt key should not go unnoticed):
//!
//! ```json
//! {
//!   "device_type": "watch",
//!   "has_ui": false,
//!   "networks": ["bluetooth"],
//!   "software": ["fitness/2.1"],
//!   "battery_pct": 80,
//!   "gateway_capable": false,
//!   "cpu_class": 1,
//!   "memory_class": 1
//! }
//! ```
//!
//! `battery_pct` is 0 to 100, or `null` (like leaving it out) for a mains-powered device;
//! `cpu_class` and `memory_class` are 0 (least) to 3, for PN GW election (002 §B.1.1.1). The
//! wire type has no serde derives on purpose (the wire crate is CBOR only), so the file is read
//! into [`CapabilitiesFile`] and merged into it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use cpns_wire::DeviceCapabilities;
use serde::{Deserialize, Deserializer};

/// Capability flags shared by `cpns pne` and `cpns gateway`.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
#[command(next_help_heading = "Device capabilities")]
pub(crate) struct CapabilityArgs {
    /// Read the capabilities from this JSON file (keys: device_type, has_ui, networks,
    /// software, battery_pct, gateway_capable, cpu_class, memory_class; see the README); the
    /// flags below override it.
    #[arg(long, value_name = "FILE")]
    pub capabilities: Option<PathBuf>,
    /// Device type, e.g. phone, watch, tv, home-hub [default: phone for a PNE, home-hub for a
    /// PN GW].
    #[arg(long, value_name = "TYPE")]
    pub device_type: Option<String>,
    /// The device has a UI (a PNE with a UI on an insecure PAN asks for a LocalEUKey).
    #[arg(long, overrides_with = "no_ui")]
    pub ui: bool,
    /// The device has no UI (a PNE then asks for no LocalEUKey).
    #[arg(long, overrides_with = "ui")]
    pub no_ui: bool,
    /// Networks the device is attached to, comma separated [default: wlan,bluetooth].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub networks: Option<Vec<String>>,
    /// Software of note, comma separated [default: cpns/<version>].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub software: Option<Vec<String>>,
    /// Remaining battery in percent (0-100), or `none` for a mains-powered device.
    #[arg(long, value_name = "PCT|none", value_parser = battery_flag)]
    pub battery: Option<Battery>,
    /// The device can take the PN GW role [default: only for a PN GW].
    #[arg(long, overrides_with = "no_gateway_capable")]
    pub gateway_capable: bool,
    /// The device cannot take the PN GW role.
    #[arg(long, overrides_with = "gateway_capable")]
    pub no_gateway_capable: bool,
    /// Processing power class, 0 (least) to 3, scored in PN GW election.
    #[arg(long, value_name = "0-3", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub cpu_class: Option<u8>,
    /// Memory class, 0 (least) to 3, scored in PN GW election.
    #[arg(long, value_name = "0-3", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub memory_class: Option<u8>,
    /// Memory available now, MiB (dynamic).
    #[arg(long, value_name = "MIB")]
    pub free_memory_mb: Option<u32>,
    /// Estimated remaining battery time, minutes (dynamic).
    #[arg(long, value_name = "MIN")]
    pub battery_minutes: Option<u32>,
    /// Applications running now, comma separated (dynamic).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub running: Option<Vec<String>>,
}

/// The value of `--battery`: a percentage, or none for a mains-powered device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Battery(pub Option<u8>);

fn battery_flag(s: &str) -> Result<Battery, String> {
    if s == "none" {
        return Ok(Battery(None));
    }
    match s.parse::<u8>() {
        Ok(p) if p <= 100 => Ok(Battery(Some(p))),
        _ => Err(format!("`{s}` is not a percentage (0-100) or `none`")),
    }
}

/// The capabilities file: every field of [`DeviceCapabilities`], each optional.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object of device capabilities"
)]
pub(crate) struct CapabilitiesFile {
    /// Device type.
    #[serde(default, deserialize_with = "device_type")]
    pub device_type: Option<String>,
    /// Whether the device has a UI.
    pub has_ui: Option<bool>,
    /// Networks the device is attached to.
    pub networks: Option<Vec<String>>,
    /// Software of note.
    pub software: Option<Vec<String>>,
    /// Remaining battery, percent; `null` or absent when mains powered.
    #[serde(default, deserialize_with = "percent")]
    pub battery_pct: Option<u8>,
    /// Whether the device can take the PN GW role.
    pub gateway_capable: Option<bool>,
    /// Processing power class, 0-3.
    #[serde(default, deserialize_with = "class")]
    pub cpu_class: Option<u8>,
    /// Memory class, 0-3.
    #[serde(default, deserialize_with = "class")]
    pub memory_class: Option<u8>,
}

fn class<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(c) if c > 3 => Err(serde::de::Error::custom(format!(
            "a class is 0 to 3, not {c}"
        ))),
        Some(c) => Ok(u8::try_from(c).ok()),
        None => Ok(None),
    }
}

fn device_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let t = Option::<String>::deserialize(d)?;
    if t.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(serde::de::Error::custom("device_type must not be empty"));
    }
    Ok(t)
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(p) if p > 100 => Err(serde::de::Error::custom(format!(
            "battery_pct must be 0 to 100, not {p}"
        ))),
        Some(p) => Ok(u8::try_from(p).ok()),
        None => Ok(None),
    }
}

impl CapabilitiesFile {
    /// Reads and checks a capabilities file. Errors name the file and, for bad content, the
    /// line: `capabilities file x.json: line 3: unknown field "foo"; expected one of …`.
    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("capabilities file {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("capabilities file {}: {e}", path.display()))
    }

    /// Parses the text of a capabilities file; the error says where and what.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        // serde would also take the fields as an array, in order; only an object is meant.
        let body = text.trim_start();
        if body.is_empty() {
            return Err("the file is empty; expected a JSON object of device capabilities".into());
        }
        if !body.starts_with('{') {
            let line = 1 + text.len() - body.len();
            let line = text.get(..line).map_or(1, |t| t.lines().count().max(1));
            return Err(format!(
                "line {line}: expected a JSON object of device capabilities"
            ));
        }
        serde_json::from_str(text).map_err(|e| {
            // serde_json ends its message with " at line L column C" and quotes names with
            // backticks; put the line first and use plain quotes.
            let full = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            let msg = full
                .strip_suffix(&position)
                .unwrap_or(&full)
                .replace('`', "\"")
                .replace(", expected", "; expected");
            if e.line() == 0 {
                msg
            } else {
                format!("line {}: {msg}", e.line())
            }
        })
    }

    fn apply(self, c: &mut DeviceCapabilities) {
        if let Some(t) = self.device_type {
            c.device_type = t;
        }
        if let Some(ui) = self.has_ui {
            c.has_ui = ui;
        }
        if let Some(n) = self.networks {
            c.networks = n;
        }
        if let Some(s) = self.software {
            c.software = s;
        }
        if self.battery_pct.is_some() {
            c.battery_pct = self.battery_pct;
        }
        if let Some(g) = self.gateway_capable {
            c.gateway_capable = g;
        }
        if self.cpu_class.is_some() {
            c.cpu_class = self.cpu_class;
        }
        if self.memory_class.is_some() {
            c.memory_class = self.memory_class;
        }
    }
}

/// What a device reports when nothing is set: a `device_type` with or without UI, on WLAN and
/// Bluetooth, running this cpns, not battery powered.
pub(crate) fn defaults(
    device_type: &str,
    has_ui: bool,
    gateway_capable: bool,
) -> DeviceCapabilities {
    DeviceCapabilities {
        device_type: device_type.into(),
        has_ui,
        networks: vec!["wlan".into(), "bluetooth".into()],
        software: vec![concat!("cpns/", env!("CARGO_PKG_VERSION")).into()],
        battery_pct: None,
        gateway_capable,
        cpu_class: None,
        memory_class: None,
        ..DeviceCapabilities::default()
    }
}

/// A list from a comma-separated flag, without empty items (`--networks ''` means none).
fn items(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl CapabilityArgs {
    /// The capabilities: `base`, then the file's values, then the flags.
    pub(crate) fn resolve(&self, base: DeviceCapabilities) -> anyhow::Result<DeviceCapabilities> {
        let mut c = base;
        if let Some(path) = &self.capabilities {
            CapabilitiesFile::read(path)?.apply(&mut c);
        }
        if let Some(t) = &self.device_type {
            if t.trim().is_empty() {
                bail!("--device-type must not be empty");
            }
            c.device_type = t.clone();
        }
        if self.ui {
            c.has_ui = true;
        }
        if self.no_ui {
            c.has_ui = false;
        }
        if let Some(n) = &self.networks {
            c.networks = items(n);
        }
        if let Some(s) = &self.software {
            c.software = items(s);
        }
        if let Some(Battery(b)) = self.battery {
            c.battery_pct = b;
        }
        if self.gateway_capable {
            c.gateway_capable = true;
        }
        if self.no_gateway_capable {
            c.gateway_capable = false;
        }
        if self.cpu_class.is_some() {
            c.cpu_class = self.cpu_class;
        }
        if self.memory_class.is_some() {
            c.memory_class = self.memory_class;
        }
        if self.free_memory_mb.is_some() {
            c.free_memory_mb = self.free_memory_mb;
        }
        if self.battery_minutes.is_some() {
            c.battery_minutes = self.battery_minutes;
        }
        if let Some(r) = &self.running {
            c.running = items(r);
        }
        c.check()
            .map_err(|why| anyhow::anyhow!("capabilities: {why}"))?;
        Ok(c)
    }
}

#[cfg(test)]
#[path = "capabilities_tests.rs"]
mod tests;
