//! Sink: hands events to the store, durably or in the background, and counts them.
//!
//! - [`Sink::durable`]: resolves after the event (and whatever `with` writes in the same
//!   transaction) is committed. Used for pushes, deletes, chart uploads and deletes, quota
//!   events: the client's success response waits for it — at most `store.statement_timeout`;
//!   an event not committed by then is counted late and recorded when the database answers
//!   (or counted lost). A transaction PostgreSQL rolled back for a deadlock or a serialization
//!   conflict with another replica's is queued again, and so is one whose connection was lost
//!   (unless its event is there: its COMMIT landed) — three tries in all.
//!   [`Sink::durable_waited`] waits for the outcome however long it takes
//!   (side-endpoint reports, whose sender retries on an error).
//! - [`Sink::detached`]: queued for the next group commit, not awaited. Used for pulls: a
//!   process killed in that moment (typically a few milliseconds) loses those pulls. Events
//!   queued while the store's writer is busy are written by one job (one savepoint at most,
//!   not one each): a database failure in that job loses the group, each event logged and
//!   counted, as a kill would — but for a conflict with another transaction or a lost
//!   connection, after which the group is written again (after a lost connection, its events
//!   first looked for), as a durable event is.
//!
//! A database failure never fails the registry request: it is logged and counted
//! (`events_lost`). Detached events waiting for the database are capped
//! (100,000); past it a pull's event is counted lost at once.
//!
//! In the event's transaction the sink also gives a project met for the first time by this
//! process its row (projects seen in traffic exist for the API; one insert-if-missing per
//! name and process, none afterwards), and sets the repository's creation time on artifact
//! events (one primary-key lookup).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Event, EventKind};
use crate::metrics::Metrics;
use crate::store::{self, Db, Store, StoreError};

/// Extra writes in the event's transaction (knowledge updates); may adjust the event, and
/// returns whether the event is still to be recorded (`false`: it turned out to be part of
/// another, e.g. the platform manifest of an index the client just pulled through another
/// replica). Runs again when its transaction was rolled back — it lost a deadlock to another
/// replica's, or its connection (see [`Sink::durable`]) — so it writes what it is given,
/// nothing it consumed.
pub type With = Arc<dyn Fn(&Db<'_>, &mut Event) -> Result<bool, StoreError> + Send + Sync>;

/// See the module doc.
#[derive(Clone)]
pub struct Sink {
    store: Store,
    metrics: Arc<Metrics>,
    /// Projects known to have a row (see [`store::projects::Known`]).
    projects: Arc<store::projects::Known>,
    /// Detached events waiting for their job (see [`Sink::detached`]).
    queued: Arc<Mutex<Queued>>,
    /// Most detached events waiting ([`MAX_DETACHED`]).
    max_detached: usize,
    /// Where a try whose connection was lost waits before it is queued again (the runtime
    /// the sink was made on).
    runtime: Option<tokio::runtime::Handle>,
}

/// At most this many detached events per job: a push committed behind a group waits for no
/// more than the writer's own batch of jobs used to hold.
const GROUP_MAX: usize = 512;

/// What became of a durable event by the time its request stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Committed.
    Yes,
    /// Not committed within `store.statement_timeout`: recorded when the database answers, or
    /// counted lost then.
    Late,
    /// Not recorded (counted lost).
    Lost,
}

/// The accounting of a durable event whose answer never comes (its job dropped with a writer
/// that failed): counted lost when dropped while still holding the sink.
struct Unanswered {
    sink: Option<Sink>,
    kind: EventKind,
    id: uuid::Uuid,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.account(self.kind, self.id, Err(StoreError::Closed));
        }
    }
}

/// Tries of an event's transaction that a conflict with another replica's rolled back, or
/// whose connection was lost (see [`Sink::durable`], [`Sink::detached`]).
const RETRIES: u32 = 3;

/// How long an event whose connection was lost waits before its second and third tries.
const RECONNECT_WAITS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// How long to wait before a try that follows `failed` tries whose connection was lost.
fn reconnect_wait(failed: u32) -> Duration {
    RECONNECT_WAITS[(failed as usize).min(RECONNECT_WAITS.len() - 1)]
}

/// Why a failed try of an event's transaction (a durable event's, or a background group's) is
/// made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// A conflict with another transaction (a deadlock, a serialization failure) rolled it back
    /// whole: made again at once, nothing to look for.
    Conflict,
    /// Its connection was lost, perhaps after its COMMIT landed: made again after
    /// [`RECONNECT_WAITS`], looking for the event first.
    ConnectionLost,
}

impl Again {
    /// Whether a try that failed with `e` is made again, and why.
    fn after(e: &StoreError) -> Option<Self> {
        if e.is_conflict() {
            Some(Again::Conflict)
        } else if e.is_connection_lost() {
            Some(Again::ConnectionLost)
        } else {
            None
        }
    }

    /// How long the next try waits, after `failed` tries.
    fn wait(self, failed: u32) -> Duration {
        match self {
            Again::Conflict => Duration::ZERO,
            Again::ConnectionLost => reconnect_wait(failed),
        }
    }

    /// Whether the next try looks for the event first.
    fn look_first(self) -> bool {
        self == Again::ConnectionLost
    }
}

/// A durable event on its way to the store, with what its answer needs.
struct Attempt {
    event: Event,
    hold_until: Option<i64>,
    with: Option<With>,
    new_project: bool,
    started: std::time::Instant,
    /// This try's number, from 1.
    tries: u32,
    /// A try lost its connection, perhaps after its COMMIT landed: look for the event first.
    look_first: bool,
    /// Counts the event lost if the answer never comes.
    guard: Unanswered,
    tx: tokio::sync::oneshot::Sender<bool>,
}

/// Most detached events waiting for the database (a database that stopped answering while
/// pulls go on); past it, a pull's event is counted lost at once.
const MAX_DETACHED: usize = 100_000;

/// Detached events waiting, and whether a job to take them is queued (then every event added
/// is taken by it or by the job it queues for what it left).
#[derive(Default)]
struct Queued {
    events: std::collections::VecDeque<Detached>,
    job_queued: bool,
}

/// A detached event waiting to be written.
struct Detached {
    event: Event,
    with: Option<With>,
    new_project: bool,
    /// Tries of its group that lost their connection.
    tries: u32,
    /// One did: look for the event first (its COMMIT may have landed).
    look_first: bool,
}

/// The events a job took (given back to it after its writes, for its answer), and whether it
/// left some for the next job.
type Group = (Vec<Detached>, bool);

/// Events put back at the front of the queue ([`Sink::again_at_front`]).
struct PutBack {
    /// How long the job that takes them waits.
    wait: Duration,
    /// No job was queued: the caller queues it.
    took: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// In the event's transaction: the project's row when this process has not met the name yet
/// (a project seen in traffic exists for the API), and the repository's creation time.
fn complete(c: &Db<'_>, event: &mut Event, new_project: bool) -> Result<(), StoreError> {
    if new_project {
        store::policies::ensure_project(c, &event.project)?;
    }
    if event.kind.is_artifact() && event.repository_created.is_none() {
        event.repository_created =
            store::knowledge::repository_created_cached(c, &event.repository)?;
    }
    Ok(())
}

/// What one event's writes did.
struct Written {
    /// The event was inserted (`with` may find it part of another, or its report's
    /// idempotency key another's: then nothing of it is written, its project's row neither).
    inserted: bool,
    /// What the transaction published so far.
    published: Vec<EventKind>,
}

/// In the event's transaction: `with`'s writes, then the event completed and inserted (unless
/// `with` says it is not to be). With `look_first`, nothing when the event is already there
/// (an earlier try's COMMIT landed, its answer lost with the connection).
fn record(
    c: &Db<'_>,
    event: &mut Event,
    with: Option<&With>,
    new_project: bool,
    hold_until: Option<i64>,
    look_first: bool,
) -> Result<Written, StoreError> {
    if look_first && store::events::exists(c, &event.id)? {
        return Ok(Written {
            inserted: true,
            published: published_alone(event, hold_until),
        });
    }
    if let Some(w) = with
        && !w(c, event)?
    {
        return Ok(Written {
            inserted: false,
            published: c.take_published(),
        });
    }
    complete(c, event, new_project)?;
    store::events::insert(c, event, hold_until)?;
    Ok(Written {
        inserted: true,
        published: c.take_published(),
    })
}

/// What an earlier try of `event` published as far as a later one can tell: the event itself,
/// unless held. (What its `with` published too — a held push it released, a quota warning — is
/// delivered all the same, but not counted in `wharf_events_total`; nor are that try's effects
/// after COMMIT applied in this process: a delivery it created claimed waits for its lease.)
fn published_alone(event: &Event, hold_until: Option<i64>) -> Vec<EventKind> {
    if hold_until.is_none() {
        vec![event.kind]
    } else {
        Vec::new()
    }
}

/// The event's own row refused a try's insert: it is there.
fn refused_as_there(e: &StoreError) -> bool {
    e.is_unique_violation() && e.table() == Some("events")
}

impl Sink {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            metrics,
            projects: Arc::default(),
            queued: Arc::default(),
            max_detached: MAX_DETACHED,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Record `event` and wait for the commit, at most `store.statement_timeout` (see
    /// [`Store::within`]): for registry requests, which go on without the database rather than
    /// wait for it without end. With `hold_until` (unix ms) the event waits, durably, to be
    /// published or absorbed. An event not committed in time is counted (`events_late`) and
    /// recorded when the database answers, or counted lost then.
    pub async fn durable(
        &self,
        event: Event,
        hold_until: Option<i64>,
        with: Option<With>,
    ) -> Recorded {
        let (kind, id) = (event.kind, event.id);
        let answer = self.submit_durable(event, hold_until, with);
        match self.store.within(async { Ok(answer.await) }).await {
            Ok(Ok(true)) => Recorded::Yes,
            // (a job dropped unanswered was counted lost by its answer's guard)
            Ok(Ok(false) | Err(_)) => Recorded::Lost,
            Err(e) => {
                self.metrics.events_late.inc();
                tracing::warn!(event_id = %id, kind = kind.harbor_type(), error = %e, "event not committed in time: the request goes on; the event is recorded when the database answers, else counted lost");
                Recorded::Late
            }
        }
    }

    /// Record `event` and wait for the outcome however long it takes (the side endpoint: its
    /// caller sends the report again on an error, so the answer must say what happened), with
    /// the writes of `with` in its transaction.
    pub async fn durable_waited(&self, event: Event, with: Option<With>) -> bool {
        self.submit_durable(event, None, with)
            .await
            .unwrap_or(false)
    }

    /// Queue `event`'s transaction; its answer (and accounting) comes whether or not anyone
    /// still waits for it — also when the job is dropped unanswered (a writer that failed):
    /// then the event is counted lost.
    fn submit_durable(
        &self,
        event: Event,
        hold_until: Option<i64>,
        with: Option<With>,
    ) -> tokio::sync::oneshot::Receiver<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let attempt = Attempt {
            guard: Unanswered {
                sink: Some(self.clone()),
                kind: event.kind,
                id: event.id,
            },
            new_project: !self.projects.contains(&event.project),
            event,
            hold_until,
            with,
            started: std::time::Instant::now(),
            tries: 1,
            look_first: false,
            tx,
        };
        self.submit_attempt(attempt);
        rx
    }

    /// Queue one try of a durable event's transaction. One that lost a deadlock (or a
    /// serialization conflict) to another replica's transaction was rolled back whole: it is
    /// queued again at once, with the event as it came. So is one whose connection was lost,
    /// after [`RECONNECT_WAITS`] (a server restarting refuses connections for a moment) — on a
    /// new connection, and only if the event is not there (its COMMIT may have landed). Up to
    /// [`RETRIES`] tries in all; a database that cannot be reached within
    /// `store.connect_timeout` is not tried again.
    fn submit_attempt(&self, attempt: Attempt) {
        let (event, with) = (attempt.event.clone(), attempt.with.clone());
        let (new_project, hold_until) = (attempt.new_project, attempt.hold_until);
        let look_first = attempt.look_first;
        self.store.write_answered(
            move |c| {
                let mut event = event;
                record(c, &mut event, with.as_ref(), new_project, hold_until, look_first)
            },
            move |result| {
                let mut a = attempt;
                let Some(sink) = a.guard.sink.take() else {
                    return;
                };
                let result = match result {
                    // the event's row is there after all: an earlier try's COMMIT, still
                    // running when this try looked, landed before this one's insert
                    Err(e) if a.look_first && refused_as_there(&e) => Ok(Written {
                        inserted: true,
                        published: published_alone(&a.event, a.hold_until),
                    }),
                    r => r,
                };
                let again = match &result {
                    Err(e) if a.tries < RETRIES => Again::after(e).map(|why| (why, e)),
                    _ => None,
                };
                if let Some((why, e)) = again {
                    match why {
                        Again::Conflict => {
                            tracing::warn!(event_id = %a.event.id, kind = a.event.kind.harbor_type(), error = %e, tries = a.tries, "event's transaction rolled back by a conflict with another one: written again");
                        }
                        Again::ConnectionLost => {
                            tracing::warn!(event_id = %a.event.id, kind = a.event.kind.harbor_type(), error = %e, tries = a.tries, "event's connection to the database lost: written again unless it was committed");
                        }
                    }
                    a.look_first |= why.look_first();
                    let wait = why.wait(a.tries - 1);
                    a.tries += 1;
                    a.guard.sink = Some(sink.clone());
                    match sink.runtime.clone() {
                        Some(rt) if !wait.is_zero() => {
                            // (a runtime shutting down drops the task: its guard counts the
                            // event lost)
                            rt.spawn(async move {
                                tokio::time::sleep(wait).await;
                                sink.submit_attempt(a);
                            });
                        }
                        _ => sink.submit_attempt(a),
                    }
                    return;
                }
                sink.metrics
                    .event_commit_seconds
                    .observe(a.started.elapsed().as_secs_f64());
                let inserted = matches!(result, Ok(Written { inserted: true, .. }));
                let ok = sink.account(a.event.kind, a.event.id, result.map(|w| w.published));
                // (an event not inserted ensured no project row)
                if ok && inserted && a.new_project {
                    sink.projects.insert(&a.event.project);
                }
                let _ = a.tx.send(ok);
            },
        );
    }

    /// Record `event` in a group commit without waiting. Events queued before the writer takes
    /// them are written by one job (up to `GROUP_MAX`), in order; if it fails, they are all
    /// lost (and counted) — unless its connection was lost: then they are written again, as a
    /// durable event is (see [`Sink::durable`]).
    pub fn detached(&self, event: Event, with: Option<With>) {
        let new_project = !self.projects.contains(&event.project);
        let submit = {
            let mut q = lock(&self.queued);
            if q.events.len() >= self.max_detached {
                // the database has not taken any for a while: memory stays bounded
                drop(q);
                self.account(
                    event.kind,
                    event.id,
                    Err(StoreError::Backlog(self.max_detached)),
                );
                return;
            }
            q.events.push_back(Detached {
                event,
                with,
                new_project,
                tries: 0,
                look_first: false,
            });
            !std::mem::replace(&mut q.job_queued, true)
        };
        if submit {
            self.submit_group();
        }
    }

    /// Queue the job that writes the next group of detached events.
    fn submit_group(&self) {
        let queued = self.queued.clone();
        let taken: Arc<Mutex<Option<Group>>> = Arc::default();
        let noted = taken.clone();
        let sink = self.clone();
        self.store.write_detached(
            move |c| {
                let mut slot = lock(&noted);
                let (group, _) = slot.insert({
                    let mut q = lock(&queued);
                    let n = q.events.len().min(GROUP_MAX);
                    let group: Vec<Detached> = q.events.drain(..n).collect();
                    let more = !q.events.is_empty();
                    q.job_queued = more; // what is left is the next job's
                    (group, more)
                });
                group
                    .iter_mut()
                    .map(|d| {
                        record(
                            c,
                            &mut d.event,
                            d.with.as_ref(),
                            d.new_project,
                            None,
                            d.look_first,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
            },
            move |result: Result<Vec<Written>, StoreError>| {
                // (`more`: the job left events queued, and this answer queues the job for them)
                let (put_back, more) = match lock(&taken).take() {
                    Some((group, more)) => match result {
                        Ok(written) => {
                            for (d, w) in group.into_iter().zip(written) {
                                if sink.account(d.event.kind, d.event.id, Ok(w.published))
                                    && w.inserted
                                    && d.new_project
                                {
                                    sink.projects.insert(&d.event.project);
                                }
                            }
                            (None, more)
                        }
                        Err(e) => {
                            // a conflict rolled it back, or its connection was lost; or a try
                            // after that met a row it wrote (that COMMIT was still running
                            // when the try looked)
                            let again = Again::after(&e).or_else(|| {
                                (refused_as_there(&e) && group.iter().any(|d| d.look_first))
                                    .then_some(Again::ConnectionLost)
                            });
                            match again {
                                Some(why) => (Some(sink.again_at_front(group, &e, why)), more),
                                None => {
                                    for d in group {
                                        sink.account(d.event.kind, d.event.id, Err(e.clone()));
                                    }
                                    (None, more)
                                }
                            }
                        }
                    },
                    // the job never ran (the store refused it): what is queued is lost — but
                    // when the database refused the connection (restarting, say): tried again
                    None => {
                        let why = result.err().unwrap_or(StoreError::Closed);
                        let queued: Vec<Detached> = {
                            let mut q = lock(&sink.queued);
                            q.job_queued = false;
                            q.events.drain(..).collect()
                        };
                        if why.is_connection_lost() {
                            let again = sink.again_at_front(queued, &why, Again::ConnectionLost);
                            (Some(again), false)
                        } else {
                            for d in queued {
                                sink.account(d.event.kind, d.event.id, Err(why.clone()));
                            }
                            (None, false)
                        }
                    }
                };
                match put_back {
                    // the next job waits (a database restarting refuses connections for a
                    // moment; not after a conflict), if this answer is the one to queue it
                    Some(PutBack { wait, took }) if more || took => match sink.runtime.clone() {
                        Some(rt) if !wait.is_zero() => {
                            rt.spawn(async move {
                                tokio::time::sleep(wait).await;
                                sink.submit_group();
                            });
                        }
                        _ => sink.submit_group(),
                    },
                    Some(_) => {}
                    None if more => sink.submit_group(),
                    None => {}
                }
            },
        );
    }

    /// A group that a conflict rolled back, or whose connection was lost under it (`why`): its
    /// events go back to the front of the queue, to be written again — looked for first when
    /// its COMMIT may have landed — up to [`RETRIES`] tries; past that they are lost, and
    /// counted.
    fn again_at_front(&self, group: Vec<Detached>, e: &StoreError, why: Again) -> PutBack {
        let (again, lost): (Vec<Detached>, Vec<Detached>) =
            group.into_iter().partition(|d| d.tries + 1 < RETRIES);
        for d in lost {
            self.account(d.event.kind, d.event.id, Err(e.clone()));
        }
        let tries = again.iter().map(|d| d.tries).min().unwrap_or(0);
        if !again.is_empty() {
            match why {
                Again::Conflict => {
                    tracing::warn!(events = again.len(), error = %e, "background events' transaction rolled back by a conflict with another one: written again");
                }
                Again::ConnectionLost => {
                    tracing::warn!(events = again.len(), error = %e, "background events' connection to the database lost: written again unless they were committed");
                }
            }
        }
        let mut q = lock(&self.queued);
        let put = !again.is_empty();
        for mut d in again.into_iter().rev() {
            d.tries += 1;
            d.look_first |= why.look_first();
            q.events.push_front(d);
        }
        PutBack {
            wait: why.wait(tries),
            // no job queued for them (nor for others): the caller queues it
            took: put && !std::mem::replace(&mut q.job_queued, true),
        }
    }

    /// Count what a transaction published (every event it published, also those a `with`
    /// added, like a quota warning), or the loss.
    fn account(
        &self,
        kind: EventKind,
        id: uuid::Uuid,
        result: Result<Vec<EventKind>, StoreError>,
    ) -> bool {
        match result {
            Ok(published) => {
                for k in published {
                    self.metrics.event(k.harbor_type());
                }
                true
            }
            Err(e) => {
                self.metrics.events_lost.inc();
                tracing::error!(event_id = %id, kind = kind.harbor_type(), error = %e, "event lost: database write failed");
                false
            }
        }
    }

    /// Remove events older than `retention` (see `store.retention`), hourly, in small
    /// transactions. Runs until `shutdown`.
    pub async fn run_pruner(
        self,
        retention: Duration,
        retention_pulls: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        // pulls: after `retention_pulls`, never later than `retention` (0s: no limit)
        let pulls = match (retention.is_zero(), retention_pulls.is_zero()) {
            (_, true) => None,
            (true, false) => Some(retention_pulls),
            (false, false) => (retention_pulls < retention).then_some(retention_pulls),
        };
        if retention.is_zero() && pulls.is_none() {
            return;
        }
        let mut wait = Duration::from_secs(60);
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
            wait = Duration::from_secs(3600);
            if let Some(pulls) = pulls {
                self.prune_older(pulls, true, &shutdown).await;
            }
            if !retention.is_zero() {
                self.prune_older(retention, false, &shutdown).await;
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Remove events (only pulls, with `pulls_only`) older than `retention`, in batches.
    async fn prune_older(
        &self,
        retention: Duration,
        pulls_only: bool,
        shutdown: &tokio_util::sync::CancellationToken,
    ) {
        let before = store::now_ms() - retention.as_millis() as i64;
        let mut total = 0;
        loop {
            let pruned = self
                .store
                .write(move |c| {
                    if pulls_only {
                        store::events::prune_pulls(c, before, 500)
                    } else {
                        store::events::prune(c, before, 500)
                    }
                })
                .await;
            match pruned {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::error!(error = %e, "pruning the event log failed");
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        if total > 0 {
            tracing::info!(events = total, retention = ?retention, pulls_only, "old events removed from the event log");
        }
    }

    /// Publish held events when their window has passed. Runs until the store closes.
    pub async fn run_releaser(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let next = self
                .store
                .write(|c| {
                    store::events::publish_due(c, store::now_ms())?;
                    Ok((c.take_published(), store::events::next_release(c)?))
                })
                .await
                .map(|(published, next)| {
                    for k in published {
                        self.metrics.event(k.harbor_type());
                    }
                    next
                });
            let wait = match next {
                Ok(Some(at)) => {
                    Duration::from_millis((at - store::now_ms()).clamp(10, 1000) as u64)
                }
                Ok(None) => Duration::from_secs(1),
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "releasing held events failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Repository;

    /// A sink on a fresh embedded store whose writer is kept busy for `hold`, so that the
    /// detached events queued meanwhile wait together.
    async fn sink_behind_a_busy_writer(hold: Duration) -> (Sink, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), Default::default()).unwrap();
        let sink = Sink::new(store.clone(), Arc::new(Metrics::new()));
        store.write_detached(
            move |_| {
                // keeps the store's writer thread busy, which is the point
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(hold);
                Ok(())
            },
            |_: Result<(), StoreError>| {},
        );
        (sink, store, dir)
    }

    fn pull(i: usize) -> Event {
        let mut e = Event::new(
            EventKind::PullArtifact,
            &Repository::parse("prj/app").unwrap(),
            "anonymous",
        );
        e.digest = Some(format!("sha256:{i}"));
        e
    }

    /// Events of Harbor type `kind` the sink counted as recorded.
    fn counted(sink: &Sink, kind: &'static str) -> u64 {
        sink.metrics
            .events
            .get_or_create(&crate::metrics::TypeLabels { r#type: kind })
            .get()
    }

    /// Jobs the store has committed so far.
    fn jobs_done(store: &Store) -> u64 {
        store
            .stats()
            .jobs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn events_in(store: &Store) -> i64 {
        store
            .read(|c| c.int("SELECT COUNT(*) FROM events", &[]))
            .await
            .unwrap()
            .unwrap_or(0)
    }

    /// Pull events queued while the writer is busy are written by one job, every one of them,
    /// and counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn detached_events_queued_together_are_written_by_one_job() {
        let (sink, store, _dir) = sink_behind_a_busy_writer(Duration::from_millis(200)).await;
        let jobs_before = jobs_done(&store);
        for i in 0..50 {
            sink.detached(pull(i), None);
        }
        // a write waited for, queued behind them: answered after their commit
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(events_in(&store).await, 50);
        let jobs = jobs_done(&store) - jobs_before;
        assert!(
            jobs <= 3,
            "{jobs} jobs for the busy one, 50 events and the barrier"
        );
        assert_eq!(sink.metrics.events_lost.get(), 0);
        let counted = counted(&sink, "PULL_ARTIFACT");
        assert_eq!(counted, 50);
        // the queue is empty again: the next event gets a job of its own
        sink.detached(pull(50), None);
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(events_in(&store).await, 51);
    }

    /// More than [`GROUP_MAX`] events queued: written by as many jobs as groups, each group
    /// queueing the job for what it left, every event once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_queue_is_written_in_groups_of_at_most_group_max() {
        let (sink, store, _dir) = sink_behind_a_busy_writer(Duration::from_millis(300)).await;
        let jobs_before = jobs_done(&store);
        let n = 2 * GROUP_MAX + 100;
        for i in 0..n {
            sink.detached(pull(i), None);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while events_in(&store).await < n as i64 {
            assert!(std::time::Instant::now() < deadline, "not all written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(events_in(&store).await, n as i64);
        let jobs = jobs_done(&store) - jobs_before;
        // the busy job and three groups (more if the busy one ended before every event was
        // queued: a slow machine)
        assert!((4..=8).contains(&jobs), "{jobs} jobs");
        let q = lock(&sink.queued);
        assert!(q.events.is_empty() && !q.job_queued);
    }

    /// A failure in the job loses its group — every event logged and counted as lost, none
    /// half-written — and the events queued after it are written by the next job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_group_is_lost_whole_and_counted() {
        let (sink, store, _dir) = sink_behind_a_busy_writer(Duration::from_millis(200)).await;
        for i in 0..10 {
            let with: Option<With> = (i == 7).then(|| -> With {
                Arc::new(|c, _| {
                    c.exec("INSERT INTO no_such_table VALUES (1)", &[])?;
                    Ok(true)
                })
            });
            sink.detached(pull(i), with);
        }
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(events_in(&store).await, 0, "nothing of the group is kept");
        assert_eq!(sink.metrics.events_lost.get(), 10);
        sink.detached(pull(10), None);
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(events_in(&store).await, 1);
        assert_eq!(sink.metrics.events_lost.get(), 10);
    }

    /// Past the cap of detached events waiting, a pull's event is counted lost at once
    /// (memory stays bounded while the database does not answer); those queued before are
    /// written once it does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn detached_events_past_the_cap_are_counted_lost_at_once() {
        let (mut sink, store, _dir) = sink_behind_a_busy_writer(Duration::from_millis(300)).await;
        sink.max_detached = 3;
        for i in 0..5 {
            sink.detached(pull(i), None);
        }
        assert_eq!(sink.metrics.events_lost.get(), 2, "refused at once");
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(events_in(&store).await, 3);
        assert_eq!(sink.metrics.events_lost.get(), 2);
    }

    /// A durable event the writer does not commit within `store.statement_timeout`: the
    /// request goes on (counted late), and the event is still recorded once the writer gets to
    /// it, counted then, never as lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_event_not_committed_in_time_is_late_then_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::StoreConfig {
            statement_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let store = Store::open(&config, dir.path()).await.unwrap();
        let sink = Sink::new(store.clone(), Arc::new(Metrics::new()));
        store.write_detached(
            |_| {
                // keeps the store's writer thread busy, which is the point
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(1500));
                Ok(())
            },
            |_: Result<(), StoreError>| {},
        );
        let mut e = pull(0);
        e.kind = EventKind::PushArtifact;
        let started = std::time::Instant::now();
        assert_eq!(
            sink.durable(e, None, None).await,
            Recorded::Late,
            "not recorded in time"
        );
        assert!(started.elapsed() < Duration::from_millis(1200));
        assert_eq!(sink.metrics.events_late.get(), 1);
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(
            events_in(&store).await,
            1,
            "recorded once the writer answers"
        );
        assert_eq!(sink.metrics.events_lost.get(), 0);
        let counted = counted(&sink, "PUSH_ARTIFACT");
        assert_eq!(counted, 1);
    }

    /// An event its `with` does not record (another report has its idempotency key, say) makes
    /// no project row, and its project is not taken as met: the next event of the project
    /// makes the row. (Before, the project counted as met and never got its row.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_not_recorded_leaves_its_project_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), Default::default()).unwrap();
        let sink = Sink::new(store.clone(), Arc::new(Metrics::new()));
        let row = || store.read(|c| crate::store::projects::by_name(c, "prj"));
        let not_this_one: With = Arc::new(|_, _| Ok(false));
        assert!(sink.durable_waited(pull(0), Some(not_this_one)).await);
        assert!(row().await.unwrap().is_none());
        for (i, with) in [
            (
                1,
                Some(Arc::new(|_: &Db<'_>, _: &mut Event| Ok(false)) as With),
            ),
            (2, None),
        ] {
            sink.detached(pull(i), with);
        }
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(events_in(&store).await, 1);
        assert!(
            row().await.unwrap().is_some(),
            "the recorded pull made the row"
        );
        let mut push = pull(3);
        push.kind = EventKind::PushArtifact;
        assert!(sink.durable_waited(push, None).await);
        assert!(row().await.unwrap().is_some());
    }

    /// A store that refuses the job (closed) loses the queued events, counted, and the next
    /// event does not wait behind a job that will never come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_refused_by_a_closed_store_are_counted_and_the_queue_empties() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), Default::default()).unwrap();
        let sink = Sink::new(store.clone(), Arc::new(Metrics::new()));
        store.close().await;
        sink.detached(pull(0), None);
        sink.detached(pull(1), None);
        assert_eq!(sink.metrics.events_lost.get(), 2);
        let q = lock(&sink.queued);
        assert!(q.events.is_empty() && !q.job_queued);
    }
}
