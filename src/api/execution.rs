//! One execution and what it sent, and the test of a stored policy (wharf's additions to
//! Harbor's webhook API; the admin UI uses them, and so can anyone):
//!
//! - `GET …/policies/{id}/executions/{eid}`: one execution, as the list shows it;
//! - `GET …/policies/{id}/executions/{eid}/payload`: the body the delivery sends, with its
//!   `Content-Type`;
//! - `GET …/policies/{id}/executions/{eid}/tasks/{tid}`: one attempt with the request sent
//!   (method, URL, headers — `Authorization` and `webhook-signature` only as `set` — and body)
//!   and the response (status, duration, error, body excerpt);
//! - `GET …/policies/{id}/executions/{eid}/tasks/{tid}/log`: one attempt as text;
//! - `POST …/policies/{id}/test` (optional body `{"event_type": "<type>"}`, default
//!   `PUSH_ARTIFACT`): a test notification to each enabled target of the stored policy, with
//!   its stored auth header and secret (which a client never gets back to send itself).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};

use super::common::{db_error, event_kind, project_for, rfc3339_ms};
use super::executions::{TaskRecord, execution_view, rendered, task_view};
use super::webhooks::{load_policy, send_test};
use super::{ApiError, ApiState};
use crate::dispatch::client::FailureKind;
use crate::dispatch::policy::Policy;
use crate::events::EventKind;
use crate::store::db::Value as SqlValue;
use crate::store::executions::{self, ExecutionRow};
use crate::store::{Store, outbox};

/// What a hidden header value reads as.
pub const SET: &str = "set";

async fn load_row(store: &Store, policy: &Policy, eid: i64) -> Result<ExecutionRow, ApiError> {
    let id = policy.id;
    let (rows, _) = store
        .read(move |c| {
            executions::list(c, id, " AND d.id = ?2", &[SqlValue::Int(eid)], None, (0, 1))
        })
        .await
        .map_err(db_error)?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("execution {eid} not found")))
}

/// The payload of `row` (rendered on a blocking thread: a Custom target runs a template).
async fn render_off_thread(
    links: Option<String>,
    row: ExecutionRow,
    policy: Policy,
) -> Result<Option<crate::events::format::Payload>, ApiError> {
    tokio::task::spawn_blocking(move || rendered(&row, &policy, links.as_deref()))
        .await
        .map_err(|e| ApiError::internal("rendering the payload", e))
}

/// `GET …/policies/{id}/executions/{eid}`
pub async fn get(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid)): Path<(String, i64, i64)>,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let policy = load_policy(&app.store, &project, id).await?;
    let row = load_row(&app.store, &policy, eid).await?;
    let max_retry = app.config.notification.webhook_job_max_retry;
    let links = app.config.external_url.clone();
    // a Custom target's payload is rendered here: on a blocking thread
    let view = tokio::task::spawn_blocking(move || {
        execution_view(&row, &policy, max_retry, links.as_deref())
    })
    .await
    .map_err(|e| ApiError::internal("rendering the execution", e))?;
    Ok(Json(view))
}

/// `GET …/policies/{id}/executions/{eid}/payload`
pub async fn payload(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid)): Path<(String, i64, i64)>,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let policy = load_policy(&app.store, &project, id).await?;
    let row = load_row(&app.store, &policy, eid).await?;
    let p = render_off_thread(app.config.external_url.clone(), row, policy).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "execution {eid}: its event or target version is no longer stored, or its template makes no body"
        ))
    })?;
    Ok((
        [(http::header::CONTENT_TYPE, p.content_type.into_owned())],
        p.body,
    )
        .into_response())
}

/// `GET …/policies/{id}/executions/{eid}/tasks/{tid}`
pub async fn task(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid, tid)): Path<(String, i64, i64, i64)>,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let policy = load_policy(&app.store, &project, id).await?;
    let row = load_row(&app.store, &policy, eid).await?;
    let attempts = app
        .store
        .read(move |c| outbox::attempts(c, eid))
        .await
        .map_err(db_error)?;
    let (i, attempt) = attempts
        .into_iter()
        .enumerate()
        .find(|(_, a)| a.id == tid)
        .ok_or_else(|| ApiError::not_found(format!("task {tid} not found")))?;
    let record = TaskRecord {
        attempt,
        run_count: i + 1,
    };
    let a = &record.attempt;
    let target = row.target.clone();
    let (event_id, url) = (
        row.delivery.event_id.clone(),
        row.delivery.target_address.clone(),
    );
    let payload = render_off_thread(app.config.external_url.clone(), row, policy).await?;
    let mut sent = vec![
        json!({"name": "Content-Type", "value": payload.as_ref().map_or("", |p| &*p.content_type)}),
        json!({"name": "User-Agent", "value": concat!("wharf/", env!("CARGO_PKG_VERSION"))}),
        json!({"name": "webhook-id", "value": event_id}),
        json!({"name": "webhook-timestamp", "value": (a.started_at / 1000).to_string()}),
    ];
    if let Some(t) = &target {
        if t.auth_header.as_deref().is_some_and(|h| !h.is_empty()) {
            sent.push(json!({"name": "Authorization", "value": SET}));
        }
        if t.secret.as_deref().is_some_and(|h| !h.is_empty()) {
            sent.push(json!({"name": "webhook-signature", "value": SET}));
        }
    }
    let mut view = task_view(&record);
    if let Some(obj) = view.as_object_mut() {
        obj.insert(
            "request".into(),
            json!({
                "method": "POST",
                "url": url,
                "headers": sent,
                "body": payload.map(|p| String::from_utf8_lossy(&p.body).into_owned()),
            }),
        );
        obj.insert(
            "response".into(),
            json!({
                "status_code": a.status_code,
                "duration_ms": a.duration_ms,
                "error_kind": a.error_kind,
                "error": a.error,
                "body_excerpt": a.response_excerpt,
            }),
        );
    }
    Ok(Json(view))
}

/// `POST …/policies/{id}/test`
pub async fn test_stored(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    let policy = load_policy(&app.store, &project, id).await?;
    let kind = if body.iter().all(u8::is_ascii_whitespace) {
        EventKind::PushArtifact
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body: not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad_request("body: must be a JSON object"))?;
        if let Some(k) = obj.keys().find(|k| *k != "event_type") {
            return Err(ApiError::bad_request(format!(
                "{k}: not a field of a test request (event_type)"
            )));
        }
        match obj.get("event_type") {
            None | Some(Value::Null) => EventKind::PushArtifact,
            Some(Value::String(t)) => event_kind("event_type", t)?,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "event_type: {other} is not a string"
                )));
            }
        }
    };
    let targets: Vec<_> = policy
        .targets
        .iter()
        .filter(|t| !t.disabled)
        .cloned()
        .collect();
    if targets.is_empty() {
        return Err(ApiError::bad_request(
            "targets: every target of the policy is disabled (it answered 410 Gone); re-enable one first",
        ));
    }
    send_test(&app, &project, policy.project_id, &caller, &targets, kind).await
}

/// Delivery `eid` of policy `policy` of `project` (not found elsewhere).
pub(super) async fn load_delivery(
    store: &Store,
    project: &str,
    policy: i64,
    eid: i64,
) -> Result<outbox::DeliveryView, ApiError> {
    load_policy(store, project, policy).await?;
    store
        .read(move |c| outbox::get(c, policy, eid))
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found(format!("execution {eid} not found")))
}

/// `GET …/executions/{eid}/tasks/{tid}/log`: one attempt as text.
pub async fn task_log(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid, tid)): Path<(String, i64, i64, i64)>,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let d = load_delivery(&app.store, &project, id, eid).await?;
    let attempts = app
        .store
        .read(move |c| outbox::attempts(c, eid))
        .await
        .map_err(db_error)?;
    let a = attempts
        .iter()
        .find(|a| a.id == tid)
        .ok_or_else(|| ApiError::not_found(format!("task {tid} not found")))?;
    let when = rfc3339_ms(a.started_at);
    let mut text = format!(
        "{} POST {} event {} ({})\n",
        when.as_str().unwrap_or(""),
        d.target_address,
        d.event_id,
        d.event_type
    );
    let kind = a.error_kind;
    match (a.status_code, kind) {
        (Some(code), _) => text.push_str(&format!("status {code} in {} ms\n", a.duration_ms)),
        (None, Some(k)) if !k.involves_target() => {
            text.push_str("not sent: the payload could not be made (not retried)\n")
        }
        (None, _) => text.push_str(&format!("no response after {} ms\n", a.duration_ms)),
    }
    if let Some(k) = a.error_kind.map(FailureKind::name) {
        text.push_str(&format!(
            "error ({k}): {}\n",
            a.error.as_deref().unwrap_or("")
        ));
    }
    if let Some(x) = &a.response_excerpt {
        text.push_str("response excerpt:\n");
        text.push_str(x);
        text.push('\n');
    }
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response())
}
