//! Observe: forward each registry or chart request and watch what happened, turning successful
//! manifest and chart operations into events.
//!
//! Per operation:
//! - manifest PUT: the body is collected (≤ 4 MiB; larger bodies are streamed through untouched
//!   and never make an event), parsed, forwarded; on 201 the event and what wharf learned are
//!   committed *before* the client gets the 201. A non-index manifest pushed by digest alone is
//!   held for `events.index_window`: an index that lists it absorbs it.
//! - manifest GET: streamed back while a copy (≤ 4 MiB) is kept; when the client has received
//!   the whole body of a 200, a pull event is recorded (in the background). A GET of a manifest
//!   that the same client's index pull just listed is not a second event. The tag of a pull by
//!   digest comes from the same client's HEAD/GET by tag just before.
//! - manifest HEAD: no event; remembers which tag the client resolved.
//! - manifest DELETE by digest: before forwarding, wharf looks up size, kind and the tags that
//!   point at the digest (its knowledge, else the registry with the client's credentials); on
//!   202 the event is committed before the client gets the 202.
//! - anything else: streamed through untouched.

pub mod body;
pub mod chart;
pub mod manifest;
pub mod recent;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::events::{ChartInfo, Event, EventKind, sink::With};
use crate::forward::{Body, Upstream, oci_error};
use crate::quota;
use crate::route::{ChartOp, Digest, ManifestAction, Reference, RegistryOp, Repository};
use crate::server::RequestCtx;
use crate::store::{self, knowledge};
use body::Observed;
use manifest::{Facts, Kind, MAX_MANIFEST_BYTES};

static DOCKER_CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");

/// Handle one `/v2` request.
pub async fn registry(
    app: &Arc<App>,
    op: RegistryOp,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    let pq = path_and_query(&req);
    if !app.config.events.enabled {
        return pass(&app.registry, req, &pq, ctx).await;
    }
    match op {
        RegistryOp::Manifest {
            repo,
            reference,
            action,
        } => {
            let call = ManifestCall {
                app,
                who: Who::of(app, req.headers(), ctx),
                repo,
                reference,
                req,
                pq: &pq,
                ctx,
            };
            match action {
                ManifestAction::Put => manifest_put(call).await,
                ManifestAction::Get => manifest_get(call).await,
                ManifestAction::Head => manifest_head(call).await,
                ManifestAction::Delete => manifest_delete(call).await,
            }
        }
        _ => pass(&app.registry, req, &pq, ctx).await,
    }
}

/// One manifest request: what every manifest flow starts from.
struct ManifestCall<'a> {
    app: &'a Arc<App>,
    repo: Repository,
    reference: Reference,
    who: Who,
    req: Request<Body>,
    /// Path and query, forwarded as they came.
    pq: &'a str,
    ctx: &'a RequestCtx,
}

/// Handle one chartrepo request (see [`chart`]).
pub async fn chart(
    app: &Arc<App>,
    op: ChartOp,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    chart::handle(app, op, req, ctx).await
}

fn path_and_query<B>(req: &Request<B>) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

/// Forward as is and stream the answer back.
pub async fn pass(up: &Upstream, req: Request<Body>, pq: &str, ctx: &RequestCtx) -> Response<Body> {
    match up.forward(req, pq, &ctx.conn, &ctx.request_id).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => forward_failed(up, e, ctx),
    }
}

fn forward_failed(
    up: &Upstream,
    e: crate::forward::ForwardError,
    ctx: &RequestCtx,
) -> Response<Body> {
    tracing::warn!(request_id = ctx.request_id_str(), upstream = up.name(), error = %e, "forward failed");
    e.to_response(ctx.request_id_str())
}

/// The client's address: the TCP peer, or with `trust_forwarded_headers` the first address of
/// `X-Forwarded-For` (the one the load balancer in front of wharf saw).
fn client_ip(app: &App, headers: &HeaderMap, ctx: &RequestCtx) -> IpAddr {
    if app.config.trust_forwarded_headers
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return ip;
    }
    ctx.conn.addr.ip()
}

/// Who made the request, as events report it.
#[derive(Debug, Clone)]
pub struct Who {
    pub operator: String,
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    /// The client's credentials, reused for wharf's own reads of that client's artifacts.
    pub authorization: Option<HeaderValue>,
    pub request_id: String,
}

impl Who {
    pub fn of(app: &App, headers: &HeaderMap, ctx: &RequestCtx) -> Who {
        Who {
            operator: crate::events::operator::from_headers(headers, app.token_verifier.as_ref()),
            ip: client_ip(app, headers, ctx),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            request_id: ctx.request_id_str().to_string(),
        }
    }

    /// A new event of `kind` in `repo`, stamped with this request.
    fn event(&self, app: &App, kind: EventKind, repo: &Repository) -> Event {
        let mut e = Event::new(kind, repo, &self.operator);
        e.public = app.config.is_public(repo.project());
        e.request_id = Some(self.request_id.clone());
        e.client_addr = Some(self.ip.to_string());
        e.user_agent = self.user_agent.clone();
        e
    }

    /// Headers for wharf's own read of the registry on this client's behalf.
    fn headers(&self, accept: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = &self.authorization {
            h.insert(header::AUTHORIZATION, a.clone());
        }
        h.insert(header::ACCEPT, HeaderValue::from_static(accept));
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("wharf/", env!("CARGO_PKG_VERSION"))),
        );
        h
    }
}

/// A request body read up to a cap.
enum Collected {
    Full(Bytes),
    /// Over the cap: the body to forward instead (what was read, then the rest, unchanged).
    TooLarge(Body),
    Failed(String),
}

async fn collect_capped(body: Body, limit: usize, declared: Option<u64>) -> Collected {
    if declared.is_some_and(|n| n > limit as u64) {
        return Collected::TooLarge(body);
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(data) => {
                if buf.len() + data.len() > limit {
                    let head = futures_util::stream::iter([Ok(buf.freeze()), Ok(data)]);
                    return Collected::TooLarge(Body::from_stream(head.chain(stream)));
                }
                buf.extend_from_slice(&data);
            }
            Err(e) => return Collected::Failed(e.to_string()),
        }
    }
    Collected::Full(buf.freeze())
}

fn header_str<'a>(h: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, &header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

fn resource_url(app: &App, repo: &Repository, tag: Option<&str>, digest: Option<&str>) -> String {
    Event::oci_resource_url(&app.config.external_host(), repo.as_str(), tag, digest)
}

/// Read a Helm chart's config blob (small) with the client's credentials.
async fn fetch_chart_config(
    app: &App,
    repo: &Repository,
    config_digest: &str,
    who: &Who,
) -> Option<Bytes> {
    let path = format!("/v2/{}/blobs/{}", repo, config_digest);
    match app
        .registry
        .fetch(Method::GET, &path, who.headers("*/*"), 1 << 20)
        .await
    {
        Ok((parts, body)) if parts.status.is_success() => Some(body),
        Ok((parts, _)) => {
            tracing::debug!(status = parts.status.as_u16(), %path, "chart config not readable");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, %path, "chart config not readable");
            None
        }
    }
}

/// An index's size is the sum of its children that wharf knows; computed in the transaction.
fn index_size_and_absorb(repo: String, children: Vec<String>) -> With {
    Box::new(move |c, e: &mut Event| {
        let (sum, known) = knowledge::known_size(c, &repo, &children)?;
        if known > 0 {
            e.size = Some(sum);
        }
        let absorbed = store::events::cancel_held(c, &repo, &children)?;
        if absorbed > 0 {
            tracing::debug!(repository = %repo, absorbed, "platform manifest events absorbed by their index");
        }
        Ok(())
    })
}

async fn manifest_put(call: ManifestCall<'_>) -> Response<Body> {
    let ManifestCall {
        app,
        repo,
        reference,
        who,
        req,
        pq,
        ctx,
    } = call;
    let (parts, body) = req.into_parts();
    let content_type = header_str(&parts.headers, &header::CONTENT_TYPE).map(str::to_string);
    let body = match collect_capped(body, MAX_MANIFEST_BYTES, content_length(&parts.headers)).await
    {
        Collected::Full(b) => b,
        Collected::TooLarge(body) => {
            return pass(&app.registry, Request::from_parts(parts, body), pq, ctx).await;
        }
        Collected::Failed(reason) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                "the manifest could not be read from the request",
                serde_json::json!({"reason": reason, "request_id": ctx.request_id_str()}),
            );
        }
    };
    let facts = manifest::parse(&body, content_type.as_deref()).ok();
    if let Some(f) = &facts
        && let quota::Check::Exceeded {
            adding,
            usage,
            limit,
        } = quota::check_push(app, repo.project(), f).await
    {
        return refuse_over_quota(
            app,
            &repo,
            &reference,
            &who,
            &body,
            f,
            (adding, usage, limit),
            ctx,
        )
        .await;
    }
    let req = Request::from_parts(parts, Body::from(body.clone()));
    let chart_config = async {
        match facts.as_ref() {
            Some(f) if f.kind == Kind::Chart => match &f.config_digest {
                Some(d) => fetch_chart_config(app, &repo, d, &who).await,
                None => None,
            },
            _ => None,
        }
    };
    let (forwarded, chart_config) = tokio::join!(
        app.registry.forward(req, pq, &ctx.conn, &ctx.request_id),
        chart_config
    );
    let resp = match forwarded {
        Ok(r) => r,
        Err(e) => return forward_failed(&app.registry, e, ctx),
    };
    let Some(facts) = facts.filter(|_| resp.status() == StatusCode::CREATED) else {
        return resp.map(Body::new);
    };
    let digest = header_str(resp.headers(), &DOCKER_CONTENT_DIGEST)
        .and_then(Digest::parse)
        .unwrap_or_else(|| Digest::sha256_of(&body))
        .to_string();
    let tag = reference.tag().map(str::to_string);
    let chart = (facts.kind == Kind::Chart)
        .then(|| manifest::chart_info(chart_config.as_deref(), &facts, tag.as_deref()));
    let kind = if chart.is_some() {
        EventKind::UploadChart
    } else {
        EventKind::PushArtifact
    };
    let mut e = who.event(app, kind, &repo);
    e.tags = tag.iter().cloned().collect();
    e.digest = Some(digest.clone());
    e.media_type = facts.media_type.clone();
    e.size = match facts.kind {
        Kind::Index => None,
        Kind::Chart => chart.as_ref().and_then(|c| c.size).or(Some(facts.size)),
        Kind::Image => Some(facts.size),
    };
    e.resource_url = resource_url(app, &repo, tag.as_deref(), Some(&digest));
    e.platforms = facts.platforms();
    e.chart = chart.clone();
    // a platform manifest pushed by digest alone may be part of a multi-platform push
    let hold_until = (facts.kind == Kind::Image && tag.is_none())
        .then(|| store::now_ms() + app.config.events.index_window.as_millis() as i64);
    let row = facts.artifact(repo.as_str(), &digest, chart.as_ref());
    let index_part = (facts.kind == Kind::Index)
        .then(|| index_size_and_absorb(repo.to_string(), facts.child_digests()));
    let limit = app
        .config
        .projects
        .get(repo.project())
        .and_then(|p| p.storage_limit);
    let threshold = app.config.quota.warning_threshold;
    let with: With = Box::new(move |c, e: &mut Event| {
        if let Some(f) = index_part {
            f(c, e)?;
        }
        if let Some(until) = hold_until {
            store::events::extend_held(c, &row.repository, until)?;
        }
        let mut row = row;
        if row.size.is_none() {
            row.size = e.size;
        }
        let new = knowledge::artifact(c, &row.repository, &row.digest)?.is_none();
        knowledge::upsert_artifact(c, &row)?;
        if let Some(t) = &tag {
            knowledge::set_tag(c, &row.repository, t, &row.digest)?;
        }
        if new {
            let before = store::quota::usage(c, &e.project)?;
            store::quota::add_refs(c, &e.project, &row.blobs)?;
            if let Some(limit) = limit {
                let after = store::quota::usage(c, &e.project)?;
                warn_on_crossing(c, e, before, after, limit, threshold)?;
            }
        }
        Ok(())
    });
    app.events.durable(e, hold_until, Some(with)).await;
    resp.map(Body::new)
}

/// Refuse a push that would take its project past its storage limit: 403 DENIED with
/// Harbor's message, and a QUOTA_EXCEED event (committed first). The registry never sees it.
#[allow(clippy::too_many_arguments)]
async fn refuse_over_quota(
    app: &Arc<App>,
    repo: &Repository,
    reference: &Reference,
    who: &Who,
    body: &Bytes,
    facts: &Facts,
    (adding, usage, limit): (u64, u64, u64),
    ctx: &RequestCtx,
) -> Response<Body> {
    let details = quota::exceed_message(adding, usage, limit);
    let digest = Digest::sha256_of(body).to_string();
    let tag = reference.tag();
    let mut e = who.event(app, EventKind::QuotaExceed, repo);
    e.tags = tag.iter().map(|t| t.to_string()).collect();
    e.digest = Some(digest.clone());
    e.media_type = facts.media_type.clone();
    e.size = Some(facts.size);
    e.resource_url = resource_url(app, repo, tag, Some(&digest));
    e.quota = Some(crate::events::QuotaInfo {
        details: details.clone(),
        limit: Some(limit),
        usage: Some(usage),
        adding: Some(adding),
    });
    tracing::warn!(request_id = ctx.request_id_str(), repository = %repo, %details, "push refused: project quota");
    app.events.durable(e, None, None).await;
    oci_error(
        StatusCode::FORBIDDEN,
        "DENIED",
        &details,
        serde_json::json!({
            "project": repo.project(),
            "limit": limit,
            "usage": usage,
            "adding": adding,
            "request_id": ctx.request_id_str(),
        }),
    )
}

/// After usage moved from `before` to `after`: one QUOTA_WARNING when it grew to or past the
/// warning threshold and nobody was warned of this crossing yet; re-armed when it is below the
/// threshold again. (Not `before < line`: usage may be past the line without any push having
/// crossed it, after a rescan or a lowered limit, and the next growth must still warn.)
fn warn_on_crossing(
    c: &rusqlite::Connection,
    e: &Event,
    before: u64,
    after: u64,
    limit: u64,
    threshold: u8,
) -> Result<(), crate::store::StoreError> {
    let line = (limit as u128 * threshold as u128 / 100) as u64;
    let warned = store::quota::warned(c, &e.project)?;
    if after < line {
        if warned {
            store::quota::set_warned(c, &e.project, false)?;
        }
        return Ok(());
    }
    if after > before && !warned {
        let mut w = e.clone();
        w.id = uuid::Uuid::now_v7();
        w.kind = EventKind::QuotaWarning;
        w.quota = Some(crate::events::QuotaInfo {
            details: quota::warning_message(after, limit, threshold),
            limit: Some(limit),
            usage: Some(after),
            adding: Some(after.saturating_sub(before)),
        });
        store::events::insert(c, &w, None)?;
        store::quota::set_warned(c, &e.project, true)?;
    }
    Ok(())
}

async fn manifest_head(call: ManifestCall<'_>) -> Response<Body> {
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

async fn manifest_get(call: ManifestCall<'_>) -> Response<Body> {
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
    if reference.digest().is_some()
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
    match facts {
        Some(f) if f.kind == Kind::Chart => {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(record_chart_pull(app, repo, who, f, tag, e));
            }
        }
        Some(f) if f.kind == Kind::Index => {
            let (r2, children) = (r.to_string(), f.child_digests());
            let with: With = Box::new(move |c: &rusqlite::Connection, e: &mut Event| {
                let (sum, known) = knowledge::known_size(c, &r2, &children)?;
                if known > 0 {
                    e.size = Some(sum);
                }
                Ok(())
            });
            app.events.detached(e, Some(with));
        }
        _ => app.events.detached(e, None),
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
    app.events.detached(e, None);
}

/// What wharf knows about a manifest about to be deleted.
struct Doomed {
    kind: Kind,
    media_type: Option<String>,
    size: Option<u64>,
    chart: Option<ChartInfo>,
    /// Platforms of an index.
    platforms: Vec<String>,
    tags: Vec<String>,
}

/// Most tags wharf checks against the registry when looking for those of a deleted digest.
const MAX_TAGS_CHECKED: usize = 256;

async fn lookup_doomed(app: &App, repo: &Repository, digest: &str, who: &Who) -> Doomed {
    let (r, d) = (repo.to_string(), digest.to_string());
    let known = app
        .store
        .read(move |c| {
            Ok((
                knowledge::artifact(c, &r, &d)?,
                knowledge::tags_of(c, &r, &d)?,
            ))
        })
        .await
        .ok();
    let (artifact, mut tags) = known.unwrap_or((None, Vec::new()));
    let mut doomed = match artifact {
        Some(a) => Doomed {
            kind: match a.kind.as_str() {
                "chart" => Kind::Chart,
                "index" => Kind::Index,
                _ => Kind::Image,
            },
            media_type: a.media_type,
            size: a.size,
            chart: a.chart,
            platforms: a.platforms,
            tags: Vec::new(),
        },
        None => fetch_doomed(app, repo, digest, who).await,
    };
    if let Some(reg) = registry_tags_of(app, repo, digest, who).await {
        // The registry is the truth about every tag it answered for: a tag wharf remembers may
        // have been moved or deleted behind its back (and distribution deletes the tags of a
        // deleted manifest, so reporting such a tag would be wrong).
        tags.retain(|t| !reg.is_settled(t));
        tags.extend(reg.pointing);
    }
    tags.sort();
    tags.dedup();
    if let Some(c) = doomed.chart.as_mut()
        && c.version.is_empty()
        && let Some(t) = tags.first()
    {
        c.version = t.clone();
    }
    doomed.tags = tags;
    doomed
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
        _ => None,
    };
    let Some(facts) = facts else {
        return Doomed {
            kind: Kind::Image,
            media_type: None,
            size: None,
            chart: None,
            platforms: Vec::new(),
            tags: Vec::new(),
        };
    };
    let mut size = (facts.kind != Kind::Index).then_some(facts.size);
    if facts.kind == Kind::Index {
        let (r, children) = (repo.to_string(), facts.child_digests());
        if let Ok((sum, known)) = app
            .store
            .read(move |c| knowledge::known_size(c, &r, &children))
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
        tags: Vec::new(),
    }
}

/// The tags the registry says point at `digest`, asked without credentials (for reports that
/// come from the side endpoint rather than from a client's request); sorted.
pub async fn registry_tags_pointing_at(app: &App, repo: &Repository, digest: &str) -> Vec<String> {
    let who = Who {
        operator: crate::events::operator::ANONYMOUS.into(),
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
        user_agent: None,
        authorization: None,
        request_id: String::new(),
    };
    let mut tags = registry_tags_of(app, repo, digest, &who)
        .await
        .map(|r| r.pointing)
        .unwrap_or_default();
    tags.sort();
    tags
}

/// What the registry said about the tags of a digest.
#[derive(Debug, Default)]
struct RegistryTags {
    /// Tags that point at the digest.
    pointing: Vec<String>,
    /// Tags whose HEAD the registry answered (200 or 404), pointing at the digest or not.
    answered: HashSet<String>,
    /// Every tag of the repository, when the list came in one piece (no `Link` to a next page):
    /// a tag not in it does not exist.
    listed: Option<HashSet<String>>,
}

impl RegistryTags {
    /// Does the registry's answer decide about `tag` (so what wharf remembers does not count)?
    fn is_settled(&self, tag: &str) -> bool {
        self.answered.contains(tag) || self.listed.as_ref().is_some_and(|l| !l.contains(tag))
    }
}

/// What the registry says about the tags pointing at `digest` (tags list, then HEAD of each,
/// bounded); `None` when the tags list could not be read.
async fn registry_tags_of(
    app: &App,
    repo: &Repository,
    digest: &str,
    who: &Who,
) -> Option<RegistryTags> {
    #[derive(serde::Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let list = app
        .registry
        .fetch(
            Method::GET,
            &format!("/v2/{repo}/tags/list"),
            who.headers("application/json"),
            4 << 20,
        )
        .await;
    let (tags, complete) = match list {
        Ok((parts, body)) if parts.status == StatusCode::OK => {
            let tags = serde_json::from_slice::<TagList>(&body)
                .ok()?
                .tags
                .unwrap_or_default();
            (tags, !parts.headers.contains_key(header::LINK))
        }
        _ => return None,
    };
    let mut out = RegistryTags {
        listed: complete.then(|| tags.iter().cloned().collect()),
        ..RegistryTags::default()
    };
    let answers: Vec<(String, Option<bool>)> =
        futures_util::stream::iter(tags.into_iter().take(MAX_TAGS_CHECKED))
            .map(|tag| async move {
                let path = format!("/v2/{repo}/manifests/{tag}");
                let answer = match app
                    .registry
                    .fetch(Method::HEAD, &path, who.headers(manifest::ACCEPT_ALL), 0)
                    .await
                {
                    Ok((parts, _)) if parts.status == StatusCode::OK => {
                        Some(header_str(&parts.headers, &DOCKER_CONTENT_DIGEST) == Some(digest))
                    }
                    Ok((parts, _)) if parts.status == StatusCode::NOT_FOUND => Some(false),
                    _ => None,
                };
                (tag, answer)
            })
            .buffer_unordered(8)
            .collect()
            .await;
    for (tag, answer) in answers {
        match answer {
            Some(true) => {
                out.answered.insert(tag.clone());
                out.pointing.push(tag);
            }
            Some(false) => {
                out.answered.insert(tag);
            }
            None => {}
        }
    }
    Some(out)
}

async fn manifest_delete(call: ManifestCall<'_>) -> Response<Body> {
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
    let doomed = lookup_doomed(app, &repo, &digest, &who).await;
    let resp = pass(&app.registry, req, pq, ctx).await;
    if resp.status() != StatusCode::ACCEPTED {
        return resp;
    }
    let kind = if doomed.kind == Kind::Chart {
        EventKind::DeleteChart
    } else {
        EventKind::DeleteArtifact
    };
    let mut e = who.event(app, kind, &repo);
    e.tags = doomed.tags;
    e.digest = Some(digest.clone());
    e.media_type = doomed.media_type;
    e.size = doomed.chart.as_ref().and_then(|c| c.size).or(doomed.size);
    e.resource_url = resource_url(app, &repo, None, Some(&digest));
    e.platforms = doomed.platforms;
    e.chart = doomed.chart;
    let (r, d) = (repo.to_string(), digest);
    let limit = app
        .config
        .projects
        .get(repo.project())
        .and_then(|p| p.storage_limit);
    let threshold = app.config.quota.warning_threshold;
    let with: With = Box::new(move |c, e: &mut Event| {
        // A push of this digest still waiting for an index is published now, before its delete.
        store::events::publish_held(c, &r, &d)?;
        // the space its blobs took comes back (blobs other manifests use stay counted)
        if let Some(gone) = knowledge::artifact(c, &r, &d)? {
            let before = store::quota::usage(c, &e.project)?;
            store::quota::remove_refs(c, &e.project, &gone.blobs)?;
            if let Some(limit) = limit {
                let after = store::quota::usage(c, &e.project)?;
                warn_on_crossing(c, e, before, after, limit, threshold)?;
            }
        }
        knowledge::forget(c, &r, &d)
    });
    app.events.durable(e, None, Some(with)).await;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tags: &[&str]) -> HashSet<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_registry_settles_the_tags_it_answered_or_listed_completely() {
        let reg = RegistryTags {
            pointing: vec!["a".into()],
            answered: set(&["a", "moved"]),
            listed: Some(set(&["a", "moved", "unchecked"])),
        };
        assert!(reg.is_settled("a"));
        assert!(reg.is_settled("moved"), "answered: another digest");
        assert!(reg.is_settled("gone"), "not in a complete list: deleted");
        assert!(
            !reg.is_settled("unchecked"),
            "listed but not checked: wharf's knowledge stands"
        );
        let paged = RegistryTags {
            listed: None,
            ..reg
        };
        assert!(
            !paged.is_settled("gone"),
            "a paginated list proves nothing about a missing tag"
        );
    }
}
