//! The envelope every message travels in (docs/design.md §3): version, per-session message id, the id it
//! answers, its kind, sender and addressee, and the body.

use minicbor::decode::Error as DecodeError;
use minicbor::{Decode, Decoder, Encode, Encoder};

use crate::ids::EntityId;
use crate::msg::{Body, ErrorBody, common::wire_enum};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 2;

wire_enum!(
    /// Whether a message asks, answers or informs.
    MsgKind {
        /// Expects a response.
        Request = 1,
        /// Answers the request named by `in_reply_to`.
        Response = 2,
        /// Expects nothing back.
        Notify = 3,
    }
);

/// Who a message is from or for: the CPNS Server, or an entity by its id. A PN GW routes
/// PNE<->server traffic by this field and its routing table (000 §6.6.1.1 step 6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// The CPNS Server.
    Server,
    /// A PNE or PN GW.
    Entity(EntityId),
}

impl Address {
    /// The entity id, if the address is an entity.
    pub fn entity(&self) -> Option<&EntityId> {
        match self {
            Address::Server => None,
            Address::Entity(id) => Some(id),
        }
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Address::Server => f.write_str("server"),
            Address::Entity(id) => f.write_str(id.as_str()),
        }
    }
}

impl<C> Encode<C> for Address {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut Encoder<W>,
        ctx: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        match self {
            Address::Server => {
                e.u8(0)?;
                Ok(())
            }
            Address::Entity(id) => id.encode(e, ctx),
        }
    }
}

impl<'b, C> Decode<'b, C> for Address {
    fn decode(d: &mut Decoder<'b>, ctx: &mut C) -> Result<Self, DecodeError> {
        let p = d.position();
        use minicbor::data::Type;
        match d.datatype()? {
            // Any encoding of the integer 0 is the server; CBOR allows non-shortest ones.
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => match d.u64()? {
                0 => Ok(Address::Server),
                _ => Err(DecodeError::message("unknown address").at(p)),
            },
            _ => Ok(Address::Entity(EntityId::decode(d, ctx)?)),
        }
    }
}

/// A message with its routing and correlation header.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Envelope {
    /// Protocol version.
    #[n(0)]
    pub version: u16,
    /// Message id, unique per session and direction.
    #[n(1)]
    pub msg_id: u64,
    /// The message id this one answers.
    #[n(2)]
    pub in_reply_to: Option<u64>,
    /// Request, response or notification.
    #[n(3)]
    pub kind: MsgKind,
    /// Sender.
    #[n(4)]
    pub from: Address,
    /// Addressee.
    #[n(5)]
    pub to: Address,
    /// The message.
    #[n(6)]
    pub body: Body,
}

impl Envelope {
    /// About how many bytes the envelope encodes to: its bulk byte string, if it carries one
    /// (a delivery chunk, a sealed call or notice, group content), and room for the rest. An
    /// encoder reserves it once instead of growing its buffer copy by copy; a low guess costs
    /// only that growth.
    pub fn size_hint(&self) -> usize {
        const REST: usize = 512;
        REST + match &self.body {
            Body::DeliveryChunk(m) => {
                m.sealed.len() + m.digest.as_ref().map_or(0, |d| 512 + 40 * d.hashes.len())
            }
            Body::SecureRequest(m) => m.sealed.len(),
            Body::SecureResponse(m) => m.sealed.len(),
            Body::SecureNotice(m) => m.sealed.len(),
            Body::GroupContent(m) => m.sealed.len(),
            _ => 0,
        }
    }

    /// A request.
    pub fn request(msg_id: u64, from: Address, to: Address, body: impl Into<Body>) -> Self {
        Self::new(msg_id, None, MsgKind::Request, from, to, body.into())
    }

    /// A response to `in_reply_to`.
    pub fn response(
        msg_id: u64,
        in_reply_to: u64,
        from: Address,
        to: Address,
        body: impl Into<Body>,
    ) -> Self {
        Self::new(
            msg_id,
            Some(in_reply_to),
            MsgKind::Response,
            from,
            to,
            body.into(),
        )
    }

    /// A notification.
    pub fn notify(msg_id: u64, from: Address, to: Address, body: impl Into<Body>) -> Self {
        Self::new(msg_id, None, MsgKind::Notify, from, to, body.into())
    }

    fn new(
        msg_id: u64,
        in_reply_to: Option<u64>,
        kind: MsgKind,
        from: Address,
        to: Address,
        body: Body,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            msg_id,
            in_reply_to,
            kind,
            from,
            to,
            body,
        }
    }

    /// The error body, if this is an error response.
    pub fn error(&self) -> Option<&ErrorBody> {
        match &self.body {
            Body::ErrorBody(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_names_its_entity_and_prints_it() {
        let gw = EntityId::new("gw-1").unwrap();
        let to_gw = Address::Entity(gw.clone());
        assert_eq!(to_gw.entity(), Some(&gw));
        assert_eq!(Address::Server.entity(), None);
        assert_eq!(to_gw.to_string(), "gw-1");
        assert_eq!(Address::Server.to_string(), "server");
    }

    /// The hint covers what an envelope encodes to, a chunk's whole byte string included, so
    /// an encoder that reserves it never grows its buffer; and it is not far above.
    #[test]
    fn the_size_hint_covers_the_encoding() {
        let env = |body| Envelope {
            version: PROTOCOL_VERSION,
            msg_id: u64::MAX,
            in_reply_to: Some(u64::MAX),
            kind: MsgKind::Notify,
            from: Address::Entity(EntityId::new("pne-with-a-long-name-0123456789").unwrap()),
            to: Address::Entity(EntityId::new("gw-with-a-long-name-0123456789").unwrap()),
            body,
        };
        let chunk = env(Body::DeliveryChunk(crate::DeliveryChunk {
            session: crate::DeliveryId::from_bytes([9; 16]),
            offset: u64::MAX,
            sealed: vec![7; 64 * 1024 + 28],
            digest: None,
        }));
        // The last chunk, with the longest names a certificate can carry.
        let long = "x".repeat(crate::MAX_ID_LEN);
        let last = env(Body::DeliveryChunk(crate::DeliveryChunk {
            session: crate::DeliveryId::from_bytes([9; 16]),
            offset: u64::MAX,
            sealed: vec![7; 64 * 1024 + 28],
            digest: Some(Box::new(crate::DeliveryDigest {
                hashes: vec![crate::HashBytes([5; 32]); 8],
                signature: crate::SignatureBytes([0x22; 64]),
                certificate: crate::MemberCertificate {
                    pne_id: EntityId::new(&long).unwrap(),
                    owner: long.parse().unwrap(),
                    key: crate::PublicKeyBytes([0x11; 32]),
                    signature: crate::SignatureBytes([0x22; 64]),
                },
            })),
        }));
        let small = env(Body::DeliveryAck(crate::DeliveryAck {
            session: crate::DeliveryId::from_bytes([9; 16]),
            have: u64::MAX,
            resume: true,
        }));
        let big = || vec![7; 64 * 1024];
        let pn_id = crate::PnId::from_bytes([3; 16]);
        let bulky = [
            chunk,
            last,
            env(Body::SecureRequest(crate::SecureRequest {
                request_id: crate::RequestId(u64::MAX),
                pn_id,
                sealed: big(),
            })),
            env(Body::SecureResponse(crate::SecureResponse {
                request_id: crate::RequestId(u64::MAX),
                sealed: big(),
            })),
            env(Body::SecureNotice(crate::SecureNotice {
                pn_id,
                notice_id: u64::MAX,
                sealed: big(),
            })),
            env(Body::GroupContent(crate::GroupContent {
                pn_id,
                epoch: u64::MAX,
                sender: EntityId::new("phone-1").unwrap(),
                content_id: u64::MAX,
                sealed: big(),
                certificate: crate::MemberCertificate {
                    pne_id: EntityId::new("phone-1").unwrap(),
                    owner: "alice".parse().unwrap(),
                    key: crate::PublicKeyBytes([0x11; 32]),
                    signature: crate::SignatureBytes([0x22; 64]),
                },
            })),
        ];
        for e in bulky.iter().chain([&small]) {
            let mut out = Vec::new();
            crate::codec::encode_envelope(e, &mut out);
            let name = e.body.name();
            assert!(
                out.len() <= e.size_hint(),
                "{name}: {} > {}",
                out.len(),
                e.size_hint()
            );
            assert!(e.size_hint() - out.len() < 512, "{name}: {}", e.size_hint());
        }
        for e in &bulky {
            assert!(e.size_hint() > 64 * 1024, "{}", e.body.name());
        }
    }
}
