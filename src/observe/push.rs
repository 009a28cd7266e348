//! Manifest PUT: collect the manifest (≤ 4 MiB), admit it against its project's quota (sizes
//! checked with the registry, space reserved), forward it, and on 201 commit the event and what
//! wharf learned — knowledge, quota usage, an absorbed or extended multi-platform hold —
//! *before* the client gets the 201. A push the quota refuses never reaches the registry.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode};

use super::manifest::{self, Facts, Kind, MAX_MANIFEST_BYTES};
use super::{
    Collected, DOCKER_CONTENT_DIGEST, ManifestCall, Who, collect_capped, content_length,
    fetch_chart_config, forward_failed, header_str, pass, resource_url,
};
use crate::app::App;
use crate::config::MultiPlatform;
use crate::events::{
    Event, EventKind,
    sink::{Recorded, With},
};
use crate::forward::{Body, oci_error};
use crate::quota::{self, Admission};
use crate::route::{Digest, Reference, Repository};
use crate::server::RequestCtx;
use crate::store::{self, knowledge, knowledge::Artifact};

/// An index's size is the sum of its children that wharf knows; computed in the transaction.
/// The held events of its platform manifests are absorbed.
fn index_size_and_absorb(
    c: &store::Db<'_>,
    e: &mut Event,
    repo: &str,
    children: &[String],
) -> Result<(), store::StoreError> {
    let (sum, known) = knowledge::known_size(c, repo, children)?;
    if known > 0 {
        e.size = Some(sum);
    }
    let absorbed = store::events::cancel_held(c, repo, children)?;
    if absorbed > 0 {
        tracing::debug!(repository = %repo, absorbed, "platform manifest events absorbed by their index");
    }
    Ok(())
}

pub(super) async fn manifest_put(call: ManifestCall<'_>) -> Response<Body> {
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
                serde_json::json!({"reason": reason.to_string(), "request_id": ctx.request_id_str()}),
            );
        }
    };
    let facts = manifest::parse(&body, content_type.as_deref()).ok();
    let (blobs, reservation) = match &facts {
        None => (Vec::new(), None),
        Some(f) => match quota::admit(app.quota(), repo.as_str(), f, &who.headers("*/*")).await {
            Admission::Allowed { blobs, reservation } => (blobs, reservation),
            Admission::Exceeded {
                adding,
                usage,
                limit,
            } => {
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
            Admission::SizeMismatch {
                digest,
                declared,
                actual,
            } => {
                tracing::warn!(request_id = ctx.request_id_str(), repository = %repo, %digest, declared, actual, "manifest refused: declared blob size is not the registry's");
                return oci_error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    &format!(
                        "blob {digest}: the manifest declares {declared} bytes, the registry holds {actual}"
                    ),
                    serde_json::json!({"digest": digest, "declared": declared, "actual": actual, "request_id": ctx.request_id_str()}),
                );
            }
        },
    };
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
        Err(e) => {
            quota::release(&app.store, reservation);
            return forward_failed(&app.registry, e, ctx);
        }
    };
    let Some(facts) = facts.filter(|_| resp.status() == StatusCode::CREATED) else {
        quota::release(&app.store, reservation);
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
    // a platform manifest pushed by digest alone may be part of a multi-platform push (with
    // events.multi_platform: per_manifest it is an event of its own at once, as in Harbor)
    let one_event = app.config.events.multi_platform == MultiPlatform::OneEvent;
    let hold_until = (facts.kind == Kind::Image && tag.is_none() && one_event)
        .then(|| store::now_ms() + app.config.events.index_window.as_millis() as i64);
    let mut row = facts.artifact(repo.as_str(), &digest, chart.as_ref());
    row.blobs = blobs;
    let children = (facts.kind == Kind::Index).then(|| facts.child_digests());
    let limit = app
        .config
        .projects
        .get(repo.project())
        .and_then(|p| p.storage_limit);
    let threshold = app.config.quota.warning_threshold;
    let with: With = Arc::new(move |c, e: &mut Event| {
        if let Some(children) = &children {
            index_size_and_absorb(c, e, &row.repository, children)?;
        }
        if let Some(until) = hold_until {
            store::events::extend_held(c, &row.repository, until)?;
        }
        // (an index's size is its event's, summed by `index_size_and_absorb`)
        let row = match row.size {
            None => Cow::Owned(Artifact {
                size: e.size,
                ..row.clone()
            }),
            Some(_) => Cow::Borrowed(&row),
        };
        // without a storage limit nothing needs to be read back when the repository's
        // first-seen time is cached: one round trip on PostgreSQL (`learn_pushed`)
        let cached = match limit {
            None => c
                .cache()
                .and_then(|cache| cache.repository_created(&row.repository))
                .flatten(),
            Some(_) => None,
        };
        if let Some(created) = cached {
            knowledge::learn_pushed(c, &row, tag.as_deref())?;
            e.repository_created.get_or_insert(created);
        } else {
            let learned = knowledge::learn_manifest(c, &row, tag.as_deref())?;
            // read with the artifact (the sink would ask again, a round trip on PostgreSQL)
            if e.repository_created.is_none() {
                e.repository_created = learned.repository_created;
            }
            if let (Some(usage), Some(limit)) = (learned.usage, limit) {
                quota::warn_on_crossing(c, e, usage, limit, threshold)?;
            }
        }
        if let Some(id) = reservation {
            store::quota::release(c, id)?;
        }
        Ok(true)
    });
    // (a late event releases its reservation in its own transaction, when it lands)
    if app.events.durable(e, hold_until, Some(with)).await == Recorded::Lost {
        quota::release(&app.store, reservation);
    }
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
