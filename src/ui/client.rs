//! The UI's way to everything it shows and changes: wharf's own HTTP API, called in-process
//! with the caller's credentials (the same router, authorization, validation and messages as a
//! client over the network gets; nothing is read or written around it).

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

use super::page::UiError;

/// Most bytes of an API answer the UI reads.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// One API answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The message of an API error (`{"errors":[{"message"}]}`), else the body as text.
    pub fn message(&self) -> String {
        match self.json()["errors"][0]["message"].as_str() {
            Some(m) => m.to_string(),
            None => String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }

    /// `X-Total-Count`, when the answer is a list.
    pub fn total(&self) -> Option<u64> {
        self.headers
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The answer as a page error (for statuses a page cannot go on with).
    pub fn error(&self) -> UiError {
        match self.status {
            StatusCode::UNAUTHORIZED => UiError::Unauthorized,
            StatusCode::FORBIDDEN => UiError::Forbidden(self.message()),
            StatusCode::NOT_FOUND => UiError::NotFound(self.message()),
            status => UiError::Api {
                status,
                message: self.message(),
            },
        }
    }

    /// The JSON body of a 2xx answer, else [`Answer::error`].
    pub fn ok(self) -> Result<Value, UiError> {
        if self.status.is_success() {
            Ok(self.json())
        } else {
            Err(self.error())
        }
    }
}

/// The API as one caller: its router, called in-process.
#[derive(Clone)]
pub struct Api {
    router: axum::Router,
    /// The `Host` of every call: `external_url`'s (the API builds its links from it).
    host: HeaderValue,
    authorization: HeaderValue,
}

impl Api {
    /// Calls to `router` made with `authorization` (the caller's own header), addressed to
    /// `host` (`App::external_host`).
    pub fn new(router: axum::Router, host: &str, authorization: HeaderValue) -> Api {
        Api {
            router,
            host: HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("localhost")),
            authorization,
        }
    }

    /// Send a request; any status is an [`Answer`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, UiError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::HOST, self.host.clone())
            // the UI addresses projects by name only: an all-digit name is a name, not an id
            .header("x-is-resource-name", "true");
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Body::empty(),
        };
        let req = req.body(body).map_err(|e| UiError::Api {
            status: StatusCode::BAD_REQUEST,
            message: format!("cannot build the request for {path}: {e}"),
        })?;
        let resp = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, MAX_ANSWER)
            .await
            .map_err(|_| UiError::Unavailable)?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Answer, UiError> {
        self.call(Method::GET, path, None).await
    }

    /// GET, 2xx expected.
    pub async fn get_ok(&self, path: &str) -> Result<Value, UiError> {
        self.get(path).await?.ok()
    }
}
