//! The embedded SQLite backend of [`Store`] (DESIGN §5): one database file in WAL mode, reached
//! through rusqlite (SQLite compiled in), with the migrations of `migrations/sqlite` applied at
//! open (`migrate`).
//!
//! **Writes** go to one writer thread that owns the only write connection (`writer`). It
//! commits them in groups: every write queued while the previous transaction committed runs in
//! the next one, each inside its own savepoint, so a write that fails changes nothing and gets
//! its own error while the others commit. A write is answered only after its transaction
//! committed, so an acknowledged write is durable as [`Durability`] says, and many flows' writes
//! share one commit (and, under [`Durability::Full`], one fsync). Every write is still atomic on
//! its own: one flow's effect, all or nothing.
//!
//! **Reads** run on the calling thread on a small pool of read connections (`readers`): WAL
//! lets them proceed beside the writer, and a read of cached pages takes microseconds, less
//! than any hop to another thread. Multi-query reads (a PN and its members) run in one read
//! transaction and so see one snapshot. Every statement is prepared once per connection and
//! cached.
//!
//! **Checkpoints** run on a thread of their own (`checkpointer`), never inside the writer's
//! commits.
//!
//! A write whose caller stops waiting (its future dropped) still runs and commits.

mod checkpointer;
mod codec;
mod entity;
mod local;
mod migrate;
mod pn;
mod readers;
mod replay;
mod status;
#[cfg(test)]
mod tests;
mod usage;
mod writer;
#[cfg(test)]
mod writer_tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cpns_wire::{CpnsId, EntityId, PnId, UserId};
use rusqlite::{Connection, OpenFlags};

use self::readers::Readers;
use self::writer::Writer;
use crate::{
    Attributes, Departed, EntityRecord, GroupEpoch, LocalPn, LocalSession, LocalUsage, PnMember,
    PnRecord, Reconciled, Result, StatusChange, StatusRecord, Store, SubscriptionRecord,
    UnixMillis, UsageRow, UsageStored, UsageSummary,
};

/// How long a connection waits for a lock another connection (or process) holds before failing
/// with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: more than the store has distinct statements, so
/// each is prepared once.
const STATEMENT_CACHE: usize = 64;

/// How hard a commit is pushed to stable storage (SQLite's `synchronous` pragma under WAL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=NORMAL`: the WAL is synced at checkpoints, not at every commit. A commit
    /// survives the process crashing or being killed; an operating-system crash or power loss may
    /// roll back the last commits (the database stays consistent). Much faster; the default.
    #[default]
    Normal,
    /// `synchronous=FULL`: the WAL is synced at every commit, so a commit also survives an
    /// operating-system crash or power loss, at the price of one fsync per commit (one per
    /// group of writes, see the module docs).
    Full,
}

impl Durability {
    fn synchronous(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// The SQLite store: a cheap-to-clone handle on the writer thread and the read connections of
/// one database file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    readers: Readers,
    checkpointer: checkpointer::Checkpointer,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path is all that identifies the store; connections say nothing more.
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The writer's connection: creates the file if missing.
    Writer,
    /// A read connection: `query_only`.
    Reader,
    /// The checkpointer's connection: read-write, on a file that exists.
    Checkpoint,
}

/// Opens a connection to `path` with the store's settings: WAL, `synchronous` per
/// `durability`, foreign keys enforced, a 5 s busy timeout, a statement cache.
fn connect(path: &Path, durability: Durability, role: Role) -> rusqlite::Result<Connection> {
    // rusqlite's defaults (read-write, create, no mutex: each connection is used by one thread
    // at a time), except that a path is never read as a URI; only the writer creates the file.
    let mut flags = OpenFlags::default().difference(OpenFlags::SQLITE_OPEN_URI);
    if role != Role::Writer {
        flags.remove(OpenFlags::SQLITE_OPEN_CREATE);
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.synchronous())?;
    conn.pragma_update(None, "foreign_keys", true)?;
    match role {
        Role::Reader => conn.pragma_update(None, "query_only", true)?,
        // Checkpoints are the checkpointer's work; the writer's own threshold is a backstop.
        Role::Writer => conn.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpointer::WRITER_AUTOCHECKPOINT,
        )?,
        Role::Checkpoint => {}
    }
    Ok(conn)
}

/// Locks `m`; a panic elsewhere while it was held leaves nothing half-done in what it guards.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path` with [`Durability::Normal`], and
    /// brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with(path, Durability::default()).await
    }

    /// Opens (creating it if missing) the database at `path` with the given durability, and
    /// brings its schema up to date; fails with [`StoreError::Migration`](crate::StoreError)
    /// if the database was made by a newer build. Connections use WAL, enforce foreign keys
    /// and wait up to 5 s for a lock.
    pub async fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let writer_path = path.clone();
        let writer = Writer::start(move || {
            let mut conn = connect(&writer_path, durability, Role::Writer)?;
            migrate::migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        let checkpointer = match checkpointer::Checkpointer::start(&path, |p| {
            connect(p, durability, Role::Checkpoint)
        }) {
            Ok(c) => c,
            Err(e) => {
                writer.close().await;
                return Err(e);
            }
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                readers: Readers::new(path.clone(), durability),
                path,
                writer,
                checkpointer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes every connection: writes already queued are committed and answered first, and
    /// the WAL is checkpointed as the last connection closes. The store, and every clone of
    /// it, fails with a database error afterwards.
    pub async fn close(&self) {
        self.inner.readers.close();
        // Before the writer: the writer's connection must be the last to close, so that it
        // checkpoints the WAL and removes it.
        self.inner.checkpointer.close();
        self.inner.writer.close().await;
    }

    /// The writer, for the unit tests that write raw rows or check the grouping.
    #[cfg(test)]
    fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// The checkpointer, for the unit tests.
    #[cfg(test)]
    fn checkpointer(&self) -> &checkpointer::Checkpointer {
        &self.inner.checkpointer
    }

    /// The read connections, for the unit tests.
    #[cfg(test)]
    fn readers(&self) -> &Readers {
        &self.inner.readers
    }

    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.inner.writer.run(work).await
    }
}

impl Store for SqliteStore {
    async fn ensure_user(&self, user: &UserId) -> Result<()> {
        let user = user.clone();
        self.write(move |c| entity::ensure_user(c, &user)).await
    }

    async fn insert_entity(&self, e: &EntityRecord) -> Result<()> {
        let e = e.clone();
        self.write(move |c| entity::insert_entity(c, &e)).await
    }

    async fn entity(&self, id: &EntityId) -> Result<Option<EntityRecord>> {
        self.inner.readers.read(|c| entity::entity(c, id))
    }

    async fn entities(&self, ids: &[EntityId]) -> Result<Vec<EntityRecord>> {
        self.inner.readers.read(|c| entity::entities(c, ids))
    }

    async fn update_entity_report(
        &self,
        id: &EntityId,
        capabilities: Option<&[u8]>,
        status: Option<&str>,
    ) -> Result<()> {
        let id = id.clone();
        let capabilities = capabilities.map(<[u8]>::to_vec);
        let status = status.map(str::to_owned);
        self.write(move |c| {
            entity::update_entity_report(c, &id, capabilities.as_deref(), status.as_deref())
        })
        .await
    }

    async fn register_pn(&self, p: &PnRecord) -> Result<()> {
        let p = p.clone();
        self.write(move |c| pn::register_pn(c, &p)).await
    }

    async fn upsert_member(&self, p: &PnId, member: &PnMember) -> Result<()> {
        let (p, member) = (*p, member.clone());
        self.write(move |c| pn::upsert_member(c, &p, &member)).await
    }

    async fn update_members(
        &self,
        p: &PnId,
        add: &[PnMember],
        remove: &[EntityId],
        group: Option<&GroupEpoch>,
    ) -> Result<()> {
        let (p, add, remove, group) = (*p, add.to_vec(), remove.to_vec(), group.cloned());
        self.write(move |c| pn::update_members(c, &p, &add, &remove, group.as_ref()))
            .await
    }

    async fn register_pne(
        &self,
        p: &PnId,
        member: &PnMember,
        group: Option<&GroupEpoch>,
    ) -> Result<CpnsId> {
        let group = group.cloned();
        let (p, member) = (*p, member.clone());
        self.write(move |c| pn::register_pne(c, &p, &member, group.as_ref()))
            .await
    }

    async fn reconcile_gateway_pns(
        &self,
        gw: &EntityId,
        listed: &[PnId],
        drop_unlisted_pending: bool,
    ) -> Result<Reconciled> {
        let (gw, listed) = (gw.clone(), listed.to_vec());
        self.write(move |c| pn::reconcile_gateway_pns(c, &gw, &listed, drop_unlisted_pending))
            .await
    }

    async fn confirm_pns(&self, gw: &EntityId, pns: &[PnId]) -> Result<Vec<PnId>> {
        let (gw, pns) = (gw.clone(), pns.to_vec());
        self.write(move |c| pn::confirm_pns(c, &gw, &pns)).await
    }

    async fn remove_pending_pn(&self, p: &PnId) -> Result<bool> {
        let p = *p;
        self.write(move |c| pn::remove_pending_pn(c, &p)).await
    }

    async fn release_pn(&self, gw: &EntityId, p: &PnId) -> Result<bool> {
        let (gw, p) = (gw.clone(), *p);
        self.write(move |c| pn::release_pn(c, &gw, &p)).await
    }

    async fn pn(&self, id: &PnId) -> Result<Option<PnRecord>> {
        self.inner.readers.snapshot(|c| pn::pn(c, id))
    }

    async fn pns_of_gateway(&self, gw: &EntityId) -> Result<Vec<PnRecord>> {
        self.inner.readers.snapshot(|c| pn::pns_of_gateway(c, gw))
    }

    async fn departed(&self, pn: &PnId, pne: &EntityId) -> Result<Option<Departed>> {
        self.inner.readers.read(|c| pn::departed(c, pn, pne))
    }

    async fn pns_of_owner(&self, owner: &UserId) -> Result<Vec<PnRecord>> {
        self.inner.readers.snapshot(|c| pn::pns_of_owner(c, owner))
    }

    async fn all_pns(&self) -> Result<Vec<PnRecord>> {
        self.inner.readers.snapshot(pn::all_pns)
    }

    async fn allocate_cpns_id(&self, pne: &EntityId) -> Result<CpnsId> {
        let pne = pne.clone();
        self.write(move |c| entity::allocate_cpns_id(c, &pne)).await
    }

    async fn remember_answer(
        &self,
        sender: &str,
        request_id: u64,
        answer: &[u8],
        now: UnixMillis,
        keep_ms: i64,
    ) -> Result<()> {
        let (sender, answer) = (sender.to_owned(), answer.to_vec());
        self.write(move |c| replay::remember_answer(c, &sender, request_id, &answer, now, keep_ms))
            .await
    }

    async fn answer_of(&self, sender: &str, request_id: u64) -> Result<Option<Vec<u8>>> {
        self.inner
            .readers
            .read(|c| replay::answer_of(c, sender, request_id))
    }

    async fn save_local_pn(&self, p: &LocalPn) -> Result<()> {
        let p = p.clone();
        self.write(move |c| local::save_local_pn(c, &p)).await
    }

    async fn save_local_session(&self, session: &LocalSession) -> Result<()> {
        let session = session.clone();
        self.write(move |c| local::save_local_session(c, &session))
            .await
    }

    async fn local_session(&self) -> Result<Option<LocalSession>> {
        self.inner.readers.read(local::local_session)
    }

    async fn local_pns(&self) -> Result<Vec<LocalPn>> {
        self.inner.readers.snapshot(local::local_pns)
    }

    async fn remove_local_pn(&self, p: &PnId) -> Result<bool> {
        let p = *p;
        self.write(move |c| local::remove_local_pn(c, &p)).await
    }

    async fn record_statuses(&self, changes: &[StatusChange]) -> Result<Vec<StatusRecord>> {
        let changes = changes.to_vec();
        self.write(move |c| status::record_statuses(c, &changes))
            .await
    }

    async fn record_capabilities(
        &self,
        id: &EntityId,
        capabilities: &[u8],
        attributes: Attributes,
    ) -> Result<StatusRecord> {
        let (id, caps) = (id.clone(), capabilities.to_vec());
        self.write(move |c| status::record_capabilities(c, &id, &caps, attributes))
            .await
    }

    async fn offline_reported_by(
        &self,
        gateway: &EntityId,
        at: UnixMillis,
    ) -> Result<Vec<StatusRecord>> {
        let gateway = gateway.clone();
        self.write(move |c| status::offline_reported_by(c, &gateway, at))
            .await
    }

    async fn served_by(
        &self,
        gateway: &EntityId,
        candidates: &[EntityId],
    ) -> Result<Vec<EntityId>> {
        self.inner
            .readers
            .read(|c| status::served_by(c, gateway, candidates))
    }

    async fn statuses(&self, ids: &[EntityId]) -> Result<Vec<StatusRecord>> {
        self.inner.readers.read(|c| status::statuses(c, ids))
    }

    async fn statuses_of_owner(&self, owner: &UserId) -> Result<Vec<StatusRecord>> {
        self.inner
            .readers
            .read(|c| status::statuses_of_owner(c, owner))
    }

    async fn all_statuses(&self) -> Result<Vec<StatusRecord>> {
        self.inner.readers.read(status::all_statuses)
    }

    async fn add_subscription(&self, s: &SubscriptionRecord) -> Result<SubscriptionRecord> {
        let s = s.clone();
        self.write(move |c| status::add_subscription(c, &s)).await
    }

    async fn remove_subscription(&self, subscriber: &EntityId, id: u64) -> Result<bool> {
        let subscriber = subscriber.clone();
        self.write(move |c| status::remove_subscription(c, &subscriber, id))
            .await
    }

    async fn subscription_count(&self, subscriber: &EntityId) -> Result<usize> {
        self.inner
            .readers
            .read(|c| status::subscription_count(c, subscriber))
    }

    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        self.inner.readers.read(status::subscriptions)
    }

    async fn store_usage(&self, rows: &[UsageRow]) -> Result<UsageStored> {
        let rows = rows.to_vec();
        self.write(move |c| usage::store_usage(c, &rows)).await
    }

    async fn usage_summary(
        &self,
        user: Option<&UserId>,
        shared_only: bool,
    ) -> Result<Vec<UsageSummary>> {
        self.inner
            .readers
            .read(|c| usage::usage_summary(c, user, shared_only))
    }

    async fn charging_records(
        &self,
        user: &UserId,
        since_s: u64,
    ) -> Result<Vec<cpns_wire::ChargingRecord>> {
        self.inner
            .readers
            .read(|c| usage::charging_records(c, user, since_s))
    }

    async fn save_local_usage(&self, record: &cpns_wire::UsageRecord) -> Result<()> {
        let record = record.clone();
        self.write(move |c| usage::save_local_usage(c, &record))
            .await
    }

    async fn unsent_local_usage(&self, limit: u32) -> Result<Vec<LocalUsage>> {
        self.inner
            .readers
            .read(|c| usage::unsent_local_usage(c, limit))
    }

    async fn mark_local_usage_sent(&self, ids: &[u64]) -> Result<()> {
        let ids = ids.to_vec();
        self.write(move |c| usage::mark_local_usage_sent(c, &ids))
            .await
    }

    async fn local_usage_summary(&self) -> Result<Vec<UsageSummary>> {
        self.inner.readers.read(usage::local_usage_summary)
    }

    async fn set_usage_pref(&self, service: &str, preference: Option<&str>) -> Result<()> {
        let (service, pref) = (service.to_owned(), preference.map(str::to_owned));
        self.write(move |c| usage::set_usage_pref(c, &service, pref.as_deref()))
            .await
    }

    async fn usage_prefs(&self) -> Result<Vec<(String, String)>> {
        self.inner.readers.read(usage::usage_prefs)
    }
}
