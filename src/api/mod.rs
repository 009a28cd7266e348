//! API: wharf's own HTTP API (axum), on the same port as the proxy.
//!
//! Authentication is HTTP Basic. Errors are JSON problem bodies
//! `{"errors":[{"code","message"}]}` (Harbor's shape); internals are never included.

pub mod auth;
pub mod events;

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

/// The API router. Holds the app weakly: the app owns the router.
pub fn router(app: Weak<App>) -> Router {
    Router::new()
        .route("/api/v1/events", axum::routing::get(events::list))
        .fallback(|| async { ApiError::not_found("no such API path") })
        .with_state(ApiState(app))
}
