//! [`ServerHandle`]: what the server's control socket asks of the running sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpns_store::ServerStore;
use cpns_wire::{EntityId, ErrorBody, ErrorCode};
use tokio::sync::oneshot;

use super::mailroom::{Office, PICKUP, PeerMsg};
use crate::status_hub::StatusHub;

/// Asks a running server's sessions on behalf of a local operator or application (CPNS-4 on
/// the server's control socket; docs/device-status.md).
#[derive(Clone)]
pub struct ServerHandle<S> {
    pub(super) office: Arc<Office>,
    pub(super) hub: Arc<StatusHub>,
    pub(super) store: S,
    /// How long a question to a session may wait for its answer.
    pub(super) wait: Duration,
}

impl<S: ServerStore + Clone> ServerHandle<S> {
    /// The status hub.
    pub fn hub(&self) -> &Arc<StatusHub> {
        &self.hub
    }

    /// The store of record.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// `entity`'s capabilities as its device holds them now (004 §5.5.1, query by id): asked
    /// of its PN GW's session, which answers for itself or relays the query to the PNE. A PNE
    /// is reached through the PN GW that reported it online; one that is not online, or whose
    /// PN GW has no session here, is `not_found`.
    pub async fn ask_capabilities(
        &self,
        entity: &EntityId,
    ) -> Result<cpns_wire::DeviceCapabilities, ErrorBody> {
        let internal =
            |e: cpns_store::StoreError| ErrorBody::new(ErrorCode::Internal, e.to_string());
        let rec = self
            .store
            .statuses(std::slice::from_ref(entity))
            .await
            .map_err(internal)?
            .pop()
            .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, format!("no entity {entity}")))?;
        let enrolled = self.store.entity(entity).await.map_err(internal)?;
        let is_gateway = enrolled.is_some_and(|e| e.kind.is_gateway());
        let via = match (&rec.reported_by, is_gateway) {
            (_, true) if rec.status != cpns_wire::Status::Offline => entity.clone(),
            (Some(gw), false) if rec.status != cpns_wire::Status::Offline => gw.clone(),
            _ => {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!("{entity} is offline: no PN GW reaches it now"),
                ));
            }
        };
        let now = Instant::now();
        let until = now + self.wait;
        let (reply, answer) = oneshot::channel();
        let letter = PeerMsg::CapsAsk {
            entity: entity.clone(),
            reply,
        };
        let posted = self.office.room().post(now, &via, until, letter);
        let Ok(id) = posted else {
            return Err(ErrorBody::new(
                ErrorCode::Busy,
                "the CPNS Server has too many questions for PN GWs open",
            ));
        };
        self.office.ring();
        let late = || {
            ErrorBody::new(
                ErrorCode::Timeout,
                format!("{entity} did not answer in time"),
            )
        };
        let mut answer = answer;
        if let Ok(got) = tokio::time::timeout(PICKUP, &mut answer).await {
            return got.unwrap_or_else(|_| Err(late()));
        }
        // Not answered within the pick-up time: gone if the letter was never taken.
        if self.office.room().withdraw(&via, id) {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("{via} has no session with the CPNS Server"),
            ));
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(late()),
        }
    }
}
