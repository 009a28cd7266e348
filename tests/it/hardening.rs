//! Regression tests for what an attacker tried against a live wharf (the hardening findings):
//! each test here failed on the code before its fix.
//!
//! - Percent-encoded registry paths are classified as the registry decodes them: quota, events
//!   and deletes cannot be bypassed by encoding a repository name or reference.
//! - Connections that send no complete request head are closed; the number of open connections
//!   is capped.

use std::time::Duration;

use serde_json::Value;

use crate::common::api::ApiResp as Resp;
use crate::common::http::RawConn;
use crate::common::oci::{self, OciImage};
use crate::common::wharf::ADMIN_PASSWORD;
use crate::common::{Registry, RegistryClient, Wharf, client, wait_until};

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wharf-it-hardening-")
        .tempdir()
        .unwrap()
}

/// Sum of the config and layer blobs of `image`.
fn blob_size(image: &OciImage) -> u64 {
    image.layer_and_config_blobs().iter().map(|b| b.size).sum()
}

async fn admin_get(base: &str, path: &str) -> Value {
    crate::common::api::admin_get(base, path)
        .await
        .expect(200)
        .json()
}

async fn usage(base: &str, project: &str) -> u64 {
    admin_get(base, &format!("/api/v1/projects/{project}/quota")).await["usage"]
        .as_u64()
        .unwrap()
}

/// Events of `type` in the event log.
async fn events_of(base: &str, kind: &str) -> Vec<Value> {
    admin_get(
        base,
        &format!("/api/v1/events?limit=1000&all=true&type={kind}"),
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

/// A request with a raw (already encoded) path: reqwest keeps percent-encoding as given.
async fn raw_path(method: reqwest::Method, base: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
    let mut rb = client()
        .request(method, format!("{base}{path}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json");
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(b);
    }
    Resp::read(rb.send().await.unwrap()).await
}

// 1 ------------------------------------------------------------------------------------------
// percent-encoded paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_paths_get_quota_events_and_deletes_like_plain_ones() {
    let work = work_dir();
    let a = oci::build_image(&work.path().join("a"), "v1", &[24 * 1024]);
    let b = oci::build_image(&work.path().join("b"), "v1", &[48 * 1024]);
    let limit = blob_size(&a) + blob_size(&b) / 2;
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&format!("projects: {{prja: {{storage_limit: {limit}}}}}\n"))
        .start()
        .await;
    let base = wharf.url();
    let rc = RegistryClient::new(&base);
    for image in [&a, &b] {
        for blob in image.layer_and_config_blobs() {
            rc.upload_blob(
                "prja/big",
                std::fs::read(image.blob_path(&blob.digest)).unwrap(),
            )
            .await;
        }
    }
    let manifest = |i: &OciImage| std::fs::read(i.blob_path(&i.digest)).unwrap();

    // a push through an encoded name counts and makes its event
    let r = raw_path(
        reqwest::Method::PUT,
        &base,
        "/v2/pr%6Aa/big/manifests/v1",
        Some(manifest(&a)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(usage(&base, "prja").await, blob_size(&a));
    let pushes = events_of(&base, "PUSH_ARTIFACT").await;
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    assert_eq!(pushes[0]["repository"], "prja/big");
    assert_eq!(pushes[0]["tags"], serde_json::json!(["v1"]));

    // every encoding of a push over the limit is refused before the registry sees it
    for path in [
        "/v2/pr%6Aa/big/manifests/v2",
        "/v2/prja%2Fbig/manifests/v3",
        "/v2/%70rja/big/manifests/v4",
        "/v2/prja/bi%67/manifests/v5",
        "/v2/prja/big%2Fmanifests%2Fv8",
        "/v%32/prja/big/manifests/v9",
    ] {
        let r = raw_path(reqwest::Method::PUT, &base, path, Some(manifest(&b))).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert_eq!(r.error().0, "DENIED", "{path}");
    }
    assert_eq!(
        events_of(&base, "QUOTA_EXCEED").await.len(),
        6,
        "one QUOTA_EXCEED per refused push"
    );
    let direct = RegistryClient::new(&registry.url());
    let r = direct
        .request(reqwest::Method::GET, "/v2/prja/big/tags/list")
        .send()
        .await
        .unwrap();
    let tags = Resp::read(r).await.expect(200).json();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["v1"]),
        "the registry got none"
    );

    // a pull through an encoded path is a pull event
    let r = raw_path(
        reqwest::Method::GET,
        &base,
        "/v2/prja%2Fbig/manifests/v1",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let pulls = wait_until("the pull event", Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            let p = events_of(&base, "PULL_ARTIFACT").await;
            (!p.is_empty()).then_some(p)
        }
    })
    .await;
    assert_eq!(pulls[0]["repository"], "prja/big");

    // a delete through an encoded name and digest is a delete event and gives the space back
    let path = format!("/v2/prja/bi%67/manifests/{}", a.digest.replace(':', "%3A"));
    let r = raw_path(reqwest::Method::DELETE, &base, &path, None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let deletes = events_of(&base, "DELETE_ARTIFACT").await;
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert_eq!(deletes[0]["digest"], a.digest.as_str());
    assert_eq!(usage(&base, "prja").await, 0);

    // double encoding is not decoded twice: to the registry it is a name with a `%` in it
    let r = raw_path(
        reqwest::Method::PUT,
        &base,
        "/v2/prja%252Fbig/manifests/v10",
        Some(manifest(&b)),
    )
    .await;
    assert_ne!(r.status, 201, "{}", r.text);
}

/// A name the registry takes but wharf has no project for (an uppercase first segment, read
/// by the registry as a domain): writes are refused with `400 NAME_INVALID` instead of landing
/// unseen by events and quota; reads go through as the registry answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_name_outside_the_grammar_are_refused_with_name_invalid() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let upload = "/v2/PRJ/app/blobs/uploads/";
    // the registry itself takes it (the premise)
    let direct = raw_path(reqwest::Method::POST, &registry.url(), upload, None).await;
    assert_eq!(direct.status, 202, "{}", direct.text);
    let digest = format!("sha256:{}", "0".repeat(64));
    for (method, path, body) in [
        (reqwest::Method::POST, upload.to_string(), None),
        (
            reqwest::Method::PUT,
            "/v2/PRJ/app/manifests/v1".to_string(),
            Some(br#"{"schemaVersion":2}"#.to_vec()),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v2/PRJ/app/manifests/{digest}"),
            None,
        ),
    ] {
        let r = raw_path(method.clone(), &wharf.url(), &path, body).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text);
        let err = &r.json()["errors"][0];
        assert_eq!(err["code"], "NAME_INVALID", "{}", r.text);
        assert_eq!(err["detail"]["name"], "PRJ/app", "{}", r.text);
    }
    // reads are the registry's to answer
    let path = "/v2/PRJ/app/tags/list";
    let direct = raw_path(reqwest::Method::GET, &registry.url(), path, None).await;
    let through = raw_path(reqwest::Method::GET, &wharf.url(), path, None).await;
    assert_eq!(through.status, direct.status, "{}", through.text);
    // with events off wharf observes nothing and refuses nothing: the registry answers
    let plain = Wharf::builder(&registry.url())
        .yaml("events: {enabled: false}")
        .start()
        .await;
    let r = raw_path(reqwest::Method::POST, &plain.url(), upload, None).await;
    assert_eq!(r.status, 202, "{}", r.text);
}

/// An image manifest of a config (`sha256:cc…`, declared `config_size` bytes) and one layer
/// (`sha256:aa…`, 10 bytes), for tests whose registry is a receiver: no blob exists.
fn one_layer_manifest(config_size: u64) -> Vec<u8> {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST_V1,
        "config": {"mediaType": oci::CONFIG_V1, "digest": digest('c'), "size": config_size},
        "layers": [{"mediaType": oci::LAYER_TAR, "digest": digest('a'), "size": 10}],
    }))
    .unwrap()
}

/// A client that hangs up while the registry is still taking its manifest: the registry does
/// the push all the same, and so does wharf's bookkeeping — the event is recorded. (Before,
/// the hang-up cancelled the request's flow with the forward: no event, no quota.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_client_hangs_up_is_still_recorded() {
    use crate::common::Receiver;
    use crate::common::receiver::Reply;
    let upstream = Receiver::start().await;
    let wharf = Wharf::start(&upstream.url()).await;
    let manifest = one_layer_manifest(2);
    let stored = crate::common::http::sha256_digest(&manifest);
    // the registry takes its time over the manifest
    upstream.push(Reply::delay(
        Duration::from_millis(700),
        Reply::status(201).header("Docker-Content-Digest", &stored),
    ));
    let mut conn = RawConn::connect(wharf.addr()).await;
    let mut request = format!(
        "PUT /v2/prj/hung/manifests/v1 HTTP/1.1\r\nHost: w\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        oci::MANIFEST_V1,
        manifest.len()
    )
    .into_bytes();
    request.extend_from_slice(&manifest);
    conn.send(&request).await.unwrap();
    // the manifest reached the registry; then the client is gone
    upstream.wait_for(1, Duration::from_secs(10)).await;
    drop(conn);
    let base = wharf.url();
    wait_until("the push's event", Duration::from_secs(10), || async {
        let pushed = events_of(&base, "PUSH_ARTIFACT").await;
        (!pushed.is_empty()).then_some(pushed)
    })
    .await;
}

/// A registry on object storage redirects blob HEADs to presigned URLs (distribution's
/// `redirect`, on by default): the quota's size check follows the redirect — without the
/// client's credentials — and a manifest that understates a blob is still refused. (Before,
/// the 307 was taken for "the registry does not say", and the declared size was trusted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_sizes_behind_a_redirect_are_checked_with_the_storage() {
    use crate::common::Receiver;
    use crate::common::receiver::Reply;
    let (registry, storage) = (Receiver::start().await, Receiver::start().await);
    registry.set_default(
        Reply::status(307).header("Location", &format!("{}/presigned?sig=1", storage.url())),
    );
    storage.set_default(Reply::status(200).header("Content-Length", "5000"));
    let wharf = Wharf::builder(&registry.url())
        .yaml("projects: {prj: {storage_limit: 1GiB}}\n")
        .start()
        .await;
    let manifest = one_layer_manifest(5000);
    let r = client()
        .put(format!("{}/v2/prj/big/manifests/v1", wharf.url()))
        .header("content-type", oci::MANIFEST_V1)
        .basic_auth("alice", Some("pw"))
        .body(manifest)
        .send()
        .await
        .unwrap();
    let r = Resp::read(r).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error().0, "MANIFEST_INVALID", "{}", r.text);
    let asked = storage.requests();
    assert!(!asked.is_empty());
    for a in &asked {
        assert_eq!(a.method, reqwest::Method::HEAD);
        assert_eq!(a.path, "/presigned?sig=1");
        assert!(a.header("authorization").is_none(), "credentials sent on");
    }
    assert!(
        registry
            .requests()
            .iter()
            .all(|r| r.method != reqwest::Method::PUT),
        "the registry never saw the manifest"
    );
}

// 2 ------------------------------------------------------------------------------------------
// silent connections

/// Is the connection closed by the server within `within`? (EOF or reset on read.)
async fn closed_within(conn: &mut RawConn, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, conn.read_to_end()).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_complete_request_head_are_closed() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("server: {header_timeout: 1s, idle_timeout: 2s}\n")
        .start()
        .await;
    let addr = wharf.addr();
    // nothing at all; the HTTP/2 preface alone; an HTTP/2 HEADERS frame cut short; half a head
    let mut silent = RawConn::connect(addr).await;
    let mut preface = RawConn::connect(addr).await;
    preface
        .send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut mid_h2 = RawConn::connect(addr).await;
    mid_h2
        .send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x20\x01\x04\x00\x00\x00\x01\x82")
        .await
        .unwrap();
    let mut half = RawConn::connect(addr).await;
    half.send(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for (name, conn) in [
        ("silent", &mut silent),
        ("h2 preface only", &mut preface),
        ("h2 mid-headers", &mut mid_h2),
        ("half an HTTP/1 head", &mut half),
    ] {
        assert!(
            closed_within(conn, Duration::from_secs(5)).await,
            "{name}: still open"
        );
    }

    // an idle keep-alive connection is closed after idle_timeout, a busy one is served
    let mut keep = RawConn::connect(addr).await;
    keep.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = keep.read_response(false).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        closed_within(&mut keep, Duration::from_secs(6)).await,
        "idle keep-alive connection still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped_and_counted() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("server: {header_timeout: 2s, max_connections: 4}\n")
        .start()
        .await;
    let addr = wharf.addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(RawConn::connect(addr).await);
    }
    // a fifth connection waits in the backlog: its request is not answered while four are open
    let base = wharf.url();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), started.elapsed())
    });
    // the silent four are closed after header_timeout, then the fifth is served
    let (status, waited) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(1500),
        "served at once ({waited:?}) although 4 of 4 connections were open"
    );
    drop(held);
    let metrics = crate::common::metrics_text(&wharf.url()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wharf_connection_limit_reached_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(metrics.contains("wharf_connections_open"), "{metrics}");
}

// 3 ------------------------------------------------------------------------------------------
// quota trusts the registry's sizes, not the manifest's

/// Upload `layers` and a config to `repo` through `base`; a manifest declaring `declared`
/// sizes for the layers (the config's size is its real one).
async fn manifest_with_sizes(
    base: &str,
    repo: &str,
    layers: &[Vec<u8>],
    declared: &[u64],
) -> Vec<u8> {
    use crate::common::http::sha256_digest;
    let rc = RegistryClient::new(base);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = rc.upload_blob(repo, config.clone()).await;
    let mut descs = Vec::new();
    for (l, size) in layers.iter().zip(declared) {
        let d = rc.upload_blob(repo, l.clone()).await;
        assert_eq!(d, sha256_digest(l));
        descs.push(serde_json::json!({
            "mediaType": oci::LAYER_TAR,
            "digest": d,
            "size": size,
        }));
    }
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST_V1,
        "config": {"mediaType": oci::CONFIG_V1, "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counts_the_registrys_blob_sizes_and_never_overflows() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("projects: {prja: {storage_limit: 1MiB}}\n")
        .start()
        .await;
    let base = wharf.url();
    // a 3 MiB layer declared as 100 bytes: refused before the registry sees it
    let big = vec![7u8; 3 << 20];
    let m = manifest_with_sizes(&base, "prja/big", std::slice::from_ref(&big), &[100]).await;
    let r = raw_path(
        reqwest::Method::PUT,
        &base,
        "/v2/prja/big/manifests/v1",
        Some(m),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error().0, "MANIFEST_INVALID");
    assert!(
        r.error().1.contains("3145728"),
        "names the real size: {}",
        r.text
    );
    assert_eq!(usage(&base, "prja").await, 0);
    // four layers declared 2^62 bytes each (their sum wraps to 0 in 64 bits): refused too
    let layers: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 64]).collect();
    let m = manifest_with_sizes(&base, "prja/wrap", &layers, &[1u64 << 62; 4]).await;
    let r = raw_path(
        reqwest::Method::PUT,
        &base,
        "/v2/prja/wrap/manifests/v1",
        Some(m),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // honest sizes: counted with the registry's figures
    let m = manifest_with_sizes(&base, "prja/ok", &layers, &[64; 4]).await;
    let r = raw_path(
        reqwest::Method::PUT,
        &base,
        "/v2/prja/ok/manifests/v1",
        Some(m),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(usage(&base, "prja").await >= 4 * 64);

    // a project without a limit: huge declared sizes never overflow the bookkeeping, and the
    // event is recorded, not lost
    let m = manifest_with_sizes(&base, "free/wrap", &layers, &[1u64 << 62; 4]).await;
    let r = raw_path(
        reqwest::Method::PUT,
        &base,
        "/v2/free/wrap/manifests/v1",
        Some(m),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let m = manifest_with_sizes(&base, "free/wrap2", &[vec![9u8; 10]], &[1u64 << 62]).await;
    let r = raw_path(
        reqwest::Method::PUT,
        &base,
        "/v2/free/wrap2/manifests/v1",
        Some(m),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let pushes = events_of(&base, "PUSH_ARTIFACT").await;
    assert_eq!(pushes.len(), 3, "{pushes:#?}");
    assert_eq!(
        usage(&base, "free").await,
        i64::MAX as u64,
        "saturated, not wrapped"
    );
    let metrics = crate::common::metrics_text(&base).await;
    assert!(
        metrics.lines().any(|l| l == "wharf_events_lost_total 0"),
        "{metrics}"
    );
}

// 8 ------------------------------------------------------------------------------------------
// a DELETE's cost to the registry

/// A TCP proxy that counts the HTTP/1.1 requests passing through it towards `target`.
struct CountingProxy {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    async fn start(target: std::net::SocketAddr) -> CountingProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = requests.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = n.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 << 10];
                        let mut tail: Vec<u8> = Vec::new();
                        loop {
                            let k = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(k) => k,
                            };
                            let mut window = std::mem::take(&mut tail);
                            window.extend_from_slice(&buf[..k]);
                            let pat = b" HTTP/1.1\r\n";
                            let hits = window.windows(pat.len()).filter(|w| w == pat).count();
                            n.fetch_add(hits, Ordering::SeqCst);
                            let keep = window.len().min(pat.len() - 1);
                            tail = window[window.len() - keep..].to_vec();
                            if sw.write_all(&buf[..k]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        CountingProxy { port, requests }
    }

    fn count(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_an_unknown_digest_costs_the_registry_next_to_nothing() {
    let registry = Registry::start().await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("img"), "t", &[256]);
    // 200 tags, pushed straight to the registry
    let direct = RegistryClient::new(&registry.url());
    direct.push_image("prj/many", "t0", &image).await;
    let manifest = std::fs::read(image.blob_path(&image.digest)).unwrap();
    for i in 1..200 {
        direct
            .put_manifest(
                "prj/many",
                &format!("t{i}"),
                oci::MANIFEST_V1,
                manifest.clone(),
            )
            .await;
    }
    let proxy = CountingProxy::start(registry.addr()).await;
    let wharf = Wharf::builder(&format!("http://127.0.0.1:{}", proxy.port))
        .start()
        .await;
    let before = proxy.count();
    let unknown = format!("sha256:{}", "ab".repeat(32));
    let r = raw_path(
        reqwest::Method::DELETE,
        &wharf.url(),
        &format!("/v2/prj/many/manifests/{unknown}"),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let spent = proxy.count() - before;
    assert!(
        spent <= 2,
        "an unauthenticated DELETE of an unknown digest cost {spent} registry requests"
    );
    // a real delete still reports every tag (checked after the registry accepted it)
    let r = raw_path(
        reqwest::Method::DELETE,
        &wharf.url(),
        &format!("/v2/prj/many/manifests/{}", image.digest),
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let deletes = events_of(&wharf.url(), "DELETE_ARTIFACT").await;
    assert_eq!(deletes.len(), 1);
    let tags = deletes[0]["tags"].as_array().unwrap().len();
    assert_eq!(
        tags, 64,
        "the candidate tags are bounded (64 of 200 checked)"
    );
}

// 11 -----------------------------------------------------------------------------------------
// old secrets leave the database

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_auth_header_and_a_deleted_policy_leave_no_secret_in_the_database() {
    use crate::common::Receiver;
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("notification: {allowed_target_networks: [\"127.0.0.0/8\"]}\n")
        .start()
        .await;
    let base = wharf.url();
    let rx = Receiver::start().await;
    let admin = |m: reqwest::Method, path: &str| {
        client()
            .request(m, format!("{base}{path}"))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
    };
    let target = |h: &str| serde_json::json!({"type": "http", "address": format!("{}/hook", rx.url()), "auth_header": h, "secret": format!("whsec-of-{h}")});
    let body = serde_json::json!({"name": "rot", "enabled": true, "event_types": ["PUSH_ARTIFACT"],
        "targets": [target("Bearer old-secret-1")]});
    let r = admin(
        reqwest::Method::POST,
        "/api/v2.0/projects/prj/webhook/policies",
    )
    .json(&body)
    .send()
    .await
    .unwrap();
    let id = Resp::read(r).await.expect(201).json()["id"]
        .as_i64()
        .unwrap();
    let work = work_dir();
    let image = oci::build_image(&work.path().join("img"), "v1", &[256]);
    RegistryClient::new(&base)
        .push_image("prj/app", "v1", &image)
        .await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let mut body = body.clone();
    body["targets"] = serde_json::json!([target("Bearer new-secret-2")]);
    let r = admin(
        reqwest::Method::PUT,
        &format!("/api/v2.0/projects/prj/webhook/policies/{id}"),
    )
    .json(&body)
    .send()
    .await
    .unwrap();
    Resp::read(r).await.expect(200);
    let r = admin(
        reqwest::Method::DELETE,
        &format!("/api/v2.0/projects/prj/webhook/policies/{id}"),
    )
    .send()
    .await
    .unwrap();
    Resp::read(r).await.expect(200);
    // every text value of every table
    let db = rusqlite::Connection::open_with_flags(
        wharf.data_dir().join("wharf.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM {t}")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                if let Ok(rusqlite::types::ValueRef::Text(v)) = row.get_ref(i) {
                    let v = String::from_utf8_lossy(v);
                    for secret in ["old-secret-1", "new-secret-2"] {
                        assert!(!v.contains(secret), "table {t} still holds {secret}: {v}");
                    }
                }
            }
        }
    }
}

// 4 and 13 -----------------------------------------------------------------------------------
// failed logins

/// An htpasswd file with bcrypt entries of `cost`.
fn htpasswd_file(dir: &std::path::Path, users: &[(&str, &str)], cost: u32) -> std::path::PathBuf {
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, cost).unwrap()))
        .collect();
    let file = dir.join("users.htpasswd");
    std::fs::write(&file, text).unwrap();
    file
}

async fn api_get(base: &str, path: &str, user: &str, pass: &str) -> Resp {
    let r = client()
        .get(format!("{base}{path}"))
        .basic_auth(user, Some(pass))
        .send()
        .await
        .unwrap();
    Resp::read(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_client_address_registry_paths_are_not() {
    let work = work_dir();
    let users = htpasswd_file(work.path(), &[("alice", "alice-password")], 5);
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml(&format!(
            "users: {{htpasswd: {}, failed_login_burst: 3, failed_login_interval: 30s}}\nprojects: {{prj: {{admins: [alice]}}}}\n",
            users.display()
        ))
        .start()
        .await;
    let base = wharf.url();
    let policies = "/api/v2.0/projects/prj/webhook/policies";
    assert_eq!(
        api_get(&base, policies, "alice", "alice-password")
            .await
            .status,
        200
    );
    // three wrong guesses (an unknown user, a wrong password, a wrong admin password) are 401
    for (user, pass) in [("mallory", "x"), ("alice", "guess"), ("admin", "guess")] {
        let r = api_get(&base, policies, user, pass).await;
        assert_eq!(r.status, 401, "{user}: {}", r.text);
    }
    // then 429 with Retry-After and Harbor's error shape, right credentials included
    for (user, pass) in [("alice", "guess-2"), ("alice", "alice-password")] {
        let r = api_get(&base, policies, user, pass).await;
        assert_eq!(r.status, 429, "{user}/{pass}: {}", r.text);
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&wait), "Retry-After: {wait}");
        assert_eq!(r.error().0, "TOO_MANY_REQUESTS");
    }
    // registry paths are not throttled, with or without credentials
    for _ in 0..3 {
        let r = client()
            .get(format!("{base}/v2/"))
            .basic_auth("mallory", Some("x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let metrics = crate::common::metrics_text(&base).await;
    assert!(
        metrics.contains("wharf_login_failures_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wharf_login_throttled_total 2"),
        "{metrics}"
    );
}

// 7 ------------------------------------------------------------------------------------------
// Host header

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_missing_or_repeated_host_is_refused_and_location_never_names_the_registry() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url()).start().await;
    let addr = wharf.addr();
    let upstream = registry.addr().to_string();
    for (name, request, code) in [
        (
            "a path in Host",
            "GET /v2/ HTTP/1.1\r\nHost: evil.com/phish?\r\nConnection: close\r\n\r\n",
            "UNSUPPORTED",
        ),
        (
            "user info in Host",
            "POST /v2/prj/x/blobs/uploads/ HTTP/1.1\r\nHost: a@evil.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "UNSUPPORTED",
        ),
        (
            "no Host",
            "POST /v2/prj/x/blobs/uploads/ HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "UNSUPPORTED",
        ),
        (
            "two Host headers",
            "GET /v2/ HTTP/1.1\r\nHost: wharf\r\nHost: evil.com\r\nConnection: close\r\n\r\n",
            "UNSUPPORTED",
        ),
        (
            "an API path",
            "GET /api/v2.0/configurations HTTP/1.1\r\nHost: evil.com/x\r\nConnection: close\r\n\r\n",
            "BAD_REQUEST",
        ),
    ] {
        let r = crate::common::http::raw_request(addr, request.as_bytes()).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let body = r.json();
        assert_eq!(body["errors"][0]["code"], code, "{name}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("Host"),
            "{name}: {body}"
        );
    }
    // a valid Host is where Location points
    let r = crate::common::http::raw_request(
        addr,
        b"POST /v2/prj/x/blobs/uploads/ HTTP/1.1\r\nHost: wharf.test:1234\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("http://wharf.test:1234/v2/prj/x/blobs/uploads/"),
        "{loc}"
    );
    // HTTP/1.0 without Host: addressed to external_url, never to the registry's own address
    let r = crate::common::http::raw_request(
        addr,
        b"POST /v2/prj/x/blobs/uploads/ HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.header("location").unwrap();
    assert!(!loc.contains(&upstream), "{loc} names the registry");
    assert!(
        loc.starts_with(&format!("{}/v2/prj/x/blobs/uploads/", wharf.url())),
        "{loc}"
    );
}

// 9 ------------------------------------------------------------------------------------------
// validation of webhook policies

async fn admin_send(method: reqwest::Method, url: &str, body: Option<String>) -> Resp {
    let mut rb = client()
        .request(method, url)
        .basic_auth("admin", Some(ADMIN_PASSWORD));
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b);
    }
    Resp::read(rb.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_policies_are_validated_with_precise_messages() {
    let registry = Registry::start().await;
    let wharf = Wharf::builder(&registry.url())
        .yaml("notification: {allowed_target_networks: [\"127.0.0.0/8\"]}\n")
        .start()
        .await;
    let url = format!("{}/api/v2.0/projects/prj/webhook/policies", wharf.url());
    let policy = |name: &str, target: serde_json::Value, filters: serde_json::Value| {
        serde_json::json!({
            "name": name,
            "event_types": ["PUSH_ARTIFACT"],
            "targets": [target],
            "filters": filters,
        })
        .to_string()
    };
    let target = serde_json::json!({"type": "http", "address": "http://127.0.0.1:9/hook"});
    let none = serde_json::json!({});
    for (what, body, message) in [
        (
            "CR/LF in auth_header",
            policy(
                "p1",
                serde_json::json!({"address": "http://127.0.0.1:9/", "auth_header": "Bearer x\r\nX-Evil: 1"}),
                none.clone(),
            ),
            "targets[0].auth_header: must not contain CR or LF",
        ),
        (
            "a control character in auth_header",
            policy(
                "p1",
                serde_json::json!({"address": "http://127.0.0.1:9/", "auth_header": "Bearer \u{1}"}),
                none.clone(),
            ),
            "targets[0].auth_header: must be a valid HTTP header value",
        ),
        (
            "an unclosed class",
            policy(
                "p1",
                target.clone(),
                serde_json::json!({"tags": ["v*", "["]}),
            ),
            "filters.tags[1]: \"[\" is not a valid pattern",
        ),
        (
            "an unclosed brace",
            policy(
                "p1",
                target.clone(),
                serde_json::json!({"repositories": ["{"]}),
            ),
            "filters.repositories[0]: \"{\" is not a valid pattern",
        ),
        (
            "a reversed range",
            policy("p1", target.clone(), serde_json::json!({"tags": ["[z-a]"]})),
            "filters.tags[0]: \"[z-a]\" is not a valid pattern: the range 'z'-'a' is reversed",
        ),
        (
            "braces that expand to 128 alternatives (a slow match)",
            policy(
                "p1",
                target.clone(),
                serde_json::json!({"tags": ["{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}"]}),
            ),
            "filters.tags[0]: \"{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}\" is not a valid pattern: the braces expand to more than 64 alternatives",
        ),
        (
            "a 257-byte pattern",
            policy(
                "p1",
                target.clone(),
                serde_json::json!({"repositories": ["a".repeat(257)]}),
            ),
            &format!(
                "filters.repositories[0]: \"{}\" is not a valid pattern: a pattern may be at most 256 bytes long (this one has 257)",
                "a".repeat(257)
            ),
        ),
        (
            "NUL in the name",
            policy("a\u{0}b", target.clone(), none.clone()),
            "name: character 1 is U+0000",
        ),
        (
            "a right-to-left override in the name",
            policy("invoice\u{202E}fdp.exe", target.clone(), none.clone()),
            "name: character 7 is U+202E",
        ),
        (
            "a line break in the name",
            policy("a\nb", target.clone(), none.clone()),
            "name: character 1 is U+000A",
        ),
        (
            "257 characters",
            policy(&"x".repeat(257), target.clone(), none.clone()),
            "name: at most 256 characters (257 given)",
        ),
        (
            "a JSON array",
            format!("[{}]", policy("p1", target.clone(), none.clone())),
            "body: must be a JSON object, not an array",
        ),
        (
            "a JSON array of the fields",
            serde_json::json!(["p1", "d", true, ["PUSH_ARTIFACT"], [target.clone()]]).to_string(),
            "body: must be a JSON object, not an array",
        ),
    ] {
        let r = admin_send(reqwest::Method::POST, &url, Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        let (code, got) = r.error();
        assert_eq!(code, "BAD_REQUEST", "{what}");
        assert!(got.starts_with(message), "{what}: {got}");
    }
    // 200 × "ä" is 400 bytes but 200 characters: a valid name
    let r = admin_send(
        reqwest::Method::POST,
        &url,
        Some(policy(&"ä".repeat(200), target.clone(), none.clone())),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_i64().unwrap();
    // a page number that is not an int64 (it used to wrap to page 1): refused, as Harbor does,
    // with Harbor's status for a query that fails validation (422) and a message naming it
    let r = admin_send(
        reqwest::Method::GET,
        &format!("{url}/{id}/executions?page=18446744073709551615&page_size=10"),
        None,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.error().1.contains("page in query"), "{}", r.text);
    // one that is an int64 but whose offset overflows: an empty page, never page 1
    let r = admin_send(
        reqwest::Method::GET,
        &format!("{url}/{id}/executions?page=9223372036854775807&page_size=10"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), serde_json::json!([]), "{}", r.text);
    let r = admin_send(
        reqwest::Method::GET,
        &format!("{url}/{id}/executions?page=2&page_size=10"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), serde_json::json!([]));
}
