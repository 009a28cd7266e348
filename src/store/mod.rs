//! Store: the embedded SQLite database under `data_dir` — event log, outbox, knowledge.
//!
//! One writer thread owns the write connection and commits in groups: every job queued while
//! the previous transaction ran goes into the next one, each inside its own savepoint (a failing
//! job rolls back alone). A caller that awaits [`Store::write`] gets its answer only after the
//! COMMIT, so "the event is committed before the client sees success" is a plain `.await`.
//! [`Store::write_detached`] queues without waiting (pull events), and such background writes
//! wait up to [`BACKGROUND_WINDOW`] (10 ms) to share a commit: what sits in the queue when the
//! process is killed is lost; the queue is drained on graceful shutdown.
//!
//! Durability: WAL journal. `store.synchronous: normal` (default) survives a killed process
//! (`kill -9`) but not an OS crash — the same as the registry's own filesystem storage, which
//! does not fsync either; `full` fsyncs every group commit (≈4 ms on this machine's disk).
//! Reads use a small pool of read-only connections and see only committed data.

pub mod charts;
pub mod events;
pub mod knowledge;
pub mod outbox;
pub mod policies;
pub mod quota;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// Store failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(String),
    #[error("database is closed")]
    Closed,
    #[error("cannot create data_dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e.to_string())
    }
}

/// `PRAGMA synchronous` of the write connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Survives a killed process; an OS crash may lose the last commits.
    #[default]
    Normal,
    /// fsync on every commit.
    Full,
}

/// A queued write: `run` executes inside its own savepoint and says whether it succeeded (else
/// the savepoint is rolled back); `done` gets the outcome of the COMMIT (or the reason the job
/// never ran) and answers the caller.
struct Job {
    run: Box<dyn FnOnce(&Connection) -> bool + Send>,
    done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    /// Someone waits for this commit ([`Store::write`]); background jobs
    /// ([`Store::write_detached`]) may wait up to [`BACKGROUND_WINDOW`] for company.
    urgent: bool,
}

impl Job {
    fn new<T: Send + 'static>(
        urgent: bool,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Job {
        let slot: Arc<Mutex<Option<Result<T, StoreError>>>> = Arc::new(Mutex::new(None));
        let out = slot.clone();
        Job {
            run: Box::new(move |conn| {
                let r = f(conn);
                let ok = r.is_ok();
                if let Ok(mut s) = slot.lock() {
                    *s = Some(r);
                }
                ok
            }),
            done: Box::new(move |commit| {
                let r = out.lock().ok().and_then(|mut s| s.take());
                answer(match (commit, r) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(r)) => r,
                    (Ok(()), None) => Err(StoreError::Closed),
                });
            }),
            urgent,
        }
    }
}

/// Counters of the store (exported as metrics).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Group commits done.
    pub commits: AtomicU64,
    /// Jobs committed.
    pub jobs: AtomicU64,
    /// Jobs that failed (their writes rolled back).
    pub failed_jobs: AtomicU64,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    stats: Arc<StoreStats>,
    outbox: Arc<tokio::sync::Notify>,
}

const MAX_BATCH: usize = 512;
/// How long background writes (pull events) may wait to be committed together with others:
/// the window a killed process can lose them in.
pub const BACKGROUND_WINDOW: Duration = Duration::from_millis(10);
const MAX_IDLE_READERS: usize = 4;

impl Store {
    /// Open (creating if needed) `<data_dir>/wharf.db`, migrate, start the writer thread.
    pub fn open(data_dir: &Path, sync: Synchronous) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
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
        let stats = Arc::new(StoreStats::default());
        let thread_stats = stats.clone();
        let outbox = Arc::new(tokio::sync::Notify::new());
        let thread_outbox = outbox.clone();
        let writer = std::thread::Builder::new()
            .name("wharf-db-writer".into())
            .spawn(move || writer_loop(conn, rx, thread_stats, thread_outbox))
            .map_err(|e| StoreError::Sql(format!("cannot start writer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Vec::new()),
                stats,
                outbox,
            }),
        })
    }

    /// Notified after every commit that created deliveries (wakes the dispatcher).
    pub fn outbox_notify(&self) -> Arc<tokio::sync::Notify> {
        self.inner.outbox.clone()
    }

    /// The store's counters.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.inner.stats.clone()
    }

    fn submit(&self, job: Job) -> Result<(), Job> {
        let guard = match self.inner.tx.lock() {
            Ok(g) => g,
            Err(_) => return Err(job),
        };
        match guard.as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Run `f` in the next group commit; resolves after COMMIT with `f`'s result.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::new(true, f, move |r| {
            let _ = tx.send(r);
        });
        if let Err(job) = self.submit(job) {
            (job.done)(Err(StoreError::Closed));
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queue `f` for a group commit without waiting (see [`BACKGROUND_WINDOW`]); `answer` gets
    /// its result once committed (or the failure), on the writer thread: keep it short.
    pub fn write_detached<T, F>(
        &self,
        f: F,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let job = Job::new(false, f, answer);
        if let Err(job) = self.submit(job) {
            (job.done)(Err(StoreError::Closed));
        }
    }

    /// Run a read-only query on a pooled connection (off the async threads).
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.busy_timeout(Duration::from_secs(5))?;
                    tune(&c)?;
                    c
                }
            };
            let out = f(&conn);
            if let Ok(mut v) = inner.readers.lock()
                && v.len() < MAX_IDLE_READERS
            {
                v.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Sql(format!("read task failed: {e}")))?
    }

    /// Stop taking writes, commit everything queued, stop the writer thread.
    pub async fn close(&self) {
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    stats: Arc<StoreStats>,
    outbox_notify: Arc<tokio::sync::Notify>,
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
                    match rx.recv_timeout(left) {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
            }
        }
        let n = batch.len();
        if let Err(e) = exec_cached(&conn, "BEGIN IMMEDIATE") {
            let err = StoreError::from(e);
            tracing::error!(error = %err, jobs = n, "database: cannot begin a transaction");
            stats.failed_jobs.fetch_add(n as u64, Ordering::Relaxed);
            for job in batch {
                (job.done)(Err(err.clone()));
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut dones = Vec::with_capacity(n);
        let mut failed = 0u64;
        for job in batch {
            events::take_published();
            let savepoint = exec_cached(&conn, "SAVEPOINT job").is_ok();
            let ok = (job.run)(&conn);
            if savepoint {
                let _ = if ok {
                    exec_cached(&conn, "RELEASE job")
                } else {
                    exec_cached(&conn, "ROLLBACK TO job")
                        .and_then(|_| exec_cached(&conn, "RELEASE job"))
                };
            }
            failed += u64::from(!ok);
            dones.push(job.done);
        }
        let commit = exec_cached(&conn, "COMMIT")
            .map(|_| ())
            .map_err(StoreError::from);
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = n, "database: commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            stats.failed_jobs.fetch_add(n as u64, Ordering::Relaxed);
            outbox::take_created();
        } else {
            if outbox::take_created() {
                outbox_notify.notify_one();
            }
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.failed_jobs.fetch_add(failed, Ordering::Relaxed);
            stats.jobs.fetch_add(n as u64 - failed, Ordering::Relaxed);
        }
        for done in dones {
            done(commit.clone());
        }
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

/// `(text, count)` rows of a grouping query such as `SELECT state, COUNT(*) … GROUP BY state`.
pub fn grouped_counts(conn: &Connection, sql: &str) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Run a statement without parameters through the statement cache (no re-parse per batch).
/// Settings every connection gets: a statement cache big enough for every static statement,
/// and the query planner stability guarantee. Without QPSG, SQLite lets a bound value steer
/// the plan (a `LIMIT ?`, an `= ?` it propagates into a join or an `ORDER BY`) and then
/// recompiles the statement whenever its bindings change — which, for a cached statement, is
/// every use (rusqlite clears the bindings when it returns a statement to the cache). The hot
/// statements are written for their indexes, not for particular values.
pub(crate) fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(128);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

/// Schema migrations, by `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    // 1: event log and knowledge
    r#"
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        project TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT,
        occurred_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        release_at INTEGER,
        body TEXT NOT NULL
    );
    CREATE INDEX events_by_project ON events(project, seq);
    CREATE INDEX events_held ON events(release_at) WHERE state = 'held';
    CREATE INDEX events_held_digest ON events(repository, digest) WHERE state = 'held';
    CREATE TABLE artifacts (
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL,
        media_type TEXT,
        size INTEGER,
        config_digest TEXT,
        chart TEXT,
        platforms TEXT,
        children TEXT,
        blobs TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (repository, digest)
    );
    CREATE TABLE tags (
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (repository, tag)
    );
    CREATE INDEX tags_by_digest ON tags(repository, digest);
    "#,
    // 2: projects, webhook policies, the outbox (deliveries and their attempts), settings
    r#"
    CREATE TABLE projects (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE policies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        event_types TEXT NOT NULL,
        targets TEXT NOT NULL,
        filters TEXT NOT NULL,
        creator TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (project, name)
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        policy_id INTEGER NOT NULL,
        project TEXT NOT NULL,
        target_index INTEGER NOT NULL,
        target_address TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_status INTEGER,
        last_error TEXT
    );
    CREATE INDEX deliveries_due ON deliveries(not_before) WHERE state = 'pending';
    CREATE INDEX deliveries_by_policy ON deliveries(policy_id, id);
    CREATE INDEX deliveries_by_state ON deliveries(state);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        error_kind TEXT,
        error TEXT,
        response_excerpt TEXT
    );
    CREATE INDEX attempts_by_delivery ON attempts(delivery_id, id);
    CREATE TABLE last_triggers (
        policy_id INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (policy_id, event_type)
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 3: classic (ChartMuseum) chart versions seen uploaded: type, appVersion, size
    r#"
    CREATE TABLE charts (
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        type TEXT NOT NULL,
        app_version TEXT,
        size INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (project, name, version)
    );
    "#,
    // 4: quota usage: the blobs each project's manifests reference, and warning state
    r#"
    CREATE TABLE project_blobs (
        project TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        refs INTEGER NOT NULL,
        PRIMARY KEY (project, digest)
    );
    CREATE TABLE quota_state (
        project TEXT PRIMARY KEY,
        warned INTEGER NOT NULL
    );
    "#,
    // 5: the dispatcher claims per target address (cost independent of queue length); the
    // index on state alone misled the planner into scanning every pending delivery; pruning
    // finds an event's deliveries by event id
    r#"
    CREATE INDEX deliveries_pending_by_target ON deliveries(target_address, not_before, id)
        WHERE state = 'pending';
    DROP INDEX deliveries_by_state;
    CREATE INDEX deliveries_by_event ON deliveries(event_id);
    "#,
];

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let target = i as i64 + 1;
        if version < target {
            conn.execute_batch(&format!(
                "BEGIN; {sql}; PRAGMA user_version = {target}; COMMIT;"
            ))?;
        }
    }
    Ok(())
}

/// Milliseconds since the epoch, the time unit of every timestamp column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        migrate(&conn).unwrap();
        for (sql, index) in [
            (
                "SELECT seq, body FROM events WHERE state = 'held' AND release_at <= 5 ORDER BY release_at, seq LIMIT 1000",
                "events_held",
            ),
            (
                "SELECT MIN(release_at) FROM events WHERE state = 'held'",
                "events_held",
            ),
            (
                "UPDATE events SET release_at = 2 WHERE state = 'held' AND repository = 'a' AND release_at < 2",
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
                "DELETE FROM deliveries WHERE event_id = 'x'",
                "deliveries_by_event",
            ),
            (
                "SELECT COALESCE(SUM(size), 0) FROM project_blobs WHERE project = 'p' AND refs > 0",
                "sqlite_autoindex_project_blobs_1",
            ),
        ] {
            let p = plan(&conn, sql);
            assert!(
                p.contains(index) && !p.starts_with("SCAN") && !p.contains("TEMP B-TREE"),
                "{sql}\n  plan: {p}"
            );
        }
    }
}
