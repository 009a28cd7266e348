//! Sending deliveries again: one, or every dead one of a policy.

use super::DeliveryState;
use crate::args;
use crate::dispatch::policy::Target;
use crate::store::db::Db;
use crate::store::{StoreError, now_ms};

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
        |r| {
            let running = DeliveryState::parse(&r.text(1)?) == Some(DeliveryState::Running);
            Ok((r.i64(0)?, running, r.opt_i64(2)?.unwrap_or(0) != 0))
        },
    )?;
    let (idx, own_version) = match row {
        None => return Ok(Redelivery::NotFound),
        Some((_, true, _)) => return Ok(Redelivery::Running),
        Some((idx, _, own)) => (idx, own),
    };
    let now = now_ms();
    // (`state <> 'running'` again in the update: a dispatcher may have claimed the delivery
    // since it was read — on PostgreSQL the update waits for that claim's commit and then
    // leaves it alone — or the pruner removed it)
    let changed = match current_target(db, policy_id, idx)? {
        Some((_, t)) if t.disabled => return Ok(Redelivery::TargetDisabled),
        Some((tid, t)) => db.exec(
            "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?2, updated_at = ?2,
               target_id = ?3, target_address = ?4, claim_token = NULL, lease_until = NULL
             WHERE id = ?1 AND state <> 'running'",
            args![delivery_id, now, tid, &t.address],
        )?,
        None if own_version => db.exec(
            "UPDATE deliveries SET state = 'pending', attempts = 0, not_before = ?2, updated_at = ?2,
               claim_token = NULL, lease_until = NULL WHERE id = ?1 AND state <> 'running'",
            args![delivery_id, now],
        )?,
        None => return Ok(Redelivery::TargetGone),
    };
    if changed == 0 {
        let exists = db
            .int("SELECT 1 FROM deliveries WHERE id = ?1", args![delivery_id])?
            .is_some();
        return Ok(if exists {
            Redelivery::Running
        } else {
            Redelivery::NotFound
        });
    }
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
