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
//! pushed through wharf are not counted.
//!
//! Sizes: for a project with a limit, and in a rescan, a blob counts with the size the registry
//! reports for it (`HEAD /v2/<repo>/blobs/<digest>`, cached by digest — content-addressed, so
//! it never changes), not the size the manifest declares; a manifest whose declared size of a
//! blob disagrees with the registry's is refused (400 `MANIFEST_INVALID`), as distribution
//! refuses such a manifest on pull. Sizes are added with saturation, never wrapping.
//!
//! Atomicity: a push to a project with a limit reserves the space it adds before the registry
//! sees the manifest, under the project's row lock ([`crate::store::quota::reserve`]), against
//! the usage plus the space other pushes in progress hold; the reservation becomes usage when
//! the push is committed, and is released when the registry refuses it. Two pushes released at
//! the same instant — through one replica or several — cannot take a project past its limit.
//! A reservation holds every blob of its push, also those the project counts already (a
//! delete may stop counting them before the push lands), and a held blob weighs only while
//! the project does not count it. A reservation that lost a deadlock is made again.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::config::bytesize::human;
use crate::config::{ProjectConfig, QuotaConfig};
use crate::events::{Event, EventKind};
use crate::forward::{ForwardError, Upstream};
use crate::observe::manifest::{self, ACCEPT_ALL, Facts};
use crate::store::{Db, Store, StoreError, knowledge, quota};

/// What quota work uses of a process, and nothing else: the store, the registry (blob sizes,
/// rescans), the cache of sizes it reported, and the configuration it reads. `App::quota`
/// hands one out.
#[derive(Clone, Copy)]
pub struct Quota<'a> {
    pub store: &'a Store,
    pub registry: &'a Upstream,
    pub blob_sizes: &'a BlobSizes,
    /// `projects`: each project's `storage_limit`.
    pub projects: &'a BTreeMap<String, ProjectConfig>,
    /// `quota`.
    pub settings: &'a QuotaConfig,
    /// How long a reservation is held before it lapses by itself (a process that died while
    /// the registry took the manifest): [`reservation_lapse`].
    pub lapse: Duration,
}

/// How long a push's reservation is held before it lapses by itself: longer than the push
/// can be in flight — its waits for the database (the quota check, the reservation, its
/// event's commit: `store.statement_timeout` each) and for the registry
/// (`upstream.response_timeout`) — and a minute. (Before, the database's waits were left out:
/// with a long `store.statement_timeout` a reservation could lapse under a push still
/// waiting for its commit, and another push take its space.)
pub fn reservation_lapse(response_timeout: Duration, statement_timeout: Duration) -> Duration {
    response_timeout
        .saturating_add(statement_timeout.saturating_mul(3))
        .saturating_add(Duration::from_secs(60))
}

/// Harbor's wording of a refused push.
pub fn exceed_message(adding: u64, usage: u64, limit: u64) -> String {
    format!(
        "adding {} of storage resource, which when updated to current usage of {} will exceed the configured upper limit of {}.",
        human(adding),
        human(usage),
        human(limit)
    )
}

/// Harbor's wording of a warning (`threshold` is `quota.warning_threshold`; Harbor's is 85).
pub fn warning_message(usage: u64, limit: u64, threshold: u8) -> String {
    format!(
        "quota usage reach {threshold}%: resource storage used {} of {}",
        human(usage),
        human(limit)
    )
}

/// What may happen to a manifest about to be pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Push it; count `blobs` (digest, size) once it is committed, and release `reservation`.
    Allowed {
        blobs: Vec<(String, u64)>,
        reservation: Option<i64>,
    },
    /// Over the limit.
    Exceeded { adding: u64, usage: u64, limit: u64 },
    /// The manifest declares a blob's size other than the registry's.
    SizeMismatch {
        digest: String,
        declared: u64,
        actual: u64,
    },
}

/// Sizes of blobs as the registry reports them, by digest (content-addressed: never stale).
pub struct BlobSizes {
    map: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    max: usize,
}

impl BlobSizes {
    pub fn new(max: usize) -> Self {
        Self {
            map: std::sync::Mutex::new(std::collections::HashMap::new()),
            max: max.max(1),
        }
    }

    fn get(&self, digest: &str) -> Option<u64> {
        self.map.lock().ok()?.get(digest).copied()
    }

    fn put(&self, digest: &str, size: u64) {
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= self.max {
                m.clear();
            }
            m.insert(digest.to_string(), size);
        }
    }
}

/// The registry's size of blob `digest` of `repo` (HEAD with `headers`, cached); `None` when
/// the registry does not say.
async fn blob_size(q: Quota<'_>, repo: &str, digest: &str, headers: &HeaderMap) -> Option<u64> {
    if let Some(s) = q.blob_sizes.get(digest) {
        return Some(s);
    }
    let path = format!("/v2/{repo}/blobs/{digest}");
    let (parts, _) = q
        .registry
        .fetch(Method::HEAD, &path, headers.clone(), 0)
        .await
        .ok()?;
    // a registry on object storage redirects blob requests, HEAD too (distribution with
    // `redirect` on, its default): the size is the storage's answer
    let parts = match parts.headers.get(http::header::LOCATION) {
        Some(to) if parts.status.is_redirection() => {
            q.registry
                .fetch_location(Method::HEAD, to.to_str().ok()?, 0)
                .await
                .ok()?
                .0
        }
        _ => parts,
    };
    if parts.status != StatusCode::OK {
        return None;
    }
    let size = parts
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    q.blob_sizes.put(digest, size);
    Some(size)
}

/// The blobs of `declared` with the sizes the registry reports (blobs it does not know keep
/// their declared size: the registry refuses the manifest then), or the first blob whose
/// declared size is not the registry's. At most 8 HEADs at a time.
async fn real_sizes(
    q: Quota<'_>,
    repo: &str,
    declared: &[(String, u64)],
    headers: &HeaderMap,
) -> Result<Vec<(String, u64)>, (String, u64, u64)> {
    use futures_util::StreamExt;
    let answers: Vec<(String, u64, Option<u64>)> =
        futures_util::stream::iter(declared.iter().cloned())
            .map(|(d, size)| async move {
                let actual = blob_size(q, repo, &d, headers).await;
                (d, size, actual)
            })
            .buffered(8)
            .collect()
            .await;
    answers
        .into_iter()
        .map(|(d, declared, actual)| match actual {
            Some(a) if a != declared => Err((d, declared, a)),
            Some(a) => Ok((d, a)),
            None => Ok((d, declared)),
        })
        .collect()
}

/// Tries of a reservation that a conflict with another transaction rolled back.
const RESERVE_TRIES: u32 = 3;

/// Decide about a manifest about to be pushed to `repo` (see the module doc). `headers`
/// carry the client's credentials for the size checks.
pub async fn admit(q: Quota<'_>, repo: &str, facts: &Facts, headers: &HeaderMap) -> Admission {
    let project = repo.split('/').next().unwrap_or(repo).to_string();
    let Some(limit) = q.projects.get(&project).and_then(|p| p.storage_limit) else {
        return Admission::Allowed {
            blobs: facts.blobs.clone(),
            reservation: None,
        };
    };
    // only blobs the project does not count yet need the registry's word
    let (p, all) = (project.clone(), facts.blobs.clone());
    let new: Vec<(String, u64)> = match q
        .store
        .within(q.store.read(move |c| {
            // in the manifest's order; a blob declared empty adds nothing, and is not measured
            let not_counted: std::collections::BTreeSet<String> = quota::not_counted(c, &p, &all)?
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            Ok(all
                .into_iter()
                .filter(|(d, size)| *size > 0 && not_counted.contains(d))
                .collect())
        }))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            // the registry keeps working when the database does not
            tracing::error!(project, error = %e, "quota check failed; the push is allowed");
            return Admission::Allowed {
                blobs: facts.blobs.clone(),
                reservation: None,
            };
        }
    };
    let measured = match real_sizes(q, repo, &new, headers).await {
        Ok(m) => m,
        Err((digest, declared, actual)) => {
            return Admission::SizeMismatch {
                digest,
                declared,
                actual,
            };
        }
    };
    let mut blobs = facts.blobs.clone();
    for b in blobs.iter_mut() {
        if let Some((_, size)) = measured.iter().find(|(d, _)| *d == b.0) {
            b.1 = *size;
        }
    }
    // held while the registry takes the manifest; lapses if this process dies meanwhile —
    // counted from when the reservation is written (each try's own), so that a try that
    // waited for the project's row, or followed tries that did, has its whole lapse ahead
    let lapse = q.lapse.as_millis() as i64;
    // (a reservation given up on still lands later, and lapses by itself)
    let mut tries = 0;
    let reserved = loop {
        let (p, wanted) = (project.clone(), blobs.clone());
        let r = q
            .store
            .within(
                q.store
                    .write(move |c| quota::reserve(c, &p, &wanted, limit, lapse)),
            )
            .await;
        tries += 1;
        match r {
            // lost a deadlock to another transaction (a group commit holding another
            // project's row, say): rolled back whole, and nothing was decided — decide again,
            // rather than let the push in unchecked
            Err(e) if e.is_conflict() && tries < RESERVE_TRIES => {
                tracing::warn!(project, error = %e, tries, "quota reservation rolled back by a conflict with another transaction: made again");
            }
            r => break r,
        }
    };
    match reserved {
        Ok(quota::Reservation::Reserved { id }) => Admission::Allowed {
            blobs,
            reservation: Some(id),
        },
        Ok(quota::Reservation::NothingNew) => Admission::Allowed {
            blobs,
            reservation: None,
        },
        Ok(quota::Reservation::Exceeded {
            adding,
            usage,
            limit,
        }) => Admission::Exceeded {
            adding,
            usage,
            limit,
        },
        Err(e) => {
            tracing::error!(project, error = %e, "quota reservation failed; the push is allowed");
            Admission::Allowed {
                blobs,
                reservation: None,
            }
        }
    }
}

/// Give a reservation back (the push did not happen), in the background.
pub fn release(store: &Store, reservation: Option<i64>) {
    if let Some(id) = reservation {
        store.write_detached(
            move |c| quota::release(c, id),
            |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "releasing a quota reservation failed; it lapses by itself");
                }
            },
        );
    }
}

/// After usage moved from `before` to `after`: one QUOTA_WARNING when it grew to or past the
/// warning threshold and nobody was warned of this crossing yet; re-armed when it is below the
/// threshold again. (Not `before < line`: usage may be past the line without any push having
/// crossed it, after a rescan or a lowered limit, and the next growth must still warn.)
pub fn warn_on_crossing(
    c: &Db<'_>,
    e: &Event,
    (before, after): (u64, u64),
    limit: u64,
    threshold: u8,
) -> Result<(), StoreError> {
    let line = (limit as u128 * threshold as u128 / 100) as u64;
    let warned = quota::warned(c, &e.project)?;
    if after < line {
        if warned {
            quota::set_warned(c, &e.project, false)?;
        }
        return Ok(());
    }
    if after > before && !warned {
        let mut w = e.clone();
        w.id = uuid::Uuid::now_v7();
        w.kind = EventKind::QuotaWarning;
        w.quota = Some(crate::events::QuotaInfo {
            details: warning_message(after, limit, threshold),
            limit: Some(limit),
            usage: Some(after),
            adding: Some(after.saturating_sub(before)),
        });
        crate::store::events::insert(c, &w, None)?;
        quota::set_warned(c, &e.project, true)?;
    }
    Ok(())
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
pub async fn project_quota(q: Quota<'_>, project: &str) -> Result<ProjectQuota, StoreError> {
    let p = project.to_string();
    let usage = q.store.read(move |c| quota::usage(c, &p)).await?;
    let limit = q.projects.get(project).and_then(|p| p.storage_limit);
    Ok(ProjectQuota {
        project: project.to_string(),
        limit,
        usage,
        used_percent: limit
            .filter(|l| *l > 0)
            .map(|l| (usage as f64 * 10000.0 / l as f64).round() / 100.0),
        warning_threshold: q.settings.warning_threshold,
        limit_human: limit.map(human),
        usage_human: human(usage),
    })
}

/// Errors of a rescan.
#[derive(Debug, thiserror::Error)]
pub enum RescanError {
    /// The registry could not be reached or answered nothing (the message names it).
    #[error(transparent)]
    Registry(#[from] ForwardError),
    #[error("registry: GET {path}: HTTP {status}")]
    Status { path: String, status: StatusCode },
    #[error("registry: GET {path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("registry: GET /v2/_catalog: HTTP 404 (does the registry serve the catalog API?)")]
    NoCatalog,
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
    crate::link::next_of(h)
}

/// GET a JSON document and the `Link` to its next page; `None` on 404.
async fn get_json(
    registry: &Upstream,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<(serde_json::Value, Option<String>)>, RescanError> {
    let (parts, body) = registry
        .fetch(Method::GET, path, headers.clone(), 64 << 20)
        .await?;
    if parts.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if parts.status != StatusCode::OK {
        return Err(RescanError::Status {
            path: path.to_string(),
            status: parts.status,
        });
    }
    let v = serde_json::from_slice(&body).map_err(|source| RescanError::Json {
        path: path.to_string(),
        source,
    })?;
    Ok(Some((v, next_link(&parts.headers))))
}

/// Every string of array `field` over all pages of a paginated list (`Link: <…>; rel="next"`);
/// `None` when the first page is 404.
async fn list_all(
    registry: &Upstream,
    first: &str,
    field: &str,
    headers: &HeaderMap,
) -> Result<Option<Vec<String>>, RescanError> {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let Some((v, link)) = get_json(registry, &path, headers).await? else {
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
    registry: &Upstream,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<(Facts, String)>, RescanError> {
    let (parts, body) = registry
        .fetch(
            Method::GET,
            path,
            headers.clone(),
            manifest::MAX_MANIFEST_BYTES,
        )
        .await?;
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

/// Record one manifest: knowledge, and quota references (with the registry's blob sizes)
/// when it is new to wharf.
async fn record_manifest(
    q: Quota<'_>,
    repo: &str,
    digest: &str,
    tag: Option<&str>,
    facts: &Facts,
    headers: &HeaderMap,
) -> Result<bool, StoreError> {
    let mut row = facts.artifact(repo, digest, None);
    row.blobs = match real_sizes(q, repo, &row.blobs, headers).await {
        Ok(b) => b,
        Err((blob, declared, actual)) => {
            tracing::warn!(repository = repo, %digest, %blob, declared, actual, "rescan: a blob's declared size is not the registry's; counted with the registry's");
            let mut fixed = row.blobs.clone();
            for b in fixed.iter_mut() {
                if let Some(s) = blob_size(q, repo, &b.0, headers).await {
                    b.1 = s;
                }
            }
            fixed
        }
    };
    let tag = tag.map(str::to_string);
    q.store
        .write(move |c| {
            let new = knowledge::artifact(c, &row.repository, &row.digest)?.is_none();
            if new {
                knowledge::learn_manifest(c, &row, tag.as_deref())?;
            } else if let Some(t) = &tag {
                knowledge::set_tag(c, &row.repository, t, &row.digest)?;
            }
            Ok(new)
        })
        .await
}

/// Walk the registry's catalog and learn every tagged manifest (see the module doc).
/// `authorization` is sent to the registry when it needs credentials.
pub async fn rescan(
    q: Quota<'_>,
    authorization: Option<HeaderValue>,
) -> Result<RescanReport, RescanError> {
    let mut headers = HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(http::header::AUTHORIZATION, a);
    }
    let mut manifest_headers = headers.clone();
    manifest_headers.insert(http::header::ACCEPT, HeaderValue::from_static(ACCEPT_ALL));
    let mut report = RescanReport::default();
    let Some(repos) = list_all(q.registry, "/v2/_catalog?n=1000", "repositories", &headers).await?
    else {
        return Err(RescanError::NoCatalog);
    };
    for repo in repos {
        report.repositories += 1;
        // a repository without any tag (only untagged manifests, or all deleted) is 404
        let first = format!("/v2/{repo}/tags/list?n=1000");
        let Some(tags) = list_all(q.registry, &first, "tags", &headers).await? else {
            tracing::debug!(%repo, "rescan: no tags, skipped");
            continue;
        };
        for tag in tags {
            let path = format!("/v2/{repo}/manifests/{tag}");
            let Some((facts, digest)) = read_manifest(q.registry, &path, &manifest_headers).await?
            else {
                continue;
            };
            report.manifests += 1;
            report.newly_counted += usize::from(
                record_manifest(q, &repo, &digest, Some(&tag), &facts, &headers).await?,
            );
            for child in facts.child_digests() {
                let path = format!("/v2/{repo}/manifests/{child}");
                if let Ok(Some((f, _))) = read_manifest(q.registry, &path, &manifest_headers).await
                {
                    report.manifests += 1;
                    report.newly_counted +=
                        usize::from(record_manifest(q, &repo, &child, None, &f, &headers).await?);
                }
            }
        }
    }
    quota::recount(q.store).await?;
    report.usage = q.store.read(quota::all_usage).await?.into_iter().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_outlives_every_wait_of_its_push() {
        let s = Duration::from_secs;
        // the defaults: 120 s upstream, 30 s per database wait
        assert_eq!(reservation_lapse(s(120), s(30)), s(270));
        // a long statement timeout lengthens it (before: 120 s whatever the timeout)
        assert_eq!(reservation_lapse(s(60), s(300)), s(1020));
        assert_eq!(reservation_lapse(s(60), s(0)), s(120));
        assert_eq!(reservation_lapse(Duration::MAX, s(30)), Duration::MAX);
    }

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
