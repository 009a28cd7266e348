//! `index.yaml`: absolute chart URLs rewritten to point back at wharf.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::forward::{Body, Upstream};
use crate::observe::{Collected, collect_capped, content_length, forward_failed};
use crate::server::RequestCtx;

/// The largest `index.yaml` wharf reads to rewrite absolute chart URLs.
pub const MAX_INDEX_BYTES: usize = 64 << 20;

/// `index.yaml` with its chart URLs made absolute under `base` (`external_url`'s).
pub(super) async fn index(
    base: &str,
    up: &Upstream,
    project: &str,
    req: Request<Body>,
    pq: &str,
    ctx: &RequestCtx,
) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let resp = match up.forward(req, pq, &ctx.conn, &ctx.request_id).await {
        Ok(r) => r,
        Err(e) => return forward_failed(up, e, ctx),
    };
    if head
        || resp.status() != StatusCode::OK
        || resp.headers().contains_key(header::CONTENT_ENCODING)
    {
        return resp.map(Body::new);
    }
    let (mut parts, body) = resp.into_parts();
    let declared = content_length(&parts.headers);
    let body = match collect_capped(Body::new(body), MAX_INDEX_BYTES, declared).await {
        Collected::Full(b) => b,
        Collected::TooLarge(rest) => return Response::from_parts(parts, rest),
        Collected::Failed(reason) => {
            tracing::warn!(request_id = ctx.request_id_str(), %reason, "reading index.yaml from chartmuseum failed");
            return crate::forward::ForwardError::Failed {
                upstream: up.name(),
                what: "reading index.yaml",
                source: Some(reason.into()),
            }
            .to_response(ctx.request_id_str());
        }
    };
    let body = match rewrite_off_runtime(body.clone(), base, project).await {
        Some(new) => {
            parts.headers.remove(header::ETAG);
            Bytes::from(new)
        }
        None => body,
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

/// [`rewrite_index`] on a blocking thread: parsing and writing back YAML of up to
/// [`MAX_INDEX_BYTES`] takes long enough to hold up every other request of a runtime worker.
/// An index without absolute URLs (ChartMuseum's default) is not parsed at all. At most one
/// parse per CPU at once: a parsed index takes several times its size in memory,
/// and the blocking threads are also those of every database read.
pub(super) async fn rewrite_off_runtime(body: Bytes, base: &str, project: &str) -> Option<Vec<u8>> {
    if !has_absolute_url(&body) {
        return None;
    }
    let _turn = parse_turns().acquire().await.ok()?;
    let (base, project) = (base.to_string(), project.to_string());
    tokio::task::spawn_blocking(move || rewrite_index(&body, &base, &project))
        .await
        .ok()
        .flatten()
}

/// The turns of [`rewrite_off_runtime`]: one per CPU.
pub(super) fn parse_turns() -> &'static tokio::sync::Semaphore {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

/// Could `body` hold an absolute URL (`…://…`)? Only then is there anything to rewrite.
fn has_absolute_url(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"://").is_some()
}

/// The index with every absolute chart URL (`http(s)://…/charts/<file>`) pointing at
/// `<base>/chartrepo/<project>/charts/<file>`; `None` when nothing changes (relative URLs, not
/// YAML, no entries).
pub fn rewrite_index(body: &[u8], base: &str, project: &str) -> Option<Vec<u8>> {
    use serde_yaml_ng::Value;
    let mut doc: Value = serde_yaml_ng::from_slice(body).ok()?;
    let mut changed = false;
    let entries = doc.get_mut("entries")?.as_mapping_mut()?;
    for (_, versions) in entries.iter_mut() {
        let Some(versions) = versions.as_sequence_mut() else {
            continue;
        };
        for v in versions {
            let Some(urls) = v.get_mut("urls").and_then(Value::as_sequence_mut) else {
                continue;
            };
            for u in urls {
                if let Some(new) = u.as_str().and_then(|s| rewrite_url(s, base, project))
                    && u.as_str() != Some(new.as_str())
                {
                    *u = Value::String(new);
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return None;
    }
    serde_yaml_ng::to_string(&doc).ok().map(String::into_bytes)
}

pub(super) fn rewrite_url(url: &str, base: &str, project: &str) -> Option<String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        url.get(7..)?
    } else if lower.starts_with("https://") {
        url.get(8..)?
    } else {
        return None;
    };
    let path = rest.split_once('/')?.1;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let (dir, file) = path.rsplit_once('/')?;
    if file.is_empty() || !(dir == "charts" || dir.ends_with("/charts")) {
        return None;
    }
    Some(format!("{base}/chartrepo/{project}/charts/{file}"))
}

// ---------------------------------------------------------------------------------------------
// upload
