//! `Idempotency-Key` on the side endpoint's reports (the IETF httpapi draft "The
//! Idempotency-Key HTTP Header Field", as Stripe and Svix take it): a scanner that retries a
//! report — its answer lost to a timeout or a dropped connection — with the same key gets the
//! first report's answer (`201`, the same `event_id`, `Idempotent-Replayed: true`), and the
//! event is recorded and delivered once. The same key with another request (another body or
//! endpoint) is `422`. A request without the header is recorded every time, as before.
//!
//! Keys are kept per caller (the side token, or the admin) for a day
//! ([`store::idempotency::KEPT_FOR`]), in the store, so a retry may land on any replica. The
//! key is written in the event's own transaction ([`keep_with`]); two requests with one key at
//! the same instant make one event, and the second is answered as a replay, or (PostgreSQL,
//! while the first's transaction is still open) `409`, as the draft has it.

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::ApiError;
use crate::events::sink::With;
use crate::store::{self, Store, idempotency};

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// The answer header that marks a replayed answer (Stripe's name).
pub const REPLAYED: &str = "idempotent-replayed";

/// Longest key accepted (Stripe's limit).
pub const MAX_LEN: usize = 255;

/// A request's key, with what identifies the request.
#[derive(Debug, Clone)]
pub struct Key {
    scope: String,
    key: String,
    fingerprint: String,
}

impl Key {
    /// The key of a request to `path` with `body` by a caller whose keys are `scope`, when it
    /// sent one. The value is
    /// a key of 1 to [`MAX_LEN`] visible ASCII characters, bare (Stripe) or as a quoted
    /// structured-field string (the draft); anything else is `400`.
    pub fn from_request(
        headers: &HeaderMap,
        scope: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Option<Key>, ApiError> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "Idempotency-Key: sent more than once",
            ));
        }
        let key = parse(value).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key: not a key (1 to {MAX_LEN} visible ASCII characters, bare or quoted)"
            ))
        })?;
        let mut h = Sha256::new();
        h.update(path.as_bytes());
        h.update(b"\n");
        h.update(body);
        Ok(Some(Key {
            scope: scope.to_string(),
            key: key.to_string(),
            fingerprint: hex::encode(h.finalize()),
        }))
    }
}

/// The key in a header value: visible ASCII, in double quotes or not (no quote, backslash or
/// space inside).
fn parse(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?;
    let s = match s.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => s,
    };
    let ok = (1..=MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    ok.then_some(s)
}

/// The answer to a request whose key a recorded report has, if any: that report's answer when
/// the request is the same, `422` when it is not.
pub async fn replay(store: &Store, key: &Key) -> Result<Option<Response>, ApiError> {
    Ok(find(store, key).await?.map(|kept| answer(key, &kept)))
}

/// After this request's event (`event_id`) was written with [`keep_with`]: `None` when the
/// key is this request's (its event recorded); else the answer of the report that has the key
/// (a concurrent request with the same key was first), or `409` while that report is still
/// being recorded (another replica's transaction: it is not waited for) — retry it.
pub async fn unless_ours(
    store: &Store,
    key: &Key,
    event_id: uuid::Uuid,
) -> Result<Option<Response>, ApiError> {
    let ours = event_id.to_string();
    Ok(match find(store, key).await? {
        Some(kept) if kept.event_id == ours => None,
        Some(kept) => Some(answer(key, &kept)),
        None => Some(
            ApiError::conflict(
                "Idempotency-Key: a request with this key is being processed; retry it",
            )
            .into_response(),
        ),
    })
}

async fn find(store: &Store, key: &Key) -> Result<Option<idempotency::Kept>, ApiError> {
    let (scope, k) = (key.scope.clone(), key.key.clone());
    let since = store::now_ms() - idempotency::KEPT_FOR.as_millis() as i64;
    store
        .read(move |c| idempotency::find(c, &scope, &k, since))
        .await
        .map_err(|e| ApiError::internal("reading an idempotency key failed", e))
}

fn answer(key: &Key, kept: &idempotency::Kept) -> Response {
    if kept.fingerprint != key.fingerprint {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_ENTITY",
            "Idempotency-Key: already used for another request (another body or endpoint); use a new key",
        )
        .into_response();
    }
    let body: Value = serde_json::from_str(&kept.answer).unwrap_or(Value::Null);
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    r.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    r
}

/// The write that keeps `key` with the event `event_id` and its `answer`, in the event's
/// transaction: when a report already has the key, the event is not recorded.
pub fn keep_with(key: &Key, event_id: uuid::Uuid, answer: &Value) -> With {
    let (scope, k) = (key.scope.clone(), key.key.clone());
    let kept = idempotency::Kept {
        fingerprint: key.fingerprint.clone(),
        event_id: event_id.to_string(),
        answer: answer.to_string(),
    };
    Arc::new(move |c, _event| idempotency::keep(c, &scope, &k, &kept, store::now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: &'static str) -> Result<Option<Key>, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static(v));
        Key::from_request(&h, "side-api", "/api/v1/events/scan", b"{}")
    }

    #[test]
    fn keys_are_bare_or_quoted_visible_ascii() {
        assert_eq!(key("abc-123").unwrap().unwrap().key, "abc-123");
        assert_eq!(
            key("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
                .unwrap()
                .unwrap()
                .key,
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
        for bad in ["", "\"\"", "a b", "\"abc", "a\"b", "a\\b"] {
            assert!(key(bad).is_err(), "{bad:?}");
        }
        let long = HeaderValue::from_str(&"k".repeat(MAX_LEN + 1)).unwrap();
        assert!(parse(&long).is_none());
        let longest = HeaderValue::from_str(&"k".repeat(MAX_LEN)).unwrap();
        assert!(parse(&longest).is_some());
        assert!(
            Key::from_request(&HeaderMap::new(), "side-api", "/", b"")
                .unwrap()
                .is_none()
        );
        let mut twice = HeaderMap::new();
        twice.append(HEADER, HeaderValue::from_static("a"));
        twice.append(HEADER, HeaderValue::from_static("b"));
        assert!(Key::from_request(&twice, "side-api", "/", b"").is_err());
    }

    #[test]
    fn the_fingerprint_covers_the_endpoint_and_the_body() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("k"));
        let fp = |path: &str, body: &[u8]| {
            Key::from_request(&h, "side-api", path, body)
                .unwrap()
                .unwrap()
                .fingerprint
        };
        let scan = fp("/api/v1/events/scan", b"{\"a\":1}");
        assert_eq!(scan, fp("/api/v1/events/scan", b"{\"a\":1}"));
        assert_ne!(scan, fp("/api/v1/events/scan", b"{\"a\":2}"));
        assert_ne!(scan, fp("/api/v1/events/quota", b"{\"a\":1}"));
    }
}
