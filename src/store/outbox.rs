//! Outbox: deliveries (event × matching enabled target) and their attempts.
//!
//! A published event's deliveries are created in the transaction that publishes it, so an
//! event in the log is never without its deliveries. Delivery states:
//! `pending` (due at `not_before`) → `running` (claimed by the dispatcher) → `succeeded`, back
//! to `pending` (a retry), or `dead` (retries exhausted, target gone; redeliverable). A delivery
//! the dispatcher can attempt at once is created `running`, already claimed ([`Intake`]).
//! `running` rows left by a killed process are put back to `pending` at start-up (SQLite) or
//! when their lease expires (PostgreSQL).

use std::collections::HashMap;

use serde::Serialize;

use super::db::{Backend, Db, LaterId, Row, json};
use super::events::event_columns;
use super::{StoreError, now_ms, policies};
use crate::args;
use crate::dispatch::policy::Target;
use crate::events::Event;

/// The dispatcher of this process, as fan-out sees it: a delivery that can be attempted at once
/// is created already claimed by this process (state `running`, under a lease), and handed to
/// the dispatcher after COMMIT — no claim transaction, no entry in the index of pending
/// deliveries. A replica that dies before the attempt leaves it to the lease, as any claim.
pub trait Intake: Send + Sync {
    /// A hold on one attempt to `address` starting now (a free slot, the target's concurrency
    /// not reached, its circuit closed, notifications on), or `None`: the delivery is created
    /// pending, for the dispatcher to claim.
    fn admit(&self, address: &str) -> Option<Admission>;
    /// Deliveries created under admissions, committed: attempt them.
    fn start(&self, born: Vec<Born>);
}

/// What [`Intake::admit`] grants: the claim's lease, and the dispatcher's hold on the attempt
/// slot (released when dropped: the job rolled back, or the attempt ended).
pub struct Admission {
    pub lease: Lease,
    pub hold: Box<dyn Send + Sync>,
}

/// A delivery created already claimed, committed with its job (see [`Intake`]).
pub struct Born {
    /// Its row's id, known once the insert is answered (by COMMIT at the latest); `claimed.id`
    /// is 0 until then.
    pub id: LaterId,
    pub claimed: Claimed,
    pub hold: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Born {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Born")
            .field("id", &self.id.get())
            .field("event", &self.claimed.event.id)
            .field("target", &self.claimed.target.address)
            .finish_non_exhaustive()
    }
}

macro_rules! insert_delivery {
    () => {
        " deliveries (event_seq, event_type, policy_id, project, target_index, target_address, target, target_id, state, not_before, created_at, updated_at, claim_token, lease_until)
     VALUES ((SELECT seq FROM events WHERE id = ?1), ?2, ?3, ?4, ?5, ?6, '', ?7, ?9, ?8, ?8, ?8, ?10, ?11)"
    };
}

/// A delivery in state ?9: `pending`, or `running` under claim ?10 until ?11, created already
/// claimed (see [`Intake`]; its id: [`Db::insert_id_later`]).
/// The event is named by its id ?1 and stored as its `seq`.
const INSERT_DELIVERY_SQL: &str = concat!("INSERT INTO", insert_delivery!());

/// SQLite: [`INSERT_DELIVERY_SQL`] as `INSERT OR FAIL` (see [`sqlite_or_fail`]).
const INSERT_DELIVERY_SQL_SQLITE: &str = concat!("INSERT OR FAIL INTO", insert_delivery!());

/// SQLite's conflict clause `OR FAIL` on the statements that write a delivery, which the
/// counting triggers on `deliveries` (schema 12) make statements of several writes: with the
/// default `OR ABORT`, SQLite opens a statement journal for each of them (a savepoint inside the
/// transaction, every page the statement touches copied to it first: ~4 % of a delivered
/// pull's instructions) so that a failing statement can undo its own first writes. `OR FAIL`
/// keeps those writes and fails; the job fails with it and its transaction or savepoint is
/// rolled back, which undoes them anyway (no job carries on after a failed statement).
/// PostgreSQL has no such clause (and no such journal).
fn sqlite_or_fail<'s>(db: &Db<'_>, sqlite: &'s str, postgres: &'s str) -> &'s str {
    match db.backend() {
        Backend::Sqlite => sqlite,
        Backend::Postgres => postgres,
    }
}

/// Create the deliveries of `event`: one per enabled target of every enabled policy of its
/// project that wants it, pointing at the target's current version. Nothing is created while
/// notifications are switched off globally. A delivery the job's [`Intake`] admits is created
/// already claimed by this process ([`Effects::born`](super::db::Effects::born)); the others
/// pending, and the dispatcher is woken for their addresses.
pub fn fanout(db: &Db<'_>, event: &Event) -> Result<usize, StoreError> {
    if !policies::notification_enabled_cached(db)? {
        return Ok(0);
    }
    let now = now_ms();
    let mut created = 0;
    let event_id = event.id.to_string();
    let insert = sqlite_or_fail(db, INSERT_DELIVERY_SQL_SQLITE, INSERT_DELIVERY_SQL);
    let kind = event.kind.harbor_type();
    for f in policies::for_fanout(db, &event.project)?.iter() {
        let p = &f.policy;
        if !p.wants(event) {
            continue;
        }
        for (i, t) in p.targets.iter().enumerate() {
            if t.disabled {
                continue;
            }
            let Some(target_id) = f.target_ids.get(i).copied().flatten() else {
                tracing::error!(
                    policy = p.id,
                    position = i,
                    "target has no stored version; no delivery"
                );
                continue;
            };
            let admitted = db.intake().and_then(|intake| intake.admit(&t.address));
            let (state, lease) = match &admitted {
                Some(a) => ("running", Some(a.lease)),
                None => ("pending", None),
            };
            let args = args![
                event_id.as_str(),
                kind,
                p.id,
                &event.project,
                i as i64,
                &t.address,
                target_id,
                now,
                state,
                lease.map(|l| l.token),
                lease.map(|l| l.until)
            ];
            match admitted {
                Some(Admission { lease, hold }) => {
                    let id = db.insert_id_later(insert, args)?;
                    db.note_born(Born {
                        id,
                        claimed: Claimed {
                            id: 0,
                            event: event.clone(),
                            policy_id: p.id,
                            project_id: p.project_id,
                            target: t.clone(),
                            attempts: 0,
                            token: lease.token,
                            lease_until: lease.until,
                        },
                        hold,
                    });
                }
                None => {
                    db.exec_later(insert, args)?;
                    db.note_deliveries_to(&t.address);
                }
            }
            created += 1;
        }
        db.note_trigger(p.id, kind, now);
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
    /// The claim: only its holder may record the outcome or put the delivery back.
    pub token: i64,
    /// Until when (unix ms) the claim holds (see [`Lease`]).
    pub lease_until: i64,
}

/// A claim's identity and how long it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Random per claim.
    pub token: i64,
    /// Until when (unix ms) the delivery is the claimer's; after it, another replica may take
    /// it over.
    pub until: i64,
}

/// Target addresses that have pending deliveries, in address order: a loose scan of the index
/// `deliveries_pending_by_target`, one index lookup per address, however long the queues are.
pub fn pending_targets(db: &Db<'_>) -> Result<Vec<String>, StoreError> {
    if db.backend() == Backend::Postgres {
        // the same loose index scan, in one statement. `ORDER BY … LIMIT 1`, not `MIN()`: with
        // statistics that say no delivery is pending (taken before a burst or a redeliver),
        // PostgreSQL computed MIN() by reading every pending entry (2 ms at 5,000), where the
        // LIMIT reads one (pinned by tests/it/store.rs).
        return db.rows(PENDING_TARGETS_PG, &[], |r| r.text(0));
    }
    let mut out: Vec<String> = Vec::new();
    let mut last = String::new();
    while let Some(next) = db.text(
        "SELECT MIN(target_address) FROM deliveries WHERE state = 'pending' AND target_address > ?1",
        args![last.as_str()],
    )? {
        last.clone_from(&next);
        out.push(next);
    }
    Ok(out)
}

/// Claim up to ?3 due deliveries of target ?1 at time ?2, oldest first (through the index
/// `deliveries_pending_by_target`, no sort): they become `running` under claim ?4 until ?5.
const CLAIM_SQL: &str =
    "UPDATE deliveries SET state = 'running', claim_token = ?4, lease_until = ?5, updated_at = ?2
     WHERE id IN (SELECT id FROM deliveries
                  WHERE state = 'pending' AND target_address = ?1 AND not_before <= ?2
                  ORDER BY not_before, id LIMIT ?3)
     RETURNING id";
/// What an attempt needs of the claimed deliveries whose ids are the JSON array ?1. (On
/// PostgreSQL, rows passed as JSON are matched with `id = ANY(ARRAY(…))`, which the planner
/// always serves from the primary key: a join with a JSON function made it scan the whole
/// table while it had no statistics yet, 4.5 ms per batch on 5,000 deliveries.)
const LOAD_SQL: &str = concat!(
    "SELECT d.id, d.policy_id, COALESCE(t.body, d.target), d.attempts, COALESCE(p.id, 0), pol.enabled, ",
    event_columns!("e."),
    " FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq
     LEFT JOIN delivery_targets t ON t.id = d.target_id
     LEFT JOIN projects p ON p.name = d.project
     LEFT JOIN policies pol ON pol.id = d.policy_id
     WHERE d.id IN (SELECT value FROM json_each(?1))"
);

/// PostgreSQL: claim and load (as [`CLAIM_SQL`] and [`LOAD_SQL`]) in one statement; rows
/// another replica is claiming right now are skipped (`SKIP LOCKED`). The claimed ids are
/// matched with `id = ANY(ARRAY(…))`, as in the other set-based statements, so the planner
/// takes them from the primary key whatever its statistics say. The target version, the
/// project's id and the policy's switch come from subqueries on primary keys, not joins: with
/// five tables joined, planning the statement took 0.7–1.5 ms, and PostgreSQL replanned it on
/// every call when it preferred custom plans (the bench's PUT runs: 1.5 ms of planning per
/// claim of one delivery). Public for the plan test (tests/it/store.rs).
pub const CLAIM_LOAD_SQL_PG: &str = concat!(
    "WITH c AS (
       UPDATE deliveries SET state = 'running', claim_token = ?4, lease_until = ?5, updated_at = ?2
       WHERE id = ANY(ARRAY(SELECT id FROM deliveries
                    WHERE state = 'pending' AND target_address = ?1 AND not_before <= ?2
                    ORDER BY not_before, id LIMIT ?3 FOR UPDATE SKIP LOCKED))
       RETURNING id, policy_id, target_id, target, attempts, project, event_seq)
     SELECT c.id, c.policy_id,
       COALESCE((SELECT t.body FROM delivery_targets t WHERE t.id = c.target_id), c.target),
       c.attempts, COALESCE((SELECT p.id FROM projects p WHERE p.name = c.project), 0),
       (SELECT pol.enabled FROM policies pol WHERE pol.id = c.policy_id), ",
    event_columns!("e."),
    " FROM c LEFT JOIN events e ON e.seq = c.event_seq"
);

/// PostgreSQL: the dispatcher's statements (the claim, the outcome) are planned, in their
/// transaction, without sequential scans, so every plan PostgreSQL caches for them takes the
/// primary key and the indexes. A generic plan cached while `deliveries` was small (early in a
/// burst, before autovacuum's next analyze) kept scanning the whole table as it grew: the
/// bench saw an outcome take 6.5 ms per call for a whole run (0.25 ms in the next one).
///
/// The claim stays planned afresh on each call when PostgreSQL prefers that (it does: 0.74 ms
/// of planning per claim on a slow bench run): its generic plan, cached on an empty table,
/// finds the claimed ids through `deliveries_by_policy` (`(policy_id, id)`, a walk of the whole
/// index) as readily as through the primary key (tests/it/store.rs). The dispatcher claims
/// once per batch instead ([`claim_next`]).
///
/// Sent ahead of them, in one message, and [`DEFAULT_PLANNING_PG`] after them (a job may share
/// its transaction with others).
pub const DISPATCHER_PLANNING_PG: &str = "SET LOCAL enable_seqscan = off";
/// See [`DISPATCHER_PLANNING_PG`].
pub const DEFAULT_PLANNING_PG: &str = "SET LOCAL enable_seqscan TO DEFAULT";

/// PostgreSQL: the outcomes of attempts are planned as [`DISPATCHER_PLANNING_PG`] says, and
/// always with the generic plan cached on the connection. Left to choose, PostgreSQL planned
/// about half of the calls afresh (0.17 ms each, some 7 % of its CPU per delivered push on the
/// bench) for a plan that is the same every time: the rows come as one JSON parameter whose
/// size the planner does not see, and every one is found by its primary key.
pub const OUTCOME_PLANNING_PG: &str =
    "SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan";
/// See [`OUTCOME_PLANNING_PG`].
pub const OUTCOME_DEFAULT_PLANNING_PG: &str =
    "SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL plan_cache_mode TO DEFAULT";

/// Run `f`, whose statements go to PostgreSQL, planned as `planning` says (one of the pairs
/// above); the settings are put back after it. A failure leaves them to the rollback that
/// follows it.
fn dispatcher_planning<T>(
    db: &Db<'_>,
    (planning, default): (&'static str, &'static str),
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    db.batch_later(planning)?;
    let out = f()?;
    db.batch_later(default)?;
    Ok(out)
}

/// What limits a claim.
#[derive(Debug, Clone, Default)]
pub struct ClaimLimits {
    /// Most deliveries in all.
    pub limit: usize,
    /// Most claims held per target address (this process).
    pub per_target: usize,
    /// Claims already held per target address (attempts in flight, and claims waiting for
    /// their turn).
    pub in_flight: HashMap<String, usize>,
    /// Addresses not to claim for (at their limit, or circuit open).
    pub skip: Vec<String>,
    /// Targets are visited from this position on, so a big claim does not always favour the
    /// same ones.
    pub rotate: usize,
    /// The addresses with pending deliveries, from a recent [`pending_targets`] the caller
    /// keeps (the dispatcher, for a moment: see `dispatch`); `None`: scan now.
    pub targets: Option<Vec<String>>,
}

/// Claim up to `limits.limit` due deliveries (see [`ClaimLimits`]). Claimed deliveries become
/// `running` under `lease`. Set-based: one statement per target address with due deliveries,
/// and one to load what the attempts need — whatever the length of the queue.
pub fn claim(
    db: &Db<'_>,
    now: i64,
    limits: &ClaimLimits,
    lease: Lease,
) -> Result<Vec<Claimed>, StoreError> {
    let ClaimLimits {
        limit,
        per_target,
        in_flight,
        skip,
        rotate,
        targets,
    } = limits;
    let (limit, per_target) = (*limit, *per_target);
    let mut targets = match targets {
        Some(t) => t.clone(),
        None => pending_targets(db)?,
    };
    targets.retain(|t| !skip.contains(t));
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let start = rotate % targets.len();
    targets.rotate_left(start);
    type Loaded = (
        i64,
        i64,
        Option<String>,
        i64,
        i64,
        Option<i64>,
        Option<Event>,
    );
    let load_row = |r: &Row<'_>| -> Result<Loaded, StoreError> {
        Ok((
            r.i64(0)?,
            r.i64(1)?,
            r.opt_text(2)?,
            r.i64(3)?,
            r.i64(4)?,
            r.opt_i64(5)?,
            super::events::read(r, 6)?,
        ))
    };
    let pg = db.backend() == Backend::Postgres;
    let mut ids: Vec<i64> = Vec::new();
    let mut rows: Vec<Loaded> = Vec::new();
    let claim_each = || -> Result<(), StoreError> {
        for t in targets {
            if ids.len() >= limit {
                break;
            }
            let room = per_target
                .saturating_sub(in_flight.get(&t).copied().unwrap_or(0))
                .min(limit - ids.len());
            if room == 0 {
                continue;
            }
            let args = args![t.as_str(), now, room as i64, lease.token, lease.until];
            if pg {
                let mut got = db.rows(CLAIM_LOAD_SQL_PG, args, load_row)?;
                got.sort_by_key(|r| r.0);
                ids.extend(got.iter().map(|r| r.0));
                rows.extend(got);
            } else {
                ids.extend(db.rows(CLAIM_SQL, args, |r| r.i64(0))?);
            }
        }
        Ok(())
    };
    if pg {
        dispatcher_planning(
            db,
            (DISPATCHER_PLANNING_PG, DEFAULT_PLANNING_PG),
            claim_each,
        )?;
    } else {
        claim_each()?;
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if !pg {
        rows = db.rows(LOAD_SQL, args![json(&ids)?.as_str()], load_row)?;
    }
    let mut out = Vec::with_capacity(rows.len());
    for (id, policy_id, target, attempts, project_id, enabled, event) in rows {
        // a retry of a policy switched off (or deleted) since the event ends here; it can be
        // redelivered once the policy is on again
        if enabled != Some(1) {
            let why = if enabled.is_none() {
                "policy deleted"
            } else {
                "policy disabled"
            };
            end_claimed(db, id, now, why)?;
            continue;
        }
        let target = target
            .filter(|t| !t.is_empty())
            .and_then(|t| serde_json::from_str::<Target>(&t).ok());
        let (Some(target), Some(event)) = (target, event) else {
            end_claimed(db, id, now, "unreadable delivery")?;
            continue;
        };
        out.push(Claimed {
            id,
            event,
            policy_id,
            project_id,
            target,
            attempts: attempts.max(0) as u32,
            token: lease.token,
            lease_until: lease.until,
        });
    }
    // oldest first, as claimed
    let order: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    out.sort_by_key(|d| order.get(&d.id).copied());
    Ok(out)
}

/// What [`claim_next`] found.
#[derive(Debug)]
pub struct ClaimNext {
    pub batch: Vec<Claimed>,
    /// A fresh scan of the addresses with pending deliveries (none was given).
    pub scanned: Option<Vec<String>>,
    /// When the batch was not full and the claimer looked ahead: when the next delivery it
    /// could claim is due (targets in `limits.skip`, or filled to their limit by this claim, do
    /// not count).
    pub next_due: Option<i64>,
    /// The claim filled a target to its limit (`limits.per_target`): the next claim for it
    /// waits for one of its attempts to finish.
    pub filled: bool,
}

/// The dispatcher's claim: [`claim`] under `limits` from the addresses `known` (a recent
/// [`pending_targets`]; a scan when `None`). A batch that is not full means nothing else
/// claimable is due now; with `look_ahead` (deliveries may be due later: retries, deferrals)
/// the same transaction looks up when the next one is due ([`next_due_of`]), so the dispatcher
/// sleeps until then, or until a commit, an attempt it waits for or a circuit wakes it,
/// instead of claiming again to find nothing.
pub fn claim_next(
    db: &Db<'_>,
    now: i64,
    mut limits: ClaimLimits,
    known: Option<Vec<String>>,
    lease: Lease,
    look_ahead: bool,
) -> Result<ClaimNext, StoreError> {
    let scanned = match known {
        Some(_) => None,
        None => Some(pending_targets(db)?),
    };
    limits.targets = known.or_else(|| scanned.clone());
    let batch = claim(db, now, &limits, lease)?;
    let mut next_due = None;
    let mut filled = false;
    if batch.len() < limits.limit {
        // targets this claim filled to their limit wake the claimer by finishing an attempt
        let mut claimed: HashMap<&str, usize> = HashMap::new();
        for d in &batch {
            *claimed.entry(d.target.address.as_str()).or_default() += 1;
        }
        let mut skip = limits.skip.clone();
        for (address, n) in claimed {
            if n + limits.in_flight.get(address).copied().unwrap_or(0) >= limits.per_target {
                skip.push(address.to_string());
                filled = true;
            }
        }
        if look_ahead {
            next_due = next_due_of(db, &skip, limits.targets.as_deref())?;
        }
    }
    Ok(ClaimNext {
        batch,
        scanned,
        next_due,
        filled,
    })
}

/// A claimed delivery that cannot be attempted ends dead with `why`.
fn end_claimed(db: &Db<'_>, id: i64, now: i64, why: &str) -> Result<(), StoreError> {
    db.exec(
        "UPDATE deliveries SET state = 'dead', last_error = ?3, updated_at = ?2, claim_token = NULL, lease_until = NULL WHERE id = ?1",
        args![id, now, why],
    )?;
    Ok(())
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
const OUTCOME_SQL_SQLITE: &str = concat!("UPDATE OR FAIL", outcome!());

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

/// At start-up of the only instance (SQLite): every delivery left `running` belonged to a
/// process that is gone; back to `pending`.
pub fn recover(db: &Db<'_>) -> Result<u64, StoreError> {
    db.exec(
        "UPDATE deliveries SET state = 'pending', claim_token = NULL, lease_until = NULL, updated_at = ?1
         WHERE state = 'running'",
        args![now_ms()],
    )
}

/// Deliveries whose claim's lease has expired (their replica died, or hangs) go back to
/// `pending`, for any replica to take over; returns how many.
pub fn reclaim_expired(db: &Db<'_>, now: i64) -> Result<u64, StoreError> {
    let n = db.exec(
        "UPDATE deliveries SET state = 'pending', claim_token = NULL, lease_until = NULL, updated_at = ?1
         WHERE state = 'running' AND lease_until < ?1",
        args![now],
    )?;
    if n > 0 {
        db.note_deliveries();
    }
    Ok(n)
}

/// When the next claimable pending delivery is due (unix ms): addresses in `skip` (busy, or
/// circuit open) do not count; they wake the dispatcher by finishing an attempt or reopening.
pub fn next_due(db: &Db<'_>, skip: &[String]) -> Result<Option<i64>, StoreError> {
    next_due_of(db, skip, None)
}

/// [`next_due`] among `targets` (a recent [`pending_targets`]; `None`: scan now).
pub fn next_due_of(
    db: &Db<'_>,
    skip: &[String],
    targets: Option<&[String]>,
) -> Result<Option<i64>, StoreError> {
    let pg = db.backend() == Backend::Postgres;
    // PostgreSQL has no index on due times alone (schema migration 9): per target, from
    // `deliveries_pending_by_target`, one index probe each (`LIMIT 1`, see pending_targets)
    if skip.is_empty() && !pg && targets.is_none() {
        return db.int(
            "SELECT MIN(not_before) FROM deliveries WHERE state = 'pending'",
            &[],
        );
    }
    let scanned;
    let targets = match targets {
        Some(t) => t,
        None => {
            scanned = pending_targets(db)?;
            &scanned
        }
    };
    let mut due: Option<i64> = None;
    for t in targets {
        if skip.contains(t) {
            continue;
        }
        let sql = if pg {
            NEXT_DUE_OF_TARGET_PG
        } else {
            "SELECT MIN(not_before) FROM deliveries WHERE state = 'pending' AND target_address = ?1"
        };
        if let Some(at) = db.int(sql, args![t.as_str()])? {
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    Ok(due)
}

/// PostgreSQL: [`pending_targets`] in one statement.
pub const PENDING_TARGETS_PG: &str = "WITH RECURSIVE t(a) AS (
       (SELECT target_address FROM deliveries WHERE state = 'pending'
        ORDER BY target_address LIMIT 1)
       UNION ALL
       SELECT (SELECT target_address FROM deliveries WHERE state = 'pending' AND target_address > t.a
               ORDER BY target_address LIMIT 1)
       FROM t WHERE t.a IS NOT NULL)
     SELECT a FROM t WHERE a IS NOT NULL";

/// PostgreSQL: when the next delivery for target ?1 is due.
pub const NEXT_DUE_OF_TARGET_PG: &str = "SELECT not_before FROM deliveries
     WHERE state = 'pending' AND target_address = ?1 ORDER BY not_before LIMIT 1";

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

fn view(r: &Row<'_>) -> Result<DeliveryView, StoreError> {
    Ok(DeliveryView {
        id: r.i64(0)?,
        event_id: r.text(1)?,
        event_type: r.text(2)?,
        policy_id: r.i64(3)?,
        target_address: r.text(4)?,
        state: r.text(5)?,
        attempts: r.i64(6)?.max(0) as u32,
        not_before: r.i64(7)?,
        created_at: r.i64(8)?,
        updated_at: r.i64(9)?,
        last_status: r.opt_i64(10)?.and_then(|s| u16::try_from(s).ok()),
        last_error: r.opt_text(11)?,
    })
}

/// The event's id comes from the event log (the delivery holds its `seq`).
const VIEW_COLUMNS: &str = "id, COALESCE((SELECT e.id FROM events e WHERE e.seq = deliveries.event_seq), ''), event_type, policy_id, target_address, state, attempts, not_before, created_at, updated_at, last_status, last_error";

/// Deliveries of a policy, newest first.
pub fn list_for_policy(
    db: &Db<'_>,
    policy_id: i64,
    state: Option<&str>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<DeliveryView>, usize), StoreError> {
    let total = db
        .int(
            "SELECT COUNT(*) FROM deliveries WHERE policy_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)",
            args![policy_id, state],
        )?
        .unwrap_or(0);
    let rows = db.rows(
        &format!(
            "SELECT {VIEW_COLUMNS} FROM deliveries WHERE policy_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)
             ORDER BY id DESC LIMIT ?3 OFFSET ?4"
        ),
        args![policy_id, state, limit as i64, offset as i64],
        view,
    )?;
    Ok((rows, total.max(0) as usize))
}

/// One delivery of a policy.
pub fn get(
    db: &Db<'_>,
    policy_id: i64,
    delivery_id: i64,
) -> Result<Option<DeliveryView>, StoreError> {
    db.row(
        &format!("SELECT {VIEW_COLUMNS} FROM deliveries WHERE policy_id = ?1 AND id = ?2"),
        args![policy_id, delivery_id],
        view,
    )
}

/// Attempts of a delivery, oldest first.
pub fn attempts(db: &Db<'_>, delivery_id: i64) -> Result<Vec<Attempt>, StoreError> {
    db.rows(
        "SELECT id, delivery_id, started_at, duration_ms, status_code, error_kind, error, response_excerpt
         FROM attempts WHERE delivery_id = ?1 ORDER BY id",
        args![delivery_id],
        |r| {
            Ok(Attempt {
                id: r.i64(0)?,
                delivery_id: r.i64(1)?,
                started_at: r.i64(2)?,
                duration_ms: r.i64(3)?,
                status_code: r.opt_i64(4)?.and_then(|s| u16::try_from(s).ok()),
                error_kind: r.opt_text(5)?,
                error: r.opt_text(6)?,
                response_excerpt: r.opt_text(7)?,
            })
        },
    )
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
    /// Its target is no longer part of the policy and its stored version is gone.
    TargetGone,
    /// The policy has no such delivery.
    NotFound,
}

/// The current version of the target at `position` of a policy.
fn current_target(
    db: &Db<'_>,
    policy_id: i64,
    position: i64,
) -> Result<Option<(i64, Target)>, StoreError> {
    let row = db.row(
        "SELECT id, body FROM delivery_targets WHERE policy_id = ?1 AND position = ?2 AND current = 1",
        args![policy_id, position],
        |r| Ok((r.i64(0)?, r.text(1)?)),
    )?;
    Ok(row.and_then(|(id, body)| serde_json::from_str(&body).ok().map(|t| (id, t))))
}

/// Send one delivery again (any state but running): fresh attempts, due now, with the
/// policy's current target at the same position when it still exists — unless that target is
/// disabled; a target no longer in the policy is used as stored while its version exists.
pub fn redeliver(db: &Db<'_>, policy_id: i64, delivery_id: i64) -> Result<Redelivery, StoreError> {
    let row = db.row(
        "SELECT d.target_index, d.state, CASE WHEN EXISTS (SELECT 1 FROM delivery_targets t WHERE t.id = d.target_id) THEN 1 ELSE 0 END
         FROM deliveries d WHERE d.id = ?1 AND d.policy_id = ?2",
        args![delivery_id, policy_id],
        |r| Ok((r.i64(0)?, r.text(1)?, r.opt_i64(2)?.unwrap_or(0) != 0)),
    )?;
    let (idx, own_version) = match row {
        None => return Ok(Redelivery::NotFound),
        Some((_, state, _)) if state == "running" => return Ok(Redelivery::Running),
        Some((idx, _, own)) => (idx, own),
    };
    let now = now_ms();
    match current_target(db, policy_id, idx)? {
        Some((_, t)) if t.disabled => return Ok(Redelivery::TargetDisabled),
        Some((tid, t)) => db.exec(
            "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?2, updated_at = ?2,
               target_id = ?3, target_address = ?4, claim_token = NULL, lease_until = NULL WHERE id = ?1",
            args![delivery_id, now, tid, &t.address],
        )?,
        None if own_version => db.exec(
            "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?2, updated_at = ?2,
               claim_token = NULL, lease_until = NULL WHERE id = ?1",
            args![delivery_id, now],
        )?,
        None => return Ok(Redelivery::TargetGone),
    };
    db.note_deliveries();
    Ok(Redelivery::Queued)
}

/// Redeliver every dead delivery of a policy (not those of a disabled target, nor those whose
/// target is gone); returns how many.
pub fn redeliver_dead(db: &Db<'_>, policy_id: i64) -> Result<u64, StoreError> {
    redeliver_dead_since(db, policy_id, 0)
}

/// [`redeliver_dead`] for the deliveries created at or after `since` (unix ms) only.
pub fn redeliver_dead_since(db: &Db<'_>, policy_id: i64, since: i64) -> Result<u64, StoreError> {
    // set-based: one statement per target position of the policy, not one per delivery
    let versions: Vec<(i64, i64, String)> = db.rows(
        "SELECT position, id, body FROM delivery_targets WHERE policy_id = ?1 AND current = 1 ORDER BY position",
        args![policy_id],
        |r| Ok((r.i64(0)?, r.i64(1)?, r.text(2)?)),
    )?;
    let now = now_ms();
    let mut n = 0;
    let mut positions = 0i64;
    for (pos, tid, body) in versions {
        positions = positions.max(pos + 1);
        let Ok(t) = serde_json::from_str::<Target>(&body) else {
            continue;
        };
        if t.disabled {
            continue;
        }
        n += db.exec(
            "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?3, updated_at = ?3,
               target_id = ?4, target_address = ?5
             WHERE policy_id = ?1 AND target_index = ?2 AND state = 'dead' AND created_at >= ?6",
            args![policy_id, pos, now, tid, &t.address, since],
        )?;
    }
    // deliveries whose target position is gone from the policy keep their own target, while
    // its version is stored
    n += db.exec(
        "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?3, updated_at = ?3
         WHERE policy_id = ?1 AND target_index >= ?2 AND state = 'dead' AND created_at >= ?4
           AND target_id IN (SELECT id FROM delivery_targets)",
        args![policy_id, positions, now, since],
    )?;
    if n > 0 {
        db.note_deliveries();
    }
    Ok(n)
}

/// Counts by state (queue depth, dead) for metrics. The final states are read from the
/// counters the database keeps as deliveries reach or leave them (schema migrations 10 and
/// 12), a few rows whatever the history; the open ones are counted through their partial
/// indexes (`deliveries_pending_by_target`, `deliveries_lease`), a cost that follows the
/// queue. Public for the plan test.
pub const COUNTS_SQL: &str = "SELECT 'pending', COUNT(*) FROM deliveries WHERE state = 'pending'
     UNION ALL SELECT 'running', COUNT(*) FROM deliveries WHERE state = 'running'
     UNION ALL SELECT state, CAST(SUM(n) AS BIGINT) FROM delivery_counts GROUP BY state";

/// See [`COUNTS_SQL`].
pub fn counts(db: &Db<'_>) -> Result<Vec<(String, u64)>, StoreError> {
    let mut counts = super::grouped_counts(db, COUNTS_SQL)?;
    counts.sort();
    Ok(counts)
}

/// Count the deliveries in final states afresh: the counters' rows become one per state, in
/// shard 0. On PostgreSQL the counters see updates and deletes, not inserts (wharf creates
/// deliveries pending or running); `wharf store copy`, which inserts finished ones, calls this.
pub fn recount(db: &Db<'_>) -> Result<(), StoreError> {
    db.exec("DELETE FROM delivery_counts", &[])?;
    db.exec(
        "INSERT INTO delivery_counts (state, shard, n)
         SELECT s.state, 0, (SELECT COUNT(*) FROM deliveries d WHERE d.state = s.state)
         FROM (SELECT 'succeeded' AS state UNION ALL SELECT 'dead') s",
        &[],
    )?;
    Ok(())
}

/// PostgreSQL: fold the counter rows of server processes that have ended into shard 0 (each
/// process adds to rows of its own; see schema migration 10). Returns how many rows went.
pub fn fold_counts(db: &Db<'_>) -> Result<u64, StoreError> {
    if db.backend() != Backend::Postgres {
        return Ok(0);
    }
    let gone = db.int(
        "WITH gone AS (
           DELETE FROM delivery_counts
           WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
           RETURNING state, n),
         folded AS (
           INSERT INTO delivery_counts AS c (state, shard, n)
           SELECT state, 0, SUM(n) FROM gone GROUP BY state ORDER BY state
           ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n
           RETURNING 1)
         SELECT COUNT(*) FROM gone",
        &[],
    )?;
    Ok(gone.unwrap_or(0).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::policy::{Filters, Policy};
    use crate::events::EventKind;

    /// Claims run after every attempt: their statements must stay compiled on SQLite. (Without
    /// the query planner stability guarantee, SQLite recompiled both on every claim — a bound
    /// `LIMIT ?3`, an `= ?1` beside a join — 7 % of wharf's CPU while it delivered every pull.)
    #[test]
    fn claims_do_not_recompile_their_statements() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::sqlite::migrate(&conn).unwrap();
        crate::store::sqlite::tune(&conn).unwrap();
        let db = Db::sqlite(&conn);
        let a = "http://a.example/";
        let policy = Policy {
            id: 0,
            project: "prj".into(),
            project_id: 0,
            name: "p".into(),
            description: String::new(),
            enabled: true,
            event_types: vec![EventKind::PushArtifact],
            targets: vec![Target::http(a)],
            filters: Filters::default(),
            creator: "admin".into(),
            created_at: 0,
            updated_at: 0,
        };
        policies::insert(&db, &policy).unwrap();
        let repo = crate::route::Repository::parse("prj/app").unwrap();
        for _ in 0..40 {
            let e = Event::new(EventKind::PushArtifact, &repo, "u");
            crate::store::events::insert(&db, &e, None).unwrap();
        }
        let now = now_ms() + 1;
        for (i, room) in [1usize, 2, 3, 1, 4, 2, 5].into_iter().enumerate() {
            let limits = ClaimLimits {
                limit: 100,
                per_target: room,
                rotate: i,
                ..ClaimLimits::default()
            };
            let lease = Lease {
                token: i as i64,
                until: now + 60_000,
            };
            let got = claim(&db, now + i as i64, &limits, lease).unwrap();
            assert_eq!(got.len(), room);
        }
        for sql in [CLAIM_SQL, LOAD_SQL] {
            let st = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                st.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    /// The statements that write a delivery on every delivered event cannot abort half-way on
    /// SQLite (no constraint check halts with `ABORT`, the triggers' statements included), so
    /// SQLite opens no statement journal for them (see [`sqlite_or_fail`]).
    #[test]
    fn delivery_writes_need_no_statement_journal() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::sqlite::migrate(&conn).unwrap();
        for sql in [INSERT_DELIVERY_SQL_SQLITE, OUTCOME_SQL_SQLITE] {
            let mut st = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            // unbound parameters are NULL: EXPLAIN only compiles
            let mut rows = st.raw_query();
            let mut ops: Vec<(String, i64)> = Vec::new();
            while let Some(r) = rows.next().unwrap() {
                ops.push((r.get(1).unwrap(), r.get(3).unwrap()));
            }
            // the counting triggers make it a statement of several writes
            assert!(ops.iter().any(|(op, _)| op == "Program"), "{sql}");
            // P2 of a halt is the conflict resolution: 2 is ABORT
            let aborts: Vec<_> = ops
                .iter()
                .filter(|(op, p2)| op.starts_with("Halt") && *p2 == 2)
                .collect();
            assert!(aborts.is_empty(), "{sql}: {aborts:?}");
        }
    }
}
