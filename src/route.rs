//! Route: classify every request once, into a typed operation.
//!
//! Registry paths are parsed from the right (`…/manifests/<ref>`, `…/blobs/<digest>`,
//! `…/blobs/uploads/[<id>]`, `…/tags/list`, `…/referrers/<digest>`), so repository names may
//! have any number of segments. A path that does not parse is [`RegistryOp::Other`]: it is still
//! forwarded unchanged and the registry answers it; wharf only never derives an event from it.
//! Classification is pure and never panics (it is fuzzed: `fuzz/fuzz_targets/classify.rs`).
//!
//! Percent-encoding: the registry (distribution) and ChartMuseum decode a request path once
//! before they route it, so `/v2/pr%6Aa/big%2Fmanifests%2Fv8` is a manifest PUT of `prja/big`
//! to them. wharf therefore classifies exactly that decoded path ([`classify_request`]), and a
//! registry or chart request whose path carries percent-encoding is forwarded with its
//! *canonical* path — decoded once, each segment re-encoded only where RFC 3986 requires — so
//! what the upstream acts on is byte for byte what wharf classified (the fuzz target checks
//! this oracle). Nothing is decoded twice: `%252F` stays a literal `%2F` to both.

use std::borrow::Cow;
use std::fmt;

use http::Method;

/// What a request is, decided from method and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2` and everything below it: the registry API.
    Registry(RegistryOp),
    /// `/chartrepo/…` and `/api/chartrepo/…`: classic Helm chart repositories (ChartMuseum).
    Chart(ChartOp),
    /// `/healthz`: the process is alive.
    Health,
    /// `/readyz`: the upstream registry answers.
    Ready,
    /// Anything else: wharf's own API (and its 404s).
    Api,
}

/// A registry (`/v2`) operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryOp {
    /// `/v2/` version check.
    Base,
    /// `GET /v2/_catalog`.
    Catalog,
    /// `GET /v2/<name>/tags/list`.
    TagsList { repo: Repository },
    /// `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.
    Manifest {
        repo: Repository,
        reference: Reference,
        action: ManifestAction,
    },
    /// `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`.
    Blob {
        repo: Repository,
        digest: Digest,
        action: BlobAction,
    },
    /// `POST /v2/<name>/blobs/uploads/` (with `mount` and `from` it is a cross-repo mount).
    UploadStart {
        repo: Repository,
        mount: Option<Mount>,
    },
    /// `PATCH|PUT|GET|DELETE /v2/<name>/blobs/uploads/<id>`.
    Upload {
        repo: Repository,
        action: UploadAction,
    },
    /// `GET /v2/<name>/referrers/<digest>`.
    Referrers { repo: Repository, digest: Digest },
    /// A write (manifest PUT or DELETE, blob DELETE, an upload's POST, PATCH, PUT or DELETE)
    /// to a repository name outside the distribution grammar wharf knows (e.g. `PRJ/app`,
    /// `host:5000/app`: the registry takes a leading domain, which wharf has no project for).
    /// Refused with `400 NAME_INVALID`: forwarded, it would land unseen by events and quota.
    NameInvalid { name: String },
    /// A `/v2` path or method wharf does not recognise; forwarded as is.
    Other,
}

/// What is done to a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestAction {
    Get,
    Head,
    Put,
    Delete,
}

/// What is done to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobAction {
    Get,
    Head,
    Delete,
}

/// What is done to an upload session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadAction {
    /// PATCH: a chunk.
    Chunk,
    /// PUT `?digest=`: the end of the upload (may carry the last chunk).
    Complete,
    /// GET: progress.
    Status,
    /// DELETE: cancel.
    Cancel,
}

/// A cross-repository blob mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub digest: Digest,
    pub from: Option<Repository>,
}

/// A ChartMuseum operation under Harbor's chartrepo paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartOp {
    /// `GET /chartrepo/<project>/index.yaml`.
    Index { project: String },
    /// `GET /chartrepo/<project>/charts/<file>` (a `.tgz` or `.prov`).
    Download { project: String, file: String },
    /// `POST /api/chartrepo/<project>/charts` (also `/prov`).
    Upload { project: String, prov_only: bool },
    /// `DELETE /api/chartrepo/<project>/charts/<name>/<version>`.
    Delete {
        project: String,
        name: String,
        version: String,
    },
    /// `GET /api/chartrepo/<project>/charts[/<name>[/<version>]]`.
    List { project: String },
    /// A chartrepo path wharf does not recognise.
    Other,
}

/// A validated repository name, e.g. `prj/team/app`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository(String);

impl Repository {
    /// Validate `name`: one or more `/`-separated components of the distribution grammar.
    pub fn parse(name: &str) -> Option<Repository> {
        if name.is_empty() || name.len() > 255 {
            return None;
        }
        if name.split('/').all(is_name_component) {
            Some(Repository(name.to_string()))
        } else {
            None
        }
    }
    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The project: the first name segment (`prj/repo1` → `prj`).
    pub fn project(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
    /// The name without its project (`prj/team/app` → `team/app`; a one-segment name is itself).
    pub fn short_name(&self) -> &str {
        self.0
            .split_once('/')
            .map(|(_, rest)| rest)
            .unwrap_or(&self.0)
    }
}

impl fmt::Debug for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One component of a repository name: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
pub fn is_name_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__" or one or more "-"
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) or a valid digest; anything else is `None`.
    pub fn parse(s: &str) -> Option<Reference> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else if is_tag(s) {
            Some(Reference::Tag(s.to_string()))
        } else {
            None
        }
    }
    pub fn tag(&self) -> Option<&str> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => fmt::Display::fmt(d, f),
        }
    }
}

/// Tag grammar of the distribution spec.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// A content digest, validated: `sha256:` + 64 lowercase hex, `sha512:` + 128 lowercase hex,
/// or another algorithm of the OCI grammar with a non-empty encoded part.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Option<Digest> {
        let (alg, enc) = s.split_once(':')?;
        let lower_hex = |e: &str, n: usize| {
            e.len() == n
                && e.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        };
        let ok = match alg {
            "sha256" => lower_hex(enc, 64),
            "sha512" => lower_hex(enc, 128),
            _ => {
                is_digest_algorithm(alg)
                    && !enc.is_empty()
                    && enc
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'))
            }
        };
        ok.then(|| Digest(s.to_string()))
    }
    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(data))
        ))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The encoded part (the hex of a sha256 digest).
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map(|(_, e)| e).unwrap_or(&self.0)
    }
}

fn is_digest_algorithm(alg: &str) -> bool {
    // [a-z0-9]+([+._-][a-z0-9]+)*
    !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Classify a request by method, raw (as received) path and query; see [`classify_request`].
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Route {
    classify_request(method, path, query).route
}

/// A classified request: its route, and the path to forward when that differs from the raw one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub route: Route,
    /// For a registry or chart request whose raw path has percent-encoding: the canonical path
    /// (decoded once, minimally re-encoded) that must be forwarded instead of the raw one, so
    /// that the upstream's decoding yields exactly the path wharf classified.
    pub canonical_path: Option<String>,
}

/// Characters escaped when a decoded path segment is written back: those RFC 3986 does not
/// allow in a segment, and `%` itself (non-ASCII bytes are always escaped).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The canonical form of a raw path: decoded once, split at `/`, each segment re-encoded with
/// `SEGMENT`. Decoding the result gives the same bytes as decoding `raw`, and the canonical
/// form of a canonical path is itself.
pub fn canonical_path(raw: &str) -> String {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let mut out = String::with_capacity(raw.len());
    for (i, seg) in bytes.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(percent_encoding::percent_encode(seg, SEGMENT));
    }
    out
}

/// Classify a request on the path its upstream will act on (see the module documentation).
pub fn classify_request(method: &Method, path: &str, query: Option<&str>) -> Classified {
    if !path.contains('%') {
        return Classified {
            route: classify_decoded(method, path, query),
            canonical_path: None,
        };
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8();
    let upstream_bound = |p: &str| {
        p == "/v2"
            || p.starts_with("/v2/")
            || p.starts_with("/chartrepo/")
            || p.starts_with("/api/chartrepo/")
    };
    match decoded {
        Ok(d) if upstream_bound(&d) => Classified {
            route: classify_decoded(method, &d, query),
            canonical_path: Some(canonical_path(path)),
        },
        // not valid UTF-8: no name, tag or chart file can match; still the upstream's path
        Err(_) if upstream_bound(&canonical_path(path)) => {
            let canonical = canonical_path(path);
            Classified {
                route: match classify_decoded(method, &canonical, query) {
                    Route::Registry(_) => Route::Registry(RegistryOp::Other),
                    _ => Route::Chart(ChartOp::Other),
                },
                canonical_path: Some(canonical),
            }
        }
        // wharf's own endpoints: routed on the raw path, as the API router does
        _ => Classified {
            route: classify_decoded(method, path, query),
            canonical_path: None,
        },
    }
}

/// Classify an already decoded path.
fn classify_decoded(method: &Method, path: &str, query: Option<&str>) -> Route {
    if path == "/v2" || path.starts_with("/v2/") {
        return Route::Registry(classify_registry(method, path, query));
    }
    if path.starts_with("/chartrepo/") || path.starts_with("/api/chartrepo/") {
        return Route::Chart(classify_chart(method, path));
    }
    match path {
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        _ => Route::Api,
    }
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .unwrap_or(Cow::Borrowed(s))
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<Cow<'a, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

/// Classify a decoded `/v2…` path.
pub fn classify_registry(method: &Method, path: &str, query: Option<&str>) -> RegistryOp {
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    if rest.is_empty() || rest == "/" {
        return RegistryOp::Base;
    }
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest == "_catalog" {
        return if method == Method::GET {
            RegistryOp::Catalog
        } else {
            RegistryOp::Other
        };
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let repo_of = |upto: usize| -> Option<Repository> {
        if upto == 0 {
            return None;
        }
        Repository::parse(&segs[..upto].join("/"))
    };
    // …/blobs/uploads/ and …/blobs/uploads/<id>
    // a write to a name wharf does not take (a read goes through unobserved: content pushed
    // before wharf was there stays readable)
    let refused = |upto: usize, writes: bool| -> RegistryOp {
        if writes && upto > 0 {
            RegistryOp::NameInvalid {
                name: segs[..upto].join("/"),
            }
        } else {
            RegistryOp::Other
        }
    };
    let writes = matches!(
        *method,
        Method::PUT | Method::POST | Method::PATCH | Method::DELETE
    );
    if n >= 3 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let Some(repo) = repo_of(n - 3) else {
            return refused(n - 3, writes);
        };
        let id = segs[n - 1];
        if id.is_empty() {
            return upload_start(method, repo, query);
        }
        let action = match *method {
            Method::PATCH => UploadAction::Chunk,
            Method::PUT => UploadAction::Complete,
            Method::GET => UploadAction::Status,
            Method::DELETE => UploadAction::Cancel,
            _ => return RegistryOp::Other,
        };
        return RegistryOp::Upload { repo, action };
    }
    // …/blobs/uploads without the trailing slash: distribution accepts it for POST too.
    if n >= 2 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return match repo_of(n - 2) {
            Some(repo) => upload_start(method, repo, query),
            None => refused(n - 2, *method == Method::POST),
        };
    }
    if n < 3 {
        return RegistryOp::Other;
    }
    let (kind, last) = (segs[n - 2], segs[n - 1]);
    match kind {
        "tags" if last == "list" && method == Method::GET => match repo_of(n - 2) {
            Some(repo) => RegistryOp::TagsList { repo },
            None => RegistryOp::Other,
        },
        "manifests" => {
            let action = match *method {
                Method::GET => ManifestAction::Get,
                Method::HEAD => ManifestAction::Head,
                Method::PUT => ManifestAction::Put,
                Method::DELETE => ManifestAction::Delete,
                _ => return RegistryOp::Other,
            };
            match (repo_of(n - 2), Reference::parse(last)) {
                (Some(repo), Some(reference)) => RegistryOp::Manifest {
                    repo,
                    reference,
                    action,
                },
                (None, _) => refused(n - 2, writes),
                _ => RegistryOp::Other,
            }
        }
        "blobs" => {
            let action = match *method {
                Method::GET => BlobAction::Get,
                Method::HEAD => BlobAction::Head,
                Method::DELETE => BlobAction::Delete,
                _ => return RegistryOp::Other,
            };
            match (repo_of(n - 2), Digest::parse(last)) {
                (Some(repo), Some(digest)) => RegistryOp::Blob {
                    repo,
                    digest,
                    action,
                },
                (None, _) => refused(n - 2, writes),
                _ => RegistryOp::Other,
            }
        }
        "referrers" if method == Method::GET => match (repo_of(n - 2), Digest::parse(last)) {
            (Some(repo), Some(digest)) => RegistryOp::Referrers { repo, digest },
            _ => RegistryOp::Other,
        },
        _ => RegistryOp::Other,
    }
}

fn upload_start(method: &Method, repo: Repository, query: Option<&str>) -> RegistryOp {
    if method != Method::POST {
        return RegistryOp::Other;
    }
    let mount = query_param(query, "mount")
        .and_then(|d| Digest::parse(&d))
        .map(|digest| Mount {
            digest,
            from: query_param(query, "from").and_then(|f| Repository::parse(&f)),
        });
    RegistryOp::UploadStart { repo, mount }
}

/// Classify a decoded `/chartrepo/…` or `/api/chartrepo/…` path.
pub fn classify_chart(method: &Method, path: &str) -> ChartOp {
    let valid_project = |p: &str| is_name_component(p);
    if let Some(rest) = path.strip_prefix("/chartrepo/") {
        let segs: Vec<&str> = rest.split('/').collect();
        return match (method, segs.as_slice()) {
            (&Method::GET | &Method::HEAD, [p, "index.yaml"]) if valid_project(p) => {
                ChartOp::Index {
                    project: p.to_string(),
                }
            }
            (&Method::GET | &Method::HEAD, [p, "charts", file])
                if valid_project(p) && !file.is_empty() =>
            {
                ChartOp::Download {
                    project: p.to_string(),
                    file: file.to_string(),
                }
            }
            _ => ChartOp::Other,
        };
    }
    if let Some(rest) = path.strip_prefix("/api/chartrepo/") {
        let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        return match (method, segs.as_slice()) {
            (&Method::POST, [p, "charts"]) if valid_project(p) => ChartOp::Upload {
                project: p.to_string(),
                prov_only: false,
            },
            (&Method::POST, [p, "prov"]) if valid_project(p) => ChartOp::Upload {
                project: p.to_string(),
                prov_only: true,
            },
            (&Method::DELETE, [p, "charts", name, version])
                if valid_project(p) && !name.is_empty() && !version.is_empty() =>
            {
                ChartOp::Delete {
                    project: p.to_string(),
                    name: name.to_string(),
                    version: version.to_string(),
                }
            }
            (&Method::GET | &Method::HEAD, [p, "charts", ..]) if valid_project(p) => {
                ChartOp::List {
                    project: p.to_string(),
                }
            }
            _ => ChartOp::Other,
        };
    }
    ChartOp::Other
}

impl RegistryOp {
    /// A short, stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            RegistryOp::Base => "base",
            RegistryOp::Catalog => "catalog",
            RegistryOp::TagsList { .. } => "tags_list",
            RegistryOp::Manifest { action, .. } => match action {
                ManifestAction::Get => "manifest_get",
                ManifestAction::Head => "manifest_head",
                ManifestAction::Put => "manifest_put",
                ManifestAction::Delete => "manifest_delete",
            },
            RegistryOp::Blob { action, .. } => match action {
                BlobAction::Get => "blob_get",
                BlobAction::Head => "blob_head",
                BlobAction::Delete => "blob_delete",
            },
            RegistryOp::UploadStart { mount: Some(_), .. } => "blob_mount",
            RegistryOp::UploadStart { mount: None, .. } => "upload_start",
            RegistryOp::Upload { action, .. } => match action {
                UploadAction::Chunk => "upload_chunk",
                UploadAction::Complete => "upload_complete",
                UploadAction::Status => "upload_status",
                UploadAction::Cancel => "upload_cancel",
            },
            RegistryOp::Referrers { .. } => "referrers",
            RegistryOp::NameInvalid { .. } => "name_invalid",
            RegistryOp::Other => "registry_other",
        }
    }

    /// The repository the operation is about, if any.
    pub fn repository(&self) -> Option<&Repository> {
        match self {
            RegistryOp::TagsList { repo }
            | RegistryOp::Manifest { repo, .. }
            | RegistryOp::Blob { repo, .. }
            | RegistryOp::UploadStart { repo, .. }
            | RegistryOp::Upload { repo, .. }
            | RegistryOp::Referrers { repo, .. } => Some(repo),
            _ => None,
        }
    }
}

impl ChartOp {
    /// A short, stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ChartOp::Index { .. } => "chart_index",
            ChartOp::Download { .. } => "chart_download",
            ChartOp::Upload { .. } => "chart_upload",
            ChartOp::Delete { .. } => "chart_delete",
            ChartOp::List { .. } => "chart_list",
            ChartOp::Other => "chart_other",
        }
    }
}

impl Route {
    /// A short, stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Registry(op) => op.name(),
            Route::Chart(op) => op.name(),
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Api => "api",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:9e2c9d5f44efbb6ee83aecd17a120c513047d289d142ec5738c9f02f9b24ad07";

    fn reg(m: Method, p: &str) -> RegistryOp {
        let (path, query) = p.split_once('?').map_or((p, None), |(a, b)| (a, Some(b)));
        match classify(&m, path, query) {
            Route::Registry(op) => op,
            other => panic!("{p} classified as {other:?}"),
        }
    }

    fn repo(s: &str) -> Repository {
        Repository::parse(s).unwrap()
    }

    #[test]
    fn base_and_catalog() {
        assert_eq!(reg(Method::GET, "/v2/"), RegistryOp::Base);
        assert_eq!(reg(Method::GET, "/v2"), RegistryOp::Base);
        assert_eq!(reg(Method::GET, "/v2/_catalog"), RegistryOp::Catalog);
    }

    #[test]
    fn manifests_with_many_segments_parse_from_the_right() {
        let op = reg(Method::GET, "/v2/prj/team/app/sub/x/y/z/w/manifests/latest");
        assert_eq!(
            op,
            RegistryOp::Manifest {
                repo: repo("prj/team/app/sub/x/y/z/w"),
                reference: Reference::Tag("latest".into()),
                action: ManifestAction::Get
            }
        );
        assert_eq!(op.repository().unwrap().project(), "prj");
        // a repository may itself contain a "manifests" segment
        let op = reg(Method::PUT, &format!("/v2/a/manifests/b/manifests/{D}"));
        assert_eq!(
            op,
            RegistryOp::Manifest {
                repo: repo("a/manifests/b"),
                reference: Reference::Digest(Digest::parse(D).unwrap()),
                action: ManifestAction::Put
            }
        );
        // percent-encoded colon in a digest reference
        let op = reg(
            Method::HEAD,
            &format!("/v2/p/r/manifests/{}", D.replace(':', "%3A")),
        );
        assert!(matches!(
            op,
            RegistryOp::Manifest {
                reference: Reference::Digest(_),
                ..
            }
        ));
    }

    #[test]
    fn references_are_validated() {
        assert_eq!(
            reg(Method::GET, "/v2/p/r/manifests/-bad"),
            RegistryOp::Other
        );
        assert_eq!(
            reg(Method::GET, "/v2/p/r/manifests/sha256:abc"),
            RegistryOp::Other
        );
        assert_eq!(
            reg(
                Method::GET,
                &format!("/v2/p/r/manifests/{}", "a".repeat(129))
            ),
            RegistryOp::Other
        );
        assert!(matches!(
            reg(
                Method::GET,
                &format!("/v2/p/r/manifests/{}", "a".repeat(128))
            ),
            RegistryOp::Manifest { .. }
        ));
        assert_eq!(reg(Method::GET, "/v2/P/r/manifests/x"), RegistryOp::Other);
        assert_eq!(reg(Method::POST, "/v2/p/r/manifests/x"), RegistryOp::Other);
    }

    /// Writes to a name the registry may take but wharf has no project for are refused;
    /// reads of such names go through (content pushed before wharf was there stays readable).
    #[test]
    fn writes_to_names_outside_the_grammar_are_refused_reads_pass() {
        let invalid = |name: &str| RegistryOp::NameInvalid {
            name: name.to_string(),
        };
        for (method, path, name) in [
            (Method::PUT, "/v2/PRJ/app/manifests/v1", "PRJ/app"),
            (Method::DELETE, "/v2/PRJ/app/manifests/v1", "PRJ/app"),
            (
                Method::PUT,
                "/v2/host:5000/app/manifests/v1",
                "host:5000/app",
            ),
            (Method::PUT, "/v2/prj/App/manifests/x%20y", "prj/App"),
            (Method::DELETE, &format!("/v2/PRJ/app/blobs/{D}"), "PRJ/app"),
            (Method::POST, "/v2/PRJ/app/blobs/uploads/", "PRJ/app"),
            (Method::POST, "/v2/PRJ/app/blobs/uploads", "PRJ/app"),
            (Method::PATCH, "/v2/PRJ/app/blobs/uploads/u1", "PRJ/app"),
            (Method::PUT, "/v2/PRJ/app/blobs/uploads/u1", "PRJ/app"),
            (Method::DELETE, "/v2/PRJ/app/blobs/uploads/u1", "PRJ/app"),
        ] {
            assert_eq!(reg(method.clone(), path), invalid(name), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/v2/PRJ/app/manifests/v1".to_string()),
            (Method::HEAD, "/v2/PRJ/app/manifests/v1".to_string()),
            (Method::GET, format!("/v2/PRJ/app/blobs/{D}")),
            (Method::GET, "/v2/PRJ/app/blobs/uploads/u1".to_string()),
            (Method::GET, "/v2/PRJ/app/tags/list".to_string()),
            // a valid name with a reference the registry refuses itself
            (Method::PUT, "/v2/prj/app/manifests/-bad".to_string()),
        ] {
            assert_eq!(
                reg(method.clone(), &path),
                RegistryOp::Other,
                "{method} {path}"
            );
        }
        assert_eq!(invalid("x").name(), "name_invalid");
        assert!(Digest::parse(&D.to_uppercase()).is_none());
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_some());
        assert!(
            Digest::parse("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
                .is_some()
        );
        assert!(Digest::parse("sha256").is_none());
        assert!(Digest::parse(":abc").is_none());
    }

    #[test]
    fn blobs_uploads_and_mounts() {
        assert_eq!(
            reg(Method::HEAD, &format!("/v2/p/r/blobs/{D}")),
            RegistryOp::Blob {
                repo: repo("p/r"),
                digest: Digest::parse(D).unwrap(),
                action: BlobAction::Head
            }
        );
        assert_eq!(
            reg(Method::POST, "/v2/p/r/blobs/uploads/"),
            RegistryOp::UploadStart {
                repo: repo("p/r"),
                mount: None
            }
        );
        assert_eq!(
            reg(
                Method::POST,
                &format!(
                    "/v2/p/new/blobs/uploads/?mount={}&from=p%2Fold",
                    D.replace(':', "%3A")
                )
            ),
            RegistryOp::UploadStart {
                repo: repo("p/new"),
                mount: Some(Mount {
                    digest: Digest::parse(D).unwrap(),
                    from: Some(repo("p/old"))
                })
            }
        );
        assert_eq!(
            reg(Method::PATCH, "/v2/p/r/blobs/uploads/3c1f-uuid"),
            RegistryOp::Upload {
                repo: repo("p/r"),
                action: UploadAction::Chunk
            }
        );
        assert_eq!(
            reg(
                Method::PUT,
                "/v2/p/r/blobs/uploads/3c1f-uuid?_state=x&digest=sha256%3Aab"
            ),
            RegistryOp::Upload {
                repo: repo("p/r"),
                action: UploadAction::Complete
            }
        );
        assert_eq!(
            reg(Method::GET, "/v2/p/r/tags/list"),
            RegistryOp::TagsList { repo: repo("p/r") }
        );
        assert_eq!(
            reg(Method::GET, &format!("/v2/p/r/referrers/{D}")),
            RegistryOp::Referrers {
                repo: repo("p/r"),
                digest: Digest::parse(D).unwrap()
            }
        );
        assert_eq!(reg(Method::GET, "/v2/p"), RegistryOp::Other);
        assert_eq!(reg(Method::GET, "/v2//manifests/x"), RegistryOp::Other);
    }

    #[test]
    fn name_components() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "0x", "prj"] {
            assert!(is_name_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "a.", ".a", "a..b", "a___b", "a-", "a._b", "a b", "ä",
        ] {
            assert!(!is_name_component(bad), "{bad}");
        }
        assert_eq!(repo("prj/team/app").short_name(), "team/app");
        assert_eq!(repo("solo").short_name(), "solo");
    }

    #[test]
    fn non_registry_paths() {
        assert_eq!(classify(&Method::GET, "/healthz", None), Route::Health);
        assert_eq!(classify(&Method::GET, "/readyz", None), Route::Ready);
        assert_eq!(classify(&Method::GET, "/v2healthz", None), Route::Api);
        assert_eq!(
            classify(&Method::GET, "/api/v2.0/projects", None),
            Route::Api
        );
        // a repository called healthz is still a registry path
        assert!(matches!(
            classify(&Method::GET, "/v2/healthz/manifests/latest", None),
            Route::Registry(RegistryOp::Manifest { .. })
        ));
    }

    #[test]
    fn chart_paths() {
        let c = |m: Method, p: &str| match classify(&m, p, None) {
            Route::Chart(op) => op,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            c(Method::GET, "/chartrepo/prj/index.yaml"),
            ChartOp::Index {
                project: "prj".into()
            }
        );
        assert_eq!(
            c(Method::GET, "/chartrepo/prj/charts/nginx-1.2.3.tgz"),
            ChartOp::Download {
                project: "prj".into(),
                file: "nginx-1.2.3.tgz".into()
            }
        );
        assert_eq!(
            c(Method::POST, "/api/chartrepo/prj/charts"),
            ChartOp::Upload {
                project: "prj".into(),
                prov_only: false
            }
        );
        assert_eq!(
            c(Method::DELETE, "/api/chartrepo/prj/charts/nginx/1.2.3"),
            ChartOp::Delete {
                project: "prj".into(),
                name: "nginx".into(),
                version: "1.2.3".into()
            }
        );
        assert_eq!(
            c(Method::GET, "/api/chartrepo/prj/charts/nginx"),
            ChartOp::List {
                project: "prj".into()
            }
        );
        assert_eq!(c(Method::GET, "/chartrepo/PRJ/index.yaml"), ChartOp::Other);
    }

    /// The paths of the percent-encoding finding: each is what the registry decodes it to.
    #[test]
    fn percent_encoded_paths_classify_as_the_registry_decodes_them() {
        let put = |p: &str| classify_request(&Method::PUT, p, None);
        for (raw, repo, tag, canonical) in [
            (
                "/v2/pr%6Aa/big/manifests/v2",
                "prja/big",
                "v2",
                "/v2/prja/big/manifests/v2",
            ),
            (
                "/v2/prja%2Fbig/manifests/v3",
                "prja/big",
                "v3",
                "/v2/prja/big/manifests/v3",
            ),
            (
                "/v2/%70rja/big/manifests/v4",
                "prja/big",
                "v4",
                "/v2/prja/big/manifests/v4",
            ),
            (
                "/v2/prja/bi%67/manifests/v5",
                "prja/big",
                "v5",
                "/v2/prja/big/manifests/v5",
            ),
            (
                "/v2/prja/big%2Fmanifests%2Fv8",
                "prja/big",
                "v8",
                "/v2/prja/big/manifests/v8",
            ),
            (
                "/v%32/prja/big/manifests/v9",
                "prja/big",
                "v9",
                "/v2/prja/big/manifests/v9",
            ),
        ] {
            let c = put(raw);
            assert_eq!(
                c.route,
                Route::Registry(RegistryOp::Manifest {
                    repo: repo_of(repo),
                    reference: Reference::Tag(tag.into()),
                    action: ManifestAction::Put,
                }),
                "{raw}"
            );
            assert_eq!(c.canonical_path.as_deref(), Some(canonical), "{raw}");
        }
        // a digest with an encoded colon
        let c = classify_request(
            &Method::DELETE,
            &format!("/v2/prja/bi%67/manifests/{}", D.replace(':', "%3a")),
            None,
        );
        assert!(matches!(
            c.route,
            Route::Registry(RegistryOp::Manifest {
                reference: Reference::Digest(_),
                ..
            })
        ));
        assert_eq!(
            c.canonical_path.unwrap(),
            format!("/v2/prja/big/manifests/{D}")
        );
        // decoded once only: `%252F` is a literal `%2F` to the registry, not a separator
        let c = put("/v2/prja%252Fbig/manifests/v1");
        assert_eq!(
            c.route,
            Route::Registry(RegistryOp::NameInvalid {
                name: "prja%2Fbig".into()
            })
        );
        assert_eq!(
            c.canonical_path.as_deref(),
            Some("/v2/prja%252Fbig/manifests/v1")
        );
        // invalid UTF-8 after decoding never names anything
        let c = put("/v2/pr%ffa/big/manifests/v1");
        assert_eq!(c.route, Route::Registry(RegistryOp::Other));
        // chart paths too
        let c = classify_request(
            &Method::DELETE,
            "/api/chartrepo/pr%6A/charts/web/1.0.0",
            None,
        );
        assert_eq!(
            c.route,
            Route::Chart(ChartOp::Delete {
                project: "prj".into(),
                name: "web".into(),
                version: "1.0.0".into()
            })
        );
        assert_eq!(
            c.canonical_path.as_deref(),
            Some("/api/chartrepo/prj/charts/web/1.0.0")
        );
        // wharf's own paths are left to the API router
        let c = classify_request(&Method::GET, "/api/v2.0/projects/pr%6A", None);
        assert_eq!((c.route, c.canonical_path), (Route::Api, None));
        // no percent-encoding: nothing to rewrite
        assert_eq!(put("/v2/prja/big/manifests/v1").canonical_path, None);
    }

    #[test]
    fn canonical_paths_decode_to_the_same_bytes_and_are_fixed_points() {
        for raw in [
            "/v2/a%2Fb/manifests/v1",
            "/v2/a%252F/x",
            "/v2/%ff%00%20/x",
            "/v2/a b/%3f%23",
            "/chartrepo/p/charts/a%2E%2E",
        ] {
            let c = canonical_path(raw);
            let bytes = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
            assert_eq!(bytes(&c), bytes(raw), "{raw} -> {c}");
            assert_eq!(canonical_path(&c), c, "{raw}");
        }
    }

    fn repo_of(s: &str) -> Repository {
        Repository::parse(s).unwrap()
    }

    #[test]
    fn classify_never_panics_on_odd_input() {
        for p in [
            "/v2/",
            "/v2//",
            "/v2///blobs/uploads/",
            "/v2/a/blobs/uploads",
            "/v2/%ff/manifests/%",
            "/v2/a/manifests/",
            "/v2/a/blobs/",
            "/chartrepo/",
            "/api/chartrepo//charts//",
        ] {
            for m in [
                Method::GET,
                Method::PUT,
                Method::POST,
                Method::DELETE,
                Method::PATCH,
                Method::HEAD,
                Method::OPTIONS,
            ] {
                let _ = classify(&m, p, Some("mount=%zz&from"));
            }
        }
    }
}
