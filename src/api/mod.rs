//! API: wharf's own HTTP API (axum), on the same port as the proxy.
//!
//! Errors are JSON problem bodies `{"errors":[{"code","message"}]}` (Harbor's shape).

use std::sync::Weak;

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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message}]});
        (self.status, axum::Json(body)).into_response()
    }
}

/// The API router. Holds the app weakly: the app owns the router.
pub fn router(app: Weak<App>) -> Router {
    Router::new()
        .fallback(|| async { ApiError::not_found("no such API path") })
        .with_state(app)
}
