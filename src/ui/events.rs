//! `/ui/events` (system administrator): the event log, newest first, filtered by project, event
//! type and repository, a page at a time.
//!
//! API: `GET /api/v1/events` (with `page_size`: its default is 10), `GET /api/v2.0/projects`.

use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::html;
use serde::Deserialize;

use super::page::{self, UiError, enc, text, when};
use super::session;
use crate::api::ApiState;
use crate::events::EventKind;

/// Events per page.
const PAGE_SIZE: u64 = 25;

/// The filters of the page.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    project: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    page: Option<u64>,
}

/// `GET /ui/events`
pub async fn page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Result<Response, UiError> {
    let (ctx, api) = session(&s, &headers).await?;
    let page_no = f.page.unwrap_or(1).max(1);
    let mut filter = String::new();
    for (k, v) in [
        ("project", &f.project),
        ("type", &f.kind),
        ("repository", &f.repository),
    ] {
        if !v.trim().is_empty() {
            filter.push_str(&format!("&{k}={}", enc(v.trim())));
        }
    }
    let answer = api
        .get(&format!(
            "/api/v1/events?page={page_no}&page_size={PAGE_SIZE}{filter}"
        ))
        .await?;
    let (events, total, problem) = match answer.status {
        StatusCode::BAD_REQUEST => (serde_json::Value::Null, 0, Some(answer.message())),
        _ => {
            let total = answer.total().unwrap_or(0);
            (answer.ok()?, total, None)
        }
    };
    let projects = api
        .get_ok("/api/v2.0/projects?page_size=0&sort=name")
        .await?;
    let link = |p: u64| format!("/ui/events?page={p}{filter}");
    let body = html! {
        h1 { "Event Log" }
        form.filters method="get" action="/ui/events" {
            div.field {
                label for="f-project" { "Project" }
                select #f-project name="project" {
                    option value="" { "All projects" }
                    @for p in projects.as_array().into_iter().flatten() {
                        @let n = text(&p["name"]);
                        option value=(n) selected[n == f.project] { (n) }
                    }
                }
            }
            div.field {
                label for="f-type" { "Event type" }
                select #f-type name="type" {
                    option value="" { "All types" }
                    @for k in EventKind::ALL {
                        option value=(k.harbor_type()) selected[f.kind == k.harbor_type()] { (k.harbor_type()) }
                    }
                }
            }
            div.field {
                label for="f-repository" { "Repository" }
                input #f-repository type="text" name="repository" value=(f.repository) placeholder="prj/app";
            }
            div.buttons {
                a.button href="/ui/events" { "Clear" }
                button.primary type="submit" { "Apply" }
            }
        }
        @if let Some(m) = &problem { div.note.bad role="alert" { (m) } }
        @let rows: Vec<&serde_json::Value> = events.as_array().into_iter().flatten().collect();
        @if rows.is_empty() {
            p.empty { "No event matches." }
        } @else {
            table.list {
                caption.sr { "Events" }
                thead { tr { th { "Time" } th { "Type" } th { "Project" } th { "Repository" } th { "Tags" } th { "Digest" } th { "Operator" } } }
                tbody {
                    @for e in &rows {
                        tr {
                            td data-label="Time" { (when(&e["occurred_at"]).unwrap_or_else(|| text(&e["occurred_at"]))) }
                            td data-label="Type" { (text(&e["type"])) }
                            td data-label="Project" { (text(&e["project"])) }
                            td data-label="Repository" { (text(&e["repository"])) }
                            td data-label="Tags" {
                                (e["tags"].as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(", "))
                            }
                            td data-label="Digest" {
                                @let d = text(&e["digest"]);
                                code title=(d) { (d.chars().take(19).collect::<String>()) @if d.len() > 19 { "…" } }
                            }
                            td data-label="Operator" { (text(&e["operator"])) }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_no > 1 { a href=(link(page_no - 1)) { "Previous" } }
                span { "Page " (page_no) " of " (total.div_ceil(PAGE_SIZE).max(1)) " (" (total) " events)" }
                @if page_no * PAGE_SIZE < total { a href=(link(page_no + 1)) { "Next" } }
            }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page(&ctx, "Event Log", &[], body),
    ))
}
