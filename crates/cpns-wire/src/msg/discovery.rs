//! CPNS entity discovery (000 §6.4): one entity asks another for its mode, entity id and zone
//! support; a PN GW also lists the PNs it serves (000 §6.6.2.2 step 0).

use minicbor::{Decode, Encode};

use super::common::Mode;
use crate::ids::{EntityId, PnId};

/// Entity Discovery Request (000 §6.4 step 1).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct EntityDiscoveryRequest {
    /// The asking entity.
    #[n(0)]
    pub entity_id: EntityId,
    /// The asking entity's mode.
    #[n(1)]
    pub mode: Mode,
}

/// Entity Discovery Response (000 §6.4 step 2).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct EntityDiscoveryResponse {
    /// Mode of the answering device.
    #[n(0)]
    pub mode: Mode,
    /// Its CPNS entity id (PNE ID or PN GW ID).
    #[n(1)]
    pub entity_id: EntityId,
    /// Whether it is a Zone based PN GW (000 §6.4 note 2, 004 appendix F).
    #[n(2)]
    #[cbor(default)]
    pub zone_support: bool,
    /// PNs a PN GW serves.
    #[n(3)]
    #[cbor(default)]
    pub pns: Vec<PnId>,
}
