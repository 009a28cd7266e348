//! `/ui/settings` (system administrator): the system-wide switch "Webhooks Enabled" (Harbor's
//! System Settings, `notification_enable`). Save and Cancel show once it changed (with
//! JavaScript; always without). While it is off, every page shows a banner.
//!
//! API: `GET`/`PUT /api/v2.0/configurations`.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, Method, StatusCode};
use maud::html;
use serde_json::json;

use super::page::{self, UiError};
use super::session;
use crate::api::ApiState;

/// `GET /ui/settings`
pub async fn page(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, UiError> {
    let (ctx, api) = session(&s, &headers).await?;
    let cfg = api.get_ok("/api/v2.0/configurations").await?;
    let on = cfg["notification_enable"]["value"]
        .as_bool()
        .unwrap_or(true);
    let body = html! {
        h1 { "System Settings" }
        form.settings method="post" action="/ui/settings" data-dirty-form {
            input type="hidden" name="submitted" value="1";
            div.check {
                input #notification_enable type="checkbox" name="notification_enable" value="1" checked[on]
                    aria-describedby="notification_enable-hint";
                label for="notification_enable" { "Webhooks Enabled" }
            }
            p.hint #notification_enable-hint {
                "Off: no webhook is sent for new events in any project (events are still logged); "
                "deliveries already queued wait until it is on again."
            }
            div.buttons data-dirty-only {
                button type="reset" { "Cancel" }
                button.primary type="submit" { "Save" }
            }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page(&ctx, "System Settings", &[], body),
    ))
}

/// `POST /ui/settings`
pub async fn save(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, UiError> {
    let (_, api) = session(&s, &headers).await?;
    let on = url::form_urlencoded::parse(&body).any(|(k, _)| k == "notification_enable");
    api.call(
        Method::PUT,
        "/api/v2.0/configurations",
        Some(&json!({"notification_enable": on})),
    )
    .await?
    .ok()?;
    Ok(Redirect::to("/ui/settings").into_response())
}
