//! Server: the listener (plain or TLS), the one top-level service, graceful shutdown.
//!
//! Every request gets a request id (the client's `X-Request-Id` when it is sane, else a new
//! UUIDv7), is classified once by [`crate::route::classify`], handed to the registry proxy, the
//! chart proxy, the health checks or the API, and produces one access-log line when its response
//! body has been sent (or abandoned): op, method, path, status, bytes in and out, duration.
//!
//! Shutdown: when the `shutdown` future resolves, the listener is closed, open connections are
//! told to finish their in-flight request, and [`serve`] returns once they have, or when
//! `grace` has passed.
//!
//! `host`: the request's `Host`, checked and settled once ([`normalize_host`]); the health
//! endpoints' check lives in [`crate::health`].

mod host;

pub use host::{HostError, normalize_host};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::IntoResponse as _;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::App;
use crate::forward::{Affinity, Body, ClientConn, X_REQUEST_ID};
use crate::observe::body::Observed;
use crate::route::{self, Route};

/// Errors setting up the listener.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    #[error("tls: {0}")]
    Protocols(#[source] rustls::Error),
    #[error("tls: certificate and key do not fit: {0}")]
    Mismatch(#[source] rustls::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Build a TLS acceptor from PEM files (HTTP/2 and HTTP/1.1 offered by ALPN).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, ServerError> {
    let certs = crate::pem::certs("tls.cert", cert)?;
    let key = crate::pem::private_key("tls.key", key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(crate::pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ServerError::Mismatch)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Most connections `configured` allows within the open-files limit: two descriptors per
/// client connection (its socket and an upstream connection), 64 kept for the store, webhook
/// deliveries and the listener.
pub fn connection_cap(configured: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match soft {
        Some(n) => {
            let fit = (usize::try_from(n).unwrap_or(usize::MAX).saturating_sub(64) / 2).max(1);
            if fit < configured {
                tracing::warn!(
                    configured,
                    using = fit,
                    open_files_limit = n,
                    "server.max_connections lowered to fit the open-files limit (ulimit -n)"
                );
            }
            configured.min(fit)
        }
        None => configured,
    }
}

/// Accept connections on `listener` until `shutdown` resolves; then drain for at most `grace`.
///
/// Every connection is watched from the moment it is accepted: one that has no request in
/// progress is closed when it has not delivered a complete request head within
/// `server.header_timeout` of being accepted, or later stays idle for `server.idle_timeout`
/// (silent sockets, an HTTP/2 preface alone, a head cut short). At most
/// `server.max_connections` are open at once; at the limit the listener waits for one to
/// close.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServerError> {
    let limits = app.config.server.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(256 << 10)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keep_alive))
        .keep_alive_timeout(limits.http2_keep_alive);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(connection_cap(
        limits.max_connections,
    )));
    let mut accept_warnings = RateLimitedWarning::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                app.metrics.connection_limit_reached.inc();
                tracing::debug!(
                    "server.max_connections reached: waiting for a connection to close"
                );
                tokio::select! {
                    s = slots.clone().acquire_owned() => match s {
                        Ok(s) => s,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and say so once in a
                    // while rather than on every attempt
                    app.metrics.accept_errors.inc();
                    accept_warnings.warn(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let limits = limits.clone();
        app.metrics.connections_open.inc();
        tokio::spawn(async move {
            let _slot = slot;
            let open = OpenConnection(app.metrics.clone());
            // this connection's own upstream connections, driven in this task beside it
            let affinity = Arc::new(Affinity::default());
            let conn = ClientConn::new(addr, tls.is_some()).with_affinity(affinity.clone());
            let activity = Arc::new(ConnActivity::new());
            let watched = activity.clone();
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                let busy = watched.begin();
                let conn = conn.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(app, req, conn, Some(busy)).await)
                }
            });
            let upstreams = affinity.drive();
            let idle = activity.expired(limits.header_timeout, limits.idle_timeout);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => {
                            let served = watcher
                                .watch(builder.serve_connection(TokioIo::new(s), svc).into_owned());
                            tokio::select! {
                                r = served => r,
                                () = idle => Ok(()),
                                () = upstreams => Ok(()),
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %addr, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    let served = watcher.watch(
                        builder
                            .serve_connection(TokioIo::new(stream), svc)
                            .into_owned(),
                    );
                    tokio::select! {
                        r = served => r,
                        () = idle => Ok(()),
                        () = upstreams => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(client = %addr, error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    tracing::info!(grace = ?grace, "shutting down: no new connections, finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace expired with connections still open"),
    }
    Ok(())
}

/// Counts a connection in `wharf_connections_open` while it lives.
struct OpenConnection(Arc<crate::metrics::Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// A warning logged at most once per `every`, saying how many were suppressed since.
struct RateLimitedWarning {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// What one client connection is doing, for its idle watchdog.
struct ConnActivity {
    state: std::sync::Mutex<Activity>,
}

struct Activity {
    /// Requests whose head arrived and whose response body is not finished.
    in_flight: usize,
    /// When the connection last became idle (accepted, or its last response finished).
    idle_since: tokio::time::Instant,
    /// A request has been seen.
    served: bool,
}

/// A request in progress on a connection; the connection is idle again when every guard is
/// dropped (the response body finished or was abandoned).
pub struct RequestGuard(Arc<ConnActivity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = tokio::time::Instant::now();
            }
        }
    }
}

impl ConnActivity {
    fn new() -> Self {
        ConnActivity {
            state: std::sync::Mutex::new(Activity {
                in_flight: 0,
                idle_since: tokio::time::Instant::now(),
                served: false,
            }),
        }
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        if let Ok(mut s) = self.state.lock() {
            s.in_flight += 1;
            s.served = true;
        }
        RequestGuard(self.clone())
    }

    /// Resolves when the connection has been idle too long: `first` after being accepted
    /// without a request, `idle` after its last response.
    ///
    /// One timer, re-armed only when it fires (to the deadline the connection's state then
    /// gives), so requests themselves never touch it.
    async fn expired(&self, first: Duration, idle: Duration) {
        let mut deadline = tokio::time::Instant::now() + first;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = tokio::time::Instant::now();
            deadline = match self.state.lock() {
                Ok(s) if s.in_flight == 0 => s.idle_since + if s.served { idle } else { first },
                // busy: it cannot expire before it has been idle that long
                Ok(_) => now + idle,
                Err(_) => return,
            };
            if deadline <= now {
                return;
            }
        }
    }
}

/// The request's id: the client's `X-Request-Id` when usable, else one wharf makes (a UUID v7,
/// also returned on its own).
fn request_id(req: &Request<Incoming>) -> (HeaderValue, Option<uuid::Uuid>) {
    let sent = req.headers().get(&X_REQUEST_ID).filter(|v| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
    });
    if let Some(v) = sent {
        return (v.clone(), None);
    }
    let made = uuid::Uuid::now_v7();
    let mut buf = uuid::Uuid::encode_buffer();
    match HeaderValue::from_str(made.hyphenated().encode_lower(&mut buf)) {
        Ok(v) => (v, Some(made)),
        Err(_) => (HeaderValue::from_static("invalid"), None),
    }
}

/// The top-level service: one request in, one response out. Never fails, never panics on input.
/// `busy` (the connection's request guard) is released when the response body is finished.
pub async fn handle(
    app: Arc<App>,
    mut req: Request<Incoming>,
    conn: ClientConn,
    busy: Option<RequestGuard>,
) -> Response<Body> {
    let started = Instant::now();
    let (rid, made_id) = request_id(&req);
    let classified = route::classify_request(req.method(), req.uri().path(), req.uri().query());
    let route = classified.route;
    let host = {
        let (uri, version) = (req.uri().clone(), req.version());
        normalize_host(req.headers_mut(), &uri, version, || {
            app.external_host.clone()
        })
    };
    let op = route.name();
    // what the access-log line needs, gathered only when that line is written at all
    let log = tracing::enabled!(target: crate::accesslog::TARGET, tracing::Level::INFO)
        .then(|| AccessLog::new(&req, &rid, conn.addr));
    let bytes_in = Arc::new(AtomicU64::new(0));
    let req = if req.body().is_end_stream() {
        req.map(Body::new)
    } else {
        let counter = bytes_in.clone();
        req.map(move |b| {
            Body::new(Observed::new(b, move |o| {
                counter.store(o.bytes, Ordering::Relaxed)
            }))
        })
    };
    let ctx = RequestCtx {
        request_id: rid.clone(),
        made_id,
        conn,
        started,
    };
    // the upstream must act on exactly the path that was classified
    let req = match classified.canonical_path {
        Some(path) => with_path(req, &path),
        None => Ok(req),
    };

    let mut resp = match (route, req, host) {
        (Route::Api, _, Err(e)) => crate::api::ApiError::bad_request(e.to_string()).into_response(),
        (_, _, Err(e)) => crate::forward::oci_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            &e.to_string(),
            serde_json::json!({"request_id": ctx.request_id_str()}),
        ),
        (_, Err(()), Ok(())) => crate::forward::oci_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "the request path cannot be forwarded",
            serde_json::json!({"request_id": ctx.request_id_str()}),
        ),
        (route, Ok(req), Ok(())) => route_request(&app, route, req, &ctx).await,
    };
    resp.headers_mut()
        .entry(X_REQUEST_ID.clone())
        .or_insert(rid);
    let status = resp.status().as_u16();
    // the request's own handle on the state ends with its body: metrics and the access log
    resp.map(move |b| {
        Body::new(Observed::new(b, move |o| {
            drop(busy);
            let elapsed = started.elapsed().as_secs_f64();
            app.metrics.request(op, status, elapsed);
            if let Some(l) = log {
                let bytes_in = bytes_in.load(Ordering::Relaxed);
                l.write(&app.access_log, op, status, bytes_in, &o, elapsed);
            }
        }))
    })
}

/// Hand a classified request to its handler.
///
/// Each handler's future is boxed: a future holds every branch's state inline, so without the
/// boxes each request's future had the size of the largest flow (a push, a chart upload, the
/// API) and was copied whole several times per request (`memcpy` was a quarter of the
/// instructions of a proxied manifest GET).
async fn route_request(
    app: &Arc<App>,
    route: Route,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    match route {
        Route::Registry(op) => Box::pin(crate::observe::registry(app, op, req, ctx)).await,
        Route::Chart(op) => Box::pin(crate::observe::chart(app, op, req, ctx)).await,
        Route::Health => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        Route::Ready => Box::pin(ready(app)).await,
        Route::Api => {
            match Box::pin(app.api.clone().oneshot(with_conn(req, ctx.conn.clone()))).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    }
}

/// `req` carrying how the client is connected (for the API's failed-login throttle).
fn with_conn<B>(mut req: Request<B>, conn: ClientConn) -> Request<B> {
    req.extensions_mut().insert(conn);
    req
}

/// `req` with its path replaced by `path` (query kept).
fn with_path<B>(req: Request<B>, path: &str) -> Result<Request<B>, ()> {
    let (mut parts, body) = req.into_parts();
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(http::uri::PathAndQuery::try_from(pq).map_err(|_| ())?);
    parts.uri = http::Uri::from_parts(uri).map_err(|_| ())?;
    Ok(Request::from_parts(parts, body))
}

/// The fields of one access-log line known when the request arrives.
struct AccessLog {
    request_id: String,
    method: http::Method,
    path: String,
    client: SocketAddr,
}

impl AccessLog {
    fn new<B>(req: &Request<B>, rid: &HeaderValue, client: SocketAddr) -> Self {
        AccessLog {
            request_id: rid.to_str().unwrap_or("").to_string(),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            client,
        }
    }

    fn write(
        &self,
        sink: &crate::accesslog::Sink,
        op: &'static str,
        status: u16,
        bytes_in: u64,
        o: &crate::observe::body::BodyOutcome,
        seconds: f64,
    ) {
        crate::accesslog::Record {
            request_id: &self.request_id,
            op,
            method: &self.method,
            path: &self.path,
            status,
            bytes_in,
            bytes_out: o.bytes,
            duration_ms: seconds * 1000.0,
            client: self.client,
            complete: o.complete,
        }
        .write(sink);
    }
}

/// Per-request facts every handler needs.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: HeaderValue,
    /// The request id when wharf made it (the client sent none): unique to this request, so a
    /// pull's event takes it as its own id.
    pub made_id: Option<uuid::Uuid>,
    pub conn: ClientConn,
    pub started: Instant,
}

impl RequestCtx {
    pub fn request_id_str(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }
    pub fn client_addr(&self) -> SocketAddr {
        self.conn.addr
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn ready(app: &App) -> Response<Body> {
    let report = crate::health::check(&app.registry, app.chartmuseum.as_ref(), &app.store).await;
    let mut checks = serde_json::Map::new();
    for u in &report.upstreams {
        let state = match u.answer {
            Ok(status) => serde_json::json!({"reachable": true, "status": status.as_u16()}),
            Err(kind) => serde_json::json!({"reachable": false, "reason": kind}),
        };
        checks.insert(u.name.to_string(), state);
    }
    // the store: a replica that cannot record events must not take traffic from a balancer
    let backend = report.backend.name();
    let store = match report.store {
        Ok(()) => serde_json::json!({"reachable": true, "backend": backend}),
        Err(p) => serde_json::json!({"reachable": false, "backend": backend, "reason": p.name()}),
    };
    let ok = report.ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        serde_json::json!({"status": if ok {"ready"} else {"unavailable"}, "upstreams": checks, "store": store}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each way the TLS files can be wrong is refused at start with the key and the file named,
    /// and the error keeps its cause.
    #[test]
    fn bad_tls_files_are_refused_naming_the_key_and_file() {
        use std::error::Error as _;
        let f = crate::pem::TestFiles::new();
        let (cert, key, other_key, empty, missing) =
            (&f.cert, &f.key, &f.other_key, &f.empty, &f.missing);
        assert!(tls_acceptor(cert, key).is_ok());
        let err = |c: &std::path::Path, k: &std::path::Path| match tls_acceptor(c, k) {
            Ok(_) => panic!("accepted {c:?} and {k:?}"),
            Err(e) => e,
        };
        let e = err(missing, key);
        assert!(
            e.to_string()
                .starts_with(&format!("tls.cert: {}: ", missing.display())),
            "{e}"
        );
        assert!(e.source().is_some(), "{e:?}");
        let e = err(empty, key);
        assert_eq!(
            e.to_string(),
            format!(
                "tls.cert: {} holds no certificate in PEM form",
                empty.display()
            )
        );
        let e = err(cert, empty);
        assert_eq!(
            e.to_string(),
            format!(
                "tls.key: {} holds no private key in PEM form",
                empty.display()
            )
        );
        let e = err(cert, other_key);
        assert!(
            e.to_string()
                .starts_with("tls: certificate and key do not fit: "),
            "{e}"
        );
        assert!(e.source().is_some(), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_expires_only_when_idle_for_its_timeout() {
        use std::time::Duration;
        let (first, idle) = (Duration::from_secs(2), Duration::from_secs(5));
        let activity = Arc::new(ConnActivity::new());
        let expired = activity.expired(first, idle);
        tokio::pin!(expired);
        let until = |d: u64| tokio::time::sleep(Duration::from_millis(d));
        // a request within `first`, longer than `idle` itself: never expired while busy
        tokio::select! { () = &mut expired => panic!("expired before a request"), () = until(1_000) => {} }
        let busy = activity.begin();
        tokio::select! { () = &mut expired => panic!("expired while busy"), () = until(12_000) => {} }
        drop(busy);
        let idle_from = tokio::time::Instant::now();
        // then `idle` after its response, not earlier
        tokio::select! { () = &mut expired => panic!("expired early"), () = until(4_900) => {} }
        expired.await;
        assert_eq!(idle_from.elapsed(), idle);
    }
}
