//! Classic Helm chart repositories: ChartMuseum (run with `--depth=1`, one tenant per project)
//! behind Harbor's paths `/chartrepo/<project>/…` and `/api/chartrepo/<project>/…`.
//!
//! Paths map to ChartMuseum's by dropping `chartrepo/` (the query string is kept):
//! `/chartrepo/<p>/index.yaml` → `/<p>/index.yaml`, `/chartrepo/<p>/charts/<file>` →
//! `/<p>/charts/<file>`, `/api/chartrepo/<p>/…` → `/api/<p>/…`. A path with a `.`/`..` segment
//! (also percent-encoded) or an encoded `/`, or one that [`crate::route`] does not recognise,
//! is refused with 404: the upstream could resolve it to another route than the one wharf saw.
//!
//! Per operation:
//! - `GET index.yaml`: no event. ChartMuseum with `--depth=1` lists relative chart URLs
//!   (`charts/x-1.0.0.tgz`), which resolve through wharf as they are. Absolute URLs (ChartMuseum
//!   run with `--chart-url`) that end in `…/charts/<file>` are rewritten to
//!   `<external_url>/chartrepo/<p>/charts/<file>` so `helm pull` downloads through wharf
//!   (indexes over [`MAX_INDEX_BYTES`] are streamed unchanged).
//! - upload (`POST /api/chartrepo/<p>/charts`, multipart field `chart` or a raw `.tgz` body):
//!   the body is collected up to `chartrepo.max_upload_size` (a larger one is streamed through
//!   untouched and makes no event) and forwarded byte for byte while `Chart.yaml` is read from
//!   the archive (name, version, type, appVersion). On 201 the UPLOAD_CHART event and the chart's
//!   facts are committed before the client gets the 201. A body that is not a chart is answered
//!   by ChartMuseum (4xx/5xx) and makes no event. `POST …/prov` is passed through.
//! - download (`GET /chartrepo/<p>/charts/<name>-<version>.tgz`): when a 200 reached the client
//!   completely, DOWNLOAD_CHART (in the background), size = bytes sent; type and appVersion from
//!   what wharf remembers of the upload, else from ChartMuseum's API. `.prov` files: no event.
//! - delete (`DELETE /api/chartrepo/<p>/charts/<name>/<version>`): the chart's facts are looked
//!   up first (remembered, else ChartMuseum's API and the archive itself); on 200 the
//!   DELETE_CHART event is committed before the client gets the 200.
//! - everything else under those paths (chart listings, HEAD): streamed through.
//!
//! Upstream failures are the OCI-style error JSON of [`crate::forward::ForwardError`] (502/504).
//!
//! This module holds the flows; its parts: `archive` (what an upload carries and what its
//! `Chart.yaml` says), `multipart` (the upload's form), `index` (`index.yaml` URLs), `facts`
//! (a chart's facts for download and delete events).

use std::sync::Arc;

use http::header;
use http::{Method, Request, Response, StatusCode};

use super::body::Observed;
use super::{Collected, Who, collect_capped, content_length, forward_failed, header_str, pass};
use crate::app::App;
use crate::events::{ChartInfo, Event, EventKind, sink::With};
use crate::forward::{Body, Upstream, oci_error};
use crate::route::{ChartOp, Repository};
use crate::server::RequestCtx;
use crate::store::charts::{self, ChartFacts};

mod archive;
mod facts;
mod index;
mod multipart;
#[cfg(test)]
mod tests;

pub use archive::{
    ChartError, ChartMeta, MAX_CHART_YAML_BYTES, MAX_EXPANDED_BYTES, Uploaded, is_semver,
    parse_chart_yaml, read_chart_yaml, read_upload, split_chart_file,
};
use facts::{archive_size, from_chartmuseum, remembered, unknown};
use index::index;
pub use index::{MAX_INDEX_BYTES, rewrite_index};
pub use multipart::{CHART_FIELD, disposition_param, multipart_boundary, multipart_field};

/// Handle one chartrepo request.
pub async fn handle(
    app: &Arc<App>,
    op: ChartOp,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    let Some(up) = app.chartmuseum.as_ref() else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "chart repositories are not configured",
            serde_json::json!({"request_id": ctx.request_id_str()}),
        );
    };
    let pq = match upstream_path(req.uri().path(), req.uri().query()) {
        Some(pq) if op != ChartOp::Other => pq,
        _ => {
            return oci_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "not a chart repository path",
                serde_json::json!({"request_id": ctx.request_id_str()}),
            );
        }
    };
    match op {
        ChartOp::Index { project } => {
            index(&app.config.external_base(), up, &project, req, &pq, ctx).await
        }
        _ if !app.config.events.enabled => pass(up, req, &pq, ctx).await,
        ChartOp::Upload {
            project,
            prov_only: false,
        } => upload(app, up, project, req, &pq, ctx).await,
        ChartOp::Download { project, file } if req.method() == Method::GET => {
            download(app, up, project, &file, req, &pq, ctx).await
        }
        ChartOp::Delete {
            project,
            name,
            version,
        } => delete(app, up, project, name, version, req, &pq, ctx).await,
        _ => pass(up, req, &pq, ctx).await,
    }
}

/// ChartMuseum's path (and query) for a chartrepo path; `None` for a path wharf refuses.
pub fn upstream_path(path: &str, query: Option<&str>) -> Option<String> {
    let mapped = if let Some(rest) = path.strip_prefix("/api/chartrepo/") {
        format!("/api/{rest}")
    } else if let Some(rest) = path.strip_prefix("/chartrepo/") {
        format!("/{rest}")
    } else {
        return None;
    };
    let unsafe_segment = mapped.split('/').any(|s| {
        let d = percent_encoding::percent_decode_str(s).decode_utf8_lossy();
        d == "." || d == ".." || d.contains('/') || d.contains('\\')
    });
    if unsafe_segment {
        return None;
    }
    Some(match query {
        Some(q) => format!("{mapped}?{q}"),
        None => mapped,
    })
}

// ---------------------------------------------------------------------------------------------
// index.yaml

async fn upload(
    app: &Arc<App>,
    up: &Upstream,
    project: String,
    req: Request<Body>,
    pq: &str,
    ctx: &RequestCtx,
) -> Response<Body> {
    let who = Who::of(app, req.headers(), ctx);
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(app.config.chartrepo.max_upload_size).unwrap_or(usize::MAX);
    let body = match collect_capped(body, limit, content_length(&parts.headers)).await {
        Collected::Full(b) => b,
        Collected::TooLarge(body) => {
            return pass(up, Request::from_parts(parts, body), pq, ctx).await;
        }
        Collected::Failed(reason) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "the chart could not be read from the request",
                serde_json::json!({"reason": reason.to_string(), "request_id": ctx.request_id_str()}),
            );
        }
    };
    let content_type = header_str(&parts.headers, &header::CONTENT_TYPE).map(str::to_string);
    let copy = body.clone();
    let read = tokio::task::spawn_blocking(move || read_upload(&copy, content_type.as_deref()));
    let req = Request::from_parts(parts, Body::from(body));
    let (forwarded, read) = tokio::join!(up.forward(req, pq, &ctx.conn, &ctx.request_id), read);
    let resp = match forwarded {
        Ok(r) => r,
        Err(e) => return forward_failed(up, e, ctx),
    };
    if resp.status() != StatusCode::CREATED {
        return resp.map(Body::new);
    }
    let uploaded = match read {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            tracing::info!(request_id = ctx.request_id_str(), error = %e, "chart upload accepted by chartmuseum but not readable by wharf: no event");
            return resp.map(Body::new);
        }
        Err(e) => {
            tracing::warn!(request_id = ctx.request_id_str(), error = %e, "reading the uploaded chart failed: no event");
            return resp.map(Body::new);
        }
    };
    let facts = ChartFacts {
        project: project.clone(),
        name: uploaded.meta.name,
        version: uploaded.meta.version,
        chart_type: uploaded.meta.chart_type,
        app_version: uploaded.meta.app_version,
        size: Some(uploaded.size),
    };
    if let Some(e) = chart_event(app, &who, EventKind::UploadChart, &facts) {
        let with: With = Arc::new(move |c, _| charts::remember(c, &facts).map(|()| true));
        app.events.durable(e, None, Some(with)).await;
    }
    resp.map(Body::new)
}

async fn download(
    app: &Arc<App>,
    up: &Upstream,
    project: String,
    file: &str,
    req: Request<Body>,
    pq: &str,
    ctx: &RequestCtx,
) -> Response<Body> {
    let Some((name, version)) = split_chart_file(file) else {
        return pass(up, req, pq, ctx).await; // a .prov file, or not a chart archive name
    };
    let (name, version) = (name.to_string(), version.to_string());
    let who = Who::of(app, req.headers(), ctx);
    let resp = pass(up, req, pq, ctx).await;
    if resp.status() != StatusCode::OK
        || app
            .config
            .pull_ignored(&project, &who.operator, who.user_agent.as_deref())
    {
        return resp;
    }
    let app = app.clone();
    resp.map(move |b| {
        Body::new(Observed::new(b, move |outcome| {
            if !outcome.complete {
                return;
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(record_download(
                    app,
                    who,
                    project,
                    name,
                    version,
                    outcome.bytes,
                ));
            }
        }))
    })
}

async fn record_download(
    app: Arc<App>,
    who: Who,
    project: String,
    name: String,
    version: String,
    bytes: u64,
) {
    let (mut facts, learned) = match remembered(&app.store, &project, &name, &version).await {
        Some(f) => (f, false),
        None => match app.chartmuseum.as_ref() {
            Some(up) => match from_chartmuseum(up, &who, &project, &name, &version).await {
                Some(f) => (f, true),
                None => (unknown(&project, &name, &version), false),
            },
            None => (unknown(&project, &name, &version), false),
        },
    };
    facts.size = Some(bytes);
    if let Some(e) = chart_event(&app, &who, EventKind::DownloadChart, &facts) {
        // a chart uploaded behind wharf's back (before it, or to ChartMuseum directly): what
        // ChartMuseum said of it is remembered with the event, and the next download of the
        // version asks ChartMuseum nothing
        let with = learned.then(|| -> With {
            Arc::new(move |c, _| charts::remember_if_unknown(c, &facts).map(|()| true))
        });
        app.events.detached(e, with);
    }
}

#[allow(clippy::too_many_arguments)]
async fn delete(
    app: &Arc<App>,
    up: &Upstream,
    project: String,
    name: String,
    version: String,
    req: Request<Body>,
    pq: &str,
    ctx: &RequestCtx,
) -> Response<Body> {
    let who = Who::of(app, req.headers(), ctx);
    let mut facts = match remembered(&app.store, &project, &name, &version).await {
        Some(f) => f,
        None => from_chartmuseum(up, &who, &project, &name, &version)
            .await
            .unwrap_or_else(|| unknown(&project, &name, &version)),
    };
    if facts.size.is_none() {
        facts.size = archive_size(
            app.config.chartrepo.max_upload_size,
            up,
            &who,
            &project,
            &name,
            &version,
        )
        .await;
    }
    let resp = pass(up, req, pq, ctx).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    if let Some(e) = chart_event(app, &who, EventKind::DeleteChart, &facts) {
        let with: With = Arc::new(move |c, _| {
            charts::forget(c, &facts.project, &facts.name, &facts.version).map(|()| true)
        });
        app.events.durable(e, None, Some(with)).await;
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// facts and events

/// A chart event about `facts`: repository `<project>/<name>`, tag = version, Harbor's chartrepo
/// resource URL.
fn chart_event(app: &App, who: &Who, kind: EventKind, facts: &ChartFacts) -> Option<Event> {
    let full = format!("{}/{}", facts.project, facts.name);
    // a chart name that is not a valid repository component still makes its event
    let repo = Repository::parse(&full).or_else(|| Repository::parse(&facts.project))?;
    let mut e = who.event(app, kind, &repo);
    e.repository = full;
    e.tags = vec![facts.version.clone()];
    e.size = facts.size;
    e.resource_url = format!(
        "{}/chartrepo/{}/charts/{}-{}.tgz",
        app.external_host, facts.project, facts.name, facts.version
    );
    e.chart = Some(ChartInfo {
        name: facts.name.clone(),
        version: facts.version.clone(),
        chart_type: facts.chart_type.clone(),
        app_version: facts.app_version.clone(),
        size: facts.size,
    });
    Some(e)
}
