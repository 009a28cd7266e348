//! HTTP clients for tests.
//!
//! - [`client`]: a `reqwest` client for plain HTTP (no proxy from the environment, TLS set up
//!   explicitly with aws-lc-rs so no process-wide crypto provider is installed by the tests).
//! - [`RawConn`] / [`raw_request`]: HTTP/1.1 over a bare TCP stream, for exact bytes on the wire
//!   (repeated headers, `Expect: 100-continue`, what a HEAD response really carries).
//! - [`upload_file`] / [`download_to_file`]: stream a file up or down without holding it in
//!   memory, hashing it on the way.
//! - [`RegistryClient`]: the handful of `/v2` calls tests need (monolithic blob uploads,
//!   manifests, pushing an [`OciImage`] without skopeo).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::oci::{Blob, OciImage};

/// A `reqwest` client for plain-HTTP test servers: no proxies, connection pooling on.
pub fn client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("rustls protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the reqwest client")
}

/// A response read from a raw TCP connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// Header lines in wire order, names lowercased, repeated headers kept.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 connection driven by hand.
pub struct RawConn {
    stream: BufReader<TcpStream>,
}

impl RawConn {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let s = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_nodelay(true).ok();
        RawConn {
            stream: BufReader::new(s),
        }
    }

    /// Write bytes as they are (a request head, a piece of a body…).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.get_mut().write_all(bytes).await?;
        self.stream.get_mut().flush().await
    }

    /// Read until the server closes the connection (EOF, or an error such as a reset).
    pub async fn read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        self.stream.read_to_end(&mut all).await?;
        Ok(all)
    }

    /// Read a status line and headers (e.g. a `100 Continue`, or a final response's head).
    pub async fn read_head(&mut self) -> std::io::Result<RawResponse> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let _version = parts.next();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if self.stream.read_line(&mut h).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside the response head",
                ));
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Ok(RawResponse {
            status,
            reason,
            headers,
            body: Vec::new(),
        })
    }

    /// Read a whole response. `head_request`: the request was HEAD (no body follows).
    /// Skips `1xx` interim responses. The body is framed by `Transfer-Encoding: chunked` or
    /// `Content-Length`; without either it is read to EOF (send `Connection: close`).
    pub async fn read_response(&mut self, head_request: bool) -> std::io::Result<RawResponse> {
        let mut resp = self.read_head().await?;
        while (100..200).contains(&resp.status) {
            resp = self.read_head().await?;
        }
        if head_request || resp.status == 204 || resp.status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let mut size_line = String::new();
                self.stream.read_line(&mut size_line).await?;
                let size_hex = size_line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                    std::io::Error::other(format!("bad chunk size line {size_line:?}"))
                })?;
                if size == 0 {
                    // Trailers until the empty line.
                    loop {
                        let mut t = String::new();
                        if self.stream.read_line(&mut t).await? == 0 || t.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                chunk.truncate(size);
                resp.body.extend_from_slice(&chunk);
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad content-length {len:?}")))?;
            resp.body = vec![0; len];
            self.stream.read_exact(&mut resp.body).await?;
        } else {
            self.stream.read_to_end(&mut resp.body).await?;
        }
        Ok(resp)
    }
}

/// Send `request` (complete bytes: head and body) on a new connection and read the response.
/// HEAD requests are recognised from the first bytes.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(addr).await;
    conn.send(request)
        .await
        .unwrap_or_else(|e| panic!("sending to {addr}: {e}"));
    conn.read_response(request.starts_with(b"HEAD "))
        .await
        .unwrap_or_else(|e| panic!("reading the response from {addr}: {e}"))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// PUT (or any `method`) the file at `path` to `url`, streamed from disk with a
/// `Content-Length`, and return the response status and headers. `headers` are added as given.
pub async fn upload_file(
    method: http::Method,
    url: &str,
    path: &Path,
    headers: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap) {
    use futures_util::TryStreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let file = tokio::fs::File::open(path)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = file.metadata().await.expect("file metadata").len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map_ok(Frame::data);
    let body = StreamBody::new(stream).boxed();
    let client: hyper_util::client::legacy::Client<_, _> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_LENGTH, len)
        .header(http::header::CONTENT_TYPE, "application/octet-stream");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = client
        .request(req.body(body).expect("request"))
        .await
        .unwrap_or_else(|e| panic!("upload of {} to {url}: {e:?}", path.display()));
    let (parts, body) = resp.into_parts();
    let _ = body.collect().await;
    (parts.status, parts.headers)
}

/// GET `url` into the file `dest`, streaming, and return (status, `sha256:<hex>`, bytes).
/// The body is hashed on the way by a `sha256sum` child process (fast in debug builds).
pub async fn download_to_file(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
) -> (reqwest::StatusCode, String, u64) {
    let mut resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let mut file = tokio::fs::File::create(dest)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", dest.display()));
    let mut sum = tokio::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting sha256sum (coreutils)");
    let mut sum_in = sum.stdin.take().expect("sha256sum stdin");
    let mut n = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .unwrap_or_else(|e| panic!("reading GET {url}: {e}"))
    {
        n += chunk.len() as u64;
        let (a, b) = tokio::join!(file.write_all(&chunk), sum_in.write_all(&chunk));
        a.expect("writing the download");
        b.expect("feeding sha256sum");
    }
    file.flush().await.expect("flush");
    drop(sum_in);
    let out = sum.wait_with_output().await.expect("sha256sum output");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    assert_eq!(hex.len(), 64, "unexpected sha256sum output {text:?}");
    (status, format!("sha256:{hex}"), n)
}

/// The few `/v2` calls tests make by hand, against a registry or through wharf.
#[derive(Clone)]
pub struct RegistryClient {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    auth: Option<(String, String)>,
}

impl RegistryClient {
    /// A client for the registry (or wharf) at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: client(),
            auth: None,
        }
    }

    /// Send HTTP basic credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, pass: &str) -> Self {
        self.auth = Some((user.into(), pass.into()));
        self
    }

    /// A request to `path_or_url` (`/v2/...` or an absolute URL such as a `Location`).
    pub fn request(&self, method: reqwest::Method, path_or_url: &str) -> reqwest::RequestBuilder {
        let url = self.resolve(path_or_url);
        let rb = self.client.request(method, url);
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// An absolute URL for a path or a `Location` value.
    pub fn resolve(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/`; asserts 202 and returns the upload `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let resp = self
            .request(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .expect("POST blobs/uploads");
        let status = resp.status();
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(
            status,
            202,
            "POST /v2/{repo}/blobs/uploads/: {}",
            resp.text().await.unwrap_or_default()
        );
        loc.expect("upload Location")
    }

    /// `location` with `digest=` appended to its query.
    pub fn with_digest(location: &str, digest: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    /// Upload `data` as one blob (POST, then one monolithic PUT); returns its digest.
    pub async fn upload_blob(&self, repo: &str, data: impl Into<Bytes>) -> String {
        let data: Bytes = data.into();
        let digest = sha256_digest(&data);
        let loc = self.start_upload(repo).await;
        let resp = self
            .request(reqwest::Method::PUT, &Self::with_digest(&loc, &digest))
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .expect("PUT blob");
        let status = resp.status();
        assert_eq!(
            status,
            201,
            "PUT blob {digest} to {repo}: {}",
            resp.text().await.unwrap_or_default()
        );
        digest
    }

    /// Upload the file `path` (already hashed in `blob`) streamed from disk.
    pub async fn upload_blob_file(&self, repo: &str, path: &Path, blob: &Blob) {
        let loc = self.resolve(&self.start_upload(repo).await);
        let auth = self.auth.as_ref().map(|(u, p)| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let (status, _) = upload_file(
            http::Method::PUT,
            &Self::with_digest(&loc, &blob.digest),
            path,
            &headers,
        )
        .await;
        assert_eq!(status, 201, "streamed PUT of {} to {repo}", blob.digest);
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; asserts 201 and returns the
    /// `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: impl Into<Bytes>,
    ) -> String {
        let resp = self
            .request(
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
            )
            .header("content-type", media_type)
            .body(body.into())
            .send()
            .await
            .expect("PUT manifest");
        let status = resp.status();
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            status,
            201,
            "PUT manifest {repo}:{reference}: {}",
            resp.text().await.unwrap_or_default()
        );
        digest
    }

    /// Push `image` (all its blobs, platform manifests by digest, the top manifest by `tag`)
    /// with plain HTTP calls (monolithic uploads; blobs over [`super::oci::BIG`] streamed from
    /// disk): fast, and no blob-info cache involved. Returns the top digest.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &OciImage) -> String {
        for blob in image.layer_and_config_blobs() {
            let path = image.blob_path(&blob.digest);
            if blob.size > super::oci::BIG {
                self.upload_blob_file(repo, &path, &blob).await;
            } else {
                let data = tokio::fs::read(&path).await.expect("reading a layout blob");
                self.upload_blob(repo, data).await;
            }
        }
        for m in image.platform_manifests_if_index() {
            let data = tokio::fs::read(image.blob_path(&m.digest))
                .await
                .expect("reading a platform manifest");
            self.put_manifest(repo, &m.digest, super::oci::MANIFEST_V1, data)
                .await;
        }
        let top = tokio::fs::read(image.blob_path(&image.digest))
            .await
            .expect("reading the top manifest");
        let got = self.put_manifest(repo, tag, image.media_type, top).await;
        assert_eq!(got, image.digest, "registry computed another digest");
        got
    }
}
