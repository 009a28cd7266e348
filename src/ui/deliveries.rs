//! A webhook's page: its endpoints, Test Endpoint with a chosen event type, the last trigger of
//! each event type, and its executions (Harbor's executions view: a status filter, Redeliver,
//! Redeliver all dead, and wharf's redelivery of what failed since a time), refreshed every
//! few seconds while something is pending (htmx; a reload does the same without JavaScript).
//! Then an execution's detail (its attempts and the payload it sends) and an attempt's detail
//! (the request sent, secrets as "set", and the response).
//!
//! API: `GET …/policies/{id}`, `…/lasttrigger`, `…/executions` (+ `/{eid}`, `/{eid}/payload`,
//! `/{eid}/tasks`, `/{eid}/tasks/{tid}`), `POST …/policies/{id}/test`, `…/redeliver`,
//! `…/executions/{eid}/redeliver`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, Method, StatusCode};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::Api;
use super::page::{self, UiError, badge, enc, pretty, text, when};
use super::test_endpoint::{Tested, test_result};
use super::webhooks::{endpoints, last_trigger, status_word};
use super::{project_param, session};
use crate::api::ApiState;
use crate::api::executions::ExecStatus;
use crate::events::EventKind;

/// Executions per page.
const PAGE_SIZE: u64 = 20;

/// The status of an execution as the API lists it.
fn status_of(e: &Value) -> Option<ExecStatus> {
    e["status"].as_str().and_then(ExecStatus::parse)
}

/// The query of a policy page.
#[derive(Debug, Default, Deserialize)]
pub struct PolicyQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    page: Option<u64>,
}

/// What happened on the policy page just before (shown at its top).
enum Notice {
    Tested(Tested, String),
    Redelivered(String),
    Failed(String),
}

async fn policy_view(
    api: &Api,
    ctx: &page::Ctx,
    project: &str,
    id: i64,
    q: &PolicyQuery,
    notice: Option<Notice>,
) -> Result<Response, UiError> {
    let base = format!("/api/v2.0/projects/{project}/webhook");
    let p = api.get_ok(&format!("{base}/policies/{id}")).await?;
    let triggers = api.get_ok(&format!("{base}/lasttrigger")).await?;
    let status = q
        .status
        .as_deref()
        .filter(|s| ExecStatus::parse(s).is_some())
        .unwrap_or("");
    let page_no = q.page.unwrap_or(1).max(1);
    let mut path = format!("{base}/policies/{id}/executions?page={page_no}&page_size={PAGE_SIZE}");
    if !status.is_empty() {
        path.push_str(&format!("&status={status}"));
    }
    let answer = api.get(&path).await?;
    let total = answer.total().unwrap_or(0);
    let executions = answer.ok()?;
    let rows: Vec<&Value> = executions.as_array().into_iter().flatten().collect();
    let busy = rows.iter().any(|e| status_of(e).is_some_and(|s| !s.done()));
    let name = text(&p["name"]);
    let list = format!("/ui/projects/{project}/webhooks");
    let here = format!("{list}/{id}");
    let self_url = format!("{here}?status={}&page={page_no}", enc(status));
    let body = html! {
        div.titlebar {
            h1 { (name) " " (badge(status_word(&p))) }
            form method="get" action=(format!("{here}/edit")) { button type="submit" { "Edit" } }
        }
        @if !text(&p["description"]).is_empty() { p.lead { (text(&p["description"])) } }
        @match &notice {
            Some(Notice::Tested(t, kind)) => { p.sr { "Tested with " (kind) } (test_result(t, true)) }
            Some(Notice::Redelivered(m)) => { div.note.ok role="status" { (m) } }
            Some(Notice::Failed(m)) => { div.note.bad role="alert" { (m) } }
            None => {}
        }
        section.cards {
            div.card {
                h2 { "Endpoints" }
                (endpoints(&p))
                form.inline method="post" action=(format!("{here}/test")) {
                    label for="test-type" { "Event type to send" }
                    select #test-type name="event_type" {
                        @for k in EventKind::ALL {
                            option value=(k.harbor_type()) selected[k == EventKind::PushArtifact] { (k.harbor_type()) }
                        }
                    }
                    button type="submit" { "Test Endpoint" }
                }
            }
            div.card {
                h2 { "Last trigger" }
                (last_trigger(&triggers, id))
            }
        }
        section #executions
            hx-get=[busy.then_some(self_url.as_str())]
            hx-trigger=[busy.then_some("every 5s")]
            hx-select="#executions" hx-swap="outerHTML" {
            div.titlebar {
                h2 { "Executions" }
                form.inline method="get" action=(here) {
                    label for="status" { "Status" }
                    select #status name="status" {
                        option value="" selected[status.is_empty()] { "All" }
                        @for s in ExecStatus::ALL.map(ExecStatus::name) { option value=(s) selected[status == s] { (s) } }
                    }
                    button type="submit" { "Filter" }
                }
            }
            div.toolbar {
                form method="post" action=(format!("{here}/redeliver")) {
                    button type="submit" { "Redeliver all dead" }
                }
                form.inline method="post" action=(format!("{here}/redeliver")) {
                    label for="since" { "Failed since (UTC)" }
                    input #since type="datetime-local" name="since" required;
                    button type="submit" { "Redeliver failed since" }
                }
            }
            @if rows.is_empty() {
                p.empty { "No execution" @if !status.is_empty() { " with status " (status) } "." }
            } @else {
                table.list {
                    caption.sr { "Executions" }
                    thead { tr {
                        th { "ID" } th { "Status" } th { "Event type" } th { "Target" } th { "Attempts" }
                        th { "Last HTTP status" } th { "Next attempt" } th { "Start" } th { "End" } th { span.sr { "Actions" } }
                    } }
                    tbody {
                        @for e in &rows {
                            @let eid = e["id"].as_i64().unwrap_or(0);
                            @let x = &e["extra_attrs"];
                            tr {
                                th scope="row" data-label="ID" { a href=(format!("{here}/executions/{eid}")) { (eid) } }
                                td data-label="Status" {
                                    (badge(e["status"].as_str().unwrap_or("")))
                                    @if !text(&e["status_message"]).is_empty() { div.small { (text(&e["status_message"])) } }
                                }
                                td data-label="Event type" { (text(&x["event_type"])) }
                                td data-label="Target" { span.url { (text(&x["target_address"])) } }
                                td data-label="Attempts" { (text(&x["attempts"])) }
                                td data-label="Last HTTP status" { (text(&x["last_status_code"])) }
                                td data-label="Next attempt" { (when(&x["next_attempt_time"]).unwrap_or_default()) }
                                td data-label="Start" { (when(&e["start_time"]).unwrap_or_default()) }
                                td data-label="End" { (when(&e["end_time"]).unwrap_or_default()) }
                                td.actions {
                                    @if status_of(e) != Some(ExecStatus::Running) {
                                        form method="post" action=(format!("{here}/executions/{eid}/redeliver")) {
                                            button type="submit" { "Redeliver" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if page_no > 1 {
                        a href=(format!("{here}?status={}&page={}", enc(status), page_no - 1)) { "Previous" }
                    }
                    span { "Page " (page_no) " of " (total.div_ceil(PAGE_SIZE).max(1)) " (" (total) " executions)" }
                    @if page_no * PAGE_SIZE < total {
                        a href=(format!("{here}?status={}&page={}", enc(status), page_no + 1)) { "Next" }
                    }
                }
            }
        }
    };
    let status_code = match &notice {
        Some(Notice::Failed(_)) => StatusCode::CONFLICT,
        _ => StatusCode::OK,
    };
    Ok(page::respond(
        status_code,
        page::page(ctx, &name, &[("Projects", "/ui/"), (project, &list)], body),
    ))
}

/// `GET /ui/projects/{p}/webhooks/{id}`
pub async fn policy_page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    Query(q): Query<PolicyQuery>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    policy_view(&api, &ctx, &project, id, &q, None).await
}

fn form_value(body: &[u8], key: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `POST /ui/projects/{p}/webhooks/{id}/test` (`event_type`): send a test of the stored policy.
pub async fn test(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    body: axum::body::Bytes,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let kind = form_value(&body, "event_type").unwrap_or_else(|| "PUSH_ARTIFACT".into());
    let a = api
        .call(
            Method::POST,
            &format!("/api/v2.0/projects/{project}/webhook/policies/{id}/test"),
            Some(&json!({"event_type": kind})),
        )
        .await?;
    let tested = match a.status {
        s if s.is_success() || s == StatusCode::BAD_REQUEST => Tested::of(&a),
        _ => return Err(a.error()),
    };
    let q = PolicyQuery::default();
    policy_view(
        &api,
        &ctx,
        &project,
        id,
        &q,
        Some(Notice::Tested(tested, kind)),
    )
    .await
}

/// `POST /ui/projects/{p}/webhooks/{id}/redeliver` (optional `since`, a `datetime-local` in UTC)
pub async fn redeliver(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    body: axum::body::Bytes,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let since = form_value(&body, "since").filter(|v| !v.is_empty());
    let mut path = format!("/api/v2.0/projects/{project}/webhook/policies/{id}/redeliver");
    if let Some(t) = &since {
        // datetime-local: 2026-12-01T17:05 or with seconds; read as UTC
        let full = if t.len() == 16 {
            format!("{t}:00Z")
        } else {
            format!("{t}Z")
        };
        path.push_str(&format!("?since={}", enc(&full)));
    }
    let a = api.call(Method::POST, &path, None).await?;
    let notice = if a.status.is_success() {
        let n = a.json()["redelivered"].as_u64().unwrap_or(0);
        Notice::Redelivered(match &since {
            Some(t) => format!("Sent again: {n} failed {} since {t} UTC.", plural(n)),
            None => format!("Sent again: {n} dead {}.", plural(n)),
        })
    } else if a.status == StatusCode::BAD_REQUEST {
        Notice::Failed(a.message())
    } else {
        return Err(a.error());
    };
    policy_view(
        &api,
        &ctx,
        &project,
        id,
        &PolicyQuery::default(),
        Some(notice),
    )
    .await
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "delivery" } else { "deliveries" }
}

/// `POST /ui/projects/{p}/webhooks/{id}/executions/{eid}/redeliver`
pub async fn redeliver_one(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid)): Path<(String, i64, i64)>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let a = api
        .call(
            Method::POST,
            &format!(
                "/api/v2.0/projects/{project}/webhook/policies/{id}/executions/{eid}/redeliver"
            ),
            None,
        )
        .await?;
    match a.status {
        s if s.is_success() => Ok(Redirect::to(&format!(
            "/ui/projects/{project}/webhooks/{id}/executions/{eid}"
        ))
        .into_response()),
        StatusCode::CONFLICT => {
            policy_view(
                &api,
                &ctx,
                &project,
                id,
                &PolicyQuery::default(),
                Some(Notice::Failed(a.message())),
            )
            .await
        }
        _ => Err(a.error()),
    }
}

fn definition(rows: &[(&str, Markup)]) -> Markup {
    html! {
        dl.facts {
            @for (k, v) in rows { div { dt { (k) } dd { (v) } } }
        }
    }
}

/// `GET /ui/projects/{p}/webhooks/{id}/executions/{eid}`
pub async fn execution(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid)): Path<(String, i64, i64)>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let base = format!("/api/v2.0/projects/{project}/webhook/policies/{id}");
    let p = api.get_ok(&base).await?;
    let e = api.get_ok(&format!("{base}/executions/{eid}")).await?;
    let tasks = api
        .get_ok(&format!(
            "{base}/executions/{eid}/tasks?page_size=0&sort=id"
        ))
        .await?;
    let payload = api.get(&format!("{base}/executions/{eid}/payload")).await?;
    let payload_text = if payload.status.is_success() {
        pretty(&String::from_utf8_lossy(&payload.body))
    } else {
        payload.message()
    };
    let x = &e["extra_attrs"];
    let name = text(&p["name"]);
    // a link the browser follows itself names the project by id: without the UI client's
    // `X-Is-Resource-Name`, an all-digit name would be read as an id
    let project_id = p["project_id"].as_i64().unwrap_or(0);
    let list = format!("/ui/projects/{project}/webhooks");
    let here = format!("{list}/{id}");
    let title = format!("Execution {eid}");
    let body = html! {
        div.titlebar {
            h1 { (title) " " (badge(e["status"].as_str().unwrap_or(""))) }
            @if status_of(&e) != Some(ExecStatus::Running) {
                form method="post" action=(format!("{here}/executions/{eid}/redeliver")) {
                    button type="submit" { "Redeliver" }
                }
            }
        }
        (definition(&[
            ("Webhook", html! { a href=(here) { (name) } }),
            ("Event type", html! { (text(&x["event_type"])) }),
            ("Event id", html! { code { (text(&x["event_id"])) } }),
            ("Target", html! { span.url { (text(&x["target_address"])) } }),
            ("Attempts", html! { (text(&x["attempts"])) }),
            ("Last HTTP status", html! { (text(&x["last_status_code"])) }),
            ("Next attempt", html! { (when(&x["next_attempt_time"]).unwrap_or_default()) }),
            ("Start", html! { (when(&e["start_time"]).unwrap_or_default()) }),
            ("End", html! { (when(&e["end_time"]).unwrap_or_default()) }),
            ("Message", html! { (text(&e["status_message"])) }),
        ]))
        h2 { "Attempts" }
        @if tasks.as_array().is_none_or(|t| t.is_empty()) {
            p.empty { "No attempt yet." }
        } @else {
            table.list {
                caption.sr { "Attempts" }
                thead { tr { th { "Attempt" } th { "Status code" } th { "Duration" } th { "Error kind" } th { "Response excerpt" } th { span.sr { "Links" } } } }
                tbody {
                    @for t in tasks.as_array().into_iter().flatten() {
                        @let tid = t["id"].as_i64().unwrap_or(0);
                        @let tx = &t["extra_attrs"];
                        tr {
                            th scope="row" data-label="Attempt" { (text(&t["run_count"])) }
                            td data-label="Status code" { (text(&tx["status_code"])) }
                            td data-label="Duration" { (text(&tx["duration_ms"])) " ms" }
                            td data-label="Error kind" { (text(&tx["error_kind"])) }
                            td data-label="Response excerpt" { code.excerpt { (text(&tx["response_excerpt"])) } }
                            td.actions {
                                a href=(format!("{here}/executions/{eid}/attempts/{tid}")) { "Request and response" }
                                " "
                                a href=(format!("/api/v2.0/projects/{project_id}/webhook/policies/{id}/executions/{eid}/tasks/{tid}/log")) { "Log" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Payload" }
        pre.payload tabindex="0" aria-label="Payload" { (payload_text) }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page(
            &ctx,
            &title,
            &[("Projects", "/ui/"), (&project, &list), (&name, &here)],
            body,
        ),
    ))
}

/// `GET /ui/projects/{p}/webhooks/{id}/executions/{eid}/attempts/{tid}`
pub async fn attempt(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id, eid, tid)): Path<(String, i64, i64, i64)>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let base = format!("/api/v2.0/projects/{project}/webhook/policies/{id}");
    let p = api.get_ok(&base).await?;
    let name = text(&p["name"]);
    let t = api
        .get_ok(&format!("{base}/executions/{eid}/tasks/{tid}"))
        .await?;
    let req = &t["request"];
    let resp = &t["response"];
    let list = format!("/ui/projects/{project}/webhooks");
    let here = format!("{list}/{id}");
    let exec = format!("{here}/executions/{eid}");
    let title = format!("Attempt {} of execution {eid}", text(&t["run_count"]));
    let body = html! {
        h1 { (title) }
        section.cards {
            div.card {
                h2 { "Request sent" }
                p { code { (text(&req["method"])) " " (text(&req["url"])) } }
                table.inner {
                    caption.sr { "Request headers" }
                    thead { tr { th { "Header" } th { "Value" } } }
                    tbody {
                        @for h in req["headers"].as_array().into_iter().flatten() {
                            tr { th scope="row" { (text(&h["name"])) } td { code { (text(&h["value"])) } } }
                        }
                    }
                }
                p.hint { "Auth header and signature are never shown: \u{201c}set\u{201d} says they were sent." }
                h3 { "Body" }
                pre.payload tabindex="0" aria-label="Request body" { (pretty(&text(&req["body"]))) }
            }
            div.card {
                h2 { "Response" }
                (definition(&[
                    ("Status code", html! { (text(&resp["status_code"])) }),
                    ("Duration", html! { (text(&resp["duration_ms"])) " ms" }),
                    ("Error kind", html! { (text(&resp["error_kind"])) }),
                    ("Error", html! { (text(&resp["error"])) }),
                    ("Started", html! { (when(&t["start_time"]).unwrap_or_default()) }),
                ]))
                h3 { "Body excerpt" }
                @let excerpt = text(&resp["body_excerpt"]);
                @if excerpt.is_empty() {
                    p.hint { "The response had no body." }
                } @else {
                    pre.payload tabindex="0" aria-label="Response body excerpt" { (excerpt) }
                }
            }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page(
            &ctx,
            &title,
            &[
                ("Projects", "/ui/"),
                (&project, &list),
                (&name, &here),
                (&format!("Execution {eid}"), &exec),
            ],
            body,
        ),
    ))
}
