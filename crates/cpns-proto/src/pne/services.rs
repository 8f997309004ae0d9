//! The PNE's requests to the service directory (004 §5.5.5; docs/services.md): publish,
//! unpublish, discover, retrieve. Each is a secure call to the server through the PN GW,
//! sealed end to end under SK_PNE ([`super::secure`]), so the PN GW relays what it cannot read
//! and the server knows the asker by its key: a PNE publishes only as itself.

use std::time::Instant;

use cpns_wire::{
    SERVICE_DISCOVER, SERVICE_PUBLISH, SERVICE_RETRIEVE, SERVICE_UNPUBLISH, SecureCall,
    ServiceDescriptionAnswer, ServiceDiscover, ServiceFound, ServicePublish, ServicePublished,
    ServiceRetrieve, ServiceUnpublish, ServiceUnpublished,
};

use super::{Outcome, PneSession};
use crate::{CommandError, CommandId, Failure, Flow};

impl PneSession {
    /// Publishes a service description (JSON, `cpns_service::parse`), or updates the one this
    /// PNE published with the same service id, as this PNE. Checked here first, so a bad
    /// description never leaves the device. Completes with [`Outcome::ServicePublished`].
    ///
    /// # Errors
    /// [`CommandError::InvalidDescription`] with the fault; [`CommandError::NoSecureSession`]
    /// before registration.
    pub fn publish_service(
        &mut self,
        now: Instant,
        description: Vec<u8>,
    ) -> Result<CommandId, CommandError> {
        cpns_service::parse(&description)
            .map_err(|e| CommandError::InvalidDescription(e.to_string()))?;
        self.directory_call(now, SERVICE_PUBLISH, &ServicePublish { description })
    }

    /// Takes one of this PNE's services out of the directory. Completes with
    /// [`Outcome::ServiceUnpublished`].
    pub fn unpublish_service(
        &mut self,
        now: Instant,
        service_id: String,
    ) -> Result<CommandId, CommandError> {
        self.directory_call(now, SERVICE_UNPUBLISH, &ServiceUnpublish { service_id })
    }

    /// Discovers the entries this PNE may see that match. Completes with
    /// [`Outcome::ServicesFound`].
    pub fn discover_services(
        &mut self,
        now: Instant,
        ask: ServiceDiscover,
    ) -> Result<CommandId, CommandError> {
        self.directory_call(now, SERVICE_DISCOVER, &ask)
    }

    /// Retrieves one whole description. Completes with [`Outcome::ServiceRetrieved`].
    pub fn retrieve_service(
        &mut self,
        now: Instant,
        dir_id: u64,
    ) -> Result<CommandId, CommandError> {
        self.directory_call(now, SERVICE_RETRIEVE, &ServiceRetrieve { dir_id })
    }

    fn directory_call<T: minicbor::Encode<()>>(
        &mut self,
        now: Instant,
        service: &str,
        payload: &T,
    ) -> Result<CommandId, CommandError> {
        let payload = minicbor::to_vec(payload).unwrap_or_default();
        let id = self.commands.next();
        self.call(now, service, payload, Flow::ServiceDirectory, Some(id))?;
        Ok(id)
    }
}

/// The server's answer to a directory call, as its outcome; an answer of another service, or
/// one that does not decode, is [`Failure::AnswerDidNotOpen`].
pub(super) fn answered(a: SecureCall) -> Result<Outcome, Failure> {
    let bad = |_| Failure::AnswerDidNotOpen;
    match a.service.as_str() {
        SERVICE_PUBLISH => minicbor::decode::<ServicePublished>(&a.payload)
            .map(Outcome::ServicePublished)
            .map_err(bad),
        SERVICE_UNPUBLISH => minicbor::decode::<ServiceUnpublished>(&a.payload)
            .map(|u| Outcome::ServiceUnpublished { removed: u.removed })
            .map_err(bad),
        SERVICE_DISCOVER => minicbor::decode::<ServiceFound>(&a.payload)
            .map(Outcome::ServicesFound)
            .map_err(bad),
        SERVICE_RETRIEVE => minicbor::decode::<ServiceDescriptionAnswer>(&a.payload)
            .map(|d| Outcome::ServiceRetrieved(Box::new(d)))
            .map_err(bad),
        _ => Err(Failure::AnswerDidNotOpen),
    }
}
