//! The system switch under `/api/v2.0/configurations`: `notification_enable`.

use axum::Json;
use axum::extract::State;
use http::HeaderMap;
use serde_json::{Value, json};

use super::common::db_error;
use super::webhooks::json_body;
use super::{ApiError, ApiState, auth};
use crate::store::policies;

/// `GET /api/v2.0/configurations` (system administrator).
pub async fn get_configurations(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    auth::require_admin(&app, &headers).await?;
    let on = app.notification_switch.is_on();
    Ok(Json(
        json!({"notification_enable": {"value": on, "editable": true}}),
    ))
}

/// `PUT /api/v2.0/configurations` with `{"notification_enable": bool}` (system administrator).
pub async fn put_configurations(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let caller = auth::require_admin(&app, &headers).await?;
    let v: serde_json::Map<String, Value> = json_body(&body)?;
    let mut switch = None;
    for (k, v) in v {
        match (k.as_str(), v) {
            ("notification_enable", Value::Bool(b)) => switch = Some(b),
            ("notification_enable", other) => {
                return Err(ApiError::bad_request(format!(
                    "notification_enable: {other} is not true or false"
                )));
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "{other}: not a configuration wharf has"
                )));
            }
        }
    }
    if let Some(on) = switch {
        let version = app
            .store
            .write(move |c| policies::set_notification_enabled(c, on))
            .await
            .map_err(db_error)?;
        // (unless the policy watch took a later change, through another replica, meanwhile)
        app.notification_switch.take(version, on);
        app.store
            .outbox_wake()
            .wake(crate::store::db::Due::Anywhere);
        tracing::info!(notification_enable = on, by = %caller.name(), "system notification switch changed");
    }
    let on = app.notification_switch.is_on();
    Ok(Json(
        json!({"notification_enable": {"value": on, "editable": true}}),
    ))
}
