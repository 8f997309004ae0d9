//! Delivery sessions at the server (004 §5.5.8; docs/services.md, "Delivery"): a source offers
//! content to members of its PN (`cpns.delivery.offer`, a secure call); the server checks each
//! target is a member of that PN with a secure session, draws the session's key, opens the
//! delivery records (the operator's charging basis), tells the PN GW what to relay (Delivery
//! Route, on its session), tells each target end to end (`cpns.delivery.offered`), and answers
//! the source with the key. A target ends its part (`cpns.delivery.done`), which closes its
//! record. The content never passes through here within a PN: the PN GW relays it, sealed under
//! the session's key, unable to read it.

use std::time::Instant;

use cpns_crypto::DeliveryKey;
use cpns_wire::{
    DELIVERY_DONE, DELIVERY_OFFER, DELIVERY_OFFERED, DELIVERY_REQUEST, DELIVERY_REQUESTED,
    DeliveryDone, DeliveryGrant, DeliveryId, DeliveryInvite, DeliveryOffer, DeliveryRequest,
    DeliveryRequested, DeliveryRoute, EntityId, ErrorCode, KeyBytes, MAX_REQUIRES, UserId,
};

use cpns_service::Requirements;

use super::groups::Reach;
use super::secure::Call;
use super::{Load, Parked, Persisted, ServerEffect, ServerSession};

/// Most targets of one session.
pub const MAX_TARGETS: usize = 16;
/// Most items of one session: services delivered in it one after another (004 §5.5.8.2,
/// "Supporting single/multiple services").
pub const MAX_ITEMS: usize = 8;
/// Largest content of one session, in bytes (64 GiB).
pub const MAX_SIZE: u64 = 64 << 30;
/// The largest chunk's content, in bytes.
pub const CHUNK: u32 = 64 * 1024;
/// How many bytes a source sends past what every target acknowledged: seven chunks, so that
/// what a PN GW holds for a target link stays within half the bound of what a proven PAN link
/// may leave unread (1 MiB, `cpns_node::frames::PAN_MAX_QUEUED`), since a relaying PN GW cuts
/// off a link that does not read; the WAN's connections, bounded at 256 KiB, pace it
/// (ARCHITECTURE decision 50). Seven chunks in place of three: a push 10-16 % faster on the
/// host of BENCHMARKS.md "A window of seven chunks on proven PAN links".
pub const WINDOW: u32 = 7 * CHUNK;

/// Whether `service` is one of delivery's secure calls.
pub(super) fn is_delivery(service: &str) -> bool {
    [
        DELIVERY_OFFER,
        DELIVERY_DONE,
        DELIVERY_REQUEST,
        cpns_wire::DELIVERY_MESSAGE,
    ]
    .contains(&service)
}

/// A small payload in band for one PNE, waiting for that PNE's PN.
#[derive(Debug)]
pub(super) struct MessageLoad {
    call: Call,
    m: cpns_wire::DeliveryMessage,
    now_ms: i64,
}

impl MessageLoad {
    pub(super) fn asker(&self) -> (u64, cpns_wire::Address) {
        self.call.asker()
    }
}

/// A consumer's request for content (pull) waiting for the member's PN.
#[derive(Debug)]
pub(super) struct RequestLoad {
    call: Call,
    req: DeliveryRequest,
    now_ms: i64,
}

impl RequestLoad {
    pub(super) fn asker(&self) -> (u64, cpns_wire::Address) {
        self.call.asker()
    }
}

/// A text field of a delivery message: 1 to `max` characters, none a control character; else
/// why not, naming it as `what`.
fn text(what: &str, s: &str, max: usize) -> Result<(), String> {
    let n = s.chars().count();
    if n == 0 || n > max || s.chars().any(char::is_control) {
        return Err(format!(
            "{what} is 1 to {max} characters, none a control character"
        ));
    }
    Ok(())
}

/// What is wrong with `asker`'s request for content (pull), if anything.
pub(crate) fn check_request(req: &DeliveryRequest, asker: &EntityId) -> Result<(), String> {
    text("a service id", &req.service_id, 64)?;
    text("a content name", &req.name, 255)?;
    if req.source == *asker {
        return Err("a PNE does not ask itself for content".into());
    }
    Ok(())
}

/// What is wrong with an offer, if anything.
pub(crate) fn check_offer(o: &DeliveryOffer, source: &EntityId) -> Result<(), String> {
    text("a service id", &o.service_id, 64)?;
    text("a content name", &o.name, 255)?;
    text("a media type", &o.media_type, 127)?;
    requirements(o)?;
    // None named: every other member of the PN (by capability: one of them).
    if o.targets.len() > MAX_TARGETS {
        return Err(format!(
            "a delivery has at most {MAX_TARGETS} targets (none: every other member of the PN)"
        ));
    }
    if o.targets.contains(source) {
        return Err("a source does not deliver to itself".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = o.targets.iter().find(|t| !seen.insert(*t)) {
        return Err(format!("{twice} is named twice"));
    }
    if o.size == 0 || o.size > MAX_SIZE {
        return Err(format!("content is 1 byte to {} GiB", MAX_SIZE >> 30));
    }
    if o.more.len() >= MAX_ITEMS {
        return Err(format!(
            "a session carries at most {MAX_ITEMS} items (services delivered in it)"
        ));
    }
    let mut names = std::collections::BTreeSet::from([o.name.as_str()]);
    for i in &o.more {
        if !names.insert(i.name.as_str()) {
            return Err(format!(
                "two items are named \"{}\": each item of a session has its own name",
                i.name.escape_debug()
            ));
        }
        text("an item's service id", &i.service_id, 64)?;
        text("an item's name", &i.name, 255)?;
        text("an item's media type", &i.media_type, 127)?;
        if i.size == 0 {
            return Err(format!(
                "item \"{}\" is empty: an item is 1 byte or more",
                i.name
            ));
        }
        // Hashed before the offer, or signed with the last chunk: one or the other for all.
        if i.sha256.is_some() != o.sha256.is_some() {
            return Err(format!(
                "item \"{}\" {} a SHA-256 and the first item {}: every item of an offer has \
                 one, or none has (their digest then comes with the last chunk)",
                i.name.escape_debug(),
                if i.sha256.is_some() { "has" } else { "has no" },
                if o.sha256.is_some() {
                    "has"
                } else {
                    "has none"
                },
            ));
        }
    }
    if o.total() > MAX_SIZE {
        return Err(format!(
            "a session's items together are at most {} GiB",
            MAX_SIZE >> 30
        ));
    }
    let named = !o.targets.is_empty() || o.to_pn.is_some() || !o.requires.is_empty();
    if o.group.is_some() && (named || o.user.is_some()) {
        return Err(
            "an offer to a service group names no targets, no other PN, no user and no \
                    requirements: the group's members are its targets"
                .into(),
        );
    }
    if o.user.is_some() && named {
        return Err(
            "an offer to a user names no targets, no other PN and no requirements: the \
                    user's devices are its targets"
                .into(),
        );
    }
    suite_of(o.suite)?;
    Ok(())
}

/// The suite a delivery's chunks are sealed in, from its code (absent: ChaCha20-Poly1305).
pub(crate) fn suite_of(code: Option<u8>) -> Result<cpns_crypto::Suite, String> {
    let code = code.unwrap_or(cpns_crypto::Suite::ChaCha20Poly1305.code());
    cpns_crypto::Suite::from_code(code).ok_or_else(|| {
        format!("no AEAD suite has code {code} (1 chacha20-poly1305, 2 aes-256-gcm)")
    })
}

/// What is wrong with a small payload for one PNE from `sender`, if anything.
pub(crate) fn check_message(
    m: &cpns_wire::DeliveryMessage,
    sender: &EntityId,
) -> Result<(), String> {
    text("a service id", &m.service_id, 64)?;
    text("a media type", &m.media_type, 127)?;
    if m.payload.len() > cpns_wire::MAX_MESSAGE {
        return Err(format!(
            "a message carries at most {} bytes: deliver more as content",
            cpns_wire::MAX_MESSAGE
        ));
    }
    if m.peer == *sender {
        return Err("a PNE does not send itself a message".into());
    }
    Ok(())
}

/// What an offer by capability requires of its target (`requires`, JSON as a service
/// description's), or why it is not that; none for an offer that is not by capability.
pub(crate) fn requirements(o: &DeliveryOffer) -> Result<Option<Requirements>, String> {
    if o.requires.is_empty() {
        return Ok(None);
    }
    if o.requires.len() > MAX_REQUIRES {
        return Err(format!("`requires` is at most {MAX_REQUIRES} bytes"));
    }
    cpns_service::parse_requirements(&o.requires)
        .map(Some)
        .map_err(|e| format!("`requires` is not a service description's requirements: {e}"))
}

/// The target an offer by capability goes to: the first of `candidates` (in their order) with
/// a secure session key in the PN `l` read, capabilities of record that fit `req`, and a status
/// of record online.
fn pick(
    req: &Requirements,
    candidates: &[EntityId],
    l: &super::PnLoaded,
    statuses: &[crate::status::EntityState],
) -> Option<EntityId> {
    let members = l.pn.as_ref().map(|p| &p.inventory.members)?;
    candidates
        .iter()
        .find(|c| {
            let keyed = l.member_keys.iter().any(|(e, _)| e == *c);
            let fits = members
                .iter()
                .find(|m| m.pne_id == **c)
                .and_then(|m| m.capabilities.as_ref())
                .is_some_and(|caps| req.fits(caps));
            let online = statuses
                .iter()
                .any(|s| s.entity == **c && s.status == cpns_wire::Status::Online);
            keyed && fits && online
        })
        .cloned()
}

/// An offer by capability whose candidates' statuses are being read.
#[derive(Debug)]
pub(super) struct PickLoad {
    call: Call,
    offer: DeliveryOffer,
    now_ms: i64,
    req: Requirements,
    candidates: Vec<EntityId>,
    l: Box<super::PnLoaded>,
}

impl PickLoad {
    pub(super) fn asker(&self) -> (u64, cpns_wire::Address) {
        self.call.asker()
    }
}

/// An offer waiting for its PN.
#[derive(Debug)]
pub(super) struct DeliveryLoad {
    call: Call,
    offer: DeliveryOffer,
    now_ms: i64,
}

impl DeliveryLoad {
    pub(super) fn into_parts(self) -> (Call, DeliveryOffer, i64) {
        (self.call, self.offer, self.now_ms)
    }

    pub(super) fn asker(&self) -> (u64, cpns_wire::Address) {
        self.call.asker()
    }
}

/// An offer to members of another PN, its source's PN read, waiting for the targets' PN.
#[derive(Debug)]
pub(super) struct ForwardLoad {
    call: Call,
    offer: DeliveryOffer,
    now_ms: i64,
    /// The source's user.
    owner: UserId,
}

impl ForwardLoad {
    pub(super) fn asker(&self) -> (u64, cpns_wire::Address) {
        self.call.asker()
    }
}

/// An offer whose records are being opened: what follows once they are.
#[derive(Debug)]
pub(super) struct DeliveryOpened {
    call: Call,
    now_ms: i64,
    route: DeliveryRoute,
    /// The targets' PN GW and its route, when it is another PN GW (forwarding).
    far: Option<(EntityId, DeliveryRoute)>,
    invites: Vec<(Reach, DeliveryInvite)>,
    grant: DeliveryGrant,
    /// The other sessions of an offer to a service group, opened with it.
    more: Vec<SetUp>,
}

impl DeliveryOpened {
    /// `first`'s opening, with `more` sessions of the same offer, answered with `grant`.
    pub(super) fn new(
        call: Call,
        now_ms: i64,
        first: SetUp,
        more: Vec<SetUp>,
        grant: DeliveryGrant,
    ) -> Self {
        Self {
            call,
            now_ms,
            route: first.route,
            far: first.far,
            invites: first.invites,
            grant,
            more,
        }
    }
}

/// Where a session's targets are, as its set-up checks them.
#[derive(Clone, Copy, Debug)]
pub(super) enum Targets {
    /// Members of the PN read, which this session's PN GW serves: the PN the source offers in,
    /// or (`from_server`) the one an external entity delivers to.
    Here {
        /// The source sends through the server.
        from_server: bool,
    },
    /// Members of the PN read, another than the source's (forwarding between PNs, docs/
    /// services.md): served by this session's PN GW too, or by another.
    Forwarded {
        /// The source's PN, which this session's PN GW serves.
        source_pn: cpns_wire::PnId,
    },
}

/// A session set up, before its records are opened.
#[derive(Debug)]
pub(super) struct SetUp {
    pub(super) session: DeliveryId,
    pub(super) key: DeliveryKey,
    /// What this session's PN GW relays.
    pub(super) route: DeliveryRoute,
    /// The targets' PN GW and what it relays, when it is another (forwarding).
    pub(super) far: Option<(EntityId, DeliveryRoute)>,
    /// Each target reached, with its notice.
    pub(super) invites: Vec<(Reach, DeliveryInvite)>,
    /// Each target with the user charged (its own).
    targets: Vec<(EntityId, UserId)>,
    /// The targets' PN, which the records name.
    pn_id: cpns_wire::PnId,
}

impl SetUp {
    /// The records' opening, for `source` offering `offer`: each item at its service's
    /// tariff now (`tariff`, units per started MB by service).
    pub(super) fn effect(
        &self,
        source: &EntityId,
        offer: DeliveryOffer,
        tariff: &std::collections::BTreeMap<String, u64>,
        now_ms: i64,
    ) -> ServerEffect {
        let first = super::RecordItem {
            per_mb: tariff.get(&offer.service_id).copied(),
            service_id: offer.service_id,
            name: offer.name,
            size: offer.size,
        };
        let more = offer.more.into_iter().map(|i| super::RecordItem {
            per_mb: tariff.get(&i.service_id).copied(),
            service_id: i.service_id,
            name: i.name,
            size: i.size,
        });
        ServerEffect::OpenDelivery {
            session: self.session,
            items: std::iter::once(first).chain(more).collect(),
            source: source.clone(),
            pn_id: self.pn_id,
            targets: self.targets.clone(),
            now_ms,
            also: Vec::new(),
        }
    }

    /// Its targets, in order.
    pub(super) fn targets(&self) -> impl Iterator<Item = EntityId> + '_ {
        self.targets.iter().map(|(t, _)| t.clone())
    }

    /// This session's records, as one more part of another's opening.
    pub(super) fn part(&self) -> super::OpenPart {
        super::OpenPart {
            session: self.session,
            pn_id: self.pn_id,
            targets: self.targets.clone(),
        }
    }
}

impl ServerSession {
    /// A delivery call, opened and its number taken.
    pub(super) fn delivery_call(&mut self, now: Instant, c: Call, service: &str, payload: &[u8]) {
        let Some(now_ms) = self.unix_ms(now) else {
            return self.refuse_call(&c, ErrorCode::Internal, "the server has no wall clock");
        };
        let limits = self.cfg.report_limits;
        if let Err(wait) = self.reporting().take_directory(now, &c.pne, limits) {
            let why = crate::rate::retry_in("delivery requests", wait);
            return self.refuse_call(&c, ErrorCode::RateLimited, &why);
        }
        if service == DELIVERY_DONE {
            return self.delivery_done(c, payload, now_ms);
        }
        if service == DELIVERY_REQUEST {
            return self.delivery_request(c, payload, now_ms);
        }
        if service == cpns_wire::DELIVERY_MESSAGE {
            return self.delivery_message(c, payload, now_ms);
        }
        let Ok(offer) = minicbor::decode::<DeliveryOffer>(payload) else {
            let why = "the delivery offer did not decode";
            return self.refuse_call(&c, ErrorCode::BadRequest, why);
        };
        if let Err(why) = check_offer(&offer, &c.pne) {
            return self.refuse_call(&c, ErrorCode::BadRequest, &why);
        }
        // To a user or a service group: where its devices or members are reached is read.
        type Park = fn(Box<DeliveryLoad>) -> Parked;
        let audience: Option<(Load, Park)> = match (&offer.user, offer.group) {
            (Some(user), _) => {
                let load = Load::UserReach {
                    user: user.clone(),
                    asker: c.pne.clone(),
                };
                Some((load, Parked::UserDeliveryLoad))
            }
            (None, Some(group)) => {
                let load = Load::Group {
                    group,
                    asker: c.pne.clone(),
                    also: None,
                    now_ms,
                };
                Some((load, Parked::GroupDeliveryLoad))
            }
            (None, None) => None,
        };
        if let Some((load, park)) = audience {
            let parked = DeliveryLoad {
                call: c,
                offer,
                now_ms,
            };
            return self.load(park(Box::new(parked)), load);
        }
        let mut entities = offer.targets.clone();
        entities.push(c.pne.clone());
        let load = Load::Pn {
            pn: c.pn_id,
            replay: None,
            entities,
            member_keys: true,
        };
        let parked = DeliveryLoad {
            call: c,
            offer,
            now_ms,
        };
        self.load(Parked::DeliveryLoad(Box::new(parked)), load);
    }

    /// The source's PN is read: each target must be a member with a secure session key, and
    /// this PN GW the PN's.
    pub(super) fn delivery_loaded(&mut self, p: DeliveryLoad, mut l: super::PnLoaded) {
        let DeliveryLoad {
            call,
            offer,
            now_ms,
        } = p;
        let Some(source_owner) = l.take_entity(&call.pne).map(|e| e.owner) else {
            return self.refuse_call(&call, ErrorCode::Forbidden, "the source is not enrolled");
        };
        if let Some(to_pn) = offer.to_pn.filter(|p| *p != call.pn_id) {
            let load = Load::Pn {
                pn: to_pn,
                replay: None,
                entities: offer.targets.clone(),
                member_keys: true,
            };
            let parked = ForwardLoad {
                call,
                offer,
                now_ms,
                owner: source_owner,
            };
            return self.load(Parked::ForwardLoad(Box::new(parked)), load);
        }
        if !offer.requires.is_empty() {
            return self.pick_target(call, offer, now_ms, l);
        }
        if offer.targets.is_empty() {
            return self.every_member(call, offer, now_ms, &l);
        }
        let here = Targets::Here { from_server: false };
        self.offer_set_up(call, offer, now_ms, &source_owner, here, &l);
    }

    /// An offer by capability, its targets' PN `l` read: the statuses of record of its
    /// candidates (those it names, or every other member) are read, to pick one.
    fn pick_target(&mut self, call: Call, offer: DeliveryOffer, now_ms: i64, l: super::PnLoaded) {
        let req = match requirements(&offer) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(why) => return self.refuse_call(&call, ErrorCode::BadRequest, &why),
        };
        let candidates: Vec<EntityId> = if offer.targets.is_empty() {
            let mut all: Vec<EntityId> =
                l.pn.iter()
                    .flat_map(|p| p.inventory.members.iter().map(|m| m.pne_id.clone()))
                    .filter(|m| *m != call.pne)
                    .collect();
            all.sort();
            all
        } else {
            offer.targets.clone()
        };
        let load = Load::Statuses {
            asker: call.pne.clone(),
            named: candidates.clone(),
            whole_user: false,
            subscriptions: false,
        };
        let parked = PickLoad {
            call,
            offer,
            now_ms,
            req,
            candidates,
            l: Box::new(l),
        };
        self.load(Parked::PickLoad(Box::new(parked)), load);
    }

    /// The candidates' statuses are read: the one picked becomes the offer's only target, and
    /// the offer is set up as if it had named it (its PN read again, in the same snapshot as
    /// every other offer's).
    pub(super) fn picked(&mut self, p: PickLoad, statuses: super::StatusesLoaded) {
        let PickLoad {
            call,
            mut offer,
            now_ms,
            req,
            candidates,
            l,
        } = p;
        let Some(target) = pick(&req, &candidates, &l, &statuses.statuses) else {
            let why = "no target can take it: none of the candidates is a member with a secure \
                       session whose capabilities of record fit and whose status is online";
            return self.refuse_call(&call, ErrorCode::NotFound, why);
        };
        offer.targets = vec![target];
        offer.requires.clear();
        self.retarget(call, offer, now_ms);
    }

    /// An offer to a whole PN (no target named, 004 §5.5.8 "to ... a PN"): every other member
    /// of the PN `l` read with a secure session becomes a target, and the offer is set up as if
    /// it had named them.
    fn every_member(
        &mut self,
        call: Call,
        mut offer: DeliveryOffer,
        now_ms: i64,
        l: &super::PnLoaded,
    ) {
        let mut all: Vec<EntityId> = l
            .member_keys
            .iter()
            .map(|(e, _)| e.clone())
            .filter(|e| *e != call.pne)
            .collect();
        all.sort();
        all.dedup();
        if all.is_empty() {
            let why = "no other member of the PN has a secure session to deliver to";
            return self.refuse_call(&call, ErrorCode::NotFound, why);
        }
        if all.len() > MAX_TARGETS {
            let why = format!(
                "the PN has {} other members, more than {MAX_TARGETS}: name the targets",
                all.len()
            );
            return self.refuse_call(&call, ErrorCode::BadRequest, &why);
        }
        offer.targets = all;
        self.retarget(call, offer, now_ms);
    }

    /// The offer, its targets now named, set up from its PN read again (as any offer is).
    fn retarget(&mut self, call: Call, offer: DeliveryOffer, now_ms: i64) {
        let mut entities = offer.targets.clone();
        entities.push(call.pne.clone());
        let load = Load::Pn {
            pn: call.pn_id,
            replay: None,
            entities,
            member_keys: true,
        };
        let parked = DeliveryLoad {
            call,
            offer,
            now_ms,
        };
        self.load(Parked::DeliveryLoad(Box::new(parked)), load);
    }

    /// The targets' PN of an offer to members of another PN is read: they may be forwarded to
    /// when that PN is the source's user's, or every target is one of its user's devices.
    pub(super) fn forward_loaded(&mut self, p: ForwardLoad, l: super::PnLoaded) {
        let ForwardLoad {
            call,
            offer,
            now_ms,
            owner,
        } = p;
        let Some(pn) = &l.pn else {
            return self.refuse_call(&call, ErrorCode::NotFound, "no such PN to forward to");
        };
        let own = |t: &EntityId| l.entities.iter().any(|e| e.id == *t && e.owner == owner);
        if pn.owner != owner && !offer.targets.iter().all(own) {
            let why = "forwarding reaches another PN of the source's user, or the source's \
                       user's own devices in another's PN";
            return self.refuse_call(&call, ErrorCode::Forbidden, why);
        }
        if !offer.requires.is_empty() {
            return self.pick_target(call, offer, now_ms, l);
        }
        if offer.targets.is_empty() {
            return self.every_member(call, offer, now_ms, &l);
        }
        let forwarded = Targets::Forwarded {
            source_pn: call.pn_id,
        };
        self.offer_set_up(call, offer, now_ms, &owner, forwarded, &l);
    }

    /// Sets up a PNE's offer whose targets are members of the PN `l` read.
    fn offer_set_up(
        &mut self,
        call: Call,
        offer: DeliveryOffer,
        now_ms: i64,
        source_owner: &UserId,
        targets: Targets,
        l: &super::PnLoaded,
    ) {
        let set_up = match self.set_up(&call.pne, source_owner, &offer, &[], targets, l) {
            Ok(s) => s,
            Err((code, why)) => return self.refuse_call(&call, code, &why),
        };
        let grant = DeliveryGrant {
            session: set_up.session,
            key: KeyBytes(*set_up.key.expose_secret()),
            pn_id: set_up.route.pn_id,
            chunk: CHUNK,
            window: WINDOW,
            size: offer.total(),
            targets: offer.targets.clone(),
            held: offer.held,
            suite: offer.suite,
            also: Vec::new(),
            digest: offer.sha256.is_none(),
        };
        let effect = set_up.effect(&call.pne, offer, &self.cfg.tariff, now_ms);
        let opened = DeliveryOpened::new(call, now_ms, set_up, Vec::new(), grant);
        self.persist(Parked::DeliveryOpened(Box::new(opened)), effect);
    }

    /// A session of `source` (of user `owner`) offering `offer` to members of the PN `l` read,
    /// with `specific` parts for some targets: each target must be a member with a secure
    /// session key, and this session's PN GW the PN's, unless the targets are `Forwarded`.
    /// The refusal's code and words, if not.
    pub(super) fn set_up(
        &mut self,
        source: &EntityId,
        owner: &UserId,
        offer: &DeliveryOffer,
        specific: &[(EntityId, Vec<u8>)],
        where_: Targets,
        l: &super::PnLoaded,
    ) -> Result<SetUp, (ErrorCode, String)> {
        let Some(here) = self.conn.gateway().map(|g| g.id.clone()) else {
            return Err((ErrorCode::WrongState, "no PN GW on this session".into()));
        };
        let Some(pn) = &l.pn else {
            return Err((ErrorCode::NotFound, "the PN is gone".into()));
        };
        if matches!(where_, Targets::Here { .. }) && pn.gateway != here {
            let why = "the PN is served by another PN GW";
            return Err((ErrorCode::Forbidden, why.into()));
        }
        let gw = pn.gateway.clone();
        let pn_id = pn.inventory.pn_id;
        let mut reached = Vec::new();
        for t in &offer.targets {
            // Only a member's SK_PNE is loaded (`member_keys`): having one is being a member.
            let sk = l
                .member_keys
                .iter()
                .find(|(e, _)| e == t)
                .map(|(_, k)| k.clone());
            let target_owner = l
                .entities
                .iter()
                .find(|e| e.id == *t)
                .map(|e| e.owner.clone());
            let (Some(sk), Some(target_owner)) = (sk, target_owner) else {
                let why = format!("{t} is not a member of this PN with a secure session");
                return Err((ErrorCode::NotFound, why));
            };
            reached.push(Reach {
                entity: t.clone(),
                owner: target_owner,
                pn_id,
                session_key: sk,
                gateway: gw.clone(),
            });
        }
        let at = (pn_id, gw);
        Ok(self.set_up_reached(source, owner, offer, specific, where_, &here, at, reached))
    }

    /// A session of `source` (of user `owner`) offering `offer` to `reached`, members of the
    /// PN `at` names, served by the PN GW it names: this session's PN GW (`here`) or, when the
    /// targets are `Forwarded`, maybe another.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_up_reached(
        &mut self,
        source: &EntityId,
        owner: &UserId,
        offer: &DeliveryOffer,
        specific: &[(EntityId, Vec<u8>)],
        where_: Targets,
        here: &EntityId,
        at: (cpns_wire::PnId, EntityId),
        reached: Vec<Reach>,
    ) -> SetUp {
        let (pn_id, gw) = at;
        let session = DeliveryId::from_bytes(self.rng.array());
        let key = DeliveryKey::random(self.rng.get());
        let mut targets: Vec<(EntityId, UserId)> = Vec::new();
        let mut invites = Vec::new();
        for reach in reached {
            let t = reach.entity.clone();
            let target_owner = reach.owner.clone();
            let invite = DeliveryInvite {
                session,
                source: source.clone(),
                owner: owner.clone(),
                service_id: offer.service_id.clone(),
                name: offer.name.clone(),
                media_type: offer.media_type.clone(),
                size: offer.size,
                sha256: offer.sha256,
                key: KeyBytes(*key.expose_secret()),
                pn_id,
                chunk: CHUNK,
                specific: specific
                    .iter()
                    .find(|(e, _)| *e == t)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                held: offer.held,
                suite: offer.suite,
                more: offer.more.clone(),
            };
            invites.push((reach, invite));
            targets.push((t, target_owner));
        }
        let route = DeliveryRoute {
            session,
            pn_id,
            source: source.clone(),
            targets: targets.iter().map(|(t, _)| t.clone()).collect(),
            size: offer.total(),
            chunk: CHUNK,
            from_server: false,
            to_pn: None,
            to_server: false,
        };
        let (route, far) = match where_ {
            Targets::Here { from_server } => (
                DeliveryRoute {
                    from_server,
                    ..route
                },
                None,
            ),
            Targets::Forwarded { source_pn } if gw == *here => (
                DeliveryRoute {
                    pn_id: source_pn,
                    to_pn: Some(pn_id),
                    ..route
                },
                None,
            ),
            Targets::Forwarded { source_pn } => {
                let far = DeliveryRoute {
                    from_server: true,
                    ..route.clone()
                };
                let near = DeliveryRoute {
                    pn_id: source_pn,
                    to_server: true,
                    ..route
                };
                (near, Some((gw, far)))
            }
        };
        SetUp {
            session,
            key,
            route,
            far,
            invites,
            targets,
            pn_id,
        }
    }

    /// The records are open: the PN GW learns the route first, then each target is told, then
    /// the source is answered with the key.
    pub(super) fn delivery_opened(
        &mut self,
        o: DeliveryOpened,
        result: Result<Persisted, crate::StoreFailure>,
    ) {
        if let Err(e) = result {
            return self.refuse_call(&o.call, ErrorCode::Internal, &format!("store: {e}"));
        }
        let first = (o.route, o.far, o.invites);
        let more = o.more.into_iter().map(|s| (s.route, s.far, s.invites));
        for (route, far, invites) in std::iter::once(first).chain(more) {
            if let Some((gateway, far)) = far {
                self.forward_out(&route, gateway, far);
            }
            let env = cpns_wire::Envelope::notify(
                self.ids.next(),
                cpns_wire::Address::Server,
                self.peer(),
                route,
            );
            self.transmit(env);
            for (reach, invite) in &invites {
                self.push(reach, DELIVERY_OFFERED, invite, o.now_ms);
            }
        }
        self.answer_service(&o.call, DELIVERY_OFFER, &o.grant);
    }

    /// A consumer asks a member for content (004 §5.5.8.2, pull): the member's PN is read.
    fn delivery_request(&mut self, c: Call, payload: &[u8], now_ms: i64) {
        let Ok(req) = minicbor::decode::<DeliveryRequest>(payload) else {
            let why = "the delivery request did not decode";
            return self.refuse_call(&c, ErrorCode::BadRequest, why);
        };
        if let Err(why) = check_request(&req, &c.pne) {
            return self.refuse_call(&c, ErrorCode::BadRequest, &why);
        }
        let load = Load::Pn {
            pn: req.to_pn.unwrap_or(c.pn_id),
            replay: None,
            entities: vec![req.source.clone(), c.pne.clone()],
            member_keys: true,
        };
        let parked = RequestLoad {
            call: c,
            req,
            now_ms,
        };
        self.load(Parked::RequestLoad(Box::new(parked)), load);
    }

    /// Where a notice to member `peer` of the PN `l` read goes, for the caller of `call` (and
    /// the caller's user): `peer` must be a member with a secure session, in the caller's PN or
    /// one forwarding reaches (another PN of the caller's user, or the caller's user's own
    /// device); `holding`, if given, a content it declared.
    fn member_reach(
        call: &Call,
        peer: &EntityId,
        holding: Option<&str>,
        l: &super::PnLoaded,
    ) -> Result<(Reach, UserId), (ErrorCode, String)> {
        let Some(pn) = &l.pn else {
            return Err((ErrorCode::NotFound, "no such PN".into()));
        };
        let owner_of = |e: &EntityId| {
            l.entities
                .iter()
                .find(|k| k.id == *e)
                .map(|k| k.owner.clone())
        };
        let (Some(asker), Some(peer_owner)) = (owner_of(&call.pne), owner_of(peer)) else {
            return Err((ErrorCode::NotFound, format!("{peer} is not enrolled")));
        };
        let pn_id = pn.inventory.pn_id;
        if pn_id != call.pn_id && pn.owner != asker && peer_owner != asker {
            let why = "it reaches another PN of the asker's user, or the asker's user's own \
                       devices in another's PN";
            return Err((ErrorCode::Forbidden, why.into()));
        }
        let sk = l
            .member_keys
            .iter()
            .find(|(e, _)| e == peer)
            .map(|(_, k)| k.clone());
        let holds = holding.is_none_or(|name| {
            pn.inventory
                .members
                .iter()
                .any(|m| m.pne_id == *peer && m.contents.iter().any(|c| c.name == name))
        });
        let Some(session_key) = sk.filter(|_| holds) else {
            let why = match holding {
                Some(name) => format!(
                    "{peer} is not a member with a secure session holding \"{name}\" (as it \
                     declared)"
                ),
                None => format!("{peer} is not a member with a secure session"),
            };
            return Err((ErrorCode::NotFound, why));
        };
        let reach = Reach {
            entity: peer.clone(),
            owner: peer_owner,
            pn_id,
            session_key,
            gateway: pn.gateway.clone(),
        };
        Ok((reach, asker))
    }

    /// The member's PN is read: it must be a member with a secure session that declared the
    /// content asked for, in the requester's PN or one forwarding reaches; it is told, end to
    /// end, and the requester answered.
    pub(super) fn request_loaded(&mut self, p: RequestLoad, l: super::PnLoaded) {
        let RequestLoad { call, req, now_ms } = p;
        let (reach, asker) = match Self::member_reach(&call, &req.source, Some(&req.name), &l) {
            Ok(r) => r,
            Err((code, why)) => return self.refuse_call(&call, code, &why),
        };
        let asked = DeliveryRequested {
            requester: call.pne.clone(),
            owner: asker,
            name: req.name.clone(),
            service_id: req.service_id.clone(),
            pn_id: call.pn_id,
        };
        self.push(&reach, DELIVERY_REQUESTED, &asked, now_ms);
        self.answer_service(&call, DELIVERY_REQUEST, &req);
    }

    /// A small payload in band for one PNE (004 §5.5.8): checked, and that PNE's PN read.
    fn delivery_message(&mut self, c: Call, payload: &[u8], now_ms: i64) {
        let Ok(m) = minicbor::decode::<cpns_wire::DeliveryMessage>(payload) else {
            let why = "the message did not decode";
            return self.refuse_call(&c, ErrorCode::BadRequest, why);
        };
        if let Err(why) = check_message(&m, &c.pne) {
            return self.refuse_call(&c, ErrorCode::BadRequest, &why);
        }
        let load = Load::Pn {
            pn: m.pn_id.unwrap_or(c.pn_id),
            replay: None,
            entities: vec![m.peer.clone(), c.pne.clone()],
            member_keys: true,
        };
        let parked = MessageLoad { call: c, m, now_ms };
        self.load(Parked::MessageLoad(Box::new(parked)), load);
    }

    /// The target's PN is read: the payload goes to it end to end, naming its sender, and the
    /// sender is answered (without the payload).
    pub(super) fn message_loaded(&mut self, p: MessageLoad, l: super::PnLoaded) {
        let MessageLoad { call, m, now_ms } = p;
        let (reach, asker) = match Self::member_reach(&call, &m.peer, None, &l) {
            Ok(r) => r,
            Err((code, why)) => return self.refuse_call(&call, code, &why),
        };
        let to = m.peer.clone();
        let notice = cpns_wire::DeliveryMessage {
            peer: call.pne.clone(),
            pn_id: Some(call.pn_id),
            owner: Some(asker),
            ..m
        };
        self.push(&reach, cpns_wire::DELIVERY_MESSAGED, &notice, now_ms);
        let answer = cpns_wire::DeliveryMessage {
            peer: to,
            payload: Vec::new(),
            owner: None,
            ..notice
        };
        self.answer_service(&call, cpns_wire::DELIVERY_MESSAGE, &answer);
    }

    /// A target ends its part: its record is closed once.
    fn delivery_done(&mut self, c: Call, payload: &[u8], now_ms: i64) {
        let Ok(done) = minicbor::decode::<DeliveryDone>(payload) else {
            let why = "the delivery's end did not decode";
            return self.refuse_call(&c, ErrorCode::BadRequest, why);
        };
        if done.target != c.pne {
            let why = "a target ends only its own part of a delivery";
            return self.refuse_call(&c, ErrorCode::Forbidden, why);
        }
        if done.items.len() > MAX_ITEMS {
            let why = format!("a session has at most {MAX_ITEMS} items");
            return self.refuse_call(&c, ErrorCode::BadRequest, &why);
        }
        let results = if done.items.is_empty() {
            vec![done.result.code()]
        } else {
            done.items.iter().map(|r| r.code()).collect()
        };
        let effect = ServerEffect::CloseDelivery {
            session: done.session,
            target: done.target.clone(),
            bytes: done.bytes,
            results,
            now_ms,
        };
        self.persist(Parked::DeliveryClosed(Box::new((c, done))), effect);
    }

    /// A target's record is closed, or it had none open.
    pub(super) fn delivery_closed(
        &mut self,
        c: Call,
        done: DeliveryDone,
        result: Result<Persisted, crate::StoreFailure>,
    ) {
        match result {
            Ok(Persisted::Removed(true)) => self.answer_service(&c, DELIVERY_DONE, &done),
            Ok(_) => {
                let why = format!(
                    "no open delivery {} for {}: ended already, or never its",
                    done.session, done.target
                );
                self.refuse_call(&c, ErrorCode::NotFound, &why);
            }
            // Results for another number of items than the session's.
            Err(crate::StoreFailure::Conflict(why)) => {
                self.refuse_call(&c, ErrorCode::BadRequest, &why);
            }
            Err(e) => self.refuse_call(&c, ErrorCode::Internal, &format!("store: {e}")),
        }
    }
}
