//! Forward: send one request to an upstream and hand its response back, streaming both ways.
//!
//! Invariants:
//! - bodies are never buffered here: request and response bodies are passed frame by frame with
//!   hyper's backpressure (the caller may collect a manifest *before* calling, with a cap);
//! - method, path, query and end-to-end headers pass unchanged, repeated headers included;
//!   hop-by-hop headers (RFC 9110 §7.6.1, plus those named in `Connection`) are dropped both ways;
//! - the client's `Host` (validated by [`crate::server::normalize_host`]: one, well-formed)
//!   goes upstream as is, with `X-Forwarded-Host/Proto/For`, so a registry builds absolute
//!   `Location` headers that point back at wharf; a `Location` that still names the upstream
//!   itself is rewritten to the client-facing origin (or made relative): the upstream's own
//!   address never reaches the client;
//! - `Expect: 100-continue` is answered by wharf's own HTTP server (when the body is first read),
//!   so it is not forwarded;
//! - failures become OCI error JSON: unreachable (no TCP connection and TLS handshake within
//!   `upstream.connect_timeout`) → 502, a TLS or certificate problem → 502 naming it, no response
//!   headers within `upstream.response_timeout` after the request body was sent → 504;
//! - a request on an HTTP/1 client connection goes upstream on a connection of that client
//!   connection's own, driven in its task (`affinity`); other requests use a shared keep-alive
//!   pool;
//! - `https://` upstreams are verified against the system's trust store plus
//!   `upstream.ca_bundle`, and get `upstream.client_cert`/`client_key` when the server asks for a
//!   client certificate.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use crate::config::UpstreamConfig;

mod affinity;
mod headers;
mod tls;
pub use affinity::Affinity;
use affinity::Park;
use headers::{Forwarded, client_host};
pub use headers::{prepare_request_headers, prepare_response_headers, strip_hop_by_hop};
pub use tls::{TlsError, check_tls_files, client_tls};
use tls::{find_tls_error, tls_problem};

/// The one body type of requests and responses inside wharf.
pub type Body = axum::body::Body;

type Connector = TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Header carrying the request id, taken from the client or generated.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// hyper's read buffer limit for upstream connections (a response head may be this large).
const MAX_BUF: usize = 256 << 10;

/// Why a request could not be forwarded. The upstream's own error is kept as the source: log
/// one with [`crate::error_chain`] to see it.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{upstream} unreachable")]
    Unreachable {
        upstream: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{upstream} sent no response within {timeout:?} after the request")]
    Timeout {
        upstream: &'static str,
        timeout: Duration,
    },
    /// The exchange failed after connecting, or wharf could not make the request at all.
    #[error("{upstream} connection failed: {what}")]
    Failed {
        upstream: &'static str,
        /// What failed (`exchange`, `reading response`, `bad path`, …).
        what: &'static str,
        #[source]
        source: Option<BoxError>,
    },
    /// The TLS handshake or the upstream's certificate failed. `problem` is safe to show the
    /// client (no addresses); the source has the whole story, for the log.
    #[error("{upstream} TLS failed: {problem}")]
    Tls {
        upstream: &'static str,
        problem: String,
        #[source]
        source: BoxError,
    },
    /// The client for an upstream could not be built (only at start-up).
    #[error("{upstream}: {source}")]
    Setup {
        upstream: &'static str,
        #[source]
        source: Box<TlsError>,
    },
}

impl ForwardError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short, stable kind for logs, metrics and error details.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardError::Unreachable { .. } => "unreachable",
            ForwardError::Timeout { .. } => "timeout",
            ForwardError::Failed { .. } => "failed",
            ForwardError::Tls { .. } => "tls",
            ForwardError::Setup { .. } => "setup",
        }
    }

    /// The OCI error response for a registry path (internal addresses are not included).
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let (upstream, message) = match self {
            ForwardError::Unreachable { upstream, .. } => {
                (*upstream, "upstream is unreachable".to_string())
            }
            ForwardError::Timeout { upstream, .. } => {
                (*upstream, "upstream did not answer in time".to_string())
            }
            ForwardError::Failed { upstream, .. } | ForwardError::Setup { upstream, .. } => {
                (*upstream, "upstream connection failed".to_string())
            }
            ForwardError::Tls {
                upstream, problem, ..
            } => (*upstream, format!("upstream TLS failed: {problem}")),
        };
        oci_error(
            self.status(),
            "UNAVAILABLE",
            &format!("{upstream} {message}"),
            serde_json::json!({"upstream": upstream, "reason": self.kind(), "request_id": request_id}),
        )
    }
}

/// An OCI distribution error response: `{"errors":[{code,message,detail}]}`.
pub fn oci_error(
    status: StatusCode,
    code: &str,
    message: &str,
    detail: serde_json::Value,
) -> Response<Body> {
    let body =
        serde_json::json!({"errors": [{"code": code, "message": message, "detail": detail}]});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// A connect that did not finish (TCP connection and TLS handshake) within its time.
#[derive(Debug, thiserror::Error)]
#[error("no connection within {0:?} (TCP connect and TLS handshake)")]
struct ConnectTimedOut(Duration);

/// Bounds the whole connect, TLS handshake included (hyper's own timeout covers TCP only), so
/// a server that accepts and never answers the handshake is a 502 after `connect_timeout`.
#[derive(Clone)]
struct TimeoutConnector<C> {
    inner: C,
    timeout: Duration,
}

impl<C> tower::Service<Uri> for TimeoutConnector<C>
where
    C: tower::Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(res) => res.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut(timeout)) as BoxError),
            }
        })
    }
}

/// How the client reached wharf: needed for `X-Forwarded-*`; and, for an HTTP/1 connection,
/// its own upstream connections.
#[derive(Debug, Clone)]
pub struct ClientConn {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The client's IP as `X-Forwarded-For` names it, formatted once per connection.
    ip: HeaderValue,
    affinity: Option<Arc<Affinity>>,
}

impl ClientConn {
    /// The client's IP as text, formatted once per connection.
    pub fn ip_text(&self) -> &HeaderValue {
        &self.ip
    }

    pub fn new(addr: SocketAddr, tls: bool) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            addr,
            tls,
            ip,
            affinity: None,
        }
    }

    /// The client's address: the TCP peer, or with `trust_forwarded_headers` the last address
    /// of `X-Forwarded-For` — all its lines taken as one list (RFC 9110, 5.3) — which is the
    /// one the trusted load balancer in front of wharf appended; the entries before it are the
    /// client's own word. An address that does not parse falls back to the peer.
    pub fn client_ip(&self, headers: &HeaderMap, trust_forwarded: bool) -> std::net::IpAddr {
        if trust_forwarded
            && let Some(ip) = headers
                .get_all(&headers::X_FORWARDED_FOR)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
        self.addr.ip()
    }

    /// This connection's HTTP/1 requests go upstream on connections of its own, driven by
    /// `affinity.drive()` (which the caller runs beside the connection).
    pub fn with_affinity(mut self, affinity: Arc<Affinity>) -> Self {
        self.affinity = Some(affinity);
        self
    }
}

/// One upstream service (the registry, or ChartMuseum) and a pooled keep-alive client for it.
#[derive(Clone)]
pub struct Upstream {
    name: &'static str,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    client: Client<Connector, Body>,
    /// For connections of a client connection's own ([`Affinity`]).
    connector: Connector,
    /// Idle connections left by client connections that ended.
    park: Arc<Park>,
    /// `scheme://authority/`: what the connector is given.
    origin: Uri,
    idle_timeout: Duration,
    response_timeout: Duration,
    trust_forwarded: bool,
}

impl Upstream {
    /// Build the client for `url` (already validated by the config).
    pub fn new(
        name: &'static str,
        url: &str,
        cfg: &UpstreamConfig,
        trust_forwarded: bool,
    ) -> Result<Self, ForwardError> {
        let bad = |what: &'static str, source: Option<BoxError>| ForwardError::Failed {
            upstream: name,
            what,
            source,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad("bad URL", Some(e.into())))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("URL has no host", None))?;
        let base_path = uri.path().trim_end_matches('/').to_string();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = client_tls(cfg).map_err(|source| ForwardError::Setup {
            upstream: name,
            source: Box::new(source),
        })?;
        let connector = TimeoutConnector {
            inner: hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
            timeout: cfg.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            // without a timer the pool expires idle connections only when it is next used
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .http1_max_buf_size(MAX_BUF)
            .build(connector.clone());
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| bad("bad URL", Some(e.into())))?;
        Ok(Self {
            name,
            scheme,
            authority,
            base_path,
            client,
            connector,
            park: Arc::new(Park::new(cfg.pool_max_idle)),
            origin,
            idle_timeout: cfg.pool_idle_timeout,
            response_timeout: cfg.response_timeout,
            trust_forwarded,
        })
    }

    /// `registry` or `chartmuseum`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Send `req` upstream at `path_and_query` (relative to the upstream's base path) and return
    /// the response with hop-by-hop headers removed and `Location` pointing back at wharf.
    pub async fn forward(
        &self,
        req: Request<Body>,
        path_and_query: &str,
        conn: &ClientConn,
        request_id: &HeaderValue,
    ) -> Result<Response<Incoming>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let client_host = client_host(&parts.uri, &parts.headers);
        prepare_request_headers(
            &mut parts.headers,
            client_host.as_ref(),
            conn,
            request_id,
            self.trust_forwarded,
        );
        // HTTP/2 requests of one connection run concurrently, each in a task of its own
        let affinity = conn
            .affinity
            .as_deref()
            .filter(|_| parts.version <= Version::HTTP_11);
        let pq = self.path_for(path_and_query)?;
        parts.uri = match affinity {
            // origin-form on a connection of its own
            Some(_) => Uri::from(pq),
            None => self.absolute(pq)?,
        };
        parts.version = Version::HTTP_11;
        let forwarded = Forwarded::of(&parts.headers);
        let (tx, body_sent) = oneshot::channel();
        let sent_already = body.is_end_stream();
        let body = Body::new(SignalEnd {
            inner: body,
            tx: Some(tx),
        });
        let mut resp = self
            .send(
                Request::from_parts(parts, body),
                body_sent,
                sent_already,
                affinity,
            )
            .await?;
        prepare_response_headers(resp.headers_mut(), request_id);
        // (most answers have no Location: no origin is built for them)
        if resp.headers().contains_key(header::LOCATION) {
            let origin = forwarded.origin(client_host.as_ref(), conn);
            self.rewrite_location(resp.headers_mut(), origin.as_deref());
        }
        Ok(resp)
    }

    async fn send(
        &self,
        req: Request<Body>,
        body_sent: oneshot::Receiver<()>,
        sent_already: bool,
        affinity: Option<&Affinity>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let timeout = self.response_timeout;
        let deadline = async move {
            if !sent_already {
                // Err: the body was dropped (the upstream answered early); the response is near.
                let _ = body_sent.await;
            }
            tokio::time::sleep(timeout).await;
        };
        let sending = async {
            match affinity {
                Some(a) => self.send_affine(a, req).await,
                None => self.client.request(req).await.map_err(|e| {
                    let connect = e.is_connect();
                    self.classify_error(e.into(), connect)
                }),
            }
        };
        tokio::select! {
            res = sending => res,
            _ = deadline => Err(ForwardError::Timeout { upstream: self.name, timeout }),
        }
    }

    /// Send `req` (origin-form) on the client connection's own connection to this upstream,
    /// made if it has none that is ready. A request the reused connection closed before sending
    /// is sent once more on a new one.
    async fn send_affine(
        &self,
        affinity: &Affinity,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let (mut id, mut sender, reused) = match affinity.take(self.name, &self.park) {
            Some(t) => (t.id, t.sender, t.reused),
            None => {
                let (id, sender) = self.connect_affine(affinity).await?;
                (id, sender, false)
            }
        };
        let res = match sender.try_send_request(req).await {
            Err(mut e) if reused && e.message().is_some() => {
                let Some(req) = e.take_message() else {
                    return Err(self.classify_error(e.into_error().into(), false));
                };
                (id, sender) = self.connect_affine(affinity).await?;
                sender.try_send_request(req).await
            }
            res => res,
        };
        match res {
            Ok(resp) => {
                affinity.put(id, sender, self.idle_timeout);
                Ok(resp)
            }
            Err(e) => Err(self.classify_error(e.into_error().into(), false)),
        }
    }

    /// A new connection to this upstream, driven by `affinity`: its id there, and its sender.
    async fn connect_affine(
        &self,
        affinity: &Affinity,
    ) -> Result<(u64, SendRequest<Body>), ForwardError> {
        use tower::ServiceExt;
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(|e| self.classify_error(e, true))?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_BUF)
            .handshake(io)
            .await
            .map_err(|e| self.classify_error(e.into(), false))?;
        let name = self.name;
        let id = affinity.attach(
            name,
            &self.park,
            Box::pin(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(upstream = name, error = %e, "upstream connection ended with an error");
                }
            }),
        );
        Ok((id, sender))
    }

    /// A failure to reach the upstream (`connect`: no connection was made) or of the exchange.
    fn classify_error(&self, e: BoxError, connect: bool) -> ForwardError {
        if let Some(tls) = find_tls_error(e.as_ref()) {
            ForwardError::Tls {
                upstream: self.name,
                problem: tls_problem(tls),
                source: e,
            }
        } else if connect {
            ForwardError::Unreachable {
                upstream: self.name,
                source: e,
            }
        } else {
            ForwardError::Failed {
                upstream: self.name,
                what: "exchange",
                source: Some(e),
            }
        }
    }

    /// A side request of wharf's own (e.g. reading a manifest or config blob), fully collected
    /// up to `limit` bytes. Carries the client's credentials when given.
    pub async fn fetch(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: HeaderMap,
        limit: usize,
    ) -> Result<(http::response::Parts, Bytes), ForwardError> {
        let mut req = Request::new(Body::empty());
        *req.method_mut() = method;
        *req.uri_mut() = self.absolute(self.path_for(path_and_query)?)?;
        *req.headers_mut() = headers;
        self.exchange(req, limit).await
    }

    /// Where a redirect of the upstream's points (its `Location`: absolute `http(s)://…`, or
    /// a path on the upstream): the object storage behind a registry that redirects blob
    /// requests to presigned URLs. Sent without credentials — the URL carries its own — and
    /// without following any further redirect.
    pub async fn fetch_location(
        &self,
        method: http::Method,
        location: &str,
        limit: usize,
    ) -> Result<(http::response::Parts, Bytes), ForwardError> {
        let bad = |source: BoxError| ForwardError::Failed {
            upstream: self.name,
            what: "following a redirect",
            source: Some(source),
        };
        let uri: Uri = location
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(e.into()))?;
        let uri = match uri.scheme_str() {
            Some("http" | "https") if uri.authority().is_some() => uri,
            Some(_) => return Err(bad("a redirect to a scheme other than http(s)".into())),
            None => self.absolute(
                uri.path_and_query()
                    .cloned()
                    .ok_or_else(|| bad("a redirect without a path".into()))?,
            )?,
        };
        let mut req = Request::new(Body::empty());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        self.exchange(req, limit).await
    }

    /// Send wharf's own request `req` and read its answer (at most `limit` body bytes, within
    /// `upstream.response_timeout`).
    async fn exchange(
        &self,
        req: Request<Body>,
        limit: usize,
    ) -> Result<(http::response::Parts, Bytes), ForwardError> {
        let (_tx, rx) = oneshot::channel();
        let resp = self.send(req, rx, true, None).await?;
        let (parts, body) = resp.into_parts();
        let collected = tokio::time::timeout(
            self.response_timeout,
            http_body_util::Limited::new(body, limit).collect(),
        )
        .await
        .map_err(|_| ForwardError::Timeout {
            upstream: self.name,
            timeout: self.response_timeout,
        })?
        .map_err(|e| ForwardError::Failed {
            upstream: self.name,
            what: "reading response",
            source: Some(e),
        })?;
        Ok((parts, collected.to_bytes()))
    }

    /// Is the upstream answering HTTP at all? (Any status counts: 401 means it is up.)
    pub async fn probe(&self, probe_path: &str) -> Result<StatusCode, ForwardError> {
        let (parts, _) = tokio::time::timeout(
            Duration::from_secs(3),
            self.fetch(http::Method::GET, probe_path, HeaderMap::new(), 64 * 1024),
        )
        .await
        .map_err(|_| ForwardError::Timeout {
            upstream: self.name,
            timeout: Duration::from_secs(3),
        })??;
        Ok(parts.status)
    }

    /// `path_and_query` under the upstream's base path.
    fn path_for(&self, path_and_query: &str) -> Result<PathAndQuery, ForwardError> {
        let pq = if self.base_path.is_empty() {
            PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(path_and_query.as_bytes()))
        } else {
            format!("{}{}", self.base_path, path_and_query).parse()
        };
        pq.map_err(|e| ForwardError::Failed {
            upstream: self.name,
            what: "bad path",
            source: Some(e.into()),
        })
    }

    /// The absolute URI of `pq` at this upstream (what the pooled client is given).
    fn absolute(&self, pq: PathAndQuery) -> Result<Uri, ForwardError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ForwardError::Failed {
                upstream: self.name,
                what: "bad URI",
                source: Some(e.into()),
            })
    }

    /// Rewrite an absolute `Location` that names the upstream itself (a registry configured with
    /// its own `http.host`, or a request that reached it without `Host`) to the origin the
    /// client used; without one, to a relative reference: the upstream's own address never
    /// reaches the client.
    fn rewrite_location(&self, headers: &mut HeaderMap, origin: Option<&str>) {
        let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let Ok(uri) = loc.parse::<Uri>() else { return };
        if uri.authority() != Some(&self.authority) {
            return;
        }
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let path = path.strip_prefix(&self.base_path).unwrap_or(path);
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        match HeaderValue::from_str(&format!("{}{path}", origin.unwrap_or(""))) {
            Ok(v) => {
                headers.insert(header::LOCATION, v);
            }
            Err(_) => {
                headers.remove(header::LOCATION);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that says when it has been sent completely (for the response timeout).
    struct SignalEnd<B> {
        #[pin]
        inner: B,
        tx: Option<oneshot::Sender<()>>,
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for SignalEnd<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        let ended = match &res {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended && let Some(tx) = this.tx.take() {
            let _ = tx.send(());
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn location_naming_the_upstream_is_rewritten() {
        let cfg: UpstreamConfig =
            serde_yaml_ng::from_str("registry: http://127.0.0.1:5000").unwrap();
        let up = Upstream::new("registry", "http://127.0.0.1:5000", &cfg, false).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:5000/v2/p/r/blobs/uploads/u?_state=x"),
        );
        up.rewrite_location(&mut h, Some("https://wharf:8443"));
        assert_eq!(
            h["location"],
            "https://wharf:8443/v2/p/r/blobs/uploads/u?_state=x"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("/v2/p/r/blobs/sha256:x"),
        );
        up.rewrite_location(&mut h, Some("https://wharf:8443"));
        assert_eq!(h["location"], "/v2/p/r/blobs/sha256:x");
        // no client origin: relative, never the upstream's address
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:5000/v2/p/r/blobs/uploads/u"),
        );
        up.rewrite_location(&mut h, None);
        assert_eq!(h["location"], "/v2/p/r/blobs/uploads/u");
    }

    #[test]
    fn oci_errors_have_the_distribution_shape() {
        let e = ForwardError::Unreachable {
            upstream: "registry",
            source: std::io::Error::other("connection refused").into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let t = ForwardError::Timeout {
            upstream: "registry",
            timeout: Duration::from_secs(1),
        };
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        let resp = e.to_response("rid");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn the_upstream_error_is_kept_as_the_cause_and_not_sent_to_the_client() {
        let inner = std::io::Error::other("connect to 10.1.2.3:5000: connection refused");
        let e = ForwardError::Unreachable {
            upstream: "registry",
            source: inner.into(),
        };
        assert_eq!(e.to_string(), "registry unreachable");
        let cause = std::error::Error::source(&e).expect("the cause is kept");
        assert!(cause.to_string().contains("10.1.2.3"));
        assert_eq!(
            crate::error_chain(&e),
            "registry unreachable: connect to 10.1.2.3:5000: connection refused"
        );
        let body = e.to_response("rid").into_body().collect().await.unwrap();
        let body = String::from_utf8(body.to_bytes().to_vec()).unwrap();
        assert!(!body.contains("10.1.2.3"), "{body}");
        let f = ForwardError::Failed {
            upstream: "chartmuseum",
            what: "bad path",
            source: None,
        };
        assert_eq!(
            crate::error_chain(&f),
            "chartmuseum connection failed: bad path"
        );
    }
}
