//! Executions: a policy's deliveries as Harbor's webhook API lists them (executions, and the
//! deprecated jobs view), filtered, ordered and paged in SQL, with what rendering the payload
//! needs (the event and the target version the delivery used).

use super::StoreError;
use super::db::{Db, Value};
use super::outbox::DeliveryView;
use crate::dispatch::policy::Target;
use crate::events::Event;

/// A delivery with its target and event.
#[derive(Debug, Clone)]
pub struct ExecutionRow {
    pub delivery: DeliveryView,
    /// The target version the delivery uses (`None`: its version is gone).
    pub target: Option<Target>,
    /// The event (`None`: unreadable).
    pub event: Option<Event>,
}

/// The SQL expression of a delivery's target kind as Harbor's `vendor_type`. A stored target
/// is JSON whose first key is `type` (the field order of [`Target`]).
pub const VENDOR_TYPE_SQL: &str =
    "(CASE WHEN t.body LIKE '{\"type\":\"slack\"%' THEN 'SLACK' ELSE 'WEBHOOK' END)";
/// Harbor's `notify_type` of the same.
pub const NOTIFY_TYPE_SQL: &str =
    "(CASE WHEN t.body LIKE '{\"type\":\"slack\"%' THEN 'slack' ELSE 'http' END)";
/// The delivery state as Harbor's execution status.
pub const STATUS_SQL: &str = "(CASE d.state WHEN 'succeeded' THEN 'Success' WHEN 'dead' THEN 'Error' WHEN 'running' THEN 'Running' ELSE 'Pending' END)";
/// When a delivery ended (0 while it has not).
pub const END_TIME_SQL: &str =
    "(CASE WHEN d.state IN ('succeeded', 'dead') THEN d.updated_at ELSE 0 END)";

/// A filtered, ordered page of policy `policy_id`'s deliveries: `filter` is `AND …` conditions
/// on the columns above and `d.*` (parameters from `?2`), `order` an `ORDER BY` list (default:
/// newest first). Returns the page and the number of matches.
pub fn list(
    db: &Db<'_>,
    policy_id: i64,
    filter: &str,
    args: &[Value<'_>],
    order: Option<&str>,
    (offset, limit): (i64, i64),
) -> Result<(Vec<ExecutionRow>, u64), StoreError> {
    let mut all: Vec<Value<'_>> = vec![Value::Int(policy_id)];
    all.extend_from_slice(args);
    let from = "FROM deliveries d LEFT JOIN delivery_targets t ON t.id = d.target_id
                LEFT JOIN events e ON e.seq = d.event_seq WHERE d.policy_id = ?1";
    let total = db
        .int(&format!("SELECT COUNT(*) {from}{filter}"), &all)?
        .unwrap_or(0)
        .max(0) as u64;
    let n = all.len();
    all.push(Value::Int(limit));
    all.push(Value::Int(offset));
    let order = order.unwrap_or("d.created_at DESC, d.id DESC");
    let sql = format!(
        "SELECT d.id, e.id AS event_id, COALESCE(wharf_event_type(e.type), '') AS event_type, d.policy_id, d.target_address, d.state, d.attempts,
                d.not_before, d.created_at, d.updated_at, d.last_status, d.last_error, t.body,
                {} {from}{filter} ORDER BY {order}, d.id DESC LIMIT ?{} OFFSET ?{}",
        super::events::event_columns!("e."),
        n + 1,
        n + 2
    );
    let rows = db.rows(&sql, &all, |r| {
        Ok(ExecutionRow {
            delivery: super::outbox::view(r)?,
            target: r.opt_text(12)?.and_then(|b| serde_json::from_str(&b).ok()),
            event: super::events::read(r, 13)?,
        })
    })?;
    Ok((rows, total))
}
