//! Claims, leases and due times: what the dispatcher takes next, and what comes back to it.

use std::collections::HashMap;

use crate::args;
use crate::dispatch::policy::Target;
use crate::events::Event;
use crate::store::db::{Backend, Db, Row, json};
use crate::store::events::event_columns;
use crate::store::{StoreError, now_ms};

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

/// Target addresses that have pending deliveries, in byte order: a loose scan of the index
/// `deliveries_pending_by_target`, one index lookup per address, however long the queues are.
pub fn pending_targets(db: &Db<'_>) -> Result<Vec<String>, StoreError> {
    if db.backend() == Backend::Postgres {
        // the same loose index scan, in one statement. `ORDER BY … LIMIT 1`, not `MIN()`: with
        // statistics that say no delivery is pending (taken before a burst or a redeliver),
        // PostgreSQL computed MIN() by reading every pending entry (2 ms at 5,000), where the
        // LIMIT reads one (pinned by tests/it/store.rs).
        // in the database's collation: put in byte order, as the dispatcher keeps and
        // searches the list
        let mut list = db.rows(PENDING_TARGETS_PG, &[], |r| r.text(0))?;
        list.sort_unstable();
        list.dedup();
        return Ok(list);
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
/// What an attempt needs of the claimed deliveries whose ids are the JSON array ?1. The
/// target is the delivery's version of it; when that version is gone — a fan-out that used a
/// policy as it was just before an edit of its targets, committed after the edit dropped the
/// version no delivery needed yet — the policy's current target at the same position, as a
/// redelivery takes it. (On
/// PostgreSQL, rows passed as JSON are matched with `id = ANY(ARRAY(…))`, which the planner
/// always serves from the primary key: a join with a JSON function made it scan the whole
/// table while it had no statistics yet, 4.5 ms per batch on 5,000 deliveries.)
const LOAD_SQL: &str = concat!(
    "SELECT d.id, d.policy_id,
       COALESCE(t.body, (SELECT cur.body FROM delivery_targets cur WHERE cur.policy_id = d.policy_id
                         AND cur.position = d.target_index AND cur.current = 1), d.target),
       d.attempts, COALESCE(p.id, 0), pol.enabled, ",
    event_columns!("e."),
    " FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq
     LEFT JOIN delivery_targets t ON t.id = d.target_id
     LEFT JOIN projects p ON p.name = e.project
     LEFT JOIN policies pol ON pol.id = d.policy_id
     WHERE d.id IN (SELECT value FROM json_each(?1))"
);

/// PostgreSQL: claim and load (as `CLAIM_SQL` and `LOAD_SQL`) in one statement; rows
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
       RETURNING id, policy_id, target_id, target_index, target, attempts, event_seq)
     SELECT c.id, c.policy_id,
       COALESCE((SELECT t.body FROM delivery_targets t WHERE t.id = c.target_id),
         (SELECT t.body FROM delivery_targets t WHERE t.policy_id = c.policy_id
            AND t.position = c.target_index AND t.current = 1),
         c.target),
       c.attempts, COALESCE((SELECT p.id FROM projects p WHERE p.name = e.project), 0),
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
pub(super) fn dispatcher_planning<T>(
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
            crate::store::events::read(r, 6)?,
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
        if let Some(why) = policy_off(enabled) {
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
        // (a current target taken for a version that is gone may have been disabled since)
        if target.disabled {
            end_claimed(db, id, now, "target disabled")?;
            continue;
        }
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

/// What [`recheck`] found of a claim that waited while policies changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// Still this claim's, its policy on: attempt it.
    Go,
    /// Its policy was switched off or deleted since the claim: ended dead, as [`claim`] ends
    /// such a delivery.
    Ended,
    /// No longer this claim's (ended by a policy's deletion or a target's 410, or taken over):
    /// leave it.
    NotOurs,
}

/// Is the delivery `id`, claimed with `token`, still to be attempted? Asked by the dispatcher
/// of a claim that waited for its target's turn while policies changed.
pub fn recheck(db: &Db<'_>, id: i64, token: i64) -> Result<Recheck, StoreError> {
    let enabled = db.row(
        "SELECT pol.enabled FROM deliveries d LEFT JOIN policies pol ON pol.id = d.policy_id
         WHERE d.id = ?1 AND d.state = 'running' AND d.claim_token = ?2",
        args![id, token],
        |r| r.opt_i64(0),
    )?;
    let Some(enabled) = enabled else {
        return Ok(Recheck::NotOurs);
    };
    Ok(match policy_off(enabled) {
        None => Recheck::Go,
        Some(why) => {
            end_claimed(db, id, now_ms(), why)?;
            Recheck::Ended
        }
    })
}

/// Why a claimed delivery whose policy's `enabled` column reads `enabled` (`None`: no such
/// policy) is not to be attempted, if it is not.
fn policy_off(enabled: Option<i64>) -> Option<&'static str> {
    match enabled {
        Some(1) => None,
        None => Some("policy deleted"),
        Some(_) => Some("policy disabled"),
    }
}

/// A claimed delivery that cannot be attempted ends dead with `why`.
fn end_claimed(db: &Db<'_>, id: i64, now: i64, why: &str) -> Result<(), StoreError> {
    db.exec(
        "UPDATE deliveries SET state = 'dead', last_error = ?3, updated_at = ?2, claim_token = NULL, lease_until = NULL WHERE id = ?1",
        args![id, now, why],
    )?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::policy::Policy;
    use crate::events::EventKind;
    use crate::store::policies;

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
        let policy = Policy::sample("prj", vec![EventKind::PushArtifact], vec![Target::http(a)]);
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
}
