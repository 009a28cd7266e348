//! Harbor's project endpoints, read-only: `GET /api/v2.0/projects` (with Harbor's list
//! conventions, `name` fuzzy, `public`, `owner`, `with_detail`), `HEAD
//! /api/v2.0/projects?project_name=`, `GET`/`HEAD /api/v2.0/projects/{project_name_or_id}`.
//!
//! A project exists when the config names it, a policy was created for it, or it was seen in
//! traffic; its id is the store's (see [`crate::store::projects`]). Who sees what, as Harbor:
//! the system administrator every project; a user of `users.htpasswd` the public ones and
//! those they administer; an anonymous caller (no or wrong credentials) the public ones.
//! Metadata values are strings (`"public": "true"`), as Harbor encodes them. wharf has no
//! project owners: the owner is `admin` (user 1).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, TimeZone, Utc};
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Map, Value, json};

use super::auth::{self, ADMIN, Caller};
use super::common::db_error;
use super::list::ListParams;
use super::query::{Field, Kind, Record, Term, Val};
use super::{ApiError, ApiState};
use crate::app::App;
use crate::store::projects::{self, Project};

/// Harbor's role id of a project administrator.
const PROJECT_ADMIN_ROLE: i64 = 1;

/// The caller, or `None` for an anonymous one (no credentials, or wrong ones: Harbor reads
/// bad credentials as anonymous).
pub(super) async fn caller_if_any(app: &App, headers: &HeaderMap) -> Option<Caller> {
    if !headers.contains_key(http::header::AUTHORIZATION) {
        return None;
    }
    auth::authenticate(app, headers).await.ok()
}

/// Harbor's time form (milliseconds, UTC).
pub(super) fn time_ms(ms: i64) -> Value {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => json!("0001-01-01T00:00:00.000Z"),
    }
}

/// A project with what the API shows of it.
struct Listed {
    project: Project,
    public: bool,
    /// The caller administers it (as a user of `users.htpasswd`).
    admin_of: bool,
    repo_count: u64,
}

impl Record for Listed {
    fn field(&self, key: &str) -> Option<Val> {
        Some(match key {
            "project_id" => Val::Int(self.project.id),
            "name" => Val::Text(self.project.name.clone()),
            "public" => Val::Bool(self.public),
            "owner" | "owner_name" => Val::Text(ADMIN.into()),
            "creation_time" | "update_time" => Val::Time(self.project.created_at),
            "repo_count" => Val::Int(i64::try_from(self.repo_count).unwrap_or(i64::MAX)),
            _ => return None,
        })
    }
}

const FIELDS: &[Field] = &[
    Field::new("project_id", Kind::Int),
    Field::new("name", Kind::Text),
    Field::new("public", Kind::Bool),
    Field::new("owner", Kind::Text),
    Field::new("owner_name", Kind::Text),
    Field::new("creation_time", Kind::Time),
    Field::new("update_time", Kind::Time),
    Field::new("repo_count", Kind::Int),
];

fn is_admin_of(app: &App, caller: Option<&Caller>, project: &str) -> bool {
    match caller {
        Some(Caller::User(u)) => app
            .config
            .projects
            .get(project)
            .is_some_and(|p| p.admins.iter().any(|a| a == u)),
        _ => false,
    }
}

/// May `caller` see `l`?
fn visible(caller: Option<&Caller>, l: &Listed) -> bool {
    match caller {
        Some(Caller::Admin) => true,
        Some(Caller::User(_)) => l.public || l.admin_of,
        None => l.public,
    }
}

fn view(l: &Listed, detail: bool) -> Value {
    let p = &l.project;
    let mut v = Map::new();
    v.insert("project_id".into(), json!(p.id));
    v.insert("owner_id".into(), json!(1));
    v.insert("name".into(), json!(p.name));
    v.insert("creation_time".into(), time_ms(p.created_at));
    v.insert("update_time".into(), time_ms(p.created_at));
    if l.admin_of {
        v.insert("current_user_role_id".into(), json!(PROJECT_ADMIN_ROLE));
        v.insert("current_user_role_ids".into(), json!([PROJECT_ADMIN_ROLE]));
    }
    v.insert("repo_count".into(), json!(l.repo_count));
    if detail {
        v.insert("owner_name".into(), json!(ADMIN));
        v.insert(
            "metadata".into(),
            json!({"public": if l.public { "true" } else { "false" }}),
        );
        v.insert(
            "cve_allowlist".into(),
            json!({
                "project_id": p.id,
                "items": [],
                "creation_time": time_ms(p.created_at),
                "update_time": time_ms(p.created_at),
            }),
        );
    }
    Value::Object(v)
}

async fn listed(app: &App, caller: Option<&Caller>, p: Project) -> Result<Listed, ApiError> {
    let name = p.name.clone();
    let repo_count = app
        .store
        .read(move |c| projects::repo_count(c, &name))
        .await
        .map_err(db_error)?;
    Ok(Listed {
        public: app.config.is_public(&p.name),
        admin_of: is_admin_of(app, caller, &p.name),
        repo_count,
        project: p,
    })
}

/// `GET /api/v2.0/projects`
pub async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = ListParams::from_uri(&uri)?;
    let caller = caller_if_any(&app, &headers).await;
    let public = match params.param("public") {
        None => None,
        Some(v) => Some(v.parse::<bool>().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                format!("validation failure list:\npublic in query must be of type boolean: {v:?}"),
            )
        })?),
    };
    let detail = params.param("with_detail") != Some("false");
    let all = app.store.read(projects::list).await.map_err(db_error)?;
    let mut rows = Vec::new();
    for p in all {
        let l = Listed {
            public: app.config.is_public(&p.name),
            admin_of: is_admin_of(&app, caller.as_ref(), &p.name),
            repo_count: 0,
            project: p,
        };
        if visible(caller.as_ref(), &l) && public.is_none_or(|want| l.public == want) {
            rows.push(l);
        }
    }
    // `name`, `owner` and `public` replace q's terms on those keys, as in Harbor
    let mut query = params.query.clone();
    if let Some(n) = params.param("name") {
        query.set("name", Some(Term::Fuzzy(n.to_string())));
    }
    if let Some(o) = params.param("owner") {
        query.set("owner", Some(Term::Exact(o.to_string())));
    }
    if public.is_some() {
        query.set("public", None);
    }
    // repo counts are read for the rows shown (and for all when q or sort needs them)
    let needs_count = query.terms.iter().any(|(k, _)| k == "repo_count")
        || params.sort.keys.iter().any(|(k, _)| k == "repo_count");
    if needs_count {
        for l in &mut rows {
            *l = listed(&app, caller.as_ref(), l.project.clone()).await?;
        }
    }
    let filtered = params.with_query(query);
    let (mut page, total) = filtered.apply(rows, FIELDS);
    if !needs_count {
        for l in &mut page {
            *l = listed(&app, caller.as_ref(), l.project.clone()).await?;
        }
    }
    let body: Vec<Value> = page.iter().map(|l| view(l, detail)).collect();
    Ok(params.respond(&body, total))
}

/// `HEAD /api/v2.0/projects?project_name=`: 200 when it exists, 404 when not (401 anonymous).
pub async fn exists(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = ListParams::from_uri(&uri)?;
    let Some(name) = params.param("project_name").map(str::to_string) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_ENTITY",
            "validation failure list:\nproject_name in query is required",
        ));
    };
    if caller_if_any(&app, &headers).await.is_none() {
        return Err(ApiError::unauthorized());
    }
    let found = app
        .store
        .read(move |c| projects::by_name(c, &name))
        .await
        .map_err(db_error)?;
    Ok(match found {
        Some(_) => StatusCode::OK.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

/// Resolve `{project_name_or_id}` as Harbor does (`X-Is-Resource-Name: true` forces a name).
pub(super) async fn resolve(
    app: &App,
    headers: &HeaderMap,
    raw: &str,
) -> Result<Option<Project>, ApiError> {
    let by_name = headers
        .get("x-is-resource-name")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let raw = raw.to_string();
    let id = if by_name {
        None
    } else {
        raw.parse::<i64>().ok()
    };
    app.store
        .read(move |c| match id {
            Some(id) => projects::by_id(c, id),
            None => projects::by_name(c, &raw),
        })
        .await
        .map_err(db_error)
}

/// `GET`/`HEAD /api/v2.0/projects/{project_name_or_id}`: the project; an unknown or hidden
/// one is 404 for the administrator, 403 for a user, 401 for an anonymous caller (Harbor's
/// answers, which tell a stranger nothing).
pub async fn get(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let caller = caller_if_any(&app, &headers).await;
    let found = resolve(&app, &headers, &raw).await?;
    let shown = match found {
        Some(p) => {
            let l = listed(&app, caller.as_ref(), p).await?;
            visible(caller.as_ref(), &l).then_some(l)
        }
        None => None,
    };
    match (shown, &caller) {
        (Some(l), _) => Ok(axum::Json(view(&l, true)).into_response()),
        (None, Some(Caller::Admin)) => Err(ApiError::not_found(format!("project {raw} not found"))),
        (None, Some(Caller::User(_))) => Err(ApiError::forbidden("forbidden")),
        (None, None) => Err(ApiError::unauthorized()),
    }
}
