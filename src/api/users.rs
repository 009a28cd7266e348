//! Harbor's user endpoints, read-only (wharf's users are `admin` and the users of
//! `users.htpasswd`; they are not managed through the API):
//!
//! - `GET /api/v2.0/users/current`: the caller (401 without valid credentials);
//! - `GET /api/v2.0/users` (system administrator) and `GET /api/v2.0/users/{user_id}` (the
//!   administrator, or the user themself), with Harbor's list conventions;
//! - `GET /api/v2.0/users/search?username=` (any user): `{user_id, username}` of names that
//!   contain it.
//!
//! Ids are the store's (see [`crate::store::users`]): `admin` is 1.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, Uri};
use serde_json::{Map, Value, json};

use super::auth::{self, ADMIN, Caller};
use super::common::db_error;
use super::list::ListParams;
use super::projects::time_ms;
use super::query::{Field, Kind, Record, Term, Val};
use super::{ApiError, ApiState};
use crate::app::App;
use crate::store::users::{self, User};

/// The rows of `names`, giving an id to the names that have none yet.
async fn rows(app: &App, names: Vec<String>) -> Result<Vec<User>, ApiError> {
    let wanted = names.clone();
    let known = app
        .store
        .read(move |c| {
            wanted
                .iter()
                .map(|n| users::by_name(c, n))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(db_error)?;
    if known.iter().all(Option::is_some) {
        return Ok(known.into_iter().flatten().collect());
    }
    app.store
        .write(move |c| {
            names
                .iter()
                .map(|n| users::ensure(c, n))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(db_error)
}

/// Every user wharf has: `admin`, then the htpasswd users by name.
async fn everyone(app: &App) -> Result<Vec<User>, ApiError> {
    let mut names = vec![ADMIN.to_string()];
    names.extend(app.users.names().into_iter().filter(|n| n != ADMIN));
    rows(app, names).await
}

impl Record for User {
    fn field(&self, key: &str) -> Option<Val> {
        Some(match key {
            "user_id" => Val::Int(self.id),
            "username" => Val::Text(self.name.clone()),
            "sysadmin_flag" => Val::Bool(self.name == ADMIN),
            "creation_time" | "update_time" => Val::Time(self.created_at),
            _ => return None,
        })
    }
}

const FIELDS: &[Field] = &[
    Field::new("user_id", Kind::Int),
    Field::new("username", Kind::Text),
    Field::new("sysadmin_flag", Kind::Bool),
    Field::new("creation_time", Kind::Time),
    Field::new("update_time", Kind::Time),
];

/// Harbor's UserResp (empty values left out, as Harbor does).
fn view(u: &User) -> Value {
    let admin = u.name == ADMIN;
    let mut v = Map::new();
    v.insert("user_id".into(), json!(u.id));
    v.insert("username".into(), json!(u.name));
    if admin {
        v.insert("realname".into(), json!("system admin"));
        v.insert("comment".into(), json!("admin user"));
    }
    v.insert("sysadmin_flag".into(), json!(admin));
    v.insert("admin_role_in_auth".into(), json!(false));
    v.insert("creation_time".into(), time_ms(u.created_at));
    v.insert("update_time".into(), time_ms(u.created_at));
    Value::Object(v)
}

/// `GET /api/v2.0/users/current`
pub async fn current(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let caller = auth::authenticate(&app, &headers).await?;
    let me = rows(&app, vec![caller.name().to_string()]).await?;
    let me = me
        .first()
        .ok_or_else(|| ApiError::internal("database error", "no user row"))?;
    Ok(Json(view(me)))
}

/// `GET /api/v2.0/users` (system administrator)
pub async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = ListParams::from_uri(&uri)?;
    auth::require_admin(&app, &headers).await?;
    let (page, total) = params.apply(everyone(&app).await?, FIELDS);
    let body: Vec<Value> = page.iter().map(view).collect();
    Ok(params.respond(&body, total))
}

/// `GET /api/v2.0/users/{user_id}`: the administrator, or the user themself.
pub async fn get(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let app = s.app()?;
    let caller = auth::authenticate(&app, &headers).await?;
    let found = everyone(&app).await?.into_iter().find(|u| u.id == id);
    match (found, &caller) {
        (Some(u), Caller::Admin) => Ok(Json(view(&u))),
        (Some(u), Caller::User(me)) if *me == u.name => Ok(Json(view(&u))),
        (None, Caller::Admin) => Err(ApiError::not_found(format!("user {id} not found"))),
        _ => Err(ApiError::forbidden("forbidden")),
    }
}

/// `GET /api/v2.0/users/search?username=` (any user): names containing it.
pub async fn search(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let app = s.app()?;
    let params = ListParams::from_uri(&uri)?;
    auth::authenticate(&app, &headers).await?;
    let Some(name) = params.param("username").map(str::to_string) else {
        return Err(ApiError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_ENTITY",
            "validation failure list:\nusername in query is required",
        ));
    };
    let mut query = params.query.clone();
    query.set("username", Some(Term::Fuzzy(name)));
    let (page, total) = params
        .with_query(query)
        .apply(everyone(&app).await?, FIELDS);
    let body: Vec<Value> = page
        .iter()
        .map(|u| json!({"user_id": u.id, "username": u.name}))
        .collect();
    Ok(params.respond(&body, total))
}
