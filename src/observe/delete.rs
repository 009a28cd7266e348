//! Manifest DELETE by digest: one DELETE_ARTIFACT (or DELETE_CHART) event, committed before
//! the client gets the 202, with the deleted manifest's kind, size and every tag that pointed
//! at it.
//!
//! What the request costs the registry is bounded and mostly paid after the registry accepted
//! the delete: wharf's own knowledge first (no request); for a manifest wharf never saw, one
//! GET of it and — only when the client could read it — one tag list, before forwarding
//! (afterwards both are gone). Once the registry answered 202, the candidate tags (known or
//! listed, at most [`MAX_TAGS_CHECKED`]) are checked with a HEAD each: distribution removes
//! the tags of a deleted manifest, so a tag that now answers 404 pointed at it, and one that
//! answers with another digest had moved elsewhere; one the registry gives no answer about
//! counts only when wharf knew it pointed there (a tag merely listed is not claimed). A delete
//! the registry refuses costs at most the one GET.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::StreamExt;
use http::header;
use http::{Method, Response, StatusCode};

use super::manifest::{self, Kind, MAX_MANIFEST_BYTES};
use super::{
    DOCKER_CONTENT_DIGEST, ManifestCall, Who, fetch_chart_config, header_str, pass, resource_url,
};
use crate::app::App;
use crate::events::{ChartInfo, Event, EventKind, sink::With};
use crate::forward::Body;
use crate::quota;
use crate::route::Repository;
use crate::store::{self, knowledge};

/// Most tags checked with the registry after a delete.
pub const MAX_TAGS_CHECKED: usize = 64;

/// What wharf knows about a manifest about to be deleted.
struct Doomed {
    kind: Kind,
    media_type: Option<String>,
    size: Option<u64>,
    chart: Option<ChartInfo>,
    /// Platforms of an index.
    platforms: Vec<String>,
    /// Tags that may point at it (checked once the delete is done).
    candidates: Candidates,
}

/// Tags that may point at a manifest about to be deleted, by where they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Candidates {
    /// Tags wharf knew to point at it: one the registry gives no answer about still counts.
    Known(Vec<String>),
    /// The repository's tag list (a manifest wharf never saw): a tag counts only when the
    /// registry says it went with the manifest.
    Listed(Vec<String>),
}

impl Doomed {
    fn unknown() -> Doomed {
        Doomed {
            kind: Kind::Image,
            media_type: None,
            size: None,
            chart: None,
            platforms: Vec::new(),
            candidates: Candidates::Listed(Vec::new()),
        }
    }
}

/// Before forwarding: wharf's knowledge, else one GET of the manifest (and its repository's
/// tag list when the client can read it).
async fn before_delete(app: &App, repo: &Repository, digest: &str, who: &Who) -> Doomed {
    let (r, d) = (repo.to_string(), digest.to_string());
    let known = app
        .store
        .within(app.store.read(move |c| {
            Ok((
                knowledge::artifact(c, &r, &d)?,
                knowledge::tags_of(c, &r, &d)?,
            ))
        }))
        .await
        .ok();
    match known {
        Some((Some(a), tags)) => Doomed {
            kind: a.kind,
            media_type: a.media_type,
            size: a.size,
            chart: a.chart,
            platforms: a.platforms,
            candidates: Candidates::Known(tags),
        },
        _ => fetch_doomed(app, repo, digest, who).await,
    }
}

/// Ask the registry about a manifest wharf has not seen (pushed before wharf was there).
async fn fetch_doomed(app: &App, repo: &Repository, digest: &str, who: &Who) -> Doomed {
    let path = format!("/v2/{repo}/manifests/{digest}");
    let fetched = app
        .registry
        .fetch(
            Method::GET,
            &path,
            who.headers(manifest::ACCEPT_ALL),
            MAX_MANIFEST_BYTES,
        )
        .await;
    let facts = match fetched {
        Ok((parts, body)) if parts.status == StatusCode::OK => {
            manifest::parse(&body, header_str(&parts.headers, &header::CONTENT_TYPE)).ok()
        }
        // not there, or not readable by this client: nothing to learn, nothing more to ask
        _ => None,
    };
    let Some(facts) = facts else {
        return Doomed::unknown();
    };
    let mut size = (facts.kind != Kind::Index).then_some(facts.size);
    if facts.kind == Kind::Index {
        let (r, children) = (repo.to_string(), facts.child_digests());
        if let Ok((sum, known)) = app
            .store
            .within(
                app.store
                    .read(move |c| knowledge::known_size(c, &r, &children)),
            )
            .await
            && known > 0
        {
            size = Some(sum);
        }
    }
    let chart = if facts.kind == Kind::Chart {
        let cfg = match &facts.config_digest {
            Some(d) => fetch_chart_config(app, repo, d, who).await,
            None => None,
        };
        let c = manifest::chart_info(cfg.as_deref(), &facts, None);
        size = c.size.or(size);
        Some(c)
    } else {
        None
    };
    Doomed {
        kind: facts.kind,
        platforms: facts.platforms(),
        media_type: facts.media_type,
        size,
        chart,
        candidates: Candidates::Listed(
            super::tags::list(&app.registry, repo, who)
                .await
                .unwrap_or_default(),
        ),
    }
}

/// After the registry deleted `digest`: the candidates that pointed at it (see the module doc).
async fn settle_tags(
    app: &App,
    repo: &Repository,
    digest: &str,
    who: &Who,
    candidates: Candidates,
) -> Vec<String> {
    let (candidates, known) = match candidates {
        Candidates::Known(t) => (t, true),
        Candidates::Listed(t) => (t, false),
    };
    let candidates: BTreeSet<String> = candidates.into_iter().collect();
    let checked: Vec<(String, bool)> =
        futures_util::stream::iter(candidates.into_iter().take(MAX_TAGS_CHECKED))
            .map(|tag| async move {
                let path = format!("/v2/{repo}/manifests/{tag}");
                let answer = app
                    .registry
                    .fetch(Method::HEAD, &path, who.headers(manifest::ACCEPT_ALL), 0)
                    .await
                    .ok()
                    .map(|(parts, _)| {
                        let got =
                            header_str(&parts.headers, &DOCKER_CONTENT_DIGEST).map(str::to_string);
                        (parts.status, got)
                    });
                let pointed = pointed_at(answer.as_ref(), digest, known);
                (tag, pointed)
            })
            .buffered(8)
            .collect()
            .await;
    checked
        .into_iter()
        .filter_map(|(t, pointed)| pointed.then_some(t))
        .collect()
}

/// Did a candidate tag point at the deleted `digest`, by the registry's answer to its HEAD
/// (status and `Docker-Content-Digest`; `None`: no answer)? `known`: wharf knew it did.
fn pointed_at(answer: Option<&(StatusCode, Option<String>)>, digest: &str, known: bool) -> bool {
    match answer {
        // still there: it points at another manifest (or this one was not removed)
        Some((StatusCode::OK, got)) => got.as_deref() == Some(digest),
        // gone with the manifest
        Some((StatusCode::NOT_FOUND, _)) => true,
        // no answer (or an error): what wharf knew stands; a tag merely listed is not claimed
        _ => known,
    }
}

pub(super) async fn manifest_delete(call: ManifestCall<'_>) -> Response<Body> {
    let ManifestCall {
        app,
        repo,
        reference,
        who,
        req,
        pq,
        ctx,
    } = call;
    let Some(digest) = reference.digest().map(|d| d.to_string()) else {
        // distribution refuses deletes by tag; whatever the registry says, no artifact is gone
        return pass(&app.registry, req, pq, ctx).await;
    };
    let doomed = before_delete(app, &repo, &digest, &who).await;
    let sent_at = store::now_ms();
    let resp = pass(&app.registry, req, pq, ctx).await;
    if resp.status() != StatusCode::ACCEPTED {
        return resp;
    }
    let tags = settle_tags(app, &repo, &digest, &who, doomed.candidates).await;
    let mut chart = doomed.chart;
    if let Some(c) = chart.as_mut()
        && c.version.is_empty()
        && let Some(t) = tags.first()
    {
        c.version = t.clone();
    }
    let kind = if doomed.kind == Kind::Chart {
        EventKind::DeleteChart
    } else {
        EventKind::DeleteArtifact
    };
    let mut e = who.event(app, kind, &repo);
    e.tags = tags;
    e.digest = Some(digest.clone());
    e.media_type = doomed.media_type;
    e.size = chart.as_ref().and_then(|c| c.size).or(doomed.size);
    e.resource_url = resource_url(app, &repo, None, Some(&digest));
    e.platforms = doomed.platforms;
    e.chart = chart;
    let (r, d) = (repo.to_string(), digest);
    let limit = app
        .config
        .projects
        .get(repo.project())
        .and_then(|p| p.storage_limit);
    let threshold = app.config.quota.warning_threshold;
    let with: With = Arc::new(move |c, e: &mut Event| {
        // A push of this digest still waiting for an index is published now, before its delete.
        store::events::publish_held(c, &r, &d)?;
        // the space its blobs took comes back (blobs other manifests use stay counted)
        // (unless pushed again meanwhile)
        let forgotten = knowledge::forget_deleted(c, &r, &d, sent_at)?;
        if let (Some(usage), Some(limit)) = (forgotten, limit) {
            quota::warn_on_crossing(c, e, usage, limit, threshold)?;
        }
        Ok(true)
    });
    app.events.durable(e, None, Some(with)).await;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tag the registry gives no answer about after the delete counts only when wharf knew
    /// it pointed at the manifest; a tag merely listed (a manifest wharf never saw) does not
    /// (before, every listed tag of the repository was reported deleted).
    #[test]
    fn a_tag_without_an_answer_counts_only_when_wharf_knew_it() {
        let d = "sha256:aa";
        for known in [true, false] {
            let gone = (StatusCode::NOT_FOUND, None);
            assert!(pointed_at(Some(&gone), d, known));
            let same = (StatusCode::OK, Some(d.to_string()));
            assert!(pointed_at(Some(&same), d, known));
            let moved = (StatusCode::OK, Some("sha256:bb".to_string()));
            assert!(!pointed_at(Some(&moved), d, known));
            for failed in [StatusCode::UNAUTHORIZED, StatusCode::BAD_GATEWAY] {
                assert_eq!(pointed_at(Some(&(failed, None)), d, known), known);
            }
            assert_eq!(pointed_at(None, d, known), known);
        }
    }
}
