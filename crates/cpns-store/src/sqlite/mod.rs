//! The embedded SQLite backend of [`Store`] (DESIGN §5): one database file in WAL mode, a small
//! connection pool, migrations from `migrations/sqlite` run at open.
//!
//! Every method that changes state runs in one transaction; those that read before they write
//! take the write lock up front (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy
//! timeout instead of failing when a read snapshot cannot be upgraded. Multi-query reads
//! (a PN and its members) run in one read transaction and so see one snapshot.

mod codec;
mod entity;
mod local;
mod pn;
mod replay;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpns_wire::{CpnsId, EntityId, PnId, UserId};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{
    EntityRecord, LocalPn, LocalSession, PnMember, PnRecord, Reconciled, Result, Store, UnixMillis,
};

/// The SQLite schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Most connections the pool opens. SQLite has one writer at a time; a few connections let
/// reads proceed beside it.
const MAX_CONNECTIONS: u32 = 4;

/// How long a connection waits for another's write lock before failing with "database is
/// locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// operating-system crash or power loss, at the price of one fsync per write transaction.
    Full,
}

/// The SQLite store: a cheap-to-clone handle on a connection pool over one database file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: Arc<Path>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's own Debug dumps its connect options; the path is all that identifies us.
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path` with [`Durability::Normal`], and
    /// brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with(path, Durability::default()).await
    }

    /// Opens (creating it if missing) the database at `path` with the given durability, and
    /// brings its schema up to date. Connections use WAL, enforce foreign keys and wait up to
    /// 5 s for a lock.
    pub async fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore> {
        let synchronous = match durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        if let Err(e) = MIGRATOR.run(&pool).await {
            pool.close().await;
            return Err(e.into());
        }
        Ok(SqliteStore {
            pool,
            path: Arc::from(PathBuf::from(path)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection (checkpointing the WAL as the last one closes); the store, and
    /// every clone of it, fails with a database error afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for the unit tests that write raw rows.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Store for SqliteStore {
    async fn ensure_user(&self, user: &UserId) -> Result<()> {
        entity::ensure_user(&self.pool, user).await
    }

    async fn insert_entity(&self, entity: &EntityRecord) -> Result<()> {
        entity::insert_entity(&self.pool, entity).await
    }

    async fn entity(&self, id: &EntityId) -> Result<Option<EntityRecord>> {
        entity::entity(&self.pool, id).await
    }

    async fn entities(&self, ids: &[EntityId]) -> Result<Vec<EntityRecord>> {
        entity::entities(&self.pool, ids).await
    }

    async fn update_entity_report(
        &self,
        id: &EntityId,
        capabilities: Option<&[u8]>,
        status: Option<&str>,
    ) -> Result<()> {
        entity::update_entity_report(&self.pool, id, capabilities, status).await
    }

    async fn register_pn(&self, pn: &PnRecord) -> Result<()> {
        pn::register_pn(&self.pool, pn).await
    }

    async fn upsert_member(&self, pn: &PnId, member: &PnMember) -> Result<()> {
        pn::upsert_member(&self.pool, pn, member).await
    }

    async fn update_members(&self, pn: &PnId, add: &[PnMember], remove: &[EntityId]) -> Result<()> {
        pn::update_members(&self.pool, pn, add, remove).await
    }

    async fn register_pne(&self, pn: &PnId, member: &PnMember) -> Result<CpnsId> {
        pn::register_pne(&self.pool, pn, member).await
    }

    async fn reconcile_gateway_pns(
        &self,
        gw: &EntityId,
        listed: &[PnId],
        drop_unlisted_pending: bool,
    ) -> Result<Reconciled> {
        pn::reconcile_gateway_pns(&self.pool, gw, listed, drop_unlisted_pending).await
    }

    async fn remove_pending_pn(&self, pn: &PnId) -> Result<bool> {
        pn::remove_pending_pn(&self.pool, pn).await
    }

    async fn pn(&self, id: &PnId) -> Result<Option<PnRecord>> {
        pn::pn(&self.pool, id).await
    }

    async fn pns_of_gateway(&self, gw: &EntityId) -> Result<Vec<PnRecord>> {
        pn::pns_of_gateway(&self.pool, gw).await
    }

    async fn all_pns(&self) -> Result<Vec<PnRecord>> {
        pn::all_pns(&self.pool).await
    }

    async fn allocate_cpns_id(&self, pne: &EntityId) -> Result<CpnsId> {
        entity::allocate_cpns_id(&self.pool, pne).await
    }

    async fn remember_answer(
        &self,
        sender: &str,
        request_id: u64,
        answer: &[u8],
        now: UnixMillis,
        keep_ms: i64,
    ) -> Result<()> {
        replay::remember_answer(&self.pool, sender, request_id, answer, now, keep_ms).await
    }

    async fn answer_of(&self, sender: &str, request_id: u64) -> Result<Option<Vec<u8>>> {
        replay::answer_of(&self.pool, sender, request_id).await
    }

    async fn save_local_pn(&self, pn: &LocalPn) -> Result<()> {
        local::save_local_pn(&self.pool, pn).await
    }

    async fn save_local_session(&self, session: &LocalSession) -> Result<()> {
        local::save_local_session(&self.pool, session).await
    }

    async fn local_session(&self) -> Result<Option<LocalSession>> {
        local::local_session(&self.pool).await
    }

    async fn local_pns(&self) -> Result<Vec<LocalPn>> {
        local::local_pns(&self.pool).await
    }

    async fn remove_local_pn(&self, pn: &PnId) -> Result<bool> {
        local::remove_local_pn(&self.pool, pn).await
    }
}
