//! `GET /api/v1/events?project=&type=&repository=&limit=`: the event log, newest first
//! (system administrator only).

use axum::Json;
use axum::extract::{Query, State};
use http::HeaderMap;
use serde::Deserialize;

use super::{ApiError, ApiState, auth};
use crate::events::EventKind;
use crate::store::events::{EventFilter, StoredEvent};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    project: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    repository: Option<String>,
    limit: Option<usize>,
    /// Also held (waiting for an index) and cancelled (absorbed) events.
    #[serde(default)]
    all: bool,
}

pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<StoredEvent>>, ApiError> {
    let app = state.app()?;
    auth::require_admin(&app, &headers).await?;
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some(t) => Some(EventKind::from_harbor(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "type: unknown event type {t:?}; one of {}",
                EventKind::ALL.map(|k| k.harbor_type()).join(", ")
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit: must be between 1 and 10000"));
    }
    let filter = EventFilter {
        project: q.project.filter(|p| !p.is_empty()),
        kind,
        repository: q.repository.filter(|r| !r.is_empty()),
        all_states: q.all,
        limit,
    };
    let events = app
        .store
        .read(move |c| crate::store::events::list(c, &filter))
        .await
        .map_err(|e| ApiError::internal("reading the event log failed", e))?;
    Ok(Json(events))
}
