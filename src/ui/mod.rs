//! UI: the built-in admin UI under `/ui/`, on the API's port — the seed's flows in a browser.
//!
//! Server-rendered HTML (maud templates, compiled in) that works without JavaScript for
//! everything it shows and, with plain forms, for everything it changes; htmx (vendored,
//! [`assets`]) only refreshes the executions while a delivery is pending, and `static/ui.js`
//! only adds conveniences (Save/Cancel appear when a setting changed, a secret generator, fields
//! that follow the notify type). Every page reads and writes through wharf's own API, in-process,
//! with the caller's credentials ([`client`]): the same authorization, validation and messages
//! as any API client.
//!
//! Pages, one file each: [`projects`] (`/ui/`), [`webhooks`] (the list, enable, deactivate and
//! delete with their confirmations), [`form`] (add and edit; its Test Endpoint and Preview in
//! [`test_endpoint`]), [`deliveries`] (a
//! policy's last triggers and executions, redelivery, execution and attempt detail),
//! [`settings`], [`events`] (the event log), [`catalog`] (example payloads); [`page`] is the
//! frame they share.
//!
//! Security: Basic authentication as the API (401 with `WWW-Authenticate`, so the browser asks;
//! the API's failed-login throttle counts the UI's 401s too); state-changing requests from other
//! sites are refused ([`crate::api::csrf`]); every answer carries `Content-Security-Policy:
//! default-src 'self'` (no inline script or style anywhere) and `Cache-Control: no-store`; no
//! auth header or signing secret is ever written into a page (a stored one shows as "set").

pub mod assets;
pub mod catalog;
pub mod client;
pub mod deliveries;
pub mod events;
pub mod form;
pub mod page;
pub mod projects;
pub mod settings;
pub mod test_endpoint;
pub mod webhooks;

use std::sync::Weak;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue};

use crate::api::{ApiState, auth, csrf, throttle};
use crate::app::App;
use client::Api;
use page::{Ctx, UiError};

/// The Content-Security-Policy of every UI answer.
pub const CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The caller of a UI request (401 without valid credentials) and the API as them.
pub async fn session(s: &ApiState, headers: &HeaderMap) -> Result<(Ctx, Api), UiError> {
    let app = s.app().map_err(|_| UiError::Unavailable)?;
    let caller = auth::authenticate(&app, headers)
        .await
        .map_err(|_| UiError::Unauthorized)?;
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .cloned()
        .ok_or(UiError::Unauthorized)?;
    let ctx = Ctx {
        caller,
        notifications_on: app.notification_switch.is_on(),
    };
    Ok((
        ctx,
        Api::new(app.api.clone(), &app.external_host, authorization),
    ))
}

/// A `{project}` of a UI path: a project name or a numeric id (anything else is not found).
pub fn project_param(raw: &str) -> Result<String, UiError> {
    if crate::route::is_name_component(raw) || raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(raw.to_string())
    } else {
        Err(UiError::NotFound(format!("no project {raw:?}")))
    }
}

/// The headers of every UI answer.
async fn headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        // same-origin keeps `Origin` on the UI's own form posts (no-referrer would make it null)
        ("referrer-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// Refuse state-changing requests another site made the browser send.
async fn guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let external = match s.app() {
        Ok(app) => app.config.external_host(),
        Err(_) => return UiError::Unavailable.into_response(),
    };
    let body = csrf::has_body(&req);
    match csrf::check(req.method(), req.headers(), body, false, &external) {
        Ok(()) => next.run(req).await,
        Err(e) => UiError::Forbidden(e.to_string()).into_response(),
    }
}

async fn not_found() -> UiError {
    UiError::NotFound("there is no such page".into())
}

/// The UI router (merged into the API router by [`crate::app`]).
pub fn router(app: Weak<App>) -> Router {
    use axum::routing::{any, get, post};
    const W: &str = "/ui/projects/{project}/webhooks";
    let state = ApiState::new(app);
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(projects::page))
        .route("/ui/static/{file}", get(assets::file))
        .route(W, get(webhooks::list))
        .route(&format!("{W}/new"), get(form::new_form).post(form::create))
        .route(&format!("{W}/{{id}}"), get(deliveries::policy_page))
        .route(
            &format!("{W}/{{id}}/edit"),
            get(form::edit_form).post(form::update),
        )
        .route(
            &format!("{W}/{{id}}/{{action}}"),
            get(webhooks::confirm).post(webhooks::act),
        )
        .route(&format!("{W}/{{id}}/test"), post(deliveries::test))
        .route(
            &format!("{W}/{{id}}/redeliver"),
            post(deliveries::redeliver),
        )
        .route(
            &format!("{W}/{{id}}/executions/{{eid}}"),
            get(deliveries::execution),
        )
        .route(
            &format!("{W}/{{id}}/executions/{{eid}}/redeliver"),
            post(deliveries::redeliver_one),
        )
        .route(
            &format!("{W}/{{id}}/executions/{{eid}}/attempts/{{tid}}"),
            get(deliveries::attempt),
        )
        .route("/ui/settings", get(settings::page).post(settings::save))
        .route("/ui/events", get(events::page))
        .route("/ui/catalog", get(catalog::page))
        .route("/ui/{*rest}", any(not_found))
        .layer(axum::middleware::map_response(headers))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        // failed logins count as the API's do: 429 + Retry-After when there were too many
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            throttle::layer,
        ))
        .with_state(state)
}
