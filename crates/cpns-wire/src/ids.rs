//! Identifiers named by the CPNS documents: entity ids (PNE ID, PN GW ID), PN IDs, CPNS IDs,
//! user ids and request ids.
//!
//! Entity ids are chosen at enrollment ("PNE ID which is embedded in factory or the user creates",
//! 000 §6.6.1.2 step 5); PN IDs are created by the PN GW when it builds a PN (000 §6.6.1.1
//! step 2); CPNS IDs are allocated by the CPNS Server at PNE registration (003 §1.4.1 step 3).

use core::fmt;
use core::str::FromStr;

use minicbor::decode::Error as DecodeError;
use minicbor::{Decode, Decoder, Encode, Encoder};

/// Longest entity, user or CPNS id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("identifier is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("identifier is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// The id holds a character outside `A-Z a-z 0-9 . _ : @ -`.
    #[error("identifier holds the character {0:?}; allowed are A-Z a-z 0-9 . _ : @ -")]
    BadChar(char),
    /// A PN id is not 32 hexadecimal digits.
    #[error("a PN id is 32 hexadecimal digits")]
    BadPnId,
    /// Not 32 hexadecimal digits.
    #[error("a group id is 32 hexadecimal digits")]
    BadGroupId,
    /// Not 32 hexadecimal digits.
    #[error("a delivery id is 32 hexadecimal digits")]
    BadDeliveryId,
}

fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id(&s)?;
                Ok(Self(s))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as the bytes bound into keys and transcripts (docs/security.md).
            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<C> Encode<C> for $name {
            fn encode<W: minicbor::encode::Write>(
                &self,
                e: &mut Encoder<W>,
                _: &mut C,
            ) -> Result<(), minicbor::encode::Error<W::Error>> {
                e.str(&self.0)?;
                Ok(())
            }
        }

        impl<'b, C> Decode<'b, C> for $name {
            fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, DecodeError> {
                let p = d.position();
                let s = d.str()?;
                check_id(s).map_err(|e| DecodeError::message(e.to_string()).at(p))?;
                Ok(Self(s.to_owned()))
            }
        }
    };
}

string_id!(
    /// A CPNS entity id: the PNE ID or PN GW ID of one enrolled device role.
    EntityId
);
string_id!(
    /// A CPNS user (subscriber) id; entities and PNs are owned by a user.
    UserId
);
string_id!(
    /// A CPNS ID allocated by the server to a registered PNE (003 §1.4.1 step 3).
    CpnsId
);

/// Declares a 128-bit id written as 32 lowercase hexadecimal digits, a CBOR byte string of 16 on
/// the wire.
macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $err:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Wraps raw id bytes.
            pub const fn from_bytes(b: [u8; 16]) -> Self {
                Self(b)
            }

            /// The raw id bytes, as bound into keys and transcripts.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let s = s.as_bytes();
                if s.len() != 32 {
                    return Err(IdError::$err);
                }
                let mut out = [0u8; 16];
                for (i, pair) in s.chunks_exact(2).enumerate() {
                    let hi = (pair[0] as char).to_digit(16).ok_or(IdError::$err)?;
                    let lo = (pair[1] as char).to_digit(16).ok_or(IdError::$err)?;
                    out[i] = (hi * 16 + lo) as u8;
                }
                Ok(Self(out))
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
                let arr: [u8; 16] = b
                    .try_into()
                    .map_err(|_| DecodeError::message(concat!("a ", $what, " is 16 bytes")).at(p))?;
                Ok(Self(arr))
            }
        }
    };
}

hex_id!(
    /// A Personal Network id: 128 random bits chosen by the PN GW (000 §6.6.1.1 step 2), written
    /// as 32 lowercase hexadecimal digits.
    PnId,
    BadPnId,
    "PN id"
);

hex_id!(
    /// A service group id (004 §5.5.9): 128 random bits chosen by the CPNS Server, written as 32
    /// lowercase hexadecimal digits.
    GroupId,
    BadGroupId,
    "group id"
);

hex_id!(
    /// A delivery session id (004 §5.5.8): 128 random bits chosen by the CPNS Server, written as
    /// 32 lowercase hexadecimal digits.
    DeliveryId,
    BadDeliveryId,
    "delivery id"
);

/// A request id chosen by the sender of a request (docs/design.md §3); a mutating request is idempotent
/// on (sender, request id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
#[cbor(transparent)]
pub struct RequestId(#[n(0)] pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_are_checked() {
        assert!(EntityId::new("alice-phone").is_ok());
        assert!(EntityId::new("pne:alice.watch@home").is_ok());
        assert_eq!(EntityId::new(""), Err(IdError::Empty));
        assert_eq!(EntityId::new("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(EntityId::new("x".repeat(129)), Err(IdError::TooLong));
    }

    #[test]
    fn pn_id_text_round_trips() {
        let id = PnId::from_bytes([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<PnId>(), Ok(id));
        assert_eq!("abc".parse::<PnId>(), Err(IdError::BadPnId));
        assert_eq!("zz".repeat(16).parse::<PnId>(), Err(IdError::BadPnId));
    }

    #[test]
    fn ids_print_as_the_logs_show_them() {
        let id = PnId::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff]);
        assert_eq!(format!("{id:?}"), "PnId(000102030405060708090a0b0c0d0eff)");
        assert_eq!(RequestId(42).to_string(), "42");
        assert_eq!(
            format!("{:?}", EntityId::new("gw-1").unwrap()),
            "EntityId(\"gw-1\")"
        );
    }

    #[test]
    fn decoding_rejects_bad_ids() {
        let mut buf = Vec::new();
        minicbor::encode("bad id", &mut buf).unwrap();
        assert!(minicbor::decode::<EntityId>(&buf).is_err());
        let mut buf = Vec::new();
        minicbor::encode(minicbor::bytes::ByteArray::from([1u8; 15]), &mut buf).unwrap();
        assert!(minicbor::decode::<PnId>(&buf).is_err());
    }
}
