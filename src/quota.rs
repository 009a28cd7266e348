//! Quota: project storage limits that wharf enforces itself, because it sees every manifest
//! before the registry accepts it.
//!
//! A project's usage is the sum of the unique blobs its manifests reference (see
//! [`crate::store::quota`]). A manifest PUT whose new blobs would take usage past
//! `projects.<name>.storage_limit` is refused with 403 and an OCI `DENIED` error saying,
//! Harbor-style, how much would be added to what usage against which limit; a QUOTA_EXCEED
//! event records it and the registry never receives the manifest. Crossing
//! `quota.warning_threshold` percent emits one QUOTA_WARNING per crossing (re-armed when usage
//! falls below it again). Deletes give space back.
//!
//! Usage is learned from traffic. For a registry that already has content, run
//! `wharf quota rescan` once: it walks the catalog (every tag of every repository, and the
//! platform manifests of indexes; a repository without tags is skipped) and records what it
//! finds, then recounts every project's usage from all the manifests wharf knows (so those a
//! wharf without quotas learned earlier count too). Manifests reachable by no tag and never
//! pushed through wharf are not counted. Two pushes racing into the last free bytes can both
//! pass the check: the limit is enforced per push, not transactionally against concurrent
//! pushes.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::app::App;
use crate::config::bytesize::human;
use crate::observe::manifest::{self, ACCEPT_ALL, Facts};
use crate::store::{StoreError, knowledge, quota};

/// Harbor's wording of a refused push.
pub fn exceed_message(adding: u64, usage: u64, limit: u64) -> String {
    format!(
        "adding {} of storage resource, which when updated to current usage of {} will exceed the configured upper limit of {}.",
        human(adding),
        human(usage),
        human(limit)
    )
}

/// The wording of a warning.
pub fn warning_message(usage: u64, limit: u64, threshold: u8) -> String {
    format!(
        "usage of {} has crossed the warning threshold of {threshold}% of the configured upper limit of {}.",
        human(usage),
        human(limit)
    )
}

/// The outcome of checking a push against its project's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No limit, or within it.
    Allowed,
    /// Over the limit.
    Exceeded { adding: u64, usage: u64, limit: u64 },
}

/// Check a manifest about to be pushed to `project`.
pub async fn check_push(app: &App, project: &str, facts: &Facts) -> Check {
    let Some(limit) = app
        .config
        .projects
        .get(project)
        .and_then(|p| p.storage_limit)
    else {
        return Check::Allowed;
    };
    let (p, blobs) = (project.to_string(), facts.blobs.clone());
    let measured = app
        .store
        .read(move |c| Ok((quota::usage(c, &p)?, quota::adding(c, &p, &blobs)?)))
        .await;
    match measured {
        Ok((usage, adding)) if usage.saturating_add(adding) > limit && adding > 0 => {
            Check::Exceeded {
                adding,
                usage,
                limit,
            }
        }
        Ok(_) => Check::Allowed,
        Err(e) => {
            // the registry keeps working when the database does not
            tracing::error!(project, error = %e, "quota check failed; the push is allowed");
            Check::Allowed
        }
    }
}

/// Usage and limit of a project.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectQuota {
    pub project: String,
    /// Bytes; `null` when the project has no limit.
    pub limit: Option<u64>,
    pub usage: u64,
    /// Percent of the limit used.
    pub used_percent: Option<f64>,
    pub warning_threshold: u8,
    pub limit_human: Option<String>,
    pub usage_human: String,
}

/// Report a project's quota.
pub async fn project_quota(app: &App, project: &str) -> Result<ProjectQuota, StoreError> {
    let p = project.to_string();
    let usage = app.store.read(move |c| quota::usage(c, &p)).await?;
    let limit = app
        .config
        .projects
        .get(project)
        .and_then(|p| p.storage_limit);
    Ok(ProjectQuota {
        project: project.to_string(),
        limit,
        usage,
        used_percent: limit
            .filter(|l| *l > 0)
            .map(|l| (usage as f64 * 10000.0 / l as f64).round() / 100.0),
        warning_threshold: app.config.quota.warning_threshold,
        limit_human: limit.map(human),
        usage_human: human(usage),
    })
}

/// Errors of a rescan.
#[derive(Debug, thiserror::Error)]
pub enum RescanError {
    #[error("registry: {0}")]
    Registry(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a rescan found.
#[derive(Debug, Default)]
pub struct RescanReport {
    pub repositories: usize,
    pub manifests: usize,
    pub newly_counted: usize,
    /// Usage per project after the rescan.
    pub usage: BTreeMap<String, u64>,
}

fn next_link(h: &HeaderMap) -> Option<String> {
    // Link: </v2/_catalog?last=x&n=100>; rel="next"
    let v = h.get(http::header::LINK)?.to_str().ok()?;
    let start = v.find('<')? + 1;
    let end = v[start..].find('>')? + start;
    v[end..]
        .contains("rel=\"next\"")
        .then(|| v[start..end].to_string())
}

/// GET a JSON document and the `Link` to its next page; `None` on 404.
async fn get_json(
    app: &App,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<(serde_json::Value, Option<String>)>, RescanError> {
    let (parts, body) = app
        .registry
        .fetch(Method::GET, path, headers.clone(), 64 << 20)
        .await
        .map_err(|e| RescanError::Registry(e.to_string()))?;
    if parts.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if parts.status != StatusCode::OK {
        return Err(RescanError::Registry(format!(
            "GET {path}: HTTP {}",
            parts.status
        )));
    }
    let v = serde_json::from_slice(&body)
        .map_err(|e| RescanError::Registry(format!("GET {path}: {e}")))?;
    Ok(Some((v, next_link(&parts.headers))))
}

/// Every string of array `field` over all pages of a paginated list (`Link: <…>; rel="next"`);
/// `None` when the first page is 404.
async fn list_all(
    app: &App,
    first: &str,
    field: &str,
    headers: &HeaderMap,
) -> Result<Option<Vec<String>>, RescanError> {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let Some((v, link)) = get_json(app, &path, headers).await? else {
            return Ok(if out.is_empty() { None } else { Some(out) });
        };
        out.extend(
            v.get(field)
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_string)),
        );
        next = link;
    }
    Ok(Some(out))
}

/// GET a manifest and parse it; `None` (logged) when it is not readable or not a manifest.
async fn read_manifest(
    app: &App,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<(Facts, String)>, RescanError> {
    let (parts, body) = app
        .registry
        .fetch(
            Method::GET,
            path,
            headers.clone(),
            manifest::MAX_MANIFEST_BYTES,
        )
        .await
        .map_err(|e| RescanError::Registry(e.to_string()))?;
    if parts.status != StatusCode::OK {
        tracing::warn!(%path, status = parts.status.as_u16(), "rescan: manifest not readable, skipped");
        return Ok(None);
    }
    let ctype = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Ok(facts) = manifest::parse(&body, ctype) else {
        tracing::warn!(%path, "rescan: not an image manifest or index, skipped");
        return Ok(None);
    };
    let digest = parts
        .headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| crate::route::Digest::sha256_of(&body).to_string());
    Ok(Some((facts, digest)))
}

/// Record one manifest: knowledge, and quota references when it is new to wharf.
async fn record_manifest(
    app: &App,
    repo: &str,
    digest: &str,
    tag: Option<&str>,
    facts: &Facts,
) -> Result<bool, StoreError> {
    let project = repo.split('/').next().unwrap_or(repo).to_string();
    let row = facts.artifact(repo, digest, None);
    let tag = tag.map(str::to_string);
    app.store
        .write(move |c| {
            let new = knowledge::artifact(c, &row.repository, &row.digest)?.is_none();
            if new {
                knowledge::upsert_artifact(c, &row)?;
                quota::add_refs(c, &project, &row.blobs)?;
            }
            if let Some(t) = &tag {
                knowledge::set_tag(c, &row.repository, t, &row.digest)?;
            }
            Ok(new)
        })
        .await
}

/// Walk the registry's catalog and learn every tagged manifest (see the module doc).
/// `authorization` is sent to the registry when it needs credentials.
pub async fn rescan(
    app: &App,
    authorization: Option<HeaderValue>,
) -> Result<RescanReport, RescanError> {
    let mut headers = HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a);
    }
    let mut manifest_headers = headers.clone();
    manifest_headers.insert(http::header::ACCEPT, HeaderValue::from_static(ACCEPT_ALL));
    let mut report = RescanReport::default();
    let Some(repos) = list_all(app, "/v2/_catalog?n=1000", "repositories", &headers).await? else {
        return Err(RescanError::Registry(
            "GET /v2/_catalog: HTTP 404 (does the registry serve the catalog API?)".into(),
        ));
    };
    for repo in repos {
        report.repositories += 1;
        // a repository without any tag (only untagged manifests, or all deleted) is 404
        let first = format!("/v2/{repo}/tags/list?n=1000");
        let Some(tags) = list_all(app, &first, "tags", &headers).await? else {
            tracing::debug!(%repo, "rescan: no tags, skipped");
            continue;
        };
        for tag in tags {
            let path = format!("/v2/{repo}/manifests/{tag}");
            let Some((facts, digest)) = read_manifest(app, &path, &manifest_headers).await? else {
                continue;
            };
            report.manifests += 1;
            report.newly_counted +=
                usize::from(record_manifest(app, &repo, &digest, Some(&tag), &facts).await?);
            for child in facts.child_digests() {
                let path = format!("/v2/{repo}/manifests/{child}");
                if let Ok(Some((f, _))) = read_manifest(app, &path, &manifest_headers).await {
                    report.manifests += 1;
                    report.newly_counted +=
                        usize::from(record_manifest(app, &repo, &child, None, &f).await?);
                }
            }
        }
    }
    app.store.write(quota::recount).await?;
    report.usage = app
        .store
        .read(quota::all_usage)
        .await?
        .into_iter()
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_harbor() {
        assert_eq!(
            exceed_message(2_202_009, 8_703_180, 10 << 20),
            "adding 2.1 MiB of storage resource, which when updated to current usage of 8.3 MiB will exceed the configured upper limit of 10.0 MiB."
        );
        assert!(warning_message(9 << 20, 10 << 20, 85).contains("85%"));
    }

    #[test]
    fn link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=b&n=2>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
