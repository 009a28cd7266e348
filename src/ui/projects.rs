//! `/ui/`: the projects the caller administers (the system administrator: every known project),
//! with their webhook count, repositories and quota usage. From `GET /api/v2.0/projects`
//! (a project administrator's own projects carry `current_user_role_id`), `GET …/webhook/policies`
//! (`X-Total-Count`) and `GET /api/v1/projects/{p}/quota`.

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use maud::html;
use serde_json::Value;

use super::page::{self, UiError, text};
use super::session;
use crate::api::ApiState;

/// One row of the page.
struct Row {
    name: String,
    repos: String,
    webhooks: Option<u64>,
    quota: Value,
}

/// `GET /ui/`
pub async fn page(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, UiError> {
    let (ctx, api) = session(&s, &headers).await?;
    let all = api
        .get_ok("/api/v2.0/projects?page_size=0&sort=name")
        .await?;
    let mut rows = Vec::new();
    for p in all.as_array().into_iter().flatten() {
        let mine = ctx.is_admin() || p["current_user_role_id"].as_i64() == Some(1);
        let Some(name) = p["name"].as_str().filter(|_| mine) else {
            continue;
        };
        let hooks = api
            .get(&format!(
                "/api/v2.0/projects/{name}/webhook/policies?page_size=1"
            ))
            .await?;
        let quota = api.get(&format!("/api/v1/projects/{name}/quota")).await?;
        rows.push(Row {
            name: name.to_string(),
            repos: text(&p["repo_count"]),
            webhooks: hooks.total(),
            quota: if quota.status.is_success() {
                quota.json()
            } else {
                Value::Null
            },
        });
    }
    let body = html! {
        h1 { "Projects" }
        @if rows.is_empty() {
            p.empty { "No project you administer." }
        } @else {
            table.list {
                caption.sr { "Projects" }
                thead { tr { th { "Project" } th { "Webhooks" } th { "Repositories" } th { "Quota" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td data-label="Project" {
                                a href=(format!("/ui/projects/{}/webhooks", r.name)) { (r.name) }
                            }
                            td data-label="Webhooks" { (r.webhooks.map(|n| n.to_string()).unwrap_or_default()) }
                            td data-label="Repositories" { (r.repos) }
                            td data-label="Quota" {
                                @match (r.quota["limit_human"].as_str(), r.quota["used_percent"].as_f64()) {
                                    (Some(limit), Some(pct)) => {
                                        meter min="0" max="100" value=(format!("{pct:.1}")) title=(format!("{pct:.1} %")) {}
                                        " " (text(&r.quota["usage_human"])) " of " (limit)
                                    }
                                    _ => {
                                        (text(&r.quota["usage_human"])) " used, no limit"
                                    }
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
        page::page(&ctx, "Projects", &[], body),
    ))
}
