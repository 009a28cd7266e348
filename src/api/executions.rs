//! A policy's deliveries as Harbor's API shows them, with Harbor's list conventions:
//!
//! - `GET …/webhook/policies/{id}/executions`: one execution per delivery (event × target),
//!   newest first; `vendor_type` `SLACK` for Slack targets, `WEBHOOK` otherwise;
//! - `GET …/executions/{eid}/tasks`: its attempts, newest first;
//! - `GET …/webhook/jobs?policy_id=`: Harbor's deprecated jobs view of the same deliveries
//!   (`job_detail` is the payload; `status` filters by a comma-separated list).
//!
//! Times have whole seconds; a time not reached yet is Harbor's zero time.

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{SecondsFormat, TimeZone, Utc};
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::common::{db_error, project_for, rfc3339_ms};
use super::execution::load_delivery;
use super::list::ListParams;
use super::query::{Field, Kind, Record, Scalar, Term, Val};
use super::webhooks::load_policy;
use super::{ApiError, ApiState};
use crate::dispatch::policy::{Policy, TargetKind};
use crate::events::format::{self, RenderCtx};
use crate::store::executions::{
    self, END_TIME_SQL, ExecutionRow, NOTIFY_TYPE_SQL, STATUS_SQL, VENDOR_TYPE_SQL,
};
use crate::store::outbox::{self, DeliveryState};

/// An unset execution or task time, as Harbor writes it.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn secs(ms: i64) -> Value {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) if ms > 0 => json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        _ => json!(ZERO_TIME),
    }
}

/// Harbor's status of an execution (a delivery): the `status` of the executions the API
/// lists, which the UI reads back with [`ExecStatus::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStatus {
    Pending,
    Running,
    Success,
    Error,
}

impl ExecStatus {
    pub const ALL: [ExecStatus; 4] = [
        ExecStatus::Pending,
        ExecStatus::Running,
        ExecStatus::Success,
        ExecStatus::Error,
    ];

    /// Of a delivery's state.
    fn of(state: DeliveryState) -> ExecStatus {
        match state {
            DeliveryState::Succeeded => ExecStatus::Success,
            DeliveryState::Dead => ExecStatus::Error,
            DeliveryState::Running => ExecStatus::Running,
            DeliveryState::Pending => ExecStatus::Pending,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExecStatus::Pending => "Pending",
            ExecStatus::Running => "Running",
            ExecStatus::Success => "Success",
            ExecStatus::Error => "Error",
        }
    }

    /// The status Harbor calls `name`.
    pub fn parse(name: &str) -> Option<ExecStatus> {
        ExecStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Is it final (the execution has an end time)?
    pub fn done(self) -> bool {
        matches!(self, ExecStatus::Success | ExecStatus::Error)
    }
}

const EXECUTION_FIELDS: &[Field] = &[
    Field::sql("id", Kind::Int, "d.id"),
    Field::sql("vendor_type", Kind::Text, VENDOR_TYPE_SQL),
    Field::sql("vendor_id", Kind::Int, "d.policy_id"),
    Field::sql("status", Kind::Text, STATUS_SQL),
    Field::sql("trigger", Kind::Text, "'EVENT'"),
    Field::sql("event_type", Kind::Text, "wharf_event_type(e.type)"),
    Field::sql("start_time", Kind::Time, "d.created_at"),
    Field::sql("end_time", Kind::Time, END_TIME_SQL),
];

const JOB_FIELDS: &[Field] = &[
    Field::sql("id", Kind::Int, "d.id"),
    Field::sql("policy_id", Kind::Int, "d.policy_id"),
    Field::sql("event_type", Kind::Text, "wharf_event_type(e.type)"),
    Field::sql("notify_type", Kind::Text, NOTIFY_TYPE_SQL),
    Field::sql("status", Kind::Text, STATUS_SQL),
    Field::sql("creation_time", Kind::Time, "d.created_at"),
    Field::sql("update_time", Kind::Time, "d.updated_at"),
];

/// The body the delivery sends (what Harbor stores as the job's payload; empty when a
/// `Custom` target's template makes none). `external_url`: when configured.
pub(super) fn payload(row: &ExecutionRow, policy: &Policy, external_url: Option<&str>) -> String {
    rendered(row, policy, external_url)
        .and_then(|p| String::from_utf8(p.body).ok())
        .unwrap_or_default()
}

/// The payload the delivery sends, with its content type (`None`: event or target unreadable,
/// or a template that makes no body). Renders a template: call it off the async threads.
pub(super) fn rendered(
    row: &ExecutionRow,
    policy: &Policy,
    external_url: Option<&str>,
) -> Option<format::Payload> {
    let (Some(event), Some(target)) = (&row.event, &row.target) else {
        return None;
    };
    let ctx = RenderCtx {
        project_id: policy.project_id,
        policy_id: policy.id,
        delivery_id: Some(row.delivery.id),
        external_url: external_url.map(str::to_string),
    };
    target.render(event, &ctx).ok()
}

fn is_slack(row: &ExecutionRow) -> bool {
    row.target
        .as_ref()
        .is_some_and(|t| t.kind == TargetKind::Slack)
}

pub(super) fn execution_view(
    row: &ExecutionRow,
    policy: &Policy,
    max_retry: u32,
    external_url: Option<&str>,
) -> Value {
    let d = &row.delivery;
    let status = ExecStatus::of(d.state);
    let message = match status {
        ExecStatus::Pending if d.attempts > 0 => format!(
            "retry {} of {max_retry} due at {}; last error: {}",
            d.attempts,
            secs(d.not_before).as_str().unwrap_or(""),
            d.last_error.as_deref().unwrap_or("")
        ),
        ExecStatus::Error => d.last_error.clone().unwrap_or_default(),
        _ => String::new(),
    };
    let (ok, failed, pending, running) = match status {
        ExecStatus::Success => (1, 0, 0, 0),
        ExecStatus::Error => (0, 1, 0, 0),
        ExecStatus::Running => (0, 0, 0, 1),
        ExecStatus::Pending => (0, 0, 1, 0),
    };
    json!({
        "id": d.id,
        "vendor_type": if is_slack(row) { "SLACK" } else { "WEBHOOK" },
        "vendor_id": d.policy_id,
        "status": status.name(),
        "status_message": message,
        "trigger": "EVENT",
        "extra_attrs": {
            "event_type": d.event_type,
            "payload": payload(row, policy, external_url),
            "event_id": d.event_id,
            "target_address": d.target_address,
            "state": d.state,
            "attempts": d.attempts,
            "last_status_code": d.last_status,
            "next_attempt_time": if status == ExecStatus::Pending { secs(d.not_before) } else { Value::Null },
        },
        "metrics": {
            "task_count": 1,
            "success_task_count": ok,
            "error_task_count": failed,
            "pending_task_count": pending,
            "running_task_count": running,
            "scheduled_task_count": 0,
            "stopped_task_count": 0,
        },
        "start_time": secs(d.created_at),
        "end_time": if status.done() { secs(d.updated_at) } else { json!(ZERO_TIME) },
    })
}

fn job_view(row: &ExecutionRow, policy: &Policy, external_url: Option<&str>) -> Value {
    let d = &row.delivery;
    json!({
        "id": d.id,
        "policy_id": d.policy_id,
        "event_type": d.event_type,
        "notify_type": if is_slack(row) { "slack" } else { "http" },
        "status": ExecStatus::of(d.state).name(),
        "job_detail": payload(row, policy, external_url),
        "creation_time": rfc3339_ms(d.created_at),
        "update_time": rfc3339_ms(d.updated_at),
    })
}

/// Harbor statuses (or wharf's states) of a `status` parameter as a `q` term on `status`.
fn status_term(csv: &str) -> Result<Term, ApiError> {
    let mut items = Vec::new();
    for s in csv.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let status = match s {
            "Success" | "succeeded" => ExecStatus::Success,
            "Error" | "dead" => ExecStatus::Error,
            "Pending" | "pending" => ExecStatus::Pending,
            "Running" | "running" => ExecStatus::Running,
            // Harbor's, never produced by wharf: they match nothing
            "Stopped" | "Scheduled" => continue,
            other => {
                return Err(ApiError::bad_request(format!(
                    "status: unknown status {other:?}"
                )));
            }
        };
        items.push(Scalar::Text(status.name().into()));
    }
    Ok(Term::AnyOf(items))
}

/// Read a page of `policy`'s deliveries by `params` on `fields`.
async fn page(
    app: &crate::app::App,
    policy: &Policy,
    params: &ListParams,
    fields: &'static [Field],
) -> Result<(Vec<ExecutionRow>, u64), ApiError> {
    let mut query = params.query.clone();
    if let Some(csv) = params.param("status") {
        query.set("status", Some(status_term(csv)?));
    }
    let (filter, args) = query.sql_where(fields, 2);
    let order = params.sort.sql_order(fields);
    let window = params.sql_window();
    let id = policy.id;
    app.store
        .read(move |c| {
            let values: Vec<_> = args.iter().map(|a| a.value()).collect();
            executions::list(c, id, &filter, &values, order.as_deref(), window)
        })
        .await
        .map_err(db_error)
}

/// `GET …/policies/{id}/executions`
pub async fn executions(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = ListParams::from_uri(&uri)?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let policy = load_policy(&app.store, &project, id).await?;
    let (rows, total) = page(&app, &policy, &params, EXECUTION_FIELDS).await?;
    let max_retry = app.config.notification.webhook_job_max_retry;
    let links = app.config.external_url.clone();
    // the payloads of Custom targets are rendered here: on a blocking thread
    let body: Vec<Value> = tokio::task::spawn_blocking(move || {
        rows.iter()
            .map(|r| execution_view(r, &policy, max_retry, links.as_deref()))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal("rendering executions", e))?;
    Ok(params.respond(&body, total))
}

/// `GET …/webhook/jobs?policy_id=` (Harbor's deprecated view).
pub async fn jobs(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = ListParams::from_uri(&uri)?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let policy_id = match params.param("policy_id") {
        None => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                "validation failure list:\npolicy_id in query is required",
            ));
        }
        Some(v) => v.parse::<i64>().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                format!(
                    "validation failure list:\npolicy_id in query must be of type int64: {v:?}"
                ),
            )
        })?,
    };
    let policy = load_policy(&app.store, &project, policy_id).await?;
    let (rows, total) = page(&app, &policy, &params, JOB_FIELDS).await?;
    let links = app.config.external_url.clone();
    let body: Vec<Value> = tokio::task::spawn_blocking(move || {
        rows.iter()
            .map(|r| job_view(r, &policy, links.as_deref()))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal("rendering jobs", e))?;
    Ok(params.respond(&body, total))
}

/// One attempt as a task, for `q` and `sort`.
pub(super) struct TaskRecord {
    pub(super) attempt: outbox::Attempt,
    pub(super) run_count: usize,
}

impl TaskRecord {
    fn status(&self) -> &'static str {
        if self.attempt.error_kind.is_none() {
            "Success"
        } else {
            "Error"
        }
    }
}

impl Record for TaskRecord {
    fn field(&self, key: &str) -> Option<Val> {
        let a = &self.attempt;
        Some(match key {
            "id" => Val::Int(a.id),
            "execution_id" => Val::Int(a.delivery_id),
            "status" => Val::Text(self.status().into()),
            "status_message" => Val::Text(a.error.clone().unwrap_or_default()),
            "run_count" => Val::Int(self.run_count as i64),
            "creation_time" | "start_time" => Val::Time(a.started_at),
            "update_time" | "end_time" => Val::Time(a.started_at + a.duration_ms),
            _ => return None,
        })
    }
}

const TASK_FIELDS: &[Field] = &[
    Field::new("id", Kind::Int),
    Field::new("execution_id", Kind::Int),
    Field::new("status", Kind::Text),
    Field::new("status_message", Kind::Text),
    Field::new("run_count", Kind::Int),
    Field::new("creation_time", Kind::Time),
    Field::new("start_time", Kind::Time),
    Field::new("update_time", Kind::Time),
    Field::new("end_time", Kind::Time),
];

pub(super) fn task_view(t: &TaskRecord) -> Value {
    let a = &t.attempt;
    json!({
        "id": a.id,
        "execution_id": a.delivery_id,
        "status": t.status(),
        "status_message": a.error.clone().unwrap_or_default(),
        "run_count": t.run_count,
        "extra_attrs": {
            "status_code": a.status_code,
            "duration_ms": a.duration_ms,
            "error_kind": a.error_kind,
            "response_excerpt": a.response_excerpt,
        },
        "creation_time": secs(a.started_at),
        "start_time": secs(a.started_at),
        "update_time": secs(a.started_at + a.duration_ms),
        "end_time": secs(a.started_at + a.duration_ms),
    })
}

/// `GET …/executions/{eid}/tasks`: the attempts of a delivery, newest first.
pub async fn tasks(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid)): Path<(String, i64, i64)>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = ListParams::from_uri(&uri)?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    load_delivery(&app.store, &project, id, eid).await?;
    let attempts = app
        .store
        .read(move |c| outbox::attempts(c, eid))
        .await
        .map_err(db_error)?;
    let mut records: Vec<TaskRecord> = attempts
        .into_iter()
        .enumerate()
        .map(|(i, attempt)| TaskRecord {
            attempt,
            run_count: i + 1,
        })
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse((r.attempt.started_at, r.attempt.id)));
    let (page, total) = params.apply(records, TASK_FIELDS);
    let body: Vec<Value> = page.iter().map(task_view).collect();
    Ok(params.respond(&body, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statuses the API lists are Harbor's names, one per status, and read back (the UI's
    /// filter and its Redeliver button go by them); only Success and Error are final.
    #[test]
    fn execution_statuses_are_named_once() {
        for s in ExecStatus::ALL {
            assert_eq!(ExecStatus::parse(s.name()), Some(s));
        }
        assert_eq!(ExecStatus::parse("running"), None);
        let done: Vec<_> = ExecStatus::ALL.into_iter().filter(|s| s.done()).collect();
        assert_eq!(done, [ExecStatus::Success, ExecStatus::Error]);
        for state in DeliveryState::ALL {
            let is_final = matches!(state, DeliveryState::Succeeded | DeliveryState::Dead);
            assert_eq!(ExecStatus::of(state).done(), is_final, "{state:?}");
        }
    }
}
