//! Values shared by several message families: nonces and hashes as they travel, device
//! capabilities, content descriptions, the PN inventory, wire enums that survive unknown values.

use minicbor::decode::Error as DecodeError;
use minicbor::{Decode, Decoder, Encode, Encoder};

pub use super::capabilities::DeviceCapabilities;
use crate::ids::{EntityId, PnId};

macro_rules! byte_array {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                f.write_str(")")
            }
        }

        impl<C> Encode<C> for $name {
            fn encode<W: minicbor::encode::Write>(
                &self,
                e: &mut Encoder<W>,
                _: &mut C,
            ) -> Result<(), minicbor::encode::Error<W::Error>> {
                e.bytes(&self.0)?;
                Ok(())
            }
        }

        impl<'b, C> Decode<'b, C> for $name {
            fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, DecodeError> {
                let p = d.position();
                let b = d.bytes()?;
                let arr = b.try_into().map_err(|_| {
                    DecodeError::message(concat!(stringify!($name), " has the wrong length")).at(p)
                })?;
                Ok(Self(arr))
            }
        }
    };
}

byte_array!(
    /// A 128-bit random nonce on the wire (rand_PNE, rand_server, rand_GW).
    RandBytes,
    16
);
byte_array!(
    /// A 256-bit authentication value on the wire (hash_PNE, hash_server_PNE, proofs).
    HashBytes,
    32
);
byte_array!(
    /// An Ed25519 public key on the wire (a member's signing key, docs/security.md §4.11).
    PublicKeyBytes,
    32
);
byte_array!(
    /// An Ed25519 signature on the wire (a member certificate, docs/security.md §4.11).
    SignatureBytes,
    64
);

/// Declares a C-like wire enum whose unknown values survive decoding as `Unknown(n)`.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $n:expr),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value this version does not know.
            Unknown(u32),
        }

        impl $name {
            /// The stable wire value.
            pub fn code(self) -> u32 {
                match self {
                    $($name::$variant => $n,)+
                    $name::Unknown(n) => n,
                }
            }

            /// The value for a wire code.
            pub fn from_code(n: u32) -> Self {
                match n {
                    $($n => $name::$variant,)+
                    other => $name::Unknown(other),
                }
            }
        }

        impl<C> ::minicbor::Encode<C> for $name {
            fn encode<W: minicbor::encode::Write>(
                &self,
                e: &mut ::minicbor::Encoder<W>,
                _: &mut C,
            ) -> Result<(), minicbor::encode::Error<W::Error>> {
                e.u32(self.code())?;
                Ok(())
            }
        }

        impl<'b, C> ::minicbor::Decode<'b, C> for $name {
            fn decode(d: &mut ::minicbor::Decoder<'b>, _: &mut C) -> Result<Self, ::minicbor::decode::Error> {
                Ok(Self::from_code(d.u32()?))
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum!(
    /// The CPNS mode an entity runs in (000 §6.4 step 2).
    Mode {
        /// A Personal Network Element.
        Pne = 1,
        /// A PN Gateway.
        Gateway = 2,
    }
);

wire_enum!(
    /// Online status of an entity (004 §5.5.3.2).
    Status {
        /// Reachable and serving.
        Online = 1,
        /// Not reachable.
        Offline = 2,
        /// Reachable but not taking work.
        Busy = 3,
        /// A status of the user's own naming, with its label (docs/device-status.md).
        Custom = 4,
    }
);

/// A content item a device holds (000 §6.6.1.1 step 1: "Content(s) information").
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ContentItem {
    /// Name of the content.
    #[n(0)]
    pub name: String,
    /// Media type, e.g. `audio/mpeg`.
    #[n(1)]
    pub media_type: String,
}

/// One PNE in a PN inventory as sent to the PN's members (000 §6.6.1.1 steps 14-15).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct InventoryMember {
    /// PNE ID.
    #[n(0)]
    pub pne_id: EntityId,
    /// Its device capabilities.
    #[n(1)]
    pub capabilities: Option<DeviceCapabilities>,
    /// Content it holds.
    #[n(2)]
    #[cbor(default)]
    pub contents: Vec<ContentItem>,
}

/// The PN Inventory of one PN (004 §5.5.10.2): its PN GW and member PNEs.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PnInventory {
    /// The PN.
    #[n(0)]
    pub pn_id: PnId,
    /// Its PN GW.
    #[n(1)]
    pub gateway: EntityId,
    /// Its members.
    #[n(2)]
    #[cbor(default)]
    pub members: Vec<InventoryMember>,
}
