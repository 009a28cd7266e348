//! API: the HTTP API (axum), on the same port as the proxy. One file per part:
//!
//! - Harbor's: [`projects`], [`users`], [`system`] (systeminfo, ping, health), [`webhooks`]
//!   (policies, last triggers, events; what a client sends and its checks in `webhooks::input`,
//!   test notifications and previews in `webhooks::test`), [`configurations`] (the system
//!   notification switch), [`executions`] (executions, tasks, jobs), [`redeliver`] (one
//!   execution again, or a policy's dead ones);
//!   every list with Harbor's conventions ([`list`]: paging, `X-Total-Count`, `Link`;
//!   [`query`]: `q` and `sort`; [`records`]: the fields of listed policies);
//! - wharf's own: [`events`] (the event log), [`side`] (scan and quota reports, quota view),
//!   [`execution`] (one execution, its payload, an attempt's request and response or its log,
//!   the test of a stored policy).
//!
//! What the handlers share (Harbor's times, the database-failure answer, event types by name,
//! `{project}` resolved and authorized) is in `common`.
//!
//! State-changing requests from other sites are refused ([`csrf`]).
//!
//! Authentication is HTTP Basic ([`auth`]); failed logins are throttled per client address
//! ([`throttle`]). Errors are JSON problem bodies `{"errors":[{"code","message"}]}` (Harbor's
//! shape); internals are never included.

pub mod auth;
mod common;
pub mod configurations;
pub mod csrf;
pub mod events;
pub mod execution;
pub mod executions;
pub mod idempotency;
pub mod list;
pub mod projects;
pub mod query;
pub mod records;
pub mod redeliver;
pub mod side;
pub mod system;
pub mod throttle;
pub mod users;
pub mod webhooks;

use std::sync::{Arc, Weak};

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::app::App;

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
    }
    /// A server-side failure: logged in full, reported without internals.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            format!("{what}; see the wharf log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message}]});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"wharf\""),
            );
        }
        resp
    }
}

/// The app, as API handlers get it.
#[derive(Clone)]
pub struct ApiState(Weak<App>);

impl ApiState {
    /// The state of handlers and middleware of `app` (the UI's too).
    pub fn new(app: Weak<App>) -> ApiState {
        ApiState(app)
    }

    /// The running app (it outlives every request it serves).
    pub fn app(&self) -> Result<Arc<App>, ApiError> {
        self.0.upgrade().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "shutting down",
            )
        })
    }
}

/// `GET /metrics`: Prometheus text format (queue depths read at scrape time).
async fn metrics(
    axum::extract::State(s): axum::extract::State<ApiState>,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    if let Ok(counts) = app.store.read(crate::store::outbox::counts).await {
        for (state, n) in counts {
            app.metrics
                .outbox
                .get_or_create(&crate::metrics::StateLabels {
                    state: state.as_str().to_string(),
                })
                .set(n as i64);
        }
    }
    Ok((
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response())
}

/// Errors axum produces itself (a bad path parameter or query string, a wrong method, a body
/// that is not JSON) come as text; turn them into the API's JSON error shape.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp.headers().get(http::header::ALLOW).cloned();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "UNPROCESSABLE_ENTITY",
        s if s.is_server_error() => "INTERNAL_SERVER_ERROR",
        _ => "ERROR",
    };
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(http::header::ALLOW, a);
    }
    out
}

/// The API router. Holds the app weakly: the app owns the router.
pub fn router(app: Weak<App>) -> Router {
    use axum::routing::{get, post};
    const P: &str = "/api/v2.0/projects/{project}/webhook";
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/events/scan", post(side::scan_report))
        .route("/api/v1/events/quota", post(side::quota_report))
        .route("/api/v1/projects/{project}/quota", get(side::project_quota))
        .route(
            &format!("{P}/policies"),
            get(webhooks::list_policies).post(webhooks::create_policy),
        )
        .route(&format!("{P}/policies/test"), post(webhooks::test_policy))
        .route(
            &format!("{P}/policies/preview"),
            post(webhooks::preview_policy),
        )
        .route(
            &format!("{P}/policies/{{id}}/test"),
            post(execution::test_stored),
        )
        .route(
            &format!("{P}/policies/{{id}}"),
            get(webhooks::get_policy)
                .put(webhooks::update_policy)
                .delete(webhooks::delete_policy),
        )
        .route(
            &format!("{P}/policies/{{id}}/executions"),
            get(executions::executions),
        )
        .route(
            &format!("{P}/policies/{{id}}/executions/{{eid}}"),
            get(execution::get),
        )
        .route(
            &format!("{P}/policies/{{id}}/executions/{{eid}}/payload"),
            get(execution::payload),
        )
        .route(
            &format!("{P}/policies/{{id}}/executions/{{eid}}/tasks"),
            get(executions::tasks),
        )
        .route(
            &format!("{P}/policies/{{id}}/executions/{{eid}}/tasks/{{tid}}"),
            get(execution::task),
        )
        .route(&format!("{P}/jobs"), get(executions::jobs))
        .route(
            &format!("{P}/policies/{{id}}/executions/{{eid}}/tasks/{{tid}}/log"),
            get(execution::task_log),
        )
        .route(
            &format!("{P}/policies/{{id}}/executions/{{eid}}/redeliver"),
            post(redeliver::redeliver_one),
        )
        .route(
            &format!("{P}/policies/{{id}}/redeliver"),
            post(redeliver::redeliver_dead),
        )
        .route(&format!("{P}/lasttrigger"), get(webhooks::last_trigger))
        .route(&format!("{P}/events"), get(webhooks::supported_events))
        .route(
            "/api/v2.0/configurations",
            get(configurations::get_configurations).put(configurations::put_configurations),
        )
        .route(
            "/api/v2.0/projects",
            get(projects::list).head(projects::exists),
        )
        .route("/api/v2.0/projects/{project}", get(projects::get))
        .route("/api/v2.0/users", get(users::list))
        .route("/api/v2.0/users/current", get(users::current))
        .route("/api/v2.0/users/search", get(users::search))
        .route("/api/v2.0/users/{id}", get(users::get))
        .route("/api/v2.0/systeminfo", get(system::systeminfo))
        .route("/api/v2.0/ping", get(system::ping))
        .route("/api/v2.0/health", get(system::health))
        // both read the request's body first: a client that sent one may use the connection
        // again (an unread body would make the server close it under the client's next request)
        .fallback(|uri: http::Uri, _body: axum::body::Bytes| async move {
            ApiError::not_found(format!("path {} was not found", uri.path()))
        })
        .method_not_allowed_fallback(
            |method: http::Method, uri: http::Uri, _body: axum::body::Bytes| async move {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    format!("{method} is not allowed on {}", uri.path()),
                )
            },
        )
        .layer(axum::middleware::map_response(json_errors))
        // state-changing requests another site made a browser send: 403 (415 for a body that
        // is not JSON)
        .layer(axum::middleware::from_fn_with_state(
            ApiState(app.clone()),
            csrf::layer,
        ))
        // failed logins per client address: 429 + Retry-After when there were too many
        .layer(axum::middleware::from_fn_with_state(
            ApiState(app.clone()),
            throttle::layer,
        ))
        // a bug in a handler answers 500 (JSON, through json_errors) instead of dropping the
        // connection
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal("an API handler failed", "panic").into_response()
        }))
        .with_state(ApiState(app))
}
