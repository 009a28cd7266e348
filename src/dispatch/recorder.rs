//! Finished attempts written to the store in batches: what finishes within [`OUTCOME_LINGER`]
//! of the first, and whatever finished while the last batch was being written, goes into one
//! transaction (set-based statements on PostgreSQL), so the outcome of an attempt costs the
//! store a fraction of a transaction whenever attempts finish faster than one per linger. An
//! attempt whose outcome is not written (the process dies first) is attempted again once its
//! claim's lease expires (at least once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::outbox::{self, Next};

/// How long the recorder waits, after an attempt finished, for more to finish before it writes
/// their outcomes. Each write is a transaction whose fixed cost (on PostgreSQL: its statements'
/// round trips, the counters' trigger, the commit) was most of the store's CPU per delivered
/// push at four pushes in flight (bench, store scenario); gathered, that cost is shared by every
/// outcome of the window. An outcome is visible (API, UI) this much later; the attempt slot and
/// the target's circuit do not wait for it.
pub const OUTCOME_LINGER: Duration = Duration::from_millis(10);

/// Most outcomes written in one transaction.
pub const OUTCOMES_PER_WRITE: usize = 512;

/// A finished attempt waiting to be recorded.
#[derive(Debug)]
pub struct Finished {
    pub outcome: outbox::Outcome,
    /// The target answered 410 Gone: (policy, target address) to disable.
    pub gone: Option<(i64, String)>,
}

/// The task that writes [`Finished`] attempts.
pub struct Recorder {
    pub store: Store,
    /// The dispatcher's count of retries scheduled (see `Dispatcher::later`): bumped before a
    /// batch with a retry commits, so that the dispatcher's next claim looks ahead for it.
    pub later: Arc<AtomicU64>,
}

impl Recorder {
    /// Runs until `shutdown` (then writes what is left) or until every sender is gone.
    pub async fn run(self, mut rx: UnboundedReceiver<Finished>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                f = rx.recv() => f,
                () = shutdown.cancelled() => {
                    // what finished before shutdown still goes in
                    let mut left = Vec::new();
                    while let Ok(f) = rx.try_recv() {
                        left.push(f);
                    }
                    self.record(left).await;
                    return;
                }
            };
            let Some(first) = first else {
                return;
            };
            let batch = gather(&mut rx, first, &shutdown).await;
            self.record(batch).await;
        }
    }

    async fn record(&self, batch: Vec<Finished>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        if batch
            .iter()
            .any(|f| matches!(f.outcome.next, Next::RetryAt(_)))
        {
            // before the commit that wakes the dispatcher, so that it looks ahead
            self.later.fetch_add(1, Ordering::Release);
        }
        let outcomes: Vec<outbox::Outcome> = batch.iter().map(|f| f.outcome.clone()).collect();
        let gone: Vec<outbox::GoneTarget> = batch
            .iter()
            .filter_map(|f| {
                let (policy_id, address) = f.gone.clone()?;
                Some(outbox::GoneTarget {
                    delivery_id: f.outcome.attempt.delivery_id,
                    policy_id,
                    address,
                })
            })
            .collect();
        let mut tries = 0;
        loop {
            tries += 1;
            let (o, g) = (outcomes.clone(), gone.clone());
            let result = self
                .store
                .write_relaxed(move |c| outbox::record_finished(c, &o, &g))
                .await;
            match result {
                Ok(()) => return,
                // another replica's transaction won a deadlock or a serialization conflict:
                // the same write again does not meet it twice
                Err(e) if e.is_conflict() && tries < 3 => {
                    tracing::debug!(attempts = n, error = %e, "recording delivery attempts met a conflict; writing them again");
                }
                Err(e) => {
                    tracing::error!(attempts = n, error = %e, "recording delivery attempts failed; they are attempted again when their claims expire");
                    return;
                }
            }
        }
    }
}

/// The outcomes to write together: `first`, and what arrives within [`OUTCOME_LINGER`] of it
/// (at most [`OUTCOMES_PER_WRITE`]). Returns early when the channel closes or at `shutdown`
/// (the recorder's next turn writes what is left).
async fn gather<T>(
    rx: &mut UnboundedReceiver<T>,
    first: T,
    shutdown: &CancellationToken,
) -> Vec<T> {
    let mut batch = vec![first];
    let until = tokio::time::Instant::now() + OUTCOME_LINGER;
    while batch.len() < OUTCOMES_PER_WRITE {
        if let Ok(f) = rx.try_recv() {
            batch.push(f);
            continue;
        }
        tokio::select! {
            f = rx.recv() => match f {
                Some(f) => batch.push(f),
                None => break,
            },
            () = tokio::time::sleep_until(until) => break,
            () = shutdown.cancelled() => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn outcomes_finishing_within_the_linger_are_written_together() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let sender = tokio::spawn(async move {
            for (i, after_ms) in [(2, 3), (3, 4), (4, 20), (5, 1)] {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                tx.send(i).unwrap();
            }
            tx
        });
        let started = tokio::time::Instant::now();
        assert_eq!(gather(&mut rx, 1, &shutdown).await, vec![1, 2, 3]);
        assert_eq!(
            started.elapsed(),
            OUTCOME_LINGER,
            "waits out the linger, no longer"
        );
        let next = rx.recv().await.unwrap();
        assert_eq!(gather(&mut rx, next, &shutdown).await, vec![4, 5]);
        // closed channel or shutdown: no waiting
        let tx = sender.await.unwrap();
        tx.send(6).unwrap();
        drop(tx);
        let started = tokio::time::Instant::now();
        assert_eq!(gather(&mut rx, 0, &shutdown).await, vec![0, 6]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        let (_tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<i32>();
        shutdown.cancel();
        assert_eq!(gather(&mut rx, 7, &shutdown).await, vec![7]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // a full batch does not wait either
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..OUTCOMES_PER_WRITE + 3 {
            tx.send(i).unwrap();
        }
        let shutdown = CancellationToken::new();
        let first = rx.recv().await.unwrap();
        assert_eq!(
            gather(&mut rx, first, &shutdown).await.len(),
            OUTCOMES_PER_WRITE
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
