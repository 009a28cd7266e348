//! A small webhook receiver for the demo and the benchmarks (not part of wharf itself).
//!
//! `cargo run --release --example webhook_receiver -- [--listen 127.0.0.1:0] [--print] [--delay-ms N]`
//!
//! Prints `listening on <addr>` first. Every POST is answered 200 (after `N` ms with
//! `--delay-ms`: a target that takes its time, as real ones do, without using CPU while it
//! waits; the delivery is counted when it arrives); with `--print` its headers
//! (`name: value` lines), a blank line and the (pretty-printed JSON) body go to stdout. `GET /stats` answers
//! `{"count", "first_ms", "last_ms", "per_second", "latency_ms": {"p50", "p99", "max"}}` where the
//! latency of a delivery is its arrival time minus the time inside its `webhook-id` (a UUIDv7:
//! when wharf created the event), i.e. event-to-delivery latency in milliseconds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Default)]
struct Stats {
    count: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    latencies: Vec<i64>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Milliseconds since the epoch inside a UUIDv7.
fn uuid7_ms(id: &str) -> Option<i64> {
    let u = uuid::Uuid::parse_str(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let b = u.as_bytes();
    Some(i64::from_be_bytes([
        0, 0, b[0], b[1], b[2], b[3], b[4], b[5],
    ]))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn handle(
    req: Request<Incoming>,
    stats: Arc<Mutex<Stats>>,
    print: bool,
    delay: std::time::Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == hyper::Method::GET && req.uri().path() == "/stats" {
        let s = stats.lock().map(|s| {
            let mut l = s.latencies.clone();
            l.sort_unstable();
            let span = match (s.first_ms, s.last_ms) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1000.0,
                _ => 0.0,
            };
            serde_json::json!({
                "count": s.count,
                "first_ms": s.first_ms,
                "last_ms": s.last_ms,
                "per_second": if span > 0.0 { (s.count.saturating_sub(1)) as f64 / span } else { 0.0 },
                "latency_ms": {"p50": percentile(&l, 0.5), "p99": percentile(&l, 0.99), "max": l.last().copied().unwrap_or(0)},
            })
        });
        let body = s.map(|v| v.to_string()).unwrap_or_default();
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let arrived = now_ms();
    let id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut head = format!("{} {}", req.method(), req.uri());
    for (name, value) in req.headers() {
        head.push_str(&format!(
            "\n{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if let Ok(mut s) = stats.lock() {
        s.count += 1;
        s.first_ms.get_or_insert(arrived);
        s.last_ms = Some(arrived);
        if let Some(t) = id.as_deref().and_then(uuid7_ms) {
            s.latencies.push(arrived - t);
        }
    }
    if print {
        let pretty = serde_json::from_slice::<serde_json::Value>(&body)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        println!("--- webhook received ---\n{head}\n\n{pretty}");
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut print = false;
    let mut delay = std::time::Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args.next().and_then(|v| v.parse().ok()).ok_or_else(|| {
                    std::io::Error::other("--listen takes an address like 127.0.0.1:9000")
                })?;
            }
            "--print" => print = true,
            "--delay-ms" => {
                let ms = args.next().and_then(|v| v.parse().ok()).ok_or_else(|| {
                    std::io::Error::other("--delay-ms takes a number of milliseconds")
                })?;
                delay = std::time::Duration::from_millis(ms);
            }
            other => return Err(std::io::Error::other(format!("unknown argument {other}"))),
        }
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let stats = Arc::new(Mutex::new(Stats::default()));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| handle(req, stats.clone(), print, delay));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
