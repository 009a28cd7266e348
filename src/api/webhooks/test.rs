//! Test notifications (`…/policies/test`, `…/policies/{id}/test`) and payload previews
//! (`…/policies/preview`).

use axum::Json;
use axum::extract::{Path, State};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::input::{
    PolicyInput, custom_fields, json_body, target_shape, template_problem, validate_targets,
};
use super::{event_kind, project_for, project_id};
use crate::api::auth::Caller;
use crate::api::{ApiError, ApiState};
use crate::app::App;
use crate::config::Config;
use crate::dispatch::client::FailureKind;
use crate::dispatch::policy::Target;
use crate::events::format::{self, RenderCtx};
use crate::events::{Event, EventKind};
use crate::route::Repository;

/// `POST …/webhook/policies/test` with `{targets:[…]}`: send a test notification to each
/// target; 200 when every one answered 2xx, else 400 saying why.
pub async fn test_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    let input: PolicyInput = json_body(&body)?;
    let project_id = project_id(&app.store, &project).await?;
    let targets =
        validate_targets(app.sender.guard(), input.targets.unwrap_or_default(), &[]).await?;
    send_test(
        &app,
        &project,
        project_id,
        &caller,
        &targets,
        EventKind::PushArtifact,
    )
    .await
}

/// A test event of `kind` in `project`: the sample event of that kind (see
/// [`format::samples`]) as if it had happened now in `{project}/webhook-test`, marked `test`.
pub(in crate::api) fn test_event(
    config: &Config,
    project: &str,
    caller: &Caller,
    kind: EventKind,
) -> Result<Event, ApiError> {
    let repo = Repository::parse(&format!("{project}/webhook-test"))
        .ok_or_else(|| ApiError::bad_request("project: not a valid name"))?;
    let mut event = match format::samples().into_iter().find(|(_, e)| e.kind == kind) {
        Some((_, sample)) => {
            let mut e = sample;
            e.id = uuid::Uuid::now_v7();
            e.occurred_at = crate::events::now();
            e.project = repo.project().to_string();
            e.repository = repo.as_str().to_string();
            e.repository_created = None;
            e.request_id = None;
            e.client_addr = None;
            e.user_agent = None;
            e.operator = caller.name().to_string();
            e
        }
        None => Event::new(kind, &repo, caller.name()),
    };
    event.test = true;
    event.public = config.is_public(project);
    if event.tags.is_empty() && !kind.is_chart() {
        event.tags = vec!["test".into()];
    }
    let tag = event.tags.first().cloned();
    event.resource_url =
        Event::oci_resource_url(&config.external_host(), repo.as_str(), tag.as_deref(), None);
    Ok(event)
}

/// Send a test notification of `kind` to each of `targets`; 200 with each one's status and
/// duration when every one answered 2xx, else 400 saying why each failed.
pub(in crate::api) async fn send_test(
    app: &App,
    project: &str,
    project_id: i64,
    caller: &Caller,
    targets: &[Target],
    kind: EventKind,
) -> Result<Json<Value>, ApiError> {
    let event = test_event(&app.config, project, caller, kind)?;
    let ctx = RenderCtx {
        project_id,
        policy_id: 0,
        delivery_id: None,
        external_url: app.config.external_url.clone(),
    };
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let sent = match t.render_async(&event, &ctx).await {
            Ok(payload) => app.sender.send(t, &payload, &event.id.to_string()).await,
            Err(e) => crate::dispatch::client::Sent::unrendered(&e),
        };
        if sent.ok() {
            results.push(json!({"address": t.address, "status": sent.status, "duration_ms": sent.duration.as_millis() as u64}));
        } else {
            let error = sent.error.unwrap_or_default();
            let reason = match (sent.error_kind, sent.status) {
                (Some(FailureKind::RefusedTarget), _) => format!("blocked address: {error}"),
                (Some(FailureKind::Timeout), _) => format!("timeout: {error}"),
                (Some(FailureKind::Connect), _) => format!("refused: {error}"),
                (Some(FailureKind::TemplateOutputInvalid), _) => {
                    format!("not sent: {error}")
                }
                (_, Some(status)) => format!("status {status}"),
                (kind, None) => format!(
                    "{}: {error}",
                    kind.map(FailureKind::name).unwrap_or("error")
                ),
            };
            failures.push(format!("targets[{i}] {}: {reason}", t.address));
        }
    }
    if !failures.is_empty() {
        return Err(ApiError::bad_request(failures.join("; ")));
    }
    Ok(Json(json!({"results": results})))
}

/// A preview request: a target's shape (`type`, `payload_format`, `payload_template`,
/// `content_type`) and the event type to render a sample of.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    #[serde(default)]
    event_type: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    payload_format: Option<String>,
    #[serde(default)]
    payload_template: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

/// `POST …/webhook/policies/preview`: render a sample event of `event_type` (default
/// `PUSH_ARTIFACT`) in the project as a target with this format (or template) would get it.
/// 200 `{event_type, payload_format, content_type, body}` (`body`: the payload as text); a
/// template that does not compile or render is a 400 naming the line and the problem. Nothing
/// is sent or stored.
pub async fn preview_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, _) = project_for(&app, &headers, &project).await?;
    let input: PreviewInput = json_body(&body)?;
    let field = |f: &str| f.to_string();
    let kind = match input.event_type.as_deref().filter(|t| !t.is_empty()) {
        None => EventKind::PushArtifact,
        Some(t) => event_kind("event_type", t)?,
    };
    let (target_kind, payload_format) = target_shape(
        input.kind.as_deref(),
        input.payload_format.as_deref(),
        &field,
    )?;
    let (payload_template, content_type) = custom_fields(
        payload_format,
        input.payload_template,
        input.content_type,
        &field,
    )?;
    let target = Target {
        kind: target_kind,
        payload_format,
        payload_template,
        content_type,
        ..Target::http("")
    };
    let project_id = project_id(&app.store, &project).await?;
    let mut event = format::sample_in(kind, &project, &app.config.external_host());
    event.public = app.config.is_public(&project);
    let ctx = RenderCtx {
        project_id,
        policy_id: 0,
        delivery_id: None,
        external_url: app.config.external_url.clone(),
    };
    let payload = target.render_async(&event, &ctx).await.map_err(|e| {
        ApiError::bad_request(format!(
            "payload_template: rendering a sample {} event: {}",
            kind.harbor_type(),
            template_problem(&e)
        ))
    })?;
    Ok(Json(json!({
        "event_type": kind.harbor_type(),
        "payload_format": target.format().name(),
        "content_type": payload.content_type,
        "body": String::from_utf8_lossy(&payload.body),
    })))
}
