//! Test Endpoint and Preview of the webhook form: the API's `…/test` and `…/preview` called
//! as the signed-in user, and the boxes that show what they answered (also on the delivery
//! pages, whose Test Endpoint is the stored policy's).

use http::Method;
use maud::{Markup, html};
use serde_json::json;

use super::client::{Answer, Api};
use super::form::PolicyForm;
use super::page::{self, text};
use crate::events::EventKind;

/// The outcome of Test Endpoint.
#[derive(Debug, Clone)]
pub enum Tested {
    /// Every endpoint answered 2xx: `(address, status, ms)`.
    Passed(Vec<(String, String, String)>),
    /// Why (one line per failing endpoint).
    Failed(Vec<String>),
}

/// The Test Endpoint result box.
pub fn test_result(t: &Tested, stored: bool) -> Markup {
    html! {
        @match t {
            Tested::Passed(rows) => {
                div.note.ok role="status" {
                    strong { "Test Endpoint: every endpoint answered." }
                    @if stored { " (the saved endpoints, with their stored auth header and secret)" }
                    ul {
                        @for (addr, status, ms) in rows {
                            li { span.url { (addr) } ": HTTP " (status) " in " (ms) " ms" }
                        }
                    }
                }
            }
            Tested::Failed(lines) => {
                div.note.bad role="alert" {
                    strong { "Test Endpoint failed." }
                    @if stored { " (the saved endpoints, with their stored auth header and secret)" }
                    ul { @for l in lines { li { (l) } } }
                }
            }
        }
    }
}

/// The outcome of Preview for one endpoint.
#[derive(Debug, Clone)]
pub struct Previewed {
    /// The endpoint's form index.
    pub index: usize,
    /// `(event type, content type, body)`, or why there is none.
    pub outcome: Result<(String, String, String), String>,
}

/// The Preview result box.
pub fn preview_result(p: &Previewed) -> Markup {
    html! {
        @match &p.outcome {
            Ok((event_type, content_type, body)) => {
                div.note.ok role="status" {
                    strong { "Preview of a sample " (event_type) " event" }
                    " (nothing was sent). Content-Type: " code { (content_type) }
                }
                pre.payload tabindex="0" aria-label="Preview payload" { (page::pretty(body)) }
            }
            Err(why) => {
                div.note.bad role="alert" {
                    strong { "Preview failed." }
                    " " (why)
                }
            }
        }
    }
}

/// Render a sample event as endpoint `index` of the form would get it (the API's preview): of
/// the event type chosen next to Preview, else the first one the form subscribes to that wharf
/// produces, else `PUSH_ARTIFACT`.
pub async fn run_preview(api: &Api, project: &str, form: &PolicyForm, index: usize) -> Previewed {
    let Some(t) = form.targets.get(index) else {
        return Previewed {
            index,
            outcome: Err(format!("there is no endpoint {}", index + 1)),
        };
    };
    let event_type = EventKind::from_harbor(&t.preview_type)
        .filter(|k| k.produced())
        .or_else(|| {
            form.event_types
                .iter()
                .filter_map(|e| EventKind::from_harbor(e))
                .find(|k| k.produced())
        })
        .unwrap_or(EventKind::PushArtifact)
        .harbor_type();
    let mut body = json!({
        "event_type": event_type,
        "type": t.kind,
        "payload_format": t.payload_format,
    });
    if t.is_custom() {
        body["payload_template"] = json!(t.payload_template);
        body["content_type"] = json!(t.content_type.trim());
    }
    let path = format!("/api/v2.0/projects/{project}/webhook/policies/preview");
    let outcome = match api.call(Method::POST, &path, Some(&body)).await {
        Ok(a) if a.status.is_success() => {
            let v = a.json();
            Ok((
                text(&v["event_type"]),
                text(&v["content_type"]),
                text(&v["body"]),
            ))
        }
        Ok(a) => Err(a.message()),
        Err(e) => Err(e.to_string()),
    };
    Previewed { index, outcome }
}

/// Test the form's endpoints, or (`stored`) the saved policy's.
pub async fn run_test(api: &Api, project: &str, form: &PolicyForm, stored: Option<i64>) -> Tested {
    let base = format!("/api/v2.0/projects/{project}/webhook/policies");
    let answer = match stored {
        Some(id) => {
            api.call(
                Method::POST,
                &format!("{base}/{id}/test"),
                Some(&json!({"event_type": "PUSH_ARTIFACT"})),
            )
            .await
        }
        None => {
            let (v, _) = form.to_api();
            api.call(
                Method::POST,
                &format!("{base}/test"),
                Some(&json!({"targets": v["targets"]})),
            )
            .await
        }
    };
    match answer {
        Ok(a) => Tested::of(&a),
        Err(e) => Tested::Failed(vec![e.to_string()]),
    }
}

impl Tested {
    /// The API's answer to a test request: each endpoint's status and time when it succeeded,
    /// else why each endpoint failed (one line each).
    pub fn of(a: &Answer) -> Tested {
        if !a.status.is_success() {
            return Tested::Failed(a.message().split("; ").map(str::to_string).collect());
        }
        Tested::Passed(
            a.json()["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        text(&r["address"]),
                        text(&r["status"]),
                        text(&r["duration_ms"]),
                    )
                })
                .collect(),
        )
    }
}

/// Does Test Endpoint of this form need the stored policy (a kept secret it cannot send)?
pub fn needs_stored(form: &PolicyForm) -> bool {
    form.targets
        .iter()
        .filter(|t| !t.remove)
        .any(|t| (t.auth_set && !t.auth_remove) || (t.secret_set && !t.secret_remove))
}
