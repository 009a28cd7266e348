//! Sink: hands events to the store, durably or in the background, and counts them.
//!
//! - [`Sink::durable`]: resolves after the event (and whatever `with` writes in the same
//!   transaction) is committed. Used for pushes, deletes, chart uploads and deletes, quota
//!   events: the client's success response waits for it.
//! - [`Sink::detached`]: queued for the next group commit, not awaited. Used for pulls: a
//!   process killed in that moment (typically a few milliseconds) loses those pulls.
//!
//! A database failure never fails the registry request: it is logged and counted
//! (`events_lost`).
//!
//! In the event's transaction the sink also gives a project met for the first time by this
//! process its row (projects seen in traffic exist for the API; one insert-if-missing per
//! name and process, none afterwards), and sets the repository's creation time on artifact
//! events (one primary-key lookup).

use std::sync::Arc;
use std::time::Duration;

use super::{Event, EventKind};
use crate::metrics::Metrics;
use crate::store::{self, Db, Store, StoreError};

/// Extra writes in the event's transaction (knowledge updates); may adjust the event, and
/// returns whether the event is still to be recorded (`false`: it turned out to be part of
/// another, e.g. the platform manifest of an index the client just pulled through another
/// replica).
pub type With = Box<dyn FnOnce(&Db<'_>, &mut Event) -> Result<bool, StoreError> + Send>;

/// See the module doc.
#[derive(Clone)]
pub struct Sink {
    store: Store,
    metrics: Arc<Metrics>,
    /// Projects known to have a row (see [`store::projects::Known`]).
    projects: Arc<store::projects::Known>,
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

impl Sink {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            metrics,
            projects: Arc::default(),
        }
    }

    /// Record `event` and wait for the commit. With `hold_until` (unix ms) the event waits,
    /// durably, to be published or absorbed. Returns whether it was recorded.
    pub async fn durable(&self, event: Event, hold_until: Option<i64>, with: Option<With>) -> bool {
        let kind = event.kind;
        let id = event.id;
        let project = event.project.clone();
        let new_project = !self.projects.contains(&project);
        let started = std::time::Instant::now();
        let result = self
            .store
            .write(move |c| {
                let mut event = event;
                if let Some(w) = with
                    && !w(c, &mut event)?
                {
                    return Ok(c.take_published());
                }
                complete(c, &mut event, new_project)?;
                store::events::insert(c, &event, hold_until)?;
                Ok(c.take_published())
            })
            .await;
        self.metrics
            .event_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let ok = self.account(kind, id, result);
        if ok && new_project {
            self.projects.insert(&project);
        }
        ok
    }

    /// Record `event` in a group commit without waiting.
    pub fn detached(&self, event: Event, with: Option<With>) {
        let kind = event.kind;
        let id = event.id;
        let project = event.project.clone();
        let new_project = !self.projects.contains(&project);
        let sink = self.clone();
        self.store.write_detached(
            move |c| {
                let mut event = event;
                if let Some(w) = with
                    && !w(c, &mut event)?
                {
                    return Ok(c.take_published());
                }
                complete(c, &mut event, new_project)?;
                store::events::insert(c, &event, None)?;
                Ok(c.take_published())
            },
            move |result| {
                if sink.account(kind, id, result) && new_project {
                    sink.projects.insert(&project);
                }
            },
        );
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
