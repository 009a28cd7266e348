//! SQLite: the embedded store of a single instance, `<data_dir>/wharf.db`.
//!
//! One writer thread owns the write connection and commits in groups: every job queued while
//! the previous transaction ran goes into the next one, each inside its own savepoint (a failing
//! job rolls back alone, with its effects). The first job of a transaction needs none: when it
//! fails, the transaction holds nothing else and is rolled back whole, and the next job begins
//! another. A caller that awaits a write gets its answer only after the COMMIT. Background
//! writes (pull events) wait up to [`BACKGROUND_WINDOW`] (10 ms) to share a commit: what sits
//! in the queue when the process is killed is lost; the queue is drained on graceful shutdown.
//! While it gathers them the writer is parked, so a background job does not wake it (only the
//! first of a window, and any job somebody waits for, does).
//!
//! Durability: WAL journal. `store.synchronous: normal` (default) survives a killed process
//! (`kill -9`) but not an OS crash — the same as the registry's own filesystem storage, which
//! does not fsync either; `full` fsyncs every group commit (≈4 ms on this machine's disk).
//! Reads use a small pool of read-only connections and see only committed data.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::db::{Db, Effects};
use super::job::Job;
use super::{PolicyCache, StoreError, StoreStats, Synchronous, events, schema};

const MAX_BATCH: usize = 512;
/// How long background writes (pull events) may wait to be committed together with others:
/// the window a killed process can lose them in.
pub const BACKGROUND_WINDOW: Duration = Duration::from_millis(10);
const MAX_IDLE_READERS: usize = 4;

/// The SQLite backend: the writer thread's queue and the readers.
pub(super) struct Sqlite {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer thread, unparked by urgent jobs while it gathers background ones.
    writer_thread: std::thread::Thread,
    readers: Mutex<Vec<Connection>>,
}

/// What the writer thread does after each commit, before and after answering its jobs (with
/// the dispatcher intake its jobs ran with).
pub(super) type AfterCommit =
    Box<dyn Fn(&mut Effects, super::Stage, Option<&dyn super::outbox::Intake>) + Send>;

impl Sqlite {
    /// Open (creating if needed) `<data_dir>/wharf.db`, migrate, start the writer thread.
    pub(super) fn open(
        data_dir: &Path,
        sync: Synchronous,
        stats: Arc<StoreStats>,
        cache: Arc<PolicyCache>,
        intake: Arc<super::IntakeSlot>,
        after_commit: AfterCommit,
    ) -> Result<Sqlite, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source: Arc::new(e),
        })?;
        let path = data_dir.join("wharf.db");
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                Synchronous::Normal => "NORMAL",
                Synchronous::Full => "FULL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        tune(&conn)?;
        migrate(&conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("wharf-db-writer".into())
            .spawn(move || writer_loop(conn, rx, stats, cache, intake, after_commit))
            .map_err(|e| StoreError::Io(Arc::new(e)))?;
        Ok(Sqlite {
            path,
            tx: Mutex::new(Some(tx)),
            writer_thread: writer.thread().clone(),
            writer: Mutex::new(Some(writer)),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), Job> {
        // (the store answers a refused job)
        let guard = match self.tx.lock() {
            Ok(g) => g,
            Err(_) => return Err(job),
        };
        let urgent = job.urgent;
        match guard.as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0)?,
            None => return Err(job),
        }
        if urgent {
            self.writer_thread.unpark();
        }
        Ok(())
    }

    /// Run `f` on a pooled read-only connection (call from a blocking thread).
    pub(super) fn read<T>(
        &self,
        cache: &PolicyCache,
        f: impl FnOnce(&Db<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().ok().and_then(|mut v| v.pop());
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(Duration::from_secs(5))?;
                tune(&c)?;
                c
            }
        };
        let out = f(&Db::sqlite(&conn).with_cache(cache));
        if let Ok(mut v) = self.readers.lock()
            && v.len() < MAX_IDLE_READERS
        {
            v.push(conn);
        }
        out
    }

    /// Stop taking writes, commit everything queued, stop the writer thread.
    pub(super) async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    stats: Arc<StoreStats>,
    cache: Arc<PolicyCache>,
    intake: Arc<super::IntakeSlot>,
    after_commit: AfterCommit,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let mut deadline: Option<std::time::Instant> = None;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    // someone waits: commit now; only background jobs: gather a few more
                    if batch.iter().any(|j| j.urgent) {
                        break;
                    }
                    let until = *deadline
                        .get_or_insert_with(|| std::time::Instant::now() + BACKGROUND_WINDOW);
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    // parked, not waiting on the queue: background jobs queued meanwhile do
                    // not wake this thread one by one (a futex wake and a context switch per
                    // pull event); an urgent job does (`Sqlite::submit` unparks it)
                    std::thread::park_timeout(left);
                }
            }
        }
        let n = batch.len();
        let mut dones = Vec::with_capacity(n);
        let admitting = intake.current();
        let mut failed = 0u64;
        let mut effects = Effects::default();
        // No transaction is open before the first job, nor after a failed job that was the
        // first of its transaction. That job ran without a savepoint (a savepoint copies every
        // page the job touches to the statement journal first): its transaction holds nothing
        // else, so it is rolled back whole and the next job begins a new one (as on PostgreSQL
        // for a job alone). Later jobs of a transaction run in savepoints.
        let mut open = false;
        let mut fresh = true;
        let mut broken: Option<StoreError> = None;
        for job in batch {
            if let Some(err) = &broken {
                failed += 1;
                (job.done)(Err(err.clone()));
                continue;
            }
            if !open {
                if let Err(e) = exec_cached(&conn, "BEGIN IMMEDIATE") {
                    let err = StoreError::from(e);
                    tracing::error!(error = %err, jobs = n, "database: cannot begin a transaction");
                    failed += 1;
                    (job.done)(Err(err.clone()));
                    broken = Some(err);
                    continue;
                }
                open = true;
                fresh = true;
            }
            let savepoint = !fresh && exec_cached(&conn, "SAVEPOINT job").is_ok();
            let done = (job.run)(
                &Db::sqlite(&conn)
                    .with_cache(&cache)
                    .with_intake(admitting.as_deref()),
            );
            if savepoint {
                let _ = if done.is_some() {
                    exec_cached(&conn, "RELEASE job")
                } else {
                    exec_cached(&conn, "ROLLBACK TO job")
                        .and_then(|_| exec_cached(&conn, "RELEASE job"))
                };
            }
            match done {
                Some(e) => {
                    effects.merge(e);
                    fresh = false;
                }
                None => {
                    failed += 1;
                    if fresh {
                        // its own error answers it; nothing else was in the transaction
                        if let Err(e) = exec_cached(&conn, "ROLLBACK") {
                            tracing::error!(error = %e, "database: rollback failed");
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                        open = false;
                    }
                }
            }
            dones.push(job.done);
        }
        if broken.is_some() && dones.is_empty() {
            stats.failed_jobs.fetch_add(failed, Ordering::Relaxed);
            // the writer's own thread, waiting before it retries a broken database
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        // every job that ran failed alone: nothing to commit
        let rolled_back = !open;
        let commit = if rolled_back {
            Ok(())
        } else {
            exec_cached(&conn, "COMMIT")
                .map(|_| ())
                .map_err(StoreError::from)
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = n, "database: commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            stats.failed_jobs.fetch_add(n as u64, Ordering::Relaxed);
            after_commit(&mut effects, super::Stage::RolledBack, None);
        } else {
            after_commit(
                &mut effects,
                super::Stage::BeforeAnswers,
                admitting.as_deref(),
            );
            if !rolled_back {
                stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            stats.failed_jobs.fetch_add(failed, Ordering::Relaxed);
            stats.jobs.fetch_add(n as u64 - failed, Ordering::Relaxed);
        }
        for done in dones {
            done(commit.clone());
        }
        if commit.is_ok() {
            after_commit(
                &mut effects,
                super::Stage::AfterAnswers,
                admitting.as_deref(),
            );
        }
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

/// Settings every connection gets: a statement cache big enough for every static statement,
/// wharf's SQL functions ([`add_functions`]), and the query planner stability guarantee.
/// Without QPSG, SQLite lets a bound value steer the plan (a `LIMIT ?`, an `= ?` it propagates
/// into a join or an `ORDER BY`) and then recompiles the statement whenever its bindings
/// change — which, for a cached statement, is every use (rusqlite clears the bindings when it
/// returns a statement to the cache). The hot statements are written for their indexes, not
/// for particular values.
pub(crate) fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(128);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    add_functions(conn)
}

/// The SQL functions wharf's statements use on both backends that SQLite lacks (PostgreSQL's
/// are created by the migrations), for the API's substring and range filters and sorting on
/// values the event log keeps as bytes; any other value as text, NULL as NULL:
/// `wharf_uuid_text(id)`, the canonical text of a UUID kept as its 16 bytes (schema 15),
/// `wharf_digest_text(digest)`, `sha256:<hex>` of a digest kept as its 32 bytes (schema 16),
/// and `wharf_event_type(type)` and `wharf_event_state(state)`, the names of an event's type
/// and state kept as codes (schema 21).
pub(crate) fn add_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    /// The text of a value kept in a form of its own (bytes, a code), if it is one.
    type Convert = fn(ValueRef<'_>) -> Option<String>;
    let functions: [(&str, Convert); 4] = [
        ("wharf_digest_text", |v| match v {
            ValueRef::Blob(b) => super::db::sha256_text(b),
            _ => None,
        }),
        ("wharf_uuid_text", |v| match v {
            ValueRef::Blob(b) => uuid::Uuid::from_slice(b).ok().map(|u| u.to_string()),
            _ => None,
        }),
        ("wharf_event_type", |v| match v {
            ValueRef::Integer(c) => events::kind_of_code(c).map(|k| k.harbor_type().to_string()),
            _ => None,
        }),
        ("wharf_event_state", |v| match v {
            ValueRef::Integer(c) => events::EventState::of_code(c).map(|s| s.name().to_string()),
            _ => None,
        }),
    ];
    /// Any other value as text, NULL as NULL.
    fn plain_text(v: ValueRef<'_>) -> Option<String> {
        match v {
            ValueRef::Null => None,
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Integer(i) => Some(i.to_string()),
            ValueRef::Real(r) => Some(r.to_string()),
        }
    }
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for (name, convert) in functions {
        conn.create_scalar_function(name, 1, flags, move |ctx| {
            let v = ctx.get_raw(0);
            Ok(convert(v).or_else(|| plain_text(v)))
        })?;
    }
    Ok(())
}

/// Run a statement without parameters through the statement cache (no re-parse per batch).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

/// The schema version of the database.
pub(crate) fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Bring the schema to the latest version (see [`schema`]); refuse a newer one.
pub(crate) fn migrate(conn: &Connection) -> Result<i64, StoreError> {
    let found = version(conn)?;
    schema::refuse_newer(found)?;
    for (i, m) in schema::MIGRATIONS.iter().enumerate() {
        let target = i as i64 + 1;
        if found < target {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let step = (|| {
                if !m.sqlite.is_empty() {
                    conn.execute_batch(m.sqlite)?;
                }
                if let Some(then) = m.then {
                    then(&Db::sqlite(conn))?;
                }
                conn.pragma_update(None, "user_version", target)?;
                Ok::<(), StoreError>(())
            })();
            match step {
                Ok(()) => conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
    }
    version(conn)
}
