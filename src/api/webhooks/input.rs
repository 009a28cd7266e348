//! What a client sends to create, change or test a policy, and its checks: target shapes,
//! addresses (the SSRF guard), custom payload fields and templates.

use http::HeaderValue;
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use super::{MASK, event_kind};
use crate::app::App;
use crate::dispatch::guard::Guard;
use crate::dispatch::policy::{Filters, Policy, Target, TargetKind};
use crate::events::EventKind;
use crate::events::format::{self, PayloadFormat, RenderCtx, RenderError};
use crate::events::template;

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
    pub(in crate::api) targets: Option<Vec<TargetInput>>,
    #[serde(default)]
    filters: Option<Filters>,
}

/// A JSON object body: the text first (a syntax error has a position), then the shape (serde
/// would take an array for a struct, field by field).
pub(in crate::api) fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
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

pub(in crate::api) fn json_kind(v: &Value) -> &'static str {
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
pub(in crate::api) fn target_shape(
    kind: Option<&str>,
    payload_format: Option<&str>,
    field: &dyn Fn(&str) -> String,
) -> Result<(TargetKind, Option<PayloadFormat>), ApiError> {
    let kind = match kind.map_or(Some(TargetKind::Http), TargetKind::parse) {
        Some(k) => k,
        None => {
            return Err(ApiError::bad_request(format!(
                "{}: {:?} is not http or slack",
                field("type"),
                kind.unwrap_or_default()
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
pub(in crate::api) async fn validate_targets(
    guard: &Guard,
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
        guard
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
pub(in crate::api) fn custom_fields(
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
pub(in crate::api) fn check_templates(
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
pub(in crate::api) fn template_problem(e: &RenderError) -> String {
    match e {
        RenderError::Template(t) => t.to_string(),
        RenderError::NoTemplate | RenderError::Aborted(_) => e.to_string(),
    }
}

pub(in crate::api) async fn validate_policy(
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
    for (key, patterns) in [
        ("filters.repositories", &filters.repositories),
        ("filters.tags", &filters.tags),
    ] {
        crate::glob::check_all(key, patterns).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let old_targets = old.map(|p| p.targets.as_slice()).unwrap_or(&[]);
    let targets = validate_targets(
        app.sender.guard(),
        input.targets.unwrap_or_default(),
        old_targets,
    )
    .await?;
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
