//! Outbox: deliveries (event × matching enabled target) and their attempts.
//!
//! A published event's deliveries are created in the transaction that publishes it, so an
//! event in the log is never without its deliveries. Delivery states:
//! `pending` (due at `not_before`) → `running` (claimed by the dispatcher) → `succeeded`, back
//! to `pending` (a retry), or `dead` (retries exhausted, target gone; redeliverable). `running`
//! rows left by a killed process are put back to `pending` at start-up.

use std::cell::Cell;
use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{StoreError, now_ms, policies};
use crate::dispatch::policy::Target;
use crate::events::Event;

thread_local! {
    /// Set when this thread's transaction created deliveries (read after COMMIT).
    static CREATED: Cell<bool> = const { Cell::new(false) };
}

/// Did the transaction just finished on this thread create deliveries? (Resets the flag.)
pub fn take_created() -> bool {
    CREATED.with(|c| c.replace(false))
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Sql(e.to_string()))
}

/// Create the deliveries of `event`: one per enabled target of every enabled policy of its
/// project that wants it. Nothing is created while notifications are switched off globally.
pub fn fanout(conn: &Connection, event: &Event) -> Result<usize, StoreError> {
    if !policies::notification_enabled_cached(conn)? {
        return Ok(0);
    }
    let now = now_ms();
    let mut created = 0;
    for p in policies::for_fanout(conn, &event.project)?.iter() {
        if !p.wants(event) {
            continue;
        }
        for (i, t) in p.targets.iter().enumerate() {
            if t.disabled {
                continue;
            }
            conn.prepare_cached(
                "INSERT INTO deliveries (event_id, event_type, policy_id, project, target_index, target_address, target, state, not_before, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, ?8)",
            )?
            .execute(params![event.id.to_string(), event.kind.harbor_type(), p.id, event.project, i as i64, t.address, json(t)?, now])?;
            created += 1;
        }
        conn.prepare_cached(
            "INSERT INTO last_triggers (policy_id, event_type, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (policy_id, event_type) DO UPDATE SET at = excluded.at",
        )?
        .execute(params![p.id, event.kind.harbor_type(), now])?;
    }
    if created > 0 {
        CREATED.with(|c| c.set(true));
    }
    Ok(created)
}

/// A delivery claimed for an attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub event: Event,
    pub policy_id: i64,
    pub project_id: i64,
    pub target: Target,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Target addresses that have pending deliveries, in address order: a loose scan of the index
/// `deliveries_pending_by_target`, one index lookup per address, however long the queues are.
pub fn pending_targets(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT MIN(target_address) FROM deliveries WHERE state = 'pending' AND target_address > ?1",
    )?;
    let mut out: Vec<String> = Vec::new();
    let mut last = String::new();
    while let Some(next) = stmt.query_row([&last], |r| r.get::<_, Option<String>>(0))? {
        last.clone_from(&next);
        out.push(next);
    }
    Ok(out)
}

/// Up to ?3 due deliveries of target ?1 at time ?2, oldest first (through the index
/// `deliveries_pending_by_target`, no sort).
const DUE_SQL: &str =
    "SELECT id FROM deliveries WHERE state = 'pending' AND target_address = ?1 AND not_before <= ?2
     ORDER BY not_before, id LIMIT ?3";

/// What an attempt needs of claimed delivery ?1.
const LOAD_SQL: &str =
    "SELECT d.event_id, d.policy_id, d.target, d.attempts, e.body, COALESCE(p.id, 0), pol.enabled
     FROM deliveries d JOIN events e ON e.id = d.event_id
     LEFT JOIN projects p ON p.name = d.project
     LEFT JOIN policies pol ON pol.id = d.policy_id
     WHERE d.id = ?1";

/// Claim up to `limit` due deliveries: per target address at most `per_target` minus what
/// `in_flight` says is already running there, skipping the addresses in `skip` (at their limit,
/// or circuit open). Targets are visited from position `rotate` on, so a big claim does not
/// always favour the same ones. Claimed deliveries become `running`. The cost is one index
/// lookup per target plus the rows claimed, not the length of the queue.
pub fn claim(
    conn: &Connection,
    now: i64,
    limit: usize,
    per_target: usize,
    in_flight: &HashMap<String, usize>,
    skip: &[String],
    rotate: usize,
) -> Result<Vec<Claimed>, StoreError> {
    let mut targets = pending_targets(conn)?;
    targets.retain(|t| !skip.contains(t));
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let start = rotate % targets.len();
    targets.rotate_left(start);
    let mut due = conn.prepare_cached(DUE_SQL)?;
    let mut rows: Vec<(i64, String)> = Vec::new();
    for t in targets {
        if rows.len() >= limit {
            break;
        }
        let room = per_target
            .saturating_sub(in_flight.get(&t).copied().unwrap_or(0))
            .min(limit - rows.len());
        if room == 0 {
            continue;
        }
        let ids = due
            .query_map(params![t, now, room as i64], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.extend(ids.into_iter().map(|id| (id, t.clone())));
    }
    let mut claimed_per_target: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut load = conn.prepare_cached(LOAD_SQL)?;
    let mut mark = conn.prepare_cached(
        "UPDATE deliveries SET state = 'running', updated_at = ?2 WHERE id = ?1 AND state = 'pending'",
    )?;
    for (id, address) in rows {
        if out.len() >= limit {
            break;
        }
        if skip.contains(&address) {
            continue;
        }
        let busy = in_flight.get(&address).copied().unwrap_or(0)
            + claimed_per_target.get(&address).copied().unwrap_or(0);
        if busy >= per_target {
            continue;
        }
        let row = load
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .optional()?;
        let Some((_, policy_id, target, attempts, body, project_id, enabled)) = row else {
            continue;
        };
        // a retry of a policy switched off (or deleted) since the event ends here; it can be
        // redelivered once the policy is on again
        if enabled != Some(1) {
            let why = if enabled.is_none() {
                "policy deleted"
            } else {
                "policy disabled"
            };
            conn.prepare_cached("UPDATE deliveries SET state = 'dead', last_error = ?3, updated_at = ?2 WHERE id = ?1")?.execute(
                params![id, now, why],
            )?;
            continue;
        }
        let (Ok(target), Ok(event)) = (
            serde_json::from_str::<Target>(&target),
            serde_json::from_str::<Event>(&body),
        ) else {
            conn.prepare_cached("UPDATE deliveries SET state = 'dead', last_error = 'unreadable delivery', updated_at = ?2 WHERE id = ?1")?.execute(
                params![id, now],
            )?;
            continue;
        };
        if mark.execute(params![id, now])? == 1 {
            *claimed_per_target.entry(address).or_default() += 1;
            out.push(Claimed {
                id,
                event,
                policy_id,
                project_id,
                target,
                attempts: attempts.max(0) as u32,
            });
        }
    }
    Ok(out)
}

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

/// Record an attempt and move the delivery on. A delivery ended while its attempt ran (its
/// policy was deleted, its target disabled) stays ended unless the attempt succeeded: it is
/// not put back to `pending` for a retry.
pub fn record(conn: &Connection, a: &Attempt, next: Next) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![a.delivery_id, a.started_at, a.duration_ms, a.status_code, a.error_kind, a.error, a.response_excerpt])?;
    let now = now_ms();
    let (state, not_before) = match next {
        Next::Succeeded => ("succeeded", None),
        Next::RetryAt(t) => ("pending", Some(t)),
        Next::Dead => ("dead", None),
    };
    // every right-hand side sees the row as it was before this UPDATE
    conn.prepare_cached(
        "UPDATE deliveries SET
           state = CASE WHEN state = 'running' OR ?2 = 'succeeded' THEN ?2 ELSE state END,
           attempts = attempts + 1,
           not_before = COALESCE(?3, not_before),
           last_status = ?4,
           last_error = CASE WHEN state = 'running' OR ?2 = 'succeeded' THEN ?5 ELSE last_error END,
           updated_at = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        a.delivery_id,
        state,
        not_before,
        a.status_code,
        a.error.as_deref().or(a.error_kind.as_deref()),
        now
    ])?;
    Ok(())
}

/// Put a claimed delivery back without an attempt (its target's circuit is open).
pub fn defer(conn: &Connection, delivery_id: i64, until: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE deliveries SET state = 'pending', not_before = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'running'")?.execute(
        params![delivery_id, until, now_ms()],
    )?;
    Ok(())
}

/// The target answered 410 Gone: mark it disabled in its policy and end its open deliveries.
pub fn disable_target(
    conn: &Connection,
    policy_id: i64,
    target_index: usize,
    address: &str,
    reason: &str,
) -> Result<(), StoreError> {
    if let Some(mut p) = policies::get_by_id(conn, policy_id)?
        && let Some(t) = p.targets.get_mut(target_index)
        && t.address == address
    {
        t.disabled = true;
        policies::update_targets(conn, policy_id, &p.targets)?;
    }
    conn.prepare_cached(
        "UPDATE deliveries SET state = 'dead', last_error = ?3, updated_at = ?4
         WHERE policy_id = ?1 AND target_address = ?2 AND state IN ('pending', 'running')",
    )?
    .execute(params![policy_id, address, reason, now_ms()])?;
    Ok(())
}

/// The target index of a delivery.
pub fn target_index(conn: &Connection, delivery_id: i64) -> Result<Option<usize>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT target_index FROM deliveries WHERE id = ?1")?
        .query_row([delivery_id], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|i| i.max(0) as usize))
}

/// At start-up: deliveries a killed process left `running` go back to `pending`.
pub fn recover(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', updated_at = ?1 WHERE state = 'running'",
        )?
        .execute([now_ms()])?)
}

/// When the next pending delivery is due (unix ms), not counting those to the addresses in
/// When the next claimable pending delivery is due (unix ms): addresses in `skip` (busy, or
/// circuit open) do not count; they wake the dispatcher by finishing an attempt or reopening.
pub fn next_due(conn: &Connection, skip: &[String]) -> Result<Option<i64>, StoreError> {
    if skip.is_empty() {
        return Ok(conn
            .prepare_cached("SELECT MIN(not_before) FROM deliveries WHERE state = 'pending'")?
            .query_row([], |r| r.get::<_, Option<i64>>(0))?);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT MIN(not_before) FROM deliveries WHERE state = 'pending' AND target_address = ?1",
    )?;
    let mut due: Option<i64> = None;
    for t in pending_targets(conn)? {
        if skip.contains(&t) {
            continue;
        }
        if let Some(at) = stmt.query_row([&t], |r| r.get::<_, Option<i64>>(0))? {
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    Ok(due)
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub policy_id: i64,
    pub target_address: String,
    pub state: String,
    pub attempts: u32,
    /// unix ms
    pub not_before: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

fn view(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryView> {
    Ok(DeliveryView {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event_type: r.get(2)?,
        policy_id: r.get(3)?,
        target_address: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get::<_, i64>(6)?.max(0) as u32,
        not_before: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        last_status: r
            .get::<_, Option<i64>>(10)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(11)?,
    })
}

const VIEW_COLUMNS: &str = "id, event_id, event_type, policy_id, target_address, state, attempts, not_before, created_at, updated_at, last_status, last_error";

/// Deliveries of a policy, newest first.
pub fn list_for_policy(
    conn: &Connection,
    policy_id: i64,
    state: Option<&str>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<DeliveryView>, usize), StoreError> {
    let total: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM deliveries WHERE policy_id = ?1 AND (?2 IS NULL OR state = ?2)",
        )?
        .query_row(params![policy_id, state], |r| r.get(0))?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {VIEW_COLUMNS} FROM deliveries WHERE policy_id = ?1 AND (?2 IS NULL OR state = ?2)
         ORDER BY id DESC LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt
        .query_map(params![policy_id, state, limit as i64, offset as i64], view)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rows, total.max(0) as usize))
}

/// One delivery of a policy.
pub fn get(
    conn: &Connection,
    policy_id: i64,
    delivery_id: i64,
) -> Result<Option<DeliveryView>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {VIEW_COLUMNS} FROM deliveries WHERE policy_id = ?1 AND id = ?2"),
            params![policy_id, delivery_id],
            view,
        )
        .optional()?)
}

/// Attempts of a delivery, oldest first.
pub fn attempts(conn: &Connection, delivery_id: i64) -> Result<Vec<Attempt>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt
         FROM attempts WHERE delivery_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([delivery_id], |r| {
            Ok(Attempt {
                id: r.get(0)?,
                delivery_id: r.get(1)?,
                started_at: r.get(2)?,
                duration_ms: r.get(3)?,
                status_code: r
                    .get::<_, Option<i64>>(4)?
                    .and_then(|s| u16::try_from(s).ok()),
                error_kind: r.get(5)?,
                error: r.get(6)?,
                response_excerpt: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// What became of a request to send a delivery again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Pending again, due now.
    Queued,
    /// Being attempted right now: left alone.
    Running,
    /// Its target is disabled (it answered 410 Gone): nothing is sent until it is re-enabled.
    TargetDisabled,
    /// The policy has no such delivery.
    NotFound,
}

/// Send one delivery again (any state but running): fresh attempts, due now, with the
/// policy's current target at the same position when it still exists — unless that target is
/// disabled.
pub fn redeliver(
    conn: &Connection,
    policy_id: i64,
    delivery_id: i64,
) -> Result<Redelivery, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT target_index, state FROM deliveries WHERE id = ?1 AND policy_id = ?2",
        )?
        .query_row(params![delivery_id, policy_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    let idx = match row {
        None => return Ok(Redelivery::NotFound),
        Some((_, state)) if state == "running" => return Ok(Redelivery::Running),
        Some((idx, _)) => idx,
    };
    let current = policies::get_by_id(conn, policy_id)?
        .and_then(|p| p.targets.get(idx.max(0) as usize).cloned());
    if current.as_ref().is_some_and(|t| t.disabled) {
        return Ok(Redelivery::TargetDisabled);
    }
    let now = now_ms();
    match current {
        Some(t) => conn.prepare_cached("UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?2, updated_at = ?2, target = ?3, target_address = ?4 WHERE id = ?1")?.execute(
            params![delivery_id, now, json(&t)?, t.address],
        )?,
        None => conn.prepare_cached("UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?2, updated_at = ?2 WHERE id = ?1")?.execute(
            params![delivery_id, now],
        )?,
    };
    CREATED.with(|c| c.set(true));
    Ok(Redelivery::Queued)
}

/// Redeliver every dead delivery of a policy (not those of a disabled target); returns how
/// many.
pub fn redeliver_dead(conn: &Connection, policy_id: i64) -> Result<usize, StoreError> {
    // set-based: one statement per target position of the policy, not one per delivery
    let targets = policies::get_by_id(conn, policy_id)?
        .map(|p| p.targets)
        .unwrap_or_default();
    let now = now_ms();
    let mut n = 0;
    for (idx, t) in targets.iter().enumerate() {
        if t.disabled {
            continue;
        }
        n += conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?3, updated_at = ?3,
                   target = ?4, target_address = ?5
                 WHERE policy_id = ?1 AND target_index = ?2 AND state = 'dead'",
            )?
            .execute(params![policy_id, idx as i64, now, json(t)?, t.address])?;
    }
    // deliveries whose target position is gone from the policy keep their own target
    n += conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?3, updated_at = ?3
             WHERE policy_id = ?1 AND target_index >= ?2 AND state = 'dead'",
        )?
        .execute(params![policy_id, targets.len() as i64, now])?;
    if n > 0 {
        CREATED.with(|c| c.set(true));
    }
    Ok(n)
}

/// Counts by state (queue depth, dead) for metrics.
pub fn counts(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    super::grouped_counts(
        conn,
        "SELECT state, COUNT(*) FROM deliveries GROUP BY state",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::policy::{Filters, Policy};
    use crate::events::EventKind;

    fn db_with_deliveries(n: usize, address: &str) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&conn).unwrap();
        let policy = Policy {
            id: 0,
            project: "prj".into(),
            project_id: 0,
            name: "p".into(),
            description: String::new(),
            enabled: true,
            event_types: vec![EventKind::PushArtifact],
            targets: vec![Target::http(address)],
            filters: Filters::default(),
            creator: "admin".into(),
            created_at: 0,
            updated_at: 0,
        };
        policies::insert(&conn, &policy).unwrap();
        let repo = crate::route::Repository::parse("prj/app").unwrap();
        for _ in 0..n {
            let e = Event::new(EventKind::PushArtifact, &repo, "u");
            crate::store::events::insert(&conn, &e, None).unwrap();
        }
        conn
    }

    /// Claims run after every attempt: their statements must stay compiled. (Without the
    /// query planner stability guarantee, SQLite recompiled both on every claim — a bound
    /// `LIMIT ?3`, an `= ?1` beside a join — 7 % of wharf's CPU while it delivered every pull.)
    #[test]
    fn claims_do_not_recompile_their_statements() {
        let a = "http://a.example/";
        let conn = db_with_deliveries(40, a);
        crate::store::tune(&conn).unwrap();
        let now = now_ms() + 1;
        for (i, room) in [1usize, 2, 3, 1, 4, 2, 5].into_iter().enumerate() {
            let got = claim(&conn, now + i as i64, 100, room, &HashMap::new(), &[], i).unwrap();
            assert_eq!(got.len(), room);
        }
        for sql in [DUE_SQL, LOAD_SQL] {
            let st = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                st.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    #[test]
    fn retries_of_a_policy_switched_off_end_as_dead() {
        let a = "http://a.example/";
        let conn = db_with_deliveries(2, a);
        conn.execute("UPDATE policies SET enabled = 0", []).unwrap();
        let now = now_ms() + 1;
        assert!(
            claim(&conn, now, 100, 16, &HashMap::new(), &[], 0)
                .unwrap()
                .is_empty()
        );
        let dead: Vec<String> = conn
            .prepare("SELECT last_error FROM deliveries WHERE state = 'dead'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(dead, vec!["policy disabled", "policy disabled"]);
    }

    #[test]
    fn claims_count_attempts_already_in_flight_per_target() {
        let a = "http://a.example/";
        let conn = db_with_deliveries(5, a);
        let now = now_ms() + 1;
        // one attempt to `a` is running: room for one more of two
        let busy = HashMap::from([(a.to_string(), 1)]);
        let got = claim(&conn, now, 100, 2, &busy, &[], 0).unwrap();
        assert_eq!(got.len(), 1);
        // nothing running: two
        let got = claim(&conn, now, 100, 2, &HashMap::new(), &[], 0).unwrap();
        assert_eq!(got.len(), 2);
        // at the limit, or skipped: none
        let full = HashMap::from([(a.to_string(), 2)]);
        assert!(claim(&conn, now, 100, 2, &full, &[], 0).unwrap().is_empty());
        assert!(
            claim(&conn, now, 100, 2, &HashMap::new(), &[a.to_string()], 0)
                .unwrap()
                .is_empty()
        );
        let left: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 2);
    }

    fn state(conn: &Connection, id: i64) -> String {
        conn.query_row("SELECT state FROM deliveries WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[test]
    fn a_delivery_ended_while_attempted_is_not_retried() {
        let conn = db_with_deliveries(2, "http://a.example/");
        let got = claim(&conn, now_ms() + 1, 2, 2, &HashMap::new(), &[], 0).unwrap();
        let (a, b) = (got[0].id, got[1].id);
        // the policy is deleted while both attempts run
        assert!(policies::delete(&conn, "prj", got[0].policy_id).unwrap());
        let attempt = |id| Attempt {
            delivery_id: id,
            error_kind: Some("timeout".into()),
            ..Attempt::default()
        };
        record(&conn, &attempt(a), Next::RetryAt(now_ms())).unwrap();
        assert_eq!(state(&conn, a), "dead");
        let ok = Attempt {
            delivery_id: b,
            status_code: Some(200),
            ..Attempt::default()
        };
        record(&conn, &ok, Next::Succeeded).unwrap();
        assert_eq!(state(&conn, b), "succeeded");
        assert_eq!(attempts(&conn, a).unwrap().len(), 1, "the attempt is kept");
        let last: Option<String> = conn
            .query_row(
                "SELECT last_error FROM deliveries WHERE id = ?1",
                [a],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(last.as_deref(), Some("policy deleted"));
    }

    #[test]
    fn redelivery_skips_running_deliveries_and_disabled_targets() {
        let conn = db_with_deliveries(1, "http://a.example/");
        let got = claim(&conn, now_ms() + 1, 1, 1, &HashMap::new(), &[], 0).unwrap();
        let (pid, id) = (got[0].policy_id, got[0].id);
        assert_eq!(redeliver(&conn, pid, id).unwrap(), Redelivery::Running);
        assert_eq!(redeliver(&conn, pid + 1, id).unwrap(), Redelivery::NotFound);
        record(
            &conn,
            &Attempt {
                delivery_id: id,
                status_code: Some(410),
                ..Attempt::default()
            },
            Next::Dead,
        )
        .unwrap();
        disable_target(&conn, pid, 0, "http://a.example/", "gone").unwrap();
        assert_eq!(
            redeliver(&conn, pid, id).unwrap(),
            Redelivery::TargetDisabled
        );
        assert_eq!(redeliver_dead(&conn, pid).unwrap(), 0);
        assert_eq!(state(&conn, id), "dead");
    }
}
