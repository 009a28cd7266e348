//! `Custom` payloads: a target's `payload_template`, rendered with minijinja (Jinja2's language)
//! in a sandbox.
//!
//! The sandbox: no loader (`include`, `import` and `extends` find nothing: a template reads no
//! file), no function that reaches the network or the environment, and bounded work. A render
//! stops with an error when it uses up its fuel ([`FUEL`]: about one unit per instruction and
//! per 64 bytes of data it makes, so both time and memory are bounded), when macros nest deeper
//! than [`RECURSION_LIMIT`], when its output passes [`MAX_OUTPUT_BYTES`], or when it has run for
//! [`TIME_LIMIT`] (checked as output is written; fuel bounds the rest). A template is at most
//! [`MAX_TEMPLATE_BYTES`]. Undefined values may be tested (`{% if x %}`, `x is defined`,
//! `x|default(…)`) but not printed or looked into: a typo is an error, found when the policy is
//! saved (the template is rendered against a sample of every event type it subscribes to).
//!
//! The data ([`context`]): the Default payload (`type`, `operator`, `event_data`) with
//! `occur_at` as RFC 3339 (`occur_at_unix`: Unix seconds), plus `event_id`, `project` (`id`,
//! `name`, `public`) and `link` (the artifact's URL when `external_url` is set, else none).
//!
//! Filters besides minijinja's built-ins (`default`, `tojson`, `replace`, `join`, `length`,
//! `upper`, …): `shortdigest` (`sha256:9e2c…` → its first 12 hex digits, or `n`), and
//! `datetimeformat` (an RFC 3339 time or Unix seconds, with a strftime format; UTC).
//!
//! With a JSON content type (`application/json`, `…+json`) the output must parse as JSON.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use minijinja::value::{Serde, Value as MjValue};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Value, json};

use super::Event;
use super::format::{self, Payload, RenderCtx};

/// The largest template, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 8 * 1024;

/// The largest output, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// The work one render may do (minijinja's fuel: about one per instruction and per 64 bytes of
/// data made).
pub const FUEL: u64 = 200_000;

/// How deep macro calls may nest.
pub const RECURSION_LIMIT: usize = 32;

/// How long one render may take.
pub const TIME_LIMIT: Duration = Duration::from_secs(1);

/// The content type of a target that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// The longest content type.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// Why a template cannot be used, or did not render.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the template is {len} bytes; at most {MAX_TEMPLATE_BYTES} are allowed")]
    TooLong { len: usize },
    /// A syntax or render error of the engine, with its line.
    #[error("{message}")]
    Engine {
        line: Option<usize>,
        message: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("the output passed {MAX_OUTPUT_BYTES} bytes and was cut off")]
    OutputTooLarge,
    #[error("rendering ran longer than {} ms and was stopped", TIME_LIMIT.as_millis())]
    TimeLimit,
    #[error(
        "the output is not JSON (content type {content_type}): line {line} column {column} of the output: {source}"
    )]
    NotJson {
        content_type: String,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
}

impl TemplateError {
    /// The template line the error is at, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            TemplateError::Engine { line, .. } => *line,
            TemplateError::TooLong { .. }
            | TemplateError::OutputTooLarge
            | TemplateError::TimeLimit
            | TemplateError::NotJson { .. } => None,
        }
    }
}

/// Does this content type say JSON (`application/json`, `application/…+json`)?
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    matches!(kind, "application" | "text") && (sub == "json" || sub.ends_with("+json"))
}

/// Is `ct` usable as a target's content type: `type/subtype` with optional parameters, a valid
/// header value, at most [`MAX_CONTENT_TYPE_BYTES`]? `Err` says why not.
pub fn check_content_type(ct: &str) -> Result<(), String> {
    if ct.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(format!("at most {MAX_CONTENT_TYPE_BYTES} bytes"));
    }
    if http::HeaderValue::from_str(ct).is_err() {
        return Err("must be a valid HTTP header value (no control characters)".into());
    }
    let essence = ct.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => Ok(()),
        _ => Err(format!(
            "{ct:?} is not a media type (type/subtype, e.g. application/json)"
        )),
    }
}

/// The data a template sees for `event` (see the module doc).
pub fn context(event: &Event, ctx: &RenderCtx) -> Value {
    let mut v = format::default_payload(event);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "occur_at".into(),
            json!(
                event
                    .occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
        obj.insert("occur_at_unix".into(), json!(event.occurred_at.timestamp()));
        obj.insert("event_id".into(), json!(event.id.to_string()));
        obj.insert(
            "project".into(),
            json!({"id": ctx.project_id, "name": event.project, "public": event.public}),
        );
        obj.insert(
            "link".into(),
            json!(super::chat::artifact_link(
                event,
                ctx.external_url.as_deref()
            )),
        );
    }
    v
}

/// `shortdigest`: the first `n` (default 12) hex digits of a digest (`sha256:…`).
fn shortdigest(value: &str, n: Option<usize>) -> String {
    let hex = value.split_once(':').map(|(_, h)| h).unwrap_or(value);
    hex.chars().take(n.unwrap_or(12)).collect()
}

/// `datetimeformat`: an RFC 3339 time or Unix seconds, formatted with a strftime format
/// (default `%Y-%m-%d %H:%M:%S UTC`), in UTC.
fn datetimeformat(value: MjValue, fmt: Option<String>) -> Result<String, minijinja::Error> {
    use chrono::{DateTime, Utc};
    let bad = |msg: String| minijinja::Error::new(ErrorKind::InvalidOperation, msg);
    let t: DateTime<Utc> = if let Some(s) = value.as_str() {
        DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                bad(format!(
                    "datetimeformat: {s:?} is not an RFC 3339 time: {e}"
                ))
            })?
            .with_timezone(&Utc)
    } else if let Some(secs) = value.as_i64() {
        DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| bad(format!("datetimeformat: {secs} is out of range")))?
    } else {
        return Err(bad(format!(
            "datetimeformat: {value} is neither an RFC 3339 time nor Unix seconds"
        )));
    };
    let fmt = fmt.unwrap_or_else(|| "%Y-%m-%d %H:%M:%S UTC".into());
    let items = chrono::format::StrftimeItems::new(&fmt)
        .parse()
        .map_err(|_| {
            bad(format!(
                "datetimeformat: {fmt:?} is not a valid strftime format"
            ))
        })?;
    let mut out = String::new();
    use std::fmt::Write as _;
    write!(out, "{}", t.format_with_items(items.iter()))
        .map_err(|_| bad(format!("datetimeformat: {fmt:?} cannot format this time")))?;
    Ok(out)
}

/// The one environment: no loader, SemiStrict undefined values, fuel, a recursion limit, the
/// helper filters.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("shortdigest", shortdigest);
    env.add_filter("datetimeformat", datetimeformat);
    env
});

/// The engine's error as a sentence that names the line.
fn engine_error(e: minijinja::Error) -> TemplateError {
    let line = e.line();
    let what = match e.kind() {
        ErrorKind::OutOfFuel => format!(
            "the template did too much work (more than {FUEL} steps or {} MiB of data): a loop that does not end?",
            FUEL * 64 / (1024 * 1024)
        ),
        ErrorKind::TemplateNotFound | ErrorKind::BadInclude => {
            "include, import and extends are not available: a template cannot read other templates or files".to_string()
        }
        kind => match e.detail() {
            Some(d) => format!("{kind}: {d}"),
            None => kind.to_string(),
        },
    };
    let message = match line {
        Some(l) => format!("line {l}: {what}"),
        None => what,
    };
    TemplateError::Engine {
        line,
        message,
        source: e,
    }
}

/// Output with a size limit and a deadline.
struct Bounded {
    buf: Vec<u8>,
    deadline: Instant,
    hit: Option<TemplateError>,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            self.hit = Some(TemplateError::TimeLimit);
            return Err(std::io::Error::other("time limit"));
        }
        if self.buf.len() + data.len() > MAX_OUTPUT_BYTES {
            self.hit = Some(TemplateError::OutputTooLarge);
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compile `source` (length and syntax): `Ok` when it can be rendered.
pub fn compile(source: &str) -> Result<(), TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLong { len: source.len() });
    }
    ENV.template_from_named_str("payload_template", source)
        .map(|_| ())
        .map_err(engine_error)
}

/// Render `source` for `event` as `content_type` (checked to be JSON when it says so).
pub fn render(
    source: &str,
    content_type: &str,
    event: &Event,
    ctx: &RenderCtx,
) -> Result<Payload, TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLong { len: source.len() });
    }
    let tmpl = ENV
        .template_from_named_str("payload_template", source)
        .map_err(engine_error)?;
    let data = MjValue::from(Serde(context(event, ctx)));
    let mut out = Bounded {
        buf: Vec::new(),
        deadline: Instant::now() + TIME_LIMIT,
        hit: None,
    };
    let rendered = tmpl.render_captured_to(data, &mut out).map(|_| ());
    if let Some(hit) = out.hit.take() {
        return Err(hit);
    }
    rendered.map_err(engine_error)?;
    if is_json(content_type)
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&out.buf)
    {
        return Err(TemplateError::NotJson {
            content_type: content_type.to_string(),
            line: e.line(),
            column: e.column(),
            source: e,
        });
    }
    Ok(Payload {
        content_type: Cow::Owned(content_type.to_string()),
        body: out.buf,
    })
}

#[cfg(test)]
mod tests;
