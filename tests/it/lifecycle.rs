//! Health, readiness, graceful shutdown of the real binary, and memory under a big blob.

use std::time::{Duration, Instant};

use crate::common::http::{RawConn, download_to_file};
use crate::common::oci;
use crate::common::{Registry, RegistryClient, Wharf, WharfBuilder, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_follow_the_registry() {
    let mut registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let c = client();

    let resp = c
        .get(format!("{}/healthz", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );

    let resp = c
        .get(format!("{}/readyz", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["upstreams"]["registry"]["reachable"], true, "{body}");

    registry.stop();
    let resp = c
        .get(format!("{}/readyz", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["upstreams"]["registry"]["reachable"], false, "{body}");

    let resp = c
        .get(format!("{}/healthz", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "liveness does not depend on the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_in_flight_upload_finish_then_exits_0() {
    let registry = Registry::start().await;
    let mut wharf = WharfBuilder::new(&registry.url()).spawn().await;
    let rc = RegistryClient::new(&wharf.url());
    let loc = rc.start_upload("prj/slow").await;
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = crate::common::http::sha256_digest(&data);
    let target = RegistryClient::with_digest(&loc, &digest);
    let path = target.strip_prefix(&wharf.url()).unwrap().to_string();

    let mut conn = RawConn::connect(wharf.addr()).await;
    conn.send(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            wharf.host(),
            data.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (first, rest) = data.split_at(data.len() / 2);
    conn.send(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    wharf.sigterm();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(wharf.is_running(), "wharf exited with a request in flight");
    // No new connections once shutdown started.
    assert!(
        tokio::net::TcpStream::connect(wharf.addr()).await.is_err(),
        "wharf still accepts connections after SIGTERM"
    );

    // Trickle the rest in.
    for piece in rest.chunks(rest.len() / 4 + 1) {
        conn.send(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), conn.read_response(false))
        .await
        .expect("no response to the in-flight upload")
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));

    let status = wharf.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", wharf.log());
    let log = wharf.log();
    assert!(log.contains("SIGTERM"), "{log}");

    let resp = client()
        .head(format!("{}/v2/prj/slow/blobs/{digest}", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the upload landed in the registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_blob_streams_through_the_binary_with_bounded_memory() {
    const SIZE: u64 = 256 << 20;
    const LIMIT_KIB: u64 = 64 * 1024;
    let registry = Registry::start().await;
    let wharf = WharfBuilder::new(&registry.url()).spawn().await;
    let work = tempfile::Builder::new()
        .prefix("wharf-it-big-")
        .tempdir()
        .unwrap();
    let src = work.path().join("big.bin");
    let t = Instant::now();
    let blob = {
        let src = src.clone();
        tokio::task::spawn_blocking(move || oci::write_random_blob(&src, SIZE))
            .await
            .unwrap()
    };
    eprintln!("wrote {} MiB in {:?}", SIZE >> 20, t.elapsed());

    let rc = RegistryClient::new(&wharf.url());
    let t = Instant::now();
    rc.upload_blob_file("prj/big", &src, &blob).await;
    eprintln!("upload through wharf: {:?}", t.elapsed());
    std::fs::remove_file(&src).unwrap();

    let dst = work.path().join("back.bin");
    let t = Instant::now();
    let (status, digest, n) = download_to_file(
        &rc.client,
        &format!("{}/v2/prj/big/blobs/{}", wharf.url(), blob.digest),
        &dst,
    )
    .await;
    eprintln!("download through wharf: {:?}", t.elapsed());
    assert_eq!(status, 200);
    assert_eq!(n, SIZE);
    assert_eq!(digest, blob.digest);

    let mem = wharf.memory();
    eprintln!(
        "wharf VmHWM {} KiB, VmRSS {} KiB",
        mem.vm_hwm_kib, mem.vm_rss_kib
    );
    assert!(
        mem.vm_hwm_kib < LIMIT_KIB,
        "wharf peaked at {:.1} MiB resident while streaming {} MiB (limit 64 MiB)",
        mem.peak_mib(),
        SIZE >> 20
    );
}

/// `log: {format: json, level: info}`: one access-log line per request (target `wharf::access`)
/// with the client's `X-Request-Id`, the operation, status, bytes in and out and duration; and
/// SIGINT shuts down like SIGTERM (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_a_line_per_request_and_sigint_exits_0() {
    let registry = Registry::start().await;
    let mut wharf = WharfBuilder::new(&registry.url())
        .yaml("log: {level: info, format: json}")
        .spawn()
        .await;
    let c = client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = crate::common::http::sha256_digest(&data);

    let rc = RegistryClient::new(&wharf.url());
    let loc = rc.start_upload("prj/logged").await;
    let r = c
        .put(RegistryClient::with_digest(&loc, &digest))
        .header("x-request-id", "it-access-put")
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.bytes().await.unwrap();
    let r = c
        .get(format!("{}/v2/prj/logged/blobs/{digest}", wharf.url()))
        .header("x-request-id", "it-access-get")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "it-access-get");
    assert_eq!(r.bytes().await.unwrap().len(), data.len());
    let r = c
        .get(format!("{}/v2/prj/logged/manifests/nope", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    r.bytes().await.unwrap();

    wharf.signal("INT");
    let status = wharf.wait_exit(Duration::from_secs(15)).await;
    let log = wharf.log();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{log}");
    assert!(log.contains("SIGINT received"), "{log}");

    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "wharf::access")
        .collect();
    let line = |rid: &str| {
        let found: Vec<&serde_json::Value> =
            access.iter().filter(|v| v["request_id"] == rid).collect();
        assert_eq!(found.len(), 1, "one access line for {rid}; log:\n{log}");
        found[0].clone()
    };
    let put = line("it-access-put");
    assert_eq!(put["op"], "upload_complete");
    assert_eq!(put["method"], "PUT");
    assert_eq!(put["status"], 201);
    assert_eq!(put["bytes_in"], data.len() as u64);
    assert!(
        put["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{put}"
    );
    let get = line("it-access-get");
    assert_eq!(get["op"], "blob_get");
    assert_eq!(get["status"], 200);
    assert_eq!(get["bytes_out"], data.len() as u64);
    assert_eq!(get["complete"], true);
    assert_eq!(get["path"], format!("/v2/prj/logged/blobs/{digest}"));
    let miss = line(&generated);
    assert_eq!(miss["op"], "manifest_get");
    assert_eq!(miss["status"], 404);
    assert_eq!(miss["level"], "INFO");
}

/// Access-log lines are gathered (`log.buffer`) and written every `log.flush_interval`, or
/// when the process stops gracefully; none is lost by a graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_written_every_flush_interval_and_at_a_graceful_stop() {
    let registry = Registry::start().await;
    let get = |url: String, rid: &'static str| async move {
        let r = client()
            .get(format!("{url}/v2/"))
            .header("x-request-id", rid)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    };

    // held for an hour: only the stop writes it
    let mut held = WharfBuilder::new(&registry.url())
        .yaml("log: {level: info, format: json, flush_interval: 1h}")
        .spawn()
        .await;
    get(held.url(), "it-held").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.log().contains("it-held"), "{}", held.log());
    held.signal("TERM");
    let status = held.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    let log = held.log();
    assert_eq!(
        log.matches("\"request_id\":\"it-held\"").count(),
        1,
        "{log}"
    );
    assert!(
        log.find("it-held") < log.find("wharf stopped"),
        "written before the lines after it: {log}"
    );
    // the start line is said before the first request is served (the harness's /healthz
    // probe): a request's line never comes first and writes the held lines with it
    assert!(log.contains("wharf listening"), "{log}");
    assert!(
        log.lines()
            .take_while(|l| !l.contains("wharf listening"))
            .all(|l| !l.contains("wharf::access")),
        "an access line before the start line: {log}"
    );

    // a short interval writes it without anything else being logged
    let flushed = WharfBuilder::new(&registry.url())
        .yaml("log: {level: info, format: json, flush_interval: 200ms}")
        .spawn()
        .await;
    get(flushed.url(), "it-flushed").await;
    crate::common::wait_until(
        "the access line written",
        Duration::from_secs(10),
        || async { flushed.log().contains("it-flushed").then_some(()) },
    )
    .await;
}

/// `server.worker_threads` sets the threads that run the proxy, and says so at start.
#[tokio::test]
async fn worker_threads_are_started_as_configured_and_logged() {
    let registry = Registry::start().await;
    for n in [1, 3] {
        let wharf = WharfBuilder::new(&registry.url())
            .yaml(&format!(
                "server: {{worker_threads: {n}}}\nlog: {{level: info, format: json}}"
            ))
            .spawn()
            .await;
        let r = client()
            .get(format!("{}/v2/", wharf.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let log = wharf.log();
        let line = log
            .lines()
            .find(|l| l.contains("wharf listening"))
            .unwrap_or_else(|| panic!("no start line: {log}"));
        // (the runtime's own count of its workers)
        assert!(line.contains(&format!("\"workers\":{n}")), "{line}");
    }
}
