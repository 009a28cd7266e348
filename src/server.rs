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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::App;
use crate::forward::{Body, ClientConn, X_REQUEST_ID};
use crate::observe::body::Observed;
use crate::route::{self, Route};

/// Errors setting up the listener.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Build a TLS acceptor from PEM files (HTTP/2 and HTTP/1.1 offered by ALPN).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServerError::Tls(format!("tls.cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(format!("tls.cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "tls.cert {}: no certificate found",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServerError::Tls(format!("tls.key {}: {e}", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServerError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ServerError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accept connections on `listener` until `shutdown` resolves; then drain for at most `grace`.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServerError> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(256 << 10)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
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
        tokio::spawn(async move {
            let conn = ClientConn {
                addr,
                tls: tls.is_some(),
            };
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(app, req, conn).await) }
            });
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(s), svc).into_owned())
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    watcher
                        .watch(
                            builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .into_owned(),
                        )
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(client = %addr, error = %e, "connection ended with an error");
            }
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

fn request_id(req: &Request<Incoming>) -> HeaderValue {
    req.headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .unwrap_or(HeaderValue::from_static("invalid"))
        })
}

/// The top-level service: one request in, one response out. Never fails, never panics on input.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, conn: ClientConn) -> Response<Body> {
    let started = Instant::now();
    let rid = request_id(&req);
    let route = route::classify(req.method(), req.uri().path(), req.uri().query());
    let op = route.name();
    // what the access-log line needs, gathered only when that line is written at all
    let log = tracing::enabled!(target: "wharf::access", tracing::Level::INFO)
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
        conn,
        started,
    };

    let mut resp = match route {
        Route::Registry(op) => crate::observe::registry(&app, op, req, &ctx).await,
        Route::Chart(op) => crate::observe::chart(&app, op, req, &ctx).await,
        Route::Health => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        Route::Ready => ready(&app).await,
        Route::Api => match app.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
    };
    resp.headers_mut()
        .entry(X_REQUEST_ID.clone())
        .or_insert(rid);
    let status = resp.status().as_u16();
    let metrics = app.metrics.clone();
    resp.map(move |b| {
        Body::new(Observed::new(b, move |o| {
            let elapsed = started.elapsed().as_secs_f64();
            metrics.request(op, status, elapsed);
            if let Some(l) = log {
                l.write(op, status, bytes_in.load(Ordering::Relaxed), &o, elapsed);
            }
        }))
    })
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
        op: &'static str,
        status: u16,
        bytes_in: u64,
        o: &crate::observe::body::BodyOutcome,
        seconds: f64,
    ) {
        tracing::info!(
            target: "wharf::access",
            request_id = %self.request_id,
            op,
            method = %self.method,
            path = %self.path,
            status,
            bytes_in,
            bytes_out = o.bytes,
            duration_ms = seconds * 1000.0,
            client = %self.client,
            complete = o.complete,
        );
    }
}

/// Per-request facts every handler needs.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: HeaderValue,
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
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    let ups = std::iter::once((&app.registry, "/v2/"))
        .chain(app.chartmuseum.as_ref().map(|c| (c, "/health")));
    for (up, probe) in ups {
        let state = match up.probe(probe).await {
            Ok(status) => serde_json::json!({"reachable": true, "status": status.as_u16()}),
            Err(e) => {
                ok = false;
                serde_json::json!({"reachable": false, "reason": e.kind()})
            }
        };
        checks.insert(up.name().to_string(), state);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        serde_json::json!({"status": if ok {"ready"} else {"unavailable"}, "upstreams": checks}),
    )
}
