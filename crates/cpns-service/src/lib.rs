//! cpns-service: the service description (004 §3.2 "Service Description", §5.5.5; docs/services.md)
//! as the one typed value every part reads: a small JSON document of media type
//! [`MEDIA_TYPE`], with its JSON Schema published in docs/service.schema.json.
//!
//! A description says what a service is (its id, unique per offerer, name, type, version,
//! keywords), who may see it ([`Scope`]), what a consuming device must be able to do
//! ([`Requirements`], a filter over device capabilities, 004 §5.5.8.2 "invoking services based
//! on device capability"), what the hosting device is (its capabilities, in the control API's
//! mapping), how content is delivered, and how long the entry lives without a refresh (its
//! lease). [`parse`] reads one and checks every bound, so a description that got in is whole:
//! nothing downstream checks again.
//!
//! ```
//! let doc = br#"{"service_id":"renderer","name":"Living room TV","type":"media.renderer",
//!   "version":"1.0","keywords":["Video","renderer"],"scope":{"kind":"user"},
//!   "requires":{"has_ui":true,"min_screen":{"width":1280,"height":720}},
//!   "delivery":["push"],"lease_s":3600}"#;
//! let d = cpns_service::parse(doc).unwrap();
//! assert_eq!(d.keywords, ["video", "renderer"]); // normalised: lowercase, trimmed
//! let tv = cpns_wire::DeviceCapabilities {
//!     has_ui: true,
//!     screen: Some(cpns_wire::Screen { width: 1920, height: 1080 }),
//!     ..Default::default()
//! };
//! assert!(d.requires.fits(&tv));
//! assert!(!d.requires.fits(&cpns_wire::DeviceCapabilities::default()));
//! ```

use std::collections::BTreeSet;

use cpns_wire::{DeviceCapabilities, PnId};
use serde::{Deserialize, Serialize};

/// The media type of a description.
pub const MEDIA_TYPE: &str = "application/vnd.cpns.service+json";
/// The largest description, in bytes of JSON.
pub const MAX_DESCRIPTION: usize = 16 * 1024;
/// At most this many keywords per description.
pub const MAX_KEYWORDS: usize = 32;
/// A keyword is 1 to this many characters once normalised.
pub const MAX_KEYWORD_LEN: usize = 32;
/// Shortest and longest lease, in seconds.
pub const LEASE_S: std::ops::RangeInclusive<u32> = 5..=86_400;

/// Why a description was refused: the words say what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptionError {
    /// Larger than [`MAX_DESCRIPTION`].
    #[error("the description is {0} bytes; at most {MAX_DESCRIPTION} are taken")]
    TooLarge(usize),
    /// Not JSON of the schema (the JSON parser's words: the key or value at fault).
    #[error("not a service description: {0}")]
    Malformed(String),
    /// A field is out of its bounds.
    #[error("{field}: {why}")]
    Bounds {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn bounds(field: &'static str, why: impl Into<String>) -> DescriptionError {
    DescriptionError::Bounds {
        field,
        why: why.into(),
    }
}

/// Who may see a service (docs/services.md, "Scope").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// The members of one PN.
    Pn {
        /// The PN, 32 hex digits.
        #[serde(with = "pn_hex")]
        pn_id: PnId,
    },
    /// Every device of the offerer's user.
    User,
    /// The members of a service group.
    Group {
        /// The group's id.
        group_id: String,
    },
    /// Every authenticated device of the operator.
    Public,
}

mod pn_hex {
    use cpns_wire::PnId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(pn: &PnId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&pn.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PnId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom("a PN id is 32 hex digits"))
    }
}

/// A width and a height, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// What a consuming device must be able to do; every field is optional, and a device fits when
/// it meets each one given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// The device types it runs on (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_types: Vec<String>,
    /// A user interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_ui: Option<bool>,
    /// A screen at least this large (both sides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_screen: Option<Size>,
    /// Installed software, each `name` or `name/version` matched by name (all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub software: Vec<String>,
    /// Networks attached (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// At least this much memory, MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory_mb: Option<u32>,
}

impl Requirements {
    /// Whether a device with `caps` can consume the service.
    pub fn fits(&self, caps: &DeviceCapabilities) -> bool {
        let name = |s: &str| s.split('/').next().unwrap_or(s).to_string();
        let installed: BTreeSet<String> = caps.software.iter().map(|s| name(s)).collect();
        (self.device_types.is_empty() || self.device_types.contains(&caps.device_type))
            && self.has_ui.is_none_or(|ui| ui == caps.has_ui)
            && self.min_screen.is_none_or(|min| {
                caps.screen
                    .is_some_and(|s| s.width >= min.width && s.height >= min.height)
            })
            && self.software.iter().all(|s| installed.contains(&name(s)))
            && (self.networks.is_empty() || self.networks.iter().any(|n| caps.networks.contains(n)))
            && self
                .min_memory_mb
                .is_none_or(|min| caps.memory_mb.is_some_and(|m| m >= min))
    }
}

/// How content of the service is delivered (004 §5.5.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The offerer pushes to consumers.
    Push,
    /// Consumers pull from the offerer.
    Pull,
}

/// A service description; see the crate documentation and docs/services.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDescription {
    /// Unique per offerer: 1 to 64 of `a-z 0-9 . _ -`.
    pub service_id: String,
    /// For people: 1 to 128 characters.
    pub name: String,
    /// Dotted lowercase, e.g. `media.renderer`: 1 to 64 of `a-z 0-9 . -`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// The service's own version: 1 to 32 characters.
    pub version: String,
    /// What the service is about, for discovery: 1 to [`MAX_KEYWORDS`], each normalised to
    /// lowercase without surrounding space, 1 to [`MAX_KEYWORD_LEN`] characters, no space
    /// inside; duplicates are taken once.
    pub keywords: Vec<String>,
    /// For people: at most 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Who may see it.
    pub scope: Scope,
    /// What a consuming device must be able to do.
    #[serde(default)]
    pub requires: Requirements,
    /// The hosting device's capabilities, in the control API's mapping (docs/control-api.md,
    /// "Capabilities").
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "hosting"
    )]
    pub hosting: Option<cpns_control::Capabilities>,
    /// How content is delivered: one or both.
    pub delivery: Vec<Delivery>,
    /// Seconds the entry lives without a refresh, within [`LEASE_S`].
    pub lease_s: u32,
}

/// The hosting capabilities, with the field named in any error of the mapping.
fn hosting<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<cpns_control::Capabilities>, D::Error> {
    let Some(v) = Option::<serde_json::Value>::deserialize(d)? else {
        return Ok(None);
    };
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("hosting: {e}")))
}

/// Reads a description and checks every bound; keywords come back normalised.
///
/// # Errors
/// [`DescriptionError`] saying what to fix.
pub fn parse(bytes: &[u8]) -> Result<ServiceDescription, DescriptionError> {
    if bytes.len() > MAX_DESCRIPTION {
        return Err(DescriptionError::TooLarge(bytes.len()));
    }
    let mut d: ServiceDescription =
        serde_json::from_slice(bytes).map_err(|e| DescriptionError::Malformed(e.to_string()))?;
    d.keywords = normalised_keywords(&d.keywords)?;
    d.check()?;
    Ok(d)
}

/// Reads what a consuming device must be able to do on its own (the `requires` of a
/// description; an offer by capability carries it, docs/services.md "Delivery by capability").
///
/// # Errors
/// [`DescriptionError::Malformed`] saying what is wrong.
pub fn parse_requirements(bytes: &[u8]) -> Result<Requirements, DescriptionError> {
    serde_json::from_slice(bytes).map_err(|e| DescriptionError::Malformed(e.to_string()))
}

/// Keywords as a directory keeps and searches them: lowercase, trimmed, each once, in order.
///
/// # Errors
/// [`DescriptionError::Bounds`] for an empty one, one too long or with a space inside, or
/// more than [`MAX_KEYWORDS`].
pub fn normalised_keywords(given: &[String]) -> Result<Vec<String>, DescriptionError> {
    let mut out: Vec<String> = Vec::new();
    for k in given {
        let k = k.trim().to_lowercase();
        if k.is_empty() || k.chars().count() > MAX_KEYWORD_LEN {
            return Err(bounds(
                "keywords",
                format!("each is 1 to {MAX_KEYWORD_LEN} characters"),
            ));
        }
        if k.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
        {
            return Err(bounds(
                "keywords",
                "a keyword is one word (no space, quote or control character)",
            ));
        }
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() || out.len() > MAX_KEYWORDS {
        return Err(bounds("keywords", format!("1 to {MAX_KEYWORDS} keywords")));
    }
    Ok(out)
}

fn id_like(s: &str, extra: &[char]) -> bool {
    s.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}

fn text(field: &'static str, s: &str, max: usize) -> Result<(), DescriptionError> {
    let n = s.chars().count();
    if n == 0 || n > max {
        return Err(bounds(field, format!("1 to {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(bounds(field, "no control characters"));
    }
    Ok(())
}

impl ServiceDescription {
    /// Checks every bound but the keywords' (see [`normalised_keywords`]).
    fn check(&self) -> Result<(), DescriptionError> {
        text("service_id", &self.service_id, 64)?;
        if !id_like(&self.service_id, &['.', '_', '-']) {
            return Err(bounds("service_id", "only a-z, 0-9, '.', '_' and '-'"));
        }
        text("name", &self.name, 128)?;
        text("type", &self.service_type, 64)?;
        if !id_like(&self.service_type, &['.', '-']) {
            return Err(bounds("type", "dotted lowercase: a-z, 0-9, '.' and '-'"));
        }
        text("version", &self.version, 32)?;
        if let Some(s) = &self.summary
            && s.chars().count() > 256
        {
            return Err(bounds("summary", "at most 256 characters"));
        }
        if let Scope::Group { group_id } = &self.scope {
            text("scope.group_id", group_id, 64)?;
        }
        let r = &self.requires;
        let short_list = |field, l: &[String]| -> Result<(), DescriptionError> {
            if l.len() > 16 {
                return Err(bounds(field, "at most 16"));
            }
            l.iter().try_for_each(|s| text(field, s, 64))
        };
        short_list("requires.device_types", &r.device_types)?;
        short_list("requires.software", &r.software)?;
        short_list("requires.networks", &r.networks)?;
        if let Some(h) = &self.hosting {
            h.to_device()
                .map_err(|e| bounds("hosting", format!("capabilities: {e}")))?;
        }
        let kinds: BTreeSet<Delivery> = self.delivery.iter().copied().collect();
        if kinds.is_empty() || kinds.len() != self.delivery.len() {
            return Err(bounds("delivery", "push, pull or both, each once"));
        }
        if !LEASE_S.contains(&self.lease_s) {
            return Err(bounds(
                "lease_s",
                format!("{} to {} seconds", LEASE_S.start(), LEASE_S.end()),
            ));
        }
        Ok(())
    }

    /// The description as the directory keeps it: its canonical JSON (keywords normalised).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
