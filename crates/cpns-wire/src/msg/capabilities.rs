//! Device capabilities (004 §5.5.1): what a device is and what it can do (static), and what it
//! has now (dynamic), with the query that asks a device for them (docs/device-status.md).
//!
//! [`DeviceCapabilities`] is a map with stable integer keys. A key this version does not know is
//! kept with its value as the CBOR it came in and written back unchanged, so a PN GW or server
//! of an older version passes a newer device's capabilities on whole. The map is read and
//! written with minicbor's decoder and encoder; only the merge of known and kept keys is ours.

use std::collections::BTreeMap;

use minicbor::decode::Error as DecodeError;
use minicbor::encode::{Error as EncodeError, Write};
use minicbor::{Decode, Decoder, Encode, Encoder};

use crate::ids::EntityId;

/// Screen size, in pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Screen {
    /// Width.
    #[n(0)]
    pub width: u32,
    /// Height.
    #[n(1)]
    pub height: u32,
}

/// Device capabilities of the device an entity runs on (004 §5.5.1.2). Keys 0-1 are required;
/// the table of keys, and which are static and which dynamic, is in docs/device-status.md.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceCapabilities {
    /// Device type, e.g. `handset`, `watch`, `set-top-box`.
    pub device_type: String,
    /// Whether the device has enough UI to take part in LocalEUKey assignment (000 §6.6.1.1
    /// step 1).
    pub has_ui: bool,
    /// Networks the device is attached to now, e.g. `wifi`, `bluetooth`, `lte` (dynamic).
    pub networks: Vec<String>,
    /// Installed software, as `name/version`.
    pub software: Vec<String>,
    /// Remaining battery, percent, if battery powered (dynamic).
    pub battery_pct: Option<u8>,
    /// Whether the device can take the PN GW role (002 §B.1.1.1 step 5).
    pub gateway_capable: bool,
    /// Processing power, 0 (least) to 3, for PN GW election (002 §B.1.1.1 step 5).
    pub cpu_class: Option<u8>,
    /// Memory, 0 (least) to 3, for PN GW election.
    pub memory_class: Option<u8>,
    /// Screen size.
    pub screen: Option<Screen>,
    /// Battery size, mAh.
    pub battery_mah: Option<u32>,
    /// Processor type, e.g. `arm64 cortex-a78`.
    pub processor: Option<String>,
    /// Memory size, MiB.
    pub memory_mb: Option<u32>,
    /// Chipsets: main, accelerator, network.
    pub chipsets: Vec<String>,
    /// Installed drivers, as `name/version`.
    pub drivers: Vec<String>,
    /// Memory available now, MiB (dynamic).
    pub free_memory_mb: Option<u32>,
    /// Estimated remaining battery time, minutes (dynamic).
    pub battery_minutes: Option<u32>,
    /// Applications running now (dynamic).
    pub running: Vec<String>,
    /// Drivers active now (dynamic).
    pub active_drivers: Vec<String>,
    /// Keys this version does not know, each with its value as it came (CBOR), kept so the
    /// capabilities are passed on whole.
    pub unknown: BTreeMap<u64, Vec<u8>>,
}

/// Bounds on a [`DeviceCapabilities`] a device may report (docs/device-status.md, "Rate limits
/// and bad input").
pub mod caps_limits {
    /// Most bytes of the encoded map.
    pub const MAX_ENCODED: usize = 8 * 1024;
    /// Most entries of one list (networks, software, ...).
    pub const MAX_LIST: usize = 64;
    /// Most bytes of one string.
    pub const MAX_STRING: usize = 128;
    /// Most keys this version does not know.
    pub const MAX_UNKNOWN: usize = 32;
}

impl DeviceCapabilities {
    /// Why these capabilities may not be taken from a device, if they may not: a string, a
    /// list or the whole map over its bound (`caps_limits`).
    pub fn check(&self) -> Result<(), String> {
        use caps_limits::*;
        let lists: [(&str, &Vec<String>); 6] = [
            ("networks", &self.networks),
            ("software", &self.software),
            ("chipsets", &self.chipsets),
            ("drivers", &self.drivers),
            ("running", &self.running),
            ("active_drivers", &self.active_drivers),
        ];
        for (name, list) in lists {
            if list.len() > MAX_LIST {
                return Err(format!("{name} lists more than {MAX_LIST} entries"));
            }
            if list.iter().any(|s| s.len() > MAX_STRING) {
                return Err(format!("an entry of {name} is over {MAX_STRING} bytes"));
            }
        }
        let strings = [
            ("device_type", Some(&self.device_type)),
            ("processor", self.processor.as_ref()),
        ];
        for (name, s) in strings {
            if s.is_some_and(|s| s.len() > MAX_STRING) {
                return Err(format!("{name} is over {MAX_STRING} bytes"));
            }
        }
        if self.unknown.len() > MAX_UNKNOWN {
            return Err(format!("more than {MAX_UNKNOWN} unknown keys"));
        }
        let len = minicbor::to_vec(self).map_or(usize::MAX, |v| v.len());
        if len > MAX_ENCODED {
            return Err(format!("{len} bytes encoded, over {MAX_ENCODED}"));
        }
        Ok(())
    }

    /// Whether `other` differs from these capabilities in a static field (or an unknown key):
    /// such a change is reported at once, a dynamic-only one is coalesced.
    pub fn static_differs(&self, other: &DeviceCapabilities) -> bool {
        let a = Self {
            unknown: self.unknown.clone(),
            ..self.static_part()
        };
        let b = Self {
            unknown: other.unknown.clone(),
            ..other.static_part()
        };
        a != b
    }

    /// These capabilities with their dynamic fields cleared.
    pub fn static_part(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            networks: Vec::new(),
            battery_pct: None,
            free_memory_mb: None,
            battery_minutes: None,
            running: Vec::new(),
            active_drivers: Vec::new(),
            unknown: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// Applies `$f!(key, present, value)` to every known field of a [`DeviceCapabilities`], in key
/// order: the encoder counts with it, then writes.
macro_rules! caps_entries {
    ($caps:expr, $f:ident) => {{
        let c = $caps;
        $f!(0, true, &c.device_type);
        $f!(1, true, &c.has_ui);
        $f!(2, true, &c.networks);
        $f!(3, true, &c.software);
        $f!(4, c.battery_pct.is_some(), &c.battery_pct);
        $f!(5, true, &c.gateway_capable);
        $f!(6, c.cpu_class.is_some(), &c.cpu_class);
        $f!(7, c.memory_class.is_some(), &c.memory_class);
        $f!(8, c.screen.is_some(), &c.screen);
        $f!(9, c.battery_mah.is_some(), &c.battery_mah);
        $f!(10, c.processor.is_some(), &c.processor);
        $f!(11, c.memory_mb.is_some(), &c.memory_mb);
        $f!(12, !c.chipsets.is_empty(), &c.chipsets);
        $f!(13, !c.drivers.is_empty(), &c.drivers);
        $f!(14, c.free_memory_mb.is_some(), &c.free_memory_mb);
        $f!(15, c.battery_minutes.is_some(), &c.battery_minutes);
        $f!(16, !c.running.is_empty(), &c.running);
        $f!(17, !c.active_drivers.is_empty(), &c.active_drivers);
    }};
}

/// The highest key this version knows.
const LAST_KNOWN: u64 = 17;

impl<C> Encode<C> for DeviceCapabilities {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        ctx: &mut C,
    ) -> Result<(), EncodeError<W::Error>> {
        // Keys the decoder keeps are all above LAST_KNOWN; one a caller put at a known key
        // would repeat that key, so it is not written.
        let unknown = || self.unknown.range(LAST_KNOWN + 1..);
        let mut count = unknown().count() as u64;
        macro_rules! count {
            ($k:expr, $present:expr, $v:expr) => {
                if $present {
                    count += 1;
                }
            };
        }
        caps_entries!(self, count);
        e.map(count)?;
        macro_rules! write {
            ($k:expr, $present:expr, $v:expr) => {
                if $present {
                    e.u64($k)?;
                    e.encode_with($v, ctx)?;
                }
            };
        }
        caps_entries!(self, write);
        for (k, raw) in unknown() {
            e.u64(*k)?;
            e.writer_mut().write_all(raw).map_err(EncodeError::write)?;
        }
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for DeviceCapabilities {
    fn decode(d: &mut Decoder<'b>, ctx: &mut C) -> Result<Self, DecodeError> {
        let at = d.position();
        let len = d.map()?;
        let mut c = DeviceCapabilities::default();
        let (mut has_type, mut has_ui) = (false, false);
        let mut i = 0u64;
        loop {
            match len {
                Some(n) if i == n => break,
                None if d.datatype()? == minicbor::data::Type::Break => {
                    d.skip()?;
                    break;
                }
                _ => {}
            }
            i += 1;
            let key = d.u64()?;
            match key {
                0 => {
                    c.device_type = d.str()?.to_owned();
                    has_type = true;
                }
                1 => {
                    c.has_ui = d.bool()?;
                    has_ui = true;
                }
                2 => c.networks = d.decode_with(ctx)?,
                3 => c.software = d.decode_with(ctx)?,
                4 => c.battery_pct = d.decode_with(ctx)?,
                5 => c.gateway_capable = d.bool()?,
                6 => c.cpu_class = d.decode_with(ctx)?,
                7 => c.memory_class = d.decode_with(ctx)?,
                8 => c.screen = d.decode_with(ctx)?,
                9 => c.battery_mah = d.decode_with(ctx)?,
                10 => c.processor = d.decode_with(ctx)?,
                11 => c.memory_mb = d.decode_with(ctx)?,
                12 => c.chipsets = d.decode_with(ctx)?,
                13 => c.drivers = d.decode_with(ctx)?,
                14 => c.free_memory_mb = d.decode_with(ctx)?,
                15 => c.battery_minutes = d.decode_with(ctx)?,
                16 => c.running = d.decode_with(ctx)?,
                17 => c.active_drivers = d.decode_with(ctx)?,
                other => {
                    let start = d.position();
                    d.skip()?;
                    let raw = d.input()[start..d.position()].to_vec();
                    if c.unknown.insert(other, raw).is_some() {
                        return Err(DecodeError::message("a capabilities key repeats").at(at));
                    }
                }
            }
        }
        if !(has_type && has_ui) {
            return Err(DecodeError::message(
                "capabilities lack device_type or has_ui (keys 0, 1)",
            )
            .at(at));
        }
        Ok(c)
    }
}

/// Capabilities Query (docs/device-status.md): the server asks the PN GW serving `entity` for
/// its current capabilities; the PN GW answers for itself or relays the query to the PNE.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct CapabilitiesQuery {
    /// The entity asked about.
    #[n(0)]
    pub entity: EntityId,
}

/// Capabilities Answer: an entity's current capabilities, as it holds them.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct CapabilitiesAnswer {
    /// The entity.
    #[n(0)]
    pub entity: EntityId,
    /// Its capabilities.
    #[n(1)]
    pub capabilities: DeviceCapabilities,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> DeviceCapabilities {
        DeviceCapabilities {
            device_type: "phone".into(),
            has_ui: true,
            networks: vec!["wlan".into()],
            software: vec!["cpns/1".into()],
            battery_pct: Some(40),
            gateway_capable: true,
            cpu_class: Some(2),
            memory_class: Some(3),
            screen: Some(Screen {
                width: 1080,
                height: 2400,
            }),
            battery_mah: Some(4500),
            processor: Some("arm64".into()),
            memory_mb: Some(8192),
            chipsets: vec!["wifi6".into()],
            drivers: vec!["gpu/2".into()],
            free_memory_mb: Some(1200),
            battery_minutes: Some(300),
            running: vec!["maps".into()],
            active_drivers: vec!["gps".into()],
            unknown: BTreeMap::new(),
        }
    }

    #[test]
    fn every_field_round_trips() {
        let c = full();
        let bytes = minicbor::to_vec(&c).unwrap();
        assert_eq!(minicbor::decode::<DeviceCapabilities>(&bytes).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_kept_and_written_back_in_place() {
        // A newer device's map, by hand: keys 0 and 1, then 18 (text) and 20 (a nested map),
        // which this version does not know.
        let mut e = Encoder::new(Vec::new());
        e.map(4).unwrap();
        e.u8(0).unwrap().str("tv").unwrap();
        e.u8(1).unwrap().bool(false).unwrap();
        e.u8(18).unwrap().str("hdr10").unwrap();
        e.u8(20)
            .unwrap()
            .map(1)
            .unwrap()
            .u8(0)
            .unwrap()
            .u8(7)
            .unwrap();
        let bytes = e.into_writer();
        let c = minicbor::decode::<DeviceCapabilities>(&bytes).unwrap();
        assert_eq!(c.device_type, "tv");
        assert_eq!(c.unknown.len(), 2);
        assert_eq!(c.unknown[&18], minicbor::to_vec("hdr10").unwrap());
        // Written back: the same keys and values; known defaults (networks, software,
        // gateway_capable) are written as the derive always wrote them.
        let again = minicbor::to_vec(&c).unwrap();
        let back = minicbor::decode::<DeviceCapabilities>(&again).unwrap();
        assert_eq!(back, c);
        let mut d = Decoder::new(&again);
        let n = d.map().unwrap().unwrap();
        let keys: Vec<u64> = (0..n)
            .map(|_| {
                let k = d.u64().unwrap();
                d.skip().unwrap();
                k
            })
            .collect();
        assert_eq!(keys, vec![0, 1, 2, 3, 5, 18, 20], "in key order");
    }

    #[test]
    fn an_unknown_key_put_at_a_known_one_is_not_written_twice() {
        let mut c = full();
        c.unknown.insert(2, minicbor::to_vec("lte").unwrap());
        c.unknown.insert(u64::MAX, minicbor::to_vec(1u8).unwrap());
        let bytes = minicbor::to_vec(&c).unwrap();
        let back = minicbor::decode::<DeviceCapabilities>(&bytes).unwrap();
        assert_eq!(back.networks, c.networks);
        assert_eq!(
            back.unknown.keys().copied().collect::<Vec<_>>(),
            vec![u64::MAX]
        );
    }

    #[test]
    fn an_indefinite_map_decodes() {
        let mut e = Encoder::new(Vec::new());
        e.begin_map().unwrap();
        e.u8(1).unwrap().bool(true).unwrap();
        e.u8(0).unwrap().str("hub").unwrap();
        e.u8(30).unwrap().u8(1).unwrap();
        e.end().unwrap();
        let c = minicbor::decode::<DeviceCapabilities>(&e.into_writer()).unwrap();
        assert_eq!((c.device_type.as_str(), c.has_ui), ("hub", true));
        assert_eq!(c.unknown.keys().copied().collect::<Vec<_>>(), vec![30]);
    }

    #[test]
    fn a_map_without_its_required_keys_or_with_a_repeated_key_is_refused() {
        let mut e = Encoder::new(Vec::new());
        e.map(1).unwrap().u8(0).unwrap().str("tv").unwrap();
        let err = minicbor::decode::<DeviceCapabilities>(&e.into_writer()).unwrap_err();
        assert!(err.to_string().contains("device_type or has_ui"), "{err}");

        let mut e = Encoder::new(Vec::new());
        e.map(1).unwrap().u8(1).unwrap().bool(true).unwrap();
        assert!(minicbor::decode::<DeviceCapabilities>(&e.into_writer()).is_err());

        let mut e = Encoder::new(Vec::new());
        e.map(4).unwrap();
        e.u8(0).unwrap().str("tv").unwrap();
        e.u8(1).unwrap().bool(true).unwrap();
        e.u8(40).unwrap().u8(1).unwrap();
        e.u8(40).unwrap().u8(2).unwrap();
        let err = minicbor::decode::<DeviceCapabilities>(&e.into_writer()).unwrap_err();
        assert!(err.to_string().contains("repeats"), "{err}");

        let mut e = Encoder::new(Vec::new());
        e.map(2).unwrap();
        e.u8(0).unwrap().str("tv").unwrap();
        e.str("has_ui").unwrap().bool(true).unwrap();
        assert!(minicbor::decode::<DeviceCapabilities>(&e.into_writer()).is_err());

        // A map cut short.
        let bytes = minicbor::to_vec(full()).unwrap();
        assert!(minicbor::decode::<DeviceCapabilities>(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn the_bounds_are_checked() {
        assert_eq!(full().check(), Ok(()));
        let mut c = full();
        c.running = vec!["app".into(); caps_limits::MAX_LIST + 1];
        assert!(c.check().unwrap_err().contains("running"));
        let mut c = full();
        c.drivers = vec!["x".repeat(caps_limits::MAX_STRING + 1)];
        assert!(c.check().unwrap_err().contains("drivers"));
        let mut c = full();
        c.device_type = "x".repeat(caps_limits::MAX_STRING + 1);
        assert!(c.check().unwrap_err().contains("device_type"));
        let mut c = full();
        c.processor = Some("x".repeat(caps_limits::MAX_STRING + 1));
        assert!(c.check().unwrap_err().contains("processor"));
        let mut c = full();
        c.processor = Some("x".repeat(caps_limits::MAX_STRING));
        assert_eq!(c.check(), Ok(()), "at the bound is allowed");
        let mut c = full();
        for k in 0..=caps_limits::MAX_UNKNOWN as u64 {
            c.unknown.insert(100 + k, vec![0]);
        }
        assert!(c.check().unwrap_err().contains("unknown"));
        let mut c = full();
        for k in 0..caps_limits::MAX_UNKNOWN as u64 {
            let big = minicbor::to_vec(minicbor::bytes::ByteVec::from(vec![0u8; 400])).unwrap();
            c.unknown.insert(100 + k, big);
        }
        assert!(c.check().unwrap_err().contains("bytes encoded"));
    }

    #[test]
    fn a_dynamic_change_is_told_from_a_static_one() {
        let a = full();
        let mut b = full();
        b.battery_pct = Some(9);
        b.networks.push("lte".into());
        b.free_memory_mb = Some(10);
        b.battery_minutes = Some(10);
        b.running.clear();
        b.active_drivers.clear();
        assert!(!a.static_differs(&b));
        let mut c = full();
        c.software.push("game/1".into());
        assert!(a.static_differs(&c));
        let mut d = full();
        d.unknown.insert(40, vec![1]);
        assert!(
            a.static_differs(&d),
            "an unknown key may be static: reported at once"
        );
        assert_eq!(a.static_part().battery_pct, None);
        assert_eq!(a.static_part().screen, a.screen);
    }
}
