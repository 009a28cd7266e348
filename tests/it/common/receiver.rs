//! A real HTTP server that records requests: a webhook endpoint, or a recording upstream.
//!
//! [`Receiver::start`] serves HTTP/1.1 (and h2c) on `127.0.0.1:<free port>` in-process. Every
//! request is recorded in full ([`Recorded`]: method, path and query, headers with repeats and
//! order kept, body, arrival time, peer) *before* it is answered, so a test can see a request
//! whose answer is still being delayed. Answers come from a queue of [`Reply`]s programmed with
//! [`Receiver::push`]; when the queue is empty the default reply is used (200, empty body,
//! changeable with [`Receiver::set_default`]).
//!
//! ```ignore
//! let rx = Receiver::start().await;
//! rx.push(Reply::status(503).header("Retry-After", "1"));
//! rx.push(Reply::delay(Duration::from_secs(2), Reply::status(200)));
//! rx.push(Reply::close());
//! // … make wharf send to rx.url() …
//! let got = rx.wait_for(3, Duration::from_secs(10)).await;
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    /// Path and query, as sent.
    pub path: String,
    pub version: Version,
    /// All headers, repeated ones in order.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request head arrived.
    pub at: Instant,
    /// Wall-clock time of arrival.
    pub received: SystemTime,
    /// The client's address.
    pub peer: SocketAddr,
}

impl Recorded {
    /// The first value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.text()))
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status, headers and body.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// Wait, then answer as the inner reply says.
    Delay(Duration, Box<Reply>),
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// Answer `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Answer `status` with `Retry-After: <value>`.
    pub fn retry_after(status: u16, value: &str) -> Reply {
        Reply::status(status).header("Retry-After", value)
    }

    /// Sleep `d`, then answer `then`.
    pub fn delay(d: Duration, then: Reply) -> Reply {
        Reply::Delay(d, Box::new(then))
    }

    /// Close the connection without answering.
    pub fn close() -> Reply {
        Reply::Close
    }

    /// Add a response header (to the final answer of a delayed reply; ignored for `Close`).
    pub fn header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Status {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_string(), value.to_string()));
                Reply::Status {
                    status,
                    headers,
                    body,
                }
            }
            Reply::Delay(d, inner) => Reply::Delay(d, Box::new(inner.header(name, value))),
            Reply::Close => Reply::Close,
        }
    }

    /// Set the response body (to the final answer of a delayed reply; ignored for `Close`).
    pub fn body(self, new_body: impl Into<Bytes>) -> Reply {
        match self {
            Reply::Status {
                status, headers, ..
            } => Reply::Status {
                status,
                headers,
                body: new_body.into(),
            },
            Reply::Delay(d, inner) => Reply::Delay(d, Box::new(inner.body(new_body))),
            Reply::Close => Reply::Close,
        }
    }
}

struct State {
    requests: Vec<Recorded>,
    queue: VecDeque<Reply>,
    default: Reply,
}

/// The recording HTTP server. Stops (and drops its connections) on drop.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    count: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Start on `127.0.0.1:<free port>` on the current runtime.
    pub async fn start() -> Receiver {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Start on `addr` (a fixed port, e.g. one a webhook target already points at while
    /// nothing listened there) on the current runtime.
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        // a free port never handed out before (see `claim_port`); a fixed one as asked
        let mut passed = Vec::new();
        let listener = loop {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("binding the receiver to {addr}: {e}"));
            let port = l.local_addr().expect("receiver addr").port();
            if addr.port() != 0 || super::claim_port(port) {
                break l;
            }
            passed.push(l);
        };
        drop(passed);
        let addr = listener.local_addr().expect("receiver addr");
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            queue: VecDeque::new(),
            default: Reply::status(200),
        }));
        let (count_tx, count) = tokio::sync::watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let st = st.clone();
                let count_tx = count_tx.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, peer, st.clone(), count_tx.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            state,
            count,
            task,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue a reply for the next request without one.
    pub fn push(&self, reply: Reply) {
        self.state.lock().unwrap().queue.push_back(reply);
    }

    /// Queue several replies, in order.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().queue.extend(replies);
    }

    /// The reply used once the queue is empty (initially `Reply::status(200)`).
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    /// Requests recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Wait until at least `n` requests arrived and return all recorded ones; panics after
    /// `timeout` showing what did arrive.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.count.clone();
        if tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_err()
        {
            let got: Vec<String> = self
                .requests()
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            panic!(
                "receiver {}: expected {n} requests within {timeout:?}, got {}: {got:?}",
                self.addr,
                got.len()
            );
        }
        self.requests()
    }

    /// Assert that no more than `n` requests arrive within `window` (e.g. "no retry").
    pub async fn expect_no_more_than(&self, n: usize, window: Duration) {
        tokio::time::sleep(window).await;
        let c = self.count();
        assert!(
            c <= n,
            "receiver {}: expected at most {n} requests, got {c}: {:?}",
            self.addr,
            self.requests()
                .iter()
                .map(|r| format!("{} {} {}", r.method, r.path, r.text()))
                .collect::<Vec<_>>()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: Arc<Mutex<State>>,
    count: Arc<tokio::sync::watch::Sender<usize>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let at = Instant::now();
    let received = SystemTime::now();
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let rec = Recorded {
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
        at,
        received,
        peer,
    };
    let mut reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(rec);
        st.queue.pop_front().unwrap_or_else(|| st.default.clone())
    };
    count.send_modify(|c| *c += 1);
    loop {
        match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::Close => {
                return Err(std::io::Error::other("programmed: close without answering"));
            }
            Reply::Status {
                status,
                headers,
                body,
            } => {
                let mut resp = Response::new(Full::new(body));
                *resp.status_mut() =
                    StatusCode::from_u16(status).expect("programmed status is valid");
                for (n, v) in headers {
                    resp.headers_mut().append(
                        http::HeaderName::from_bytes(n.as_bytes()).expect("header name"),
                        http::HeaderValue::from_str(&v).expect("header value"),
                    );
                }
                return Ok(resp);
            }
        }
    }
}
