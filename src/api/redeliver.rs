//! Sending deliveries again: one execution (`POST …/executions/{eid}/redeliver`), or every
//! dead one of a policy (`POST …/policies/{id}/redeliver[?since=…]`).

use axum::Json;
use axum::extract::{Path, State};
use chrono::DateTime;
use http::HeaderMap;
use serde_json::{Value, json};

use super::common::{db_error, project_for};
use super::execution::load_delivery;
use super::webhooks::load_policy;
use super::{ApiError, ApiState};
use crate::store::outbox;

/// `POST …/executions/{eid}/redeliver`: send one delivery again.
pub async fn redeliver_one(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid)): Path<(String, i64, i64)>,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    load_delivery(&app.store, &project, id, eid).await?;
    let outcome = app
        .store
        .write(move |c| outbox::redeliver(c, id, eid))
        .await
        .map_err(db_error)?;
    match outcome {
        outbox::Redelivery::Queued => {}
        outbox::Redelivery::Running => {
            return Err(ApiError::conflict(
                "the delivery is being attempted right now",
            ));
        }
        outbox::Redelivery::TargetDisabled => {
            return Err(ApiError::conflict(
                "the target of this delivery is disabled (it answered 410 Gone); re-enable it (PUT the policy with \"disabled\": false) first",
            ));
        }
        outbox::Redelivery::TargetGone => {
            return Err(ApiError::conflict(
                "the target of this delivery is no longer part of the policy, and its stored version is gone",
            ));
        }
        outbox::Redelivery::NotFound => {
            return Err(ApiError::not_found(format!("execution {eid} not found")));
        }
    }
    tracing::info!(policy = id, delivery = eid, by = %caller.name(), "redelivery requested");
    Ok(Json(json!({"redelivered": 1})))
}

/// `POST …/policies/{id}/redeliver[?since=<RFC 3339 time>]`: send every dead delivery of the
/// policy again (with `since`: those created at or after it).
pub async fn redeliver_dead(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    uri: http::Uri,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    let since = match url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "since")
    {
        None => 0,
        Some((_, v)) => DateTime::parse_from_rfc3339(&v)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "since: {v:?} is not an RFC 3339 time (2026-01-31T12:00:00Z): {e}"
                ))
            })?
            .timestamp_millis(),
    };
    load_policy(&app.store, &project, id).await?;
    let n = app
        .store
        .write(move |c| outbox::redeliver_dead_since(c, id, since))
        .await
        .map_err(db_error)?;
    tracing::info!(policy = id, deliveries = n, since, by = %caller.name(), "redelivery of dead deliveries requested");
    Ok(Json(json!({"redelivered": n})))
}
