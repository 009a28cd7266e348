//! A FAKE of ChartMuseum's HTTP API, multi-tenant with `--depth=1` (one repository per path
//! segment, as Harbor ran it: one per project).
//!
//! Why a fake: no ChartMuseum build is installable on this project's machines (it is not in
//! Debian, PyPI or npm, and nothing else may be downloaded), so the chartrepo tests run against
//! this in-process server instead. It follows ChartMuseum's handlers (`pkg/chartmuseum/server/
//! multitenant/handlers.go`, `api.go`, `routes.go`, `pkg/repo/chart.go`) in what a client can
//! observe: routes, status codes, JSON bodies, the shape of `index.yaml`. Charts are really
//! opened (gzip + tar, `<dir>/Chart.yaml`), so a corrupt upload fails as it would there.
//!
//! Implemented (`{repo}` is one path segment):
//! - `GET /health` → 200 `{"healthy":true}`; `GET /` → the welcome page;
//! - `GET /{repo}/index.yaml` → regenerated from the stored charts on every request:
//!   `apiVersion: v1`, `entries: name → [{apiVersion, name, version, type, appVersion,
//!   description, urls: ["charts/<name>-<version>.tgz"], created, digest}]` (newest version
//!   first), `generated`, `serverInfo: {}`; `application/x-yaml`. With
//!   [`ChartMuseumBuilder::chart_url`] the URLs are absolute (`<chart-url>/<repo>/charts/<file>`),
//!   as ChartMuseum's `--chart-url` makes them;
//! - `GET /{repo}/charts/<file>` → the `.tgz` (`application/x-tar`) or `.prov`
//!   (`application/pgp-signature`); 404 `{"error":"object not found"}`; 500
//!   `{"error":"unsupported file extension"}` for other names. No HEAD here (ChartMuseum declares
//!   none for these routes: 404);
//! - `POST /api/{repo}/charts`: a raw `.tgz` body → 201 `{"saved":true}`, 409
//!   `{"error":"file already exists"}`, 500 `{"error":"..."}` for a body that is not a chart (as
//!   ChartMuseum answers a raw upload); `multipart/form-data` with file fields `chart` and/or
//!   `prov` → 201, 409 `{"error":"chart already exists"}`, 400 `{"error":"..."}` for a non-chart
//!   or when neither field is there;
//! - `POST /api/{repo}/prov` → 201, 409, 500 for a non-provenance body;
//! - `DELETE /api/{repo}/charts/<name>/<version>` → 200 `{"deleted":true}` (its `.prov` goes
//!   too), 404 `{"error":"remove <repo>/<file>: no such file or directory"}`;
//! - `GET /api/{repo}/charts` (name → versions), `GET /api/{repo}/charts/<name>` (versions; 404
//!   `{"error":"chart not found"}`), `GET /api/{repo}/charts/<name>/<version>` (one version, as
//!   in the index; `latest` is the newest; 404 `{"error":"no chart version found for
//!   <name>-<version>"}`), `HEAD` of the last two (status only);
//! - anything else: 404 `404 page not found`.
//!
//! Every request is logged ([`ChartMuseum::requests`]) for assertions. It serves on
//! `127.0.0.1:<free port>`, in-process, until dropped.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct CmRequest {
    pub method: Method,
    /// Path and query as sent.
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A stored chart version.
#[derive(Debug, Clone)]
struct Stored {
    meta: Value,
    content: Bytes,
    created: String,
}

#[derive(Default)]
struct State {
    /// repo → file name → content (charts and provenance files).
    files: BTreeMap<String, BTreeMap<String, Bytes>>,
    /// repo → `<name>-<version>.tgz` → the chart.
    charts: BTreeMap<String, BTreeMap<String, Stored>>,
    requests: Vec<CmRequest>,
}

/// Options of a [`ChartMuseum`].
#[derive(Debug, Clone, Default)]
pub struct ChartMuseumBuilder {
    chart_url: Option<String>,
}

impl ChartMuseumBuilder {
    /// Write absolute chart URLs into `index.yaml` (ChartMuseum's `--chart-url`).
    pub fn chart_url(mut self, url: &str) -> Self {
        self.chart_url = Some(url.trim_end_matches('/').to_string());
        self
    }

    /// Start on `127.0.0.1:<free port>` on the current runtime.
    pub async fn start(self) -> ChartMuseum {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake chartmuseum");
        let addr = listener.local_addr().expect("fake chartmuseum addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let chart_url = Arc::new(self.chart_url);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let st = st.clone();
                let chart_url = chart_url.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, st.clone(), chart_url.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        ChartMuseum { addr, state, task }
    }
}

/// The fake ChartMuseum (see the module doc). Stops on drop.
pub struct ChartMuseum {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ChartMuseum {
    /// Start with default options.
    pub async fn start() -> ChartMuseum {
        ChartMuseumBuilder::default().start().await
    }

    /// Options first.
    pub fn builder() -> ChartMuseumBuilder {
        ChartMuseumBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<CmRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The stored content of `<repo>/<file>`, if any.
    pub fn file(&self, repo: &str, file: &str) -> Option<Bytes> {
        self.state
            .lock()
            .unwrap()
            .files
            .get(repo)
            .and_then(|f| f.get(file))
            .cloned()
    }
}

impl Drop for ChartMuseum {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Resp = Response<Full<Bytes>>;

fn json_resp(status: u16, v: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn error(status: u16, msg: &str) -> Resp {
    json_resp(status, json!({ "error": msg }))
}

fn data(content_type: &'static str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn status_only(status: u16) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r
}

fn not_found() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(b"404 page not found")));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    chart_url: Arc<Option<String>>,
) -> Result<Resp, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut st = state.lock().unwrap();
    st.requests.push(CmRequest {
        method: parts.method.clone(),
        path: pq,
        headers: parts.headers,
        body: body.clone(),
    });
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = &parts.method;
    let resp = match (m.as_str(), segs.as_slice()) {
        ("GET", [""]) => data(
            "text/html",
            Bytes::from_static(b"<h1>Welcome to ChartMuseum!</h1>"),
        ),
        ("GET", ["health"]) => json_resp(200, json!({"healthy": true})),
        ("GET", [repo, "index.yaml"]) => index(&st, repo, chart_url.as_deref()),
        ("GET", [repo, "charts", file]) => get_file(&st, repo, file),
        ("POST", ["api", repo, "charts"]) => {
            let multipart = content_type
                .as_deref()
                .and_then(|c| c.split(';').next())
                .is_some_and(|m| m.trim() == "multipart/form-data");
            if multipart {
                post_form(&mut st, repo, content_type.as_deref().unwrap_or(""), &body)
            } else {
                post_raw_chart(&mut st, repo, body)
            }
        }
        ("POST", ["api", repo, "prov"]) => match prov_filename(&body) {
            Err(e) => error(500, &e),
            Ok(f) if has_file(&st, repo, &f) => error(409, "file already exists"),
            Ok(f) => {
                put_file(&mut st, repo, &f, body);
                json_resp(201, json!({"saved": true}))
            }
        },
        ("DELETE", ["api", repo, "charts", name, version]) => delete(&mut st, repo, name, version),
        ("GET", ["api", repo, "charts"]) => json_resp(200, all_charts(&st, repo)),
        ("GET" | "HEAD", ["api", repo, "charts", name]) => match all_charts(&st, repo).get(*name) {
            Some(v) if m == Method::GET => json_resp(200, v.clone()),
            Some(_) => status_only(200),
            None if m == Method::GET => error(404, "chart not found"),
            None => status_only(404),
        },
        ("GET" | "HEAD", ["api", repo, "charts", name, version]) => {
            match chart_version(&st, repo, name, version) {
                Some(v) if m == Method::GET => json_resp(200, v),
                Some(_) => status_only(200),
                None if m == Method::GET => {
                    error(404, &format!("no chart version found for {name}-{version}"))
                }
                None => status_only(404),
            }
        }
        _ => not_found(),
    };
    Ok(resp)
}

fn has_file(st: &State, repo: &str, file: &str) -> bool {
    st.files.get(repo).is_some_and(|f| f.contains_key(file))
}

fn put_file(st: &mut State, repo: &str, file: &str, content: Bytes) {
    st.files
        .entry(repo.to_string())
        .or_default()
        .insert(file.to_string(), content);
}

fn get_file(st: &State, repo: &str, file: &str) -> Resp {
    let content_type = if file.ends_with(".tgz.prov") {
        "application/pgp-signature"
    } else if file.ends_with(".tgz") {
        "application/x-tar"
    } else {
        return error(500, "unsupported file extension");
    };
    match st.files.get(repo).and_then(|f| f.get(file)) {
        Some(c) => data(content_type, c.clone()),
        None => error(404, "object not found"),
    }
}

/// Open a chart archive as Helm's loader does: every file under one top directory, a
/// `Chart.yaml` there with a name and a version.
fn load_chart(content: &[u8]) -> Result<Value, String> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(content));
    let mut chart_yaml = None;
    let entries = ar.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.len() == 2 && parts[1] == "Chart.yaml" && chart_yaml.is_none() {
            let mut s = String::new();
            entry.read_to_string(&mut s).map_err(|e| e.to_string())?;
            chart_yaml = Some(s);
        } else {
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| e.to_string())?;
        }
    }
    let text = chart_yaml.ok_or("Chart.yaml file is missing")?;
    let meta: Value = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
    for k in ["name", "version"] {
        let present = meta
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !present {
            return Err(format!("validation: chart.metadata.{k} is required"));
        }
    }
    Ok(meta)
}

fn chart_filename(meta: &Value) -> String {
    format!(
        "{}-{}.tgz",
        meta["name"].as_str().unwrap_or_default(),
        meta["version"].as_str().unwrap_or_default()
    )
}

fn store_chart(st: &mut State, repo: &str, filename: &str, meta: Value, content: Bytes) {
    put_file(st, repo, filename, content.clone());
    st.charts.entry(repo.to_string()).or_default().insert(
        filename.to_string(),
        Stored {
            meta,
            content,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        },
    );
}

fn post_raw_chart(st: &mut State, repo: &str, body: Bytes) -> Resp {
    let meta = match load_chart(&body) {
        Ok(m) => m,
        Err(e) => return error(500, &e),
    };
    let filename = chart_filename(&meta);
    if has_file(st, repo, &filename) {
        return error(409, "file already exists");
    }
    store_chart(st, repo, &filename, meta, body);
    json_resp(201, json!({"saved": true}))
}

fn prov_filename(content: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(content);
    let field = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
    };
    match (
        text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"),
        field("name:"),
        field("version:"),
    ) {
        (true, Some(n), Some(v)) => Ok(format!("{n}-{v}.tgz.prov")),
        _ => Err("invalid provenance file".into()),
    }
}

/// File parts (those with a filename, as Go's `FormFile` sees them) of a multipart body.
fn form_files(content_type: &str, body: &[u8]) -> Result<Vec<(String, Bytes)>, String> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim() == "boundary").then(|| v.trim().trim_matches('"').to_string())
        })
        .ok_or("no multipart boundary")?;
    let delim = format!("--{boundary}").into_bytes();
    let mut out = Vec::new();
    let mut rest = body;
    // skip the preamble up to the first delimiter
    let start = find(rest, &delim).ok_or("multipart: NextPart: EOF")?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("multipart: bad boundary line")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("multipart: bad part headers")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let mut end_delim = b"\r\n".to_vec();
        end_delim.extend_from_slice(&delim);
        let end = find(rest, &end_delim).ok_or("multipart: unexpected EOF")?;
        let content = Bytes::copy_from_slice(&rest[..end]);
        rest = &rest[end + end_delim.len()..];
        let disposition = head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| v.to_string())
            })
            .unwrap_or_default();
        let param = |name: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(filename)) = (param("name"), param("filename"))
            && !filename.is_empty()
        {
            out.push((name, content));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn post_form(st: &mut State, repo: &str, content_type: &str, body: &[u8]) -> Resp {
    let files = match form_files(content_type, body) {
        Ok(f) => f,
        Err(e) => return error(500, &e),
    };
    let first = |field: &str| {
        files
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, c)| c.clone())
    };
    let mut chart = None;
    let mut prov = None;
    let mut conflict = false;
    if let Some(c) = first("chart") {
        let meta = match load_chart(&c) {
            Ok(m) => m,
            Err(e) => return error(400, &e),
        };
        let f = chart_filename(&meta);
        conflict |= has_file(st, repo, &f);
        chart = Some((f, meta, c));
    }
    if let Some(p) = first("prov") {
        let f = match prov_filename(&p) {
            Ok(f) => f,
            Err(e) => return error(400, &e),
        };
        conflict |= has_file(st, repo, &f);
        prov = Some((f, p));
    }
    if conflict {
        return error(409, "chart already exists");
    }
    if chart.is_none() && prov.is_none() {
        return error(
            400,
            "no package or provenance file found in form fields chart and prov",
        );
    }
    if let Some((f, meta, c)) = chart {
        store_chart(st, repo, &f, meta, c);
    }
    if let Some((f, p)) = prov {
        put_file(st, repo, &f, p);
    }
    json_resp(201, json!({"saved": true}))
}

fn delete(st: &mut State, repo: &str, name: &str, version: &str) -> Resp {
    let file = format!("{name}-{version}.tgz");
    let removed = st
        .files
        .get_mut(repo)
        .and_then(|f| f.remove(&file))
        .is_some();
    if !removed {
        return error(
            404,
            &format!("remove {repo}/{file}: no such file or directory"),
        );
    }
    if let Some(f) = st.files.get_mut(repo) {
        f.remove(&format!("{file}.prov"));
    }
    if let Some(c) = st.charts.get_mut(repo) {
        c.remove(&file);
    }
    json_resp(200, json!({"deleted": true}))
}

/// One chart version as ChartMuseum lists it (Helm's `repo.ChartVersion`).
fn version_entry(s: &Stored, url: String) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(m) = s.meta.as_object() {
        for k in [
            "name",
            "version",
            "description",
            "apiVersion",
            "appVersion",
            "type",
            "home",
            "keywords",
        ] {
            if let Some(x) = m.get(k).filter(|x| !x.is_null()) {
                let x = match x {
                    Value::Number(n) => Value::String(n.to_string()),
                    other => other.clone(),
                };
                v.insert(k.to_string(), x);
            }
        }
    }
    v.insert("urls".into(), json!([url]));
    v.insert("created".into(), json!(s.created));
    v.insert(
        "digest".into(),
        json!(hex::encode(Sha256::digest(&s.content))),
    );
    Value::Object(v)
}

/// name → versions (newest first), with relative or `chart_url` URLs.
fn entries(st: &State, repo: &str, chart_url: Option<&str>) -> serde_json::Map<String, Value> {
    let mut by_name: BTreeMap<String, Vec<(&Stored, &String)>> = BTreeMap::new();
    if let Some(charts) = st.charts.get(repo) {
        for (file, s) in charts {
            let name = s.meta["name"].as_str().unwrap_or_default().to_string();
            by_name.entry(name).or_default().push((s, file));
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut versions)| {
            versions.sort_by(|a, b| b.0.created.cmp(&a.0.created));
            let list = versions
                .into_iter()
                .map(|(s, file)| {
                    let url = match chart_url {
                        Some(base) => format!("{base}/{repo}/charts/{file}"),
                        None => format!("charts/{file}"),
                    };
                    version_entry(s, url)
                })
                .collect();
            (name, Value::Array(list))
        })
        .collect()
}

fn all_charts(st: &State, repo: &str) -> Value {
    Value::Object(entries(st, repo, None))
}

fn chart_version(st: &State, repo: &str, name: &str, version: &str) -> Option<Value> {
    let all = entries(st, repo, None);
    let list = all.get(name)?.as_array()?.clone();
    if version == "latest" {
        return list.into_iter().next();
    }
    list.into_iter().find(|v| v["version"] == version)
}

fn index(st: &State, repo: &str, chart_url: Option<&str>) -> Resp {
    let doc = json!({
        "apiVersion": "v1",
        "entries": Value::Object(entries(st, repo, chart_url)),
        "generated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "serverInfo": {},
    });
    let yaml = serde_yaml_ng::to_string(&doc).expect("index to YAML");
    data("application/x-yaml", Bytes::from(yaml))
}
