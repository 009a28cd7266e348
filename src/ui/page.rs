//! The frame every UI page shares (head, navigation, the notifications-off banner), the UI's
//! error type and its HTML error pages, and small formatting helpers.

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use crate::api::auth::Caller;

/// Who is looking, and what every page shows about the system.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    /// The system switch `notification_enable`.
    pub notifications_on: bool,
}

impl Ctx {
    pub fn is_admin(&self) -> bool {
        matches!(self.caller, Caller::Admin)
    }
}

/// Why a UI page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// An API answer the page cannot use (its status and message).
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("wharf is shutting down")]
    Unavailable,
    #[error("too many failed logins from this address; retry in {0} s")]
    Throttled(u64),
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::Unauthorized => StatusCode::UNAUTHORIZED,
            UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Api { status, .. } => *status,
            UiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            UiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            UiError::Unauthorized => "Sign-in required",
            UiError::Forbidden(_) => "Not allowed",
            UiError::NotFound(_) => "Not found",
            UiError::Api { .. } => "Something went wrong",
            UiError::Unavailable => "Unavailable",
            UiError::Throttled(_) => "Too many failed logins",
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let hint = match &self {
            UiError::Unauthorized => {
                "Sign in with your wharf user name and password (the same as for the API)."
            }
            UiError::Forbidden(_) => "Ask the system administrator for access.",
            _ => "",
        };
        let body = bare(
            self.title(),
            html! {
                main.narrow {
                    h1 { (self.title()) }
                    p role="alert" { (self.to_string()) }
                    @if !hint.is_empty() { p { (hint) } }
                    p { a href="/ui/" { "Back to the projects" } }
                }
            },
        );
        let mut resp = respond(status, body);
        match &self {
            UiError::Unauthorized => {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Basic realm=\"wharf\""),
                );
            }
            UiError::Throttled(secs) => {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(*secs));
            }
            _ => {}
        }
        resp
    }
}

/// An HTML answer.
pub fn respond(status: StatusCode, m: Markup) -> Response {
    (status, axum::response::Html(m.into_string())).into_response()
}

/// The document around `main`, without navigation (error pages).
fn bare(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · wharf" }
                link rel="stylesheet" href="/ui/static/ui.css";
                link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml";
                script src="/ui/static/htmx.min.js" defer {}
                script src="/ui/static/ui.js" defer {}
            }
            body { (main) }
        }
    }
}

/// A full page: header with navigation, the banner while notifications are off, `content`.
pub fn page(ctx: &Ctx, title: &str, crumbs: &[(&str, &str)], content: Markup) -> Markup {
    bare(
        title,
        html! {
            header.top {
                a.brand href="/ui/" { "wharf" }
                nav aria-label="Main" {
                    a href="/ui/" { "Projects" }
                    @if ctx.is_admin() {
                        a href="/ui/events" { "Event Log" }
                    }
                    a href="/ui/catalog" { "Event Catalog" }
                    @if ctx.is_admin() {
                        a href="/ui/settings" { "Settings" }
                    }
                }
                span.who { "Signed in as " strong { (ctx.caller.name()) } }
            }
            @if !ctx.notifications_on {
                div.banner role="status" {
                    strong { "Webhooks are off." }
                    " Notifications are disabled system-wide: no webhook is sent for new events. "
                    @if ctx.is_admin() { a href="/ui/settings" { "Settings" } }
                }
            }
            main {
                @if !crumbs.is_empty() {
                    nav.crumbs aria-label="Breadcrumb" {
                        @for (label, href) in crumbs {
                            a href=(href) { (label) }
                            span aria-hidden="true" { " / " }
                        }
                        span { (title) }
                    }
                }
                (content)
            }
        },
    )
}

/// `2026-12-01 17:05:49 UTC` from an RFC 3339 time; `None` for Harbor's zero time or none.
pub fn when(v: &serde_json::Value) -> Option<String> {
    let s = v.as_str()?;
    if s.starts_with("0001-") {
        return None;
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| {
        t.with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    })
}

/// A JSON value as text for a cell (strings without quotes; null as empty).
pub fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Pretty-printed JSON when `body` is JSON, else the text itself.
pub fn pretty(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_string())
}

/// `s` for the query part of a URL.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A status badge: its class follows the status word.
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "Success" | "Enabled" | "healthy" => "badge ok",
        "Error" | "disabled (410)" => "badge bad",
        "Pending" | "Running" => "badge wait",
        _ => "badge",
    };
    html! { span class=(class) { (status) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_zero_times() {
        assert_eq!(
            when(&serde_json::json!("2026-12-01T17:05:49.123Z")).as_deref(),
            Some("2026-12-01 17:05:49 UTC")
        );
        assert_eq!(when(&serde_json::json!("0001-01-01T00:00:00Z")), None);
        assert_eq!(when(&serde_json::Value::Null), None);
    }

    #[test]
    fn error_pages_escape_and_prompt() {
        let r = UiError::Forbidden("<script>x</script>".into()).into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = UiError::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers().get(http::header::WWW_AUTHENTICATE).unwrap(),
            "Basic realm=\"wharf\""
        );
        let page = bare("t", html! { p { ("<b>") } }).into_string();
        assert!(page.contains("&lt;b&gt;"));
        assert!(!page.contains("style="));
    }
}
