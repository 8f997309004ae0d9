//! The server's side of the secure PNE<->server session (003 §1.4.1 step 4): a Secure Request
//! relayed by the PN GW is opened under the SK_PNE the server kept for that member at
//! registration, the service is called, and its answer is sealed back (docs/security.md §4.8).
//! A request that does not open is answered `unauthenticated` without saying more. Each
//! request's number (its request id) runs at most once ([`super::window`]): it is taken, and
//! the taking stored, before the service runs; a retry of a number taken gets the answer kept
//! in this session's memory, or, once that is gone, `conflict`.

use cpns_crypto::{
    E2eDirection, SecureBinding, SessionKey, open_secure_message, seal_secure_message,
};
use cpns_wire::{
    Address, CONTENTS_SERVICE, ContentsDeclare, ECHO_SERVICE, EntityId, Envelope, ErrorBody,
    ErrorCode, INVENTORY_SERVICE, InventoryAnswer, InventoryQuery, MemberServices, PnId, RequestId,
    SecureCall, SecureRequest, SecureResponse,
};

use std::time::Instant;

use cpns_wire::{CHARGING_SERVICE, ChargingList, ChargingQuery, USAGE_SERVICE, UsageReport};

use super::connect::Gw;
use super::window::Verdict;
use super::{
    InventoryLoaded, Load, Parked, ServerEffect, ServerSession, SessionLoaded, UsageOwners,
};

/// What makes a secure request the same one again (a retry): its PNE, its PN, its number and
/// the tag of its sealed call. Numbers run per SK_PNE, so the same number in another PN, or
/// under a new SK_PNE of the same PN, is another request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Retry {
    pne: EntityId,
    pn_id: PnId,
    request_id: RequestId,
    tag: [u8; 16],
}

impl Retry {
    pub(super) fn of(pne: &EntityId, req: &SecureRequest) -> Self {
        let mut tag = [0u8; 16];
        let n = req.sealed.len().min(16);
        tag[..n].copy_from_slice(&req.sealed[req.sealed.len() - n..]);
        Self {
            pne: pne.clone(),
            pn_id: req.pn_id,
            request_id: req.request_id,
            tag,
        }
    }
}

/// A secure request waiting for its member's SK_PNE.
#[derive(Debug)]
pub(super) struct SecureLoad {
    req_msg: u64,
    pne: EntityId,
    req: SecureRequest,
}

impl SecureLoad {
    /// The request and the PNE it answers.
    pub(super) fn asker(&self) -> (u64, Address) {
        (self.req_msg, Address::Entity(self.pne.clone()))
    }
}

impl ServerSession {
    /// A Secure Request relayed by the PN GW for one of its PNEs.
    pub(super) fn on_secure_request(&mut self, _gw: &Gw, env: &Envelope, req: SecureRequest) {
        let Address::Entity(pne) = env.from.clone() else {
            return self.reject(
                env,
                ErrorCode::BadRequest,
                "a secure request comes from a PNE",
            );
        };
        // A retry of a request answered in this session: the same answer, not a second run.
        if self.replay_secure(&Retry::of(&pne, &req), env) {
            return;
        }
        if !self.admit(env) {
            return;
        }
        let load = Load::Session {
            pn: req.pn_id,
            pne: pne.clone(),
        };
        let parked = SecureLoad {
            req_msg: env.msg_id,
            pne,
            req,
        };
        self.load(Parked::SecureLoad(parked), load);
    }

    /// Opens the request under the member's SK_PNE, calls the service, seals the answer.
    pub(super) fn secure_loaded(&mut self, _now: Instant, p: SecureLoad, loaded: SessionLoaded) {
        let Some(gw) = self.conn.gateway().cloned() else {
            return;
        };
        let to = Address::Entity(p.pne.clone());
        let refuse = |s: &mut Self, code, reason: &str| {
            s.respond(
                p.req_msg,
                to.clone(),
                cpns_wire::ErrorBody::new(code, reason),
            );
        };
        let served_here = loaded.gateway.as_ref() == Some(&gw.id);
        let (Some(sk), true) = (loaded.session_key, served_here) else {
            return refuse(
                self,
                ErrorCode::Unauthenticated,
                "no secure session for this PNE in this PN: register first (003 §1.4)",
            );
        };
        let binding = SecureBinding {
            pn_id: p.req.pn_id.as_bytes(),
            pne_id: p.pne.as_str(),
            request_id: p.req.request_id.0,
        };
        let call = open_secure_message(&sk, E2eDirection::PneToServer, &binding, &p.req.sealed)
            .ok()
            .and_then(|plain| minicbor::decode::<SecureCall>(&plain).ok());
        let Some(call) = call else {
            return refuse(
                self,
                ErrorCode::Unauthenticated,
                "the request did not open under the secure session",
            );
        };
        // Each number once (docs/security.md §4.8): checked only now that the request opened,
        // so nobody but the PNE moves its window.
        let key = (p.req.pn_id, p.pne.clone());
        let kept = self
            .windows
            .entry(key.clone())
            .or_insert_with(|| (sk.clone(), loaded.window));
        if kept.0 != sk {
            *kept = (sk.clone(), loaded.window);
        }
        let window = &mut kept.1;
        let n = p.req.request_id.0;
        match window.check(n) {
            Verdict::Fresh => {}
            Verdict::Zero => {
                return refuse(
                    self,
                    ErrorCode::BadRequest,
                    "secure requests are numbered from 1 (docs/security.md §4.8)",
                );
            }
            Verdict::Taken | Verdict::TooOld => {
                let reason = format!(
                    "secure request {n} was taken already (a replay, or a retry whose answer \
                     is gone): make a new call"
                );
                return refuse(self, ErrorCode::Conflict, &reason);
            }
        }
        window.take(n);
        let window = *window;
        let retry = Retry::of(&p.pne, &p.req);
        let taken = Taken {
            call: Call {
                req_msg: p.req_msg,
                pne: p.pne,
                pn_id: p.req.pn_id,
                by: By::Pne {
                    request_id: p.req.request_id,
                    sk,
                    retry,
                },
            },
            request: call,
        };
        let effect = ServerEffect::SecureWindow {
            pn_id: key.0,
            pne: key.1,
            window,
        };
        self.persist(Parked::SecureTaken(Box::new(taken)), effect);
    }

    /// The number is taken durably: the service runs (a store failure ends the call, its
    /// number spent).
    pub(super) fn secure_taken(
        &mut self,
        now: Instant,
        t: Taken,
        result: Result<super::Persisted, crate::StoreFailure>,
    ) {
        let Taken {
            call: call_of,
            request: call,
        } = t;
        if let Err(e) = result {
            let (req_msg, to) = call_of.asker();
            let e = ErrorBody::new(ErrorCode::Internal, format!("store: {e}"));
            self.respond(req_msg, to, e);
            return;
        }
        match call.service.as_str() {
            ECHO_SERVICE => self.answer_call(&call_of, call),
            INVENTORY_SERVICE => self.inventory_call(call_of, &call.payload),
            CONTENTS_SERVICE => self.contents_call(now, call_of, &call.payload),
            USAGE_SERVICE => self.usage_call(now, call_of, &call.payload),
            CHARGING_SERVICE => self.charging_call(call_of, &call.payload),
            s if super::services::is_directory(s) => {
                self.directory_call(now, call_of, s, &call.payload);
            }
            s if super::groups::is_group(s) => self.group_call(now, call_of, s, &call.payload),
            s if super::delivery::is_delivery(s) => {
                self.delivery_call(now, call_of, s, &call.payload);
            }
            _ => {
                let (req_msg, to) = call_of.asker();
                let e = ErrorBody::new(ErrorCode::NotFound, "no such service");
                self.respond(req_msg, to, e);
            }
        }
    }

    /// Seals `answer` for the call's PNE and sends it.
    pub(super) fn answer_call(&mut self, c: &Call, answer: SecureCall) {
        let (request_id, sk, retry) = match &c.by {
            By::Pne {
                request_id,
                sk,
                retry,
            } => (*request_id, sk, retry.clone()),
            By::Gateway { request_id, .. } => {
                // Nothing a PN GW is answered holds a key: it goes on its own session.
                let resp = cpns_wire::GatewayGroupResponse {
                    request_id: *request_id,
                    service: answer.service,
                    payload: answer.payload,
                };
                let sent = self.respond(c.req_msg, Address::Server, resp);
                self.remember(Address::Entity(c.pne.clone()), *request_id, sent);
                return;
            }
        };
        let to = Address::Entity(c.pne.clone());
        let binding = SecureBinding {
            pn_id: c.pn_id.as_bytes(),
            pne_id: c.pne.as_str(),
            request_id: request_id.0,
        };
        let plain = minicbor::to_vec(&answer).unwrap_or_default();
        let sealed = seal_secure_message(
            self.rng.get(),
            sk,
            E2eDirection::ServerToPne,
            &binding,
            &plain,
        );
        match sealed {
            Ok(sealed) => {
                let resp = SecureResponse { request_id, sealed };
                let sent = self.respond(c.req_msg, to, resp);
                self.keep_answer(retry, sent);
            }
            Err(_) => {
                let e = ErrorBody::new(ErrorCode::Internal, "the answer could not be sealed");
                self.respond(c.req_msg, to, e);
            }
        }
    }

    /// 004 §5.5.10: a PNE reads a PN, or every PN of its user, end to end. Load the asker (for
    /// its user) and the PN or that user's PNs.
    fn inventory_call(&mut self, c: Call, payload: &[u8]) {
        let Ok(query) = minicbor::decode::<InventoryQuery>(payload) else {
            let e = ErrorBody::new(ErrorCode::BadRequest, "the inventory query did not decode");
            self.respond(c.req_msg, Address::Entity(c.pne.clone()), e);
            return;
        };
        let load = Load::Inventory {
            asker: c.pne.clone(),
            pn: query.pn_id,
        };
        self.load(
            Parked::InventoryLoad(InventoryLoad { call: c, query }),
            load,
        );
    }

    /// 004 §5.5.10: a PNE declares the contents it holds now; they replace what it announced in
    /// every PN it is a member of. Checked and rate-limited before anything is written.
    fn contents_call(&mut self, now: Instant, c: Call, payload: &[u8]) {
        let Ok(declared) = minicbor::decode::<ContentsDeclare>(payload) else {
            return self.refuse_call(&c, ErrorCode::BadRequest, "the contents did not decode");
        };
        if let Err(why) = check_contents(&declared) {
            return self.refuse_call(&c, ErrorCode::BadRequest, &why);
        }
        let limits = self.cfg.report_limits;
        if let Err(wait) = self.reporting().take_directory(now, &c.pne, limits) {
            let why = crate::rate::retry_in("contents declarations", wait);
            return self.refuse_call(&c, ErrorCode::RateLimited, &why);
        }
        let effect = ServerEffect::SetContents {
            pne: c.pne.clone(),
            contents: declared.items.clone(),
        };
        self.persist(Parked::ContentsWrite(Box::new((c, declared))), effect);
    }

    /// The contents are kept: the PNE is answered with them.
    pub(super) fn contents_written(
        &mut self,
        c: Call,
        declared: ContentsDeclare,
        result: Result<super::Persisted, crate::StoreFailure>,
    ) {
        match result {
            Ok(_) => {
                let change = super::InventoryChange::Contents;
                self.inventory_changed(None, Some(c.pne.clone()), change);
                self.answer_service(&c, CONTENTS_SERVICE, &declared);
            }
            Err(e) => self.refuse_call(&c, ErrorCode::Internal, &format!("store: {e}")),
        }
    }

    /// Answers the query with what the asker may read: a PN it is a member of or its own
    /// user's (else `forbidden`), or every PN of its user.
    pub(super) fn inventory_loaded(&mut self, p: InventoryLoad, loaded: InventoryLoaded) {
        let InventoryLoad { call, query } = p;
        let refuse = |s: &mut Self, code, reason: String| {
            let to = Address::Entity(call.pne.clone());
            s.respond(call.req_msg, to, ErrorBody::new(code, reason));
        };
        let Some(asker_owner) = loaded.asker_owner else {
            return refuse(
                self,
                ErrorCode::Forbidden,
                "the asker is not enrolled".into(),
            );
        };
        let mut pns = loaded.pns;
        let pns = match query.pn_id {
            None => pns.into_iter().map(|p| p.inventory).collect(),
            Some(pn_id) => match pns.pop() {
                None => return refuse(self, ErrorCode::NotFound, format!("no PN {pn_id}")),
                Some(pn) => {
                    let member = pn.inventory.members.iter().any(|m| m.pne_id == call.pne);
                    if !member && pn.owner != asker_owner {
                        return refuse(
                            self,
                            ErrorCode::Forbidden,
                            "only a member of a PN, or an entity of its owner, may read it".into(),
                        );
                    }
                    vec![pn.inventory]
                }
            },
        };
        // Each member's services the asker may see (the store applied the directory's scope),
        // for the members of the PNs answered.
        let mut services: Vec<MemberServices> = Vec::new();
        for (offerer, s) in loaded.services {
            let member = pns
                .iter()
                .any(|p: &cpns_wire::PnInventory| p.members.iter().any(|m| m.pne_id == offerer));
            if !member {
                continue;
            }
            match services.iter_mut().find(|m| m.pne == offerer) {
                Some(m) => m.services.push(s),
                None => services.push(MemberServices {
                    pne: offerer,
                    services: vec![s],
                }),
            }
        }
        let payload = minicbor::to_vec(InventoryAnswer { pns, services }).unwrap_or_default();
        let answer = SecureCall {
            service: INVENTORY_SERVICE.into(),
            payload,
        };
        self.answer_call(&call, answer);
    }
}

/// A secure request whose number is being taken, waiting for the store.
#[derive(Debug)]
pub(super) struct Taken {
    call: Call,
    request: SecureCall,
}

/// An opened secure call, or a PN GW's request for its owner: whom to answer, and how.
#[derive(Debug)]
pub(super) struct Call {
    req_msg: u64,
    /// The asker: the PNE whose SK_PNE the call opened under, or the PN GW itself.
    pub(super) pne: EntityId,
    /// The PN the call was sealed in (a PN GW's request: none, all zero).
    pub(super) pn_id: PnId,
    by: By,
}

/// How a call came, so how it is answered.
#[derive(Debug)]
enum By {
    /// A PNE's secure call: the answer is sealed under its SK_PNE, bound to its number, and
    /// kept for a retry of the same request.
    Pne {
        request_id: RequestId,
        sk: SessionKey,
        retry: Retry,
    },
    /// A PN GW asking for its owner (`GatewayGroupRequest`): answered on its session.
    Gateway {
        request_id: RequestId,
        owner: cpns_wire::UserId,
    },
}

impl Call {
    /// The request and whom its answer goes to.
    pub(super) fn asker(&self) -> (u64, Address) {
        match self.by {
            By::Pne { .. } => (self.req_msg, Address::Entity(self.pne.clone())),
            By::Gateway { .. } => (self.req_msg, Address::Server),
        }
    }

    /// A PN GW's request for its owner `owner`, `gw` asking.
    pub(super) fn gateway(
        req_msg: u64,
        gw: EntityId,
        owner: cpns_wire::UserId,
        request_id: RequestId,
    ) -> Self {
        Self {
            req_msg,
            pne: gw,
            pn_id: PnId::from_bytes([0; 16]),
            by: By::Gateway { request_id, owner },
        }
    }

    /// When a PN GW asks (not a PNE): the user it asks for, its owner.
    pub(super) fn gateway_owner(&self) -> Option<&cpns_wire::UserId> {
        match &self.by {
            By::Gateway { owner, .. } => Some(owner),
            By::Pne { .. } => None,
        }
    }
}

/// A usage report waiting for its PNE's user and its PN's owner.
#[derive(Debug)]
pub(super) struct UsageLoad {
    call: Call,
    report: UsageReport,
}

impl ServerSession {
    /// 004 §5.5.4: a PNE reports usage, as its user's preferences allowed, end to end. Checked
    /// and rate-limited before anything is read.
    fn usage_call(&mut self, now: Instant, c: Call, payload: &[u8]) {
        let refuse = |s: &mut Self, code, reason: String| {
            let to = Address::Entity(c.pne.clone());
            s.respond(c.req_msg, to, ErrorBody::new(code, reason));
        };
        let Ok(report) = minicbor::decode::<UsageReport>(payload) else {
            return refuse(
                self,
                ErrorCode::BadRequest,
                "the usage report did not decode".into(),
            );
        };
        let Some(now_s) = self.unix_s(now) else {
            return refuse(
                self,
                ErrorCode::Internal,
                "the server has no wall clock".into(),
            );
        };
        if let Err(why) = crate::usage::check_report(&report, now_s) {
            return refuse(self, ErrorCode::BadRequest, why);
        }
        let limits = self.cfg.report_limits;
        if let Err(wait) = self.reporting().take_usage(now, &c.pne, limits) {
            return refuse(
                self,
                ErrorCode::RateLimited,
                crate::rate::retry_in("usage reports", wait),
            );
        }
        let load = Load::UsageOwners {
            pne: c.pne.clone(),
            pn: c.pn_id,
        };
        self.load(
            Parked::UsageLoad(Box::new(UsageLoad { call: c, report })),
            load,
        );
    }

    /// Attributes the records: to the PNE's own user, naming the PN's owner when another user's
    /// (001 §5.2.1.1: a PNE of another user is charged to its owner), with units for the
    /// chargeable ones.
    pub(super) fn usage_loaded(&mut self, u: UsageLoad, loaded: UsageOwners) {
        let UsageLoad { call, report } = u;
        let Some(owner) = loaded.owner else {
            let to = Address::Entity(call.pne.clone());
            let e = ErrorBody::new(ErrorCode::Forbidden, "the reporter is not enrolled");
            self.respond(call.req_msg, to, e);
            return;
        };
        let pn_owner = loaded.pn_owner.filter(|o| *o != owner);
        let records = report
            .records
            .into_iter()
            .map(|r| {
                let charge = self
                    .cfg
                    .tariff
                    .get(&r.service)
                    .map(|per| cpns_wire::charge_units(*per, r.bytes));
                (r, charge)
            })
            .collect();
        let effect = ServerEffect::StoreUsage {
            entity: call.pne.clone(),
            owner,
            pn_id: call.pn_id,
            pn_owner,
            records,
        };
        self.persist(Parked::UsagePersist(Box::new(call)), effect);
    }

    pub(super) fn usage_persisted(
        &mut self,
        call: Call,
        result: Result<super::Persisted, crate::StoreFailure>,
    ) {
        match result {
            Ok(super::Persisted::Usage(accepted)) => {
                let payload = minicbor::to_vec(&accepted).unwrap_or_default();
                let answer = SecureCall {
                    service: USAGE_SERVICE.into(),
                    payload,
                };
                self.answer_call(&call, answer);
            }
            other => {
                let reason = match other {
                    Err(e) => format!("store: {e}"),
                    Ok(_) => "the store said nothing".into(),
                };
                let to = Address::Entity(call.pne.clone());
                self.respond(
                    call.req_msg,
                    to,
                    ErrorBody::new(ErrorCode::Internal, reason),
                );
            }
        }
    }

    /// CPNS-4: a PNE lists its own user's charging records.
    fn charging_call(&mut self, c: Call, payload: &[u8]) {
        let Ok(query) = minicbor::decode::<ChargingQuery>(payload) else {
            let e = ErrorBody::new(ErrorCode::BadRequest, "the charging query did not decode");
            self.respond(c.req_msg, Address::Entity(c.pne.clone()), e);
            return;
        };
        let load = Load::Charging {
            pne: c.pne.clone(),
            since_s: query.since_s.unwrap_or(0),
        };
        self.load(Parked::ChargingLoad(Box::new(c)), load);
    }

    /// The user's charging records, sealed back to the PNE.
    pub(super) fn charging_loaded(&mut self, c: Call, records: Vec<cpns_wire::ChargingRecord>) {
        let list = ChargingList { records };
        let answer = SecureCall {
            service: CHARGING_SERVICE.into(),
            payload: minicbor::to_vec(&list).unwrap_or_default(),
        };
        self.answer_call(&c, answer);
    }
}

/// An inventory query waiting for the PNs it may read.
#[derive(Debug)]
pub(super) struct InventoryLoad {
    call: Call,
    query: InventoryQuery,
}

impl InventoryLoad {
    /// The request and the PNE it answers.
    pub(super) fn asker(&self) -> (u64, Address) {
        self.call.asker()
    }
}

impl UsageLoad {
    /// The request and the PNE it answers.
    pub(super) fn asker(&self) -> (u64, Address) {
        self.call.asker()
    }
}

/// What is wrong with a contents declaration, if anything: at most
/// [`cpns_wire::MAX_CONTENTS`] items, each named (1 to 255 characters) with a media type (1 to
/// 127), none a control character, no name twice.
pub fn check_contents(d: &ContentsDeclare) -> Result<(), String> {
    if d.items.len() > cpns_wire::MAX_CONTENTS {
        return Err(format!(
            "at most {} contents are declared",
            cpns_wire::MAX_CONTENTS
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for i in &d.items {
        for (what, text, max) in [
            ("a name", &i.name, 255),
            ("a media type", &i.media_type, 127),
        ] {
            let n = text.chars().count();
            if n == 0 || n > max || text.chars().any(char::is_control) {
                return Err(format!(
                    "{what} is 1 to {max} characters, none a control character"
                ));
            }
        }
        if !names.insert(i.name.as_str()) {
            return Err(format!("{} is declared twice", i.name));
        }
    }
    Ok(())
}
