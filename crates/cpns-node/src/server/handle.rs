//! [`ServerHandle`]: what the server's control socket asks of the running sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use cpns_proto::server::ExternalDelivery;
use cpns_store::ServerStore;
use cpns_wire::{
    DeliveryId, DeliveryOffer, EntityId, ErrorBody, ErrorCode, HashBytes, MAX_SPECIFIC, PnId,
    UserId,
};
use tokio::sync::{mpsc, oneshot};

use super::mailroom::{Office, PICKUP, PeerMsg};
use super::outbound::Follower;
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

    /// The inventory changes of every session from now on (004 §5.5.10).
    pub fn inventory_changes(&self) -> tokio::sync::broadcast::Receiver<super::InventoryNote> {
        self.office.inventory.subscribe()
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

/// What a local application asks the server to deliver from outside a PN (docs/services.md,
/// "Delivery from outside a PN").
#[derive(Clone, Debug)]
pub struct DeliverFromOutside {
    /// The file, an absolute path.
    pub file: PathBuf,
    /// The external entity it comes from.
    pub source: EntityId,
    /// The PN whose members receive it.
    pub pn_id: PnId,
    /// The targets.
    pub to: Vec<EntityId>,
    /// The service it is delivered as.
    pub service_id: String,
    /// Its name for the targets.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Parts for one target only: the target and the file holding its part.
    pub specific: Vec<(EntityId, PathBuf)>,
    /// The items after the first (several services in one session).
    pub more: Vec<cpns_control::DeliverItem>,
}

/// A delivery from outside, set up.
#[derive(Debug)]
pub struct DeliveryStarted {
    /// The session.
    pub session: DeliveryId,
    /// The session's size: every item's.
    pub size: u64,
    /// The first item's SHA-256.
    pub sha256: [u8; 32],
    /// The session's events, if followed: its stream ends with the session.
    pub events: Option<mpsc::Receiver<cpns_control::Event>>,
}

/// Events of one followed delivery buffered on their way to its follower.
const FOLLOWER_QUEUE: usize = 64;

impl<S: ServerStore + Clone> ServerHandle<S> {
    /// Delivers `d` from outside (004 §5.5.8.1): the file's size and hash are taken, each
    /// specific part read, and the session of the PN's PN GW sets it up and sends it. With
    /// `follow`, the session's events come on [`DeliveryStarted::events`].
    pub async fn deliver(
        &self,
        d: DeliverFromOutside,
        follow: bool,
    ) -> Result<DeliveryStarted, ErrorBody> {
        let bad = |what: String| ErrorBody::new(ErrorCode::BadRequest, what);
        let (size, sha256) = crate::content_files::digest(&d.file).await.map_err(bad)?;
        // The server seals the chunks itself and holds no member key: hashed before the offer.
        let (more, files) = crate::content_files::offered_items(d.more, true)
            .await
            .map_err(bad)?;
        let mut specific = Vec::new();
        for (to, path) in &d.specific {
            let len = tokio::fs::metadata(path)
                .await
                .map_err(|e| bad(format!("{}: {e}", path.display())))?
                .len();
            if len > MAX_SPECIFIC as u64 {
                return Err(bad(format!(
                    "{}: a part for one target is at most {MAX_SPECIFIC} bytes",
                    path.display()
                )));
            }
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            specific.push((to.clone(), bytes));
        }
        let pn = self
            .store
            .pn(&d.pn_id)
            .await
            .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?
            .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, format!("no PN {}", d.pn_id)))?;
        let delivery = ExternalDelivery {
            source: d.source.clone(),
            owner: operator(),
            pn_id: d.pn_id,
            offer: DeliveryOffer {
                service_id: d.service_id,
                targets: d.to,
                name: d.name,
                media_type: d.media_type,
                size,
                sha256: Some(HashBytes(sha256)),
                to_pn: None,
                held: false,
                requires: Vec::new(),
                // The server seals an operator's chunks in the suite its CPU wants first.
                suite: Some(cpns_crypto::Suite::local_preference()[0].code()),
                group: None,
                user: None,
                more,
            },
            specific,
        };
        let total = delivery.offer.total();
        let files = std::iter::once((d.file, size)).chain(files).collect();
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        let follower = follow.then(|| Follower {
            events: tx,
            source: d.source,
        });
        let now = Instant::now();
        let until = now + self.wait;
        let (reply, answer) = oneshot::channel();
        let letter = PeerMsg::Deliver {
            delivery: Box::new(delivery),
            files,
            reply,
            follower,
        };
        let gw = pn.gateway;
        let Ok(id) = self.office.room().post(now, &gw, until, letter) else {
            return Err(ErrorBody::new(
                ErrorCode::Busy,
                "the CPNS Server has too many questions for PN GWs open",
            ));
        };
        self.office.ring();
        let late = || ErrorBody::new(ErrorCode::Timeout, format!("{gw} did not answer in time"));
        let mut answer = answer;
        let session = match tokio::time::timeout(PICKUP, &mut answer).await {
            Ok(got) => got.unwrap_or_else(|_| Err(late()))?,
            Err(_) if self.office.room().withdraw(&gw, id) => {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!("{gw}, the PN's PN GW, has no session with the CPNS Server"),
                ));
            }
            Err(_) => {
                let left = until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, answer).await {
                    Ok(Ok(result)) => result?,
                    _ => return Err(late()),
                }
            }
        };
        Ok(DeliveryStarted {
            session,
            size: total,
            sha256,
            events: follow.then_some(rx),
        })
    }
}

/// The user an external entity delivers as: the operator.
fn operator() -> UserId {
    UserId::new("operator").unwrap_or_else(|_| unreachable!("a valid user id"))
}
