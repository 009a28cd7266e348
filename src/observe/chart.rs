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

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::body::Observed;
use super::{Collected, Who, collect_capped, content_length, forward_failed, header_str, pass};
use crate::app::App;
use crate::events::{ChartInfo, Event, EventKind, sink::With};
use crate::forward::{Body, Upstream, oci_error};
use crate::route::{ChartOp, Repository};
use crate::server::RequestCtx;
use crate::store::charts::{self, ChartFacts};

/// The largest `index.yaml` wharf reads to rewrite absolute chart URLs.
pub const MAX_INDEX_BYTES: usize = 64 << 20;
/// The most bytes a chart archive may expand to while wharf looks for `Chart.yaml` (Helm's own
/// limit for a whole chart).
pub const MAX_EXPANDED_BYTES: u64 = 100 << 20;
/// The largest `Chart.yaml` wharf reads (Helm's limit for one file of a chart).
pub const MAX_CHART_YAML_BYTES: u64 = 5 << 20;
/// The multipart field ChartMuseum reads the chart from.
pub const CHART_FIELD: &str = "chart";

/// Why an upload did not yield the chart's facts (it then makes no event).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChartError {
    #[error("not a gzip-compressed tar archive: {0}")]
    Archive(String),
    #[error("the archive expands to more than {0} bytes")]
    TooBig(u64),
    #[error("no Chart.yaml at the top of the chart directory")]
    NoChartYaml,
    #[error("Chart.yaml is larger than {0} bytes")]
    ChartYamlTooBig(u64),
    #[error("Chart.yaml is not valid YAML: {0}")]
    Yaml(String),
    #[error("Chart.yaml has no {0}")]
    Missing(&'static str),
    #[error("multipart body: {0}")]
    Multipart(&'static str),
    #[error("the form has no `chart` field")]
    NoChartField,
}

/// What `Chart.yaml` says about a chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartMeta {
    pub name: String,
    pub version: String,
    /// `application` (also when `Chart.yaml` has no type) or `library`.
    pub chart_type: String,
    pub app_version: Option<String>,
}

/// An uploaded chart: its metadata and the size of its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub meta: ChartMeta,
    pub size: u64,
}

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
        ChartOp::Index { project } => index(app, up, &project, req, &pq, ctx).await,
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

async fn index(
    app: &Arc<App>,
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
                detail: reason,
            }
            .to_response(ctx.request_id_str());
        }
    };
    let body = match rewrite_index(&body, &app.config.external_base(), project) {
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

fn rewrite_url(url: &str, base: &str, project: &str) -> Option<String> {
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
                serde_json::json!({"reason": reason, "request_id": ctx.request_id_str()}),
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
        let with: With = Box::new(move |c, _| charts::remember(c, &facts).map(|()| true));
        app.events.durable(e, None, Some(with)).await;
    }
    resp.map(Body::new)
}

/// The chart of an upload body: the multipart field `chart`, or the whole body.
pub fn read_upload(body: &[u8], content_type: Option<&str>) -> Result<Uploaded, ChartError> {
    let tgz = match content_type.and_then(multipart_boundary) {
        Some(boundary) => multipart_field(body, &boundary, CHART_FIELD)?,
        None if content_type.is_some_and(is_multipart) => {
            return Err(ChartError::Multipart("no boundary"));
        }
        None => body,
    };
    let meta = read_chart_yaml(tgz, MAX_EXPANDED_BYTES)?;
    Ok(Uploaded {
        meta,
        size: tgz.len() as u64,
    })
}

/// A reader that fails once more than `left` bytes were read (a decompression bomb guard), and
/// says so in `tripped`.
struct Capped<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.tripped.set(true);
            return Err(std::io::Error::other("decompressed size limit reached"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Read `<dir>/Chart.yaml` (the first such entry) from a chart archive, reading at most
/// `max_expanded` bytes of the uncompressed tar stream.
pub fn read_chart_yaml(tgz: &[u8], max_expanded: u64) -> Result<ChartMeta, ChartError> {
    let tripped = Rc::new(Cell::new(false));
    let fail = |e: std::io::Error| {
        if tripped.get() {
            ChartError::TooBig(max_expanded)
        } else {
            ChartError::Archive(e.to_string())
        }
    };
    let mut ar = tar::Archive::new(Capped {
        inner: flate2::read::GzDecoder::new(tgz),
        left: max_expanded,
        tripped: tripped.clone(),
    });
    for entry in ar.entries().map_err(fail)? {
        let entry = entry.map_err(fail)?;
        if !entry.header().entry_type().is_file() || !is_top_chart_yaml(&entry.path_bytes()) {
            continue;
        }
        let mut buf = Vec::new();
        entry
            .take(MAX_CHART_YAML_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(fail)?;
        if buf.len() as u64 > MAX_CHART_YAML_BYTES {
            return Err(ChartError::ChartYamlTooBig(MAX_CHART_YAML_BYTES));
        }
        return parse_chart_yaml(&buf);
    }
    Err(ChartError::NoChartYaml)
}

/// `<dir>/Chart.yaml`, exactly one directory deep (`./` components ignored).
fn is_top_chart_yaml(path: &[u8]) -> bool {
    let parts: Vec<&[u8]> = path
        .split(|&c| c == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    matches!(parts.as_slice(), [_, b"Chart.yaml"])
}

/// Name, version, type and appVersion of a `Chart.yaml`.
pub fn parse_chart_yaml(text: &[u8]) -> Result<ChartMeta, ChartError> {
    use serde_yaml_ng::Value;
    let doc: Value =
        serde_yaml_ng::from_slice(text).map_err(|e| ChartError::Yaml(e.to_string()))?;
    let text_of = |key: &str| match doc.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    let name = text_of("name").ok_or(ChartError::Missing("name"))?;
    let version = text_of("version").ok_or(ChartError::Missing("version"))?;
    let chart_type = text_of("type").unwrap_or_else(|| "application".into());
    let app_version = match doc.get("appVersion") {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => text_of("appVersion"),
    };
    Ok(ChartMeta {
        name,
        version,
        chart_type,
        app_version,
    })
}

fn is_multipart(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// The boundary of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    if !is_multipart(content_type) {
        return None;
    }
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
    })
}

/// The content of the first file part named `field` of a `multipart/form-data` body (CRLF or
/// bare LF line endings, like Go's reader that ChartMuseum uses). As for Go's `FormFile`, which
/// ChartMuseum reads the chart with, only a `form-data` part with a non-empty `filename` is a
/// file: a plain field of the same name before it is skipped, so wharf reads the chart
/// ChartMuseum stores, not a decoy.
pub fn multipart_field<'a>(
    body: &'a [u8],
    boundary: &str,
    field: &str,
) -> Result<&'a [u8], ChartError> {
    let dash = format!("--{boundary}").into_bytes();
    // the first delimiter: at the very start, or after a preamble line
    let mut pos = if body.starts_with(&dash) {
        0
    } else {
        let mut nl_dash = b"\n".to_vec();
        nl_dash.extend_from_slice(&dash);
        find(body, &nl_dash, 0).ok_or(ChartError::Multipart("no boundary line"))? + 1
    };
    // the line ending in use, from the first boundary line
    let after_first = pos + dash.len();
    let line_end = skip_padding(body, after_first);
    let nl: &[u8] = if body[line_end..].starts_with(b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut delim = nl.to_vec();
    delim.extend_from_slice(&dash);
    let mut head_end = nl.to_vec();
    head_end.extend_from_slice(nl);
    loop {
        let after = pos + dash.len();
        if body[after..].starts_with(b"--") {
            return Err(ChartError::NoChartField);
        }
        let line = skip_padding(body, after);
        if !body[line..].starts_with(nl) {
            return Err(ChartError::Multipart("bad boundary line"));
        }
        let headers_start = line + nl.len();
        // a part without headers starts right away with the empty line
        let (headers, content_start) = if body[headers_start..].starts_with(nl) {
            (
                &body[headers_start..headers_start],
                headers_start + nl.len(),
            )
        } else {
            let end = find(body, &head_end, headers_start)
                .ok_or(ChartError::Multipart("part headers not terminated"))?;
            (&body[headers_start..end], end + head_end.len())
        };
        let content_end = find(body, &delim, content_start)
            .ok_or(ChartError::Multipart("part not terminated"))?;
        if file_part_name(headers, nl).as_deref() == Some(field) {
            return Ok(&body[content_start..content_end]);
        }
        pos = content_end + nl.len();
    }
}

fn skip_padding(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && (body[i] == b' ' || body[i] == b'\t') {
        i += 1;
    }
    i
}

/// The `name` of a file part: its `Content-Disposition` is `form-data` with a `name` and a
/// non-empty `filename` (Go's `Part.FormName` and `FileName`); `None` for anything else.
fn file_part_name(headers: &[u8], nl: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    let sep = if nl == b"\r\n" { "\r\n" } else { "\n" };
    text.split(sep).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        let kind = v.split(';').next().unwrap_or_default().trim();
        if !kind.eq_ignore_ascii_case("form-data") {
            return None;
        }
        disposition_param(v, "filename").filter(|f| !f.is_empty())?;
        disposition_param(v, "name")
    })
}

/// A parameter of a `Content-Disposition` value (token or quoted string).
pub fn disposition_param(value: &str, param: &str) -> Option<String> {
    let mut rest = value.split_once(';')?.1;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return None;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let val;
        if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => out.push(c),
                }
            }
            let end = end?;
            val = out;
            rest = &q[end + 1..];
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            val = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        if key.eq_ignore_ascii_case(param) {
            return Some(val);
        }
    }
}

/// The first index of `needle` in `hay` at or after `from` (Knuth–Morris–Pratt: linear time
/// whatever the body holds).
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    let mut fail = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = fail[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut q = 0;
    for (i, &c) in hay.iter().enumerate().skip(from) {
        while q > 0 && c != needle[q] {
            q = fail[q - 1];
        }
        if c == needle[q] {
            q += 1;
        }
        if q == needle.len() {
            return Some(i + 1 - needle.len());
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// download

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
    let mut facts = match remembered(&app, &project, &name, &version).await {
        Some(f) => f,
        None => match app.chartmuseum.as_ref() {
            Some(up) => from_chartmuseum(up, &who, &project, &name, &version).await,
            None => unknown(&project, &name, &version),
        },
    };
    facts.size = Some(bytes);
    if let Some(e) = chart_event(&app, &who, EventKind::DownloadChart, &facts) {
        app.events.detached(e, None);
    }
}

/// `<name>-<version>.tgz` → `(name, version)`. Chart names may contain `-`, versions too
/// (`1.0.0-rc.1`): the version is the leftmost suffix after a `-` that is a whole SemVer
/// version (`1.2.3`, with pre-release and build parts); failing that, the suffix after the last
/// `-` that begins like a version (digits and a dot, optionally after a `v`).
pub fn split_chart_file(file: &str) -> Option<(&str, &str)> {
    let stem = file.strip_suffix(".tgz")?;
    let candidates: Vec<usize> = stem
        .match_indices('-')
        .map(|(i, _)| i)
        .filter(|&i| i > 0 && begins_like_version(&stem[i + 1..]))
        .collect();
    let i = candidates
        .iter()
        .copied()
        .find(|&i| is_semver(&stem[i + 1..]))
        .or_else(|| candidates.last().copied())?;
    Some((&stem[..i], &stem[i + 1..]))
}

fn begins_like_version(s: &str) -> bool {
    let s = s.strip_prefix('v').unwrap_or(s);
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && s.as_bytes().get(digits) == Some(&b'.')
}

/// SemVer 2: `MAJOR.MINOR.PATCH[-pre.release][+build]` (a leading `v` allowed, as Helm does).
pub fn is_semver(s: &str) -> bool {
    let s = s.strip_prefix('v').unwrap_or(s);
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let idents = |t: &str| {
        t.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    };
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        && pre.is_none_or(idents)
        && build.is_none_or(idents)
}

// ---------------------------------------------------------------------------------------------
// delete

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
    let mut facts = match remembered(app, &project, &name, &version).await {
        Some(f) => f,
        None => from_chartmuseum(up, &who, &project, &name, &version).await,
    };
    if facts.size.is_none() {
        facts.size = archive_size(app, up, &who, &project, &name, &version).await;
    }
    let resp = pass(up, req, pq, ctx).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    if let Some(e) = chart_event(app, &who, EventKind::DeleteChart, &facts) {
        let with: With = Box::new(move |c, _| {
            charts::forget(c, &facts.project, &facts.name, &facts.version).map(|()| true)
        });
        app.events.durable(e, None, Some(with)).await;
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// facts and events

fn unknown(project: &str, name: &str, version: &str) -> ChartFacts {
    ChartFacts {
        project: project.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        ..ChartFacts::default()
    }
}

/// What wharf remembers of the chart's upload.
async fn remembered(app: &App, project: &str, name: &str, version: &str) -> Option<ChartFacts> {
    let (p, n, v) = (project.to_string(), name.to_string(), version.to_string());
    match app.store.read(move |c| charts::get(c, &p, &n, &v)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "reading chart facts failed");
            None
        }
    }
}

/// Characters escaped in a path segment of wharf's own requests to ChartMuseum.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Type and appVersion from ChartMuseum's `GET /api/<p>/charts/<name>/<version>` (with the
/// client's credentials). Unknown type: empty.
async fn from_chartmuseum(
    up: &Upstream,
    who: &Who,
    project: &str,
    name: &str,
    version: &str,
) -> ChartFacts {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default, rename = "type")]
        chart_type: Option<String>,
        #[serde(default, rename = "appVersion")]
        app_version: Option<serde_json::Value>,
    }
    let mut facts = unknown(project, name, version);
    let path = format!(
        "/api/{}/charts/{}/{}",
        seg(project),
        seg(name),
        seg(version)
    );
    match up
        .fetch(Method::GET, &path, who.headers("application/json"), 1 << 20)
        .await
    {
        Ok((parts, body)) if parts.status == StatusCode::OK => {
            if let Ok(v) = serde_json::from_slice::<Version>(&body) {
                facts.chart_type = v
                    .chart_type
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "application".into());
                facts.app_version = match v.app_version {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
            }
        }
        Ok((parts, _)) => {
            tracing::debug!(status = parts.status.as_u16(), %path, "chart version not readable")
        }
        Err(e) => tracing::debug!(error = %e, %path, "chart version not readable"),
    }
    facts
}

/// Size of the chart archive, read from ChartMuseum (which answers no HEAD for archives): the
/// archive is fetched, up to `chartrepo.max_upload_size`.
async fn archive_size(
    app: &App,
    up: &Upstream,
    who: &Who,
    project: &str,
    name: &str,
    version: &str,
) -> Option<u64> {
    let path = format!(
        "/{}/charts/{}",
        seg(project),
        seg(&format!("{name}-{version}.tgz"))
    );
    let limit = usize::try_from(app.config.chartrepo.max_upload_size).unwrap_or(usize::MAX);
    match up
        .fetch(Method::GET, &path, who.headers("*/*"), limit)
        .await
    {
        Ok((parts, body)) if parts.status == StatusCode::OK => Some(body.len() as u64),
        _ => None,
    }
}

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
        app.config.external_host(),
        facts.project,
        facts.name,
        facts.version
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip-compressed tar of `(path, content)` files.
    fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    const CHART: &[u8] =
        b"apiVersion: v2\nname: web\nversion: 1.2.3-rc.1\ntype: library\nappVersion: \"2.0\"\n";

    #[test]
    fn chart_yaml_is_read_from_the_top_directory() {
        let t = tgz(&[
            ("web/values.yaml", b"a: 1\n"),
            ("web/charts/sub/Chart.yaml", b"name: sub\nversion: 9.9.9\n"),
            ("web/Chart.yaml", CHART),
        ]);
        let m = read_chart_yaml(&t, MAX_EXPANDED_BYTES).unwrap();
        assert_eq!(
            m,
            ChartMeta {
                name: "web".into(),
                version: "1.2.3-rc.1".into(),
                chart_type: "library".into(),
                app_version: Some("2.0".into())
            }
        );
        // no type: an application chart; a numeric appVersion is kept as text
        let t = tgz(&[(
            "./x/Chart.yaml",
            b"name: x\nversion: 0.1.0\nappVersion: 1.5\n",
        )]);
        let m = read_chart_yaml(&t, MAX_EXPANDED_BYTES).unwrap();
        assert_eq!(m.chart_type, "application");
        assert_eq!(m.app_version.as_deref(), Some("1.5"));
    }

    #[test]
    fn non_charts_are_errors() {
        assert!(matches!(
            read_chart_yaml(b"not gzip at all", MAX_EXPANDED_BYTES),
            Err(ChartError::Archive(_))
        ));
        let no_chart = tgz(&[("web/values.yaml", b"a: 1\n"), ("Chart.yaml", CHART)]);
        assert_eq!(
            read_chart_yaml(&no_chart, MAX_EXPANDED_BYTES),
            Err(ChartError::NoChartYaml)
        );
        let no_version = tgz(&[("web/Chart.yaml", b"name: web\n")]);
        assert_eq!(
            read_chart_yaml(&no_version, MAX_EXPANDED_BYTES),
            Err(ChartError::Missing("version"))
        );
        let bad_yaml = tgz(&[("web/Chart.yaml", b"name: [unclosed\n")]);
        assert!(matches!(
            read_chart_yaml(&bad_yaml, MAX_EXPANDED_BYTES),
            Err(ChartError::Yaml(_))
        ));
        // a truncated archive
        let t = tgz(&[("web/Chart.yaml", CHART)]);
        assert!(read_chart_yaml(&t[..t.len() / 2], MAX_EXPANDED_BYTES).is_err());
    }

    #[test]
    fn expansion_is_capped() {
        let big = vec![0u8; 256 * 1024];
        let t = tgz(&[("web/big.bin", &big), ("web/Chart.yaml", CHART)]);
        assert!(t.len() < 16 * 1024, "compresses well");
        assert_eq!(
            read_chart_yaml(&t, 64 * 1024),
            Err(ChartError::TooBig(64 * 1024))
        );
        assert!(read_chart_yaml(&t, 1 << 20).is_ok());
    }

    fn form(nl: &str, boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        write!(out, "preamble{nl}").unwrap();
        for (name, filename, data) in parts {
            write!(out, "--{boundary}{nl}").unwrap();
            match filename {
                Some(f) => write!(
                    out,
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"{nl}Content-Type: application/octet-stream{nl}{nl}"
                )
                .unwrap(),
                None => write!(out, "content-disposition: form-data; name={name}{nl}{nl}").unwrap(),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(nl.as_bytes());
        }
        write!(out, "--{boundary}--{nl}").unwrap();
        out
    }

    #[test]
    fn multipart_chart_field() {
        let t = tgz(&[("web/Chart.yaml", CHART)]);
        for nl in ["\r\n", "\n"] {
            let body = form(
                nl,
                "XyZ-123",
                &[
                    ("prov", Some("web.tgz.prov"), b"-----BEGIN PGP"),
                    ("chart", Some("web-1.2.3-rc.1.tgz"), &t),
                ],
            );
            let ct = "multipart/form-data; boundary=\"XyZ-123\"";
            assert_eq!(multipart_boundary(ct).as_deref(), Some("XyZ-123"));
            let u = read_upload(&body, Some(ct)).unwrap();
            assert_eq!(u.size, t.len() as u64);
            assert_eq!(u.meta.name, "web");
            // the tgz bytes come back exactly
            assert_eq!(multipart_field(&body, "XyZ-123", "chart").unwrap(), &t[..]);
        }
        // a value containing the boundary text without CRLF--
        let body = form("\r\n", "b", &[("chart", Some("c.tgz"), b"x--b y")]);
        assert_eq!(multipart_field(&body, "b", "chart").unwrap(), b"x--b y");
        // a plain field named chart is not the file ChartMuseum reads (Go's FormFile): a decoy
        // before the file is skipped, and without a file there is no chart
        let decoy = tgz(&[("evil/Chart.yaml", b"name: evil\nversion: 6.6.6\n")]);
        let body = form(
            "\r\n",
            "b",
            &[("chart", None, &decoy), ("chart", Some("web.tgz"), &t)],
        );
        let u = read_upload(&body, Some("multipart/form-data; boundary=b")).unwrap();
        assert_eq!(u.meta.name, "web");
        let body = form("\r\n", "b", &[("chart", None, &t)]);
        assert_eq!(
            read_upload(&body, Some("multipart/form-data; boundary=b")),
            Err(ChartError::NoChartField)
        );
        let empty_name = form("\r\n", "b", &[("chart", Some(""), &t)]);
        assert_eq!(
            read_upload(&empty_name, Some("multipart/form-data; boundary=b")),
            Err(ChartError::NoChartField)
        );
        // no chart field
        let body = form("\r\n", "b", &[("prov", Some("p"), b"sig")]);
        assert_eq!(
            read_upload(&body, Some("multipart/form-data; boundary=b")),
            Err(ChartError::NoChartField)
        );
        // truncated
        let body = form("\r\n", "b", &[("chart", Some("c.tgz"), &t)]);
        assert!(multipart_field(&body[..body.len() / 2], "b", "chart").is_err());
        assert_eq!(
            read_upload(b"", Some("multipart/form-data")),
            Err(ChartError::Multipart("no boundary"))
        );
        assert!(multipart_field(b"garbage", "b", "chart").is_err());
        // not multipart: the raw body is the chart
        let u = read_upload(&t, Some("application/octet-stream")).unwrap();
        assert_eq!(u.meta.version, "1.2.3-rc.1");
        let u = read_upload(&t, None).unwrap();
        assert_eq!(u.size, t.len() as u64);
    }

    #[test]
    fn disposition_params() {
        let v = r#"form-data; name="chart"; filename="a \"b\"; c.tgz""#;
        assert_eq!(disposition_param(v, "name").as_deref(), Some("chart"));
        assert_eq!(
            disposition_param(v, "filename").as_deref(),
            Some(r#"a "b"; c.tgz"#)
        );
        assert_eq!(
            disposition_param("form-data; NAME=prov", "name").as_deref(),
            Some("prov")
        );
        assert_eq!(disposition_param("form-data", "name"), None);
        assert_eq!(disposition_param("form-data; name=\"open", "name"), None);
    }

    #[test]
    fn kmp_find() {
        assert_eq!(find(b"aaaaab", b"aab", 0), Some(3));
        assert_eq!(find(b"abcabcabd", b"abcabd", 0), Some(3));
        assert_eq!(find(b"abc", b"abc", 1), None);
        assert_eq!(find(b"abc", b"", 0), None);
        assert_eq!(find(b"abc", b"c", 9), None);
        let hay = vec![b'-'; 100_000];
        assert_eq!(find(&hay, b"\r\n--------x", 0), None);
    }

    #[test]
    fn chart_file_names_split_into_name_and_version() {
        let s = split_chart_file;
        assert_eq!(s("nginx-1.2.3.tgz"), Some(("nginx", "1.2.3")));
        assert_eq!(s("my-chart-0.1.0.tgz"), Some(("my-chart", "0.1.0")));
        assert_eq!(s("my-chart-2-1.0.0.tgz"), Some(("my-chart-2", "1.0.0")));
        assert_eq!(s("app-1.2.3-rc1.tgz"), Some(("app", "1.2.3-rc1")));
        assert_eq!(s("app-1.2.3-rc.1.tgz"), Some(("app", "1.2.3-rc.1")));
        assert_eq!(s("app-1.0.0-0.3.7.tgz"), Some(("app", "1.0.0-0.3.7")));
        assert_eq!(
            s("app-1.0.0-20240101.1+build.5.tgz"),
            Some(("app", "1.0.0-20240101.1+build.5"))
        );
        assert_eq!(
            s("k8s-1.2-tools-0.1.0.tgz"),
            Some(("k8s-1.2-tools", "0.1.0"))
        );
        assert_eq!(s("chart-v2-v3.1.0.tgz"), Some(("chart-v2", "v3.1.0")));
        // not full SemVer: the last version-like suffix
        assert_eq!(s("old-1.2.tgz"), Some(("old", "1.2")));
        assert_eq!(s("x-1.0-beta.tgz"), Some(("x", "1.0-beta")));
        for bad in [
            "nginx.tgz",
            "nginx-latest.tgz",
            "-1.0.0.tgz",
            "nginx-1.2.3.tgz.prov",
            "nginx-1.2.3.tar.gz",
            "nginx-1.tgz",
        ] {
            assert_eq!(s(bad), None, "{bad}");
        }
        assert!(is_semver("1.2.3"));
        assert!(is_semver("v1.2.3-alpha-1.2+x"));
        assert!(!is_semver("1.2"));
        assert!(!is_semver("1.2.3-"));
        assert!(!is_semver("1.2.3-a..b"));
        assert!(!is_semver("1.2.x"));
    }

    #[test]
    fn paths_map_to_chartmuseum() {
        let m = |p: &str, q: Option<&str>| upstream_path(p, q);
        assert_eq!(
            m("/chartrepo/prj/index.yaml", None).as_deref(),
            Some("/prj/index.yaml")
        );
        assert_eq!(
            m("/chartrepo/prj/charts/a-1.0.0.tgz", None).as_deref(),
            Some("/prj/charts/a-1.0.0.tgz")
        );
        assert_eq!(
            m("/api/chartrepo/prj/charts", Some("force")).as_deref(),
            Some("/api/prj/charts?force")
        );
        assert_eq!(
            m("/api/chartrepo/prj/prov", None).as_deref(),
            Some("/api/prj/prov")
        );
        assert_eq!(
            m("/api/chartrepo/prj/charts/a/1.0.0", None).as_deref(),
            Some("/api/prj/charts/a/1.0.0")
        );
        for bad in [
            "/chartrepo/prj/charts/..",
            "/chartrepo/../api/prj/charts",
            "/api/chartrepo/prj/charts/%2e%2E/x",
            "/chartrepo/prj/charts/a%2Fb.tgz",
            "/chartrepo/prj/charts/./a.tgz",
            "/v2/x",
        ] {
            assert_eq!(m(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn absolute_index_urls_point_back_at_wharf() {
        let relative = b"apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: 1.0.0\n    urls:\n    - charts/web-1.0.0.tgz\ngenerated: \"2024-01-01T00:00:00Z\"\n";
        assert_eq!(rewrite_index(relative, "https://w.example", "prj"), None);
        let absolute = b"apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: \"1.10\"\n    digest: abc\n    urls:\n    - http://cm.internal:8080/prj/charts/web-1.10.tgz\n    - charts/web-1.10.tgz\n  other:\n  - name: other\n    version: 2.0.0\n    urls:\n    - https://elsewhere.example/x/index.yaml\ngenerated: \"2024-01-01T00:00:00Z\"\n";
        let out = rewrite_index(absolute, "https://w.example", "prj").unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out).unwrap();
        let web = &v["entries"]["web"][0];
        assert_eq!(
            web["urls"][0].as_str(),
            Some("https://w.example/chartrepo/prj/charts/web-1.10.tgz")
        );
        assert_eq!(web["urls"][1].as_str(), Some("charts/web-1.10.tgz"));
        assert_eq!(
            web["version"].as_str(),
            Some("1.10"),
            "strings stay strings"
        );
        assert_eq!(
            v["entries"]["other"][0]["urls"][0].as_str(),
            Some("https://elsewhere.example/x/index.yaml")
        );
        assert_eq!(rewrite_index(b"not: [yaml", "https://w", "prj"), None);
        assert_eq!(rewrite_index(b"apiVersion: v1\n", "https://w", "prj"), None);
    }
}
