//! The typed control API of a running CPNS entity: one JSON object per line on the Unix socket
//! beside its store (`cpns_node::control` serves it), for the `cpns` command line and for the
//! applications on the device: on a PNE this socket is CPNS-5, its local API (004 §5.3.2.5);
//! on the server it is the operator-local side of CPNS-4 (004 §5.3.2.4).
//!
//! A crate of its own, and small (serde and `cpns-wire` only): the daemons (`cpns-node`) and
//! every client (the `cpns` CLI, a Rust application on the device) share these types without
//! depending on each other, so a verb is named and shaped in one place; a module of
//! `cpns-node` would have made every client link the runtimes, tokio and the store. (Named
//! `control` after the sockets it types: `cpns-api` is docs/design.md's name (§2) for the
//! network binding of CPNS-4 to come.) The socket's I/O and the handlers that answer each role's verbs are the
//! daemons' (`cpns_node::control`); the JSON form of every verb, with an example, is
//! docs/control-api.md.
//!
//! Each line carries the version of the API, `"v": 1`. A request is a [`Request`] tagged by its
//! `verb`; the answer is `"ok": true` and a [`Response`] tagged by the same verb, or `"ok":
//! false` and an [`ApiError`] (a code of the wire's registry and a reason). A streaming verb's
//! answer is followed by [`Event`] lines, tagged by `event`, until either side closes.

mod caps;
mod error;
mod event;
mod request;
mod response;
mod status;
mod text;

pub use caps::{Capabilities, KEYS as CAPABILITY_KEYS, ScreenSize};
pub use error::{ApiError, CODES, code_named};
pub use event::{Event, Gone, OfferedItem, Outcome};
pub use request::{DeliverItem, Request, Served, SpecificFile, Targets, VERB_TABLE, VERBS};
pub use response::{Content, GroupMember, HeldGroup, Holding, Offered, Pn, Response, ServiceEntry};
pub use status::{
    Charge, Entry, OwnStatus, Policy, PolicyAttribute, Preference, ServicePreference, UsageRow,
    status_name, status_named,
};

use cpns_wire::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The version of the API this crate speaks.
pub const VERSION: u32 = 1;

/// The roles that serve the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A PNE (`cpns pne --stay`): CPNS-5, for the applications on its device.
    Pne,
    /// A PN GW (`cpns gateway`): its owner's.
    Gateway,
    /// The CPNS Server (`cpns server`): CPNS-4 for local applications and the operator.
    Server,
}

impl Role {
    /// The verbs this role serves, in the order of [`VERBS`].
    pub fn verbs(self) -> impl Iterator<Item = &'static str> {
        request::VERB_TABLE
            .iter()
            .filter(move |(_, served)| match self {
                Role::Pne => served.pne,
                Role::Gateway => served.gateway,
                Role::Server => served.server,
            })
            .map(|(verb, _)| *verb)
    }

    /// Whether this role serves `request`.
    pub fn serves(self, request: &Request) -> bool {
        self.verbs().any(|v| v == request.verb())
    }

    /// Its name for people: `PNE`, `PN GW`, `CPNS Server`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Pne => "PNE",
            Role::Gateway => "PN GW",
            Role::Server => "CPNS Server",
        }
    }

    /// The refusal of a request this role does not serve: `unsupported_message`.
    pub fn refusal(self, request: &Request) -> ApiError {
        ApiError::new(
            ErrorCode::UnsupportedMessage,
            format!(
                "`{}` is not a verb of a {}; it serves: {}",
                request.verb(),
                self.name(),
                self.verbs().collect::<Vec<_>>().join(", ")
            ),
        )
    }
}

/// A line's JSON object, with its version checked and taken out.
fn versioned(line: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| ApiError::bad_request(format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(ApiError::bad_request(
            "a line is a JSON object with \"v\" (the API version)",
        ));
    };
    match object.remove("v") {
        Some(v) if v == VERSION => Ok(object),
        Some(v) => Err(ApiError::new(
            ErrorCode::UnsupportedVersion,
            format!("version {v} of the control API is not spoken here; \"v\": {VERSION} is"),
        )),
        None => Err(ApiError::bad_request(format!(
            "a line names the version of the control API it speaks: \"v\": {VERSION}"
        ))),
    }
}

/// Reads a request line: `bad_request` if it is not one, `unsupported_version` for another
/// version, `unsupported_message` for a verb this version does not know.
pub fn decode_request(line: &[u8]) -> Result<Request, ApiError> {
    let object = versioned(line)?;
    let verb = match object.get("verb") {
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(ApiError::bad_request("\"verb\" is a string")),
        None => return Err(ApiError::bad_request("a request needs a \"verb\"")),
    };
    if !VERBS.contains(&verb.as_str()) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMessage,
            format!("unknown verb `{verb}`"),
        ));
    }
    serde_json::from_value(Value::Object(object))
        .map_err(|e| ApiError::bad_request(format!("{verb}: {e}")))
}

/// `{"v":1,` and `json` without its opening brace: the version first, then the fields in
/// the order of their type.
fn with_version(prefix: &str, json: String) -> String {
    match json.strip_prefix('{') {
        Some("}") => format!("{{\"v\":{VERSION}{}}}", prefix.trim_end_matches(',')),
        Some(rest) => format!("{{\"v\":{VERSION}{prefix}{rest}"),
        None => json,
    }
}

/// A request line, without its newline.
pub fn encode_request(r: &Request) -> String {
    with_version(",", to_json(r))
}

/// An answer line, without its newline.
pub fn encode_answer(a: &Result<Response, ApiError>) -> String {
    match a {
        Ok(r) => with_version(",\"ok\":true,", to_json(r)),
        Err(e) => format!("{{\"v\":{VERSION},\"ok\":false,\"error\":{}}}", to_json(e)),
    }
}

/// An event line, without its newline.
pub fn encode_event(e: &Event) -> String {
    with_version(",", to_json(e))
}

fn to_json<T: Serialize>(v: &T) -> String {
    // The types here are plain data: maps with string keys, no failing serializer.
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"unencodable\":\"{e}\"}}"))
}

/// A line a client reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// The answer to its request.
    Answer(Result<Response, ApiError>),
    /// An event of a stream.
    Event(Event),
}

/// Reads a line an entity wrote; `Err` (in words) if it is not one of this version.
pub fn decode_line(line: &[u8]) -> Result<Line, String> {
    let mut object = versioned(line).map_err(|e| e.reason)?;
    if object.contains_key("event") {
        return serde_json::from_value(Value::Object(object))
            .map(Line::Event)
            .map_err(|e| format!("an event: {e}"));
    }
    match object.remove("ok") {
        Some(Value::Bool(true)) => serde_json::from_value(Value::Object(object))
            .map(|r| Line::Answer(Ok(r)))
            .map_err(|e| format!("an answer: {e}")),
        Some(Value::Bool(false)) => {
            let error = object.remove("error").unwrap_or(Value::Null);
            if !object.is_empty() {
                return Err("an error answer has \"ok\" and \"error\" only".into());
            }
            serde_json::from_value(error)
                .map(|e| Line::Answer(Err(e)))
                .map_err(|e| format!("an error answer: {e}"))
        }
        _ => Err("a line is an answer (\"ok\") or an event (\"event\")".into()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod doc_tests;
