//! Service publication and discovery through the CPNS Server's directory (004 §5.5.5,
//! appendix E.1-E.2; docs/services.md). A PNE's request reaches the server relayed by its PN GW
//! from a link that proved the PNE, so the server knows who publishes and who asks; a
//! description travels as the JSON document of `cpns_service` (media type
//! `application/vnd.cpns.service+json`), the directory's answers as CBOR.

use minicbor::{Decode, Encode};

/// The secure call that publishes: payload [`ServicePublish`], answer [`ServicePublished`].
/// Each directory request travels as a secure call, sealed end to end under the PNE's SK_PNE
/// (docs/security.md §4.8): the PN GW relays what it cannot read, and the server knows the
/// asker by the key the call opened under.
pub const SERVICE_PUBLISH: &str = "cpns.service.publish";
/// The secure call that unpublishes: payload [`ServiceUnpublish`], answer
/// [`ServiceUnpublished`].
pub const SERVICE_UNPUBLISH: &str = "cpns.service.unpublish";
/// The secure call that discovers: payload [`ServiceDiscover`], answer [`ServiceFound`].
pub const SERVICE_DISCOVER: &str = "cpns.service.discover";
/// The secure call that retrieves: payload [`ServiceRetrieve`], answer
/// [`ServiceDescriptionAnswer`].
pub const SERVICE_RETRIEVE: &str = "cpns.service.retrieve";
/// The secure call that watches: payload [`ServiceWatch`], answer [`ServiceWatching`].
pub const SERVICE_WATCH: &str = "cpns.service.watch";
/// The secure call that ends a watch: payload [`ServiceUnwatch`], answer
/// [`ServiceUnwatched`].
pub const SERVICE_UNWATCH: &str = "cpns.service.unwatch";
/// The secure notice that tells a watcher of a match: payload [`ServiceMatch`].
pub const SERVICE_MATCH: &str = "cpns.service.match";

use crate::ids::{EntityId, UserId};

/// Service Publish: a PNE publishes (or updates, by its `service_id`) a description, as itself
/// (the PNE whose SK_PNE the call opened under). A retry of the call (its secure request id)
/// gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServicePublish {
    /// The description, JSON (`cpns_service::parse`).
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub description: Vec<u8>,
}

/// Service Published: the entry is in the directory.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServicePublished {
    /// Its directory id.
    #[n(0)]
    pub dir_id: u64,
    /// When its lease ends unless published again (Unix milliseconds).
    #[n(1)]
    pub expires_at_ms: u64,
}

/// Service Unpublish: a PNE takes one of its own services out of the directory.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceUnpublish {
    /// Its id for the service.
    #[n(0)]
    pub service_id: String,
}

/// Service Unpublished.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceUnpublished {
    /// Whether it was in the directory.
    #[n(0)]
    pub removed: bool,
}

/// Service Discover: the entries the asking PNE may see that match.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceDiscover {
    /// Keywords; none: any entry.
    #[n(0)]
    #[cbor(default)]
    pub keywords: Vec<String>,
    /// Every keyword must match (else any one).
    #[n(1)]
    pub all: bool,
    /// Only this type.
    #[n(2)]
    pub service_type: Option<String>,
    /// Only services the asking device can consume (its capabilities of record).
    #[n(3)]
    #[cbor(default)]
    pub fits_me: bool,
    /// Entries after this directory id (paging; 0: from the start).
    #[n(4)]
    #[cbor(default)]
    pub after: u64,
}

/// One entry as discovery lists it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceSummary {
    /// Its directory id.
    #[n(0)]
    pub dir_id: u64,
    /// Who offers it.
    #[n(1)]
    pub offerer: EntityId,
    /// The offerer's user.
    #[n(2)]
    pub owner: UserId,
    /// The offerer's id for it.
    #[n(3)]
    pub service_id: String,
    /// Its type.
    #[n(4)]
    pub service_type: String,
    /// Its name.
    #[n(5)]
    pub name: String,
    /// Its keywords.
    #[n(6)]
    #[cbor(default)]
    pub keywords: Vec<String>,
}

/// Service Found: the answer to a discovery, by directory id.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceFound {
    /// The entries.
    #[n(0)]
    #[cbor(default)]
    pub entries: Vec<ServiceSummary>,
    /// Whether more follow: ask again with `after` the last directory id.
    #[n(1)]
    #[cbor(default)]
    pub more: bool,
}

/// Service Retrieve: one whole description.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceRetrieve {
    /// Its directory id.
    #[n(0)]
    pub dir_id: u64,
}

/// Service Description: the answer to a retrieval.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceDescriptionAnswer {
    /// Its directory id.
    #[n(0)]
    pub dir_id: u64,
    /// Who offers it.
    #[n(1)]
    pub offerer: EntityId,
    /// The description, JSON.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub description: Vec<u8>,
    /// When its lease ends (Unix milliseconds).
    #[n(3)]
    pub expires_at_ms: u64,
}

/// Service Watch: tell this PNE of every entry published from now on that it may see and that
/// matches (004 §5.5.5 "advertise"), by [`ServiceMatch`] notices, until it unwatches or leaves
/// the PN its call was sealed in.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceWatch {
    /// Keywords; none: any entry.
    #[n(0)]
    #[cbor(default)]
    pub keywords: Vec<String>,
    /// Every keyword must match (else any one).
    #[n(1)]
    pub all: bool,
    /// Only this type.
    #[n(2)]
    pub service_type: Option<String>,
}

/// Service Watching: the watch is kept.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceWatching {
    /// Its id, for the matches it brings and to unwatch.
    #[n(0)]
    pub watch_id: u64,
}

/// Service Unwatch: end one of this PNE's watches.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceUnwatch {
    /// The watch.
    #[n(0)]
    pub watch_id: u64,
}

/// Service Unwatched.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceUnwatched {
    /// Whether it was kept.
    #[n(0)]
    pub removed: bool,
}

/// Service Match: an entry published (or updated) that a watch of this PNE matches; the payload
/// of a [`crate::SecureNotice`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ServiceMatch {
    /// The watch.
    #[n(0)]
    pub watch_id: u64,
    /// The entry.
    #[n(1)]
    pub entry: ServiceSummary,
}
