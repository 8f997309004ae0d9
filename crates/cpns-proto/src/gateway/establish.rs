//! PN establishment as the PN GW runs it, for both initiators: 000 §6.6.1.1 (a PNE asks, steps
//! 1-15) and §6.6.1.2 (the PN GW asks, steps 1-16).
//!
//! Phases of one PN being formed: invite the PNEs (steps 2-3 / 1-4) → register the PN with the
//! server (4 / 5) → take the server's Authentication Request, unwrap the PN GW's LocalEUKey
//! copies and relay the request to each PNE (6-7 / 7-8) → collect every PNE's Authentication
//! Response and relay them together (10 / 11) → take the PN Registration Response, store the PN
//! locally (13 / 14) → answer the initiator and notify the others (14-15 / 15-16). Every phase
//! has a deadline; a PNE that declines, does not answer or leaves is left out.

use std::collections::BTreeMap;
use std::time::Instant;

use cpns_crypto::{KeyBinding, LocalEuKey, Recipient, stored_wrapped_key, unwrap_local_eukey};
use cpns_wire::{
    AuthPurposeCode, AuthenticationRequest, AuthenticationResponse, EntityId, Envelope, ErrorBody,
    ErrorCode, GatewayInfo, JoinInfo, PnEstablishmentNotify, PnId, PnRegistrationRequest,
    PnRegistrationResponse, PnSetupRequest, PnSetupResponse, PneHash, RequestId, SetupType,
    WrappedLocalKeys,
};

use super::{Gateway, GatewayEvent, LinkId, LocalPn, LocalPnState, Outcome, Parked};
use crate::{CommandError, CommandId, Failure, Flow};

/// Most bytes of one PNE's join information (its capabilities and contents, 000 §6.6.1.1
/// step 1) the PN GW takes: it copies them into the PN Registration Request it relays.
pub const MAX_JOIN_INFO: usize = 16 * 1024;

/// Whether `join` fits [`MAX_JOIN_INFO`] once encoded.
fn join_fits(join: &JoinInfo) -> bool {
    minicbor::to_vec(join).is_ok_and(|v| v.len() <= MAX_JOIN_INFO)
}

/// Whom a PN GW-initiated establishment invites (000 §6.6.1.2 steps 1-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EstablishTargets {
    /// Every PNE connected to the PN GW.
    All,
    /// These PNEs.
    Invite(Vec<EntityId>),
}

/// The PNE that asked for the PN (000 §6.6.1.1 step 1).
#[derive(Debug)]
struct Initiator {
    pne: EntityId,
    link: LinkId,
    setup_msg: u64,
    request_id: RequestId,
}

/// The LocalEUKeys the server made for the PN (step 6): unwrapped, per PNE, and the PN GW's
/// copies in their stored form, rand_server ‖ wrapped (docs/security.md §4.2).
#[derive(Debug, Default)]
struct PnKeys {
    local: BTreeMap<EntityId, LocalEuKey>,
    stored: Vec<(EntityId, Vec<u8>)>,
}

/// Where a PN being formed stands, with what only that phase has.
#[derive(Debug)]
enum Stage {
    /// Invitations sent (step 2 / 1-2); PNE → (link, setup request msg id) not answered yet.
    Inviting {
        invited: BTreeMap<EntityId, (LinkId, u64)>,
    },
    /// PN Registration Request sent (step 4 / 5).
    Registering { reg_msg: u64 },
    /// The server's Authentication Request relayed to the PNEs (steps 6-7 / 7-8), waiting for
    /// their responses: PNE → (link, msg id), and the hashes so far.
    Authenticating {
        reg_msg: u64,
        server_auth_msg: u64,
        pending: BTreeMap<EntityId, (LinkId, u64)>,
        hashes: Vec<PneHash>,
        keys: PnKeys,
    },
    /// The hashes relayed (step 10 / 11); waiting for the PN Registration Response.
    AwaitVerdict { reg_msg: u64, keys: PnKeys },
    /// The local inventory is being stored (step 13 / 14).
    Persisting {
        keys: PnKeys,
        verdict: Box<PnRegistrationResponse>,
        /// When the PN's lifetime ends, as stored.
        expires_at: Option<i64>,
    },
}

/// One PN being formed.
#[derive(Debug)]
pub(super) struct Forming {
    pn_id: PnId,
    initiator: Option<Initiator>,
    stage: Stage,
    /// PNEs taking part (initiator first), with their join information.
    joins: Vec<(LinkId, JoinInfo)>,
    request_id: RequestId,
    deadline: Instant,
    /// The owner's `start_establishment` command, if the PN GW's owner asked for it.
    cmd: Option<CommandId>,
}

/// A PN GW-initiated establishment that started: its command, and the PN's id, chosen at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Establishing {
    /// The command; it completes with [`Outcome::Established`].
    pub id: CommandId,
    /// The PN being established.
    pub pn_id: PnId,
}

impl Forming {
    /// The deadline of the current wait; none while the local store works.
    pub(super) fn wait_deadline(&self) -> Option<Instant> {
        (!matches!(self.stage, Stage::Persisting { .. })).then_some(self.deadline)
    }

    pub(super) fn local_key(&self, pne: &EntityId) -> Option<&LocalEuKey> {
        match &self.stage {
            Stage::Authenticating { keys, .. }
            | Stage::AwaitVerdict { keys, .. }
            | Stage::Persisting { keys, .. } => keys.local.get(pne),
            Stage::Inviting { .. } | Stage::Registering { .. } => None,
        }
    }

    /// Whether a PNE on `link` asked for this PN.
    pub(super) fn initiated_on(&self, link: LinkId) -> bool {
        self.initiator.as_ref().is_some_and(|i| i.link == link)
    }

    /// The PN Registration Request of this PN, once sent and until answered.
    fn reg_msg(&self) -> Option<u64> {
        match self.stage {
            Stage::Registering { reg_msg }
            | Stage::Authenticating { reg_msg, .. }
            | Stage::AwaitVerdict { reg_msg, .. } => Some(reg_msg),
            Stage::Inviting { .. } | Stage::Persisting { .. } => None,
        }
    }

    /// The PNEs whose answer this PN waits for (invitations or authentication).
    fn awaited(&mut self) -> Option<&mut BTreeMap<EntityId, (LinkId, u64)>> {
        match &mut self.stage {
            Stage::Inviting { invited } => Some(invited),
            Stage::Authenticating { pending, .. } => Some(pending),
            _ => None,
        }
    }
}

impl Gateway {
    /// 000 §6.6.1.2 steps 1-2: the PN GW starts a PN with the PNEs it reaches. Completes with
    /// [`Outcome::Established`] once the PN is registered and stored (step 13).
    pub fn start_establishment(
        &mut self,
        now: Instant,
        targets: EstablishTargets,
    ) -> Result<Establishing, CommandError> {
        if !self.wan_ready() {
            return Err(CommandError::NoServerSession);
        }
        let pnes = match targets {
            EstablishTargets::All => {
                let mut v: Vec<EntityId> = self.routes.keys().cloned().collect();
                v.sort();
                v
            }
            EstablishTargets::Invite(list) => list,
        };
        if pnes.is_empty() {
            return Err(CommandError::NotAllowed("no PNE to invite"));
        }
        if self.flows_in_progress() >= self.cfg.limits.flows {
            return Err(CommandError::Busy);
        }
        let pn_id = PnId::from_bytes(self.rng.array());
        let id = self.commands.next();
        self.begin(now, pn_id, None, &pnes, Some(id));
        Ok(Establishing { id, pn_id })
    }

    /// 000 §6.6.1.1 step 1: a PNE asks for a PN; step 2: the PN GW invites the others.
    pub(super) fn on_pne_setup_request(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: PnSetupRequest,
    ) {
        let (Some(setup), Some(join)) = (m.setup, m.join) else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::BadRequest,
                "a PN Setup Request from a PNE needs a setup type and its join information",
            );
        };
        if !self.identify(link, &join.pne_id) {
            return self.reject_pan(
                link,
                env,
                ErrorCode::Forbidden,
                "a PNE speaks only for itself",
            );
        }
        if !join_fits(&join) {
            return self.reject_pan(
                link,
                env,
                ErrorCode::BadRequest,
                "the join information is larger than the PN GW takes (16 KiB)",
            );
        }
        if self.forming.values().any(|f| {
            f.initiator
                .as_ref()
                .is_some_and(|i| i.pne == join.pne_id && i.request_id == m.request_id)
        }) {
            return; // retried while in progress: the answer will come
        }
        if !self.wan_ready() {
            return self.reject_pan(
                link,
                env,
                ErrorCode::Busy,
                "the PN GW has no connection to the CPNS Server",
            );
        }
        // One set-up at a time per PNE, and no more flows than the limits allow.
        if self
            .forming
            .values()
            .any(|f| f.initiator.as_ref().is_some_and(|i| i.pne == join.pne_id))
        {
            return self.reject_pan(
                link,
                env,
                ErrorCode::Busy,
                "a PN set-up of this PNE is in progress",
            );
        }
        if let Some(reason) = self.over_limit(link) {
            return self.reject_pan(link, env, ErrorCode::Busy, reason);
        }
        let pn_id = PnId::from_bytes(self.rng.array());
        let pnes: Vec<EntityId> = match setup {
            SetupType::OneToOne => Vec::new(),
            SetupType::All => {
                let mut v: Vec<EntityId> = self
                    .routes
                    .keys()
                    .filter(|p| **p != join.pne_id)
                    .cloned()
                    .collect();
                v.sort();
                v
            }
            SetupType::Invite(list) => list.into_iter().filter(|p| *p != join.pne_id).collect(),
        };
        let initiator = Initiator {
            pne: join.pne_id.clone(),
            link,
            setup_msg: env.msg_id,
            request_id: m.request_id,
        };
        self.begin(now, pn_id, Some((initiator, join)), &pnes, None);
    }

    fn begin(
        &mut self,
        now: Instant,
        pn_id: PnId,
        initiator: Option<(Initiator, JoinInfo)>,
        pnes: &[EntityId],
        cmd: Option<CommandId>,
    ) {
        let mut forming = Forming {
            pn_id,
            initiator: None,
            stage: Stage::Inviting {
                invited: BTreeMap::new(),
            },
            joins: Vec::new(),
            request_id: RequestId(self.rng.u64()),
            deadline: now + self.cfg.timeouts.invite,
            cmd,
        };
        let mut invited = BTreeMap::new();
        let initiator_id = initiator.as_ref().map(|(i, _)| i.pne.clone());
        if let Some((i, join)) = initiator {
            forming.joins.push((i.link, join));
            forming.initiator = Some(i);
        }
        for pne in pnes {
            // A PNE the PN GW cannot reach is left out.
            let Some(&link) = self.routes.get(pne) else {
                continue;
            };
            let invite = PnSetupRequest {
                request_id: forming.request_id,
                setup: None,
                join: None,
                pn_id: Some(pn_id),
                initiator: initiator_id.clone(),
            };
            let msg = self.send_pan_request(link, invite);
            invited.insert(pne.clone(), (link, msg));
        }
        let nobody_invited = invited.is_empty();
        forming.stage = Stage::Inviting { invited };
        self.forming.insert(pn_id, forming);
        if nobody_invited {
            self.register(now, pn_id);
        }
    }

    /// 000 §6.6.1.1 step 3 / §6.6.1.2 steps 3-4: an invited PNE accepts or declines.
    pub(super) fn on_invitation_answer(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: PnSetupResponse,
    ) {
        let Some(pne) = self.links.get(&link).and_then(|l| l.peer.clone()) else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "no invitation was sent on this link",
            );
        };
        let Some(f) = self.forming.get_mut(&m.pn_id) else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "no invitation to this PN is open",
            );
        };
        let Stage::Inviting { invited } = &mut f.stage else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "no invitation to this PN is open",
            );
        };
        if invited.get(&pne) != Some(&(link, env.in_reply_to.unwrap_or(0))) {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "not an answer to an invitation",
            );
        }
        invited.remove(&pne);
        let everyone_answered = invited.is_empty();
        // A PNE that declines, or sends more than the PN GW relays, is left out of the PN.
        if let Some(join) = m
            .join
            .filter(|j| m.accept && j.pne_id == pne && join_fits(j))
        {
            f.joins.push((link, join));
        }
        if everyone_answered {
            self.register(now, m.pn_id);
        }
    }

    /// 000 §6.6.1.1 step 4 / §6.6.1.2 step 5: PN Registration Request to the server.
    fn register(&mut self, now: Instant, pn_id: PnId) {
        let Some(f) = self.forming.get(&pn_id) else {
            return;
        };
        if f.joins.is_empty() {
            return self.fail_forming(pn_id, ErrorCode::Declined, Failure::NoPneAccepted);
        }
        let req = PnRegistrationRequest {
            request_id: f.request_id,
            pn_id,
            gateway: GatewayInfo {
                gw_id: self.cfg.id.clone(),
                capabilities: self.cfg.capabilities.clone(),
                subscription: self.cfg.subscription.clone(),
            },
            // As the PNEs said it: their proofs cover it (docs/security.md §4.1).
            pnes: f.joins.iter().map(|(_, j)| j.clone()).collect(),
            initiator: f.initiator.as_ref().map(|i| i.pne.clone()),
            lifetime_s: self.cfg.pn_lifetime_s,
            max_members: self.cfg.pn_max_members,
        };
        let Some(msg) = self.send_wan_request(req) else {
            return self.fail_forming(pn_id, ErrorCode::BadRequest, Failure::TooLarge);
        };
        let flow = self.cfg.timeouts.flow;
        if let Some(f) = self.forming.get_mut(&pn_id) {
            f.stage = Stage::Registering { reg_msg: msg };
            f.deadline = now + flow;
        }
    }

    /// 000 §6.6.1.1 steps 6-7 / §6.6.1.2 steps 7-8: unwrap the PN GW's LocalEUKey copies and
    /// relay the Authentication Request to each PNE by the routing table.
    pub(super) fn on_server_auth_request(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: AuthenticationRequest,
    ) {
        if m.purpose != AuthPurposeCode::Establishment {
            let e = ErrorBody::new(
                ErrorCode::BadRequest,
                "registration authentication is addressed to the PNE",
            );
            return self.send_wan_response(env.msg_id, e);
        }
        let registering = self.forming.get(&m.pn_id).and_then(|f| match f.stage {
            Stage::Registering { reg_msg } => Some((f, reg_msg)),
            _ => None,
        });
        let Some((f, reg_msg)) = registering else {
            let e = ErrorBody::new(
                ErrorCode::WrongState,
                "no registration of this PN is in progress",
            );
            return self.send_wan_response(env.msg_id, e);
        };
        let mut local_keys = BTreeMap::new();
        let mut wrapped_for_gw = Vec::new();
        let rand_server = crate::util::rand_of(&m.rand_server);
        for w in &m.local_keys {
            // Step 6: the copy is bound to this establishment's rand_server, sent alongside.
            let binding = KeyBinding {
                pn_id: m.pn_id.as_bytes(),
                pne_id: w.pne_id.as_str(),
                gw_id: self.cfg.id.as_str(),
                rand_server: &rand_server,
            };
            match unwrap_local_eukey(&self.cfg.eukey, Recipient::Gateway, &binding, &w.for_gw) {
                Ok(k) => {
                    local_keys.insert(w.pne_id.clone(), k);
                    let stored = stored_wrapped_key(&rand_server, &w.for_gw);
                    wrapped_for_gw.push((w.pne_id.clone(), stored));
                }
                Err(e) => {
                    let reason = format!(
                        "the PN GW's LocalEUKey copy for {} did not unwrap: {e}",
                        w.pne_id
                    );
                    self.send_wan_response(
                        env.msg_id,
                        ErrorBody::new(ErrorCode::Unauthenticated, reason.clone()),
                    );
                    return self.fail_forming(
                        m.pn_id,
                        ErrorCode::Unauthenticated,
                        Failure::LocalKeyDidNotUnwrap,
                    );
                }
            }
        }
        let initiator = f.initiator.as_ref().map(|i| (i.pne.clone(), i.request_id));
        let joined: BTreeMap<EntityId, LinkId> = f
            .joins
            .iter()
            .map(|(l, j)| (j.pne_id.clone(), *l))
            .collect();
        let mut pending = BTreeMap::new();
        for pne in &m.pnes {
            let Some(&link) = joined.get(pne).filter(|l| self.links.contains_key(l)) else {
                continue;
            };
            let mine = m
                .local_keys
                .iter()
                .find(|w| &w.pne_id == pne)
                .map(|w| WrappedLocalKeys {
                    pne_id: w.pne_id.clone(),
                    for_pne: w.for_pne.clone(),
                    for_gw: Vec::new(),
                });
            let relay = AuthenticationRequest {
                pn_id: m.pn_id,
                rand_server: m.rand_server,
                local_keys: mine.into_iter().collect(),
                purpose: AuthPurposeCode::Establishment,
                pnes: vec![pne.clone()],
                request_id: initiator
                    .as_ref()
                    .filter(|(i, _)| i == pne)
                    .map(|(_, r)| *r),
            };
            let msg = self.send_pan_request(link, relay);
            pending.insert(pne.clone(), (link, msg));
        }
        let invite = self.cfg.timeouts.invite;
        let Some(f) = self.forming.get_mut(&m.pn_id) else {
            return;
        };
        let nobody = pending.is_empty();
        f.stage = Stage::Authenticating {
            reg_msg,
            server_auth_msg: env.msg_id,
            pending,
            hashes: Vec::new(),
            keys: PnKeys {
                local: local_keys,
                stored: wrapped_for_gw,
            },
        };
        f.deadline = now + invite;
        if nobody {
            self.relay_hashes(now, m.pn_id);
        }
    }

    /// 000 §6.6.1.1 steps 8-9: a PNE's Authentication Response with its hash_PNE.
    pub(super) fn on_pne_auth_response(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: AuthenticationResponse,
    ) {
        if m.purpose == AuthPurposeCode::Registration {
            return self.relay_up_response(now, link, env);
        }
        let Some(pne) = self.links.get(&link).and_then(|l| l.peer.clone()) else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "no Authentication Request was sent on this link",
            );
        };
        let secure = self.link_secure(link);
        let authenticating = self
            .forming
            .get_mut(&m.pn_id)
            .and_then(|f| match &mut f.stage {
                Stage::Authenticating {
                    pending, hashes, ..
                } => Some((pending, hashes)),
                _ => None,
            });
        let Some((pending, hashes)) = authenticating else {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "no authentication of this PN is in progress",
            );
        };
        if pending.get(&pne) != Some(&(link, env.in_reply_to.unwrap_or(0))) {
            return self.reject_pan(
                link,
                env,
                ErrorCode::WrongState,
                "not an answer to an Authentication Request",
            );
        }
        pending.remove(&pne);
        // On an insecure PAN, PN GW authentication must come first: a hash that reaches the PN
        // GW plain there is dropped (the PNE is left out), with a LocalEUKey or without.
        if secure {
            hashes.extend(m.hashes.into_iter().filter(|h| h.pne_id == pne));
        }
        if pending.is_empty() {
            self.relay_hashes(now, m.pn_id);
        }
    }

    /// 000 §6.6.1.1 step 10: relay the PNEs' hashes to the server in one response.
    fn relay_hashes(&mut self, now: Instant, pn_id: PnId) {
        let flow = self.cfg.timeouts.flow;
        if !self
            .forming
            .get(&pn_id)
            .is_some_and(|f| matches!(f.stage, Stage::Authenticating { .. }))
        {
            return;
        }
        let Some(mut f) = self.forming.remove(&pn_id) else {
            return;
        };
        let Stage::Authenticating {
            reg_msg,
            server_auth_msg,
            hashes,
            keys,
            ..
        } = f.stage
        else {
            return;
        };
        f.stage = Stage::AwaitVerdict { reg_msg, keys };
        f.deadline = now + flow;
        self.forming.insert(pn_id, f);
        let resp = AuthenticationResponse {
            pn_id,
            hashes,
            purpose: AuthPurposeCode::Establishment,
            request_id: None,
        };
        self.send_wan_response(server_auth_msg, resp);
    }

    /// 000 §6.6.1.1 step 12 (received) → 13: store the PN inventory locally.
    pub(super) fn on_registration_response(
        &mut self,
        now: Instant,
        env: &Envelope,
        m: PnRegistrationResponse,
    ) {
        let pn_id = m.pn_id;
        let answers = |f: &Forming| matches!(f.stage, Stage::AwaitVerdict { reg_msg, .. } if Some(reg_msg) == env.in_reply_to);
        if !self.forming.get(&pn_id).is_some_and(answers) {
            return;
        }
        let Some(mut f) = self.forming.remove(&pn_id) else {
            return;
        };
        let Stage::AwaitVerdict { keys, .. } = f.stage else {
            return;
        };
        let authenticated: Vec<&EntityId> = m
            .verdicts
            .iter()
            .filter(|v| v.authenticated)
            .map(|v| &v.pne_id)
            .collect();
        let wrapped_keys = keys
            .stored
            .iter()
            .filter(|(p, _)| authenticated.contains(&p))
            .cloned()
            .collect();
        // Beyond the documents: this PN GW releases the PN when its lifetime ends.
        let expires_at = self.expiry_of_new_pn(now);
        let state = LocalPnState {
            inventory: m.inventory.clone(),
            wrapped_keys,
            own: None,
            expires_at,
        };
        f.stage = Stage::Persisting {
            keys,
            verdict: Box::new(m),
            expires_at,
        };
        self.forming.insert(pn_id, f);
        self.persist(Parked::Establishment(pn_id), state);
    }

    /// 000 §6.6.1.1 steps 14-15 / §6.6.1.2 steps 15-16: the PN is stored; tell the PNEs, each
    /// with its hash_server_PNE.
    pub(super) fn establishment_persisted(
        &mut self,
        _now: Instant,
        pn_id: PnId,
        result: Result<(), crate::StoreFailure>,
    ) {
        if let Err(e) = result {
            return self.fail_forming(pn_id, ErrorCode::Internal, Failure::Store(e));
        }
        let Some(f) = self.forming.remove(&pn_id) else {
            return;
        };
        let Stage::Persisting {
            keys: pn_keys,
            verdict,
            expires_at,
        } = f.stage
        else {
            return;
        };
        let authenticated: Vec<EntityId> = verdict
            .verdicts
            .iter()
            .filter(|v| v.authenticated)
            .map(|v| v.pne_id.clone())
            .collect();
        let keys = pn_keys
            .local
            .into_iter()
            .filter(|(p, _)| authenticated.contains(p))
            .collect();
        let state = LocalPnState {
            inventory: verdict.inventory.clone(),
            wrapped_keys: pn_keys
                .stored
                .iter()
                .filter(|(p, _)| authenticated.contains(p))
                .cloned()
                .collect(),
            own: None,
            expires_at,
        };
        if let Some(at) = expires_at.and_then(|at| self.instant_of(at)) {
            self.expiries.insert((at, pn_id));
        }
        self.pns.insert(pn_id, LocalPn::new(state, keys));
        if let Some(epoch) = verdict.epoch {
            self.saw_epoch(&pn_id, epoch);
        }
        // The server holds the PN pending until this report confirms it is stored here.
        self.report_stored(pn_id);
        let initiator = f.initiator.as_ref().map(|i| i.pne.clone());
        let cmd = f.cmd;
        for (link, join) in &f.joins {
            let v = verdict.verdicts.iter().find(|v| v.pne_id == join.pne_id);
            let hash_server = v.and_then(|v| v.hash_server);
            // Its copy of the PN's first group key, which this PN GW cannot open.
            let sealed_key = v.and_then(|v| v.sealed_key.clone());
            let epoch = sealed_key.as_ref().and(verdict.epoch);
            // The server authenticated the hash this link relayed, sealed (or on a trusted
            // bearer): the link is the PNE.
            if v.is_some_and(|v| v.authenticated)
                && self.link_secure(*link)
                && self.links.get(link).and_then(|l| l.peer.as_ref()) == Some(&join.pne_id)
            {
                self.prove(*link);
            }
            let is_initiator = initiator.as_ref() == Some(&join.pne_id);
            match (&f.initiator, is_initiator, hash_server) {
                // Step 14: the initiator gets the PN Setup Response.
                (Some(i), true, Some(h)) => {
                    let resp = PnSetupResponse {
                        pn_id,
                        accept: true,
                        join: None,
                        inventory: Some(verdict.inventory.clone()),
                        hash_server: Some(h),
                        epoch,
                        sealed_key,
                    };
                    self.send_pan_response(i.link, i.setup_msg, resp);
                }
                (Some(i), true, None) => {
                    let e = ErrorBody::new(
                        ErrorCode::Unauthenticated,
                        "the CPNS Server did not authenticate this PNE",
                    );
                    self.send_pan_response(i.link, i.setup_msg, e);
                }
                // Step 15: the others get the PN Establishment Notify.
                (_, _, hash_server) => {
                    let notify = PnEstablishmentNotify {
                        pn_id,
                        inventory: hash_server.map(|_| verdict.inventory.clone()),
                        hash_server,
                        reason: hash_server.is_none().then(|| {
                            // Another user's PNE left out hears its home PN GW's answer.
                            match v.and_then(|v| v.refused.as_ref()) {
                                Some(e) => format!("{}: {}", e.code.name(), e.reason),
                                None => "the CPNS Server did not authenticate this PNE".into(),
                            }
                        }),
                        epoch,
                        sealed_key,
                    };
                    self.send_pan_notify(*link, notify);
                }
            }
        }
        match cmd {
            Some(id) => {
                let established = Outcome::Established {
                    inventory: verdict.inventory,
                };
                self.complete(id, Flow::PnEstablishment, Ok(established));
            }
            None => self.event(GatewayEvent::PnEstablished {
                inventory: verdict.inventory,
                initiator,
            }),
        }
    }

    /// Ends a PN being formed, telling every PNE involved why.
    pub(super) fn fail_forming(&mut self, pn_id: PnId, code: ErrorCode, failure: Failure) {
        let Some(f) = self.forming.remove(&pn_id) else {
            return;
        };
        let reason = failure.to_string();
        if let Some(i) = &f.initiator {
            self.send_pan_response(i.link, i.setup_msg, ErrorBody::new(code, reason.clone()));
        }
        let initiator = f.initiator.as_ref().map(|i| &i.pne);
        for (link, join) in &f.joins {
            if Some(&join.pne_id) != initiator {
                let notify = PnEstablishmentNotify {
                    pn_id,
                    inventory: None,
                    hash_server: None,
                    reason: Some(reason.clone()),
                    epoch: None,
                    sealed_key: None,
                };
                self.send_pan_notify(*link, notify);
            }
        }
        match f.cmd {
            Some(id) => self.complete(id, Flow::PnEstablishment, Err(failure)),
            None => self.event(GatewayEvent::EstablishmentFailed {
                pn_id,
                reason: failure,
            }),
        }
    }

    /// An error from the server answering the PN Registration Request.
    pub(super) fn fail_forming_by_msg(
        &mut self,
        _now: Instant,
        reply_to: u64,
        e: &ErrorBody,
    ) -> bool {
        let Some(pn) = self
            .forming
            .values()
            .find(|f| f.reg_msg() == Some(reply_to))
            .map(|f| f.pn_id)
        else {
            return false;
        };
        self.fail_forming(pn, e.code, Failure::Refused(e.clone()));
        true
    }

    pub(super) fn fail_all_forming(&mut self, _now: Instant, reason: Failure) {
        let all: Vec<PnId> = self.forming.keys().copied().collect();
        for pn in all {
            self.fail_forming(pn, ErrorCode::Timeout, reason.clone());
        }
    }

    /// Whether a PN being formed waits for an answer to message `msg` sent on `link`.
    pub(super) fn forming_awaits(&self, link: LinkId, msg: u64) -> bool {
        self.forming.values().any(|f| match &f.stage {
            Stage::Inviting { invited: waiting }
            | Stage::Authenticating {
                pending: waiting, ..
            } => waiting.values().any(|&(l, m)| l == link && m == msg),
            _ => false,
        })
    }

    /// A PNE left: it no longer answers invitations or authentication.
    pub(super) fn pne_gone(&mut self, now: Instant, pne: &EntityId) {
        let mut ready = Vec::new();
        for f in self.forming.values_mut() {
            let inviting = matches!(f.stage, Stage::Inviting { .. });
            let pn_id = f.pn_id;
            if let Some(waiting) = f.awaited()
                && waiting.remove(pne).is_some()
                && waiting.is_empty()
            {
                ready.push((pn_id, inviting));
            }
        }
        for (pn, invited) in ready {
            if invited {
                self.register(now, pn)
            } else {
                self.relay_hashes(now, pn)
            }
        }
    }

    /// Deadlines: unanswered invitations count as declined, unanswered authentication as not
    /// authenticated; a silent server ends the establishment.
    pub(super) fn establishment_timeouts(&mut self, now: Instant) {
        let expired: Vec<(PnId, bool, bool)> = self
            .forming
            .values()
            .filter(|f| f.wait_deadline().is_some_and(|d| d <= now))
            .map(|f| {
                (
                    f.pn_id,
                    matches!(f.stage, Stage::Inviting { .. }),
                    matches!(f.stage, Stage::Authenticating { .. }),
                )
            })
            .collect();
        for (pn, inviting, authenticating) in expired {
            if inviting {
                if let Some(waiting) = self.forming.get_mut(&pn).and_then(Forming::awaited) {
                    waiting.clear();
                }
                self.register(now, pn);
            } else if authenticating {
                self.relay_hashes(now, pn);
            } else {
                self.fail_forming(pn, ErrorCode::Timeout, Failure::TimedOut);
            }
        }
    }
}
