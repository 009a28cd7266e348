//! Harbor-compatible webhook API under `/api/v2.0/projects/{project}/webhook/…` and the system
//! switch under `/api/v2.0/configurations`.
//!
//! `{project}` is a project name, or a numeric project id (send `X-Is-Resource-Name: true` to
//! force a numeric name). A policy id is only found inside its own project (no IDOR). A
//! target's `auth_header` reads back as stored (Harbor's behaviour; `api.reveal_auth_header:
//! false` masks it as `***`); its signing `secret` always reads `***`. A `***` sent back in a
//! PUT keeps the stored value (an `auth_header` only for an unchanged target address).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Caller};
use super::{ApiError, ApiState};
use crate::app::App;
use crate::dispatch::client::FailureKind;
use crate::dispatch::policy::{Filters, Policy, Target, TargetKind};
use crate::events::format::{self, PayloadFormat, RenderCtx, RenderError};
use crate::events::template;
use crate::events::{Event, EventKind};
use crate::route::{Repository, is_name_component};
use crate::store::{outbox, policies};

/// What a masked secret reads as.
pub const MASK: &str = "***";

/// An unset time as Harbor writes it (year 1).
pub const ZERO_TIME_MS: &str = "0001-01-01T00:00:00.000Z";

pub(super) fn rfc3339_ms(ms: i64) -> Value {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

pub(super) fn db_error(e: crate::store::StoreError) -> ApiError {
    ApiError::internal("database error", e)
}

/// The event type Harbor calls `name`, given in `field`; else a 400 listing the known ones.
pub(super) fn event_kind(field: &str, name: &str) -> Result<EventKind, ApiError> {
    EventKind::from_harbor(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field}: unknown event type {name:?}; one of {}",
            EventKind::ALL.map(|k| k.harbor_type()).join(", ")
        ))
    })
}

/// The project's numeric id (0 while it has none).
async fn project_id(app: &App, project: &str) -> Result<i64, ApiError> {
    let p = project.to_string();
    Ok(app
        .store
        .read(move |c| policies::project_id(c, &p))
        .await
        .map_err(db_error)?
        .unwrap_or(0))
}

/// Resolve `{project}` (name or id) and authorize the caller for it.
pub(super) async fn project_for(
    app: &App,
    headers: &HeaderMap,
    raw: &str,
) -> Result<(String, Caller), ApiError> {
    let by_name = headers
        .get("x-is-resource-name")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let name = if !by_name && !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let id: i64 = raw
            .parse()
            .map_err(|_| ApiError::not_found("project not found"))?;
        // authenticate first: unknown ids and forbidden ones must look alike to strangers
        auth::authenticate(app, headers).await?;
        app.store
            .read(move |c| policies::project_name(c, id))
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::not_found(format!("project {id} not found")))?
    } else {
        if !is_name_component(raw) {
            return Err(ApiError::bad_request(format!(
                "project: {raw:?} is not a project name (lowercase letters, digits, . _ -)"
            )));
        }
        raw.to_string()
    };
    let caller = auth::require_project_admin(app, headers, &name).await?;
    Ok((name, caller))
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

/// A target as sent by a client.
#[derive(Debug, Deserialize)]
pub struct TargetInput {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    auth_header: Option<String>,
    #[serde(default)]
    skip_cert_verify: bool,
    #[serde(default)]
    payload_format: Option<String>,
    /// The template of a `Custom` target.
    #[serde(default)]
    payload_template: Option<String>,
    /// The Content-Type of a `Custom` target (default `application/json`).
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// A policy as sent by a client (Harbor's shape; read-only fields are ignored).
#[derive(Debug, Deserialize)]
pub struct PolicyInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    targets: Option<Vec<TargetInput>>,
    #[serde(default)]
    filters: Option<Filters>,
}

/// A JSON object body: the text first (a syntax error has a position), then the shape (serde
/// would take an array for a struct, field by field).
fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body: not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "body: must be a JSON object, not {}",
            json_kind(&value)
        )));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The longest policy name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// Characters a policy name may not hold: control characters (NUL, CR, LF, …) and the
/// invisible bidirectional controls that make a name display as another (U+202E …).
fn forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// A target's `type` and `payload_format`: http targets take the formats of
/// [`PayloadFormat::HTTP`]; slack targets Harbor's layout (`Slack`, kept as no format) or
/// wharf's `SlackRich`.
fn target_shape(
    kind: Option<&str>,
    payload_format: Option<&str>,
    field: &dyn Fn(&str) -> String,
) -> Result<(TargetKind, Option<PayloadFormat>), ApiError> {
    let kind = match kind.unwrap_or("http") {
        "http" => TargetKind::Http,
        "slack" => TargetKind::Slack,
        other => {
            return Err(ApiError::bad_request(format!(
                "{}: {other:?} is not http or slack",
                field("type")
            )));
        }
    };
    let Some(f) = payload_format.filter(|f| !f.is_empty()) else {
        return Ok((kind, None));
    };
    let format = match (kind, PayloadFormat::parse(f)) {
        // Harbor's layout; wharf's own is an opt-in
        (TargetKind::Slack, Some(PayloadFormat::Slack)) => None,
        (TargetKind::Slack, Some(PayloadFormat::SlackRich)) => Some(PayloadFormat::SlackRich),
        (TargetKind::Slack, _) => {
            return Err(ApiError::bad_request(format!(
                "{}: set payload format is not allowed for slack ({f:?}; wharf takes SlackRich for its own layout)",
                field("payload_format")
            )));
        }
        (TargetKind::Http, Some(p)) if PayloadFormat::HTTP.contains(&p) => Some(p),
        (TargetKind::Http, _) => {
            return Err(ApiError::bad_request(format!(
                "{}: unsupported payload format type: {f} (one of {})",
                field("payload_format"),
                PayloadFormat::HTTP.map(PayloadFormat::name).join(", ")
            )));
        }
    };
    Ok((kind, format))
}

/// Validate targets (shape, format, SSRF guard). `old` supplies secrets sent back as `***`.
async fn validate_targets(
    app: &App,
    input: Vec<TargetInput>,
    old: &[Target],
) -> Result<Vec<Target>, ApiError> {
    if input.is_empty() {
        return Err(ApiError::bad_request(
            "targets: at least one target is required",
        ));
    }
    if input.len() > 16 {
        return Err(ApiError::bad_request(
            "targets: at most 16 targets per policy",
        ));
    }
    let mut out = Vec::with_capacity(input.len());
    for (i, t) in input.into_iter().enumerate() {
        let field = |f: &str| format!("targets[{i}].{f}");
        let (kind, payload_format) =
            target_shape(t.kind.as_deref(), t.payload_format.as_deref(), &field)?;
        let address = t.address.unwrap_or_default().trim().to_string();
        if address.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{}: required",
                field("address")
            )));
        }
        app.sender
            .guard()
            .check_url(&address)
            .await
            .map_err(|e| ApiError::bad_request(format!("{}: {e}", field("address"))))?;
        let (payload_template, content_type) =
            custom_fields(payload_format, t.payload_template, t.content_type, &field)?;
        if let Some(h) = t.auth_header.as_deref()
            && h != MASK
            && HeaderValue::from_str(h).is_err()
        {
            let what = if h.contains(['\r', '\n']) {
                "must not contain CR or LF"
            } else {
                "must be a valid HTTP header value (no control characters)"
            };
            return Err(ApiError::bad_request(format!(
                "{}: {what}",
                field("auth_header")
            )));
        }
        let same_address = old.iter().find(|o| o.address == address);
        let previous = same_address.or_else(|| old.get(i));
        let keep = |new: Option<String>, prev: Option<&Option<String>>| match new {
            Some(v) if v == MASK => prev.cloned().flatten(),
            Some(v) if v.is_empty() => None,
            other => other,
        };
        // The auth header is sent as it is: a masked one is kept only for the address it was
        // given for, else a caller who may not read it could send it to a server of theirs.
        // (The signing secret never leaves wharf, only signatures do: it follows the target
        // by position too.)
        if t.auth_header.as_deref() == Some(MASK) && same_address.is_none() {
            return Err(ApiError::bad_request(format!(
                "{}: \"{MASK}\" keeps the stored value only for an unchanged address; send the header again for the new address",
                field("auth_header")
            )));
        }
        out.push(Target {
            kind,
            auth_header: keep(t.auth_header, same_address.map(|p| &p.auth_header)),
            secret: keep(t.secret, previous.map(|p| &p.secret)),
            skip_cert_verify: t.skip_cert_verify,
            payload_format,
            payload_template,
            content_type,
            disabled: t.disabled,
            address,
        });
    }
    Ok(out)
}

/// A target's `payload_template` and `content_type`: both only with the format `Custom`, which
/// needs the template; the template compiles and is at most 8 KiB, the content type is a media
/// type (`None`: `application/json`).
fn custom_fields(
    format: Option<PayloadFormat>,
    payload_template: Option<String>,
    content_type: Option<String>,
    field: &dyn Fn(&str) -> String,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let payload_template = payload_template.filter(|t| !t.is_empty());
    let content_type = content_type
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if format != Some(PayloadFormat::Custom) {
        let name = format.map(PayloadFormat::name).unwrap_or("the default");
        if payload_template.is_some() {
            return Err(ApiError::bad_request(format!(
                "{}: only a target with payload_format Custom has a template ({name} was given)",
                field("payload_template")
            )));
        }
        if content_type.is_some() {
            return Err(ApiError::bad_request(format!(
                "{}: only a target with payload_format Custom sets its content type ({name} was given)",
                field("content_type")
            )));
        }
        return Ok((None, None));
    }
    let Some(source) = payload_template else {
        return Err(ApiError::bad_request(format!(
            "{}: required with payload_format Custom",
            field("payload_template")
        )));
    };
    template::compile(&source)
        .map_err(|e| ApiError::bad_request(format!("{}: {e}", field("payload_template"))))?;
    if let Some(ct) = &content_type {
        template::check_content_type(ct)
            .map_err(|e| ApiError::bad_request(format!("{}: {e}", field("content_type"))))?;
    }
    Ok((Some(source), content_type))
}

/// Render every `Custom` target's template against the samples of every event type the
/// policy subscribes to: the first error is a 400 naming the target, the event type, the line
/// and the problem.
fn check_templates(
    targets: &[Target],
    event_types: &[EventKind],
    ctx: &RenderCtx,
) -> Result<(), ApiError> {
    for (i, t) in targets.iter().enumerate() {
        if t.custom().is_none() {
            continue;
        }
        for kind in event_types {
            for sample in format::samples_of(*kind) {
                if let Err(e) = t.render(&sample, ctx) {
                    return Err(ApiError::bad_request(format!(
                        "targets[{i}].payload_template: rendering a sample {} event: {}",
                        kind.harbor_type(),
                        template_problem(&e)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The problem of a render error, without the `payload template:` prefix.
fn template_problem(e: &RenderError) -> String {
    match e {
        RenderError::Template(t) => t.to_string(),
        RenderError::NoTemplate | RenderError::Aborted(_) => e.to_string(),
    }
}

async fn validate_policy(
    app: &App,
    input: PolicyInput,
    project: &str,
    old: Option<&Policy>,
) -> Result<Policy, ApiError> {
    let name = input.name.unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err(ApiError::bad_request("name: required"));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name: at most {MAX_NAME_CHARS} characters ({chars} given)"
        )));
    }
    if let Some((i, c)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| forbidden_in_name(*c))
    {
        return Err(ApiError::bad_request(format!(
            "name: character {i} is U+{:04X}; control and bidirectional-override characters are not allowed",
            u32::from(c)
        )));
    }
    let types = input.event_types.unwrap_or_default();
    if types.is_empty() {
        return Err(ApiError::bad_request(
            "event_types: at least one event type is required",
        ));
    }
    let mut event_types = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let k = event_kind(&format!("event_types[{i}]"), t)?;
        if !event_types.contains(&k) {
            event_types.push(k);
        }
    }
    let filters = input.filters.unwrap_or_default();
    crate::glob::check_all("filters.repositories", &filters.repositories)
        .map_err(ApiError::bad_request)?;
    crate::glob::check_all("filters.tags", &filters.tags).map_err(ApiError::bad_request)?;
    let old_targets = old.map(|p| p.targets.as_slice()).unwrap_or(&[]);
    let targets = validate_targets(app, input.targets.unwrap_or_default(), old_targets).await?;
    // every sample of every type through every template: on a blocking thread
    let ctx = RenderCtx {
        project_id: old.map(|p| p.project_id).unwrap_or(0),
        external_url: app.config.external_url.clone(),
        ..RenderCtx::default()
    };
    let (checked, types) = (targets.clone(), event_types.clone());
    tokio::task::spawn_blocking(move || check_templates(&checked, &types, &ctx))
        .await
        .map_err(|e| ApiError::internal("checking payload templates", e))??;
    Ok(Policy {
        id: old.map(|p| p.id).unwrap_or(0),
        project: project.to_string(),
        project_id: old.map(|p| p.project_id).unwrap_or(0),
        name,
        description: input.description.unwrap_or_default(),
        // Harbor: a PUT rewrites every column, so an update without `enabled` is off; a new
        // policy without it is on (wharf's choice, documented in docs/api.md)
        enabled: input.enabled.unwrap_or(old.is_none()),
        event_types,
        targets,
        filters,
        creator: old.map(|p| p.creator.clone()).unwrap_or_default(),
        created_at: old.map(|p| p.created_at).unwrap_or(0),
        updated_at: 0,
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
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
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

pub(super) async fn load_policy(app: &App, project: &str, id: i64) -> Result<Policy, ApiError> {
    let p = project.to_string();
    app.store
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
    let p = load_policy(&app, &project, id).await?;
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
    let old = load_policy(&app, &project, id).await?;
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
        Err(()) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
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
    let project_id = project_id(&app, &project).await?;
    let targets = validate_targets(&app, input.targets.unwrap_or_default(), &[]).await?;
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
pub(super) fn test_event(
    app: &App,
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
    event.public = app.config.is_public(project);
    if event.tags.is_empty() && !kind.is_chart() {
        event.tags = vec!["test".into()];
    }
    let tag = event.tags.first().cloned();
    event.resource_url = Event::oci_resource_url(
        &app.config.external_host(),
        repo.as_str(),
        tag.as_deref(),
        None,
    );
    Ok(event)
}

/// Send a test notification of `kind` to each of `targets`; 200 with each one's status and
/// duration when every one answered 2xx, else 400 saying why each failed.
pub(super) async fn send_test(
    app: &App,
    project: &str,
    project_id: i64,
    caller: &Caller,
    targets: &[Target],
    kind: EventKind,
) -> Result<Json<Value>, ApiError> {
    let event = test_event(app, project, caller, kind)?;
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
    let project_id = project_id(&app, &project).await?;
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

pub(super) async fn load_delivery(
    app: &Arc<App>,
    project: &str,
    policy: i64,
    eid: i64,
) -> Result<outbox::DeliveryView, ApiError> {
    load_policy(app, project, policy).await?;
    app.store
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
    let d = load_delivery(&app, &project, id, eid).await?;
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
    let kind = a.error_kind.as_deref().and_then(FailureKind::parse);
    match (a.status_code, kind) {
        (Some(code), _) => text.push_str(&format!("status {code} in {} ms\n", a.duration_ms)),
        (None, Some(k)) if !k.involves_target() => {
            text.push_str("not sent: the payload could not be made (not retried)\n")
        }
        (None, _) => text.push_str(&format!("no response after {} ms\n", a.duration_ms)),
    }
    if let Some(k) = &a.error_kind {
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

/// `POST …/executions/{eid}/redeliver`: send one delivery again.
pub async fn redeliver_one(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid)): Path<(String, i64, i64)>,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let (project, caller) = project_for(&app, &headers, &project).await?;
    load_delivery(&app, &project, id, eid).await?;
    let outcome = app
        .store
        .write(move |c| outbox::redeliver(c, id, eid))
        .await
        .map_err(db_error)?;
    match outcome {
        outbox::Redelivery::Queued => {}
        outbox::Redelivery::Running => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "the delivery is being attempted right now",
            ));
        }
        outbox::Redelivery::TargetDisabled => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "the target of this delivery is disabled (it answered 410 Gone); re-enable it (PUT the policy with \"disabled\": false) first",
            ));
        }
        outbox::Redelivery::TargetGone => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
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
    load_policy(&app, &project, id).await?;
    let n = app
        .store
        .write(move |c| outbox::redeliver_dead_since(c, id, since))
        .await
        .map_err(db_error)?;
    tracing::info!(policy = id, deliveries = n, since, by = %caller.name(), "redelivery of dead deliveries requested");
    Ok(Json(json!({"redelivered": n})))
}

/// `GET /api/v2.0/configurations` (system administrator).
pub async fn get_configurations(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    auth::require_admin(&app, &headers).await?;
    let on = app.notifications_enabled.load(Ordering::Relaxed);
    Ok(Json(
        json!({"notification_enable": {"value": on, "editable": true}}),
    ))
}

/// `PUT /api/v2.0/configurations` with `{"notification_enable": bool}` (system administrator).
pub async fn put_configurations(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let caller = auth::require_admin(&app, &headers).await?;
    let v: serde_json::Map<String, Value> = json_body(&body)?;
    let mut switch = None;
    for (k, v) in v {
        match (k.as_str(), v) {
            ("notification_enable", Value::Bool(b)) => switch = Some(b),
            ("notification_enable", other) => {
                return Err(ApiError::bad_request(format!(
                    "notification_enable: {other} is not true or false"
                )));
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "{other}: not a configuration wharf has"
                )));
            }
        }
    }
    if let Some(on) = switch {
        app.store
            .write(move |c| policies::set_notification_enabled(c, on))
            .await
            .map_err(db_error)?;
        app.notifications_enabled.store(on, Ordering::Relaxed);
        app.store
            .outbox_wake()
            .wake(crate::store::db::Due::Anywhere);
        tracing::info!(notification_enable = on, by = %caller.name(), "system notification switch changed");
    }
    let on = app.notifications_enabled.load(Ordering::Relaxed);
    Ok(Json(
        json!({"notification_enable": {"value": on, "editable": true}}),
    ))
}

/// Timestamps in API answers (kept for callers that need a parsed time).
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}
