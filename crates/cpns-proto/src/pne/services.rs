//! The PNE's requests to the service directory (004 §5.5.5; docs/services.md): publish,
//! unpublish, discover, retrieve. Each is a secure call to the server through the PN GW,
//! sealed end to end under SK_PNE ([`super::secure`]), so the PN GW relays what it cannot read
//! and the server knows the asker by its key: a PNE publishes only as itself.

use std::time::Instant;

use cpns_crypto::{NoticeBinding, open_secure_notice};
use cpns_wire::{
    Address, Envelope, SERVICE_DISCOVER, SERVICE_MATCH, SERVICE_PUBLISH, SERVICE_RETRIEVE,
    SERVICE_UNPUBLISH, SERVICE_UNWATCH, SERVICE_WATCH, SecureCall, SecureNotice,
    ServiceDescriptionAnswer, ServiceDiscover, ServiceFound, ServiceMatch, ServicePublish,
    ServicePublished, ServiceRetrieve, ServiceUnpublish, ServiceUnpublished, ServiceUnwatch,
    ServiceUnwatched, ServiceWatch, ServiceWatching,
};

use super::{Outcome, PneEvent, PneSession};
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

    /// Watches the directory: every entry published from now on that this PNE may see and that
    /// matches is told as [`PneEvent::ServiceMatched`], until it unwatches (or leaves the PN the
    /// call is sealed in). Completes with [`Outcome::ServiceWatching`].
    pub fn watch_services(
        &mut self,
        now: Instant,
        watch: ServiceWatch,
    ) -> Result<CommandId, CommandError> {
        self.directory_call(now, SERVICE_WATCH, &watch)
    }

    /// Ends one of this PNE's watches. Completes with [`Outcome::ServiceUnwatched`].
    pub fn unwatch_services(
        &mut self,
        now: Instant,
        watch_id: u64,
    ) -> Result<CommandId, CommandError> {
        self.directory_call(now, SERVICE_UNWATCH, &ServiceUnwatch { watch_id })
    }

    /// A secure notice from the server (docs/security.md §4.8, "Notices"): opened under this
    /// PNE's SK_PNE of the PN it names (a PN it holds), taken only with a number greater than the last one's
    /// under that PN, and told if it is a service match. Anything else is dropped unsaid: a
    /// notice has no answer.
    pub(super) fn on_secure_notice(&mut self, now: Instant, env: &Envelope, m: SecureNotice) {
        if env.from != Address::Server {
            return;
        }
        // The member's SK_PNE of that PN (a registration there keeps it in the PN's state too);
        // a PN this PNE left names no key, and its notices are not taken.
        let Some(key) = self
            .pns
            .get(&m.pn_id)
            .and_then(|p| p.state.own.as_ref())
            .map(|o| o.session_key.clone())
        else {
            return;
        };
        if self
            .notices
            .get(&m.pn_id)
            .is_some_and(|last| m.notice_id <= *last)
        {
            return;
        }
        let binding = NoticeBinding {
            pn_id: m.pn_id.as_bytes(),
            pne_id: self.cfg.id.as_str(),
            notice_id: m.notice_id,
        };
        let Ok(plain) = open_secure_notice(&key, &binding, &m.sealed) else {
            return;
        };
        self.notices.insert(m.pn_id, m.notice_id);
        let Ok(call) = minicbor::decode::<SecureCall>(&plain) else {
            return;
        };
        if call.service == cpns_wire::DELIVERY_OFFERED {
            if let Ok(invite) = minicbor::decode::<cpns_wire::DeliveryInvite>(&call.payload) {
                self.on_delivery_offered(now, invite);
            }
            return;
        }
        if call.service == cpns_wire::DELIVERY_MESSAGED {
            if let Ok(m) = minicbor::decode::<cpns_wire::DeliveryMessage>(&call.payload)
                && let (Some(pn_id), Some(owner)) = (m.pn_id, m.owner)
            {
                self.event(PneEvent::MessageReceived {
                    from: m.peer,
                    owner,
                    pn_id,
                    service_id: m.service_id,
                    media_type: m.media_type,
                    payload: m.payload,
                });
            }
            return;
        }
        if call.service == cpns_wire::DELIVERY_REQUESTED {
            if let Ok(asked) = minicbor::decode::<cpns_wire::DeliveryRequested>(&call.payload) {
                self.on_delivery_requested(asked);
            }
            return;
        }
        if call.service != SERVICE_MATCH {
            return self.on_group_notice(call);
        }
        if let Ok(matched) = minicbor::decode::<ServiceMatch>(&call.payload) {
            self.event(PneEvent::ServiceMatched(matched));
        }
    }

    fn directory_call<T: minicbor::Encode<()>>(
        &mut self,
        now: Instant,
        service: &str,
        payload: &T,
    ) -> Result<CommandId, CommandError> {
        self.typed_call(now, service, payload, Flow::ServiceDirectory)
    }

    /// A secure call of `service` with `payload`, as a command of `flow` (the directory's, the
    /// groups'): its answer is read by that flow.
    /// Declares the contents this PNE holds now (004 §5.5.10), replacing what it announced in
    /// every PN it is a member of: [`Outcome::ContentsDeclared`] once the server kept them.
    /// Checked here first (at most 256, each named with a media type, none twice).
    pub fn declare_contents(
        &mut self,
        now: Instant,
        contents: Vec<cpns_wire::ContentItem>,
    ) -> Result<CommandId, CommandError> {
        let declared = cpns_wire::ContentsDeclare { items: contents };
        if let Err(why) = crate::server::check_contents(&declared) {
            return Err(CommandError::InvalidContents(why));
        }
        self.typed_call(
            now,
            cpns_wire::CONTENTS_SERVICE,
            &declared,
            Flow::SecureCall,
        )
    }

    pub(super) fn typed_call<T: minicbor::Encode<()>>(
        &mut self,
        now: Instant,
        service: &str,
        payload: &T,
        flow: Flow,
    ) -> Result<CommandId, CommandError> {
        let payload = minicbor::to_vec(payload).unwrap_or_default();
        let id = self.commands.next();
        self.call(now, service, payload, flow, Some(id))?;
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
        SERVICE_WATCH => minicbor::decode::<ServiceWatching>(&a.payload)
            .map(|w| Outcome::ServiceWatching {
                watch_id: w.watch_id,
            })
            .map_err(bad),
        SERVICE_UNWATCH => minicbor::decode::<ServiceUnwatched>(&a.payload)
            .map(|u| Outcome::ServiceUnwatched { removed: u.removed })
            .map_err(bad),
        _ => Err(Failure::AnswerDidNotOpen),
    }
}
