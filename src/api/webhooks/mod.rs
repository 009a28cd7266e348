//! Harbor-compatible webhook API under `/api/v2.0/projects/{project}/webhook/…`: policies,
//! last triggers, supported events; `input`: what a client sends and its checks; `test`: test
//! notifications and previews. (Executions are [`super::executions`] and
//! [`super::execution`], redelivery [`super::redeliver`], the system switch
//! [`super::configurations`].)
//!
//! `{project}` is a project name, or a numeric project id (send `X-Is-Resource-Name: true` to
//! force a numeric name). A policy id is only found inside its own project (no IDOR). A
//! target's `auth_header` reads back as stored (Harbor's behaviour; `api.reveal_auth_header:
//! false` masks it as `***`); its signing `secret` always reads `***`. A `***` sent back in a
//! PUT keeps the stored value (an `auth_header` only for an unchanged target address).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::common::{db_error, event_kind, project_for, rfc3339_ms};
use super::{ApiError, ApiState};
use crate::dispatch::policy::{Policy, Target, TargetKind};
use crate::events::EventKind;
use crate::events::format::PayloadFormat;
use crate::store::{Store, policies};

mod input;
mod test;

pub use input::{PolicyInput, TargetInput};
pub(in crate::api) use input::{json_body, validate_policy};
pub(in crate::api) use test::send_test;
pub use test::{PreviewInput, preview_policy, test_policy};

/// What a masked secret reads as.
pub const MASK: &str = "***";

/// An unset time as Harbor writes it (year 1).
pub const ZERO_TIME_MS: &str = "0001-01-01T00:00:00.000Z";

/// The project's numeric id (0 while it has none).
async fn project_id(store: &Store, project: &str) -> Result<i64, ApiError> {
    let p = project.to_string();
    Ok(store
        .read(move |c| policies::project_id(c, &p))
        .await
        .map_err(db_error)?
        .unwrap_or(0))
}

/// A target as the API shows it, as Harbor leaves out an empty `auth_header`, a false
/// `skip_cert_verify` and a slack target's format; the `auth_header` as stored when `reveal`,
/// else masked; the signing secret always masked.
fn target_view(t: &Target, reveal: bool) -> Value {
    let mask = |s: &Option<String>| {
        if s.as_deref().is_some_and(|v| !v.is_empty()) {
            MASK
        } else {
            ""
        }
    };
    let mut v = serde_json::Map::new();
    v.insert("type".into(), json!(t.kind));
    v.insert("address".into(), json!(t.address));
    if let Some(h) = t.auth_header.as_deref().filter(|h| !h.is_empty()) {
        v.insert("auth_header".into(), json!(if reveal { h } else { MASK }));
    }
    if t.skip_cert_verify {
        v.insert("skip_cert_verify".into(), json!(true));
    }
    match (t.kind, t.format()) {
        (TargetKind::Slack, PayloadFormat::Slack) => {}
        (_, f) => {
            v.insert("payload_format".into(), json!(f.name()));
        }
    }
    if let Some(c) = t.custom() {
        v.insert("payload_template".into(), json!(c.template));
        v.insert("content_type".into(), json!(c.content_type));
    }
    v.insert("secret".into(), json!(mask(&t.secret)));
    v.insert("disabled".into(), json!(t.disabled));
    Value::Object(v)
}

/// A policy as Harbor's API shows it (plus `filters`); `reveal`: `api.reveal_auth_header`.
pub fn policy_view(p: &Policy, reveal: bool) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "project_id": p.project_id,
        "targets": p.targets.iter().map(|t| target_view(t, reveal)).collect::<Vec<_>>(),
        "event_types": p.event_types.iter().map(|k| k.harbor_type()).collect::<Vec<_>>(),
        "creator": p.creator,
        "creation_time": rfc3339_ms(p.created_at),
        "update_time": rfc3339_ms(p.updated_at),
        "enabled": p.enabled,
        "filters": p.filters,
    })
}

/// `GET …/webhook/policies`: Harbor's list conventions (see [`super::list`]), newest first.
pub async fn list_policies(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    uri: http::Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = super::list::ListParams::from_uri(&uri)?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let mut list = app
        .store
        .read(move |c| policies::list(c, &project))
        .await
        .map_err(db_error)?;
    list.sort_by_key(|p| std::cmp::Reverse((p.created_at, p.id)));
    let (page, total) = params.apply(list, super::records::POLICY_FIELDS);
    let reveal = app.config.api.reveal_auth_header;
    let body: Vec<Value> = page.iter().map(|p| policy_view(p, reveal)).collect();
    Ok(params.respond(&body, total))
}

/// `POST …/webhook/policies` → 201 with `Location` and the policy.
pub async fn create_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    uri: http::Uri,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    let input: PolicyInput = json_body(&body)?;
    let mut policy = validate_policy(&app, input, &project, None).await?;
    policy.creator = caller.name().to_string();
    let created = app
        .store
        .write(move |c| {
            if policies::name_taken(c, &policy.project, &policy.name, None)? {
                return Ok(None);
            }
            let id = policies::insert(c, &policy)?;
            policies::get_by_id(c, id)
        })
        .await
        .map_err(db_error)?;
    let Some(p) = created else {
        return Err(ApiError::conflict(
            "name: a policy with this name exists in the project",
        ));
    };
    tracing::info!(project = %p.project, policy = p.id, by = %caller.name(), "webhook policy created");
    let view = policy_view(&p, app.config.api.reveal_auth_header);
    let mut resp = (StatusCode::CREATED, Json(view)).into_response();
    // the request's own path (its project segment as the client wrote it), as Harbor
    let location = format!("{}/{}", uri.path().trim_end_matches('/'), p.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(resp)
}

/// Policy `id` of `project` (not found in another project: no IDOR).
pub(super) async fn load_policy(store: &Store, project: &str, id: i64) -> Result<Policy, ApiError> {
    let p = project.to_string();
    store
        .read(move |c| policies::get(c, &p, id))
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found(format!("policy {id} not found in project {project}")))
}

/// `GET …/webhook/policies/{id}`
pub async fn get_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let p = load_policy(&app.store, &project, id).await?;
    Ok(Json(policy_view(&p, app.config.api.reveal_auth_header)))
}

/// `PUT …/webhook/policies/{id}`
pub async fn update_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    let old = load_policy(&app.store, &project, id).await?;
    let input: PolicyInput = json_body(&body)?;
    let policy = validate_policy(&app, input, &project, Some(&old)).await?;
    let updated = app
        .store
        .write(move |c| {
            if policies::name_taken(c, &policy.project, &policy.name, Some(policy.id))? {
                return Ok(Err(()));
            }
            policies::update(c, &policy)?;
            Ok(Ok(policies::get_by_id(c, policy.id)?))
        })
        .await
        .map_err(db_error)?;
    match updated {
        Err(()) => Err(ApiError::conflict(
            "name: a policy with this name exists in the project",
        )),
        Ok(None) => Err(ApiError::not_found(format!("policy {id} not found"))),
        Ok(Some(p)) => {
            tracing::info!(project = %p.project, policy = p.id, by = %caller.name(), "webhook policy updated");
            Ok(Json(policy_view(&p, app.config.api.reveal_auth_header)))
        }
    }
}

/// `DELETE …/webhook/policies/{id}`
pub async fn delete_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    let p = project.clone();
    let deleted = app
        .store
        .write(move |c| policies::delete(c, &p, id))
        .await
        .map_err(db_error)?;
    if !deleted {
        return Err(ApiError::not_found(format!(
            "policy {id} not found in project {project}"
        )));
    }
    tracing::info!(project = %project, policy = id, by = %caller.name(), "webhook policy deleted");
    Ok(StatusCode::OK)
}

/// `GET …/webhook/lasttrigger`
pub async fn last_trigger(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let app = s.app()?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    // what this replica noted is written first (other replicas write theirs every second)
    if let Err(e) = app.store.flush_triggers().await {
        tracing::warn!(error = %e, "writing last triggers failed");
    }
    let (list, triggers) = app
        .store
        .read(move |c| {
            Ok((
                policies::list(c, &project)?,
                policies::last_triggers(c, &project)?,
            ))
        })
        .await
        .map_err(db_error)?;
    let mut out = Vec::new();
    for p in &list {
        for k in &p.event_types {
            let last = triggers
                .iter()
                .find(|(pid, t, _)| *pid == p.id && t == k.harbor_type())
                .map(|(_, _, at)| rfc3339_ms(*at))
                // never fired: Harbor's zero time
                .unwrap_or_else(|| json!(ZERO_TIME_MS));
            out.push(json!({
                "policy_name": p.name,
                "policy_id": p.id,
                "event_type": k.harbor_type(),
                "enabled": p.enabled,
                "creation_time": rfc3339_ms(p.created_at),
                "last_trigger_time": last,
            }));
        }
    }
    Ok(Json(out))
}

/// `GET …/webhook/events`: supported event types and payload formats.
pub async fn supported_events(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    project_for(&app, &headers, &project).await?;
    // exactly Harbor's answer; wharf's extras (chart types, Legacy, SlackRich) are accepted
    // too and documented in docs/api.md
    Ok(Json(json!({
        "event_type": EventKind::HARBOR.map(|k| k.harbor_type()),
        "notify_type": ["http", "slack"],
        "payload_formats": [
            {"notify_type": "http", "formats": [PayloadFormat::Default.name(), PayloadFormat::CloudEvents.name()]},
        ],
    })))
}
