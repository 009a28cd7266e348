//! Store: every piece of wharf's state — event log, outbox (deliveries and attempts), policies
//! and settings, knowledge, quota usage, chart facts — behind one interface with two backends:
//!
//! - the embedded SQLite database `<data_dir>/wharf.db` (the default; one instance), see
//!   [`sqlite`]: one writer thread, group commit;
//! - a PostgreSQL database shared by any number of replicas (`store.url`), see [`pg`]: a
//!   bounded pool; writes go through a few writer threads (`pg_writer`) that also commit in
//!   groups (a savepoint per job), so a burst of events never queues for connections one by one.
//!
//! Store functions are written once, against [`db::Db`], in a dialect both backends speak.
//! A caller that awaits [`Store::write`] gets its answer only after the COMMIT, so "the event
//! is committed before the client sees success" is a plain `.await`. [`Store::write_detached`]
//! queues without waiting (pull events). What a job did that matters after COMMIT (events
//! published, deliveries created, policies changed) travels on the job's [`db::Db`], not on a
//! side channel.
//!
//! Policies are cached per process ([`PolicyCache`], in `cache`); a policy write drops this process's
//! cache after its COMMIT and moves the policy version on, which every replica checks once a
//! second ([`Store::policy_version`]): a replica acts on a changed policy at most about one
//! second late.

mod cache;
pub mod charts;
pub mod copy;
pub mod db;
pub mod events;
pub mod executions;
pub mod idempotency;
mod job;
pub mod knowledge;
pub mod outbox;
pub mod pg;
mod pg_writer;
pub mod policies;
pub mod projects;
pub mod quota;
pub mod recent;
pub mod schema;
pub mod sqlite;
pub mod users;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use db::{Backend, Db};
pub use sqlite::BACKGROUND_WINDOW;

pub use cache::{PolicyCache, REPOSITORY_DATE_TTL};
use pg_writer::{PgQueue, pg_writer};

use crate::args;
use crate::config::StoreConfig;
use crate::events::EventKind;

/// Store failures. The database's own error is kept as the source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    #[error("database: {}", pg_message(.0))]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    #[error("database: cannot encode a value: {0}")]
    Encode(#[source] Arc<serde_json::Error>),
    #[error("database: cannot pack an event: {0}")]
    Pack(#[source] Arc<prost::EncodeError>),
    #[error("database: {0}")]
    Io(#[source] Arc<std::io::Error>),
    #[error("database is closed")]
    Closed,
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("database: no connection within {0:?} (store.pool_size, store.connect_timeout)")]
    PoolTimeout(Duration),
    #[error(
        "database: no answer within {0:?} (store.statement_timeout + store.connect_timeout): connection dropped"
    )]
    NoAnswer(Duration),
    #[error("database: no answer within {0:?} (store.statement_timeout): the request went on")]
    Late(Duration),
    #[error("database: {0} events already wait for it")]
    Backlog(usize),
    #[error(
        "database schema version {found} is newer than this wharf knows ({known}): run a wharf at least as new as the one that migrated it"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error(transparent)]
    Setup(Arc<pg::PgSetupError>),
    #[error("database task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
    #[error("database: column {0} is NULL where a value was expected")]
    Null(usize),
    #[error("database: column {0} does not hold a UUID")]
    NotUuid(usize),
    #[error("database: column {0} does not hold a digest")]
    NotDigest(usize),
    #[error("database: column {column} holds {value:?}, not a delivery state")]
    NotDeliveryState { column: usize, value: String },
    #[error("database: column {column} holds {value:?}, not an artifact kind")]
    NotArtifactKind { column: usize, value: String },
}

impl StoreError {
    /// A PostgreSQL transaction that lost to another one (deadlock detected, serialization
    /// failure) and was rolled back: running it again is safe and usually succeeds.
    pub fn is_conflict(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::Postgres(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
            ),
            _ => false,
        }
    }

    /// The connection to PostgreSQL failed under a job (closed, ended or refused by a server
    /// shutting down or starting, a socket error, or no answer in time), not one of its
    /// statements: what the job sent may or may not have been committed — for a COMMIT in
    /// flight, the server alone knows. Running it again on a new connection is safe for a job
    /// that first looks whether its work is there. (Errors of the driver's own — a value it
    /// cannot convert, TLS — are not: they would fail again.)
    pub fn is_connection_lost(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::NoAnswer(_) => true,
            StoreError::Postgres(e) => match e.code() {
                None => {
                    e.is_closed()
                        || std::error::Error::source(&**e)
                            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
                }
                Some(c) => {
                    *c == SqlState::ADMIN_SHUTDOWN
                        || *c == SqlState::CRASH_SHUTDOWN
                        || *c == SqlState::CANNOT_CONNECT_NOW
                }
            },
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(Arc::new(e))
    }
}

/// PostgreSQL's own message (with its SQLSTATE) where there is one; the driver's otherwise.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

impl StoreError {
    /// The table a PostgreSQL error names, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            StoreError::Postgres(e) => e.as_db_error().and_then(|d| d.table()),
            _ => None,
        }
    }

    /// A uniqueness constraint refused the write (a duplicate name, say).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => matches!(
                e.as_ref(),
                rusqlite::Error::SqliteFailure(f, _)
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            StoreError::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// `PRAGMA synchronous` of the SQLite write connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Survives a killed process; an OS crash may lose the last commits.
    #[default]
    Normal,
    /// fsync on every commit.
    Full,
}

/// Counters of the store (exported as metrics).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Commits done (SQLite: group commits; PostgreSQL: write transactions).
    pub commits: AtomicU64,
    /// Jobs committed.
    pub jobs: AtomicU64,
    /// Jobs that failed (their writes rolled back).
    pub failed_jobs: AtomicU64,
}

enum BackendImpl {
    Sqlite(sqlite::Sqlite),
    Postgres(PgBackend),
}

struct PgBackend {
    pool: Arc<pg::Pg>,
    /// The writers' queue; `None` once the store is closing.
    queue: Mutex<Option<std::sync::mpsc::Sender<job::Job>>>,
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Last triggers noted by committed jobs, not yet written (see [`Store::flush_triggers`]).
type TriggerBuffer = Mutex<HashMap<(i64, EventKind), i64>>;

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: BackendImpl,
    stats: Arc<StoreStats>,
    outbox: Arc<OutboxWake>,
    cache: Arc<PolicyCache>,
    triggers: Arc<TriggerBuffer>,
    intake: Arc<IntakeSlot>,
    /// `store.statement_timeout`: the longest a registry request waits for the store
    /// ([`Store::within`]); `None`: no limit.
    budget: Option<Duration>,
}

/// The dispatcher intake of this process, once a dispatcher runs (see [`outbox::Intake`]).
/// Held weakly: a dispatcher that stopped admits nothing.
#[derive(Default)]
pub(crate) struct IntakeSlot(std::sync::RwLock<Option<std::sync::Weak<dyn outbox::Intake>>>);

impl IntakeSlot {
    /// The running dispatcher's intake, if any (a writer takes it once per batch).
    pub(crate) fn current(&self) -> Option<Arc<dyn outbox::Intake>> {
        self.0.read().ok()?.as_ref()?.upgrade()
    }

    fn set(&self, intake: std::sync::Weak<dyn outbox::Intake>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(intake);
        }
    }
}

/// What follows a commit: the dispatcher woken (or handed the deliveries created claimed),
/// cached policies dropped, last triggers noted.
#[derive(Clone)]
struct AfterCommit {
    outbox: Arc<OutboxWake>,
    cache: Arc<PolicyCache>,
    triggers: Arc<TriggerBuffer>,
    intake: Arc<IntakeSlot>,
}

/// When, around the answers to a commit's jobs, [`AfterCommit::apply`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Cached policies are dropped before any job's caller hears of the commit (its next
    /// request must not read them), and the last triggers noted.
    BeforeAnswers,
    /// The dispatcher is woken, and handed the deliveries created claimed, after the callers
    /// (a push waits for its answer; the delivery's attempt may start a moment later).
    AfterAnswers,
    /// The commit failed: its jobs' changes never happened. Cached policies read after a job
    /// changed them (by a job after it, in the same transaction) are dropped; nothing else.
    RolledBack,
}

impl AfterCommit {
    /// `intake`: the one the batch's jobs ran with (the deliveries they created claimed are
    /// its to start).
    fn apply(&self, effects: &mut db::Effects, stage: Stage, intake: Option<&dyn outbox::Intake>) {
        match stage {
            Stage::RolledBack => {
                if effects.policies {
                    self.cache.invalidate();
                }
            }
            Stage::BeforeAnswers => {
                if effects.policies {
                    self.cache.invalidate();
                }
                for (host, id) in effects.hosts.drain(..) {
                    self.cache.put_host_id(host, id);
                }
                if !effects.triggers.is_empty()
                    && let Ok(mut t) = self.triggers.lock()
                {
                    for (policy, kind, at) in &effects.triggers {
                        let e = t.entry((*policy, *kind)).or_insert(*at);
                        *e = (*e).max(*at);
                    }
                }
            }
            Stage::AfterAnswers => {
                let born = std::mem::take(&mut effects.born);
                if !born.is_empty()
                    && let Some(intake) = intake
                {
                    intake.start(born);
                }
                if effects.deliveries != db::Due::Nothing {
                    self.outbox.wake(std::mem::take(&mut effects.deliveries));
                }
            }
        }
    }
}

/// Wakes the dispatcher after a commit that made deliveries due, and says for which target
/// addresses (see [`db::Due`]); what several commits made due before it woke is merged.
#[derive(Debug, Default)]
pub struct OutboxWake {
    notify: tokio::sync::Notify,
    due: Mutex<db::Due>,
}

impl OutboxWake {
    /// Deliveries are due (`due`): wake the dispatcher, or have its next wait return at once.
    pub fn wake(&self, due: db::Due) {
        if let Ok(mut d) = self.due.lock() {
            d.merge(due);
        }
        self.notify.notify_one();
    }

    /// Wait for a wake; what was made due since the last one.
    pub async fn woken(&self) -> db::Due {
        self.notify.notified().await;
        self.due
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or(db::Due::Anywhere)
    }
}

impl Store {
    /// Open the store `config` names: PostgreSQL at `store.url`, else SQLite in `data_dir`.
    /// Migrates the schema (see [`schema`]).
    pub async fn open(config: &StoreConfig, data_dir: &Path) -> Result<Store, StoreError> {
        let budget = (!config.statement_timeout.is_zero()).then_some(config.statement_timeout);
        if config.url.is_none() {
            return Store::sqlite(data_dir, config.synchronous, budget);
        }
        let settings =
            pg::PgSettings::from_config(config).map_err(|e| StoreError::Setup(Arc::new(e)))?;
        // one connection of the pool size is the policy-version watch's
        let pool = pg::Pg::new(
            settings,
            config.pool_size.saturating_sub(1).max(2),
            config.connect_timeout,
        );
        migrate_pg(&pool).await?;
        let after = AfterCommit {
            outbox: Arc::new(OutboxWake::default()),
            cache: Arc::new(PolicyCache::default()),
            triggers: Arc::new(TriggerBuffer::default()),
            intake: Arc::new(IntakeSlot::default()),
        };
        let stats = Arc::new(StoreStats::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let rx = Arc::new(PgQueue::new(rx));
        // a few writers: group commits in parallel, a quarter of the pool at most
        let writers = (config.pool_size / 4).clamp(1, 4);
        let runtime = tokio::runtime::Handle::current();
        let mut handles = Vec::with_capacity(writers);
        for i in 0..writers {
            let (pool, rx, after, stats, runtime) = (
                pool.clone(),
                rx.clone(),
                after.clone(),
                stats.clone(),
                runtime.clone(),
            );
            let h = std::thread::Builder::new()
                .name(format!("wharf-pg-writer-{i}"))
                .spawn(move || pg_writer(pool, rx, after, stats, runtime))
                .map_err(|e| StoreError::Io(Arc::new(e)))?;
            handles.push(h);
        }
        Ok(Store {
            inner: Arc::new(Inner {
                backend: BackendImpl::Postgres(PgBackend {
                    pool,
                    queue: Mutex::new(Some(tx)),
                    writers: Mutex::new(handles),
                }),
                stats,
                outbox: after.outbox,
                cache: after.cache,
                triggers: after.triggers,
                intake: after.intake,
                budget,
            }),
        })
    }

    /// Connect to the PostgreSQL database `config` names without changing anything; its
    /// schema version (`None`: not initialized yet). A schema newer than this binary knows is
    /// an error. (For `wharf check-config`.)
    pub async fn probe(config: &StoreConfig) -> Result<Option<i64>, StoreError> {
        let settings =
            pg::PgSettings::from_config(config).map_err(|e| StoreError::Setup(Arc::new(e)))?;
        let (client, _task) = tokio::time::timeout(config.connect_timeout, settings.connect())
            .await
            .map_err(|_| StoreError::PoolTimeout(config.connect_timeout))??;
        let exists = client
            .query_one("SELECT to_regclass('wharf_schema') IS NOT NULL", &[])
            .await?
            .try_get::<_, bool>(0)?;
        if !exists {
            return Ok(None);
        }
        let v: Option<i64> = client
            .query_one("SELECT MAX(version) FROM wharf_schema", &[])
            .await?
            .try_get(0)?;
        let v = v.unwrap_or(0);
        schema::refuse_newer(v)?;
        Ok(Some(v))
    }

    /// Open (creating if needed) the SQLite database `<data_dir>/wharf.db` and migrate it.
    pub fn open_sqlite(data_dir: &Path, sync: Synchronous) -> Result<Store, StoreError> {
        Self::sqlite(data_dir, sync, None)
    }

    fn sqlite(
        data_dir: &Path,
        sync: Synchronous,
        budget: Option<Duration>,
    ) -> Result<Store, StoreError> {
        let stats = Arc::new(StoreStats::default());
        let after = AfterCommit {
            outbox: Arc::new(OutboxWake::default()),
            cache: Arc::new(PolicyCache::default()),
            triggers: Arc::new(TriggerBuffer::default()),
            intake: Arc::new(IntakeSlot::default()),
        };
        let a = after.clone();
        let lite = sqlite::Sqlite::open(
            data_dir,
            sync,
            stats.clone(),
            after.cache.clone(),
            after.intake.clone(),
            Box::new(move |e, stage, intake| a.apply(e, stage, intake)),
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                backend: BackendImpl::Sqlite(lite),
                stats,
                outbox: after.outbox,
                cache: after.cache,
                triggers: after.triggers,
                intake: after.intake,
                budget,
            }),
        })
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        match self.inner.backend {
            BackendImpl::Sqlite(_) => Backend::Sqlite,
            BackendImpl::Postgres(_) => Backend::Postgres,
        }
    }

    /// Where the data lives, for messages (a file, or `host:port/db`; never a password).
    pub fn location(&self) -> String {
        match &self.inner.backend {
            BackendImpl::Sqlite(s) => s.path().display().to_string(),
            BackendImpl::Postgres(p) => format!("postgres://{}", p.pool.settings().display),
        }
    }

    /// Woken after every commit that made deliveries due (the dispatcher waits on it).
    pub fn outbox_wake(&self) -> Arc<OutboxWake> {
        self.inner.outbox.clone()
    }

    /// Fan-outs committed from now on may create deliveries already claimed for `intake` (the
    /// dispatcher of this process; see [`outbox::Intake`]), while it lives.
    pub fn set_intake(&self, intake: std::sync::Weak<dyn outbox::Intake>) {
        self.inner.intake.set(intake);
    }

    /// The store's counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.inner.stats.clone()
    }

    /// This process's policy cache.
    pub fn policy_cache(&self) -> Arc<PolicyCache> {
        self.inner.cache.clone()
    }

    /// Run `f` in a write transaction; resolves after COMMIT with `f`'s result (an error rolls
    /// `f`'s writes back).
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_job(true, f).await
    }

    /// As [`Store::write`], for writes that need not reach the disk before the answer (see
    /// `job::Job::durable`): the dispatcher's claims and attempt outcomes, housekeeping.
    pub async fn write_relaxed<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_job(false, f).await
    }

    async fn write_job<T, F>(&self, durable: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(job::Job::new(true, durable, f, move |r| {
            let _ = tx.send(r);
        }));
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queue `f` for a write without waiting (the next group commit; SQLite: see
    /// [`BACKGROUND_WINDOW`]); `answer` gets its result once committed (or the failure): keep
    /// it short.
    pub fn write_detached<T, F>(
        &self,
        f: F,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(job::Job::new(false, false, f, answer));
    }

    /// As [`Store::write`] (urgent, durable), without waiting: `answer` gets the result once
    /// committed (or the failure), whether or not anyone still waits for it; keep it short.
    pub fn write_answered<T, F>(
        &self,
        f: F,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(job::Job::new(true, true, f, answer));
    }

    /// Await `f` (a read or write of a registry request) for at most `store.statement_timeout`:
    /// registry traffic goes on without the database rather than wait for it without end
    /// ([`StoreError::Late`]). A write given up on still runs when the writer gets to it.
    pub async fn within<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.inner.budget {
            None => f.await,
            Some(limit) => tokio::time::timeout(limit, f)
                .await
                .unwrap_or(Err(StoreError::Late(limit))),
        }
    }

    fn submit(&self, job: job::Job) {
        let refused = match &self.inner.backend {
            BackendImpl::Sqlite(lite) => lite.submit(job).err(),
            BackendImpl::Postgres(pg) => match pg.queue.lock().ok().and_then(|q| q.clone()) {
                Some(tx) => tx.send(job).err().map(|e| e.0),
                None => Some(job),
            },
        };
        if let Some(job) = refused {
            job.refuse(StoreError::Closed);
        }
    }

    /// Write the last triggers noted since the last flush: one upsert per (policy, event type),
    /// in key order (so the flushes of several replicas never wait on each other in a cycle),
    /// keeping the later time; none for a policy deleted meanwhile. Runs every second (see
    /// [`run_housekeeping`]) and before the last-trigger API answers.
    pub async fn flush_triggers(&self) -> Result<(), StoreError> {
        let mut pending: Vec<(i64, &'static str, i64)> = match self.inner.triggers.lock() {
            Ok(mut t) => t
                .drain()
                .map(|((policy, kind), at)| (policy, kind.harbor_type(), at))
                .collect(),
            Err(_) => return Ok(()),
        };
        if pending.is_empty() {
            return Ok(());
        }
        // the order of the rows' key (policy, event type name), whatever the binary's version
        pending.sort();
        self.write_relaxed(move |c| {
            for (policy, kind, at) in &pending {
                c.exec(
                    "INSERT INTO last_triggers (policy_id, event_type, at)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM policies WHERE id = ?1)
                     ON CONFLICT (policy_id, event_type) DO UPDATE
                       SET at = CASE WHEN excluded.at > last_triggers.at THEN excluded.at ELSE last_triggers.at END",
                    args![*policy, *kind, *at],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Run a read-only query (off the async threads). It sees committed data only.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        match &self.inner.backend {
            BackendImpl::Sqlite(_) => tokio::task::spawn_blocking(move || match &inner.backend {
                BackendImpl::Sqlite(lite) => lite.read(&inner.cache, f),
                BackendImpl::Postgres(_) => Err(StoreError::Closed),
            })
            .await
            .map_err(|e| StoreError::Task(Arc::new(e)))?,
            BackendImpl::Postgres(pg) => {
                let conn = pg.pool.acquire().await?;
                tokio::task::spawn_blocking(
                    move || f(&Db::postgres(&conn).with_cache(&inner.cache)),
                )
                .await
                .map_err(|e| StoreError::Task(Arc::new(e)))?
            }
        }
    }

    /// Is the database reachable? (For `/readyz`.)
    pub async fn check(&self) -> Result<(), StoreError> {
        self.read(|db| db.int("SELECT 1", &[]).map(|_| ())).await
    }

    /// The policy version (moves on with every policy or notification-switch change, on any
    /// replica).
    pub async fn policy_version(&self) -> Result<i64, StoreError> {
        self.read(|db| {
            Ok(db
                .int("SELECT n FROM meta WHERE key = 'policy_version'", &[])?
                .unwrap_or(0))
        })
        .await
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        match &self.inner.backend {
            BackendImpl::Sqlite(_) => {
                self.read(|db| match db.as_sqlite() {
                    Some(c) => sqlite::version(c),
                    None => Err(StoreError::Closed),
                })
                .await
            }
            BackendImpl::Postgres(_) => {
                self.read(|db| {
                    Ok(db
                        .int("SELECT MAX(version) FROM wharf_schema", &[])?
                        .unwrap_or(0))
                })
                .await
            }
        }
    }

    /// Stop taking writes, commit everything queued, close connections.
    pub async fn close(&self) {
        match &self.inner.backend {
            BackendImpl::Sqlite(lite) => {
                let _ = self.flush_triggers().await;
                lite.close().await
            }
            BackendImpl::Postgres(pg) => {
                let _ = self.flush_triggers().await;
                if let Ok(mut q) = pg.queue.lock() {
                    q.take();
                }
                let writers: Vec<_> = pg
                    .writers
                    .lock()
                    .map(|mut w| std::mem::take(&mut *w))
                    .unwrap_or_default();
                let _ = tokio::task::spawn_blocking(move || {
                    for w in writers {
                        let _ = w.join();
                    }
                })
                .await;
                pg.pool.close();
            }
        }
    }
}

/// Every second: write the last triggers noted ([`Store::flush_triggers`]). Once a minute:
/// forget what clients resolved longer ago than `attribution_window`, lapsed quota
/// reservations, expired idempotency keys, and target versions no delivery needs any more,
/// and fold the delivery counters of database processes that ended. Runs until `shutdown`.
pub async fn run_housekeeping(
    store: Store,
    attribution_window: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = store.flush_triggers().await {
            tracing::warn!(error = %e, "writing last triggers failed");
        }
        ticks += 1;
        if !ticks.is_multiple_of(60) {
            continue;
        }
        store.warn_on_clock_skew().await;
        let before = now_ms() - attribution_window.as_millis() as i64;
        let result = store
            .write_relaxed(move |c| {
                recent::prune(c, before)?;
                quota::prune_reservations(c, now_ms())?;
                idempotency::prune(c, now_ms() - idempotency::KEPT_FOR.as_millis() as i64)?;
                outbox::fold_counts(c)?;
                policies::drop_unused_targets(c, None)
            })
            .await;
        match result {
            Ok(()) => {}
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "store housekeeping failed"),
        }
    }
}

/// How far this process's clock is from PostgreSQL's (ms, positive when ahead) beyond which
/// a warning is logged: replicas compare claim leases and retry due times written by one
/// another by wall clock (see docs/operations.md, "Running several replicas").
pub const CLOCK_SKEW_WARN_MS: i64 = 1_000;

/// The warning for a measured clock skew, when it is past [`CLOCK_SKEW_WARN_MS`].
pub fn clock_skew_warning(skew_ms: i64) -> Option<String> {
    (skew_ms.abs() > CLOCK_SKEW_WARN_MS).then(|| {
        format!(
            "this host's clock is {} ms {} PostgreSQL's: replicas share claim leases and retry times by wall clock, so a skew this large can let a lease be taken over early (a delivery sent twice) or late; keep the replicas' clocks synchronised (NTP)",
            skew_ms.abs(),
            if skew_ms > 0 { "ahead of" } else { "behind" }
        )
    })
}

impl Store {
    /// How far this process's clock is from the database's (ms, positive when ahead; the
    /// database's time read halfway through the round trip). `None` on SQLite: one process,
    /// one clock.
    pub async fn clock_skew_ms(&self) -> Result<Option<i64>, StoreError> {
        if self.backend() == Backend::Sqlite {
            return Ok(None);
        }
        self.read(|c| {
            let before = now_ms();
            let theirs = c.int(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
                &[],
            )?;
            let after = now_ms();
            Ok(theirs.map(|t| before + (after - before) / 2 - t))
        })
        .await
    }

    /// Log [`clock_skew_warning`] when the clocks are that far apart.
    pub async fn warn_on_clock_skew(&self) {
        if let Ok(Some(skew)) = self.clock_skew_ms().await
            && let Some(w) = clock_skew_warning(skew)
        {
            tracing::warn!(skew_ms = skew, "{w}");
        }
    }
}

/// Bring a PostgreSQL schema to the latest version, under the advisory lock (see [`schema`]).
async fn migrate_pg(pool: &Arc<pg::Pg>) -> Result<i64, StoreError> {
    let conn = pool.acquire().await?;
    tokio::task::spawn_blocking(move || {
        // waiting for another replica's migration, or building an index, may take long
        conn.unbounded()?;
        conn.batch(&format!(
            "SELECT pg_advisory_lock({});
             CREATE TABLE IF NOT EXISTS wharf_schema (version BIGINT NOT NULL, migrated_at BIGINT NOT NULL)",
            schema::PG_MIGRATION_LOCK
        ))?;
        let result = (|| {
            let db = Db::postgres(&conn);
            let found = db
                .int("SELECT MAX(version) FROM wharf_schema", &[])?
                .unwrap_or(0);
            schema::refuse_newer(found)?;
            for (i, m) in schema::MIGRATIONS.iter().enumerate() {
                let target = i as i64 + 1;
                if found >= target {
                    continue;
                }
                conn.batch("BEGIN")?;
                let step = (|| {
                    if !m.postgres.is_empty() {
                        conn.batch(m.postgres)?;
                    }
                    if let Some(then) = m.then {
                        then(&db)?;
                    }
                    db.exec(
                        "INSERT INTO wharf_schema (version, migrated_at) VALUES (?1, ?2)",
                        args![target, now_ms()],
                    )?;
                    Ok::<(), StoreError>(())
                })();
                match step {
                    Ok(()) => conn.batch("COMMIT")?,
                    Err(e) => {
                        let _ = conn.batch("ROLLBACK");
                        return Err(e);
                    }
                }
                tracing::info!(version = target, "database schema migrated");
            }
            Ok(schema::latest())
        })();
        let _ = conn.batch(&format!(
            "SELECT pg_advisory_unlock({})",
            schema::PG_MIGRATION_LOCK
        ));
        result
    })
    .await
    .map_err(|e| StoreError::Task(Arc::new(e)))?
}

/// `(text, count)` rows of a grouping query such as `SELECT state, COUNT(*) … GROUP BY state`.
pub fn grouped_counts(db: &Db<'_>, sql: &str) -> Result<Vec<(String, u64)>, StoreError> {
    db.rows(sql, &[], |r| Ok((r.text(0)?, r.u64(1)?)))
}

/// A PostgreSQL advisory lock's key for `parts` (the first names what kind of thing is locked):
/// 64 bits of a SHA-256 of them. Two things sharing a key only make one wait for the other.
pub(crate) fn advisory_key(parts: &[&str]) -> i64 {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

/// Milliseconds since the epoch, the time unit of every timestamp column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// The query plan's details, one line per step.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join(" | ")
    }

    /// The queries that run per event, per claim or every second must use an index, never walk
    /// a whole table: their cost must not grow with the event log or the delivery backlog (a
    /// table scan here once made draining 20,000 deliveries 14 times slower than 3,000).
    #[test]
    fn hot_queries_use_their_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        sqlite::migrate(&conn).unwrap();
        for (sql, index) in [
            (
                "SELECT seq, body FROM events WHERE state = 1 AND release_at <= 5 ORDER BY release_at, seq LIMIT 1000",
                "events_held",
            ),
            (
                "SELECT MIN(release_at) FROM events WHERE state = 1",
                "events_held",
            ),
            (
                "UPDATE events SET release_at = 2 WHERE state = 1 AND repository = 'a' AND release_at < 2",
                "events_held_digest",
            ),
            (
                "SELECT MIN(target_address) FROM deliveries WHERE state = 'pending' AND target_address > 'x'",
                "deliveries_pending_by_target",
            ),
            (
                "SELECT id FROM deliveries WHERE state = 'pending' AND target_address = 'x' AND not_before <= 5 ORDER BY not_before, id LIMIT 3",
                "deliveries_pending_by_target",
            ),
            (
                "SELECT MIN(not_before) FROM deliveries WHERE state = 'pending' AND target_address = 'x'",
                "deliveries_pending_by_target",
            ),
            (
                "SELECT MIN(not_before) FROM deliveries WHERE state = 'pending'",
                "deliveries_due",
            ),
            (
                "DELETE FROM deliveries WHERE event_seq = 5",
                "deliveries_by_event",
            ),
            (
                "SELECT id FROM deliveries WHERE state = 'running' AND lease_until < 5 LIMIT 100",
                "deliveries_lease",
            ),
            (
                "SELECT usage FROM quota_projects WHERE project = 'p'",
                "sqlite_autoindex_quota_projects_1",
            ),
        ] {
            let p = plan(&conn, sql);
            assert!(
                p.contains(index) && !p.starts_with("SCAN") && !p.contains("TEMP B-TREE"),
                "{sql}\n  plan: {p}"
            );
        }
    }

    /// `/metrics` counts the open deliveries through partial indexes (only the queue), never
    /// by walking the delivery history.
    #[test]
    fn delivery_counts_walk_only_the_queue() {
        let conn = Connection::open_in_memory().unwrap();
        sqlite::migrate(&conn).unwrap();
        let p = plan(&conn, outbox::COUNTS_SQL);
        let steps: Vec<&str> = p
            .split(" | ")
            .filter(|s| s.contains("deliveries "))
            .collect();
        assert_eq!(steps.len(), 2, "{p}");
        for step in steps {
            assert!(step.contains("COVERING INDEX"), "{step}\n  plan: {p}");
        }
    }
}
