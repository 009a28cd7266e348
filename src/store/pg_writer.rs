//! The PostgreSQL writers: a few threads that take jobs from one queue and commit them in
//! groups, each job in its own savepoint.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::db::{self, Db};
use super::{AfterCommit, PolicyCache, Stage, StoreError, StoreStats, job, outbox, pg};

/// Most jobs in one PostgreSQL group commit (each gets a savepoint: PostgreSQL keeps up to 64
/// subtransactions per transaction cheaply).
const PG_MAX_BATCH: usize = 32;

/// The PostgreSQL writers' shared queue.
pub(super) struct PgQueue {
    rx: Mutex<std::sync::mpsc::Receiver<job::Job>>,
    /// Writers waiting for work.
    idle: std::sync::atomic::AtomicUsize,
}

impl PgQueue {
    pub(super) fn new(rx: std::sync::mpsc::Receiver<job::Job>) -> Self {
        PgQueue {
            rx: Mutex::new(rx),
            idle: Default::default(),
        }
    }

    /// The next jobs to commit together; `None` once the queue is closed and empty. A writer
    /// takes a group only while no other writer is idle: otherwise each job gets a
    /// transaction of its own, in parallel, and waits for nobody else's statements (a job
    /// sharing a transaction waits for its own before the next job starts: a round trip
    /// each). Under load every writer is busy, and jobs are committed in groups.
    fn next_batch(&self) -> Option<Vec<job::Job>> {
        self.idle.fetch_add(1, Ordering::SeqCst);
        let taken = (|| {
            let rx = self.rx.lock().ok()?;
            let first = rx.recv().ok()?;
            self.idle.fetch_sub(1, Ordering::SeqCst);
            let mut batch = vec![first];
            while batch.len() < PG_MAX_BATCH
                && self.idle.load(Ordering::SeqCst) == 0
                && let Ok(j) = rx.try_recv()
            {
                batch.push(j);
            }
            Some(batch)
        })();
        if taken.is_none() {
            self.idle.fetch_sub(1, Ordering::SeqCst);
        }
        taken
    }
}

/// One PostgreSQL writer, a thread of its own: takes the next jobs ([`PgQueue::next_batch`],
/// up to [`PG_MAX_BATCH`]) and commits them together, each in its own savepoint (a failing job
/// rolls back alone). Runs until the queue is closed and empty.
///
/// A thread rather than a task that hands each batch to a blocking thread: the store functions
/// are synchronous and wait for each statement anyway, and the hand-offs (a task woken, a
/// blocking thread woken, the task woken again) were on the path of every commit a client
/// waits for.
pub(super) fn pg_writer(
    pool: Arc<pg::Pg>,
    queue: Arc<PgQueue>,
    after: AfterCommit,
    stats: Arc<StoreStats>,
    runtime: tokio::runtime::Handle,
) {
    // the writer's connection, driven by this thread (see pg::Driver::Own); replaced when it
    // fails
    let own = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(Arc::new);
    let acquire = || match &own {
        Ok(rt) => pool.acquire_own(rt),
        // no runtime of its own (cannot happen short of resource exhaustion): share
        Err(_) => runtime.block_on(pool.acquire()),
    };
    // connected now, so that the first jobs do not wait for it (if this fails, the first
    // batch tries again)
    let mut conn: Option<pg::Pooled> = acquire().ok();
    while let Some(batch) = queue.next_batch() {
        let n = batch.len();
        let kept = conn.take().filter(|c| {
            c.refresh();
            c.usable()
        });
        let c = match kept.map_or_else(acquire, Ok) {
            Ok(c) => c,
            Err(e) => {
                stats.failed_jobs.fetch_add(n as u64, Ordering::Relaxed);
                for j in batch {
                    j.refuse(e.clone());
                }
                continue;
            }
        };
        let intake = after.intake.current();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_pg_batch(&c, &after.cache, intake.as_deref(), batch)
        }));
        if ran.is_ok() {
            conn = Some(c);
        }
        let Ok((dones, commit, mut effects, failed)) = ran else {
            // the jobs' answers were dropped with the batch: their callers see the store
            // closed; policies a job may have read after another changed them go too
            tracing::error!(jobs = n, "database: a writer failed");
            after.cache.invalidate();
            continue;
        };
        match &commit {
            Ok(()) => {
                after.apply(&mut effects, Stage::BeforeAnswers, intake.as_deref());
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.failed_jobs.fetch_add(failed, Ordering::Relaxed);
                stats.jobs.fetch_add(n as u64 - failed, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = n, "database: commit failed");
                stats.failed_jobs.fetch_add(n as u64, Ordering::Relaxed);
                after.apply(&mut effects, Stage::RolledBack, None);
            }
        }
        for done in dones {
            done(commit.clone());
        }
        if commit.is_ok() {
            after.apply(&mut effects, Stage::AfterAnswers, intake.as_deref());
        }
    }
}

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Run `batch` in one transaction on `conn` (a writer thread): the answers to give, the
/// outcome of the COMMIT, the merged effects of the jobs that succeeded, and how many failed.
fn run_pg_batch(
    conn: &pg::PgConn,
    cache: &PolicyCache,
    intake: Option<&dyn outbox::Intake>,
    batch: Vec<job::Job>,
) -> (Vec<Done>, Result<(), StoreError>, db::Effects, u64) {
    let single = batch.len() == 1;
    let mut dones: Vec<Done> = Vec::with_capacity(batch.len());
    let mut effects = db::Effects::default();
    let mut failed = 0u64;
    let durable = batch.iter().any(|j| j.durable);
    let begin = if durable {
        "BEGIN"
    } else {
        "BEGIN; SET LOCAL synchronous_commit = off"
    };
    // BEGIN and each SAVEPOINT travel with the job's first statement (see `pg`); a durable
    // job alone in its transaction sends BEGIN only if it needs one (a push: one statement)
    if single && durable {
        conn.begin_lazily(begin);
    } else {
        conn.batch_later(begin);
    }
    let mut broken: Option<StoreError> = None;
    for j in batch {
        dones.push(j.done);
        if broken.is_some() {
            continue;
        }
        if !single {
            conn.batch_later("SAVEPOINT job");
        }
        let db = Db::postgres(conn)
            .with_cache(cache)
            .with_intake(intake)
            .settling_each_job(!single);
        match (j.run)(&db) {
            Some(e) => effects.merge(e),
            None => {
                failed += 1;
                if !single && let Err(e) = conn.rollback("ROLLBACK TO SAVEPOINT job") {
                    broken = Some(e);
                }
            }
        }
    }
    let commit = match broken {
        Some(e) => {
            let _ = conn.rollback("ROLLBACK");
            Err(e)
        }
        // a single job that failed: its transaction is rolled back, its own error answers it
        None if single && failed == 1 => conn.rollback("ROLLBACK"),
        // waits for everything sent ahead: a failed statement fails the commit
        None => conn.commit(),
    };
    (dones, commit, effects, failed)
}
