//! Deliveries and their attempts as the API and UI list them.

use serde::Serialize;

use super::{Attempt, DeliveryState, FailureKind};
use crate::args;
use crate::store::StoreError;
use crate::store::db::{Db, Row};

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub policy_id: i64,
    pub target_address: String,
    pub state: DeliveryState,
    pub attempts: u32,
    /// unix ms
    pub not_before: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// A delivery from a row whose first twelve columns are [`VIEW_COLUMNS`]' (also the
/// executions list's, `store::executions`).
pub(in crate::store) fn view(r: &Row<'_>) -> Result<DeliveryView, StoreError> {
    Ok(DeliveryView {
        id: r.i64(0)?,
        event_id: r.opt_uuid(1)?.map(|u| u.to_string()).unwrap_or_default(),
        event_type: r.text(2)?,
        policy_id: r.i64(3)?,
        target_address: r.text(4)?,
        state: {
            let name = r.text(5)?;
            DeliveryState::parse(&name).ok_or(StoreError::NotDeliveryState {
                column: 5,
                value: name,
            })?
        },
        attempts: r.i64(6)?.max(0) as u32,
        not_before: r.i64(7)?,
        created_at: r.i64(8)?,
        updated_at: r.i64(9)?,
        last_status: r.opt_i64(10)?.and_then(|s| u16::try_from(s).ok()),
        last_error: r.opt_text(11)?,
    })
}

/// The event's id and type come from the event log (the delivery holds its `seq`); `""` when
/// the event is gone. Read from [`VIEW_FROM`].
const VIEW_COLUMNS: &str = "d.id, e.id AS event_id, COALESCE(wharf_event_type(e.type), '') AS event_type, d.policy_id, d.target_address, d.state, d.attempts, d.not_before, d.created_at, d.updated_at, d.last_status, d.last_error";

/// The tables [`VIEW_COLUMNS`] reads: a delivery `d` and its event `e`.
const VIEW_FROM: &str = "deliveries d LEFT JOIN events e ON e.seq = d.event_seq";

/// Deliveries of a policy, newest first.
pub fn list_for_policy(
    db: &Db<'_>,
    policy_id: i64,
    state: Option<DeliveryState>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<DeliveryView>, usize), StoreError> {
    let state = state.map(DeliveryState::as_str);
    let total = db
        .int(
            "SELECT COUNT(*) FROM deliveries WHERE policy_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)",
            args![policy_id, state],
        )?
        .unwrap_or(0);
    let rows = db.rows(
        &format!(
            "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE d.policy_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR d.state = ?2)
             ORDER BY d.id DESC LIMIT ?3 OFFSET ?4"
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
        &format!("SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE d.policy_id = ?1 AND d.id = ?2"),
        args![policy_id, delivery_id],
        view,
    )
}

/// Attempts of a delivery, oldest first: the one its row keeps (its first successful attempt,
/// see [`record`](super::record)) among those of `attempts`, by start time. An attempt's `id`
/// is its task id: its place in that order, from 1 (a later attempt starts later, so the ids
/// of earlier ones stay).
pub fn attempts(db: &Db<'_>, delivery_id: i64) -> Result<Vec<Attempt>, StoreError> {
    let read = |r: &Row<'_>| {
        Ok(Attempt {
            id: 0,
            delivery_id,
            started_at: r.i64(0)?,
            duration_ms: r.i64(1)?,
            status_code: r.opt_i64(2)?.and_then(|s| u16::try_from(s).ok()),
            // a name this wharf does not know (a newer one wrote it) reads as none; the
            // error text beside it stays
            error_kind: r.opt_text(3)?.as_deref().and_then(FailureKind::parse),
            error: r.opt_text(4)?,
            response_excerpt: r.opt_text(5)?,
        })
    };
    let kept = db.row(
        "SELECT first_started_at, COALESCE(first_duration_ms, 0), first_status,
           CAST(NULL AS TEXT), CAST(NULL AS TEXT), first_excerpt
         FROM deliveries WHERE id = ?1 AND first_started_at IS NOT NULL",
        args![delivery_id],
        read,
    )?;
    let rows = db.rows(
        "SELECT started_at, duration_ms, status_code, error_kind, error, response_excerpt
         FROM attempts WHERE delivery_id = ?1 ORDER BY id",
        args![delivery_id],
        read,
    )?;
    let mut all: Vec<Attempt> = kept.into_iter().chain(rows).collect();
    // stable: rows in the order they were recorded, the kept attempt first on a tie
    all.sort_by_key(|a| a.started_at);
    for (i, a) in all.iter_mut().enumerate() {
        a.id = i as i64 + 1;
    }
    Ok(all)
}
