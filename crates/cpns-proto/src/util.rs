//! Small conversions between wire values and crypto values, and message-id allocation.

use cpns_crypto::{AuthHash, Rand};
use cpns_wire::{HashBytes, PnInventory, RandBytes};

/// The canonical bytes of a PN inventory whose SHA-256 hash_server_PNE covers
/// (docs/security.md §4.1, docs/wire.md "Canonical PN inventory"): its cpns-wire CBOR encoding.
/// The server hashes the inventory it sends; the PNE re-encodes the one it received and is about
/// to store, so any change on the way makes the two differ.
pub(crate) fn inventory_cbor(inventory: &PnInventory) -> Vec<u8> {
    minicbor::to_vec(inventory).unwrap_or_default()
}

pub(crate) fn rand_wire(r: &Rand) -> RandBytes {
    RandBytes(r.0)
}

pub(crate) fn rand_of(r: &RandBytes) -> Rand {
    Rand(r.0)
}

pub(crate) fn hash_wire(h: &AuthHash) -> HashBytes {
    HashBytes(h.0)
}

pub(crate) fn hash_of(h: &HashBytes) -> AuthHash {
    AuthHash(h.0)
}

/// Allocates message ids, unique per machine and so per session and direction.
#[derive(Debug, Default)]
pub(crate) struct MsgIds(u64);

impl MsgIds {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// Allocates store tokens.
#[derive(Debug, Default)]
pub(crate) struct Tokens(u64);

impl Tokens {
    pub(crate) fn next(&mut self) -> crate::Token {
        self.0 += 1;
        crate::Token(self.0)
    }
}
