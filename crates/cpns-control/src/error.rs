//! An error answer: a typed [`ErrorCode`] of the wire's registry (docs/design.md §3), written by its
//! name (`"code":"forbidden"`), and a reason in words. A client decides on the code; the reason
//! is for people and may change between versions.

use cpns_wire::{ErrorBody, ErrorCode};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an entity refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// The code: `bad_request`, `not_found`, `forbidden`, … (docs/control-api.md, "Errors").
    #[serde(with = "code")]
    pub code: ErrorCode,
    /// Why, in words.
    pub reason: String,
}

impl ApiError {
    /// An error with this code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// A malformed request: `bad_request`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, reason)
    }

    /// A failure of the entity itself: `internal`.
    pub fn internal(reason: impl core::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, reason.to_string())
    }
}

impl core::fmt::Display for ApiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.reason)
    }
}

impl std::error::Error for ApiError {}

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        Self::new(e.code, e.reason)
    }
}

/// Every code of the registry, by name (`ErrorCode::name`).
pub const CODES: [ErrorCode; 13] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::UnsupportedVersion,
    ErrorCode::Busy,
    ErrorCode::Internal,
    ErrorCode::Timeout,
    ErrorCode::UnsupportedMessage,
    ErrorCode::WrongState,
    ErrorCode::Declined,
    ErrorCode::RateLimited,
];

/// The code named `name`, if the registry has one.
pub fn code_named(name: &str) -> Option<ErrorCode> {
    CODES.into_iter().find(|c| c.name() == name)
}

/// An [`ErrorCode`] as its registry name.
pub(crate) mod code {
    use super::*;

    /// Writes the name.
    pub(crate) fn serialize<S: Serializer>(c: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.name())
    }

    /// Reads a name of the registry.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let name = String::deserialize(d)?;
        code_named(&name).ok_or_else(|| D::Error::custom(format!("unknown error code `{name}`")))
    }
}
