//! Harbor's system endpoints: `GET /api/v2.0/systeminfo`, `GET /api/v2.0/ping`,
//! `GET /api/v2.0/health`.
//!
//! - `systeminfo`: to anyone the authentication facts (wharf: `db_auth`, no self-registration);
//!   to an authenticated caller also the version (wharf's own, `v<version>-wharf`), URLs, time
//!   and the notification switch. Zero values are sent, as Harbor does here.
//! - `ping`: `Pong`, as text.
//! - `health`: always 200; `status` is `healthy` when every component is: `registry` (answers
//!   `GET /v2/` at all), `chartmuseum` (when configured, `GET /health`), `store` (reachable).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Map, Value, json};

use super::projects::{caller_if_any, time_ms};
use super::{ApiError, ApiState};

/// wharf's version as `harbor_version` shows it (Harbor's form is `v2.x.y-<commit>`).
pub fn version() -> String {
    format!("v{}-wharf", env!("CARGO_PKG_VERSION"))
}

/// `GET /api/v2.0/systeminfo`
pub async fn systeminfo(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let mut v = Map::new();
    v.insert("auth_mode".into(), json!("db_auth"));
    v.insert("primary_auth_mode".into(), json!(false));
    v.insert("self_registration".into(), json!(false));
    v.insert("banner_message".into(), json!(""));
    v.insert("oidc_provider_name".into(), json!(""));
    if caller_if_any(&app, &headers).await.is_some() {
        let cfg = &app.config;
        v.insert("harbor_version".into(), json!(version()));
        v.insert("external_url".into(), json!(cfg.external_base()));
        v.insert("registry_url".into(), json!(cfg.external_host()));
        v.insert(
            "current_time".into(),
            time_ms(chrono::Utc::now().timestamp_millis()),
        );
        v.insert("has_ca_root".into(), json!(false));
        v.insert("project_creation_restriction".into(), json!("adminonly"));
        v.insert("read_only".into(), json!(false));
        v.insert("registry_storage_provider_name".into(), json!(""));
        v.insert(
            "notification_enable".into(),
            json!(app.notification_switch.is_on()),
        );
        v.insert("with_chartmuseum".into(), json!(app.chartmuseum.is_some()));
    }
    Ok(Json(Value::Object(v)))
}

/// `GET /api/v2.0/ping`
pub async fn ping() -> Response {
    (
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Pong",
    )
        .into_response()
}

fn component(name: &str, error: Option<&str>) -> Value {
    match error {
        None => json!({"name": name, "status": "healthy"}),
        Some(e) => json!({"name": name, "status": "unhealthy", "error": e}),
    }
}

/// `GET /api/v2.0/health`
pub async fn health(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let report = crate::health::check(&app.registry, app.chartmuseum.as_ref(), &app.store).await;
    let mut components: Vec<Value> = report
        .upstreams
        .iter()
        .map(|u| component(u.name, u.answer.err()))
        .collect();
    components.push(component("store", report.store.err().map(|p| p.name())));
    Ok(Json(json!({
        "status": if report.ok() { "healthy" } else { "unhealthy" },
        "components": components,
    })))
}
