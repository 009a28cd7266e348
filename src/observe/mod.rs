//! Observe: forward each registry or chart request and watch what happened, turning successful
//! manifest and chart operations into events. One file per flow:
//!
//! - `push`: manifest PUT — collected (≤ 4 MiB; larger bodies are streamed through untouched
//!   and never make an event), admitted against the project's quota, forwarded; on 201 the
//!   event and what wharf learned are committed *before* the client gets the 201. A non-index
//!   manifest pushed by digest alone is held for `events.index_window`: an index that lists it
//!   absorbs it.
//! - `pull`: manifest GET (a pull event once the client has the whole body) and HEAD (no
//!   event; the tag the client resolved is remembered).
//! - `delete`: manifest DELETE by digest; the event is committed before the client gets the
//!   202.
//! - [`chart`](mod@chart): Harbor's chartrepo paths in front of ChartMuseum.
//! - anything else: streamed through untouched.

pub mod body;
pub mod chart;
mod delete;
pub mod manifest;
mod pull;
mod push;
pub mod recent;
mod tags;

pub use tags::registry_tags_pointing_at;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};

use crate::app::App;
use crate::events::{Event, EventKind};
use crate::forward::{Body, Upstream};
use crate::route::{ChartOp, ManifestAction, Reference, RegistryOp, Repository};
use crate::server::RequestCtx;

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
    // (with events off wharf observes nothing, and refuses nothing either)
    if let RegistryOp::NameInvalid { name } = &op {
        return crate::forward::oci_error(
            http::StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name: wharf takes writes only to lowercase names of the distribution grammar, whose first segment is the project",
            serde_json::json!({"name": name, "request_id": ctx.request_id_str()}),
        );
    }
    match op {
        RegistryOp::Manifest {
            repo,
            reference,
            action,
        } => {
            let who = Who::of(app, req.headers(), ctx);
            match action {
                // writes: see `to_the_end`
                ManifestAction::Put | ManifestAction::Delete => {
                    let (app, owned) = (app.clone(), ctx.clone());
                    to_the_end(ctx, async move {
                        let ctx = owned;
                        let call = ManifestCall {
                            app: &app,
                            who,
                            repo,
                            reference,
                            req,
                            pq: &pq,
                            ctx: &ctx,
                        };
                        match action {
                            ManifestAction::Put => push::manifest_put(call).await,
                            _ => delete::manifest_delete(call).await,
                        }
                    })
                    .await
                }
                _ => {
                    let call = ManifestCall {
                        app,
                        who,
                        repo,
                        reference,
                        req,
                        pq: &pq,
                        ctx,
                    };
                    // boxed, each: see `server::route_request`
                    match action {
                        ManifestAction::Get => Box::pin(pull::manifest_get(call)).await,
                        _ => Box::pin(pull::manifest_head(call)).await,
                    }
                }
            }
        }
        _ => pass(&app.registry, req, &pq, ctx).await,
    }
}

/// Run a write's whole flow — forward, then record — in a task of its own and wait for it.
/// A client that hangs up cancels its request's future, and with it whatever had not run yet:
/// once the registry (or ChartMuseum) has done the write, its event and quota bookkeeping must
/// land all the same.
pub(crate) async fn to_the_end(
    ctx: &RequestCtx,
    flow: impl std::future::Future<Output = Response<Body>> + Send + 'static,
) -> Response<Body> {
    match tokio::spawn(flow).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(request_id = ctx.request_id_str(), error = %e, "a write's flow failed");
            crate::forward::oci_error(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal error",
                serde_json::json!({"request_id": ctx.request_id_str()}),
            )
        }
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

/// Handle one chartrepo request (see [`chart`](mod@chart)).
pub async fn chart(
    app: &Arc<App>,
    op: ChartOp,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    if matches!(op, ChartOp::Upload { .. } | ChartOp::Delete { .. }) {
        // writes: see `to_the_end`
        let (app, owned) = (app.clone(), ctx.clone());
        return to_the_end(
            ctx,
            async move { chart::handle(&app, op, req, &owned).await },
        )
        .await;
    }
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
    tracing::warn!(request_id = ctx.request_id_str(), upstream = up.name(), error = %crate::error_chain(&e), "forward failed");
    e.to_response(ctx.request_id_str())
}

/// Who made the request, as events report it.
#[derive(Debug, Clone)]
pub struct Who {
    pub operator: String,
    pub ip: IpAddr,
    /// `ip` as text when the connection has it formatted already (it is the connection's).
    pub ip_text: Option<HeaderValue>,
    pub user_agent: Option<String>,
    /// The client's credentials, reused for wharf's own reads of that client's artifacts.
    pub authorization: Option<HeaderValue>,
    pub request_id: String,
    /// The request id when wharf made it ([`crate::server::RequestCtx::made_id`]).
    pub made_id: Option<uuid::Uuid>,
}

impl Who {
    pub fn of(app: &App, headers: &HeaderMap, ctx: &RequestCtx) -> Who {
        let ip = ctx
            .conn
            .client_ip(headers, app.config.trust_forwarded_headers);
        Who {
            operator: crate::events::operator::from_headers(headers, app.token_verifier.as_ref()),
            ip,
            ip_text: (ip == ctx.conn.addr.ip()).then(|| ctx.conn.ip_text().clone()),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            request_id: ctx.request_id_str().to_string(),
            made_id: ctx.made_id,
        }
    }

    /// A new event of `kind` in `repo`, stamped with this request.
    fn event(&self, app: &App, kind: EventKind, repo: &Repository) -> Event {
        let mut e = Event::new(kind, repo, &self.operator);
        e.public = app.config.is_public(repo.project());
        e.request_id = Some(self.request_id.clone());
        e.client_addr = Some(match self.ip_text.as_ref().and_then(|t| t.to_str().ok()) {
            Some(text) => text.to_string(),
            None => self.ip.to_string(),
        });
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
    /// Reading the body failed (the client went away, or sent a broken chunked body).
    Failed(axum::Error),
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
            Err(e) => return Collected::Failed(e),
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
    Event::oci_resource_url(&app.external_host, repo.as_str(), tag, digest)
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
            tracing::debug!(error = %crate::error_chain(&e), %path, "chart config not readable");
            None
        }
    }
}
