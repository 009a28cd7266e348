//! `/ui/projects/{p}/webhooks`: a project's webhook policies (Harbor's webhook list, with every
//! target of a policy and a "disabled (410)" badge on a target its receiver retired), the last
//! trigger of each event type per policy, and Enable / Deactivate / Delete, each confirmed on a
//! page of its own that names the webhook (works without JavaScript).
//!
//! API: `GET …/webhook/policies`, `GET …/webhook/lasttrigger`, `GET`/`PUT`/`DELETE
//! …/webhook/policies/{id}`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, Method, StatusCode};
use maud::{Markup, html};
use serde_json::Value;

use super::page::{self, UiError, badge, text, when};
use super::{project_param, session};
use crate::api::ApiState;
use crate::dispatch::policy::TargetKind;
use crate::events::format::PayloadFormat;

/// What a confirmed action does to a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enable,
    Deactivate,
    Delete,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "enable" => Some(Action::Enable),
            "deactivate" => Some(Action::Deactivate),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Action::Enable => "enable",
            Action::Deactivate => "deactivate",
            Action::Delete => "delete",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Action::Enable => "Enable",
            Action::Deactivate => "Deactivate",
            Action::Delete => "Delete",
        }
    }
}

/// The list's status word of a policy.
pub fn status_word(p: &Value) -> &'static str {
    if p["enabled"].as_bool().unwrap_or(false) {
        "Enabled"
    } else {
        "Deactivated"
    }
}

/// A target's notify type and payload format as the list shows them.
pub fn target_format(t: &Value) -> String {
    let kind = t["type"].as_str().and_then(TargetKind::parse);
    match (kind, t["payload_format"].as_str()) {
        (_, Some(f)) => f.to_string(),
        (Some(TargetKind::Slack), None) => PayloadFormat::Slack.name().to_string(),
        (_, None) => PayloadFormat::Default.name().to_string(),
    }
}

/// Every target address of a policy, with the badge of a disabled one.
pub fn endpoints(p: &Value) -> Markup {
    html! {
        ul.plain {
            @for t in p["targets"].as_array().into_iter().flatten() {
                li {
                    span.url { (text(&t["address"])) }
                    @if t["disabled"].as_bool().unwrap_or(false) {
                        " " (badge("disabled (410)"))
                    }
                }
            }
        }
    }
}

/// A policy's event types: "All event types", or each one.
pub fn event_types(p: &Value) -> Markup {
    let types: Vec<String> = p["event_types"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    html! {
        @if types.len() >= crate::events::EventKind::ALL.len() {
            "All event types"
        } @else {
            ul.chips {
                @for t in &types { li { (t) } }
            }
        }
    }
}

/// The last trigger of each event type of policy `id` (Harbor's last-trigger table).
pub fn last_trigger(triggers: &Value, id: i64) -> Markup {
    html! {
        table.inner {
            caption.sr { "Last trigger" }
            thead { tr { th { "Event type" } th { "Status" } th { "Last Triggered" } } }
            tbody {
                @for t in triggers.as_array().into_iter().flatten().filter(|t| t["policy_id"].as_i64() == Some(id)) {
                    tr {
                        td data-label="Event type" { (text(&t["event_type"])) }
                        td data-label="Status" {
                            (if t["enabled"].as_bool().unwrap_or(false) { "Enabled" } else { "Deactivated" })
                        }
                        td data-label="Last Triggered" {
                            (when(&t["last_trigger_time"]).unwrap_or_else(|| "Never".into()))
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/projects/{p}/webhooks`
pub async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let base = format!("/api/v2.0/projects/{project}/webhook");
    let policies = api
        .get_ok(&format!("{base}/policies?page_size=0&sort=name"))
        .await?;
    let triggers = api.get_ok(&format!("{base}/lasttrigger")).await?;
    let here = format!("/ui/projects/{project}/webhooks");
    let list: Vec<&Value> = policies.as_array().into_iter().flatten().collect();
    let body = html! {
        div.titlebar {
            h1 { "Webhooks" }
            form method="get" action=(format!("{here}/new")) {
                button.primary type="submit" { "New Webhook" }
            }
        }
        p.lead { "Project " strong { (project) } ": who is told, and how, when something happens in it." }
        @if list.is_empty() {
            div.empty {
                p { strong { "No Webhook" } }
                p { "Add one with New Webhook: wharf then sends the project's events to it." }
            }
        } @else {
            table.list.webhooks {
                caption.sr { "Webhooks" }
                thead {
                    tr {
                        th { "Name" } th { "Status" } th { "Notify Type" } th { "Payload Format" }
                        th { "Endpoint URL" } th { "Event types" } th { "Created" } th { "Description" }
                        th { span.sr { "Actions" } }
                    }
                }
                @for p in &list {
                    @let id = p["id"].as_i64().unwrap_or(0);
                    @let name = text(&p["name"]);
                    @let url = format!("{here}/{id}");
                    tbody.policy {
                        tr {
                            th scope="row" data-label="Name" { a href=(url) { (name) } }
                            td data-label="Status" { (badge(status_word(p))) }
                            td data-label="Notify Type" {
                                (p["targets"].as_array().into_iter().flatten()
                                    .map(|t| text(&t["type"])).collect::<std::collections::BTreeSet<_>>()
                                    .into_iter().collect::<Vec<_>>().join(", "))
                            }
                            td data-label="Payload Format" {
                                (p["targets"].as_array().into_iter().flatten()
                                    .map(target_format).collect::<std::collections::BTreeSet<_>>()
                                    .into_iter().collect::<Vec<_>>().join(", "))
                            }
                            td data-label="Endpoint URL" { (endpoints(p)) }
                            td data-label="Event types" { (event_types(p)) }
                            td data-label="Created" { (when(&p["creation_time"]).unwrap_or_default()) }
                            td data-label="Description" { (text(&p["description"])) }
                            td.actions {
                                form method="get" action=(url) { button type="submit" { "Executions" } }
                                form method="get" action=(format!("{url}/edit")) { button type="submit" { "Edit" } }
                                @if p["enabled"].as_bool().unwrap_or(false) {
                                    form method="get" action=(format!("{url}/deactivate")) { button type="submit" { "Deactivate" } }
                                } @else {
                                    form method="get" action=(format!("{url}/enable")) { button type="submit" { "Enable" } }
                                }
                                form method="get" action=(format!("{url}/delete")) { button.danger type="submit" { "Delete" } }
                            }
                        }
                        tr.expansion {
                            td colspan="9" {
                                details {
                                    summary { "Last trigger of " (name) }
                                    (last_trigger(&triggers, id))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page(
            &ctx,
            &format!("Webhooks of {project}"),
            &[("Projects", "/ui/")],
            body,
        ),
    ))
}

/// `GET /ui/projects/{p}/webhooks/{id}/{enable|deactivate|delete}`: the confirmation.
pub async fn confirm(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, action)): Path<(String, i64, String)>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let action = Action::parse(&action).ok_or_else(|| UiError::NotFound("no such page".into()))?;
    let (ctx, api) = session(&s, &headers).await?;
    let p = api
        .get_ok(&format!(
            "/api/v2.0/projects/{project}/webhook/policies/{id}"
        ))
        .await?;
    let name = text(&p["name"]);
    let back = format!("/ui/projects/{project}/webhooks");
    let question = format!("{} webhook \u{201c}{name}\u{201d}?", action.label());
    let body = html! {
        div.dialog-backdrop {
            dialog open aria-labelledby="confirm-title" aria-describedby="confirm-text" {
                h2 #confirm-title { (question) }
                p #confirm-text {
                    @match action {
                        Action::Enable => { "Events of project " (project) " will be sent to its endpoints again." }
                        Action::Deactivate => { "No more events are sent to its endpoints, and pending retries stop. It can be enabled again." }
                        Action::Delete => { "The webhook and its configuration are removed; pending retries stop. This cannot be undone." }
                    }
                }
                form method="post" action=(format!("{back}/{id}/{}", action.path())) {
                    div.buttons {
                        a.button href=(back) { "Cancel" }
                        @if action == Action::Delete {
                            button.danger type="submit" { (action.label()) }
                        } @else {
                            button.primary type="submit" { (action.label()) }
                        }
                    }
                }
            }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page(
            &ctx,
            &question,
            &[("Projects", "/ui/"), (&project, &back)],
            body,
        ),
    ))
}

/// `POST /ui/projects/{p}/webhooks/{id}/{enable|deactivate|delete}`
pub async fn act(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, action)): Path<(String, i64, String)>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let action = Action::parse(&action).ok_or_else(|| UiError::NotFound("no such page".into()))?;
    let (_, api) = session(&s, &headers).await?;
    let path = format!("/api/v2.0/projects/{project}/webhook/policies/{id}");
    match action {
        Action::Delete => {
            api.call(Method::DELETE, &path, None).await?.ok()?;
        }
        Action::Enable | Action::Deactivate => {
            let mut p = api.get_ok(&path).await?;
            p["enabled"] = Value::Bool(action == Action::Enable);
            api.call(Method::PUT, &path, Some(&p)).await?.ok()?;
        }
    }
    Ok(Redirect::to(&format!("/ui/projects/{project}/webhooks")).into_response())
}
