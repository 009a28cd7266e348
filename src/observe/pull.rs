//! Manifest GET and HEAD: pulls.
//!
//! - GET: streamed back while a copy (≤ 4 MiB) is kept; when the client has received the whole
//!   body of a 200, a pull event is recorded in the background. A GET of a manifest that the
//!   same client's index pull just listed is not a second event. The tag of a pull by digest
//!   comes from the same client's HEAD/GET by tag just before — remembered by this process,
//!   and with several replicas also by the others (see [`super::recent`]).
//! - HEAD: no event; remembers which tag the client resolved.

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode};

use super::manifest::{self, Facts, Kind, MAX_MANIFEST_BYTES};
use super::recent::client_key;
use super::{
    DOCKER_CONTENT_DIGEST, ManifestCall, Who, content_length, fetch_chart_config, header_str, pass,
    resource_url,
};
use crate::app::App;
use crate::config::MultiPlatform;
use crate::events::{Event, EventKind, sink::With};
use crate::forward::Body;
use crate::observe::body::Observed;
use crate::route::{Digest, Reference, Repository};
use crate::store::knowledge;
use crate::store::recent::{self, RecentKind};

pub(super) async fn manifest_head(call: ManifestCall<'_>) -> Response<Body> {
    let ManifestCall {
        app,
        repo,
        reference,
        who,
        req,
        pq,
        ctx,
    } = call;
    let resp = pass(&app.registry, req, pq, ctx).await;
    if resp.status() == StatusCode::OK
        && let (Some(tag), Some(digest)) = (
            reference.tag(),
            header_str(resp.headers(), &DOCKER_CONTENT_DIGEST),
        )
    {
        app.recent
            .remember_tag(who.ip, &who.operator, repo.as_str(), digest, tag);
    }
    resp
}

pub(super) async fn manifest_get(call: ManifestCall<'_>) -> Response<Body> {
    let ManifestCall {
        app,
        repo,
        reference,
        who,
        req,
        pq,
        ctx,
    } = call;
    let resp = pass(&app.registry, req, pq, ctx).await;
    if resp.status() != StatusCode::OK
        || app
            .config
            .pull_ignored(repo.project(), &who.operator, who.user_agent.as_deref())
    {
        return resp;
    }
    let digest = header_str(resp.headers(), &DOCKER_CONTENT_DIGEST)
        .and_then(Digest::parse)
        .or_else(|| reference.digest().cloned());
    let content_type = header_str(resp.headers(), &header::CONTENT_TYPE).map(str::to_string);
    let expected = content_length(resp.headers());
    let app = app.clone();
    resp.map(move |b| {
        let observed = Observed::new(b, move |outcome| {
            if outcome.complete {
                pull_completed(
                    app,
                    repo,
                    reference,
                    who,
                    digest,
                    content_type,
                    outcome.captured,
                );
            }
        })
        .capturing(MAX_MANIFEST_BYTES, expected);
        Body::new(observed)
    })
}

/// A manifest GET whose response reached the client completely. Runs when the body ended, so
/// what the client resolved (tag, index children) is remembered before its next request; the
/// event is queued without waiting (charts first look up their facts in a task).
fn pull_completed(
    app: Arc<App>,
    repo: Repository,
    reference: Reference,
    who: Who,
    digest: Option<Digest>,
    content_type: Option<String>,
    body: Option<Bytes>,
) {
    let digest = match (digest, &body) {
        (Some(d), _) => d.to_string(),
        (None, Some(b)) => Digest::sha256_of(b).to_string(),
        (None, None) => return,
    };
    let facts = body
        .as_deref()
        .and_then(|b| app.facts.get_or_parse(&digest, b, content_type.as_deref()));
    let r = repo.as_str();
    let by_digest = reference.digest().is_some();
    // events.multi_platform: per_manifest counts every manifest GET, as Harbor
    let one_event = app.config.events.multi_platform == MultiPlatform::OneEvent;
    if by_digest
        && one_event
        && app
            .recent
            .parent_index(who.ip, &who.operator, r, &digest)
            .is_some()
    {
        return; // the platform manifest of an index this client just pulled
    }
    let tag = match reference.tag() {
        Some(t) => {
            app.recent
                .remember_tag(who.ip, &who.operator, r, &digest, t);
            Some(t.to_string())
        }
        None => app.recent.tag_for(who.ip, &who.operator, r, &digest),
    };
    if let Some(f) = facts.as_ref().filter(|f| f.kind == Kind::Index) {
        app.recent
            .remember_children(who.ip, &who.operator, r, &digest, &f.child_digests());
    }
    let is_chart = facts.as_ref().is_some_and(|f| f.kind == Kind::Chart);
    let mut e = who.event(
        &app,
        if is_chart {
            EventKind::DownloadChart
        } else {
            EventKind::PullArtifact
        },
        &repo,
    );
    // one request, at most one pull event: it takes the id wharf gave the request, when wharf
    // made one (the event log keeps no second copy of it; registry and access logs show it)
    if let Some(id) = who.made_id {
        e.id = id;
    }
    e.tags = tag.iter().cloned().collect();
    e.digest = Some(digest.clone());
    e.media_type = facts
        .as_ref()
        .and_then(|f| f.media_type.clone())
        .or(content_type);
    e.resource_url = resource_url(&app, &repo, tag.as_deref(), Some(&digest));
    if let Some(f) = &facts {
        e.platforms = f.platforms();
        e.size = (f.kind != Kind::Index).then_some(f.size);
    }
    // what other replicas saw this client resolve, checked in the event's transaction
    let shared = (by_digest && app.recent.is_shared()).then(|| SharedLookup {
        client: client_key(who.ip, &who.operator),
        since: app.recent.since(),
        find_tag: tag.is_none(),
        host: app.external_host.clone(),
        one_event,
    });
    match facts {
        Some(f) if f.kind == Kind::Chart => {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(record_chart_pull(app, repo, who, f, tag, e, shared));
            }
        }
        Some(f) if f.kind == Kind::Index => {
            let (r2, children) = (r.to_string(), f.child_digests());
            let with: With = Arc::new(move |c, e: &mut Event| {
                if let Some(s) = &shared
                    && !s.apply(c, e)?
                {
                    return Ok(false);
                }
                let (sum, known) = knowledge::known_size(c, &r2, &children)?;
                if known > 0 {
                    e.size = Some(sum);
                }
                Ok(true)
            });
            app.events.detached(e, Some(with));
        }
        _ => app.events.detached(e, shared.map(SharedLookup::into_with)),
    }
}

/// A pull by digest that this process could not attribute: look at what other replicas saw.
struct SharedLookup {
    client: String,
    since: i64,
    /// The tag is still unknown.
    find_tag: bool,
    host: String,
    /// `events.multi_platform: one_event`: an index's platform manifest is no pull of its own.
    one_event: bool,
}

impl SharedLookup {
    /// Complete `e` from the shared rows; `false` when it is the platform manifest of an index
    /// the client just pulled (through another replica): not an event of its own.
    fn apply(
        &self,
        c: &crate::store::Db<'_>,
        e: &mut Event,
    ) -> Result<bool, crate::store::StoreError> {
        let digest = e.digest.clone().unwrap_or_default();
        let parent = recent::lookup(
            c,
            &self.client,
            &e.repository,
            &digest,
            RecentKind::ParentIndex,
            self.since,
        )?;
        if parent.is_some() && self.one_event {
            return Ok(false);
        }
        if self.find_tag
            && let Some(tag) = recent::lookup(
                c,
                &self.client,
                &e.repository,
                &digest,
                RecentKind::Tag,
                self.since,
            )?
        {
            e.resource_url =
                Event::oci_resource_url(&self.host, &e.repository, Some(&tag), Some(&digest));
            e.tags = vec![tag];
        }
        Ok(true)
    }

    fn into_with(self) -> With {
        Arc::new(move |c, e: &mut Event| self.apply(c, e))
    }
}

/// A chart pull: its facts come from wharf's knowledge, else from its config blob.
async fn record_chart_pull(
    app: Arc<App>,
    repo: Repository,
    who: Who,
    facts: Arc<Facts>,
    tag: Option<String>,
    mut e: Event,
    shared: Option<SharedLookup>,
) {
    let known = {
        let (r, d) = (repo.to_string(), e.digest.clone().unwrap_or_default());
        app.store
            .read(move |c| knowledge::artifact(c, &r, &d))
            .await
            .ok()
            .flatten()
            .and_then(|a| a.chart)
    };
    let chart = match known {
        Some(c) => c,
        None => {
            let cfg = match &facts.config_digest {
                Some(d) => fetch_chart_config(&app, &repo, d, &who).await,
                None => None,
            };
            manifest::chart_info(cfg.as_deref(), &facts, tag.as_deref())
        }
    };
    e.size = chart.size.or(e.size);
    e.chart = Some(chart);
    app.events.detached(e, shared.map(SharedLookup::into_with));
}
