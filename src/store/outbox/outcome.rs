//! Attempts, and what becomes of a delivery after one.

use serde::Serialize;

use super::claim::{OUTCOME_DEFAULT_PLANNING_PG, OUTCOME_PLANNING_PG, dispatcher_planning};
use super::{DeliveryState, sqlite_or_fail};
use crate::args;
use crate::store::db::{Backend, Db, json};
use crate::store::{StoreError, now_ms, policies};

/// Why an attempt failed (recorded with the attempt by its [`name`](FailureKind::name)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The SSRF guard refused the target's address.
    RefusedTarget,
    /// The TLS handshake failed.
    Tls,
    /// The target answered a status other than 2xx (and 410).
    Http,
    /// The target answered 410 Gone (the target is disabled; not retried).
    Gone,
    /// Any other transport error.
    Transport,
    /// A `Custom` target's template did not make a valid body (not sent; not retried: the same
    /// event and template would fail again).
    TemplateOutputInvalid,
}

impl FailureKind {
    /// The name stored with the attempt and shown in the API (`error_kind`).
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::RefusedTarget => "refused_target",
            FailureKind::Tls => "tls",
            FailureKind::Http => "http",
            FailureKind::Gone => "gone",
            FailureKind::Transport => "transport",
            FailureKind::TemplateOutputInvalid => "template_output_invalid",
        }
    }

    pub const ALL: [FailureKind; 8] = [
        FailureKind::Timeout,
        FailureKind::Connect,
        FailureKind::RefusedTarget,
        FailureKind::Tls,
        FailureKind::Http,
        FailureKind::Gone,
        FailureKind::Transport,
        FailureKind::TemplateOutputInvalid,
    ];

    /// The kind of a stored name.
    pub fn parse(s: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// May a later attempt succeed? (410 Gone and an invalid template output: no.)
    pub fn retryable(self) -> bool {
        match self {
            FailureKind::Gone | FailureKind::TemplateOutputInvalid => false,
            FailureKind::Timeout
            | FailureKind::Connect
            | FailureKind::RefusedTarget
            | FailureKind::Tls
            | FailureKind::Http
            | FailureKind::Transport => true,
        }
    }

    /// Did the attempt reach (or try to reach) the target? (A body that was never made says
    /// nothing about the target: its circuit breaker does not count it.)
    pub fn involves_target(self) -> bool {
        !matches!(self, FailureKind::TemplateOutputInvalid)
    }
}

impl Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attempt {
    /// Its task id, as [`attempts`](super::attempts) lists it (its place among its delivery's
    /// attempts, from 1); not read when recording.
    pub id: i64,
    pub delivery_id: i64,
    /// unix ms
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    /// Why it failed (none: it succeeded).
    pub error_kind: Option<FailureKind>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    /// Try again at (unix ms).
    RetryAt(i64),
    Dead,
}

impl Next {
    /// The delivery's state and, for a retry, its due time.
    fn state(self) -> (DeliveryState, Option<i64>) {
        match self {
            Next::Succeeded => (DeliveryState::Succeeded, None),
            Next::RetryAt(t) => (DeliveryState::Pending, Some(t)),
            Next::Dead => (DeliveryState::Dead, None),
        }
    }
}

macro_rules! outcome {
    () => {
        " deliveries SET
           state = CASE WHEN (state = 'running' AND claim_token = ?7) OR ?2 = 'succeeded' THEN ?2 ELSE state END,
           attempts = attempts + 1,
           not_before = CASE WHEN state = 'running' AND claim_token = ?7 THEN COALESCE(?3, not_before) ELSE not_before END,
           last_status = CASE WHEN (state = 'running' AND claim_token = ?7) OR ?2 = 'succeeded' THEN ?4 ELSE last_status END,
           last_error = CASE WHEN (state = 'running' AND claim_token = ?7) OR ?2 = 'succeeded' THEN ?5 ELSE last_error END,
           claim_token = CASE WHEN claim_token = ?7 THEN NULL ELSE claim_token END,
           lease_until = CASE WHEN claim_token = ?7 THEN NULL ELSE lease_until END,
           first_started_at = CASE WHEN first_started_at IS NULL THEN ?8 ELSE first_started_at END,
           first_duration_ms = CASE WHEN first_started_at IS NULL THEN ?9 ELSE first_duration_ms END,
           first_status = CASE WHEN first_started_at IS NULL AND ?8 IS NOT NULL THEN ?4 ELSE first_status END,
           first_excerpt = CASE WHEN first_started_at IS NULL THEN ?10 ELSE first_excerpt END,
           updated_at = ?6
         WHERE id = ?1
         RETURNING CASE WHEN first_started_at IS NOT DISTINCT FROM ?8
           AND first_duration_ms IS NOT DISTINCT FROM ?9 THEN 1 ELSE 0 END"
    };
}

/// A delivery's outcome (?1 id, ?2 state, ?3 retry time, ?4 status, ?5 error, ?6 now, ?7 the
/// attempt's claim token; ?8 start, ?9 duration, ?10 response excerpt of a successful attempt
/// that may be kept on the row, else NULL). Returns whether the row holds that attempt (see
/// [`keeps_on_row`]).
const OUTCOME_SQL: &str = concat!("UPDATE", outcome!());

/// SQLite: [`OUTCOME_SQL`] as `UPDATE OR FAIL` (see [`sqlite_or_fail`]).
pub(super) const OUTCOME_SQL_SQLITE: &str = concat!("UPDATE OR FAIL", outcome!());

/// Whether attempt `a` may be kept on its delivery's row instead of a row of `attempts`: it
/// succeeded (a status, no error), and the delivery keeps none yet (checked by the statement
/// that moves the delivery on). A delivered pull is then one delivery row, not also an attempt
/// row and its index entry (~30 bytes of store per delivered event, and an insert). Listed
/// with the others by [`attempts`](super::attempts).
fn keeps_on_row(a: &Attempt, next: Next) -> bool {
    next == Next::Succeeded
        && a.status_code.is_some()
        && a.error_kind.is_none()
        && a.error.is_none()
}

/// Record an attempt made under claim `token` and move the delivery on. A delivery ended
/// while its attempt ran (its policy was deleted, its target disabled), or taken over by
/// another replica after the lease expired, is not moved unless the attempt succeeded. The
/// delivery's first successful attempt is kept on its row (`keeps_on_row`); any other in
/// `attempts`.
pub fn record(db: &Db<'_>, a: &Attempt, next: Next, token: i64) -> Result<(), StoreError> {
    let (state, not_before) = next.state();
    let first = keeps_on_row(a, next);
    // every right-hand side sees the row as it was before this UPDATE
    let kept = db.row(
        sqlite_or_fail(db, OUTCOME_SQL_SQLITE, OUTCOME_SQL),
        args![
            a.delivery_id,
            state.as_str(),
            not_before,
            a.status_code.map(i64::from),
            a.error.as_deref().or(a.error_kind.map(FailureKind::name)),
            now_ms(),
            token,
            first.then_some(a.started_at),
            first.then_some(a.duration_ms),
            a.response_excerpt.as_deref().filter(|_| first)
        ],
        |r| Ok(r.opt_i64(0)? == Some(1)),
    )?;
    if first && kept == Some(true) {
        return Ok(());
    }
    db.exec(
        "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            a.delivery_id,
            a.started_at,
            a.duration_ms,
            a.status_code.map(i64::from),
            a.error_kind.map(FailureKind::name),
            a.error.as_deref(),
            a.response_excerpt.as_deref()
        ],
    )?;
    Ok(())
}

/// One finished attempt and what becomes of its delivery (see [`record_many`]).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attempt: Attempt,
    pub next: Next,
    /// The claim the attempt was made under.
    pub token: i64,
}

/// Record many attempts at once, each as [`record`] would. On PostgreSQL two statements for the
/// whole batch (the rows travel as one JSON parameter): the outcomes, then the attempts the
/// delivery rows did not keep; on SQLite one or two statements per attempt, inside the
/// writer's group commit.
pub fn record_many(db: &Db<'_>, outcomes: &[Outcome]) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    if outcomes.iter().any(|o| matches!(o.next, Next::RetryAt(_))) {
        // pending again: this process's dispatcher learns its due time after the commit
        db.note_deliveries();
    }
    if db.backend() == Backend::Sqlite {
        for o in outcomes {
            record(db, &o.attempt, o.next, o.token)?;
        }
        return Ok(());
    }
    let now = now_ms();
    // per outcome: the delivery's move, and the attempt unless its row keeps it
    let (moves, attempts): (Vec<serde_json::Value>, Vec<serde_json::Value>) = outcomes
        .iter()
        .map(|o| {
            let (state, not_before) = o.next.state();
            let a = &o.attempt;
            let first = keeps_on_row(a, o.next);
            let moved = serde_json::json!({
                "id": a.delivery_id, "state": state, "not_before": not_before,
                "last_status": a.status_code,
                "last_error": a.error.as_deref().or(a.error_kind.map(FailureKind::name)),
                "token": o.token,
                "first_started_at": first.then_some(a.started_at),
                "first_duration_ms": first.then_some(a.duration_ms),
                "first_excerpt": a.response_excerpt.as_deref().filter(|_| first),
            });
            let attempt = serde_json::json!({
                "delivery_id": a.delivery_id, "started_at": a.started_at, "duration_ms": a.duration_ms,
                "status_code": a.status_code, "error_kind": a.error_kind, "error": a.error,
                "response_excerpt": a.response_excerpt, "first": first,
            });
            (moved, attempt)
        })
        .unzip();
    dispatcher_planning(
        db,
        (OUTCOME_PLANNING_PG, OUTCOME_DEFAULT_PLANNING_PG),
        || {
            // as `record`, row by row: every right-hand side sees the row as it was before
            db.exec_later(OUTCOME_SQL_PG, args![json(&moves)?.as_str(), now])?;
            // then the attempts the delivery rows did not take
            db.exec_later(ATTEMPTS_SQL_PG, args![json(&attempts)?.as_str()])
        },
    )
}

/// PostgreSQL: the attempts of a batch (JSON rows ?1) that [`OUTCOME_SQL_PG`] did not keep on
/// their delivery's row (its row, locked by this transaction, holds another or none).
const ATTEMPTS_SQL_PG: &str = "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt)
     SELECT x.delivery_id, x.started_at, x.duration_ms, x.status_code, x.error_kind, x.error, x.response_excerpt
     FROM json_to_recordset(CAST(?1 AS json)) AS x(delivery_id bigint, started_at bigint,
       duration_ms bigint, status_code bigint, error_kind text, error text, response_excerpt text,
       first boolean)
     WHERE NOT (x.first AND EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.delivery_id
       AND d.first_started_at = x.started_at AND d.first_duration_ms = x.duration_ms))
     ORDER BY x.delivery_id";

/// PostgreSQL: the outcomes of a batch of attempts (JSON rows ?1, at time ?2). Public for the
/// plan test (tests/it/store.rs).
pub const OUTCOME_SQL_PG: &str = "UPDATE deliveries AS d SET
           state = CASE WHEN (d.state = 'running' AND d.claim_token = x.token) OR x.state = 'succeeded' THEN x.state ELSE d.state END,
           attempts = d.attempts + 1,
           not_before = CASE WHEN d.state = 'running' AND d.claim_token = x.token THEN COALESCE(x.not_before, d.not_before) ELSE d.not_before END,
           last_status = CASE WHEN (d.state = 'running' AND d.claim_token = x.token) OR x.state = 'succeeded' THEN x.last_status ELSE d.last_status END,
           last_error = CASE WHEN (d.state = 'running' AND d.claim_token = x.token) OR x.state = 'succeeded' THEN x.last_error ELSE d.last_error END,
           claim_token = CASE WHEN d.claim_token = x.token THEN NULL ELSE d.claim_token END,
           lease_until = CASE WHEN d.claim_token = x.token THEN NULL ELSE d.lease_until END,
           first_started_at = CASE WHEN d.first_started_at IS NULL THEN x.first_started_at ELSE d.first_started_at END,
           first_duration_ms = CASE WHEN d.first_started_at IS NULL THEN x.first_duration_ms ELSE d.first_duration_ms END,
           first_status = CASE WHEN d.first_started_at IS NULL AND x.first_started_at IS NOT NULL THEN x.last_status ELSE d.first_status END,
           first_excerpt = CASE WHEN d.first_started_at IS NULL THEN x.first_excerpt ELSE d.first_excerpt END,
           updated_at = ?2
         FROM json_to_recordset(CAST(?1 AS json)) AS x(id bigint, state text, not_before bigint,
           last_status bigint, last_error text, token bigint, first_started_at bigint,
           first_duration_ms bigint, first_excerpt text)
         WHERE d.id = x.id
           AND d.id = ANY(ARRAY(SELECT CAST(v->>'id' AS BIGINT) FROM json_array_elements(CAST(?1 AS json)) v))";

/// Put a delivery claimed under `token` back without an attempt (its target's circuit is
/// open).
pub fn defer(db: &Db<'_>, delivery_id: i64, until: i64, token: i64) -> Result<(), StoreError> {
    db.exec(
        "UPDATE deliveries SET state = 'pending', not_before = ?2, updated_at = ?3, claim_token = NULL, lease_until = NULL
         WHERE id = ?1 AND state = 'running' AND claim_token = ?4",
        args![delivery_id, until, now_ms(), token],
    )?;
    db.note_deliveries();
    Ok(())
}

/// The target answered 410 Gone: mark it disabled in its policy and end its open deliveries.
/// Once it is disabled (by the first 410: its open deliveries ended then, and a disabled
/// target gets no new ones), later 410s of attempts that were in flight write nothing: each
/// would write the policy and the policy version again, in the transaction that holds their
/// outcomes' rows, and replicas doing so at once could deadlock.
pub fn disable_target(
    db: &Db<'_>,
    policy_id: i64,
    target_index: usize,
    address: &str,
    reason: &str,
) -> Result<(), StoreError> {
    if let Some(mut p) = policies::get_by_id(db, policy_id)?
        && let Some(t) = p.targets.get_mut(target_index)
        && t.address == address
    {
        if t.disabled {
            return Ok(());
        }
        t.disabled = true;
        policies::update_targets(db, policy_id, &p.targets)?;
    }
    db.exec(
        "UPDATE deliveries SET state = 'dead', last_error = ?3, updated_at = ?4
         WHERE policy_id = ?1 AND target_address = ?2 AND state IN ('pending', 'running')",
        args![policy_id, address, reason, now_ms()],
    )?;
    Ok(())
}

/// A target that answered an attempt of `delivery_id` with 410 Gone: disabled in its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneTarget {
    pub delivery_id: i64,
    pub policy_id: i64,
    pub address: String,
}

/// Write attempts' outcomes ([`record_many`]) and disable the targets that answered 410 Gone
/// ([`disable_target`]), in one transaction. With a target to disable, on PostgreSQL, the locks
/// are taken in the order every policy change takes them — the policy version (`meta`), then
/// the policies, in id order — before any delivery: two replicas recording a target's first
/// 410s at once take turns, and so do a 410 and an operator's edit of its policy. Otherwise each
/// held a row the other needed (a delivery the other's disable ends, the policy row, the
/// version) — a deadlock, and one batch of outcomes or the API request lost.
pub fn record_finished(
    db: &Db<'_>,
    outcomes: &[Outcome],
    gone: &[GoneTarget],
) -> Result<(), StoreError> {
    if db.backend() == Backend::Postgres && !gone.is_empty() {
        db.exec(
            "INSERT INTO meta (key, n) VALUES ('policy_version', 0) ON CONFLICT (key) DO NOTHING",
            &[],
        )?;
        db.int(
            "SELECT n FROM meta WHERE key = 'policy_version' FOR UPDATE",
            &[],
        )?;
        let mut policies: Vec<i64> = gone.iter().map(|g| g.policy_id).collect();
        policies.sort_unstable();
        policies.dedup();
        for id in policies {
            db.int(
                "SELECT id FROM policies WHERE id = ?1 FOR UPDATE",
                args![id],
            )?;
        }
    }
    record_many(db, outcomes)?;
    for g in gone {
        if let Some(idx) = target_index(db, g.delivery_id)? {
            disable_target(
                db,
                g.policy_id,
                idx,
                &g.address,
                "target answered 410 Gone: disabled",
            )?;
        }
    }
    Ok(())
}

/// The target index of a delivery.
pub fn target_index(db: &Db<'_>, delivery_id: i64) -> Result<Option<usize>, StoreError> {
    Ok(db
        .int(
            "SELECT target_index FROM deliveries WHERE id = ?1",
            args![delivery_id],
        )?
        .map(|i| i.max(0) as usize))
}
