//! The one JSON mapping of device capabilities (004 §5.5.1.2; docs/device-status.md): the
//! `capabilities` of the `caps` and `caps_set` verbs on every socket, the file of
//! `cpns pne --capabilities FILE`, and what the command line's flags set are all a
//! [`Capabilities`], so the names, bounds and checks are written once.
//!
//! Every field of [`DeviceCapabilities`] has a key of the same name; every key is optional and
//! an unknown key is an error (a misspelt key should not go unnoticed). Read as a whole set
//! ([`Capabilities::to_device`]) a key left out takes its empty value; merged over other
//! capabilities ([`Capabilities::apply`], the file over a role's defaults) it keeps theirs.
//! `battery_pct` is 0 to 100 (absent or `null`: mains powered), `cpu_class` and `memory_class`
//! 0 (least) to 3, for PN GW election (002 §B.1.1.1). Keys of a newer version of the wire map
//! travel in `unknown`, by their integer key, as the hex of their CBOR value, so a device's
//! capabilities read and written back are unchanged.

use std::collections::BTreeMap;

use cpns_wire::{DeviceCapabilities, Screen};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// Device capabilities as JSON; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object of device capabilities"
)]
pub struct Capabilities {
    /// Device type, e.g. `phone`, `watch`, `home-hub`; not empty.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "device_type"
    )]
    pub device_type: Option<String>,
    /// Whether the device has enough UI for a LocalEUKey (000 §6.6.1.1 step 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_ui: Option<bool>,
    /// Networks attached now (dynamic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Installed software, as `name/version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<Vec<String>>,
    /// Remaining battery, percent (dynamic); absent or `null` for a mains-powered device.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "percent"
    )]
    pub battery_pct: Option<u8>,
    /// Whether the device can take the PN GW role (002 §B.1.1.1 step 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_capable: Option<bool>,
    /// Processing power class, 0 to 3.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "class"
    )]
    pub cpu_class: Option<u8>,
    /// Memory class, 0 to 3.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "class"
    )]
    pub memory_class: Option<u8>,
    /// Screen size, pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<ScreenSize>,
    /// Battery size, mAh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_mah: Option<u32>,
    /// Processor type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    /// Memory size, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Chipsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chipsets: Option<Vec<String>>,
    /// Installed drivers, as `name/version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drivers: Option<Vec<String>>,
    /// Memory available now, MiB (dynamic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_mb: Option<u32>,
    /// Estimated remaining battery time, minutes (dynamic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_minutes: Option<u32>,
    /// Applications running now (dynamic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Vec<String>>,
    /// Drivers active now (dynamic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_drivers: Option<Vec<String>>,
    /// Keys of a newer version, by integer key: the hex of each value's CBOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<BTreeMap<u64, String>>,
}

/// A screen size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenSize {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

/// The keys, in the order of the wire map (docs/device-status.md).
pub const KEYS: [&str; 19] = [
    "device_type",
    "has_ui",
    "networks",
    "software",
    "battery_pct",
    "gateway_capable",
    "cpu_class",
    "memory_class",
    "screen",
    "battery_mah",
    "processor",
    "memory_mb",
    "chipsets",
    "drivers",
    "free_memory_mb",
    "battery_minutes",
    "running",
    "active_drivers",
    "unknown",
];

fn class<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(c) if c > 3 => Err(D::Error::custom(format!("a class is 0 to 3, not {c}"))),
        Some(c) => Ok(u8::try_from(c).ok()),
        None => Ok(None),
    }
}

fn device_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let t = Option::<String>::deserialize(d)?;
    if t.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(D::Error::custom("device_type must not be empty"));
    }
    Ok(t)
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(p) if p > 100 => Err(D::Error::custom(format!(
            "battery_pct must be 0 to 100, not {p}"
        ))),
        Some(p) => Ok(u8::try_from(p).ok()),
        None => Ok(None),
    }
}

impl From<&DeviceCapabilities> for Capabilities {
    /// Every field, lists empty or not; the optional ones when the device has them.
    fn from(c: &DeviceCapabilities) -> Self {
        Self {
            device_type: Some(c.device_type.clone()),
            has_ui: Some(c.has_ui),
            networks: Some(c.networks.clone()),
            software: Some(c.software.clone()),
            battery_pct: c.battery_pct,
            gateway_capable: Some(c.gateway_capable),
            cpu_class: c.cpu_class,
            memory_class: c.memory_class,
            screen: c.screen.map(|s| ScreenSize {
                width: s.width,
                height: s.height,
            }),
            battery_mah: c.battery_mah,
            processor: c.processor.clone(),
            memory_mb: c.memory_mb,
            chipsets: Some(c.chipsets.clone()),
            drivers: Some(c.drivers.clone()),
            free_memory_mb: c.free_memory_mb,
            battery_minutes: c.battery_minutes,
            running: Some(c.running.clone()),
            active_drivers: Some(c.active_drivers.clone()),
            unknown: (!c.unknown.is_empty()).then(|| {
                c.unknown
                    .iter()
                    .map(|(k, v)| (*k, hex::encode(v)))
                    .collect()
            }),
        }
    }
}

impl Capabilities {
    /// Sets in `c` every field given here; the others stay as they are. Fails on an `unknown`
    /// value that is not hex.
    pub fn apply(&self, c: &mut DeviceCapabilities) -> Result<(), String> {
        fn set<T: Clone>(field: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *field = v.clone();
            }
        }
        fn set_opt<T: Clone>(field: &mut Option<T>, v: &Option<T>) {
            if v.is_some() {
                field.clone_from(v);
            }
        }
        set(&mut c.device_type, &self.device_type);
        set(&mut c.has_ui, &self.has_ui);
        set(&mut c.networks, &self.networks);
        set(&mut c.software, &self.software);
        set_opt(&mut c.battery_pct, &self.battery_pct);
        set(&mut c.gateway_capable, &self.gateway_capable);
        set_opt(&mut c.cpu_class, &self.cpu_class);
        set_opt(&mut c.memory_class, &self.memory_class);
        if let Some(s) = self.screen {
            c.screen = Some(Screen {
                width: s.width,
                height: s.height,
            });
        }
        set_opt(&mut c.battery_mah, &self.battery_mah);
        set_opt(&mut c.processor, &self.processor);
        set_opt(&mut c.memory_mb, &self.memory_mb);
        set(&mut c.chipsets, &self.chipsets);
        set(&mut c.drivers, &self.drivers);
        set_opt(&mut c.free_memory_mb, &self.free_memory_mb);
        set_opt(&mut c.battery_minutes, &self.battery_minutes);
        set(&mut c.running, &self.running);
        set(&mut c.active_drivers, &self.active_drivers);
        if let Some(unknown) = &self.unknown {
            c.unknown = unknown
                .iter()
                .map(|(k, v)| {
                    hex::decode(v)
                        .map(|b| (*k, b))
                        .map_err(|e| format!("unknown key {k}: not hex ({e})"))
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// These capabilities as a whole set: what is left out is empty (no UI, no networks, not
    /// battery powered, …); `device_type` must be given. Checked against the bounds a device
    /// may report (`DeviceCapabilities::check`).
    pub fn to_device(&self) -> Result<DeviceCapabilities, String> {
        if self.device_type.is_none() {
            return Err("capabilities name a device_type".into());
        }
        let mut c = DeviceCapabilities::default();
        self.apply(&mut c)?;
        c.check()?;
        Ok(c)
    }

    /// Reads capabilities from JSON text (a file); the error says on which line and what:
    /// `line 3: unknown field "foo"; expected one of "device_type", …`.
    pub fn parse(text: &str) -> Result<Self, String> {
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
}
