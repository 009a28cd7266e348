//! Attempts, and what becomes of a delivery after one.

use serde::Serialize;

use super::claim::{OUTCOME_DEFAULT_PLANNING_PG, OUTCOME_PLANNING_PG, dispatcher_planning};
use super::sqlite_or_fail;
use crate::args;
use crate::store::db::{Backend, Db, json};
use crate::store::{StoreError, now_ms, policies};

/// One attempt, as recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attempt {
    pub id: i64,
    pub delivery_id: i64,
    /// unix ms
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    /// `timeout`, `connect`, `refused_target`, `tls`, `http`, `gone`, …
    pub error_kind: Option<String>,
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

macro_rules! outcome {
    () => {
        " deliveries SET
           state = CASE WHEN (state = 'running' AND claim_token = ?7) OR ?2 = 'succeeded' THEN ?2 ELSE state END,
           attempts = attempts + 1,
           not_before = CASE WHEN state = 'running' AND claim_token = ?7 THEN COALESCE(?3, not_before) ELSE not_before END,
           last_status = ?4,
           last_error = CASE WHEN (state = 'running' AND claim_token = ?7) OR ?2 = 'succeeded' THEN ?5 ELSE last_error END,
           claim_token = CASE WHEN claim_token = ?7 THEN NULL ELSE claim_token END,
           lease_until = CASE WHEN claim_token = ?7 THEN NULL ELSE lease_until END,
           updated_at = ?6
         WHERE id = ?1"
    };
}

/// A delivery's outcome (?1 id, ?2 state, ?3 retry time, ?4 status, ?5 error, ?6 now, ?7 the
/// attempt's claim token).
const OUTCOME_SQL: &str = concat!("UPDATE", outcome!());

/// SQLite: [`OUTCOME_SQL`] as `UPDATE OR FAIL` (see [`sqlite_or_fail`]).
pub(super) const OUTCOME_SQL_SQLITE: &str = concat!("UPDATE OR FAIL", outcome!());

/// Record an attempt made under claim `token` and move the delivery on. A delivery ended
/// while its attempt ran (its policy was deleted, its target disabled), or taken over by
/// another replica after the lease expired, is not moved unless the attempt succeeded.
pub fn record(db: &Db<'_>, a: &Attempt, next: Next, token: i64) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            a.delivery_id,
            a.started_at,
            a.duration_ms,
            a.status_code.map(i64::from),
            a.error_kind.as_deref(),
            a.error.as_deref(),
            a.response_excerpt.as_deref()
        ],
    )?;
    let (state, not_before) = match next {
        Next::Succeeded => ("succeeded", None),
        Next::RetryAt(t) => ("pending", Some(t)),
        Next::Dead => ("dead", None),
    };
    // every right-hand side sees the row as it was before this UPDATE
    db.exec(
        sqlite_or_fail(db, OUTCOME_SQL_SQLITE, OUTCOME_SQL),
        args![
            a.delivery_id,
            state,
            not_before,
            a.status_code.map(i64::from),
            a.error.as_deref().or(a.error_kind.as_deref()),
            now_ms(),
            token
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
/// whole batch (the rows travel as one JSON parameter); on SQLite one statement pair per
/// attempt, inside the writer's group commit.
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
    let attempts: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let a = &o.attempt;
            serde_json::json!({
                "delivery_id": a.delivery_id, "started_at": a.started_at, "duration_ms": a.duration_ms,
                "status_code": a.status_code, "error_kind": a.error_kind, "error": a.error,
                "response_excerpt": a.response_excerpt,
            })
        })
        .collect();
    dispatcher_planning(
        db,
        (OUTCOME_PLANNING_PG, OUTCOME_DEFAULT_PLANNING_PG),
        || {
            db.exec_later(
            "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt)
             SELECT delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt
             FROM json_to_recordset(CAST(?1 AS json)) AS x(delivery_id bigint, started_at bigint,
               duration_ms bigint, status_code bigint, error_kind text, error text, response_excerpt text)
             ORDER BY delivery_id",
            args![json(&attempts)?.as_str()],
        )?;
            let moves: Vec<serde_json::Value> = outcomes
                .iter()
                .map(|o| {
                    let (state, not_before) = match o.next {
                        Next::Succeeded => ("succeeded", None),
                        Next::RetryAt(t) => ("pending", Some(t)),
                        Next::Dead => ("dead", None),
                    };
                    let a = &o.attempt;
                    serde_json::json!({
                        "id": a.delivery_id, "state": state, "not_before": not_before,
                        "last_status": a.status_code,
                        "last_error": a.error.as_deref().or(a.error_kind.as_deref()),
                        "token": o.token,
                    })
                })
                .collect();
            // as `record`, row by row: every right-hand side sees the row as it was before
            db.exec_later(OUTCOME_SQL_PG, args![json(&moves)?.as_str(), now])
        },
    )
}

/// PostgreSQL: the outcomes of a batch of attempts (JSON rows ?1, at time ?2). Public for the
/// plan test (tests/it/store.rs).
pub const OUTCOME_SQL_PG: &str = "UPDATE deliveries AS d SET
           state = CASE WHEN (d.state = 'running' AND d.claim_token = x.token) OR x.state = 'succeeded' THEN x.state ELSE d.state END,
           attempts = d.attempts + 1,
           not_before = CASE WHEN d.state = 'running' AND d.claim_token = x.token THEN COALESCE(x.not_before, d.not_before) ELSE d.not_before END,
           last_status = x.last_status,
           last_error = CASE WHEN (d.state = 'running' AND d.claim_token = x.token) OR x.state = 'succeeded' THEN x.last_error ELSE d.last_error END,
           claim_token = CASE WHEN d.claim_token = x.token THEN NULL ELSE d.claim_token END,
           lease_until = CASE WHEN d.claim_token = x.token THEN NULL ELSE d.lease_until END,
           updated_at = ?2
         FROM json_to_recordset(CAST(?1 AS json)) AS x(id bigint, state text, not_before bigint,
           last_status bigint, last_error text, token bigint)
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

/// The target index of a delivery.
pub fn target_index(db: &Db<'_>, delivery_id: i64) -> Result<Option<usize>, StoreError> {
    Ok(db
        .int(
            "SELECT target_index FROM deliveries WHERE id = ?1",
            args![delivery_id],
        )?
        .map(|i| i.max(0) as usize))
}
