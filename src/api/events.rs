//! `GET /api/v1/events`: the event log, newest first (system administrator only), with
//! Harbor's list conventions (`page`, `page_size`, `q`, `sort`, `X-Total-Count`, `Link`; see
//! [`super::list`]). `q` and `sort` keys: `id`, `type`, `project`, `repository`, `digest`,
//! `occurred_at`, `state`. The older parameters stay: `project`, `type`, `repository` (exact),
//! `all` (also held and cancelled events), and `limit` (1–10000: the first `limit` events, when
//! no `page_size` is given).

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Uri};

use super::list::ListParams;
use super::query::{Field, Kind, Term};
use super::{ApiError, ApiState, auth};

const FIELDS: &[Field] = &[
    Field::sql("id", Kind::Uuid, "id"),
    Field::sql("type", Kind::Text, "wharf_event_type(type)"),
    Field::sql("project", Kind::Text, "project"),
    Field::sql("repository", Kind::Text, "repository"),
    Field::sql("digest", Kind::Digest, "digest"),
    Field::sql("occurred_at", Kind::Time, "occurred_at"),
    Field::sql("state", Kind::Text, "wharf_event_state(state)"),
];

/// The parameters this list knows besides Harbor's.
const KNOWN: &[&str] = &[
    "project",
    "type",
    "repository",
    "limit",
    "all",
    "page",
    "page_size",
    "q",
    "sort",
];

pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = state.app()?;
    auth::require_admin(&app, &headers).await?;
    let mut params = ListParams::from_uri(&uri)?;
    if let Some(unknown) = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, _)| k.into_owned())
        .find(|k| !KNOWN.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "{unknown}: not a parameter of the event log"
        )));
    }
    let mut query = params.query.clone();
    if let Some(t) = params.param("type") {
        let kind = super::common::event_kind("type", t)?;
        query.set("type", Some(Term::Exact(kind.harbor_type().into())));
    }
    for key in ["project", "repository"] {
        if let Some(v) = params.param(key) {
            query.set(key, Some(Term::Exact(v.to_string())));
        }
    }
    let all_states = match params.param("all") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "all: {other:?} is not true or false"
            )));
        }
    };
    if let Some(limit) = params.param("limit") {
        let limit: u64 = limit
            .parse()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit: must be between 1 and 10000"))?;
        if params.param("page_size").is_none() {
            params = params.with_page_size(limit);
        }
    }
    let params = params.with_query(query);
    let (filter, args) = params.query.sql_where(FIELDS, 1);
    let order = params.sort.sql_order(FIELDS);
    let window = params.sql_window();
    let (events, total) = app
        .store
        .read(move |c| {
            let values: Vec<_> = args.iter().map(|a| a.value()).collect();
            crate::store::events::page(c, &filter, &values, all_states, order.as_deref(), window)
        })
        .await
        .map_err(|e| ApiError::internal("reading the event log failed", e))?;
    Ok(params.respond(&events, total))
}
