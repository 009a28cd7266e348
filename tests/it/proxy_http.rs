//! HTTP-level behaviour of the proxy: headers on the wire, upstream failures, Expect, HEAD.

use std::time::{Duration, Instant};

use crate::common::http::{RawConn, raw_request, sha256_digest};
use crate::common::oci;
use crate::common::{Receiver, Registry, RegistryClient, Wharf, client};

fn assert_oci_unavailable(status: u16, body: &serde_json::Value, want_status: u16, reason: &str) {
    assert_eq!(status, want_status, "{body}");
    let e = &body["errors"][0];
    assert_eq!(e["code"], "UNAVAILABLE", "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(e["detail"]["reason"], reason, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_oci_json() {
    // A registry that dies.
    let mut registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let c = client();
    assert_eq!(
        c.get(format!("{}/v2/", wharf.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    registry.stop();
    let resp = c
        .get(format!("{}/v2/prj/app/manifests/v1", wharf.url()))
        .header("x-request-id", "dead-upstream-1")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(resp.headers()["x-request-id"], "dead-upstream-1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_oci_unavailable(status, &body, 502, "unreachable");
    assert_eq!(body["errors"][0]["detail"]["request_id"], "dead-upstream-1");

    // A port nobody listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let wharf = Wharf::start(&format!("http://127.0.0.1:{port}")).await;
    let resp = c
        .put(format!("{}/v2/prj/app/manifests/v1", wharf.url()))
        .header("content-type", oci::MANIFEST_V1)
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_oci_unavailable(status, &body, 502, "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_after_response_timeout() {
    // Accepts connections, reads nothing, answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let wharf = Wharf::builder(&format!("http://{silent_addr}"))
        .yaml("upstream:\n  response_timeout: 1s\n")
        .start()
        .await;
    let t = Instant::now();
    let resp = client()
        .get(format!("{}/v2/prj/app/manifests/v1", wharf.url()))
        .send()
        .await
        .unwrap();
    let took = t.elapsed();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_oci_unavailable(status, &body, 504, "timeout");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(10),
        "504 after {took:?}"
    );
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_reach_the_upstream_intact() {
    let upstream = Receiver::start().await;
    upstream.set_default(
        crate::common::Reply::status(200)
            .header("content-type", "application/json")
            .body("{}"),
    );
    let wharf = Wharf::start(&upstream.url()).await;
    let accepts = [
        oci::MANIFEST_V1,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        oci::INDEX_V1,
    ];
    let mut req = format!(
        "GET /v2/prj/app/manifests/v1 HTTP/1.1\r\nHost: {}\r\nUser-Agent: skopeo/1.9.3\r\n",
        wharf.host()
    );
    for a in accepts {
        req.push_str(&format!("Accept: {a}\r\n"));
    }
    req.push_str(
        "X-Request-Id: it-req-42\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
         X-Forwarded-Proto: https\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\r\n",
    );
    let resp = raw_request(wharf.addr(), req.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-request-id"), Some("it-req-42"));

    let got = upstream.wait_for(1, Duration::from_secs(5)).await;
    let r = &got[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/v2/prj/app/manifests/v1");
    assert_eq!(r.header_all("accept"), accepts, "repeated Accept headers");
    assert_eq!(r.header("host"), Some(wharf.host().as_str()));
    assert_eq!(r.header("x-forwarded-host"), Some(wharf.host().as_str()));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header_all("x-forwarded-for").len(), 1);
    assert_eq!(r.header("x-request-id"), Some("it-req-42"));
    assert_eq!(r.header("user-agent"), Some("skopeo/1.9.3"));
    assert!(
        r.header("x-hop").is_none(),
        "a header named in Connection was forwarded"
    );
    assert_ne!(r.header("connection"), Some("close, x-hop"));

    // Another Host is passed through as is; without X-Request-Id one is generated, sent
    // upstream and echoed.
    let resp = raw_request(
        wharf.addr(),
        b"GET /v2/ HTTP/1.1\r\nHost: registry.example.test:8443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200);
    let rid = resp.header("x-request-id").expect("generated request id");
    uuid::Uuid::parse_str(rid).expect("a UUID request id");
    let got = upstream.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].header("host"), Some("registry.example.test:8443"));
    assert_eq!(
        got[1].header("x-forwarded-host"),
        Some("registry.example.test:8443")
    );
    assert_eq!(got[1].header("x-request-id"), Some(rid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_location_points_at_wharf_and_request_id_is_echoed() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;

    let resp = raw_request(
        wharf.addr(),
        format!(
            "POST /v2/prj/up/blobs/uploads/ HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\
             X-Request-Id: upload-rid-7\r\nConnection: close\r\n\r\n",
            wharf.host()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert_eq!(resp.header("x-request-id"), Some("upload-rid-7"));
    assert!(resp.header("docker-upload-uuid").is_some());
    let loc = resp.header("location").unwrap();
    let prefix = format!("http://{}/v2/prj/up/blobs/uploads/", wharf.host());
    assert!(
        loc.starts_with(&prefix),
        "Location {loc} does not point at wharf"
    );

    // The client's Host name is what the Location names.
    let resp = raw_request(
        wharf.addr(),
        format!(
            "POST /v2/prj/up/blobs/uploads/ HTTP/1.1\r\nHost: localhost:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            wharf.addr().port()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 202);
    assert!(
        resp.header("location")
            .unwrap()
            .starts_with(&format!("http://localhost:{}/v2/", wharf.addr().port())),
        "{:?}",
        resp.header("location")
    );

    // Following the Location finishes the upload through wharf.
    let data = b"hello through wharf".to_vec();
    let digest = sha256_digest(&data);
    let rc = RegistryClient::new(&wharf.url());
    let resp = rc
        .request(
            reqwest::Method::PUT,
            &RegistryClient::with_digest(loc, &digest),
        )
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    let resp = client()
        .head(format!("{}/v2/prj/up/blobs/{digest}", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "blob is in the registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_upload() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let rc = RegistryClient::new(&wharf.url());
    let loc = rc.start_upload("prj/expect").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256_digest(&data);
    let target = RegistryClient::with_digest(&loc, &digest);
    let path = target
        .strip_prefix(&wharf.url())
        .unwrap_or_else(|| panic!("{target} is not on wharf"));

    let mut conn = RawConn::connect(wharf.addr()).await;
    conn.send(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            wharf.host(),
            data.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let interim = tokio::time::timeout(Duration::from_secs(10), conn.read_head())
        .await
        .expect("no 100 Continue within 10 s")
        .unwrap();
    assert_eq!(interim.status, 100);
    conn.send(&data).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), conn.read_response(false))
        .await
        .expect("no final response")
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));

    let got = client()
        .get(format!("{}/v2/prj/expect/blobs/{digest}", wharf.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_digest(&got), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_manifest_keeps_content_length_and_digest() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = tempfile::tempdir().unwrap();
    let image = oci::build_image(&work.path().join("src"), "v1", &[12_345]);
    let rc = RegistryClient::new(&wharf.url());
    rc.push_image("prj/head", "v1", &image).await;

    let resp = raw_request(
        wharf.addr(),
        format!(
            "HEAD /v2/prj/head/manifests/v1 HTTP/1.1\r\nHost: {}\r\nAccept: {}\r\n\
             Connection: close\r\n\r\n",
            wharf.host(),
            oci::MANIFEST_V1
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length"),
        Some(image.size.to_string().as_str()),
        "{:?}",
        resp.headers
    );
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(image.digest.as_str())
    );
    assert_eq!(resp.header("content-type"), Some(oci::MANIFEST_V1));
    assert!(resp.body.is_empty());

    let layer = &image.manifest().layers[0];
    let resp = raw_request(
        wharf.addr(),
        format!(
            "HEAD /v2/prj/head/blobs/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            layer.digest,
            wharf.host()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length"),
        Some(layer.size.to_string().as_str())
    );
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(layer.digest.as_str())
    );

    // GET returns the exact bytes.
    let body = client()
        .get(format!("{}/v2/prj/head/manifests/v1", wharf.url()))
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_digest(&body), image.digest);
}

/// An idle upstream connection is closed once `upstream.pool_idle_timeout` has passed, without
/// waiting for the next request (a soak found wharf's open descriptors stuck at their peak:
/// hyper-util's pool only expires idle connections on its own when it has a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_pool_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<Instant>();
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut buf = vec![0u8; 16 << 10];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "wharf closed the connection before its request");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        // keep-alive: the next read ends when wharf closes its side
        let n = s.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "a second request on an idle connection");
        let _ = closed_tx.send(Instant::now());
    });
    let wharf = Wharf::builder(&format!("http://{upstream_addr}"))
        .yaml("upstream:\n  pool_idle_timeout: 1s\n")
        .start()
        .await;
    let resp = client()
        .get(format!("{}/v2/", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answered = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(15), closed_rx)
        .await
        .expect("the idle upstream connection was still open 15 s after its answer")
        .unwrap();
    assert!(
        closed.duration_since(answered) >= Duration::from_millis(900),
        "closed {:?} after the answer, before the idle timeout",
        closed.duration_since(answered)
    );
    server.await.unwrap();
}

/// A stand-in upstream that answers every `GET` with `{}` on keep-alive connections and
/// records, per request, the port of the connection it came on. With `close_idle`, it closes
/// a connection that long after each answer (without saying so in the answer).
async fn recording_upstream(
    close_idle: Option<Duration>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, peer)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let mut got = Vec::new();
                loop {
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    got.drain(..end);
                    record.lock().unwrap().push(peer.port());
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if let Some(after) = close_idle {
                        tokio::time::sleep(after).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn get_on(conn: &mut RawConn) -> u16 {
    conn.send(b"GET /v2/ HTTP/1.1\r\nHost: wharf.test\r\n\r\n")
        .await
        .unwrap();
    conn.read_response(false).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_connection_has_upstream_connections_of_its_own() {
    let (upstream, seen) = recording_upstream(None).await;
    let wharf = Wharf::start(&format!("http://{upstream}")).await;
    let mut a = RawConn::connect(wharf.addr()).await;
    let mut b = RawConn::connect(wharf.addr()).await;
    for _ in 0..3 {
        assert_eq!(get_on(&mut a).await, 200);
        assert_eq!(get_on(&mut b).await, 200);
    }
    let ports = seen.lock().unwrap().clone();
    assert_eq!(ports.len(), 6, "{ports:?}");
    // a's requests on one upstream connection, b's on another (a shared pool would have
    // carried these sequential requests on one)
    let (of_a, of_b): (Vec<_>, Vec<_>) = ports.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    assert!(of_a.iter().all(|(_, p)| *p == of_a[0].1), "{ports:?}");
    assert!(of_b.iter().all(|(_, p)| *p == of_b[0].1), "{ports:?}");
    assert_ne!(of_a[0].1, of_b[0].1, "{ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_outlive_short_client_connections() {
    // clients that open a connection per request reuse the upstream connection an ended
    // client connection left
    let (upstream, seen) = recording_upstream(None).await;
    let wharf = Wharf::start(&format!("http://{upstream}")).await;
    for _ in 0..4 {
        let mut c = RawConn::connect(wharf.addr()).await;
        assert_eq!(get_on(&mut c).await, 200);
        drop(c);
        // the server notices the close and parks the connection
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ports = seen.lock().unwrap().clone();
    assert_eq!(ports.len(), 4, "{ports:?}");
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connection_closed_while_idle_is_replaced_without_an_error() {
    // the upstream closes each connection 50 ms after its answer: owned by a client connection
    // (whose task sees the close) or parked (nobody polls it; the request fails before being
    // sent and is sent again on a new connection) — the client never sees it
    let (upstream, seen) = recording_upstream(Some(Duration::from_millis(50))).await;
    let wharf = Wharf::start(&format!("http://{upstream}")).await;
    let mut kept = RawConn::connect(wharf.addr()).await;
    for _ in 0..3 {
        assert_eq!(get_on(&mut kept).await, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(kept);
    for _ in 0..3 {
        let mut c = RawConn::connect(wharf.addr()).await;
        assert_eq!(get_on(&mut c).await, 200);
        drop(c);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let ports = seen.lock().unwrap().clone();
    assert_eq!(ports.len(), 6, "{ports:?}");
    let mut distinct = ports.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "a closed connection was used: {ports:?}");
}
