//! The service directory's flow at the server (004 §5.5.5; docs/services.md): publish,
//! unpublish, discover and retrieve, each a secure call of a PNE (docs/security.md §4.8), so
//! the asker is the PNE whose SK_PNE the call opened under and a retry of its number gets the
//! answer kept. Each request is rate-limited per PNE, reads the asker's view of the directory
//! in one snapshot ([`super::Load::Directory`]), and the decisions are
//! [`super::directory`]'s.

use std::time::Instant;

use cpns_wire::{
    Address, ErrorBody, ErrorCode, SERVICE_DISCOVER, SERVICE_MATCH, SERVICE_PUBLISH,
    SERVICE_RETRIEVE, SERVICE_UNPUBLISH, SERVICE_UNWATCH, SERVICE_WATCH, SecureCall,
    ServiceDescriptionAnswer, ServiceDiscover, ServiceFound, ServiceMatch, ServicePublish,
    ServicePublished, ServiceRetrieve, ServiceUnpublish, ServiceUnpublished, ServiceUnwatch,
    ServiceUnwatched, ServiceWatch, ServiceWatching, UserId,
};

use super::directory::{self, DirAsk, DirectoryLoaded};
use super::groups::Reach;
use super::secure::Call;
use super::{Load, Parked, Persisted, ServerEffect, ServerSession};

/// Whether `service` is one of the directory's secure calls.
pub(super) fn is_directory(service: &str) -> bool {
    [
        SERVICE_PUBLISH,
        SERVICE_UNPUBLISH,
        SERVICE_DISCOVER,
        SERVICE_RETRIEVE,
        SERVICE_WATCH,
        SERVICE_UNWATCH,
    ]
    .contains(&service)
}

/// What a directory request does, decoded and checked.
#[derive(Debug)]
pub(super) enum DirOp {
    Publish(Box<cpns_service::ServiceDescription>),
    Discover { fits_me: bool },
    Retrieve,
    Watch(ServiceWatch),
}

/// A directory request waiting for the asker's view.
#[derive(Debug)]
pub(super) struct DirectoryLoad {
    call: Call,
    op: DirOp,
    now_ms: i64,
}

impl DirectoryLoad {
    /// The request and the PNE it answers.
    pub(super) fn asker(&self) -> (u64, Address) {
        self.call.asker()
    }
}

/// A directory change waiting for the store.
#[derive(Debug)]
pub(super) struct DirectoryWrite {
    call: Call,
    what: Written,
}

/// What a directory change was.
#[derive(Debug)]
enum Written {
    /// A publish: what is kept, by whose user, when.
    Publish {
        publish: Box<directory::Publish>,
        owner: UserId,
        now_ms: i64,
    },
    Unpublish,
    Watch,
    Unwatch,
}

impl ServerSession {
    /// A directory request, opened and its number taken: decoded, checked and rate-limited
    /// before anything is read.
    pub(super) fn directory_call(&mut self, now: Instant, c: Call, service: &str, payload: &[u8]) {
        let refuse = |s: &mut Self, c: &Call, code, reason: String| {
            let (req_msg, to) = c.asker();
            s.respond(req_msg, to, ErrorBody::new(code, reason));
        };
        let Some(now_ms) = self.unix_ms(now) else {
            return refuse(
                self,
                &c,
                ErrorCode::Internal,
                "the server has no wall clock".into(),
            );
        };
        let limits = self.cfg.report_limits;
        if let Err(wait) = self.reporting().take_directory(now, &c.pne, limits) {
            let why = crate::rate::retry_in("directory requests", wait);
            return refuse(self, &c, ErrorCode::RateLimited, why);
        }
        let undecodable = || format!("the {service} request did not decode");
        let (op, ask) = match service {
            SERVICE_PUBLISH => {
                let Ok(m) = minicbor::decode::<ServicePublish>(payload) else {
                    return refuse(self, &c, ErrorCode::BadRequest, undecodable());
                };
                let d = match directory::parse(&m.description) {
                    Ok(d) => d,
                    Err(e) => return refuse(self, &c, e.code, e.reason),
                };
                let ask = DirAsk::Offered {
                    service_id: d.service_id.clone(),
                };
                (DirOp::Publish(Box::new(d)), ask)
            }
            SERVICE_UNPUBLISH => {
                let Ok(m) = minicbor::decode::<ServiceUnpublish>(payload) else {
                    return refuse(self, &c, ErrorCode::BadRequest, undecodable());
                };
                // Only its own: the offerer is the asker.
                let effect = ServerEffect::UnpublishService {
                    offerer: c.pne.clone(),
                    service_id: m.service_id,
                };
                let write = DirectoryWrite {
                    call: c,
                    what: Written::Unpublish,
                };
                return self.persist(Parked::DirectoryWrite(Box::new(write)), effect);
            }
            SERVICE_UNWATCH => {
                let Ok(m) = minicbor::decode::<ServiceUnwatch>(payload) else {
                    return refuse(self, &c, ErrorCode::BadRequest, undecodable());
                };
                let effect = ServerEffect::RemoveWatch {
                    watcher: c.pne.clone(),
                    watch_id: m.watch_id,
                };
                let write = DirectoryWrite {
                    call: c,
                    what: Written::Unwatch,
                };
                return self.persist(Parked::DirectoryWrite(Box::new(write)), effect);
            }
            SERVICE_WATCH => {
                let Ok(mut m) = minicbor::decode::<ServiceWatch>(payload) else {
                    return refuse(self, &c, ErrorCode::BadRequest, undecodable());
                };
                m.keywords = match directory::asked_keywords(&m.keywords) {
                    Ok(k) => k,
                    Err(e) => return refuse(self, &c, e.code, e.reason),
                };
                (DirOp::Watch(m), DirAsk::Watching)
            }
            SERVICE_DISCOVER => {
                let Ok(m) = minicbor::decode::<ServiceDiscover>(payload) else {
                    return refuse(self, &c, ErrorCode::BadRequest, undecodable());
                };
                let keywords = match directory::asked_keywords(&m.keywords) {
                    Ok(k) => k,
                    Err(e) => return refuse(self, &c, e.code, e.reason),
                };
                let ask = DirAsk::Discover {
                    keywords,
                    all: m.all,
                    service_type: m.service_type,
                    now_ms,
                    // One more than a page: whether more follow.
                    limit: directory::PAGE + 1,
                    after: m.after,
                };
                (DirOp::Discover { fits_me: m.fits_me }, ask)
            }
            _ => {
                let Ok(m) = minicbor::decode::<ServiceRetrieve>(payload) else {
                    return refuse(self, &c, ErrorCode::BadRequest, undecodable());
                };
                let ask = DirAsk::Retrieve {
                    dir_id: m.dir_id,
                    now_ms,
                };
                (DirOp::Retrieve, ask)
            }
        };
        let load = Load::Directory {
            asker: c.pne.clone(),
            ask,
        };
        let parked = DirectoryLoad {
            call: c,
            op,
            now_ms,
        };
        self.load(Parked::DirectoryLoad(Box::new(parked)), load);
    }

    /// The asker's view is read: the request is decided.
    pub(super) fn directory_loaded(&mut self, p: DirectoryLoad, loaded: DirectoryLoaded) {
        let DirectoryLoad { call, op, now_ms } = p;
        let Some(viewer) = loaded.viewer else {
            return self.refuse_call(&call, ErrorCode::Forbidden, "the asker is not enrolled");
        };
        match op {
            DirOp::Publish(d) => {
                if loaded.offered >= directory::MAX_OFFERED {
                    let why = format!(
                        "an offerer keeps at most {} services in the directory: unpublish one \
                         first",
                        directory::MAX_OFFERED
                    );
                    return self.refuse_call(&call, ErrorCode::Forbidden, &why);
                }
                let publish = match directory::publish(*d, &viewer.pns, &viewer.groups, now_ms) {
                    Ok(p) => p,
                    Err(e) => return self.refuse_call(&call, e.code, &e.reason),
                };
                let publish = Box::new(publish);
                let effect = ServerEffect::PublishService {
                    offerer: call.pne.clone(),
                    owner: viewer.owner.clone(),
                    publish: publish.clone(),
                    now_ms,
                };
                let what = Written::Publish {
                    publish,
                    owner: viewer.owner,
                    now_ms,
                };
                let write = DirectoryWrite { call, what };
                self.persist(Parked::DirectoryWrite(Box::new(write)), effect);
            }
            DirOp::Watch(w) => {
                if loaded.watches >= directory::MAX_WATCHES {
                    let why = format!(
                        "a PNE keeps at most {} watches: unwatch one first",
                        directory::MAX_WATCHES
                    );
                    return self.refuse_call(&call, ErrorCode::Forbidden, &why);
                }
                let effect = ServerEffect::AddWatch {
                    watcher: call.pne.clone(),
                    owner: viewer.owner,
                    pn_id: call.pn_id,
                    keywords: w.keywords,
                    all: w.all,
                    service_type: w.service_type,
                    now_ms,
                };
                let write = DirectoryWrite {
                    call,
                    what: Written::Watch,
                };
                self.persist(Parked::DirectoryWrite(Box::new(write)), effect);
            }
            DirOp::Discover { fits_me } => {
                let caps = loaded.capabilities.unwrap_or_default();
                let page = directory::PAGE as usize;
                let more = loaded.entries.len() > page;
                let entries = loaded
                    .entries
                    .iter()
                    .take(page)
                    .filter_map(|e| {
                        directory::summary(e.dir_id, &e.offerer, &e.owner, &e.description)
                    })
                    .filter(|(_, d)| !fits_me || directory::fits(d, &caps))
                    .map(|(s, _)| s)
                    .collect();
                let found = ServiceFound { entries, more };
                self.answer_service(&call, SERVICE_DISCOVER, &found);
            }
            DirOp::Retrieve => match loaded.entries.into_iter().next() {
                Some(e) => {
                    let answer = ServiceDescriptionAnswer {
                        dir_id: e.dir_id,
                        offerer: e.offerer,
                        description: e.description,
                        expires_at_ms: u64::try_from(e.expires_at_ms).unwrap_or(0),
                    };
                    self.answer_service(&call, SERVICE_RETRIEVE, &answer);
                }
                None => self.refuse_call(
                    &call,
                    ErrorCode::NotFound,
                    "no such service in the directory that this PNE may see",
                ),
            },
        }
    }

    /// A directory change is stored (or not); a publish tells the watchers it matches.
    pub(super) fn directory_written(
        &mut self,
        w: DirectoryWrite,
        result: Result<Persisted, crate::StoreFailure>,
    ) {
        let DirectoryWrite { call, what } = w;
        match (result, what) {
            (
                Ok(Persisted::Published { dir_id, watchers }),
                Written::Publish {
                    publish,
                    owner,
                    now_ms,
                },
            ) => {
                let answer = ServicePublished {
                    dir_id,
                    expires_at_ms: u64::try_from(publish.expires_at_ms).unwrap_or(0),
                };
                self.answer_service(&call, SERVICE_PUBLISH, &answer);
                self.tell_watchers(&call, dir_id, &publish, &owner, now_ms, &watchers);
                let change = super::InventoryChange::Services;
                self.inventory_changed(None, Some(call.pne.clone()), change);
            }
            (Ok(Persisted::Removed(removed)), Written::Unpublish) => {
                self.answer_service(&call, SERVICE_UNPUBLISH, &ServiceUnpublished { removed });
                if removed {
                    let change = super::InventoryChange::Services;
                    self.inventory_changed(None, Some(call.pne.clone()), change);
                }
            }
            (Ok(Persisted::Removed(removed)), Written::Unwatch) => {
                self.answer_service(&call, SERVICE_UNWATCH, &ServiceUnwatched { removed });
            }
            (Ok(Persisted::Watch(watch_id)), Written::Watch) => {
                self.answer_service(&call, SERVICE_WATCH, &ServiceWatching { watch_id });
            }
            (Err(e), _) => self.refuse_call(&call, ErrorCode::Internal, &format!("store: {e}")),
            (Ok(_), _) => self.refuse_call(&call, ErrorCode::Internal, "the store said nothing"),
        }
    }

    /// 004 §5.5.5 "advertise": each watcher the new entry matches and that may see it is told,
    /// by a notice sealed to it under its SK_PNE, through the PN GW of its watch's PN.
    fn tell_watchers(
        &mut self,
        call: &Call,
        dir_id: u64,
        publish: &directory::Publish,
        owner: &UserId,
        now_ms: i64,
        watchers: &[directory::Watcher],
    ) {
        let Some(entry) =
            directory::summary(dir_id, &call.pne, owner, &publish.description).map(|(s, _)| s)
        else {
            return;
        };
        for w in watchers
            .iter()
            .filter(|w| w.watcher != call.pne && directory::watch_sees(w, publish, owner))
        {
            let m = ServiceMatch {
                watch_id: w.watch_id,
                entry: entry.clone(),
            };
            let to = Reach {
                entity: w.watcher.clone(),
                owner: w.owner.clone(),
                pn_id: w.pn_id,
                session_key: w.session_key.clone(),
                gateway: w.gateway.clone(),
            };
            self.push(&to, SERVICE_MATCH, &m, now_ms);
        }
    }

    /// Seals `answer` as the answer of the directory or group call `service`.
    pub(super) fn answer_service<T: minicbor::Encode<()>>(
        &mut self,
        c: &Call,
        service: &str,
        answer: &T,
    ) {
        let answer = SecureCall {
            service: service.into(),
            payload: minicbor::to_vec(answer).unwrap_or_default(),
        };
        self.answer_call(c, answer);
    }

    /// Answers a call with an error (in the clear, as every refusal of a secure call).
    pub(super) fn refuse_call(&mut self, c: &Call, code: ErrorCode, reason: &str) {
        let (req_msg, to) = c.asker();
        self.respond(req_msg, to, ErrorBody::new(code, reason));
    }
}
