//! Every CPNS message as a typed struct, and [`Body`], the tagged union an envelope carries.
//!
//! A body travels as the CBOR array `[type, message]`, where `type` is the stable code listed in
//! [`Body`] and `message` is a map with stable integer keys (docs/wire.cddl). A type this version
//! does not know decodes to [`Body::Unknown`], so the receiver can answer with a clear error.

pub mod capabilities;
pub mod common;
pub mod connection;
pub mod content;
pub mod delivery;
pub mod discovery;
pub mod establishment;
pub mod group;
pub mod membership;
pub mod pan;
pub mod registration;
pub mod release;
pub mod secure;
pub mod service;
pub mod status;
pub mod usage;

use minicbor::decode::Error as DecodeError;
use minicbor::{Decode, Decoder, Encode, Encoder};

pub use capabilities::*;
pub use common::*;
pub use connection::*;
pub use content::*;
pub use delivery::*;
pub use discovery::*;
pub use establishment::*;
pub use group::*;
pub use membership::*;
pub use pan::*;
pub use registration::*;
pub use release::*;
pub use secure::*;
pub use service::*;
pub use status::*;
pub use usage::*;

wire_enum!(
    /// Stable error codes of an [`ErrorBody`] (docs/design.md §3).
    ErrorCode {
        /// The request is malformed or lacks a required field.
        BadRequest = 1,
        /// The sender is not authenticated, or its proof did not verify.
        Unauthenticated = 2,
        /// The sender may not do this.
        Forbidden = 3,
        /// A named PN, entity or flow does not exist.
        NotFound = 4,
        /// The request conflicts with the current state (e.g. an id owned by someone else).
        Conflict = 5,
        /// The envelope's protocol version is not supported.
        UnsupportedVersion = 6,
        /// The receiver is overloaded; retry later.
        Busy = 7,
        /// The receiver failed internally.
        Internal = 8,
        /// A peer did not answer in time.
        Timeout = 9,
        /// The message type is unknown to the receiver.
        UnsupportedMessage = 10,
        /// The message is valid but not expected in the current state of its flow.
        WrongState = 11,
        /// A PNE declined to take part.
        Declined = 12,
        /// The sender sent more than its bound allows; the reason says when to try again.
        RateLimited = 13,
    }
);

impl ErrorCode {
    /// The registry name of the code.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UnsupportedMessage => "unsupported_message",
            ErrorCode::WrongState => "wrong_state",
            ErrorCode::Declined => "declined",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}

/// An error response (docs/design.md §3).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ErrorBody {
    /// Stable code.
    #[n(0)]
    pub code: ErrorCode,
    /// Human-readable reason.
    #[n(1)]
    pub reason: String,
}

impl ErrorBody {
    /// An error with a code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl core::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.reason)
    }
}

macro_rules! bodies {
    ($($code:literal => $variant:ident),+ $(,)?) => {
        /// The message an envelope carries, with its stable type code.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Body {
            $(
                #[doc = concat!("[`", stringify!($variant), "`], type ", stringify!($code), ".")]
                $variant($variant),
            )+
            /// A message type this version does not know.
            Unknown(u32),
        }

        impl Body {
            /// The stable type code.
            pub fn type_code(&self) -> u32 {
                match self {
                    $(Body::$variant(_) => $code,)+
                    Body::Unknown(n) => *n,
                }
            }

            /// The message name, as the documents spell it.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Body::$variant(_) => stringify!($variant),)+
                    Body::Unknown(_) => "Unknown",
                }
            }

            /// Every known type code with its name, for docs and tests.
            pub const CATALOGUE: &'static [(u32, &'static str)] = &[$(($code, stringify!($variant)),)+];
        }

        $(
            impl From<$variant> for Body {
                fn from(m: $variant) -> Self {
                    Body::$variant(m)
                }
            }
        )+

        impl<C> Encode<C> for Body {
            fn encode<W: minicbor::encode::Write>(
                &self,
                e: &mut Encoder<W>,
                ctx: &mut C,
            ) -> Result<(), minicbor::encode::Error<W::Error>> {
                match self {
                    $(Body::$variant(m) => {
                        e.array(2)?.u32($code)?;
                        m.encode(e, ctx)
                    })+
                    Body::Unknown(n) => {
                        e.array(2)?.u32(*n)?.null()?;
                        Ok(())
                    }
                }
            }
        }

        impl<'b, C> Decode<'b, C> for Body {
            fn decode(d: &mut Decoder<'b>, ctx: &mut C) -> Result<Self, DecodeError> {
                let p = d.position();
                if d.array()? != Some(2) {
                    return Err(DecodeError::message("a body is a two-element array").at(p));
                }
                Ok(match d.u32()? {
                    $($code => Body::$variant($variant::decode(d, ctx)?),)+
                    other => {
                        d.skip()?;
                        Body::Unknown(other)
                    }
                })
            }
        }
    };
}

bodies! {
    1 => ErrorBody,
    // CPNS entity discovery, 000 §6.4.
    10 => EntityDiscoveryRequest,
    11 => EntityDiscoveryResponse,
    // PN GW connection set-up, 002 §B.1.1.2 steps 8-16.
    20 => ConnectionSetupRequest,
    21 => AuthChallenge,
    22 => AuthResponse,
    23 => ConnectionSetupConfirm,
    24 => DeviceCapabilitiesUpdate,
    25 => DeviceCapabilitiesConfirm,
    26 => StatusUpdateRequest,
    27 => StatusUpdateResponse,
    // PN establishment, 000 §6.6.1.
    30 => PnSetupRequest,
    31 => PnSetupResponse,
    32 => PnRegistrationRequest,
    33 => AuthenticationRequest,
    34 => AuthenticationResponse,
    35 => PnRegistrationResponse,
    36 => PnEstablishmentNotify,
    // PN GW authentication on the PAN with LocalEUKey.
    40 => PanAuthInit,
    41 => PanAuthChallenge,
    42 => PanAuthConfirm,
    // PNE registration and PN update, 003 §1.4, 000 §6.6.2.
    50 => PneRegistrationRequest,
    51 => PneRegistrationResponse,
    52 => PnUpdateRequest,
    53 => PnUpdateResponse,
    // The secure PNE<->server session set up by registration, 003 §1.4.1 step 4.
    60 => SecureRequest,
    61 => SecureResponse,
    62 => SecureNotice,
    // Invite, leave and expulsion, with group key epochs, 000 §6.6.2-6.6.3
    // (docs/pn-lifecycle.md).
    70 => PneInviteRequest,
    71 => PneInviteResponse,
    73 => PneLeaveRequest,
    74 => PneLeaveResponse,
    75 => PneExpelNotification,
    76 => PnUpdateNotification,
    // PN release, 000 §6.6.5 (docs/pn-lifecycle.md).
    77 => PnReleaseRequest,
    78 => PnReleaseResponse,
    79 => PnReleaseNotification,
    // A member's pull of its PN's group key, 002 §B.1.1.3 steps 22-23.
    80 => GroupKeyRequest,
    81 => GroupKeyResponse,
    // Connection set-up in a PN, 002 §B.1.1.3 steps 25-26.
    82 => MembershipConfirm,
    83 => MembershipConfirmed,
    // PN inventory queries, 004 §5.5.10.
    84 => InventoryQuery,
    85 => InventoryAnswer,
    // Multi-user PNs: the home PN GW confirms its user's PNE, 001 §5.2.1.1 steps 8-9.
    86 => PneConfirmRequest,
    87 => PneConfirmResponse,
    // PN GW election, 002 §B.1.1.1 step 7.
    88 => GatewayAnnouncement,
    // A membership that ended while its PNE was away (the answer to its PN Key Request).
    89 => MembershipEnded,
    // Device capabilities and status management, 004 §5.5.1, §5.5.3 (docs/device-status.md).
    90 => CapabilitiesQuery,
    91 => CapabilitiesAnswer,
    92 => StatusReport,
    93 => StatusAck,
    94 => Heartbeat,
    95 => StatusQuery,
    96 => StatusAnswer,
    97 => StatusSubscribe,
    98 => StatusSubscribed,
    99 => StatusUnsubscribe,
    100 => StatusNotification,
    // Group content, signed by its sender and sealed under the PN's group key
    // (docs/security.md §4.11).
    110 => GroupContent,
    111 => GroupContentSent,
    // Service publication and discovery at the server's directory, 004 §5.5.5
    // (docs/services.md).
    120 => ServicePublish,
    121 => ServicePublished,
    122 => ServiceUnpublish,
    123 => ServiceUnpublished,
    124 => ServiceDiscover,
    125 => ServiceFound,
    126 => ServiceRetrieve,
    127 => ServiceDescriptionAnswer,
    128 => ServiceWatch,
    129 => ServiceWatching,
    // Service watches: their ends, and the matches they bring (docs/services.md).
    130 => ServiceUnwatch,
    131 => ServiceUnwatched,
    132 => ServiceMatch,
    // Service groups, 004 §5.5.9, §5.5.7.2: the payloads of secure calls and notices
    // (docs/services.md, "Service groups").
    140 => GroupCreate,
    141 => GroupRef,
    142 => GroupInvite,
    143 => GroupAnswer,
    144 => GroupExpel,
    145 => GroupDone,
    146 => GroupKeyCopy,
    147 => GroupMembers,
    148 => GroupInvitation,
    149 => GroupEnded,
    150 => GroupContentBox,
    // A PN GW asking for its owner (004 §5.5.9).
    151 => GatewayGroupRequest,
    152 => GatewayGroupResponse,
    // Service and content delivery, 004 §5.5.8 (docs/services.md, "Delivery").
    160 => DeliveryOffer,
    161 => DeliveryGrant,
    162 => DeliveryInvite,
    163 => DeliveryRoute,
    164 => DeliveryChunk,
    165 => DeliveryAck,
    166 => DeliveryDone,
    167 => ContentsDeclare,
    168 => DeliveryControl,
    169 => DeliveryRequest,
    170 => DeliveryRequested,
    171 => DeliveryMessage,
    // What changed in a PN inventory, for the PNEs following it (004 §5.5.10).
    172 => InventoryChanged,
}
