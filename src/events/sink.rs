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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::{Event, EventKind};
use crate::store::{self, Store, StoreError};

/// Counters of events.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Events recorded, by Harbor type.
    pub recorded: Mutex<BTreeMap<&'static str, u64>>,
    /// Events that could not be recorded (database failure).
    pub lost: AtomicU64,
}

impl EventStats {
    fn count(&self, kind: EventKind) {
        if let Ok(mut m) = self.recorded.lock() {
            *m.entry(kind.harbor_type()).or_default() += 1;
        }
    }
}

/// Extra writes in the event's transaction (knowledge updates); may adjust the event.
pub type With = Box<dyn FnOnce(&Connection, &mut Event) -> Result<(), StoreError> + Send>;

/// See the module doc.
#[derive(Clone)]
pub struct Sink {
    store: Store,
    stats: Arc<EventStats>,
}

impl Sink {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            stats: Arc::new(EventStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<EventStats> {
        self.stats.clone()
    }

    /// Record `event` and wait for the commit. With `hold_until` (unix ms) the event waits,
    /// durably, to be published or absorbed. Returns whether it was recorded.
    pub async fn durable(&self, event: Event, hold_until: Option<i64>, with: Option<With>) -> bool {
        let kind = event.kind;
        let id = event.id;
        let result = self
            .store
            .write(move |c| {
                let mut event = event;
                if let Some(w) = with {
                    w(c, &mut event)?;
                }
                store::events::insert(c, &event, hold_until)
            })
            .await;
        self.account(kind, id, result)
    }

    /// Record `event` in the next group commit without waiting.
    pub fn detached(&self, event: Event, with: Option<With>) {
        let kind = event.kind;
        let id = event.id;
        let stats = self.stats.clone();
        stats.count(kind);
        self.store.write_detached(
            move |c| {
                let mut event = event;
                if let Some(w) = with {
                    w(c, &mut event)?;
                }
                store::events::insert(c, &event, None)
            },
            move |e| {
                stats.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(event_id = %id, kind = kind.harbor_type(), error = %e, "event lost: database write failed");
            },
        );
    }

    fn account(&self, kind: EventKind, id: uuid::Uuid, result: Result<(), StoreError>) -> bool {
        match result {
            Ok(()) => {
                self.stats.count(kind);
                true
            }
            Err(e) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(event_id = %id, kind = kind.harbor_type(), error = %e, "event lost: database write failed");
                false
            }
        }
    }

    /// Publish held events when their window has passed. Runs until the store closes.
    pub async fn run_releaser(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let next = self
                .store
                .write(|c| {
                    store::events::publish_due(c, store::now_ms())?;
                    store::events::next_release(c)
                })
                .await;
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
