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

/// Takes out of `map` every entry whose deadline has passed at `now`, in key order: the one
/// timeout sweep every machine runs over its waits.
pub(crate) fn take_expired<K: Ord + Clone, V>(
    map: &mut std::collections::BTreeMap<K, V>,
    now: std::time::Instant,
    deadline: impl Fn(&V) -> std::time::Instant,
) -> Vec<(K, V)> {
    let late: Vec<K> = map
        .iter()
        .filter(|(_, v)| deadline(v) <= now)
        .map(|(k, _)| k.clone())
        .collect();
    late.into_iter()
        .filter_map(|k| map.remove(&k).map(|v| (k, v)))
        .collect()
}

/// The digest of what a PNE said in its join information (docs/security.md §4.1, "What the PNE
/// said"): SHA-256 of its CBOR as this version encodes it, which both the PNE and the server
/// compute, so a change on the way fails the proof.
pub(crate) fn join_statement(join: &cpns_wire::JoinInfo) -> [u8; 32] {
    cpns_crypto::statement_digest(&minicbor::to_vec(join).unwrap_or_default())
}

/// The digest of what a PNE said in its PNE Registration Request, without `pn_id`, which the
/// PN GW fills in for a PNE that named none (docs/security.md §4.1).
pub(crate) fn registration_statement(req: &cpns_wire::PneRegistrationRequest) -> [u8; 32] {
    let said = cpns_wire::PneRegistrationRequest {
        pn_id: None,
        ..req.clone()
    };
    cpns_crypto::statement_digest(&minicbor::to_vec(&said).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::take_expired;

    #[test]
    fn only_what_is_due_is_taken_in_key_order() {
        // Only offsets from this base matter.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut m = BTreeMap::from([(3, t0 + s(1)), (1, t0 + s(2)), (2, t0 + s(5))]);
        assert!(take_expired(&mut m, t0, |d| *d).is_empty());
        assert_eq!(
            take_expired(&mut m, t0 + s(2), |d| *d),
            [(1, t0 + s(2)), (3, t0 + s(1))]
        );
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(take_expired(&mut m, t0 + s(5), |d| *d), [(2, t0 + s(5))]);
        assert!(m.is_empty());
    }
}
