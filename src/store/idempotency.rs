//! Idempotency keys of side-endpoint reports (`Idempotency-Key`, see `api::idempotency`): a
//! report retried with the key of one already recorded is answered with that report's answer
//! instead of making a second event. Shared by replicas (PostgreSQL): a retry may land on any.
//!
//! A key is kept with the event its report made, in the event's own transaction, so a key is
//! never kept for an event that was not recorded, nor an event recorded without its key. Rows
//! are keyed by (caller, key): two callers never see each other's keys. They are used for
//! [`KEPT_FOR`] and pruned once a minute.

use std::time::Duration;

use super::StoreError;
use super::db::{Backend, Db};
use crate::args;

/// How long a key is kept (Stripe's and the IETF draft's usual day): a retry later than that
/// makes a new event.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// A recorded report, as its key keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// What the request was: a digest of its path and body (see `api::idempotency`).
    pub fingerprint: String,
    /// The event it made.
    pub event_id: String,
    /// The answer's body (JSON).
    pub answer: String,
}

/// The report recorded with `key` by `caller` since `since` (unix ms), if any.
pub fn find(db: &Db<'_>, caller: &str, key: &str, since: i64) -> Result<Option<Kept>, StoreError> {
    db.row(
        "SELECT fingerprint, event_id, answer FROM idempotency_keys
         WHERE caller = ?1 AND key = ?2 AND created_at >= ?3",
        args![caller, key, since],
        |r| {
            Ok(Kept {
                fingerprint: r.text(0)?,
                event_id: r.text(1)?,
                answer: r.text(2)?,
            })
        },
    )
}

/// Keep `kept` for (`caller`, `key`) as of `now`, unless a report within the window already
/// has the key (one that expired, not pruned yet, is replaced). Returns whether it was kept:
/// `false` means another report has the key, or (PostgreSQL) another transaction is keeping it
/// right now — [`find`] then finds nothing yet.
///
/// On PostgreSQL the key's transaction-level advisory lock is tried first, and not waited for:
/// this statement runs in a writer's group of jobs (pushes among them), which must not wait
/// for another replica's transaction, nor lock rows in an order that deadlocks with it.
pub fn keep(
    db: &Db<'_>,
    caller: &str,
    key: &str,
    kept: &Kept,
    now: i64,
) -> Result<bool, StoreError> {
    if db.backend() == Backend::Postgres
        && db.int(
            "SELECT CASE WHEN pg_try_advisory_xact_lock(?1) THEN 1 ELSE 0 END",
            args![lock_id(caller, key)],
        )? != Some(1)
    {
        return Ok(false);
    }
    let expired = now - KEPT_FOR.as_millis() as i64;
    Ok(db
        .int(
            "INSERT INTO idempotency_keys (caller, key, fingerprint, event_id, answer, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (caller, key) DO UPDATE SET fingerprint = excluded.fingerprint,
               event_id = excluded.event_id, answer = excluded.answer,
               created_at = excluded.created_at
             WHERE idempotency_keys.created_at < ?7
             RETURNING 1",
            args![
                caller,
                key,
                &kept.fingerprint,
                &kept.event_id,
                &kept.answer,
                now,
                expired
            ],
        )?
        .is_some())
}

/// The advisory lock of (`caller`, `key`). (Two keys sharing one only make one of two
/// simultaneous first requests wait for a retry.)
fn lock_id(caller: &str, key: &str) -> i64 {
    super::advisory_key(&["wharf idempotency key", caller, key])
}

/// Forget keys kept before `before` (unix ms). Returns how many.
pub fn prune(db: &Db<'_>, before: i64) -> Result<u64, StoreError> {
    db.exec(
        "DELETE FROM idempotency_keys WHERE created_at < ?1",
        args![before],
    )
}
