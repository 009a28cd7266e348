//! `/ui/catalog`: the event catalog — an example payload of each event type in each payload
//! format (rendered from the same sample events and renderers as the golden payloads in
//! `fixtures/payloads/`), so a receiver can be written before anything happens. Sending a chosen
//! type to a webhook's endpoints is on the webhook's page.

use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::html;
use serde::Deserialize;

use super::page::{self, UiError, pretty};
use super::session;
use crate::api::ApiState;
use crate::events::EventKind;
use crate::events::format::{self, PayloadFormat, RenderCtx};

/// The choice on the page.
#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    payload_format: Option<String>,
}

/// `GET /ui/catalog`
pub async fn page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(c): Query<Choice>,
) -> Result<Response, UiError> {
    let (ctx, _) = session(&s, &headers).await?;
    let app = s.app().map_err(|_| UiError::Unavailable)?;
    let kind = c
        .event_type
        .as_deref()
        .and_then(EventKind::from_harbor)
        .unwrap_or(EventKind::PushArtifact);
    let fmt = c
        .payload_format
        .as_deref()
        .and_then(PayloadFormat::parse)
        .unwrap_or(PayloadFormat::Default);
    // REPLICATION and TAG_RETENTION never happen: no sample
    let sample = kind
        .produced()
        .then(|| format::sample_in(kind, "prj", &app.config.external_host()));
    let rendered = match (&sample, fmt) {
        (_, PayloadFormat::Custom) => None,
        (Some(e), _) => {
            let ctx = RenderCtx {
                project_id: 1,
                policy_id: 1,
                delivery_id: Some(1),
                external_url: app.config.external_url.clone(),
            };
            format::render(e, fmt, None, &ctx).ok()
        }
        (None, _) => None,
    };
    let body = html! {
        h1 { "Event Catalog" }
        p.lead { "What a receiver gets: an example of each event type in each payload format." }
        form.filters method="get" action="/ui/catalog" {
            div.field {
                label for="c-type" { "Event type" }
                select #c-type name="event_type" {
                    @for k in EventKind::ALL {
                        option value=(k.harbor_type()) selected[k == kind] { (k.harbor_type()) }
                    }
                }
            }
            div.field {
                label for="c-format" { "Payload Format" }
                select #c-format name="payload_format" {
                    @for f in PayloadFormat::ALL {
                        option value=(f.name()) selected[f == fmt] { (f.name()) }
                    }
                }
            }
            div.buttons { button.primary type="submit" { "Show" } }
        }
        @match &rendered {
            Some(p) => {
                p { "Content-Type: " code { (p.content_type) } }
                pre.payload tabindex="0" aria-label="Example payload" { (pretty(&String::from_utf8_lossy(&p.body))) }
            }
            None if fmt == PayloadFormat::Custom => {
                p.empty { "A Custom target's payload is its own template: preview it with " code { "POST …/webhook/policies/preview" } "." }
            }
            None => {
                p.empty { (kind.harbor_type()) " is accepted in policies for configurations copied from Harbor, and wharf never sends it." }
            }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page(&ctx, "Event Catalog", &[], body),
    ))
}
