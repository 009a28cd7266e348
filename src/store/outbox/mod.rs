//! Outbox: deliveries (event × matching enabled target) and their attempts.
//!
//! A published event's deliveries are created in the transaction that publishes it, so an
//! event in the log is never without its deliveries. Delivery states:
//! `pending` (due at `not_before`) → `running` (claimed by the dispatcher) → `succeeded`, back
//! to `pending` (a retry), or `dead` (retries exhausted, target gone; redeliverable). A delivery
//! the dispatcher can attempt at once is created `running`, already claimed ([`Intake`]).
//! `running` rows left by a killed process are put back to `pending` at start-up (SQLite) or
//! when their lease expires (PostgreSQL).
//!
//! - this module: creating a published event's deliveries ([`fanout`]);
//! - `claim`: claims, leases and due times — what the dispatcher takes next;
//! - `outcome`: attempts and what becomes of a delivery after one;
//! - `view`: deliveries and attempts as the API and UI list them;
//! - `redeliver`: sending deliveries again;
//! - `counts`: deliveries by state, for `/metrics`.

mod claim;
mod counts;
mod outcome;
mod redeliver;
mod view;

pub use claim::*;
pub use counts::*;
pub use outcome::*;
pub use redeliver::*;
pub use view::*;

use std::borrow::Cow;

use super::db::{Backend, Carried, Db, LaterId, Value};
use super::{StoreError, now_ms, policies};
use crate::args;
use crate::events::Event;

/// Where a delivery is: its `state` column (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Due at `not_before`.
    Pending,
    /// Claimed: an attempt is under way (or its replica died and the lease will tell).
    Running,
    /// An attempt succeeded.
    Succeeded,
    /// Retries exhausted, or the target is gone; redeliverable.
    Dead,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Running,
        DeliveryState::Succeeded,
        DeliveryState::Dead,
    ];

    /// The name in the database, the API and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Running => "running",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Dead => "dead",
        }
    }

    /// Of its name ([`as_str`](Self::as_str)).
    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

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
    /// The policy cache's generation before the fan-out read its policies (0 without a
    /// cache): a change since then has the claim rechecked before its attempt.
    pub policies: u64,
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
        " deliveries (event_seq, policy_id, target_index, target_address, target, target_id, state, not_before, created_at, updated_at, claim_token, lease_until)
     VALUES ((SELECT seq FROM events WHERE id = ?1), ?2, ?3, ?4, '', ?5, ?7, ?6, ?6, ?6, ?8, ?9)"
    };
}

/// A delivery of policy ?2's target ?3 (address ?4, stored version ?5) at time ?6, in state
/// ?7: `pending`, or `running` under claim ?8 until ?9, created already claimed (see
/// [`Intake`]; its id: [`Db::insert_id_later`]). The event is named by its id ?1 and stored
/// as its `seq`; its type and project are read from the event (schema 19).
const INSERT_DELIVERY_SQL: &str = concat!("INSERT INTO", insert_delivery!());

/// [`INSERT_EVENT_AND_DELIVERY_SQL_PG`], after `$lead` (`WITH `, and any query of its own
/// before the event's), the delivery's event `seq` read `FROM $from`.
macro_rules! event_and_delivery_pg {
    ($lead:expr, $from:expr) => {
        concat!(
            $lead,
            "e AS (",
            super::events::insert_event!(),
            " RETURNING seq) INSERT INTO deliveries (event_seq, policy_id, target_index, target_address, target, target_id, state, not_before, created_at, updated_at, claim_token, lease_until)
     VALUES ((SELECT seq FROM ",
            $from,
            "), ?11, ?12, ?13, '', ?14, ?16, ?15, ?15, ?15, ?17, ?18)"
        )
    };
}

/// PostgreSQL: an event's insert ([`INSERT_EVENT_SQL`](super::events::INSERT_EVENT_SQL), its
/// arguments ?1–?10) and its first delivery's ([`INSERT_DELIVERY_SQL`]'s arguments but the
/// event's id, as ?11–?18) in one statement: one statement less per published event with a
/// delivery (each statement costs the server a Bind/Execute/Sync and an answer of its own).
/// The delivery takes the `seq` the event's insert returns.
const INSERT_EVENT_AND_DELIVERY_SQL_PG: &str = event_and_delivery_pg!("WITH ", "e");

/// Arguments of [`INSERT_EVENT_AND_DELIVERY_SQL_PG`].
const EVENT_AND_DELIVERY_ARGS: usize = 18;

/// Arguments of [`INSERT_EVENT_SQL`](super::events::INSERT_EVENT_SQL).
const EVENT_ARGS: usize = 10;

/// PostgreSQL: the event's statement (with its first delivery, or alone) that also runs the
/// call the job carried ([`Db::carry`]; a push's learning), as a query of its `WITH` clause
/// that the statement reads (a `SELECT` in `WITH` runs only when read): one statement instead
/// of two. The call's arguments follow the statement's own.
fn carrying(call: &Carried, with_delivery: bool) -> String {
    if with_delivery {
        format!(
            event_and_delivery_pg!("WITH l AS (SELECT {call}), ", "e, l"),
            call = call.call_from(EVENT_AND_DELIVERY_ARGS + 1)
        )
    } else {
        format!(
            concat!(
                "WITH l AS (SELECT {call}), e AS (",
                super::events::insert_event!(),
                ") SELECT 1 FROM l"
            ),
            call = call.call_from(EVENT_ARGS + 1)
        )
    }
}

/// SQLite: [`INSERT_DELIVERY_SQL`] as `INSERT OR FAIL` (see [`sqlite_or_fail`]).
const INSERT_DELIVERY_SQL_SQLITE: &str = concat!("INSERT OR FAIL INTO", insert_delivery!());

/// SQLite's conflict clause `OR FAIL` on the statements that write a delivery, which the
/// counting triggers on `deliveries` (schema 12) make statements of several writes: with the
/// default `OR ABORT`, SQLite opens a statement journal for each of them (a savepoint inside the
/// transaction, every page the statement touches copied to it first: ~3 % of a delivered
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
///
/// `unsent`: the arguments of the event's own insert when the caller has not sent it
/// (PostgreSQL): it goes with the first delivery's (`INSERT_EVENT_AND_DELIVERY_SQL_PG`), or
/// alone at the end when the event has no delivery.
pub fn fanout(
    db: &Db<'_>,
    event: &Event,
    mut unsent: Option<&[Value<'_>]>,
) -> Result<usize, StoreError> {
    let created = fanout_sending(db, event, &mut unsent)?;
    if let Some(args) = unsent {
        match db.take_carried() {
            Some(call) => {
                let args: Vec<Value<'_>> = args.iter().copied().chain(call.values()).collect();
                db.exec_later(&carrying(&call, false), &args)?;
            }
            None => db.exec_later(super::events::INSERT_EVENT_SQL, args)?,
        }
    }
    Ok(created)
}

fn fanout_sending(
    db: &Db<'_>,
    event: &Event,
    unsent: &mut Option<&[Value<'_>]>,
) -> Result<usize, StoreError> {
    let generation = db.cache().map_or(0, |c| c.loading());
    if !policies::notification_enabled_cached(db)? {
        return Ok(0);
    }
    let now = now_ms();
    let mut created = 0;
    let insert = sqlite_or_fail(db, INSERT_DELIVERY_SQL_SQLITE, INSERT_DELIVERY_SQL);
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
                Some(a) => (DeliveryState::Running, Some(a.lease)),
                None => (DeliveryState::Pending, None),
            };
            let args = args![
                &event.id,
                p.id,
                i as i64,
                &t.address,
                target_id,
                now,
                state.as_str(),
                lease.map(|l| l.token),
                lease.map(|l| l.until)
            ];
            // with the event's insert, when it is still to be sent (and the call the job
            // carried, if any)
            let with_event: Vec<Value<'_>>;
            let carried: Option<Carried>;
            let (insert, args) = match unsent.take() {
                Some(event_args) => {
                    carried = db.take_carried();
                    let call = carried.iter().flat_map(Carried::values);
                    with_event = event_args
                        .iter()
                        .chain(&args[1..])
                        .copied()
                        .chain(call)
                        .collect();
                    let sql = match &carried {
                        Some(call) => Cow::Owned(carrying(call, true)),
                        None => Cow::Borrowed(INSERT_EVENT_AND_DELIVERY_SQL_PG),
                    };
                    (sql, with_event.as_slice())
                }
                None => (Cow::Borrowed(insert), args),
            };
            let insert = insert.as_ref();
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
                        policies: generation,
                    });
                }
                None => {
                    db.exec_later(insert, args)?;
                    db.note_deliveries_to(&t.address);
                }
            }
            created += 1;
        }
        db.note_trigger(p.id, event.kind, now);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::outcome::OUTCOME_SQL_SQLITE;
    use super::*;

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

    /// A state's name in the database is its name in the API's JSON, and reads back as itself;
    /// a name that is none of them is no state.
    #[test]
    fn delivery_states_are_named_once() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::json!(state), serde_json::json!(state.as_str()));
        }
        assert_eq!(DeliveryState::parse("Running"), None);
        assert_eq!(DeliveryState::parse(""), None);
    }

    /// An attempt's failure kind is stored and shown (API `error_kind`) by its name: each
    /// name is one kind's, and reads back as it.
    #[test]
    fn failure_kinds_are_named_once() {
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::parse(kind.name()), Some(kind));
            assert_eq!(serde_json::json!(kind), serde_json::json!(kind.name()));
        }
        assert_eq!(FailureKind::parse("Timeout"), None);
    }
}
