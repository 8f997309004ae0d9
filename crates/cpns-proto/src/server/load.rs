//! What the server's machine asks its driver to read (docs/ARCHITECTURE.md decision 2): one
//! typed [`Load`] per flow, each answered with its own variant of [`Loaded`] and read by the
//! driver in one snapshot of the store of record.
//!
//! A load can fail ([`ServerSession::handle_loaded`](super::ServerSession::handle_loaded) takes a
//! `Result`): a read error, or a stored key that does not open. The failure ends only the flow
//! that asked — its request is answered `internal` and a `FlowFailed` event says why — and the
//! session, and every other flow on it, go on.

use cpns_crypto::{GroupKey, SessionKey};
use cpns_wire::{Address, ChargingRecord, EndReason, EntityId, Envelope, PnId, RequestId, UserId};

use super::{KnownEntity, KnownPn};
use crate::StoreFailure;
use crate::status::EntityState;

/// What a flow asks the driver to read, in one snapshot; answered with the [`Loaded`] variant
/// of the same name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Load {
    /// 002 §B.1.1.2 step 8: the enrolled entity asking to connect as a PN GW, with its EUKey
    /// opened. Answer: [`Loaded::Gateway`].
    Gateway {
        /// The PN GW id it gave.
        id: EntityId,
    },
    /// A PN and what a flow that registers or changes it reads with it (000 §6.6.1.1 step 5,
    /// §6.6.2, §6.6.3, §6.6.5; 003 §1.4.1): the kept answer of a retried request, the entities
    /// it names with their EUKeys opened, and with `member_keys` each member's SK_PNE opened.
    /// Answer: [`Loaded::Pn`].
    Pn {
        /// The PN (absent from the answer if the inventory has no such PN).
        pn: PnId,
        /// The sender and request id whose kept answer to read (docs/design.md §3 idempotency).
        replay: Option<(Address, RequestId)>,
        /// Entities to read; unknown ones are left out of the answer.
        entities: Vec<EntityId>,
        /// Whether to open the SK_PNE of every member that has one (to seal a new group key
        /// to each).
        member_keys: bool,
    },
    /// 003 §1.4.1 step 4: the PN a secure request names and the SK_PNE the server keeps for
    /// its PNE there. Answer: [`Loaded::Session`].
    Session {
        /// The PN.
        pn: PnId,
        /// The member.
        pne: EntityId,
    },
    /// 002 §B.1.1.3 step 22: the PN, the member's SK_PNE and the PN's current group key
    /// opened; if the PNE is no member (any more), the membership it had that ended.
    /// Answer: [`Loaded::GroupKey`].
    GroupKey {
        /// The PN.
        pn: PnId,
        /// The PNE asking.
        pne: EntityId,
    },
    /// 004 §5.5.10: the user of the entity asking, and the PN it names or, without one, every
    /// PN of that user. Answer: [`Loaded::Inventory`].
    Inventory {
        /// The asking PNE.
        asker: EntityId,
        /// The PN it reads, if one.
        pn: Option<PnId>,
    },
    /// 004 §5.5.4: the users of a reporting PNE and of the PN it reports in.
    /// Answer: [`Loaded::UsageOwners`].
    UsageOwners {
        /// The reporting PNE.
        pne: EntityId,
        /// Its PN.
        pn: PnId,
    },
    /// CPNS-4: the charging records of the user owning `pne`, of uses started at or after
    /// `since_s` (seconds since the Unix epoch). Answer: [`Loaded::Charging`].
    Charging {
        /// The asking PNE.
        pne: EntityId,
        /// The earliest start.
        since_s: u64,
    },
    /// Which of `candidates` are members of a PN `gateway` serves (docs/device-status.md: a PN
    /// GW speaks for its own PNEs only). Answer: [`Loaded::Served`].
    Served {
        /// The PN GW.
        gateway: EntityId,
        /// The PNEs it names.
        candidates: Vec<EntityId>,
    },
    /// 004 §5.5.3.2: the status records a query or a subscription reads: of the asker and of
    /// what it names; with `whole_user`, of every device of the asker's user; with
    /// `subscriptions`, how many subscriptions the asker holds. Answer: [`Loaded::Statuses`].
    Statuses {
        /// Who asks.
        asker: EntityId,
        /// The entities it names.
        named: Vec<EntityId>,
        /// Whether to read every device of the asker's user.
        whole_user: bool,
        /// Whether to count the asker's subscriptions.
        subscriptions: bool,
    },
    /// 004 §5.5.9: a service group with its members (each with where pushes to it go) and key
    /// opened, the asker's invitation holding at `now_ms`, its user and how many groups it is
    /// in, and where pushes to `also` go. Answer: [`Loaded::Group`].
    Group {
        /// The group.
        group: cpns_wire::GroupId,
        /// The asking PNE.
        asker: EntityId,
        /// Another PNE the request names (an invitee).
        also: Option<EntityId>,
        /// Unix milliseconds.
        now_ms: i64,
    },
    /// 004 §5.5.8, a delivery to a user: every PN where a device of `user` is an authenticated
    /// member with an SK_PNE (opened), by device then PN, and `asker`'s user. Answer:
    /// [`Loaded::UserReach`].
    UserReach {
        /// The user.
        user: UserId,
        /// The asking PNE.
        asker: EntityId,
    },
    /// 004 §5.5.5: the asker of a directory request as a viewer (its user, the PNs it is an
    /// authenticated member of), its capabilities of record, and what `ask` names as it may
    /// see it. Answer: [`Loaded::Directory`].
    Directory {
        /// The asking PNE.
        asker: EntityId,
        /// What else to read.
        ask: super::directory::DirAsk,
    },
}

/// The driver's answer to a [`Load`]: the variant of the same name.
#[derive(Clone, Debug)]
pub enum Loaded {
    /// The entity, if enrolled.
    Gateway(Option<KnownEntity>),
    /// See [`PnLoaded`].
    Pn(Box<PnLoaded>),
    /// See [`UserReachLoaded`].
    UserReach(UserReachLoaded),
    /// See [`SessionLoaded`].
    Session(SessionLoaded),
    /// See [`GroupKeyLoaded`].
    GroupKey(Box<GroupKeyLoaded>),
    /// See [`InventoryLoaded`].
    Inventory(InventoryLoaded),
    /// See [`UsageOwners`].
    UsageOwners(UsageOwners),
    /// The records, oldest first (none for an entity not enrolled).
    Charging(Vec<ChargingRecord>),
    /// The candidates served, in any order.
    Served(Vec<EntityId>),
    /// See [`StatusesLoaded`].
    Statuses(StatusesLoaded),
    /// See [`super::directory::DirectoryLoaded`].
    Directory(Box<super::directory::DirectoryLoaded>),
    /// See [`super::groups::GroupLoaded`].
    Group(Box<super::groups::GroupLoaded>),
}

/// The answer to [`Load::Pn`].
#[derive(Clone, Debug, Default)]
pub struct PnLoaded {
    /// The PN, if the inventory has it.
    pub pn: Option<KnownPn>,
    /// The kept answer, if asked for and found.
    pub replay: Option<Envelope>,
    /// The entities found, EUKeys opened.
    pub entities: Vec<KnownEntity>,
    /// With `member_keys`: each member's SK_PNE, for those that have one.
    pub member_keys: Vec<(EntityId, SessionKey)>,
}

impl PnLoaded {
    /// Takes entity `id` out of the answer, if it was found.
    pub(super) fn take_entity(&mut self, id: &EntityId) -> Option<KnownEntity> {
        let i = self.entities.iter().position(|e| &e.id == id)?;
        Some(self.entities.swap_remove(i))
    }
}

/// The answer to [`Load::Session`].
#[derive(Clone, Debug, Default)]
pub struct SessionLoaded {
    /// The PN GW serving the PN, if the inventory has it.
    pub gateway: Option<EntityId>,
    /// The member's SK_PNE, if it is a member with one.
    pub session_key: Option<SessionKey>,
    /// The replay window kept with that SK_PNE (docs/security.md §4.8).
    pub window: super::window::ReplayWindow,
}

/// The answer to [`Load::GroupKey`].
#[derive(Clone, Debug, Default)]
pub struct GroupKeyLoaded {
    /// The PN, if the inventory has it.
    pub pn: Option<KnownPn>,
    /// The member's SK_PNE, if it is a member with one.
    pub session_key: Option<SessionKey>,
    /// The PN's current epoch and group key, if it has one.
    pub group: Option<(u64, GroupKey)>,
    /// If the PNE is no member: the SK_PNE it held there and why its membership ended, if the
    /// server keeps it.
    pub departed: Option<(SessionKey, EndReason)>,
}

/// The answer to [`Load::Inventory`].
#[derive(Clone, Debug, Default)]
pub struct InventoryLoaded {
    /// The asker's user; `None` if it is not enrolled.
    pub asker_owner: Option<UserId>,
    /// The PN named, if the inventory has it; without one, every PN of the asker's user, in
    /// creation order.
    pub pns: Vec<KnownPn>,
    /// The directory entries their members publish that the asker may see, by offerer.
    pub services: Vec<(EntityId, cpns_wire::ServiceSummary)>,
}

/// The answer to [`Load::UserReach`].
#[derive(Clone, Debug, Default)]
pub struct UserReachLoaded {
    /// The asker's user; `None` if it is not enrolled.
    pub asker_owner: Option<UserId>,
    /// Where pushes to each of the user's devices go, in each PN it is proven in.
    pub reach: Vec<super::groups::Reach>,
}

/// The answer to [`Load::UsageOwners`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageOwners {
    /// The reporting PNE's user; `None` if it is not enrolled.
    pub owner: Option<UserId>,
    /// The PN's owner, if the inventory has the PN.
    pub pn_owner: Option<UserId>,
}

/// The answer to [`Load::Statuses`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusesLoaded {
    /// The records of the asker and of the entities named that are enrolled.
    pub statuses: Vec<EntityState>,
    /// With `whole_user`: every device of the asker's user.
    pub owner_statuses: Vec<EntityState>,
    /// With `subscriptions`: how many the asker holds.
    pub subscriptions: usize,
}

impl Load {
    /// The name of the load, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Load::Gateway { .. } => "gateway",
            Load::Pn { .. } => "PN",
            Load::Session { .. } => "session",
            Load::GroupKey { .. } => "group key",
            Load::Inventory { .. } => "inventory",
            Load::UsageOwners { .. } => "usage owners",
            Load::Charging { .. } => "charging",
            Load::Served { .. } => "served",
            Load::Statuses { .. } => "statuses",
            Load::Directory { .. } => "directory",
            Load::Group { .. } => "group",
            Load::UserReach { .. } => "user reach",
        }
    }
}

impl Loaded {
    /// The name of the answer, as its load's.
    pub fn name(&self) -> &'static str {
        match self {
            Loaded::Gateway(_) => "gateway",
            Loaded::Pn(_) => "PN",
            Loaded::Session(_) => "session",
            Loaded::GroupKey(_) => "group key",
            Loaded::Inventory(_) => "inventory",
            Loaded::UsageOwners(_) => "usage owners",
            Loaded::Charging(_) => "charging",
            Loaded::Served(_) => "served",
            Loaded::Statuses(_) => "statuses",
            Loaded::Directory(_) => "directory",
            Loaded::Group(_) => "group",
            Loaded::UserReach(_) => "user reach",
        }
    }
}

/// An answer of another kind than the load asked for: a driver's mistake, which fails the
/// flow like a store failure would.
fn mismatch(asked: &str, got: &Loaded) -> StoreFailure {
    StoreFailure::Failed(format!(
        "the driver answered a {asked} load with a {} answer",
        got.name()
    ))
}

/// Takes the answer a flow expects out of the driver's (out of its box, for a boxed one), or
/// says why there is none.
macro_rules! expect {
    ($(#[$doc:meta])* $fn:ident, $variant:ident, $ty:ty, $name:literal $(, $boxed:ident)?) => {
        $(#[$doc])*
        pub(super) fn $fn(loaded: Result<Loaded, StoreFailure>) -> Result<$ty, StoreFailure> {
            match loaded? {
                Loaded::$variant(v) => Ok(expect!(@unbox v $(, $boxed)?)),
                other => Err(mismatch($name, &other)),
            }
        }
    };
    (@unbox $v:ident) => { $v };
    (@unbox $v:ident, boxed) => { *$v };
}

expect!(
    /// The answer to [`Load::Gateway`].
    gateway, Gateway, Option<KnownEntity>, "gateway"
);
expect!(
    /// The answer to [`Load::Pn`].
    pn, Pn, PnLoaded, "PN", boxed
);
expect!(
    /// The answer to [`Load::UserReach`].
    user_reach, UserReach, UserReachLoaded, "user reach"
);
expect!(
    /// The answer to [`Load::Session`].
    session, Session, SessionLoaded, "session"
);
expect!(
    /// The answer to [`Load::GroupKey`].
    group_key, GroupKey, GroupKeyLoaded, "group key", boxed
);
expect!(
    /// The answer to [`Load::Inventory`].
    inventory, Inventory, InventoryLoaded, "inventory"
);
expect!(
    /// The answer to [`Load::UsageOwners`].
    usage_owners, UsageOwners, UsageOwners, "usage owners"
);
expect!(
    /// The answer to [`Load::Charging`].
    charging, Charging, Vec<ChargingRecord>, "charging"
);
expect!(
    /// The answer to [`Load::Served`].
    served, Served, Vec<EntityId>, "served"
);
expect!(
    /// The answer to [`Load::Statuses`].
    statuses, Statuses, StatusesLoaded, "statuses"
);
expect!(
    /// The answer to [`Load::Group`].
    group, Group, super::groups::GroupLoaded, "group", boxed
);
expect!(
    /// The answer to [`Load::Directory`].
    directory, Directory, super::directory::DirectoryLoaded, "directory", boxed
);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_another_kind_fails_the_flow() {
        let served = || Ok(Loaded::Served(Vec::new()));
        assert!(matches!(super::served(served()), Ok(v) if v.is_empty()));
        let err = pn(served()).unwrap_err();
        assert_eq!(
            err,
            StoreFailure::Failed("the driver answered a PN load with a served answer".into())
        );
        // A failure passes through as it is.
        let failed = Err(StoreFailure::Sealed("the SK_PNE".into()));
        assert_eq!(
            statuses(failed).unwrap_err(),
            StoreFailure::Sealed("the SK_PNE".into())
        );
    }

    #[test]
    fn loads_and_answers_are_named_alike() {
        let id = EntityId::new("x").unwrap();
        let pn = PnId::from_bytes([1; 16]);
        let pairs = [
            (Load::Gateway { id: id.clone() }, Loaded::Gateway(None)),
            (
                Load::Pn {
                    pn,
                    replay: None,
                    entities: Vec::new(),
                    member_keys: false,
                },
                Loaded::Pn(Box::default()),
            ),
            (
                Load::Session {
                    pn,
                    pne: id.clone(),
                },
                Loaded::Session(SessionLoaded::default()),
            ),
            (
                Load::UserReach {
                    user: UserId::new("u").unwrap(),
                    asker: id.clone(),
                },
                Loaded::UserReach(UserReachLoaded::default()),
            ),
            (
                Load::GroupKey {
                    pn,
                    pne: id.clone(),
                },
                Loaded::GroupKey(Box::default()),
            ),
            (
                Load::Inventory {
                    asker: id.clone(),
                    pn: None,
                },
                Loaded::Inventory(InventoryLoaded::default()),
            ),
            (
                Load::UsageOwners {
                    pne: id.clone(),
                    pn,
                },
                Loaded::UsageOwners(UsageOwners::default()),
            ),
            (
                Load::Charging {
                    pne: id.clone(),
                    since_s: 0,
                },
                Loaded::Charging(Vec::new()),
            ),
            (
                Load::Served {
                    gateway: id.clone(),
                    candidates: Vec::new(),
                },
                Loaded::Served(Vec::new()),
            ),
            (
                Load::Statuses {
                    asker: id,
                    named: Vec::new(),
                    whole_user: false,
                    subscriptions: false,
                },
                Loaded::Statuses(StatusesLoaded::default()),
            ),
        ];
        let mut names = std::collections::BTreeSet::new();
        for (load, answer) in pairs {
            assert_eq!(load.name(), answer.name());
            names.insert(load.name());
        }
        assert_eq!(names.len(), 10, "each load has a name of its own");
    }
}
