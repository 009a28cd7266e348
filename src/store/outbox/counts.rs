//! Deliveries by state, for `/metrics`: a cost that follows the queue, not the history.

use super::DeliveryState;
use crate::store::StoreError;
use crate::store::db::{Backend, Db};

/// Counts by state (queue depth, dead) for metrics. The final states are read from the
/// counters the database keeps as deliveries reach or leave them (schema migrations 10 and
/// 12), a few rows whatever the history; the open ones are counted through their partial
/// indexes (`deliveries_pending_by_target`, `deliveries_lease`), a cost that follows the
/// queue. Public for the plan test.
pub const COUNTS_SQL: &str = "SELECT 'pending', COUNT(*) FROM deliveries WHERE state = 'pending'
     UNION ALL SELECT 'running', COUNT(*) FROM deliveries WHERE state = 'running'
     UNION ALL SELECT state, CAST(SUM(n) AS BIGINT) FROM delivery_counts GROUP BY state";

/// See [`COUNTS_SQL`]: every state, with 0 for those that have no delivery.
pub fn counts(db: &Db<'_>) -> Result<Vec<(DeliveryState, u64)>, StoreError> {
    let rows = crate::store::grouped_counts(db, COUNTS_SQL)?;
    Ok(DeliveryState::ALL
        .into_iter()
        .map(|state| {
            let n = rows
                .iter()
                .filter(|(name, _)| name == state.as_str())
                .map(|(_, n)| n)
                .sum();
            (state, n)
        })
        .collect())
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
