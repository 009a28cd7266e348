//! The side endpoint: what registry traffic cannot show, reported by scanners and quota tools.
//!
//! - `POST /api/v1/events/scan` → SCANNING_COMPLETED (status `Success`, with a Trivy or
//!   scanner-adapter `report`), SCANNING_FAILED (status `Error`, with `error`) or
//!   SCANNING_STOPPED (status `Stopped`: the scan was stopped); `scan_type` `vulnerability`
//!   (the default) or `sbom` (no report is read; `sbom_digest` names the SBOM);
//! - `POST /api/v1/events/quota` → QUOTA_EXCEED (for registries or tools with quotas of their own).
//!
//! Authentication: `Authorization: Bearer <side_api_token>`, or the system administrator's
//! Basic credentials. Bodies over `side.max_body` get 413; invalid input a 400 naming the field.
//! Validation happens before anything is written; the event is committed before the answer.
//! A report may carry an `Idempotency-Key` ([`super::idempotency`]): retried with it, it is
//! answered as the first time, without a second event.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::auth;
use super::idempotency::{self, Key};
use super::{ApiError, ApiState};
use crate::app::App;
use crate::events::{Event, EventKind, QuotaInfo, ScanInfo, ScanStatus, ScanType, Severity, scan};
use crate::observe::manifest::ACCEPT_ALL;
use crate::route::{Digest, Repository, is_tag};
use crate::store::knowledge;

/// Who posted to the side endpoint.
enum Caller {
    /// The bearer of `side_api_token`.
    Token,
    /// The system administrator (Basic credentials), by name.
    Admin(String),
}

impl Caller {
    /// The name events and logs give the caller (`side-api` for the token).
    fn name(&self) -> String {
        match self {
            Caller::Token => "side-api".into(),
            Caller::Admin(name) => name.clone(),
        }
    }

    /// Whose idempotency keys a request's key is among: the token's and the administrator's
    /// are apart, whatever the administrator is called.
    fn key_scope(&self) -> String {
        match self {
            Caller::Token => "token".into(),
            Caller::Admin(name) => format!("user:{name}"),
        }
    }
}

/// Who may post to the side endpoint.
async fn authorize(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    if let Some(token) = bearer {
        let ok = app
            .config
            .side_api_token
            .as_ref()
            .is_some_and(|t| bool::from(token.as_bytes().ct_eq(t.expose().as_bytes())));
        return if ok {
            Ok(Caller::Token)
        } else {
            Err(ApiError::unauthorized())
        };
    }
    auth::require_admin(app, headers)
        .await
        .map(|c| Caller::Admin(c.name().to_string()))
}

async fn read_limited(body: axum::body::Body, limit: u64) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("body: larger than side.max_body ({limit} bytes)"),
            ))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "body: could not be read: {e}"
        ))),
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    // First the text, then the shape: a syntax error has a position, not a field; and serde
    // would take a JSON array for a struct, field by field.
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body: not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("body: must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.contains('?') {
            "body".to_string()
        } else {
            path
        };
        ApiError::bad_request(format!("{field}: {}", e.into_inner()))
    })
}

/// The artifact a report is about, as given and as completed by wharf.
struct Subject {
    repo: Repository,
    tags: Vec<String>,
    digest: Option<String>,
}

fn subject_fields(
    repository: &str,
    tag: Option<String>,
    digest: Option<String>,
) -> Result<(Repository, Option<String>, Option<Digest>), ApiError> {
    let repo = Repository::parse(repository).ok_or_else(|| {
        ApiError::bad_request(format!(
            "repository: {repository:?} is not a repository name"
        ))
    })?;
    let tag = tag.filter(|t| !t.is_empty());
    if let Some(t) = &tag
        && !is_tag(t)
    {
        return Err(ApiError::bad_request(format!(
            "tag: {t:?} is not a valid tag"
        )));
    }
    let digest = match digest.filter(|d| !d.is_empty()) {
        Some(d) => Some(
            Digest::parse(&d)
                .ok_or_else(|| ApiError::bad_request(format!("digest: {d:?} is not a digest")))?,
        ),
        None => None,
    };
    if tag.is_none() && digest.is_none() {
        return Err(ApiError::bad_request(
            "tag, digest: give at least one of them",
        ));
    }
    Ok((repo, tag, digest))
}

/// Fill in the digest of a tag or the tags of a digest: from wharf's knowledge, else from the
/// registry. What cannot be found stays empty.
async fn complete(
    app: &App,
    repo: Repository,
    tag: Option<String>,
    digest: Option<Digest>,
) -> Subject {
    let mut digest = digest.map(|d| d.to_string());
    let mut tags: Vec<String> = tag.iter().cloned().collect();
    if digest.is_none()
        && let Some(t) = &tag
    {
        let (r, t2) = (repo.to_string(), t.clone());
        digest = app
            .store
            .read(move |c| knowledge::digest_of_tag(c, &r, &t2))
            .await
            .ok()
            .flatten();
        if digest.is_none() {
            let path = format!("/v2/{repo}/manifests/{t}");
            let mut h = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(ACCEPT_ALL) {
                h.insert(http::header::ACCEPT, v);
            }
            if let Ok((parts, _)) = app.registry.fetch(Method::HEAD, &path, h, 0).await
                && parts.status.is_success()
            {
                digest = parts
                    .headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(Digest::parse)
                    .map(|d| d.to_string());
            }
        }
    }
    if tags.is_empty()
        && let Some(d) = &digest
    {
        let (r, d2) = (repo.to_string(), d.clone());
        tags = app
            .store
            .read(move |c| knowledge::tags_of(c, &r, &d2))
            .await
            .unwrap_or_default();
        if tags.is_empty() {
            // pushed behind wharf's back (or before it was there): the registry knows
            tags = crate::observe::registry_tags_pointing_at(&app.registry, &repo, d).await;
        }
    }
    Subject { repo, tags, digest }
}

/// The event shell for a side report.
async fn event_for(app: &App, kind: EventKind, s: &Subject, operator: &str) -> Event {
    let mut e = Event::new(kind, &s.repo, operator);
    e.public = app.config.is_public(s.repo.project());
    e.tags = s.tags.clone();
    e.digest = s.digest.clone();
    e.resource_url = Event::oci_resource_url(
        &app.config.external_host(),
        s.repo.as_str(),
        e.tags.first().map(String::as_str),
        s.digest.as_deref(),
    );
    if let Some(d) = &s.digest {
        let (r, d2) = (s.repo.to_string(), d.clone());
        if let Ok(Some(a)) = app
            .store
            .read(move |c| knowledge::artifact(c, &r, &d2))
            .await
        {
            e.media_type = a.media_type;
            e.size = a.size;
        }
    }
    e
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanInput {
    repository: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    status: String,
    /// `vulnerability` (the default) or `sbom`.
    #[serde(default)]
    scan_type: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    report: Option<Value>,
    /// Digest of the SBOM an sbom scan produced.
    #[serde(default)]
    sbom_digest: Option<String>,
}

fn created(e: &Event) -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({
            "event_id": e.id.to_string(),
            "type": e.kind.harbor_type(),
            "repository": e.repository,
            "tags": e.tags,
            "digest": e.digest,
        })),
    )
}

/// Record `e` (with the request's idempotency key, if any) and answer.
async fn record(app: &App, e: Event, key: Option<Key>) -> Result<Response, ApiError> {
    let (status, Json(answer)) = created(&e);
    let id = e.id;
    let with = key.as_ref().map(|k| idempotency::keep_with(k, id, &answer));
    if !app.events.durable_waited(e, with).await {
        return Err(ApiError::internal(
            "recording the event failed",
            "database write failed",
        ));
    }
    // a concurrent request with the same key may have been recorded instead of this one
    if let Some(k) = &key
        && let Some(replayed) = idempotency::unless_ours(&app.store, k, id).await?
    {
        return Ok(replayed);
    }
    Ok((status, Json(answer)).into_response())
}

/// Bodies up to this size are parsed where they are read; larger ones (a scan report may hold
/// 16 MiB of JSON, tens of milliseconds to parse) on a blocking thread, not on a runtime worker
/// that serves other requests meanwhile.
const PARSE_IN_PLACE: usize = 64 << 10;

async fn parse_off_runtime<T>(raw: bytes::Bytes) -> Result<T, ApiError>
where
    T: for<'de> Deserialize<'de> + Send + 'static,
{
    if raw.len() <= PARSE_IN_PLACE {
        return parse_json(&raw);
    }
    tokio::task::spawn_blocking(move || parse_json(&raw))
        .await
        .map_err(|e| ApiError::internal("parsing the body failed", e))?
}

/// `POST /api/v1/events/scan`
pub async fn scan_report(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    side_request(&s, &headers, "/api/v1/events/scan", body, scan_event).await
}

/// Every side request: the caller is authorized (before the body is read), the body read
/// within `side.max_body`; a request whose idempotency key a recorded report has is answered
/// as that report was; any other is parsed, its event made by `event_of` from the caller's
/// name and the input, and recorded.
async fn side_request<T, F, Fut>(
    s: &ApiState,
    headers: &HeaderMap,
    path: &str,
    body: axum::body::Body,
    event_of: F,
) -> Result<Response, ApiError>
where
    T: for<'de> Deserialize<'de> + Send + 'static,
    F: FnOnce(std::sync::Arc<App>, String, T) -> Fut,
    Fut: std::future::Future<Output = Result<Event, ApiError>>,
{
    let app = s.app()?;
    let caller = authorize(&app, headers).await?;
    let raw = read_limited(body, app.config.side.max_body).await?;
    let key = Key::from_request(headers, &caller.key_scope(), path, &raw)?;
    if let Some(k) = &key
        && let Some(answered) = idempotency::replay(&app.store, k).await?
    {
        return Ok(answered);
    }
    let input = parse_off_runtime(raw).await?;
    let e = event_of(app.clone(), caller.name(), input).await?;
    record(&app, e, key).await
}

/// The event of a scan report.
async fn scan_event(
    app: std::sync::Arc<App>,
    caller: String,
    input: ScanInput,
) -> Result<Event, ApiError> {
    let (repo, tag, digest) = subject_fields(&input.repository, input.tag, input.digest)?;
    let status = match input.status.as_str() {
        "Success" => ScanStatus::Success,
        "Error" => ScanStatus::Error,
        "Stopped" => ScanStatus::Stopped,
        other => {
            return Err(ApiError::bad_request(format!(
                "status: {other:?} is not Success, Error or Stopped"
            )));
        }
    };
    let scan_type = match input.scan_type.as_deref() {
        None | Some("") | Some("vulnerability") => ScanType::Vulnerability,
        Some("sbom") => ScanType::Sbom,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "scan_type: {other:?} is not vulnerability or sbom"
            )));
        }
    };
    let sbom_digest = match input.sbom_digest.filter(|d| !d.is_empty()) {
        Some(d) if scan_type == ScanType::Sbom => Some(
            Digest::parse(&d)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("sbom_digest: {d:?} is not a digest"))
                })?
                .to_string(),
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "sbom_digest: only for scan_type sbom",
            ));
        }
        None => None,
    };
    let scanner = || {
        input
            .report
            .as_ref()
            .and_then(|r| r.get("scanner").cloned())
            .and_then(|s| serde_json::from_value(s).ok())
    };
    let mut info = match (status, scan_type) {
        (ScanStatus::Success, ScanType::Vulnerability) => {
            let report = input
                .report
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("report: required when status is Success"))?;
            scan::summarize(report, app.config.side.max_vulnerabilities)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        (ScanStatus::Success, ScanType::Sbom) => ScanInfo {
            status,
            severity: Severity::NotRated,
            completed_at: chrono::Utc::now(),
            scanner: scanner(),
            report_id: uuid::Uuid::now_v7().to_string(),
            ..ScanInfo::default()
        },
        (ScanStatus::Error, _) => {
            let error = input
                .error
                .clone()
                .filter(|e| !e.trim().is_empty())
                .ok_or_else(|| ApiError::bad_request("error: required when status is Error"))?;
            ScanInfo {
                status,
                severity: Severity::None,
                completed_at: chrono::Utc::now(),
                scanner: scanner(),
                error: Some(error),
                report_id: uuid::Uuid::now_v7().to_string(),
                ..ScanInfo::default()
            }
        }
        (ScanStatus::Stopped, _) => ScanInfo {
            status,
            severity: Severity::None,
            completed_at: chrono::Utc::now(),
            scanner: scanner(),
            error: input.error.clone().filter(|e| !e.trim().is_empty()),
            report_id: uuid::Uuid::now_v7().to_string(),
            ..ScanInfo::default()
        },
    };
    info.scan_type = scan_type;
    info.sbom_digest = sbom_digest;
    let kind = status.kind();
    let subject = complete(&app, repo, tag, digest).await;
    let operator = input
        .operator
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| "auto".into());
    let mut e = event_for(&app, kind, &subject, &operator).await;
    e.scan = Some(info);
    tracing::info!(repository = %e.repository, kind = kind.harbor_type(), by = %caller, "scan report received");
    Ok(e)
}

/// `GET /api/v1/projects/{project}/quota`: limit and usage (system or project administrator).
pub async fn project_quota(
    State(s): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(project): axum::extract::Path<String>,
) -> Result<Json<crate::quota::ProjectQuota>, ApiError> {
    let app = s.app()?;
    if !crate::route::is_name_component(&project) {
        return Err(ApiError::bad_request(format!(
            "project: {project:?} is not a project name"
        )));
    }
    auth::require_project_admin(&app, &headers, &project).await?;
    let q = crate::quota::project_quota(app.quota(), &project)
        .await
        .map_err(|e| ApiError::internal("reading the quota failed", e))?;
    Ok(Json(q))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaInput {
    repository: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    details: String,
}

/// `POST /api/v1/events/quota`
pub async fn quota_report(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    side_request(&s, &headers, "/api/v1/events/quota", body, quota_event).await
}

/// The event of a quota report.
async fn quota_event(
    app: std::sync::Arc<App>,
    caller: String,
    input: QuotaInput,
) -> Result<Event, ApiError> {
    if input.details.trim().is_empty() {
        return Err(ApiError::bad_request("details: must not be empty"));
    }
    let (repo, tag, digest) = subject_fields(&input.repository, input.tag, input.digest)?;
    let subject = complete(&app, repo, tag, digest).await;
    let operator = input
        .operator
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| caller.clone());
    let mut e = event_for(&app, EventKind::QuotaExceed, &subject, &operator).await;
    e.quota = Some(QuotaInfo {
        details: input.details,
        ..QuotaInfo::default()
    });
    tracing::info!(repository = %e.repository, by = %caller, "quota report received");
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A large body (a scan report) is parsed off the runtime's workers: meanwhile the other
    /// tasks of a single-threaded runtime still run. A small one is parsed in place.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_body_is_parsed_off_the_runtime() {
        let items: Vec<String> = (0..100_000).map(|i| format!("{{\"n\":{i}}}")).collect();
        let body = format!("{{\"items\":[{}]}}", items.join(","));
        assert!(body.len() > PARSE_IN_PLACE);
        let parsing = Arc::new(AtomicBool::new(true));
        let seen = parsing.clone();
        // runs only when the test's task gives the thread up
        let other = tokio::spawn(async move { seen.load(Ordering::SeqCst) });
        let v: Value = parse_off_runtime(bytes::Bytes::from(body)).await.unwrap();
        parsing.store(false, Ordering::SeqCst);
        assert_eq!(v["items"][99_999]["n"], 99_999);
        assert!(
            other.await.unwrap(),
            "another task ran while the body was parsed"
        );
        let small: Value = parse_off_runtime(bytes::Bytes::from_static(b"{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(small["a"], 1);
    }
}
