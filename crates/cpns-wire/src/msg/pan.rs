//! PN GW authentication on an insecure PAN with LocalEUKey (the "PN GW Authentication" of
//! 000 §6.6.1.1 steps 6-7): three messages, then every PAN frame is sealed (docs/security.md).

use minicbor::{Decode, Encode};

use super::common::{HashBytes, RandBytes};
use crate::ids::{EntityId, PnId};

/// First message, PNE to PN GW.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PanAuthInit {
    /// The PN whose LocalEUKey is used.
    #[n(0)]
    pub pn_id: PnId,
    /// The PNE.
    #[n(1)]
    pub pne_id: EntityId,
    /// rand_PNE of this exchange.
    #[n(2)]
    pub rand_pne: RandBytes,
    /// The AEAD suites the PNE takes for the link's frames, as their codes, most wanted first
    /// (docs/security.md §4.13; 1 ChaCha20-Poly1305, 2 AES-256-GCM). Empty: ChaCha20-Poly1305.
    #[n(3)]
    #[cbor(default, with = "minicbor::bytes")]
    pub suites: Vec<u8>,
}

/// The most suites an offer names.
pub const MAX_SUITES: usize = 8;

/// Second message, PN GW to PNE: its nonce and its proof of the LocalEUKey.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PanAuthChallenge {
    /// rand_GW of this exchange.
    #[n(0)]
    pub rand_gw: RandBytes,
    /// The PN GW's proof.
    #[n(1)]
    pub proof: HashBytes,
    /// The suite the PN GW chose from the PNE's offer (absent: ChaCha20-Poly1305); its proof
    /// covers offer and choice.
    #[n(2)]
    #[cbor(default)]
    pub suite: Option<u8>,
}

/// Third message, PNE to PN GW: the PNE's proof. Every later frame in both directions is sealed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PanAuthConfirm {
    /// The PNE's proof.
    #[n(0)]
    pub proof: HashBytes,
}
