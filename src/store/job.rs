//! A queued write job, the unit of a group commit on either backend.

use std::sync::{Arc, Mutex};

use super::StoreError;
use super::db::{Db, Effects};

/// Runs a job inside its transaction (or savepoint): its effects if it succeeded (else its
/// writes are rolled back).
pub(super) type RunJob = Box<dyn FnOnce(&Db<'_>) -> Option<Effects> + Send>;

/// A queued write: `run` executes inside its own savepoint and says whether it succeeded, with
/// the effects to apply after COMMIT; `done` gets the outcome of the COMMIT (or the reason the
/// job never ran) and answers the caller.
pub(super) struct Job {
    pub(super) run: RunJob,
    pub(super) done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    /// Someone waits for this commit; background jobs may wait a little for company.
    pub(super) urgent: bool,
    /// The commit must be on disk before the job is answered (an event a client was told
    /// succeeded, a policy change). Other jobs — claims, attempt outcomes, pull events, the
    /// attribution memory, last triggers — only need to survive wharf's own crash, which they
    /// do either way: on PostgreSQL their batches commit without waiting for the WAL flush
    /// (`synchronous_commit = off` for that transaction). A lost claim or outcome means an
    /// attempt is made again after its lease (at least once, as always).
    pub(super) durable: bool,
}

impl Job {
    pub(super) fn new<T: Send + 'static>(
        urgent: bool,
        durable: bool,
        f: impl FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Job {
        let slot: Arc<Mutex<Option<Result<T, StoreError>>>> = Arc::new(Mutex::new(None));
        let out = slot.clone();
        Job {
            run: Box::new(move |db| {
                let r = f(db).and_then(|v| db.end_job().map(|()| v));
                let effects = db.take_effects();
                if r.is_err() && effects.policies {
                    // rolled back: what it (or a job after it) loaded into the cache may hold
                    // its change, which never happened
                    if let Some(cache) = db.cache() {
                        cache.invalidate();
                    }
                }
                let effects = r.is_ok().then_some(effects);
                if let Ok(mut s) = slot.lock() {
                    *s = Some(r);
                }
                effects
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
            durable,
        }
    }

    /// Answer without running (the store is closed, or the batch could not start).
    pub(super) fn refuse(self, why: StoreError) {
        (self.done)(Err(why));
    }
}
