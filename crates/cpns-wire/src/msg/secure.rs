//! The secure PNE<->server session that PNE registration sets up (003 §1.4.1 step 4: "PNE and
//! CPNS Server share the security related information ... for the secure session"). A PNE's
//! request travels through its PN GW sealed end to end under SK_PNE's direction keys; the PN GW
//! relays it by the envelope's addresses and can neither read nor alter it
//! (docs/security.md §4.8).

use minicbor::{Decode, Encode};

use crate::ids::{PnId, RequestId};

/// Secure Request, PNE to CPNS Server through the PN GW.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SecureRequest {
    /// Chosen by the PNE; bound into the seal.
    #[n(0)]
    pub request_id: RequestId,
    /// The PN the PNE registered in: its member record holds SK_PNE.
    #[n(1)]
    pub pn_id: PnId,
    /// A [`SecureCall`] sealed under K_dir(PNE → server).
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
}

/// Secure Response, CPNS Server to PNE through the PN GW.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SecureResponse {
    /// The request answered; bound into the seal.
    #[n(0)]
    pub request_id: RequestId,
    /// The answer's [`SecureCall`] sealed under K_dir(server → PNE).
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
}

/// Secure Notice, CPNS Server to PNE through the PN GW, on the server's own initiative (a
/// service match): a [`SecureCall`] sealed under the notice key of SK_PNE
/// (docs/security.md §4.8, "Notices"). Sent as a notify.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SecureNotice {
    /// The PN whose SK_PNE seals it.
    #[n(0)]
    pub pn_id: PnId,
    /// Its number, greater than the last notice's to this PNE; bound into the seal.
    #[n(1)]
    pub notice_id: u64,
    /// The [`SecureCall`], sealed.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub sealed: Vec<u8>,
}

/// What a [`SecureRequest`] or [`SecureResponse`] carries under its seal: a call of a server
/// service, or its answer. Never sent in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SecureCall {
    /// The service, e.g. [`ECHO_SERVICE`].
    #[n(0)]
    pub service: String,
    /// The service's own payload.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub payload: Vec<u8>,
}

/// The service every server offers on the secure session: the answer carries the request's
/// payload back, so a PNE can check its session end to end.
pub const ECHO_SERVICE: &str = "cpns.echo";
