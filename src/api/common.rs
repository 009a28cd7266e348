//! What the API's handlers share: Harbor's time format, the answer to a database failure, an
//! event type by its Harbor name, and `{project}` resolved and authorized.

use axum::http::HeaderMap;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};

use super::ApiError;
use super::auth::{self, Caller};
use crate::app::App;
use crate::events::EventKind;
use crate::route::is_name_component;
use crate::store::policies;

pub(super) fn rfc3339_ms(ms: i64) -> Value {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

pub(super) fn db_error(e: crate::store::StoreError) -> ApiError {
    ApiError::internal("database error", e)
}

/// The event type Harbor calls `name`, given in `field`; else a 400 listing the known ones.
pub(super) fn event_kind(field: &str, name: &str) -> Result<EventKind, ApiError> {
    EventKind::from_harbor(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field}: unknown event type {name:?}; one of {}",
            EventKind::ALL.map(|k| k.harbor_type()).join(", ")
        ))
    })
}

/// Resolve `{project}` (name or id) and authorize the caller for it.
pub(super) async fn project_for(
    app: &App,
    headers: &HeaderMap,
    raw: &str,
) -> Result<(String, Caller), ApiError> {
    let by_name = headers
        .get("x-is-resource-name")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let by_id = !by_name && !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if !by_id && !is_name_component(raw) {
        return Err(ApiError::bad_request(format!(
            "project: {raw:?} is not a project name (lowercase letters, digits, . _ -)"
        )));
    }
    // authenticate before looking anything up: unknown ids and forbidden ones must look alike
    // to strangers (401) and to users (403, Harbor's answer, naming the project as they
    // addressed it); the administrator is told an id is not there
    let caller = auth::authenticate(app, headers).await?;
    let name = if by_id {
        let unknown = || match &caller {
            auth::Caller::Admin => ApiError::not_found(format!("project {raw} not found")),
            auth::Caller::User(u) => auth::not_project_admin(u, raw),
        };
        let Ok(id) = raw.parse::<i64>() else {
            return Err(unknown());
        };
        app.store
            .read(move |c| policies::project_name(c, id))
            .await
            .map_err(db_error)?
            .ok_or_else(unknown)?
    } else {
        raw.to_string()
    };
    auth::check_project_admin(app, &caller, &name, raw)?;
    Ok((name, caller))
}
