//! The device capabilities (004 §5.5.1.2) a PNE or PN GW reports, set on the command line:
//! defaults for the role, then a JSON file (`--capabilities FILE`), then one flag per field.
//!
//! The file is the JSON of `cpns_control::Capabilities`, the one mapping the control sockets
//! use too (docs/control-api.md, "Capabilities"): a JSON object whose keys are the fields of
//! [`DeviceCapabilities`]; every key is optional and keeps the default when left out, unknown
//! keys are errors (a misspelt key should not go unnoticed):
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
//!   "memory_class": 1,
//!   "screen": {"width": 454, "height": 454}
//! }
//! ```
//!
//! `battery_pct` is 0 to 100, or `null` (like leaving it out) for a mains-powered device;
//! `cpu_class` and `memory_class` are 0 (least) to 3, for PN GW election (002 §B.1.1.1). Every
//! field also has a flag; the keys of a newer version (`unknown`) only the file and the
//! sockets carry.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use cpns_control::{Capabilities, ScreenSize};
use cpns_wire::{DeviceCapabilities, Screen};

/// Capability flags shared by `cpns pne` and `cpns gateway`.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
#[command(next_help_heading = "Device capabilities")]
pub(crate) struct CapabilityArgs {
    /// Read the capabilities from this JSON file (a key per field: device_type, has_ui,
    /// networks, software, battery_pct, gateway_capable, cpu_class, memory_class, screen,
    /// battery_mah, processor, memory_mb, chipsets, drivers, free_memory_mb, battery_minutes,
    /// running, active_drivers; docs/control-api.md); the flags below override it.
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
    /// Screen size in pixels, WIDTHxHEIGHT.
    #[arg(long, value_name = "WxH", value_parser = screen_flag)]
    pub screen: Option<ScreenSize>,
    /// Battery size, mAh.
    #[arg(long, value_name = "MAH")]
    pub battery_mah: Option<u32>,
    /// Processor type, e.g. "arm64 cortex-a78" (empty: none).
    #[arg(long, value_name = "TEXT")]
    pub processor: Option<String>,
    /// Memory size, MiB.
    #[arg(long, value_name = "MIB")]
    pub memory_mb: Option<u32>,
    /// Chipsets (main, accelerator, network), comma separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub chipsets: Option<Vec<String>>,
    /// Installed drivers as name/version, comma separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub drivers: Option<Vec<String>>,
    /// Drivers active now, comma separated (dynamic).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub active_drivers: Option<Vec<String>>,
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

fn screen_flag(s: &str) -> Result<ScreenSize, String> {
    let bad = || format!("`{s}` is not a screen size WIDTHxHEIGHT, e.g. 1920x1080");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    Ok(ScreenSize {
        width: w.parse().map_err(|_| bad())?,
        height: h.parse().map_err(|_| bad())?,
    })
}

/// Reads and checks a capabilities file (the JSON of `cpns_control::Capabilities`). Errors
/// name the file and, for bad content, the line:
/// `capabilities file x.json: line 3: unknown field "foo"; expected one of …`.
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Capabilities> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("capabilities file {}", path.display()))?;
    Capabilities::parse(&text)
        .map_err(|e| anyhow::anyhow!("capabilities file {}: {e}", path.display()))
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
            read_file(path)?
                .apply(&mut c)
                .map_err(|e| anyhow::anyhow!("capabilities file {}: {e}", path.display()))?;
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
        if let Some(s) = self.screen {
            c.screen = Some(Screen {
                width: s.width,
                height: s.height,
            });
        }
        if self.battery_mah.is_some() {
            c.battery_mah = self.battery_mah;
        }
        if let Some(p) = &self.processor {
            c.processor = Some(p.clone()).filter(|p| !p.trim().is_empty());
        }
        if self.memory_mb.is_some() {
            c.memory_mb = self.memory_mb;
        }
        if let Some(l) = &self.chipsets {
            c.chipsets = items(l);
        }
        if let Some(l) = &self.drivers {
            c.drivers = items(l);
        }
        if let Some(l) = &self.active_drivers {
            c.active_drivers = items(l);
        }
        c.check()
            .map_err(|why| anyhow::anyhow!("capabilities: {why}"))?;
        Ok(c)
    }
}

#[cfg(test)]
#[path = "capabilities_tests.rs"]
mod tests;
